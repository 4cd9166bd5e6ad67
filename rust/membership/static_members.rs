//! Static membership, for networks without multicast: a configured list of `host:port` peers,
//! each checked by a TCP connect on every heartbeat tick. A peer that accepts is alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::Heard;
use crate::config::StaticMemberConfig;
use crate::member::{ip_bytes, Member};
use crate::wire::member::MemberPacket;

/// The member a static entry stands for. Without a configured unique id, one is derived from
/// host and port, so every node names the same peer the same way.
pub fn static_member(cfg: &StaticMemberConfig) -> Arc<Member> {
    let unique_id = match cfg
        .unique_id
        .as_deref()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
    {
        Some(id) => id,
        None => derived_id(&cfg.host.to_string(), cfg.port),
    };
    Arc::new(Member::from_packet(MemberPacket {
        alive_ms: 0,
        port: i32::from(cfg.port),
        secure_port: -1,
        udp_port: -1,
        host: ip_bytes(cfg.host),
        command: Vec::new(),
        domain: cfg.domain.clone(),
        unique_id,
        payload: Vec::new(),
    }))
}

/// A stable 16-byte id from `host:port` (FNV-1a, twice with different seeds).
pub fn derived_id(host: &str, port: u16) -> [u8; 16] {
    let text = format!("{host}:{port}");
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    id[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    id
}

/// Probes every static peer each `frequency` and reports the reachable ones as alive. A peer
/// with an established channel connection counts as reachable without a new probe.
pub async fn run(
    peers: Vec<Arc<Member>>,
    connected: Arc<dyn Fn(&Member) -> bool + Send + Sync>,
    frequency: Duration,
    connect_timeout: Duration,
    tx: mpsc::UnboundedSender<Heard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let probes = peers.iter().filter_map(|m| {
            let addr: SocketAddr = m.socket_addr()?;
            let m = m.clone();
            let up = connected(&m);
            Some(async move {
                if up {
                    return (m, true);
                }
                let ok = matches!(
                    tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
                        .await,
                    Ok(Ok(_))
                );
                (m, ok)
            })
        });
        for (m, ok) in futures_join_all(probes).await {
            if ok && tx.send(Heard::Alive(m)).is_err() {
                return;
            }
        }
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
