//! Shared-secret security: keys, the channel message envelope, replay protection, the membership
//! packet tag, and Tomcat's EncryptInterceptor format.
//!
//! Everything here is pure (no I/O) and decodes untrusted bytes: every function returns an error
//! value for bad input, never panics (fuzzed in `fuzz/` and property-tested).

pub mod envelope;
pub mod member_auth;
pub mod replay;
pub mod tomcat;

use hkdf::Hkdf;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use sha2::Sha256;

/// Why a protected message or packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// Too short, wrong marker or version.
    #[error("malformed protected data: {0}")]
    Malformed(&'static str),
    /// No key in the ring has this id.
    #[error("unknown key id")]
    UnknownKey,
    /// Authentication failed (wrong key, tampered bytes).
    #[error("authentication failed")]
    BadTag,
    /// The timestamp is outside the replay window.
    #[error("timestamp outside the replay window ({skew_ms} ms off)")]
    Stale {
        /// How far from now, in ms.
        skew_ms: i64,
    },
    /// The nonce was seen before.
    #[error("replayed message")]
    Replayed,
}

/// One secret's derived keys.
#[derive(Clone)]
pub struct Key {
    /// 4-byte id, carried in every message so the receiver picks the key without trial decryption.
    pub id: [u8; 4],
    /// AES-256-GCM (ring's implementation: several times faster than a portable one).
    pub(crate) aead: std::sync::Arc<LessSafeKey>,
    pub(crate) mac_key: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Key(id={:02x?})", self.id)
    }
}

impl Key {
    /// Derives the keys of one secret (HKDF-SHA256, salt "tribes-v1").
    pub fn derive(secret: &[u8]) -> Key {
        let hk = Hkdf::<Sha256>::new(Some(b"tribes-v1"), secret);
        let mut enc = [0u8; 32];
        let mut mac_key = [0u8; 32];
        let mut id = [0u8; 4];
        // expand() only fails for outputs longer than 255 hash lengths.
        let _ = hk.expand(b"channel-encryption", &mut enc);
        let _ = hk.expand(b"membership-auth", &mut mac_key);
        let _ = hk.expand(b"key-id", &mut id);
        // A 32-byte key is always valid for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, &enc).unwrap_or_else(|_| unreachable!());
        Key {
            id,
            aead: std::sync::Arc::new(LessSafeKey::new(unbound)),
            mac_key,
        }
    }
}

/// The key ring: the first key sends, every key is accepted (rotation without downtime).
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring from secrets, sending one first; None when there are none.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Option<KeyRing> {
        if secrets.is_empty() {
            return None;
        }
        Some(KeyRing {
            keys: secrets.iter().map(|s| Key::derive(s.as_ref())).collect(),
        })
    }

    /// The key that signs and encrypts.
    pub fn sending(&self) -> &Key {
        // `new` never builds an empty ring.
        &self.keys[0]
    }

    /// The key with this id.
    pub fn by_id(&self, id: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.id[..] == *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_secret_dependent() {
        let a = Key::derive(b"0123456789abcdef");
        let b = Key::derive(b"0123456789abcdef");
        let c = Key::derive(b"0123456789abcdeg");
        assert_eq!(a.id, b.id);
        assert_eq!(a.mac_key, b.mac_key);
        assert_ne!(a.id, c.id);
        assert_ne!(a.mac_key, c.mac_key);
        assert!(!format!("{a:?}").contains("mac"));
    }

    #[test]
    fn ring_sends_with_the_first_and_finds_all() {
        let ring = KeyRing::new(&["first-secret-123456", "older-secret-123456"]).expect("ring");
        let old = Key::derive(b"older-secret-123456");
        assert_eq!(ring.sending().id, Key::derive(b"first-secret-123456").id);
        assert!(ring.by_id(&old.id).is_some());
        assert!(ring.by_id(&[0, 0, 0, 0]).is_none() || old.id == [0; 4]);
        assert!(KeyRing::new::<&str>(&[]).is_none());
    }
}
