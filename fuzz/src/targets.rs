//! Fuzz target bodies: one function per decoder or receive path, taking arbitrary bytes.
//!
//! Shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, through the `tribes_fuzz` lib)
//! and by the corpus replay test (`tests/fuzz_corpus.rs`, through `#[path]`), so both run exactly
//! the same code. A function panics only when the core panics or an invariant checked here is
//! broken (round trips, bounded buffers, tampered data refused); decode errors are the expected
//! outcome for most inputs. Only `tribes` and `std` are used, so the root crate's tests can
//! compile this file without extra dependencies.
//!
//! Structured targets read their input with [`Input`], which never fails: past the end every
//! number is 0 and every byte string is empty.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tribes::channel::interceptors::{InMessage, OutMessage, Stack, StackContext};
use tribes::config::CoreConfig;
use tribes::member::Member;
use tribes::security::tomcat::TomcatCipher;
use tribes::security::{envelope, member_auth, KeyRing};
use tribes::session::message::{
    self as session_msg, Action, Body, Delta, MemberId, Message, MAX_NAME,
};
use tribes::session::table::{Slot, Stamp, Stamped, WireSession};
use tribes::stats::Stats;
use tribes::wire::ack::{ack_kind, ACK_FRAME, NACK_FRAME};
use tribes::wire::channel_data::ChannelDataRef;
use tribes::wire::frame::{
    check_frame, encode_frame, find_frame_start, FrameCheck, FRAME_HEADER_LEN, FRAME_OVERHEAD,
    FRAME_START,
};
use tribes::wire::member::{is_member_packet, MemberPacket, MAX_MEMBER_PACKET};
use tribes::wire::options::{
    parse_send_options, send_options_to_string, SYNCHRONIZED_ACK, USE_ACK,
};
use tribes::wire::WireError;

/// A target body: drives one decoder with arbitrary bytes.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and of its corpus folder
/// (`tests/vectors/fuzz/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("member_packet", member_packet),
    ("frame", frame),
    ("channel_data", channel_data),
    ("ack", ack),
    ("send_options", send_options),
    ("envelope_open", envelope_open),
    ("envelope_tamper", envelope_tamper),
    ("member_auth_verify", member_auth_verify),
    ("member_auth_tamper", member_auth_tamper),
    ("tomcat_open", tomcat_open),
    ("interceptor_stack", interceptor_stack),
    ("receiver_stream", receiver_stream),
    ("config_json", config_json),
    ("session_message", session_message),
];

// ---- input reader -----------------------------------------------------------------------------

/// A cursor over the fuzzer's bytes that never fails (zeros and empty slices past the end).
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.array())
    }

    /// A big-endian i64.
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }

    /// A byte string whose length is the next byte masked with `mask`.
    pub fn short_bytes(&mut self, mask: u8) -> &'a [u8] {
        let n = usize::from(self.u8() & mask);
        self.bytes(n)
    }

    /// A byte string whose length is the next u16 modulo `max + 1`.
    pub fn long_bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.bytes(n)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data;
        self.data = &[];
        r
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Up to three edits of `data`, each described by the input: (kind, position, value).
/// Kinds: 0 xor a byte (with a non-zero value), 1 truncate, 2 insert a byte, 3 remove a byte.
/// Positions stay inside `data` (an insert never appends).
pub fn tamper(data: &mut Vec<u8>, inp: &mut Input<'_>) {
    let edits = inp.u8() % 4;
    for _ in 0..edits {
        let kind = inp.u8() % 4;
        let pos = usize::from(inp.u16());
        let value = inp.u8();
        if data.is_empty() {
            return;
        }
        let at = pos % data.len();
        match kind {
            0 => data[at] ^= value.max(1),
            1 => data.truncate(at),
            2 => data.insert(at, value),
            _ => {
                data.remove(at);
            }
        }
    }
}

// ---- wire decoders ----------------------------------------------------------------------------

/// `MemberPacket::decode`, `is_member_packet` and `Member::decode`: whatever decodes re-encodes
/// to the same bytes, and both decoders agree.
pub fn member_packet(data: &[u8]) {
    let magic = is_member_packet(data);
    match MemberPacket::decode(data) {
        Ok(p) => {
            assert!(magic, "decoded a packet without the begin magic");
            p.validate().expect("a decoded packet must validate");
            let n = p.encoded_len();
            assert!(n <= data.len(), "decoded more bytes than given");
            assert_eq!(
                p.to_bytes(),
                &data[..n],
                "re-encoding differs from the input"
            );
            let m = Member::decode(data).expect("Member::decode disagrees with MemberPacket");
            assert_eq!(m.packet, p);
            assert_eq!(&m.encoded[..], &data[..n]);
            let _ = (
                m.name(),
                m.socket_addr(),
                m.key(),
                m.is_shutdown(),
                m.tcp_port(),
            );
            let again = Member::from_packet(p);
            assert!(again.same_as(&m));
            assert_eq!(again.encoded, m.encoded);
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(Member::decode(data).is_err());
        }
    }
}

/// `check_frame` (with a max body from the input, and without limit) and `find_frame_start`.
pub fn frame(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = usize::from(inp.u16());
    let buf = inp.rest();
    for limit in [max, usize::MAX] {
        match check_frame(buf, limit) {
            Ok(FrameCheck::Complete { body, total }) => {
                assert_eq!(body.start, FRAME_HEADER_LEN);
                assert!(body.end <= total && total <= buf.len());
                assert!(body.len() <= limit);
                assert_eq!(total, body.len() + FRAME_OVERHEAD);
                let mut again = Vec::new();
                encode_frame(&buf[body], &mut again);
                assert_eq!(again, &buf[..total], "re-framing differs");
            }
            Ok(FrameCheck::Incomplete) => {
                let head = &buf[..buf.len().min(FRAME_START.len())];
                assert!(
                    FRAME_START.starts_with(head),
                    "incomplete without a start magic"
                );
            }
            Err(WireError::TooLarge { len, max: m }) => assert!(len > limit && m == limit),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let full = buf
        .windows(FRAME_START.len())
        .position(|w| w == FRAME_START);
    match find_frame_start(buf) {
        Some(i) => {
            assert!(i < buf.len());
            let t = &buf[i..];
            assert!(t.starts_with(&FRAME_START) || FRAME_START.starts_with(t));
            if let Some(f) = full {
                assert_eq!(i, f, "skipped a full start magic");
            }
        }
        None => assert!(full.is_none(), "missed a full start magic"),
    }
}

/// `ChannelDataRef::decode` and `.sender()`: whatever decodes re-encodes to the same bytes.
pub fn channel_data(data: &[u8]) {
    match ChannelDataRef::decode(data) {
        Ok(cd) => {
            assert_eq!(cd.encoded_len(), data.len());
            let mut again = Vec::new();
            cd.encode(&mut again);
            assert_eq!(again, data, "re-encoding differs from the input");
            let mut framed = Vec::new();
            cd.encode_framed(&mut framed);
            match check_frame(&framed, data.len()) {
                Ok(FrameCheck::Complete { body, total }) => {
                    assert_eq!(total, framed.len());
                    assert_eq!(&framed[body], data);
                }
                other => panic!("own frame does not check: {other:?}"),
            }
            if let Ok(p) = cd.sender() {
                p.validate().expect("a decoded sender must validate");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The sender's ACK reader (`transport::sender::read_acks`): frames of at most 1024 bytes read in
/// chunks, each body classified by `ack_kind`; the buffer never holds more than one frame.
pub fn ack(data: &[u8]) {
    let mut inp = Input::new(data);
    let chunk = usize::from(inp.u8() % 64) + 1;
    let stream = inp.rest();
    let _ = ack_kind(stream);
    let mut buf: Vec<u8> = Vec::new();
    let mut answers = 0usize;
    'conn: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match check_frame(&buf, 1024) {
                Ok(FrameCheck::Complete { body, total }) => {
                    if ack_kind(&buf[body.clone()]).is_some() {
                        assert_eq!(body.len(), 3);
                        let frame = &buf[..total];
                        assert!(frame == ACK_FRAME || frame == NACK_FRAME);
                        answers += 1;
                    }
                    buf.drain(..total);
                }
                Ok(FrameCheck::Incomplete) => break,
                Err(_) => break 'conn,
            }
        }
        assert!(
            buf.len() < 1024 + FRAME_OVERHEAD,
            "ack buffer grew past one frame"
        );
    }
    assert!(answers <= stream.len() / ACK_FRAME.len());
}

/// `parse_send_options` on arbitrary UTF-8: what parses renders and parses back to the same bits
/// (up to `sync` implying `use_ack`).
pub fn send_options(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match parse_send_options(&s) {
        Ok(bits) => {
            let text = send_options_to_string(bits);
            let want = if bits & SYNCHRONIZED_ACK != 0 {
                bits | USE_ACK
            } else {
                bits
            };
            assert_eq!(parse_send_options(&text), Ok(want), "{text:?} from {s:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---- security ---------------------------------------------------------------------------------

/// The cluster secret the security targets send with.
pub const SECRET: &str = "fuzz-cluster-secret-1";
/// An older secret the security targets still accept.
pub const OLD_SECRET: &str = "fuzz-cluster-secret-0";
/// The Tomcat keys (hex) of [`tomcat_open`], by the selector's bits 0-1.
pub const TOMCAT_KEYS: [&str; 3] = [
    "00112233445566778899aabbccddeeff",
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
];

/// The ring every security target uses: sends with [`SECRET`], also accepts [`OLD_SECRET`].
pub fn ring() -> &'static KeyRing {
    static R: OnceLock<KeyRing> = OnceLock::new();
    R.get_or_init(|| KeyRing::new(&[SECRET, OLD_SECRET]).expect("ring"))
}

/// A ring that still accepts [`SECRET`] after a rotation.
fn rotated_ring() -> &'static KeyRing {
    static R: OnceLock<KeyRing> = OnceLock::new();
    R.get_or_init(|| KeyRing::new(&["fuzz-cluster-secret-2", SECRET]).expect("ring"))
}

/// A ring that knows none of the keys above.
fn foreign_ring() -> &'static KeyRing {
    static R: OnceLock<KeyRing> = OnceLock::new();
    R.get_or_init(|| KeyRing::new(&["some-other-cluster-9"]).expect("ring"))
}

/// `envelope::open` on arbitrary bytes, with an additional-data string from the input.
pub fn envelope_open(data: &[u8]) {
    let mut inp = Input::new(data);
    let aad = inp.short_bytes(63);
    let env = inp.rest();
    match envelope::open(ring(), aad, env) {
        Ok(o) => assert_eq!(o.payload.len() + envelope::MIN_LEN, env.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Seals the input's payload (valid envelope), checks it opens (also with a rotated ring, and
/// not with a foreign one), then tampers with it as the input says: any change is refused.
pub fn envelope_tamper(data: &[u8]) {
    let mut inp = Input::new(data);
    let ts = inp.i64();
    let aad = inp.short_bytes(63).to_vec();
    let aad_flip = inp.u8();
    let mut edits = Input::new(inp.bytes(13));
    let payload = inp.rest();
    let sealed = envelope::seal(ring(), ts, &aad, payload);
    let o = envelope::open(ring(), &aad, &sealed).expect("own envelope must open");
    assert_eq!((o.timestamp_ms, &o.payload[..]), (ts, payload));
    assert!(envelope::open(rotated_ring(), &aad, &sealed).is_ok());
    assert!(envelope::open(foreign_ring(), &aad, &sealed).is_err());
    let mut t = sealed.clone();
    tamper(&mut t, &mut edits);
    let mut aad2 = aad.clone();
    if aad_flip & 0x80 != 0 && !aad2.is_empty() {
        let i = usize::from(aad_flip & 0x3f) % aad2.len();
        aad2[i] ^= 1;
    }
    let res = envelope::open(ring(), &aad2, &t);
    if t == sealed && aad2 == aad {
        assert!(res.is_ok());
    } else {
        assert!(res.is_err(), "tampered envelope accepted");
    }
}

/// `member_auth::verify` on arbitrary bytes.
pub fn member_auth_verify(data: &[u8]) {
    match member_auth::verify(ring(), data) {
        Ok((p, _)) => p.validate().expect("a verified packet must validate"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Signs a member packet built from the input (valid trailer), checks it verifies, then tampers
/// with it: a change inside the packet is refused (bytes after the packet are ignored).
pub fn member_auth_tamper(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut p = MemberPacket {
        alive_ms: inp.i64(),
        port: inp.i32(),
        secure_port: inp.i32(),
        udp_port: inp.i32(),
        host: inp.short_bytes(127).to_vec(),
        command: inp.short_bytes(31).to_vec(),
        domain: inp.short_bytes(31).to_vec(),
        unique_id: inp.array(),
        payload: Vec::new(),
    };
    let ts = inp.i64();
    let mut edits = Input::new(inp.bytes(13));
    let room = MAX_MEMBER_PACKET - p.encoded_len() - member_auth::TRAILER_LEN;
    let payload = inp.rest();
    p.payload = payload[..payload.len().min(room)].to_vec();
    let signed = member_auth::sign(ring(), &p, ts);
    assert_eq!(member_auth::verify(ring(), &signed), Ok((p.clone(), ts)));
    assert!(member_auth::verify(rotated_ring(), &signed).is_ok());
    assert!(member_auth::verify(foreign_ring(), &signed).is_err());
    let mut t = signed.clone();
    tamper(&mut t, &mut edits);
    let res = member_auth::verify(ring(), &t);
    if t.starts_with(&signed) {
        assert_eq!(res, Ok((p, ts)));
    } else {
        assert!(res.is_err(), "tampered member packet accepted");
    }
}

/// The three Tomcat ciphers (AES-128/192/256-GCM) with fixed keys.
fn tomcat_ciphers() -> &'static [TomcatCipher; 3] {
    static C: OnceLock<[TomcatCipher; 3]> = OnceLock::new();
    C.get_or_init(|| TOMCAT_KEYS.map(|h| TomcatCipher::from_hex(h).expect("key")))
}

/// `TomcatCipher::open`: the first byte picks the key (bits 0-1) and the mode (bit 7): raw bytes,
/// or a message sealed from the input's payload and then tampered with (any change refused).
pub fn tomcat_open(data: &[u8]) {
    let mut inp = Input::new(data);
    let sel = inp.u8();
    let ciphers = tomcat_ciphers();
    let c = &ciphers[usize::from(sel & 3) % 3];
    let other = &ciphers[(usize::from(sel & 3) + 1) % 3];
    let timestamped = sel & 0x40 == 0;
    let overhead = if timestamped { 36 } else { 28 };
    if sel & 0x80 == 0 {
        let msg = inp.rest();
        match c.open(msg, timestamped) {
            Ok((_, _, payload)) => assert_eq!(payload.len() + overhead, msg.len()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        return;
    }
    let ts = inp.i64();
    let mut edits = Input::new(inp.bytes(13));
    let payload = inp.rest();
    let ts = timestamped.then_some(ts);
    let sealed = c.seal(ts, payload);
    let (_, got_ts, got) = c.open(&sealed, timestamped).expect("own message must open");
    assert_eq!((got_ts, &got[..]), (ts, payload));
    assert!(other.open(&sealed, timestamped).is_err());
    let mut t = sealed.clone();
    tamper(&mut t, &mut edits);
    let res = c.open(&t, timestamped);
    if t == sealed {
        assert!(res.is_ok());
    } else {
        assert!(res.is_err(), "tampered Tomcat message accepted");
    }
}

// ---- interceptor stack ------------------------------------------------------------------------

/// `receiver.max_frame` of the fuzzed stacks: reassembly and inflation stop at 64 × this.
pub const STACK_MAX_FRAME: usize = 4096;
/// The domain of the stacks' domain filter and of senders 0 and 1.
pub const DOMAIN: &str = "fuzz";

/// The stacks under test (first = closest to the application; inbound runs last to first).
/// gzip sits above fragmentation (one compressor per message: flate2's deflate state is a few
/// hundred KiB, allocated per message, and would dominate the run time if every 16-byte
/// fragment were compressed); lz4 sits below it in stack 1, so fragments are compressed one by
/// one there.
pub const STACKS: [&str; 6] = [
    r#"{"name":"order","options":{"expire_ms":100}},
       {"name":"compression","options":{"codec":"gzip"}},
       {"name":"fragmentation","options":{"max_size":16,"expire_ms":200,"max_in_flight":8}},
       {"name":"domain_filter","options":{"domain":"fuzz"}}"#,
    r#"{"name":"order","options":{"expire_ms":100,"max_queue":16}},
       {"name":"fragmentation","options":{"max_size":16,"expire_ms":200,"max_in_flight":8}},
       {"name":"compression","options":{"codec":"lz4"}},
       {"name":"domain_filter","options":{"domain":"fuzz"}}"#,
    r#"{"name":"domain_filter","options":{"domain":"fuzz"}},
       {"name":"compression","options":{"codec":"lz4","min_size":8}},
       {"name":"fragmentation","options":{"max_size":32,"max_in_flight":4}},
       {"name":"order","options":{"max_queue":8}}"#,
    r#"{"name":"throughput","options":{"interval":1}},
       {"name":"compression","options":{"codec":"gzip","min_size":4}},
       {"name":"order","options":{"expire_ms":50}},
       {"name":"fragmentation","options":{"max_size":16}},
       {"name":"domain_filter","options":{"domain":"fuzz"}}"#,
    r#"{"name":"order","options":{}},
       {"name":"compression","options":{"codec":"gzip"}},
       {"name":"fragmentation","options":{"max_size":16}},
       {"name":"domain_filter","options":{"domain":"fuzz"}}"#,
    r#"{"name":"order","options":{}},
       {"name":"fragmentation","options":{"max_size":24}},
       {"name":"compression","options":{"codec":"lz4"}},
       {"name":"tomcat_encrypt","options":{"key":"00112233445566778899aabbccddeeff"}}"#,
];

/// A core configuration around an interceptor list (shape of `tests/channel.rs`).
pub fn stack_config_json(interceptors: &str, secrets: &[&str]) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"name":"fuzz","send_options":2,"insecure":false,"worker_threads":2,"event_queue_size":1024,
        "membership":{{"address":"228.0.0.4","port":45564,"frequency_ms":50,"drop_time_ms":500,
          "bind":"127.0.0.1","ttl":0,"domain":[],"payload":[],"local_loopback_disabled":false,"static_members":[]}},
        "receiver":{{"address":"127.0.0.1","port":0,"auto_bind":1,"max_frame":{STACK_MAX_FRAME},"max_connections":64}},
        "sender":{{"timeout_ms":3000,"connect_timeout_ms":1000,"max_retries":1,"keepalive":true}},
        "interceptors":[{interceptors}],
        "security":{{"secrets":[{}],"replay_window_ms":10000,"replay_cache":64}}}}"#,
        secrets.join(",")
    )
}

/// The parsed configurations of [`STACKS`]; variant 4 also has a cluster secret (encrypt stage).
fn stack_configs() -> &'static [CoreConfig] {
    static C: OnceLock<Vec<CoreConfig>> = OnceLock::new();
    C.get_or_init(|| {
        STACKS
            .iter()
            .enumerate()
            .map(|(i, ics)| {
                let secrets: &[&str] = if i == 4 { &[SECRET] } else { &[] };
                CoreConfig::from_json(&stack_config_json(ics, secrets)).expect("stack config")
            })
            .collect()
    })
}

/// Three senders: two in the stacks' domain (the first is also the local member), one outside.
pub fn members() -> &'static [Arc<Member>; 3] {
    static M: OnceLock<[Arc<Member>; 3]> = OnceLock::new();
    M.get_or_init(|| {
        let mk = |host: Vec<u8>, port: i32, id: u8, domain: &str| {
            Arc::new(Member::from_packet(MemberPacket {
                alive_ms: 1,
                port,
                secure_port: -1,
                udp_port: -1,
                host,
                command: Vec::new(),
                domain: domain.as_bytes().to_vec(),
                unique_id: [id; 16],
                payload: Vec::new(),
            }))
        };
        [
            mk(vec![127, 0, 0, 1], 4000, 1, DOMAIN),
            mk(vec![0; 16], 4001, 2, DOMAIN),
            mk(vec![10, 0, 0, 9], 4002, 3, "other"),
        ]
    })
}

fn build_stack(cfg: &CoreConfig, stats: &Arc<Stats>) -> Stack {
    let ctx = StackContext {
        local_address: members()[0].encoded.clone(),
        stats: stats.clone(),
    };
    match Stack::build(cfg, &ctx) {
        Ok(s) => s,
        Err(e) => panic!("stack does not build: {e}"),
    }
}

/// Every delivered message is bounded by the stack's limits (64 frames).
fn check_delivered(msgs: &[InMessage]) {
    for m in msgs {
        assert!(
            m.payload.len() <= 64 * STACK_MAX_FRAME,
            "delivered {} bytes, over the reassembly/inflation limit",
            m.payload.len()
        );
    }
}

/// The channel's inbound path through a whole interceptor stack (order, fragmentation with a small
/// `max_size`, gzip or lz4 compression, domain filter; one variant encrypted, one with Tomcat's
/// cipher). The first byte picks the stack; then up to 32 operations until the input ends:
/// 0 raw message from one of three senders, 1 tick (time moves forward), 2 a message run through
/// the stack's own outbound path, optionally tampered with, then inbound (at most 3 per input, for
/// speed; the first also goes through a fresh stack, where it must come out unchanged), 3 a
/// member leaves.
pub fn interceptor_stack(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = &stack_configs()[usize::from(inp.u8()) % STACKS.len()];
    let stats = Arc::new(Stats::default());
    let stack = build_stack(cfg, &stats);
    let members = members();
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    let mut ops = 0;
    let mut sends = 0;
    while !inp.is_empty() && ops < 32 {
        ops += 1;
        match inp.u8() % 4 {
            0 => {
                let sender = members[usize::from(inp.u8()) % 3].clone();
                let options = u32::from(inp.u16());
                let unique_id = [inp.u8(); 16];
                let payload = inp.long_bytes(4096).to_vec();
                let msg = InMessage {
                    options,
                    unique_id,
                    payload,
                    sender,
                };
                check_delivered(&stack.inbound(msg, &stats).0);
            }
            1 => {
                elapsed += Duration::from_millis(u64::from(inp.u16()) * 4);
                check_delivered(&stack.tick(start + elapsed, &stats));
            }
            2 if sends < 3 => {
                sends += 1;
                let options = u32::from(inp.u8());
                let unique_id = [inp.u8(); 16];
                let what = inp.u8();
                let mut edits = Input::new(inp.bytes(13));
                let payload = inp.long_bytes(512).to_vec();
                let out = OutMessage {
                    options,
                    unique_id,
                    payload: payload.clone(),
                    targets: vec![members[0].clone()],
                };
                if sends == 1 {
                    // The first such message, through a fresh stack, comes out whole and unchanged.
                    let fresh = build_stack(cfg, &stats);
                    let sent = fresh.outbound(out.clone()).expect("outbound");
                    let mut got = Vec::new();
                    for o in &sent {
                        got.extend(fresh.inbound(to_inbound(o, &members[0]), &stats).0);
                    }
                    assert_eq!(
                        got.len(),
                        1,
                        "{} messages delivered for one sent",
                        got.len()
                    );
                    assert_eq!(got[0].payload, payload, "round trip changed the payload");
                    assert_eq!(got[0].unique_id, unique_id);
                }
                // Then, possibly damaged, reordered or cut short, through the long-lived stack.
                let mut sent = stack.outbound(out).expect("outbound");
                if !sent.is_empty() {
                    let i = usize::from(what >> 2) % sent.len();
                    match what & 3 {
                        0 => {}
                        1 => tamper(&mut sent[i].payload, &mut edits),
                        2 => {
                            sent.swap(0, i);
                        }
                        _ => {
                            sent.truncate(i);
                        }
                    }
                }
                for o in &sent {
                    check_delivered(&stack.inbound(to_inbound(o, &members[0]), &stats).0);
                }
            }
            2 => {}
            _ => stack.member_gone(&members[usize::from(inp.u8()) % 3]),
        }
    }
    elapsed += Duration::from_secs(3600);
    check_delivered(&stack.tick(start + elapsed, &stats));
}

fn to_inbound(o: &OutMessage, sender: &Arc<Member>) -> InMessage {
    InMessage {
        options: o.options,
        unique_id: o.unique_id,
        payload: o.payload.clone(),
        sender: sender.clone(),
    }
}

// ---- receiver ---------------------------------------------------------------------------------

/// The receiver's stream loop (`transport::receiver::serve_connection` and `handle_frame`): bytes
/// arrive in chunks; frames are checked, channel data and the sender decoded (with the one-entry
/// sender cache), ACK/NACK queued as the options ask, bad frames skipped by resynchronising on the
/// next start magic, an oversized frame closes the connection. Bit 2 of the first byte also runs
/// each message up interceptor stack 0. The unconsumed buffer never exceeds one frame.
pub fn receiver_stream(data: &[u8]) {
    let mut inp = Input::new(data);
    let sel = inp.u8();
    let max_frame = [64, 1024, 4096, 1 << 20][usize::from(sel & 3)];
    let chunk = usize::from(inp.u8() % 128) + 1;
    let stats = Arc::new(Stats::default());
    let stack = (sel & 4 != 0).then(|| build_stack(&stack_configs()[0], &stats));
    let stream = inp.rest();
    let mut buf: Vec<u8> = Vec::new();
    let mut cache: Option<Arc<Member>> = None;
    let mut acks: Vec<u8> = Vec::new();
    'conn: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut start = 0usize;
        while start < buf.len() {
            match check_frame(&buf[start..], max_frame) {
                Ok(FrameCheck::Complete { body, total }) => {
                    let body = start + body.start..start + body.end;
                    start += total;
                    handle_frame(&buf[body], &mut cache, &mut acks, stack.as_ref(), &stats);
                }
                Ok(FrameCheck::Incomplete) => break,
                Err(WireError::TooLarge { .. }) => break 'conn,
                Err(_) => match find_frame_start(&buf[start + 1..]) {
                    Some(off) => start += 1 + off,
                    None => {
                        start = buf.len();
                        break;
                    }
                },
            }
        }
        buf.drain(..start);
        assert!(
            buf.len() < max_frame + FRAME_OVERHEAD,
            "receive buffer holds {} bytes with max_frame {max_frame}",
            buf.len()
        );
        acks.clear();
    }
    if let Some(stack) = stack {
        check_delivered(&stack.tick(Instant::now() + Duration::from_secs(3600), &stats));
    }
}

fn handle_frame(
    body: &[u8],
    cache: &mut Option<Arc<Member>>,
    acks: &mut Vec<u8>,
    stack: Option<&Stack>,
    stats: &Stats,
) {
    let Ok(cd) = ChannelDataRef::decode(body) else {
        return;
    };
    let use_ack = cd.options & USE_ACK != 0;
    let sync = use_ack && cd.options & SYNCHRONIZED_ACK != 0;
    let sender = match cache {
        Some(m) if &m.encoded[..] == cd.address => m.clone(),
        _ => match Member::decode(cd.address) {
            Ok(m) => {
                let m = Arc::new(m);
                *cache = Some(m.clone());
                m
            }
            Err(_) => {
                if use_ack {
                    acks.extend_from_slice(&NACK_FRAME);
                }
                return;
            }
        },
    };
    assert_eq!(
        Ok(&sender.packet),
        MemberPacket::decode(cd.address).as_ref(),
        "the sender cache returned another member"
    );
    if use_ack && !sync {
        acks.extend_from_slice(&ACK_FRAME);
    }
    if let Some(stack) = stack {
        let mut unique_id = [0u8; 16];
        let n = cd.unique_id.len().min(16);
        unique_id[..n].copy_from_slice(&cd.unique_id[..n]);
        let msg = InMessage {
            options: cd.options,
            unique_id,
            payload: cd.message.to_vec(),
            sender,
        };
        check_delivered(&stack.inbound(msg, stats).0);
    }
    if sync {
        acks.extend_from_slice(&ACK_FRAME);
    }
}

// ---- configuration ----------------------------------------------------------------------------

/// `CoreConfig::from_json` on arbitrary UTF-8; a configuration that parses must validate again,
/// and its interceptor stack is built and carries one message each way.
pub fn config_json(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let cfg = match CoreConfig::from_json(&s) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    cfg.validate()
        .expect("a parsed configuration validates again");
    let _ = format!("{cfg:?}");
    let stats = Arc::new(Stats::default());
    let ctx = StackContext {
        local_address: members()[0].encoded.clone(),
        stats: stats.clone(),
    };
    let Ok(stack) = Stack::build(&cfg, &ctx) else {
        return;
    };
    let out = OutMessage {
        options: cfg.send_options,
        unique_id: [7; 16],
        payload: b"fuzz message payload".to_vec(),
        targets: vec![members()[0].clone()],
    };
    if let Ok(sent) = stack.outbound(out) {
        for o in &sent {
            let _ = stack.inbound(to_inbound(o, &members()[0]), &stats);
        }
    }
    let _ = stack.tick(Instant::now() + Duration::from_secs(3600), &stats);
}

// ---- session messages -------------------------------------------------------------------------

/// `session::message::decode` on raw bytes: whatever decodes re-encodes to bytes that decode to
/// the same message, and encoding that message again gives the same bytes (a decoded message
/// has one encoding; the input itself may differ, with over-long varints).
///
/// An input whose first byte is odd also describes a message (read with [`Input`] from the
/// second byte: kind, manager name, body; see [`session_body`]) that is encoded, then must decode
/// to the same value: everything `encode` writes, `decode` reads back. (A well-formed message
/// starts with `T`, 0x54, which is even.)
pub fn session_message(data: &[u8]) {
    if let Ok(m) = session_msg::decode(data) {
        assert!(session_msg::is_session_message(data));
        check_session_round_trip(&m, "decoded");
    } else {
        let _ = session_msg::decode(data).map_err(|e| e.to_string());
    }
    if data.first().is_some_and(|b| b & 1 == 1) {
        let mut inp = Input::new(&data[1..]);
        let kind = inp.u8();
        // Names longer than MAX_NAME bytes are cut by `encode` (documented): keep within it.
        let manager = truncate_utf8(lossy(inp.short_bytes(0xff)), MAX_NAME);
        let body = session_body(kind, &mut inp);
        let m = Message { manager, body };
        check_session_round_trip(&m, "built");
    }
}

fn check_session_round_trip(m: &Message, what: &str) {
    let bytes = session_msg::encode(&m.manager, &m.body);
    assert!(session_msg::is_session_message(&bytes));
    match session_msg::decode(&bytes) {
        Ok(again) => {
            assert_eq!(
                &again, m,
                "{what} message: re-encoded, decodes to another value"
            );
            assert_eq!(
                session_msg::encode(&again.manager, &again.body),
                bytes,
                "{what} message: encoding is not deterministic"
            );
        }
        Err(e) => panic!(
            "{what} message {m:?}: its encoding ({} bytes) does not decode: {e}",
            bytes.len()
        ),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// A short text (at most 63 input bytes: within `MAX_TEXT` after lossy UTF-8).
fn session_text(inp: &mut Input<'_>) -> String {
    lossy(inp.short_bytes(0x3f))
}

fn opt_text(inp: &mut Input<'_>) -> Option<String> {
    (inp.u8() & 1 == 1).then(|| session_text(inp))
}

fn stamp(inp: &mut Input<'_>) -> Stamp {
    Stamp::new(inp.i64() as u64, inp.i64() as u64)
}

fn member_id(inp: &mut Input<'_>) -> MemberId {
    let mut m = [0u8; 16];
    let b = inp.bytes(16);
    m[..b.len()].copy_from_slice(b);
    m
}

fn wire_session(inp: &mut Input<'_>) -> WireSession {
    let id = session_text(inp);
    let created_ms = inp.i64();
    let last_accessed_ms = inp.i64();
    let max_inactive = Stamped {
        stamp: stamp(inp),
        value: inp.i32(),
    };
    let is_new = Stamped {
        stamp: stamp(inp),
        value: inp.u8() & 1 == 1,
    };
    let principal = Stamped {
        stamp: stamp(inp),
        value: opt_text(inp),
    };
    let auth_type = Stamped {
        stamp: stamp(inp),
        value: opt_text(inp),
    };
    let primary = member_id(inp);
    let backup = member_id(inp);
    let attrs = (0..inp.u8() % 4)
        .map(|_| {
            let name = session_text(inp);
            let stamp = stamp(inp);
            let value = (inp.u8() & 1 == 1).then(|| inp.short_bytes(0x3f).to_vec().into());
            (name, Slot { stamp, value })
        })
        .collect();
    WireSession {
        id,
        created_ms,
        last_accessed_ms,
        max_inactive,
        is_new,
        principal,
        auth_type,
        primary,
        backup,
        attrs,
    }
}

/// A message body read from the input: the kind (byte modulo 13, in `Body::kind` order), then its
/// fields; texts are short, lists hold 0-3 items.
pub fn session_body(kind: u8, inp: &mut Input<'_>) -> Body {
    match kind % 13 {
        0 => Body::Created {
            id: session_text(inp),
            created_ms: inp.i64(),
            max_inactive: inp.i32(),
        },
        1 => Body::Expired {
            id: session_text(inp),
        },
        2 => Body::Accessed {
            id: session_text(inp),
            last_accessed_ms: inp.i64(),
            seen_version: inp.i64() as u64,
        },
        3 => Body::GetAll {
            request: inp.i64() as u64,
        },
        4 => Body::AllData {
            request: inp.i64() as u64,
            sessions: (0..inp.u8() % 4).map(|_| wire_session(inp)).collect(),
        },
        5 => Body::Delta(Delta {
            id: session_text(inp),
            created_ms: inp.i64(),
            last_accessed_ms: inp.i64(),
            stamp: stamp(inp),
            actions: (0..inp.u8() % 4)
                .map(|_| match inp.u8() % 5 {
                    0 => Action::Attribute(
                        session_text(inp),
                        (inp.u8() & 1 == 1).then(|| inp.short_bytes(0x3f).to_vec().into()),
                    ),
                    1 => Action::Principal(opt_text(inp)),
                    2 => Action::IsNew(inp.u8() & 1 == 1),
                    3 => Action::MaxInactive(inp.i32()),
                    _ => Action::AuthType(opt_text(inp)),
                })
                .collect(),
        }),
        6 => Body::TransferComplete {
            request: inp.i64() as u64,
            count: inp.i64() as u64,
        },
        7 => Body::ChangeId {
            old: session_text(inp),
            new: session_text(inp),
        },
        8 => Body::NoManager {
            request: inp.i64() as u64,
        },
        9 => Body::Backup(wire_session(inp)),
        10 => Body::Proxy {
            id: session_text(inp),
            primary: member_id(inp),
            backup: member_id(inp),
        },
        11 => Body::Retrieve {
            request: inp.i64() as u64,
            id: session_text(inp),
        },
        _ => Body::Retrieved {
            request: inp.i64() as u64,
            session: (inp.u8() & 1 == 1).then(|| wire_session(inp)),
        },
    }
}
