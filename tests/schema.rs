//! `mcpd schema`: the checked-in schemas are what the structs generate, the shipped
//! files validate against them, and a typo'd key is rejected.

use std::process::Command;

use serde_json::Value;

use crate::util::{bin, repo};

const KINDS: [(&str, &str); 5] = [
    ("tool", "tool.schema.json"),
    ("policies", "policies.schema.json"),
    ("server", "mcpd.schema.json"),
    ("tests", "tests.schema.json"),
    ("prompt", "prompt.schema.json"),
];

fn schema(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schemas").join(file)).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["$schema"], "http://json-schema.org/draft-07/schema#");
    jsonschema::validator_for(&value).unwrap()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn checked_in_schemas_equal_freshly_generated_ones() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(bin())
        .args(["schema", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    for (kind, file) in KINDS {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let shipped =
            std::fs::read_to_string(repo().join("schemas").join(file)).unwrap_or_default();
        assert!(
            fresh == shipped,
            "schemas/{file} is out of date: run `mcpd schema --out schemas` and commit it"
        );
        // Printing one kind gives the same text as the file.
        let printed = Command::new(bin()).args(["schema", kind]).output().unwrap();
        assert_eq!(String::from_utf8(printed.stdout).unwrap(), fresh, "{kind}");
    }
}

#[test]
fn shipped_files_validate_and_name_their_schema() {
    let tool = schema("tool.schema.json");
    let mut files = vec![];
    for entry in std::fs::read_dir(repo().join("tools.d")).unwrap() {
        files.push((entry.unwrap().path(), &tool, "../schemas/tool.schema.json"));
    }
    let tests = schema("tests.schema.json");
    for entry in std::fs::read_dir(repo().join("tests.d")).unwrap() {
        files.push((
            entry.unwrap().path(),
            &tests,
            "../schemas/tests.schema.json",
        ));
    }
    let prompt = schema("prompt.schema.json");
    for entry in std::fs::read_dir(repo().join("prompts.d")).unwrap() {
        files.push((
            entry.unwrap().path(),
            &prompt,
            "../schemas/prompt.schema.json",
        ));
    }
    let policies = schema("policies.schema.json");
    let server = schema("mcpd.schema.json");
    files.push((
        repo().join("policies.yaml"),
        &policies,
        "schemas/policies.schema.json",
    ));
    files.push((
        repo().join("mcpd.yaml"),
        &server,
        "schemas/mcpd.schema.json",
    ));
    for (path, validator, reference) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let modeline = format!("# yaml-language-server: $schema={reference}");
        assert!(
            text.lines().next() == Some(modeline.as_str()),
            "{} should start with {modeline}",
            path.display()
        );
        let dir = path.parent().unwrap();
        assert!(
            dir.join(reference).is_file(),
            "{reference} from {}",
            path.display()
        );
        for doc in yaml_docs(&text) {
            let errs = errors(validator, &doc);
            assert!(errs.is_empty(), "{}: {errs:?}", path.display());
        }
    }
}

#[test]
fn a_typo_in_a_key_is_rejected_by_the_schema() {
    let tool = schema("tool.schema.json");
    let text = std::fs::read_to_string(repo().join("tools.d/flag.set.yaml"))
        .unwrap()
        .replace("  method: PUT\n", "  metod: PUT\n");
    let doc = yaml_docs(&text).remove(0);
    let errs = errors(&tool, &doc).join("\n");
    assert!(
        errs.contains("/request") && errs.contains("metod"),
        "{errs}"
    );
    assert!(
        errs.contains("method"),
        "the missing key is named too: {errs}"
    );

    let policies = schema("policies.schema.json");
    let text = std::fs::read_to_string(repo().join("policies.yaml"))
        .unwrap()
        .replace("    effect: route\n", "    efect: route\n");
    let errs = errors(&policies, &yaml_docs(&text).remove(0)).join("\n");
    assert!(errs.contains("efect"), "{errs}");
}

/// `mcpd schema tool | head -c 0`: the reader is gone before mcpd prints. mcpd ends by
/// SIGPIPE as Unix tools do, with nothing on stderr, instead of panicking on the broken
/// pipe (it did: "failed printing to stdout", a backtrace, exit 101).
#[test]
fn a_command_printing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin())
        .args(["schema", "tool"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
