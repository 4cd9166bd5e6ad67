//! The encrypted channel-message envelope (tribes' own format, used when a secret is set):
//!
//! ```text
//! 0x54 'T' | version 1 | key id (4) | nonce (12) | AES-256-GCM( timestamp (8, BE ms) ‖ payload ) + tag (16)
//! ```
//! The AAD binds the message to its header: `"tribes-msg" ‖ options ‖ unique id ‖ sender packet`,
//! so a captured message cannot be re-sent under other options or as from another member.

use ring::aead::{Aad, Nonce};

use super::{KeyRing, SecurityError};

/// First byte of an envelope.
pub const MARKER: u8 = 0x54;
/// Envelope format version.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 2 + 4 + 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Smallest valid envelope: header, timestamp, tag.
pub const MIN_LEN: usize = HEADER_LEN + 8 + TAG_LEN;

/// The additional authenticated data of a message: its options, its unique id and the sender's
/// whole member packet (identity, alive time, domain, payload), exactly as carried in the frame.
pub fn aad(options: u32, unique_id: &[u8], sender_packet: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(10 + 4 + unique_id.len() + sender_packet.len());
    a.extend_from_slice(b"tribes-msg");
    a.extend_from_slice(&options.to_be_bytes());
    a.extend_from_slice(unique_id);
    a.extend_from_slice(sender_packet);
    a
}

/// Encrypts `payload` with the ring's sending key and a fresh random nonce (one allocation, one
/// copy of the payload; the encryption runs in place).
pub fn seal(ring: &KeyRing, timestamp_ms: i64, aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let key = ring.sending();
    let nonce: [u8; 12] = rand::random();
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + payload.len() + TAG_LEN);
    out.push(MARKER);
    out.push(VERSION);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(payload);
    // Sealing fails only for inputs beyond GCM's 64 GiB limit, far above any frame limit.
    if let Ok(tag) = key.aead.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out[HEADER_LEN..],
    ) {
        out.extend_from_slice(tag.as_ref());
    }
    out
}

/// An opened envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The nonce (for replay tracking).
    pub nonce: [u8; 12],
    /// The sender's timestamp.
    pub timestamp_ms: i64,
    /// The plaintext payload.
    pub payload: Vec<u8>,
}

/// Checks the envelope's shape and authenticates and decrypts it (no replay check here).
pub fn open(ring: &KeyRing, aad: &[u8], data: &[u8]) -> Result<Opened, SecurityError> {
    let mut buf = data.to_vec();
    let (nonce, timestamp_ms) = open_in_place(ring, aad, &mut buf)?;
    Ok(Opened {
        nonce,
        timestamp_ms,
        payload: buf,
    })
}

/// Like [`open`], decrypting in `data`, which becomes the payload; returns (nonce, timestamp).
/// On error `data` is left in an unspecified state.
pub fn open_in_place(
    ring: &KeyRing,
    aad: &[u8],
    data: &mut Vec<u8>,
) -> Result<([u8; 12], i64), SecurityError> {
    if data.len() < MIN_LEN {
        return Err(SecurityError::Malformed("shorter than an envelope"));
    }
    if data[0] != MARKER || data[1] != VERSION {
        return Err(SecurityError::Malformed("not a tribes envelope"));
    }
    let key = ring.by_id(&data[2..6]).ok_or(SecurityError::UnknownKey)?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&data[6..18]);
    let plain_len = key
        .aead
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data[HEADER_LEN..],
        )
        .map_err(|_| SecurityError::BadTag)?
        .len();
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&data[HEADER_LEN..HEADER_LEN + 8]);
    data.truncate(HEADER_LEN + plain_len);
    data.drain(..HEADER_LEN + 8);
    Ok((nonce, i64::from_be_bytes(ts)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::new(&["a-very-secret-secret"]).expect("ring")
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let r = ring();
        let a = aad(3, &[1; 16], b"sender packet");
        let env = seal(&r, 42, &a, b"hello");
        let o = open(&r, &a, &env).expect("opens");
        assert_eq!((o.timestamp_ms, &o.payload[..]), (42, &b"hello"[..]));
        // Another option word, sender or key: refused.
        let other = aad(2, &[1; 16], b"sender packet");
        assert_eq!(open(&r, &other, &env), Err(SecurityError::BadTag));
        let wrong = KeyRing::new(&["another-secret-value"]).expect("ring");
        assert_eq!(open(&wrong, &a, &env), Err(SecurityError::UnknownKey));
        // Rotation: a ring that still accepts the old key opens it.
        let rotated =
            KeyRing::new(&["another-secret-value", "a-very-secret-secret"]).expect("ring");
        assert!(open(&rotated, &a, &env).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(&ring(), b"aad", &data);
        }

        #[test]
        fn any_flipped_byte_is_refused(payload in proptest::collection::vec(any::<u8>(), 0..100), pos in any::<usize>(), bit in 0u8..8) {
            let r = ring();
            let mut env = seal(&r, 7, b"aad", &payload);
            let i = pos % env.len();
            env[i] ^= 1 << bit;
            prop_assert!(open(&r, b"aad", &env).is_err());
        }
    }
}
