//! What a reply costs in memory once parsed, estimated from its bytes before parsing.
//!
//! Owns the estimate and the limit it is held to. A parsed JSON value takes far more
//! memory than its text: `[0,0,...]` about 16 times, `[{"id":0},...]` about 70 times
//! (every object is a B-tree node of 11 slots). `response.max_bytes` alone cannot keep
//! a call's memory bounded, so a reply whose parsed form would pass
//! [`PARSED_PER_BYTE`] times the tool's `max_bytes` is refused unparsed. It never
//! parses; it counts structural bytes outside strings in one pass.

/// How many times `response.max_bytes` a reply may take once parsed (24 MiB for the
/// default 2 MiB). With the reply's bytes and the answer built from it, a call then
/// stays well under 100 MB.
pub const PARSED_PER_BYTE: u64 = 12;

/// What one parsed value costs (a 32-byte `serde_json::Value`, and the slack of the
/// list holding it).
const VALUE: u64 = 48;
/// What one object costs beyond its values (a B-tree leaf of 11 keys and values).
const OBJECT: u64 = 640;
/// What one key costs beyond its bytes (its own allocation and the slack in it).
const KEY: u64 = 48;

/// A reply's shape: how many values, objects and keys it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Values of every kind (each array item, each object value, the root); an empty
    /// container counts one too many.
    pub values: u64,
    /// Objects.
    pub objects: u64,
    /// Object keys.
    pub keys: u64,
    /// The reply's bytes.
    pub bytes: u64,
}

impl Shape {
    /// Counts `body`'s values, objects and keys (outside strings). Not a validator:
    /// malformed JSON is counted as well as it goes and refused by the parser after.
    pub fn of(body: &[u8]) -> Self {
        let mut s = Self {
            values: 1,
            bytes: body.len() as u64,
            ..Self::default()
        };
        let (mut in_string, mut escaped) = (false, false);
        for &c in body {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                // A container's first item (later ones follow a comma).
                b'{' => {
                    s.objects += 1;
                    s.values += 1;
                }
                b'[' | b',' => s.values += 1,
                b':' => s.keys += 1,
                _ => {}
            }
        }
        s
    }

    /// About how many bytes of memory the parsed reply takes.
    pub fn parsed_bytes(&self) -> u64 {
        self.values * VALUE + self.objects * OBJECT + self.keys * KEY + self.bytes
    }

    /// Whether a reply of `body`'s length is within `limit` whatever it holds, so it
    /// need not be counted: the most a byte can add to [`Self::parsed_bytes`] is an
    /// object's `{` (a value and an object), beside the root value.
    fn surely_within(body: &[u8], limit: u64) -> bool {
        let most = (body.len() as u64)
            .saturating_mul(VALUE + OBJECT + 1)
            .saturating_add(VALUE);
        most <= limit
    }

    /// The shape of a reply whose parsed form would exceed `limit`; `None` when it fits
    /// (a reply short enough to fit whatever it holds is not counted).
    pub fn over(body: &[u8], limit: u64) -> Option<Self> {
        if Self::surely_within(body, limit) {
            return None;
        }
        Some(Self::of(body)).filter(|s| s.parsed_bytes() > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_inside_strings_is_not_counted() {
        let s = Shape::of(br#"{"a":[1,2,{"b":"x,{:\"}"}]}"#);
        assert_eq!((s.values, s.objects, s.keys), (6, 2, 2));
    }

    proptest::proptest! {
        #[test]
        fn a_reply_surely_within_a_limit_is_within_it(
            body in proptest::collection::vec(proptest::sample::select(b"{}[],:\"\\a1 ".to_vec()), 0..64),
            limit in 0u64..50_000,
        ) {
            if Shape::surely_within(&body, limit) {
                proptest::prop_assert!(Shape::of(&body).parsed_bytes() <= limit);
            }
        }
    }

    #[test]
    fn a_reply_of_only_open_braces_is_the_costliest_per_byte() {
        let body = b"{{{{{{{{";
        let cost = Shape::of(body).parsed_bytes();
        assert!(Shape::surely_within(body, cost));
        assert!(!Shape::surely_within(body, cost - 1));
    }

    #[test]
    fn tiny_objects_cost_far_more_than_their_bytes() {
        let body = format!("[{}]", vec![r#"{"id":0}"#; 1000].join(","));
        let s = Shape::of(body.as_bytes());
        assert!(s.parsed_bytes() > 70 * s.bytes, "{s:?}");
        let text = format!(r#"{{"s":"{}"}}"#, "x".repeat(10_000));
        assert!(Shape::of(text.as_bytes()).parsed_bytes() < 2 * 10_010);
    }
}
