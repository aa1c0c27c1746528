//! Limits: rate windows and concurrency caps, parsed once and applied per call.
//!
//! Owns the rate syntax (`60/min`) and the per-tool concurrency permits. Counting for
//! rates lives in the state store (so it survives restarts and is shared by replicas);
//! this module never decides policy and never sleeps to wait for capacity: excess calls
//! are refused at once with when to retry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A number of calls per fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
}

impl Rate {
    /// Parses `N/unit`, unit one of `s`, `sec`, `min`, `m`, `hour`, `h`, `day`, `d`.
    ///
    /// # Errors
    /// Says what form is expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid rate '{s}': write calls/window, e.g. 60/min, 10/s, 5000/day");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let limit: u64 = n.trim().parse().map_err(|_| bad())?;
        let window = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if limit == 0 {
            return Err(format!("invalid rate '{s}': the limit must be at least 1"));
        }
        Ok(Self { limit, window })
    }

    /// The index of the fixed window `now` falls in, and the time left in it.
    pub fn window_at(&self, now: SystemTime) -> (u64, Duration) {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let win = self.window.as_millis().max(1);
        let index = u64::try_from(ms / win).unwrap_or(u64::MAX);
        let left = u64::try_from(win - ms % win).unwrap_or(0);
        (index, Duration::from_millis(left))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.window.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.limit)
    }
}

/// The concurrency cap of one tool: permits held for the length of a call.
#[derive(Debug, Clone)]
pub struct Cap {
    /// The cap.
    pub max: u32,
    permits: Arc<Semaphore>,
}

impl Cap {
    /// A cap of `max` calls in flight.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX))),
        }
    }

    /// A permit, or `None` when `max` calls are already in flight.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// Samples an SLO is judged on.
const SLO_WINDOW: usize = 200;
/// Fewest samples before a p95 is judged.
const SLO_MIN_SAMPLES: usize = 20;
/// Least time between two breach warnings for one tool.
const SLO_WARN_EVERY: Duration = Duration::from_secs(60);

/// A p95 latency objective over the last calls of one tool.
#[derive(Debug)]
pub struct Slo {
    /// The objective.
    pub p95: Duration,
    recent: std::sync::Mutex<(
        std::collections::VecDeque<Duration>,
        Option<std::time::Instant>,
    )>,
}

impl Slo {
    /// An objective of `p95`.
    pub fn new(p95: Duration) -> Self {
        Self {
            p95,
            recent: std::sync::Mutex::default(),
        }
    }

    /// Adds one call's latency; warns when the recent p95 is over the objective.
    /// Returns the recent p95 once there are enough samples.
    pub fn observe(&self, tool: &str, latency: Duration) -> Option<Duration> {
        let mut guard = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (samples, last_warn) = &mut *guard;
        if samples.len() == SLO_WINDOW {
            samples.pop_front();
        }
        samples.push_back(latency);
        if samples.len() < SLO_MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        sorted.sort();
        let p95 = sorted
            .get(sorted.len() * 95 / 100)
            .copied()
            .unwrap_or_default();
        let quiet = last_warn.is_some_and(|t| t.elapsed() < SLO_WARN_EVERY);
        if p95 > self.p95 && !quiet {
            *last_warn = Some(std::time::Instant::now());
            tracing::warn!(
                tool,
                p95_ms = u64::try_from(p95.as_millis()).unwrap_or(u64::MAX),
                slo_p95_ms = u64::try_from(self.p95.as_millis()).unwrap_or(u64::MAX),
                "latency SLO breached"
            );
        }
        Some(p95)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_windows() {
        assert_eq!(
            Rate::parse("60/min"),
            Ok(Rate {
                limit: 60,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(
            Rate::parse("10/s").map(|r| r.window),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(Rate::parse("5000/day").map(|r| r.limit), Ok(5000));
        assert!(Rate::parse("60 per minute").is_err());
        assert!(Rate::parse("0/min").is_err());
        assert!(Rate::parse("5/fortnight").is_err());
    }

    #[test]
    fn window_index_and_time_left_split_the_clock() {
        let r = Rate::parse("60/min").unwrap();
        let (i, left) = r.window_at(UNIX_EPOCH + Duration::from_secs(125));
        assert_eq!(i, 2);
        assert_eq!(left, Duration::from_secs(55));
    }

    #[test]
    fn slo_judges_p95_once_there_are_enough_samples() {
        let slo = Slo::new(Duration::from_millis(100));
        for _ in 0..19 {
            assert_eq!(slo.observe("t", Duration::from_millis(10)), None);
        }
        assert_eq!(
            slo.observe("t", Duration::from_millis(10)),
            Some(Duration::from_millis(10))
        );
        for _ in 0..5 {
            slo.observe("t", Duration::from_millis(500));
        }
        assert_eq!(
            slo.observe("t", Duration::from_millis(500)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn cap_refuses_beyond_max_and_frees_on_drop() {
        let cap = Cap::new(2);
        let a = cap.try_acquire().unwrap();
        let _b = cap.try_acquire().unwrap();
        assert!(cap.try_acquire().is_none());
        drop(a);
        assert!(cap.try_acquire().is_some());
    }
}
