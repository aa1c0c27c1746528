//! Bounded memory whatever the upstream sends (issue 14, item 6), through the real
//! binary: a 100 MB reply (with a Content-Length, and streamed without one) is cut off
//! at the tool's `response.max_bytes` (2 MiB by default) with an error naming the
//! field, and mcpd's peak RSS, read from /proc, stays under 100 MB. So it does for a
//! reply under the limit in the shapes that cost most memory once parsed: those too
//! costly to hold are refused unparsed, the rest are served.

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

const MB: u64 = 1_000_000;

/// `big.get` reads the demo API's generated reply of `bytes` bytes.
const TOOL: &str = r#"name: big.get
description: Reads a generated reply of a given size and shape.
input:
  type: object
  additionalProperties: false
  required: [bytes, shape, chunked]
  properties:
    bytes: { type: integer }
    shape: { enum: [string, numbers, objects, orders] }
    chunked: { type: boolean }
request:
  upstream: orders
  method: GET
  path: /big
  query: { bytes: "{{ args.bytes }}", shape: "{{ args.shape }}", chunked: "{{ args.chunked }}" }
"#;

fn serve(api: &DemoApi, tool: &str) -> (ConfigDir, StdioClient) {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/big.yaml", tool);
    let c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &api.url)]);
    (cfg, c)
}

/// The peak resident set of process `pid` so far, in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb * 1024.0 / MB as f64
}

fn big(c: &mut StdioClient, bytes: u64, shape: &str, chunked: bool) -> serde_json::Value {
    c.call(
        "big_get",
        json!({"bytes": bytes, "shape": shape, "chunked": chunked}),
    )
}

#[test]
fn a_100_mb_reply_is_cut_off_naming_response_max_bytes_and_peak_rss_stays_under_100_mb() {
    let api = DemoApi::start();
    for chunked in [false, true] {
        let (_cfg, mut c) = serve(&api, TOOL);
        let r = big(&mut c, 100 * MB, "string", chunked);
        assert!(is_error(&r), "{r}");
        assert_eq!(
            text(&r),
            "upstream 'orders' sent more than 2097152 bytes (2 MiB), the most tool 'big.get' reads (response.max_bytes); nothing of the reply was used: ask for less (a narrower range, a page), or raise response.max_bytes in its tool file"
        );
        let peak = peak_rss_mb(c.pid());
        eprintln!("100 MB reply (chunked: {chunked}): peak RSS {peak:.1} MB");
        assert!(peak < 100.0, "peak RSS {peak:.1} MB");
        // The server goes on serving.
        let r = big(&mut c, 1000, "string", chunked);
        assert!(!is_error(&r), "{r}");
    }
}

/// Replies under `response.max_bytes`: a long string and orders (with PII to redact)
/// are served; `[0,0,...]` and `[{"id":0},...]`, 16 and 70 times their size once
/// parsed, are refused unparsed; smaller ones, just cheap enough to hold, are served.
#[test]
fn a_reply_under_the_limit_in_any_shape_keeps_peak_rss_under_100_mb() {
    let api = DemoApi::start();
    for (shape, bytes, served) in [
        ("string", 2_090_000, true),
        ("orders", 2_090_000, true),
        ("numbers", 2_090_000, false),
        ("objects", 2_090_000, false),
        ("numbers", 900_000, true),
        ("objects", 200_000, true),
    ] {
        let (_cfg, mut c) = serve(&api, TOOL);
        let r = big(&mut c, bytes, shape, true);
        let peak = peak_rss_mb(c.pid());
        eprintln!("{bytes} bytes of {shape}: peak RSS {peak:.1} MB");
        let said: String = text(&r).chars().take(300).collect();
        assert_eq!(!is_error(&r), served, "{bytes} bytes of {shape}: {said}");
        if !served {
            assert!(
                said.contains("would take about") && text(&r).contains("raise response.max_bytes"),
                "{shape}: {said}"
            );
        }
        assert!(peak < 100.0, "{shape}: peak RSS {peak:.1} MB");
    }
}

#[test]
fn response_max_bytes_is_the_tools_own_limit() {
    let api = DemoApi::start();
    let tool = format!("{TOOL}response:\n  max_bytes: 1000\n");
    let (_cfg, mut c) = serve(&api, &tool);
    let r = big(&mut c, 1000, "string", false);
    assert!(!is_error(&r), "{r}");
    for chunked in [false, true] {
        let r = big(&mut c, 1001, "string", chunked);
        assert!(is_error(&r), "{r}");
        assert!(
            text(&r).starts_with(
                "upstream 'orders' sent more than 1000 bytes (1000 B), the most tool 'big.get' reads (response.max_bytes)"
            ),
            "{r}"
        );
    }
}

#[test]
fn a_response_max_bytes_of_zero_is_refused_by_validate() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/big.yaml",
        &format!("{TOOL}response:\n  max_bytes: 0\n"),
    );
    let (code, out, err) = crate::util::validate(cfg.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("response.max_bytes: must be at least 1 byte"),
        "{out}{err}"
    );
}
