//! The membership packet tag. A secured member ends its packet's payload field with
//!
//! ```text
//! "TRAU" | key id (4) | timestamp (8, BE ms) | HMAC-SHA256(packet with these 16 tag bytes zeroed)[..16]
//! ```
//! so the packet layout stays Tribes-compatible. Packets without a valid trailer are refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{KeyRing, SecurityError};
use crate::wire::member::{MemberPacket, MEMBER_END};

/// Trailer marker.
pub const MAGIC: &[u8; 4] = b"TRAU";
/// Trailer length.
pub const TRAILER_LEN: usize = 32;

fn tag(mac_key: &[u8; 32], packet: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).unwrap_or_else(|_| unreachable!());
    mac.update(packet);
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

/// Encodes `packet` with the trailer appended to its payload, signed with the ring's sending key.
pub fn sign(ring: &KeyRing, packet: &MemberPacket, timestamp_ms: i64) -> Vec<u8> {
    let key = ring.sending();
    let mut p = packet.clone();
    p.payload.extend_from_slice(MAGIC);
    p.payload.extend_from_slice(&key.id);
    p.payload.extend_from_slice(&timestamp_ms.to_be_bytes());
    p.payload.extend_from_slice(&[0u8; 16]);
    let mut out = Vec::with_capacity(p.encoded_len());
    p.encode(&mut out);
    let t = tag(&key.mac_key, &out);
    let at = out.len() - MEMBER_END.len() - 16;
    out[at..at + 16].copy_from_slice(&t);
    out
}

/// Verifies a signed packet: returns the packet (payload without the trailer) and its timestamp.
pub fn verify(ring: &KeyRing, bytes: &[u8]) -> Result<(MemberPacket, i64), SecurityError> {
    let mut packet =
        MemberPacket::decode(bytes).map_err(|_| SecurityError::Malformed("not a member packet"))?;
    let len = packet.encoded_len();
    if packet.payload.len() < TRAILER_LEN || len > bytes.len() || len < MEMBER_END.len() + 16 {
        return Err(SecurityError::Malformed("no authentication trailer"));
    }
    let trailer_at = packet.payload.len() - TRAILER_LEN;
    let trailer = &packet.payload[trailer_at..];
    if &trailer[..4] != MAGIC {
        return Err(SecurityError::Malformed("no authentication trailer"));
    }
    let key = ring
        .by_id(&trailer[4..8])
        .ok_or(SecurityError::UnknownKey)?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&trailer[8..16]);
    let timestamp = i64::from_be_bytes(ts);
    let got = &trailer[16..32];
    let mut zeroed = bytes[..len].to_vec();
    let at = len - MEMBER_END.len() - 16;
    zeroed[at..at + 16].fill(0);
    let want = tag(&key.mac_key, &zeroed);
    if !bool::from(want.ct_eq(got)) {
        return Err(SecurityError::BadTag);
    }
    packet.payload.truncate(trailer_at);
    Ok((packet, timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet() -> MemberPacket {
        MemberPacket {
            alive_ms: 5,
            port: 4000,
            secure_port: -1,
            udp_port: -1,
            host: vec![127, 0, 0, 1],
            command: vec![],
            domain: b"d".to_vec(),
            unique_id: [9; 16],
            payload: b"app".to_vec(),
        }
    }

    #[test]
    fn sign_verify_and_strip() {
        let ring = KeyRing::new(&["membership-secret-1"]).expect("ring");
        let bytes = sign(&ring, &packet(), 77);
        let (p, ts) = verify(&ring, &bytes).expect("valid");
        assert_eq!((p, ts), (packet(), 77));
        let other = KeyRing::new(&["membership-secret-2"]).expect("ring");
        assert_eq!(verify(&other, &bytes), Err(SecurityError::UnknownKey));
        let mut plain = Vec::new();
        packet().encode(&mut plain);
        assert!(matches!(
            verify(&ring, &plain),
            Err(SecurityError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn tampering_anywhere_is_refused(pos in any::<usize>(), bit in 0u8..8) {
            let ring = KeyRing::new(&["membership-secret-1"]).expect("ring");
            let mut bytes = sign(&ring, &packet(), 77);
            let i = pos % bytes.len();
            bytes[i] ^= 1 << bit;
            prop_assert!(verify(&ring, &bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ring = KeyRing::new(&["membership-secret-1"]).expect("ring");
            let _ = verify(&ring, &data);
        }
    }
}
