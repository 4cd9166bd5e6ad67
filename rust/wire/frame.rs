//! Stream framing (Tomcat `XByteBuffer`): `FLT2002` | int length | body | `TLF2003`.
//!
//! Frames are concatenated on TCP connections and also wrap multicast/UDP messages.

use std::ops::Range;

use super::{len_i32, WireError};

/// Start magic of a frame (`FLT2002`).
pub const FRAME_START: [u8; 7] = *b"FLT2002";
/// End magic of a frame (`TLF2003`).
pub const FRAME_END: [u8; 7] = *b"TLF2003";
/// Bytes before the body: start magic and the length int.
pub const FRAME_HEADER_LEN: usize = 11;
/// Bytes a frame adds around its body (start magic, length, end magic).
pub const FRAME_OVERHEAD: usize = 18;

/// Result of [`check_frame`] on the front of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameCheck {
    /// The buffer holds a valid-looking prefix of a frame; read more bytes.
    Incomplete,
    /// A whole frame is at the front of the buffer.
    Complete {
        /// Where the body lies in the buffer.
        body: Range<usize>,
        /// Bytes the whole frame occupies (consume this many).
        total: usize,
    },
}

/// Appends `body` wrapped in a frame to `out` (capacity reserved once).
///
/// # Panics
/// If `body` is longer than `i32::MAX` bytes (not representable on the wire).
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    let len = len_i32(body.len(), "frame body");
    out.reserve(body.len() + FRAME_OVERHEAD);
    out.extend_from_slice(&FRAME_START);
    out.extend_from_slice(&len);
    out.extend_from_slice(body);
    out.extend_from_slice(&FRAME_END);
}

/// Inspects the frame at the start of `buf` without copying or allocating.
///
/// Returns `Ok(Incomplete)` while `buf` is a valid prefix (including fewer than 11 header bytes),
/// `Err(TooLarge)` as soon as the header declares a body over `max_body`, `Err(Invalid)` for a wrong
/// start magic (also on a partial one), a negative length or a wrong end magic.
pub fn check_frame(buf: &[u8], max_body: usize) -> Result<FrameCheck, WireError> {
    let start_avail = buf.len().min(FRAME_START.len());
    if buf.get(..start_avail) != FRAME_START.get(..start_avail) {
        return Err(WireError::Invalid("frame: bad start magic"));
    }
    let Some(len_bytes) = buf.get(FRAME_START.len()..FRAME_HEADER_LEN) else {
        return Ok(FrameCheck::Incomplete);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(len_bytes);
    let len = usize::try_from(i32::from_be_bytes(len))
        .map_err(|_| WireError::Invalid("frame: negative length"))?;
    if len > max_body {
        return Err(WireError::TooLarge { len, max: max_body });
    }
    let body_end = FRAME_HEADER_LEN + len;
    let total = body_end + FRAME_END.len();
    match buf.get(body_end..total) {
        None => Ok(FrameCheck::Incomplete),
        Some(end) if end == FRAME_END => Ok(FrameCheck::Complete {
            body: FRAME_HEADER_LEN..body_end,
            total,
        }),
        Some(_) => Err(WireError::Invalid("frame: bad end magic")),
    }
}

/// Where a frame may begin in `buf`, for resynchronising after garbage: the first full
/// [`FRAME_START`], else a trailing partial prefix of it (wait for more bytes there), else `None`
/// (no byte of `buf` can start a frame; discard it all).
#[must_use]
pub fn find_frame_start(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf
        .windows(FRAME_START.len())
        .position(|w| w == FRAME_START)
    {
        return Some(i);
    }
    let tail_from = buf.len().saturating_sub(FRAME_START.len() - 1);
    (tail_from..buf.len()).find(|&i| buf.get(i..).is_some_and(|t| FRAME_START.starts_with(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(body, &mut v);
        v
    }

    #[test]
    fn layout() {
        assert_eq!(
            hex::encode(framed(b"abc")),
            "464c5432303032".to_owned() + "00000003" + "616263" + "544c4632303033"
        );
        assert_eq!(framed(b"").len(), FRAME_OVERHEAD);
        assert_eq!(FRAME_HEADER_LEN + FRAME_END.len(), FRAME_OVERHEAD);
    }

    #[test]
    fn complete_frame_and_concatenation() {
        let mut buf = framed(b"hello");
        buf.extend_from_slice(&framed(b"x"));
        let c = check_frame(&buf, MAX).unwrap();
        let FrameCheck::Complete { body, total } = c else {
            panic!("{c:?}")
        };
        assert_eq!(&buf[body], b"hello");
        assert_eq!(total, 23);
        let rest = &buf[total..];
        let FrameCheck::Complete { body, total } = check_frame(rest, MAX).unwrap() else {
            panic!()
        };
        assert_eq!(&rest[body], b"x");
        assert_eq!(total, rest.len());
    }

    #[test]
    fn short_buffers() {
        assert_eq!(check_frame(b"", MAX), Ok(FrameCheck::Incomplete));
        assert_eq!(check_frame(b"FLT", MAX), Ok(FrameCheck::Incomplete));
        assert_eq!(
            check_frame(b"FLT2002\0\0\0", MAX),
            Ok(FrameCheck::Incomplete)
        );
        assert_eq!(
            check_frame(b"FLX", MAX),
            Err(WireError::Invalid("frame: bad start magic"))
        );
        assert_eq!(
            check_frame(b"GET / HTTP/1.1\r\n", MAX),
            Err(WireError::Invalid("frame: bad start magic"))
        );
    }

    #[test]
    fn negative_length() {
        let mut b = FRAME_START.to_vec();
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            check_frame(&b, MAX),
            Err(WireError::Invalid("frame: negative length"))
        );
    }

    #[test]
    fn too_large_from_header_alone() {
        let mut b = FRAME_START.to_vec();
        b.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            check_frame(&b, MAX),
            Err(WireError::TooLarge {
                len: i32::MAX as usize,
                max: MAX
            })
        );
        // Exactly max is fine.
        let b = framed(&[7; 10]);
        assert!(matches!(
            check_frame(&b, 10),
            Ok(FrameCheck::Complete { .. })
        ));
        assert_eq!(
            check_frame(&b, 9),
            Err(WireError::TooLarge { len: 10, max: 9 })
        );
    }

    #[test]
    fn bad_end_magic() {
        let mut b = framed(b"abc");
        let n = b.len();
        b[n - 3] = b'X';
        assert_eq!(
            check_frame(&b, MAX),
            Err(WireError::Invalid("frame: bad end magic"))
        );
    }

    #[test]
    fn resync() {
        assert_eq!(find_frame_start(b""), None);
        assert_eq!(find_frame_start(b"garbage!"), None);
        let mut b = b"junk".to_vec();
        b.extend_from_slice(&framed(b"abc"));
        assert_eq!(find_frame_start(&b), Some(4));
        assert!(matches!(
            check_frame(&b[4..], MAX),
            Ok(FrameCheck::Complete { .. })
        ));
        assert_eq!(find_frame_start(b"junkFLT20"), Some(4));
        assert_eq!(find_frame_start(b"junkF"), Some(4));
        assert_eq!(find_frame_start(b"FLT200"), Some(0));
        assert_eq!(find_frame_start(b"FLT2002"), Some(0));
        assert_eq!(find_frame_start(b"FLFLT2002"), Some(2));
        assert_eq!(find_frame_start(b"junkFLX"), None);
    }

    proptest! {
        #[test]
        fn roundtrip(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            let b = framed(&body);
            prop_assert_eq!(b.len(), body.len() + FRAME_OVERHEAD);
            let c = check_frame(&b, MAX)?;
            prop_assert_eq!(c, FrameCheck::Complete { body: FRAME_HEADER_LEN..FRAME_HEADER_LEN + body.len(), total: b.len() });
            prop_assert_eq!(find_frame_start(&b), Some(0));
        }

        #[test]
        fn every_truncation_is_incomplete(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let b = framed(&body);
            for cut in 0..b.len() {
                prop_assert_eq!(check_frame(&b[..cut], MAX), Ok(FrameCheck::Incomplete), "cut {}", cut);
            }
        }

        #[test]
        fn flipped_end_magic_is_invalid(body in prop::collection::vec(any::<u8>(), 0..512), idx in 0usize..7, bit in 0u8..8) {
            let mut b = framed(&body);
            let n = b.len();
            b[n - 7 + idx] ^= 1 << bit;
            prop_assert_eq!(check_frame(&b, MAX), Err(WireError::Invalid("frame: bad end magic")));
        }

        #[test]
        fn over_max_is_too_large_from_header(max in 0usize..1_000_000, extra in 1usize..1_000_000) {
            let len = max + extra;
            let mut b = FRAME_START.to_vec();
            b.extend_from_slice(&(len as i32).to_be_bytes());
            // Only the 11 header bytes exist: the decision cannot depend on the body.
            prop_assert_eq!(check_frame(&b, max), Err(WireError::TooLarge { len, max }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
            let _ = check_frame(&b, max);
            let _ = find_frame_start(&b);
        }

        #[test]
        fn arbitrary_after_start_never_panic(b in prop::collection::vec(any::<u8>(), 0..256), max in any::<usize>()) {
            let mut v = FRAME_START.to_vec();
            v.extend_from_slice(&b);
            match check_frame(&v, max) {
                Ok(FrameCheck::Complete { body, total }) => {
                    prop_assert!(body.end <= v.len() && total <= v.len());
                }
                Ok(FrameCheck::Incomplete) | Err(_) => {}
            }
        }

        #[test]
        fn resync_after_garbage(garbage in prop::collection::vec(any::<u8>(), 0..64), body in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut b = garbage.clone();
            b.extend_from_slice(&framed(&body));
            let i = find_frame_start(&b).unwrap();
            prop_assert!(i <= garbage.len());
            // Any candidate before the real start is a real (or partial) start magic.
            if i == garbage.len() {
                let complete = matches!(check_frame(&b[i..], MAX), Ok(FrameCheck::Complete { .. }));
                prop_assert!(complete);
            }
        }
    }
}
