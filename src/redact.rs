//! Masking: turns sensitive values into shapes a model can still reason about.
//!
//! Owns the masked forms (`j***@example.com`, `***`). It decides nothing about *what*
//! is sensitive: tool files name fields (`response.mask`), policy adds detectors.

use serde_json::Value;

/// The replacement for a value that has no safe partial form.
pub const MASK: &str = "***";

/// Masks one value: an email keeps its first character and its domain; every other
/// scalar, object or list becomes `***`. Returns true when something was masked.
pub fn mask_value(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => {
            let masked = mask_str(s);
            let changed = masked != *s;
            *s = masked;
            changed
        }
        other => {
            *other = Value::String(MASK.to_owned());
            true
        }
    }
}

/// Masks a string: emails as `j***@example.com`, anything else as `***`.
pub fn mask_str(s: &str) -> String {
    match email_parts(s) {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}{MASK}@{domain}")
        }
        None if s.is_empty() => String::new(),
        None => MASK.to_owned(),
    }
}

/// The local part and domain of a string that is one email address.
fn email_parts(s: &str) -> Option<(&str, &str)> {
    let (local, domain) = s.trim().split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !local.contains(char::is_whitespace)
        && !domain.contains(|c: char| c.is_whitespace() || c == '@');
    ok.then_some((local, domain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_keep_first_letter_and_domain() {
        assert_eq!(mask_str("jane.doe@example.com"), "j***@example.com");
    }

    #[test]
    fn non_emails_are_fully_masked() {
        assert_eq!(mask_str("4111111111111111"), "***");
        let mut v = json!(4111111111111111u64);
        assert!(mask_value(&mut v));
        assert_eq!(v, json!("***"));
    }

    #[test]
    fn null_stays_null() {
        let mut v = Value::Null;
        assert!(!mask_value(&mut v));
        assert_eq!(v, Value::Null);
    }
}
