//! Canonical numbers, through the real binary (issue 14, item 7): an integer written
//! as `1e1`, `8.0` or `-0` is the integer to policy, to the idempotency key and to the
//! upstream, so `8` and `8.0` are one write. As found first, then as a property over
//! random integers and the ways JSON can spell them (`PROPTEST_CASES` sets how many;
//! 256 by default, two calls each).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

/// `numbers.put` posts its arguments to the demo API's echo endpoint, which answers
/// with the exact bytes it received (`raw=1`); its key is made of `num`. A policy rule denies
/// the call when policy sees `num` as anything but an integer.
const TOOL: &str = r#"name: numbers.put
description: Posts a number to the echo endpoint.
input:
  type: object
  additionalProperties: false
  required: [num, tag]
  properties:
    num: { type: integer }
    tag: { type: string }
request:
  upstream: orders
  method: POST
  path: /echo
  query: { raw: "1" }
  body: { doc: { num: "{{ args.num }}", text: "num={{ args.num }}" } }
idempotency:
  key: "num-{{ args.tag }}-{{ args.num }}"
"#;

const RULE: &str = r#"
  - id: policy-sees-integers
    tools: [numbers.put]
    when: args.num is not integer
    effect: deny
    reason: policy saw a number that is not an integer
"#;

fn serve(api: &DemoApi) -> (ConfigDir, StdioClient) {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/numbers.yaml", TOOL);
    cfg.edit("policies.yaml", "rules:\n", &format!("rules:{RULE}"));
    let c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &api.url)]);
    (cfg, c)
}

/// A `tools/call` of `numbers.put` with `n` spelled exactly as `n_text` on the wire.
fn call_raw(c: &mut StdioClient, n_text: &str, tag: &str) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("n{}", NEXT.fetch_add(1, Ordering::Relaxed));
    // Serialising a Value would already canonicalise the number: write the line raw.
    c.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"numbers_put","arguments":{{"num":{n_text},"tag":"{tag}"}}}}}}"#
    ));
    let id = json!(id);
    let resp = c.wait_for(|v| v.get("id") == Some(&id));
    resp.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("tools/call failed: {resp}"))
}

/// What the upstream received as `doc`, byte for byte.
fn sent(result: &Value) -> String {
    let raw = result["structuredContent"]["received"]["raw"]
        .as_str()
        .unwrap_or_else(|| panic!("no echo in {result}"));
    raw.to_owned()
}

#[test]
fn integers_written_as_floats_reach_policy_the_key_and_the_upstream_as_integers() {
    let api = DemoApi::start();
    let (_cfg, mut c) = serve(&api);
    for (spelled, canonical) in [("1e1", "10"), ("-0", "0"), ("8.0", "8"), ("-3.00", "-3")] {
        let r = call_raw(&mut c, spelled, "found");
        assert!(!is_error(&r), "{spelled}: {}", text(&r));
        assert_eq!(
            sent(&r),
            format!(r#"{{"doc":{{"num":{canonical},"text":"num={canonical}"}}}}"#),
            "{spelled}"
        );
        assert_eq!(
            r["_meta"]["dev.mcpd/idempotencyKey"],
            format!("num-found-{canonical}"),
            "{spelled}"
        );
    }
    // `8` after `8.0`: the same key and arguments, so the stored result, not a write.
    let r = call_raw(&mut c, "8", "found");
    assert_eq!(r["_meta"]["dev.mcpd/replayed"], true, "{r}");
    let writes = api
        .requests()
        .iter()
        .filter(|r| r["path"] == "/echo")
        .count();
    assert_eq!(writes, 4);
}

/// How JSON can spell the integer `n`.
fn spellings(n: i64) -> impl Strategy<Value = String> {
    let plain = n.to_string();
    let mut forms = vec![
        plain.clone(),
        format!("{plain}.0"),
        format!("{plain}.000"),
        format!("{plain}e0"),
        format!("{plain}E+0"),
    ];
    if n != 0 {
        forms.push(format!("{plain}0e-1"));
    }
    if n == 0 {
        forms.extend(["-0".to_owned(), "-0.0".to_owned(), "0e5".to_owned()]);
    }
    if n % 10 == 0 && n != 0 {
        forms.push(format!("{}e1", n / 10));
    }
    if n % 100 == 0 && n != 0 {
        forms.push(format!("{}.{}e2", n / 100, "0"));
    }
    proptest::sample::select(forms)
}

#[test]
fn any_spelling_of_an_integer_is_one_form_for_policy_key_and_request() {
    let api = DemoApi::start();
    let (_cfg, c) = serve(&api);
    let c = RefCell::new(c);
    let strategy = prop_oneof![
        -1_000_000_i64..1_000_000,
        Just(0_i64),
        (-1000_i64..1000).prop_map(|k| k * 100)
    ]
    .prop_flat_map(|n| (Just(n), spellings(n), spellings(n)));
    let mut runner = TestRunner::new(crate::pii::config(crate::pii::cases()));
    let case = RefCell::new(0_u64);
    runner
        .run(&strategy, |(n, first, second)| {
            let mut c = c.borrow_mut();
            let tag = {
                let mut k = case.borrow_mut();
                *k += 1;
                format!("p{k}")
            };
            let r = call_raw(&mut c, &first, &tag);
            prop_assert!(!is_error(&r), "{first}: {}", text(&r));
            let want = format!(r#"{{"doc":{{"num":{n},"text":"num={n}"}}}}"#);
            prop_assert_eq!(sent(&r), want);
            prop_assert_eq!(
                &r["_meta"]["dev.mcpd/idempotencyKey"],
                &json!(format!("num-{tag}-{n}"))
            );
            // The second spelling is the same write: replayed, not sent again.
            let again = call_raw(&mut c, &second, &tag);
            prop_assert!(!is_error(&again), "{second}: {}", text(&again));
            prop_assert_eq!(&again["_meta"]["dev.mcpd/replayed"], &json!(true));
            Ok(())
        })
        .unwrap();
}
