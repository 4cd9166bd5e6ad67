//! The membership packet (Tomcat `MemberImpl.getData` / `getMember`): what a member multicasts as its
//! heartbeat and what ChannelData carries as the sender address.
//!
//! Layout (big-endian): begin magic (10) | bodyLength int | alive long | port int | securePort int |
//! udpPort int | host length signed byte + host | command int+bytes | domain int+bytes |
//! uniqueId (16) | payload int+bytes | end magic (10). `bodyLength` = total − 24.

use super::{len_i32, Reader, WireError};

/// Begin magic: `TRIBES-B` followed by the version bytes `01 00`.
pub const MEMBER_BEGIN: [u8; 10] = *b"TRIBES-B\x01\x00";
/// End magic: `TRIBES-E` followed by the version bytes `01 00`.
pub const MEMBER_END: [u8; 10] = *b"TRIBES-E\x01\x00";
/// Command carried by the last heartbeat of a stopping member (receivers drop it at once).
pub const SHUTDOWN_COMMAND: &[u8] = b"BABY-ALEX";
/// Largest member packet, in bytes (Tomcat's `MAX_PACKET_SIZE`, one UDP datagram).
pub const MAX_MEMBER_PACKET: usize = 65535;
/// Bytes before the body: begin magic and the `bodyLength` int.
pub const MEMBER_HEADER_LEN: usize = 14;
/// Smallest valid packet: empty host, command, domain and payload.
pub const MEMBER_MIN_LEN: usize = MEMBER_HEADER_LEN + FIXED_BODY_LEN + MEMBER_END.len();
/// Largest host address length (a signed byte on the wire).
pub const MAX_HOST_LEN: usize = 127;

/// Body bytes that do not depend on field contents: alive 8, three ports 12, host length 1,
/// command/domain/payload lengths 12, uniqueId 16.
const FIXED_BODY_LEN: usize = 8 + 12 + 1 + 12 + 16;
/// Bytes of a packet outside `bodyLength`: header (14) and end magic (10).
const NON_BODY_LEN: usize = MEMBER_HEADER_LEN + 10;

/// A decoded (or to-be-encoded) member heartbeat packet; owns its variable-length fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MemberPacket {
    /// Milliseconds since the member's membership service started (refreshed on each heartbeat).
    pub alive_ms: i64,
    /// TCP replication port.
    pub port: i32,
    /// Secure port, −1 when none.
    pub secure_port: i32,
    /// UDP port, −1 when none.
    pub udp_port: i32,
    /// Raw host address: 4 bytes (IPv4) or 16 bytes (IPv6); at most 127 bytes.
    pub host: Vec<u8>,
    /// Command; empty except [`SHUTDOWN_COMMAND`] in a stopping member's last heartbeat.
    pub command: Vec<u8>,
    /// Cluster domain bytes (empty = no domain).
    pub domain: Vec<u8>,
    /// 16-byte member identity (with host and port).
    pub unique_id: [u8; 16],
    /// Application payload advertised with the heartbeat.
    pub payload: Vec<u8>,
}

/// True when `buf` starts with the member begin magic (cheap test to tell heartbeats from other
/// datagrams on the multicast socket).
#[must_use]
pub fn is_member_packet(buf: &[u8]) -> bool {
    buf.starts_with(&MEMBER_BEGIN)
}

impl MemberPacket {
    /// Exact number of bytes [`encode`](Self::encode) appends.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        NON_BODY_LEN
            + FIXED_BODY_LEN
            + self.host.len()
            + self.command.len()
            + self.domain.len()
            + self.payload.len()
    }

    /// True when this is a stopping member's farewell heartbeat (command == `BABY-ALEX`).
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.command == SHUTDOWN_COMMAND
    }

    /// Checks that the packet can be encoded: host at most 127 bytes and total at most
    /// [`MAX_MEMBER_PACKET`].
    pub fn validate(&self) -> Result<(), WireError> {
        if self.host.len() > MAX_HOST_LEN {
            return Err(WireError::Invalid("member host longer than 127 bytes"));
        }
        let len = self.encoded_len();
        if len > MAX_MEMBER_PACKET {
            return Err(WireError::TooLarge {
                len,
                max: MAX_MEMBER_PACKET,
            });
        }
        Ok(())
    }

    /// Appends the packet to `out` after [`validate`](Self::validate); on error nothing is written.
    pub fn try_encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.validate()?;
        self.encode(out);
        Ok(())
    }

    /// Appends the packet to `out` (capacity reserved once).
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails (host > 127 bytes or packet > 65535 bytes); use
    /// [`try_encode`](Self::try_encode) for packets built from untrusted input.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Err(e) = self.validate() {
            panic!("cannot encode member packet: {e}");
        }
        let total = self.encoded_len();
        out.reserve(total);
        out.extend_from_slice(&MEMBER_BEGIN);
        out.extend_from_slice(&len_i32(total - NON_BODY_LEN, "member body"));
        out.extend_from_slice(&self.alive_ms.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.secure_port.to_be_bytes());
        out.extend_from_slice(&self.udp_port.to_be_bytes());
        // validate() bounded the host length to 127, so it fits the signed byte.
        out.push(self.host.len() as u8);
        out.extend_from_slice(&self.host);
        out.extend_from_slice(&len_i32(self.command.len(), "member command"));
        out.extend_from_slice(&self.command);
        out.extend_from_slice(&len_i32(self.domain.len(), "member domain"));
        out.extend_from_slice(&self.domain);
        out.extend_from_slice(&self.unique_id);
        out.extend_from_slice(&len_i32(self.payload.len(), "member payload"));
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&MEMBER_END);
    }

    /// Convenience: the encoded packet as a new vector. Panics like [`encode`](Self::encode).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes the packet at the start of `buf`, using exactly `bodyLength + 24` bytes (trailing
    /// bytes are ignored).
    ///
    /// Errors: `Incomplete` when `buf` is a (valid-looking) prefix too short for the header or the
    /// declared length; `TooLarge` when the declared length exceeds 65535; `Invalid` for a wrong
    /// magic, a negative/too-small length, a negative host length, an inner length that overruns
    /// the body, or fields that do not fill the body exactly. Lengths are checked before allocation.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let begin_avail = buf.len().min(MEMBER_BEGIN.len());
        if buf.get(..begin_avail) != MEMBER_BEGIN.get(..begin_avail) {
            return Err(WireError::Invalid("member packet: bad begin magic"));
        }
        if buf.len() < MEMBER_HEADER_LEN {
            return Err(WireError::Incomplete {
                needed: MEMBER_HEADER_LEN,
            });
        }
        let mut hdr = Reader::new(buf, WireError::Incomplete { needed: 14 });
        hdr.take(MEMBER_BEGIN.len())?;
        let body_len = usize::try_from(hdr.i32()?)
            .map_err(|_| WireError::Invalid("member packet: negative bodyLength"))?;
        let total = body_len.saturating_add(NON_BODY_LEN);
        if total > MAX_MEMBER_PACKET {
            return Err(WireError::TooLarge {
                len: total,
                max: MAX_MEMBER_PACKET,
            });
        }
        if total < MEMBER_MIN_LEN {
            return Err(WireError::Invalid("member packet: bodyLength too small"));
        }
        if buf.len() < total {
            return Err(WireError::Incomplete { needed: total });
        }
        let body_end = MEMBER_HEADER_LEN + body_len;
        let (Some(body), Some(end)) = (
            buf.get(MEMBER_HEADER_LEN..body_end),
            buf.get(body_end..total),
        ) else {
            return Err(WireError::Incomplete { needed: total });
        };
        if end != MEMBER_END {
            return Err(WireError::Invalid("member packet: bad end magic"));
        }

        const OVERRUN: &str = "member packet: field overruns bodyLength";
        let mut r = Reader::new(body, WireError::Invalid(OVERRUN));
        let alive_ms = r.i64()?;
        let port = r.i32()?;
        let secure_port = r.i32()?;
        let udp_port = r.i32()?;
        let host_len = usize::try_from(r.i8()?)
            .map_err(|_| WireError::Invalid("member packet: negative host length"))?;
        let host = r.take(host_len)?;
        let command = r.len_prefixed("member packet: negative command length", OVERRUN)?;
        let domain = r.len_prefixed("member packet: negative domain length", OVERRUN)?;
        let unique_id = r.array::<16>()?;
        let payload = r.len_prefixed("member packet: negative payload length", OVERRUN)?;
        if r.remaining() != 0 {
            return Err(WireError::Invalid(
                "member packet: fields do not fill bodyLength",
            ));
        }
        Ok(MemberPacket {
            alive_ms,
            port,
            secure_port,
            udp_port,
            host: host.to_vec(),
            command: command.to_vec(),
            domain: domain.to_vec(),
            unique_id,
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTOR: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/member_packet.hex"
    ));

    /// The member of the golden vector (tests/vectors/README.md).
    pub(crate) fn golden_member() -> MemberPacket {
        MemberPacket {
            alive_ms: 0x1234,
            port: 4000,
            secure_port: -1,
            udp_port: -1,
            host: vec![10, 0, 0, 5],
            command: vec![],
            domain: b"d".to_vec(),
            unique_id: std::array::from_fn(|i| i as u8),
            payload: vec![],
        }
    }

    fn golden_bytes() -> Vec<u8> {
        hex::decode(VECTOR.trim()).unwrap()
    }

    #[test]
    fn golden_encode() {
        let m = golden_member();
        assert_eq!(m.encoded_len(), 78);
        assert_eq!(m.to_bytes(), golden_bytes());
    }

    #[test]
    fn golden_decode() {
        let bytes = golden_bytes();
        assert_eq!(bytes.len(), 78);
        assert!(is_member_packet(&bytes));
        let m = MemberPacket::decode(&bytes).unwrap();
        assert_eq!(m.alive_ms, 0x1234);
        assert_eq!(m.port, 4000);
        assert_eq!(m.secure_port, -1);
        assert_eq!(m.udp_port, -1);
        assert_eq!(m.host, [10, 0, 0, 5]);
        assert!(m.command.is_empty());
        assert_eq!(m.domain, b"d");
        assert_eq!(m.unique_id, std::array::from_fn::<u8, 16, _>(|i| i as u8));
        assert!(m.payload.is_empty());
        assert!(!m.is_shutdown());
        assert_eq!(m, golden_member());
    }

    #[test]
    fn golden_body_length_is_54() {
        let bytes = golden_bytes();
        assert_eq!(&bytes[10..14], &[0, 0, 0, 0x36]);
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut bytes = golden_bytes();
        bytes.extend_from_slice(b"garbage");
        assert_eq!(MemberPacket::decode(&bytes).unwrap(), golden_member());
    }

    #[test]
    fn minimum_packet() {
        let m = MemberPacket::default();
        let b = m.to_bytes();
        assert_eq!(b.len(), MEMBER_MIN_LEN);
        assert_eq!(MEMBER_MIN_LEN, 73);
        assert_eq!(MemberPacket::decode(&b).unwrap(), m);
    }

    #[test]
    fn shutdown_command() {
        let m = MemberPacket {
            command: SHUTDOWN_COMMAND.to_vec(),
            ..golden_member()
        };
        assert!(m.is_shutdown());
        assert_eq!(SHUTDOWN_COMMAND, hex::decode("424142592d414c4558").unwrap());
        let d = MemberPacket::decode(&m.to_bytes()).unwrap();
        assert!(d.is_shutdown());
    }

    #[test]
    fn rejects_bad_begin_magic() {
        let mut b = golden_bytes();
        b[0] = b'X';
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid(_))
        ));
        assert!(!is_member_packet(&b));
        assert!(matches!(
            MemberPacket::decode(b"XY"),
            Err(WireError::Invalid(_))
        ));
        assert_eq!(
            MemberPacket::decode(b""),
            Err(WireError::Incomplete { needed: 14 })
        );
    }

    #[test]
    fn rejects_bad_end_magic() {
        let mut b = golden_bytes();
        let n = b.len();
        b[n - 1] ^= 1;
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid("member packet: bad end magic"))
        );
    }

    #[test]
    fn rejects_negative_and_small_and_huge_body_length() {
        let mut b = golden_bytes();
        b[10..14].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid("member packet: negative bodyLength"))
        );
        b[10..14].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid("member packet: bodyLength too small"))
        );
        b[10..14].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::TooLarge { max: 65535, .. })
        ));
        b[10..14].copy_from_slice(&(65535 - 24 + 1i32).to_be_bytes());
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::TooLarge { len: 65536, .. })
        ));
        b[10..14].copy_from_slice(&55i32.to_be_bytes());
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Incomplete { needed: 79 })
        );
    }

    #[test]
    fn rejects_negative_host_length() {
        let mut b = golden_bytes();
        b[34] = 0x80;
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid("member packet: negative host length"))
        );
    }

    #[test]
    fn rejects_inner_length_overruns_and_negatives() {
        // Command length at offset 39 (after 4-byte host).
        let mut b = golden_bytes();
        b[39..43].copy_from_slice(&1000i32.to_be_bytes());
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid(
                "member packet: field overruns bodyLength"
            ))
        );
        b[39..43].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid(_))
        ));
        b[39..43].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid("member packet: negative command length"))
        );
        // Host length larger than the body.
        let mut b = golden_bytes();
        b[34] = 127;
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid(_))
        ));
        // Domain length 0 instead of 1 leaves one byte unread.
        let mut b = golden_bytes();
        b[43..47].copy_from_slice(&0i32.to_be_bytes());
        assert!(matches!(
            MemberPacket::decode(&b),
            Err(WireError::Invalid(_))
        ));
    }

    #[test]
    fn validate_limits() {
        let mut m = golden_member();
        m.host = vec![1; 127];
        assert!(m.validate().is_ok());
        assert_eq!(MemberPacket::decode(&m.to_bytes()).unwrap(), m);
        m.host = vec![1; 128];
        assert!(matches!(m.validate(), Err(WireError::Invalid(_))));
        let mut out = vec![];
        assert!(m.try_encode(&mut out).is_err());
        assert!(out.is_empty());
        let mut m = golden_member();
        m.payload = vec![0; MAX_MEMBER_PACKET - 78 + 1];
        assert!(matches!(m.validate(), Err(WireError::TooLarge { .. })));
        m.payload.pop();
        assert_eq!(m.encoded_len(), MAX_MEMBER_PACKET);
        let b = m.to_bytes();
        assert_eq!(b.len(), MAX_MEMBER_PACKET);
        assert_eq!(MemberPacket::decode(&b).unwrap(), m);
    }

    #[test]
    #[should_panic(expected = "cannot encode member packet")]
    fn encode_panics_on_invalid() {
        let m = MemberPacket {
            host: vec![0; 200],
            ..Default::default()
        };
        let _ = m.to_bytes();
    }

    pub(crate) fn arb_member() -> impl Strategy<Value = MemberPacket> {
        (
            any::<i64>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            prop::collection::vec(any::<u8>(), 0..=127),
            prop::collection::vec(any::<u8>(), 0..32),
            prop::collection::vec(any::<u8>(), 0..32),
            any::<[u8; 16]>(),
            prop::collection::vec(any::<u8>(), 0..256),
        )
            .prop_map(
                |(
                    alive_ms,
                    port,
                    secure_port,
                    udp_port,
                    host,
                    command,
                    domain,
                    unique_id,
                    payload,
                )| {
                    MemberPacket {
                        alive_ms,
                        port,
                        secure_port,
                        udp_port,
                        host,
                        command,
                        domain,
                        unique_id,
                        payload,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip(m in arb_member()) {
            let b = m.to_bytes();
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert!(is_member_packet(&b));
            prop_assert_eq!(MemberPacket::decode(&b)?, m);
        }

        #[test]
        fn every_truncation_errors(m in arb_member()) {
            let b = m.to_bytes();
            for cut in 0..b.len() {
                match MemberPacket::decode(&b[..cut]) {
                    Err(WireError::Incomplete { needed }) => prop_assert!(needed > cut),
                    Err(WireError::Invalid(_)) => {}
                    other => prop_assert!(false, "cut {} gave {:?}", cut, other),
                }
            }
        }

        #[test]
        fn flipped_end_magic_is_invalid(m in arb_member(), idx in 0usize..10, bit in 0u8..8) {
            let mut b = m.to_bytes();
            let n = b.len();
            b[n - 10 + idx] ^= 1 << bit;
            prop_assert_eq!(
                MemberPacket::decode(&b),
                Err(WireError::Invalid("member packet: bad end magic"))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = MemberPacket::decode(&b);
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..200),
            lie in any::<i32>(),
            use_lie in any::<bool>(),
        ) {
            // Well-formed header and end magic around a random body: exercises the inner parser.
            let mut b = MEMBER_BEGIN.to_vec();
            let len = if use_lie { lie } else { body.len() as i32 };
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&body);
            b.extend_from_slice(&MEMBER_END);
            let _ = MemberPacket::decode(&b);
        }

        #[test]
        fn single_byte_corruption_never_panics(m in arb_member(), pos in any::<prop::sample::Index>(), v in any::<u8>()) {
            let mut b = m.to_bytes();
            let i = pos.index(b.len());
            b[i] = v;
            if let Ok(d) = MemberPacket::decode(&b) {
                // Whatever decodes must re-encode to a valid packet.
                prop_assert!(d.validate().is_ok());
            }
        }
    }
}
