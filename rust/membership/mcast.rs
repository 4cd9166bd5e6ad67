//! Multicast heartbeats in the Tribes member-packet layout.
//!
//! One UDP socket per channel, bound to the group and port (so other groups on the same port are
//! not heard), joined on the configured interface, sending on that interface only (the default
//! interface is loopback: the library never multicasts on a real network unless told to).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::Heard;
use crate::config::MembershipConfig;
use crate::error::{Error, Result};
use crate::member::{Member, MemberKey};
use crate::security::{member_auth, KeyRing};
use crate::stats::{self, Stats};
use crate::transport::probe::now_ms;
use crate::wire::member::{is_member_packet, MemberPacket, SHUTDOWN_COMMAND};

const LOG: &str = "tribes::membership::mcast";
/// Largest datagram Tribes sends or reads.
pub const MAX_PACKET: usize = 65535;

/// Opens and configures the multicast socket.
pub fn open(cfg: &MembershipConfig) -> Result<std::net::UdpSocket> {
    let group = cfg.address;
    let io = |what: &str, e| Error::io(format!("membership: {what}"), e);
    let domain = match group {
        IpAddr::V4(_) => socket2::Domain::IPV4,
        IpAddr::V6(_) => socket2::Domain::IPV6,
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(|e| io("socket", e))?;
    sock.set_reuse_address(true)
        .map_err(|e| io("SO_REUSEADDR", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| io("non-blocking", e))?;
    let _ = sock.set_recv_buffer_size(1 << 20);
    let bind_addr = SocketAddr::new(group, cfg.port);
    sock.bind(&bind_addr.into())
        .map_err(|e| io(&format!("bind {bind_addr}"), e))?;
    match (group, cfg.bind) {
        (IpAddr::V4(g), IpAddr::V4(iface)) => {
            sock.join_multicast_v4(&g, &iface)
                .map_err(|e| io(&format!("join {g} on {iface}"), e))?;
            sock.set_multicast_if_v4(&iface)
                .map_err(|e| io(&format!("multicast interface {iface}"), e))?;
            if let Some(ttl) = cfg.ttl {
                sock.set_multicast_ttl_v4(ttl).map_err(|e| io("TTL", e))?;
            }
            sock.set_multicast_loop_v4(!cfg.local_loopback_disabled)
                .map_err(|e| io("multicast loop", e))?;
        }
        (IpAddr::V6(g), IpAddr::V6(_)) => {
            sock.join_multicast_v6(&g, 0)
                .map_err(|e| io(&format!("join {g}"), e))?;
            if let Some(ttl) = cfg.ttl {
                sock.set_multicast_hops_v6(ttl).map_err(|e| io("hops", e))?;
            }
            sock.set_multicast_loop_v6(!cfg.local_loopback_disabled)
                .map_err(|e| io("multicast loop", e))?;
        }
        (g, b) => {
            return Err(Error::Config(format!(
                "membership.bind: {b} and the group {g} are not of the same IP family"
            )))
        }
    }
    Ok(sock.into())
}

/// The local member's heartbeat, with the alive time computed at each send.
#[derive(Debug)]
pub struct LocalHeartbeat {
    /// The packet template (alive time overwritten per send).
    pub packet: MemberPacket,
    /// When the service started.
    pub started: std::time::Instant,
    /// With a secret: packets carry an authentication tag.
    pub ring: Option<KeyRing>,
}

impl LocalHeartbeat {
    /// The encoded packet for now; `shutdown` puts the `BABY-ALEX` command in.
    pub fn encode(&self, shutdown: bool) -> Vec<u8> {
        let mut p = self.packet.clone();
        p.alive_ms = self.started.elapsed().as_millis() as i64;
        if shutdown {
            p.command = SHUTDOWN_COMMAND.to_vec();
        }
        if let Some(ring) = &self.ring {
            return member_auth::sign(ring, &p, now_ms());
        }
        let mut out = Vec::with_capacity(p.encoded_len());
        p.encode(&mut out);
        out
    }
}

/// Sends a heartbeat every `frequency` until shutdown; the first one at once.
pub async fn run_sender(
    socket: Arc<UdpSocket>,
    group: SocketAddr,
    local: Arc<LocalHeartbeat>,
    frequency: Duration,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match socket.send_to(&local.encode(false), group).await {
            Ok(_) => {
                errors = 0;
                stats::inc(&stats.heartbeats_sent);
            }
            Err(e) => {
                errors += 1;
                if errors == 1 || errors.is_power_of_two() {
                    log::warn!(target: LOG, "heartbeat to {group} failed ({errors} in a row): {e}");
                }
            }
        }
    }
}

/// Sends the shutdown heartbeat, so peers drop this member at once.
pub async fn send_shutdown(socket: &UdpSocket, group: SocketAddr, local: &LocalHeartbeat) {
    if let Err(e) = socket.send_to(&local.encode(true), group).await {
        log::warn!(target: LOG, "shutdown heartbeat to {group} failed: {e}");
    }
}

/// Reads heartbeats until shutdown and reports them; bad datagrams are counted and ignored.
#[allow(clippy::too_many_arguments)]
pub async fn run_receiver(
    socket: Arc<UdpSocket>,
    local: MemberKey,
    ring: Option<Arc<KeyRing>>,
    replay_window_ms: u64,
    tx: mpsc::UnboundedSender<Heard>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let r = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.changed() => return,
        };
        let (n, from) = match r {
            Ok(x) => x,
            Err(e) => {
                log::debug!(target: LOG, "receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let data = &buf[..n];
        if !is_member_packet(data) {
            reject(&stats, from, "not a member packet");
            continue;
        }
        let member = match &ring {
            None => match Member::decode(data) {
                Ok(m) => m,
                Err(e) => {
                    reject(&stats, from, &e.to_string());
                    continue;
                }
            },
            Some(ring) => match member_auth::verify(ring, data) {
                Ok((packet, ts))
                    if ts.saturating_sub(now_ms()).unsigned_abs() <= replay_window_ms =>
                {
                    Member::from_packet(packet)
                }
                Ok(_) => {
                    reject_auth(&stats, from, "timestamp outside the replay window");
                    continue;
                }
                Err(e) => {
                    reject_auth(&stats, from, &e.to_string());
                    continue;
                }
            },
        };
        if member.has_key(&local) {
            continue;
        }
        stats::inc(&stats.heartbeats_received);
        let member = Arc::new(member);
        let notice = if member.is_shutdown() {
            Heard::Shutdown(member)
        } else {
            Heard::Alive(member)
        };
        if tx.send(notice).is_err() {
            return;
        }
    }
}

fn reject(stats: &Stats, from: SocketAddr, why: &str) {
    if let Some(n) = stats::inc_rate_limited(&stats.rejected_membership_packets) {
        log::warn!(target: LOG, "ignored a datagram from {from}: {why} ({n} rejected so far)");
    }
}

fn reject_auth(stats: &Stats, from: SocketAddr, why: &str) {
    if let Some(n) = stats::inc_rate_limited(&stats.rejected_membership_auth) {
        log::warn!(target: LOG,
            "ignored an unauthenticated membership packet from {from}: {why} ({n} so far)");
    }
}

/// The loopback address of the group's family (the default multicast interface).
pub fn loopback_for(group: IpAddr) -> IpAddr {
    match group {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    }
}
