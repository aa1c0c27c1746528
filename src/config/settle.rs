//! Reading a config file only once it has stopped changing.
//!
//! Owns the rule that a file still being written is never parsed. A read counts only
//! when the file has been quiet for the settle time (its modification time is at least
//! that old, or its [`Stamp`] has not moved for that long while we watched) and its
//! stamp (size, modification and change times, inode) is the same before and after the
//! read. A file that keeps changing past the deadline is reported as unsettled, never
//! read half-way. The reloader adds the second read (see `crate::reload`): a file that
//! changed is read again after another settle time, and both reads must agree.
//!
//! It must not parse, and must not decide what happens to a file that does not settle:
//! that is the reloader's (keep the last good version).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How long a file must be quiet before it is read, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// How long to wait for a file to settle before giving up on it, by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// How config files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    /// How long a file must have been unchanged before it is read; zero reads at once
    /// (the stamp must still hold still across the read).
    pub quiet: Duration,
    /// How long to wait for that before reporting the file as unsettled.
    pub deadline: Duration,
}

impl Settle {
    /// Read at once; only a file that changes during the read is read again.
    pub const IMMEDIATE: Self = Self {
        quiet: Duration::ZERO,
        deadline: DEFAULT_DEADLINE,
    };

    /// Wait for `quiet` of no change (up to the default deadline).
    pub fn quiet(quiet: Duration) -> Self {
        Self {
            quiet,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

impl Default for Settle {
    fn default() -> Self {
        Self::quiet(DEFAULT_SETTLE)
    }
}

/// What identifies one version of a file without reading it. Two different versions of
/// a file may share a stamp only if both were written within one tick of the file
/// system's clock; the settle time is far longer than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    /// The stamp of the file at `path` now.
    ///
    /// # Errors
    /// When the file cannot be looked at (missing, no permission).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Ok(Self {
                len: m.len(),
                modified: m.modified().ok(),
                changed: (m.ctime(), m.ctime_nsec()),
                inode: (m.dev(), m.ino()),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {
                len: m.len(),
                modified: m.modified().ok(),
            })
        }
    }

    /// How long ago the file was last modified, by its modification time; `None` when
    /// unknown or in the future (another machine's clock).
    fn age(&self) -> Option<Duration> {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
    }
}

/// Why a settled read failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The file cannot be read.
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The file kept changing until the deadline.
    #[error(
        "the file is still being written (it changed again within {quiet:?} for {waited:?}); it was not read"
    )]
    Unsettled {
        /// The quiet time it never reached.
        quiet: Duration,
        /// How long mcpd waited.
        waited: Duration,
    },
}

/// Reads `path` once it has been quiet for `settle.quiet`, and only if it does not
/// change while it is read. Returns its text and the stamp it had.
///
/// # Errors
/// When the file cannot be read, or has not settled by `settle.deadline`.
pub fn read(path: &Path, settle: &Settle) -> Result<(String, Stamp), SettleError> {
    let started = Instant::now();
    // The stamp last seen and when it was first seen: a file whose modification time
    // is unusable is judged by how long it held still while we watched.
    let mut seen: Option<(Stamp, Instant)> = None;
    loop {
        let before = Stamp::of(path)?;
        let watched = match &seen {
            Some((s, since)) if *s == before => since.elapsed(),
            _ => {
                seen = Some((before.clone(), Instant::now()));
                Duration::ZERO
            }
        };
        let quiet_for = before.age().unwrap_or_default().max(watched);
        if quiet_for < settle.quiet {
            let wait = settle.quiet - quiet_for;
            if started.elapsed() + wait > settle.deadline {
                return Err(unsettled(settle, started));
            }
            std::thread::sleep(wait);
            continue;
        }
        let text = std::fs::read_to_string(path)?;
        let after = Stamp::of(path)?;
        if after == before && u64::try_from(text.len()).ok() == Some(after.len) {
            return Ok((text, after));
        }
        if started.elapsed() > settle.deadline {
            return Err(unsettled(settle, started));
        }
    }
}

fn unsettled(settle: &Settle, started: Instant) -> SettleError {
    SettleError::Unsettled {
        quiet: settle.quiet,
        waited: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_quiet_file_is_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "default: allow\n").unwrap();
        let (text, _) = read(&p, &Settle::IMMEDIATE).unwrap();
        assert_eq!(text, "default: allow\n");
    }

    #[test]
    fn a_file_written_just_now_is_read_after_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "x: 1\n").unwrap();
        let t = Instant::now();
        read(&p, &Settle::quiet(Duration::from_millis(60))).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let err = read(Path::new("/nonexistent/mcpd/x.yaml"), &Settle::IMMEDIATE).unwrap_err();
        assert!(matches!(err, SettleError::Io(_)), "{err}");
    }

    /// A writer that rewrites the file in two parts, 3 ms apart, every 20 ms: every read
    /// that returns must be the whole text. The quiet time is far longer than the
    /// writer's gap, so that a loaded machine descheduling the writer between its two
    /// parts does not pass for a settled file (a writer that stalls longer than the
    /// quiet time mid-write is the one case settling cannot tell: docs/operations.md).
    #[test]
    fn a_file_being_rewritten_in_parts_is_never_read_half_way() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policies.yaml");
        let whole = "default: allow\nrules:\n  - { id: a, effect: deny, reason: r }\n";
        std::fs::write(&p, whole).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut f = std::fs::File::create(&p).unwrap();
                    f.write_all(&whole.as_bytes()[..15]).unwrap();
                    std::thread::sleep(Duration::from_millis(3));
                    f.write_all(&whole.as_bytes()[15..]).unwrap();
                    drop(f);
                    std::thread::sleep(Duration::from_millis(17));
                }
            })
        };
        let settle = Settle {
            quiet: Duration::from_millis(200),
            deadline: Duration::from_millis(600),
        };
        for _ in 0..3 {
            match read(&p, &settle) {
                Ok((text, _)) => assert_eq!(text, whole),
                Err(SettleError::Unsettled { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        // Quiet again: it settles.
        assert_eq!(read(&p, &settle).unwrap().0, whole);
    }
}
