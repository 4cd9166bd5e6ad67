//! tribes: Tomcat-style cluster session replication, the Rust core.
//!
//! Module map (bottom up):
//! - [`wire`]: Apache Tribes byte layouts (member packet, frame, channel data, ack, send options).
//!   Pure functions, no I/O.
//! - [`member`]: a cluster member as seen from here, and its identity.
//! - [`config`]: the core's configuration, deserialised from the JSON the Python layer writes.
//! - [`membership`]: multicast heartbeats, static members, the member table and expiry.
//! - [`transport`]: the TCP receiver (framing, acks) and the sender pool (per-member connections).
//! - [`security`]: shared-secret keys, the encrypted message envelope, replay protection, the
//!   membership packet tag, Tomcat's EncryptInterceptor format.
//! - [`session`]: the session attribute value codec (msgpack-compatible; more of the session
//!   layer comes with the session managers).
//! - [`channel`]: the interceptor stack and [`channel::Channel`], which owns runtime, transport and
//!   membership and is what the bindings drive.
//! - [`events`]: the bounded queue of events for Python, and the log forwarding.
//! - `py` (feature `python`): the PyO3 bindings, the only module that knows about Python.

pub mod channel;
pub mod completions;
pub mod config;
pub mod error;
pub mod events;
pub mod member;
pub mod membership;
pub mod security;
pub mod session;
pub mod stats;
pub mod transport;
pub mod wire;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
