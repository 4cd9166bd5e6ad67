//! The view task: turns what the membership services hear into the member view the application
//! sees, with Tomcat's TcpFailureDetector rules when `failure_detector` is configured:
//! - a new member is added only once a probe shows it answering;
//! - a member that falls silent is probed: dead → removed, alive → kept as a suspect (re-probed
//!   every drop time, removed once silent for `remove_suspects_timeout`), unless another process
//!   heard from recently holds its address (it restarted there: the answer was not its own);
//! - a broken connection or failed send probes the member at once, so a killed process is
//!   reported gone in well under a second instead of after the drop time;
//! - a shutdown heartbeat removes the member immediately.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use super::Shared;
use crate::events::Event;
use crate::member::{Member, MemberKey};
use crate::membership::table::{HeardOutcome, MemberTable};
use crate::membership::Heard;
use crate::stats;
use crate::transport::probe::probe;
use crate::transport::sender::PoolNotice;

const LOG: &str = "tribes::membership";
/// Probes of new members in flight at once.
const MAX_CONCURRENT_PROBES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Verify a new member before adding it.
    Admit,
    /// Verify a member in the view that fell silent or whose connection broke.
    Verify,
}

#[derive(Debug)]
struct ProbeResult {
    member: Arc<Member>,
    purpose: Purpose,
    outcome: Result<(), String>,
}

/// The task's state.
pub(crate) struct ViewTask {
    shared: Arc<Shared>,
    table: MemberTable,
    suspects: HashMap<MemberKey, Instant>,
    probing: HashSet<MemberKey>,
    refused_until: HashMap<MemberKey, Instant>,
    probe_tx: mpsc::UnboundedSender<ProbeResult>,
    probe_rx: mpsc::UnboundedReceiver<ProbeResult>,
}

impl ViewTask {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        ViewTask {
            shared,
            table: MemberTable::default(),
            suspects: HashMap::new(),
            probing: HashSet::new(),
            refused_until: HashMap::new(),
            probe_tx,
            probe_rx,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut heard: mpsc::UnboundedReceiver<Heard>,
        mut notices: mpsc::UnboundedReceiver<PoolNotice>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let m = &self.shared.cfg.membership;
        let mut tick = tokio::time::interval(Duration::from_millis(m.frequency_ms.clamp(10, 1000)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(h) = heard.recv() => self.on_heard(h).await,
                Some(n) = notices.recv() => self.on_notice(n),
                Some(r) = self.probe_rx.recv() => self.on_probe(r).await,
                _ = tick.tick() => self.on_tick().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    fn fd(&self) -> bool {
        self.shared.stack.failure_detector.is_some()
    }

    fn in_view(&self, key: &MemberKey) -> bool {
        self.shared.view.read().iter().any(|m| m.has_key(key))
    }

    async fn on_heard(&mut self, heard: Heard) {
        let now = Instant::now();
        match heard {
            Heard::Alive(member) => {
                if let Some(domain) = &self.shared.stack.domain {
                    if &member.packet.domain != domain {
                        return;
                    }
                }
                let key = member.key();
                if !self.table.contains(&key)
                    && self.table.len() >= self.shared.cfg.membership.max_members
                {
                    // A flood of made-up members must not grow memory or probes without bound.
                    if let Some(n) =
                        stats::inc_rate_limited(&self.shared.stats.rejected_members_over_limit)
                    {
                        log::warn!(target: LOG,
                            "ignoring {member}: max_members ({}) reached ({n} ignored so far)",
                            self.shared.cfg.membership.max_members);
                    }
                    return;
                }
                let outcome = self.table.heard(&member, now);
                self.suspects.remove(&key);
                if self.in_view(&key) {
                    if outcome == HeardOutcome::Changed {
                        self.shared.replace_in_view(&member);
                    }
                    return;
                }
                if !self.fd() {
                    self.admit(member).await;
                } else if !self.probing.contains(&key)
                    && self.refused_until.get(&key).is_none_or(|t| *t <= now)
                {
                    self.start_probe(member, Purpose::Admit);
                }
            }
            Heard::Shutdown(member) => {
                let key = member.key();
                log::info!(target: LOG, "{member} announced its shutdown");
                self.forget(&key).await;
            }
        }
    }

    fn on_notice(&mut self, notice: PoolNotice) {
        let PoolNotice::ConnectionLost(member, cause) = notice;
        let key = member.key();
        if self.fd() && self.in_view(&key) && !self.probing.contains(&key) {
            log::debug!(target: LOG, "connection to {member} lost ({cause}); verifying");
            let member = self.table.get(&key).unwrap_or(member);
            self.start_probe(member, Purpose::Verify);
        }
    }

    async fn on_probe(&mut self, r: ProbeResult) {
        let key = r.member.key();
        self.probing.remove(&key);
        stats::inc(&self.shared.stats.probes);
        match (r.purpose, r.outcome) {
            (Purpose::Admit, Ok(())) => {
                if self.table.contains(&key) && !self.in_view(&key) {
                    let latest = self.table.get(&key).unwrap_or(r.member);
                    self.admit(latest).await;
                }
            }
            (Purpose::Admit, Err(cause)) => {
                stats::inc(&self.shared.stats.probes_failed);
                log::debug!(target: LOG, "not admitting {}: {cause}", r.member);
                // Do not probe on every heartbeat of an unreachable member.
                let wait = Duration::from_millis(self.shared.cfg.membership.drop_time_ms);
                self.refused_until.insert(key, Instant::now() + wait);
            }
            (Purpose::Verify, Ok(())) => {
                if self.in_view(&key) {
                    let now = Instant::now();
                    let drop_time = Duration::from_millis(self.shared.cfg.membership.drop_time_ms);
                    let silent = self.table.silence(&key, now).is_none_or(|d| d > drop_time);
                    let successor = if silent {
                        self.table.successor(&r.member, now, drop_time)
                    } else {
                        None
                    };
                    if let Some(successor) = successor {
                        // The answer came from the process that now holds the address, not from
                        // this one: a member restarted on the same port. Without this check the
                        // old incarnation would stay a suspect for remove_suspects_timeout.
                        log::info!(target: LOG,
                            "{} is gone: {successor} answers at its address", r.member);
                        self.forget(&key).await;
                        return;
                    }
                    if silent {
                        self.suspects
                            .entry(key.clone())
                            .or_insert_with(Instant::now);
                    }
                    // Alive: make sure a connection is up again.
                    self.shared.pool.reconnect(&key);
                }
            }
            (Purpose::Verify, Err(cause)) => {
                stats::inc(&self.shared.stats.probes_failed);
                if self.in_view(&key) {
                    log::info!(target: LOG, "{} is gone: {cause}", r.member);
                }
                self.forget(&key).await;
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let drop_time = Duration::from_millis(self.shared.cfg.membership.drop_time_ms);
        for member in self.table.silent(now, drop_time) {
            let key = member.key();
            if !self.in_view(&key) {
                self.table.remove(&key);
                continue;
            }
            match self.shared.stack.failure_detector {
                None => {
                    log::info!(target: LOG, "{member} expired after {} ms of silence", drop_time.as_millis());
                    self.table.remove(&key);
                    self.remove(&key).await;
                }
                Some(fd) => {
                    let since = *self.suspects.get(&key).unwrap_or(&now);
                    let silence = self.table.silence(&key, now).unwrap_or_default();
                    if silence > fd.remove_suspects_timeout + drop_time {
                        log::warn!(target: LOG,
                            "{member} answers probes but has sent no heartbeat for {} s; removing it",
                            silence.as_secs());
                        self.forget(&key).await;
                    } else if !self.probing.contains(&key)
                        && (!self.suspects.contains_key(&key)
                            || now.saturating_duration_since(since) >= drop_time)
                    {
                        if self.suspects.contains_key(&key) {
                            self.suspects.insert(key.clone(), now);
                        }
                        self.start_probe(member, Purpose::Verify);
                    }
                }
            }
        }
        self.refused_until.retain(|_, t| *t > now);
        // Interceptor housekeeping (fragment and order expiry) rides on the same tick.
        let released = self.shared.stack.tick(now, &self.shared.stats);
        for msg in released {
            self.shared.deliver(msg, &mut Vec::new());
        }
    }

    fn start_probe(&mut self, member: Arc<Member>, purpose: Purpose) {
        let Some(fd) = self.shared.stack.failure_detector else {
            return;
        };
        if self.probing.len() >= MAX_CONCURRENT_PROBES && purpose == Purpose::Admit {
            // Newcomers wait for a later heartbeat; verifications of known members go ahead.
            return;
        }
        let Some(addr) = member.socket_addr() else {
            let _ = self.probe_tx.send(ProbeResult {
                member,
                purpose,
                outcome: Err("no usable address".into()),
            });
            return;
        };
        self.probing.insert(member.key());
        let tx = self.probe_tx.clone();
        let local = self.shared.local_address.clone();
        tokio::spawn(async move {
            let outcome = probe(addr, &local, fd.connect_timeout).await;
            let _ = tx.send(ProbeResult {
                member,
                purpose,
                outcome,
            });
        });
    }

    async fn admit(&mut self, member: Arc<Member>) {
        if self.shared.add_to_view(&member) {
            stats::inc(&self.shared.stats.members_added);
            log::info!(target: LOG, "member added: {member}");
            self.shared.pool.ensure(&member);
            self.shared.sessions.member_added(&member);
            self.shared.events.post(Event::MemberAdded(member)).await;
        }
    }

    /// Forgets a member (heartbeats, suspicion) and removes it from the view.
    async fn forget(&mut self, key: &MemberKey) {
        self.table.remove(key);
        self.suspects.remove(key);
        self.remove(key).await;
    }

    async fn remove(&mut self, key: &MemberKey) {
        if let Some(member) = self.shared.remove_from_view(key) {
            stats::inc(&self.shared.stats.members_disappeared);
            log::info!(target: LOG, "member disappeared: {member}");
            self.shared.pool.remove(key);
            self.shared.stack.member_gone(&member);
            self.shared.sessions.member_gone(&member);
            self.shared
                .events
                .post(Event::MemberDisappeared(member))
                .await;
        }
    }
}
