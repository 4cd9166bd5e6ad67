//! The raw member table: every member heard from, with when it was last heard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::member::{Member, MemberKey};

/// What [`MemberTable::heard`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum HeardOutcome {
    /// Not known before.
    New,
    /// Known; nothing but the time changed.
    Refreshed,
    /// Known; its advertised fields (alive time, payload, ...) changed.
    Changed,
}

#[derive(Debug)]
struct Entry {
    member: Arc<Member>,
    last_heard: Instant,
}

/// Members heard from, keyed by identity.
#[derive(Debug, Default)]
pub struct MemberTable {
    entries: HashMap<MemberKey, Entry>,
}

impl MemberTable {
    /// Records a heartbeat at `now`.
    pub fn heard(&mut self, member: &Arc<Member>, now: Instant) -> HeardOutcome {
        match self.entries.get_mut(&member.key()) {
            Some(e) => {
                e.last_heard = now;
                if e.member.packet == member.packet {
                    HeardOutcome::Refreshed
                } else {
                    e.member = member.clone();
                    HeardOutcome::Changed
                }
            }
            None => {
                self.entries.insert(
                    member.key(),
                    Entry {
                        member: member.clone(),
                        last_heard: now,
                    },
                );
                HeardOutcome::New
            }
        }
    }

    /// Forgets a member.
    pub fn remove(&mut self, key: &MemberKey) -> Option<Arc<Member>> {
        self.entries.remove(key).map(|e| e.member)
    }

    /// True when the member is in the table.
    pub fn contains(&self, key: &MemberKey) -> bool {
        self.entries.contains_key(key)
    }

    /// The latest snapshot of a member.
    pub fn get(&self, key: &MemberKey) -> Option<Arc<Member>> {
        self.entries.get(key).map(|e| e.member.clone())
    }

    /// Members silent for longer than `drop_time` at `now` (they stay in the table).
    pub fn silent(&self, now: Instant, drop_time: Duration) -> Vec<Arc<Member>> {
        self.entries
            .values()
            .filter(|e| now.saturating_duration_since(e.last_heard) > drop_time)
            .map(|e| e.member.clone())
            .collect()
    }

    /// How long ago the member was heard.
    pub fn silence(&self, key: &MemberKey, now: Instant) -> Option<Duration> {
        self.entries
            .get(key)
            .map(|e| now.saturating_duration_since(e.last_heard))
    }

    /// Another member at `of`'s host and port (a different process, by its unique id) heard
    /// within `drop_time` at `now`: a restarted process that took over the address.
    pub fn successor(&self, of: &Member, now: Instant, drop_time: Duration) -> Option<Arc<Member>> {
        self.entries
            .values()
            .find(|e| {
                let p = &e.member.packet;
                p.host == of.packet.host
                    && p.port == of.packet.port
                    && p.unique_id != of.packet.unique_id
                    && now.saturating_duration_since(e.last_heard) <= drop_time
            })
            .map(|e| e.member.clone())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::member::MemberPacket;

    fn member(port: i32, alive: i64) -> Arc<Member> {
        Arc::new(Member::from_packet(MemberPacket {
            alive_ms: alive,
            port,
            secure_port: -1,
            udp_port: -1,
            host: vec![127, 0, 0, 1],
            command: vec![],
            domain: vec![],
            unique_id: [7; 16],
            payload: vec![],
        }))
    }

    #[test]
    fn new_refreshed_changed_and_expiry() {
        let mut t = MemberTable::default();
        let t0 = Instant::now();
        assert_eq!(t.heard(&member(4000, 1), t0), HeardOutcome::New);
        assert_eq!(t.heard(&member(4000, 1), t0), HeardOutcome::Refreshed);
        assert_eq!(t.heard(&member(4000, 2), t0), HeardOutcome::Changed);
        assert_eq!(t.heard(&member(4001, 2), t0), HeardOutcome::New);
        let later = t0 + Duration::from_millis(1500);
        t.heard(&member(4001, 3), later);
        let silent = t.silent(later, Duration::from_millis(1000));
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].packet.port, 4000);
    }

    #[test]
    fn successor_is_another_recent_process_at_the_same_address() {
        let with_id = |port: i32, id: u8| {
            let mut p = member(port, 1).packet.clone();
            p.unique_id = [id; 16];
            Arc::new(Member::from_packet(p))
        };
        let drop_time = Duration::from_millis(1000);
        let mut t = MemberTable::default();
        let t0 = Instant::now();
        let old = with_id(4000, 1);
        t.heard(&old, t0);
        t.heard(&with_id(4001, 2), t0); // another port: not a successor
        assert!(t.successor(&old, t0, drop_time).is_none());
        let later = t0 + Duration::from_millis(1500);
        let new = with_id(4000, 3);
        t.heard(&new, later);
        let found = t
            .successor(&old, later, drop_time)
            .expect("the restarted process");
        assert_eq!(found.packet.unique_id, [3; 16]);
        // The new process is nobody's successor while the old one is silent, and a silent
        // process at the address is no successor.
        assert!(t.successor(&new, later, drop_time).is_none());
        assert!(t
            .successor(&old, later + Duration::from_millis(1500), drop_time)
            .is_none());
    }
}
