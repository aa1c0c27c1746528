//! Masking and redaction: sensitive values turned into shapes a model can still use.
//!
//! Owns the masked forms (`j***@example.com`, `************1111`, `[REDACTED]`) and the
//! detectors that find emails, payment card numbers (Luhn-checked, so order ids stay)
//! and secrets (bearer tokens, JWTs, API keys, private keys) inside any string or
//! object key, percent-encoded or not, plus the secret values mcpd knows exactly. It
//! decides nothing about *where* to look: tool files name fields (`response.mask`),
//! policy rules choose detectors for results, and logs and audit always get all three.
//!
//! Detection is one forward pass per string: a byte table says which bytes could start
//! something (a digit, `@`, the first letter of a secret prefix), every other byte is
//! skipped without work, and a string with nothing to find is neither copied nor
//! allocated for. Hits are collected first and the output is built once.
//!
//! This file is the public face (detector sets, [`Redactor`], the Luhn check); the
//! masked forms of one value are in `mask.rs`, the scanner in `scan.rs` (with the
//! finders in `pan.rs` and `secret.rs`, known values in `known.rs`, decoding in
//! `percent.rs`). docs/redaction.md states what is and is not found.

mod known;
mod mask;
mod pan;
mod percent;
mod scan;
mod secret;

pub use known::{MIN_KNOWN, register as register_secret};
pub use mask::{MASK, mask_emails_in_text, mask_str, mask_value};

use serde_json::Value;

use crate::config::policy::{Detector, RedactionSpec};
use scan::Scan;

/// A set of detectors, as policy decisions carry them: small, `Copy`, ordered.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DetectorSet(u8);

/// Every detector, in the order sets list them.
static DETECTORS: [Detector; 3] = [Detector::Email, Detector::Pan, Detector::Secret];

impl DetectorSet {
    /// No detector.
    pub const NONE: Self = Self(0);
    /// All three detectors: what logs, traces and the audit log get.
    pub const ALL: Self = Self(0b111);

    fn bit(d: Detector) -> u8 {
        match d {
            Detector::Email => 1,
            Detector::Pan => 2,
            Detector::Secret => 4,
        }
    }

    /// Adds a detector.
    pub fn insert(&mut self, d: Detector) {
        self.0 |= Self::bit(d);
    }

    /// Whether `d` is in the set.
    pub fn contains(self, d: Detector) -> bool {
        self.0 & Self::bit(d) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The detectors in the set, in the order email, pan, secret.
    pub fn iter(&self) -> impl Iterator<Item = &'static Detector> + use<> {
        let set = *self;
        DETECTORS.iter().filter(move |d| set.contains(**d))
    }
}

impl std::fmt::Debug for DetectorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As `policies.yaml` writes them: `email, pan, secret`.
impl std::fmt::Display for DetectorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(|d| d.name()).collect();
        f.write_str(&names.join(", "))
    }
}

impl From<Detector> for DetectorSet {
    fn from(d: Detector) -> Self {
        Self(Self::bit(d))
    }
}

impl FromIterator<Detector> for DetectorSet {
    fn from_iter<I: IntoIterator<Item = Detector>>(iter: I) -> Self {
        let mut set = Self::NONE;
        set.extend(iter);
        set
    }
}

impl Extend<Detector> for DetectorSet {
    fn extend<I: IntoIterator<Item = Detector>>(&mut self, iter: I) {
        for d in iter {
            self.insert(d);
        }
    }
}

impl IntoIterator for DetectorSet {
    type Item = Detector;
    type IntoIter = Detectors;

    fn into_iter(self) -> Detectors {
        Detectors { set: self, next: 0 }
    }
}

/// The detectors of a [`DetectorSet`], by value.
#[derive(Debug, Clone)]
pub struct Detectors {
    set: DetectorSet,
    next: usize,
}

impl Iterator for Detectors {
    type Item = Detector;

    fn next(&mut self) -> Option<Detector> {
        while let Some(d) = DETECTORS.get(self.next) {
            self.next += 1;
            if self.set.contains(*d) {
                return Some(*d);
            }
        }
        None
    }
}

/// Redacts every string, object key and card-number-shaped number in `v` with
/// `detectors`, and scrubs every known secret value (whatever `detectors` holds);
/// returns how many values were replaced (the call's `pii.count`).
pub fn redact_value(v: &mut Value, detectors: DetectorSet, style: &RedactionSpec) -> usize {
    let known = known::snapshot();
    Scan {
        set: detectors,
        style,
        known: &known,
    }
    .value(v)
}

/// Redacts free text (error messages, log lines) with `detectors` and scrubs every known
/// secret value; returns the text and the count.
pub fn redact_text(s: &str, detectors: DetectorSet, style: &RedactionSpec) -> (String, usize) {
    scan_text(s, detectors, style).unwrap_or_else(|| (s.to_owned(), 0))
}

/// [`redact_text`] without a copy of a text that has nothing to redact: `None` then.
pub fn redacted_text(s: &str, detectors: DetectorSet, style: &RedactionSpec) -> Option<String> {
    scan_text(s, detectors, style).map(|(clean, _)| clean)
}

/// The scan of free text: the redacted text and the count, `None` when nothing changed.
fn scan_text(s: &str, detectors: DetectorSet, style: &RedactionSpec) -> Option<(String, usize)> {
    let known = known::snapshot();
    Scan {
        set: detectors,
        style,
        known: &known,
    }
    .string(s)
}

/// Which detectors to run, and how to replace what they find.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    set: DetectorSet,
    style: RedactionSpec,
}

impl Redactor {
    /// A redactor running `detectors` with `style`.
    pub fn new(detectors: impl IntoIterator<Item = Detector>, style: &RedactionSpec) -> Self {
        Self {
            set: detectors.into_iter().collect(),
            style: style.clone(),
        }
    }

    /// All three detectors, default style: for logs, traces and the audit log.
    pub fn all() -> Self {
        Self::new(DetectorSet::ALL, &RedactionSpec::default())
    }

    /// Whether any detector is on.
    pub fn is_active(&self) -> bool {
        !self.set.is_empty()
    }

    /// Redacts every string (and card-number-shaped integer) in `v`; returns how many
    /// values were replaced.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        redact_value(v, self.set, &self.style)
    }

    /// Redacts free text (messages, reasons); returns the text and the count.
    pub fn redact_text(&self, s: &str) -> (String, usize) {
        redact_text(s, self.set, &self.style)
    }
}

/// The Luhn check over a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && luhn_skipping(digits.as_bytes())
}

/// The Luhn check over the digits of `b`, skipping separators.
fn luhn_skipping(b: &[u8]) -> bool {
    let sum: u32 = b
        .iter()
        .rev()
        .filter(|c| c.is_ascii_digit())
        .map(|c| u32::from(c - b'0'))
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, dd) if dd > 9 => dd - 9,
            (true, dd) => dd,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests;
