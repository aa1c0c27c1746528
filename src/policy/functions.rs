//! The functions a condition may call besides minijinja's own (`range`, `dict`):
//! `days_between` and the calendar arithmetic under it.
//!
//! Each is a pure function of its arguments: no clock, no I/O, no state, so a condition
//! decides the same call the same way every time. A bad argument is an error (the
//! condition fails closed), never a panic or a guess.

/// Days from `a` to `b` (`YYYY-MM-DD`), for conditions like
/// `days_between(args.from, args.to) > 31`.
pub(super) fn days_between(a: String, b: String) -> Result<i64, minijinja::Error> {
    let day = |s: &str| {
        civil_day(s).ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("'{s}' is not a date (YYYY-MM-DD)"),
            )
        })
    };
    Ok(day(&b)? - day(&a)?)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian); `None` for
/// anything else, including days the month does not have.
fn civil_day(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let last = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=last).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}
