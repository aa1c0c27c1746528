//! Tool-id globs (`orders.*`), as rules, budgets, scopes and grants write them.
//!
//! Owns the matching rule only: `*` matches any run of characters, everything else
//! matches itself. No character classes, no escaping: tool ids have no `*`.

/// Whether `name` matches `pattern`.
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len()).any(|i| tail.get(i..).is_some_and(|t| glob(rest, t)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_prefixes_and_middles() {
        assert!(glob("orders.*", "orders.export"));
        assert!(!glob("orders.*", "flag.set"));
        assert!(glob("*", "anything"));
        assert!(glob("*", "flag.set"));
        assert!(glob("*.set", "flag.set"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("orders.*", "order.export"));
        assert!(!glob("flag.set", "flag.set2"));
        assert!(!glob("a*c", "abcd"));
    }
}
