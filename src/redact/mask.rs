//! The masked forms of one value: `j***@example.com` for an email, `***` for anything
//! else, and emails masked inside free text.
//!
//! Owns [`MASK`] and what counts as "one email address". It must not search text
//! itself (emails inside text are found by the scanner, in `scan.rs`) nor decide which
//! fields are masked: tool files name them (`response.mask`).

use serde_json::Value;

use super::redact_text;
use crate::config::policy::{Detector, RedactionSpec};

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
    redact_text(text, Detector::Email.into(), &RedactionSpec::default())
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
