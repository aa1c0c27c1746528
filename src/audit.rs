//! The audit log: one signed JSON line per call, each chained to the one before.
//!
//! Owns the record format, appending (durably, off the call path) and verification.
//! Every line carries `seq` (1, 2, ...), `prev` (SHA-256 of the previous line, hex; 64
//! zeros for the first) and, last, `sig` (HMAC-SHA256 over the line up to `sig`, with
//! the key from the environment). An edit breaks that line's signature, a deletion or
//! reordering breaks `seq` and `prev`, a cut tail shows as a torn last line.
//! Arguments reach this module already redacted; it never sees secrets.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What separates the signed part of a line from its signature.
const SIG_FIELD: &str = ",\"sig\":\"";

/// What one call leaves in the audit log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    /// Who called (subject), or `anonymous`.
    pub actor: String,
    /// The tool id.
    pub tool: String,
    /// The arguments, redacted.
    pub args: Value,
    /// `allowed`, `denied`, `limited` or `error`.
    pub decision: String,
    /// Why, for anything but `allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ids of the enforced rules that matched.
    pub rules: Vec<String>,
    /// Ids of shadow rules that matched, with what they would have done.
    pub shadow: Vec<String>,
    /// The upstream's HTTP status, when a request was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The idempotency key, for writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The change ticket of the elevation grant the call ran under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Whether the result was replayed for its idempotency key (no upstream call).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// The W3C trace id of the call.
    pub trace_id: String,
    /// Values redacted in the result.
    pub pii_count: usize,
}

/// A problem opening or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened or read.
    #[error("audit log '{path}': {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No signing key.
    #[error(
        "audit log: environment variable {0} must hold the signing key (any secret string of 32+ characters)"
    )]
    NoKey(String),
}

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct Broken {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

/// An open audit log. Records are appended under a lock by the calling thread (no hop
/// to another thread per call); a background thread syncs the file to disk every few
/// milliseconds when something was written (group commit).
#[derive(Debug)]
pub struct AuditLog {
    state: Arc<Mutex<Writer>>,
    path: PathBuf,
}

/// How often written records are synced to disk.
const SYNC_EVERY: Duration = Duration::from_millis(5);

impl AuditLog {
    /// Opens (or creates) the log and continues its chain.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(path: &Path, key: Vec<u8>) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let (seq, prev, torn) = tail(path).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if torn {
            // Keep the torn bytes (verify reports them) and start a fresh line after them.
            tracing::warn!(path = %path.display(), "audit log ends in a torn record; appending after it");
            file.write_all(b"\n").map_err(io)?;
        }
        let sync_handle = file.try_clone().map_err(io)?;
        let state = Arc::new(Mutex::new(Writer {
            file,
            key,
            seq,
            prev,
            dirty: false,
        }));
        let weak = Arc::downgrade(&state);
        let sync_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("mcpd-audit-sync".into())
            .spawn(move || sync_loop(&weak, &sync_handle, &sync_path))
            .map_err(io)?;
        Ok(Self {
            state,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record; it is in the file (it survives mcpd being killed) when this
    /// returns, and on disk within a few milliseconds.
    pub fn record(&self, entry: &Entry) {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = w.append(entry) {
            tracing::error!(path = %self.path.display(), error = %e, "audit write failed");
        }
    }

    /// Syncs every record written so far to disk.
    pub fn flush(&self) {
        let w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = w.file.sync_data() {
            tracing::error!(path = %self.path.display(), error = %e, "audit log sync failed");
        }
    }
}

fn sync_loop(state: &std::sync::Weak<Mutex<Writer>>, file: &File, path: &Path) {
    // Ends when the log is dropped.
    while let Some(state) = state.upgrade() {
        let dirty = std::mem::take(&mut state.lock().unwrap_or_else(PoisonError::into_inner).dirty);
        drop(state);
        // Sync outside the lock: appends go on while the disk catches up.
        if dirty && let Err(e) = file.sync_data() {
            tracing::error!(path = %path.display(), error = %e, "audit log sync failed");
        }
        std::thread::sleep(SYNC_EVERY);
    }
}

#[derive(Debug)]
struct Writer {
    file: File,
    key: Vec<u8>,
    seq: u64,
    prev: String,
    dirty: bool,
}

impl Writer {
    fn append(&mut self, e: &Entry) -> std::io::Result<()> {
        let line = sign_line(&self.key, self.seq + 1, &self.prev, e);
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.seq += 1;
        self.prev = sha256_hex(line.as_bytes());
        self.dirty = true;
        Ok(())
    }
}

/// The signed line for record `seq` after a line hashing to `prev`.
fn sign_line(key: &[u8], seq: u64, prev: &str, e: &Entry) -> String {
    let now = SystemTime::now();
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let head = serde_json::json!({
        "seq": seq,
        "prev": prev,
        "time": humantime::format_rfc3339_millis(now).to_string(),
        "time_ms": u64::try_from(ms).unwrap_or(u64::MAX),
    });
    let body = serde_json::to_value(e).unwrap_or(Value::Null);
    let mut obj = serde_json::Map::new();
    for v in [head, body] {
        if let Value::Object(m) = v {
            obj.extend(m);
        }
    }
    let signed = Value::Object(obj).to_string();
    let sig = hex::encode(hmac(key, signed.as_bytes()));
    let open = signed.strip_suffix('}').unwrap_or(&signed);
    format!("{open}{SIG_FIELD}{sig}\"}}")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The last good `seq` and line hash of an existing log, and whether its tail is torn.
fn tail(path: &Path) -> std::io::Result<(u64, String, bool)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0, GENESIS.to_owned(), false));
        }
        Err(e) => return Err(e),
    };
    let len = file.seek(SeekFrom::End(0))?;
    let torn = if len > 0 {
        file.seek(SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        last != *b"\n"
    } else {
        false
    };
    file.seek(SeekFrom::Start(0))?;
    let mut state = (0, GENESIS.to_owned());
    for line in BufReader::new(file).lines() {
        let line = line?;
        let seq = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64));
        if let Some(seq) = seq {
            state = (seq, sha256_hex(line.as_bytes()));
        }
    }
    Ok((state.0, state.1, torn))
}

/// Checks a whole log: signatures, sequence and chain. Returns the record count.
///
/// # Errors
/// The first broken line and what is wrong with it; `Err` with line 0 if unreadable.
pub fn verify(path: &Path, key: &[u8]) -> Result<u64, Broken> {
    let text = std::fs::read(path).map_err(|e| Broken {
        line: 0,
        what: format!("cannot read '{}': {e}", path.display()),
    })?;
    let text = String::from_utf8_lossy(&text);
    let complete = text.is_empty() || text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut prev = GENESIS.to_owned();
    let mut expect = 1u64;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let broken = |what: String| Broken { line: n, what };
        if !complete && n == lines.len() {
            return Err(broken("torn record: the last line is incomplete (the log was cut or a write was interrupted)".into()));
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| broken(format!("not a JSON record ({e})")))?;
        let (Some(signed_part), Some(sig)) = (
            line.rfind(SIG_FIELD).map(|at| line.get(..at)),
            v.get("sig").and_then(Value::as_str),
        ) else {
            return Err(broken("record has no signature".into()));
        };
        let signed = format!("{}}}", signed_part.unwrap_or_default());
        if hex::encode(hmac(key, signed.as_bytes())) != sig {
            return Err(broken(
                "signature does not match: the record was altered (or the key is wrong)".into(),
            ));
        }
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if seq != expect {
            let what = if seq > expect {
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
            return Err(broken(
                "prev does not match the line before: a record was removed, inserted or reordered"
                    .into(),
            ));
        }
        prev = sha256_hex(line.as_bytes());
        expect += 1;
    }
    Ok(expect - 1)
}

#[cfg(test)]
mod tests {
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
}
