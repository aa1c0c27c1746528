//! What the store owes a keyed call counted with its claim, and how often the embedded
//! store syncs: a claim and its counters are one write that is all or none, lazy
//! counters cost no sync of their own yet reach the disk within [`SYNC_WITHIN`], and
//! every durable write is synced before it is answered.

use std::time::Instant;

use super::*;

fn lazy(key: &str, limit: u64) -> Incr {
    Incr {
        lazy: true,
        ..inc(key, 1, Some(limit))
    }
}

fn claim(retake: bool) -> IdemClaim<'static> {
    IdemClaim {
        claim: b"me",
        lease: MIN,
        hold: MIN,
        retake,
    }
}

/// Sixteen keyed calls at once against a limit of five: five claim their key and are
/// counted; the rest are refused, counted nowhere, and leave their key free.
pub(super) async fn claims_counted_at_once_never_pass_the_limit_and_refusals_leave_keys_free(
    h: &Harness,
) {
    let calls = (0..16).map(|i| {
        let store = h.store.clone();
        async move {
            let key = format!("idem:t:a:k{i}");
            let incs = [inc("budget:b:a", 1, Some(5)), lazy("rate:t:a", 100)];
            let got = store.idem_claim_counted(&key, &claim(false), &incs).await;
            (key, got.unwrap())
        }
    });
    let results = futures_join_all(calls).await;
    let mut admitted = 0;
    for (key, (idem, counted)) in results {
        assert_eq!(idem, Idem::Started);
        match counted.unwrap() {
            Ok(counters) => {
                admitted += 1;
                assert_eq!(counters.len(), 2);
                let again = h.store.idem_begin(&key, MIN).await.unwrap();
                assert!(matches!(again, Idem::InFlight { .. }), "{again:?}");
            }
            Err((index, counter)) => {
                assert_eq!((index, counter.total), (0, 5));
                assert_eq!(h.store.idem_begin(&key, MIN).await.unwrap(), Idem::Started);
            }
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(h.store.get_counter("budget:b:a").await.unwrap(), 5);
    assert_eq!(h.store.get_counter("rate:t:a").await.unwrap(), 5);
}

/// A key already done (or in flight) is not claimed again, and the call is counted
/// nowhere: a replay is free.
pub(super) async fn a_claim_that_finds_its_key_taken_counts_nothing(h: &Harness) {
    let s = &h.store;
    s.idem_begin("idem:t:a:done", MIN).await.unwrap();
    s.idem_finish("idem:t:a:done", b"result", MIN)
        .await
        .unwrap();
    s.idem_begin("idem:t:a:busy", MIN).await.unwrap();
    let incs = [inc("budget:b:a", 1, Some(5))];
    let (idem, counted) = (s.idem_claim_counted("idem:t:a:done", &claim(false), &incs))
        .await
        .unwrap();
    assert_eq!((idem, counted), (Idem::Done(b"result".to_vec()), None));
    let (idem, counted) = (s.idem_claim_counted("idem:t:a:busy", &claim(false), &incs))
        .await
        .unwrap();
    assert!(matches!(idem, Idem::InFlight { .. }), "{idem:?}");
    assert_eq!(counted, None);
    assert_eq!(s.get_counter("budget:b:a").await.unwrap(), 0);
}

/// Polls the store's synced commits until they reach `want` or the deadline passes.
async fn synced_reaches(store: &EmbeddedStore, want: u64, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if store.synced() >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.synced() >= want
}

fn embedded(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("state.redb")).unwrap()
}

#[tokio::test]
async fn a_keyed_call_costs_two_syncs_and_lazy_counters_none_until_the_writer_syncs_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(&dir);
    let start = store.synced();
    // A keyed call: its claim with budgets and rates, then its outcome.
    let incs = [inc("budget:b:a", 1, Some(9)), lazy("rate:t:a", 9)];
    let (idem, counted) = (store.idem_claim_counted("idem:t:a:k", &claim(false), &incs))
        .await
        .unwrap();
    assert_eq!(idem, Idem::Started);
    assert!(matches!(counted, Some(Ok(_))), "{counted:?}");
    assert_eq!(
        store.synced(),
        start + 1,
        "the claim and its counters: one sync"
    );
    store.idem_finish("idem:t:a:k", b"ok", MIN).await.unwrap();
    assert_eq!(store.synced(), start + 2, "the outcome: one more");
    // Reads limited by rates alone: no sync of their own, visible at once.
    for _ in 0..5 {
        let counted = store.incr_all(&[lazy("rate:t:b", 9)]).await.unwrap();
        assert!(counted.is_ok());
    }
    assert_eq!(store.get_counter("rate:t:b").await.unwrap(), 5);
    let after_lazy = store.synced();
    assert!(
        after_lazy <= start + 3,
        "lazy counters synced {} times",
        after_lazy - start - 2
    );
    // With nothing else written, the writer syncs them within SYNC_WITHIN (plus slack).
    assert!(
        synced_reaches(&store, start + 3, SYNC_WITHIN * 5).await,
        "lazy counters were never synced"
    );
}

#[tokio::test]
async fn lazy_counters_are_kept_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(&dir);
    for _ in 0..3 {
        store
            .incr_all(&[lazy("rate:t:a", 9)])
            .await
            .unwrap()
            .unwrap();
    }
    drop(store);
    let store = embedded(&dir);
    assert_eq!(store.get_counter("rate:t:a").await.unwrap(), 3);
}

#[tokio::test]
async fn a_refused_claim_over_a_held_key_leaves_the_key_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(&dir);
    store.idem_begin("idem:t:a:k", MIN).await.unwrap();
    store
        .idem_hold("idem:t:a:k", b"unknown", MIN)
        .await
        .unwrap();
    store.incr("budget:b:a", 1, MIN).await.unwrap();
    let incs = [inc("budget:b:a", 1, Some(1))];
    let (idem, counted) = (store.idem_claim_counted("idem:t:a:k", &claim(true), &incs))
        .await
        .unwrap();
    assert_eq!(idem, Idem::Started);
    assert!(matches!(counted, Some(Err((0, _)))), "{counted:?}");
    assert_eq!(
        store.idem_begin("idem:t:a:k", MIN).await.unwrap(),
        Idem::Held(b"unknown".to_vec())
    );
}

/// Runs the futures at once on the runtime, in order of their results.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
