//! Latency objectives: a tool's `slo.p95`, judged over its recent calls.
//!
//! Owns the sample window and the breach warning (at most one a minute per tool). It
//! never refuses a call: a breach is reported, not enforced.

use std::time::Duration;

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
}
