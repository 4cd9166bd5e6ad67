//! Writes starting inputs for every fuzz target: `cargo run --release --example make_seeds -- DIR`
//! (in `fuzz/`) fills `DIR/<target>/seed-NN`. The kept corpus in `tests/vectors/fuzz/` was grown
//! from these by fuzzing and then minimised; rerun this only to start a corpus afresh.

use std::path::Path;

use tribes::security::tomcat::TomcatCipher;
use tribes::security::{envelope, member_auth};
use tribes::session::message::{encode as encode_session, Action, Body, Delta};
use tribes::session::table::{Slot, Stamp, Stamped, WireSession};
use tribes::wire::ack::{ACK_FRAME, NACK_FRAME};
use tribes::wire::channel_data::encode_framed_channel_data;
use tribes::wire::member::{MemberPacket, SHUTDOWN_COMMAND};
use tribes::wire::options::{COMPRESSED_GZIP, COMPRESSED_LZ4, SYNCHRONIZED_ACK, USE_ACK};
use tribes_fuzz::targets::{members, ring, stack_config_json, STACKS, TOMCAT_KEYS};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vector(root: &Path, name: &str) -> Vec<u8> {
    hex(&std::fs::read_to_string(root.join("tests/vectors").join(name)).expect("vector"))
}

fn packet(host: Vec<u8>, command: &[u8], domain: &[u8], payload: &[u8]) -> MemberPacket {
    MemberPacket {
        alive_ms: 1234,
        port: 4000,
        secure_port: -1,
        udp_port: -1,
        host,
        command: command.to_vec(),
        domain: domain.to_vec(),
        unique_id: std::array::from_fn(|i| i as u8),
        payload: payload.to_vec(),
    }
}

fn framed_cd(options: u32, sender: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_framed_channel_data(options, 1, &[0xa5; 16], sender, message, &mut out);
    out
}

/// A raw-message operation of the `interceptor_stack` target.
fn op_raw(sender: u8, options: u16, id: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, sender];
    v.extend_from_slice(&options.to_be_bytes());
    v.push(id);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An outbound-then-inbound operation of the `interceptor_stack` target.
fn op_loop(options: u8, id: u8, what: u8, edits: [u8; 13], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, options, id, what];
    v.extend_from_slice(&edits);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A payload with the order counter and a "whole message" fragmentation flag (stack 0 layout).
fn ordered(body: &[u8], counter: u32) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(&counter.to_be_bytes());
    v.push(0);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A session as a member holds it: a 32-hex-digit id with a route, two attributes (one removed).
fn wire_session(primary: u8, backup: u8) -> WireSession {
    let stamp = Stamp::new(3, 0x0102_0304_0506_0708);
    WireSession {
        id: "0123456789ABCDEF0123456789ABCDEF.node1".into(),
        created_ms: 1_700_000_000_000,
        last_accessed_ms: 1_700_000_000_500,
        max_inactive: Stamped { stamp, value: 1800 },
        is_new: Stamped { stamp, value: true },
        principal: Stamped {
            stamp,
            value: Some("alice".into()),
        },
        auth_type: Stamped {
            stamp,
            value: Some("FORM".into()),
        },
        primary: [primary; 16],
        backup: [backup; 16],
        attrs: vec![
            (
                "cart".into(),
                Slot {
                    stamp,
                    value: Some(b"\x92\xa5apple\xa4pear".to_vec().into()),
                },
            ),
            (
                "gone".into(),
                Slot {
                    stamp: Stamp::new(4, 9),
                    value: None,
                },
            ),
        ],
    }
}

/// One well-formed session message of every kind (`session::message`), for manager `shop`.
fn session_messages() -> Vec<Vec<u8>> {
    let id = || "0123456789ABCDEF0123456789ABCDEF.node1".to_string();
    let bodies = vec![
        Body::Created {
            id: id(),
            created_ms: 1_700_000_000_000,
            max_inactive: 1800,
        },
        Body::Expired { id: id() },
        Body::Accessed {
            id: id(),
            last_accessed_ms: 1_700_000_000_900,
        },
        Body::GetAll { request: 77 },
        Body::AllData {
            request: 77,
            sessions: vec![wire_session(1, 2), wire_session(3, 0)],
        },
        Body::Delta(Delta {
            id: id(),
            created_ms: 1_700_000_000_000,
            last_accessed_ms: 1_700_000_000_900,
            stamp: Stamp::new(5, 0x0102_0304_0506_0708),
            actions: vec![
                Action::Attribute("cart".into(), Some(b"\x91\xa5apple".to_vec().into())),
                Action::Attribute("gone".into(), None),
                Action::Principal(Some("alice".into())),
                Action::Principal(None),
                Action::IsNew(false),
                Action::MaxInactive(-1),
                Action::AuthType(Some("BASIC".into())),
            ],
        }),
        Body::TransferComplete {
            request: 77,
            count: 2,
        },
        Body::ChangeId {
            old: id(),
            new: "FEDCBA9876543210FEDCBA9876543210.node2".into(),
        },
        Body::NoManager { request: 77 },
        Body::Backup(wire_session(1, 2)),
        Body::Proxy {
            id: id(),
            primary: [1; 16],
            backup: [0; 16],
        },
        Body::Retrieve {
            request: 78,
            id: id(),
        },
        Body::Retrieved {
            request: 78,
            session: Some(wire_session(1, 2)),
        },
        Body::Retrieved {
            request: 79,
            session: None,
        },
    ];
    bodies.iter().map(|b| encode_session("shop", b)).collect()
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: make_seeds DIR");
    let out = Path::new(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden_member = vector(&root, "member_packet.hex");
    let golden_frame = vector(&root, "channel_data_frame.hex");
    let golden_body = golden_frame[11..golden_frame.len() - 7].to_vec();
    let v6 = packet(vec![0xfe; 16], SHUTDOWN_COMMAND, b"domain", b"app-payload").to_bytes();
    let signed = member_auth::sign(ring(), &packet(vec![127, 0, 0, 1], b"", b"d", b"x"), 77);
    let lorem = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |t: &'static str, v: Vec<u8>| seeds.push((t, v));

    add("member_packet", golden_member.clone());
    add("member_packet", v6.clone());
    add("member_packet", signed.clone());
    add("member_packet", golden_member[..40].to_vec());

    for max in [0u16, 3, 1024, 65535] {
        add("frame", cat(&[&max.to_be_bytes(), &golden_frame]));
    }
    add(
        "frame",
        cat(&[&[0, 3], b"junk", &ACK_FRAME, &NACK_FRAME[..9]]),
    );

    add("channel_data", golden_body.clone());
    add("channel_data", {
        let f = framed_cd(USE_ACK | SYNCHRONIZED_ACK, &v6, lorem);
        f[11..f.len() - 7].to_vec()
    });

    add("ack", cat(&[&[20], &ACK_FRAME, &NACK_FRAME, &ACK_FRAME]));
    add("ack", cat(&[&[3], &NACK_FRAME, &golden_frame[..30]]));

    for s in [
        "async",
        "use_ack,sync",
        "8",
        "0x100",
        " byte, multicast , secure,udp ",
        "asynchronous,synchronized_ack,byte_message,4294967295",
    ] {
        add("send_options", s.as_bytes().to_vec());
    }

    let aad = envelope::MessageAad::new(3, &[1; 16], &[2; 32]);
    let aad = aad.as_bytes();
    for payload in [&b""[..], b"hello", lorem] {
        let sealed = envelope::seal(ring(), 5, &aad[..aad.len().min(63)], payload);
        add(
            "envelope_open",
            cat(&[
                &[aad.len().min(63) as u8],
                &aad[..aad.len().min(63)],
                &sealed,
            ]),
        );
    }
    for (edits, payload) in [
        ([0u8; 13], &b"payload"[..]),
        ([1, 0, 0, 5, 0x80, 0, 0, 0, 0, 0, 0, 0, 0], lorem),
        ([3, 1, 0, 9, 0, 2, 0, 3, 7, 3, 0, 1, 0], b""),
    ] {
        add(
            "envelope_tamper",
            cat(&[
                &42i64.to_be_bytes(),
                &[4],
                b"aad!",
                &[0x81],
                &edits,
                payload,
            ]),
        );
    }

    add("member_auth_verify", signed.clone());
    add(
        "member_auth_verify",
        member_auth::sign(ring(), &packet(vec![0; 16], b"", b"", lorem), -1),
    );
    add("member_auth_verify", golden_member.clone());
    for (edits, host) in [
        ([0u8; 13], &[127u8, 0, 0, 1][..]),
        ([1, 0, 0, 40, 1, 0, 0, 0, 0, 0, 0, 0, 0], &[0; 16]),
    ] {
        let mut v = Vec::new();
        v.extend_from_slice(&5i64.to_be_bytes());
        v.extend_from_slice(&4000i32.to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v.push(host.len() as u8);
        v.extend_from_slice(host);
        v.extend_from_slice(&[0, 1, b'd']);
        v.extend_from_slice(&[9; 16]);
        v.extend_from_slice(&77i64.to_be_bytes());
        v.extend_from_slice(&edits);
        v.extend_from_slice(b"app");
        add("member_auth_tamper", v);
    }

    for (i, key) in TOMCAT_KEYS.iter().enumerate() {
        let c = TomcatCipher::from_hex(key).expect("key");
        add("tomcat_open", cat(&[&[i as u8], &c.seal(Some(9), lorem)]));
        add(
            "tomcat_open",
            cat(&[
                &[0x80 | i as u8],
                &9i64.to_be_bytes(),
                &[1, 0, 0, 30, 4],
                &[0; 8],
                b"hi",
            ]),
        );
    }

    for variant in 0..STACKS.len() as u8 {
        let mut v = vec![variant];
        v.extend(op_raw(0, 0, 1, &ordered(b"first", 1)));
        v.extend(op_raw(0, 0, 2, &ordered(b"third", 3)));
        v.extend(op_raw(1, 0, 3, &ordered(b"other member", 9)));
        v.extend(op_raw(2, 0, 4, &ordered(b"other domain", 1)));
        v.extend([1, 0, 200]);
        v.extend(op_raw(
            0,
            COMPRESSED_GZIP as u16,
            5,
            &ordered(b"not gzip", 4),
        ));
        v.extend(op_raw(
            0,
            COMPRESSED_LZ4 as u16,
            6,
            &ordered(&[5, 0, 0, 0, 0x50, 1, 2, 3, 4, 5], 5),
        ));
        // A fragment: body, index 0 of count 2, flag 1, under an order counter.
        let mut frag = b"frag-part".to_vec();
        frag.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 1]);
        frag.extend_from_slice(&6u32.to_be_bytes());
        v.extend(op_raw(0, 0, 7, &frag));
        v.extend([3, 0]);
        add("interceptor_stack", v);
        let mut v = vec![variant];
        v.extend(op_loop(0, 1, 0, [0; 13], lorem));
        v.extend(op_loop(
            8,
            2,
            1,
            [1, 0, 0, 3, 0x40, 0, 0, 0, 0, 0, 0, 0, 0],
            lorem,
        ));
        v.extend(op_loop(1, 3, 2 | (3 << 2), [0; 13], &lorem.repeat(3)));
        v.extend(op_loop(2, 4, 3 | (1 << 2), [0; 13], b"short"));
        v.extend([1, 0xff, 0xff]);
        add("interceptor_stack", v);
    }

    let sender = members()[0].encoded.to_vec();
    let stream = cat(&[
        &framed_cd(USE_ACK, &sender, &ordered(b"first", 1)),
        b"garbage FLT",
        &framed_cd(USE_ACK | SYNCHRONIZED_ACK, &sender, &ordered(b"second", 2)),
        &framed_cd(0, &golden_member, b"abc"),
        &framed_cd(USE_ACK, b"not a member", b"abc"),
        &golden_frame,
        &ACK_FRAME,
    ]);
    for (sel, chunk) in [(1u8, 127u8), (5, 7), (6, 0), (4, 50)] {
        add("receiver_stream", cat(&[&[sel, chunk], &stream]));
    }
    add(
        "receiver_stream",
        cat(&[&[0, 100], &golden_frame, &golden_frame]),
    );

    add(
        "config_json",
        stack_config_json(
            r#"{"name":"dispatch","options":{}},{"name":"failure_detector","options":{}}"#,
            &[],
        )
        .into_bytes(),
    );
    for (i, ics) in STACKS.iter().enumerate() {
        let secrets: &[&str] = if i % 2 == 0 {
            &["cluster-secret-0001"]
        } else {
            &[]
        };
        add("config_json", stack_config_json(ics, secrets).into_bytes());
    }
    add(
        "config_json",
        stack_config_json(
            r#"{"name":"dispatch","options":{"max_queue_bytes":4096}},{"name":"throughput","options":{"interval":10}},{"name":"domain_filter","options":{"domain":[1,2,3]}}"#,
            &["cluster-secret-0001", "cluster-secret-0002"],
        )
        .replace(r#""static_members":[]"#, r#""static_members":[{"host":"127.0.0.2","port":4000,"unique_id":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"domain":[]}],"max_members":16"#)
        .replace(r#""max_connections":64"#, r#""max_connections":64,"idle_timeout_ms":5000"#)
        .into_bytes(),
    );

    for m in session_messages() {
        add("session_message", m);
    }
    // Built messages (odd first byte): kind selector, manager name, then the body's fields.
    add(
        "session_message",
        cat(&[&[1, 4], &[4], b"shop", &[2], &[0; 40]]),
    );
    add(
        "session_message",
        cat(&[&[1, 5], &[4], b"shop", &[30], &[b'x'; 64]]),
    );

    let mut count = std::collections::BTreeMap::new();
    for (t, v) in seeds {
        let dir = out.join(t);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let n = count.entry(t).or_insert(0);
        std::fs::write(dir.join(format!("seed-{n:02}")), v).expect("write");
        *n += 1;
    }
    for (t, n) in count {
        println!("{t}: {n} seeds");
    }
}
