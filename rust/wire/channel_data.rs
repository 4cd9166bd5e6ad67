//! ChannelData (Tomcat `ChannelData`), the body of every framed message:
//! options int | timestamp long | uniqueId int+bytes | address int+bytes | message int+bytes.
//! The address is the sender's full member packet.

use super::frame::{FRAME_END, FRAME_OVERHEAD, FRAME_START};
use super::member::MemberPacket;
use super::{len_i32, Reader, WireError};

/// Bytes of a ChannelData that do not depend on field contents (options, timestamp, three lengths).
pub const CHANNEL_DATA_FIXED_LEN: usize = 4 + 8 + 4 + 4 + 4;
/// Longest unique id accepted (Tomcat always sends 16 bytes).
pub const MAX_UNIQUE_ID_LEN: usize = 64;

/// A ChannelData decoded in place: the byte fields borrow from the frame body (zero-copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelDataRef<'a> {
    /// Send-option bits (see `wire::options`) plus interceptor bits.
    pub options: u32,
    /// Sender wall clock (ms since the epoch) at send time.
    pub timestamp: i64,
    /// Message id (16 random bytes in practice); ChannelData identity.
    pub unique_id: &'a [u8],
    /// The sender's member packet (decode with [`ChannelDataRef::sender`]).
    pub address: &'a [u8],
    /// The payload, possibly transformed by interceptors.
    pub message: &'a [u8],
}

/// Encoded size of a ChannelData with these field lengths (without framing).
#[must_use]
pub fn channel_data_len(unique_id_len: usize, address_len: usize, message_len: usize) -> usize {
    CHANNEL_DATA_FIXED_LEN + unique_id_len + address_len + message_len
}

/// Writes the fields (no reservation); callers size `out` first.
fn put_fields(
    options: u32,
    timestamp: i64,
    unique_id: &[u8],
    address: &[u8],
    message: &[u8],
    out: &mut Vec<u8>,
) {
    assert!(
        unique_id.len() <= MAX_UNIQUE_ID_LEN,
        "channel data unique id longer than {MAX_UNIQUE_ID_LEN} bytes"
    );
    out.extend_from_slice(&options.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&len_i32(unique_id.len(), "channel data unique id"));
    out.extend_from_slice(unique_id);
    out.extend_from_slice(&len_i32(address.len(), "channel data address"));
    out.extend_from_slice(address);
    out.extend_from_slice(&len_i32(message.len(), "channel data message"));
    out.extend_from_slice(message);
}

/// Appends an unframed ChannelData to `out` in one pass (capacity reserved once).
///
/// # Panics
/// If `unique_id` is longer than 64 bytes or the total exceeds `i32::MAX` bytes.
pub fn encode_channel_data(
    options: u32,
    timestamp: i64,
    unique_id: &[u8],
    address: &[u8],
    message: &[u8],
    out: &mut Vec<u8>,
) {
    let len = channel_data_len(unique_id.len(), address.len(), message.len());
    len_i32(len, "channel data");
    out.reserve(len);
    put_fields(options, timestamp, unique_id, address, message, out);
}

/// Appends a ChannelData wrapped in a frame to `out` in one pass (capacity reserved once, no
/// intermediate buffer): what a sender writes to the socket.
///
/// # Panics
/// Like [`encode_channel_data`].
pub fn encode_framed_channel_data(
    options: u32,
    timestamp: i64,
    unique_id: &[u8],
    address: &[u8],
    message: &[u8],
    out: &mut Vec<u8>,
) {
    encode_framed_channel_data_with(
        options,
        timestamp,
        unique_id,
        address,
        message.len(),
        |out| out.extend_from_slice(message),
        out,
    );
}

/// Like [`encode_framed_channel_data`], with the message written by `write_message`, which
/// appends `message_len` bytes to the buffer it gets (an interceptor sealing the payload straight
/// into the frame). The length fields are set from what it actually wrote.
///
/// # Panics
/// Like [`encode_channel_data`].
pub fn encode_framed_channel_data_with(
    options: u32,
    timestamp: i64,
    unique_id: &[u8],
    address: &[u8],
    message_len: usize,
    write_message: impl FnOnce(&mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    let len = channel_data_len(unique_id.len(), address.len(), message_len);
    len_i32(len, "channel data");
    out.reserve(len + FRAME_OVERHEAD);
    out.extend_from_slice(&FRAME_START);
    let frame_len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    put_fields(options, timestamp, unique_id, address, &[], out);
    let message_len_at = out.len() - 4;
    write_message(out);
    let written = out.len() - message_len_at - 4;
    out[message_len_at..message_len_at + 4]
        .copy_from_slice(&len_i32(written, "channel data message"));
    let body = out.len() - frame_len_at - 4;
    out[frame_len_at..frame_len_at + 4].copy_from_slice(&len_i32(body, "channel data"));
    out.extend_from_slice(&FRAME_END);
}

impl<'a> ChannelDataRef<'a> {
    /// Decodes a frame body without copying. Every length is checked against the remaining bytes
    /// (unique id 0..=64, no negatives); the fields must fill `body` exactly. Errors are `Invalid`.
    pub fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        const SHORT: &str = "channel data: truncated";
        let mut r = Reader::new(body, WireError::Invalid(SHORT));
        let options = u32::from_be_bytes(r.array()?);
        let timestamp = r.i64()?;
        let id_len = r.i32()?;
        let id_len = usize::try_from(id_len)
            .ok()
            .filter(|&n| n <= MAX_UNIQUE_ID_LEN)
            .ok_or(WireError::Invalid(
                "channel data: unique id length outside 0..=64",
            ))?;
        let unique_id = r.take(id_len)?;
        let address = r.len_prefixed(
            "channel data: negative address length",
            "channel data: address overruns body",
        )?;
        let message = r.len_prefixed(
            "channel data: negative message length",
            "channel data: message overruns body",
        )?;
        if r.remaining() != 0 {
            return Err(WireError::Invalid(
                "channel data: trailing bytes after message",
            ));
        }
        Ok(ChannelDataRef {
            options,
            timestamp,
            unique_id,
            address,
            message,
        })
    }

    /// Decodes the address field as the sender's member packet.
    pub fn sender(&self) -> Result<MemberPacket, WireError> {
        MemberPacket::decode(self.address)
    }

    /// Encoded size without framing.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        channel_data_len(self.unique_id.len(), self.address.len(), self.message.len())
    }

    /// Appends this ChannelData (unframed) to `out`; panics like [`encode_channel_data`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_channel_data(
            self.options,
            self.timestamp,
            self.unique_id,
            self.address,
            self.message,
            out,
        );
    }

    /// Appends this ChannelData inside a frame to `out`; panics like [`encode_channel_data`].
    pub fn encode_framed(&self, out: &mut Vec<u8>) {
        encode_framed_channel_data(
            self.options,
            self.timestamp,
            self.unique_id,
            self.address,
            self.message,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{check_frame, encode_frame, FrameCheck};
    use crate::wire::member::tests::{arb_member, golden_member};
    use proptest::prelude::*;

    const VECTOR: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/channel_data_frame.hex"
    ));

    fn golden_id() -> [u8; 16] {
        std::array::from_fn(|i| 0xa0 + i as u8)
    }

    fn golden_frame() -> Vec<u8> {
        hex::decode(VECTOR.trim()).unwrap()
    }

    #[test]
    fn golden_encode() {
        let member = golden_member().to_bytes();
        let mut out = Vec::new();
        encode_framed_channel_data(8, 1, &golden_id(), &member, b"abc", &mut out);
        assert_eq!(out.len(), 139);
        assert_eq!(out, golden_frame());
        assert_eq!(channel_data_len(16, 78, 3), 121);
        // Unframed + encode_frame gives the same bytes.
        let mut body = Vec::new();
        encode_channel_data(8, 1, &golden_id(), &member, b"abc", &mut body);
        assert_eq!(body.len(), 121);
        let mut framed = Vec::new();
        encode_frame(&body, &mut framed);
        assert_eq!(framed, out);
    }

    #[test]
    fn golden_decode() {
        let frame = golden_frame();
        let FrameCheck::Complete { body, total } = check_frame(&frame, 1 << 20).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(total, 139);
        assert_eq!(body, 11..132);
        let cd = ChannelDataRef::decode(&frame[body]).unwrap();
        assert_eq!(cd.options, 8);
        assert_eq!(cd.timestamp, 1);
        assert_eq!(cd.unique_id, golden_id());
        assert_eq!(cd.address.len(), 78);
        assert_eq!(cd.message, b"abc");
        assert_eq!(cd.sender().unwrap(), golden_member());
        assert_eq!(cd.encoded_len(), 121);
        let mut again = Vec::new();
        cd.encode_framed(&mut again);
        assert_eq!(again, frame);
    }

    #[test]
    fn zero_copy() {
        let frame = golden_frame();
        let cd = ChannelDataRef::decode(&frame[11..132]).unwrap();
        let range = frame.as_ptr_range();
        assert!(range.contains(&cd.message.as_ptr()));
        assert!(range.contains(&cd.address.as_ptr()));
    }

    fn golden_body() -> Vec<u8> {
        golden_frame()[11..132].to_vec()
    }

    #[test]
    fn rejects_bad_lengths() {
        // unique id length at offset 12.
        let mut b = golden_body();
        b[12..16].copy_from_slice(&65i32.to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid(
                "channel data: unique id length outside 0..=64"
            ))
        );
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(ChannelDataRef::decode(&b).is_err());
        // address length at offset 32.
        let mut b = golden_body();
        b[32..36].copy_from_slice(&1000i32.to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid("channel data: address overruns body"))
        );
        b[32..36].copy_from_slice(&i32::MIN.to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid("channel data: negative address length"))
        );
        // message length at offset 114.
        let mut b = golden_body();
        b[114..118].copy_from_slice(&4i32.to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid("channel data: message overruns body"))
        );
        b[114..118].copy_from_slice(&(-3i32).to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid("channel data: negative message length"))
        );
        b[114..118].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            ChannelDataRef::decode(&b),
            Err(WireError::Invalid(
                "channel data: trailing bytes after message"
            ))
        );
    }

    #[test]
    fn bad_sender_is_an_error() {
        let mut out = Vec::new();
        encode_channel_data(2, 0, &[1; 16], b"not a member", b"", &mut out);
        let cd = ChannelDataRef::decode(&out).unwrap();
        assert!(matches!(cd.sender(), Err(WireError::Invalid(_))));
    }

    #[test]
    fn empty_fields() {
        let mut out = Vec::new();
        encode_channel_data(0, -1, &[], &[], &[], &mut out);
        assert_eq!(out.len(), CHANNEL_DATA_FIXED_LEN);
        let cd = ChannelDataRef::decode(&out).unwrap();
        assert_eq!(cd.timestamp, -1);
        assert!(cd.unique_id.is_empty() && cd.address.is_empty() && cd.message.is_empty());
    }

    #[test]
    #[should_panic(expected = "unique id longer")]
    fn long_unique_id_panics() {
        encode_channel_data(0, 0, &[0; 65], &[], &[], &mut Vec::new());
    }

    proptest! {
        #[test]
        fn roundtrip(
            options in any::<u32>(),
            timestamp in any::<i64>(),
            id in prop::collection::vec(any::<u8>(), 0..=MAX_UNIQUE_ID_LEN),
            address in prop::collection::vec(any::<u8>(), 0..300),
            message in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            let mut out = Vec::new();
            encode_channel_data(options, timestamp, &id, &address, &message, &mut out);
            prop_assert_eq!(out.len(), channel_data_len(id.len(), address.len(), message.len()));
            let cd = ChannelDataRef::decode(&out)?;
            prop_assert_eq!(cd.options, options);
            prop_assert_eq!(cd.timestamp, timestamp);
            prop_assert_eq!(cd.unique_id, &id[..]);
            prop_assert_eq!(cd.address, &address[..]);
            prop_assert_eq!(cd.message, &message[..]);
        }

        #[test]
        fn framed_with_a_writer_matches_framed(
            options in any::<u32>(),
            timestamp in any::<i64>(),
            id in prop::collection::vec(any::<u8>(), 0..=MAX_UNIQUE_ID_LEN),
            address in prop::collection::vec(any::<u8>(), 0..300),
            message in prop::collection::vec(any::<u8>(), 0..1024),
            announced in 0usize..2048,
            prefix in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            // Whatever length the caller announced, the fields follow what the writer wrote.
            let mut want = prefix.clone();
            encode_framed_channel_data(options, timestamp, &id, &address, &message, &mut want);
            let mut got = prefix.clone();
            encode_framed_channel_data_with(
                options, timestamp, &id, &address, announced,
                |out| out.extend_from_slice(&message), &mut got,
            );
            prop_assert_eq!(got, want);
        }

        #[test]
        fn framed_roundtrip_with_member(
            options in any::<u32>(),
            timestamp in any::<i64>(),
            id in any::<[u8; 16]>(),
            member in arb_member(),
            message in prop::collection::vec(any::<u8>(), 0..1024),
            prefix in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let address = member.to_bytes();
            let mut out = prefix.clone();
            let cap_before = out.capacity();
            encode_framed_channel_data(options, timestamp, &id, &address, &message, &mut out);
            let len = channel_data_len(16, address.len(), message.len());
            prop_assert_eq!(out.len(), prefix.len() + len + FRAME_OVERHEAD);
            prop_assert!(out.capacity() >= cap_before);
            let frame = &out[prefix.len()..];
            let FrameCheck::Complete { body, total } = check_frame(frame, len)? else {
                return Err(TestCaseError::fail("incomplete"));
            };
            prop_assert_eq!(total, frame.len());
            let cd = ChannelDataRef::decode(&frame[body])?;
            prop_assert_eq!(cd.options, options);
            prop_assert_eq!(cd.timestamp, timestamp);
            prop_assert_eq!(cd.unique_id, &id[..]);
            prop_assert_eq!(cd.message, &message[..]);
            prop_assert_eq!(cd.sender()?, member);
            // Frame over the max body is rejected from the header.
            if len > 0 {
                let too_large = matches!(check_frame(frame, len - 1), Err(WireError::TooLarge { .. }));
                prop_assert!(too_large);
            }
        }

        #[test]
        fn every_truncation_errors(
            id in prop::collection::vec(any::<u8>(), 0..=MAX_UNIQUE_ID_LEN),
            address in prop::collection::vec(any::<u8>(), 0..100),
            message in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut out = Vec::new();
            encode_channel_data(1, 2, &id, &address, &message, &mut out);
            for cut in 0..out.len() {
                let r = ChannelDataRef::decode(&out[..cut]);
                prop_assert!(matches!(r, Err(WireError::Invalid(_))), "cut {} gave {:?}", cut, r);
            }
            let mut framed = Vec::new();
            encode_framed_channel_data(1, 2, &id, &address, &message, &mut framed);
            for cut in 0..framed.len() {
                prop_assert_eq!(check_frame(&framed[..cut], 1 << 20), Ok(FrameCheck::Incomplete));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(cd) = ChannelDataRef::decode(&b) {
                prop_assert_eq!(cd.encoded_len(), b.len());
                let _ = cd.sender();
            }
        }

        #[test]
        fn corrupted_lengths_never_panic(
            message in prop::collection::vec(any::<u8>(), 0..64),
            pos in 0usize..40,
            v in any::<u8>(),
        ) {
            let member = golden_member().to_bytes();
            let mut out = Vec::new();
            encode_channel_data(8, 1, &[7; 16], &member, &message, &mut out);
            out[pos] = v;
            let _ = ChannelDataRef::decode(&out).map(|cd| cd.sender());
        }
    }
}
