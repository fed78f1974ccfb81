//! Randomness that the simulator can seed: retry jitter, client ids and
//! openraft's election timeouts all draw from here.
//!
//! Each thread has its own source. By default it is the OS-seeded
//! `rand::thread_rng`. [`seed_thread`] switches the calling thread to a
//! SplitMix64 stream: the simulator runs a whole cluster and its clients on
//! one thread, so every draw is then a function of the seed.

use std::cell::Cell;

thread_local! {
    /// SplitMix64 state of this thread's seeded stream; `None`: OS randomness.
    static SEEDED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Seeds (`Some`) or unseeds (`None`) this thread's randomness. Production
/// code never calls it.
pub fn seed_thread(seed: Option<u64>) {
    SEEDED.with(|s| s.set(seed));
}

/// A uniformly random `u64`.
pub fn next_u64() -> u64 {
    let seeded = SEEDED.with(|s| {
        let state = s.get()?.wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(Some(state));
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Some(z ^ (z >> 31))
    });
    seeded.unwrap_or_else(rand::random)
}

/// A uniformly random value in `low..=high` (`low` if `high < low`).
pub fn in_range(low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    let span = high - low;
    if span == u64::MAX {
        return next_u64();
    }
    // Rejection sampling: no modulo bias.
    let n = span + 1;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = next_u64();
        if x < zone {
            return low + x % n;
        }
    }
}

/// A `rand` RNG over this thread's source, for libraries that want one
/// (openraft's `AsyncRuntime::thread_rng`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRng;

impl rand::RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        (next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_unseed() {
        seed_thread(Some(42));
        let a: Vec<u64> = (0..5).map(|_| next_u64()).collect();
        seed_thread(Some(42));
        let b: Vec<u64> = (0..5).map(|_| next_u64()).collect();
        assert_eq!(a, b);
        seed_thread(None);
        let c: Vec<u64> = (0..5).map(|_| next_u64()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_stay_inside() {
        seed_thread(Some(7));
        for _ in 0..1000 {
            let x = in_range(10, 13);
            assert!((10..=13).contains(&x));
        }
        assert_eq!(in_range(5, 5), 5);
        assert_eq!(in_range(9, 3), 9);
        seed_thread(None);
    }
}
