use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::MemoryStore;

/// A copy of the shipped config, served by an engine, with a reloader over it.
struct Served {
    dir: tempfile::TempDir,
    engine: Arc<Engine>,
    reloader: Reloader,
}

fn served(server_extra: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = std::fs::read_to_string(root.join(config::SERVER_FILE)).unwrap();
    std::fs::write(
        dir.path().join(config::SERVER_FILE),
        format!("{server}{server_extra}"),
    )
    .unwrap();
    std::fs::copy(root.join(POLICY_FILE), dir.path().join(POLICY_FILE)).unwrap();
    std::fs::create_dir(dir.path().join(TOOLS_DIR)).unwrap();
    for f in config::tool_paths(&root.join(TOOLS_DIR)).unwrap() {
        std::fs::copy(&f, dir.path().join(TOOLS_DIR).join(f.file_name().unwrap())).unwrap();
    }
    let (loaded, diags) = config::load_dir(dir.path());
    assert!(diags.is_empty(), "{diags}");
    let catalog = Catalog::compile(&loaded, &Vars::default()).unwrap();
    let engine = Arc::new(Engine::new(catalog, Arc::new(MemoryStore::new())));
    let reloader = Reloader::new(dir.path(), Vars::default(), engine.clone(), loaded);
    Served {
        dir,
        engine,
        reloader,
    }
}

impl Served {
    fn edit_policy(&self, from: &str, to: &str) {
        let p = self.dir.path().join(POLICY_FILE);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn rule_ids(&self) -> Vec<String> {
        let c = self.engine.catalog();
        [
            "prod-write-needs-ticket",
            "redact-pii",
            "eu-data-stays-in-eu",
            "no-bulk-exports",
        ]
        .into_iter()
        .filter(|id| c.policy.position(id) != usize::MAX)
        .map(str::to_owned)
        .collect()
    }
}

/// The prod rule of the shipped policies.yaml, as one block of text.
fn prod_rule(text: &str) -> &str {
    let start = text.find("  - id: prod-write-needs-ticket").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    &text[start..end]
}

#[test]
fn a_removed_enforced_rule_is_reported_by_id_as_weakened() {
    let s = served("");
    let text = std::fs::read_to_string(s.dir.path().join(POLICY_FILE)).unwrap();
    s.edit_policy(prod_rule(&text), "");
    let r = s.reloader.reload(Trigger::Files);
    assert!(r.applied && r.policy_applied, "{r:?}");
    assert_eq!(r.rules.removed, ["prod-write-needs-ticket"]);
    assert_eq!(r.rules.weakened.len(), 1, "{r:?}");
    assert_eq!(r.rules.weakened[0].change, "removed");
    assert!(
        r.added.is_empty() && r.changed.is_empty(),
        "no tool changed: {r:?}"
    );
    let metrics = s.engine.metrics().render();
    assert!(
        metrics.contains("mcpd_policy_changes_total{change=\"weakened\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpd_policy_changes_total{change=\"removed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_tool_edit_reports_no_rule_change() {
    let s = served("");
    let p = s.dir.path().join("tools.d/flag.set.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("title: Set a feature flag", "title: Set a flag"),
    )
    .unwrap();
    let r = s.reloader.reload(Trigger::Files);
    assert_eq!(r.changed, ["flag.set"]);
    assert!(!r.policy_applied && r.rules.is_empty(), "{r:?}");
}

#[test]
fn a_pinned_policy_is_held_on_file_changes_and_applied_by_a_deliberate_reload() {
    let s = served("reload: { policy: manual }\n");
    s.edit_policy(
        "    mode: shadow          # measured, not enforced yet\n",
        "",
    );
    let held = s.reloader.reload(Trigger::Files);
    let h = held.held.as_ref().expect("held");
    assert_eq!(h.changes.changed, ["no-bulk-exports"]);
    assert!(!h.reported_before);
    assert!(held.unchanged && !held.policy_applied, "{held:?}");
    // Reported once: the same pending file is not reported again.
    let again = s.reloader.reload(Trigger::Files);
    assert!(again.held.as_ref().unwrap().reported_before);
    assert_eq!(
        s.engine
            .metrics()
            .render()
            .matches("change=\"held\"} 1")
            .count(),
        1
    );
    // A tool edit still applies; the policy stays pinned.
    let p = s.dir.path().join("tools.d/flag.set.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("title: Set a feature flag", "title: Set a flag"),
    )
    .unwrap();
    let tools = s.reloader.reload(Trigger::Files);
    assert!(tools.applied && !tools.policy_applied, "{tools:?}");
    assert_eq!(tools.changed, ["flag.set"]);
    // SIGHUP (or mcpd reload) applies it.
    let applied = s.reloader.reload(Trigger::Signal);
    assert!(applied.policy_applied, "{applied:?}");
    assert_eq!(applied.rules.changed, ["no-bulk-exports"]);
    assert!(applied.held.is_none());
}

#[test]
fn unpinning_in_mcpd_yaml_waits_for_a_deliberate_reload_too() {
    let s = served("reload: { policy: manual }\n");
    let p = s.dir.path().join(config::SERVER_FILE);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("policy: manual", "policy: auto")).unwrap();
    s.edit_policy(
        "reason: exports over 31 days",
        "reason: exports over a month",
    );
    let r = s.reloader.reload(Trigger::Files);
    assert!(r.held_reload_section, "{r:?}");
    assert!(r.held.is_some(), "{r:?}");
    // Still pinned: the next file change is held as well.
    let r = s.reloader.reload(Trigger::Files);
    assert!(r.held.is_some() && !r.policy_applied, "{r:?}");
    let r = s.reloader.reload(Trigger::Command);
    assert!(r.policy_applied && !r.held_reload_section, "{r:?}");
    assert_eq!(
        s.reloader
            .state
            .lock()
            .unwrap()
            .last_good
            .server
            .1
            .reload
            .policy,
        PolicyReload::Auto
    );
}

#[test]
fn a_policy_being_rewritten_is_never_read_half_way() {
    let s = served("");
    let p = s.dir.path().join(POLICY_FILE);
    let text = std::fs::read_to_string(&p).unwrap();
    // What a two-part writer leaves between its writes: the file up to `rules:`. A
    // writer swaps it with the whole file every 5 ms, far inside the settle time.
    let half = text[..text.find("\nrules:").unwrap() + 1].to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, stop, text) = (p.clone(), stop.clone(), text.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&p, if n.is_multiple_of(2) { &half } else { &text }).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The quiet time is far longer than the writer's 5 ms gap, so a loaded machine
    // descheduling the writer between truncating and writing does not pass for a
    // settled (empty) file: that stalled-writer case is docs/operations.md's caveat.
    let settle = Settle {
        quiet: Duration::from_millis(300),
        deadline: Duration::from_millis(900),
    };
    for _ in 0..3 {
        let guard = s.reloader.state.lock().unwrap();
        let (fresh, problems) = s.reloader.read_settled(&guard.last_good, &settle);
        drop(guard);
        let unsettled = problems
            .0
            .iter()
            .any(|d| d.file == p && d.message.contains("still being written"));
        let whole = fresh
            .policy
            .1
            .rules
            .iter()
            .any(|r| r.id.value == "prod-write-needs-ticket");
        assert!(
            unsettled || whole,
            "a half-written policies.yaml was read as good: {problems}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    // Once it is quiet, the whole file is read.
    std::fs::write(&p, &text).unwrap();
    let r = s.reloader.reload(Trigger::Files);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(s.rule_ids().contains(&"prod-write-needs-ticket".to_owned()));
}
