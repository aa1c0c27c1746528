//! The property behind redaction (issue 14, "make the class hard to reintroduce"): a
//! card number or an email address placed anywhere in a random JSON document (a key
//! or a value, alone or inside text, any nesting, any separators between a card's
//! groups, invisible characters between its digits, letters glued to it) never
//! survives redaction. Run in-process over many documents, and through the binary
//! (`echo.post` in `leaks.rs`) over fewer. `PROPTEST_CASES` sets how many (256 by
//! default; the binary run takes a quarter).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

use mcpd::config::policy::{EmailStyle, PanStyle, RedactionSpec};
use mcpd::redact::{DetectorSet, redact_value};

/// Separators a card's groups may be printed with.
pub(crate) const SEPARATORS: &[&str] = &[
    " ", "-", "\t", "\u{a0}", "\u{2007}", "\u{202f}", "\u{2009}", "\u{2002}", "\u{3000}",
    "\u{1680}", "\u{2010}", "\u{2011}", "\u{2012}", "\u{2013}", "\u{2014}", "\u{2212}", "\u{fe63}",
    "\u{ff0d}",
];

/// Characters that render as nothing, which may sit between any two digits.
pub(crate) const INVISIBLE: &[&str] = &[
    "\u{200b}", "\u{200c}", "\u{200d}", "\u{2060}", "\u{feff}", "\u{ad}",
];

/// What is hidden in a document.
#[derive(Debug, Clone)]
pub(crate) enum Secret {
    /// An email address.
    Email(String),
    /// A card number as text: (how it is written, its digits).
    Card(String, String),
    /// A card number as a JSON number.
    CardNumber(u64),
}

impl Secret {
    /// Whether the redacted document `out` still holds the secret, in a key, a string
    /// or a number.
    pub(crate) fn survives(&self, out: &Value) -> bool {
        let mut text = String::new();
        flatten(out, &mut text);
        self.survives_in(&text)
    }

    /// Whether `out` (text) still holds the secret.
    pub(crate) fn survives_in(&self, out: &str) -> bool {
        match self {
            Secret::Email(e) => out.contains(e.as_str()),
            Secret::Card(_, digits) => digits_only(out).contains(digits.as_str()),
            Secret::CardNumber(n) => digits_only(out).contains(&n.to_string()),
        }
    }

    fn text(&self) -> String {
        match self {
            Secret::Email(e) => e.clone(),
            Secret::Card(written, _) => written.clone(),
            Secret::CardNumber(n) => n.to_string(),
        }
    }
}

/// Every key, string and number of `v`, one per line.
fn flatten(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Number(n) => {
            out.push_str(&n.to_string());
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push_str(k);
                out.push('\n');
                flatten(x, out);
            }
        }
        _ => {}
    }
}

/// `s` without separators and invisible characters: a card's digits read as one.
fn digits_only(s: &str) -> String {
    let mut out = s.to_owned();
    for sep in SEPARATORS.iter().chain(INVISIBLE) {
        out = out.replace(sep, "");
    }
    out
}

fn luhn_complete(body: &str) -> String {
    let sum: u32 = body
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| match (i % 2 == 0, d * 2) {
            (true, dd) if dd > 9 => dd - 9,
            (true, dd) => dd,
            (false, _) => d,
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// How cards of each length are grouped when printed.
fn groups(len: usize) -> &'static [usize] {
    match len {
        13 => &[4, 4, 5],
        14 => &[4, 6, 4],
        15 => &[4, 6, 5],
        16 => &[4, 4, 4, 4],
        17 => &[4, 4, 4, 5],
        18 => &[4, 4, 4, 6],
        _ => &[4, 4, 4, 4, 3],
    }
}

/// A Luhn-valid card number of 13 to 19 digits.
fn card_digits() -> impl Strategy<Value = String> {
    (13_usize..=19, "[1-9]", "[0-9]{18}")
        .prop_map(|(len, first, rest)| luhn_complete(&format!("{first}{}", &rest[..len - 2])))
}

/// One separator: one to three separator characters, invisible ones around them.
fn separator() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(proptest::sample::select(SEPARATORS), 1..=3),
        proptest::option::weighted(0.2, proptest::sample::select(INVISIBLE)),
    )
        .prop_map(|(seps, inv)| format!("{}{}", inv.unwrap_or(""), seps.concat()))
}

/// A card number written as one run, or grouped with any separators; invisible
/// characters sometimes between its digits.
fn card() -> impl Strategy<Value = Secret> {
    card_digits().prop_flat_map(|digits| {
        let n = groups(digits.len()).len();
        (
            Just(digits),
            any::<bool>(),
            proptest::collection::vec(separator(), n),
            proptest::option::weighted(0.2, (0_usize..12, proptest::sample::select(INVISIBLE))),
        )
            .prop_map(|(digits, grouped, seps, invisible)| {
                let mut written = String::new();
                let mut at = 0;
                for (i, g) in groups(digits.len()).iter().enumerate() {
                    if grouped && i > 0 {
                        written.push_str(&seps[i]);
                    }
                    written.push_str(&digits[at..at + g]);
                    at += g;
                }
                if let Some((pos, inv)) = invisible {
                    // Between two digits: after the pos-th digit of the written form.
                    let byte = written
                        .char_indices()
                        .filter(|(_, c)| c.is_ascii_digit())
                        .nth(pos + 1)
                        .map_or(written.len(), |(b, _)| b);
                    written.insert_str(byte, inv);
                }
                Secret::Card(written, digits)
            })
    })
}

fn email() -> impl Strategy<Value = Secret> {
    (
        "[a-z][a-z0-9._+-]{0,10}[a-z0-9]",
        proptest::collection::vec("[a-z0-9][a-z0-9-]{0,8}[a-z0-9]", 1..=3),
        "[a-z]{2,6}",
    )
        .prop_map(|(local, labels, tld)| {
            Secret::Email(format!("{local}@{}.{tld}", labels.join(".")))
        })
}

pub(crate) fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![
        4 => email(),
        4 => card(),
        1 => card_digits().prop_filter_map("fits u64", |d| d.parse::<u64>().ok()).prop_map(Secret::CardNumber),
    ]
}

/// Text around a secret: letters, digits, punctuation, accents, separators, emoji.
fn context() -> impl Strategy<Value = String> {
    "[ a-zA-Z0-9.,:;!?@#%&*()\\[\\]{}'\"/+=_~<>|\u{a0}\u{2013}éßж中😀-]{0,12}"
}

/// A random document without the secret.
fn filler() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e6_f64..1e6).prop_map(Value::from),
        context().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Where the secret sits at the bottom of the document.
#[derive(Debug, Clone, Copy)]
enum Spot {
    Value,
    Key,
}

/// `text` between two pieces of context, kept from gluing digits to a card's digits
/// (digits next to digits are another, longer number, not this card).
fn embed(before: &str, text: &str, after: &str, card: bool) -> String {
    let mut before = before.to_owned();
    let mut after = after.to_owned();
    if card {
        if before.ends_with(|c: char| c.is_ascii_digit()) {
            before.push('x');
        }
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            after.insert(0, 'x');
        }
    }
    format!("{before}{text}{after}")
}

/// A document holding `secret` somewhere: the leaf it sits in, then up to four levels
/// of objects and arrays around it, each with random siblings.
pub(crate) fn document() -> impl Strategy<Value = (Secret, Value)> {
    (
        secret(),
        context(),
        context(),
        any::<bool>(),
        any::<bool>(),
        filler(),
    )
        .prop_map(|(secret, before, after, alone, as_key, sibling)| {
            let card = !matches!(secret, Secret::Email(_));
            let spot = if as_key { Spot::Key } else { Spot::Value };
            let leaf = match (&secret, spot, alone) {
                (Secret::CardNumber(n), Spot::Value, _) => Value::from(*n),
                (_, Spot::Value, true) => Value::String(secret.text()),
                (_, Spot::Value, false) => {
                    Value::String(embed(&before, &secret.text(), &after, card))
                }
                (_, Spot::Key, true) => {
                    Value::Object(Map::from_iter([(secret.text(), sibling.clone())]))
                }
                (_, Spot::Key, false) => Value::Object(Map::from_iter([(
                    embed(&before, &secret.text(), &after, card),
                    sibling.clone(),
                )])),
            };
            (secret, leaf)
        })
        .prop_flat_map(|(secret, leaf)| (Just(secret), wrap(leaf)))
}

/// `leaf` nested in zero to four containers with random siblings.
fn wrap(leaf: Value) -> impl Strategy<Value = Value> {
    proptest::collection::vec((any::<bool>(), "[a-z]{1,6}", filler(), 0_usize..3), 0..=4).prop_map(
        move |levels| {
            let mut v = leaf.clone();
            for (object, key, sibling, at) in levels {
                v = if object {
                    let mut m = match sibling {
                        Value::Object(m) => m,
                        other => Map::from_iter([("other".to_owned(), other)]),
                    };
                    m.insert(key, v);
                    Value::Object(m)
                } else {
                    let mut items = match sibling {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    items.insert(at.min(items.len()), v);
                    Value::Array(items)
                };
            }
            v
        },
    )
}

/// How many cases a property runs: `PROPTEST_CASES`, else 256.
pub(crate) fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A runner's settings: `cases` cases, no failure files written (a failure prints its
/// minimal case; rerun it by hand).
pub(crate) fn config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    }
}

#[test]
fn a_card_or_email_anywhere_in_a_document_never_survives_redaction() {
    let styles = [
        RedactionSpec::default(),
        RedactionSpec {
            email: EmailStyle::Full,
            pan: PanStyle::Full,
            ..RedactionSpec::default()
        },
    ];
    let mut runner = TestRunner::new(config(cases()));
    runner
        .run(&(document(), 0_usize..2), |((secret, doc), style)| {
            let mut out = doc.clone();
            let n = redact_value(&mut out, DetectorSet::ALL, &styles[style]);
            prop_assert!(
                !secret.survives(&out),
                "{secret:?} survives:\n in:  {doc}\n out: {out}"
            );
            prop_assert!(n >= 1);
            // Nothing redaction leaves is a new hit.
            let mut again = out.clone();
            prop_assert_eq!(
                redact_value(&mut again, DetectorSet::ALL, &styles[style]),
                0,
                "{}",
                out
            );
            Ok(())
        })
        .unwrap();
}
