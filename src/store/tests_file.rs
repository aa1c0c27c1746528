//! What the embedded store adds to the shared behaviour: a restart keeps state, one
//! process per file, the expiry index stays in step, damaged records are a way out.

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::super::embedded::{ENTRIES, EXPIRY};
use super::*;

#[tokio::test]
async fn state_survives_closing_and_reopening_the_file() {
    let mut h = Harness::embedded();
    h.store.idem_begin("idem:k", MIN).await.unwrap();
    h.store.idem_finish("idem:k", b"result", MIN).await.unwrap();
    h.store.incr("rate:k", 7, MIN).await.unwrap();
    h.store.put("grant:a:1", b"ticket", MIN).await.unwrap();

    h.restart();
    assert_eq!(
        h.store.idem_begin("idem:k", MIN).await.unwrap(),
        Idem::Done(b"result".to_vec())
    );
    assert_eq!(h.store.get_counter("rate:k").await.unwrap(), 7);
    assert_eq!(
        h.store.get("grant:a:1").await.unwrap(),
        Some(b"ticket".to_vec())
    );

    // Expiry is wall-clock time: a restart after it finds nothing.
    h.advance(MIN);
    h.restart();
    assert_eq!(h.store.get_counter("rate:k").await.unwrap(), 0);
    assert_eq!(h.store.get("grant:a:1").await.unwrap(), None);
    assert_eq!(
        h.store.idem_begin("idem:k", MIN).await.unwrap(),
        Idem::Started
    );
}

#[tokio::test]
async fn a_claim_left_by_a_crash_blocks_the_key_only_until_its_ttl() {
    let mut h = Harness::embedded();
    assert_eq!(
        h.store.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::Started
    );
    // The holder never finishes: the process stops with the request's outcome unknown.
    h.restart();
    assert!(matches!(
        h.store.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::InFlight { .. }
    ));
    h.advance(30 * SEC);
    assert_eq!(
        h.store.idem_begin("idem:k", 30 * SEC).await.unwrap(),
        Idem::Started
    );
}

#[tokio::test]
async fn a_second_open_of_one_file_is_refused_with_advice() {
    let h = Harness::embedded();
    let err = EmbeddedStore::open(&h.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }));
    let message = err.to_string();
    assert!(message.contains("allows one mcpd per file"), "{message}");
    assert!(message.contains("its own state file"), "{message}");
}

#[tokio::test]
async fn open_takes_a_file_spec_or_a_path_and_leaves_redis_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("file:{}", dir.path().join("a/state.redb").display());
    let store = open(&spec).unwrap();
    store.put("grant:x", b"1", MIN).await.unwrap();
    drop(store);
    let bare = dir.path().join("a/state.redb").display().to_string();
    assert_eq!(
        open(&bare).unwrap().get("grant:x").await.unwrap(),
        Some(b"1".to_vec())
    );
    assert!(open("memory:").is_ok());

    assert!(matches!(
        open("redis://cache:6379"),
        Err(StoreError::RedisUnavailable)
    ));
    assert!(matches!(open("http://x/y"), Err(StoreError::BadSpec(_))));
    assert!(matches!(open(""), Err(StoreError::BadSpec(_))));
}

/// Every entry has exactly one index row, at its own expiry.
fn assert_index_in_step(path: &std::path::Path) -> usize {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let entries = txn.open_table(ENTRIES).unwrap();
    let expiry = txn.open_table(EXPIRY).unwrap();
    let mut from_entries = BTreeSet::new();
    for item in entries.range::<&str>(..).unwrap() {
        let (k, v) = item.unwrap();
        let record = record::Record::decode(v.value()).unwrap();
        from_entries.insert((record.expires_ms, k.value().to_owned()));
    }
    let mut from_index = BTreeSet::new();
    for item in expiry.range::<(u64, &str)>(..).unwrap() {
        let (k, _) = item.unwrap();
        let (expires_ms, key) = k.value();
        from_index.insert((expires_ms, key.to_owned()));
    }
    assert_eq!(from_entries, from_index);
    assert_eq!(expiry.len().unwrap(), entries.len().unwrap());
    from_entries.len()
}

#[tokio::test]
async fn the_expiry_index_follows_every_kind_of_write() {
    let mut h = Harness::embedded();
    let s = Arc::clone(&h.store);
    s.idem_begin("idem:a", MIN).await.unwrap();
    s.idem_finish("idem:a", b"r", 10 * MIN).await.unwrap();
    s.idem_begin("idem:b", MIN).await.unwrap();
    s.idem_abandon("idem:b").await.unwrap();
    s.incr("rate:k", 1, MIN).await.unwrap();
    h.advance(SEC);
    s.incr("rate:k", 1, MIN).await.unwrap();
    s.put("grant:g", b"1", MIN).await.unwrap();
    s.put("grant:g", b"2", 2 * MIN).await.unwrap();
    s.put("grant:gone", b"1", MIN).await.unwrap();
    s.delete("grant:gone").await.unwrap();
    s.put("grant:short", b"1", SEC).await.unwrap();
    h.advance(SEC);
    // Replacing an expired entry moves its index row too.
    s.incr("grant:short", 1, MIN).await.unwrap();
    drop(s);
    h.store = Arc::new(MemoryStore::new());
    assert_eq!(assert_index_in_step(&h.path()), 4);
}

#[tokio::test]
async fn an_unreadable_record_is_reported_and_can_be_replaced() {
    let mut h = Harness::embedded();
    h.store.put("grant:bad", b"ok", MIN).await.unwrap();
    h.store = Arc::new(MemoryStore::new());
    {
        let db = redb::Database::open(h.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert("grant:bad", [99_u8, 1, 2].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    h.restart();
    let err = h.store.get("grant:bad").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("'grant:bad' holds a record this mcpd cannot read")
    );
    assert!(h.store.incr("grant:bad", 1, MIN).await.is_err());
    assert_eq!(h.store.scan_prefix("grant:").await.unwrap(), vec![]);
    h.store.put("grant:bad", b"new", 10 * MIN).await.unwrap();
    assert_eq!(
        h.store.get("grant:bad").await.unwrap(),
        Some(b"new".to_vec())
    );
    // The damaged record's index row is left behind; the sweep drops it, keeps the entry.
    h.advance(MIN);
    assert_eq!(h.store.sweep().await.unwrap(), 0);
    assert_eq!(
        h.store.get("grant:bad").await.unwrap(),
        Some(b"new".to_vec())
    );
    h.store = Arc::new(MemoryStore::new());
    assert_eq!(assert_index_in_step(&h.path()), 1);
}

#[tokio::test]
async fn a_claim_left_by_a_crash_lapses_into_unknown_and_stays_held_across_a_restart() {
    let mut h = Harness::embedded();
    let claim = IdemClaim {
        claim: b"holder",
        lease: 30 * SEC,
        hold: 24 * 60 * MIN,
        retake: false,
    };
    assert_eq!(
        h.store.idem_claim("idem:k", &claim).await.unwrap(),
        Idem::Started
    );
    // The holder never finishes: the process stops with the request's outcome unknown.
    h.restart();
    assert!(matches!(
        h.store.idem_claim("idem:k", &claim).await.unwrap(),
        Idem::InFlight { .. }
    ));
    h.advance(30 * SEC);
    h.restart();
    assert_eq!(
        h.store.idem_claim("idem:k", &claim).await.unwrap(),
        Idem::Lapsed(b"holder".to_vec())
    );
}
