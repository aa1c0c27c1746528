//! OpenAPI schema objects → standalone JSON Schema for a tool's input: local `$ref`s
//! inlined, and the 3.0 dialect (`nullable`, boolean `exclusiveMinimum`, `example`)
//! rewritten to JSON Schema; 3.1 schemas already are JSON Schema and pass through.

use serde_json::{Map, Value, json};

/// How deep `$ref`s are followed before the rest is left open (`{}`).
const MAX_DEPTH: usize = 24;

/// Keywords whose value is one schema.
const ONE: [&str; 10] = [
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];
/// Keywords whose value is a list of schemas.
const LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is a map of schemas.
const MAP: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];
/// OpenAPI-only keywords a JSON Schema validator does not know.
const DROP: [&str; 4] = ["discriminator", "xml", "externalDocs", "nullable"];

/// Resolves references within one document.
#[derive(Debug)]
pub(super) struct Resolver<'a> {
    /// The whole spec.
    pub doc: &'a Value,
}

impl<'a> Resolver<'a> {
    /// A resolver over `doc`.
    pub(super) fn new(doc: &'a Value) -> Self {
        Self { doc }
    }

    /// Follows `$ref` (a parameter, request body, response or path item) to its target;
    /// a reference that does not resolve is returned as it is.
    pub(super) fn deref(&self, v: &Value) -> Value {
        let mut current = v.clone();
        for _ in 0..MAX_DEPTH {
            let Some(target) = current
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| self.target(r))
            else {
                break;
            };
            current = target.clone();
        }
        current
    }

    /// The schema with references inlined and the 3.0 dialect rewritten.
    pub(super) fn schema(&self, v: &Value) -> Value {
        self.convert(v, &mut Vec::new())
    }

    fn target(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.doc.pointer(pointer)
    }

    fn convert(&self, v: &Value, stack: &mut Vec<String>) -> Value {
        let Some(obj) = v.as_object() else {
            return v.clone();
        };
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            if stack.iter().any(|r| r == reference) || stack.len() >= MAX_DEPTH {
                return json!({ "description": format!("recursive {reference} (not expanded)") });
            }
            let Some(target) = self.target(reference) else {
                return json!({ "description": format!("unresolved {reference}") });
            };
            stack.push(reference.to_owned());
            let mut out = self.convert(target, stack);
            stack.pop();
            // 3.1 allows siblings next to $ref (a description, say): they win.
            if let Some(o) = out.as_object_mut() {
                for (k, val) in obj.iter().filter(|(k, _)| *k != "$ref") {
                    o.insert(k.clone(), self.convert_keyword(k, val, stack));
                }
            }
            return out;
        }
        let mut out = Map::new();
        for (k, val) in obj {
            if DROP.contains(&k.as_str()) {
                continue;
            }
            out.insert(k.clone(), self.convert_keyword(k, val, stack));
        }
        if obj.get("nullable") == Some(&Value::Bool(true)) {
            nullable(&mut out);
        }
        for (bound, exclusive) in [
            ("minimum", "exclusiveMinimum"),
            ("maximum", "exclusiveMaximum"),
        ] {
            match out.get(exclusive) {
                Some(Value::Bool(true)) => {
                    if let Some(n) = out.remove(bound) {
                        out.insert(exclusive.to_owned(), n);
                    } else {
                        out.remove(exclusive);
                    }
                }
                Some(Value::Bool(false)) => {
                    out.remove(exclusive);
                }
                _ => {}
            }
        }
        if let Some(example) = out.remove("example") {
            out.entry("examples").or_insert_with(|| json!([example]));
        }
        Value::Object(out)
    }

    fn convert_keyword(&self, key: &str, val: &Value, stack: &mut Vec<String>) -> Value {
        if ONE.contains(&key) && val.is_object() {
            return self.convert(val, stack);
        }
        if (LIST.contains(&key) || key == "items") && val.is_array() {
            return Value::Array(
                val.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| self.convert(s, stack))
                    .collect(),
            );
        }
        if MAP.contains(&key)
            && let Some(m) = val.as_object()
        {
            return Value::Object(
                m.iter()
                    .map(|(k, s)| (k.clone(), self.convert(s, stack)))
                    .collect(),
            );
        }
        val.clone()
    }
}

/// `type: X` → `type: [X, "null"]`; an `enum` also admits null.
fn nullable(out: &mut Map<String, Value>) {
    match out.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            out.insert("type".to_owned(), json!([t, "null"]));
        }
        Some(Value::Array(ts)) if !ts.contains(&json!("null")) => ts.push(json!("null")),
        _ => {}
    }
    if let Some(Value::Array(values)) = out.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_30_dialect_becomes_json_schema() {
        let doc = json!({"components": {"schemas": {
            "Pet": {"type": "object", "properties": {
                "name": {"type": "string", "nullable": true, "example": "rex"},
                "age": {"type": "integer", "minimum": 0, "exclusiveMinimum": true},
                "example": {"type": "string"}
            }, "discriminator": {"propertyName": "name"}},
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}}}
        }}});
        let r = Resolver::new(&doc);
        let pet = r.schema(&json!({"$ref": "#/components/schemas/Pet"}));
        assert_eq!(
            pet,
            json!({"type": "object", "properties": {
                "name": {"type": ["string", "null"], "examples": ["rex"]},
                "age": {"type": "integer", "exclusiveMinimum": 0},
                "example": {"type": "string"}
            }})
        );
        let node = r.schema(&json!({"$ref": "#/components/schemas/Node"}));
        assert_eq!(
            node["properties"]["next"],
            json!({"description": "recursive #/components/schemas/Node (not expanded)"})
        );
    }
}
