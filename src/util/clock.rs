//! The clock: wall-clock time in one place, so what expires (tokens, grants, counters,
//! store records) can be tested by moving time instead of sleeping.
//!
//! Owns "now". A [`Clock`] is the system clock, or a manual one that only moves when a
//! test says so. It never sleeps and never measures elapsed time (that is `Instant`'s
//! job, which no test needs to move).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time: the system's, or a manual one for tests. Cloning shares the time.
#[derive(Clone, Default)]
pub struct Clock {
    /// Unix milliseconds of a manual clock; `None` reads the system clock.
    manual: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            None => f.write_str("Clock(system)"),
            Some(ms) => write!(f, "Clock(manual at {} ms)", ms.load(Ordering::SeqCst)),
        }
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `at` until [`Clock::advance`] moves it.
    pub fn manual(at: SystemTime) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(unix_ms(at)))),
        }
    }

    /// Moves a manual clock forward; the system clock moves by itself and ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.manual {
            ms.fetch_add(
                u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
                Ordering::SeqCst,
            );
        }
    }

    /// Now, as a `SystemTime`.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(ms) => UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::SeqCst)),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            None => unix_ms(SystemTime::now()),
            Some(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Whole seconds since the Unix epoch.
    pub fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(100));
        let shared = clock.clone();
        assert_eq!(clock.now_s(), 100);
        shared.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), 101_500);
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_millis(101_500));
    }

    #[test]
    fn the_system_clock_reads_the_time() {
        let before = SystemTime::now();
        let now = Clock::system().now();
        assert!(now >= before);
    }
}
