//! The audit log end to end: records written, reopened and verified, and every kind of
//! tampering (an edit, a deletion, a reordering, a cut tail, another key) reported at
//! its line.

use super::*;

const KEY: &[u8] = b"test-key-test-key-test-key-test-key";

fn write_log(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    for i in 0..n {
        log.record(&Entry {
            actor: "agent:test".into(),
            tool: format!("tool{i}"),
            decision: "allowed".into(),
            ..Entry::default()
        });
    }
    log.flush();
    (dir, path)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn clean_log_verifies_with_its_count() {
    let (_d, path) = write_log(5);
    assert_eq!(verify(&path, KEY), Ok(5));
}

#[test]
fn edited_record_is_reported_at_its_line() {
    let (_d, path) = write_log(5);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"allowed\"", "\"denied\"");
    rewrite(&path, &l);
    let err = verify(&path, KEY).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.what.contains("altered"), "{err}");
}

#[test]
fn deleted_record_is_reported() {
    let (_d, path) = write_log(5);
    let mut l = lines(&path);
    l.remove(1);
    rewrite(&path, &l);
    let err = verify(&path, KEY).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.what.contains("missing"), "{err}");
}

#[test]
fn reordered_records_are_reported() {
    let (_d, path) = write_log(5);
    let mut l = lines(&path);
    l.swap(1, 2);
    rewrite(&path, &l);
    let err = verify(&path, KEY).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.what.contains("out of order") || err.what.contains("missing"),
        "{err}"
    );
}

#[test]
fn torn_last_line_is_detected() {
    let (_d, path) = write_log(3);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.truncate(text.len() - 10);
    std::fs::write(&path, text).unwrap();
    let err = verify(&path, KEY).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.what.contains("torn"), "{err}");
}

#[test]
fn wrong_key_fails_verification() {
    let (_d, path) = write_log(2);
    assert!(verify(&path, b"another-key-another-key-another-key").is_err());
}

fn ed25519_log(n: usize) -> (tempfile::TempDir, PathBuf, Verifier) {
    let (private, public) = ed25519_keygen().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, Signer::ed25519_from_hex(&private).unwrap()).unwrap();
    for i in 0..n {
        log.record(&Entry {
            tool: format!("tool{i}"),
            decision: "allowed".into(),
            ..Entry::default()
        });
    }
    log.flush();
    (dir, path, Verifier::ed25519_from_hex(&public).unwrap())
}

#[test]
fn ed25519_log_verifies_with_the_public_key_only() {
    let (_d, path, public) = ed25519_log(4);
    assert!(lines(&path)[0].contains("\"sig\":\"ed25519:"));
    assert_eq!(verify(&path, public), Ok(4));
}

#[test]
fn ed25519_edit_or_another_key_fails() {
    let (_d, path, public) = ed25519_log(3);
    let (_, other) = ed25519_keygen().unwrap();
    let err = verify(&path, Verifier::ed25519_from_hex(&other).unwrap()).unwrap_err();
    assert_eq!(err.line, 1);
    let mut l = lines(&path);
    l[1] = l[1].replace("tool1", "tool9");
    rewrite(&path, &l);
    let err = verify(&path, public).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.what.contains("altered"), "{err}");
}

#[test]
fn the_wrong_scheme_says_how_to_verify() {
    let (_d, path, public) = ed25519_log(1);
    let err = verify(&path, KEY).unwrap_err();
    assert!(err.what.contains("--public-key"), "{err}");
    let (_d2, hmac_path) = write_log(1);
    let err = verify(&hmac_path, public).unwrap_err();
    assert!(err.what.contains("signed with HMAC"), "{err}");
}

#[test]
fn bad_ed25519_keys_are_refused_without_echoing_them() {
    let err = Signer::ed25519_from_hex("not-a-key-s3cr3t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("64 hex digits") && !err.contains("s3cr3t"),
        "{err}"
    );
    assert!(Verifier::ed25519_from_hex(&"ab".repeat(31)).is_err());
}

#[test]
fn reopening_continues_the_chain() {
    let (_d, path) = write_log(2);
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    log.record(&Entry {
        tool: "after-restart".into(),
        ..Entry::default()
    });
    log.flush();
    assert_eq!(verify(&path, KEY), Ok(3));
}

#[test]
fn two_writers_on_one_file_keep_one_chain() {
    // Two opens of one file lock against each other as two processes do.
    let (_d, path) = write_log(1);
    let a = AuditLog::open(&path, KEY.to_vec()).unwrap();
    let b = AuditLog::open(&path, KEY.to_vec()).unwrap();
    std::thread::scope(|s| {
        for log in [&a, &b] {
            s.spawn(move || {
                for i in 0..200 {
                    log.record(&Entry {
                        tool: format!("t{i}"),
                        ..Entry::default()
                    });
                }
            });
        }
    });
    assert_eq!(verify(&path, KEY), Ok(401));
    let seqs: Vec<u64> = lines(&path)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=401).collect::<Vec<_>>());
}

#[test]
fn a_writer_appends_after_a_torn_line_another_left() {
    let (_d, path) = write_log(2);
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    // Another process died mid-line after this one opened the log.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"seq\":3,\"prev\":\"cut")
        .unwrap();
    assert_eq!(log.record(&Entry::default()), Some(3));
    let l = lines(&path);
    assert_eq!(l.len(), 4);
    let last: Value = serde_json::from_str(&l[3]).unwrap();
    assert_eq!(last["seq"], 3, "{}", l[3]);
    assert_eq!(verify(&path, KEY).unwrap_err().line, 3);
}

#[test]
fn an_intent_without_its_call_record_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    let intent = |key: &str, trace: &str| Intent {
        event: "intent",
        actor: "agent:a".into(),
        tool: "order.place".into(),
        args: Value::Null,
        method: "POST".into(),
        upstream: "orders".into(),
        idempotency_key: Some(key.into()),
        ticket: None,
        trace_id: trace.into(),
    };
    let done = log.record(&intent("k1", "t1"));
    log.record(&Entry {
        intent: done,
        ..Entry::default()
    });
    log.record(&intent("k2", "t2"));
    log.record(&intent("k3", "t3"));
    log.record(&serde_json::json!({"event": "resolve", "idempotency_key": "k3", "trace_id": "t3"}));
    log.flush();
    assert_eq!(verify(&path, KEY), Ok(5));
    let open = open_intents(&path).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (
            open[0].line,
            open[0].seq,
            open[0].idempotency_key.as_deref()
        ),
        (3, 3, Some("k2"))
    );
}

#[test]
fn a_log_written_before_records_of_intent_verifies_and_has_none_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // The record shape of earlier versions: no event, intent or outcome fields.
    let signer = Signer::Hmac(KEY.to_vec());
    let mut prev = GENESIS.to_owned();
    let mut text = String::new();
    for seq in 1..=3 {
        let old = serde_json::json!({
            "actor": "user:local-dev", "tool": "flag.set", "args": {"env": "staging"},
            "decision": "allowed", "rules": [], "shadow": [], "status": 200,
            "idempotency_key": "flag-staging-x-5", "trace_id": "t", "pii_count": 0,
        });
        let line = sign::sign_line(&signer, seq, &prev, &old);
        prev = sha256_hex(line.as_bytes());
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    assert_eq!(verify(&path, KEY), Ok(3));
    assert_eq!(open_intents(&path).unwrap(), vec![]);
    // A new mcpd continues the old chain.
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    assert_eq!(log.record(&Entry::default()), Some(4));
    assert_eq!(verify(&path, KEY), Ok(4));
}
