//! Integration tests of the core channel on loopback: membership, acknowledged sends, failure
//! reports, hostile bytes. Python is not involved (`cargo test` needs no libpython).

use std::io::Write;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tribes::channel::Channel;
use tribes::config::CoreConfig;
use tribes::events::Event;
use tribes::wire::options::{ASYNCHRONOUS, SYNCHRONIZED_ACK, USE_ACK};
use tribes::Error;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A multicast port of this test run (different per test, and per run by the pid).
fn mcast_port() -> u16 {
    let base = 47000 + (std::process::id() % 500) as u16 * 2;
    base + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 1000
}

fn config(mcast_port: u16, interceptors: &str) -> CoreConfig {
    secured_config(mcast_port, interceptors, &[])
}

fn secured_config(mcast_port: u16, interceptors: &str, secrets: &[&str]) -> CoreConfig {
    let secrets = serde_json::to_string(secrets).expect("json");
    let json = format!(
        r#"{{"name":"t","send_options":2,"insecure":false,"worker_threads":2,"event_queue_size":1024,
        "membership":{{"address":"228.0.0.4","port":{mcast_port},"frequency_ms":50,"drop_time_ms":500,
          "bind":"127.0.0.1","ttl":0,"domain":[],"payload":[],"local_loopback_disabled":false,"static_members":[]}},
        "receiver":{{"address":"127.0.0.1","port":0,"auto_bind":1,"max_frame":1048576,"max_connections":64}},
        "sender":{{"timeout_ms":3000,"connect_timeout_ms":1000,"max_retries":1,"keepalive":true}},
        "interceptors":[{interceptors}],
        "security":{{"secrets":{secrets},"replay_window_ms":10000,"replay_cache":1024}}}}"#
    );
    CoreConfig::from_json(&json).expect("valid config")
}

const DEFAULT_STACK: &str =
    r#"{"name":"dispatch","options":{}},{"name":"failure_detector","options":{}}"#;

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn started(port: u16, stack: &str) -> Channel {
    let ch = Channel::new(config(port, stack)).expect("channel");
    ch.set_deliver_messages(true);
    ch.start().expect("start");
    ch
}

fn next_message(ch: &Channel, timeout: Duration) -> Option<Vec<u8>> {
    let rx = ch.events()?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(Event::Message { data, reply, .. }) = rx.recv_timeout(Duration::from_millis(20))
        {
            if let Some(tx) = reply {
                let _ = tx.send(true);
            }
            return Some(data);
        }
    }
    None
}

#[test]
fn two_members_see_each_other_and_exchange_acked_messages() {
    let port = mcast_port();
    let a = started(port, DEFAULT_STACK);
    let b = started(port, DEFAULT_STACK);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1 && b.members().len() == 1
    });
    let b_local = b.local_member().expect("running");
    assert!(a.members()[0].same_as(&b_local));

    a.send(b"hello", None, USE_ACK).expect("ack send");
    assert_eq!(
        next_message(&b, Duration::from_secs(2)).as_deref(),
        Some(&b"hello"[..])
    );

    // Synchronised ack waits for the receiver's processing (completed by next_message).
    let sender = std::thread::spawn({
        let payload = vec![7u8; 200_000];
        move || {
            a.send(&payload, None, USE_ACK | SYNCHRONIZED_ACK)
                .map(|_| a)
        }
    });
    let got = next_message(&b, Duration::from_secs(3)).expect("sync message");
    assert_eq!(got.len(), 200_000);
    let a = sender.join().expect("thread").expect("sync send");

    for i in 0..500u32 {
        a.send(&i.to_be_bytes(), None, ASYNCHRONOUS)
            .expect("async send");
    }
    for i in 0..500u32 {
        let m = next_message(&b, Duration::from_secs(3)).expect("async message");
        assert_eq!(m, i.to_be_bytes(), "async messages arrive in order");
    }
    b.stop();
    wait_until("shutdown seen", Duration::from_secs(1), || {
        a.members().is_empty()
    });
    a.stop();
}

#[test]
fn a_nack_fails_a_synchronised_send_with_a_remote_cause() {
    let port = mcast_port();
    let a = started(port, DEFAULT_STACK);
    let b = started(port, DEFAULT_STACK);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1
    });
    let rx = b.events().expect("events");
    let t = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some(Event::Message {
                reply: Some(tx), ..
            }) = rx.recv_timeout(Duration::from_millis(20))
            {
                let _ = tx.send(false);
                return true;
            }
        }
        false
    });
    match a.send(b"x", None, USE_ACK | SYNCHRONIZED_ACK) {
        Err(Error::Channel { faulty, .. }) => {
            assert_eq!(faulty.len(), 1);
            assert!(faulty[0].remote_failure, "{}", faulty[0].cause);
        }
        other => panic!("expected a channel error, got {other:?}"),
    }
    assert!(t.join().expect("thread"));
    a.stop();
    b.stop();
}

#[test]
fn garbage_on_the_receiver_port_is_counted_and_ignored() {
    let port = mcast_port();
    let a = started(port, DEFAULT_STACK);
    let b = started(port, DEFAULT_STACK);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1
    });
    let addr = b.receiver_address().expect("bound");

    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"this is not a frame at all, just noise")
        .expect("write");
    // A frame header declaring a body far over max_frame: rejected from the header alone.
    let mut huge = b"FLT2002".to_vec();
    huge.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let mut s2 = std::net::TcpStream::connect(addr).expect("connect");
    s2.write_all(&huge).expect("write");
    // A well-framed body that is not channel data.
    let mut bad = b"FLT2002".to_vec();
    bad.extend_from_slice(&4u32.to_be_bytes());
    bad.extend_from_slice(b"oops");
    bad.extend_from_slice(b"TLF2003");
    s.write_all(&bad).expect("write");
    s.flush().expect("flush");

    let stats = b.stats();
    wait_until("rejections counted", Duration::from_secs(3), || {
        let snap: std::collections::HashMap<_, _> = stats.snapshot().into_iter().collect();
        snap["rejected_frames"] >= 1
            && snap["rejected_oversized"] == 1
            && snap["rejected_channel_data"] >= 1
    });
    // Still serving.
    a.send(b"after garbage", None, USE_ACK)
        .expect("send after garbage");
    assert_eq!(
        next_message(&b, Duration::from_secs(2)).as_deref(),
        Some(&b"after garbage"[..])
    );
    a.stop();
    b.stop();
}

/// Sparse async sends are written from the caller's thread, dense ones by the writer task (and a
/// large frame only partly by the caller, the rest by the writer): whichever way each goes, they
/// arrive complete and in order.
#[test]
fn sparse_and_dense_async_sends_arrive_in_order() {
    let port = mcast_port();
    let a = started(port, DEFAULT_STACK);
    let b = started(port, DEFAULT_STACK);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1 && b.members().len() == 1
    });
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for burst in 0..40u32 {
        // Alternately a gap longer than the sparse gap (200 µs) and none; every fifth burst
        // starts with a frame of almost `max_frame`, more than a fresh loopback connection takes in
        // one non-blocking write.
        if burst % 2 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..(1 + burst % 7) {
            let len = if burst % 5 == 0 && i == 0 {
                900_000
            } else {
                64
            };
            let mut m = vec![(burst % 251) as u8; len];
            m[..8].copy_from_slice(&((u64::from(burst) << 32) | u64::from(i)).to_be_bytes());
            a.send(&m, None, ASYNCHRONOUS).expect("async send");
            sent.push(m);
        }
    }
    for (n, want) in sent.iter().enumerate() {
        let got = next_message(&b, Duration::from_secs(5)).expect("async message");
        assert!(
            got == *want,
            "message {n} of {}: got {} bytes starting {:?}",
            sent.len(),
            got.len(),
            &got[..8.min(got.len())]
        );
    }
    a.stop();
    b.stop();
}

#[test]
fn interceptors_round_trip_large_and_ordered_messages() {
    let stack = r#"{"name":"dispatch","options":{}},{"name":"order","options":{}},
        {"name":"fragmentation","options":{"max_size":1000}},{"name":"compression","options":{"codec":"lz4"}},
        {"name":"throughput","options":{}},{"name":"failure_detector","options":{}}"#;
    let port = mcast_port();
    let a = started(port, stack);
    let b = started(port, stack);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1
    });
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    a.send(&big, None, USE_ACK).expect("fragmented send");
    assert_eq!(next_message(&b, Duration::from_secs(3)), Some(big));
    for i in 0..200u32 {
        a.send(&i.to_be_bytes(), None, ASYNCHRONOUS).expect("async");
    }
    for i in 0..200u32 {
        assert_eq!(
            next_message(&b, Duration::from_secs(3)),
            Some(i.to_be_bytes().to_vec())
        );
    }
    a.stop();
    b.stop();
}

#[test]
fn a_restarted_channel_is_a_new_member() {
    let port = mcast_port();
    let a = started(port, DEFAULT_STACK);
    let b = started(port, DEFAULT_STACK);
    wait_until("membership", Duration::from_secs(5), || {
        a.members().len() == 1
    });
    let first = a.members()[0].key();
    b.stop();
    wait_until("gone", Duration::from_secs(1), || a.members().is_empty());
    b.start().expect("restart");
    wait_until("back", Duration::from_secs(5), || a.members().len() == 1);
    assert_ne!(a.members()[0].key(), first, "a new unique id after restart");
    a.stop();
    b.stop();
}

fn started_with(cfg: CoreConfig) -> Channel {
    let ch = Channel::new(cfg).expect("channel");
    ch.set_deliver_messages(true);
    ch.start().expect("start");
    ch
}

fn stat(ch: &Channel, name: &str) -> u64 {
    ch.stats()
        .snapshot()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .unwrap_or(0)
}

#[test]
fn secured_members_talk_and_outsiders_cannot_join_or_inject() {
    let port = mcast_port();
    let a = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["cluster-secret-0001"],
    ));
    let b = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["cluster-secret-0001"],
    ));
    let wrong = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["another-secret-0001"],
    ));
    let plain = started(port, DEFAULT_STACK);
    wait_until("secured membership", Duration::from_secs(5), || {
        a.members().len() == 1 && b.members().len() == 1
    });
    // Outsiders' heartbeats are refused and counted; they never become members.
    wait_until("refused heartbeats", Duration::from_secs(3), || {
        stat(&a, "rejected_membership_auth") >= 4
    });
    assert_eq!(a.members().len(), 1);
    a.send(b"secret hello", None, USE_ACK).expect("send");
    assert_eq!(
        next_message(&b, Duration::from_secs(2)).as_deref(),
        Some(&b"secret hello"[..])
    );

    // An outsider that knows b's address still cannot inject: the frame is refused after the ack.
    let b_addr = b.receiver_address().expect("bound");
    let mut frame = Vec::new();
    let sender = plain.local_member().expect("running");
    tribes::wire::channel_data::encode_framed_channel_data(
        USE_ACK | 1,
        0,
        &[5u8; 16],
        &sender.encoded,
        b"forged",
        &mut frame,
    );
    let mut s = std::net::TcpStream::connect(b_addr).expect("connect");
    s.write_all(&frame).expect("write");
    wait_until("forged message refused", Duration::from_secs(3), || {
        stat(&b, "rejected_auth") >= 1
    });
    assert!(next_message(&b, Duration::from_millis(200)).is_none());
    for ch in [a, b, wrong, plain] {
        ch.stop();
    }
}

#[test]
fn a_replayed_encrypted_frame_is_refused() {
    use std::io::Read;
    let port = mcast_port();
    let secret = ["replay-secret-000001"];
    let b = started_with(secured_config(port, DEFAULT_STACK, &secret));
    // Capture what a secured sender writes by pointing a static "member" at our own listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let lport = listener.local_addr().expect("addr").port();
    let json_static = format!(
        r#"{{"name":"t","send_options":2,"insecure":false,"worker_threads":1,"event_queue_size":64,
        "membership":{{"address":"228.0.0.4","port":{port},"frequency_ms":50,"drop_time_ms":500,
          "bind":"127.0.0.1","ttl":0,"domain":[],"payload":[],"local_loopback_disabled":false,
          "static_members":[{{"host":"127.0.0.1","port":{lport},"unique_id":null,"domain":[]}}]}},
        "receiver":{{"address":"127.0.0.1","port":0,"auto_bind":1,"max_frame":1048576,"max_connections":64}},
        "sender":{{"timeout_ms":1000,"connect_timeout_ms":1000,"max_retries":0,"keepalive":true}},
        "interceptors":[],
        "security":{{"secrets":["replay-secret-000001"],"replay_window_ms":10000,"replay_cache":1024}}}}"#
    );
    let a = started_with(CoreConfig::from_json(&json_static).expect("config"));
    // Accept the static probe connections and the channel connection; record what arrives.
    listener.set_nonblocking(false).expect("blocking");
    wait_until("static peer seen", Duration::from_secs(5), || {
        a.members().len() == 1
    });
    let capture = std::thread::spawn(move || {
        let mut captured = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && captured.is_empty() {
            let Ok((mut c, _)) = listener.accept() else {
                break;
            };
            c.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            if let Ok(n) = c.read(&mut buf) {
                if n > 0 {
                    captured = buf[..n].to_vec();
                }
            }
        }
        captured
    });
    // Written mode: returns once written (the fake peer sends no ack).
    let _ = a.send(b"pay me once", None, 0);
    let frame = capture.join().expect("thread");
    assert!(frame.starts_with(b"FLT2002"), "captured a frame");
    let addr = b.receiver_address().expect("bound");
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(&frame).expect("write");
    }
    // The first copy is genuine and delivered once; the second is a replay.
    assert_eq!(
        next_message(&b, Duration::from_secs(2)).as_deref(),
        Some(&b"pay me once"[..])
    );
    wait_until("replay refused", Duration::from_secs(3), || {
        stat(&b, "rejected_replay") == 1
    });
    assert!(next_message(&b, Duration::from_millis(200)).is_none());
    a.stop();
    b.stop();
}

#[test]
fn rotation_keeps_old_and_new_keys_talking() {
    let port = mcast_port();
    let old = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["rotation-old-000001"],
    ));
    let both = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["rotation-new-000001", "rotation-old-000001"],
    ));
    let new_only = started_with(secured_config(
        port,
        DEFAULT_STACK,
        &["rotation-new-000001", "rotation-old-000001"],
    ));
    wait_until("rotating membership", Duration::from_secs(5), || {
        both.members().len() == 2
    });
    // `old` hears the others only if it accepts their key: it does not yet, so it is alone...
    assert!(old.members().is_empty());
    // ...but the rotating members accept it.
    old.send(b"from old", None, 0).ok();
    both.send(b"from both", None, USE_ACK)
        .expect("send to the other rotating member");
    assert_eq!(
        next_message(&new_only, Duration::from_secs(2)).as_deref(),
        Some(&b"from both"[..])
    );
    for ch in [old, both, new_only] {
        ch.stop();
    }
}
