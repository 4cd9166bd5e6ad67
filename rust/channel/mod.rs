//! The channel: Tribes' GroupChannel. It owns the tokio runtime, the receiver, the sender pool,
//! the membership service and the interceptor stack, and is what the Python bindings drive.
//!
//! `start()` binds the receiver (auto-bind), makes the local member from the bound address and a
//! fresh unique id, starts membership and the view task, and returns. `stop()` sends the shutdown
//! heartbeat, signals every task, closes every socket and joins the runtime's threads.

pub mod interceptors;
pub(crate) mod view;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use crate::config::CoreConfig;
use crate::error::{Error, Faulty, Result};
use crate::events::{event_queue, Event, EventQueue, EventReceiver};
use crate::member::{ip_bytes, new_unique_id, Member, MemberKey};
use crate::membership::mcast::{self, LocalHeartbeat};
use crate::membership::{static_members, Heard};
use crate::security::KeyRing;
use crate::session::manager::{Manager, Settings};
use crate::session::message::{is_session_message, STATS_REQUEST};
use crate::session::registry::Registry;
use crate::stats::{self, Stats};
use crate::transport::probe::now_ms;
use crate::transport::receiver::{self, Inbound, InboundMessage, ReceiverLimits};
use crate::transport::sender::{PoolSettings, SendMode, SendTracker, SenderPool};
use crate::wire::channel_data::{encode_framed_channel_data, encode_framed_channel_data_with};
use crate::wire::member::MemberPacket;
use crate::wire::options::{ASYNCHRONOUS, BYTE_MESSAGE, SYNCHRONIZED_ACK, USE_ACK};
use crate::wire::TCP_FAIL_DETECT;
use interceptors::{InMessage, OutMessage, Stack, StackContext};

/// State shared by the channel's tasks.
pub(crate) struct Shared {
    pub(crate) cfg: CoreConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) stack: Stack,
    pub(crate) pool: Arc<SenderPool>,
    pub(crate) events: EventQueue,
    /// Members in the view, oldest-running first. Replaced whole on change (readers clone the Arc).
    pub(crate) view: RwLock<Arc<Vec<Arc<Member>>>>,
    /// The local member's packet, as sent in every message's address field.
    pub(crate) local_address: Arc<[u8]>,
    pub(crate) deliver_messages: AtomicBool,
    /// The session managers and their worker.
    pub(crate) sessions: Arc<Registry>,
    /// The local member's unique id.
    pub(crate) local_id: [u8; 16],
}

impl Shared {
    fn sorted(mut members: Vec<Arc<Member>>) -> Arc<Vec<Arc<Member>>> {
        // Oldest-running first, as Tribes orders its membership.
        members.sort_by_key(|m| std::cmp::Reverse(m.packet.alive_ms));
        Arc::new(members)
    }

    pub(crate) fn add_to_view(&self, member: &Arc<Member>) -> bool {
        let mut view = self.view.write();
        if view.iter().any(|m| m.same_as(member)) {
            return false;
        }
        let mut members: Vec<_> = view.iter().cloned().collect();
        members.push(member.clone());
        *view = Self::sorted(members);
        true
    }

    pub(crate) fn replace_in_view(&self, member: &Arc<Member>) {
        let mut view = self.view.write();
        let members: Vec<_> = view
            .iter()
            .map(|m| {
                if m.same_as(member) {
                    member.clone()
                } else {
                    m.clone()
                }
            })
            .collect();
        *view = Self::sorted(members);
    }

    pub(crate) fn remove_from_view(&self, key: &MemberKey) -> Option<Arc<Member>> {
        let mut view = self.view.write();
        let found = view.iter().find(|m| m.has_key(key)).cloned()?;
        let members: Vec<_> = view.iter().filter(|m| !m.has_key(key)).cloned().collect();
        *view = Arc::new(members);
        Some(found)
    }

    /// Hands a message that came through the stack to the application; false refuses it (the
    /// sender of an acknowledged message gets a NACK).
    pub(crate) fn deliver(&self, msg: InMessage, events: &mut Vec<Event>) -> bool {
        if is_session_message(&msg.payload) {
            // Applied here, in Rust, without the GIL.
            return self.sessions.handle(&msg.sender, &msg.payload, events);
        }
        if msg.payload.as_slice() == STATS_REQUEST {
            self.sessions.stats_requested(&msg.sender);
            return true;
        }
        stats::inc(&self.stats.messages_delivered);
        if self.deliver_messages.load(Ordering::Relaxed) {
            events.push(Event::Message {
                sender: msg.sender,
                data: msg.payload,
                reply: None,
            });
        }
        true
    }
}

impl Inbound for Shared {
    fn receive(&self, msg: InboundMessage<'_>, events: &mut Vec<Event>) -> bool {
        if msg.message == TCP_FAIL_DETECT {
            // A failure detector's probe: answered by the ACK, never delivered.
            return true;
        }
        let mut unique_id = [0u8; 16];
        let n = msg.unique_id.len().min(16);
        unique_id[..n].copy_from_slice(&msg.unique_id[..n]);
        let incoming = InMessage {
            options: msg.options,
            unique_id,
            payload: msg.message.to_vec(),
            sender: msg.sender.clone(),
        };
        if self.stack.is_transparent() {
            return self.deliver(incoming, events);
        }
        let (delivered, refused) = self.stack.inbound(incoming, &self.stats);
        let mut accepted = !refused;
        for m in delivered {
            accepted &= self.deliver(m, events);
        }
        // A refused message (bad key, replay, bad trailer, a backup for a manager this member does
        // not run) answers a synchronised sender with NACK.
        accepted
    }
}

struct Running {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    mcast: Option<(Arc<tokio::net::UdpSocket>, SocketAddr, Arc<LocalHeartbeat>)>,
    local: Arc<LocalHeartbeat>,
    receiver_addr: SocketAddr,
}

/// A group channel. Create, `start()`, use, `stop()`; it can be started again after a stop.
pub struct Channel {
    cfg: CoreConfig,
    stats: Arc<Stats>,
    running: Mutex<Option<Running>>,
    events_rx: Mutex<Option<Arc<EventReceiver>>>,
    deliver_messages: AtomicBool,
}

impl Channel {
    /// A stopped channel with this configuration.
    pub fn new(cfg: CoreConfig) -> Result<Self> {
        cfg.validate()?;
        // Fail early on a bad interceptor list.
        Stack::build(
            &cfg,
            &StackContext {
                local_address: Arc::from(&b""[..]),
                stats: Arc::new(Stats::default()),
            },
        )?;
        Ok(Channel {
            cfg,
            stats: Arc::new(Stats::default()),
            running: Mutex::new(None),
            events_rx: Mutex::new(None),
            deliver_messages: AtomicBool::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// True between start and stop.
    pub fn is_running(&self) -> bool {
        self.running.lock().is_some()
    }

    /// Starts everything; returns once the receiver is bound and the first heartbeat is out.
    pub fn start(&self) -> Result<()> {
        let mut guard = self.running.lock();
        if guard.is_some() {
            return Ok(());
        }
        let cfg = &self.cfg;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads)
            .max_blocking_threads(2)
            .thread_name(format!("tribes-{}", cfg.name))
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the runtime", e))?;

        let std_listener = receiver::bind(
            cfg.receiver.address,
            cfg.receiver.port,
            cfg.receiver.auto_bind,
        )?;
        let receiver_addr = std_listener
            .local_addr()
            .map_err(|e| Error::io("receiver address", e))?;

        let started = Instant::now();
        // With static membership every node names every peer by its configured (or host:port
        // derived) id, so the local member takes the id its peers know it by.
        let unique_id = cfg
            .membership
            .static_members
            .iter()
            .find(|s| s.host == receiver_addr.ip() && s.port == receiver_addr.port())
            .map(|s| static_members::static_member(s).packet.unique_id)
            .unwrap_or_else(new_unique_id);
        let packet = MemberPacket {
            alive_ms: 0,
            port: i32::from(receiver_addr.port()),
            secure_port: -1,
            udp_port: -1,
            host: ip_bytes(receiver_addr.ip()),
            command: Vec::new(),
            domain: cfg.membership.domain.clone(),
            unique_id,
            payload: cfg.membership.payload.clone(),
        };
        let local_member = Member::from_packet(packet.clone());
        let local = Arc::new(LocalHeartbeat {
            packet,
            started,
            ring: KeyRing::new(&cfg.security.secrets),
        });

        let (events, events_rx) = event_queue(cfg.event_queue_size);
        let (notice_tx, notice_rx) = mpsc::unbounded_channel();
        let stack = Stack::build(
            cfg,
            &StackContext {
                local_address: local_member.encoded.clone(),
                stats: self.stats.clone(),
            },
        )?;
        let ring = KeyRing::new(&cfg.security.secrets).map(Arc::new);
        let pool = SenderPool::new(
            PoolSettings {
                connect_timeout: Duration::from_millis(cfg.sender.connect_timeout_ms.max(1)),
                max_retries: cfg.sender.max_retries,
                keepalive: cfg.sender.keepalive,
                max_queue_bytes: stack.max_queue_bytes,
                queue_wait: Duration::from_millis(cfg.sender.timeout_ms.max(1)),
                local_address: local_member.encoded.clone(),
            },
            runtime.handle().clone(),
            notice_tx,
            events.clone(),
            self.stats.clone(),
        );
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            stats: self.stats.clone(),
            stack,
            pool,
            events: events.clone(),
            view: RwLock::new(Arc::new(Vec::new())),
            local_address: local_member.encoded.clone(),
            deliver_messages: AtomicBool::new(self.deliver_messages.load(Ordering::Relaxed)),
            sessions: Arc::new(Registry::new(self.stats.clone())),
            local_id: unique_id,
        });
        shared.sessions.start_worker(
            Link {
                shared: shared.clone(),
                handle: runtime.handle().clone(),
            },
            &cfg.name,
        )?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (heard_tx, heard_rx) = mpsc::unbounded_channel::<Heard>();

        let _enter = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| Error::io("receiver", e))?;
        runtime.spawn(receiver::serve(
            listener,
            shared.clone() as Arc<dyn Inbound>,
            events.clone(),
            self.stats.clone(),
            ReceiverLimits {
                max_frame: cfg.receiver.max_frame,
                max_connections: cfg.receiver.max_connections,
                idle_timeout: Duration::from_millis(cfg.receiver.idle_timeout_ms),
            },
            shutdown_rx.clone(),
        ));

        let frequency = Duration::from_millis(cfg.membership.frequency_ms);
        let mut mcast_state = None;
        if cfg.membership.static_members.is_empty() {
            let std_sock = mcast::open(&cfg.membership)?;
            let sock = Arc::new(
                tokio::net::UdpSocket::from_std(std_sock)
                    .map_err(|e| Error::io("membership", e))?,
            );
            let group = SocketAddr::new(cfg.membership.address, cfg.membership.port);
            runtime.spawn(mcast::run_receiver(
                sock.clone(),
                local_member.key(),
                ring.clone(),
                cfg.security.replay_window_ms,
                heard_tx.clone(),
                self.stats.clone(),
                shutdown_rx.clone(),
            ));
            runtime.spawn(mcast::run_sender(
                sock.clone(),
                group,
                local.clone(),
                frequency,
                self.stats.clone(),
                shutdown_rx.clone(),
            ));
            mcast_state = Some((sock, group, local.clone()));
        } else {
            let peers: Vec<Arc<Member>> = cfg
                .membership
                .static_members
                .iter()
                .filter(|s| !(s.host == receiver_addr.ip() && s.port == receiver_addr.port()))
                .map(static_members::static_member)
                .collect();
            let pool = shared.pool.clone();
            runtime.spawn(static_members::run(
                peers,
                Arc::new(move |m: &Member| pool.is_connected(&m.key())),
                frequency,
                Duration::from_millis(cfg.sender.connect_timeout_ms.max(1)),
                heard_tx.clone(),
                shutdown_rx.clone(),
            ));
        }
        drop(heard_tx);
        runtime.spawn(view::ViewTask::new(shared.clone()).run(heard_rx, notice_rx, shutdown_rx));
        drop(_enter);

        log::info!(target: "tribes::channel", "channel {} started: local member {}", cfg.name, local_member);
        *self.events_rx.lock() = Some(Arc::new(events_rx));
        *guard = Some(Running {
            runtime,
            shared,
            shutdown: shutdown_tx,
            mcast: mcast_state,
            local,
            receiver_addr,
        });
        Ok(())
    }

    /// Stops everything and joins every thread; a no-op when stopped.
    pub fn stop(&self) {
        let Some(running) = self.running.lock().take() else {
            return;
        };
        if let Some((sock, group, local)) = &running.mcast {
            running
                .runtime
                .block_on(mcast::send_shutdown(sock, *group, local));
        }
        // The session worker may be mid-send: it finishes before the transport closes.
        running.shared.sessions.stop();
        let _ = running.shutdown.send(true);
        running.shared.pool.close_all();
        let Running {
            runtime,
            shared,
            mcast,
            ..
        } = running;
        drop(mcast);
        // Dropping the runtime cancels every task (closing their sockets) and joins its threads.
        runtime.shutdown_timeout(Duration::from_secs(5));
        // The event queue closes once drained, even if Python still holds a manager (whose link
        // keeps a sender alive).
        shared.events.close();
        drop(shared);
        log::info!(target: "tribes::channel", "channel {} stopped", self.cfg.name);
    }

    /// The event receiver of the current (or last) run.
    pub fn events(&self) -> Option<Arc<EventReceiver>> {
        self.events_rx.lock().clone()
    }

    /// Turns delivery of application messages to the event queue on or off.
    pub fn set_deliver_messages(&self, on: bool) {
        self.deliver_messages.store(on, Ordering::Relaxed);
        if let Some(r) = self.running.lock().as_ref() {
            r.shared.deliver_messages.store(on, Ordering::Relaxed);
        }
    }

    /// The members in the view, oldest-running first.
    pub fn members(&self) -> Vec<Arc<Member>> {
        match self.running.lock().as_ref() {
            Some(r) => r.shared.view.read().iter().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The local member, with its current alive time; None when stopped.
    pub fn local_member(&self) -> Option<Member> {
        let guard = self.running.lock();
        let r = guard.as_ref()?;
        let mut p = r.local.packet.clone();
        p.alive_ms = r.local.started.elapsed().as_millis() as i64;
        Some(Member::from_packet(p))
    }

    /// The receiver's bound address.
    pub fn receiver_address(&self) -> Option<SocketAddr> {
        self.running.lock().as_ref().map(|r| r.receiver_addr)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sends `data` to `to` (None = every member in the view) with Tomcat option bits.
    ///
    /// Blocks for `use_ack` (until every target acked or the sender timeout) and for plain sends
    /// (until written); returns at once for async sends when `dispatch` is configured. A failure
    /// for some targets is an [`Error::Channel`] naming each with its cause; the others got it.
    pub fn send(&self, data: &[u8], to: Option<&[MemberKey]>, options: u32) -> Result<()> {
        self.link()?.send(data, to, options)
    }

    /// The session manager of this name on the running channel, created on first use.
    /// With `transfer = false` the manager only starts receiving; call
    /// [`Manager::begin_transfer`] once the membership has settled.
    pub fn manager(&self, name: &str, settings: Settings, transfer: bool) -> Result<Arc<Manager>> {
        let link = self.link()?;
        let me = link.shared.local_id;
        let sessions = link.shared.sessions.clone();
        Ok(sessions.create(name, settings, link, me, transfer))
    }

    /// A handle for sending from other threads while running.
    pub(crate) fn link(&self) -> Result<Link> {
        let guard = self.running.lock();
        let r = guard.as_ref().ok_or(Error::NotStarted)?;
        Ok(Link {
            shared: r.shared.clone(),
            handle: r.runtime.handle().clone(),
        })
    }
}

/// What sends need of a running channel; cheap to clone, usable from any non-runtime thread.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) shared: Arc<Shared>,
    pub(crate) handle: tokio::runtime::Handle,
}

impl Link {
    /// Sends `data` to one member that need not be in the view yet (an answer to a member that
    /// asked before this member heard its heartbeat).
    pub(crate) fn send_direct(
        &self,
        data: &[u8],
        member: &Arc<Member>,
        options: u32,
    ) -> Result<()> {
        let faulty = self.send_to(data, std::slice::from_ref(member), options)?;
        if faulty.is_empty() {
            return Ok(());
        }
        stats::add(&self.shared.stats.send_failures, faulty.len() as u64);
        Err(Error::Channel {
            message: format!("send to {member} failed ({})", faulty[0].cause),
            faulty,
        })
    }

    /// Sends `data` to `to` (None = every member in the view); see [`Channel::send`].
    pub(crate) fn send(&self, data: &[u8], to: Option<&[MemberKey]>, options: u32) -> Result<()> {
        let (targets, absent) = self.resolve(to);
        let total = targets.len() + absent.len();
        let faulty = if targets.is_empty() {
            Vec::new()
        } else {
            self.send_to(data, &targets, options)?
        };
        outcome(&self.shared, absent, faulty, total)
    }

    /// Like [`Link::send`] without blocking: returns once the message is on its way; `done` gets
    /// what `send` would have returned, on whichever thread completes the send (an ack reader,
    /// the pool's deadline check, or this one). `done` must not block.
    pub(crate) fn send_then(
        &self,
        data: &[u8],
        to: Option<&[MemberKey]>,
        options: u32,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let shared = &self.shared;
        let (targets, absent) = self.resolve(to);
        let total = targets.len() + absent.len();
        if targets.is_empty() {
            done(outcome(shared, absent, Vec::new(), total));
            return;
        }
        let prepared = match self.prepare(data, &targets, options) {
            Ok(p) => p,
            Err(e) => return done(Err(e)),
        };
        if prepared.mode == SendMode::Async {
            self.enqueue(&prepared, &targets, None);
            done(outcome(shared, absent, Vec::new(), total));
            return;
        }
        let for_outcome = shared.clone();
        let tracker = SendTracker::with_callback(
            &targets,
            Box::new(move |faulty| done(outcome(&for_outcome, absent, faulty, total))),
        );
        let deadline = Instant::now() + Duration::from_millis(shared.cfg.sender.timeout_ms);
        shared.pool.expire_at(&tracker, deadline);
        self.enqueue(&prepared, &targets, Some(&tracker));
    }

    /// The members of the view among `to` (None = all), and faults for the others.
    fn resolve(&self, to: Option<&[MemberKey]>) -> (Vec<Arc<Member>>, Vec<Faulty>) {
        let view = self.shared.view.read().clone();
        // Destinations that are not (or no longer) members are reported, never sent to; the
        // others still get the message.
        let mut absent: Vec<Faulty> = Vec::new();
        let targets: Vec<Arc<Member>> = match to {
            None => view.iter().cloned().collect(),
            Some(keys) => {
                let mut t = Vec::with_capacity(keys.len());
                for k in keys {
                    match view.iter().find(|m| m.has_key(k)) {
                        Some(m) => t.push(m.clone()),
                        None => absent.push(Faulty {
                            member: Arc::new(key_member(k)),
                            cause: "not a member of the cluster".into(),
                            remote_failure: false,
                        }),
                    }
                }
                t
            }
        };
        (targets, absent)
    }

    /// Sends to members of the view; returns the ones that failed.
    fn send_to(&self, data: &[u8], targets: &[Arc<Member>], options: u32) -> Result<Vec<Faulty>> {
        let prepared = self.prepare(data, targets, options)?;
        let tracker = (prepared.mode != SendMode::Async).then(|| SendTracker::new(targets));
        self.enqueue(&prepared, targets, tracker.as_ref());
        let Some(tracker) = tracker else {
            return Ok(Vec::new());
        };
        let deadline = Instant::now() + Duration::from_millis(self.shared.cfg.sender.timeout_ms);
        Ok(tracker.wait(deadline))
    }

    /// Runs the interceptors and frames the message (the part of a send that can fail).
    fn prepare(&self, data: &[u8], targets: &[Arc<Member>], options: u32) -> Result<Prepared> {
        let _enter = self.handle.enter();
        let shared = &self.shared;
        let mut options = options | BYTE_MESSAGE;
        if options & SYNCHRONIZED_ACK != 0 {
            options |= USE_ACK;
        }
        let mode = if options & USE_ACK != 0 {
            SendMode::Ack
        } else if options & ASYNCHRONOUS != 0 && shared.stack.dispatch_async {
            SendMode::Async
        } else {
            SendMode::Written
        };
        let unique_id: [u8; 16] = rand::random();
        let timestamp = now_ms();
        let encode = |opts: u32, payload: &[u8]| {
            let mut frame = Vec::with_capacity(payload.len() + shared.local_address.len() + 64);
            encode_framed_channel_data(
                opts,
                timestamp,
                &unique_id,
                &shared.local_address,
                payload,
                &mut frame,
            );
            Bytes::from(frame)
        };
        // With interceptors, one message may become several (fragments, per-target counters);
        // the tracker then counts a target done when its last frame completes.
        let frames = if shared.stack.is_transparent() {
            vec![(encode(options, data), None, true)]
        } else if let Some(sealer) = shared.stack.sole_sealer() {
            let sealed_len = sealer.sealed_len(data.len());
            let mut frame = Vec::with_capacity(sealed_len + shared.local_address.len() + 64);
            encode_framed_channel_data_with(
                options,
                timestamp,
                &unique_id,
                &shared.local_address,
                sealed_len,
                |out| sealer.seal_into(options, &unique_id, data, out),
                &mut frame,
            );
            vec![(Bytes::from(frame), None, true)]
        } else {
            let msgs = shared.stack.outbound(OutMessage {
                options,
                unique_id,
                payload: data.to_vec(),
                targets: targets.to_vec(),
            })?;
            let last = msgs.len().saturating_sub(1);
            // Only each target's final frame reports to the tracker.
            let reports: Vec<bool> = (0..msgs.len())
                .map(|i| {
                    i == last
                        || !msgs[i + 1..].iter().any(|later| {
                            later
                                .targets
                                .iter()
                                .any(|t| msgs[i].targets.iter().any(|x| x.same_as(t)))
                        })
                })
                .collect();
            msgs.into_iter()
                .zip(reports)
                .map(|(m, reports)| (encode(m.options, &m.payload), Some(m.targets), reports))
                .collect()
        };
        Ok(Prepared { mode, frames })
    }

    /// Hands prepared frames to the connections (never fails: failures reach the tracker).
    fn enqueue(
        &self,
        prepared: &Prepared,
        targets: &[Arc<Member>],
        tracker: Option<&Arc<SendTracker>>,
    ) {
        let _enter = self.handle.enter();
        let mode = prepared.mode;
        // Every frame of an acknowledged send asks for an ACK (the interceptors keep the options),
        // and ACKs are matched to waiters in order: the frames that do not report still wait for
        // theirs, on a tracker nobody reads, so that no ACK is taken for another frame's.
        let sink = (mode == SendMode::Ack && prepared.frames.iter().any(|f| !f.2))
            .then(|| SendTracker::new(&[]));
        for (frame, frame_targets, reports) in &prepared.frames {
            let t = if *reports { tracker } else { sink.as_ref() };
            let frame_mode = if t.is_some() {
                mode
            } else if mode == SendMode::Async {
                SendMode::Async
            } else {
                SendMode::Written
            };
            let to = frame_targets.as_deref().unwrap_or(targets);
            self.shared.pool.enqueue(to, frame, frame_mode, t);
        }
    }
}

/// A message framed for sending: its mode and its frames.
struct Prepared {
    mode: SendMode,
    frames: Vec<PreparedFrame>,
}

/// One frame: its bytes, its own targets when the interceptors gave it some, and whether it
/// reports to the tracker (each target's last frame does).
type PreparedFrame = (Bytes, Option<Vec<Arc<Member>>>, bool);

/// What a send returns, from the members that were absent and those that failed.
fn outcome(shared: &Shared, absent: Vec<Faulty>, faulty: Vec<Faulty>, total: usize) -> Result<()> {
    if faulty.is_empty() && absent.is_empty() {
        return Ok(());
    }
    stats::add(&shared.stats.send_failures, faulty.len() as u64);
    // Tell the failure detector about real send errors (not NACKs).
    for f in faulty.iter().filter(|f| !f.remote_failure) {
        let _ = shared.pool.notify_lost(&f.member, &f.cause);
    }
    let faulty: Vec<Faulty> = absent.into_iter().chain(faulty).collect();
    let names: Vec<String> = faulty
        .iter()
        .map(|f| format!("{} ({})", f.member, f.cause))
        .collect();
    Err(Error::Channel {
        message: format!(
            "send failed for {} of {} member(s). Faulty members: {}",
            faulty.len(),
            total,
            names.join(", ")
        ),
        faulty,
    })
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A placeholder member for a key that is not in the view (for error reports).
fn key_member(k: &MemberKey) -> Member {
    Member::from_packet(MemberPacket {
        alive_ms: 0,
        port: k.port,
        secure_port: -1,
        udp_port: -1,
        host: k.host.clone(),
        command: Vec::new(),
        domain: Vec::new(),
        unique_id: k.unique_id,
        payload: Vec::new(),
    })
}
