//! Helpers shared by the integration tests: temp config dirs, the demo API as a child
//! process, and a raw JSON-RPC client over the binary's stdio; raw HTTP (a client and
//! a recording proxy) in `util/http.rs`, a redis-server in `util/redis_server.rs`,
//! HAProxy in `util/haproxy.rs`, an API mcpd has never seen in `util/stub_api.rs`, the
//! Node programs of `tests/sso/` in `util/node.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod haproxy;
mod http;
mod node;
mod redis_server;
mod stub_api;

pub(crate) use haproxy::Haproxy;
pub(crate) use http::{RecordingProxy, Reply, http_get_json, http_get_text, request, try_request};
pub(crate) use node::NodeProgram;
pub(crate) use redis_server::RedisServer;
pub(crate) use stub_api::StubApi;

/// How long any single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The mcpd binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpd")
}

/// The repository root (holds the shipped mcpd.yaml, policies.yaml, tools.d).
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the shipped config in a temp dir, to edit per test.
pub(crate) struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// The shipped config, copied.
    pub(crate) fn shipped() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for f in ["mcpd.yaml", "policies.yaml"] {
            std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
        }
        for sub in ["tools.d", "prompts.d"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for entry in std::fs::read_dir(repo().join(sub)).unwrap() {
                let p = entry.unwrap().path();
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
        Self { dir }
    }

    /// The shipped config without its default actor, so every call needs a token;
    /// `server` is appended to mcpd.yaml (state, audit, ...).
    pub(crate) fn token_only(server: &str) -> Self {
        let cfg = Self::shipped();
        let yaml = cfg.read("mcpd.yaml");
        let (head, rest) = yaml.split_once("default_actor:").unwrap();
        let tail = rest.split_once("\n\n").map_or("", |(_, t)| t);
        cfg.write("mcpd.yaml", &format!("{head}{tail}{server}"));
        cfg
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or overwrites) a file relative to the config dir.
    pub(crate) fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Reads a file relative to the config dir.
    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Appends `text` to a file relative to the config dir.
    pub(crate) fn append(&self, rel: &str, text: &str) -> &Self {
        self.write(rel, &format!("{}{text}", self.read(rel)))
    }

    /// Replaces `from` with `to` in a file, asserting `from` is there.
    pub(crate) fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1))
    }
}

/// Runs `cmd` to its end: (exit code, -1 when a signal ended it; stdout; stderr).
pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mcpd validate DIR`: (exit code, stdout, stderr).
pub(crate) fn validate(dir: &Path) -> (i32, String, String) {
    run(Command::new(bin()).arg("validate").arg(dir))
}

/// The demo API, run as `mcpd demo-api --port 0`; killed on drop.
pub(crate) struct DemoApi {
    child: Child,
    pub url: String,
}

impl DemoApi {
    pub(crate) fn start() -> Self {
        let mut child = Command::new(bin())
            .args(["demo-api", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "demo-api printed {url:?}"
        );
        Self { child, url }
    }

    /// GET a path of the demo API as JSON.
    pub(crate) fn get(&self, path: &str) -> Value {
        http_get_json(&format!("{}{path}", self.url))
    }

    /// Polls `/_slow` (the slow route's counters) until `counter` is `n`; fails saying
    /// `what`, with the counters, at the deadline.
    pub(crate) fn wait_slow(&self, counter: &str, n: u64, what: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            let slow = self.get("/_slow");
            if slow[counter] == json!(n) {
                return;
            }
            assert!(Instant::now() < end, "{what}: {slow}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The requests the API has seen (not counting `/_` ones).
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.get("/_requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The PUTs the API has seen, counted by their `Idempotency-Key` (`<none>` without).
    pub(crate) fn puts_by_key(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by_key = std::collections::BTreeMap::new();
        for r in self.requests() {
            if r["method"] == "PUT" {
                let key = r["headers"]["idempotency-key"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_owned();
                *by_key.entry(key).or_insert(0) += 1;
            }
        }
        by_key
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mcpd serve` as a child process, spoken to in raw JSON-RPC lines.
pub(crate) struct StdioClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    next_id: u64,
    /// Every stdout line received so far, in order.
    pub seen: Vec<String>,
    /// A config copy this client owns (removed when it is dropped).
    _dir: Option<ConfigDir>,
}

impl StdioClient {
    /// Serves a fresh copy of the shipped config (its own state file, so runs and tests
    /// never share idempotency records or counters).
    pub(crate) fn shipped(env: &[(&str, &str)]) -> Self {
        let dir = ConfigDir::shipped();
        let mut c = Self::start(dir.path(), env);
        c._dir = Some(dir);
        c
    }

    /// Starts `mcpd serve --config DIR` with the shipped upstreams pointing at `api`.
    pub(crate) fn with_api(dir: &Path, api: &DemoApi) -> Self {
        Self::start(dir, &[("DEMO_API_URL", &api.url)])
    }

    /// Starts `mcpd serve --config DIR` with extra environment and initializes.
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, env, &[])
    }

    /// As `start`, with extra arguments to `serve`.
    pub(crate) fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_on(dir, env, args, "2025-11-25")
    }

    /// As `start_with`, initializing with protocol version `version`.
    pub(crate) fn start_on(dir: &Path, env: &[(&str, &str)], args: &[&str], version: &str) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(args)
            .arg("--config")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (lines, stderr) = read_pipes(&mut child);
        let mut c = Self {
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            next_id: 1,
            seen: Vec::new(),
            _dir: None,
        };
        let init = c.request(
            "initialize",
            json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "mcpd-tests", "version": "0"}}),
        );
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        c.notify("notifications/initialized", json!({}));
        c
    }

    /// Writes one raw line to mcpd's stdin (it need not be JSON).
    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub(crate) fn notify(&mut self, method: &str, params: Value) {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request and waits for the response with its id.
    pub(crate) fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        self.wait_for_id(id)
    }

    /// Sends a request without waiting; returns its id.
    pub(crate) fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        id
    }

    /// Waits for the response to request `id` (it may already have arrived).
    pub(crate) fn wait_for_id(&mut self, id: u64) -> Value {
        let key = json!(id);
        if let Some(line) = self.seen.iter().find(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v.get("id") == Some(&key) && v.get("method").is_none())
        }) {
            return serde_json::from_str(line).unwrap();
        }
        self.wait_for(|v| v.get("id") == Some(&key) && v.get("method").is_none())
    }

    /// Waits for `notifications/tools/list_changed`.
    pub(crate) fn wait_list_changed(&mut self) {
        self.wait_for(|v| v["method"] == "notifications/tools/list_changed");
    }

    /// The wire names in tools/list.
    pub(crate) fn tool_names(&mut self) -> Vec<String> {
        let resp = self.request("tools/list", json!({}));
        resp["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The entry of the tool with this wire name in tools/list.
    pub(crate) fn listed(&mut self, name: &str) -> Value {
        let list = self.request("tools/list", json!({}));
        list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("tools/list has no {name}: {list}"))
            .clone()
    }

    /// The process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until stderr contains `needle`.
    pub(crate) fn wait_stderr(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.stderr();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "stderr never contained {needle:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stdout message matching `pred`.
    pub(crate) fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no matching message; stderr:\n{}", self.stderr()));
            self.seen.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            if pred(&v) {
                return v;
            }
        }
    }

    /// tools/call; returns the `result` object (panics on a JSON-RPC error).
    pub(crate) fn call(&mut self, name: &str, args: Value) -> Value {
        let resp = self.request("tools/call", json!({"name": name, "arguments": args}));
        resp.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("tools/call {name} failed: {resp}"))
    }

    /// Closes stdin (the client goes away, as a host does on quit) and waits for mcpd to
    /// exit on its own; returns whether it exited successfully.
    pub(crate) fn close(&mut self) -> bool {
        self.stdin = None;
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < end, "mcpd did not exit after stdin closed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a tool result's first content block.
pub(crate) fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether a tool result is an error.
pub(crate) fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// Reads `child`'s stdout and stderr on threads of their own: its stdout lines as they
/// come, its stderr gathered whole.
pub(crate) fn read_pipes(
    child: &mut Child,
) -> (Receiver<String>, std::sync::Arc<std::sync::Mutex<String>>) {
    let stdout = child.stdout.take().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (lines, stderr)
}
