//! Rates: the `calls/window` syntax (`60/min`) of tool limits and stop rules.
//!
//! Owns parsing and naming a rate and splitting the clock into its windows. Counting
//! lives in the state store (so it survives restarts and is shared by replicas).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A rate that does not parse; the message says the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not `calls/window`.
    #[error("invalid rate '{0}': write calls/window, e.g. 60/min, 10/s, 5000/day")]
    Form(String),
    /// A limit of zero.
    #[error("invalid rate '{0}': the limit must be at least 1")]
    Zero(String),
}

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
    pub fn parse(s: &str) -> Result<Self, RateError> {
        let bad = || RateError::Form(s.to_owned());
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
            return Err(RateError::Zero(s.to_owned()));
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
}
