//! The local clock that lease deadlines are measured on.
//!
//! Lease safety (DESIGN.md) assumes every clock runs at a rate within
//! `1 ± ρ` of real time; the client's deadline margin `TTL·(1−2ρ)` exists
//! because of it. To test that margin the simulator must give each node and
//! each client its own clock, running fast or slow or jumping, while the
//! whole simulation shares one (paused, virtual) tokio clock. This type is
//! that seam: the real clock is exactly `tokio::time::Instant::now()`; a
//! drifting clock maps true time to local time piecewise linearly.
//!
//! Local times are represented as `tokio::time::Instant`s, so code reads
//! the same in both worlds. The one rule: a local instant is only compared
//! with other instants of the same clock, and waited for with
//! [`Clock::sleep_until`], never with `tokio::time::sleep_until`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Parts per million: the unit of drift.
const PPM: i128 = 1_000_000;

/// A node's or client's local clock. Cheap to clone; clones share the clock.
#[derive(Clone, Default)]
pub struct Clock {
    drift: Option<Arc<Drift>>,
}

struct Drift {
    segment: Mutex<Segment>,
    /// Wakes sleepers when the rate changes or the clock jumps.
    changed: Notify,
    /// Wall-clock milliseconds at `origin`.
    epoch_ms: u64,
    /// Local time at which the wall clock read `epoch_ms`.
    origin: Instant,
}

/// Local time runs at `1 + ppm/10⁶` times true time since `true_base`.
#[derive(Clone, Copy)]
struct Segment {
    true_base: Instant,
    local_base: Instant,
    ppm: i64,
}

impl Segment {
    fn local_at(&self, true_now: Instant) -> Instant {
        let elapsed = true_now.saturating_duration_since(self.true_base).as_nanos() as i128;
        let local = elapsed * (PPM + self.ppm as i128) / PPM;
        self.local_base + Duration::from_nanos(local.max(0) as u64)
    }

    /// The true instant at which this segment's local clock reads `local`
    /// (now or later: a local time already passed maps to `true_now`).
    ///
    /// Rounded up, so that the clock reads at least `local` then:
    /// `local_at` rounds down, and a `true_at` rounded down as well could
    /// name the present for a deadline the clock reads a nanosecond short
    /// of, and `sleep_until` would wake at once, again and again, without
    /// simulated time ever moving (found with `roster-sim
    /// --background-leases 30`, seed 266: the run never ended).
    fn true_at(&self, local: Instant, true_now: Instant) -> Instant {
        let ahead = local.saturating_duration_since(self.local_base).as_nanos() as i128;
        let rate = PPM + self.ppm as i128;
        let true_ns = (ahead * PPM + rate - 1) / rate;
        (self.true_base + Duration::from_nanos(true_ns.max(0) as u64)).max(true_now)
    }
}

impl Clock {
    /// The real clock: tokio's monotonic time and the system's wall clock.
    pub fn real() -> Self {
        Self::default()
    }

    /// A clock that starts at true time now, reading `epoch_ms` on its wall
    /// clock, and runs `ppm` parts per million fast (negative: slow).
    pub fn drifting(ppm: i64, epoch_ms: u64) -> Self {
        let now = Instant::now();
        Self {
            drift: Some(Arc::new(Drift {
                segment: Mutex::new(Segment {
                    true_base: now,
                    local_base: now,
                    ppm,
                }),
                changed: Notify::new(),
                epoch_ms,
                origin: now,
            })),
        }
    }

    /// Whether this is the real clock.
    pub fn is_real(&self) -> bool {
        self.drift.is_none()
    }

    /// Local monotonic time now.
    pub fn now(&self) -> Instant {
        match &self.drift {
            None => Instant::now(),
            Some(d) => d.segment().local_at(Instant::now()),
        }
    }

    /// Local wall-clock time in milliseconds since the Unix epoch (what a
    /// leader stamps on the commands it proposes).
    pub fn wall_ms(&self) -> u64 {
        match &self.drift {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Some(d) => {
                let local = d.segment().local_at(Instant::now());
                d.epoch_ms + local.saturating_duration_since(d.origin).as_millis() as u64
            }
        }
    }

    /// Waits until this clock reads `deadline` (a local instant).
    pub async fn sleep_until(&self, deadline: Instant) {
        let Some(d) = &self.drift else {
            return tokio::time::sleep_until(deadline).await;
        };
        loop {
            let changed = d.changed.notified();
            let now = Instant::now();
            let segment = *d.segment();
            if segment.local_at(now) >= deadline {
                return;
            }
            let wake = segment.true_at(deadline, now);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = changed => {}
            }
        }
    }

    /// Waits for `duration` of this clock's time.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now() + duration).await;
    }

    /// The true (tokio) instant at which this clock will read `local`, as
    /// far as its current rate tells; now if that has passed. For checkers
    /// that judge local beliefs in true time.
    pub fn true_instant_of(&self, local: Instant) -> Instant {
        match &self.drift {
            None => local,
            Some(d) => d.segment().true_at(local, Instant::now()),
        }
    }

    /// Changes the drift from now on (simulated clocks only; the real clock
    /// ignores it).
    pub fn set_ppm(&self, ppm: i64) {
        if let Some(d) = &self.drift {
            let now = Instant::now();
            let mut s = d.segment();
            let local = s.local_at(now);
            *s = Segment {
                true_base: now,
                local_base: local,
                ppm,
            };
            drop(s);
            d.changed.notify_waiters();
        }
    }

    /// Current drift in parts per million (0 for the real clock).
    pub fn ppm(&self) -> i64 {
        self.drift.as_ref().map_or(0, |d| d.segment().ppm)
    }

    /// Steps the clock by `by`, forward or (`forward == false`) back:
    /// something no monotonic clock should do, which the simulator uses to
    /// show what breaks when the drift bound does not hold.
    pub fn jump(&self, by: Duration, forward: bool) {
        if let Some(d) = &self.drift {
            let now = Instant::now();
            let mut s = d.segment();
            let local = s.local_at(now);
            let local = if forward {
                local + by
            } else {
                local.checked_sub(by).unwrap_or(local)
            };
            *s = Segment {
                true_base: now,
                local_base: local,
                ppm: s.ppm,
            };
            drop(s);
            d.changed.notify_waiters();
        }
    }
}

impl Drift {
    fn segment(&self) -> MutexGuard<'_, Segment> {
        self.segment.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.drift {
            None => f.write_str("Clock(real)"),
            Some(d) => write!(f, "Clock(drift {} ppm)", d.segment().ppm),
        }
    }
}

/// Clocks are equal when they are the same clock.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        match (&self.drift, &other.drift) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn real_clock_is_tokio_time() {
        let c = Clock::real();
        let t0 = c.now();
        c.sleep(Duration::from_secs(3)).await;
        assert_eq!(c.now() - t0, Duration::from_secs(3));
        assert_eq!(c.true_instant_of(t0), t0);
    }

    /// The clock reads at least `local` at `true_at(local)`, for any rate
    /// and distance (a deadline a nanosecond ahead included).
    #[test]
    fn true_at_never_names_an_instant_before_the_deadline() {
        let base = Instant::now();
        for ppm in [-150_000, -18_510, -1, 0, 1, 18_256, 150_000] {
            let s = Segment {
                true_base: base,
                local_base: base,
                ppm,
            };
            for ns in (0..2_000u64).chain((1..200).map(|k| k * 7_919_131)) {
                let local = base + Duration::from_nanos(ns);
                let t = s.true_at(local, base);
                assert!(s.local_at(t) >= local, "ppm {ppm}, {ns} ns");
                // And not later than needed: a nanosecond earlier reads less.
                if t > base {
                    assert!(s.local_at(t - Duration::from_nanos(1)) < local, "ppm {ppm}, {ns} ns");
                }
            }
        }
    }

    /// A drifting clock's wait for a deadline a nanosecond ahead ends, and
    /// the clock then reads at least the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_a_nanosecond_ahead_is_reached() {
        for ppm in [-18_510, 18_256, 99_999] {
            let c = Clock::drifting(ppm, 0);
            tokio::time::sleep(Duration::from_millis(1_234)).await;
            let deadline = c.now() + Duration::from_nanos(1);
            tokio::time::timeout(Duration::from_secs(1), c.sleep_until(deadline))
                .await
                .unwrap_or_else(|_| panic!("ppm {ppm}: never woke"));
            assert!(c.now() >= deadline);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_clock_takes_longer_to_reach_a_deadline() {
        // 10% slow: 9 local seconds take 10 true seconds.
        let c = Clock::drifting(-100_000, 1_000);
        let true0 = Instant::now();
        let local0 = c.now();
        c.sleep(Duration::from_secs(9)).await;
        let took = Instant::now() - true0;
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_millis(10_001),
            "{took:?}"
        );
        assert!(c.now() - local0 >= Duration::from_secs(9));
        assert_eq!(c.wall_ms(), 1_000 + 9_000);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_clock_and_rate_change() {
        let c = Clock::drifting(500_000, 0); // 1.5×
        let true0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(c.wall_ms(), 3_000);
        c.set_ppm(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(c.wall_ms(), 4_000);
        assert_eq!(Instant::now() - true0, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_jump_wakes_sleepers() {
        let c = Clock::drifting(0, 0);
        let deadline = c.now() + Duration::from_secs(10);
        let sleeper = tokio::spawn({
            let c = c.clone();
            async move {
                c.sleep_until(deadline).await;
                Instant::now()
            }
        });
        let true0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.jump(Duration::from_secs(20), true);
        let woke = sleeper.await.unwrap();
        assert_eq!(woke - true0, Duration::from_secs(1));
        c.jump(Duration::from_secs(5), false);
        assert_eq!(c.wall_ms(), 16_000);
    }

    #[test]
    fn equality_is_identity() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Clock::drifting(0, 0);
            assert_eq!(a, a.clone());
            assert_ne!(a, Clock::drifting(0, 0));
            assert_eq!(Clock::real(), Clock::real());
        });
    }
}
