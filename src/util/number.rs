//! Canonical JSON numbers: an integer-valued number written as a float (`1e1`, `8.0`,
//! `-0`) becomes the integer it stands for (`10`, `8`, `0`), so one value has one form.
//!
//! Owns the rule only; the engine applies it once to a call's arguments, right after
//! validation, so policy, the idempotency key and the request all see the same number.
//! A number with a fraction, or too large for 64 bits, is left as it is.

use serde_json::{Number, Value};

/// Rewrites every integer-valued float in `v` (keys are strings, left alone) as an
/// integer; returns how many numbers changed.
pub fn canonical_numbers(v: &mut Value) -> usize {
    match v {
        Value::Number(n) => match canonical(n) {
            Some(int) => {
                *n = int;
                1
            }
            None => 0,
        },
        Value::Array(a) => a.iter_mut().map(canonical_numbers).sum(),
        Value::Object(o) => o.values_mut().map(canonical_numbers).sum(),
        _ => 0,
    }
}

/// The integer an integer-valued float stands for; `None` when `n` is already an
/// integer, has a fraction, or does not fit 64 bits.
fn canonical(n: &Number) -> Option<Number> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    // Both bounds are powers of two, exactly representable: no rounding at the edges.
    const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    // Integral and in range, so the casts are exact; -0.0 is not below 0.0 and becomes 0.
    if (I64_MIN..0.0).contains(&f) {
        return Some(Number::from(f as i64));
    }
    if (0.0..U64_END).contains(&f) {
        return Some(Number::from(f as u64));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn integer_valued_floats_become_integers() {
        let mut v = parse(r#"{"a": 1e1, "b": -0, "c": 8.0, "d": [2.5, -3.0, 1e19], "e": 7}"#);
        assert_eq!(canonical_numbers(&mut v), 5);
        assert_eq!(
            v.to_string(),
            r#"{"a":10,"b":0,"c":8,"d":[2.5,-3,10000000000000000000],"e":7}"#
        );
    }

    #[test]
    fn fractions_and_numbers_beyond_64_bits_are_left_alone() {
        let mut v = json!([0.5, 1e300, -1e19, 18446744073709551616.0]);
        let before = v.clone();
        assert_eq!(canonical_numbers(&mut v), 0);
        assert_eq!(v, before);
    }
}
