//! The `tools/call` fast path over stdio through the real binary: the same calls sent
//! to a session that takes it (a client without form elicitation) and to one that does
//! not (a client that declares it, whose calls rmcp's path serves) get the same answer
//! lines, byte for byte; a cancelled call is not answered; a call in flight when stdin
//! closes is still answered; a call's debug messages reach a session listening at debug
//! before its answer, and a session that is not gets its answer alone; the log lines
//! of calls made one after another, each as soon as the last is answered (the client
//! that finds its next request waiting when mcpd is back from an answer), are all
//! written, in the order the calls were answered, with stdin left open.

use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DEADLINE, DemoApi, bin, read_pipes};

/// The debug line the fast path writes for each call it takes.
const TAKEN: &str = "tools/call on the fast path";

/// mcpd over stdio, spoken to in raw lines (the answers are compared as written).
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Raw {
    /// Serves `cfg` against `api`; initializes with `capabilities`.
    fn start(cfg: &ConfigDir, api: &DemoApi, capabilities: Value) -> Self {
        let mut child = Command::new(bin())
            .args(["serve", "--no-watch", "--config"])
            .arg(cfg.path())
            .env("DEMO_API_URL", &api.url)
            .env("MCPD_LOG", "info,rmcp=warn,mcpd::mcp::stdio=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, stderr) = read_pipes(&mut child);
        let mut raw = Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        };
        raw.send(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities,
            "clientInfo": {"name": "mcpd-tests", "version": "0"}}}),
        );
        let init = raw.next_line();
        assert!(init.contains("\"result\""), "initialize: {init}");
        raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        raw
    }

    fn send(&mut self, msg: &Value) {
        self.send_line(&msg.to_string());
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn next_line(&mut self) -> String {
        let left = DEADLINE;
        self.lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no answer; stderr:\n{}", self.stderr.lock().unwrap()))
    }

    /// Sends `line` and returns the answer line (the only one it gets).
    fn ask(&mut self, line: &str) -> String {
        self.send_line(line);
        self.next_line()
    }

    fn taken(&self) -> usize {
        self.stderr.lock().unwrap().matches(TAKEN).count()
    }

    /// Waits until stderr says `n` calls took the fast path.
    fn wait_taken(&self, n: usize) {
        let end = Instant::now() + DEADLINE;
        while self.taken() < n {
            assert!(
                Instant::now() < end,
                "{n} calls never took the fast path:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped config, with tools whose results are not objects (a list, a number)
/// and one whose text is a rendering of the result.
fn config() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    let orders = cfg.read("tools.d/orders.export.yaml");
    let (head, _) = orders.split_once("# The selection").unwrap();
    let bare = head.replace("name: orders.export", "name: orders.bare");
    cfg.write("tools.d/orders.bare.yaml", &bare);
    cfg.write(
        "tools.d/orders.count.yaml",
        &bare
            .replace("name: orders.bare", "name: orders.count")
            .replace("select: \"$.orders\"", "select: \"$.count\"")
            .replace("  mask:\n    - \"$[*].email\"", "  mask: []"),
    );
    cfg.write(
        "tools.d/orders.told.yaml",
        &bare
            .replace("name: orders.bare", "name: orders.told")
            .replace(
                "  select: \"$.orders\"",
                "  select: \"$.orders\"\n  text: \"{{ result | length }} orders\"",
            ),
    );
    cfg
}

/// The lines both sessions are sent: results of every shape, tool errors, JSON-RPC
/// errors, `_meta` the call reads, ids of both kinds, text that needs escaping.
fn calls() -> Vec<String> {
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});
    let call = |id: Value, params: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
    };
    vec![
        call(json!(1), json!({"name": "orders_export", "arguments": august})),
        call(json!("two"), json!({"name": "orders_bare", "arguments": august})),
        call(json!(3), json!({"name": "orders_count", "arguments": august})),
        call(json!(4), json!({"name": "orders_told", "arguments": august})),
        call(
            json!(5),
            json!({"name": "orders_export", "arguments": {"from": "août \"1\" \\ \u{1F600}", "to": 7}}),
        ),
        call(json!(6), json!({"name": "no_such_tool", "arguments": {}})),
        call(json!(7), json!({"name": "orders_export"})),
        call(
            json!(8),
            json!({"name": "orders_export", "arguments": august, "_meta": {
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}),
        ),
        call(
            json!(9),
            json!({"name": "flag_set", "arguments": {"env": "staging", "name": "checkout_v2", "percent": 5},
                "_meta": {"dev.mcpd/idempotencyKey": "fast-path-1"}}),
        ),
        call(
            json!(10),
            json!({"name": "flag_set", "arguments": {"env": "staging", "name": "checkout_v2", "percent": 5},
                "_meta": {"dev.mcpd/idempotencyKey": "fast-path-1"}}),
        ),
        call(json!(-11), json!({"name": "orders_count", "arguments": august})),
        // Members in another order, spaces between them: still a plain call.
        r#"{ "method" : "tools/call", "params": {"arguments": {"from": "2025-08-01", "to": "2025-08-02"}, "name": "orders_export"}, "id": 12, "jsonrpc": "2.0" }"#.to_owned(),
    ]
}

#[test]
fn a_call_on_the_fast_path_is_answered_byte_for_byte_as_rmcps_path_answers_it() {
    let answers = |capabilities: Value| {
        let api = DemoApi::start();
        let cfg = config();
        let mut raw = Raw::start(&cfg, &api, capabilities);
        let lines: Vec<String> = calls().iter().map(|c| raw.ask(c)).collect();
        (lines, raw)
    };
    let (fast, fast_server) = answers(json!({}));
    // A client that can be asked in forms: every call is rmcp's.
    let (rmcp, rmcp_server) = answers(json!({"elicitation": {"form": {}}}));
    let (taken, not_taken) = (fast_server.taken(), rmcp_server.taken());
    // Every call's log line is written, on the fast path after its answer.
    let logged = |raw: &Raw| {
        let stderr = raw.stderr.lock().unwrap();
        (
            stderr.matches("call completed").count(),
            stderr.matches("call failed").count(),
        )
    };
    let want = logged(&rmcp_server);
    assert!(want.0 >= 6 && want.1 >= 2, "{want:?}");
    let end = Instant::now() + DEADLINE;
    while logged(&fast_server) != want {
        assert!(
            Instant::now() < end,
            "{:?} vs {want:?}",
            logged(&fast_server)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(taken, calls().len(), "every call took the fast path");
    assert_eq!(not_taken, 0, "no call took the fast path");
    for ((call, fast), rmcp) in calls().iter().zip(&fast).zip(&rmcp) {
        assert_eq!(fast, rmcp, "the answers to {call} differ");
    }
    // The cases are what they say: results of each shape, and errors of both kinds.
    let parsed: Vec<Value> = fast
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed[0]["result"]["structuredContent"]["orders"].is_array());
    assert_eq!(parsed[1]["id"], "two");
    assert_eq!(parsed[4]["result"]["isError"], true);
    assert!(parsed[5]["error"]["code"].is_i64());
    assert_eq!(parsed[9]["result"]["_meta"]["dev.mcpd/replayed"], true);
}

#[test]
fn what_the_fast_path_must_not_answer_goes_to_rmcp() {
    let api = DemoApi::start();
    let cfg = config();
    let mut raw = Raw::start(&cfg, &api, json!({}));
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});
    // Progress asked, another member, per-request protocol metadata: rmcp's.
    for (id, line) in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "orders_export", "arguments": august, "_meta": {"progressToken": "p"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "extra": true, "params": {
            "name": "orders_export", "arguments": august}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "orders_export", "arguments": august,
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25"}}}),
    ]
    .iter()
    .enumerate()
    {
        raw.send(line);
        // Progress notifications may come first: wait for the answer.
        loop {
            let answer: Value = serde_json::from_str(&raw.next_line()).unwrap();
            if answer.get("method").is_none() {
                assert_eq!(answer["id"], id + 1, "{answer}");
                break;
            }
        }
    }
    assert_eq!(raw.taken(), 0);
    // A plain call takes it.
    let answer = raw.ask(
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "orders_export", "arguments": august}})
        .to_string(),
    );
    assert!(answer.contains("\"id\":4"), "{answer}");
    // Its debug line went to stderr before the answer, but stderr is read on a thread
    // of its own: wait for it, then check it is the only one.
    raw.wait_taken(1);
    assert_eq!(raw.taken(), 1);
}

#[test]
fn a_cancelled_call_on_the_fast_path_is_not_answered_and_one_in_flight_at_the_end_of_stdin_is() {
    // An upstream that answers after the test says so: a call held in flight.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = DemoApi::start();
    let cfg = config();
    cfg.edit(
        "mcpd.yaml",
        "upstreams:",
        &format!("upstreams:\n  slow: {{ url: \"{url}\" }}"),
    );
    cfg.write(
        "tools.d/slow.yaml",
        "name: slow\ndescription: Waits on an upstream.\ninput: { type: object }\n\
         request: { upstream: slow, method: GET, path: /x, timeout: 30s }\n",
    );
    let mut raw = Raw::start(&cfg, &api, json!({}));
    let slow = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "slow", "arguments": {}}})
    };
    raw.send(&slow(1));
    raw.wait_taken(1);
    let mut first = accept(&listener);
    raw.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "reason": "changed my mind"}}),
    );
    // The next call's answer comes, and no answer to the cancelled one before it.
    let answer = raw.ask(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "no_such_tool", "arguments": {}}})
        .to_string(),
    );
    assert!(answer.contains("\"id\":2"), "{answer}");
    // Not kept for the next call: it must open a connection of its own.
    drop(first.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"));
    drop(first);
    // A call in flight when stdin closes is answered before mcpd exits.
    raw.send(&slow(3));
    raw.wait_taken(3);
    let mut second = accept(&listener);
    raw.stdin = None;
    let mut request = [0u8; 1024];
    let _ = std::io::Read::read(&mut second, &mut request);
    second
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"a\": 1}")
        .unwrap();
    let mut rest = Vec::new();
    while let Ok(line) = raw.lines.recv_timeout(DEADLINE) {
        rest.push(line);
    }
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(rest[0].contains("\"id\":3"), "{rest:?}");
    assert!(!rest[0].contains("\"isError\":true"), "{rest:?}");
}

/// The next connection to `listener`, within the deadline.
fn accept(listener: &std::net::TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < end, "the upstream was never called");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn a_calls_debug_messages_reach_a_session_that_listens_before_its_answer_and_no_other() {
    let api = DemoApi::start();
    let cfg = config();
    let mut raw = Raw::start(&cfg, &api, json!({}));
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});
    let call = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "orders_export", "arguments": august}})
    };
    // The lines up to the answer to `id`, and that answer.
    let until = |raw: &mut Raw, id: i64| {
        let mut before = Vec::new();
        loop {
            let line = raw.next_line();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return (before, v);
            }
            before.push(v);
        }
    };
    // At the default level (info): the answer alone, no message built for it.
    raw.send(&call(1));
    let (before, answer) = until(&mut raw, 1);
    assert!(
        answer["result"]["structuredContent"]["orders"].is_array(),
        "{answer}"
    );
    assert!(before.is_empty(), "nothing but the answer: {before:?}");
    raw.send(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel",
        "params": {"level": "debug"}}),
    );
    until(&mut raw, 2);
    // At debug: each call's steps, before its answer, every time.
    for id in 3..8 {
        raw.send(&call(id));
        let (before, answer) = until(&mut raw, id);
        assert!(
            answer["result"]["structuredContent"]["orders"].is_array(),
            "{answer}"
        );
        let said: Vec<&str> = before
            .iter()
            .filter(|v| v["method"] == "notifications/message")
            .filter_map(|v| v["params"]["data"].as_str())
            .collect();
        assert!(
            said.iter()
                .any(|m| m.starts_with("orders.export: sending GET")),
            "call {id}: {said:?}"
        );
        assert!(
            said.iter()
                .any(|m| m.starts_with("orders.export: upstream 'orders' answered HTTP 200")),
            "call {id}: {said:?}"
        );
    }
    raw.wait_taken(6);
}

#[test]
fn back_to_back_calls_each_get_their_log_line_in_order_while_stdin_stays_open() {
    let api = DemoApi::start();
    let cfg = config();
    let mut raw = Raw::start(&cfg, &api, json!({}));
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});
    let tools = ["orders_export", "orders_count", "orders_bare"];
    let sent: Vec<&str> = (0..120).map(|i| tools[(i * 7 / 3) % 3]).collect();
    for (i, tool) in sent.iter().enumerate() {
        let line = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": tool, "arguments": august}});
        let answer = raw.ask(&line.to_string());
        assert!(answer.contains("\"result\""), "{answer}");
    }
    // No more requests, stdin open: every line is written anyway, in the calls' order
    // (the config's budget refuses the later ones: their lines say "call failed").
    let logged = |raw: &Raw| -> Vec<String> {
        let stderr = raw.stderr.lock().unwrap();
        stderr
            .lines()
            .filter(|l| l.contains("call completed") || l.contains("call failed"))
            .map(|l| {
                let at = l.find(" tool=").expect("a tool field") + " tool=".len();
                l[at..].split(' ').next().unwrap_or_default().to_owned()
            })
            .collect()
    };
    let end = Instant::now() + DEADLINE;
    while logged(&raw).len() < sent.len() {
        assert!(
            Instant::now() < end,
            "{} of {} lines:\n{}",
            logged(&raw).len(),
            sent.len(),
            raw.stderr.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ids: Vec<String> = sent.iter().map(|t| t.replace('_', ".")).collect();
    assert_eq!(logged(&raw), ids);
    assert_eq!(raw.taken(), sent.len(), "every call took the fast path");
}
