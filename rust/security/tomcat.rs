//! Tomcat's EncryptInterceptor format (`AES/GCM/NoPadding`), for talking to Tomcat channels that
//! use it: the message field becomes `IV (12) ‖ AES-GCM(timestamp (8, BE ms) ‖ payload) + tag (16)`,
//! with the key given as hex (16, 24 or 32 bytes: AES-128/192/256) and no AAD.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};

use super::SecurityError;

type Aes192Gcm = AesGcm<Aes192, U12>;

/// A Tomcat-compatible cipher.
#[derive(Clone)]
pub enum TomcatCipher {
    /// 16-byte key.
    Aes128(Box<Aes128Gcm>),
    /// 24-byte key.
    Aes192(Box<Aes192Gcm>),
    /// 32-byte key.
    Aes256(Box<Aes256Gcm>),
}

impl std::fmt::Debug for TomcatCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TomcatCipher(..)")
    }
}

/// Smallest valid message: IV, timestamp, tag.
pub const MIN_LEN: usize = 12 + 8 + 16;

/// An opened message: its IV, its timestamp (when the format has one) and the payload.
pub type Opened = ([u8; 12], Option<i64>, Vec<u8>);

impl TomcatCipher {
    /// From Tomcat's `encryptionKey` (hex); None for a malformed key.
    pub fn from_hex(hex: &str) -> Option<TomcatCipher> {
        let hex = hex.trim();
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let key: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        match key.len() {
            16 => Aes128Gcm::new_from_slice(&key)
                .ok()
                .map(|c| TomcatCipher::Aes128(Box::new(c))),
            24 => Aes192Gcm::new_from_slice(&key)
                .ok()
                .map(|c| TomcatCipher::Aes192(Box::new(c))),
            32 => Aes256Gcm::new_from_slice(&key)
                .ok()
                .map(|c| TomcatCipher::Aes256(Box::new(c))),
            _ => None,
        }
    }

    fn encrypt(&self, nonce: &[u8; 12], plain: &[u8]) -> Vec<u8> {
        let n = Nonce::from_slice(nonce);
        // GCM fails only for plaintexts beyond 64 GiB.
        match self {
            TomcatCipher::Aes128(c) => c.encrypt(n, plain),
            TomcatCipher::Aes192(c) => c.encrypt(n, plain),
            TomcatCipher::Aes256(c) => c.encrypt(n, plain),
        }
        .unwrap_or_default()
    }

    fn decrypt(&self, nonce: &[u8; 12], data: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let n = Nonce::from_slice(nonce);
        match self {
            TomcatCipher::Aes128(c) => c.decrypt(n, data),
            TomcatCipher::Aes192(c) => c.decrypt(n, data),
            TomcatCipher::Aes256(c) => c.decrypt(n, data),
        }
        .map_err(|_| SecurityError::BadTag)
    }

    /// Encrypts as Tomcat does.
    pub fn seal(&self, timestamp_ms: Option<i64>, payload: &[u8]) -> Vec<u8> {
        let iv: [u8; 12] = rand::random();
        let mut plain = Vec::with_capacity(8 + payload.len());
        if let Some(ts) = timestamp_ms {
            plain.extend_from_slice(&ts.to_be_bytes());
        }
        plain.extend_from_slice(payload);
        let ct = self.encrypt(&iv, &plain);
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, data: &[u8], timestamped: bool) -> Result<Opened, SecurityError> {
        let min = if timestamped { MIN_LEN } else { MIN_LEN - 8 };
        if data.len() < min {
            return Err(SecurityError::Malformed(
                "shorter than an encrypted Tomcat message",
            ));
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&data[..12]);
        let plain = self.decrypt(&iv, &data[12..])?;
        if !timestamped {
            return Ok((iv, None, plain));
        }
        let (ts, payload) = plain.split_at(8);
        let mut tsb = [0u8; 8];
        tsb.copy_from_slice(ts);
        Ok((iv, Some(i64::from_be_bytes(tsb)), payload.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_length_and_round_trip() {
        for hex in ["00".repeat(16), "11".repeat(24), "ab".repeat(32)] {
            let c = TomcatCipher::from_hex(&hex).expect("valid key");
            let m = c.seal(Some(5), b"payload");
            assert_eq!(
                c.open(&m, true).expect("opens"),
                (
                    m[..12].try_into().expect("iv"),
                    Some(5),
                    b"payload".to_vec()
                )
            );
            // Tomcat before 10.1.56: no timestamp inside.
            let m = c.seal(None, b"payload");
            assert_eq!(m.len(), 12 + 7 + 16);
            assert_eq!(c.open(&m, false).expect("opens").2, b"payload".to_vec());
        }
        assert!(TomcatCipher::from_hex("abc").is_none());
        assert!(TomcatCipher::from_hex(&"00".repeat(20)).is_none());
        assert!(TomcatCipher::from_hex(&"zz".repeat(16)).is_none());
        let c = TomcatCipher::from_hex(&"00".repeat(16)).expect("key");
        assert!(c.open(&[0u8; 10], true).is_err());
        assert!(c.open(&[0u8; 60], true).is_err());
        assert!(c.open(&[0u8; 27], false).is_err());
    }
}
