//! The one-pass scanner behind [`redact_value`](super::redact_value) and
//! [`redact_text`](super::redact_text): where emails, card numbers, secrets and known
//! secret values start and end in a string or an object key, and how each is replaced.
//!
//! Owns the byte-class table, the email finder, merging hits and building the output
//! once from them; cards are found by `pan.rs`, secret shapes by `secret.rs`, known
//! values by `known.rs`, and a string holding `%XX` escapes is scanned decoded
//! (`percent.rs`). It must not allocate or copy a string it finds nothing in, nor look
//! back at bytes already replaced, and it never decides which detectors run: the
//! caller's [`DetectorSet`] does (known values are always scrubbed).

use serde_json::{Map, Number, Value};

use super::known::{self, Known};
use super::pan::{self, pan_at, run_end};
use super::secret::secret_at;
use super::{DetectorSet, MASK, luhn, percent};
use crate::config::policy::{Detector, EmailStyle, PanStyle, RedactionSpec};

/// What a hit is, for its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Pan,
    Secret,
    /// The known value at this index.
    Known(usize),
}

/// A byte range of the scanned bytes to replace.
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
/// of every shape in `secret.rs`.
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

/// One redaction pass: detectors, style and the known secret values, borrowed.
pub(super) struct Scan<'a> {
    pub(super) set: DetectorSet,
    pub(super) style: &'a RedactionSpec,
    pub(super) known: &'a [Known],
}

impl Scan<'_> {
    pub(super) fn value(&self, v: &mut Value) -> usize {
        if self.set.is_empty() && self.known.is_empty() {
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
            Value::Number(n) if self.set.contains(Detector::Pan) => match card_number(n) {
                Some(digits) => {
                    *v = Value::String(self.pan(digits.as_bytes()));
                    1
                }
                None => 0,
            },
            Value::Array(a) => a.iter_mut().map(|x| self.value(x)).sum(),
            Value::Object(o) => self.object(o),
            _ => 0,
        }
    }

    /// An object's values, then its keys: a key holding an email or a card is rebuilt
    /// (a key that masks to one already present gets ` (2)`, ` (3)`, ... so no value is
    /// lost). An object whose keys hold nothing is not rebuilt.
    fn object(&self, o: &mut Map<String, Value>) -> usize {
        let mut n: usize = o.values_mut().map(|x| self.value(x)).sum();
        if !o.keys().any(|k| self.string(k).is_some()) {
            return n;
        }
        for (key, value) in std::mem::take(o) {
            let key = match self.string(&key) {
                Some((masked, found)) => {
                    n += found;
                    masked
                }
                None => key,
            };
            insert_unique(o, key, value);
        }
        n
    }

    /// `None` when nothing was found (and nothing copied).
    pub(super) fn string(&self, s: &str) -> Option<(String, usize)> {
        let b = s.as_bytes();
        // Shorter than the shortest thing to find (an email, a known value); decoding
        // only makes text shorter.
        if b.len() < MIN_EMAIL.min(known::MIN_KNOWN) {
            return None;
        }
        let hits = self.hits(b);
        if !percent::has_escape(b) {
            if hits.is_empty() {
                return None;
            }
            let found = |h: &Hit| b.get(h.start..h.end).unwrap_or_default();
            let out = hits
                .iter()
                .map(|h| (h.start, h.end, self.replacement(h.kind, found(h))));
            return Some(build(s, out));
        }
        // Escaped text is scanned twice, as written and decoded (`jane%40example.com`),
        // and a hit in the decoded bytes replaces the escapes it came from.
        let (decoded, origin) = percent::decode(b);
        let at = |i: usize| origin.get(i).copied().unwrap_or(b.len());
        let mut all: Vec<(usize, usize, String)> = Vec::new();
        for h in &hits {
            let found = b.get(h.start..h.end).unwrap_or_default();
            all.push((h.start, h.end, self.replacement(h.kind, found)));
        }
        for h in self.hits(&decoded) {
            let found = decoded.get(h.start..h.end).unwrap_or_default();
            all.push((at(h.start), at(h.end), self.replacement(h.kind, found)));
        }
        if all.is_empty() {
            return None;
        }
        all.sort_by_key(|(start, end, _)| (*start, std::cmp::Reverse(*end)));
        let mut merged: Vec<(usize, usize, String)> = Vec::with_capacity(all.len());
        for (start, end, rep) in all {
            match merged.last_mut() {
                // Overlapping hits become one, replaced by the wider one's mask.
                Some(last) if start < last.1 => {
                    if end - start > last.1 - last.0 {
                        last.2 = rep;
                    }
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end, rep)),
            }
        }
        Some(build(s, merged.into_iter()))
    }

    /// What replaces `found`, a hit of `kind`.
    fn replacement(&self, kind: Kind, found: &[u8]) -> String {
        match kind {
            Kind::Email => self.email(found),
            Kind::Pan => self.pan(found),
            Kind::Secret => self.style.secret.clone(),
            Kind::Known(i) => self.known.get(i).map_or(MASK, |k| &k.label).to_owned(),
        }
    }

    /// Every hit in `b`, in order, not overlapping: the detectors', then the known
    /// values' merged in (a known value overlapping a detector's hit replaces both).
    fn hits(&self, b: &[u8]) -> Vec<Hit> {
        let mut hits = self.detected(b);
        let mut found = Vec::new();
        known::find_all(self.known, b, &mut found);
        if found.is_empty() {
            return hits;
        }
        hits.extend(found.into_iter().map(|(start, end, i)| Hit {
            start,
            end,
            kind: Kind::Known(i),
        }));
        hits.sort_by_key(|h| h.start);
        let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
        for h in hits {
            match merged.last_mut() {
                Some(last) if h.start < last.end => {
                    last.end = last.end.max(h.end);
                    if matches!(h.kind, Kind::Known(_)) && !matches!(last.kind, Kind::Known(_)) {
                        last.kind = h.kind;
                    }
                }
                _ => merged.push(h),
            }
        }
        merged
    }

    /// The detectors' hits in `b`, in order, not overlapping.
    fn detected(&self, b: &[u8]) -> Vec<Hit> {
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
        let mut hits: Vec<Hit> = Vec::new();
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
                    let card = pan_at(b, i);
                    // Digits inside a trace id or a digest are no card.
                    match (card, card.and_then(|_| digest_end(b, i))) {
                        (_, Some(end)) => {
                            i = end;
                            continue;
                        }
                        (Some(end), None) => Some((i, end, Kind::Pan)),
                        // No card starts here or inside this run of digits.
                        (None, _) => {
                            i = run_end(b, i);
                            continue;
                        }
                    }
                }
                AT => {
                    // An address whose local part runs back into the previous address
                    // or card number (`a@b.jane@example.com`, `4111111111111111@x.co`)
                    // is one hit with it, masked as an address, so neither survives and
                    // the mask is not an address again.
                    let last = hits
                        .last()
                        .filter(|h| matches!(h.kind, Kind::Email | Kind::Pan) && h.end == floor);
                    let back_to = last.map_or(floor, |h| h.start);
                    match email_at(b, i, back_to) {
                        Some((start, end)) if start < floor => {
                            if let Some(last) = hits.last_mut() {
                                last.end = end;
                                last.kind = Kind::Email;
                            }
                            floor = end;
                            i = end.max(i + 1);
                            continue;
                        }
                        other => other.map(|(s, e)| (s, e, Kind::Email)),
                    }
                }
                SECRET => secret_at(b, i).map(|(s, e)| (s, e, Kind::Secret)),
                _ => None,
            };
            // The partial mask keeps an address's domain, so a card number that starts
            // in it (`a@x4111 1111 1111 1111`) is a hit of its own and the address ends
            // where the card starts.
            let card = match found {
                Some((_, end, Kind::Email)) if mask & DIGIT != 0 => card_in(b, i + 1, end),
                _ => None,
            };
            match (found, card) {
                (Some((start, _, _)), Some((card, card_end))) => {
                    hits.push(Hit {
                        start,
                        end: card,
                        kind: Kind::Email,
                    });
                    hits.push(Hit {
                        start: card,
                        end: card_end,
                        kind: Kind::Pan,
                    });
                    floor = card_end;
                    i = card_end.max(i + 1);
                }
                (Some((start, end, kind)), None) => {
                    hits.push(Hit { start, end, kind });
                    floor = end;
                    i = end.max(i + 1);
                }
                (None, _) => i += 1,
            }
        }
        hits
    }

    /// An address's mask: its first character, `***`, `@` and the domain after its
    /// last `@` (`partial`), or `***` (`full`).
    fn email(&self, found: &[u8]) -> String {
        let found = String::from_utf8_lossy(found);
        match (self.style.email, found.rsplit_once('@')) {
            (EmailStyle::Partial, Some((local, domain))) => {
                let mut out = String::with_capacity(domain.len() + 8);
                out.extend(local.chars().next());
                out.push_str(MASK);
                out.push('@');
                out.push_str(domain);
                out
            }
            _ => MASK.to_owned(),
        }
    }

    /// A card number's mask from its digits (separators dropped).
    fn pan(&self, found: &[u8]) -> String {
        match self.style.pan {
            PanStyle::Full => MASK.to_owned(),
            PanStyle::Last4 => {
                let digits = pan::digits(found);
                let hidden = digits.len().saturating_sub(4);
                let mut out = "*".repeat(hidden);
                out.extend(digits.iter().skip(hidden).map(|d| char::from(*d)));
                out
            }
        }
    }
}

/// The first card number starting in `b[from..to]` (an address's domain): its start
/// and the byte after its last digit, which may lie past `to`.
fn card_in(b: &[u8], from: usize, to: usize) -> Option<(usize, usize)> {
    let mut j = from;
    while j < to {
        if !b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
            continue;
        }
        if let (Some(end), None) = (pan_at(b, j), digest_end(b, j)) {
            return Some((j, end));
        }
        j = run_end(b, j).max(j + 1);
    }
    None
}

/// When the digit at `i` sits in a token of exactly 32, 40 or 64 hexadecimal characters
/// (a trace id, a SHA-1 or SHA-256 digest), the token's end: its digits are no card.
fn digest_end(b: &[u8], i: usize) -> Option<usize> {
    let alnum = |c: &&u8| c.is_ascii_alphanumeric();
    let before = b.get(..i)?.iter().rev().take_while(alnum).take(65).count();
    let after = b.get(i..)?.iter().take_while(alnum).take(65).count();
    if before + after < 32 {
        return None;
    }
    let token = b.get(i - before..i + after)?;
    let digest = matches!(token.len(), 32 | 40 | 64) && token.iter().all(u8::is_ascii_hexdigit);
    digest.then_some(i + after)
}

/// `s` with each hit's range (in order, not overlapping) replaced; and the count.
fn build(s: &str, hits: impl Iterator<Item = (usize, usize, String)>) -> (String, usize) {
    let mut out = String::with_capacity(s.len());
    let (mut copied, mut count) = (0, 0);
    for (start, end, replacement) in hits {
        let (start, end) = widen(s, start.max(copied), end);
        out.push_str(s.get(copied..start).unwrap_or_default());
        out.push_str(&replacement);
        copied = end;
        count += 1;
    }
    out.push_str(s.get(copied..).unwrap_or_default());
    (out, count)
}

/// `key` into `o`, or `key (2)`, `key (3)`, ... when `key` is taken.
fn insert_unique(o: &mut Map<String, Value>, key: String, value: Value) {
    if !o.contains_key(&key) {
        o.insert(key, value);
        return;
    }
    let mut n = 2_usize;
    loop {
        let candidate = format!("{key} ({n})");
        if !o.contains_key(&candidate) {
            o.insert(candidate, value);
            return;
        }
        n += 1;
    }
}

/// `start..end` widened to character boundaries of `s` (a hit mapped back from decoded
/// bytes could in principle split a character; never drop text for that).
fn widen(s: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    end = end.min(s.len());
    start = start.min(end);
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    while !s.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// The digits of a JSON number that is a card number (13 to 19 digits, Luhn-valid),
/// whether written as an integer, a negative one or an integer-valued float.
fn card_number(n: &Number) -> Option<String> {
    const LEAST: u64 = 1_000_000_000_000;
    let digits = if let Some(u) = n.as_u64() {
        (u >= LEAST).then(|| u.to_string())?
    } else if let Some(i) = n.as_i64() {
        (i.unsigned_abs() >= LEAST).then(|| i.unsigned_abs().to_string())?
    } else {
        let f = n.as_f64()?.abs();
        let integral = (1e12..1e19).contains(&f) && f.fract() == 0.0;
        integral.then(|| format!("{f:.0}"))?
    };
    ((13..=19).contains(&digits.len()) && luhn(&digits)).then_some(digits)
}

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || c == b'-'
}

fn alpha(c: &u8) -> bool {
    c.is_ascii_alphabetic() || *c >= 0x80
}

/// An email address around the `@` at `at`: a local part back to `floor`, a domain of
/// two or more labels whose last one starts with two or more letters (what follows the
/// letters, `example.com123`, is not part of it). Both ends stop at ASCII bytes, so the
/// range is on character boundaries.
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
    // The dots between labels, and where the domain ends.
    let (mut pos, mut end) = (at + 1, at + 1);
    let mut dots: Vec<usize> = Vec::new();
    while let Some(&c) = b.get(pos) {
        if domain_char(c) {
            end = pos + 1;
        } else if c == b'.'
            && end == pos
            && pos > at + 1
            && b.get(pos + 1).copied().is_some_and(domain_char)
        {
            dots.push(pos);
        } else {
            break;
        }
        pos += 1;
    }
    // The last label that starts with two letters ends the address.
    dots.iter().rev().find_map(|&dot| {
        let label = b.get(dot + 1..end)?;
        let letters = label.iter().take_while(|c| alpha(c)).count();
        (letters >= 2).then_some((start, dot + 1 + letters))
    })
}
