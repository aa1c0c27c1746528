//! `mcpd backtest` and `mcpd audit verify` on a log far larger than the memory they
//! take: the log is read a line at a time, each call replayed as it verifies; the peak
//! resident memory of the process is measured (wait4), not guessed.

use std::process::Command;

use serde_json::{Value, json};

use crate::backtest::{KEY, counts, demo_log, rule};
use crate::util::{ConfigDir, bin};

/// `mcpd ARGS --config DIR` with the audit key, run to its end: its exit code, stdout and
/// peak resident memory in bytes (the kernel's count for that one process).
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its peak memory"
)]
fn measured(cfg: &ConfigDir, args: &[&str]) -> (i32, String, u64) {
    use std::io::Read as _;
    let mut child = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .env("MCPD_AUDIT_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value; wait4 writes only through the two
    // pointers, to live locals, and reaps only this child (std never waits for it after).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(reaped, pid, "{}", std::io::Error::last_os_error());
    // ru_maxrss is in KiB on Linux.
    let peak = u64::try_from(usage.ru_maxrss).unwrap() * 1024;
    (libc::WEXITSTATUS(status), out, peak)
}

#[test]
fn a_log_far_larger_than_the_memory_it_takes_is_verified_and_backtested_in_full() {
    const MIB: u64 = 1 << 20;
    let cfg = demo_log();
    // the demo's records again and again, each call's arguments carrying a 16 KiB note,
    // signed into one chain of 24 MiB
    let bodies: Vec<(Value, Value)> = cfg
        .read("state/audit.jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            let seq = m.remove("seq").unwrap();
            for k in ["prev", "time", "time_ms", "sig"] {
                m.remove(k);
            }
            if m.get("decision").is_some() {
                m["args"]["note"] = json!("n".repeat(16 << 10));
            }
            (seq, v)
        })
        .collect();
    assert_eq!(bodies.len(), 12);
    let big = cfg.path().join("big.jsonl");
    let log = mcpd::audit::AuditLog::open(&big, KEY.as_bytes().to_vec()).unwrap();
    let mut rounds = 0;
    while std::fs::metadata(&big).unwrap().len() < 24 * MIB {
        // each call record names its record of intent by the seq it has in this log
        let mut intents = std::collections::HashMap::new();
        for (then, b) in &bodies {
            let mut b = b.clone();
            if let Some(intent) = b.get("intent").cloned() {
                b["intent"] = json!(intents[&intent]);
            }
            intents.insert(then.clone(), log.record(&b).unwrap());
        }
        rounds += 1;
    }
    log.flush();
    drop(log);
    let big = big.to_str().unwrap();
    // mcpd's own needs, on the demo log alone; the 24 MiB log may add 8 MiB at most
    // (read whole, it would add its size and more)
    let (code, _, small) = measured(&cfg, &["backtest", "--json"]);
    assert_eq!(code, 0);
    let (code, out, peak) = measured(&cfg, &["backtest", "--json", "--audit", big]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    // every call replayed: ten per round, eight of them reached policy
    assert_eq!(
        counts(&r, &["records", "calls", "replayed", "unchanged"]),
        [12 * rounds, 10 * rounds, 8 * rounds, 8 * rounds]
    );
    assert_eq!(rule(&r, "no-bulk-exports")["newly_denies"]["calls"], rounds);
    assert!(
        peak < small + 8 * MIB,
        "backtest took {peak} bytes at peak, {small} on the demo log"
    );
    let demo = cfg.path().join("state/audit.jsonl");
    let (code, _, small) = measured(&cfg, &["audit", "verify", demo.to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, out, peak) = measured(&cfg, &["audit", "verify", big]);
    assert_eq!(code, 0, "{out}");
    // every write's record of intent has its outcome: no note
    assert_eq!(
        out,
        format!(
            "OK: {} records, signatures and chain intact ({big})\n",
            12 * rounds
        )
    );
    assert!(
        peak < small + 8 * MIB,
        "audit verify took {peak} bytes at peak, {small} on the demo log"
    );
}
