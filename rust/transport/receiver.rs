//! The TCP receiver: binds with auto-bind, accepts connections (capped), reads frames, answers
//! ACK/NACK as the send options ask, and hands each message to the channel.
//!
//! ACK timing follows Tribes: with USE_ACK alone the ACK is queued *before* the message is
//! processed; with USE_ACK + SYNCHRONIZED_ACK it is sent after processing (which includes the
//! Python listeners when there are any), or a NACK when processing failed. ACKs of one read batch
//! are written together.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::error::{Error, Result};
use crate::events::{Event, EventQueue};
use crate::member::Member;
use crate::stats::{self, Stats};
use crate::wire::ack::{ACK_FRAME, NACK_FRAME};
use crate::wire::channel_data::ChannelDataRef;
use crate::wire::frame::{check_frame, find_frame_start, FrameCheck};
use crate::wire::options::{SYNCHRONIZED_ACK, USE_ACK};
use crate::wire::WireError;

const LOG: &str = "tribes::transport::receiver";

/// One received message, borrowed from the read buffer.
#[derive(Debug)]
pub struct InboundMessage<'a> {
    /// Option bits.
    pub options: u32,
    /// Sender's timestamp.
    pub timestamp: i64,
    /// Message id.
    pub unique_id: &'a [u8],
    /// The sender.
    pub sender: &'a Arc<Member>,
    /// The payload as received (before interceptors).
    pub message: &'a [u8],
}

/// What the receiver hands messages to (the channel).
pub trait Inbound: Send + Sync + 'static {
    /// Processes one message, pushing the events it produces; false when processing failed.
    fn receive(&self, msg: InboundMessage<'_>, events: &mut Vec<Event>) -> bool;
}

/// Binds the listener: `port`, then the next ports up to `auto_bind` attempts (port 0: the OS picks).
pub fn bind(address: IpAddr, port: u16, auto_bind: u16) -> Result<std::net::TcpListener> {
    let attempts = if port == 0 { 1 } else { auto_bind.max(1) };
    let mut last_err = None;
    for i in 0..attempts {
        let Some(p) = port.checked_add(i) else { break };
        let addr = SocketAddr::new(address, p);
        match try_bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.unwrap_or_else(|| std::io::Error::other("no port to try"));
    Err(Error::io(
        format!(
            "receiver: no free port in {address}:{port}..{}",
            port.saturating_add(attempts.saturating_sub(1))
        ),
        e,
    ))
}

fn try_bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Limits of the receiver.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverLimits {
    /// Largest frame body.
    pub max_frame: usize,
    /// Concurrent inbound connections.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: std::time::Duration,
}

/// Accepts connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<dyn Inbound>,
    events: EventQueue,
    stats: Arc<Stats>,
    limits: ReceiverLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff_ms = 5u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff_ms = 5;
                x
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!(target: LOG, "accept failed: {e}; retrying in {backoff_ms} ms");
                tokio::time::sleep(std::time::Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(1000);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats::inc(&stats.connections_refused);
            log::warn!(target: LOG, "refused a connection from {peer}: {} connections open", limits.max_connections);
            drop(stream);
            continue;
        };
        stats::inc(&stats.connections_accepted);
        let _ = stream.set_nodelay(true);
        let inbound = inbound.clone();
        let events = events.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, inbound, events, stats, limits, shutdown).await;
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    inbound: Arc<dyn Inbound>,
    events: EventQueue,
    stats: Arc<Stats>,
    limits: ReceiverLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut acks: Vec<u8> = Vec::new();
    let mut sender_cache: Option<Arc<Member>> = None;
    let mut produced: Vec<Event> = Vec::new();
    // When the frame now being received began: a frame dribbled in slower than the idle timeout
    // (slow loris) closes the connection too.
    let mut partial_since: Option<std::time::Instant> = None;
    loop {
        if partial_since.is_some_and(|t| t.elapsed() > limits.idle_timeout) {
            stats::inc(&stats.connections_idle_closed);
            log::debug!(target: LOG, "closing the connection from {peer}: a frame took longer than {:?}", limits.idle_timeout);
            return;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, stream.read_buf(&mut buf)) => match r {
                Ok(r) => r,
                Err(_) => {
                    // Idle (or a slow-loris sender): free the slot. Live senders ping well within it.
                    stats::inc(&stats.connections_idle_closed);
                    log::debug!(target: LOG, "closing the connection from {peer}: idle for {:?}", limits.idle_timeout);
                    return;
                }
            },
            _ = shutdown.changed() => return,
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    // The peer closed in the middle of a frame.
                    stats::inc(&stats.rejected_frames);
                    log::debug!(target: LOG, "{peer} closed the connection inside a frame ({} bytes)", buf.len());
                }
                return;
            }
            Ok(n) => stats::add(&stats.bytes_received, n as u64),
            Err(_) => return,
        }
        let mut start = 0usize;
        while start < buf.len() {
            match check_frame(&buf[start..], limits.max_frame) {
                Ok(FrameCheck::Complete { body, total }) => {
                    let body = start + body.start..start + body.end;
                    start += total;
                    let sync_reply = handle_frame(
                        &buf[body],
                        &inbound,
                        &stats,
                        &mut sender_cache,
                        &mut acks,
                        &mut produced,
                    );
                    let mut replies = Vec::new();
                    if sync_reply.is_some() {
                        for ev in produced.iter_mut() {
                            if let Event::Message { reply, .. } = ev {
                                let (tx, rx) = oneshot::channel();
                                *reply = Some(tx);
                                replies.push(rx);
                            }
                        }
                    }
                    for ev in produced.drain(..) {
                        events.post(ev).await;
                    }
                    if let Some(mut ok) = sync_reply {
                        // Earlier ACKs go first, so the sender matches them in order.
                        if !acks.is_empty() {
                            if stream.write_all(&acks).await.is_err() {
                                return;
                            }
                            acks.clear();
                        }
                        for rx in replies {
                            ok &= rx.await.unwrap_or(false);
                        }
                        acks.extend_from_slice(if ok { &ACK_FRAME } else { &NACK_FRAME });
                    }
                }
                Ok(FrameCheck::Incomplete) => break,
                Err(WireError::TooLarge { len, max }) => {
                    stats::inc(&stats.rejected_oversized);
                    log::warn!(target: LOG,
                        "closing the connection from {peer}: frame of {len} bytes exceeds max_frame {max}");
                    let _ = stream.write_all(&acks).await;
                    return;
                }
                Err(_) => {
                    stats::inc(&stats.rejected_frames);
                    log::debug!(target: LOG, "bad frame from {peer}; resynchronising");
                    match find_frame_start(&buf[start + 1..]) {
                        Some(off) => start += 1 + off,
                        None => {
                            // No marker, not even a partial one at the end: drop it all.
                            start = buf.len();
                            break;
                        }
                    }
                }
            }
        }
        buf.drain(..start);
        partial_since = match (buf.is_empty(), partial_since, start > 0) {
            (true, _, _) => None,
            (false, Some(t), false) => Some(t),
            (false, _, _) => Some(std::time::Instant::now()),
        };
        if !acks.is_empty() {
            if stream.write_all(&acks).await.is_err() {
                return;
            }
            acks.clear();
        }
    }
}

/// Decodes one frame body and processes it; returns Some(ok) when a synchronised ACK must follow
/// processing (with `ok` = processing succeeded so far).
fn handle_frame(
    body: &[u8],
    inbound: &Arc<dyn Inbound>,
    stats: &Stats,
    sender_cache: &mut Option<Arc<Member>>,
    acks: &mut Vec<u8>,
    produced: &mut Vec<Event>,
) -> Option<bool> {
    let cd = match ChannelDataRef::decode(body) {
        Ok(cd) => cd,
        Err(e) => {
            stats::inc(&stats.rejected_channel_data);
            log::debug!(target: LOG, "undecodable channel data: {e}");
            return None;
        }
    };
    let use_ack = cd.options & USE_ACK != 0;
    let sync = use_ack && cd.options & SYNCHRONIZED_ACK != 0;
    let sender = match sender_cache {
        Some(m) if &m.encoded[..] == cd.address => m.clone(),
        _ => match Member::decode(cd.address) {
            Ok(m) => {
                let m = Arc::new(m);
                *sender_cache = Some(m.clone());
                m
            }
            Err(e) => {
                stats::inc(&stats.rejected_channel_data);
                log::debug!(target: LOG, "message with an undecodable sender: {e}");
                if use_ack {
                    acks.extend_from_slice(&NACK_FRAME);
                }
                return None;
            }
        },
    };
    stats::inc(&stats.messages_received);
    if use_ack && !sync {
        acks.extend_from_slice(&ACK_FRAME);
    }
    let ok = inbound.receive(
        InboundMessage {
            options: cd.options,
            timestamp: cd.timestamp,
            unique_id: cd.unique_id,
            sender: &sender,
            message: cd.message,
        },
        produced,
    );
    if sync {
        Some(ok)
    } else {
        None
    }
}
