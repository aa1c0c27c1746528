//! Hot reload: read the config directory, rebuild the catalog off the call path, swap.
//!
//! Owns three promises. **Keep last good**: a reload never takes a working tool away
//! because of a broken file: a tool file that no longer parses or compiles keeps its
//! last good version while every other change applies (per-file fallback); a broken
//! `mcpd.yaml` or `policies.yaml` keeps its last good version the same way. If the
//! result still does not compile (say, a new file collides with an old one), the whole
//! last good catalog stays. **Never half a file**: every file is read only once it has
//! been quiet for the settle time (`reload.settle`, see `config::settle`), and a file
//! that changed is read again after another settle time: both reads must agree, or the
//! directory is read again (until the settle deadline, then the file keeps its last
//! good version). **Never a silent policy change**: every rule added, removed or
//! changed is reported by id; an enforced rule removed or weakened is logged at warn,
//! counted (`mcpd_policy_changes_total`) and audited (`report.rs`); with
//! `reload: { policy: manual }` a changed `policies.yaml` is reported but applied only
//! by a deliberate reload (SIGHUP, `mcpd reload`: `control.rs`; or a restart).
//!
//! It must not block calls: reloading runs on the blocking pool and the swap is atomic.
//! Watching files and SIGHUP are in `watch.rs`.

pub mod control;
mod report;
mod watch;

pub use report::{Held, Report, Summary};
pub use watch::{DEBOUNCE, Watcher, spawn};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::catalog::Catalog;
use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::server::PolicyReload;
use crate::config::{
    self, Loaded, POLICY_FILE, PROMPTS_DIR, SERVER_FILE, Settle, TOOLS_DIR, ToolFile, Vars,
};
use crate::engine::Engine;

/// The symlink a Kubernetes ConfigMap or Secret volume swaps to update its files.
const KUBERNETES_DATA: &str = "..data";

/// What started a reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trigger {
    /// A file changed (the watcher).
    #[default]
    Files,
    /// SIGHUP.
    Signal,
    /// `mcpd reload`.
    Command,
}

impl Trigger {
    /// Whether someone asked for this reload: a pinned policy applies only then.
    pub fn deliberate(self) -> bool {
        self != Self::Files
    }

    /// How logs and audit records name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Files => "file change",
            Self::Signal => "SIGHUP",
            Self::Command => "mcpd reload",
        }
    }
}

/// Rebuilds the engine's catalog from disk.
#[derive(Debug)]
pub struct Reloader {
    root: PathBuf,
    /// `root` made absolute: watcher events carry absolute paths.
    abs_root: PathBuf,
    vars: Vars,
    engine: Arc<Engine>,
    state: Mutex<State>,
}

/// What the reloader remembers between reloads.
#[derive(Debug)]
struct State {
    /// What the served catalog was compiled from.
    last_good: Loaded,
    /// The fingerprint of the `policies.yaml` last reported as held (pinned), so one
    /// pending change is reported once, not on every reload.
    held: Option<u64>,
}

impl Reloader {
    /// A reloader for `engine`, whose current catalog was compiled from `loaded`.
    pub fn new(root: &Path, vars: Vars, engine: Arc<Engine>, loaded: Loaded) -> Self {
        Self {
            root: root.to_path_buf(),
            abs_root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            vars,
            engine,
            state: Mutex::new(State {
                last_good: loaded,
                held: None,
            }),
        }
    }

    /// Reads the directory again and swaps in what compiles (see the module docs).
    pub fn reload(&self, trigger: Trigger) -> Report {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let reload_spec = state.last_good.server.1.reload.clone();
        let settle = reload_spec.read_settle().unwrap_or_default();
        let (fresh, problems) = self.read_settled(&state.last_good, &settle);
        let mut report = Report {
            trigger,
            problems: problems.clone(),
            ..Report::default()
        };

        // Files that failed to parse (or never settled) fall back to their last good
        // version.
        let broken: BTreeSet<PathBuf> = problems.0.iter().map(|d| d.file.clone()).collect();
        let mut candidate = fallback(fresh, &state.last_good, &broken, &mut report.kept);
        if reload_spec.policy == PolicyReload::Manual && !trigger.deliberate() {
            hold(&mut candidate, &state.last_good, &mut report);
        }
        if same_inputs(&candidate, &state.last_good) {
            // Nothing that compiles differently: no swap, no list_changed.
            report.unchanged = true;
            self.finish(&mut state, &mut report, started, "unchanged");
            return report;
        }
        let current = self.engine.catalog();
        let mut result = Catalog::compile_with(&candidate, &self.vars, Some(&current));
        if let Err(errors) = &result {
            // Files that parse but do not compile fall back too; then try once more.
            let failing: BTreeSet<PathBuf> = errors.0.iter().map(|d| d.file.clone()).collect();
            report.problems.extend(errors.clone());
            candidate = fallback(candidate, &state.last_good, &failing, &mut report.kept);
            result = Catalog::compile_with(&candidate, &self.vars, Some(&current));
        }
        let outcome = match result {
            Ok(catalog) => {
                diff(&state.last_good, &candidate, &mut report);
                if candidate.fingerprints.1 != state.last_good.fingerprints.1 {
                    report.rules =
                        crate::policy::diff(&state.last_good.policy.1, &candidate.policy.1);
                    report.policy_applied = true;
                }
                self.engine.swap(catalog);
                state.last_good = candidate;
                report.applied = true;
                "applied"
            }
            Err(errors) => {
                report.problems.extend(errors);
                "failed"
            }
        };
        self.finish(&mut state, &mut report, started, outcome);
        report
    }

    /// Tidies the report, then logs, counts and audits it.
    fn finish(&self, state: &mut State, report: &mut Report, started: Instant, outcome: &str) {
        report.problems.sort();
        report.problems.0.dedup();
        report.kept.sort();
        report.kept.dedup();
        report.elapsed = started.elapsed();
        // A held change is reported once; a deliberate reload or a new edit resets it.
        let held_fp = report.held.as_ref().map(|h| h.fingerprint);
        if let Some(h) = &mut report.held {
            h.reported_before = state.held == Some(h.fingerprint);
        }
        state.held = held_fp;
        report::record(report, &self.engine);
        self.engine.metrics().reload(outcome);
    }

    /// Reads the directory once every file has settled, and again, after another
    /// settle time, every file that changed since the last good load: both reads must
    /// agree. A file that keeps changing past the deadline gets a diagnostic, so it
    /// keeps its last good version.
    fn read_settled(&self, last_good: &Loaded, settle: &Settle) -> (Loaded, Diagnostics) {
        let started = Instant::now();
        loop {
            let (fresh, mut problems) =
                config::load_dir_with(&self.root, &self.vars, Some(last_good), settle);
            let changed = changed_files(&fresh, last_good);
            if changed.is_empty() || settle.quiet.is_zero() {
                return (fresh, problems);
            }
            std::thread::sleep(settle.quiet);
            let moved: Vec<&PathBuf> = changed
                .iter()
                .filter(|(path, fp)| {
                    std::fs::read_to_string(path)
                        .ok()
                        .map(|t| config::fingerprint(&t))
                        != *fp
                })
                .map(|(path, _)| path)
                .collect();
            if moved.is_empty() {
                return (fresh, problems);
            }
            if started.elapsed() >= settle.deadline {
                for path in moved {
                    problems.push(Diagnostic::new(
                        path,
                        Pos::default(),
                        format!(
                            "the file changed again between two reads {} apart for {}; it is still being written, so its last good version stays",
                            crate::util::duration::human(settle.quiet),
                            crate::util::duration::human(started.elapsed())
                        ),
                    ));
                }
                return (fresh, problems);
            }
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
        // Kubernetes updates a mounted ConfigMap at once by pointing its `..data` symlink
        // at a new directory: the files (symlinks through `..data`) change without an
        // event of their own.
        let swapped = (in_root || in_dir(TOOLS_DIR)) && name == KUBERNETES_DATA;
        (in_root && (name == SERVER_FILE || name == POLICY_FILE))
            || ((in_dir(TOOLS_DIR) || in_dir(PROMPTS_DIR)) && config::is_tool_file(path))
            || swapped
    }

    /// The config directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The files whose text differs from the last good load, with the fingerprint they
/// were read with (`None`: the file is gone, or was not read).
fn changed_files(fresh: &Loaded, last_good: &Loaded) -> Vec<(PathBuf, Option<u64>)> {
    let mut out = Vec::new();
    let read = |fp: u64| (fp != 0).then_some(fp);
    if fresh.fingerprints.0 != last_good.fingerprints.0 {
        out.push((fresh.server.0.clone(), read(fresh.fingerprints.0)));
    }
    if fresh.fingerprints.1 != last_good.fingerprints.1 {
        out.push((fresh.policy.0.clone(), read(fresh.fingerprints.1)));
    }
    for f in &fresh.tools {
        let old = last_good.tools.iter().find(|o| o.path == f.path);
        if old.is_none_or(|o| o.fingerprint != f.fingerprint) {
            out.push((f.path.clone(), Some(f.fingerprint)));
        }
    }
    for o in &last_good.tools {
        if !fresh.tools.iter().any(|f| f.path == o.path) {
            // Gone, or there but not parsed (broken): the text it has now, so a broken
            // file that holds still settles like any other.
            let now = std::fs::read_to_string(&o.path).ok();
            out.push((o.path.clone(), now.map(|t| config::fingerprint(&t))));
        }
    }
    for f in &fresh.prompts {
        let old = last_good.prompts.iter().find(|o| o.path == f.path);
        if old.is_none_or(|o| o.fingerprint != f.fingerprint) {
            out.push((f.path.clone(), Some(f.fingerprint)));
        }
    }
    for o in &last_good.prompts {
        if !fresh.prompts.iter().any(|f| f.path == o.path) {
            out.push((o.path.clone(), None));
        }
    }
    out
}

/// With `reload.policy: manual` and no one asking: a changed `policies.yaml` (and a
/// changed `reload:` section of `mcpd.yaml`) is reported in `report.held` and the
/// applied version is kept.
fn hold(candidate: &mut Loaded, last_good: &Loaded, report: &mut Report) {
    let on_disk = candidate.fingerprints.1;
    if on_disk != last_good.fingerprints.1 {
        report.held = Some(Held {
            changes: crate::policy::diff(&last_good.policy.1, &candidate.policy.1),
            fingerprint: on_disk,
            reported_before: false,
        });
        candidate.policy = last_good.policy.clone();
        candidate.fingerprints.1 = last_good.fingerprints.1;
    }
    let (new, old) = (&candidate.server.1.reload, &last_good.server.1.reload);
    let settle = |r: &crate::config::server::ReloadSpec| r.settle.as_ref().map(|s| s.value.clone());
    if new.policy != old.policy || settle(new) != settle(old) {
        candidate.server.1.reload = old.clone();
        // What is applied is the new file with the old `reload:` section: a fingerprint
        // of its own, so a deliberate reload (which reads the file as it is) differs.
        candidate.fingerprints.0 = candidate.fingerprints.0.rotate_left(1) ^ HELD_SECTION;
        report.held_reload_section = true;
    }
}

/// Marks the fingerprint of an `mcpd.yaml` applied with its `reload:` section held.
const HELD_SECTION: u64 = 0x6d63_7064_5f68_6c64;

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

#[cfg(test)]
mod tests;
