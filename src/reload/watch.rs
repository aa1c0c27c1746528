//! What starts a reload: file changes in the config directory (debounced) and SIGHUP.
//!
//! Owns the watcher and the signal handler, and runs one reload at a time off the call
//! path, coalescing what arrived while one ran (a deliberate trigger wins). It must not
//! decide what a reload applies: that is the reloader's.

use std::sync::Arc;
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::{ReloadError, Reloader, Trigger};
use crate::config::{PROMPTS_DIR, TOOLS_DIR};

/// How long the watcher waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The file watcher; watching stops when it is dropped.
pub type Watcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Reloads on file changes (unless `watch_files` is false) and on SIGHUP. Keep the
/// returned watcher alive for as long as files should be watched.
///
/// # Errors
/// When the directories cannot be watched or the signal handler cannot be installed.
pub fn spawn(reloader: Arc<Reloader>, watch_files: bool) -> Result<Option<Watcher>, ReloadError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Trigger>();
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
                        let _ = events_tx.send(Trigger::Files);
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
                if hup_tx.send(Trigger::Signal).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(mut trigger) = rx.recv().await {
            // Coalesce what arrived while the last reload ran; a deliberate one wins.
            while let Ok(next) = rx.try_recv() {
                if next.deliberate() {
                    trigger = next;
                }
            }
            let r = reloader.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || r.reload(trigger)).await {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    });
    Ok(debouncer)
}
