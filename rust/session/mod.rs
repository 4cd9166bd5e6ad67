//! Session state, kept in Rust (issue 3).
//!
//! - [`codec`]: the attribute value codec (msgpack-compatible; never pickle on the network path).
//! - [`table`]: the session table, with stamped fields that converge whatever the arrival order.
//! - [`message`]: the session messages managers exchange (Tomcat's kinds, a compact encoding).
//! - [`manager`]: DeltaManager and BackupManager logic over the table.
//! - [`registry`]: the managers of a running channel by name, and the session worker thread.

pub mod codec;
pub mod manager;
pub mod message;
pub mod registry;
pub mod table;

pub use codec::{decode, encode, CodecError, Value, MAX_DEPTH};
pub use manager::{Kind, Manager, Settings, TransferState};
