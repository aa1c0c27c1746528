//! The store's behaviour, as every backend must show it, then what only the file adds.
//!
//! Each behaviour is an async function over a [`Harness`]; `conformance!` runs every one
//! against each backend (the Redis backend joins the list when it comes). Time is a
//! manual clock, so expiry is tested without sleeping.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::util::Clock;

const START_MS: u64 = 1_750_000_000_000;

struct Harness {
    store: Arc<dyn Store>,
    clock: Clock,
    dir: Option<tempfile::TempDir>,
    /// The redis-server this harness runs against, if any (stopped on drop).
    _redis: Option<super::tests_redis::Server>,
}

fn manual_clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_millis(START_MS))
}

impl Harness {
    fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = manual_clock();
        let store =
            EmbeddedStore::open_with_clock(&dir.path().join("state.redb"), clock.clone()).unwrap();
        Self {
            store: Arc::new(store),
            clock,
            dir: Some(dir),
            _redis: None,
        }
    }

    fn memory() -> Self {
        let clock = manual_clock();
        Self {
            store: Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
            dir: None,
            _redis: None,
        }
    }

    /// A fresh redis-server of its own; `None` when the binary is missing. Redis keeps
    /// real time, so only behaviours that do not move the clock run on it.
    async fn redis() -> Option<Self> {
        let server = super::tests_redis::server()?;
        let store = super::tests_redis::store(&server).await;
        Some(Self {
            store,
            clock: manual_clock(),
            dir: None,
            _redis: Some(server),
        })
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn path(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().join("state.redb")
    }

    /// Drops the store (as a stopped process would) and opens the same file again.
    fn restart(&mut self) {
        // The old store must be gone (its file released) before the file is opened again.
        self.store = Arc::new(MemoryStore::new());
        let clock = self.clock.clone();
        self.store = Arc::new(EmbeddedStore::open_with_clock(&self.path(), clock).unwrap());
    }
}

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

/// The behaviours that keep real time, run against Redis as well.
macro_rules! on_redis {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(h) = super::Harness::redis().await {
                        super::$name(&h).await;
                    }
                }
            )*
        }
    };
}

on_redis!(
    concurrent_begins_on_one_key_start_exactly_once,
    a_finished_key_replays_its_stored_result,
    an_abandoned_key_can_be_started_again,
    abandoning_a_finished_key_keeps_its_result,
    concurrent_increments_are_each_counted_once,
    concurrent_admissions_never_pass_the_limit,
    an_increment_larger_than_the_limit_is_refused_with_nothing_counted,
    keys_of_different_kinds_do_not_mix,
    empty_keys_and_zero_durations_are_refused,
    incr_all_counts_everything_or_nothing,
    concurrent_incr_all_never_pass_any_limit,
    claims_counted_at_once_never_pass_the_limit_and_refusals_leave_keys_free,
    a_claim_that_finds_its_key_taken_counts_nothing,
);

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Harness::embedded()).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Harness::memory()).await;
                }
            )*
        }
    };
}

conformance!(
    concurrent_begins_on_one_key_start_exactly_once,
    a_finished_key_replays_its_stored_result,
    an_abandoned_key_can_be_started_again,
    abandoning_a_finished_key_keeps_its_result,
    an_in_flight_claim_lapses_after_its_ttl,
    a_finished_record_expires_after_its_ttl,
    concurrent_increments_are_each_counted_once,
    a_counter_starts_again_after_its_window,
    concurrent_admissions_never_pass_the_limit,
    a_refusal_counts_nothing_and_says_when_the_window_resets,
    an_increment_larger_than_the_limit_is_refused_with_nothing_counted,
    values_expire_after_their_ttl,
    scan_returns_live_values_under_the_prefix_in_key_order,
    delete_removes_a_live_entry_and_says_so,
    sweep_removes_expired_entries_and_keeps_live_ones,
    keys_of_different_kinds_do_not_mix,
    empty_keys_and_zero_durations_are_refused,
    incr_all_counts_everything_or_nothing,
    concurrent_incr_all_never_pass_any_limit,
    claims_counted_at_once_never_pass_the_limit_and_refusals_leave_keys_free,
    a_claim_that_finds_its_key_taken_counts_nothing,
);

use sync::{
    a_claim_that_finds_its_key_taken_counts_nothing,
    claims_counted_at_once_never_pass_the_limit_and_refusals_leave_keys_free,
};

fn inc(key: &str, by: u64, limit: Option<u64>) -> Incr {
    Incr {
        key: key.to_owned(),
        by,
        limit,
        window: MIN,
        lazy: false,
    }
}

async fn incr_all_counts_everything_or_nothing(h: &Harness) {
    let s = &h.store;
    let both = [inc("rate:a", 1, Some(2)), inc("budget:b", 5, None)];
    let first = s.incr_all(&both).await.unwrap().unwrap();
    assert_eq!((first[0].total, first[1].total), (1, 5));
    // Redis keeps real time: the window may already have run a millisecond.
    assert!(first[0].resets_in <= MIN && first[0].resets_in > MIN - SEC);
    s.incr_all(&both).await.unwrap().unwrap();
    // The first counter is at its limit: nothing is counted, not even the second.
    let (index, at) = s.incr_all(&both).await.unwrap().unwrap_err();
    assert_eq!((index, at.total), (0, 2));
    assert_eq!(s.get_counter("budget:b").await.unwrap(), 10);
    // A refusal later in the list leaves the earlier ones uncounted too.
    let later = [inc("rate:c", 1, None), inc("budget:b", 1, Some(10))];
    assert_eq!(s.incr_all(&later).await.unwrap().unwrap_err().0, 1);
    assert_eq!(s.get_counter("rate:c").await.unwrap(), 0);
    // A key of another kind fails the whole batch before anything is written.
    s.put("grant:x", b"v", MIN).await.unwrap();
    let mixed = [inc("rate:d", 1, None), inc("grant:x", 1, None)];
    assert!(matches!(
        s.incr_all(&mixed).await,
        Err(StoreError::WrongKind { .. })
    ));
    assert_eq!(s.get_counter("rate:d").await.unwrap(), 0);
}

async fn concurrent_incr_all_never_pass_any_limit(h: &Harness) {
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&h.store);
            // Half the callers also spend from a tighter second budget.
            let incs = if i % 2 == 0 {
                vec![
                    inc("budget:all", 1, Some(30)),
                    inc("budget:even", 1, Some(5)),
                ]
            } else {
                vec![inc("budget:all", 1, Some(30))]
            };
            tokio::spawn(async move { store.incr_all(&incs).await.unwrap().is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += u64::from(t.await.unwrap());
    }
    let all = h.store.get_counter("budget:all").await.unwrap();
    let even = h.store.get_counter("budget:even").await.unwrap();
    assert_eq!(all, admitted);
    assert_eq!(even, 5);
    assert_eq!(all, 25, "20 odd callers fit in 30, and 5 of the even ones");
}

async fn concurrent_begins_on_one_key_start_exactly_once(h: &Harness) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { store.idem_begin("idem:t:a:k1", MIN).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    let started = outcomes.iter().filter(|o| **o == Idem::Started).count();
    let in_flight = outcomes
        .iter()
        .filter(|o| matches!(o, Idem::InFlight { .. }))
        .count();
    assert_eq!((started, in_flight), (1, 49));
}

async fn a_finished_key_replays_its_stored_result(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.idem_begin("idem:k", MIN).await.unwrap(), Idem::Started);
    s.idem_finish("idem:k", b"{\"id\":\"ord-1\"}", 24 * 60 * MIN)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.idem_begin("idem:k", MIN).await.unwrap(),
            Idem::Done(b"{\"id\":\"ord-1\"}".to_vec())
        );
    }
}

async fn an_abandoned_key_can_be_started_again(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.idem_begin("idem:k", MIN).await.unwrap(), Idem::Started);
    assert!(s.idem_abandon("idem:k").await.unwrap());
    assert_eq!(s.idem_begin("idem:k", MIN).await.unwrap(), Idem::Started);
    assert!(matches!(
        s.idem_begin("idem:k", MIN).await.unwrap(),
        Idem::InFlight { .. }
    ));
}

async fn abandoning_a_finished_key_keeps_its_result(h: &Harness) {
    let s = &h.store;
    s.idem_begin("idem:k", MIN).await.unwrap();
    s.idem_finish("idem:k", b"r", MIN).await.unwrap();
    assert!(!s.idem_abandon("idem:k").await.unwrap());
    assert!(!s.idem_abandon("idem:never").await.unwrap());
    assert_eq!(
        s.idem_begin("idem:k", MIN).await.unwrap(),
        Idem::Done(b"r".to_vec())
    );
}

async fn an_in_flight_claim_lapses_after_its_ttl(h: &Harness) {
    let s = &h.store;
    assert_eq!(
        s.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::Started
    );
    h.advance(30 * SEC - Duration::from_millis(1));
    assert!(matches!(
        s.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::InFlight { .. }
    ));
    h.advance(Duration::from_millis(1));
    assert_eq!(
        s.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::Started
    );
}

async fn a_finished_record_expires_after_its_ttl(h: &Harness) {
    let s = &h.store;
    s.idem_begin("idem:k", MIN).await.unwrap();
    s.idem_finish("idem:k", b"r", 10 * MIN).await.unwrap();
    h.advance(10 * MIN);
    assert_eq!(s.idem_begin("idem:k", MIN).await.unwrap(), Idem::Started);
}

async fn concurrent_increments_are_each_counted_once(h: &Harness) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                let mut totals = Vec::new();
                for _ in 0..4 {
                    totals.push(store.incr("rate:t:a", 1, MIN).await.unwrap().total);
                }
                totals
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    // Each increment saw a total no other saw: none was lost or applied twice.
    assert_eq!(seen, (1..=200).collect());
    assert_eq!(h.store.get_counter("rate:t:a").await.unwrap(), 200);
}

async fn a_counter_starts_again_after_its_window(h: &Harness) {
    let s = &h.store;
    let first = s.incr("rate:k", 3, MIN).await.unwrap();
    assert_eq!(
        first,
        Counter {
            total: 3,
            resets_in: MIN
        }
    );
    h.advance(40 * SEC);
    // A later increment does not move the window.
    let second = s.incr("rate:k", 1, MIN).await.unwrap();
    assert_eq!(
        second,
        Counter {
            total: 4,
            resets_in: 20 * SEC
        }
    );
    h.advance(20 * SEC);
    assert_eq!(s.get_counter("rate:k").await.unwrap(), 0);
    assert_eq!(s.incr("rate:k", 1, MIN).await.unwrap().total, 1);
}

async fn concurrent_admissions_never_pass_the_limit(h: &Harness) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { store.incr_within("budget:b:a", 3, 40, MIN).await })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Admission::Admitted(c) => admitted.push(c.total),
            Admission::Refused(c) => assert!(c.total <= 40 && c.total + 3 > 40),
        }
    }
    admitted.sort_unstable();
    assert_eq!(admitted, (1..=13).map(|i| i * 3).collect::<Vec<_>>());
    assert_eq!(h.store.get_counter("budget:b:a").await.unwrap(), 39);
}

async fn a_refusal_counts_nothing_and_says_when_the_window_resets(h: &Harness) {
    let s = &h.store;
    let admitted = s.incr_within("rate:k", 2, 2, MIN).await.unwrap();
    assert_eq!(
        admitted,
        Admission::Admitted(Counter {
            total: 2,
            resets_in: MIN
        })
    );
    h.advance(15 * SEC);
    let refused = s.incr_within("rate:k", 1, 2, MIN).await.unwrap();
    assert_eq!(
        refused,
        Admission::Refused(Counter {
            total: 2,
            resets_in: 45 * SEC
        })
    );
    assert_eq!(s.get_counter("rate:k").await.unwrap(), 2);
    h.advance(45 * SEC);
    assert!(matches!(
        s.incr_within("rate:k", 1, 2, MIN).await.unwrap(),
        Admission::Admitted(Counter { total: 1, .. })
    ));
}

async fn an_increment_larger_than_the_limit_is_refused_with_nothing_counted(h: &Harness) {
    let s = &h.store;
    let refused = s.incr_within("budget:k", 11, 10, MIN).await.unwrap();
    assert_eq!(
        refused,
        Admission::Refused(Counter {
            total: 0,
            resets_in: Duration::ZERO
        })
    );
    assert_eq!(s.get_counter("budget:k").await.unwrap(), 0);
}

async fn values_expire_after_their_ttl(h: &Harness) {
    let s = &h.store;
    s.put("grant:a:1", b"ticket CHG-1", 15 * MIN).await.unwrap();
    h.advance(15 * MIN - SEC);
    assert_eq!(
        s.get("grant:a:1").await.unwrap(),
        Some(b"ticket CHG-1".to_vec())
    );
    h.advance(SEC);
    assert_eq!(s.get("grant:a:1").await.unwrap(), None);
    assert_eq!(s.scan_prefix("grant:").await.unwrap(), vec![]);
}

async fn scan_returns_live_values_under_the_prefix_in_key_order(h: &Harness) {
    let s = &h.store;
    s.put("grant:a:2", b"two", MIN).await.unwrap();
    s.put("grant:a:1", b"one", MIN).await.unwrap();
    s.put("grant:a:3", b"short", SEC).await.unwrap();
    s.put("grant:b:1", b"other actor", MIN).await.unwrap();
    s.put("grant:a", b"not under 'grant:a:'", MIN)
        .await
        .unwrap();
    s.incr("grant:a:counter", 1, MIN).await.unwrap();
    h.advance(SEC);
    let found = s.scan_prefix("grant:a:").await.unwrap();
    assert_eq!(
        found,
        vec![
            ("grant:a:1".to_owned(), b"one".to_vec()),
            ("grant:a:2".to_owned(), b"two".to_vec()),
        ]
    );
}

async fn delete_removes_a_live_entry_and_says_so(h: &Harness) {
    let s = &h.store;
    s.put("grant:a:1", b"x", MIN).await.unwrap();
    assert!(s.delete("grant:a:1").await.unwrap());
    assert!(!s.delete("grant:a:1").await.unwrap());
    assert_eq!(s.get("grant:a:1").await.unwrap(), None);
    s.put("grant:a:2", b"x", SEC).await.unwrap();
    h.advance(SEC);
    assert!(!s.delete("grant:a:2").await.unwrap());
}

async fn sweep_removes_expired_entries_and_keeps_live_ones(h: &Harness) {
    let s = &h.store;
    s.put("grant:short", b"x", SEC).await.unwrap();
    s.put("grant:long", b"x", 10 * MIN).await.unwrap();
    s.incr("rate:k", 1, SEC).await.unwrap();
    s.idem_begin("idem:k", SEC).await.unwrap();
    s.idem_begin("idem:done", MIN).await.unwrap();
    s.idem_finish("idem:done", b"r", 2 * SEC).await.unwrap();
    assert_eq!(s.sweep().await.unwrap(), 0);
    h.advance(SEC);
    assert_eq!(s.sweep().await.unwrap(), 3);
    assert_eq!(s.sweep().await.unwrap(), 0);
    h.advance(SEC);
    assert_eq!(s.sweep().await.unwrap(), 1);
    assert_eq!(s.get("grant:long").await.unwrap(), Some(b"x".to_vec()));
}

async fn keys_of_different_kinds_do_not_mix(h: &Harness) {
    let s = &h.store;
    s.put("grant:k", b"x", MIN).await.unwrap();
    let err = s.incr("grant:k", 1, MIN).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::WrongKind {
            found: "a value",
            wanted: "a counter",
            ..
        }
    ));
    assert!(s.idem_begin("grant:k", MIN).await.is_err());
    s.incr("rate:k", 1, MIN).await.unwrap();
    assert!(s.get("rate:k").await.is_err());
    // The failed calls changed nothing.
    assert_eq!(s.get("grant:k").await.unwrap(), Some(b"x".to_vec()));
    // A put replaces whatever the key held, as Redis SET does.
    s.put("rate:k", b"y", MIN).await.unwrap();
    assert_eq!(s.get("rate:k").await.unwrap(), Some(b"y".to_vec()));
}

async fn empty_keys_and_zero_durations_are_refused(h: &Harness) {
    let s = &h.store;
    assert!(matches!(
        s.put("", b"x", MIN).await,
        Err(StoreError::InvalidArgument(_))
    ));
    let err = s
        .incr("rate:k", 1, Duration::from_micros(999))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state store call: the window must be at least 1 ms, got 999µs"
    );
    assert!(s.idem_begin("idem:k", Duration::ZERO).await.is_err());
    assert_eq!(s.get_counter("rate:k").await.unwrap(), 0);
}

#[path = "tests_file.rs"]
mod file;

#[path = "tests_idem.rs"]
mod idem;

#[path = "tests_sync.rs"]
mod sync;
