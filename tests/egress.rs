//! Egress beyond the host name (issue 14, item 10), through the real binary: a host on
//! the allow-list whose name resolves to a loopback (or private, link-local, metadata)
//! address is refused at connection time, with the entry to add, unless the address or
//! a CIDR holding it is listed in policies.yaml `egress`; the upstream sees nothing.

use std::process::Command;

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text};

/// The shipped config with `egress` replaced by `entries`.
fn config(entries: &str) -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "policies.yaml",
        "egress:\n  - 127.0.0.1\n  - localhost\n",
        &format!("egress: {entries}\n"),
    );
    cfg
}

/// The demo API's URL with its host written as `localhost`.
fn by_name(api: &DemoApi) -> String {
    api.url.replace("127.0.0.1", "localhost")
}

fn export(c: &mut StdioClient) -> serde_json::Value {
    c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    )
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused_with_the_entry_to_add() {
    let api = DemoApi::start();
    let cfg = config("[localhost]");
    let mut c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &by_name(&api))]);
    let r = export(&mut c);
    assert!(is_error(&r), "{r}");
    let msg = text(&r);
    assert!(
        msg.starts_with(
            "denied by policy: egress: 'localhost' resolves to 127.0.0.1, a loopback address;"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("add '127.0.0.1' (or a CIDR holding it) to 'egress' in policies.yaml"),
        "{msg}"
    );
    assert!(api.requests().is_empty(), "the upstream saw a request");
}

#[test]
fn an_address_or_cidr_listed_in_egress_lets_the_name_through() {
    let api = DemoApi::start();
    for entries in ["[localhost, 127.0.0.1]", "[localhost, 127.0.0.0/8]"] {
        let cfg = config(entries);
        let mut c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &by_name(&api))]);
        let r = export(&mut c);
        assert!(!is_error(&r), "{entries}: {r}");
    }
    assert_eq!(api.requests().len(), 2);
}

#[test]
fn a_refused_address_is_not_retried() {
    let api = DemoApi::start();
    let cfg = config("[localhost]");
    let mut c = StdioClient::start(
        cfg.path(),
        &[("DEMO_API_URL", &by_name(&api)), ("MCPD_LOG", "debug")],
    );
    // flag.set is a keyed PUT: connection failures would be retried twice.
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 5}),
    );
    assert!(is_error(&r), "{r}");
    assert!(text(&r).contains("a loopback address"), "{r}");
    c.close();
    assert!(
        !c.stderr().contains("retrying"),
        "a refused address was retried:\n{}",
        c.stderr()
    );
}

#[test]
fn validate_reports_a_malformed_address_entry() {
    let cfg = config("[localhost, 10.0.0.0/33, \"fd00::/129\"]");
    let (code, out, err) = run(Command::new(bin()).arg("validate").arg(cfg.path()));
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("egress entry '10.0.0.0/33': not an address range"),
        "{all}"
    );
    assert!(all.contains("egress entry 'fd00::/129'"), "{all}");
}
