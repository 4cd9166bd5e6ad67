//! Replay protection: a timestamp window plus a bounded memory of recent nonces.
//!
//! A message is accepted once: its timestamp must be within ±window of now, its nonce must not be
//! among the last `capacity` nonces seen, and its timestamp must not be older than the newest
//! timestamp already forgotten (an evicted nonce could otherwise be replayed).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Nonces are random and only reach the guard after their message authenticated, so an attacker
/// cannot choose them: their own bytes are a good hash, and much cheaper than SipHash.
#[derive(Default)]
struct NonceHasher(u64);

impl Hasher for NonceHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(b);
        }
    }
}

type NonceSet = HashSet<[u8; 12], BuildHasherDefault<NonceHasher>>;

/// Bounded replay memory.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: i64,
    capacity: usize,
    seen: NonceSet,
    order: VecDeque<([u8; 12], i64)>,
    evicted_max_ts: i64,
}

impl ReplayGuard {
    /// A guard with this window and memory size.
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        ReplayGuard {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            capacity: capacity.max(1),
            seen: NonceSet::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            evicted_max_ts: i64::MIN,
        }
    }

    /// Checks a (nonce, timestamp) at `now_ms` and remembers it when accepted.
    pub fn check(
        &mut self,
        nonce: &[u8; 12],
        ts: i64,
        now_ms: i64,
    ) -> Result<(), super::SecurityError> {
        let skew = ts.saturating_sub(now_ms);
        if skew.saturating_abs() > self.window_ms {
            return Err(super::SecurityError::Stale { skew_ms: skew });
        }
        if ts <= self.evicted_max_ts || self.seen.contains(nonce) {
            return Err(super::SecurityError::Replayed);
        }
        if self.order.len() >= self.capacity {
            if let Some((old, old_ts)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evicted_max_ts = self.evicted_max_ts.max(old_ts);
            }
        }
        self.seen.insert(*nonce);
        self.order.push_back((*nonce, ts));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::SecurityError;

    #[test]
    fn window_nonce_and_eviction() {
        let mut g = ReplayGuard::new(10_000, 2);
        assert_eq!(g.check(&[1; 12], 1000, 1000), Ok(()));
        assert_eq!(g.check(&[1; 12], 1000, 1000), Err(SecurityError::Replayed));
        assert!(matches!(
            g.check(&[2; 12], 20_001, 1000),
            Err(SecurityError::Stale { .. })
        ));
        assert_eq!(g.check(&[2; 12], 1001, 1000), Ok(()));
        assert_eq!(g.check(&[3; 12], 1002, 1000), Ok(())); // evicts [1] (ts 1000)
                                                           // [1] is forgotten, but its timestamp is not newer than the evicted one.
        assert_eq!(g.check(&[1; 12], 1000, 1000), Err(SecurityError::Replayed));
        assert_eq!(g.check(&[4; 12], 1003, 1000), Ok(()));
    }
}
