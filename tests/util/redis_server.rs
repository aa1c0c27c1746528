//! A redis-server of the test's own: a free loopback port, no persistence, killed on
//! drop. One implementation for both test crates: the integration tests reach it through
//! `util.rs`, the Redis store's unit tests (`src/store/tests_redis.rs`) include this file
//! by path. So it uses the standard library only and knows nothing of either crate.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running redis-server; killed (and reaped) on drop.
pub(crate) struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections, or returns `None` with a loud
    /// message when the binary is missing (CI installs Debian's redis-server).
    pub(crate) fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = match Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIPPED: redis-server is not installed ({e}); apt-get install redis-server"
                );
                return None;
            }
        };
        // Owned from here, so a failed start does not leave the process behind.
        let server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let end = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
