//! Counters of one channel: traffic, rejections by kind, failures. Read from Python as a dict.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a struct of named relaxed atomic counters with a `snapshot()` of (name, value) pairs.
macro_rules! counters {
    ($(#[$sdoc:meta])* $struct:ident { $($(#[$doc:meta])* $name:ident),* $(,)? }) => {
        $(#[$sdoc])*
        #[derive(Debug, Default)]
        pub struct $struct {
            $($(#[$doc])* pub $name: std::sync::atomic::AtomicU64,)*
        }

        impl $struct {
            /// (name, value) pairs, for Python's `stats()` dicts.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(std::sync::atomic::Ordering::Relaxed)),)*]
            }
        }
    };
}
pub(crate) use counters;

counters! {
    /// All counters of a channel; each is a relaxed atomic.
    Stats {
    /// Messages handed to the transport (after interceptors), per target.
    messages_sent,
    /// Bytes of framed messages written, per target.
    bytes_sent,
    /// Application messages received (before interceptors).
    messages_received,
    /// Framed bytes received.
    bytes_received,
    /// Messages delivered to the application.
    messages_delivered,
    /// ACKs received by the sender.
    acks_received,
    /// NACKs received by the sender.
    nacks_received,
    /// Send failures per target (connection, timeout).
    send_failures,
    /// Async bytes dropped because a connection failed before they were written.
    async_bytes_lost,
    /// Inbound TCP connections accepted.
    connections_accepted,
    /// Inbound connections refused because the cap was reached.
    connections_refused,
    /// Frames with a bad start/end marker or length on the receiver port.
    rejected_frames,
    /// Frames whose declared length exceeded max_frame.
    rejected_oversized,
    /// Frames whose channel data did not decode.
    rejected_channel_data,
    /// Datagrams on the membership port that were not valid member packets.
    rejected_membership_packets,
    /// Messages dropped by an interceptor (bad trailer, wrong domain, expired fragments, ...).
    rejected_by_interceptors,
    /// Messages that failed decryption or authentication (wrong key, tampered, not encrypted).
    rejected_auth,
    /// Messages refused as replays (seen nonce, or timestamp outside the window).
    rejected_replay,
    /// Membership packets without a valid authentication tag (or outside the replay window).
    rejected_membership_auth,
    /// New members ignored because `max_members` was reached.
    rejected_members_over_limit,
    /// Inbound connections closed after `idle_timeout_ms` of silence.
    connections_idle_closed,
    /// Session messages that did not decode (counted, logged, ignored).
    rejected_session_messages,
    /// Session messages for a manager this member does not run (counted, logged, ignored).
    session_messages_unknown_manager,
    /// Heartbeats sent.
    heartbeats_sent,
    /// Heartbeats received from others.
    heartbeats_received,
    /// Members added to the view.
    members_added,
    /// Members removed from the view.
    members_disappeared,
    /// Liveness probes made by the failure detector.
    probes,
    /// Probes that found the member dead.
    probes_failed,
    /// Log records dropped because the log queue was full.
    logs_dropped,
    }
}

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Adds one to a counter.
#[inline]
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds one to a rejection counter; returns the new count when this rejection should be logged
/// (the 1st, 2nd, 4th, 8th, ...), so a flood costs a handful of log lines, not one per packet.
#[inline]
pub fn inc_rate_limited(c: &AtomicU64) -> Option<u64> {
    let n = c.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}
