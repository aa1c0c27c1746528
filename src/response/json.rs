//! A result's JSON, written once in the two forms a call's answer carries: the JSON
//! itself (`structuredContent`, and what a result's size is measured by) and that JSON
//! as a JSON string (the text block), in one pass over the value.
//!
//! Owns only that rendering. Each form is byte for byte what serde_json writes
//! (`serde_json::to_string(value)`, and `serde_json::to_string` of that string): a
//! property test compares them over random values. A string that needs no escape (most
//! of a result's) is copied whole into both; one that does goes through serde_json.

use std::fmt::Write as _;

use serde_json::Value;

/// A value's JSON and, when short enough, that JSON as a JSON string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Compact JSON, as `serde_json::to_string(value)` writes it.
    pub json: String,
    /// `json` as a JSON string, quotes included, as `serde_json::to_string(&json)`;
    /// `None` when `json` is longer than [`write`] was asked to quote.
    pub quoted: Option<String>,
}

/// `value` written in both forms; the quoted form only when asked, and only while the
/// JSON is at most `quote_up_to` bytes long (a result too large to send inline never
/// needs it).
pub(crate) fn write(value: &Value, quote_up_to: Option<usize>) -> Written {
    let Some(quote_up_to) = quote_up_to else {
        // The JSON alone: serde_json's serializer is a little cheaper than this writer
        // (31k vs 34k instructions for the seed export's result); this one pays only
        // by saving the second pass.
        return Written {
            json: serde_json::to_string(value).unwrap_or_default(),
            quoted: None,
        };
    };
    let mut w = Writer {
        json: String::with_capacity(512),
        quoted: String::with_capacity(640),
        quoting: true,
        quote_up_to,
    };
    w.quoted.push('"');
    w.value(value);
    w.quoted.push('"');
    let quoted = (w.quoting && w.json.len() <= w.quote_up_to).then_some(w.quoted);
    Written {
        json: w.json,
        quoted,
    }
}

struct Writer {
    json: String,
    quoted: String,
    /// Still writing `quoted` (the JSON has not outgrown `quote_up_to`).
    quoting: bool,
    quote_up_to: usize,
}

/// Whether serde_json escapes byte `b` in a string: a control character, `"` or `\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl Writer {
    /// Text that reads the same in both forms (no quote, backslash or control).
    fn same(&mut self, text: &str) {
        self.json.push_str(text);
        if self.quoting {
            self.quoted.push_str(text);
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.same("null"),
            Value::Bool(true) => self.same("true"),
            Value::Bool(false) => self.same("false"),
            // A `Number`'s `Display` is what the serializer writes (itoa, or the shortest
            // form of a finite float; a `Value` holds no other), and holds no quote.
            Value::Number(n) => {
                let from = self.json.len();
                let _ = write!(self.json, "{n}");
                if self.quoting {
                    let digits = self.json.get(from..).unwrap_or_default();
                    self.quoted.push_str(digits);
                }
            }
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.check();
                self.same("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.same(",");
                    }
                    self.value(item);
                }
                self.same("]");
            }
            Value::Object(map) => {
                self.check();
                self.same("{");
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        self.same(",");
                    }
                    self.string(key);
                    self.same(":");
                    self.value(item);
                }
                self.same("}");
            }
        }
    }

    /// Stops quoting once the JSON is longer than asked (checked per array and object).
    fn check(&mut self) {
        if self.quoting && self.json.len() > self.quote_up_to {
            self.quoting = false;
            self.quoted = String::new();
        }
    }

    fn string(&mut self, s: &str) {
        if !self.quoting {
            let json = &mut self.json;
            return if s.bytes().any(escaped) {
                json.push_str(&serde_json::to_string(s).unwrap_or_default());
            } else {
                json.push('"');
                json.push_str(s);
                json.push('"');
            };
        }
        if !s.bytes().any(escaped) {
            self.json.push('"');
            self.json.push_str(s);
            self.json.push('"');
            self.quoted.push_str("\\\"");
            self.quoted.push_str(s);
            self.quoted.push_str("\\\"");
        } else {
            // Rare in a result: serde_json's own escapes (`\n`, `\u001f`, ...), then
            // those escaped again for the quoted form (no control character is left).
            let json = serde_json::to_string(s).unwrap_or_default();
            for c in json.chars() {
                if c == '"' || c == '\\' {
                    self.quoted.push('\\');
                }
                self.quoted.push(c);
            }
            self.json.push_str(&json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::write;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[\"\\\\a-z\u{0}-\u{1f}\u{7f}é☃/ ]{0,12}".prop_map(Value::String),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[\"\\\\a-z\u{1}\n]{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn a_results_json_and_its_quoted_form_are_what_serde_json_writes() {
        for v in [
            json!({"orders": [{"id": 1, "email": "a***@example.com", "total": 12.5}]}),
            json!({"a\"b": "c\\d", "tab": "\t", "ctl": "\u{1f}\u{7f}", "n": null}),
            json!([
                1.0,
                -0.0,
                1e300,
                5e-324,
                -7,
                u64::MAX,
                i64::MIN,
                true,
                false
            ]),
            json!({}),
            json!([]),
            json!(""),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            let w = write(&v, Some(usize::MAX));
            assert_eq!(w.json, json, "{v}");
            assert_eq!(w.quoted, Some(serde_json::to_string(&json).unwrap()), "{v}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
        ))]
        #[test]
        fn any_value_and_its_quoted_json_are_written_as_serde_json_writes_them(
            v in values(),
            cut in 0u8..3,
        ) {
            let json = serde_json::to_string(&v).unwrap();
            let w = write(&v, Some(usize::MAX));
            prop_assert_eq!(&w.json, &json);
            prop_assert_eq!(w.quoted, Some(serde_json::to_string(&json).unwrap()));
            // Quoted exactly when the JSON is no longer than the limit.
            let limit = json.len().saturating_sub(usize::from(cut));
            let short = write(&v, Some(limit));
            prop_assert_eq!(&short.json, &json);
            prop_assert_eq!(short.quoted.is_some(), json.len() <= limit);
            // Not asked: the JSON alone.
            let alone = write(&v, None);
            prop_assert_eq!(&alone.json, &json);
            prop_assert_eq!(alone.quoted, None);
        }
    }
}
