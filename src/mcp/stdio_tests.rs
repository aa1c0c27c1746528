use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use super::*;

#[test]
fn the_id_is_read_from_the_start_of_a_line_that_cannot_be_read_whole() {
    assert_eq!(
        sniff_id(br#"{"jsonrpc":"2.0","id":7,"method":"x","params":{"a":1e400}}"#),
        Some(json!(7))
    );
    assert_eq!(
        sniff_id(br#" { "id" : "r-1" , "jsonrpc": "2.0""#),
        Some(json!("r-1"))
    );
    assert_eq!(
        sniff_id(br#"{"jsonrpc":"2.0","method":"tools/call","id":-3,"params":"#),
        Some(json!(-3))
    );
    assert_eq!(sniff_id(b"not json"), None);
    assert_eq!(sniff_id(b"1e400"), None);
    assert_eq!(sniff_id(br#"{"params":{"id":5},"id":6}"#), None);
    assert_eq!(sniff_id(br#"{"id":1e400}"#), None);
}

#[test]
fn a_batch_is_answered_as_one_array_once_every_request_in_it_is() {
    let mut s = Session::default();
    s.batches.push(Batch {
        waiting: HashSet::from([id_key(&json!(1)), id_key(&json!("1"))]),
        answers: vec![],
    });
    // Another request with the same id as a string is not the batch's.
    assert!(!s.in_batch(&json!(2)) && s.in_batch(&json!(1)) && s.in_batch(&json!("1")));
    assert_eq!(s.collect(&json!(1), json!({"id": 1, "result": {}})), None);
    assert_eq!(
        s.collect(&json!("1"), json!({"id": "1", "error": {}})),
        Some(json!([{"id": 1, "result": {}}, {"id": "1", "error": {}}]))
    );
    assert!(s.batches.is_empty());
}

/// Writes `lines` to a transport, then runs `receive` until the input ends; returns the
/// messages rmcp got and the lines written back.
async fn exchange(lines: &[&str]) -> (Vec<ClientJsonRpcMessage>, Vec<serde_json::Value>) {
    let (mut client, server_in) = tokio::io::duplex(1 << 16);
    let (server_out, client_out) = tokio::io::duplex(1 << 16);
    let mut t = LineTransport::new(server_in, server_out);
    // Write and read beside the transport: the pipes hold 64 KiB each.
    let input: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    let writer = tokio::spawn(async move {
        for l in input {
            client.write_all(l.as_bytes()).await.unwrap();
        }
    });
    let reader = tokio::spawn(async move {
        let mut written = Vec::new();
        let mut reader = tokio::io::BufReader::new(client_out).lines();
        while let Some(line) = reader.next_line().await.unwrap() {
            written.push(serde_json::from_str(&line).unwrap());
        }
        written
    });
    let mut got = Vec::new();
    while let Some(m) = t.receive().await {
        got.push(m);
    }
    writer.await.unwrap();
    drop(t);
    (got, reader.await.unwrap())
}

#[tokio::test]
async fn lines_that_do_not_parse_get_a_parse_error_and_the_next_line_is_read() {
    let (got, written) = exchange(&[
        "not json",
        "1e400",
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"p":1e400}}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#,
    ])
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let codes: Vec<_> = written
        .iter()
        .map(|w| (w["id"].clone(), w["error"]["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (json!(null), json!(-32700)),
            (json!(null), json!(-32700)),
            (json!(3), json!(-32700))
        ]
    );
    assert!(
        written[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("number out of range"),
        "{written:?}"
    );
}

#[tokio::test]
async fn a_line_over_the_limit_gets_a_parse_error_with_its_id() {
    let pad = "x".repeat(MAX_LINE);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"x","arguments":{{"pad":"{pad}"}}}}}}"#
    );
    let (client, server_in) = tokio::io::duplex(1 << 16);
    let (server_out, client_out) = tokio::io::duplex(1 << 16);
    let mut t = LineTransport::new(server_in, server_out);
    let writer = tokio::spawn(async move {
        let mut client = client;
        client.write_all(big.as_bytes()).await.unwrap();
        client
            .write_all(b"\n{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"ping\"}\n")
            .await
            .unwrap();
    });
    let next = t.receive().await.unwrap();
    writer.await.unwrap();
    assert!(matches!(next, JsonRpcMessage::Request(_)), "{next:?}");
    drop(t);
    let mut lines = tokio::io::BufReader::new(client_out).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["id"], 9);
    assert_eq!(first["error"]["code"], -32700);
    assert!(
        first["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16 MiB"),
        "{first}"
    );
}

#[tokio::test]
async fn a_batch_before_2025_03_26_was_negotiated_is_refused_per_request() {
    let (got, written) = exchange(&[
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/list"}]"#,
        "[]",
    ])
    .await;
    assert!(got.is_empty(), "{got:?}");
    let array = written[0].as_array().unwrap();
    assert_eq!(
        array.iter().map(|a| a["id"].clone()).collect::<Vec<_>>(),
        [json!(1), json!("b")]
    );
    assert!(
        array[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only 2025-03-26 has them")
    );
    assert_eq!(written[1]["error"]["code"], -32600);
    assert_eq!(written[1]["id"], json!(null));
}

#[tokio::test]
async fn a_request_that_is_not_a_readable_message_is_answered() {
    let (got, written) = exchange(&[
        r#"{"jsonrpc":"2.0","id":5,"method":7}"#,
        r#"{"id":6,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":[7],"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/whatever","params":5}"#,
        "[1]",
    ])
    .await;
    assert!(got.is_empty(), "{got:?}");
    let answers: Vec<_> = written
        .iter()
        .map(|w| {
            (
                w["id"].clone(),
                w["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [
            (json!(5), "invalid request: 'method' must be a string".to_owned()),
            (json!(6), "invalid request: 'jsonrpc' must be \"2.0\"".to_owned()),
            (json!(null), "invalid request: 'id' must be a string or an integer".to_owned()),
            (json!(null), "JSON-RPC batches are not part of this session's MCP protocol version (not negotiated yet; only 2025-03-26 has them): send each message on its own line".to_owned()),
        ]
    );
}

/// rmcp polls `receive` inside a `select!` and drops it whenever another branch is
/// ready (an answer going out): a line read in two parts must survive that.
#[tokio::test]
async fn a_read_cancelled_mid_line_resumes_the_same_line() {
    let (mut client, server_in) = tokio::io::duplex(1 << 16);
    let (server_out, _client_out) = tokio::io::duplex(1 << 16);
    let mut t = LineTransport::new(server_in, server_out);
    client
        .write_all(br#"{"jsonrpc":"2.0","id":41,"#)
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(20), t.receive()).await;
    assert!(cancelled.is_err(), "the line is not complete yet");
    client.write_all(b"\"method\":\"ping\"}\n").await.unwrap();
    let msg = t.receive().await.unwrap();
    let JsonRpcMessage::Request(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(serde_json::to_value(&r.id).unwrap(), json!(41));
}

/// A small deterministic generator (xorshift), so the mutations are the same each run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates the params of a request line: whatever becomes of them, a line that still
/// starts as request N either reaches rmcp as request N or is answered under id N, and
/// exactly once. Cases: 300, or `MCPD_FUZZ_CASES`.
#[tokio::test]
async fn every_mutated_request_line_is_delivered_or_answered_under_its_id() {
    let cases: usize = std::env::var("MCPD_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let pieces = [
        "1e400",
        "\"",
        "]",
        "}",
        "{",
        ",",
        "null",
        "[1,2]",
        "\\u0000",
        "-",
        "9999999999999999999999",
        "\"arguments\":",
        "tools/call",
        " ",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lines = Vec::new();
    for n in 0..cases {
        let mut params: Vec<char> =
            r#"{"name":"flag_set","arguments":{"env":"prod","percent":10}}}"#
                .chars()
                .collect();
        for _ in 0..=rng.below(4) {
            let at = rng.below(params.len() + 1);
            match rng.below(3) {
                0 if !params.is_empty() => {
                    let end = (at + 1 + rng.below(6)).min(params.len());
                    params.drain(at.min(end)..end);
                }
                1 if at < params.len() => {
                    params[at] = pieces[rng.below(pieces.len())]
                        .chars()
                        .next()
                        .unwrap_or(' ')
                }
                _ => {
                    let piece = pieces[rng.below(pieces.len())];
                    params.splice(at..at, piece.chars());
                }
            }
        }
        let params: String = params.into_iter().collect();
        lines.push(format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{params}"#
        ));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (got, written) = exchange(&refs).await;
    let mut seen = vec![0u32; cases];
    for msg in &got {
        let JsonRpcMessage::Request(r) = msg else {
            panic!("not a request: {msg:?}")
        };
        let id = serde_json::to_value(&r.id).unwrap().as_u64().unwrap() as usize;
        seen[id] += 1;
    }
    for answer in &written {
        let id = answer["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("answer without its id: {answer}")) as usize;
        assert!(answer["error"]["code"].is_i64(), "{answer}");
        seen[id] += 1;
    }
    for (n, count) in seen.iter().enumerate() {
        assert_eq!(
            *count, 1,
            "line {n} was handled {count} times: {}",
            lines[n]
        );
    }
}
