//! Hot reload with a client connected over stdio: files added, edited, broken, fixed and
//! deleted while mcpd serves; list_changed after each swap; a broken file never takes a
//! working tool away; a call in flight finishes across a swap.

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

fn serve(cfg: &ConfigDir, api: &DemoApi) -> StdioClient {
    let c = StdioClient::with_api(cfg.path(), api);
    // The watcher is armed before initialize returns, but give it a moment to settle.
    c.wait_stderr("transport=\"stdio\"");
    c
}

fn second_orders_tool(cfg: &ConfigDir) -> String {
    cfg.read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders.recent")
}

#[test]
fn added_file_is_announced_listed_and_callable() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    cfg.write("tools.d/orders.recent.yaml", &second_orders_tool(&cfg));
    c.wait_list_changed();
    assert!(c.tool_names().contains(&"orders_recent".to_owned()));
    let r = c.call(
        "orders_recent",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r), "{r}");
    c.wait_stderr("reload applied added=[\"orders.recent\"]");
}

#[test]
fn edited_file_is_served_in_its_new_version() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    cfg.edit(
        "tools.d/flag.set.yaml",
        "title: Set a feature flag",
        "title: Flip a feature flag",
    );
    c.wait_list_changed();
    assert_eq!(c.listed("flag_set")["title"], "Flip a feature flag");
    c.wait_stderr("changed=[\"flag.set\"]");
}

#[test]
fn broken_file_keeps_the_last_good_version_until_fixed() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    let good = cfg.read("tools.d/flag.set.yaml");
    // Break the flag tool and, in the same burst, add a good new tool.
    cfg.write(
        "tools.d/flag.set.yaml",
        &good.replace("  method: PUT\n", "  method: PUT\n  metod: PUT\n"),
    );
    cfg.write("tools.d/orders.recent.yaml", &second_orders_tool(&cfg));
    c.wait_list_changed();
    c.wait_stderr("flag.set.yaml:33:3: unknown field `metod`");
    // The problem and the decision to keep the last good version are separate lines.
    c.wait_stderr("kept_last_good");
    let names = c.tool_names();
    assert!(
        names.contains(&"flag_set".to_owned()) && names.contains(&"orders_recent".to_owned()),
        "{names:?}"
    );
    // The old version of the broken tool still works.
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 20}),
    );
    assert!(!is_error(&r), "{r}");

    // Fixed: the next reload applies it.
    cfg.write(
        "tools.d/flag.set.yaml",
        &good.replace("title: Set a feature flag", "title: Fixed flag"),
    );
    c.wait_list_changed();
    assert_eq!(c.listed("flag_set")["title"], "Fixed flag");
}

#[test]
fn template_error_in_an_edit_keeps_the_old_version() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    cfg.edit(
        "tools.d/orders.export.yaml",
        "{{ args.from }}",
        "{{ args.form }}",
    );
    c.wait_stderr("unknown variable 'args.form'");
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(
        !is_error(&r),
        "the last good version should still serve: {r}"
    );
}

#[test]
fn deleted_file_removes_its_tool() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    std::fs::remove_file(cfg.path().join("tools.d/flag.set.yaml")).unwrap();
    c.wait_list_changed();
    assert_eq!(c.tool_names(), ["orders_export"]);
    let resp = c.request("tools/call", json!({"name": "flag_set", "arguments": {}}));
    assert_eq!(resp["error"]["code"], -32602, "{resp}");
}

#[test]
fn atomic_rename_save_is_picked_up_and_temp_files_are_ignored() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    // An editor writes a temp file, then renames it over the real one.
    let tmp = cfg.path().join("tools.d/.flag.set.yaml.swp");
    std::fs::write(
        &tmp,
        cfg.read("tools.d/flag.set.yaml")
            .replace("title: Set a feature flag", "title: Renamed in"),
    )
    .unwrap();
    std::fs::rename(&tmp, cfg.path().join("tools.d/flag.set.yaml")).unwrap();
    c.wait_list_changed();
    let list = c.request("tools/list", json!({}));
    assert!(list.to_string().contains("Renamed in"));
    assert!(
        !c.stderr().contains(".swp"),
        "temp file was read: {}",
        c.stderr()
    );
}

#[test]
fn call_in_flight_finishes_across_a_reload() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/slow.yaml",
        "name: slow.echo\ndescription: Answers slowly.\ninput: { type: object, properties: { ms: { type: integer } } }\nrequest: { upstream: orders, method: GET, path: /slow, query: { ms: \"{{ args.ms }}\" } }\n",
    );
    let mut c = serve(&cfg, &api);
    let id = c.send_request(
        "tools/call",
        json!({"name": "slow_echo", "arguments": {"ms": 800}}),
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Remove the slow tool itself while its call is in flight.
    std::fs::remove_file(cfg.path().join("tools.d/slow.yaml")).unwrap();
    c.wait_list_changed();
    let resp = c.wait_for_id(id);
    let result = &resp["result"];
    assert!(!is_error(result), "{resp}");
    assert_eq!(result["structuredContent"]["slept_ms"], 800);
    assert!(!c.tool_names().contains(&"slow_echo".to_owned()));
}

#[test]
fn sighup_reloads_when_watching_is_off() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = StdioClient::start_with(cfg.path(), &[("DEMO_API_URL", &api.url)], &["--no-watch"]);
    cfg.write("tools.d/orders.recent.yaml", &second_orders_tool(&cfg));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !c.tool_names().contains(&"orders_recent".to_owned()),
        "--no-watch must not watch"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    c.wait_list_changed();
    assert!(c.tool_names().contains(&"orders_recent".to_owned()));
}

#[test]
fn broken_policy_file_keeps_the_last_good_policy() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = serve(&cfg, &api);
    cfg.write("policies.yaml", "default: alow\n");
    c.wait_stderr("policies.yaml:1:10");
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 30}),
    );
    assert!(!is_error(&r), "{}", text(&r));
}

/// Issue 15, item 5: one broken tool file at startup stopped the whole server (exit 2),
/// so a host restart after one team's typo lost every tool.
#[test]
fn a_broken_tool_file_at_startup_is_left_out_and_the_others_are_served_until_it_is_fixed() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let good = cfg.read("tools.d/flag.set.yaml");
    cfg.write(
        "tools.d/flag.set.yaml",
        &good.replace("upstream: flags", "upstream: flagz"),
    );
    cfg.write("tools.d/typo.yaml", "name: [unclosed\n");

    // --strict keeps the old refusal, naming every problem.
    let out = std::process::Command::new(crate::util::bin())
        .args(["serve", "--strict", "--config"])
        .arg(cfg.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("flag.set.yaml") && err.contains("typo.yaml"),
        "{err}"
    );

    let mut c = serve(&cfg, &api);
    assert_eq!(c.tool_names(), ["orders_export"]);
    let log = c.wait_stderr("tool files with problems are left out");
    assert!(
        log.contains("tools.d/flag.set.yaml:") && log.contains("unknown upstream 'flagz'"),
        "{log}"
    );
    assert!(log.contains("tools.d/typo.yaml:1:7"), "{log}");
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r), "{r}");

    // Fixed, it is picked up like any new file.
    cfg.write("tools.d/flag.set.yaml", &good);
    c.wait_list_changed();
    assert_eq!(c.tool_names(), ["flag_set", "orders_export"]);
}

#[test]
fn a_broken_policies_yaml_at_startup_still_refuses_to_start() {
    let cfg = ConfigDir::shipped();
    cfg.append("policies.yaml", "\nrules: [oops\n");
    let out = std::process::Command::new(crate::util::bin())
        .args(["serve", "--config"])
        .arg(cfg.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("policies.yaml"), "{err}");
}
