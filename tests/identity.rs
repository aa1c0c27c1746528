//! Identity through the real binary: tokens from `mcpd token`, scopes, and elevation
//! grants from `mcpd elevate` beside a running `mcpd serve`. Every refusal names its
//! reason and sends nothing upstream.

use std::process::Command;
use std::time::{Duration, SystemTime};

use mcpd::config::diag::Diagnostics;
use mcpd::identity::elevation::{GrantRequest, Rules as ElevationRules};
use mcpd::identity::{Identity, TokenRequest};
use mcpd::util::Clock;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text};

const AUDIT_KEY: &str = "identity-test-audit-key-0123456789";

/// Runs `mcpd ARGS --config DIR` with `env`; returns (exit code, stdout, stderr).
fn mcpd(cfg: &ConfigDir, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .envs(env.iter().copied()))
}

/// A fresh signing key (`KID:KEY`) and its public half.
pub(crate) fn keygen(cfg: &ConfigDir, kid: &str) -> (String, String) {
    let (code, out, err) = mcpd(cfg, &[], &["token", "keygen", "--kid", kid]);
    assert_eq!(code, 0, "{err}");
    let private = out
        .lines()
        .find_map(|l| l.strip_prefix("MCPD_TOKEN_KEY="))
        .unwrap()
        .to_owned();
    let public = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("#       {kid}: ")))
        .or_else(|| {
            out.lines().find_map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .strip_prefix(&format!("{kid}: "))
            })
        })
        .unwrap()
        .to_owned();
    (private, public)
}

pub(crate) fn issue(
    cfg: &ConfigDir,
    key: &str,
    subject: &str,
    scopes: &[&str],
    ttl: &str,
) -> String {
    let mut args = vec!["token", "issue", "--subject", subject, "--ttl", ttl];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let (code, out, err) = mcpd(cfg, &[("MCPD_TOKEN_KEY", key)], &args);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

/// The config's identity with signing key `key`, on a clock standing at `at`: what
/// `mcpd token issue` and `mcpd elevate` would do at that time, without waiting for it.
fn identity_at(cfg: &ConfigDir, key: &str, at: SystemTime) -> (Identity, ElevationRules) {
    let (loaded, diags) = mcpd::config::load_dir(cfg.path());
    assert!(diags.is_empty(), "{diags}");
    let (path, server) = &loaded.server;
    let vars = mcpd::config::Vars::default().with("MCPD_TOKEN_KEY", key);
    let mut diags = Diagnostics::default();
    let spec = server.identity.as_ref().unwrap();
    let identity = Identity::compile(path, spec, &vars, &mut diags).unwrap();
    let rules = ElevationRules::compile(path, &server.elevation, &mut diags).unwrap();
    assert!(diags.is_empty(), "{diags}");
    (identity.with_clock(Clock::manual(at)), rules)
}

/// A token that expired `ago` (issued then for one second), past the clock-skew allowance.
fn expired_token(cfg: &ConfigDir, key: &str, subject: &str, ago: Duration) -> String {
    let (identity, _) = identity_at(cfg, key, SystemTime::now() - ago);
    let req = TokenRequest {
        subject: subject.to_owned(),
        scopes: vec!["*".to_owned()],
        ttl: Duration::from_secs(1),
        ..TokenRequest::default()
    };
    identity.issue(&req).unwrap()
}

/// The shipped config without its default actor (every call needs a token), audited.
fn token_only() -> ConfigDir {
    ConfigDir::token_only("\naudit:\n  path: audit.jsonl\n")
}

struct Setup {
    api: DemoApi,
    cfg: ConfigDir,
    key: String,
}

impl Setup {
    fn new() -> Self {
        let cfg = token_only();
        let (key, _) = keygen(&cfg, "k1");
        Self {
            api: DemoApi::start(),
            cfg,
            key,
        }
    }

    fn token(&self, subject: &str, scopes: &[&str]) -> String {
        issue(&self.cfg, &self.key, subject, scopes, "15m")
    }

    fn serve(&self, token: Option<&str>) -> StdioClient {
        let mut env = vec![
            ("DEMO_API_URL", self.api.url.as_str()),
            ("MCPD_TOKEN_KEY", self.key.as_str()),
            ("MCPD_AUDIT_KEY", AUDIT_KEY),
        ];
        if let Some(t) = token {
            env.push(("MCPD_TOKEN", t));
        }
        StdioClient::start(self.cfg.path(), &env)
    }

    fn elevate(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["elevate"];
        all.extend(args);
        mcpd(
            &self.cfg,
            &[("MCPD_TOKEN_KEY", &self.key), ("USER", "ops-ana")],
            &all,
        )
    }

    /// Records a grant for `subject` on flag.set in prod that expired `ago`, as
    /// `mcpd elevate --ttl 1m` would have then, beside the running mcpd.
    fn grant_expired(&self, subject: &str, ticket: &str, ago: Duration) {
        let (identity, rules) = identity_at(&self.cfg, &self.key, SystemTime::now() - ago);
        let state = self.cfg.path().join(".mcpd/state.redb");
        let req = GrantRequest {
            subject: subject.to_owned(),
            tool: "flag.set".to_owned(),
            env: Some("prod".to_owned()),
            ticket: ticket.to_owned(),
            granted_by: "ops-ana".to_owned(),
            ttl: Duration::from_secs(60),
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = mcpd::store::connect(&format!("file:{}", state.display()))
                .await
                .unwrap();
            mcpd::identity::elevation::grant(store.as_ref(), &identity, &rules, &req)
                .await
                .unwrap();
        });
    }

    fn flag_writes(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r["method"] == "PUT")
            .count()
    }
}

fn prod(percent: u8) -> Value {
    json!({"env": "prod", "name": "checkout_v2", "percent": percent})
}

fn staging(percent: u8) -> Value {
    json!({"env": "staging", "name": "checkout_v2", "percent": percent})
}

fn denied_with(result: &Value, reason: &str) {
    assert!(is_error(result), "expected a refusal: {result}");
    assert!(
        text(result).contains(reason),
        "{reason:?} not in {}",
        text(result)
    );
}

#[test]
fn a_scoped_token_exports_orders_and_writes_staging_only() {
    let s = Setup::new();
    let token = s.token("agent:copilot", &["orders.export", "flag.set:staging"]);
    let mut c = s.serve(Some(&token));
    let orders = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&orders), "{orders}");
    assert!(!is_error(&c.call("flag_set", staging(10))));
    denied_with(
        &c.call("flag_set", prod(5)),
        "agent:copilot lacks scope 'flag.set:prod' (it has: orders.export, flag.set:staging)",
    );
    assert_eq!(s.flag_writes(), 1);
    // The audit log names the token's subject.
    let audit = s.cfg.read("audit.jsonl");
    assert!(audit.contains("\"actor\":\"agent:copilot\""), "{audit}");
}

#[test]
fn a_token_for_orders_cannot_call_flag_set() {
    let s = Setup::new();
    let token = s.token("agent:reporter", &["orders.export"]);
    let mut c = s.serve(Some(&token));
    denied_with(
        &c.call("flag_set", staging(10)),
        "lacks scope 'flag.set:staging'",
    );
    assert!(s.api.requests().is_empty());
}

#[test]
fn no_token_expired_foreign_and_wrong_audience_tokens_are_refused_with_their_reason() {
    let s = Setup::new();
    let mut cases: Vec<(Option<String>, &str)> =
        vec![(None, "unauthenticated: no token: set MCPD_TOKEN")];
    // Signed with another key that claims the same key id.
    let (other_key, _) = keygen(&s.cfg, "k1");
    cases.push((
        Some(issue(&s.cfg, &other_key, "agent:x", &["*"], "15m")),
        "signature is invalid",
    ));
    // Signed with a key this mcpd does not know at all.
    let (stranger, _) = keygen(&s.cfg, "k9");
    cases.push((
        Some(issue(&s.cfg, &stranger, "agent:x", &["*"], "15m")),
        "signed with key 'k9', which this mcpd does not trust",
    ));
    // For another deployment.
    let other = token_only();
    other.edit("mcpd.yaml", "audience: mcpd-demo", "audience: mcpd-prod");
    cases.push((
        Some(issue(&other, &s.key, "agent:x", &["*"], "15m")),
        "is for audience 'mcpd-prod', not this mcpd ('mcpd-demo')",
    ));
    // Tampered: the payload edited to widen its scopes.
    let good = s.token("agent:x", &["orders.export"]);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        claims["scopes"] = json!(["*"]);
        parts[1] = b64.encode(serde_json::to_vec(&claims).unwrap());
    }
    cases.push((Some(parts.join(".")), "the token's signature is invalid"));
    // Expired: issued an hour ago for one second (on a clock set back, not by waiting).
    let short = expired_token(&s.cfg, &s.key, "agent:x", Duration::from_secs(3600));
    cases.push((Some(short), "the token expired"));
    for (token, reason) in cases {
        let mut c = s.serve(token.as_deref());
        denied_with(&c.call("flag_set", staging(10)), reason);
    }
    assert!(
        s.api.requests().is_empty(),
        "nothing may reach the upstream"
    );
    // `mcpd token verify` tells the same story.
    let (code, _, err) = mcpd(
        &s.cfg,
        &[("MCPD_TOKEN_KEY", &s.key)],
        &["token", "verify", "not.a.token"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("malformed"), "{err}");
}

#[test]
fn prod_writes_over_ten_percent_need_a_live_elevation_of_the_same_subject() {
    let s = Setup::new();
    let token = s.token("agent:release", &["flag.set"]);
    let mut c = s.serve(Some(&token));
    // Without an elevation.
    denied_with(
        &c.call("flag_set", prod(50)),
        "[rule prod-write-needs-ticket]",
    );
    // A ticket of the wrong form is refused at grant time.
    let (code, _, err) = s.elevate(&[
        "--subject",
        "agent:release",
        "--tool",
        "flag.set",
        "--env",
        "prod",
        "--ticket",
        "please",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not match elevation.ticket_pattern"),
        "{err}"
    );
    // An elevation for another subject does not count.
    let (code, _, err) = s.elevate(&[
        "--subject",
        "agent:other",
        "--tool",
        "flag.set",
        "--env",
        "prod",
        "--ticket",
        "CHG-1",
    ]);
    assert_eq!(code, 0, "{err}");
    denied_with(
        &c.call("flag_set", prod(50)),
        "[rule prod-write-needs-ticket]",
    );
    // An elevation that has expired does not count: granted an hour ago for a minute,
    // into the state file the running mcpd serves (on a clock set back, not by waiting).
    s.grant_expired("agent:release", "CHG-2", Duration::from_secs(3600));
    denied_with(
        &c.call("flag_set", prod(50)),
        "[rule prod-write-needs-ticket]",
    );
    assert_eq!(s.flag_writes(), 0);
    // A live one, granted while mcpd serves: the write goes, under its ticket.
    let (code, out, err) = s.elevate(&[
        "--subject",
        "agent:release",
        "--tool",
        "flag.set",
        "--env",
        "prod",
        "--ticket",
        "CHG-1234",
        "--ttl",
        "10m",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("granted by user:ops-ana"), "{out}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let r = c.call("flag_set", prod(50));
    assert!(!is_error(&r), "{r}");
    assert_eq!(s.flag_writes(), 1);
    let (_, listed, _) = s.elevate(&["--list", "--subject", "agent:release"]);
    assert!(listed.contains("CHG-1234"), "{listed}");
    // Revoked: refused again.
    let (code, out, _) = s.elevate(&["--revoke", &id]);
    assert_eq!(code, 0, "{out}");
    denied_with(
        &c.call("flag_set", prod(60)),
        "[rule prod-write-needs-ticket]",
    );
    drop(c);
    let audit = s.cfg.read("audit.jsonl");
    let allowed: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["decision"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["ticket"], "CHG-1234", "{audit}");
    assert_eq!(allowed[0]["actor"], "agent:release");
}

#[test]
fn a_token_file_is_read_again_when_it_changes() {
    let s = Setup::new();
    s.cfg.edit(
        "mcpd.yaml",
        "  audience: mcpd-demo\n",
        "  audience: mcpd-demo\n  token_file: token.jwt\n",
    );
    s.cfg
        .write("token.jwt", &s.token("agent:a", &["orders.export"]));
    let mut c = s.serve(None);
    denied_with(
        &c.call("flag_set", staging(10)),
        "lacks scope 'flag.set:staging'",
    );
    // A refresher writes a new token (atomically, as it should): no restart needed.
    let tmp = s.cfg.path().join("token.jwt.tmp");
    std::fs::write(&tmp, s.token("agent:a", &["flag.set:staging"])).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&tmp, s.cfg.path().join("token.jwt")).unwrap();
    assert!(!is_error(&c.call("flag_set", staging(10))));
}

#[test]
fn tokens_signed_with_the_previous_key_verify_during_rotation() {
    let s = Setup::new();
    let (old_key, old_public) = keygen(&s.cfg, "k0");
    let old_token = issue(&s.cfg, &old_key, "agent:a", &["orders.export"], "15m");
    // Rotation: the new key signs, the old key's public half still verifies.
    s.cfg.edit(
        "mcpd.yaml",
        "  audience: mcpd-demo\n",
        &format!("  audience: mcpd-demo\n  keys:\n    k0: {old_public}\n"),
    );
    let mut c = s.serve(Some(&old_token));
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&r), "{r}");
}

/// Issue 15, item 6: a host that does not expand its variable syntax hands mcpd the
/// placeholder itself; that was "token is malformed" with no hint.
#[test]
fn an_unexpanded_host_placeholder_is_called_that_with_each_hosts_spelling() {
    let s = Setup::new();
    for placeholder in [
        "${env:MCPD_TOKEN}",
        "${input:mcpd-token}",
        "${{ secrets.MCPD_TOKEN }}",
    ] {
        let mut c = s.serve(Some(placeholder));
        let result = c.call("flag_set", staging(10));
        denied_with(
            &result,
            &format!("the token is '{placeholder}': a placeholder the host did not expand"),
        );
        let text = result["content"][0]["text"].as_str().unwrap().to_owned();
        for spelling in [
            "VS Code '${input:mcpd-token}'",
            "Cursor '${env:MCPD_TOKEN}'",
            "Claude Desktop expands none",
        ] {
            assert!(text.contains(spelling), "{text}");
        }
        // Said at start too, in the host's log.
        c.wait_stderr("every call will be refused until the host's config is fixed");
    }
    assert!(
        s.api.requests().is_empty(),
        "nothing may reach the upstream"
    );
}
