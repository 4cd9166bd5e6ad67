//! The interceptor stack: ordered transformations between the application and the transport.
//!
//! Sending walks the stack first to last; receiving walks it last to first. Each stage may turn
//! one message into several (fragmentation, per-target order counters) or hold messages back
//! (reassembly, reordering). The trailers follow Apache Tribes' interceptors, so a Tomcat peer
//! with the same interceptors understands them.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{CoreConfig, InterceptorConfig};
use crate::error::{Error, Result};
use crate::member::{Member, MemberKey};
use crate::security::envelope;
use crate::security::replay::{check_window, CounterWindow, ReplayGuard};
use crate::security::tomcat::TomcatCipher;
use crate::security::KeyRing;
use crate::stats::{self, Stats};
use crate::transport::probe::now_ms;
use crate::wire::options::{COMPRESSED_GZIP, COMPRESSED_LZ4};

const LOG: &str = "tribes::channel::interceptors";

/// A message on its way out.
#[derive(Debug, Clone)]
pub struct OutMessage {
    /// Option bits.
    pub options: u32,
    /// Message id (fragments share their original's).
    pub unique_id: [u8; 16],
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Who gets it.
    pub targets: Vec<Arc<Member>>,
}

/// A message on its way in.
#[derive(Debug, Clone)]
pub struct InMessage {
    /// Option bits.
    pub options: u32,
    /// Message id.
    pub unique_id: [u8; 16],
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub sender: Arc<Member>,
}

/// One stage of the stack.
pub trait Interceptor: Send + Sync {
    /// Its configured name.
    fn name(&self) -> &'static str;
    /// Transforms an outgoing message into zero or more.
    fn outbound(&self, msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        out.push(msg);
        Ok(())
    }
    /// Transforms an incoming message into zero or more; drops are counted by the caller.
    fn inbound(&self, msg: InMessage, out: &mut Vec<InMessage>) -> std::result::Result<(), String> {
        out.push(msg);
        Ok(())
    }
    /// Periodic housekeeping (expiry of held messages).
    fn tick(&self, _now: Instant, _out: &mut Vec<InMessage>) {}
    /// A member left: drop its state.
    fn member_gone(&self, _member: &Member) {}
    /// The stage as a [`PayloadSealer`], when it is one.
    fn payload_sealer(&self) -> Option<&dyn PayloadSealer> {
        None
    }
}

/// A stage whose outbound side turns each message into exactly one with the same options, id
/// and targets, changing only the payload; it can write that payload straight into the frame
/// being built. With such a stage alone in the stack (the `encrypt` stage of a secured cluster),
/// a send makes one buffer and one copy of the payload instead of three of each.
pub trait PayloadSealer {
    /// The length of the transformed payload of `payload_len` bytes.
    fn sealed_len(&self, payload_len: usize) -> usize;
    /// Appends the transformed payload (exactly `sealed_len` bytes) to `out`.
    fn seal_into(&self, options: u32, unique_id: &[u8; 16], payload: &[u8], out: &mut Vec<u8>);
}

/// The whole stack plus the few settings other parts need to know about.
pub struct Stack {
    stages: Vec<Box<dyn Interceptor>>,
    /// Async sends queue and return (the `dispatch` interceptor is present).
    pub dispatch_async: bool,
    /// Bytes one connection may queue for async sends.
    pub max_queue_bytes: usize,
    /// The failure detector, when configured.
    pub failure_detector: Option<FailureDetectorSettings>,
    /// Members of other domains are ignored, when set.
    pub domain: Option<Vec<u8>>,
}

/// What stages need to know about the channel they run in.
#[derive(Debug, Clone)]
pub struct StackContext {
    /// The local member packet as sent in the address field (bound into encrypted messages).
    pub local_address: Arc<[u8]>,
    /// The channel's counters.
    pub stats: Arc<Stats>,
}

/// Options of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct FailureDetectorSettings {
    /// Probe connect (and answer) timeout.
    pub connect_timeout: Duration,
    /// How long a silent member that still answers probes is kept.
    pub remove_suspects_timeout: Duration,
}

impl Stack {
    /// Builds the stack from the configuration; unknown names are config errors. With secrets, the
    /// encryption stage is added last (closest to the network), below every configured stage.
    pub fn build(cfg: &CoreConfig, ctx: &StackContext) -> Result<Self> {
        let mut stack = Stack {
            stages: Vec::new(),
            dispatch_async: false,
            max_queue_bytes: 64 * 1024 * 1024,
            failure_detector: None,
            domain: None,
        };
        for ic in &cfg.interceptors {
            match ic.name.as_str() {
                "dispatch" => {
                    stack.dispatch_async = true;
                    stack.max_queue_bytes = usize::try_from(ic.u64_opt("max_queue_bytes", 64 << 20)?)
                        .unwrap_or(usize::MAX)
                        .max(1024);
                }
                "failure_detector" => {
                    stack.failure_detector = Some(FailureDetectorSettings {
                        connect_timeout: Duration::from_millis(
                            ic.u64_opt("connect_timeout_ms", 1000)?.max(1),
                        ),
                        remove_suspects_timeout: Duration::from_millis(
                            ic.u64_opt("remove_suspects_timeout_ms", 300_000)?,
                        ),
                    });
                }
                "order" => stack.stages.push(Box::new(Order::new(ic)?)),
                "fragmentation" => stack.stages.push(Box::new(Fragmentation::new(ic, cfg.receiver.max_frame)?)),
                "compression" => stack.stages.push(Box::new(Compression::new(ic, cfg.receiver.max_frame)?)),
                "throughput" => stack.stages.push(Box::new(Throughput::new(ic)?)),
                "tomcat_encrypt" => stack.stages.push(Box::new(TomcatEncrypt::new(ic, ctx.stats.clone())?)),
                "domain_filter" => {
                    let domain = ic
                        .bytes_opt("domain")?
                        .unwrap_or_else(|| cfg.membership.domain.clone());
                    stack.domain = Some(domain.clone());
                    stack.stages.push(Box::new(DomainFilter { domain }));
                }
                other => {
                    return Err(Error::Config(format!(
                        "interceptors: unknown interceptor {other:?} (known: dispatch, failure_detector, \
                         order, fragmentation, compression, throughput, domain_filter, tomcat_encrypt)"
                    )))
                }
            }
        }
        if let Some(ring) = KeyRing::new(&cfg.security.secrets) {
            stack.stages.push(Box::new(Encrypt::new(
                ring,
                ctx,
                cfg.security.replay_window_ms,
                cfg.security.replay_cache,
            )));
        }
        Ok(stack)
    }

    /// True when no stage transforms messages (the fast path).
    pub fn is_transparent(&self) -> bool {
        self.stages.is_empty()
    }

    /// The stack's only stage, when it is a [`PayloadSealer`].
    pub fn sole_sealer(&self) -> Option<&dyn PayloadSealer> {
        match self.stages.as_slice() {
            [only] => only.payload_sealer(),
            _ => None,
        }
    }

    /// Runs a message down the stack.
    pub fn outbound(&self, msg: OutMessage) -> Result<Vec<OutMessage>> {
        let mut msgs = vec![msg];
        for stage in &self.stages {
            let mut next = Vec::with_capacity(msgs.len());
            for m in msgs {
                stage.outbound(m, &mut next)?;
            }
            msgs = next;
        }
        Ok(msgs)
    }

    /// Runs a message up the stack; returns what reaches the application, and whether a stage
    /// refused it (as opposed to holding it back for reassembly or ordering).
    pub fn inbound(&self, msg: InMessage, stats: &Stats) -> (Vec<InMessage>, bool) {
        self.inbound_from(self.stages.len(), vec![msg], stats)
    }

    fn inbound_from(
        &self,
        top: usize,
        mut msgs: Vec<InMessage>,
        stats: &Stats,
    ) -> (Vec<InMessage>, bool) {
        let mut refused = false;
        for stage in self.stages[..top].iter().rev() {
            let mut next = Vec::with_capacity(msgs.len());
            for m in msgs {
                if let Err(why) = stage.inbound(m, &mut next) {
                    refused = true;
                    stats::inc(&stats.rejected_by_interceptors);
                    log::debug!(target: LOG, "{} dropped a message: {why}", stage.name());
                }
            }
            msgs = next;
            if msgs.is_empty() {
                break;
            }
        }
        (msgs, refused)
    }

    /// Housekeeping: returns messages released by expiry, already run through the rest of the stack.
    pub fn tick(&self, now: Instant, stats: &Stats) -> Vec<InMessage> {
        let mut delivered = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let mut released = Vec::new();
            stage.tick(now, &mut released);
            if !released.is_empty() {
                delivered.extend(self.inbound_from(i, released, stats).0);
            }
        }
        delivered
    }

    /// A member left.
    pub fn member_gone(&self, member: &Member) {
        for s in &self.stages {
            s.member_gone(member);
        }
    }
}

fn u32_be(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

// ---- order ------------------------------------------------------------------------------------

/// Per-sender FIFO: each message to a target carries a 4-byte counter; the receiver delivers in
/// counter order, holding gaps until `expire` (then releases what it holds).
struct Order {
    expire: Duration,
    max_queue: usize,
    out_counters: Mutex<HashMap<MemberKey, u32>>,
    inbound: Mutex<HashMap<MemberKey, OrderIn>>,
}

#[derive(Default)]
struct OrderIn {
    next: u32,
    held: BTreeMap<u32, InMessage>,
    gap_since: Option<Instant>,
}

impl Order {
    fn new(ic: &InterceptorConfig) -> Result<Self> {
        Ok(Order {
            expire: Duration::from_millis(ic.u64_opt("expire_ms", 3000)?),
            max_queue: usize::try_from(ic.u64_opt("max_queue", 10_000)?)
                .unwrap_or(usize::MAX)
                .max(1),
            out_counters: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
        })
    }

    fn release_in_order(st: &mut OrderIn, out: &mut Vec<InMessage>) {
        while let Some(m) = st.held.remove(&st.next) {
            out.push(m);
            st.next = st.next.wrapping_add(1);
        }
        st.gap_since = if st.held.is_empty() {
            None
        } else {
            st.gap_since.or(Some(Instant::now()))
        };
    }
}

impl Interceptor for Order {
    fn name(&self) -> &'static str {
        "order"
    }

    fn outbound(&self, msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        let mut counters = self.out_counters.lock();
        for target in &msg.targets {
            let c = counters.entry(target.key()).or_insert(0);
            *c = c.wrapping_add(1);
            if *c == 0 {
                *c = 1;
            }
            let mut payload = Vec::with_capacity(msg.payload.len() + 4);
            payload.extend_from_slice(&msg.payload);
            payload.extend_from_slice(&c.to_be_bytes());
            out.push(OutMessage {
                options: msg.options,
                unique_id: msg.unique_id,
                payload,
                targets: vec![target.clone()],
            });
        }
        Ok(())
    }

    fn inbound(
        &self,
        mut msg: InMessage,
        out: &mut Vec<InMessage>,
    ) -> std::result::Result<(), String> {
        let len = msg.payload.len();
        if len < 4 {
            return Err("message shorter than the order counter".into());
        }
        let counter = u32_be(&msg.payload[len - 4..]).ok_or("bad order counter")?;
        msg.payload.truncate(len - 4);
        let mut all = self.inbound.lock();
        let st = all.entry(msg.sender.key()).or_default();
        if st.next == 0 {
            // First message from this sender: start where it is.
            st.next = counter;
        }
        if counter.wrapping_sub(st.next) > u32::MAX / 2 {
            return Err(format!(
                "duplicate or late message #{counter} (expected #{})",
                st.next
            ));
        }
        if st.held.len() >= self.max_queue {
            // Give up on the gap: deliver what is held, in order.
            let held = std::mem::take(&mut st.held);
            out.extend(held.into_values());
            st.next = counter;
        }
        st.held.insert(counter, msg);
        Self::release_in_order(st, out);
        Ok(())
    }

    fn tick(&self, now: Instant, out: &mut Vec<InMessage>) {
        let mut all = self.inbound.lock();
        for st in all.values_mut() {
            if let Some(since) = st.gap_since {
                if now.saturating_duration_since(since) >= self.expire {
                    // The gap is not coming: forward what is held (Tomcat's forwardExpired).
                    if let Some((&first, _)) = st.held.iter().next() {
                        st.next = first;
                    }
                    Self::release_in_order(st, out);
                    if !st.held.is_empty() {
                        st.gap_since = Some(now);
                    }
                }
            }
        }
    }

    fn member_gone(&self, member: &Member) {
        let key = member.key();
        self.out_counters.lock().remove(&key);
        self.inbound.lock().remove(&key);
    }
}

// ---- fragmentation ----------------------------------------------------------------------------

/// Splits payloads larger than `max_size`. Every message gets a trailer: `0` = whole; a fragment
/// ends with `int index, int count, byte 1`. Fragments share their original's unique id.
struct Fragmentation {
    max_size: usize,
    expire: Duration,
    max_in_flight: usize,
    max_total: usize,
    pending: Mutex<HashMap<(MemberKey, [u8; 16]), Reassembly>>,
}

struct Reassembly {
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
    bytes: usize,
    started: Instant,
    options: u32,
    sender: Arc<Member>,
}

impl Fragmentation {
    fn new(ic: &InterceptorConfig, max_frame: usize) -> Result<Self> {
        let max_size = usize::try_from(ic.u64_opt("max_size", 102_400)?).unwrap_or(usize::MAX);
        if max_size < 16 {
            return Err(Error::Config(
                "interceptors.fragmentation.max_size: must be at least 16".into(),
            ));
        }
        Ok(Fragmentation {
            max_size,
            expire: Duration::from_millis(ic.u64_opt("expire_ms", 60_000)?),
            max_in_flight: usize::try_from(ic.u64_opt("max_in_flight", 1024)?)
                .unwrap_or(usize::MAX)
                .max(1),
            // A reassembled message may be as large as 64 frames.
            max_total: max_frame.saturating_mul(64),
            pending: Mutex::new(HashMap::new()),
        })
    }
}

impl Interceptor for Fragmentation {
    fn name(&self) -> &'static str {
        "fragmentation"
    }

    fn outbound(&self, mut msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        if msg.payload.len() <= self.max_size {
            msg.payload.push(0);
            out.push(msg);
            return Ok(());
        }
        let count = msg.payload.len().div_ceil(self.max_size);
        let count_i = i32::try_from(count)
            .map_err(|_| Error::Config("message too large to fragment".into()))?;
        for (index, chunk) in msg.payload.chunks(self.max_size).enumerate() {
            let mut payload = Vec::with_capacity(chunk.len() + 9);
            payload.extend_from_slice(chunk);
            payload.extend_from_slice(&(index as i32).to_be_bytes());
            payload.extend_from_slice(&count_i.to_be_bytes());
            payload.push(1);
            out.push(OutMessage {
                options: msg.options,
                unique_id: msg.unique_id,
                payload,
                targets: msg.targets.clone(),
            });
        }
        Ok(())
    }

    fn inbound(
        &self,
        mut msg: InMessage,
        out: &mut Vec<InMessage>,
    ) -> std::result::Result<(), String> {
        let Some(&flag) = msg.payload.last() else {
            return Err("message without a fragmentation trailer".into());
        };
        match flag {
            0 => {
                msg.payload.pop();
                out.push(msg);
                Ok(())
            }
            1 => {
                let len = msg.payload.len();
                if len < 9 {
                    return Err("fragment shorter than its trailer".into());
                }
                let index =
                    u32_be(&msg.payload[len - 9..len - 5]).ok_or("bad fragment index")? as i32;
                let count =
                    u32_be(&msg.payload[len - 5..len - 1]).ok_or("bad fragment count")? as i32;
                if count <= 0 || index < 0 || index >= count {
                    return Err(format!("fragment {index} of {count} is out of range"));
                }
                let count = count as usize;
                if count.saturating_mul(self.max_size) > self.max_total.max(self.max_size) {
                    return Err(format!("{count} fragments exceed the reassembly limit"));
                }
                msg.payload.truncate(len - 9);
                let key = (msg.sender.key(), msg.unique_id);
                let mut pending = self.pending.lock();
                if !pending.contains_key(&key) && pending.len() >= self.max_in_flight {
                    return Err("too many fragmented messages in flight".into());
                }
                let r = pending.entry(key.clone()).or_insert_with(|| Reassembly {
                    parts: vec![None; count],
                    have: 0,
                    bytes: 0,
                    started: Instant::now(),
                    options: msg.options,
                    sender: msg.sender.clone(),
                });
                if r.parts.len() != count {
                    return Err("fragment count changed within one message".into());
                }
                let slot = &mut r.parts[index as usize];
                if slot.is_none() {
                    r.bytes += msg.payload.len();
                    r.have += 1;
                    *slot = Some(msg.payload);
                }
                if r.bytes > self.max_total {
                    pending.remove(&key);
                    return Err("reassembled message exceeds the limit".into());
                }
                if r.have == count {
                    if let Some(r) = pending.remove(&key) {
                        let mut payload = Vec::with_capacity(r.bytes);
                        for p in r.parts.into_iter().flatten() {
                            payload.extend_from_slice(&p);
                        }
                        out.push(InMessage {
                            options: r.options,
                            unique_id: key.1,
                            payload,
                            sender: r.sender,
                        });
                    }
                }
                Ok(())
            }
            other => Err(format!("unknown fragmentation flag {other}")),
        }
    }

    fn tick(&self, now: Instant, _out: &mut Vec<InMessage>) {
        let mut pending = self.pending.lock();
        let before = pending.len();
        pending.retain(|_, r| now.saturating_duration_since(r.started) < self.expire);
        let dropped = before - pending.len();
        if dropped > 0 {
            log::warn!(target: LOG, "dropped {dropped} incomplete fragmented message(s) after {:?}", self.expire);
        }
    }

    fn member_gone(&self, member: &Member) {
        self.pending.lock().retain(|_, r| !r.sender.same_as(member));
    }
}

// ---- compression ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Lz4,
}

/// Compresses payloads of at least `min_size` bytes and flags them in the options
/// (0x100 gzip, as Tomcat's GzipInterceptor; 0x200 lz4). Inflation is bounded by `max_out`.
struct Compression {
    codec: Codec,
    min_size: usize,
    max_out: usize,
}

impl Compression {
    fn new(ic: &InterceptorConfig, max_frame: usize) -> Result<Self> {
        let codec = match ic.str_opt("codec", "gzip")?.as_str() {
            "gzip" => Codec::Gzip,
            "lz4" => Codec::Lz4,
            other => {
                return Err(Error::Config(format!(
                    "interceptors.compression.codec: {other:?} is not gzip or lz4"
                )))
            }
        };
        Ok(Compression {
            codec,
            min_size: usize::try_from(ic.u64_opt("min_size", 0)?).unwrap_or(usize::MAX),
            max_out: max_frame.saturating_mul(64),
        })
    }
}

impl Interceptor for Compression {
    fn name(&self) -> &'static str {
        "compression"
    }

    fn outbound(&self, mut msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        if msg.payload.len() >= self.min_size {
            match self.codec {
                Codec::Gzip => {
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::with_capacity(msg.payload.len() / 2 + 32),
                        flate2::Compression::fast(),
                    );
                    enc.write_all(&msg.payload)
                        .map_err(|e| Error::io("gzip", e))?;
                    msg.payload = enc.finish().map_err(|e| Error::io("gzip", e))?;
                    msg.options |= COMPRESSED_GZIP;
                }
                Codec::Lz4 => {
                    msg.payload = lz4_flex::compress_prepend_size(&msg.payload);
                    msg.options |= COMPRESSED_LZ4;
                }
            }
        }
        out.push(msg);
        Ok(())
    }

    fn inbound(
        &self,
        mut msg: InMessage,
        out: &mut Vec<InMessage>,
    ) -> std::result::Result<(), String> {
        if msg.options & COMPRESSED_GZIP != 0 {
            let mut dec = flate2::read::GzDecoder::new(&msg.payload[..])
                .take((self.max_out as u64).saturating_add(1));
            let mut plain = Vec::with_capacity(msg.payload.len() * 2);
            dec.read_to_end(&mut plain)
                .map_err(|e| format!("bad gzip data: {e}"))?;
            if plain.len() > self.max_out {
                return Err("gzip data inflates beyond the limit".into());
            }
            msg.payload = plain;
            msg.options &= !COMPRESSED_GZIP;
        } else if msg.options & COMPRESSED_LZ4 != 0 {
            let declared = msg
                .payload
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or("lz4 data without a size")? as usize;
            if declared > self.max_out {
                return Err("lz4 data inflates beyond the limit".into());
            }
            msg.payload = lz4_flex::decompress_size_prepended(&msg.payload)
                .map_err(|e| format!("bad lz4 data: {e}"))?;
            msg.options &= !COMPRESSED_LZ4;
        }
        out.push(msg);
        Ok(())
    }
}

// ---- throughput -------------------------------------------------------------------------------

/// Counts messages and bytes in each direction and logs rates every `interval` messages.
struct Throughput {
    interval: u64,
    tx_msgs: AtomicU64,
    tx_bytes: AtomicU64,
    rx_msgs: AtomicU64,
    rx_bytes: AtomicU64,
    started: Instant,
}

impl Throughput {
    fn new(ic: &InterceptorConfig) -> Result<Self> {
        Ok(Throughput {
            interval: ic.u64_opt("interval", 10_000)?.max(1),
            tx_msgs: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_msgs: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn report(&self, dir: &str, msgs: u64, bytes: u64) {
        if msgs % self.interval == 0 {
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            log::info!(target: "tribes::channel::throughput",
                "{dir}: {msgs} messages, {:.1} MB, {:.0} msg/s, {:.2} MB/s",
                bytes as f64 / 1e6, msgs as f64 / secs, bytes as f64 / 1e6 / secs);
        }
    }
}

impl Interceptor for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn outbound(&self, msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        let n = msg.targets.len() as u64;
        let msgs = self.tx_msgs.fetch_add(n, Ordering::Relaxed) + n;
        let bytes = self
            .tx_bytes
            .fetch_add(n * msg.payload.len() as u64, Ordering::Relaxed);
        self.report("sent", msgs, bytes);
        out.push(msg);
        Ok(())
    }

    fn inbound(&self, msg: InMessage, out: &mut Vec<InMessage>) -> std::result::Result<(), String> {
        let msgs = self.rx_msgs.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self
            .rx_bytes
            .fetch_add(msg.payload.len() as u64, Ordering::Relaxed);
        self.report("received", msgs, bytes);
        out.push(msg);
        Ok(())
    }
}

// ---- domain filter ----------------------------------------------------------------------------

/// Drops messages from members of other domains (membership is filtered by the view task).
struct DomainFilter {
    domain: Vec<u8>,
}

impl Interceptor for DomainFilter {
    fn name(&self) -> &'static str {
        "domain_filter"
    }

    fn inbound(&self, msg: InMessage, out: &mut Vec<InMessage>) -> std::result::Result<(), String> {
        if msg.sender.packet.domain == self.domain {
            out.push(msg);
            Ok(())
        } else {
            Err(format!("{} is in another domain", msg.sender))
        }
    }
}

// ---- encryption (tribes envelope) --------------------------------------------------------------

/// Encrypts and authenticates every message with the cluster secret (AES-256-GCM); refuses
/// messages that fail, that are replays, or whose timestamps are outside the window.
struct Encrypt {
    ring: KeyRing,
    /// SHA-256 of the local member packet (as sent in every message's address field), bound into
    /// every message's AAD.
    local_digest: [u8; 32],
    /// Where the next nonce comes from.
    nonces: Mutex<NonceSequence>,
    /// Accepted clock difference of a message's timestamp, ms.
    window_ms: i64,
    cache: usize,
    /// One replay window per sender epoch; dropped (when there are many) once the sender has been
    /// silent for two timestamp windows (every message it sent is then refused by its timestamp).
    guards: Mutex<GuardMap>,
    stats: Arc<Stats>,
}

/// The sender's nonces: a random epoch and a counter; a new epoch before the counter wraps.
struct NonceSequence {
    epoch: [u8; 8],
    next: u32,
}

impl NonceSequence {
    fn new() -> Self {
        NonceSequence {
            epoch: rand::random(),
            next: 0,
        }
    }

    fn next_nonce(&mut self) -> [u8; 12] {
        let nonce = envelope::counter_nonce(self.epoch, self.next);
        match self.next.checked_add(1) {
            Some(n) => self.next = n,
            // A fresh 64-bit epoch: two members (or two epochs) meet on one with odds of 2^-64
            // per pair, so nonces never repeat under the shared key in practice.
            None => *self = NonceSequence::new(),
        }
        nonce
    }
}

/// A sender epoch: port, unique id and epoch (the host is bound in the AAD).
type GuardKey = (i32, [u8; 16], [u8; 8]);
/// Keys are only inserted after a message authenticated, so they cannot be chosen by an attacker
/// and a fast non-keyed hash is safe.
type GuardMap = HashMap<GuardKey, (CounterWindow, i64), rustc_hash::FxBuildHasher>;

/// Most sender epochs remembered before silent ones are dropped.
const MAX_GUARDS: usize = 4096;

impl Encrypt {
    fn new(ring: KeyRing, ctx: &StackContext, window_ms: u64, cache: usize) -> Self {
        use sha2::Digest;
        Encrypt {
            ring,
            local_digest: sha2::Sha256::digest(&ctx.local_address[..]).into(),
            nonces: Mutex::new(NonceSequence::new()),
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            cache,
            guards: Mutex::new(GuardMap::default()),
            stats: ctx.stats.clone(),
        }
    }
}

impl Interceptor for Encrypt {
    fn name(&self) -> &'static str {
        "encrypt"
    }

    fn outbound(&self, mut msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        let mut sealed = Vec::with_capacity(envelope::sealed_len(msg.payload.len()));
        self.seal_into(msg.options, &msg.unique_id, &msg.payload, &mut sealed);
        msg.payload = sealed;
        out.push(msg);
        Ok(())
    }

    fn payload_sealer(&self) -> Option<&dyn PayloadSealer> {
        Some(self)
    }

    fn inbound(
        &self,
        mut msg: InMessage,
        out: &mut Vec<InMessage>,
    ) -> std::result::Result<(), String> {
        let aad = envelope::MessageAad::new(msg.options, &msg.unique_id, msg.sender.digest());
        let (nonce, timestamp_ms) =
            match envelope::open_in_place(&self.ring, aad.as_bytes(), &mut msg.payload) {
                Ok(o) => o,
                Err(e) => {
                    stats::inc(&self.stats.rejected_auth);
                    return Err(format!("from {}: {e}", msg.sender));
                }
            };
        let now = now_ms();
        let window = self.window_ms;
        let (epoch, counter) = envelope::split_nonce(&nonce);
        let key = (msg.sender.packet.port, msg.sender.packet.unique_id, epoch);
        let checked = check_window(timestamp_ms, now, window).and_then(|()| {
            let mut guards = self.guards.lock();
            if guards.len() >= MAX_GUARDS && !guards.contains_key(&key) {
                // A sender's clock may run up to a window ahead of ours, so its messages can pass
                // the timestamp check for up to two windows after we last heard from it.
                let keep = window.saturating_mul(2);
                guards.retain(|_, (_, seen)| now.saturating_sub(*seen) <= keep);
            }
            let (guard, seen) = guards
                .entry(key)
                .or_insert_with(|| (CounterWindow::new(self.cache), now));
            *seen = now;
            guard.check(counter)
        });
        if let Err(e) = checked {
            stats::inc(&self.stats.rejected_replay);
            return Err(format!("from {}: {e}", msg.sender));
        }
        out.push(msg);
        Ok(())
    }

    // No member_gone: a departed sender's windows are kept until they leave the timestamp
    // window, so its captured messages cannot be replayed right after it left.
}

impl PayloadSealer for Encrypt {
    fn sealed_len(&self, payload_len: usize) -> usize {
        envelope::sealed_len(payload_len)
    }

    fn seal_into(&self, options: u32, unique_id: &[u8; 16], payload: &[u8], out: &mut Vec<u8>) {
        let aad = envelope::MessageAad::new(options, unique_id, &self.local_digest);
        let nonce = self.nonces.lock().next_nonce();
        envelope::seal_with_nonce_into(&self.ring, nonce, now_ms(), aad.as_bytes(), payload, out);
    }
}

// ---- Tomcat's EncryptInterceptor ---------------------------------------------------------------

/// Tomcat's EncryptInterceptor (AES/GCM/NoPadding with a hex key), to talk to Tomcat channels
/// that use it. Membership is not protected in this mode (Tomcat does not protect it either).
struct TomcatEncrypt {
    cipher: TomcatCipher,
    /// Tomcat 10.1.56 and later put the message's timestamp inside (replay protection); earlier
    /// 10.1.x releases do not.
    timestamped: bool,
    guard: Mutex<ReplayGuard>,
    stats: Arc<Stats>,
}

impl TomcatEncrypt {
    fn new(ic: &InterceptorConfig, stats: Arc<Stats>) -> Result<Self> {
        let key = ic.str_opt("key", "")?;
        let cipher = TomcatCipher::from_hex(&key).ok_or_else(|| {
            Error::Config("interceptors.tomcat_encrypt.key: must be 32, 48 or 64 hex digits".into())
        })?;
        let window = ic.u64_opt("replay_window_ms", 10_000)?;
        let count = usize::try_from(ic.u64_opt("replay_window_count", 8192)?).unwrap_or(usize::MAX);
        let timestamped = match ic.str_opt("format", "timestamped")?.as_str() {
            "timestamped" => true,
            "plain" => false,
            other => {
                return Err(Error::Config(format!(
                    "interceptors.tomcat_encrypt.format: must be 'timestamped' or 'plain', got {other:?}"
                )))
            }
        };
        Ok(TomcatEncrypt {
            cipher,
            timestamped,
            guard: Mutex::new(ReplayGuard::new(window, count)),
            stats,
        })
    }
}

impl Interceptor for TomcatEncrypt {
    fn name(&self) -> &'static str {
        "tomcat_encrypt"
    }

    fn outbound(&self, mut msg: OutMessage, out: &mut Vec<OutMessage>) -> Result<()> {
        let ts = self.timestamped.then(now_ms);
        msg.payload = self.cipher.seal(ts, &msg.payload);
        out.push(msg);
        Ok(())
    }

    fn inbound(
        &self,
        mut msg: InMessage,
        out: &mut Vec<InMessage>,
    ) -> std::result::Result<(), String> {
        let (iv, ts, payload) = self
            .cipher
            .open(&msg.payload, self.timestamped)
            .map_err(|e| {
                stats::inc(&self.stats.rejected_auth);
                format!("from {}: {e}", msg.sender)
            })?;
        // Without a timestamp inside (older Tomcat), replays are caught by the nonce set alone.
        let now = now_ms();
        if let Err(e) = self.guard.lock().check(&iv, ts.unwrap_or(now), now) {
            stats::inc(&self.stats.rejected_replay);
            return Err(format!("from {}: {e}", msg.sender));
        }
        msg.payload = payload;
        out.push(msg);
        Ok(())
    }
}
