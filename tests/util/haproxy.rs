//! An HAProxy of the test's own in front of mcpd replicas: a free loopback port,
//! round-robin with no stickiness, health checks on `/readyz`, and the name of the
//! replica that answered in an `X-Mcpd-Replica` response header. Killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long HAProxy may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running haproxy; killed (and reaped) on drop.
pub(crate) struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub authority: String,
}

impl Haproxy {
    /// Balances over `replicas` (name, `host:port`), or returns `None` with a loud
    /// message when the binary is missing (scripts/test installs Debian's haproxy).
    pub(crate) fn start(replicas: &[(&str, &str)]) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = replicas
            .iter()
            .map(|(name, addr)| format!("  server {name} {addr} check\n"))
            .collect();
        // Retries only on a failed connect (the request never left HAProxy), on another
        // replica: a request a replica received is never sent twice.
        let cfg = format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\n  timeout check 2s\n  retries 3\n  option redispatch 1\n\
             frontend mcp\n  bind 127.0.0.1:{port}\n  default_backend mcpd\n\
             backend mcpd\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             http-check expect status 200\n  default-server inter 300ms fall 2 rise 1\n  \
             http-response set-header X-Mcpd-Replica %s\n{servers}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        // Debian installs it in /usr/sbin, which an ordinary user's PATH may lack.
        let bin = if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let child = match Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: haproxy is not installed ({e}); apt-get install haproxy");
                return None;
            }
        };
        let proxy = Self {
            child,
            _dir: dir,
            authority: format!("127.0.0.1:{port}"),
        };
        let end = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "haproxy did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
