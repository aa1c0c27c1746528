//! Durations as people write them in config (`500ms`, `5s`, `2m`, `1h`, `1d`) and as
//! messages say them (`45 s`, `12 min`, `5 h 3 min`).
//!
//! Owns both forms and nothing else.

use std::time::Duration;

/// A duration that does not parse; the message says the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No leading number.
    #[error("invalid duration '{0}': expected a number and a unit, e.g. 500ms, 5s, 2m")]
    NoNumber(String),
    /// A unit other than ms, s, m, h, d.
    #[error("invalid duration '{text}': unknown unit '{unit}' (use ms, s, m, h or d)")]
    UnknownUnit {
        /// What was written.
        text: String,
        /// The unit found.
        unit: String,
    },
}

/// Parses `500ms`, `5s`, `2m`, `1h`, `1d` (a whole number and a unit).
///
/// # Errors
/// Says what form is expected.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::NoNumber(s.to_owned()))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        other => Err(DurationError::UnknownUnit {
            text: s.to_owned(),
            unit: other.to_owned(),
        }),
    }
}

/// A duration as a person says it: `45 s`, `12 min`, `5 h 3 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{} ms", d.as_millis().max(1))
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_millis(20)), "20 ms");
        assert_eq!(human(Duration::from_secs(45)), "45 s");
        assert_eq!(human(Duration::from_secs(690)), "12 min");
        assert_eq!(human(Duration::from_secs(5 * 3600 + 180)), "5 h 3 min");
    }
}
