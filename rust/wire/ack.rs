//! ACK / NACK packages (Tomcat `transport/Constants`): 3-byte bodies framed like any message,
//! sent back on the same connection when the sender asked for USE_ACK.

/// Body of a positive acknowledgement.
pub const ACK_DATA: [u8; 3] = [6, 2, 3];
/// Body of a negative acknowledgement (processing failed on the receiver, SYNCHRONIZED_ACK).
pub const FAIL_ACK_DATA: [u8; 3] = [11, 0, 5];

/// The framed ACK exactly as written on the wire (21 bytes).
pub const ACK_FRAME: [u8; 21] = framed(ACK_DATA);
/// The framed NACK exactly as written on the wire (21 bytes).
pub const NACK_FRAME: [u8; 21] = framed(FAIL_ACK_DATA);

/// Builds a 21-byte frame around a 3-byte body at compile time.
const fn framed(body: [u8; 3]) -> [u8; 21] {
    let s = super::frame::FRAME_START;
    let e = super::frame::FRAME_END;
    [
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], 0, 0, 0, 3, body[0], body[1], body[2], e[0],
        e[1], e[2], e[3], e[4], e[5], e[6],
    ]
}

/// Which acknowledgement a frame body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckKind {
    /// Received (and, with SYNCHRONIZED_ACK, processed).
    Ack,
    /// Processing failed on the receiver.
    Nack,
}

/// Classifies a frame body read by a sender waiting for an acknowledgement; `None` if it is
/// neither ACK nor NACK.
#[must_use]
pub fn ack_kind(body: &[u8]) -> Option<AckKind> {
    if body == ACK_DATA {
        Some(AckKind::Ack)
    } else if body == FAIL_ACK_DATA {
        Some(AckKind::Nack)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{check_frame, encode_frame, FrameCheck};
    use crate::wire::WireError;

    const ACK_HEX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/ack.hex"
    ));
    const NACK_HEX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/nack.hex"
    ));

    #[test]
    fn golden_ack() {
        let v = hex::decode(ACK_HEX.trim()).unwrap();
        assert_eq!(v, ACK_FRAME);
        let mut enc = Vec::new();
        encode_frame(&ACK_DATA, &mut enc);
        assert_eq!(enc, v);
        let Ok(FrameCheck::Complete { body, total }) = check_frame(&v, 3) else {
            panic!()
        };
        assert_eq!(total, 21);
        assert_eq!(ack_kind(&v[body]), Some(AckKind::Ack));
    }

    #[test]
    fn golden_nack() {
        let v = hex::decode(NACK_HEX.trim()).unwrap();
        assert_eq!(v, NACK_FRAME);
        let mut enc = Vec::new();
        encode_frame(&FAIL_ACK_DATA, &mut enc);
        assert_eq!(enc, v);
        let Ok(FrameCheck::Complete { body, total }) = check_frame(&v, 3) else {
            panic!()
        };
        assert_eq!(total, 21);
        assert_eq!(ack_kind(&v[body]), Some(AckKind::Nack));
    }

    #[test]
    fn other_bodies() {
        assert_eq!(ack_kind(b""), None);
        assert_eq!(ack_kind(&[6, 2]), None);
        assert_eq!(ack_kind(&[6, 2, 3, 0]), None);
        assert_eq!(ack_kind(&[11, 0, 6]), None);
    }

    #[test]
    fn every_truncation_incomplete_and_bad_end_invalid() {
        for cut in 0..ACK_FRAME.len() {
            assert_eq!(
                check_frame(&ACK_FRAME[..cut], 3),
                Ok(FrameCheck::Incomplete)
            );
        }
        let mut b = NACK_FRAME;
        b[20] = 0;
        assert_eq!(
            check_frame(&b, 3),
            Err(WireError::Invalid("frame: bad end magic"))
        );
    }
}
