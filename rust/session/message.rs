//! Session messages: what managers send each other, inside a channel message's payload.
//!
//! Layout: the 4-byte magic `TRSM`, one version byte ([`VERSION`]), one kind byte, the manager name
//! (u8 length + UTF-8), then the kind's body. Integers are LEB128 varints (signed ones zigzag),
//! strings and byte strings a varint length then the bytes. The kinds follow Tomcat's
//! `SessionMessage` event types (reference §4.2) with the same numbers, plus the BackupManager's
//! map messages (§4.5) from 20 up. Decoding checks every length against what is left before it
//! allocates, and rejects bad input with a [`MessageError`], never a panic.

use bytes::Bytes;
use thiserror::Error;

use super::table::{Slot, Stamp, Stamped, WireSession};

/// Marks a channel message as a tribes session message.
pub const MAGIC: &[u8; 4] = b"TRSM";
/// Asks a member for its counters (`tribes status`); the answer is [`STATS_REPLY`] + JSON.
pub const STATS_REQUEST: &[u8; 5] = b"TRSQ\x01";
/// Prefixes a member's counters as JSON, in answer to [`STATS_REQUEST`].
pub const STATS_REPLY: &[u8; 5] = b"TRSR\x01";
/// The session message format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Longest manager name.
pub const MAX_NAME: usize = 255;
/// Longest session id, attribute name, principal or auth type.
pub const MAX_TEXT: usize = 4096;
/// Most actions in one delta, sessions in one batch, or attributes in one session.
pub const MAX_ITEMS: usize = 1 << 20;

/// A malformed session message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// Not a session message at all.
    #[error("not a session message")]
    NotSession,
    /// A version this build does not read.
    #[error("unsupported session message version {0}")]
    Version(u8),
    /// An unknown kind byte.
    #[error("unknown session message kind {0}")]
    Kind(u8),
    /// Ran out of bytes.
    #[error("truncated session message ({0})")]
    Truncated(&'static str),
    /// A field out of range.
    #[error("invalid session message: {0}")]
    Invalid(&'static str),
    /// Bytes left after the body.
    #[error("{0} trailing byte(s) after the session message")]
    Trailing(usize),
}

/// A member, by its 16-byte unique id (BackupManager's primary/backup references).
pub type MemberId = [u8; 16];

/// One change carried by a delta (Tomcat's DeltaRequest actions, §4.3).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Attribute set (value = encoded bytes) or removed (None).
    Attribute(String, Option<Bytes>),
    /// Principal set or removed.
    Principal(Option<String>),
    /// The is-new flag.
    IsNew(bool),
    /// Max inactive interval in seconds (≤ 0: never expires).
    MaxInactive(i32),
    /// Auth type set or removed.
    AuthType(Option<String>),
}

/// A delta: the changes of one commit, all under one stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Session id.
    pub id: String,
    /// Creation time (ms since the epoch), so a delta for an unknown session can create it.
    pub created_ms: i64,
    /// The committing member's last-accessed time.
    pub last_accessed_ms: i64,
    /// The stamp of every action.
    pub stamp: Stamp,
    /// The changes.
    pub actions: Vec<Action>,
}

/// A session message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// 1: a session was created (Tomcat EVT_SESSION_CREATED).
    Created {
        /// Session id.
        id: String,
        /// Creation time, ms.
        created_ms: i64,
        /// Max inactive seconds.
        max_inactive: i32,
    },
    /// 2: a session ended everywhere (EVT_SESSION_EXPIRED; BackupManager's MSG_REMOVE).
    Expired {
        /// Session id.
        id: String,
    },
    /// 3: a session was used without change (EVT_SESSION_ACCESSED; MSG_ACCESS).
    Accessed {
        /// Session id.
        id: String,
        /// Access time, ms.
        last_accessed_ms: i64,
        /// The highest change version the sender held when it served the access (0: unknown, an
        /// older sender). Optional on the wire, last, so older encodings still decode.
        seen_version: u64,
    },
    /// 4: send me every session (EVT_GET_ALL_SESSIONS; MSG_STATE for BackupManager).
    GetAll {
        /// Request id, echoed in the answers.
        request: u64,
    },
    /// 12: a batch of sessions (EVT_ALL_SESSION_DATA).
    AllData {
        /// Request id.
        request: u64,
        /// The sessions (for BackupManager: proxies, without attributes).
        sessions: Vec<WireSession>,
    },
    /// 13: the changes of one commit (EVT_SESSION_DELTA; MSG_BACKUP diff).
    Delta(Delta),
    /// 14: every batch was sent (EVT_ALL_SESSION_TRANSFERCOMPLETE).
    TransferComplete {
        /// Request id.
        request: u64,
        /// Sessions sent in all batches.
        count: u64,
    },
    /// 15: a session's id changed (EVT_CHANGE_SESSION_ID).
    ChangeId {
        /// The old id.
        old: String,
        /// The new id.
        new: String,
    },
    /// 16: the asked member has no manager of this name (EVT_ALL_SESSION_NOCONTEXTMANAGER).
    NoManager {
        /// Request id.
        request: u64,
    },
    /// 20: a whole session for its backup (MSG_BACKUP, full value).
    Backup(WireSession),
    /// 21: where a session lives (MSG_PROXY / MSG_NOTIFY_MAPMEMBER).
    Proxy {
        /// Session id.
        id: String,
        /// Its primary.
        primary: MemberId,
        /// Its backup (zero: none).
        backup: MemberId,
    },
    /// 22: send me this session (MSG_RETRIEVE_BACKUP).
    Retrieve {
        /// Request id.
        request: u64,
        /// Session id.
        id: String,
    },
    /// 23: the answer to [`Body::Retrieve`].
    Retrieved {
        /// Request id.
        request: u64,
        /// The session, if this member had it.
        session: Option<WireSession>,
    },
}

impl Body {
    /// Tomcat's event-type number (or tribes' own for the map messages).
    pub fn kind(&self) -> u8 {
        match self {
            Body::Created { .. } => 1,
            Body::Expired { .. } => 2,
            Body::Accessed { .. } => 3,
            Body::GetAll { .. } => 4,
            Body::AllData { .. } => 12,
            Body::Delta(_) => 13,
            Body::TransferComplete { .. } => 14,
            Body::ChangeId { .. } => 15,
            Body::NoManager { .. } => 16,
            Body::Backup(_) => 20,
            Body::Proxy { .. } => 21,
            Body::Retrieve { .. } => 22,
            Body::Retrieved { .. } => 23,
        }
    }

    /// A short name for counters and logs.
    pub fn kind_name(kind: u8) -> &'static str {
        match kind {
            1 => "created",
            2 => "expired",
            3 => "accessed",
            4 => "get_all",
            12 => "all_data",
            13 => "delta",
            14 => "transfer_complete",
            15 => "change_id",
            16 => "no_manager",
            20 => "backup",
            21 => "proxy",
            22 => "retrieve",
            23 => "retrieved",
            _ => "unknown",
        }
    }
}

/// A decoded session message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The manager it is for.
    pub manager: String,
    /// What it says.
    pub body: Body,
}

/// True when `payload` starts like a session message (magic only; the version is checked later).
pub fn is_session_message(payload: &[u8]) -> bool {
    payload.len() >= MAGIC.len() && &payload[..MAGIC.len()] == MAGIC
}

// -- writing ---------------------------------------------------------------------------------------

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn uv(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn iv(&mut self, v: i64) {
        self.uv(((v << 1) ^ (v >> 63)) as u64);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.uv(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: &Option<String>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn stamp(&mut self, s: Stamp) {
        self.uv(s.version);
        self.uv(s.writer);
    }
    fn member(&mut self, m: &MemberId) {
        self.0.extend_from_slice(m);
    }
    fn session(&mut self, s: &WireSession) {
        self.str(&s.id);
        self.iv(s.created_ms);
        self.iv(s.last_accessed_ms);
        self.stamp(s.max_inactive.stamp);
        self.iv(i64::from(s.max_inactive.value));
        self.stamp(s.is_new.stamp);
        self.u8(u8::from(s.is_new.value));
        self.stamp(s.principal.stamp);
        self.opt_str(&s.principal.value);
        self.stamp(s.auth_type.stamp);
        self.opt_str(&s.auth_type.value);
        self.member(&s.primary);
        self.member(&s.backup);
        self.uv(s.attrs.len() as u64);
        for (name, slot) in &s.attrs {
            self.str(name);
            self.stamp(slot.stamp);
            match &slot.value {
                None => self.u8(0),
                Some(v) => {
                    self.u8(1);
                    self.bytes(v);
                }
            }
        }
    }
}

/// Encodes a session message.
pub fn encode(manager: &str, body: &Body) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64));
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.u8(body.kind());
    let name = &manager.as_bytes()[..manager.len().min(MAX_NAME)];
    w.u8(name.len() as u8);
    w.0.extend_from_slice(name);
    match body {
        Body::Created {
            id,
            created_ms,
            max_inactive,
        } => {
            w.str(id);
            w.iv(*created_ms);
            w.iv(i64::from(*max_inactive));
        }
        Body::Expired { id } => w.str(id),
        Body::Accessed {
            id,
            last_accessed_ms,
            seen_version,
        } => {
            w.str(id);
            w.iv(*last_accessed_ms);
            w.uv(*seen_version);
        }
        Body::GetAll { request } | Body::NoManager { request } => w.uv(*request),
        Body::AllData { request, sessions } => {
            w.uv(*request);
            w.uv(sessions.len() as u64);
            for s in sessions {
                w.session(s);
            }
        }
        Body::Delta(d) => {
            w.str(&d.id);
            w.iv(d.created_ms);
            w.iv(d.last_accessed_ms);
            w.stamp(d.stamp);
            w.uv(d.actions.len() as u64);
            for a in &d.actions {
                match a {
                    Action::Attribute(name, v) => {
                        w.u8(0);
                        w.str(name);
                        match v {
                            None => w.u8(1),
                            Some(v) => {
                                w.u8(0);
                                w.bytes(v);
                            }
                        }
                    }
                    Action::Principal(p) => {
                        w.u8(1);
                        w.opt_str(p);
                    }
                    Action::IsNew(b) => {
                        w.u8(2);
                        w.u8(u8::from(*b));
                    }
                    Action::MaxInactive(s) => {
                        w.u8(3);
                        w.iv(i64::from(*s));
                    }
                    Action::AuthType(t) => {
                        w.u8(4);
                        w.opt_str(t);
                    }
                }
            }
        }
        Body::TransferComplete { request, count } => {
            w.uv(*request);
            w.uv(*count);
        }
        Body::ChangeId { old, new } => {
            w.str(old);
            w.str(new);
        }
        Body::Backup(s) => w.session(s),
        Body::Proxy {
            id,
            primary,
            backup,
        } => {
            w.str(id);
            w.member(primary);
            w.member(backup);
        }
        Body::Retrieve { request, id } => {
            w.uv(*request);
            w.str(id);
        }
        Body::Retrieved { request, session } => {
            w.uv(*request);
            match session {
                None => w.u8(0),
                Some(s) => {
                    w.u8(1);
                    w.session(s);
                }
            }
        }
    }
    w.0
}

// -- reading ---------------------------------------------------------------------------------------

struct R<'a> {
    buf: &'a [u8],
}

type Res<T> = Result<T, MessageError>;

impl<'a> R<'a> {
    fn u8(&mut self, what: &'static str) -> Res<u8> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(MessageError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }
    fn bool(&mut self, what: &'static str) -> Res<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(MessageError::Invalid(what)),
        }
    }
    fn uv(&mut self, what: &'static str) -> Res<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(MessageError::Invalid(what));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(MessageError::Invalid(what))
    }
    fn iv(&mut self, what: &'static str) -> Res<i64> {
        let u = self.uv(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn i32(&mut self, what: &'static str) -> Res<i32> {
        i32::try_from(self.iv(what)?).map_err(|_| MessageError::Invalid(what))
    }
    fn take(&mut self, n: usize, what: &'static str) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(MessageError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn len(&mut self, max: usize, what: &'static str) -> Res<usize> {
        let n = self.uv(what)?;
        if n > max as u64 {
            return Err(MessageError::Invalid(what));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self, what: &'static str) -> Res<&'a [u8]> {
        let n = self.len(usize::MAX >> 1, what)?;
        self.take(n, what)
    }
    fn str(&mut self, what: &'static str) -> Res<String> {
        let n = self.len(MAX_TEXT, what)?;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| MessageError::Invalid(what))
    }
    fn opt_str(&mut self, what: &'static str) -> Res<Option<String>> {
        Ok(if self.bool(what)? {
            Some(self.str(what)?)
        } else {
            None
        })
    }
    fn stamp(&mut self) -> Res<Stamp> {
        Ok(Stamp {
            version: self.uv("stamp")?,
            writer: self.uv("stamp")?,
        })
    }
    fn member(&mut self) -> Res<MemberId> {
        let b = self.take(16, "member id")?;
        let mut m = [0u8; 16];
        m.copy_from_slice(b);
        Ok(m)
    }
    /// A count of items that each take at least `min_size` bytes, checked against what is left.
    fn count(&mut self, min_size: usize, what: &'static str) -> Res<usize> {
        let n = self.len(MAX_ITEMS, what)?;
        if n.saturating_mul(min_size) > self.buf.len() {
            return Err(MessageError::Truncated(what));
        }
        Ok(n)
    }
    fn session(&mut self) -> Res<WireSession> {
        let id = self.str("session id")?;
        let created_ms = self.iv("created")?;
        let last_accessed_ms = self.iv("last accessed")?;
        let max_inactive = Stamped {
            stamp: self.stamp()?,
            value: self.i32("max inactive")?,
        };
        let is_new = Stamped {
            stamp: self.stamp()?,
            value: self.bool("is new")?,
        };
        let principal = Stamped {
            stamp: self.stamp()?,
            value: self.opt_str("principal")?,
        };
        let auth_type = Stamped {
            stamp: self.stamp()?,
            value: self.opt_str("auth type")?,
        };
        let primary = self.member()?;
        let backup = self.member()?;
        let n = self.count(4, "attributes")?;
        let mut attrs = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("attribute name")?;
            let stamp = self.stamp()?;
            let value = if self.bool("attribute")? {
                Some(Bytes::copy_from_slice(self.bytes("attribute value")?))
            } else {
                None
            };
            attrs.push((name, Slot { stamp, value }));
        }
        Ok(WireSession {
            id,
            created_ms,
            last_accessed_ms,
            max_inactive,
            is_new,
            principal,
            auth_type,
            primary,
            backup,
            attrs,
        })
    }
}

/// Decodes a session message; any defect is an error.
pub fn decode(payload: &[u8]) -> Result<Message, MessageError> {
    if !is_session_message(payload) {
        return Err(MessageError::NotSession);
    }
    let mut r = R {
        buf: &payload[MAGIC.len()..],
    };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(MessageError::Version(version));
    }
    let kind = r.u8("kind")?;
    let name_len = usize::from(r.u8("manager name")?);
    let manager = std::str::from_utf8(r.take(name_len, "manager name")?)
        .map_err(|_| MessageError::Invalid("manager name"))?
        .to_owned();
    let body = match kind {
        1 => Body::Created {
            id: r.str("session id")?,
            created_ms: r.iv("created")?,
            max_inactive: r.i32("max inactive")?,
        },
        2 => Body::Expired {
            id: r.str("session id")?,
        },
        3 => Body::Accessed {
            id: r.str("session id")?,
            last_accessed_ms: r.iv("last accessed")?,
            seen_version: if r.buf.is_empty() {
                0
            } else {
                r.uv("seen version")?
            },
        },
        4 => Body::GetAll {
            request: r.uv("request")?,
        },
        12 => {
            let request = r.uv("request")?;
            let n = r.count(48, "sessions")?;
            let mut sessions = Vec::with_capacity(n);
            for _ in 0..n {
                sessions.push(r.session()?);
            }
            Body::AllData { request, sessions }
        }
        13 => {
            let id = r.str("session id")?;
            let created_ms = r.iv("created")?;
            let last_accessed_ms = r.iv("last accessed")?;
            let stamp = r.stamp()?;
            let n = r.count(2, "actions")?;
            let mut actions = Vec::with_capacity(n);
            for _ in 0..n {
                actions.push(match r.u8("action")? {
                    0 => {
                        let name = r.str("attribute name")?;
                        match r.u8("attribute action")? {
                            0 => Action::Attribute(
                                name,
                                Some(Bytes::copy_from_slice(r.bytes("attribute value")?)),
                            ),
                            1 => Action::Attribute(name, None),
                            _ => return Err(MessageError::Invalid("attribute action")),
                        }
                    }
                    1 => Action::Principal(r.opt_str("principal")?),
                    2 => Action::IsNew(r.bool("is new")?),
                    3 => Action::MaxInactive(r.i32("max inactive")?),
                    4 => Action::AuthType(r.opt_str("auth type")?),
                    _ => return Err(MessageError::Invalid("action type")),
                });
            }
            Body::Delta(Delta {
                id,
                created_ms,
                last_accessed_ms,
                stamp,
                actions,
            })
        }
        14 => Body::TransferComplete {
            request: r.uv("request")?,
            count: r.uv("count")?,
        },
        15 => Body::ChangeId {
            old: r.str("old id")?,
            new: r.str("new id")?,
        },
        16 => Body::NoManager {
            request: r.uv("request")?,
        },
        20 => Body::Backup(r.session()?),
        21 => Body::Proxy {
            id: r.str("session id")?,
            primary: r.member()?,
            backup: r.member()?,
        },
        22 => Body::Retrieve {
            request: r.uv("request")?,
            id: r.str("session id")?,
        },
        23 => {
            let request = r.uv("request")?;
            let session = if r.bool("retrieved")? {
                Some(r.session()?)
            } else {
                None
            };
            Body::Retrieved { request, session }
        }
        k => return Err(MessageError::Kind(k)),
    };
    if !r.buf.is_empty() {
        return Err(MessageError::Trailing(r.buf.len()));
    }
    Ok(Message { manager, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> WireSession {
        WireSession {
            id: "abc.node1".into(),
            created_ms: 1_700_000_000_000,
            last_accessed_ms: 1_700_000_000_500,
            max_inactive: Stamped {
                stamp: Stamp::new(1, 7),
                value: 1800,
            },
            is_new: Stamped {
                stamp: Stamp::new(1, 7),
                value: true,
            },
            principal: Stamped {
                stamp: Stamp::new(2, 7),
                value: Some("alice".into()),
            },
            auth_type: Stamped::default(),
            primary: [1; 16],
            backup: [2; 16],
            attrs: vec![
                (
                    "cart".into(),
                    Slot {
                        stamp: Stamp::new(3, 7),
                        value: Some(Bytes::from_static(b"\x91\x01")),
                    },
                ),
                (
                    "gone".into(),
                    Slot {
                        stamp: Stamp::new(4, 9),
                        value: None,
                    },
                ),
            ],
        }
    }

    fn all_bodies() -> Vec<Body> {
        vec![
            Body::Created {
                id: "a".into(),
                created_ms: -5,
                max_inactive: -1,
            },
            Body::Expired { id: "a".into() },
            Body::Accessed {
                id: "a".into(),
                last_accessed_ms: 99,
                seen_version: 7,
            },
            Body::GetAll { request: u64::MAX },
            Body::AllData {
                request: 3,
                sessions: vec![session(), session()],
            },
            Body::Delta(Delta {
                id: "a".into(),
                created_ms: 1,
                last_accessed_ms: 2,
                stamp: Stamp::new(5, u64::MAX),
                actions: vec![
                    Action::Attribute("x".into(), Some(Bytes::from_static(b"\xc0"))),
                    Action::Attribute("y".into(), None),
                    Action::Principal(Some("bob".into())),
                    Action::Principal(None),
                    Action::IsNew(false),
                    Action::MaxInactive(60),
                    Action::AuthType(Some("FORM".into())),
                ],
            }),
            Body::TransferComplete {
                request: 3,
                count: 2,
            },
            Body::ChangeId {
                old: "a".into(),
                new: "b".into(),
            },
            Body::NoManager { request: 1 },
            Body::Backup(session()),
            Body::Proxy {
                id: "a".into(),
                primary: [3; 16],
                backup: [0; 16],
            },
            Body::Retrieve {
                request: 8,
                id: "a".into(),
            },
            Body::Retrieved {
                request: 8,
                session: Some(session()),
            },
            Body::Retrieved {
                request: 9,
                session: None,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for body in all_bodies() {
            let bytes = encode("shop", &body);
            assert!(is_session_message(&bytes));
            let m = decode(&bytes).unwrap();
            assert_eq!(m.manager, "shop");
            assert_eq!(m.body, body);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        for body in all_bodies() {
            let bytes = encode("shop", &body);
            // An "accessed" message without its optional last field is an older sender's.
            let optional_from = match &body {
                Body::Accessed { seen_version, .. } => {
                    let mut w = W(Vec::new());
                    w.uv(*seen_version);
                    bytes.len() - w.0.len()
                }
                _ => bytes.len(),
            };
            for n in 0..bytes.len() {
                if n == optional_from {
                    let m = decode(&bytes[..n]).expect("an accessed message of an older sender");
                    assert!(matches!(
                        m.body,
                        Body::Accessed {
                            seen_version: 0,
                            ..
                        }
                    ));
                    continue;
                }
                assert!(decode(&bytes[..n]).is_err(), "{body:?} cut at {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(MessageError::Trailing(1)));
        }
    }

    #[test]
    fn bad_version_kind_and_counts_are_errors() {
        let mut b = encode("m", &Body::Expired { id: "a".into() });
        b[4] = 9;
        assert_eq!(decode(&b), Err(MessageError::Version(9)));
        let mut b = encode("m", &Body::Expired { id: "a".into() });
        b[5] = 99;
        assert_eq!(decode(&b), Err(MessageError::Kind(99)));
        // A batch claiming a million sessions in a few bytes is refused before allocating.
        let mut b = b"TRSM\x01\x0c\x01m\x01".to_vec();
        b.extend_from_slice(&[0xff, 0xff, 0x3f]);
        assert!(matches!(decode(&b), Err(MessageError::Truncated(_))));
        // An over-long varint.
        let mut b = b"TRSM\x01\x04\x01m".to_vec();
        b.extend_from_slice(&[0xff; 11]);
        assert!(decode(&b).is_err());
    }
}
