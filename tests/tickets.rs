//! Tickets checked where they live (`elevation.ticket_check`): `mcpd elevate` asks the
//! demo API's ticket system and grants only under a ticket that exists, is approved,
//! is for the grant's environment and whose change window is open; anything else,
//! including a ticket system that cannot be asked, is refused with the reason (fails
//! closed). `mcpd demo` shows an approved and an unapproved ticket.

use std::process::Command;

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text};

const CHECK: &str = r#"
  ticket_check:
    url: "${TICKETS_URL:-http://127.0.0.1:9}/tickets/{{ ticket }}"
    headers: { Authorization: "Bearer {{ secret.TICKETS_TOKEN }}" }
    require: { "$.status": approved }
    environment: "$.environment"
    window: { start: "$.window.start", end: "$.window.end" }
"#;

const AUDIT_KEY: &str = "tickets-test-audit-key-0123456789";

struct Setup {
    api: DemoApi,
    cfg: ConfigDir,
    key: String,
}

impl Setup {
    fn new() -> Self {
        let cfg = ConfigDir::token_only("\naudit:\n  path: audit.jsonl\n");
        cfg.edit(
            "mcpd.yaml",
            "  max_ttl: 1h\n",
            &format!("  max_ttl: 1h\n{CHECK}"),
        );
        let (key, _) = crate::identity::keygen(&cfg, "k1");
        Self {
            api: DemoApi::start(),
            cfg,
            key,
        }
    }

    /// `mcpd elevate` for agent:release on flag.set with `args`, the ticket system's
    /// token being `secret`.
    fn elevate_with(&self, secret: &str, url: &str, args: &[&str]) -> (i32, String, String) {
        let mut all = vec![
            "elevate",
            "--subject",
            "agent:release",
            "--tool",
            "flag.set",
        ];
        all.extend(args);
        run(Command::new(bin())
            .args(&all)
            .arg("--config")
            .arg(self.cfg.path())
            .env("MCPD_TOKEN_KEY", &self.key)
            .env("TICKETS_URL", url)
            .env("TICKETS_TOKEN", secret)
            .env("MCPD_AUDIT_KEY", AUDIT_KEY)
            .env("USER", "ops-ana"))
    }

    fn elevate(&self, args: &[&str]) -> (i32, String, String) {
        self.elevate_with(mcpd::demo_api::TICKETS_TOKEN, &self.api.url, args)
    }
}

fn refused(out: (i32, String, String), reason: &str) {
    let (code, stdout, err) = out;
    assert_ne!(code, 0, "granted, expected a refusal: {stdout}");
    assert!(err.contains(reason), "{reason:?} not in {err}");
    assert!(!stdout.contains("granted"), "{stdout}");
}

#[test]
fn elevate_grants_only_under_an_approved_ticket_for_the_environment_in_its_window() {
    let s = Setup::new();
    refused(
        s.elevate(&["--env", "prod", "--ticket", "CHG-1300"]),
        "ticket 'CHG-1300' is not approved: $.status is \"pending\", not \"approved\"",
    );
    refused(
        s.elevate(&["--env", "prod", "--ticket", "CHG-1400"]),
        "ticket 'CHG-1400''s change window closed at",
    );
    refused(
        s.elevate(&["--env", "prod", "--ticket", "INC-77"]),
        "ticket 'INC-77' is for environment 'staging', not 'prod'",
    );
    refused(
        s.elevate(&["--env", "prod", "--ticket", "CHG-999999"]),
        "ticket 'CHG-999999' does not exist in the ticket system",
    );
    refused(
        s.elevate(&["--ticket", "CHG-1234"]),
        "ticket 'CHG-1234' is checked against an environment: name one (--env)",
    );
    // Fails closed: a wrong credential, a ticket system that is down.
    refused(
        s.elevate_with(
            "wrong",
            &s.api.url,
            &["--env", "prod", "--ticket", "CHG-1234"],
        ),
        "ticket 'CHG-1234' could not be checked (the ticket system answered 401), so it is refused",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    refused(
        s.elevate_with(
            mcpd::demo_api::TICKETS_TOKEN,
            &down,
            &["--env", "prod", "--ticket", "CHG-1234"],
        ),
        "ticket 'CHG-1234' could not be checked (",
    );
    // The secret never shows, whatever failed.
    let (_, out, err) = s.elevate_with(
        "s3cret-tickets-credential",
        &s.api.url,
        &["--env", "prod", "--ticket", "CHG-1234"],
    );
    assert!(!format!("{out}{err}").contains("s3cret-tickets-credential"));

    // The approved one: granted, and a running mcpd lets the prod write go under it.
    let token = crate::identity::issue(&s.cfg, &s.key, "agent:release", &["flag.set"], "15m");
    let mut c = StdioClient::start(
        s.cfg.path(),
        &[
            ("DEMO_API_URL", s.api.url.as_str()),
            ("MCPD_TOKEN_KEY", s.key.as_str()),
            ("MCPD_TOKEN", token.as_str()),
            ("MCPD_AUDIT_KEY", AUDIT_KEY),
        ],
    );
    let prod = json!({"env": "prod", "name": "checkout_v2", "percent": 50});
    let r = c.call("flag_set", prod.clone());
    assert!(
        is_error(&r) && text(&r).contains("[rule prod-write-needs-ticket]"),
        "{r}"
    );
    let (code, out, err) = s.elevate(&["--env", "prod", "--ticket", "CHG-1234", "--ttl", "10m"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("under ticket CHG-1234 for 10 min"), "{out}");
    let r = c.call("flag_set", prod);
    assert!(!is_error(&r), "{}", text(&r));
    drop(c);
    // The grant and the call made under it carry the ticket into the audit log; the
    // refused grants left nothing.
    let records: Vec<serde_json::Value> = s
        .cfg
        .read("audit.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let grants: Vec<_> = records.iter().filter(|r| r["event"] == "grant").collect();
    assert_eq!(grants.len(), 1, "{records:?}");
    assert_eq!(grants[0]["ticket"], "CHG-1234");
    assert_eq!(grants[0]["subject"], "agent:release");
    assert_eq!(grants[0]["actor"], "user:ops-ana");
    assert_eq!(grants[0]["env"], "prod");
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r["decision"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["ticket"], "CHG-1234");
    // One chain: the grant written by `mcpd elevate` beside the running mcpd verifies.
    let (code, out, err) = run(Command::new(bin())
        .args(["audit", "verify"])
        .arg(s.cfg.path().join("audit.jsonl"))
        .env("MCPD_AUDIT_KEY", AUDIT_KEY));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_ticket_given_in_band_is_checked_by_the_ticket_system_too() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "mcpd.yaml",
        "  max_ttl: 1h\n",
        &format!("  max_ttl: 1h\n{CHECK}"),
    );
    cfg.append("mcpd.yaml", "\nstate: \"memory:\"\n");
    let mut cmd = crate::python_client::client("approvals_ticket_check.py");
    cmd.env("MCPD_BIN", bin())
        .env("MCPD_CONFIG", cfg.path())
        .env("DEMO_API_URL", &api.url)
        .env("TICKETS_URL", &api.url)
        .env("TICKETS_TOKEN", mcpd::demo_api::TICKETS_TOKEN)
        .env("PYTHONWARNINGS", "ignore");
    crate::python_client::assert_passes(&mut cmd, "approvals with ticket_check", &String::new);
}

#[test]
fn a_grant_to_a_subject_pattern_is_refused() {
    let s = Setup::new();
    for subject in ["*", "agent:*", "agent:?", " agent:release"] {
        let (code, out, err) = run(Command::new(bin())
            .args([
                "elevate",
                "--subject",
                subject,
                "--tool",
                "flag.set",
                "--env",
                "prod",
            ])
            .args(["--ticket", "CHG-1234", "--config"])
            .arg(s.cfg.path())
            .env("MCPD_TOKEN_KEY", &s.key)
            .env("TICKETS_URL", &s.api.url)
            .env("TICKETS_TOKEN", mcpd::demo_api::TICKETS_TOKEN));
        assert_ne!(code, 0, "{out}");
        assert!(
            err.contains("is a pattern; a grant names exactly one subject"),
            "{err}"
        );
    }
    // Nothing reached the ticket system: the subject is refused first.
    assert!(s.api.requests().is_empty());
}

#[test]
fn mcpd_demo_shows_an_unapproved_ticket_refused_and_an_approved_one_granted() {
    let cfg = ConfigDir::shipped();
    let (code, out, err) = run(Command::new(bin())
        .args(["demo", "--config"])
        .arg(cfg.path()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("--ticket CHG-1300 --ttl 10m  -> refused: ticket 'CHG-1300' is not approved"),
        "{out}"
    );
    assert!(out.contains("--ticket CHG-1234 --ttl 10m  -> g-"), "{out}");
    assert!(out.contains("(elevated: ticket CHG-1234)"), "{out}");
    assert!(out.contains("every flow behaved as expected"), "{out}");
}
