//! Known secret values: every `secret.NAME` value mcpd read for a tool. They are
//! scrubbed from everything that leaves (results, error messages, logs, the audit log)
//! as `[secret NAME]`, whatever they look like: an upstream that echoes a key without a
//! recognisable prefix must not hand it to the model.
//!
//! Owns the process-wide list (read-mostly: an `ArcSwap`, loaded once per redaction)
//! and finding its values in bytes. Values shorter than [`MIN_KNOWN`] bytes are not
//! listed: scrubbing `abc` from every result would mangle them. It never reads the
//! environment itself (`upstream::Secrets` registers what it read).

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;

/// The shortest value scrubbed as a known secret.
pub const MIN_KNOWN: usize = 6;

/// One secret value and the name it is shown as.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    /// What replaces it: `[secret NAME]`.
    pub(crate) label: String,
    value: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
}

static KNOWN: LazyLock<ArcSwap<Vec<Known>>> = LazyLock::new(ArcSwap::default);

/// Adds `value` (the environment variable `name`'s) to the values scrubbed from
/// everything that leaves. A value is never removed: a rotated secret stays scrubbed.
pub fn register(name: &str, value: &str) {
    if value.len() < MIN_KNOWN {
        return;
    }
    let known = Known {
        label: format!("[secret {name}]"),
        value: value.as_bytes().to_vec(),
        finder: memchr::memmem::Finder::new(value.as_bytes()).into_owned(),
    };
    KNOWN.rcu(|list| {
        let mut list = Vec::clone(list);
        if !list.iter().any(|k| k.value == known.value) {
            list.push(known.clone());
            // Longest first: a value that contains another is replaced whole.
            list.sort_by_key(|k| std::cmp::Reverse(k.value.len()));
        }
        list
    });
}

/// The values known now.
pub(crate) fn snapshot() -> Arc<Vec<Known>> {
    KNOWN.load_full()
}

/// Every occurrence of a known value in `b`, as (start, end, index into `known`).
pub(crate) fn find_all(known: &[Known], b: &[u8], out: &mut Vec<(usize, usize, usize)>) {
    if b.len() < MIN_KNOWN {
        return;
    }
    for (idx, k) in known.iter().enumerate() {
        let len = k.value.len();
        out.extend(k.finder.find_iter(b).map(|at| (at, at + len, idx)));
    }
}
