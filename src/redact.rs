//! Masking and redaction: sensitive values turned into shapes a model can still use.
//!
//! Owns the masked forms (`j***@example.com`, `************1111`, `[REDACTED]`) and the
//! detectors that find emails, payment card numbers (Luhn-checked, so order ids stay)
//! and secrets (bearer tokens, JWTs, API keys, private keys) inside any string. It
//! decides nothing about *where* to look: tool files name fields (`response.mask`),
//! policy rules choose detectors for results, and logs and audit always get all three.
//! Strings with nothing to find are not copied: a cheap pre-scan comes first.

use serde_json::Value;

use crate::config::policy::{Detector, EmailStyle, PanStyle, RedactionSpec};

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

/// Which detectors to run, and how to replace what they find.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    email: bool,
    pan: bool,
    secret: bool,
    style: RedactionSpec,
}

/// Key prefixes of well-known API tokens; the token runs on in `[A-Za-z0-9_-]`.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_live_",
    "rk_live_",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "glpat-",
];

impl Redactor {
    /// A redactor running `detectors` with `style`.
    pub fn new(detectors: impl IntoIterator<Item = Detector>, style: &RedactionSpec) -> Self {
        let mut r = Self {
            style: style.clone(),
            ..Self::default()
        };
        for d in detectors {
            match d {
                Detector::Email => r.email = true,
                Detector::Pan => r.pan = true,
                Detector::Secret => r.secret = true,
            }
        }
        r
    }

    /// All three detectors, default style: for logs, traces and the audit log.
    pub fn all() -> Self {
        Self::new(
            [Detector::Email, Detector::Pan, Detector::Secret],
            &RedactionSpec::default(),
        )
    }

    /// Whether any detector is on.
    pub fn is_active(&self) -> bool {
        self.email || self.pan || self.secret
    }

    /// Redacts every string (and card-number-shaped integer) in `v`; returns how many
    /// values were replaced.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        if !self.is_active() {
            return 0;
        }
        match v {
            Value::String(s) => match self.redact_str(s) {
                Some((out, n)) => {
                    *s = out;
                    n
                }
                None => 0,
            },
            // Only integers of 13+ digits can be card numbers; skip the rest cheaply.
            Value::Number(n) if self.pan && n.as_u64().is_some_and(|x| x >= 1_000_000_000_000) => {
                let digits = n.to_string();
                if (13..=19).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && luhn(&digits)
                {
                    *v = Value::String(self.mask_pan(&digits));
                    1
                } else {
                    0
                }
            }
            Value::Array(a) => a.iter_mut().map(|x| self.redact_value(x)).sum(),
            Value::Object(o) => o.values_mut().map(|x| self.redact_value(x)).sum(),
            _ => 0,
        }
    }

    /// Redacts free text (messages, reasons); returns the text and the count.
    pub fn redact_text(&self, s: &str) -> (String, usize) {
        self.redact_str(s).unwrap_or_else(|| (s.to_owned(), 0))
    }

    /// `None` when nothing was found (and nothing copied).
    fn redact_str(&self, s: &str) -> Option<(String, usize)> {
        let bytes = s.as_bytes();
        let maybe_email = self.email && bytes.contains(&b'@');
        let maybe_pan = self.pan
            && bytes.len() >= 13
            && bytes.iter().filter(|b| b.is_ascii_digit()).count() >= 13;
        let maybe_secret = self.secret && may_hold_secret(s);
        if !(maybe_email || maybe_pan || maybe_secret) {
            return None;
        }
        let mut text = s.to_owned();
        let mut count = 0;
        if maybe_secret {
            let (t, n) = redact_secrets(&text, &self.style.secret);
            text = t;
            count += n;
        }
        if maybe_pan {
            let (t, n) = self.redact_pans(&text);
            text = t;
            count += n;
        }
        if maybe_email {
            let (t, n) = match self.style.email {
                EmailStyle::Partial => mask_emails_in_text(&text),
                EmailStyle::Full => replace_emails(&text),
            };
            text = t;
            count += n;
        }
        (count > 0).then_some((text, count))
    }

    fn mask_pan(&self, digits: &str) -> String {
        match self.style.pan {
            PanStyle::Full => MASK.to_owned(),
            PanStyle::Last4 => {
                let keep = digits
                    .get(digits.len().saturating_sub(4)..)
                    .unwrap_or_default();
                format!("{}{keep}", "*".repeat(digits.len().saturating_sub(4)))
            }
        }
    }

    /// Card numbers: 13 to 19 digits, optionally grouped by single spaces or dashes,
    /// not glued to letters or other digits, passing the Luhn check.
    fn redact_pans(&self, s: &str) -> (String, usize) {
        // Digits and separators are ASCII, so byte offsets are char boundaries here.
        let b = s.as_bytes();
        let alnum = |i: usize| {
            b.get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c >= 0x80)
        };
        let mut out = String::with_capacity(s.len());
        let mut count = 0;
        let mut copied = 0;
        let mut i = 0;
        while i < b.len() {
            let starts = b.get(i).is_some_and(u8::is_ascii_digit) && (i == 0 || !alnum(i - 1));
            if !starts {
                i += 1;
                continue;
            }
            let mut j = i;
            let mut digits = String::new();
            let mut end = i;
            while let Some(&c) = b.get(j) {
                if c.is_ascii_digit() {
                    digits.push(char::from(c));
                    end = j + 1;
                    j += 1;
                } else if (c == b' ' || c == b'-')
                    && b.get(j + 1).is_some_and(u8::is_ascii_digit)
                    && digits.len() < 19
                {
                    j += 1;
                } else {
                    break;
                }
            }
            if (13..=19).contains(&digits.len()) && !alnum(end) && luhn(&digits) {
                out.push_str(s.get(copied..i).unwrap_or_default());
                out.push_str(&self.mask_pan(&digits));
                copied = end;
                count += 1;
            }
            i = end.max(i + 1);
        }
        out.push_str(s.get(copied..).unwrap_or_default());
        (out, count)
    }
}

/// The Luhn check over a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Every prefix a secret detector starts from; the pre-scan looks for these only.
const SECRET_STARTS: &[&str] = &["Bearer ", "bearer ", "eyJ", "-----BEGIN", "AKIA"];

/// One pass over the bytes: could `s` hold a secret?
fn may_hold_secret(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, c)| {
        matches!(
            c,
            b'B' | b'b' | b'e' | b'-' | b'A' | b's' | b'r' | b'g' | b'x'
        ) && b.get(i..).is_some_and(|rest| {
            SECRET_STARTS
                .iter()
                .chain(KEY_PREFIXES)
                .any(|p| rest.starts_with(p.as_bytes()))
        })
    })
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

/// Replaces private key blocks, bearer tokens, JWTs and prefixed API keys.
fn redact_secrets(s: &str, replacement: &str) -> (String, usize) {
    let mut text = s.to_owned();
    let mut count = 0;
    // PEM private keys, whole block.
    while let Some(start) = text.find("-----BEGIN") {
        let Some(header_end) = text
            .get(start + 10..)
            .and_then(|r| r.find("-----"))
            .map(|e| start + 10 + e + 5)
        else {
            break;
        };
        let header = text.get(start..header_end).unwrap_or_default();
        if !header.contains("PRIVATE KEY") {
            break;
        }
        let end = text
            .get(header_end..)
            .and_then(|r| r.find("-----END"))
            .and_then(|e| {
                text.get(header_end + e + 8..)
                    .and_then(|r| r.find("-----"))
                    .map(|f| header_end + e + 8 + f + 5)
            })
            .unwrap_or(text.len());
        text.replace_range(start..end, replacement);
        count += 1;
    }
    // Bearer tokens: keep the scheme, drop the credential.
    for scheme in ["Bearer ", "bearer "] {
        let mut from = 0;
        while let Some(at) = text
            .get(from..)
            .and_then(|r| r.find(scheme))
            .map(|i| i + from)
        {
            let tok_start = at + scheme.len();
            let tok_len = text.get(tok_start..).map_or(0, |r| {
                r.find(|c: char| !is_token_char(c)).unwrap_or(r.len())
            });
            if tok_len >= 8 && text.get(tok_start..tok_start + tok_len) != Some(replacement) {
                text.replace_range(tok_start..tok_start + tok_len, replacement);
                count += 1;
            }
            from = tok_start + replacement.len().min(text.len() - tok_start);
        }
    }
    // JWTs: eyJ<b64url>.<b64url>.<b64url>
    let mut from = 0;
    while let Some(at) = text
        .get(from..)
        .and_then(|r| r.find("eyJ"))
        .map(|i| i + from)
    {
        let len = text.get(at..).map_or(0, |r| {
            r.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .unwrap_or(r.len())
        });
        let candidate = text.get(at..at + len).unwrap_or_default();
        if candidate.split('.').filter(|p| !p.is_empty()).count() >= 2
            && candidate.matches('.').count() == 2
            && len >= 20
        {
            text.replace_range(at..at + len, replacement);
            count += 1;
            from = at + replacement.len();
        } else {
            from = at + 3;
        }
    }
    // Prefixed API keys and AWS access key ids.
    for prefix in KEY_PREFIXES.iter().chain(std::iter::once(&"AKIA")) {
        let mut from = 0;
        while let Some(at) = text
            .get(from..)
            .and_then(|r| r.find(prefix))
            .map(|i| i + from)
        {
            let glued = text
                .get(..at)
                .and_then(|b| b.chars().next_back())
                .is_some_and(|c| c.is_ascii_alphanumeric());
            let body = at + prefix.len();
            let len = text.get(body..).map_or(0, |r| {
                r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(r.len())
            });
            let long_enough = if *prefix == "AKIA" {
                len == 16
            } else {
                len >= 16
            };
            if !glued && long_enough {
                text.replace_range(at..body + len, replacement);
                count += 1;
                from = at + replacement.len();
            } else {
                from = body;
            }
        }
    }
    (text, count)
}

/// Replaces whole email addresses with `***`.
fn replace_emails(s: &str) -> (String, usize) {
    let (masked, n) = mask_emails_in_text(s);
    if n == 0 {
        return (masked, 0);
    }
    // Partial masks look like x***@domain: widen each to ***.
    let mut out = String::with_capacity(masked.len());
    for word in masked.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        if word.contains("***@") {
            let trail: String = word
                .chars()
                .rev()
                .take_while(|c| c.is_whitespace() || *c == '"' || *c == '\'')
                .collect();
            out.push_str(MASK);
            out.extend(trail.chars().rev());
        } else {
            out.push_str(word);
        }
    }
    (out, n)
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

    fn all() -> Redactor {
        Redactor::all()
    }

    #[test]
    fn luhn_valid_cards_keep_their_last_four() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
        ] {
            let (t, n) = all().redact_text(&format!("card {card} on file"));
            assert_eq!(
                (t.as_str(), n),
                ("card ************1111 on file", 1),
                "{card}"
            );
        }
    }

    #[test]
    fn numbers_failing_luhn_are_left_alone() {
        let (t, n) = all().redact_text("order 4111111111111112 and id 1234567890123");
        assert_eq!(n, 0);
        assert_eq!(t, "order 4111111111111112 and id 1234567890123");
        let mut v = json!({"id": 4111111111111112u64, "card": 4111111111111111u64});
        assert_eq!(all().redact_value(&mut v), 1);
        assert_eq!(
            v,
            json!({"id": 4111111111111112u64, "card": "************1111"})
        );
    }

    #[test]
    fn secrets_are_replaced() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let cases = [
            (
                "Authorization: Bearer abcdef123456789".to_owned(),
                "Authorization: Bearer [REDACTED]",
            ),
            (format!("token={jwt};"), "token=[REDACTED];"),
            (
                "key sk-live1234567890abcdefXYZ here".to_owned(),
                "key [REDACTED] here",
            ),
            ("aws AKIAIOSFODNN7EXAMPLE".to_owned(), "aws [REDACTED]"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----".to_owned(),
                "[REDACTED]",
            ),
        ];
        for (input, want) in cases {
            let (t, n) = all().redact_text(&input);
            assert_eq!(t, want, "{input}");
            assert_eq!(n, 1, "{input}");
        }
    }

    #[test]
    fn emails_in_values_are_masked_per_style() {
        let mut v = json!({"who": "Contact ann@example.com now", "n": 3});
        assert_eq!(all().redact_value(&mut v), 1);
        assert_eq!(v["who"], "Contact a***@example.com now");
        let full = Redactor::new(
            [Detector::Email],
            &RedactionSpec {
                email: EmailStyle::Full,
                ..RedactionSpec::default()
            },
        );
        let (t, _) = full.redact_text("mail ann@example.com.");
        assert_eq!(t, "mail ***");
    }

    #[test]
    fn nothing_to_find_changes_nothing() {
        let mut v = json!({"a": "plain text", "b": [1, 2, 3], "c": "2025-08-01"});
        let before = v.clone();
        assert_eq!(all().redact_value(&mut v), 0);
        assert_eq!(v, before);
    }

    #[test]
    fn null_stays_null() {
        let mut v = Value::Null;
        assert!(!mask_value(&mut v));
        assert_eq!(v, Value::Null);
    }
}
