//! TCP transport: the receiver (listener, framing, acks) and the sender pool (one persistent
//! connection per member, frames written by one task per connection, acks matched in order).

pub mod probe;
pub mod receiver;
pub mod sender;

use std::time::Duration;

/// Sets the socket options every tribes TCP connection uses.
pub(crate) fn tune_stream(stream: &tokio::net::TcpStream, keepalive: bool) {
    let _ = stream.set_nodelay(true);
    if keepalive {
        let sock = socket2::SockRef::from(stream);
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(5));
        let _ = sock.set_tcp_keepalive(&ka);
    }
}
