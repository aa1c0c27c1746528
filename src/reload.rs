//! Hot reload: watch the config directory, rebuild the catalog off the call path, swap.
//!
//! Owns the keep-last-good policy. A reload never takes a working tool away because of a
//! broken file: a tool file that no longer parses or compiles keeps its last good
//! version while every other change applies (per-file fallback); a broken `mcpd.yaml`
//! or `policies.yaml` keeps its last good version the same way. If the result still
//! does not compile (say, a new file collides with an old one), the whole last good
//! catalog stays. Every problem is logged as `file:line:col: message`.
//!
//! It must not block calls: compiling runs on the blocking pool and the swap is atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::catalog::Catalog;
use crate::config::diag::Diagnostics;
use crate::config::{
    self, Loaded, POLICY_FILE, PROMPTS_DIR, SERVER_FILE, TOOLS_DIR, ToolFile, Vars,
};
use crate::engine::Engine;

/// How long the watcher waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What one reload did.
#[derive(Debug, Default)]
pub struct Report {
    /// Whether a new catalog was swapped in.
    pub applied: bool,
    /// Tool ids that appeared.
    pub added: Vec<String>,
    /// Tool ids that went away.
    pub removed: Vec<String>,
    /// Tool ids whose file changed.
    pub changed: Vec<String>,
    /// Files kept at their last good version because the new one is broken.
    pub kept: Vec<PathBuf>,
    /// Every problem found.
    pub problems: Diagnostics,
    /// Time from start to swap.
    pub elapsed: Duration,
    /// True when what would be compiled is what is already served.
    pub unchanged: bool,
}

/// Rebuilds the engine's catalog from disk.
#[derive(Debug)]
pub struct Reloader {
    root: PathBuf,
    /// `root` made absolute: watcher events carry absolute paths.
    abs_root: PathBuf,
    vars: Vars,
    engine: Arc<Engine>,
    last_good: Mutex<Loaded>,
}

impl Reloader {
    /// A reloader for `engine`, whose current catalog was compiled from `loaded`.
    pub fn new(root: &Path, vars: Vars, engine: Arc<Engine>, loaded: Loaded) -> Self {
        Self {
            root: root.to_path_buf(),
            abs_root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            vars,
            engine,
            last_good: Mutex::new(loaded),
        }
    }

    /// Reads the directory again and swaps in what compiles (see the module docs).
    pub fn reload(&self) -> Report {
        let started = Instant::now();
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (fresh, problems) = config::load_dir_with(&self.root, &self.vars, Some(&last_good));
        let mut report = Report {
            problems: problems.clone(),
            ..Report::default()
        };

        // Files that failed to parse fall back to their last good version.
        let broken: BTreeSet<PathBuf> = problems.0.iter().map(|d| d.file.clone()).collect();
        let mut candidate = fallback(fresh, &last_good, &broken, &mut report.kept);
        if same_inputs(&candidate, &last_good) {
            // Nothing that compiles differently: no swap, no list_changed.
            report.unchanged = true;
            report.elapsed = started.elapsed();
            log(&report);
            self.tell_sessions(&report);
            self.engine.metrics().reload("unchanged");
            return report;
        }
        let current = self.engine.catalog();
        let mut result = Catalog::compile_with(&candidate, &self.vars, Some(&current));
        if let Err(errors) = &result {
            // Files that parse but do not compile fall back too; then try once more.
            let failing: BTreeSet<PathBuf> = errors.0.iter().map(|d| d.file.clone()).collect();
            report.problems.extend(errors.clone());
            candidate = fallback(candidate, &last_good, &failing, &mut report.kept);
            result = Catalog::compile_with(&candidate, &self.vars, Some(&current));
        }
        match result {
            Ok(catalog) => {
                diff(&last_good, &candidate, &mut report);
                self.engine.swap(catalog);
                *last_good = candidate;
                report.applied = true;
            }
            Err(errors) => report.problems.extend(errors),
        }
        report.problems.sort();
        report.problems.0.dedup();
        report.kept.sort();
        report.kept.dedup();
        report.elapsed = started.elapsed();
        log(&report);
        self.tell_sessions(&report);
        self.engine
            .metrics()
            .reload(if report.applied { "applied" } else { "failed" });
        report
    }

    /// What a remote user needs to know about this reload, for the MCP sessions that
    /// listen (over HTTP nobody sees mcpd's stderr): each problem, and what was kept.
    fn tell_sessions(&self, r: &Report) {
        use crate::engine::Level;
        for d in &r.problems.0 {
            self.engine
                .notice(Level::Error, format!("config problem: {d}"));
        }
        if !r.kept.is_empty() {
            let kept: Vec<String> = r.kept.iter().map(|p| p.display().to_string()).collect();
            self.engine.notice(
                Level::Warning,
                format!(
                    "reload kept the last good version of {} (the new one has the problems above)",
                    kept.join(", ")
                ),
            );
        }
        if !r.applied && !r.unchanged {
            self.engine.notice(
                Level::Warning,
                "reload failed; the last good catalog stays".to_owned(),
            );
        }
    }

    /// Whether a changed path can affect the catalog.
    pub fn is_relevant(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let in_root = path.parent() == Some(self.abs_root.as_path());
        let in_dir = |dir: &str| path.parent() == Some(self.abs_root.join(dir).as_path());
        (in_root && (name == SERVER_FILE || name == POLICY_FILE))
            || ((in_dir(TOOLS_DIR) || in_dir(PROMPTS_DIR)) && config::is_tool_file(path))
    }
}

/// Replaces what `broken` names in `fresh` with its version from `good` (or drops it when
/// it has none); records which files were kept.
fn fallback(
    mut fresh: Loaded,
    good: &Loaded,
    broken: &BTreeSet<PathBuf>,
    kept: &mut Vec<PathBuf>,
) -> Loaded {
    if broken.is_empty() {
        return fresh;
    }
    if broken.contains(&fresh.server.0) {
        fresh.server = good.server.clone();
        fresh.fingerprints.0 = good.fingerprints.0;
        kept.push(fresh.server.0.clone());
    }
    if broken.contains(&fresh.policy.0) {
        fresh.policy = good.policy.clone();
        fresh.fingerprints.1 = good.fingerprints.1;
        kept.push(fresh.policy.0.clone());
    }
    fresh.tools.retain(|f| !broken.contains(&f.path));
    for path in broken {
        // A broken file that still exists keeps its last good version; a deleted one goes.
        if !path.exists() {
            continue;
        }
        if let Some(old) = good.tools.iter().find(|f| &f.path == path) {
            fresh.tools.push(old.clone());
            kept.push(path.clone());
        }
    }
    fresh.tools.sort_by(|a, b| a.path.cmp(&b.path));
    fresh.prompts.retain(|f| !broken.contains(&f.path));
    for path in broken.iter().filter(|p| p.exists()) {
        if let Some(old) = good.prompts.iter().find(|f| &f.path == path) {
            fresh.prompts.push(old.clone());
            kept.push(path.clone());
        }
    }
    fresh.prompts.sort_by(|a, b| a.path.cmp(&b.path));
    fresh
}

/// Whether two loads were read from identical file texts.
fn same_inputs(a: &Loaded, b: &Loaded) -> bool {
    let files = |l: &Loaded| -> Vec<(PathBuf, u64)> {
        l.tools
            .iter()
            .map(|f| (f.path.clone(), f.fingerprint))
            .collect()
    };
    let prompts = |l: &Loaded| -> Vec<(PathBuf, u64)> {
        l.prompts
            .iter()
            .map(|f| (f.path.clone(), f.fingerprint))
            .collect()
    };
    a.fingerprints == b.fingerprints && files(a) == files(b) && prompts(a) == prompts(b)
}

/// Fills added / removed / changed by comparing tool ids and file fingerprints.
fn diff(old: &Loaded, new: &Loaded, report: &mut Report) {
    let index = |l: &Loaded| -> BTreeMap<String, u64> {
        l.tools
            .iter()
            .flat_map(|f: &ToolFile| {
                f.tools
                    .iter()
                    .map(move |t| (t.name.value.clone(), f.fingerprint))
            })
            .collect()
    };
    let (before, after) = (index(old), index(new));
    for (id, fp) in &after {
        match before.get(id) {
            None => report.added.push(id.clone()),
            Some(old_fp) if old_fp != fp => report.changed.push(id.clone()),
            Some(_) => {}
        }
    }
    report.removed = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .cloned()
        .collect();
}

fn log(r: &Report) {
    for d in &r.problems.0 {
        tracing::warn!(problem = %d, "config problem");
    }
    let ms = r.elapsed.as_secs_f64() * 1000.0;
    if r.unchanged {
        tracing::info!(
            kept_last_good = ?r.kept,
            elapsed_ms = format!("{ms:.1}"),
            "reload: nothing new to apply"
        );
    } else if r.applied {
        tracing::info!(
            added = ?r.added,
            removed = ?r.removed,
            changed = ?r.changed,
            kept_last_good = ?r.kept,
            elapsed_ms = format!("{ms:.1}"),
            "reload applied"
        );
    } else {
        tracing::warn!(
            elapsed_ms = format!("{ms:.1}"),
            "reload failed; the last good catalog stays"
        );
    }
}

/// Why reloading cannot be set up. The messages are notify's and the OS's.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config directory or `tools.d` cannot be watched.
    #[error(transparent)]
    Watch(#[from] notify::Error),
    /// The SIGHUP handler cannot be installed.
    #[error(transparent)]
    Signal(std::io::Error),
}

/// The file watcher; watching stops when it is dropped.
pub type Watcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Reloads on file changes (unless `watch_files` is false) and on SIGHUP. Keep the
/// returned watcher alive for as long as files should be watched.
///
/// # Errors
/// When the directories cannot be watched or the signal handler cannot be installed.
pub fn spawn(reloader: Arc<Reloader>, watch_files: bool) -> Result<Option<Watcher>, ReloadError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let debouncer = if watch_files {
        let filter = reloader.clone();
        let events_tx = tx.clone();
        let mut debouncer =
            new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| match res {
                Ok(events) => {
                    // Reading a file (as a reload does) raises access events: not a change.
                    let relevant = events
                        .iter()
                        .filter(|e| {
                            !matches!(
                                e.kind,
                                EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                            )
                        })
                        .flat_map(|e| e.paths.iter())
                        .any(|p| filter.is_relevant(p));
                    if relevant {
                        let _ = events_tx.send(());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "file watcher error");
                    }
                }
            })?;
        // Directories, not files: editors save by writing a temp file and renaming it.
        debouncer.watch(&reloader.abs_root, RecursiveMode::NonRecursive)?;
        debouncer.watch(
            reloader.abs_root.join(TOOLS_DIR),
            RecursiveMode::NonRecursive,
        )?;
        // prompts.d is optional: watched when it exists at start.
        let prompts = reloader.abs_root.join(PROMPTS_DIR);
        if prompts.is_dir() {
            debouncer.watch(prompts, RecursiveMode::NonRecursive)?;
        }
        Some(debouncer)
    } else {
        None
    };
    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(ReloadError::Signal)?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                if hup_tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Coalesce events that arrived while the last reload ran.
            while rx.try_recv().is_ok() {}
            let r = reloader.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    });
    Ok(debouncer)
}
