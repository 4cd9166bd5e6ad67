//! The failure detector's liveness probe (Tomcat's TcpFailureDetector, with its read test on).
//!
//! Connect to the member's receiver, send one framed message carrying the 64-byte
//! `TCP_FAIL_DETECT` magic with USE_ACK, and wait for the ACK. A process that was just killed can
//! still accept a connection for a moment (its listening socket closes last), but it never
//! answers, so the ACK is what proves the member alive. Receivers swallow the magic message.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::channel_data::encode_framed_channel_data;
use crate::wire::frame::{check_frame, FrameCheck};
use crate::wire::options::{BYTE_MESSAGE, USE_ACK};
use crate::wire::TCP_FAIL_DETECT;

/// Probes `addr`; Ok(()) when the member answered, Err(cause) otherwise.
pub async fn probe(
    addr: SocketAddr,
    local_address: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect to {addr} failed: {e}")),
        Err(_) => return Err(format!("connect to {addr} timed out")),
    };
    let _ = stream.set_nodelay(true);
    let mut frame = Vec::with_capacity(256);
    let id: [u8; 16] = rand::random();
    encode_framed_channel_data(
        BYTE_MESSAGE | USE_ACK,
        now_ms(),
        &id,
        local_address,
        &TCP_FAIL_DETECT,
        &mut frame,
    );
    let exchange = async {
        stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("write to {addr} failed: {e}"))?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read from {addr} failed: {e}"))?;
            if n == 0 {
                return Err(format!("{addr} closed the connection without answering"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match check_frame(&buf, 1024) {
                Ok(FrameCheck::Complete { .. }) => return Ok(()),
                Ok(FrameCheck::Incomplete) => continue,
                Err(e) => return Err(format!("{addr} answered with invalid bytes: {e}")),
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{addr} did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Wall-clock milliseconds since the epoch (the ChannelData timestamp).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
