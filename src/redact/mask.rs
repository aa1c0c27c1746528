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
        Value::String(s) => mask_string(s),
        other => {
            *other = Value::String(MASK.to_owned());
            true
        }
    }
}

/// Masks a string: emails as `j***@example.com`, anything else as `***`.
pub fn mask_str(s: &str) -> String {
    let mut masked = s.to_owned();
    mask_string(&mut masked);
    masked
}

/// [`mask_str`] where the string lies: an email is edited in place (no new string per
/// address), anything else replaced. Returns true when it changed.
fn mask_string(s: &mut String) -> bool {
    let Some((local, domain)) = email_parts(s) else {
        if s.is_empty() || s == MASK {
            return false;
        }
        MASK.clone_into(s);
        return true;
    };
    // email_parts trims, so the local part starts after the leading whitespace.
    let lead = s.len() - s.trim_start().len();
    let first = local.chars().next().map_or(0, char::len_utf8);
    let (keep, at) = (lead + first, lead + local.len());
    let end = at + 1 + domain.len();
    if lead == 0 && end == s.len() && &s[keep..at] == MASK {
        return false;
    }
    s.truncate(end);
    s.replace_range(keep..at, MASK);
    s.drain(..lead);
    true
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
