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
async fn a_keyed_call_costs_one_sync_and_lazy_counters_none_until_the_writer_syncs_them() {
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
    assert_eq!(
        store.idem_begin("idem:t:a:k", MIN).await.unwrap(),
        Idem::Done(b"ok".to_vec()),
        "the outcome is visible at once"
    );
    assert!(
        store.synced() <= start + 2,
        "the outcome is journaled, not synced (unless the writer's timer synced it)"
    );
    // Reads limited by rates alone: no sync of their own, visible at once.
    for _ in 0..5 {
        let counted = store.incr_all(&[lazy("rate:t:b", 9)]).await.unwrap();
        assert!(counted.is_ok());
    }
    assert_eq!(store.get_counter("rate:t:b").await.unwrap(), 5);
    let after_lazy = store.synced();
    assert!(
        after_lazy <= start + 2,
        "lazy counters synced {} times",
        after_lazy - start - 1
    );
    // With nothing else written, the writer syncs them within SYNC_WITHIN (plus slack).
    assert!(
        synced_reaches(&store, start + 2, SYNC_WITHIN * 5).await,
        "lazy counters were never synced"
    );
    drop(store);
    let store = embedded(&dir);
    assert_eq!(store.get_counter("rate:t:b").await.unwrap(), 5);
    assert_eq!(store.get_counter("rate:t:a").await.unwrap(), 1);
}

#[tokio::test]
async fn sequential_keyed_calls_cost_one_sync_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(&dir);
    let start = store.synced();
    let incs = [inc("budget:b:a", 1, Some(100)), lazy("rate:t:a", 100)];
    for i in 0..20 {
        let key = format!("idem:t:a:k{i}");
        let (idem, _) = (store.idem_claim_counted(&key, &claim(false), &incs))
            .await
            .unwrap();
        assert_eq!(idem, Idem::Started);
        store.idem_finish(&key, b"ok", MIN).await.unwrap();
    }
    // 20 claims; the writer's timer may add a sync if this took over SYNC_WITHIN.
    let syncs = store.synced() - start;
    assert!(
        (20..=22).contains(&syncs),
        "{syncs} syncs for 20 keyed calls"
    );
}

/// Lazy counters are counted in memory: N concurrent calls against a limit of M admit
/// exactly M, alone or counted together with durable counters and claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lazy_counters_admit_exactly_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(embedded(&dir));
    // Some of the counter already in the file, from before a restart.
    store
        .incr_all(&[lazy("rate:t:a", 100)])
        .await
        .unwrap()
        .unwrap();
    drop(Arc::try_unwrap(store).unwrap());
    let store = Arc::new(embedded(&dir));
    let calls = (0..64).map(|i| {
        let store = store.clone();
        async move {
            let rate = lazy("rate:t:a", 25);
            if i % 4 == 0 {
                // A keyed call: claim, budget and rate in one write.
                let key = format!("idem:t:a:k{i}");
                let incs = [inc("budget:b:a", 1, Some(1000)), rate];
                let (_, counted) = store
                    .idem_claim_counted(&key, &claim(false), &incs)
                    .await
                    .unwrap();
                counted.unwrap().is_ok()
            } else {
                store.incr_all(&[rate]).await.unwrap().is_ok()
            }
        }
    });
    let admitted = futures_join_all(calls)
        .await
        .into_iter()
        .filter(|a| *a)
        .count();
    assert_eq!(admitted, 24, "25 minus the one counted before the restart");
    assert_eq!(store.get_counter("rate:t:a").await.unwrap(), 25);
    drop(Arc::try_unwrap(store).unwrap());
    let store = embedded(&dir);
    assert_eq!(store.get_counter("rate:t:a").await.unwrap(), 25);
}

/// An outcome left in the journal by an mcpd that was killed is folded in at the next
/// open: the key replays it.
#[tokio::test]
async fn an_outcome_left_in_the_journal_is_folded_in_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = embedded(&dir);
    store.idem_begin("idem:t:a:k", MIN).await.unwrap();
    store.idem_begin("idem:t:a:old", MIN).await.unwrap();
    drop(store);
    let now = crate::util::Clock::system().now_ms();
    crate::store::embedded::journal_outcome(&path, "idem:t:a:k", b"ok", now + 60_000);
    crate::store::embedded::journal_outcome(&path, "idem:t:a:old", b"gone", now - 1);
    let store = embedded(&dir);
    assert_eq!(
        store.idem_begin("idem:t:a:k", MIN).await.unwrap(),
        Idem::Done(b"ok".to_vec())
    );
    assert!(
        matches!(
            store.idem_begin("idem:t:a:old", MIN).await.unwrap(),
            Idem::InFlight { .. }
        ),
        "an expired outcome is not folded in"
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
