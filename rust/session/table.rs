//! The session table: id → session, with every replicated field stamped.
//!
//! Convergence rule: each write (attribute set or removal, principal, auth type, is-new, max
//! inactive) carries a [`Stamp`] = (per-session version, writer member). The writer takes the
//! version one above the highest it has seen in that session (a Lamport clock), so a write made
//! after seeing another always has the larger stamp; two writes made concurrently on two members
//! are ordered by the writer id. A replica applies a field only when the incoming stamp is larger
//! than the one it holds, and a removal is kept as a stamped tombstone (value `None`) until the
//! session ends, so a late "set" cannot resurrect it. Applying the same writes in any order, any
//! number of times, gives the same session: last writer wins per field, and replicas converge.
//!
//! A session that ends (expiry, invalidation) leaves an id tombstone for [`ENDED_KEEP_MS`], so a
//! delayed delta cannot bring it back; an id that changed leaves an alias to the new id for as
//! long, so a delayed delta for the old id lands on the renamed session.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

use super::message::{Action, Delta, MemberId};

/// How long an ended session's id and an old id's alias are remembered.
pub const ENDED_KEEP_MS: i64 = 10 * 60 * 1000;
/// At most this many ended ids and aliases are remembered (the oldest go first).
pub const ENDED_KEEP_MAX: usize = 1_000_000;

/// The order of writes: version first, then the writer's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Per-session Lamport version.
    pub version: u64,
    /// The writing member (first 8 bytes of its unique id).
    pub writer: u64,
}

impl Stamp {
    /// A stamp.
    pub fn new(version: u64, writer: u64) -> Self {
        Stamp { version, writer }
    }
}

/// A value with the stamp of the write that set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stamped<T> {
    /// The stamp.
    pub stamp: Stamp,
    /// The value.
    pub value: T,
}

impl<T> Stamped<T> {
    /// Takes `value` if `stamp` is newer; true when it was taken.
    fn offer(&mut self, stamp: Stamp, value: T) -> bool {
        if stamp <= self.stamp {
            return false;
        }
        self.stamp = stamp;
        self.value = value;
        true
    }
}

/// One attribute: encoded value, or a tombstone (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The write's stamp.
    pub stamp: Stamp,
    /// The encoded value; None = removed.
    pub value: Option<Bytes>,
}

/// A whole session as carried by state transfer and backups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireSession {
    /// Id.
    pub id: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last access, ms since the epoch.
    pub last_accessed_ms: i64,
    /// Max inactive seconds (≤ 0: never).
    pub max_inactive: Stamped<i32>,
    /// Tomcat's isNew.
    pub is_new: Stamped<bool>,
    /// The authenticated user's name.
    pub principal: Stamped<Option<String>>,
    /// The authentication type.
    pub auth_type: Stamped<Option<String>>,
    /// BackupManager: the primary (zero for DeltaManager).
    pub primary: MemberId,
    /// BackupManager: the backup (zero: none).
    pub backup: MemberId,
    /// Attributes, tombstones included.
    pub attrs: Vec<(String, Slot)>,
}

/// What this member holds of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The member serving it (DeltaManager: last used here; BackupManager: the primary).
    Primary,
    /// A replica (DeltaManager: a copy; BackupManager: the backup).
    Copy,
    /// BackupManager: only where it lives, no data.
    Proxy,
}

impl Role {
    /// Its name for Python.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Copy => "copy",
            Role::Proxy => "proxy",
        }
    }
}

/// The rarely set parts of a session, boxed so that a typical entry stays small.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Principal.
    pub principal: Stamped<Option<String>>,
    /// Auth type.
    pub auth_type: Stamped<Option<String>>,
    /// Attributes the attribute filter keeps on this member only.
    pub local: Vec<(String, Bytes)>,
}

static NO_EXTRA: Extra = Extra {
    principal: Stamped {
        stamp: Stamp {
            version: 0,
            writer: 0,
        },
        value: None,
    },
    auth_type: Stamped {
        stamp: Stamp {
            version: 0,
            writer: 0,
        },
        value: None,
    },
    local: Vec::new(),
};

/// A session as this member holds it. Kept compact (one of these per session per replica): the
/// attributes are a small vector searched linearly (sessions hold a handful), the rare fields sit
/// behind one box.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last access, ms since the epoch.
    pub last_accessed_ms: i64,
    /// When this member last sent something about it (Tomcat's lastTimeReplicated).
    pub last_replicated_ms: i64,
    /// Highest stamp version applied.
    pub version: u64,
    /// Max inactive seconds.
    pub max_inactive: Stamped<i32>,
    /// Tomcat's isNew.
    pub is_new: Stamped<bool>,
    /// Replicated attributes, with tombstones.
    pub attrs: Vec<(Box<str>, Slot)>,
    extra: Option<Box<Extra>>,
    /// What this member holds.
    pub role: Role,
    /// BackupManager: where the primary is.
    pub primary: MemberId,
    /// BackupManager: where the backup is (zero: none).
    pub backup: MemberId,
}

/// An attribute change applied from the network, for listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrChange {
    /// Attribute name.
    pub name: String,
    /// The value before (None: absent).
    pub old: Option<Bytes>,
    /// The value after (None: removed).
    pub new: Option<Bytes>,
}

/// What applying a message did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Record attribute changes (only when listeners want them: it clones values).
    pub track: bool,
    /// The session was created by it.
    pub created: bool,
    /// Attribute changes (when tracking).
    pub changes: Vec<AttrChange>,
    /// Writes ignored because a newer stamp was already held.
    pub stale: u64,
    /// The session had ended; nothing applied.
    pub ended: bool,
}

impl Applied {
    /// An outcome that records attribute changes if `track`.
    pub fn tracking(track: bool) -> Self {
        Applied {
            track,
            ..Applied::default()
        }
    }
}

impl Entry {
    /// A fresh entry.
    pub fn new(created_ms: i64, max_inactive: i32, role: Role) -> Self {
        Entry {
            created_ms,
            last_accessed_ms: created_ms,
            last_replicated_ms: created_ms,
            version: 0,
            max_inactive: Stamped {
                stamp: Stamp::default(),
                value: max_inactive,
            },
            is_new: Stamped {
                stamp: Stamp::default(),
                value: true,
            },
            attrs: Vec::new(),
            extra: None,
            role,
            primary: [0; 16],
            backup: [0; 16],
        }
    }

    fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The principal.
    pub fn principal(&self) -> &Stamped<Option<String>> {
        &self.extra().principal
    }

    /// The auth type.
    pub fn auth_type(&self) -> &Stamped<Option<String>> {
        &self.extra().auth_type
    }

    /// Sets (or with None removes) a local-only attribute.
    pub fn set_local(&mut self, name: String, value: Option<Bytes>) {
        let local = &mut self.extra_mut().local;
        local.retain(|(k, _)| *k != name);
        if let Some(v) = value {
            local.push((name, v));
        }
    }

    /// Drops the data (a member that holds only a proxy now).
    pub fn drop_data(&mut self) {
        self.attrs = Vec::new();
        if let Some(x) = self.extra.as_mut() {
            x.local = Vec::new();
        }
    }

    /// Live attributes (replicated and local), encoded.
    pub fn live_attrs(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.attrs
            .iter()
            .filter_map(|(k, s)| s.value.as_ref().map(|v| (&**k, v)))
            .chain(self.extra().local.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Applies one attribute write under `stamp`; the value is moved in.
    pub fn apply_attr(
        &mut self,
        stamp: Stamp,
        name: String,
        value: Option<Bytes>,
        out: &mut Applied,
    ) {
        self.version = self.version.max(stamp.version);
        let new_for_event = if out.track { value.clone() } else { None };
        let old = match self.attrs.iter().position(|(k, _)| **k == *name) {
            Some(i) => {
                let slot = &mut self.attrs[i].1;
                if slot.stamp >= stamp {
                    out.stale += 1;
                    return;
                }
                slot.stamp = stamp;
                std::mem::replace(&mut slot.value, value)
            }
            None => {
                if self.attrs.len() == self.attrs.capacity() {
                    // Exact growth while small: a Vec would otherwise reserve room for four
                    // attributes (256 bytes) in every session that holds one.
                    let more = if self.attrs.len() < 4 {
                        1
                    } else {
                        self.attrs.len()
                    };
                    self.attrs.reserve_exact(more);
                }
                let name = if out.track {
                    Box::from(name.as_str())
                } else {
                    // Decoded names have exact capacity: this reuses the allocation.
                    return self
                        .attrs
                        .push((name.into_boxed_str(), Slot { stamp, value }));
                };
                self.attrs.push((name, Slot { stamp, value }));
                None
            }
        };
        if out.track && old != new_for_event {
            out.changes.push(AttrChange {
                name,
                old,
                new: new_for_event,
            });
        }
    }

    /// Applies one action under `stamp`.
    pub fn apply_action(&mut self, stamp: Stamp, action: Action, out: &mut Applied) {
        let applied = match action {
            Action::Attribute(name, value) => {
                self.apply_attr(stamp, name, value, out);
                return;
            }
            Action::Principal(p) => self.extra_mut().principal.offer(stamp, p),
            Action::IsNew(b) => self.is_new.offer(stamp, b),
            Action::MaxInactive(s) => self.max_inactive.offer(stamp, s),
            Action::AuthType(t) => self.extra_mut().auth_type.offer(stamp, t),
        };
        if !applied {
            out.stale += 1;
        }
        self.version = self.version.max(stamp.version);
    }

    /// Merges a whole session in, field by field by stamp; values are moved in.
    pub fn merge(&mut self, s: WireSession, out: &mut Applied) {
        self.created_ms = self.created_ms.min(s.created_ms);
        self.last_accessed_ms = self.last_accessed_ms.max(s.last_accessed_ms);
        let v = s
            .max_inactive
            .stamp
            .version
            .max(s.is_new.stamp.version)
            .max(s.principal.stamp.version)
            .max(s.auth_type.stamp.version);
        self.max_inactive
            .offer(s.max_inactive.stamp, s.max_inactive.value);
        self.is_new.offer(s.is_new.stamp, s.is_new.value);
        if s.principal.stamp > self.principal().stamp {
            self.extra_mut().principal = s.principal;
        }
        if s.auth_type.stamp > self.auth_type().stamp {
            self.extra_mut().auth_type = s.auth_type;
        }
        self.attrs.reserve_exact(s.attrs.len());
        for (name, slot) in s.attrs {
            self.apply_attr(slot.stamp, name, slot.value, out);
        }
        self.version = self.version.max(v);
    }

    /// This entry as sent whole; proxies (and `with_attrs = false`) carry no attributes.
    pub fn to_wire(&self, id: &str, with_attrs: bool) -> WireSession {
        WireSession {
            id: id.to_owned(),
            created_ms: self.created_ms,
            last_accessed_ms: self.last_accessed_ms,
            max_inactive: self.max_inactive.clone(),
            is_new: self.is_new.clone(),
            principal: self.principal().clone(),
            auth_type: self.auth_type().clone(),
            primary: self.primary,
            backup: self.backup,
            attrs: if with_attrs {
                self.attrs
                    .iter()
                    .map(|(k, s)| (k.to_string(), s.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// Every session of one manager on this member.
#[derive(Debug, Default)]
pub struct Table {
    sessions: HashMap<String, Entry>,
    /// Ended ids (→ None) and old ids (→ the new id), with when they were recorded.
    ended: HashMap<String, Option<String>>,
    ended_order: VecDeque<(i64, String)>,
}

impl Table {
    /// Number of sessions held (proxies included).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Looks up a session by id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.sessions.get(id)
    }

    /// Looks up a session by id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.sessions.get_mut(id)
    }

    /// Iterates over every session.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.sessions.iter()
    }

    /// Iterates mutably over every session.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Entry)> {
        self.sessions.iter_mut()
    }

    /// Adds a new session; false when the id is taken or has ended.
    pub fn insert(&mut self, id: &str, entry: Entry) -> bool {
        if self.sessions.contains_key(id) || self.ended.contains_key(id) {
            return false;
        }
        self.sessions.insert(id.to_owned(), entry);
        true
    }

    /// The id a message for `id` applies to: itself, or where it was renamed to; None if ended.
    pub fn resolve<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        let mut cur = id;
        for _ in 0..8 {
            match self.ended.get(cur) {
                None => return Some(cur),
                Some(None) => return None,
                Some(Some(next)) => cur = next.as_str(),
            }
        }
        None
    }

    /// The table key for a message's id: the id itself (moved, no copy) or where it was renamed
    /// to; None if the session ended.
    fn key_for(&self, id: String) -> Option<String> {
        match self.resolve(&id) {
            None => None,
            Some(r) if r == id => Some(id),
            Some(r) => Some(r.to_owned()),
        }
    }

    /// True when `id` ended here (expired or invalidated) within the remembered window.
    pub fn has_ended(&self, id: &str) -> bool {
        self.resolve(id).is_none()
    }

    /// Applies a delta; creates the session if unknown (so a first change is never lost).
    pub fn apply_delta(
        &mut self,
        d: Delta,
        default_inactive: i32,
        role: Role,
        track: bool,
    ) -> Applied {
        let mut out = Applied::tracking(track);
        let Some(key) = self.key_for(d.id) else {
            out.ended = true;
            return out;
        };
        let entry = self.sessions.entry(key).or_insert_with(|| {
            out.created = true;
            Entry::new(d.created_ms, default_inactive, role)
        });
        entry.created_ms = entry.created_ms.min(d.created_ms);
        entry.last_accessed_ms = entry.last_accessed_ms.max(d.last_accessed_ms);
        for a in d.actions {
            entry.apply_action(d.stamp, a, &mut out);
        }
        out
    }

    /// Merges a whole session (state transfer, backup); creates it if unknown and not ended.
    pub fn merge(&mut self, mut s: WireSession, role: Role, track: bool) -> Applied {
        let mut out = Applied::tracking(track);
        let Some(key) = self.key_for(std::mem::take(&mut s.id)) else {
            out.ended = true;
            return out;
        };
        let entry = self.sessions.entry(key).or_insert_with(|| {
            out.created = true;
            let mut e = Entry::new(s.created_ms, s.max_inactive.value, role);
            e.max_inactive.stamp = Stamp::default();
            e
        });
        entry.merge(s, &mut out);
        out
    }

    /// Ends a session: removes it and remembers its id. Returns it if it was held.
    pub fn end(&mut self, id: &str, now_ms: i64) -> Option<Entry> {
        let id = self.resolve(id)?.to_owned();
        let e = self.sessions.remove(&id);
        self.remember(id, None, now_ms);
        e
    }

    /// Renames a session (merging into the new id if that exists too). Returns true when the old
    /// id was held here.
    pub fn rename(&mut self, old: &str, new: &str, now_ms: i64) -> bool {
        let Some(old) = self.resolve(old).map(str::to_owned) else {
            return false;
        };
        if old == new || self.has_ended(new) {
            return false;
        }
        let Some(entry) = self.sessions.remove(&old) else {
            self.remember(old, Some(new.to_owned()), now_ms);
            return false;
        };
        match self.sessions.get_mut(new) {
            Some(existing) => {
                let local = entry.extra().local.clone();
                let wire = entry.to_wire(new, true);
                existing.merge(wire, &mut Applied::default());
                for (k, v) in local {
                    existing.set_local(k, Some(v));
                }
            }
            None => {
                self.sessions.insert(new.to_owned(), entry);
            }
        }
        self.remember(old, Some(new.to_owned()), now_ms);
        true
    }

    /// Removes a session without remembering it as ended (a proxy dropped, a copy replaced).
    pub fn forget(&mut self, id: &str) -> Option<Entry> {
        self.sessions.remove(id)
    }

    fn remember(&mut self, id: String, to: Option<String>, now_ms: i64) {
        self.ended.insert(id.clone(), to);
        self.ended_order.push_back((now_ms, id));
        self.purge_ended(now_ms);
    }

    /// Forgets ended ids older than [`ENDED_KEEP_MS`] or beyond [`ENDED_KEEP_MAX`].
    pub fn purge_ended(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.ended_order.front() {
            if now_ms - *at <= ENDED_KEEP_MS && self.ended_order.len() <= ENDED_KEEP_MAX {
                break;
            }
            if let Some((_, id)) = self.ended_order.pop_front() {
                self.ended.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(id: &str, v: u64, w: u64, actions: Vec<Action>) -> Delta {
        Delta {
            id: id.into(),
            created_ms: 10,
            last_accessed_ms: 20 + v as i64,
            stamp: Stamp::new(v, w),
            actions,
        }
    }

    fn set(name: &str, v: &'static [u8]) -> Action {
        Action::Attribute(name.into(), Some(Bytes::from_static(v)))
    }

    fn attrs(t: &Table, id: &str) -> Vec<(String, Bytes)> {
        let mut v: Vec<_> = t
            .get(id)
            .unwrap()
            .live_attrs()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn deltas_converge_in_any_order() {
        let ds = [
            delta("s", 1, 1, vec![set("a", b"1"), set("b", b"1")]),
            delta("s", 2, 2, vec![set("a", b"2")]),
            delta("s", 2, 1, vec![set("a", b"x"), set("c", b"1")]),
            delta("s", 3, 1, vec![Action::Attribute("b".into(), None)]),
        ];
        let mut reference = None;
        // All 24 orders give the same session.
        let mut idx = [0usize, 1, 2, 3];
        let mut perms = Vec::new();
        permute(&mut idx, 0, &mut perms);
        for p in perms {
            let mut t = Table::default();
            for &i in &p {
                t.apply_delta(ds[i].clone(), 1800, Role::Copy, false);
            }
            let got = attrs(&t, "s");
            match &reference {
                None => reference = Some(got),
                Some(r) => assert_eq!(&got, r, "order {p:?}"),
            }
        }
        assert_eq!(
            reference.unwrap(),
            vec![
                ("a".to_string(), Bytes::from_static(b"2")),
                ("c".to_string(), Bytes::from_static(b"1")),
            ]
        );
    }

    fn permute(a: &mut [usize; 4], k: usize, out: &mut Vec<[usize; 4]>) {
        if k == a.len() {
            out.push(*a);
            return;
        }
        for i in k..a.len() {
            a.swap(k, i);
            permute(a, k + 1, out);
            a.swap(k, i);
        }
    }

    #[test]
    fn an_ended_session_is_not_resurrected_and_renames_redirect() {
        let mut t = Table::default();
        t.apply_delta(
            delta("s", 1, 1, vec![set("a", b"1")]).clone(),
            1800,
            Role::Copy,
            false,
        );
        assert!(t.end("s", 100).is_some());
        let applied = t.apply_delta(
            delta("s", 2, 1, vec![set("a", b"2")]).clone(),
            1800,
            Role::Copy,
            false,
        );
        assert!(applied.ended);
        assert!(t.get("s").is_none());

        t.apply_delta(
            delta("o", 1, 1, vec![set("a", b"1")]).clone(),
            1800,
            Role::Copy,
            false,
        );
        assert!(t.rename("o", "n", 100));
        t.apply_delta(
            delta("o", 2, 1, vec![set("b", b"2")]).clone(),
            1800,
            Role::Copy,
            false,
        );
        assert_eq!(attrs(&t, "n").len(), 2);
        assert!(t.get("o").is_none());
        // Ended ids are forgotten after the keep window.
        t.purge_ended(100 + ENDED_KEEP_MS + 1);
        assert!(!t.has_ended("s"));
    }

    #[test]
    fn merge_of_whole_sessions_is_by_stamp() {
        let mut t = Table::default();
        t.apply_delta(
            delta("s", 5, 1, vec![set("a", b"new")]).clone(),
            1800,
            Role::Copy,
            false,
        );
        let mut old = t.get("s").unwrap().to_wire("s", true);
        old.attrs = vec![(
            "a".into(),
            Slot {
                stamp: Stamp::new(4, 9),
                value: Some(Bytes::from_static(b"old")),
            },
        )];
        let applied = t.merge(old, Role::Copy, false);
        assert_eq!(applied.stale, 1);
        assert_eq!(attrs(&t, "s")[0].1, Bytes::from_static(b"new"));
    }

    mod converge {
        use super::*;
        use proptest::prelude::*;

        fn action() -> impl Strategy<Value = Action> {
            let name = prop::sample::select(vec!["a", "b", "c", "d"]);
            prop_oneof![
                (name.clone(), any::<u8>()).prop_map(|(n, v)| Action::Attribute(
                    n.to_string(),
                    Some(Bytes::from(vec![v]))
                )),
                name.prop_map(|n| Action::Attribute(n.to_string(), None)),
                any::<bool>().prop_map(Action::IsNew),
                (0i32..100).prop_map(Action::MaxInactive),
                prop::option::of("[a-z]{1,3}").prop_map(Action::Principal),
            ]
        }

        /// Deltas as three writers would make them: each writer stamps one above the highest
        /// version it has seen (it sees only its own writes here: the concurrent worst case).
        fn deltas() -> impl Strategy<Value = Vec<Delta>> {
            prop::collection::vec((0u64..3, prop::collection::vec(action(), 1..4)), 1..12).prop_map(
                |writes| {
                    let mut seen = [0u64; 3];
                    writes
                        .into_iter()
                        .map(|(w, actions)| {
                            seen[w as usize] += 1;
                            Delta {
                                id: "s".into(),
                                created_ms: 1,
                                last_accessed_ms: 2,
                                stamp: Stamp::new(seen[w as usize], w),
                                actions,
                            }
                        })
                        .collect()
                },
            )
        }

        fn state(t: &Table) -> String {
            let e = t.get("s").unwrap();
            let mut attrs: Vec<_> = e.live_attrs().collect();
            attrs.sort();
            format!(
                "{attrs:?} {:?} {:?} {:?}",
                e.is_new.value,
                e.max_inactive.value,
                e.principal().value
            )
        }

        proptest! {
            #[test]
            fn any_order_and_duplicates_converge(
                ds in deltas(),
                order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            ) {
                let mut a = Table::default();
                for d in &ds {
                    a.apply_delta(d.clone(), 1800, Role::Copy, false);
                }
                // The same deltas shuffled, some delivered twice.
                let mut shuffled: Vec<&Delta> = ds.iter().chain(ds.iter().step_by(2)).collect();
                let mut seed = order;
                for i in (1..shuffled.len()).rev() {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (seed >> 33) as usize % (i + 1));
                }
                let mut b = Table::default();
                for d in shuffled {
                    b.apply_delta(d.clone(), 1800, Role::Copy, false);
                }
                prop_assert_eq!(state(&a), state(&b));
                // A whole-session merge (state transfer) of one replica into an empty table agrees too.
                let mut c = Table::default();
                c.merge(a.get("s").unwrap().to_wire("s", true), Role::Copy, false);
                prop_assert_eq!(state(&a), state(&c));
            }
        }
    }
}
