//! Rule coverage through the binary: `mcpd test --coverage` on the shipped tests.d (every
//! enforced rule matched and not matched by some passing case), and `mcpd validate
//! --strict` refusing a deny rule no case makes match, or none makes not match.

use std::process::Command;

use crate::util::{ConfigDir, bin, repo, run};

/// The shipped config with its tests.d.
fn with_cases() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    for entry in std::fs::read_dir(repo().join("tests.d")).unwrap() {
        let p = entry.unwrap().path();
        let name = format!("tests.d/{}", p.file_name().unwrap().to_str().unwrap());
        cfg.write(&name, &std::fs::read_to_string(&p).unwrap());
    }
    cfg
}

fn mcpd(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin()).args(args).arg(dir))
}

#[test]
fn the_shipped_cases_cover_every_enforced_rule_both_ways() {
    let (code, out, err) = mcpd(&repo(), &["test", "--coverage"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rule coverage (enforced rules; passing cases that reached policy)"),
        "{out}"
    );
    for rule in ["prod-write-needs-ticket", "eu-data-stays-in-eu"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(rule))
            .unwrap();
        assert!(line.contains(" covered "), "{line}");
        assert!(
            !line.contains("matched: 0") && !line.contains("not matched: 0"),
            "{line}"
        );
    }
    let redact = out.lines().find(|l| l.contains("redact-pii")).unwrap();
    assert!(
        redact.contains("not matched: n/a (no condition, every tool)"),
        "{redact}"
    );
    // the shadow rule is not enforced: not listed
    assert!(!out.contains("no-bulk-exports  "), "{out}");
    assert!(
        out.contains("3 of 3 enforced rules covered both ways"),
        "{out}"
    );
    let (code, out, err) = mcpd(&repo(), &["validate", "--strict"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
}

const FREEZE: &str = r#"rules:
  - id: weekend-freeze
    tools: [flag.set]
    when: args.name == "checkout_v3"
    effect: deny
    reason: frozen
  - id: flags-need-a-name
    tools: [flag.set]
    when: args.name is defined
    effect: deny
    mode: shadow
    reason: shadow rules are not held to coverage
"#;

#[test]
fn strict_validation_refuses_a_deny_rule_no_case_makes_match() {
    let cfg = with_cases();
    cfg.edit("policies.yaml", "rules:\n", FREEZE);
    let (code, out, _) = mcpd(cfg.path(), &["test", "--coverage"]);
    assert_eq!(code, 0, "cases still pass: {out}");
    let line = out.lines().find(|l| l.contains("weekend-freeze")).unwrap();
    assert!(
        line.contains("PARTIAL") && line.contains("matched: 0;"),
        "{line}"
    );
    assert!(
        out.contains("3 of 4 enforced rules covered both ways"),
        "{out}"
    );
    // plain validate does not run cases
    let (code, _, _) = mcpd(cfg.path(), &["validate"]);
    assert_eq!(code, 0);
    let (code, out, err) = mcpd(cfg.path(), &["validate", "--strict"]);
    assert_eq!(code, 1, "{out}");
    let policies = cfg.path().join("policies.yaml");
    assert!(
        out.contains(&format!(
            "{}:21:11: rule 'weekend-freeze': no passing case in tests.d makes it match (--strict wants a case each way for every enforced deny or require rule)",
            policies.display()
        )),
        "{out}"
    );
    assert!(!out.contains("flags-need-a-name"), "{out}");
    assert!(err.contains("1 problem found"), "{err}");
    // a case that makes it match fixes it
    cfg.write(
        "tests.d/freeze.yaml",
        "upstream: recorded\ncases:\n  - name: frozen flag\n    call: { tool: flag.set, args: { env: staging, name: checkout_v3, percent: 1 } }\n    expect: { decision: deny, rules: [weekend-freeze] }\n",
    );
    let (code, out, _) = mcpd(cfg.path(), &["validate", "--strict"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn strict_validation_refuses_a_deny_rule_every_case_makes_match() {
    let cfg = with_cases();
    cfg.edit(
        "policies.yaml",
        "rules:\n",
        "rules:\n  - id: exports-need-a-range\n    tools: [orders.export]\n    when: args.from is not defined\n    effect: deny\n    reason: x\n",
    );
    cfg.write(
        "tests.d/range.yaml",
        "upstream: recorded\ncases:\n  - name: no range\n    call: { tool: orders.export, args: {} }\n    expect: { decision: invalid }\n",
    );
    let (code, out, _) = mcpd(cfg.path(), &["validate", "--strict"]);
    // the case is refused by the input schema before policy: no case makes it match,
    // and every export case makes it not match
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rule 'exports-need-a-range': no passing case in tests.d makes it match ("),
        "{out}"
    );
    assert!(!out.contains("makes it not match"), "{out}");
}
