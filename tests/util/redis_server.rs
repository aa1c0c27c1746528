//! A redis-server of the test's own: a free loopback port, killed on drop; no
//! persistence ([`RedisServer::start`]), or an append-only file synced on every write in
//! a directory of its own ([`RedisServer::start_durable`]), which survives
//! [`RedisServer::kill`] and [`RedisServer::restart`]. One implementation for both test
//! crates: the integration tests reach it through `util.rs`, the Redis store's unit tests
//! (`src/store/tests_redis.rs`) include this file by path. So it uses the standard
//! library only and knows nothing of either crate.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running redis-server; killed (and reaped) on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The directory of its append-only file, when durable (removed on drop).
    dir: Option<PathBuf>,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections, or returns `None` with a loud
    /// message when the binary is missing (CI installs Debian's redis-server).
    pub(crate) fn start() -> Option<Self> {
        Self::launch(None)
    }

    /// As [`RedisServer::start`], with `appendonly yes` and `appendfsync always` in a
    /// fresh directory: every acknowledged write is on disk.
    pub(crate) fn start_durable() -> Option<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("redis-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::launch(Some(dir))
    }

    fn launch(dir: Option<PathBuf>) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        if let Err(e) = server.spawn() {
            eprintln!("SKIPPED: redis-server is not installed ({e}); apt-get install redis-server");
            return None;
        }
        Some(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        self.child = Some(child);
        let end = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills it (SIGKILL: nothing saved on the way out) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.answering(true);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (`false`: SIGSTOP) or resumes (`true`: SIGCONT) it: a Redis that holds its
    /// connections open and answers nothing, as a hung host or a partition does.
    pub(crate) fn answering(&self, yes: bool) {
        if let Some(child) = &self.child {
            let sig = if yes { "-CONT" } else { "-STOP" };
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Starts it again on the same port (and append-only file, when durable).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn().unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
