//! The audit log: one signed JSON line per call, each chained to the one before, and
//! one per policy change a reload applies or holds (`"kind": "config"`; call records
//! have no `kind`, so logs written before config records existed verify unchanged).
//!
//! Owns the record format, appending (durably, off the call path) and verification.
//! Every line carries `seq` (1, 2, ...), `prev` (SHA-256 of the previous line, hex; 64
//! zeros for the first) and, last, `sig` over the line up to `sig`: HMAC-SHA256 with the
//! key from the environment (hex), or Ed25519 with a private key from the environment
//! (`ed25519:` + hex), which anyone holding the public key can check. An edit breaks that line's signature, a deletion or
//! reordering breaks `seq` and `prev`, a cut tail shows as a torn last line.
//! Arguments reach this module already redacted; it never sees secrets.
//!
//! A write about to be sent leaves an [`Intent`] record first (`"event":"intent"`), and
//! the call's own record names it (`"intent": SEQ`): an intent with no record naming it
//! is a write that may have happened while mcpd was stopped ([`open_intents`]).
//!
//! This file holds the records ([`Entry`], [`Intent`]), the writer with its sync thread,
//! and picking up the chain where the log ends, also when other processes append to it;
//! keys and signatures are in `sign.rs`, checking a whole log in `verify.rs`.

mod sign;
mod verify;

pub use sign::{KeyError, SignatureError, Signer, Verifier, ed25519_keygen};
pub use verify::{Broken, ChainEnd, OpenIntent, Segment, open_intents, verify, verify_segment};

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use sign::sign_line;

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
    /// The change ticket of the elevation grant the call ran under, or the one a human
    /// gave when asked to approve the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// How a human's approval came out, when one was asked for: `ticket`, `confirmed`,
    /// `declined`, `cancelled`, `timeout`, `rejected`, `withdrawn` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Who answered the approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Whether the result was replayed for its idempotency key (no upstream call).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// The W3C trace id of the call.
    pub trace_id: String,
    /// Values redacted in the result.
    pub pii_count: usize,
    /// The `seq` of the record of intent written before the request was sent (writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    /// `unknown` when the write's outcome is unknown and its idempotency key is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// What policy saw of the call and decided, so it can be replayed through another
    /// policy (`mcpd backtest`); `null` when the call ended before policy (identity,
    /// arguments, scope). Records written before mcpd recorded it have no `policy`.
    pub policy: Option<PolicyRecord>,
    /// JSON pointers into this record of the values the detectors changed before it was
    /// written (`/args/email`, `/policy/actor/purpose`): a rule reading one of them
    /// cannot be replayed on this record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// What policy saw of a call and decided (a call record's `policy`), redacted as the
/// arguments are.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyRecord {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rule that denied the call (or `default`), when policy denied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
    /// The actor as conditions saw it, but its subject (the record's `actor`): `scopes`,
    /// `purpose`, `region`, `source`, and what its token says (`token_id`, `expires`).
    pub actor: Value,
    /// What conditions saw as `env`.
    pub env: Value,
    /// The elevation grant that applied (`ticket`, `granted_by`, `expires`, `tool`,
    /// `env`, `id`), `null` when the caller's grants were looked up and none applied;
    /// absent when no rule covering the tool reads elevation (they were not looked up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elevation: Option<Value>,
}

/// What a write leaves in the log just before it is sent (`"event":"intent"`): if mcpd
/// dies before the call's own record, this one still shows the write that may have
/// happened. The call's record names it in `intent`.
#[derive(Debug, Clone, Serialize)]
pub struct Intent {
    /// Always `intent`.
    pub event: &'static str,
    /// Who called (subject).
    pub actor: String,
    /// The tool id.
    pub tool: String,
    /// The arguments, redacted.
    pub args: Value,
    /// The HTTP method.
    pub method: String,
    /// The upstream's name.
    pub upstream: String,
    /// The idempotency key, for keyed writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The change ticket of the elevation grant the call runs under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The W3C trace id of the call.
    pub trace_id: String,
}

/// What opening a circuit breaker leaves in the log (`"event":"breaker"`), written by the
/// mcpd whose call tipped it; calls refused while it is open have records of their own
/// (`decision: limited`).
#[derive(Debug, Clone, Serialize)]
pub struct BreakerEvent {
    /// Always `breaker`.
    pub event: &'static str,
    /// Which: `tool:ID`, `upstream:NAME`, `upstream:NAME@REGION`.
    pub breaker: String,
    /// Always `open` (it closes by itself at `until`).
    pub state: &'static str,
    /// Until when it refuses (RFC 3339).
    pub until: String,
    /// Calls in the window when it opened.
    pub calls: u64,
    /// Failures among them.
    pub errors: u64,
    /// The window, e.g. `1 min`.
    pub over: String,
    /// The tool whose failed call tipped it.
    pub tool: String,
    /// That call's trace id.
    pub trace_id: String,
}

/// What a policy change leaves in the audit log (`"kind": "config"`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigEntry {
    /// Always `config`: tells these records from call records.
    pub kind: &'static str,
    /// `policy_applied`, or `policy_held` (changed on disk, pinned: not applied).
    pub event: String,
    /// The file that changed.
    pub file: String,
    /// What started the reload: `file change`, `SIGHUP` or `mcpd reload`.
    pub trigger: String,
    /// Ids of rules added.
    pub rules_added: Vec<String>,
    /// Ids of rules removed.
    pub rules_removed: Vec<String>,
    /// Ids of rules changed.
    pub rules_changed: Vec<String>,
    /// Every change that takes protection away.
    pub weakened: Vec<Weakened>,
}

/// One change that takes protection away, as the audit log records it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Weakened {
    /// The rule's id (or `default`, `egress`).
    pub rule: String,
    /// What happened to it.
    pub change: String,
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
    /// An Ed25519 key that cannot be used.
    #[error("audit log: environment variable {env}: {why}")]
    BadKey {
        /// The variable.
        env: String,
        /// What is wrong (never the key).
        why: KeyError,
    },
}

/// An open audit log. Records are appended under a lock by the calling thread (no hop
/// to another thread per call); a background thread syncs the file to disk every few
/// milliseconds when something was written (group commit).
///
/// Several processes may append to one log (two stdio hosts on one config, `mcpd
/// idempotency resolve` beside `mcpd serve`): each append takes an exclusive `flock` on
/// the file and first reads whatever the others appended since its last one, so every
/// line continues the one chain. The file must be on a local filesystem.
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
    pub fn open(path: &Path, signer: impl Into<Signer>) -> Result<Self, AuditError> {
        let signer = signer.into();
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let sync_handle = file.try_clone().map_err(io)?;
        let mut writer = Writer {
            file,
            path: path.to_path_buf(),
            signer,
            seq: 0,
            prev: GENESIS.to_owned(),
            end: 0,
            dirty: false,
        };
        // Reads the chain so far now, so a log that cannot be read stops mcpd at start.
        writer.locked(|_| Ok(())).map_err(io)?;
        let state = Arc::new(Mutex::new(writer));
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

    /// Appends one record (an [`Entry`], an [`Intent`]); it is in the file (it survives
    /// mcpd being killed) when this returns, and on disk within a few milliseconds.
    /// Returns its `seq`, or `None` when the write failed (logged).
    pub fn record<T: Serialize>(&self, record: &T) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match w.append(record) {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit write failed");
                None
            }
        }
    }

    /// Appends one config record (a policy applied or held), as [`Self::record`] does.
    pub fn record_config(&self, entry: &ConfigEntry) {
        self.record(entry);
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
    path: PathBuf,
    signer: Signer,
    /// The chain as of byte `end` of the file: the last `seq` and line hash.
    seq: u64,
    prev: String,
    end: u64,
    dirty: bool,
}

impl Writer {
    fn append<T: Serialize>(&mut self, record: &T) -> std::io::Result<u64> {
        self.locked(|w| {
            let line = sign_line(&w.signer, w.seq + 1, &w.prev, record);
            let bytes = format!("{line}\n");
            w.file.write_all(bytes.as_bytes())?;
            w.seq += 1;
            w.prev = sha256_hex(line.as_bytes());
            w.end += bytes.len() as u64;
            w.dirty = true;
            Ok(w.seq)
        })
    }

    /// Runs `f` holding the file's lock, with the chain caught up to the file's end.
    fn locked<R>(&mut self, f: impl FnOnce(&mut Self) -> std::io::Result<R>) -> std::io::Result<R> {
        rustix::fs::flock(&self.file, rustix::fs::FlockOperation::LockExclusive)?;
        let out = self.catch_up().and_then(|()| f(self));
        // Closing the file (or the process dying) releases the lock too.
        let unlocked = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
        let out = out?;
        unlocked?;
        Ok(out)
    }

    /// Reads the lines other processes appended since this one's last write (all of
    /// them, the first time), so the next line continues the chain.
    fn catch_up(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len == self.end {
            return Ok(());
        }
        if len < self.end {
            // The file was cut or replaced: read it again from the start.
            (self.seq, self.prev, self.end) = (0, GENESIS.to_owned(), 0);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.end))?;
        // A line at a time: a log of any size is caught up in little memory.
        let mut reader = std::io::BufReader::new(file.take(len - self.end));
        let mut line = Vec::new();
        let mut torn = false;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            torn = line.last() != Some(&b'\n');
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let seq = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            if let Some(seq) = seq {
                (self.seq, self.prev) = (seq, sha256_hex(body));
            }
        }
        self.end = len;
        if torn {
            // A writer died mid-line (we hold the lock, so nobody is writing it): keep the
            // torn bytes (verify reports them) and start a fresh line after them.
            tracing::warn!(path = %self.path.display(), "audit log ends in a torn record; appending after it");
            self.file.write_all(b"\n")?;
            self.end += 1;
        }
        Ok(())
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests;
