//! The Redis backend against a real `redis-server` (started on a free port for each
//! test; CI installs the Debian package). Time is real, so windows are short.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::redis::RedisStore;
use super::*;

const MIN: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh redis-server, or `None` (with a loud message) when the binary is missing.
fn server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: redis-server is not installed ({e}); apt-get install redis-server");
            return None;
        }
    };
    let url = format!("redis://127.0.0.1:{port}/");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Server { child, url });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start on port {port}");
}

async fn store(s: &Server) -> Arc<dyn Store> {
    Arc::new(RedisStore::connect(&s.url).await.unwrap())
}

fn inc(key: &str, by: u64, limit: Option<u64>) -> Incr {
    Incr {
        key: key.to_owned(),
        by,
        limit,
        window: MIN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_start_once_replay_and_release() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.idem_begin("idem:t:a:k", MIN).await.unwrap() })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Idem::Started => started += 1,
            Idem::InFlight => {}
            Idem::Done(_) => panic!("nothing finished yet"),
        }
    }
    assert_eq!(started, 1);
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
async fn counters_never_pass_their_limit_and_restart_after_the_window() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.incr_within("budget:b:a", 3, 40, MIN).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if let Admission::Admitted(_) = t.await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 13);
    assert_eq!(s.get_counter("budget:b:a").await.unwrap(), 39);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_all_counts_everything_or_nothing() {
    let Some(srv) = server() else { return };
    let s = store(&srv).await;
    let both = [inc("rate:a", 1, Some(2)), inc("budget:b", 5, None)];
    let first = s.incr_all(&both).await.unwrap().unwrap();
    assert_eq!((first[0].total, first[1].total), (1, 5));
    s.incr_all(&both).await.unwrap().unwrap();
    let (index, at) = s.incr_all(&both).await.unwrap().unwrap_err();
    assert_eq!((index, at.total), (0, 2));
    assert_eq!(s.get_counter("budget:b").await.unwrap(), 10);
    let later = [inc("rate:c", 1, None), inc("budget:b", 1, Some(10))];
    assert_eq!(s.incr_all(&later).await.unwrap().unwrap_err().0, 1);
    assert_eq!(s.get_counter("rate:c").await.unwrap(), 0);
    s.put("grant:x", b"v", MIN).await.unwrap();
    let mixed = [inc("rate:d", 1, None), inc("grant:x", 1, None)];
    assert!(matches!(
        s.incr_all(&mixed).await,
        Err(StoreError::WrongKind { .. })
    ));
    assert_eq!(s.get_counter("rate:d").await.unwrap(), 0);
    // Concurrent callers spending from a shared and a tighter budget.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = Arc::clone(&s);
            let incs = if i % 2 == 0 {
                vec![
                    inc("budget:all", 1, Some(30)),
                    inc("budget:even", 1, Some(5)),
                ]
            } else {
                vec![inc("budget:all", 1, Some(30))]
            };
            tokio::spawn(async move { s.incr_all(&incs).await.unwrap().is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += u64::from(t.await.unwrap());
    }
    assert_eq!(s.get_counter("budget:all").await.unwrap(), admitted);
    assert_eq!(s.get_counter("budget:even").await.unwrap(), 5);
    assert_eq!(admitted, 25);
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
