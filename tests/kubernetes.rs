//! The fleet deployment as shipped: `examples/kubernetes` rendered by kustomize and
//! checked for what docs/deploy.md promises (replicas, probes, Secret references, a
//! read-only non-root pod, a PodDisruptionBudget, a durable Redis, a ConfigMap whose
//! every file reaches the config directory and validates); a ConfigMap update, as the
//! kubelet makes it (a new directory, then the `..data` symlink swapped), reloaded by
//! mcpd, which keeps the last good version of a broken file; and the container image's
//! Dockerfile, whose build context and entry point are checked without a container
//! daemon (CI has none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys};
use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, repo, request, run};

/// A directory laid out, and updated, as the kubelet lays out a ConfigMap volume: the
/// files in `..<timestamp>/`, `..data` pointing at it, and each top-level name a
/// symlink through `..data`. An update writes a new timestamped directory, points
/// `..data_tmp` at it, renames that over `..data` (the atomic step), then removes what
/// is gone.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    generation: u32,
    current: Option<PathBuf>,
}

impl ConfigMapVolume {
    fn new(files: &BTreeMap<String, String>) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
            current: None,
        };
        volume.update(files);
        volume
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn update(&mut self, files: &BTreeMap<String, String>) {
        use std::os::unix::fs::symlink;
        let root = self.dir.path().to_path_buf();
        self.generation += 1;
        let name = format!(
            "..2026_11_30_00_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        let ts = root.join(&name);
        for (rel, text) in files {
            let p = ts.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let tmp = root.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        let top: BTreeSet<String> = files
            .keys()
            .map(|k| k.split('/').next().unwrap().to_owned())
            .collect();
        for t in &top {
            let link = root.join(t);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{t}"), &link).unwrap();
            }
        }
        for entry in std::fs::read_dir(&root).unwrap() {
            let entry = entry.unwrap();
            let n = entry.file_name().to_string_lossy().into_owned();
            let link = entry.file_type().unwrap().is_symlink();
            if link && !n.starts_with("..") && !top.contains(&n) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        if let Some(old) = self.current.replace(ts) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

/// The shipped config as ConfigMap files, state in memory.
fn shipped_files() -> BTreeMap<String, String> {
    let cfg = ConfigDir::shipped();
    let mut files = BTreeMap::new();
    for f in [
        "mcpd.yaml",
        "policies.yaml",
        "tools.d/orders.export.yaml",
        "tools.d/flag.set.yaml",
    ] {
        files.insert(f.to_owned(), cfg.read(f));
    }
    files
        .get_mut("mcpd.yaml")
        .unwrap()
        .push_str("\nstate: \"memory:\"\n");
    files
}

#[test]
fn a_configmap_update_swapping_data_reloads_the_new_tools_and_keeps_the_last_good() {
    let api = DemoApi::start();
    let mut files = shipped_files();
    let mut volume = ConfigMapVolume::new(&files);
    let mut c = StdioClient::with_api(volume.path(), &api);
    c.wait_stderr("transport=\"stdio\"");
    assert_eq!(c.tool_names().len(), 2);

    // A new tool file.
    let recent =
        files["tools.d/orders.export.yaml"].replace("name: orders.export", "name: orders.recent");
    files.insert("tools.d/orders.recent.yaml".into(), recent.clone());
    volume.update(&files);
    c.wait_list_changed();
    assert!(c.tool_names().contains(&"orders_recent".to_owned()));
    let r = c.call(
        "orders_recent",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r), "{r}");

    // A broken version of it: the last good one stays, and says why.
    files.insert(
        "tools.d/orders.recent.yaml".into(),
        recent.replace("  method: GET\n", "  method: GET\n  metod: GET\n"),
    );
    volume.update(&files);
    c.wait_stderr("tools.d/orders.recent.yaml\"] trigger=\"file change\"");
    // Broken, not unsettled: it held still, so it was judged at once.
    assert!(
        !c.stderr().contains("still being written"),
        "{}",
        c.stderr()
    );
    let r = c.call(
        "orders_recent",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r), "{r}");

    // Fixed, and another file edited, in a third swap: both apply.
    files.insert("tools.d/orders.recent.yaml".into(), recent);
    let flag = files["tools.d/flag.set.yaml"]
        .replace("title: Set a feature flag", "title: Flip a feature flag");
    files.insert("tools.d/flag.set.yaml".into(), flag);
    volume.update(&files);
    c.wait_list_changed();
    c.wait_stderr("changed=[\"flag.set\"]");
    assert_eq!(c.listed("flag_set")["title"], "Flip a feature flag");
    assert!(c.tool_names().contains(&"orders_recent".to_owned()));
}

/// `kustomize build DIR`, or `kubectl kustomize DIR`; `None` (loudly) with neither.
fn kustomize(dir: &Path) -> Option<String> {
    for (tool, args) in [("kustomize", vec!["build"]), ("kubectl", vec!["kustomize"])] {
        match Command::new(tool).args(&args).arg(dir).output() {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "{tool} {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return Some(String::from_utf8(out.stdout).unwrap());
            }
            Err(_) => continue,
        }
    }
    eprintln!(
        "SKIPPED: neither kustomize nor kubectl is installed (scripts/test installs kubectl)"
    );
    None
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered example"))
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn seconds(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a number of seconds: {v}"))
}

#[test]
fn the_kubernetes_example_renders_with_what_the_docs_promise() {
    let dir = repo().join("examples/kubernetes");
    let Some(rendered) = kustomize(&dir) else {
        return;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["namespace"] == "mcpd" || d["kind"] == "Namespace")
    );

    // Replicas any request may reach, spread, never all down at once.
    let deploy = find(&docs, "Deployment", "mcpd");
    let spec = &deploy["spec"]["template"]["spec"];
    assert!(seconds(&deploy["spec"]["replicas"]) >= 2);
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let pdb = find(&docs, "PodDisruptionBudget", "mcpd");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
    assert!(seconds(&pdb["spec"]["minAvailable"]) >= 1);
    let svc = find(&docs, "Service", "mcpd");
    assert_eq!(&svc["spec"]["selector"], pod_labels);
    assert!(
        svc["spec"].get("sessionAffinity").is_none(),
        "no affinity is needed"
    );

    // The container: the image's entry point, probes, secrets by reference, locked down.
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "ghcr.io/example/mcpd:0.1.0");
    assert_eq!(c["args"], json!(["serve", "--http", "0.0.0.0:8080"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for key in ["MCPD_TOKEN_KEY", "MCPD_AUDIT_KEY"] {
        let r = &env_of(c, key)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "mcpd-secrets", "{key}");
        assert_eq!(r["key"], key);
    }
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"],
        "mcpd-upstream-secrets"
    );
    assert!(
        !rendered.contains("MCPD_TOKEN_KEY=k1:"),
        "no key in the manifests"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);

    // Calls in flight finish: preStop pause + shutdown_grace < the grace period.
    let example = dir.join("config/mcpd.yaml");
    let mcpd_yaml: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let grace: u64 = mcpd_yaml["http"]["shutdown_grace"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let pause = seconds(&c["lifecycle"]["preStop"]["sleep"]["seconds"]);
    assert!(pause + grace < seconds(&spec["terminationGracePeriodSeconds"]));
    let hosts = mcpd_yaml["http"]["allowed_hosts"].as_array().unwrap();
    assert!(
        hosts.contains(&json!("mcpd")) && hosts.contains(&json!("mcpd.mcpd.svc.cluster.local"))
    );

    // State in the example's Redis, durable.
    assert!(
        mcpd_yaml["state"]
            .as_str()
            .unwrap()
            .contains("redis://redis:6379/")
    );
    let redis = find(&docs, "Deployment", "redis");
    let args = redis["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains(r#""--appendonly","yes""#) && args.contains(r#""--appendfsync","always""#),
        "{args}"
    );
    assert_eq!(
        find(&docs, "Service", "redis")["spec"]["ports"][0]["port"],
        6379
    );

    // The ConfigMap, as the pod sees it: every key placed, mcpd.yaml and policies.yaml at
    // the top, tool files under tools.d, mounted read-only where MCPD_CONFIG points.
    let cm = find(&docs, "ConfigMap", "mcpd-config");
    let data = cm["data"].as_object().unwrap();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "mcpd-config");
    let items: BTreeMap<String, String> = volume["configMap"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let keys: BTreeSet<&String> = data.keys().collect();
    assert_eq!(
        keys,
        items.keys().collect(),
        "every ConfigMap key is placed by an item"
    );
    for (key, path) in &items {
        let want = if key == "mcpd.yaml" || key == "policies.yaml" {
            key.clone()
        } else {
            format!("tools.d/{key}")
        };
        assert_eq!(path, &want);
    }
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mount["mountPath"], env_of(c, "MCPD_CONFIG")["value"]);
    let files: BTreeMap<String, String> = items
        .iter()
        .map(|(k, p)| (p.clone(), data[k].as_str().unwrap().to_owned()))
        .collect();
    let pod_view = ConfigMapVolume::new(&files);
    let (code, out, err) = run(Command::new(bin()).arg("validate").arg(pod_view.path()));
    assert_eq!(
        code, 0,
        "the example's config does not validate:\n{out}{err}"
    );
    assert!(out.contains("2 tools"), "{out}");
}

/// Whether `.dockerignore` leaves `rel` out: its literal patterns (`name`, `dir/name`,
/// `**/name`) as `docker build` reads them; patterns with other wildcards are not needed
/// by these checks and never match here.
fn ignored(patterns: &[String], rel: &str) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("**/") {
        Some(name) => rel.split('/').any(|c| c == name),
        None => rel == p || rel.starts_with(&format!("{p}/")),
    })
}

#[test]
fn the_dockerfile_builds_from_what_its_context_keeps_and_runs_read_only_as_non_root() {
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: a build stage and the image");
    assert!(froms[0].ends_with(" AS build"));
    assert!(
        froms[1].contains("distroless") && froms[1].contains("nonroot"),
        "{}",
        froms[1]
    );
    let text = lines.join("\n");
    assert!(text.contains("RUN cargo build --release --locked --bin mcpd"));
    assert!(text.contains("USER 65532:65532"));
    assert!(text.contains("ENV MCPD_CONFIG=/etc/mcpd"));
    assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/mcpd"]"#));
    assert!(text.contains(r#"CMD ["serve", "--http", "0.0.0.0:8080"]"#));

    // What the build stage needs is in the build context: the manifest, the lock file,
    // the build script, the sources, every target Cargo.toml declares, every file the
    // sources include.
    let patterns: Vec<String> = std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "build.rs".to_owned(),
        "src/main.rs".to_owned(),
        "src/lib.rs".to_owned(),
    ];
    let mut section = "";
    for line in manifest.lines() {
        if line.starts_with('[') {
            section = line;
        } else if let Some(v) = line
            .strip_prefix("name = \"")
            .and_then(|v| v.strip_suffix('"'))
        {
            if section == "[[bench]]" {
                needed.push(format!("benches/{v}.rs"));
            }
        } else if let Some(v) = line
            .strip_prefix("path = \"")
            .and_then(|v| v.strip_suffix('"'))
        {
            needed.push(v.to_owned());
        }
    }
    for init in [
        "mcpd.yaml",
        "policies.yaml",
        "tests.d/orders.yaml",
        "tools.d/orders.list.yaml",
    ] {
        needed.push(format!("src/cli/init/{init}"));
    }
    for rel in &needed {
        assert!(root.join(rel).exists(), "{rel} is missing");
        assert!(
            !ignored(&patterns, rel),
            ".dockerignore leaves out {rel}, which the build needs"
        );
    }
    for big in ["target", ".git", "target/debug/mcpd"] {
        assert!(
            ignored(&patterns, big),
            "{big} belongs outside the build context"
        );
    }

    // `--locked` resolves from this context: the lock file is current.
    let ctx = tempfile::tempdir().unwrap();
    for rel in &needed {
        let dest = ctx.path().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), dest).unwrap();
    }
    let (code, _, err) = run(Command::new("cargo")
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(ctx.path()));
    assert_eq!(code, 0, "{err}");

    // The entry point as the image runs it: `serve --http`, config from a read-only
    // directory (the example's), writing nothing there.
    let config = copy_dir(&root.join("examples/kubernetes/config"));
    let cfg = ConfigDir { dir: config };
    let keys = Keys::new(&cfg);
    let before = listing(cfg.path());
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let env = [
        ("MCPD_STATE", "memory:"),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
        ("MCPD_AUDIT_KEY", "audit-key-for-image-tests-0123456789"),
        ("MCPD_AUDIT_LOG", audit.to_str().unwrap()),
    ];
    let server = HttpServer::start(cfg.path(), &env, &[]);
    assert_eq!(
        request(server.authority(), "GET", "/healthz", &[], None).status,
        200
    );
    let ready = request(server.authority(), "GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    drop(server);
    assert_eq!(
        listing(cfg.path()),
        before,
        "mcpd wrote into its config directory"
    );
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.path().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
    to
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The files under `dir`, but the control socket (`.mcpd/run/<pid>.sock`): on a
/// read-only mount mcpd serves without it (a warning; SIGHUP still reloads).
fn listing(dir: &Path) -> Vec<PathBuf> {
    let run = dir.join(".mcpd/run");
    walk(dir)
        .into_iter()
        .filter(|p| !p.starts_with(&run))
        .collect()
}
