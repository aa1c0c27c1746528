//! W3C Trace Context: continue the caller's trace and hand it on to the upstream.
//!
//! Owns parsing `traceparent` from a request's `_meta` and minting the header mcpd sends
//! upstream (same trace id, a new span id). It never reads or writes a tracing backend.

/// The trace a call belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span (16 hex digits), if the caller sent one.
    pub parent_span: Option<String>,
    /// Trace flags (2 hex digits); `01` = sampled.
    pub flags: String,
    /// `tracestate`, passed on as is.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Continues `traceparent` when it is valid, or starts a new sampled trace.
    pub fn continue_or_start(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        let parsed = traceparent.and_then(parse);
        match parsed {
            Some((trace_id, span, flags)) => Self {
                trace_id,
                parent_span: Some(span),
                flags,
                tracestate: tracestate.map(str::to_owned),
            },
            None => Self::start(),
        }
    }

    /// A new sampled trace.
    pub fn start() -> Self {
        Self {
            trace_id: random_hex::<16>(),
            parent_span: None,
            flags: "01".to_owned(),
            tracestate: None,
        }
    }

    /// A `traceparent` for an outgoing request: same trace, a fresh span id.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, random_hex::<8>(), self.flags)
    }
}

/// `00-<trace id>-<span id>-<flags>`, lowercase hex, ids not all zero.
fn parse(tp: &str) -> Option<(String, String, String)> {
    let mut parts = tp.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then(|| (trace.to_owned(), span.to_owned(), flags.to_owned()))
}

/// `N` random bytes as hex; an id that is all zeros is invalid in W3C Trace Context, so
/// a failing random source (never seen) yields ones rather than zeros. The bytes come
/// from the OS's random source, read 512 at a time per thread (a call takes 24: one
/// `getrandom` system call per ~20 calls instead of two per call).
fn random_hex<const N: usize>() -> String {
    const POOL: usize = 512;
    thread_local! {
        static BYTES: std::cell::RefCell<([u8; POOL], usize)> =
            const { std::cell::RefCell::new(([0; POOL], POOL)) };
    }
    let mut bytes = [0u8; N];
    BYTES.with_borrow_mut(|(pool, used)| {
        if *used + N > POOL {
            if getrandom::fill(pool).is_err() {
                *pool = [1u8; POOL];
            }
            *used = 0;
        }
        let (from, to) = (*used, *used + N);
        if let Some(taken) = pool.get(from..to) {
            bytes.copy_from_slice(taken);
        }
        *used = to;
    });
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn ids_are_never_repeated_nor_all_zeros_across_many_pools() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let (trace, span) = (random_hex::<16>(), random_hex::<8>());
            assert_eq!((trace.len(), span.len()), (32, 16));
            assert!(trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'));
            assert!(seen.insert(trace) && seen.insert(span));
        }
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_span() {
        let t = TraceContext::continue_or_start(Some(TP), Some("k=v"));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = t.child_traceparent();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert!(!child.contains("00f067aa0ba902b7"));
        assert_eq!(t.tracestate.as_deref(), Some("k=v"));
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext::continue_or_start(Some(bad), None);
            assert_eq!(t.trace_id.len(), 32, "{bad}");
            assert!(t.parent_span.is_none(), "{bad}");
        }
    }
}
