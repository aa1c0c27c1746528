//! The one-pass scanner behind [`redact_value`](super::redact_value) and
//! [`redact_text`](super::redact_text): where emails, card numbers and secrets start and
//! end in a string, and how each is replaced.
//!
//! Owns the byte-class table, the finders (email, PAN, bearer token, JWT, API key,
//! private key block) and building the output once from the hits. It must not allocate
//! or copy a string it finds nothing in, nor look back at bytes already replaced, and it
//! never decides which detectors run: the caller's [`DetectorSet`] does.

use serde_json::Value;

use super::{DetectorSet, MASK, luhn, luhn_skipping};
use crate::config::policy::{Detector, EmailStyle, PanStyle, RedactionSpec};

/// What a hit is, for its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Pan,
    Secret,
}

/// A byte range of the scanned string to replace.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Byte classes: which detector a byte may start (or, for `@`, anchor).
const DIGIT: u8 = 1;
const AT: u8 = 2;
const SECRET: u8 = 4;

/// Which detector a byte may start (or, for `@`, anchor); for secrets, the first bytes
/// of every shape in [`secret_at`].
fn class(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => DIGIT,
        b'@' => AT,
        b'-' | b'B' | b'b' | b'e' | b'A' | b's' | b'r' | b'g' | b'x' | b'n' | b'p' => SECRET,
        _ => 0,
    }
}

/// Shortest text each detector can find something in: `a@b.co`, 13 digits,
/// `Bearer ` and an 8-character token.
const MIN_EMAIL: usize = 6;
const MIN_PAN: usize = 13;
const MIN_SECRET: usize = 15;

/// One redaction pass: detectors and style, borrowed.
pub(super) struct Scan<'a> {
    pub(super) set: DetectorSet,
    pub(super) style: &'a RedactionSpec,
}

impl Scan<'_> {
    pub(super) fn value(&self, v: &mut Value) -> usize {
        if self.set.is_empty() {
            return 0;
        }
        match v {
            Value::String(s) => match self.string(s) {
                Some((out, n)) => {
                    *s = out;
                    n
                }
                None => 0,
            },
            // Only integers of 13+ digits can be card numbers; skip the rest cheaply.
            Value::Number(n)
                if self.set.contains(Detector::Pan)
                    && n.as_u64().is_some_and(|x| x >= 1_000_000_000_000) =>
            {
                let digits = n.to_string();
                if digits.len() <= 19 && luhn(&digits) {
                    *v = Value::String(self.pan(digits.as_bytes()));
                    1
                } else {
                    0
                }
            }
            Value::Array(a) => a.iter_mut().map(|x| self.value(x)).sum(),
            Value::Object(o) => o.values_mut().map(|x| self.value(x)).sum(),
            _ => 0,
        }
    }

    /// `None` when nothing was found (and nothing copied).
    pub(super) fn string(&self, s: &str) -> Option<(String, usize)> {
        let hits = self.hits(s);
        if hits.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        let mut copied = 0;
        for h in &hits {
            out.push_str(s.get(copied..h.start).unwrap_or_default());
            let found = s.get(h.start..h.end).unwrap_or_default();
            match h.kind {
                Kind::Email => self.email(found, &mut out),
                Kind::Pan => out.push_str(&self.pan(found.as_bytes())),
                Kind::Secret => out.push_str(&self.style.secret),
            }
            copied = h.end;
        }
        out.push_str(s.get(copied..).unwrap_or_default());
        Some((out, hits.len()))
    }

    /// Every hit in `s`, in order, not overlapping.
    fn hits(&self, s: &str) -> Vec<Hit> {
        let b = s.as_bytes();
        let mut mask = 0;
        if self.set.contains(Detector::Email) && b.len() >= MIN_EMAIL {
            mask |= AT;
        }
        if self.set.contains(Detector::Pan) && b.len() >= MIN_PAN {
            mask |= DIGIT;
        }
        if self.set.contains(Detector::Secret) && b.len() >= MIN_SECRET {
            mask |= SECRET;
        }
        let mut hits = Vec::new();
        if mask == 0 {
            return hits;
        }
        // Nothing before `floor` may be part of a new hit (it is one already).
        let mut floor = 0;
        let mut i = 0;
        while let Some(skip) = b
            .get(i..)
            .and_then(|rest| rest.iter().position(|c| class(*c) & mask != 0))
        {
            i += skip;
            let found = match b.get(i).map_or(0, |c| class(*c)) & mask {
                DIGIT => {
                    let glued = i > 0 && word_at(b, i - 1);
                    match pan_at(b, i).filter(|_| !glued) {
                        Some(end) => Some((i, end, Kind::Pan)),
                        // No card starts here or inside this run of digits.
                        None => {
                            i = digits_end(b, i);
                            continue;
                        }
                    }
                }
                AT => email_at(b, i, floor).map(|(s, e)| (s, e, Kind::Email)),
                SECRET => secret_at(b, i).map(|(s, e)| (s, e, Kind::Secret)),
                _ => None,
            };
            match found {
                Some((start, end, kind)) => {
                    hits.push(Hit { start, end, kind });
                    floor = end;
                    i = end.max(i + 1);
                }
                None => i += 1,
            }
        }
        hits
    }

    fn email(&self, found: &str, out: &mut String) {
        match (self.style.email, found.split_once('@')) {
            (EmailStyle::Partial, Some((local, domain))) => {
                out.extend(local.chars().next());
                out.push_str(MASK);
                out.push('@');
                out.push_str(domain);
            }
            _ => out.push_str(MASK),
        }
    }

    /// A card number's mask from its digits (separators dropped).
    fn pan(&self, found: &[u8]) -> String {
        match self.style.pan {
            PanStyle::Full => MASK.to_owned(),
            PanStyle::Last4 => {
                let digits: Vec<u8> = found.iter().copied().filter(u8::is_ascii_digit).collect();
                let hidden = digits.len().saturating_sub(4);
                let mut out = "*".repeat(hidden);
                out.extend(digits.iter().skip(hidden).map(|d| char::from(*d)));
                out
            }
        }
    }
}

/// Letters, digits and non-ASCII bytes: what glues a number or token to a word.
fn word_at(b: &[u8], i: usize) -> bool {
    b.get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c >= 0x80)
}

fn digits_end(b: &[u8], from: usize) -> usize {
    from + run_len(b, from, |c| c.is_ascii_digit())
}

fn run_len(b: &[u8], from: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .map_or(0, |r| r.iter().take_while(|c| f(**c)).count())
}

/// A card number starting at `i` (a digit not glued to a word): 13 to 19 digits in one
/// run, or grouped by one kind of separator (space or dash) as cards are printed: a
/// first group of four, middle groups of four to six, a last group of one to six. The
/// longest grouping that passes the Luhn check wins, so `4111 1111 1111 1111 2025`
/// masks the card and keeps the year, and `2025-08-01` never groups (its second group
/// is short).
fn pan_at(b: &[u8], i: usize) -> Option<usize> {
    let run = digits_end(b, i);
    let len = run - i;
    if len >= 13 {
        let ok = len <= 19 && !word_at(b, run) && b.get(i..run).is_some_and(luhn_skipping);
        return ok.then_some(run);
    }
    let sep = match b.get(run) {
        Some(&c @ (b' ' | b'-')) if len == 4 => c,
        _ => return None,
    };
    let (mut total, mut pos, mut best) = (len, run, None);
    while b.get(pos) == Some(&sep) {
        let end = digits_end(b, pos + 1);
        let group = end - (pos + 1);
        if group == 0 || group > 6 || total + group > 19 {
            break;
        }
        total += group;
        pos = end;
        if total >= 13 && !word_at(b, end) && b.get(i..end).is_some_and(luhn_skipping) {
            best = Some(end);
        }
        if group < 4 {
            break;
        }
    }
    best
}

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || c == b'-'
}

/// An email address around the `@` at `at`: a local part back to `floor`, a domain of
/// two or more labels ending in an alphabetic top-level label of two or more letters.
/// Both ends stop at ASCII bytes, so the range is on character boundaries.
fn email_at(b: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > floor && b.get(start - 1).copied().is_some_and(local_char) {
        start -= 1;
    }
    while start < at && b.get(start) == Some(&b'.') {
        start += 1;
    }
    if start == at {
        return None;
    }
    let (mut pos, mut end, mut last_dot) = (at + 1, at + 1, None);
    while let Some(&c) = b.get(pos) {
        if domain_char(c) {
            end = pos + 1;
        } else if c == b'.'
            && end == pos
            && pos > at + 1
            && b.get(pos + 1).copied().is_some_and(domain_char)
        {
            last_dot = Some(pos);
        } else {
            break;
        }
        pos += 1;
    }
    let tld = b.get(last_dot? + 1..end)?;
    let ok = tld.len() >= 2 && tld.iter().all(|c| c.is_ascii_alphabetic() || *c >= 0x80);
    ok.then_some((start, end))
}

/// Well-known API key prefixes and the least number of `[A-Za-z0-9_-]` after them.
const KEYS: &[(&[u8], usize)] = &[
    (b"sk-", 16),
    (b"sk_live_", 16),
    (b"sk_test_", 16),
    (b"rk_live_", 16),
    (b"ghp_", 16),
    (b"gho_", 16),
    (b"ghu_", 16),
    (b"ghs_", 16),
    (b"ghr_", 16),
    (b"github_pat_", 16),
    (b"glpat-", 16),
    (b"xoxb-", 10),
    (b"xoxp-", 10),
    (b"xoxa-", 10),
    (b"xoxs-", 10),
    (b"npm_", 30),
    (b"pypi-", 30),
];

/// Fixed-length keys: AWS access key ids and Google API keys, exactly this long after
/// the prefix.
const FIXED_KEYS: &[(&[u8], usize)] = &[(b"AKIA", 16), (b"ASIA", 16), (b"AIza", 35)];

fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A secret starting at `i`: the range to replace (for a bearer token, the token only).
fn secret_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let rest = b.get(i..)?;
    if rest.starts_with(b"-----BEGIN ") {
        return private_key_at(b, i);
    }
    if i > 0 && word_at(b, i - 1) {
        return None;
    }
    if rest
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
    {
        let spaces = run_len(b, i + 6, |c| c == b' ' || c == b'\t');
        let start = i + 6 + spaces;
        let len = run_len(b, start, token_char);
        let token = b.get(start..start + len)?;
        // "the bearer instrument" is prose; in lower case, a token must look like one.
        let prose = rest.first() == Some(&b'b') && token.iter().all(u8::is_ascii_alphabetic);
        return (spaces > 0 && len >= 8 && !prose).then_some((start, start + len));
    }
    if rest.starts_with(b"eyJ") {
        // A JWT: three (or, encrypted, five) base64url parts; a trailing dot is prose.
        let mut len = run_len(b, i, |c| key_char(c) || c == b'.');
        while len > 0 && b.get(i + len - 1) == Some(&b'.') {
            len -= 1;
        }
        let jwt = b.get(i..i + len)?;
        let mut parts = jwt.split(|c| *c == b'.');
        let heads = parts.next().is_some_and(|p| !p.is_empty())
            && parts.next().is_some_and(|p| !p.is_empty());
        let dots = jwt.iter().filter(|c| **c == b'.').count();
        return (heads && dots >= 2 && len >= 20).then_some((i, i + len));
    }
    if let Some((prefix, len)) = FIXED_KEYS.iter().find(|(p, _)| rest.starts_with(p)) {
        let body = i + prefix.len();
        return (run_len(b, body, key_char) == *len).then_some((i, body + len));
    }
    let (prefix, min) = KEYS.iter().find(|(p, _)| rest.starts_with(p))?;
    let body = i + prefix.len();
    let len = run_len(b, body, key_char);
    (len >= *min).then_some((i, body + len))
}

/// A PEM private key block from its `-----BEGIN` at `i` to the end of its `-----END
/// ...-----` line, or to the end of the text when cut off. Other PEM blocks
/// (certificates, public keys) are not secrets and are skipped.
fn private_key_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    // The label is short (`ENCRYPTED PRIVATE KEY`): look no further than one line.
    let line = b.get(i..b.len().min(i + 80))?;
    let header_end = find(line, 11, b"-----")? + 5;
    let header = line.get(..header_end)?;
    if header.contains(&b'\n') || find(header, 0, b"PRIVATE KEY").is_none() {
        return None;
    }
    let end = find(b, i + header_end, b"-----END")
        .and_then(|e| find(b, e + 8, b"-----"))
        .map_or(b.len(), |e| e + 5);
    Some((i, end))
}
