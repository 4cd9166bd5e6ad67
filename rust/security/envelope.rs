//! The encrypted channel-message envelope (tribes' own format, used when a secret is set):
//!
//! ```text
//! 0x54 'T' | version 2 | key id (4) | nonce (12) | timestamp (8, BE ms) | AES-256-GCM(payload) + tag (16)
//! ```
//! The timestamp travels in clear and is authenticated as the first 8 bytes of the AAD (it needs
//! no secrecy; keeping it out of the ciphertext keeps the GCM input block-aligned for payloads
//! that are).
//! The nonce is the sender's epoch (8 random bytes) then a message counter (4 bytes, BE): unique
//! per key without coordination, and it lets a receiver remember recent messages as a bitmap
//! (see [`super::replay::CounterWindow`]).
//!
//! The AAD binds the message to its header: timestamp ‖ options ‖ message id ‖ SHA-256 of the
//! sender's whole member packet (identity, alive time, domain, payload; cut to 20 bytes), so a captured message cannot be re-sent
//! under other options or as from another member. A digest rather than the packet itself keeps
//! the AAD short (every 16 bytes cost a GHASH block per receiver); receivers compute it once per
//! sender, not per message.

use ring::aead::{Aad, Nonce};

use super::{KeyRing, SecurityError};

/// First byte of an envelope.
pub const MARKER: u8 = 0x54;
/// Envelope format version.
pub const VERSION: u8 = 2;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 2 + 4 + 12 + 8;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Smallest valid envelope: header (with the timestamp) and tag.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Longest caller AAD that is assembled on the stack (longer ones allocate).
const STACK_AAD: usize = 64;
/// Bytes of the sender digest bound into a message's AAD (a 160-bit second-preimage margin).
const SENDER_DIGEST_LEN: usize = 20;
/// The additional authenticated data of a message, built on the stack: options ‖ message id ‖
/// SHA-256 of the sender's member packet, cut to 20 bytes (the envelope adds the timestamp in
/// front: 48 bytes, three GHASH blocks).
#[derive(Clone, Copy)]
pub struct MessageAad([u8; 4 + 16 + SENDER_DIGEST_LEN]);

impl MessageAad {
    /// The AAD of a message with these options and id, sent by the member whose packet has this
    /// digest ([`crate::member::Member::digest`]).
    pub fn new(options: u32, message_id: &[u8; 16], sender_digest: &[u8; 32]) -> MessageAad {
        let mut buf = [0u8; 4 + 16 + SENDER_DIGEST_LEN];
        buf[..4].copy_from_slice(&options.to_be_bytes());
        buf[4..20].copy_from_slice(message_id);
        buf[20..].copy_from_slice(&sender_digest[..SENDER_DIGEST_LEN]);
        MessageAad(buf)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A nonce from an epoch and a counter (see the module doc).
pub fn counter_nonce(epoch: [u8; 8], counter: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&epoch);
    n[8..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Splits a nonce into its epoch and counter.
pub fn split_nonce(nonce: &[u8; 12]) -> ([u8; 8], u32) {
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&nonce[..8]);
    let mut ctr = [0u8; 4];
    ctr.copy_from_slice(&nonce[8..]);
    (epoch, u32::from_be_bytes(ctr))
}

/// Encrypts `payload` with the ring's sending key and a fresh random nonce.
pub fn seal(ring: &KeyRing, timestamp_ms: i64, aad: &[u8], payload: &[u8]) -> Vec<u8> {
    seal_with_nonce(ring, rand::random(), timestamp_ms, aad, payload)
}

/// Encrypts `payload` with the ring's sending key under `nonce`, which must never have been used
/// with this key before (one allocation, one copy of the payload; the encryption runs in place).
pub fn seal_with_nonce(
    ring: &KeyRing,
    nonce: [u8; 12],
    timestamp_ms: i64,
    aad: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(payload.len()));
    seal_with_nonce_into(ring, nonce, timestamp_ms, aad, payload, &mut out);
    out
}

/// The length of an envelope holding `payload_len` bytes.
pub const fn sealed_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len + TAG_LEN
}

/// [`seal_with_nonce`] appending the envelope (exactly [`sealed_len`] bytes) to `out`: a sender
/// seals straight into the frame it builds, one copy of the payload and no buffer of its own.
pub fn seal_with_nonce_into(
    ring: &KeyRing,
    nonce: [u8; 12],
    timestamp_ms: i64,
    aad: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let key = ring.sending();
    out.reserve(sealed_len(payload.len()));
    out.push(MARKER);
    out.push(VERSION);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(payload);
    let sealed = with_full_aad(timestamp_ms, aad, |full| {
        key.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(full),
            &mut out[start..],
        )
    });
    // Sealing fails only for inputs beyond GCM's 64 GiB limit, far above any frame limit.
    if let Ok(tag) = sealed {
        out.extend_from_slice(tag.as_ref());
    }
}

/// Runs `f` with the GCM AAD: the timestamp, then the caller's AAD.
fn with_full_aad<T>(timestamp_ms: i64, aad: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    if aad.len() <= STACK_AAD {
        let mut buf = [0u8; 8 + STACK_AAD];
        buf[..8].copy_from_slice(&timestamp_ms.to_be_bytes());
        buf[8..8 + aad.len()].copy_from_slice(aad);
        f(&buf[..8 + aad.len()])
    } else {
        let mut buf = Vec::with_capacity(8 + aad.len());
        buf.extend_from_slice(&timestamp_ms.to_be_bytes());
        buf.extend_from_slice(aad);
        f(&buf)
    }
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
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&data[18..26]);
    let timestamp_ms = i64::from_be_bytes(ts);
    // Decrypted to the front of `data` (over the header) as it goes: no second pass to move the
    // payload down.
    let plain_len = with_full_aad(timestamp_ms, aad, |full| {
        key.aead
            .open_within(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(full),
                &mut data[..],
                HEADER_LEN..,
            )
            .map(|p| p.len())
    })
    .map_err(|_| SecurityError::BadTag)?;
    data.truncate(plain_len);
    Ok((nonce, timestamp_ms))
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
        let aad =
            |options: u32, id: u8, sender: u8| MessageAad::new(options, &[id; 16], &[sender; 32]);
        let a = aad(3, 9, 1);
        let env = seal_with_nonce(&r, counter_nonce([5; 8], 7), 42, a.as_bytes(), b"hello");
        let o = open(&r, a.as_bytes(), &env).expect("opens");
        assert_eq!((o.timestamp_ms, &o.payload[..]), (42, &b"hello"[..]));
        assert_eq!(split_nonce(&o.nonce), ([5; 8], 7));
        // Another option word, message id, sender or key: refused.
        for other in [aad(2, 9, 1), aad(3, 8, 1), aad(3, 9, 2)] {
            assert_eq!(open(&r, other.as_bytes(), &env), Err(SecurityError::BadTag));
        }
        let a = a.as_bytes();
        let wrong = KeyRing::new(&["another-secret-value"]).expect("ring");
        assert_eq!(open(&wrong, a, &env), Err(SecurityError::UnknownKey));
        // Rotation: a ring that still accepts the old key opens it.
        let rotated =
            KeyRing::new(&["another-secret-value", "a-very-secret-secret"]).expect("ring");
        assert!(open(&rotated, a, &env).is_ok());
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
