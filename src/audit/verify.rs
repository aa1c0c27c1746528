//! Verifying a whole audit log: every signature, `seq` counting up from 1, every `prev`
//! the hash of the line before, and no torn last line.
//!
//! Owns [`Broken`]: the first thing wrong, and its line. It only reads the log, never
//! repairs or rewrites it, and leaves how a signature is checked to `sign.rs`.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;

use serde_json::Value;

use super::{GENESIS, SIG_FIELD, Verifier, sha256_hex};

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct Broken {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

/// Checks a whole log: signatures, sequence and chain. Returns the record count.
///
/// # Errors
/// The first broken line and what is wrong with it; `Err` with line 0 if unreadable.
pub fn verify(path: &Path, verifier: impl Into<Verifier>) -> Result<u64, Broken> {
    verify_segment(path, &verifier.into(), None, |_, _| {}).map(|s| s.records)
}

/// Where a chain stands after a line: its `seq` and the line's SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEnd {
    /// The last record's `seq`.
    pub seq: u64,
    /// The hash of its line: the next record's `prev`.
    pub hash: String,
}

/// One verified file of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Records in the file.
    pub records: u64,
    /// The file starts a chain of its own (its first record is `seq` 1), rather than
    /// continuing the file before it.
    pub fresh: bool,
    /// Where its chain ends (`None`: the file is empty).
    pub end: Option<ChainEnd>,
}

/// Checks one file of a log, as [`verify`] does a whole log, and hands each verified
/// record to `each` (its 1-based line and the parsed record). With `after` (where the
/// file before it ends, for a log kept in several files), the file may continue that
/// chain (its first record is `after.seq + 1` with `prev` the hash of that line) or
/// start one of its own (`seq` 1 after 64 zeros: the writer started a new file); any
/// other start is a gap. The file is read a line at a time up to its length under a
/// shared lock, so a record being appended meanwhile is either all there or not at all,
/// and a log of any size is checked in little memory.
///
/// # Errors
/// The first broken line and what is wrong with it; `Err` with line 0 if unreadable.
pub fn verify_segment(
    path: &Path,
    verifier: &Verifier,
    after: Option<&ChainEnd>,
    mut each: impl FnMut(usize, &Value),
) -> Result<Segment, Broken> {
    let cannot_read = |e: std::io::Error| Broken {
        line: 0,
        what: format!("cannot read '{}': {e}", path.display()),
    };
    let mut reader = open_stable(path).map_err(cannot_read)?;
    let mut prev = GENESIS.to_owned();
    let mut expect = 1u64;
    let mut fresh = true;
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(cannot_read)? == 0 {
            break;
        }
        n += 1;
        let broken = |what: String| Broken { line: n, what };
        // Only the last line can lack its newline.
        let Some(body) = buf.strip_suffix(b"\n") else {
            return Err(broken("torn record: the last line is incomplete (the log was cut or a write was interrupted)".into()));
        };
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let line = String::from_utf8_lossy(body);
        let line = line.as_ref();
        let v: Value =
            serde_json::from_str(line).map_err(|e| broken(format!("not a JSON record ({e})")))?;
        let (Some(signed_part), Some(sig)) = (
            line.rfind(SIG_FIELD).map(|at| line.get(..at)),
            v.get("sig").and_then(Value::as_str),
        ) else {
            return Err(broken("record has no signature".into()));
        };
        let signed = format!("{}}}", signed_part.unwrap_or_default());
        verifier
            .check(signed.as_bytes(), sig)
            .map_err(|e| broken(e.to_string()))?;
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if n == 1
            && let Some(end) = after
            && seq != 1
        {
            // A file that continues the one before it.
            (expect, prev, fresh) = (end.seq + 1, end.hash.clone(), false);
        }
        if seq != expect {
            let what = if n == 1 && after.is_some() && seq > expect {
                format!(
                    "seq {seq} where {expect} (continuing the file before) or 1 (a new chain) was expected: record(s) {expect}..{} are missing between the files",
                    seq - 1
                )
            } else if n == 1 && seq > expect {
                format!(
                    "seq {seq} where {expect} was expected: record(s) {expect}..{} are missing (in a rotated file not given?)",
                    seq - 1
                )
            } else if seq > expect {
                format!(
                    "seq {seq} where {expect} was expected: record(s) {expect}..{} are missing",
                    seq - 1
                )
            } else {
                format!(
                    "seq {seq} where {expect} was expected: records are out of order or repeated"
                )
            };
            return Err(broken(what));
        }
        if v.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            let what = if n == 1 && !fresh {
                "prev does not match the last line of the file before: a record was removed, or the files are not one log"
            } else {
                "prev does not match the line before: a record was removed, inserted or reordered"
            };
            return Err(broken(what.into()));
        }
        each(n, &v);
        prev = sha256_hex(line.as_bytes());
        expect += 1;
    }
    let end = (n > 0).then(|| ChainEnd {
        seq: expect - 1,
        hash: prev,
    });
    Ok(Segment {
        records: u64::try_from(n).unwrap_or(u64::MAX),
        fresh,
        end,
    })
}

/// The file, to be read up to its length as it stood under a shared `flock`: writers
/// append whole records under an exclusive one, so every record up to that length is
/// complete, and the lock is not held while the file is read (appends go on meanwhile,
/// after that length).
fn open_stable(path: &Path) -> std::io::Result<BufReader<std::io::Take<File>>> {
    let file = File::open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)?;
    let len = file.metadata().map(|m| m.len());
    // Closing the file would release the lock too; this one stays open for reading.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock)?;
    Ok(BufReader::new(file.take(len?)))
}

/// A record of intent no call record names: a write that may have reached its upstream
/// while no outcome was recorded (mcpd stopped between the send and the record, or the
/// call is still in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    /// 1-based line number.
    pub line: usize,
    /// Its `seq`.
    pub seq: u64,
    /// The tool id.
    pub tool: String,
    /// The idempotency key, for keyed writes.
    pub idempotency_key: Option<String>,
    /// The call's trace id.
    pub trace_id: String,
    /// When it was written (RFC 3339).
    pub time: String,
}

/// Every record of intent in the log that no call record names (nor an operator's
/// resolution of its idempotency key, `"event":"resolve"` with its key and trace), in log
/// order. Reads what it can, a line at a time (only the intents still open are kept):
/// run [`verify`] for the log's integrity.
///
/// # Errors
/// The file cannot be read.
pub fn open_intents(path: &Path) -> std::io::Result<Vec<OpenIntent>> {
    let mut reader = BufReader::new(File::open(path)?);
    // By `seq`, in log order; a call record naming one closes it.
    let mut open: indexmap::IndexMap<u64, OpenIntent> = indexmap::IndexMap::new();
    let mut resolved = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
            continue;
        };
        let text_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if v.get("event").and_then(Value::as_str) == Some("intent") {
            let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
            open.insert(
                seq,
                OpenIntent {
                    line,
                    seq,
                    tool: text_of("tool").unwrap_or_default(),
                    idempotency_key: text_of("idempotency_key"),
                    trace_id: text_of("trace_id").unwrap_or_default(),
                    time: text_of("time").unwrap_or_default(),
                },
            );
        } else if v.get("event").and_then(Value::as_str) == Some("resolve") {
            resolved.insert((text_of("idempotency_key"), text_of("trace_id")));
        } else if let Some(seq) = v.get("intent").and_then(Value::as_u64) {
            open.shift_remove(&seq);
        }
    }
    Ok(open
        .into_values()
        .filter(|o| !resolved.contains(&(o.idempotency_key.clone(), Some(o.trace_id.clone()))))
        .collect())
}
