//! `mcpd reload`: a deliberate reload of every `mcpd serve` running on a config
//! directory, with each server's report.
//!
//! Owns the control socket and its one-line protocol. While it runs, each `mcpd serve`
//! (stdio or `--http` alike) listens on the Unix socket `.mcpd/run/<pid>.sock` under its
//! config directory (the directory mode 0700, the socket 0600: only the user running
//! mcpd can connect). `mcpd reload` connects to every socket there, writes `reload`,
//! and reads one JSON line back: the server's [`Summary`] (or `{"error": ...}`). A
//! socket no process answers (its server was killed) is removed. It must not decide
//! what a reload applies: it asks the reloader, as SIGHUP does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Reloader, Summary, Trigger};

/// Where the control sockets are, under the config directory.
pub const RUN_DIR: &str = ".mcpd/run";

/// How long `mcpd reload` waits for a server's answer: a reload may wait for files to
/// settle (up to 5 s) before it compiles.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// The longest request line a server reads.
const MAX_REQUEST: u64 = 64;

/// Why the control socket cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A file system or socket operation failed.
    #[error("control socket '{path}': {source}")]
    Io {
        /// The socket or its directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// This platform has no Unix sockets.
    #[error(
        "mcpd reload needs Unix domain sockets, which this platform lacks; restart mcpd to apply changes"
    )]
    Unsupported,
}

/// This process's control socket; the socket file is removed when it is dropped.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
}

impl Control {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What became of asking one server.
#[derive(Debug, Clone, PartialEq)]
pub enum Reached {
    /// The server reloaded and answered.
    Answered(Box<Summary>),
    /// The server could not be asked, or answered with an error.
    Failed {
        /// Its socket.
        socket: PathBuf,
        /// What went wrong.
        why: String,
    },
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::PermissionsExt as _;

    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::{UnixListener, UnixStream};

    use super::*;

    /// Listens for `mcpd reload` on this process's socket under the reloader's config
    /// directory, answering with summaries for a server of `transport`.
    ///
    /// # Errors
    /// When the directory or the socket cannot be created (a read-only config
    /// directory, a path too long for a socket).
    pub fn listen(
        reloader: Arc<Reloader>,
        transport: &'static str,
    ) -> Result<Control, ControlError> {
        let dir = reloader.root().join(RUN_DIR);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ControlError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        let path = dir.join(format!("{}.sock", std::process::id()));
        // A socket with our pid is a dead process's: ours does not exist yet.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io(&path))?;
        let control = Control { path };
        std::fs::set_permissions(&control.path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&control.path))?;
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(stream, reloader.clone(), transport));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(control)
    }

    async fn answer(stream: UnixStream, reloader: Arc<Reloader>, transport: &'static str) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        let asked = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
        let reply = match (asked, line.trim()) {
            (Ok(Ok(_)), "reload") => {
                tracing::info!("mcpd reload: reloading");
                match tokio::task::spawn_blocking(move || reloader.reload(Trigger::Command)).await {
                    Ok(report) => serde_json::to_value(report.summary(transport))
                        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
                    Err(e) => serde_json::json!({ "error": format!("the reload failed: {e}") }),
                }
            }
            (Ok(Ok(_)), other) => serde_json::json!({
                "error": format!("unknown request '{other}': this socket answers 'reload'")
            }),
            (Ok(Err(e)), _) => serde_json::json!({ "error": e.to_string() }),
            (Err(_), _) => serde_json::json!({ "error": "no request within 5s" }),
        };
        if let Err(e) = write.write_all(format!("{reply}\n").as_bytes()).await {
            tracing::warn!(error = %e, "control socket: could not answer");
        }
    }

    /// Asks every server running on the config directory `root` to reload.
    ///
    /// # Errors
    /// When the socket directory exists but cannot be read.
    pub async fn reload_all(root: &Path) -> Result<Vec<Reached>, ControlError> {
        let dir = root.join(RUN_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ControlError::Io { path: dir, source }),
        };
        let mut sockets: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect();
        sockets.sort();
        let mut out = Vec::new();
        for socket in sockets {
            let stream = match UnixStream::connect(&socket).await {
                Ok(s) => s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) =>
                {
                    // Its server is gone (killed without cleaning up).
                    let _ = std::fs::remove_file(&socket);
                    continue;
                }
                Err(e) => {
                    out.push(Reached::Failed {
                        socket,
                        why: e.to_string(),
                    });
                    continue;
                }
            };
            out.push(
                match tokio::time::timeout(ANSWER_WITHIN, ask(stream)).await {
                    Ok(Ok(summary)) => Reached::Answered(Box::new(summary)),
                    Ok(Err(why)) => Reached::Failed { socket, why },
                    Err(_) => Reached::Failed {
                        socket,
                        why: format!("no answer within {}s", ANSWER_WITHIN.as_secs()),
                    },
                },
            );
        }
        Ok(out)
    }

    async fn ask(stream: UnixStream) -> Result<Summary, String> {
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"reload\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("the server's answer is not JSON ({e})"))?;
        if let Some(e) = v.get("error").and_then(serde_json::Value::as_str) {
            return Err(e.to_owned());
        }
        serde_json::from_value(v).map_err(|e| format!("the server's answer is not a report ({e})"))
    }
}

#[cfg(unix)]
pub use unix::{listen, reload_all};

/// Without Unix sockets there is no control socket.
///
/// # Errors
/// Always.
#[cfg(not(unix))]
pub fn listen(_: Arc<Reloader>, _: &'static str) -> Result<Control, ControlError> {
    Err(ControlError::Unsupported)
}

/// Without Unix sockets no server can be reached.
///
/// # Errors
/// Always.
#[cfg(not(unix))]
pub async fn reload_all(_: &Path) -> Result<Vec<Reached>, ControlError> {
    Err(ControlError::Unsupported)
}
