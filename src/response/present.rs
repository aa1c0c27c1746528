//! How a result is shown to the model beside its JSON: what kind of reply it is (JSON,
//! text, image, audio), the tool's own text rendering (`response.text`), and, for a
//! result too large to send inline, a summary and a cut-down result (the first rows).
//!
//! Owns the presentation plan of a tool and the pure parts of presenting: classifying a
//! reply by its `Content-Type`, cutting a large result down, describing it in words. It
//! keeps nothing and renders no template (the engine does both, with the tool's
//! templates and the state store).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::template::Tpl;

/// The largest result sent inline by default, in bytes of its JSON: about 25k tokens,
/// the tool-result limit of common hosts.
pub const DEFAULT_MAX_INLINE: u64 = 100_000;

/// How long a result over the limit is kept by default.
pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(3600);

/// The most rows of a list a cut-down result keeps.
const FIRST_ROWS: usize = 20;

/// How one tool's results are shown.
#[derive(Debug, Clone)]
pub struct PresentPlan {
    /// `response.text`: renders the result for the model.
    pub text: Option<Tpl>,
    /// `response.max_inline_bytes`.
    pub max_inline: u64,
    /// `response.keep_for`.
    pub keep_for: Duration,
    /// `response.resource`: the URI an embedded copy of the reply is given.
    pub embed: Option<Tpl>,
}

impl Default for PresentPlan {
    fn default() -> Self {
        Self {
            text: None,
            max_inline: DEFAULT_MAX_INLINE,
            keep_for: DEFAULT_KEEP_FOR,
            embed: None,
        }
    }
}

/// What kind of body a reply has, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `image/*`: returned as image content.
    Image,
    /// `audio/*`: returned as audio content.
    Audio,
    /// Anything else: JSON, or text when it does not parse as JSON.
    Data,
}

/// The kind of a reply whose `Content-Type` is `content_type`.
pub fn kind(content_type: Option<&str>) -> Kind {
    match content_type.map(essence) {
        Some(t) if t.starts_with("image/") => Kind::Image,
        Some(t) if t.starts_with("audio/") => Kind::Audio,
        _ => Kind::Data,
    }
}

/// A media type without its parameters, lowercase: `Text/Plain; charset=utf-8` →
/// `text/plain`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A result cut down to fit: the first rows of its lists, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// The result with each long list cut to its first rows.
    pub value: Value,
    /// For each list cut: its key (`result` for a top-level list), its length, the rows
    /// kept and the fields of its rows.
    pub lists: Vec<CutList>,
}

/// One list that was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct CutList {
    /// Its key in the result.
    pub key: String,
    /// How many rows it has.
    pub rows: usize,
    /// How many were kept.
    pub kept: usize,
    /// The keys of its rows (of the objects among the first rows), in first-seen order.
    pub fields: Vec<String>,
}

/// Cuts `value` (the result object) to fit in `max` bytes of JSON: every list in it
/// keeps its first rows (at most `FIRST_ROWS`, 20, fewer until it fits, at least one);
/// `None` when even that does not fit (the summary alone is then sent).
pub fn cut(value: &Value, max: u64) -> Option<Cut> {
    let mut keep = FIRST_ROWS;
    loop {
        let (cut_value, lists) = cut_lists(value, keep);
        let size = serde_json::to_vec(&cut_value).map_or(u64::MAX, |v| v.len() as u64);
        if size <= max {
            return Some(Cut {
                value: cut_value,
                lists,
            });
        }
        if keep <= 1 {
            return None;
        }
        keep /= 2;
    }
}

fn cut_lists(value: &Value, keep: usize) -> (Value, Vec<CutList>) {
    let mut lists = Vec::new();
    let Value::Object(map) = value else {
        return (value.clone(), lists);
    };
    let mut out = Map::new();
    for (k, v) in map {
        match v {
            Value::Array(items) if items.len() > keep => {
                let kept: Vec<Value> = items.iter().take(keep).cloned().collect();
                lists.push(CutList {
                    key: k.clone(),
                    rows: items.len(),
                    kept: kept.len(),
                    fields: fields(&kept),
                });
                out.insert(k.clone(), Value::Array(kept));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    (Value::Object(out), lists)
}

fn fields(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(o) = row {
            for k in o.keys() {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
    }
    out
}

/// What the model reads about a result kept behind a link.
pub fn summary(
    tool: &str,
    bytes: usize,
    max: u64,
    uri: &str,
    keep: Duration,
    cut: Option<&Cut>,
) -> String {
    let keep = crate::util::duration::human(keep);
    let mut text = format!(
        "{tool} returned {} of JSON, more than this tool sends inline ({}). The whole result is kept for you for {keep} as resource {uri}: read it with resources/read (only you can).",
        size(bytes as u64),
        size(max)
    );
    match cut {
        Some(c) if !c.lists.is_empty() => {
            for l in &c.lists {
                text.push_str(&format!(
                    " '{}' has {} rows; the first {} follow",
                    l.key, l.rows, l.kept
                ));
                if !l.fields.is_empty() {
                    text.push_str(&format!(" (fields: {})", l.fields.join(", ")));
                }
                text.push('.');
            }
        }
        Some(_) => text.push_str(" It has no list to shorten; it is not shown here."),
        None => text.push_str(" Even its first row is too large to show here."),
    }
    text
}

/// A size as people read it: `812 B`, `96.4 kB`, `5.2 MB`.
pub fn size(bytes: u64) -> String {
    const K: f64 = 1000.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} kB", b / K)
    } else {
        format!("{:.1} MB", b / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_are_told_apart_by_their_content_type() {
        assert_eq!(kind(Some("image/png")), Kind::Image);
        assert_eq!(kind(Some("Audio/WAV; rate=8000")), Kind::Audio);
        assert_eq!(kind(Some("application/json")), Kind::Data);
        assert_eq!(kind(Some("text/plain; charset=utf-8")), Kind::Data);
        assert_eq!(kind(None), Kind::Data);
        assert_eq!(essence("Text/Markdown; charset=utf-8"), "text/markdown");
    }

    #[test]
    fn a_large_result_keeps_the_first_rows_of_its_lists_and_says_what_they_hold() {
        let rows: Vec<Value> = (0..1000)
            .map(|i| json!({"id": i, "email": format!("u{i}@example.com")}))
            .collect();
        let value = json!({"orders": rows, "region": "us"});
        let c = cut(&value, 10_000).unwrap();
        assert_eq!(c.value["orders"].as_array().unwrap().len(), 20);
        assert_eq!(c.value["region"], "us");
        assert_eq!(
            c.lists,
            vec![CutList {
                key: "orders".into(),
                rows: 1000,
                kept: 20,
                fields: vec!["email".into(), "id".into()],
            }]
        );
        // A tighter limit keeps fewer rows, never none.
        let c = cut(&value, 200).unwrap();
        assert!(c.lists[0].kept < 20 && c.lists[0].kept >= 1, "{c:?}");
        assert!(serde_json::to_vec(&c.value).unwrap().len() <= 200);
        assert_eq!(cut(&value, 10), None);
    }

    #[test]
    fn the_summary_names_the_size_the_link_and_the_rows() {
        let value = json!({"orders": (0..100).map(|i| json!({"id": i})).collect::<Vec<_>>()});
        let c = cut(&value, 1000).unwrap();
        let s = summary(
            "orders.export",
            5_200_000,
            100_000,
            "mcpd://results/abc",
            Duration::from_secs(3600),
            Some(&c),
        );
        assert_eq!(
            s,
            format!(
                "orders.export returned 5.2 MB of JSON, more than this tool sends inline (100.0 kB). The whole result is kept for you for 1 h 0 min as resource mcpd://results/abc: read it with resources/read (only you can). 'orders' has 100 rows; the first {} follow (fields: id).",
                c.lists[0].kept
            )
        );
    }
}
