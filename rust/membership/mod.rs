//! Membership: who is in the cluster.
//!
//! [`mcast`] sends and receives Tribes heartbeats on a multicast group; [`static_members`] probes a
//! configured peer list instead. Both report what they hear as [`Heard`] notices; the channel's
//! view task ([`crate::channel::view`]) keeps the member table, expires silent members and asks
//! the failure detector before it tells anyone.

pub mod mcast;
pub mod static_members;
pub mod table;

use std::sync::Arc;

use crate::member::Member;

/// What a membership service heard.
#[derive(Debug)]
pub enum Heard {
    /// A heartbeat (or a successful static probe) from this member.
    Alive(Arc<Member>),
    /// The member announced its shutdown.
    Shutdown(Arc<Member>),
}
