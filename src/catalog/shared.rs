//! What tools that declare the same text share once compiled: JSON Schema validators
//! and the schemas `tools/list` shows, keyed by their canonical JSON text.
//!
//! Owns only the sharing: a thousand tools generated from one template, or a family of
//! tools with one input schema, hold one compiled validator between them instead of one
//! each. It never decides whether a schema is valid (the compiler does) and lives for
//! one compile of the catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

/// The compiled artefacts of one catalog compile, by the JSON text they came from.
#[derive(Debug, Default)]
pub(super) struct Shared {
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    schemas: Mutex<HashMap<String, Arc<Map<String, Value>>>>,
}

impl Shared {
    /// The validator of `schema`: one already built from the same text, or the one
    /// `build` makes (remembered when it builds).
    pub(super) fn validator<E>(
        &self,
        schema: &Value,
        build: impl FnOnce() -> Result<jsonschema::Validator, E>,
    ) -> Result<Arc<jsonschema::Validator>, E> {
        let key = schema.to_string();
        if let Some(v) = lock(&self.validators).get(&key) {
            return Ok(v.clone());
        }
        // Built outside the lock: another thread compiling another schema is not held
        // up (two threads may both build one text; the first one stored is kept).
        let built = Arc::new(build()?);
        Ok(lock(&self.validators).entry(key).or_insert(built).clone())
    }

    /// `schema` as one shared object: the same text gives the same `Arc`.
    pub(super) fn schema(&self, schema: Map<String, Value>) -> Arc<Map<String, Value>> {
        let schema = Value::Object(schema);
        let key = schema.to_string();
        let mut schemas = lock(&self.schemas);
        if let Some(s) = schemas.get(&key) {
            return s.clone();
        }
        let Value::Object(schema) = schema else {
            return Arc::default();
        };
        schemas
            .entry(key)
            .or_insert_with(|| Arc::new(schema))
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_schema_text_gives_one_validator_and_another_text_its_own() {
        let shared = Shared::default();
        let build = |s: &Value| {
            let s = s.clone();
            move || jsonschema::validator_for(&s)
        };
        let a = serde_json::json!({"type": "object", "required": ["x"]});
        let b = serde_json::json!({"type": "object", "required": ["y"]});
        let v1 = shared.validator(&a, build(&a)).unwrap();
        let v2 = shared.validator(&a.clone(), build(&a)).unwrap();
        let v3 = shared.validator(&b, build(&b)).unwrap();
        assert!(Arc::ptr_eq(&v1, &v2));
        assert!(!Arc::ptr_eq(&v1, &v3));
        assert!(!v3.is_valid(&serde_json::json!({"x": 1})));
        assert!(v1.is_valid(&serde_json::json!({"x": 1})));
    }

    #[test]
    fn the_same_schema_object_is_shared_and_keeps_its_content() {
        let shared = Shared::default();
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let a = obj(serde_json::json!({"type": "object", "properties": {"b": {}, "a": {}}}));
        let s1 = shared.schema(a.clone());
        let s2 = shared.schema(a.clone());
        assert!(Arc::ptr_eq(&s1, &s2));
        assert_eq!(*s1, a);
    }
}
