//! YAML problems as the author of a config file reads them.
//!
//! The parser's own messages are written for Rust programmers (`use Option<String>`,
//! `invalid u32`, `untagged enum CostSpec`, `set DuplicateKeyPolicy in Options`). This
//! module rewords the ones a YAML author meets into what to write instead, and leaves
//! every other message as the parser wrote it. It only words messages; positions are
//! the caller's.

use std::borrow::Cow;

use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter, RenderOptions, SnippetMode};

/// The message of a parse error, reworded for YAML authors, without the parser's
/// snippet or its "at line X column Y" (callers put the position in front).
pub fn message(e: &Error) -> String {
    let mut options = RenderOptions::new(&ForAuthors);
    options.snippets = SnippetMode::Off;
    let text = e.render_with_options(options);
    match text.rfind(" at line ") {
        Some(i) => text.get(..i).unwrap_or(&text).to_owned(),
        None => text,
    }
}

/// Rewords the parser's messages for YAML authors; the rest falls through to the
/// parser's default wording.
struct ForAuthors;

impl MessageFormatter for ForAuthors {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        match reworded(err) {
            Some(text) => Cow::Owned(text),
            None => DefaultMessageFormatter.format_message(err),
        }
    }
}

/// What to write, for the errors a YAML author can cause; `None` for the rest.
fn reworded(err: &Error) -> Option<String> {
    Some(match err {
        Error::NullIntoString { .. } => {
            "this key has no value: write one after the colon (\"\" for empty text)".to_owned()
        }
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } if is_null(variant) => format!(
            "this key has no value: write one of {}",
            expected.join(", ")
        ),
        Error::SerdeMissingField { field, .. } => {
            format!("missing key `{field}`: it is required here, add `{field}: ...`")
        }
        Error::InvalidScalar { ty, .. } => format!("expected {}", plain_type(ty)),
        Error::InvalidBooleanStrict { .. } => "expected true or false".to_owned(),
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("expected {}, got {unexpected}", plain_type(expected)),
        Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("expected {}, got {unexpected}", plain_type(expected)),
        Error::Unexpected { expected, .. } => match *expected {
            "mapping start" => "expected a mapping: `key: value` lines, or `{ key: value }`",
            "sequence start" => "expected a list: `- item` lines, or `[a, b]`",
            "string scalar" | "scalar" | "str expected" | "missing string" => {
                "expected a single value here, not a list or a mapping"
            }
            _ => return None,
        }
        .to_owned(),
        Error::DuplicateMappingKey { key, .. } => match key {
            Some(k) => format!("key `{k}` appears twice in this mapping: keep one"),
            None => "a key appears twice in this mapping: keep one".to_owned(),
        },
        Error::Message { msg, .. } => {
            let name = msg.strip_prefix("data did not match any variant of untagged enum ")?;
            format!("expected {}", shape_of(name.trim()))
        }
        _ => return None,
    })
}

/// Whether an enum value the parser reports is YAML's null (an empty value).
fn is_null(variant: &str) -> bool {
    matches!(variant, "~" | "null" | "Null" | "NULL" | "")
}

/// A Rust type name, as the value a YAML author writes.
fn plain_type(ty: &str) -> Cow<'_, str> {
    Cow::Borrowed(match ty {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" | "floating point" | "a float" => "a number",
        "bool" | "boolean" | "a boolean" => "true or false",
        "a string" | "string" | "str" | "a borrowed string" => "text",
        "a sequence" => "a list",
        "a map" => "a mapping (`key: value`)",
        other if other.starts_with("struct ") => "a mapping (`key: value`)",
        other if other.starts_with("a sequence") => "a list",
        other => return Cow::Owned(other.to_owned()),
    })
}

/// The accepted shapes of a value that may be written more than one way.
fn shape_of(type_name: &str) -> &'static str {
    match type_name {
        "CostSpec" => {
            "a number (cost units per call), or `{ per_call: 0.01, from_response: \"$.usage.cost\" }`"
        }
        "ExpectedRequest" => {
            "`METHOD /path?query` (or `METHOD https://host/path`), or `{ request: \"METHOD /path?query\", upstream: NAME, region: NAME }`"
        }
        _ => "a value of another shape here: `mcpd schema` documents each field",
    }
}

#[cfg(test)]
mod tests {
    use super::message;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        retries: Option<u8>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default = "fast")]
        mode: Mode,
        #[serde(default)]
        on: Option<bool>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    fn fast() -> Mode {
        Mode::Fast
    }

    fn problem(yaml: &str) -> String {
        message(&serde_saphyr::from_str::<Sample>(yaml).unwrap_err())
    }

    #[test]
    fn messages_say_what_to_write_not_which_rust_type() {
        for (yaml, want) in [
            (
                "name:\n",
                "this key has no value: write one after the colon",
            ),
            (
                "name: a\nmode:\n",
                "this key has no value: write one of fast, slow",
            ),
            (
                "count: 1\n",
                "missing key `name`: it is required here, add `name: ...`",
            ),
            (
                "name: a\ncount: many\n",
                "expected a whole number, 0 or more",
            ),
            (
                "name: a\nretries: 300\n",
                "expected a whole number from 0 to 255",
            ),
            (
                "name: a\nlist: x\n",
                "expected a list: `- item` lines, or `[a, b]`",
            ),
            (
                "name: [a]\n",
                "expected a single value here, not a list or a mapping",
            ),
            ("name: a\non: maybe\n", "expected true or false"),
            (
                "name: a\nname: b\n",
                "key `name` appears twice in this mapping: keep one",
            ),
        ] {
            let got = problem(yaml);
            assert!(got.starts_with(want), "{yaml:?}: {got}");
            for rust in [
                "Option<",
                "u32",
                "u8",
                "untagged",
                "DuplicateKeyPolicy",
                " at line ",
            ] {
                assert!(!got.contains(rust), "{yaml:?}: {got}");
            }
        }
    }

    #[test]
    fn other_messages_keep_the_parsers_wording() {
        assert_eq!(
            problem("name: a\nmode: medium\n"),
            "unknown variant `medium`, expected one of fast, slow"
        );
        assert!(problem("name: a\ncolour: red\n").starts_with("unknown field `colour`"));
    }
}
