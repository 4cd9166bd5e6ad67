//! Session state, kept in Rust (issue 3). So far: the attribute [`codec`], which turns the values
//! a Python application stores in a session into compact msgpack bytes and back, without ever
//! running code chosen by the bytes (no pickle on the network path).

pub mod codec;

pub use codec::{decode, encode, CodecError, Value, MAX_DEPTH};
