//! Reading a recorded audit log for replay: every file verified first (signatures,
//! sequence, chain, and the chain across files), then its call records.
//!
//! Owns putting a log's files in order (by their first record's time: a log rotated
//! into `audit.jsonl.2`, `audit.jsonl.1`, `audit.jsonl` can be given in any order) and
//! telling call records from the others (records of intent, operators' resolutions,
//! config changes, breaker events: any record with an `event` or a `kind`). Records are
//! handed on one at a time as they verify, so a log of any size is read in little
//! memory; a caller keeps what it makes of them only when the whole log verified (the
//! first broken line refuses the whole log).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::audit::{Broken, ChainEnd, Verifier, verify_segment};

/// One verified file.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Its records (all kinds).
    pub records: u64,
    /// It starts a chain of its own rather than continuing the file before it: nothing
    /// proves that no record is missing between the two.
    pub new_chain: bool,
}

/// A verified log: its files and counts (its call records were handed on as read).
#[derive(Debug, Clone)]
pub struct Log {
    /// The files, in the order read.
    pub files: Vec<FileSummary>,
    /// Records of every kind.
    pub records: u64,
    /// Call records.
    pub calls: usize,
    /// The first and last call records' times (RFC 3339).
    pub period: Option<(String, String)>,
}

impl Log {
    /// How many chains the files form (1 when each file continues the one before).
    pub fn chains(&self) -> usize {
        self.files.iter().filter(|f| f.new_chain).count()
    }
}

/// One call record, as replay reads it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Its file (index into [`Log::files`]) and 1-based line.
    pub file: usize,
    /// Its line in the file.
    pub line: usize,
    /// Its `seq`.
    pub seq: u64,
    /// When it was written (RFC 3339).
    pub time: String,
    /// Who called (subject).
    pub actor: String,
    /// The tool id.
    pub tool: String,
    /// The arguments, redacted as recorded.
    pub args: Value,
    /// `allowed`, `denied`, `limited`, `invalid`, `held` or `error`.
    pub decision: String,
    /// The shadow outcomes recorded (`id:effect`).
    pub shadow: Vec<String>,
    /// What policy saw and decided: `Some(Some)`; `Some(None)` when the call ended
    /// before policy (identity, arguments, scope); `None` in a record written before
    /// mcpd recorded it.
    pub policy: Option<Option<Value>>,
    /// Pointers of values redacted before recording.
    pub redacted: Vec<String>,
}

impl CallRecord {
    fn read(file: usize, line: usize, v: &Value) -> Self {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            file,
            line,
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            time: text("time"),
            actor: text("actor"),
            tool: text("tool"),
            args: v.get("args").cloned().unwrap_or(Value::Null),
            decision: text("decision"),
            shadow: list("shadow"),
            policy: v
                .get("policy")
                .map(|p| Some(p.clone()).filter(Value::is_object)),
            redacted: list("redacted"),
        }
    }

    /// What policy saw and decided, when the record holds it.
    pub fn seen(&self) -> Option<&Value> {
        self.policy.as_ref()?.as_ref()
    }

    /// Whether policy allowed the call then, if it decided it.
    pub fn allowed_then(&self) -> Option<bool> {
        match self.seen()?.get("decision").and_then(Value::as_str) {
            Some("allow") => Some(true),
            Some("deny") => Some(false),
            _ => None,
        }
    }

    /// The rule (or `default`) that denied the call then.
    pub fn denied_by(&self) -> Option<&str> {
        self.seen()?.get("denied_by").and_then(Value::as_str)
    }
}

/// Why a log cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file failed verification: the log was altered, cut, or signed with another key.
    #[error(
        "refusing to replay '{}': {broken} (run 'mcpd audit verify' on it; a log that does not verify is never read)",
        .path.display()
    )]
    Broken {
        /// The file.
        path: PathBuf,
        /// Where and what.
        broken: Broken,
    },
    /// No file given.
    #[error("no audit log given: pass --audit FILE (every file of a rotated log)")]
    NoFiles,
}

/// Verifies the files of one log and hands each call record to `each`, in log order.
/// The files may be given in any order: they are read in the order of their first
/// record's time, each either continuing the chain of the one before or starting its
/// own. Records reach `each` as their line verifies: use what it gathered only when
/// this returns `Ok`.
///
/// # Errors
/// The first file that does not verify, at its first broken line.
pub fn read(
    paths: &[PathBuf],
    verifier: &Verifier,
    mut each: impl FnMut(&CallRecord),
) -> Result<Log, LogError> {
    if paths.is_empty() {
        return Err(LogError::NoFiles);
    }
    let mut ordered: Vec<(Option<(u64, u64)>, &PathBuf)> =
        paths.iter().map(|p| (first_record(p), p)).collect();
    // Stable: files without a readable first record (empty ones) keep their place last.
    ordered.sort_by_key(|(first, _)| first.unwrap_or((u64::MAX, u64::MAX)));
    let mut log = Log {
        files: Vec::new(),
        records: 0,
        calls: 0,
        period: None,
    };
    let mut end: Option<ChainEnd> = None;
    for (i, (_, path)) in ordered.into_iter().enumerate() {
        let (calls, period) = (&mut log.calls, &mut log.period);
        let segment = verify_segment(path, verifier, end.as_ref(), |line, v| {
            if is_call(v) {
                let rec = CallRecord::read(i, line, v);
                *calls += 1;
                match period {
                    Some((_, last)) => last.clone_from(&rec.time),
                    None => *period = Some((rec.time.clone(), rec.time.clone())),
                }
                each(&rec);
            }
        })
        .map_err(|broken| LogError::Broken {
            path: path.clone(),
            broken,
        })?;
        log.records += segment.records;
        log.files.push(FileSummary {
            path: path.clone(),
            records: segment.records,
            new_chain: segment.fresh && segment.records > 0,
        });
        if segment.end.is_some() {
            end = segment.end;
        }
    }
    Ok(log)
}

/// A call record: not a record of intent, resolution, config change or breaker event.
fn is_call(v: &Value) -> bool {
    v.get("event").is_none() && v.get("kind").is_none() && v.get("tool").is_some()
}

/// The `time_ms` and `seq` of a file's first record (unverified: only to order the
/// files; a file that continues another's chain starts at a higher `seq`).
fn first_record(path: &Path) -> Option<(u64, u64)> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first).ok()?;
    let v = serde_json::from_str::<Value>(&first).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_u64);
    Some((field("time_ms")?, field("seq")?))
}
