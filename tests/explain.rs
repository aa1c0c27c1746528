//! `mcpd explain`: the request a call would send (its final URL, on the routed region's
//! base URL, secrets named not shown) and the redaction it would get, in the words the
//! config files use.

use std::process::Command;

use crate::util::{ConfigDir, bin, repo, run};

/// `mcpd explain TOOL --args ARGS [extra]` on `dir`: (exit code, stdout + stderr).
fn explain(dir: &std::path::Path, tool: &str, args: &str, extra: &[&str]) -> (i32, String) {
    let (code, out, err) = run(Command::new(bin())
        .args(["explain", tool, "--args", args])
        .args(extra)
        .arg("--config")
        .arg(dir)
        .env_remove("DEMO_API_URL")
        .env_remove("MCPD_TOKEN"));
    (code, format!("{out}{err}"))
}

const AUGUST: &str = r#"{"from":"2025-08-01","to":"2025-08-31"}"#;

#[test]
fn explain_prints_the_final_url_on_the_routed_regions_base_url() {
    let (code, out) = explain(&repo(), "orders_export", AUGUST, &["--region", "eu"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route     region 'eu'\n"), "{out}");
    assert!(
        out.contains(
            "request   GET http://127.0.0.1:8080/eu/orders?from=2025-08-01&to=2025-08-31\n"
        ),
        "{out}"
    );
    let (code, out) = explain(&repo(), "orders_export", AUGUST, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("request   GET http://127.0.0.1:8080/orders?from=2025-08-01&to=2025-08-31\n"),
        "{out}"
    );
}

#[test]
fn explain_names_the_redaction_detectors_as_policies_yaml_spells_them() {
    let (_, out) = explain(&repo(), "orders_export", AUGUST, &[]);
    assert!(
        out.contains("redact    email, pan, secret (detectors run over the result)\n"),
        "{out}"
    );
    assert!(!out.contains("Email"), "{out}");
}

#[test]
fn explain_shows_a_secret_in_the_url_by_name_and_needs_none() {
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "tools.d/orders.export.yaml",
        "    to: \"{{ args.to }}\"\n",
        "    to: \"{{ args.to }}\"\n    key: \"{{ secret.ORDERS_KEY }}\"\n",
    );
    for env in [None, Some("real-key-never-shown")] {
        let mut cmd = Command::new(bin());
        cmd.args(["explain", "orders.export", "--args", AUGUST])
            .arg("--config")
            .arg(cfg.path())
            .env_remove("DEMO_API_URL")
            .env_remove("MCPD_TOKEN");
        match env {
            Some(v) => cmd.env("ORDERS_KEY", v),
            None => cmd.env_remove("ORDERS_KEY"),
        };
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("request   GET http://127.0.0.1:8080/orders?from=2025-08-01&to=2025-08-31&key=[secret ORDERS_KEY]\n"),
            "{out}"
        );
        assert!(
            !out.contains("never-shown") && !out.contains("placeholder"),
            "{out}"
        );
    }
}

#[test]
fn a_denied_call_shows_no_request() {
    let (code, out) = explain(
        &repo(),
        "flag.set",
        r#"{"env":"prod","name":"checkout_v2","percent":50}"#,
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decision  DENY by prod-write-needs-ticket"),
        "{out}"
    );
    // The request policy judged is shown (its path), never one built to be sent.
    assert!(!out.contains("request "), "{out}");
    assert!(
        out.contains("judged    PUT /flags/prod/checkout_v2 (upstream flags)\n"),
        "{out}"
    );
    assert!(!out.contains("http://"), "{out}");
}
