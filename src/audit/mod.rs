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
//! This file holds the record ([`Entry`]), the writer with its sync thread, and picking
//! up the chain where an existing log ends; keys and signatures are in `sign.rs`,
//! checking a whole log in `verify.rs`.

mod sign;
mod verify;

pub use sign::{KeyError, SignatureError, Signer, Verifier, ed25519_keygen};
pub use verify::{Broken, verify};

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
            signer,
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
        self.append(entry);
    }

    /// Appends one config record, as [`Self::record`] does a call's.
    pub fn record_config(&self, entry: &ConfigEntry) {
        self.append(entry);
    }

    fn append(&self, entry: &impl Serialize) {
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
    signer: Signer,
    seq: u64,
    prev: String,
    dirty: bool,
}

impl Writer {
    fn append(&mut self, e: &impl Serialize) -> std::io::Result<()> {
        let line = sign_line(&self.signer, self.seq + 1, &self.prev, e);
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.seq += 1;
        self.prev = sha256_hex(line.as_bytes());
        self.dirty = true;
        Ok(())
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

#[cfg(test)]
mod tests;
