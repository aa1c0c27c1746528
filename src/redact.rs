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

/// Masks every email address inside free text (error messages, reasons), leaving the
/// rest as is. Returns the text and how many addresses were masked.
pub fn mask_emails_in_text(text: &str) -> (String, usize) {
    if !text.contains('@') {
        return (text.to_owned(), 0);
    }
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let before = rest.get(..at).unwrap_or_default();
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || "._%+-".contains(c)))
            .map_or(0, |i| i + 1);
        let after = rest.get(at + 1..).unwrap_or_default();
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || ".-".contains(c)))
            .unwrap_or(after.len());
        let domain = after.get(..end).unwrap_or_default().trim_end_matches('.');
        let local = before.get(start..).unwrap_or_default();
        out.push_str(before.get(..start).unwrap_or_default());
        if local.is_empty() || !domain.contains('.') {
            out.push('@');
            rest = after;
            continue;
        }
        out.push_str(&mask_str(&format!("{local}@{domain}")));
        count += 1;
        rest = after.get(domain.len()..).unwrap_or_default();
    }
    out.push_str(rest);
    (out, count)
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
    fn emails_inside_text_are_masked_and_counted() {
        let (t, n) = mask_emails_in_text(
            "'/name': \"ann@example.com\" does not match; cc bob.x@corp.example.org.",
        );
        assert_eq!(
            t,
            "'/name': \"a***@example.com\" does not match; cc b***@corp.example.org."
        );
        assert_eq!(n, 2);
        assert_eq!(
            mask_emails_in_text("no at sign"),
            ("no at sign".to_owned(), 0)
        );
        assert_eq!(mask_emails_in_text("@handle and a@b").1, 0);
    }

    #[test]
    fn null_stays_null() {
        let mut v = Value::Null;
        assert!(!mask_value(&mut v));
        assert_eq!(v, Value::Null);
    }
}
