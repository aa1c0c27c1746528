//! `mcpd init`: the starter directory passes `mcpd validate` and `mcpd test` as created,
//! its tool calls the demo API with PII masked, and init never overwrites a file
//! unless told to (`--force`), writing nothing at all when it refuses.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{DemoApi, bin, run, validate};

fn init(args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin()).arg("init").args(args))
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn a_new_starter_directory_validates_and_its_cases_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-apis");
    let (code, out, err) = init(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tools.d/orders.list.yaml") && out.contains("mcpd validate"),
        "{out}"
    );

    let (code, out, err) = validate(&dir);
    assert_eq!(code, 0, "the starter does not validate:\n{out}{err}");
    assert!(out.starts_with("ok: 1 tools"), "{out}");

    let (code, out, err) = run(Command::new(bin()).arg("test").arg(&dir));
    assert_eq!(code, 0, "the starter's cases fail:\n{out}{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    // Every YAML file names a schema that is there, for the editor.
    let yaml: Vec<String> = files_under(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    assert_eq!(yaml.len(), 4, "{yaml:?}");
    for f in yaml {
        let text = std::fs::read_to_string(&f).unwrap();
        let schema = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{f} has no schema modeline"));
        let path = Path::new(&f).parent().unwrap().join(schema);
        let parsed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {} is not JSON: {e}", path.display()));
        assert!(parsed["title"].is_string(), "{}", path.display());
    }
}

#[test]
fn the_starter_tool_calls_the_demo_api_with_emails_masked() {
    let api = DemoApi::start();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(init(&[tmp.path().to_str().unwrap()]).0, 0);
    let (code, out, err) = run(Command::new(bin())
        .args([
            "call",
            "orders_list",
            "--args",
            r#"{"from":"2025-08-01","to":"2025-08-31"}"#,
        ])
        .arg("--config")
        .arg(tmp.path())
        .env("ORDERS_URL", &api.url));
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    let orders = result["structuredContent"]["orders"].as_array().unwrap();
    assert!(!orders.is_empty(), "{out}");
    for o in orders {
        let email = o["email"].as_str().unwrap();
        assert!(
            email.contains("***@"),
            "an email came back unmasked: {email}"
        );
    }
    assert_eq!(api.requests().len(), 1);

    // The shipped policy refuses a long range before anything is sent.
    let (code, out, _) = run(Command::new(bin())
        .args([
            "call",
            "orders.list",
            "--args",
            r#"{"from":"2025-01-01","to":"2025-08-31"}"#,
        ])
        .arg("--config")
        .arg(tmp.path())
        .env("ORDERS_URL", &api.url));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at most 31 days"), "{out}");
    assert_eq!(api.requests().len(), 1, "the denied call reached the API");
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("policies.yaml"), "default: deny\n").unwrap();
    std::fs::create_dir(dir.join("tools.d")).unwrap();
    std::fs::write(dir.join("tools.d/mine.yaml"), "# mine\n").unwrap();

    let (code, _, err) = init(&[dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already has policies.yaml") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("wrote nothing"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("policies.yaml")).unwrap(),
        "default: deny\n"
    );
    assert!(
        !dir.join("mcpd.yaml").exists() && !dir.join("schemas").exists(),
        "a refused init wrote some files: {:?}",
        files_under(dir)
    );

    // A dangling symlink is something there, too: never written through.
    #[cfg(unix)]
    {
        let other = tempfile::tempdir().unwrap();
        let target = other.path().join("elsewhere.yaml");
        std::os::unix::fs::symlink(&target, other.path().join("mcpd.yaml")).unwrap();
        let (code, _, err) = init(&[other.path().to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("already has mcpd.yaml"), "{err}");
        assert!(!target.exists(), "init wrote through a symlink");
    }

    let (code, _, err) = init(&["--force", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(dir.join("policies.yaml"))
            .unwrap()
            .contains("one-month-at-a-time")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("tools.d/mine.yaml")).unwrap(),
        "# mine\n",
        "--force touched a file that is not a starter file"
    );
    // A second init over a complete starter refuses, naming every file.
    let (code, _, err) = init(&[dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    for f in [
        "mcpd.yaml",
        "policies.yaml",
        "tools.d/orders.list.yaml",
        "tests.d/orders.yaml",
        "schemas/tool.schema.json",
    ] {
        assert!(err.contains(f), "{f} not named: {err}");
    }
}
