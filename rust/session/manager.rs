//! One session manager: Tomcat's DeltaManager (every member holds every session) or BackupManager
//! (a primary, one backup, proxies elsewhere), over the session [`Table`].
//!
//! Calls from Python (`create`, `commit`, `get`, ...) run on the caller's thread with the GIL
//! released and may block on acknowledged sends. Messages from the network are applied by
//! [`Manager::on_message`] on the receiver task, without blocking and without Python: anything
//! that needs a send in reply (state transfer, a retrieve answer) becomes a [`Job`] for the
//! session worker thread ([`super::registry`]).

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::{encode, Action, Body, Delta, MemberId};
use super::registry::Job;
use super::table::{Applied, Entry, Role, Stamp, Table, WireSession};
use crate::channel::Link;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::member::{Member, MemberKey};
use crate::transport::probe::now_ms;
use crate::transport::sender::without_ack_spin;
use crate::wire::options::{ASYNCHRONOUS, SYNCHRONIZED_ACK, USE_ACK};

const NO_MEMBER: MemberId = [0; 16];
/// Most messages parked while a state transfer runs.
const MAX_TRANSFER_QUEUE: usize = 1_000_000;

/// Which of Tomcat's managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All-to-all.
    Delta,
    /// Primary and one backup.
    Backup,
}

/// A manager's settings (from `ClusterConfig.managers`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Delta or backup.
    pub kind: Kind,
    /// Channel options for session changes (async, use_ack, or use_ack|sync).
    pub send_options: u32,
    /// Default max inactive interval, seconds (≤ 0: never expire).
    pub max_inactive: i32,
    /// Most sessions this member may hold as primary or copy (−1: unlimited).
    pub max_active: i64,
    /// Sessions per state-transfer message.
    pub batch_size: usize,
    /// How long a joining member waits for state transfer.
    pub state_transfer_timeout: Duration,
    /// How long a BackupManager waits for a session it fetches from another member.
    pub rpc_timeout: Duration,
    /// The member's route (Tomcat's jvmRoute), appended to new ids as `.<route>`.
    pub route: Option<String>,
}

crate::stats::counters! {
    /// Counters of one manager.
    ManagerStats {
    /// Sessions created on this member.
    sessions_created,
    /// Sessions ended on this member by invalidation or expiry as primary.
    sessions_expired,
    /// Copies that expired by themselves (2 × max inactive without news).
    copies_expired,
    /// Sessions of which both primary and backup were lost (BackupManager).
    sessions_lost,
    /// Sessions restored to two copies after a member left (BackupManager).
    sessions_rebacked,
    /// Backups promoted to primary after their primary left (BackupManager).
    sessions_promoted,
    /// Sessions fetched from their backup or primary by a `get()` here (BackupManager).
    sessions_fetched,
    /// Commits that sent a delta.
    deltas_sent,
    /// Commits with nothing to send.
    commits_unchanged,
    /// Accessed messages sent.
    accessed_sent,
    /// Expired messages sent.
    expired_sent,
    /// Change-id messages sent.
    change_ids_sent,
    /// Session messages received for this manager.
    messages_received,
    /// Deltas received and applied.
    deltas_received,
    /// Writes ignored because this member already held a newer stamp.
    stale_writes,
    /// Messages for sessions that had already ended here (ignored).
    ended_session_messages,
    /// Sessions received by state transfer.
    transfer_sessions_received,
    /// Sessions sent to joining members.
    transfer_sessions_sent,
    /// Messages parked while the state transfer ran, then applied.
    transfer_queued,
    /// State transfers that timed out.
    transfer_timeouts,
    /// Sends of session messages that failed for at least one member.
    send_failures,
    }
}

/// Where the state transfer of this manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// No other member when the manager started: nothing to fetch.
    NotNeeded,
    /// Waiting for the sessions.
    Running,
    /// Every session received.
    Complete,
    /// No member answered in time; the manager went on with what it had.
    TimedOut,
}

impl TransferState {
    /// Its name for Python.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::NotNeeded => "not_needed",
            TransferState::Running => "running",
            TransferState::Complete => "complete",
            TransferState::TimedOut => "timed_out",
        }
    }
}

struct Transfer {
    state: TransferState,
    request: u64,
    /// Members still to ask, oldest first.
    candidates: Vec<Arc<Member>>,
    /// The member asked now.
    source: Option<MemberId>,
    deadline: Instant,
    /// Messages that arrived while it ran, applied after it.
    queue: Vec<(MemberId, Body)>,
}

/// A session as handed to Python.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// Id.
    pub id: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Last access, ms.
    pub last_accessed_ms: i64,
    /// Max inactive seconds.
    pub max_inactive: i32,
    /// isNew.
    pub is_new: bool,
    /// Principal.
    pub principal: Option<String>,
    /// Auth type.
    pub auth_type: Option<String>,
    /// Live attributes, encoded.
    pub attrs: Vec<(String, Bytes)>,
}

impl SessionView {
    fn of(id: &str, e: &Entry) -> Self {
        SessionView {
            id: id.to_owned(),
            created_ms: e.created_ms,
            last_accessed_ms: e.last_accessed_ms,
            max_inactive: e.max_inactive.value,
            is_new: e.is_new.value,
            principal: e.principal().value.clone(),
            auth_type: e.auth_type().value.clone(),
            attrs: e
                .live_attrs()
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect(),
        }
    }
}

/// One attribute change of a commit.
#[derive(Debug, Clone)]
pub struct AttrWrite {
    /// Attribute name.
    pub name: String,
    /// New encoded value; None = removed.
    pub value: Option<Bytes>,
    /// Kept on this member only (excluded by the attribute filter).
    pub local: bool,
}

/// A session event for Python listeners.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// The manager.
    pub manager: Arc<str>,
    /// `created`, `destroyed`, `added`, `replaced` or `removed`.
    pub kind: &'static str,
    /// Session id.
    pub id: String,
    /// Attribute name (attribute events).
    pub name: Option<String>,
    /// Old value (replaced, removed).
    pub old: Option<Bytes>,
    /// New value (added, replaced).
    pub new: Option<Bytes>,
}

/// What a commit sends once its local part is done.
enum CommitSend {
    /// Nothing (the flag: whether the session still exists).
    Done(bool),
    /// An "accessed" message (sent asynchronously).
    Accessed(Box<Body>, Option<Vec<MemberKey>>),
    /// The whole session, to a new backup (BackupManager, its backup left).
    Publish,
    /// The delta, to these members (None: all).
    Delta(Vec<u8>, Option<Vec<MemberKey>>),
}

/// One manager of one running channel.
pub struct Manager {
    name: Arc<str>,
    settings: Settings,
    me: MemberId,
    writer: u64,
    link: Link,
    table: Mutex<Table>,
    stats: ManagerStats,
    transfer: Mutex<Transfer>,
    transfer_done: Condvar,
    rpc: Mutex<HashMap<u64, Option<Option<WireSession>>>>,
    rpc_done: Condvar,
    next_request: AtomicU64,
    round_robin: AtomicUsize,
    listening: AtomicBool,
}

fn writer_of(id: &MemberId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_be_bytes(b)
}

/// A new session id: 128 bits from the OS CSPRNG as 32 hex digits, then `.<route>` if any.
pub fn new_session_id(route: Option<&str>) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Session("the OS random number generator failed".into()))?;
    let mut id = String::with_capacity(48);
    for x in b {
        id.push_str(&format!("{x:02X}"));
    }
    if let Some(r) = route.filter(|r| !r.is_empty()) {
        id.push('.');
        id.push_str(r);
    }
    Ok(id)
}

impl Manager {
    /// A manager on a running channel. `me` is the local member's unique id.
    pub(crate) fn new(name: &str, settings: Settings, link: Link, me: MemberId) -> Self {
        Manager {
            name: Arc::from(name),
            settings,
            me,
            writer: writer_of(&me),
            link,
            table: Mutex::new(Table::default()),
            stats: ManagerStats::default(),
            transfer: Mutex::new(Transfer {
                state: TransferState::NotNeeded,
                request: 0,
                candidates: Vec::new(),
                source: None,
                deadline: Instant::now(),
                queue: Vec::new(),
            }),
            transfer_done: Condvar::new(),
            rpc: Mutex::new(HashMap::new()),
            rpc_done: Condvar::new(),
            next_request: AtomicU64::new(rand::random::<u32>() as u64),
            round_robin: AtomicUsize::new(0),
            listening: AtomicBool::new(false),
        }
    }

    /// The manager's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` on the channel runtime's pool of blocking threads (for a commit whose caller
    /// must not block, such as an asyncio event loop).
    pub fn spawn_blocking(&self, work: impl FnOnce() + Send + 'static) {
        drop(self.link.handle.spawn_blocking(work));
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counters.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.stats.snapshot();
        let t = self.table.lock();
        let mut primary = 0u64;
        let mut copies = 0u64;
        let mut proxies = 0u64;
        for (_, e) in t.iter() {
            match e.role {
                Role::Primary => primary += 1,
                Role::Copy => copies += 1,
                Role::Proxy => proxies += 1,
            }
        }
        v.push(("sessions_primary", primary));
        v.push(("sessions_copies", copies));
        v.push(("sessions_proxies", proxies));
        v
    }

    /// Turns posting of replication events to Python on or off.
    pub fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Relaxed);
    }

    fn tracking(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.link.shared.view.read().clone()
    }

    fn member(&self, id: &MemberId) -> Option<Arc<Member>> {
        if *id == NO_MEMBER {
            return None;
        }
        self.members()
            .iter()
            .find(|m| m.packet.unique_id == *id)
            .cloned()
    }

    /// True when `to` (None: every member) names nobody.
    fn nobody(&self, to: Option<&[MemberKey]>) -> bool {
        match to {
            Some(t) => t.is_empty(),
            None => self.members().is_empty(),
        }
    }

    fn send(&self, body: &Body, to: Option<&[MemberKey]>, options: u32) -> Result<()> {
        if self.nobody(to) {
            return Ok(()); // not even worth encoding
        }
        self.send_payload(&encode(&self.name, body), to, options)
    }

    fn send_payload(&self, data: &[u8], to: Option<&[MemberKey]>, options: u32) -> Result<()> {
        if self.nobody(to) {
            return Ok(());
        }
        let r = self.link.send(data, to, options);
        if r.is_err() {
            crate::stats::inc(&self.stats.send_failures);
        }
        r
    }

    /// Sends an answer to a member that asked, in the view or not yet.
    fn answer(&self, body: &Body, to: &Arc<Member>, options: u32) -> Result<()> {
        let r = self
            .link
            .send_direct(&encode(&self.name, body), to, options);
        if let Err(e) = &r {
            crate::stats::inc(&self.stats.send_failures);
            log::warn!(target: "tribes::session", "manager {}: answering {to} ({}) failed: {e}",
                self.name, Body::kind_name(body.kind()));
        }
        r
    }

    /// Sends without failing the caller: a failure is counted and logged.
    fn send_logged(&self, body: &Body, to: Option<&[MemberKey]>, options: u32) {
        if let Err(e) = self.send(body, to, options) {
            log::warn!(target: "tribes::session", "manager {}: sending {} failed: {e}",
                self.name, Body::kind_name(body.kind()));
        }
    }

    fn mode(&self) -> u32 {
        self.settings.send_options
    }

    fn post(&self, events: Vec<Event>) {
        for ev in events {
            self.link.handle.block_on(self.link.shared.events.post(ev));
        }
    }

    fn event(
        &self,
        events: &mut Vec<Event>,
        kind: &'static str,
        id: &str,
        name: Option<String>,
        old: Option<Bytes>,
        new: Option<Bytes>,
    ) {
        if self.listening.load(Ordering::Relaxed) {
            events.push(Event::Session(SessionEvent {
                manager: self.name.clone(),
                kind,
                id: id.to_owned(),
                name,
                old,
                new,
            }));
        }
    }

    fn applied_events(&self, events: &mut Vec<Event>, id: &str, a: Applied) {
        if a.created {
            self.event(events, "created", id, None, None, None);
        }
        for c in a.changes {
            let kind = match (&c.old, &c.new) {
                (None, Some(_)) => "added",
                (Some(_), Some(_)) => "replaced",
                _ => "removed",
            };
            self.event(events, kind, id, Some(c.name), c.old, c.new);
        }
        crate::stats::add(&self.stats.stale_writes, a.stale);
        if a.ended {
            crate::stats::inc(&self.stats.ended_session_messages);
        }
    }

    // -- operations called from Python -------------------------------------------------------------

    /// Sessions held with data (primaries and copies).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .iter()
            .filter(|(_, e)| e.role != Role::Proxy)
            .count()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of the sessions held with data.
    pub fn ids(&self) -> Vec<String> {
        self.table
            .lock()
            .iter()
            .filter(|(_, e)| e.role != Role::Proxy)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// (id, role, primary, backup) of every entry, proxies included.
    pub fn entries(&self) -> Vec<(String, Role, MemberId, MemberId)> {
        self.table
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.role, e.primary, e.backup))
            .collect()
    }

    /// Creates a session (this member is its primary) and tells the others.
    pub fn create(&self) -> Result<SessionView> {
        let now = now_ms();
        let id = new_session_id(self.settings.route.as_deref())?;
        let mut entry = Entry::new(now, self.settings.max_inactive, Role::Primary);
        entry.primary = self.me;
        {
            let mut t = self.table.lock();
            if self.settings.max_active >= 0 {
                let active = t.iter().filter(|(_, e)| e.role != Role::Proxy).count();
                if active as i64 >= self.settings.max_active {
                    return Err(Error::TooManySessions(format!(
                        "manager {:?} holds {active} sessions, its max_active; \
                         create() refused (raise max_active or lower max_inactive)",
                        &*self.name
                    )));
                }
            }
            if !t.insert(&id, entry.clone()) {
                return Err(Error::Session("session id collision; try again".into()));
            }
        }
        crate::stats::inc(&self.stats.sessions_created);
        let view = SessionView::of(&id, &entry);
        match self.settings.kind {
            // The first commit's delta carries the creation too, so this message may travel
            // asynchronously: if it is lost or late, nothing is.
            Kind::Delta => self.send_logged(
                &Body::Created {
                    id: id.clone(),
                    created_ms: now,
                    max_inactive: self.settings.max_inactive,
                },
                None,
                ASYNCHRONOUS,
            ),
            Kind::Backup => self.publish(&id, &[]),
        }
        Ok(view)
    }

    /// The session, or None. A BackupManager makes this member its primary first, fetching it
    /// from its backup (or primary) when this member holds only a proxy.
    pub fn get(&self, id: &str) -> Result<Option<SessionView>> {
        let now = now_ms();
        let role = {
            let t = self.table.lock();
            // Never through a renamed id's alias: an old id (fixation defence) finds nothing.
            match t.get(id) {
                None => return Ok(None),
                Some(e) if self.expired_at(e, now) => None,
                Some(e) => Some(e.role),
            }
        };
        let Some(role) = role else {
            // Idle past its limit: it ends now (Tomcat's isValid() on access).
            self.expire_one(id, now);
            return Ok(None);
        };
        if self.settings.kind == Kind::Backup && role != Role::Primary {
            self.make_primary(id)?;
        }
        let t = self.table.lock();
        Ok(t.get(id)
            .filter(|e| e.role != Role::Proxy)
            .map(|e| SessionView::of(id, e)))
    }

    /// The session as held here, without any side effect (no fetch, no change of owner).
    pub fn peek(&self, id: &str) -> Option<(SessionView, Role)> {
        let t = self.table.lock();
        t.get(id).map(|e| (SessionView::of(id, e), e.role))
    }

    fn expired_at(&self, e: &Entry, now: i64) -> bool {
        let max = i64::from(e.max_inactive.value);
        if max <= 0 || e.role == Role::Proxy {
            return false;
        }
        let limit = if e.role == Role::Primary {
            max * 1000
        } else {
            max * 2000
        };
        now - e.last_accessed_ms >= limit
    }

    /// Ends the request on a session: sends what changed (one delta), or an accessed message when
    /// Tomcat's rule says so. Returns false when the session no longer exists here.
    pub fn commit(&self, id: &str, writes: Vec<AttrWrite>, meta: Vec<Action>) -> Result<bool> {
        if self.settings.kind == Kind::Backup {
            let role = self.table.lock().get(id).map(|e| e.role);
            match role {
                None => return Ok(false),
                Some(Role::Primary) => {}
                Some(_) => self.make_primary(id)?,
            }
        }
        match self.commit_local(id, writes, meta) {
            CommitSend::Done(alive) => Ok(alive),
            CommitSend::Accessed(body, targets) => {
                // Access refreshes matter for expiry only; they never hold up the request.
                self.send_logged(&body, targets.as_deref(), ASYNCHRONOUS);
                Ok(true)
            }
            CommitSend::Publish => {
                self.publish(id, &[]);
                Ok(true)
            }
            CommitSend::Delta(payload, targets) => {
                self.send_payload(&payload, targets.as_deref(), self.mode())?;
                Ok(true)
            }
        }
    }

    /// [`Manager::commit`] without blocking the caller: returns once the delta is on its way, and
    /// `done` gets the outcome when the acknowledgements are in, on the thread that completes it
    /// (it must not block). The rare commits that need a blocking exchange first (a BackupManager
    /// member taking a session over, or finding it a new backup) run on the runtime's blocking
    /// pool instead.
    pub fn commit_then(
        self: &Arc<Self>,
        id: &str,
        writes: Vec<AttrWrite>,
        meta: Vec<Action>,
        done: impl FnOnce(Result<bool>) + Send + 'static,
    ) {
        if self.settings.kind == Kind::Backup {
            let role = self.table.lock().get(id).map(|e| e.role);
            match role {
                None => return done(Ok(false)),
                Some(Role::Primary) => {}
                Some(_) => {
                    let (me, id) = (self.clone(), id.to_owned());
                    return self.spawn_blocking(move || {
                        done(without_ack_spin(|| me.commit(&id, writes, meta)));
                    });
                }
            }
        }
        match self.commit_local(id, writes, meta) {
            CommitSend::Done(alive) => done(Ok(alive)),
            CommitSend::Accessed(body, targets) => {
                self.send_logged(&body, targets.as_deref(), ASYNCHRONOUS);
                done(Ok(true));
            }
            CommitSend::Publish => {
                let (me, id) = (self.clone(), id.to_owned());
                self.spawn_blocking(move || {
                    without_ack_spin(|| me.publish(&id, &[]));
                    done(Ok(true));
                });
            }
            CommitSend::Delta(payload, targets) => {
                if self.nobody(targets.as_deref()) {
                    return done(Ok(true));
                }
                let me = self.clone();
                self.link
                    .send_then(&payload, targets.as_deref(), self.mode(), move |r| {
                        if r.is_err() {
                            crate::stats::inc(&me.stats.send_failures);
                        }
                        done(r.map(|()| true));
                    });
            }
        }
    }

    /// The part of a commit on this member's table: applies the change and says what to send.
    fn commit_local(&self, id: &str, writes: Vec<AttrWrite>, meta: Vec<Action>) -> CommitSend {
        let now = now_ms();
        let (payload, targets) = {
            let mut t = self.table.lock();
            let Some(e) = t.get_mut(id) else {
                return CommitSend::Done(false);
            };
            let mut actions: Vec<Action> = Vec::with_capacity(writes.len() + meta.len());
            for w in writes {
                if w.local {
                    e.set_local(w.name, w.value);
                } else {
                    actions.push(Action::Attribute(w.name, w.value));
                }
            }
            actions.extend(meta);
            let was_primary = e.role == Role::Primary;
            e.role = Role::Primary;
            e.last_accessed_ms = e.last_accessed_ms.max(now);
            if actions.is_empty() {
                crate::stats::inc(&self.stats.commits_unchanged);
                let refresh = i64::from(e.max_inactive.value) * 1000;
                let due = refresh >= 0 && now - e.last_replicated_ms > refresh;
                if was_primary && !due {
                    return CommitSend::Done(true);
                }
                e.last_replicated_ms = now;
                crate::stats::inc(&self.stats.accessed_sent);
                let body = Body::Accessed {
                    id: id.to_owned(),
                    last_accessed_ms: e.last_accessed_ms,
                    seen_version: e.version,
                };
                return CommitSend::Accessed(Box::new(body), self.change_targets(e));
            }
            let stamp = Stamp::new(e.version + 1, self.writer);
            let delta = Delta {
                id: id.to_owned(),
                created_ms: e.created_ms,
                last_accessed_ms: e.last_accessed_ms,
                stamp,
                actions,
            };
            // Encoded first, then the values move into this member's own copy (no clones).
            let body = Body::Delta(delta);
            let payload = encode(&self.name, &body);
            let Body::Delta(delta) = body else {
                unreachable!("built as a delta above")
            };
            let mut applied = Applied::default();
            for a in delta.actions {
                e.apply_action(stamp, a, &mut applied);
            }
            e.last_replicated_ms = now;
            (payload, self.change_targets(e))
        };
        if self.settings.kind == Kind::Backup
            && targets.as_ref().is_some_and(|t| t.is_empty())
            && !self.members().is_empty()
        {
            // Its backup left and has not been replaced yet: a new backup gets the whole session
            // (this change included) before the commit returns.
            crate::stats::inc(&self.stats.sessions_rebacked);
            return CommitSend::Publish;
        }
        crate::stats::inc(&self.stats.deltas_sent);
        CommitSend::Delta(payload, targets)
    }

    /// Who hears about a session's changes: everyone (delta) or its backup (backup).
    fn change_targets(&self, e: &Entry) -> Option<Vec<MemberKey>> {
        match self.settings.kind {
            Kind::Delta => None,
            Kind::Backup => Some(
                self.member(&e.backup)
                    .map(|m| m.key())
                    .into_iter()
                    .collect(),
            ),
        }
    }

    /// Invalidates a session everywhere. Returns false when it was not held here.
    pub fn invalidate(&self, id: &str) -> Result<bool> {
        let now = now_ms();
        let existed = self.table.lock().end(id, now).is_some();
        if existed {
            crate::stats::inc(&self.stats.sessions_expired);
            crate::stats::inc(&self.stats.expired_sent);
            self.send(&Body::Expired { id: id.to_owned() }, None, self.mode())?;
        }
        Ok(existed)
    }

    /// Gives a session a new id (fixation defence, route rewrite) and tells the others.
    pub fn change_id(&self, old: &str, route: Option<&str>) -> Result<String> {
        let new = new_session_id(route.or(self.settings.route.as_deref()))?;
        if self.settings.kind == Kind::Backup {
            let role = self.table.lock().get(old).map(|e| e.role);
            if matches!(role, Some(r) if r != Role::Primary) {
                self.make_primary(old)?;
            }
        }
        {
            let mut t = self.table.lock();
            if t.get(old).is_none() {
                return Err(Error::Session(format!(
                    "session {old:?} does not exist on this member"
                )));
            }
            t.rename(old, &new, now_ms());
            if let Some(e) = t.get_mut(&new) {
                e.role = Role::Primary;
            }
        }
        crate::stats::inc(&self.stats.change_ids_sent);
        // The rename happened here: the new id is the session's now, whoever missed the message
        // (a member that failed meanwhile is counted and logged; the others have it).
        self.send_logged(
            &Body::ChangeId {
                old: old.to_owned(),
                new: new.clone(),
            },
            None,
            self.mode(),
        );
        Ok(new)
    }

    fn expire_one(&self, id: &str, now: i64) {
        let removed = self.table.lock().end(id, now);
        if let Some(e) = removed {
            let mut events = Vec::new();
            self.event(&mut events, "destroyed", id, None, None, None);
            self.post(events);
            if e.role == Role::Primary {
                crate::stats::inc(&self.stats.sessions_expired);
                crate::stats::inc(&self.stats.expired_sent);
                self.send_logged(&Body::Expired { id: id.to_owned() }, None, self.mode());
            } else {
                crate::stats::inc(&self.stats.copies_expired);
            }
        }
    }

    /// Expires every session idle past its limit at `now_ms`: primaries at `max_inactive`
    /// (and tells the others), copies at twice that. Returns the ids that ended.
    pub fn process_expires(&self, now: i64) -> Vec<String> {
        let due: Vec<String> = {
            let mut t = self.table.lock();
            t.purge_ended(now);
            t.iter()
                .filter(|(_, e)| self.expired_at(e, now))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for id in &due {
            self.expire_one(id, now);
        }
        due
    }

    // -- BackupManager: ownership ------------------------------------------------------------------

    /// Picks a backup for a session, round-robin over the members, avoiding `avoid` unless no other
    /// member is left (a backup that takes over from its primary then swaps roles with it).
    fn pick_backup(&self, avoid: &[MemberId], exclude: &[MemberId]) -> Option<Arc<Member>> {
        let mut members: Vec<Arc<Member>> = self
            .members()
            .iter()
            .filter(|m| m.packet.unique_id != self.me && !exclude.contains(&m.packet.unique_id))
            .cloned()
            .collect();
        if members.iter().any(|m| !avoid.contains(&m.packet.unique_id)) {
            members.retain(|m| !avoid.contains(&m.packet.unique_id));
        }
        if members.is_empty() {
            return None;
        }
        members.sort_by_key(|m| m.packet.unique_id);
        let i = self.round_robin.fetch_add(1, Ordering::Relaxed) % members.len();
        Some(members.swap_remove(i))
    }

    /// Makes this member the primary of a session it holds with data, with a backup on another
    /// member (chosen afresh, avoiding `avoid` if it can), and tells everyone where it lives.
    fn publish(&self, id: &str, avoid: &[MemberId]) {
        let mut failed: Vec<MemberId> = Vec::new();
        // A member that refuses the backup (it does not run this manager) or cannot be reached is
        // skipped, and the next one tried, as Tomcat does.
        for _ in 0..self.members().len().max(1) {
            let Some(backup) = self.pick_backup(avoid, &failed) else {
                break;
            };
            if self.publish_to(id, &backup) {
                return;
            }
            failed.push(backup.packet.unique_id);
        }
        if let Some(e) = self.table.lock().get_mut(id) {
            e.role = Role::Primary;
            e.primary = self.me;
            e.backup = NO_MEMBER;
        }
    }

    /// Sends the whole session to `backup` and announces it; false when the backup refused it.
    fn publish_to(&self, id: &str, backup: &Arc<Member>) -> bool {
        let wire = {
            let mut t = self.table.lock();
            let Some(e) = t.get_mut(id) else {
                return true;
            };
            e.role = Role::Primary;
            e.primary = self.me;
            e.backup = backup.packet.unique_id;
            e.last_replicated_ms = now_ms();
            e.to_wire(id, true)
        };
        // Synchronised, so that a member that does not run this manager answers with a NACK.
        let mode = if self.mode() & USE_ACK != 0 {
            self.mode() | SYNCHRONIZED_ACK
        } else {
            self.mode()
        };
        if let Err(e) = self.send(&Body::Backup(wire), Some(&[backup.key()]), mode) {
            log::info!(target: "tribes::session",
                "manager {}: {backup} did not take the backup of {id}: {e}", self.name);
            return false;
        }
        self.announce(id, backup.packet.unique_id, &[backup.packet.unique_id]);
        true
    }

    /// Tells the members other than `skip` where a session lives (MSG_PROXY).
    fn announce(&self, id: &str, backup: MemberId, skip: &[MemberId]) {
        let others: Vec<MemberKey> = self
            .members()
            .iter()
            .filter(|m| !skip.contains(&m.packet.unique_id))
            .map(|m| m.key())
            .collect();
        self.send_logged(
            &Body::Proxy {
                id: id.to_owned(),
                primary: self.me,
                backup,
            },
            Some(&others),
            ASYNCHRONOUS,
        );
    }

    /// BackupManager `get()` on a member that is not the primary (Tomcat §4.5).
    fn make_primary(&self, id: &str) -> Result<()> {
        let (role, primary, backup) = match self.table.lock().get(id) {
            None => return Ok(()),
            Some(e) => (e.role, e.primary, e.backup),
        };
        match role {
            Role::Primary => {}
            // The backup serves it: a new backup is chosen, the old primary becomes a proxy.
            Role::Copy => self.publish(id, &[primary]),
            Role::Proxy => {
                let mut got = None;
                for (source, is_backup) in [(backup, true), (primary, false)] {
                    let Some(m) = self.member(&source) else {
                        continue;
                    };
                    if let Some(s) = self.retrieve(&m, id)? {
                        got = Some((s, is_backup, source));
                        break;
                    }
                }
                let Some((s, from_backup, source)) = got else {
                    log::warn!(target: "tribes::session",
                        "manager {}: session {id} could not be fetched from its primary or backup",
                        self.name);
                    // Neither holds it any more: the proxy is stale.
                    self.table.lock().forget(id);
                    return Ok(());
                };
                crate::stats::inc(&self.stats.sessions_fetched);
                {
                    let mut t = self.table.lock();
                    t.merge(s, Role::Primary, false);
                    if let Some(e) = t.get_mut(id) {
                        e.role = Role::Primary;
                        e.primary = self.me;
                    }
                }
                if from_backup {
                    // Keep the same backup; it and everyone else learn the new primary.
                    if let Some(e) = self.table.lock().get_mut(id) {
                        e.backup = source;
                    }
                    self.announce(id, source, &[]);
                } else {
                    self.publish(id, &[]);
                }
            }
        }
        Ok(())
    }

    /// Asks `member` for a session (MSG_RETRIEVE_BACKUP) and waits for the answer.
    fn retrieve(&self, member: &Arc<Member>, id: &str) -> Result<Option<WireSession>> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.rpc.lock().insert(request, None);
        let sent = self.send(
            &Body::Retrieve {
                request,
                id: id.to_owned(),
            },
            Some(&[member.key()]),
            USE_ACK,
        );
        if sent.is_err() {
            self.rpc.lock().remove(&request);
            return Ok(None);
        }
        let deadline = Instant::now() + self.settings.rpc_timeout;
        let mut rpc = self.rpc.lock();
        loop {
            if let Some(Some(answer)) = rpc.get(&request) {
                let answer = answer.clone();
                rpc.remove(&request);
                return Ok(answer);
            }
            if self.rpc_done.wait_until(&mut rpc, deadline).timed_out() {
                rpc.remove(&request);
                return Ok(None);
            }
        }
    }

    /// A member left: ask another for the sessions if it was the transfer's source, and (for a
    /// BackupManager) restore two copies of every session it held.
    pub(crate) fn on_member_gone(&self, gone: &Member) {
        let was_source = {
            let tr = self.transfer.lock();
            tr.state == TransferState::Running && tr.source == Some(gone.packet.unique_id)
        };
        if was_source {
            self.ask_next();
        }
        if self.settings.kind != Kind::Backup {
            return;
        }
        let gone_id = gone.packet.unique_id;
        let live: Vec<MemberId> = self.members().iter().map(|m| m.packet.unique_id).collect();
        let mut rebackup = Vec::new();
        let mut promote = Vec::new();
        let mut lost = Vec::new();
        {
            let mut t = self.table.lock();
            for (id, e) in t.iter_mut() {
                match e.role {
                    Role::Primary if e.backup == gone_id => rebackup.push(id.clone()),
                    Role::Copy if e.primary == gone_id => promote.push(id.clone()),
                    Role::Proxy if e.primary == gone_id || e.backup == gone_id => {
                        let p_alive = live.contains(&e.primary);
                        let b_alive = live.contains(&e.backup);
                        if !p_alive && !b_alive {
                            lost.push(id.clone());
                        } else if e.primary == gone_id {
                            e.primary = NO_MEMBER;
                        }
                    }
                    _ => {}
                }
            }
            for id in &lost {
                t.forget(id);
            }
        }
        if !lost.is_empty() {
            crate::stats::add(&self.stats.sessions_lost, lost.len() as u64);
            log::warn!(target: "tribes::session",
                "manager {}: {} session(s) lost: their primary and backup both left", self.name, lost.len());
        }
        for id in rebackup {
            crate::stats::inc(&self.stats.sessions_rebacked);
            self.publish(&id, &[gone_id]);
        }
        for id in promote {
            crate::stats::inc(&self.stats.sessions_promoted);
            self.publish(&id, &[gone_id]);
        }
    }

    /// A member joined: primaries without a backup get one (BackupManager).
    pub(crate) fn on_member_added(&self, _added: &Member) {
        if self.settings.kind != Kind::Backup {
            return;
        }
        let orphans: Vec<String> = self
            .table
            .lock()
            .iter()
            .filter(|(_, e)| e.role == Role::Primary && self.member(&e.backup).is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for id in orphans {
            self.publish(&id, &[]);
        }
    }

    // -- state transfer ----------------------------------------------------------------------------

    /// Starts asking the oldest member for every session (Tomcat's getAllClusterSessions); does
    /// nothing once started.
    pub fn begin_transfer(&self) {
        if self.transfer.lock().request != 0 {
            return;
        }
        let mut candidates: Vec<Arc<Member>> = self.members().iter().cloned().collect();
        if candidates.is_empty() {
            return;
        }
        candidates.reverse(); // popped from the end: oldest first
        {
            let mut tr = self.transfer.lock();
            tr.state = TransferState::Running;
            tr.candidates = candidates;
            tr.deadline = Instant::now() + self.settings.state_transfer_timeout;
        }
        self.ask_next();
    }

    /// Asks the next candidate; completes the transfer when none is left.
    pub(crate) fn ask_next(&self) {
        loop {
            let (next, request) = {
                let mut tr = self.transfer.lock();
                if tr.state != TransferState::Running {
                    return;
                }
                let Some(next) = tr.candidates.pop() else {
                    drop(tr);
                    // Nobody else runs this manager: there is nothing to fetch.
                    self.finish_transfer(TransferState::Complete);
                    return;
                };
                tr.request = self.next_request.fetch_add(1, Ordering::Relaxed);
                tr.source = Some(next.packet.unique_id);
                (next, tr.request)
            };
            log::debug!(target: "tribes::session", "manager {}: asking {next} for all sessions", self.name);
            if self
                .send(&Body::GetAll { request }, Some(&[next.key()]), USE_ACK)
                .is_ok()
            {
                return;
            }
        }
    }

    fn finish_transfer(&self, state: TransferState) {
        let queue = {
            let mut tr = self.transfer.lock();
            if tr.state != TransferState::Running {
                return;
            }
            tr.state = state;
            std::mem::take(&mut tr.queue)
        };
        if state == TransferState::TimedOut {
            crate::stats::inc(&self.stats.transfer_timeouts);
            log::warn!(target: "tribes::session",
                "manager {}: state transfer timed out after {:?}; continuing with the sessions received",
                self.name, self.settings.state_transfer_timeout);
        } else {
            log::info!(target: "tribes::session", "manager {}: state transfer complete ({} sessions)",
                self.name, self.len());
        }
        let mut events = Vec::new();
        for (sender, body) in queue {
            self.apply(sender, body, &mut events);
        }
        self.post(events);
        self.transfer_done.notify_all();
    }

    /// Waits for the state transfer; times it out at its deadline.
    pub fn wait_transfer(&self) -> TransferState {
        let mut tr = self.transfer.lock();
        while tr.state == TransferState::Running {
            let deadline = tr.deadline;
            if self.transfer_done.wait_until(&mut tr, deadline).timed_out()
                && tr.state == TransferState::Running
            {
                drop(tr);
                self.finish_transfer(TransferState::TimedOut);
                return self.transfer.lock().state;
            }
        }
        tr.state
    }

    /// The state transfer's state as it stands (no side effect).
    pub fn current_transfer_state(&self) -> TransferState {
        self.transfer.lock().state
    }

    /// The state transfer's state, timing it out when past its deadline (from the worker tick).
    pub fn transfer_state(&self) -> TransferState {
        let (state, deadline) = {
            let tr = self.transfer.lock();
            (tr.state, tr.deadline)
        };
        if state == TransferState::Running && Instant::now() >= deadline {
            self.finish_transfer(TransferState::TimedOut);
            return self.transfer.lock().state;
        }
        state
    }

    /// Sends every session to a member that asked (runs on the session worker).
    pub(crate) fn send_state(&self, to: &Arc<Member>, request: u64) {
        let with_attrs = self.settings.kind == Kind::Delta;
        let ids: Vec<String> = self
            .table
            .lock()
            .iter()
            .filter(|(_, e)| with_attrs || e.role != Role::Proxy || e.primary != NO_MEMBER)
            .map(|(k, _)| k.clone())
            .collect();
        let mut sent = 0u64;
        // Batches are built under the lock one at a time, so the table is never copied whole.
        for chunk in ids.chunks(self.settings.batch_size.max(1)) {
            let sessions: Vec<WireSession> = {
                let t = self.table.lock();
                chunk
                    .iter()
                    .filter_map(|id| t.get(id).map(|e| (id, e)))
                    .map(|(id, e)| {
                        let mut w = e.to_wire(id, with_attrs && e.role != Role::Proxy);
                        if e.role == Role::Primary {
                            w.primary = self.me;
                        }
                        w
                    })
                    .collect()
            };
            sent += sessions.len() as u64;
            if self
                .answer(
                    &Body::AllData { request, sessions },
                    to,
                    USE_ACK | SYNCHRONIZED_ACK,
                )
                .is_err()
            {
                return;
            }
        }
        crate::stats::add(&self.stats.transfer_sessions_sent, sent);
        let _ = self.answer(
            &Body::TransferComplete {
                request,
                count: sent,
            },
            to,
            USE_ACK,
        );
        log::info!(target: "tribes::session", "manager {}: sent {sent} session(s) to {to}", self.name);
    }

    /// Answers a retrieve (runs on the session worker).
    pub(crate) fn answer_retrieve(&self, to: &Arc<Member>, request: u64, id: &str) {
        let session = {
            let t = self.table.lock();
            t.get(id)
                .filter(|e| e.role != Role::Proxy)
                .map(|e| e.to_wire(id, true))
        };
        let _ = self.answer(&Body::Retrieved { request, session }, to, USE_ACK);
    }

    // -- messages from the network -----------------------------------------------------------------

    /// Handles a message for this manager on the receiver task. Never blocks on the network.
    pub(crate) fn on_message(
        self: &Arc<Self>,
        sender: &Arc<Member>,
        body: Body,
        jobs: &crossbeam_channel::Sender<Job>,
        events: &mut Vec<Event>,
    ) {
        crate::stats::inc(&self.stats.messages_received);
        let from = sender.packet.unique_id;
        match body {
            Body::GetAll { request } => {
                let _ = jobs.send(Job::SendState {
                    manager: self.clone(),
                    to: sender.clone(),
                    request,
                });
            }
            Body::Retrieve { request, id } => {
                let _ = jobs.send(Job::AnswerRetrieve {
                    manager: self.clone(),
                    to: sender.clone(),
                    request,
                    id,
                });
            }
            Body::Retrieved { request, session } => {
                let mut rpc = self.rpc.lock();
                if let Some(slot) = rpc.get_mut(&request) {
                    *slot = Some(session);
                    self.rpc_done.notify_all();
                }
            }
            Body::AllData { request, sessions } => {
                if self.transfer.lock().request != request {
                    return;
                }
                let role = match self.settings.kind {
                    Kind::Delta => Role::Copy,
                    Kind::Backup => Role::Proxy,
                };
                crate::stats::add(
                    &self.stats.transfer_sessions_received,
                    sessions.len() as u64,
                );
                let track = self.tracking();
                let mut t = self.table.lock();
                for s in sessions {
                    let (id, primary, backup) = (s.id.clone(), s.primary, s.backup);
                    let a = t.merge(s, role, track);
                    if let Some(e) = t.get_mut(&id) {
                        if self.settings.kind == Kind::Backup && e.role == Role::Proxy {
                            e.primary = primary;
                            e.backup = backup;
                        }
                    }
                    self.applied_events(events, &id, a);
                }
            }
            Body::TransferComplete { request, .. } => {
                if self.transfer.lock().request == request {
                    self.finish_transfer_inline(events);
                }
            }
            Body::NoManager { request } => {
                if self.transfer.lock().request == request {
                    let _ = jobs.send(Job::AskNext(self.clone()));
                }
            }
            other => {
                {
                    let mut tr = self.transfer.lock();
                    // Stamps make applying at once safe too: past the cap, memory wins.
                    if tr.state == TransferState::Running && tr.queue.len() < MAX_TRANSFER_QUEUE {
                        crate::stats::inc(&self.stats.transfer_queued);
                        tr.queue.push((from, other));
                        return;
                    }
                }
                self.apply(from, other, events);
            }
        }
    }

    fn finish_transfer_inline(&self, events: &mut Vec<Event>) {
        let queue = {
            let mut tr = self.transfer.lock();
            if tr.state != TransferState::Running {
                return;
            }
            tr.state = TransferState::Complete;
            std::mem::take(&mut tr.queue)
        };
        log::info!(target: "tribes::session", "manager {}: state transfer complete ({} sessions)",
            self.name, self.len());
        for (sender, body) in queue {
            self.apply(sender, body, events);
        }
        self.transfer_done.notify_all();
    }

    /// Applies a session change from member `from`.
    fn apply(&self, from: MemberId, body: Body, events: &mut Vec<Event>) {
        let now = now_ms();
        let backup_kind = self.settings.kind == Kind::Backup;
        match body {
            Body::Created {
                id,
                created_ms,
                max_inactive,
            } => {
                let mut t = self.table.lock();
                if t.get(&id).is_none() && !t.has_ended(&id) {
                    let mut e = Entry::new(created_ms, max_inactive, Role::Copy);
                    e.primary = from;
                    t.insert(&id, e);
                    drop(t);
                    self.event(events, "created", &id, None, None, None);
                }
            }
            Body::Delta(d) => {
                crate::stats::inc(&self.stats.deltas_received);
                let track = self.tracking();
                let id = d.id.clone();
                let stamp = d.stamp;
                let mut t = self.table.lock();
                // Where the session was last used follows the newest change, not the last to
                // arrive: a delta that was overtaken by this member's own later commit (sent
                // before it, applied after it) leaves this member the primary. Otherwise expiry
                // here would wait twice max_inactive for a session this member served last.
                let overtaken = t.resolve(&id).and_then(|r| t.get(r)).is_some_and(|e| {
                    e.role == Role::Primary && stamp <= Stamp::new(e.version, self.writer)
                });
                let a = t.apply_delta(d, self.settings.max_inactive, Role::Copy, track);
                if let Some(e) = t
                    .resolve(&id)
                    .map(str::to_owned)
                    .and_then(|r| t.get_mut(&r))
                    .filter(|_| !overtaken)
                {
                    e.role = Role::Copy;
                    if backup_kind {
                        e.primary = from;
                        e.backup = self.me;
                    }
                }
                drop(t);
                self.applied_events(events, &id, a);
            }
            Body::Accessed {
                id,
                last_accessed_ms,
                seen_version,
            } => {
                let mut t = self.table.lock();
                if let Some(e) = t
                    .resolve(&id)
                    .map(str::to_owned)
                    .and_then(|r| t.get_mut(&r))
                {
                    e.last_accessed_ms = e.last_accessed_ms.max(last_accessed_ms);
                    // As for deltas: an access served by a member that had not yet seen this
                    // member's latest change happened before it (or alongside it), and leaves
                    // this member the primary. Versions, not clocks, so clock skew between hosts
                    // cannot make a member expire a session another one is serving.
                    let overtaken = seen_version != 0 && seen_version < e.version;
                    if !overtaken && e.role == Role::Primary && !backup_kind {
                        e.role = Role::Copy;
                    }
                }
            }
            Body::Expired { id } => {
                if self.table.lock().end(&id, now).is_some() {
                    self.event(events, "destroyed", &id, None, None, None);
                }
            }
            Body::ChangeId { old, new } => {
                let mut t = self.table.lock();
                t.rename(&old, &new, now);
                if let Some(e) = t.get_mut(&new) {
                    if e.role == Role::Primary {
                        e.role = if backup_kind { Role::Proxy } else { Role::Copy };
                        if backup_kind {
                            e.drop_data();
                        }
                    }
                }
            }
            Body::Backup(s) => {
                let (id, primary) = (s.id.clone(), s.primary);
                let track = self.tracking();
                let mut t = self.table.lock();
                let a = t.merge(s, Role::Copy, track);
                if let Some(e) = t.get_mut(&id) {
                    e.role = Role::Copy;
                    e.primary = primary;
                    e.backup = self.me;
                    e.last_accessed_ms = e.last_accessed_ms.max(now);
                }
                drop(t);
                self.applied_events(events, &id, a);
            }
            Body::Proxy {
                id,
                primary,
                backup,
            } => {
                if primary == self.me {
                    return;
                }
                let mut t = self.table.lock();
                if t.has_ended(&id) {
                    return;
                }
                match t.get_mut(&id) {
                    Some(e) => {
                        e.primary = primary;
                        e.backup = backup;
                        if backup == self.me && e.role != Role::Proxy {
                            e.role = Role::Copy;
                        } else if backup != self.me {
                            // An old primary or backup: the data now lives elsewhere.
                            e.role = Role::Proxy;
                            e.drop_data();
                        }
                    }
                    None => {
                        let mut e = Entry::new(now, self.settings.max_inactive, Role::Proxy);
                        e.primary = primary;
                        e.backup = backup;
                        t.insert(&id, e);
                    }
                }
            }
            // Handled in on_message.
            Body::GetAll { .. }
            | Body::AllData { .. }
            | Body::TransferComplete { .. }
            | Body::NoManager { .. }
            | Body::Retrieve { .. }
            | Body::Retrieved { .. } => {}
        }
    }
}
