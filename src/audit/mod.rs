//! The audit log: one signed JSON line per call, each chained to the one before.
//!
//! Owns the record format, appending (durably, off the call path) and verification.
//! Every line carries `seq` (1, 2, ...), `prev` (SHA-256 of the previous line, hex; 64
//! zeros for the first) and, last, `sig` over the line up to `sig`: HMAC-SHA256 with the
//! key from the environment (hex), or Ed25519 with a private key from the environment
//! (`ed25519:` + hex), which anyone holding the public key can check. An edit breaks that line's signature, a deletion or
//! reordering breaks `seq` and `prev`, a cut tail shows as a torn last line.
//! Arguments reach this module already redacted; it never sees secrets.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What separates the signed part of a line from its signature.
const SIG_FIELD: &str = ",\"sig\":\"";

/// The prefix of an Ed25519 `sig`; HMAC signatures are bare hex.
const ED25519_PREFIX: &str = "ed25519:";

/// How records are signed.
pub enum Signer {
    /// HMAC-SHA256 with a shared secret key.
    Hmac(Vec<u8>),
    /// Ed25519 with a private key; verification needs only the public key.
    Ed25519(Box<SigningKey>),
}

impl std::fmt::Debug for Signer {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "Signer::Hmac",
            Self::Ed25519(_) => "Signer::Ed25519",
        })
    }
}

impl From<Vec<u8>> for Signer {
    fn from(key: Vec<u8>) -> Self {
        Self::Hmac(key)
    }
}

impl Signer {
    /// An Ed25519 signer from a private key written as 64 hex digits (a 32-byte seed,
    /// as `mcpd audit keygen` prints it).
    ///
    /// # Errors
    /// When the text is not 64 hex digits (the message never repeats it).
    pub fn ed25519_from_hex(private: &str) -> Result<Self, String> {
        let seed: [u8; 32] = hex32(private)
            .ok_or("an Ed25519 private key is 64 hex digits (run 'mcpd audit keygen')")?;
        Ok(Self::Ed25519(Box::new(SigningKey::from_bytes(&seed))))
    }

    fn sign(&self, data: &[u8]) -> String {
        match self {
            Self::Hmac(key) => hex::encode(hmac(key, data)),
            Self::Ed25519(key) => {
                format!("{ED25519_PREFIX}{}", hex::encode(key.sign(data).to_bytes()))
            }
        }
    }
}

/// How signatures are checked.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// HMAC-SHA256 with the shared key the log was written with.
    Hmac(Vec<u8>),
    /// Ed25519 with the public key of the private key the log was written with.
    Ed25519(VerifyingKey),
}

impl From<&[u8]> for Verifier {
    fn from(key: &[u8]) -> Self {
        Self::Hmac(key.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Verifier {
    fn from(key: &[u8; N]) -> Self {
        Self::Hmac(key.to_vec())
    }
}

impl Verifier {
    /// An Ed25519 verifier from a public key written as 64 hex digits.
    ///
    /// # Errors
    /// When the text is not 64 hex digits or not a valid Ed25519 public key.
    pub fn ed25519_from_hex(public: &str) -> Result<Self, String> {
        let bytes = hex32(public).ok_or("an Ed25519 public key is 64 hex digits")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self::Ed25519)
            .map_err(|_| "the public key is not a valid Ed25519 key".to_owned())
    }

    fn check(&self, data: &[u8], sig: &str) -> Result<(), String> {
        match (self, sig.strip_prefix(ED25519_PREFIX)) {
            (Self::Hmac(key), None) if hex::encode(hmac(key, data)) == sig => Ok(()),
            (Self::Hmac(_), None) => {
                Err("signature does not match: the record was altered (or the key is wrong)".into())
            }
            (Self::Hmac(_), Some(_)) => {
                Err("the record is signed with Ed25519: verify it with --public-key".into())
            }
            (Self::Ed25519(_), None) => Err(
                "the record is signed with HMAC: verify it with the HMAC key, not --public-key"
                    .into(),
            ),
            (Self::Ed25519(key), Some(sig)) => {
                let sig = hex::decode(sig)
                    .ok()
                    .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                    .ok_or("the Ed25519 signature is malformed: the record was altered")?;
                key.verify_strict(data, &sig).map_err(|_| {
                    "signature does not match: the record was altered (or the public key is wrong)"
                        .into()
                })
            }
        }
    }
}

/// A new Ed25519 key pair, `(private, public)`, each as 64 hex digits.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn ed25519_keygen() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        hex::encode(key.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    ))
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

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
    /// An Ed25519 key that cannot be used.
    #[error("audit log: environment variable {env}: {why}")]
    BadKey {
        /// The variable.
        env: String,
        /// What is wrong (never the key).
        why: String,
    },
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
    fn append(&mut self, e: &Entry) -> std::io::Result<()> {
        let line = sign_line(&self.signer, self.seq + 1, &self.prev, e);
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.seq += 1;
        self.prev = sha256_hex(line.as_bytes());
        self.dirty = true;
        Ok(())
    }
}

/// The signed line for record `seq` after a line hashing to `prev`.
fn sign_line(signer: &Signer, seq: u64, prev: &str, e: &Entry) -> String {
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
    let sig = signer.sign(signed.as_bytes());
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
pub fn verify(path: &Path, verifier: impl Into<Verifier>) -> Result<u64, Broken> {
    let verifier = verifier.into();
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
        verifier.check(signed.as_bytes(), sig).map_err(broken)?;
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
        let err = Signer::ed25519_from_hex("not-a-key-s3cr3t").unwrap_err();
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
}
