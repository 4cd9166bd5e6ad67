//! Events for Python, and Rust log records for Python's `logging`.
//!
//! Network tasks never call Python: they post [`Event`]s here. One Python dispatcher thread per
//! cluster drains them in batches (with the GIL released while it waits) and runs the callbacks.
//! The queue is bounded in events by a semaphore: when Python falls behind, network tasks wait
//! (asynchronously) for room, which pushes back on the TCP connection instead of dropping data.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

use crate::member::Member;

/// Something Python asked to hear about.
#[derive(Debug)]
pub enum Event {
    /// A member joined the view.
    MemberAdded(Arc<Member>),
    /// A member left the view (shutdown, expiry confirmed, or found dead).
    MemberDisappeared(Arc<Member>),
    /// An application message. `reply` is set for synchronised-ack messages: the sender's ACK
    /// (true) or NACK (false) waits for it.
    Message {
        /// Who sent it.
        sender: Arc<Member>,
        /// The payload after the interceptors.
        data: Vec<u8>,
        /// Completion for synchronised acks.
        reply: Option<oneshot::Sender<bool>>,
    },
    /// A session was created, ended or changed by replication (for session listeners).
    Session(crate::session::manager::SessionEvent),
    /// An asynchronous send failed for a member after `send()` had returned.
    SendFailed {
        /// The member.
        member: Arc<Member>,
        /// Why.
        cause: String,
    },
}

/// The posting side, cloned into network tasks.
#[derive(Clone, Debug)]
pub struct EventQueue {
    tx: Sender<Event>,
    permits: Arc<Semaphore>,
    closed: Arc<AtomicBool>,
}

/// The draining side, owned by the bindings.
#[derive(Debug)]
pub struct EventReceiver {
    rx: Receiver<Event>,
    permits: Arc<Semaphore>,
    closed: Arc<AtomicBool>,
}

/// A log record on its way to Python.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Python logging level number (10 debug .. 40 error).
    pub level: u8,
    /// Dotted logger name, e.g. `tribes.transport.receiver`.
    pub logger: String,
    /// The message.
    pub message: String,
}

/// One drained batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Channel events, in order.
    pub events: Vec<Event>,
    /// Log records, in order.
    pub logs: Vec<LogRecord>,
    /// True when the channel has stopped and every event was drained.
    pub closed: bool,
}

/// Makes a queue that holds at most `capacity` undrained events.
pub fn event_queue(capacity: usize) -> (EventQueue, EventReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let permits = Arc::new(Semaphore::new(capacity.max(1)));
    let closed = Arc::new(AtomicBool::new(false));
    (
        EventQueue {
            tx,
            permits: permits.clone(),
            closed: closed.clone(),
        },
        EventReceiver {
            rx,
            permits,
            closed,
        },
    )
}

impl EventQueue {
    /// Marks the queue closed: once drained, the receiver reports `closed` even if a sender
    /// (held by an object Python still references) is alive.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Posts an event, waiting asynchronously while the queue is full.
    pub async fn post(&self, event: Event) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
            // The receiver only goes away at shutdown; the event is then moot.
            let _ = self.tx.send(event);
        }
    }

    /// Posts without waiting; false when the queue is full (the event is dropped).
    pub fn try_post(&self, event: Event) -> bool {
        match self.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.tx.send(event).is_ok()
            }
            Err(_) => false,
        }
    }
}

impl EventReceiver {
    /// Waits up to `timeout` for events or log records, then drains up to `max` of each.
    pub fn next_batch(&self, max: usize, timeout: Duration) -> Batch {
        let mut batch = Batch::default();
        let logs = log_receiver();
        let first = crossbeam_channel::select! {
            recv(self.rx) -> ev => match ev {
                Ok(ev) => Some(ev),
                Err(_) => { batch.closed = true; None }
            },
            recv(logs) -> rec => { if let Ok(r) = rec { batch.logs.push(r) } None },
            default(timeout) => None,
        };
        if let Some(ev) = first {
            batch.events.push(ev);
        }
        while batch.events.len() < max {
            match self.rx.try_recv() {
                Ok(ev) => batch.events.push(ev),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    batch.closed = true;
                    break;
                }
            }
        }
        while batch.logs.len() < max {
            match logs.try_recv() {
                Ok(r) => batch.logs.push(r),
                Err(_) => break,
            }
        }
        if self.closed.load(Ordering::Acquire) && self.rx.is_empty() {
            batch.closed = true;
        }
        self.permits.add_permits(batch.events.len());
        batch
    }

    /// Waits for one event (tests).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => {
                self.permits.add_permits(1);
                Some(ev)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }
}

// ---- log forwarding ----------------------------------------------------------------------

const LOG_QUEUE_CAPACITY: usize = 10_000;

struct LogQueue {
    tx: Sender<LogRecord>,
    rx: Receiver<LogRecord>,
    dropped: AtomicU64,
}

fn log_queue() -> &'static LogQueue {
    static QUEUE: OnceLock<LogQueue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(LOG_QUEUE_CAPACITY);
        LogQueue {
            tx,
            rx,
            dropped: AtomicU64::new(0),
        }
    })
}

fn log_receiver() -> &'static Receiver<LogRecord> {
    &log_queue().rx
}

/// Log records dropped because nobody drained the queue in time.
pub fn logs_dropped() -> u64 {
    log_queue().dropped.load(Ordering::Relaxed)
}

/// Drains pending log records (used when no cluster is running, e.g. at stop).
pub fn drain_logs(max: usize) -> Vec<LogRecord> {
    log_receiver().try_iter().take(max).collect()
}

struct QueueLogger;

impl log::Log for QueueLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("tribes")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug => 10,
            log::Level::Trace => 5,
        };
        let rec = LogRecord {
            level,
            logger: record.target().replace("::", "."),
            message: record.args().to_string(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            log_queue().tx.try_send(rec)
        {
            log_queue().dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// Installs the forwarding logger once per process; `level` is the most verbose level forwarded.
pub fn install_logger(level: log::LevelFilter) {
    static LOGGER: QueueLogger = QueueLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Changes the most verbose level forwarded.
pub fn set_log_level(level: log::LevelFilter) {
    log::set_max_level(level);
}
