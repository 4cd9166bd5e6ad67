//! Byte layouts of Apache Tribes: member packets, stream frames, ChannelData, ACK/NACK and
//! send-option bits. Pure functions over byte slices: no I/O, no allocation beyond what a decoded
//! value owns, and every decoder returns a [`WireError`] instead of panicking on bad input.
//!
//! All integers are big-endian, as written by Java's `DataOutput`/`XByteBuffer`.

pub mod ack;
pub mod channel_data;
pub mod frame;
pub mod member;
pub mod options;

pub use ack::{ack_kind, AckKind, ACK_DATA, ACK_FRAME, FAIL_ACK_DATA, NACK_FRAME};
pub use channel_data::{
    channel_data_len, encode_channel_data, encode_framed_channel_data, ChannelDataRef,
    CHANNEL_DATA_FIXED_LEN, MAX_UNIQUE_ID_LEN,
};
pub use frame::{
    check_frame, encode_frame, find_frame_start, FrameCheck, FRAME_END, FRAME_HEADER_LEN,
    FRAME_OVERHEAD, FRAME_START,
};
pub use member::{
    is_member_packet, MemberPacket, MAX_MEMBER_PACKET, MEMBER_BEGIN, MEMBER_END, MEMBER_HEADER_LEN,
    MEMBER_MIN_LEN, SHUTDOWN_COMMAND,
};
pub use options::{
    parse_send_options, send_options_to_string, ASYNCHRONOUS, BYTE_MESSAGE, COMPRESSED_GZIP,
    COMPRESSED_LZ4, MULTICAST, SECURE, SYNCHRONIZED_ACK, UDP, USE_ACK,
};

/// Why a byte sequence could not be decoded (or a value could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the structure does; `needed` is the total byte count required
    /// (counted from the start of the buffer) to make progress.
    #[error("incomplete data: need {needed} bytes")]
    Incomplete {
        /// Total number of bytes needed from the start of the buffer.
        needed: usize,
    },
    /// A declared length exceeds the configured or protocol maximum; decided from the header alone.
    #[error("declared length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The declared (or computed) length.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The bytes are malformed (bad magic, negative or inconsistent length, ...).
    #[error("invalid data: {0}")]
    Invalid(&'static str),
    /// A send-option string names an option that does not exist.
    #[error("unknown send option {0:?}; expected a comma separated list of async, use_ack, sync, byte, multicast, secure, udp, or a non-negative integer")]
    UnknownSendOption(String),
    /// A send-option string holds an integer outside `0..=u32::MAX` (or is empty).
    #[error("invalid send options {input:?}: {reason}")]
    InvalidSendOptions {
        /// The offending input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The 64-byte message TcpFailureDetector writes (as a framed ChannelData) to probe a member; a
/// receiver must swallow a message whose payload is exactly these bytes.
pub const TCP_FAIL_DETECT: [u8; 64] = [
    0x4f, 0xa7, 0x73, 0x48, 0x79, 0x82, 0x43, 0xc9, 0x9f, 0x6f, 0x89, 0x80, 0xa1, 0x5b, 0x07, 0x14,
    0x7d, 0xd9, 0x52, 0x5b, 0xeb, 0xf1, 0x43, 0x9a, 0xb7, 0x7e, 0xbe, 0x8f, 0x81, 0x67, 0x1e, 0xb6,
    0x37, 0x15, 0xbe, 0x87, 0x45, 0x7e, 0x4c, 0xa8, 0xbf, 0x0a, 0x4d, 0x13, 0x53, 0x38, 0x15, 0x32,
    0x55, 0xf6, 0x94, 0xb7, 0x3a, 0xfa, 0x40, 0x78, 0x91, 0x04, 0x7d, 0xd7, 0x72, 0x84, 0xc0, 0xd5,
];

/// The TcpFailureDetector probe payload as a slice (same bytes as [`TCP_FAIL_DETECT`]).
#[must_use]
pub fn tcp_fail_detect_payload() -> &'static [u8] {
    &TCP_FAIL_DETECT
}

/// Bounds-checked big-endian reader over a slice; every read fails with the given error instead of
/// panicking. Shared by the decoders of this module.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    err: WireError,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` that reports `err` whenever a read runs past the end.
    pub(crate) fn new(buf: &'a [u8], err: WireError) -> Self {
        Reader { buf, err }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(self.err.clone());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Reads a signed byte.
    pub(crate) fn i8(&mut self) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `int`.
    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `long`.
    pub(crate) fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Reads an `int` length prefix and then that many bytes; a negative length is `negative`, a
    /// length past the end is `overrun`. Nothing is allocated.
    pub(crate) fn len_prefixed(
        &mut self,
        negative: &'static str,
        overrun: &'static str,
    ) -> Result<&'a [u8], WireError> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| WireError::Invalid(negative))?;
        if len > self.remaining() {
            return Err(WireError::Invalid(overrun));
        }
        self.take(len)
    }
}

/// Converts a length to the `int` Java writes, panicking (programmer error) when it cannot be
/// represented; encoders document this under "Panics".
pub(crate) fn len_i32(len: usize, what: &'static str) -> [u8; 4] {
    match i32::try_from(len) {
        Ok(v) => v.to_be_bytes(),
        Err(_) => panic!("{what} length {len} does not fit in a Java int"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_fail_detect_matches_reference_hex() {
        let hex = "4fa77348798243c99f6f8980a15b07147dd9525bebf1439ab77ebe8f81671eb6\
                   3715be87457e4ca8bf0a4d135338153255f694b73afa407891047dd77284c0d5";
        assert_eq!(hex::decode(hex).unwrap(), TCP_FAIL_DETECT);
        assert_eq!(tcp_fail_detect_payload(), &TCP_FAIL_DETECT[..]);
    }

    #[test]
    fn errors_display_clearly() {
        assert_eq!(
            WireError::Incomplete { needed: 11 }.to_string(),
            "incomplete data: need 11 bytes"
        );
        assert_eq!(
            WireError::TooLarge { len: 10, max: 5 }.to_string(),
            "declared length 10 exceeds the maximum of 5 bytes"
        );
        assert_eq!(
            WireError::Invalid("bad magic").to_string(),
            "invalid data: bad magic"
        );
        assert!(WireError::UnknownSendOption("foo".into())
            .to_string()
            .contains("\"foo\""));
        let e: Box<dyn std::error::Error> = Box::new(WireError::Invalid("x"));
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn reader_never_panics() {
        let mut r = Reader::new(&[1, 2, 3], WireError::Invalid("short"));
        assert_eq!(r.i32(), Err(WireError::Invalid("short")));
        assert_eq!(r.take(2).unwrap(), &[1, 2]);
        assert_eq!(r.i8().unwrap(), 3);
        assert!(r.i8().is_err());
        assert!(r.take(usize::MAX).is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff], WireError::Invalid("short"));
        assert_eq!(
            r.len_prefixed("neg", "over"),
            Err(WireError::Invalid("neg"))
        );
        let mut r = Reader::new(&[0, 0, 0, 2, 9], WireError::Invalid("short"));
        assert_eq!(
            r.len_prefixed("neg", "over"),
            Err(WireError::Invalid("over"))
        );
    }
}
