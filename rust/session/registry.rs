//! The managers of one running channel, by name, and the session worker thread.
//!
//! Inbound session messages reach [`Registry::handle`] on the receiver task; it decodes them and
//! hands them to their manager, or counts and drops them (malformed, unknown manager). Work that
//! must send (state transfer, retrieve answers, restoring backups after a member left) and the
//! periodic expiry run on one worker thread, never on a network task.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::manager::{Manager, Settings};
use super::message::{decode, encode, Body, STATS_REPLY};
use crate::channel::Link;
use crate::error::Result;
use crate::events::Event;
use crate::member::Member;
use crate::stats::{self, Stats};
use crate::transport::probe::now_ms;
use crate::wire::options::ASYNCHRONOUS;

/// How often the worker runs expiry.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);
/// How often the worker wakes up to check deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Work for the session worker thread.
pub enum Job {
    /// Send every session to a member that asked.
    SendState {
        /// The manager.
        manager: Arc<Manager>,
        /// Who asked.
        to: Arc<Member>,
        /// Their request id.
        request: u64,
    },
    /// Send one session to a member that asked.
    AnswerRetrieve {
        /// The manager.
        manager: Arc<Manager>,
        /// Who asked.
        to: Arc<Member>,
        /// Their request id.
        request: u64,
        /// The session id.
        id: String,
    },
    /// The asked member had no such manager: ask the next one.
    AskNext(Arc<Manager>),
    /// Tell a member we have no manager of that name.
    NoManager {
        /// The name asked for.
        name: String,
        /// Who asked.
        to: Arc<Member>,
        /// Their request id.
        request: u64,
    },
    /// A member left the view.
    MemberGone(Arc<Member>),
    /// A member joined the view.
    MemberAdded(Arc<Member>),
    /// A member asked for this member's counters.
    StatsRequested(Arc<Member>),
    /// End the worker.
    Stop,
}

/// The managers of a running channel.
pub struct Registry {
    managers: RwLock<HashMap<String, Arc<Manager>>>,
    jobs: crossbeam_channel::Sender<Job>,
    jobs_rx: Mutex<Option<crossbeam_channel::Receiver<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

impl Registry {
    /// An empty registry; the worker starts with [`Registry::start_worker`].
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Registry {
            managers: RwLock::new(HashMap::new()),
            jobs: tx,
            jobs_rx: Mutex::new(Some(rx)),
            worker: Mutex::new(None),
            stats,
        }
    }

    /// Starts the worker thread (once).
    pub(crate) fn start_worker(self: &Arc<Self>, link: Link, name: &str) -> Result<()> {
        let Some(rx) = self.jobs_rx.lock().take() else {
            return Ok(());
        };
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tribes-sessions-{name}"))
            .spawn(move || me.work(rx, link))
            .map_err(|e| crate::error::Error::io("starting the session worker", e))?;
        *self.worker.lock() = Some(handle);
        Ok(())
    }

    /// Stops the worker and drops every manager.
    pub(crate) fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
        self.managers.write().clear();
    }

    /// The manager of this name, if created.
    pub fn get(&self, name: &str) -> Option<Arc<Manager>> {
        self.managers.read().get(name).cloned()
    }

    /// Creates the manager of this name (or returns the existing one) and starts its state
    /// transfer. `me` is the local member's unique id.
    pub(crate) fn create(
        &self,
        name: &str,
        settings: Settings,
        link: Link,
        me: [u8; 16],
        transfer: bool,
    ) -> Arc<Manager> {
        let m = {
            let mut managers = self.managers.write();
            if let Some(m) = managers.get(name) {
                return m.clone();
            }
            let m = Arc::new(Manager::new(name, settings, link, me));
            managers.insert(name.to_owned(), m.clone());
            m
        };
        if transfer {
            m.begin_transfer();
        }
        m
    }

    /// A session message from `sender`, on the receiver task. False refuses it: a backup or a
    /// retrieve for a manager this member does not run (its sender then picks another member).
    pub(crate) fn handle(
        &self,
        sender: &Arc<Member>,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> bool {
        let msg = match decode(payload) {
            Ok(m) => m,
            Err(e) => {
                if let Some(n) = stats::inc_rate_limited(&self.stats.rejected_session_messages) {
                    log::warn!(target: "tribes::session",
                        "malformed session message from {sender} ignored: {e} ({n} so far)");
                }
                return true;
            }
        };
        let Some(manager) = self.get(&msg.manager) else {
            if let Some(n) = stats::inc_rate_limited(&self.stats.session_messages_unknown_manager) {
                log::warn!(target: "tribes::session",
                    "session message for unknown manager {:?} from {sender} ignored ({n} so far)",
                    msg.manager);
            }
            return match msg.body {
                Body::GetAll { request } => {
                    let _ = self.jobs.send(Job::NoManager {
                        name: msg.manager,
                        to: sender.clone(),
                        request,
                    });
                    true
                }
                Body::Backup(_) | Body::Retrieve { .. } => false,
                _ => true,
            };
        };
        manager.on_message(sender, msg.body, &self.jobs, events);
        true
    }

    /// Membership hooks, from the view task.
    pub(crate) fn member_added(&self, m: &Arc<Member>) {
        let _ = self.jobs.send(Job::MemberAdded(m.clone()));
    }

    /// A member asked for the counters (`tribes status`): answered from the worker.
    pub(crate) fn stats_requested(&self, m: &Arc<Member>) {
        let _ = self.jobs.send(Job::StatsRequested(m.clone()));
    }

    /// A member left the view.
    pub(crate) fn member_gone(&self, m: &Arc<Member>) {
        let _ = self.jobs.send(Job::MemberGone(m.clone()));
    }

    /// This member's counters as JSON: the channel's and each manager's.
    fn stats_json(&self, link: &Link) -> String {
        let channel: serde_json::Map<String, serde_json::Value> = link
            .shared
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let managers: serde_json::Map<String, serde_json::Value> = self
            .all()
            .iter()
            .map(|m| {
                let counters: serde_json::Map<String, serde_json::Value> = m
                    .stats()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .collect();
                let kind = match m.settings().kind {
                    super::Kind::Delta => "delta",
                    super::Kind::Backup => "backup",
                };
                (
                    m.name().to_owned(),
                    serde_json::json!({"kind": kind, "counters": counters}),
                )
            })
            .collect();
        serde_json::json!({"channel": channel, "managers": managers}).to_string()
    }

    fn all(&self) -> Vec<Arc<Manager>> {
        self.managers.read().values().cloned().collect()
    }

    fn work(&self, rx: crossbeam_channel::Receiver<Job>, link: Link) {
        let mut next_expiry = Instant::now() + EXPIRE_EVERY;
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Job::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Ok(job) => self.run(job, &link),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            for m in self.all() {
                m.transfer_state();
            }
            if Instant::now() >= next_expiry {
                next_expiry = Instant::now() + EXPIRE_EVERY;
                let now = now_ms();
                for m in self.all() {
                    m.process_expires(now);
                }
            }
        }
    }

    fn run(&self, job: Job, link: &Link) {
        match job {
            Job::SendState {
                manager,
                to,
                request,
            } => manager.send_state(&to, request),
            Job::AnswerRetrieve {
                manager,
                to,
                request,
                id,
            } => manager.answer_retrieve(&to, request, &id),
            Job::AskNext(manager) => manager.ask_next(),
            Job::NoManager { name, to, request } => {
                let data = encode(&name, &Body::NoManager { request });
                if let Err(e) = link.send_direct(&data, &to, ASYNCHRONOUS) {
                    log::debug!(target: "tribes::session", "answering {to}: {e}");
                }
            }
            Job::MemberGone(m) => {
                for mgr in self.all() {
                    mgr.on_member_gone(&m);
                }
            }
            Job::MemberAdded(m) => {
                for mgr in self.all() {
                    mgr.on_member_added(&m);
                }
            }
            Job::StatsRequested(to) => {
                let mut data = STATS_REPLY.to_vec();
                data.extend_from_slice(self.stats_json(link).as_bytes());
                if let Err(e) = link.send_direct(&data, &to, ASYNCHRONOUS) {
                    log::debug!(target: "tribes::session", "answering {to}'s stats request: {e}");
                }
            }
            Job::Stop => {}
        }
    }
}
