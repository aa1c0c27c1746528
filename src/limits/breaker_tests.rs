use super::*;
use crate::config::Located;
use crate::store::MemoryStore;

fn spec(errors: &str, over: &str, min_calls: u64, open_for: &str) -> BreakerSpec {
    BreakerSpec {
        errors: Located::unplaced(errors.to_owned()),
        over: Located::unplaced(over.to_owned()),
        min_calls: Some(Located::unplaced(min_calls)),
        open_for: Located::unplaced(open_for.to_owned()),
        refuse_reads: false,
    }
}

fn breaker(errors: &str, over: &str, min_calls: u64, open_for: &str) -> Breaker {
    let mut diags = Diagnostics::default();
    let b = Breaker::compile(
        Path::new("mcpd.yaml"),
        &spec(errors, over, min_calls, open_for),
        "upstream",
        "flags",
        &mut diags,
    );
    assert!(diags.is_empty(), "{diags}");
    b.unwrap()
}

/// Noon on some day, in Unix ms: a window boundary for any `over` that divides a day.
const T0: u64 = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 43_200_000;

async fn closed(b: &Breaker, store: &dyn Store, key: &str, now: u64) -> u64 {
    match b.status(store, key, now).await.unwrap() {
        Status::Closed { generation } => generation,
        Status::Open(o) => panic!("open until {}", o.until_ms),
    }
}

#[tokio::test]
async fn a_burst_of_failures_opens_it_and_it_closes_after_open_for() {
    let b = breaker("50%", "1m", 4, "5m");
    let store = MemoryStore::new();
    let key = b.key(None);
    assert_eq!(key, "upstream:flags");
    let g = closed(&b, &store, &key, T0).await;
    // three failures: under min_calls, still closed
    for i in 0..3 {
        assert_eq!(
            b.observe(&store, &key, g, true, T0 + i).await.unwrap(),
            None
        );
    }
    let opened = b
        .observe(&store, &key, g, true, T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((opened.calls, opened.errors), (4, 4));
    assert_eq!(opened.until_ms, T0 + 10 + 300_000);
    let Status::Open(seen) = b.status(&store, &key, T0 + 20).await.unwrap() else {
        panic!("closed")
    };
    assert_eq!(seen, opened);
    let msg = b.refusal(&key, &seen, T0 + 20, true);
    assert!(
        msg.starts_with("upstream 'flags' is failing (4 of 4 calls failed in the last 1 min)"),
        "{msg}"
    );
    assert!(
        msg.contains("so this write was not sent; retry after"),
        "{msg}"
    );
    assert!(msg.ends_with("(in 5 min)"), "{msg}");
    // still open a millisecond before its end, closed at it
    assert!(matches!(
        b.status(&store, &key, opened.until_ms - 1).await.unwrap(),
        Status::Open(_)
    ));
    let g = closed(&b, &store, &key, opened.until_ms).await;
    assert_eq!(g, opened.until_ms);
    // counting starts afresh: one more failure does not reopen it
    assert_eq!(
        b.observe(&store, &key, g, true, opened.until_ms + 1)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn failures_under_the_share_keep_it_closed() {
    let b = breaker("50%", "1m", 6, "5m");
    let store = MemoryStore::new();
    let key = b.key(Some("eu"));
    assert_eq!(key, "upstream:flags@eu");
    for i in 0..20 {
        // one failure in three: never half once six calls were made
        let failed = i % 3 == 0;
        assert_eq!(
            b.observe(&store, &key, 0, failed, T0 + i).await.unwrap(),
            None,
            "call {i}"
        );
    }
    closed(&b, &store, &key, T0 + 100).await;
}

#[tokio::test]
async fn the_window_slides_over_the_previous_one_by_its_remaining_share() {
    let b = breaker("50%", "1m", 10, "5m");
    let store = MemoryStore::new();
    let key = b.key(None);
    // 8 failures late in one window
    for i in 0..8 {
        b.observe(&store, &key, 0, true, T0 + 50_000 + i)
            .await
            .unwrap();
    }
    // 14 s into the next window 46/60 of them still count: 6.1 + 4 = 10.1 (3 more: 9.1)
    let at = T0 + 60_000 + 14_000;
    for i in 0..3 {
        assert_eq!(
            b.observe(&store, &key, 0, true, at + i).await.unwrap(),
            None
        );
    }
    let opened = b
        .observe(&store, &key, 0, true, at + 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((opened.calls, opened.errors), (10, 10));
    // but a window later they have slid out
    let store = MemoryStore::new();
    for i in 0..8 {
        b.observe(&store, &key, 0, true, T0 + 50_000 + i)
            .await
            .unwrap();
    }
    for i in 0..9 {
        assert_eq!(
            b.observe(&store, &key, 0, true, T0 + 120_000 + i)
                .await
                .unwrap(),
            None
        );
    }
}

#[test]
fn bad_settings_are_reported_at_their_place() {
    let mut diags = Diagnostics::default();
    let mut s = spec("half", "0s", 0, "five minutes");
    s.errors.pos = crate::config::diag::Pos::new(3, 14);
    assert!(Breaker::compile(Path::new("tools.d/t.yaml"), &s, "tool", "t", &mut diags).is_none());
    let text = diags.to_string();
    assert!(
        text.contains(
            "tools.d/t.yaml:3:14: tool 't': breaker.errors: 'half' is not a share of calls"
        ),
        "{text}"
    );
    assert!(text.contains("breaker.over: must be at least 1s"), "{text}");
    assert!(
        text.contains("breaker.min_calls: must be at least 1"),
        "{text}"
    );
    assert!(text.contains("breaker.open_for:"), "{text}");
    assert_eq!(parse_share("50%"), Some(0.5));
    assert_eq!(parse_share(" 100 % "), Some(1.0));
    assert_eq!(parse_share("0.5"), None);
    assert_eq!(parse_share("150%"), None);
}

#[test]
fn each_change_is_seen_once() {
    let seen = Seen::default();
    assert_eq!(seen.note("k", false), None);
    assert_eq!(seen.note("k", true), Some(true));
    assert_eq!(seen.note("k", true), None);
    assert_eq!(seen.note("k", false), Some(false));
}
