//! Replay protection: a timestamp window plus a bounded memory of recent nonces.
//!
//! Two memories, for two nonce schemes:
//! - [`CounterWindow`], for tribes' envelope, whose nonces are a sender epoch and a counter: the
//!   highest counter seen and a bitmap of the counters just below it (IPsec's anti-replay window).
//!   One bit per remembered message, no hashing: cheap enough for every message.
//! - [`ReplayGuard`], for Tomcat's EncryptInterceptor, whose nonces are random: a set of the
//!   last `capacity` nonces. A message is accepted once: its nonce must not be among them, and its
//!   timestamp must not be older than the newest timestamp already forgotten (an evicted nonce
//!   could otherwise be replayed).
//!
//! Both also need the message's timestamp to be within ±window of now ([`check_window`]).

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

/// Refuses a timestamp further than `window_ms` from `now_ms`.
pub fn check_window(ts: i64, now_ms: i64, window_ms: i64) -> Result<(), super::SecurityError> {
    let skew = ts.saturating_sub(now_ms);
    if skew.saturating_abs() > window_ms {
        return Err(super::SecurityError::Stale { skew_ms: skew });
    }
    Ok(())
}

/// The counters one sender epoch used recently: each is accepted once; a counter more than the
/// window's size below the highest seen is refused (it can no longer be told apart from a replay).
#[derive(Debug)]
pub struct CounterWindow {
    /// Highest counter accepted so far (None before the first).
    top: Option<u32>,
    /// Bit `c & mask` is set when counter `c` (within the window) was accepted.
    bits: Box<[u64]>,
    mask: u64,
}

impl CounterWindow {
    /// A window remembering at least `size` counters (rounded up to a power of two, ≥ 64).
    pub fn new(size: usize) -> Self {
        let size = size.clamp(64, 1 << 30).next_power_of_two();
        CounterWindow {
            top: None,
            bits: vec![0u64; size / 64].into_boxed_slice(),
            mask: size as u64 - 1,
        }
    }

    /// How many counters below the highest are remembered.
    pub fn size(&self) -> u64 {
        self.mask + 1
    }

    fn bit(&self, c: u64) -> (usize, u64) {
        let i = c & self.mask;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Forgets counters `from..=to` (their slots are reused by newer counters).
    fn clear(&mut self, from: u64, to: u64) {
        if to - from >= self.mask {
            self.bits.fill(0);
            return;
        }
        let mut c = from;
        while c <= to {
            let (w, b) = self.bit(c);
            if c % 64 == 0 && to - c >= 63 {
                self.bits[w] = 0;
                c += 64;
            } else {
                self.bits[w] &= !b;
                c += 1;
            }
        }
    }

    /// Accepts `counter` once.
    pub fn check(&mut self, counter: u32) -> Result<(), super::SecurityError> {
        let c = u64::from(counter);
        match self.top {
            Some(top) if c <= u64::from(top) => {
                let top = u64::from(top);
                if top - c > self.mask {
                    return Err(super::SecurityError::Replayed);
                }
                let (w, b) = self.bit(c);
                if self.bits[w] & b != 0 {
                    return Err(super::SecurityError::Replayed);
                }
                self.bits[w] |= b;
            }
            top => {
                let from = top.map_or(0, |t| u64::from(t) + 1);
                self.clear(from, c);
                self.top = Some(counter);
                let (w, b) = self.bit(c);
                self.bits[w] |= b;
            }
        }
        Ok(())
    }
}

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
        check_window(ts, now_ms, self.window_ms)?;
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
    use proptest::prelude::*;

    #[test]
    fn counter_window_accepts_each_counter_once() {
        let mut w = CounterWindow::new(100); // rounds up to 128
        assert_eq!(w.size(), 128);
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(5), Err(SecurityError::Replayed));
        assert_eq!(w.check(3), Ok(())); // late, within the window
        assert_eq!(w.check(3), Err(SecurityError::Replayed));
        assert_eq!(w.check(0), Ok(()));
        assert_eq!(w.check(200), Ok(())); // jumps: 5 and 3 leave the window
        assert_eq!(w.check(5), Err(SecurityError::Replayed));
        assert_eq!(w.check(72), Err(SecurityError::Replayed)); // 128 below the top: too old
        assert_eq!(w.check(73), Ok(())); // 127 below: still remembered, never seen
        assert_eq!(w.check(73), Err(SecurityError::Replayed));
        assert_eq!(w.check(u32::MAX), Ok(()));
        assert_eq!(w.check(u32::MAX), Err(SecurityError::Replayed));
        assert_eq!(w.check(u32::MAX - 127), Ok(()));
        assert_eq!(w.check(200), Err(SecurityError::Replayed));
    }

    proptest! {
        /// Against a model that remembers everything: a counter is accepted iff it was never
        /// accepted and it is within the window below the highest accepted so far.
        #[test]
        fn counter_window_matches_the_model(
            steps in proptest::collection::vec((0u32..600, any::<bool>()), 1..400),
        ) {
            let mut w = CounterWindow::new(64);
            let mut seen = std::collections::HashSet::new();
            let mut top: Option<u32> = None;
            let mut base = 0u32;
            for (delta, forward) in steps {
                // Mostly increasing counters, some late ones, like a real sender.
                let c = if forward { base.saturating_add(delta % 70) } else { base.saturating_sub(delta % 90) };
                base = base.max(c);
                let fresh = !seen.contains(&c) && top.is_none_or(|t| c > t || t - c < 64);
                prop_assert_eq!(w.check(c).is_ok(), fresh, "counter {}", c);
                if fresh {
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }

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
