//! The one error type of the core. The bindings map each variant to a class in `tribes.errors`.

use crate::wire::WireError;
use std::sync::Arc;

use crate::member::Member;

/// One member a send could not reach, and why.
#[derive(Debug, Clone)]
pub struct Faulty {
    /// The member that failed.
    pub member: Arc<Member>,
    /// A human-readable cause ("connection refused", "timeout waiting for ack", "NACK", ...).
    pub cause: String,
    /// True when the member answered with a NACK (it is alive; its processing failed).
    pub remote_failure: bool,
}

/// Every failure the core reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message starts with the field's name.
    #[error("{0}")]
    Config(String),
    /// An operating-system error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that do not follow the protocol.
    #[error("protocol error: {0}")]
    Wire(#[from] WireError),
    /// A send failed for some members; the others received the message.
    #[error("{message}")]
    Channel {
        /// Summary.
        message: String,
        /// The members that did not get the message, each with its cause.
        faulty: Vec<Faulty>,
    },
    /// The channel is not running.
    #[error("the cluster is not started")]
    NotStarted,
    /// A session operation that cannot be done (unknown manager, ended session, ...).
    #[error("{0}")]
    Session(String),
    /// `create()` beyond the manager's `max_active`.
    #[error("{0}")]
    TooManySessions(String),
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an io error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
