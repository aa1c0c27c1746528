//! The Redis backend against a real `redis-server` (started on a free port for each
//! test; CI installs the Debian package). The shared behaviours run from `tests.rs`
//! (`on_redis!`); these are the ones that need real time (short windows) or Redis itself.

use std::sync::Arc;
use std::time::Duration;

use super::redis::RedisStore;
use super::*;

const MIN: Duration = Duration::from_secs(60);

/// The integration tests' launcher, shared so the two test crates cannot drift apart.
#[path = "../../tests/util/redis_server.rs"]
mod redis_server;

pub(super) use redis_server::RedisServer as Server;

/// A fresh redis-server, or `None` (with a loud message) when the binary is missing.
pub(super) fn server() -> Option<Server> {
    Server::start()
}

pub(super) async fn store(s: &Server) -> Arc<dyn Store> {
    Arc::new(RedisStore::connect(&s.url).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_records_keep_binary_results_and_claims_lapse() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    assert_eq!(
        s.idem_begin("idem:t:a:k", MIN).await.unwrap(),
        Idem::Started
    );
    s.idem_finish("idem:t:a:k", b"result \x00 bytes", MIN)
        .await
        .unwrap();
    assert_eq!(
        s.idem_begin("idem:t:a:k", MIN).await.unwrap(),
        Idem::Done(b"result \x00 bytes".to_vec())
    );
    assert!(
        !s.idem_abandon("idem:t:a:k").await.unwrap(),
        "a finished key is kept"
    );
    assert_eq!(
        s.idem_begin("idem:t:a:j", MIN).await.unwrap(),
        Idem::Started
    );
    assert!(s.idem_abandon("idem:t:a:j").await.unwrap());
    assert_eq!(
        s.idem_begin("idem:t:a:j", MIN).await.unwrap(),
        Idem::Started
    );
    // A claim whose holder died lapses after its ttl.
    assert_eq!(
        s.idem_begin("idem:t:a:x", Duration::from_millis(150))
            .await
            .unwrap(),
        Idem::Started
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        s.idem_begin("idem:t:a:x", MIN).await.unwrap(),
        Idem::Started
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_lease_lapsed_is_unknown_on_the_server_clock() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    let claim = IdemClaim {
        claim: b"holder \x00 bytes",
        lease: Duration::from_millis(150),
        hold: MIN,
        retake: false,
    };
    assert_eq!(
        s.idem_claim("idem:t:a:l", &claim).await.unwrap(),
        Idem::Started
    );
    let Idem::InFlight {
        lapses_in,
        claim: by,
    } = s.idem_claim("idem:t:a:l", &claim).await.unwrap()
    else {
        panic!("in flight");
    };
    assert!(lapses_in <= Duration::from_millis(150), "{lapses_in:?}");
    assert_eq!(by, b"holder \x00 bytes");
    // Real time on the server: Redis keeps its own clock.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        s.idem_claim("idem:t:a:l", &claim).await.unwrap(),
        Idem::Lapsed(b"holder \x00 bytes".to_vec())
    );
    let listed = s.idem_list("idem:t:a:").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].2 > Duration::from_secs(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_say_when_the_window_resets_and_windows_restart() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    for _ in 0..13 {
        s.incr_within("budget:b:a", 3, 40, MIN).await.unwrap();
    }
    let Admission::Refused(c) = s.incr_within("budget:b:a", 3, 40, MIN).await.unwrap() else {
        panic!("over the limit");
    };
    assert_eq!(c.total, 39);
    assert!(c.resets_in > Duration::from_secs(50) && c.resets_in <= MIN);
    // A short window: counted, then gone.
    let c = s
        .incr("rate:r", 2, Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(c.total, 2);
    assert_eq!(
        s.incr("rate:r", 1, Duration::from_millis(150))
            .await
            .unwrap()
            .total,
        3
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        s.incr("rate:r", 1, Duration::from_millis(150))
            .await
            .unwrap()
            .total,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_scan_delete_and_kinds() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    s.put("grant:agent:a:g2", b"two", MIN).await.unwrap();
    s.put("grant:agent:a:g1", b"one", MIN).await.unwrap();
    s.put("grant:agent:b:g3", b"three", MIN).await.unwrap();
    s.put("grant:agent:a*:g9", b"glob", MIN).await.unwrap();
    assert_eq!(
        s.get("grant:agent:a:g1").await.unwrap(),
        Some(b"one".to_vec())
    );
    let scanned = s.scan_prefix("grant:agent:a:").await.unwrap();
    assert_eq!(
        scanned,
        vec![
            ("grant:agent:a:g1".to_owned(), b"one".to_vec()),
            ("grant:agent:a:g2".to_owned(), b"two".to_vec())
        ]
    );
    assert_eq!(
        s.scan_prefix("grant:agent:a*:").await.unwrap().len(),
        1,
        "globs are literal"
    );
    assert!(s.delete("grant:agent:a:g1").await.unwrap());
    assert!(!s.delete("grant:agent:a:g1").await.unwrap());
    s.put("short", b"v", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("short").await.unwrap(), None);
    // Keys of different kinds do not mix.
    s.incr("rate:k", 1, MIN).await.unwrap();
    assert!(matches!(
        s.get("rate:k").await,
        Err(StoreError::WrongKind { .. })
    ));
    assert!(matches!(
        s.idem_begin("grant:agent:b:g3", MIN).await,
        Err(StoreError::WrongKind { .. })
    ));
    assert!(matches!(
        s.incr("grant:agent:b:g3", 1, MIN).await,
        Err(StoreError::WrongKind { .. })
    ));
    assert!(matches!(
        s.get_counter("grant:agent:b:g3").await,
        Err(StoreError::WrongKind { .. })
    ));
    assert_eq!(s.sweep().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = connect(&format!("redis://user:secret@127.0.0.1:{port}/"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password must not be shown: {err}"
    );
}

/// Issue 18: with `appendonly yes` and `appendfsync always`, a claim Redis acknowledged
/// survives Redis dying (SIGKILL) and coming back; while it is down every operation fails
/// within the response timeout, and the same store works again once it is back, with no
/// reconnect by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_claims_survive_a_redis_kill_and_the_store_reconnects_by_itself() {
    let Some(mut srv) = Server::start_durable() else {
        return;
    };
    let s = store(&srv).await;
    let hour = Duration::from_secs(3600);
    for i in 0..50 {
        let key = format!("idem:t:a:k{i}");
        assert_eq!(s.idem_begin(&key, hour).await.unwrap(), Idem::Started);
        if i % 2 == 0 {
            s.idem_finish(&key, format!("r{i}").as_bytes(), hour)
                .await
                .unwrap();
        }
    }
    srv.kill();
    let started = std::time::Instant::now();
    let down = s.idem_begin("idem:t:a:k0", hour).await;
    assert!(
        matches!(down, Err(StoreError::Unreachable(ref m)) if m.contains("redis")),
        "{down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    srv.restart();
    // The same store, no reconnect by hand: poll until the connection is back.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        match s.idem_begin("idem:t:a:k0", hour).await {
            Ok(found) => break found,
            Err(e) => assert!(std::time::Instant::now() < end, "never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first, Idem::Done(b"r0".to_vec()));
    for i in 1..50 {
        let found = s.idem_begin(&format!("idem:t:a:k{i}"), hour).await.unwrap();
        if i % 2 == 0 {
            assert_eq!(found, Idem::Done(format!("r{i}").into_bytes()), "k{i}");
        } else {
            assert!(matches!(found, Idem::InFlight { .. }), "k{i}: {found:?}");
        }
    }
}

/// A Redis that stops answering (SIGSTOP: its connections stay open) fails each
/// operation after the response timeout, not never; once it answers again, so does the
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_stops_answering_fails_operations_in_bounded_time() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    s.put("k", b"v", MIN).await.unwrap();
    srv.answering(false);
    let started = std::time::Instant::now();
    let hung = s.get("k").await;
    srv.answering(true);
    assert!(matches!(hung, Err(StoreError::Unreachable(_))), "{hung:?}");
    let took = started.elapsed();
    assert!(
        took >= super::redis::RESPONSE_TIMEOUT && took < super::redis::RESPONSE_TIMEOUT * 3,
        "took {took:?}"
    );
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match s.get("k").await {
            Ok(v) => break assert_eq!(v, Some(b"v".to_vec())),
            Err(e) => assert!(std::time::Instant::now() < end, "never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
