//! JSONPath for the call path: parsed once, evaluated without building path strings.
//!
//! jsonpath-rust parses every path (so any RFC 9535 path is accepted) and evaluates the
//! ones with filters or functions. The common shapes, `$.a.b`, `$['a']`, `$[0]`, `$[*]`,
//! `$.*` and `$..name`, are evaluated here directly: masks run on every result, and
//! jsonpath-rust's evaluation (a path string per node, a re-parse per update) cost
//! ~300 us on a 20-row result, three times what mcpd may add to a call.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use super::ResponseError;

/// One step of a simple path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`
    Key(String),
    /// `[n]`, negative from the end
    Index(i64),
    /// `[*]` or `.*`
    Wildcard,
    /// `..name`: `name` at any depth
    Descend(String),
}

/// A compiled JSONPath.
#[derive(Debug, Clone)]
pub struct JsonPath {
    /// As written.
    pub source: String,
    query: JpQuery,
    simple: Option<Vec<Step>>,
}

impl JsonPath {
    /// Parses a path.
    ///
    /// # Errors
    /// [`ResponseError::InvalidPath`], with the parser's message.
    pub fn compile(source: &str) -> Result<Self, ResponseError> {
        let query = jsonpath_rust::parser::parse_json_path(source)?;
        Ok(Self {
            source: source.to_owned(),
            query,
            simple: parse_simple(source),
        })
    }

    /// Whether the path can match more than one node.
    pub fn is_multi(&self) -> bool {
        match &self.simple {
            Some(steps) => steps
                .iter()
                .any(|s| matches!(s, Step::Wildcard | Step::Descend(_))),
            None => true,
        }
    }

    /// The last name in the path (`$.orders` → `orders`), if it ends in one.
    pub fn last_name(&self) -> Option<&str> {
        match self.simple.as_ref()?.last()? {
            Step::Key(k) | Step::Descend(k) => Some(k),
            _ => None,
        }
    }

    /// Every node the path matches, in document order.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        match &self.simple {
            Some(steps) => {
                let mut out = Vec::new();
                select_steps(root, steps, &mut out);
                out
            }
            None => js_path_process(&self.query, root)
                .map(|found| found.into_iter().map(|r| r.val).collect())
                .unwrap_or_default(),
        }
    }

    /// The one node a path of names and indices (`$.a.b`, `$[0].a`) matches, moved out
    /// of `root` rather than copied (what is left there is `null`): `Some(None)` when it
    /// matches nothing, `None` for a path that can match more than one node or that
    /// jsonpath-rust evaluates (use [`Self::select`]).
    pub fn take(&self, root: &mut Value) -> Option<Option<Value>> {
        let steps = self.simple.as_ref()?;
        let mut node = root;
        for step in steps {
            node = match step {
                Step::Key(k) => match node.get_mut(k.as_str()) {
                    Some(child) => child,
                    None => return Some(None),
                },
                Step::Index(i) => {
                    let Some(a) = node.as_array_mut() else {
                        return Some(None);
                    };
                    let len = a.len();
                    match resolve_index(*i, len).and_then(|at| a.get_mut(at)) {
                        Some(child) => child,
                        None => return Some(None),
                    }
                }
                Step::Wildcard | Step::Descend(_) => return None,
            };
        }
        Some(Some(node.take()))
    }

    /// Applies `f` to every node the path matches; returns how many times `f` said it
    /// changed something.
    pub fn update(&self, root: &mut Value, f: &mut dyn FnMut(&mut Value) -> bool) -> usize {
        match &self.simple {
            Some(steps) => update_steps(root, steps, f),
            None => {
                let paths: Vec<String> = js_path_process(&self.query, &*root)
                    .map(|found| found.into_iter().map(|r| r.path).collect())
                    .unwrap_or_default();
                paths
                    .iter()
                    .filter_map(|p| to_pointer(p))
                    .filter(|ptr| root.pointer_mut(ptr).is_some_and(&mut *f))
                    .count()
            }
        }
    }
}

fn select_steps<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    match step {
        Step::Key(k) => {
            if let Some(c) = v.get(k) {
                select_steps(c, rest, out);
            }
        }
        Step::Index(i) => {
            if let Some(c) = index(v, *i) {
                select_steps(c, rest, out);
            }
        }
        Step::Wildcard => match v {
            Value::Array(a) => a.iter().for_each(|c| select_steps(c, rest, out)),
            Value::Object(o) => o.values().for_each(|c| select_steps(c, rest, out)),
            _ => {}
        },
        Step::Descend(k) => descend(v, k, &mut |c| select_steps(c, rest, out)),
    }
}

fn descend<'a>(v: &'a Value, key: &str, f: &mut dyn FnMut(&'a Value)) {
    match v {
        Value::Object(o) => {
            if let Some(c) = o.get(key) {
                f(c);
            }
            o.values().for_each(|c| descend(c, key, f));
        }
        Value::Array(a) => a.iter().for_each(|c| descend(c, key, f)),
        _ => {}
    }
}

fn update_steps(v: &mut Value, steps: &[Step], f: &mut dyn FnMut(&mut Value) -> bool) -> usize {
    let Some((step, rest)) = steps.split_first() else {
        return usize::from(f(v));
    };
    match step {
        Step::Key(k) => v.get_mut(k).map_or(0, |c| update_steps(c, rest, f)),
        Step::Index(i) => {
            let len = v.as_array().map_or(0, Vec::len);
            let idx = resolve_index(*i, len);
            idx.and_then(|i| v.get_mut(i))
                .map_or(0, |c| update_steps(c, rest, f))
        }
        Step::Wildcard => match v {
            Value::Array(a) => a.iter_mut().map(|c| update_steps(c, rest, f)).sum(),
            Value::Object(o) => o.values_mut().map(|c| update_steps(c, rest, f)).sum(),
            _ => 0,
        },
        Step::Descend(k) => descend_mut(v, k, rest, f),
    }
}

fn descend_mut(
    v: &mut Value,
    key: &str,
    rest: &[Step],
    f: &mut dyn FnMut(&mut Value) -> bool,
) -> usize {
    match v {
        Value::Object(o) => o
            .iter_mut()
            .map(|(k, c)| {
                // Update the match first, then look inside what is left of it.
                let here = if k == key {
                    update_steps(c, rest, f)
                } else {
                    0
                };
                here + descend_mut(c, key, rest, f)
            })
            .sum(),
        Value::Array(a) => a.iter_mut().map(|c| descend_mut(c, key, rest, f)).sum(),
        _ => 0,
    }
}

fn index(v: &Value, i: i64) -> Option<&Value> {
    let a = v.as_array()?;
    a.get(resolve_index(i, a.len())?)
}

fn resolve_index(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok()
    } else {
        len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
    }
}

/// Parses the simple subset; `None` for anything else (filters, slices, unions, ...).
fn parse_simple(src: &str) -> Option<Vec<Step>> {
    let mut rest = src.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("..") {
            let (name, r) = take_name(r)?;
            steps.push(Step::Descend(name.to_owned()));
            rest = r;
        } else if let Some(r) = rest.strip_prefix(".*") {
            steps.push(Step::Wildcard);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            let (name, r) = take_name(r)?;
            steps.push(Step::Key(name.to_owned()));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let (inner, r) = r.split_once(']')?;
            let inner = inner.trim();
            let step = if inner == "*" {
                Step::Wildcard
            } else if let Some(q) = quoted(inner) {
                Step::Key(q.to_owned())
            } else {
                Step::Index(inner.parse().ok()?)
            };
            steps.push(step);
            rest = r;
        } else {
            return None;
        }
    }
    Some(steps)
}

fn take_name(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

fn quoted(s: &str) -> Option<&str> {
    let inner = s
        .strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))?;
    (!inner.contains(['\'', '"', '\\'])).then_some(inner)
}

/// jsonpath-rust's normalized path (`$['a'][0]`) as a JSON pointer (`/a/0`).
fn to_pointer(path: &str) -> Option<String> {
    let mut rest = path.strip_prefix('$')?;
    let mut ptr = String::new();
    while let Some(r) = rest.strip_prefix('[') {
        let (inner, r) = if let Some(q) = r.strip_prefix('\'') {
            let end = q.find("']")?;
            (q.get(..end)?, q.get(end + 2..)?)
        } else {
            let end = r.find(']')?;
            (r.get(..end)?, r.get(end + 1..)?)
        };
        ptr.push('/');
        ptr.push_str(&inner.replace('~', "~0").replace('/', "~1"));
        rest = r;
    }
    rest.is_empty().then_some(ptr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"orders": [
            {"id": 1, "email": "a@x.io", "customer": {"email": "c@x.io"}},
            {"id": 2, "email": "b@x.io"}
        ], "count": 2})
    }

    #[test]
    fn simple_paths_select_like_jsonpath_rust() {
        let d = doc();
        for p in [
            "$.orders",
            "$['orders']",
            "$.orders[0]",
            "$.orders[-1].id",
            "$.orders[*].email",
            "$..email",
            "$.*",
            "$.orders[*]",
        ] {
            let ours = JsonPath::compile(p).unwrap();
            assert!(ours.simple.is_some(), "{p} should be simple");
            let theirs: Vec<&Value> = js_path_process(&ours.query, &d)
                .unwrap()
                .into_iter()
                .map(|r| r.val)
                .collect();
            let mut a = ours.select(&d);
            let mut b = theirs;
            a.sort_by_key(|v| v.to_string());
            b.sort_by_key(|v| v.to_string());
            assert_eq!(a, b, "{p}");
        }
    }

    #[test]
    fn filters_fall_back_to_jsonpath_rust() {
        let p = JsonPath::compile("$.orders[?@.id == 2].email").unwrap();
        assert!(p.simple.is_none());
        assert_eq!(p.select(&doc()), vec![&json!("b@x.io")]);
        let mut d = doc();
        let n = p.update(&mut d, &mut |v| {
            *v = json!("masked");
            true
        });
        assert_eq!(n, 1);
        assert_eq!(d["orders"][1]["email"], "masked");
    }

    #[test]
    fn update_reaches_every_match() {
        let mut d = doc();
        let n = JsonPath::compile("$..email")
            .unwrap()
            .update(&mut d, &mut |v| {
                *v = json!("***");
                true
            });
        assert_eq!(n, 3);
        assert!(!d.to_string().contains("@x.io"));
    }

    #[test]
    fn take_moves_out_exactly_what_select_finds_for_one_node_paths() {
        let one_node = [
            "$.orders",
            "$.count",
            "$.orders[0]",
            "$.orders[-1].email",
            "$.orders[1].customer",
            "$['orders'][0]['customer']['email']",
            "$.missing",
            "$.orders[5]",
            "$.orders[-3]",
            "$.count.x",
            "$.orders.id",
            "$[0]",
            "$",
        ];
        for p in one_node {
            let path = JsonPath::compile(p).unwrap();
            let mut d = doc();
            let found = path.select(&d).first().map(|v| (*v).clone());
            assert_eq!(path.take(&mut d), Some(found), "{p}");
        }
        // more than one node, or a filter: not taken, the document untouched
        for p in ["$.orders[*].id", "$..email", "$.*", "$.orders[?@.id == 2]"] {
            let mut d = doc();
            assert_eq!(JsonPath::compile(p).unwrap().take(&mut d), None, "{p}");
            assert_eq!(d, doc(), "{p}");
        }
    }

    #[test]
    fn pointer_conversion_escapes() {
        assert_eq!(
            to_pointer("$['a/b'][0]['c~d']").as_deref(),
            Some("/a~1b/0/c~0d")
        );
    }

    #[test]
    fn invalid_paths_are_errors() {
        assert!(JsonPath::compile("orders[").is_err());
        let err = JsonPath::compile("orders[").unwrap_err();
        let parser = jsonpath_rust::parser::parse_json_path("orders[").unwrap_err();
        assert!(matches!(err, ResponseError::InvalidPath(_)), "{err:?}");
        assert_eq!(err.to_string(), parser.to_string());
    }
}
