//! The sender pool: one persistent connection per member.
//!
//! A send appends its frame to each target connection's output buffer (under a short lock) and
//! wakes that connection's writer task, which writes everything queued in one `write_all`: frames
//! that pile up while a write is in progress are coalesced into the next one. On an idle
//! connection, a send whose caller waits anyway (acks, written) and a sparse async send are
//! written from the caller's thread instead, which saves waking the writer. Frames sent with
//! USE_ACK leave a waiter in the connection's ack queue; the connection's reader task pops one
//! waiter per ACK/NACK, in order. When a connection breaks, waiters with a retry left are written
//! again on a fresh connection, the rest fail, and the failure detector is told.

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::error::Faulty;
use crate::events::{Event, EventQueue};
use crate::member::{Member, MemberKey};
use crate::stats::{self, Stats};
use crate::transport::probe::now_ms;
use crate::wire::ack::{ack_kind, AckKind};
use crate::wire::channel_data::encode_framed_channel_data;
use crate::wire::frame::{check_frame, FrameCheck};
use crate::wire::options::BYTE_MESSAGE;
use crate::wire::TCP_FAIL_DETECT;

/// How a send completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Queue and return; failures are reported as events.
    Async,
    /// Return once the frame is written to every target's socket.
    Written,
    /// Return once every target answered ACK (or NACK).
    Ack,
}

/// An async send that comes at least this long after the connection's previous one is written
/// from the caller's thread when the connection is idle. With sends this sparse the writer task
/// would have nothing to coalesce, and waking it costs a futex wake and two context switches per
/// message: writing directly cuts the replication delay of a web request's delta by about a
/// third (`benches/web_throughput.py`, `async`: 0.32 to 0.22 ms). Denser sends still go through
/// the writer task, which batches them into one write (and one wake-up of each receiver).
/// `TRIBES_SPARSE_GAP_US` changes the gap (a huge value: async sends always use the writer).
fn sparse_gap() -> Duration {
    static GAP: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *GAP.get_or_init(|| env_micros("TRIBES_SPARSE_GAP_US", 200))
}

/// How long a waiting sender polls for its acks before it sleeps.
fn spin_before_sleep() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| env_micros("TRIBES_ACK_SPIN_US", 500))
}

/// Microseconds from the environment variable `name`, or `default` when unset or not a number.
fn env_micros(name: &str, default: u64) -> Duration {
    let us = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_micros(us)
}

thread_local! {
    /// False while this thread runs [`without_ack_spin`].
    static ACK_SPIN: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `work` with this thread's ack waits sleeping at once instead of polling first: for
/// threads whose wait is not on anyone's critical path (background commits, whose waiter wakes
/// an event loop anyway), so that the CPU goes to the members producing the acks.
pub fn without_ack_spin<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACK_SPIN.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(ACK_SPIN.with(|s| s.replace(false)));
    work()
}

/// What a tracker made with [`SendTracker::with_callback`] calls once every target completed
/// (or the deadline passed), with the faulty members.
pub type SendCallback = Box<dyn FnOnce(Vec<Faulty>) + Send>;

/// Completion state of one multi-target send.
pub struct SendTracker {
    state: Mutex<TrackerState>,
    done: Condvar,
    /// Called (once, outside the lock) when the send completes; None for trackers that are
    /// waited on.
    callback: Mutex<Option<SendCallback>>,
}

impl std::fmt::Debug for SendTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTracker")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct TrackerState {
    remaining: usize,
    faulty: Vec<Faulty>,
    pending: Vec<Arc<Member>>,
}

impl SendTracker {
    /// A tracker waiting for `targets`.
    pub fn new(targets: &[Arc<Member>]) -> Arc<Self> {
        Arc::new(SendTracker {
            state: Mutex::new(TrackerState {
                remaining: targets.len(),
                faulty: Vec::new(),
                pending: targets.to_vec(),
            }),
            done: Condvar::new(),
            callback: Mutex::new(None),
        })
    }

    /// A tracker that nobody waits on: `callback` runs when every target completed, on the thread
    /// that completed the last one (an ack reader, a failing connection, or the pool's deadline
    /// check, see [`SenderPool::expire_at`]). It must not block.
    pub fn with_callback(targets: &[Arc<Member>], callback: SendCallback) -> Arc<Self> {
        let t = SendTracker::new(targets);
        *t.callback.lock() = Some(callback);
        t
    }

    /// Ends the send now: the targets still pending are faulty with a timeout cause.
    fn expire(&self) {
        let faulty = {
            let mut st = self.state.lock();
            if st.remaining == 0 {
                return;
            }
            Self::close(&mut st)
        };
        self.done.notify_all();
        self.run_callback(faulty);
    }

    /// Marks a tracker complete and returns every faulty member (pending ones timed out).
    fn close(st: &mut TrackerState) -> Vec<Faulty> {
        let timed_out: Vec<Arc<Member>> = std::mem::take(&mut st.pending);
        st.remaining = 0;
        let mut faulty = std::mem::take(&mut st.faulty);
        faulty.extend(timed_out.into_iter().map(|member| Faulty {
            member,
            cause: "timed out waiting for the member".into(),
            remote_failure: false,
        }));
        faulty
    }

    fn run_callback(&self, faulty: Vec<Faulty>) {
        let callback = self.callback.lock().take();
        if let Some(cb) = callback {
            cb(faulty);
        }
    }

    /// True when every target completed.
    pub fn is_complete(&self) -> bool {
        self.state.lock().remaining == 0
    }

    fn finish(&self, member: &Arc<Member>, failure: Option<(String, bool)>) {
        let mut st = self.state.lock();
        // Only the first outcome per member counts (a late ACK after a timeout is ignored).
        let Some(pos) = st.pending.iter().position(|m| m.same_as(member)) else {
            return;
        };
        st.pending.swap_remove(pos);
        st.remaining -= 1;
        if let Some((cause, remote_failure)) = failure {
            st.faulty.push(Faulty {
                member: member.clone(),
                cause,
                remote_failure,
            });
        }
        if st.remaining == 0 {
            self.done.notify_all();
            if self.callback.lock().is_some() {
                let faulty = Self::close(&mut st);
                drop(st);
                self.run_callback(faulty);
            }
        }
    }

    /// Waits until every target completed or the deadline passed; returns the faulty members
    /// (targets still pending at the deadline are faulty with a timeout cause).
    pub fn wait(&self, deadline: Instant) -> Vec<Faulty> {
        // Loopback acks often come back within tens of microseconds: poll briefly (yielding the
        // CPU) before sleeping, which saves a futex wake-up on the latency-critical path.
        let spin = if ACK_SPIN.with(|s| s.get()) {
            spin_before_sleep()
        } else {
            Duration::ZERO
        };
        let spin_until = Instant::now() + spin;
        while self.state.lock().remaining > 0 && Instant::now() < spin_until {
            std::thread::yield_now();
        }
        let mut st = self.state.lock();
        while st.remaining > 0 {
            if self.done.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        Self::close(&mut st)
    }
}

/// A frame waiting for its write or its ack.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    frame: Bytes,
    tracker: Arc<SendTracker>,
    attempts: u32,
    /// For write-completion waiters: the connection's byte count after this frame.
    end: u64,
}

#[derive(Debug, Default)]
struct ConnState {
    out: Vec<u8>,
    /// Bytes appended to `out` since the connection object was made.
    enqueued: u64,
    seq: u64,
    acks: VecDeque<Waiter>,
    writes: VecDeque<Waiter>,
    closed: bool,
    /// Someone (the writer task or a caller writing directly) is writing to the socket.
    writing: bool,
    /// A duplicate of the connected socket, for callers that write directly when the
    /// connection is idle (saves waking the writer task on the latency-critical ack path).
    direct: Option<Arc<std::net::TcpStream>>,
    /// When the last async frame was handed to this connection (see [`sparse_gap`]).
    last_send: Option<Instant>,
}

/// One member's connection.
#[derive(Debug)]
pub struct Connection {
    member: Arc<Member>,
    state: Mutex<ConnState>,
    wake: Notify,
    space: Condvar,
    broken: AtomicBool,
}

/// Something the pool tells the channel.
#[derive(Debug)]
pub enum PoolNotice {
    /// A connection to this member closed or failed: verify it is alive.
    ConnectionLost(Arc<Member>, String),
}

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Resends after a reconnect.
    pub max_retries: u32,
    /// TCP keepalive.
    pub keepalive: bool,
    /// Bound of one connection's queued bytes for async sends.
    pub max_queue_bytes: usize,
    /// How long an async send may wait for room.
    pub queue_wait: Duration,
    /// The local member packet (the address field of keepalive pings).
    pub local_address: Arc<[u8]>,
}

/// How often trackers with callbacks are checked against their deadlines (so a send times out up
/// to this much late).
const DEADLINE_TICK: Duration = Duration::from_millis(50);

/// An idle connection gets a ping this often, so that receivers' idle timeouts (60 s by default)
/// only close connections that are really dead.
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// All connections of a channel.
pub struct SenderPool {
    conns: RwLock<HashMap<MemberKey, Arc<Connection>>>,
    /// Trackers with callbacks and their deadlines, checked by a task every [`DEADLINE_TICK`].
    deadlines: Mutex<Vec<(Instant, std::sync::Weak<SendTracker>)>>,
    deadline_task: std::sync::atomic::AtomicBool,
    settings: PoolSettings,
    runtime: tokio::runtime::Handle,
    notices: mpsc::UnboundedSender<PoolNotice>,
    events: EventQueue,
    stats: Arc<Stats>,
}

impl SenderPool {
    /// A pool that spawns its tasks on `runtime`.
    pub fn new(
        settings: PoolSettings,
        runtime: tokio::runtime::Handle,
        notices: mpsc::UnboundedSender<PoolNotice>,
        events: EventQueue,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        Arc::new(SenderPool {
            conns: RwLock::new(HashMap::new()),
            deadlines: Mutex::new(Vec::new()),
            deadline_task: std::sync::atomic::AtomicBool::new(false),
            settings,
            runtime,
            notices,
            events,
            stats,
        })
    }

    /// Times `tracker` out at `deadline` unless it completed (for trackers nobody waits on).
    pub fn expire_at(self: &Arc<Self>, tracker: &Arc<SendTracker>, deadline: Instant) {
        self.deadlines
            .lock()
            .push((deadline, Arc::downgrade(tracker)));
        if !self.deadline_task.swap(true, Ordering::SeqCst) {
            let pool = Arc::downgrade(self);
            self.runtime.spawn(async move {
                let mut tick = tokio::time::interval(DEADLINE_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.expire_overdue(Instant::now());
                }
            });
        }
    }

    /// Expires the trackers whose deadline passed; forgets the completed ones.
    fn expire_overdue(&self, now: Instant) {
        let overdue: Vec<Arc<SendTracker>> = {
            let mut d = self.deadlines.lock();
            let mut overdue = Vec::new();
            d.retain(|(deadline, t)| match t.upgrade() {
                Some(t) if t.is_complete() => false,
                Some(t) if *deadline <= now => {
                    overdue.push(t);
                    false
                }
                Some(_) => true,
                None => false,
            });
            overdue
        };
        for t in overdue {
            t.expire();
        }
    }

    /// Opens (or returns) the connection to `member`.
    pub fn ensure(self: &Arc<Self>, member: &Arc<Member>) -> Arc<Connection> {
        let key = member.key();
        if let Some(c) = self.conns.read().get(&key) {
            return c.clone();
        }
        let mut conns = self.conns.write();
        if let Some(c) = conns.get(&key) {
            return c.clone();
        }
        let conn = Arc::new(Connection {
            member: member.clone(),
            state: Mutex::new(ConnState::default()),
            wake: Notify::new(),
            space: Condvar::new(),
            broken: AtomicBool::new(false),
        });
        conns.insert(key, conn.clone());
        let pool = self.clone();
        let c = conn.clone();
        self.runtime
            .spawn(async move { pool.run_connection(c).await });
        conn
    }

    /// Closes the connection to a member that left.
    pub fn remove(&self, key: &MemberKey) {
        if let Some(conn) = self.conns.write().remove(key) {
            conn.close("the member left the cluster");
        }
    }

    /// Wakes a member's connection so that it reconnects (after a probe found the member alive).
    pub fn reconnect(&self, key: &MemberKey) {
        if let Some(c) = self.conns.read().get(key) {
            c.wake.notify_one();
        }
    }

    /// True when a connection to the member is currently established.
    pub fn is_connected(&self, key: &MemberKey) -> bool {
        self.conns
            .read()
            .get(key)
            .is_some_and(|c| c.state.lock().direct.is_some())
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        for (_, conn) in self.conns.write().drain() {
            conn.close("the channel stopped");
        }
    }

    /// Queues `frame` to every target. For `Written`/`Ack`, the returned tracker completes per
    /// target; for `Async` there is none.
    pub fn enqueue(
        self: &Arc<Self>,
        targets: &[Arc<Member>],
        frame: &Bytes,
        mode: SendMode,
        tracker: Option<&Arc<SendTracker>>,
    ) {
        // Async sends only: the clock is read once per send (about 90 ns on this kind of VM, as
        // much as the rest of an async enqueue), and only to tell sparse sends from dense ones.
        let now = (mode == SendMode::Async).then(Instant::now);
        for member in targets {
            let conn = self.ensure(member);
            let mut st = conn.state.lock();
            if st.closed {
                drop(st);
                if let Some(t) = tracker {
                    t.finish(member, Some(("connection closed".into(), false)));
                }
                continue;
            }
            if mode == SendMode::Async && st.out.len() >= self.settings.max_queue_bytes {
                // Back-pressure: wait (bounded) for the writer to take the queue.
                let deadline = Instant::now() + self.settings.queue_wait;
                while st.out.len() >= self.settings.max_queue_bytes && !st.closed {
                    if conn.space.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                if st.out.len() >= self.settings.max_queue_bytes || st.closed {
                    drop(st);
                    stats::add(&self.stats.async_bytes_lost, frame.len() as u64);
                    self.events.try_post(Event::SendFailed {
                        member: member.clone(),
                        cause: "send queue full".into(),
                    });
                    continue;
                }
            }
            // Idle connection, and a caller that waits anyway or a sparse async send: write from
            // this thread.
            let direct_ok = match now {
                None => true,
                Some(now) => {
                    let sparse = st
                        .last_send
                        .is_none_or(|t| now.saturating_duration_since(t) >= sparse_gap());
                    st.last_send = Some(now);
                    sparse
                }
            };
            let direct = if direct_ok && !st.writing && st.out.is_empty() {
                st.direct.clone()
            } else {
                None
            };
            let was_empty = st.out.is_empty();
            if direct.is_some() {
                st.writing = true;
            } else {
                st.out.extend_from_slice(frame);
            }
            st.enqueued += frame.len() as u64;
            st.seq += 1;
            let seq = st.seq;
            if let Some(t) = tracker {
                let w = Waiter {
                    seq,
                    frame: frame.clone(),
                    tracker: t.clone(),
                    attempts: 1,
                    end: st.enqueued,
                };
                match mode {
                    SendMode::Ack => st.acks.push_back(w),
                    _ => st.writes.push_back(w),
                }
            }
            drop(st);
            stats::inc(&self.stats.messages_sent);
            match direct {
                Some(sock) => {
                    let written = write_nonblocking(&sock, frame);
                    stats::add(&self.stats.bytes_sent, written as u64);
                    let mut st = conn.state.lock();
                    st.writing = false;
                    if written < frame.len() {
                        // The rest goes first, before anything queued meanwhile.
                        st.out.splice(0..0, frame[written..].iter().copied());
                    }
                    let pending = !st.out.is_empty();
                    drop(st);
                    if pending {
                        conn.wake.notify_one();
                    } else {
                        conn.complete_writes();
                    }
                }
                None if was_empty => conn.wake.notify_one(),
                None => {}
            }
        }
    }

    async fn run_connection(self: Arc<Self>, conn: Arc<Connection>) {
        let member = conn.member.clone();
        let Some(addr) = member.socket_addr() else {
            conn.fail_all("the member has no usable address", &self);
            return;
        };
        let mut first = true;
        loop {
            if conn.state.lock().closed {
                return;
            }
            if !first {
                // After a failure, wait for new work before reconnecting (the failure detector
                // decides whether the member is gone; a live member gets a fresh connection).
                let idle = {
                    let st = conn.state.lock();
                    st.out.is_empty() && st.acks.is_empty() && st.writes.is_empty()
                };
                if idle {
                    conn.wake.notified().await;
                    if conn.state.lock().closed {
                        return;
                    }
                }
            }
            first = false;
            let stream =
                match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let cause = format!("connect to {addr} failed: {e}");
                        conn.fail_all(&cause, &self);
                        let _ = self
                            .notices
                            .send(PoolNotice::ConnectionLost(member.clone(), cause));
                        continue;
                    }
                    Err(_) => {
                        let cause = format!("connect to {addr} timed out");
                        conn.fail_all(&cause, &self);
                        let _ = self
                            .notices
                            .send(PoolNotice::ConnectionLost(member.clone(), cause));
                        continue;
                    }
                };
            super::tune_stream(&stream, self.settings.keepalive);
            conn.broken.store(false, Ordering::SeqCst);
            conn.state.lock().direct = socket2::SockRef::from(&stream)
                .try_clone()
                .ok()
                .map(|s| Arc::new(std::net::TcpStream::from(s)));
            let (rd, mut wr) = stream.into_split();
            let reader = self
                .runtime
                .spawn(read_acks(conn.clone(), rd, self.stats.clone()));
            let cause = self.write_loop(&conn, &mut wr).await;
            // Drop the duplicate so that the socket really closes.
            conn.state.lock().direct = None;
            reader.abort();
            let _ = reader.await;
            drop(wr);
            if conn.state.lock().closed {
                conn.fail_all("connection closed", &self);
                return;
            }
            let cause = cause.unwrap_or_else(|| "connection closed by the member".into());
            log::debug!(target: "tribes::transport::sender", "connection to {member} lost: {cause}");
            conn.requeue_after_failure(&cause, self.settings.max_retries, &self);
            let _ = self
                .notices
                .send(PoolNotice::ConnectionLost(member.clone(), cause));
        }
    }

    /// Writes queued bytes until the connection breaks or closes; returns the cause of a break.
    async fn write_loop(
        &self,
        conn: &Arc<Connection>,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> Option<String> {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            let idle = {
                let mut st = conn.state.lock();
                if st.closed {
                    return None;
                }
                if conn.broken.load(Ordering::SeqCst) {
                    return Some("connection closed by the member".into());
                }
                if st.out.is_empty() || st.writing {
                    true
                } else {
                    std::mem::swap(&mut buf, &mut st.out);
                    st.writing = true;
                    conn.space.notify_all();
                    false
                }
            };
            if idle {
                if tokio::time::timeout(PING_INTERVAL, conn.wake.notified())
                    .await
                    .is_err()
                {
                    self.queue_ping(conn);
                }
                continue;
            }
            let n = buf.len() as u64;
            let result = wr.write_all(&buf).await;
            conn.state.lock().writing = false;
            if let Err(e) = result {
                return Some(format!("write failed: {e}"));
            }
            stats::add(&self.stats.bytes_sent, n);
            buf.clear();
            if buf.capacity() > 4 * 1024 * 1024 {
                buf.shrink_to(64 * 1024);
            }
            conn.complete_writes();
        }
    }
}

impl SenderPool {
    /// Queues a keepalive ping (the failure detector's magic message, no ack; receivers swallow it).
    fn queue_ping(&self, conn: &Connection) {
        let mut st = conn.state.lock();
        if st.closed || st.writing || !st.out.is_empty() {
            return;
        }
        let id: [u8; 16] = rand::random();
        let mut frame = Vec::with_capacity(128 + self.settings.local_address.len());
        encode_framed_channel_data(
            BYTE_MESSAGE,
            now_ms(),
            &id,
            &self.settings.local_address,
            &TCP_FAIL_DETECT,
            &mut frame,
        );
        st.enqueued += frame.len() as u64;
        st.out = frame;
    }
}

impl Connection {
    fn close(&self, why: &str) {
        let mut st = self.state.lock();
        st.closed = true;
        st.direct = None;
        let waiters: Vec<Waiter> = {
            let st = &mut *st;
            st.acks.drain(..).chain(st.writes.drain(..)).collect()
        };
        st.out.clear();
        drop(st);
        for w in waiters {
            w.tracker
                .finish(&self.member, Some((why.to_string(), false)));
        }
        self.space.notify_all();
        self.wake.notify_one();
    }

    /// Completes write waiters covered by `n` more bytes written.
    fn complete_writes(&self) {
        let mut st = self.state.lock();
        // Everything enqueued but what is still in `out` has been written.
        let written = st.enqueued - st.out.len() as u64;
        let mut done = Vec::new();
        while st.writes.front().is_some_and(|w| w.end <= written) {
            if let Some(w) = st.writes.pop_front() {
                done.push(w);
            }
        }
        drop(st);
        for w in done {
            w.tracker.finish(&self.member, None);
        }
    }

    /// Fails every waiter and drops queued bytes.
    fn fail_all(&self, cause: &str, pool: &SenderPool) {
        let mut st = self.state.lock();
        let lost = st.out.len();
        st.out.clear();
        let waiters: Vec<Waiter> = {
            let st = &mut *st;
            st.acks.drain(..).chain(st.writes.drain(..)).collect()
        };
        drop(st);
        self.space.notify_all();
        let had_waiters = !waiters.is_empty();
        for w in waiters {
            stats::inc(&pool.stats.send_failures);
            w.tracker
                .finish(&self.member, Some((cause.to_string(), false)));
        }
        if lost > 0 && !had_waiters {
            stats::add(&pool.stats.async_bytes_lost, lost as u64);
            pool.events.try_post(Event::SendFailed {
                member: self.member.clone(),
                cause: cause.to_string(),
            });
            log::warn!(target: "tribes::transport::sender",
                "{lost} queued bytes for {} were lost: {cause}", self.member);
        }
    }

    /// After a broken connection: frames still waiting (ack or write) that have a retry left are
    /// queued again, in their original order; the rest fail. Async bytes not covered are lost.
    fn requeue_after_failure(&self, cause: &str, max_retries: u32, pool: &SenderPool) {
        let mut st = self.state.lock();
        let mut waiters: Vec<Waiter> = {
            let st = &mut *st;
            st.acks.drain(..).chain(st.writes.drain(..)).collect()
        };
        waiters.sort_by_key(|w| w.seq);
        let unacked_bytes: usize = waiters.iter().map(|w| w.frame.len()).sum();
        let lost_async = st.out.len().saturating_sub(unacked_bytes);
        st.out.clear();
        let mut failed = Vec::new();
        for mut w in waiters {
            if w.attempts <= max_retries {
                w.attempts += 1;
                st.out.extend_from_slice(&w.frame);
                st.enqueued += w.frame.len() as u64;
                w.end = st.enqueued;
                if is_ack_frame(&w.frame) {
                    st.acks.push_back(w);
                } else {
                    st.writes.push_back(w);
                }
            } else {
                failed.push(w);
            }
        }
        drop(st);
        self.space.notify_all();
        for w in failed {
            stats::inc(&pool.stats.send_failures);
            w.tracker
                .finish(&self.member, Some((cause.to_string(), false)));
        }
        if lost_async > 0 {
            stats::add(&pool.stats.async_bytes_lost, lost_async as u64);
        }
    }
}

/// Writes as much of `buf` as the non-blocking socket takes now; errors count as nothing written
/// (the writer task then meets the error itself and handles the reconnect).
fn write_nonblocking(sock: &std::net::TcpStream, buf: &[u8]) -> usize {
    use std::io::Write;
    let mut written = 0;
    let mut w = sock;
    while written < buf.len() {
        match w.write(&buf[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    written
}

/// True when the framed channel data asks for an ACK (USE_ACK bit in its options).
fn is_ack_frame(frame: &[u8]) -> bool {
    // Frame: 7-byte start, 4-byte length, then options (big-endian int).
    frame
        .get(11..15)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u32::from_be_bytes(b) & crate::wire::options::USE_ACK != 0)
        .unwrap_or(false)
}

/// Reads ACK/NACK frames from a sender connection and completes waiters in order.
async fn read_acks(
    conn: Arc<Connection>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    stats: Arc<Stats>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match check_frame(&buf, 1024) {
                Ok(FrameCheck::Complete { body, total }) => {
                    let kind = ack_kind(&buf[body]);
                    buf.drain(..total);
                    let Some(kind) = kind else { continue };
                    let waiter = conn.state.lock().acks.pop_front();
                    if let Some(w) = waiter {
                        match kind {
                            AckKind::Ack => {
                                stats::inc(&stats.acks_received);
                                w.tracker.finish(&conn.member, None);
                            }
                            AckKind::Nack => {
                                stats::inc(&stats.nacks_received);
                                w.tracker.finish(
                                    &conn.member,
                                    Some((
                                        "the member failed to process the message (NACK)".into(),
                                        true,
                                    )),
                                );
                            }
                        }
                    }
                }
                Ok(FrameCheck::Incomplete) => break,
                Err(_) => {
                    // Not a valid answer: the connection is unusable.
                    conn.broken.store(true, Ordering::SeqCst);
                    conn.wake.notify_one();
                    return;
                }
            }
        }
    }
    conn.broken.store(true, Ordering::SeqCst);
    conn.wake.notify_one();
}

impl SenderPool {
    /// Reports a failed send to the failure detector (as a lost connection would).
    pub fn notify_lost(&self, member: &Arc<Member>, cause: &str) -> bool {
        self.notices
            .send(PoolNotice::ConnectionLost(
                member.clone(),
                cause.to_string(),
            ))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_ack_spin_is_scoped_and_nests() {
        let spins = || ACK_SPIN.with(|s| s.get());
        assert!(spins());
        without_ack_spin(|| {
            assert!(!spins());
            without_ack_spin(|| assert!(!spins()));
            assert!(!spins());
        });
        assert!(spins());
        let _ = std::panic::catch_unwind(|| without_ack_spin(|| panic!("in the work")));
        assert!(spins(), "restored after a panic too");
    }
}
