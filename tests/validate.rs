//! `mcpd validate`: the shipped files pass; broken files are reported with file, line
//! and column, every problem at once, and a non-zero exit.

use crate::util::{ConfigDir, repo, validate};

/// One edit to the shipped config: in FILE, replace FROM with TO.
type Edit = (&'static str, &'static str, &'static str);

const UNKNOWN_KEY: Edit = (
    "tools.d/flag.set.yaml",
    "  method: PUT\n",
    "  method: PUT\n  metod: PUT\n",
);
const UNDECLARED_ARGUMENT: Edit = (
    "tools.d/orders.export.yaml",
    "{{ args.from }}",
    "{{ args.form }}",
);
const UNKNOWN_UPSTREAM: Edit = (
    "tools.d/flag.set.yaml",
    "upstream: flags",
    "upstream: flagz",
);
const INVALID_SCHEMA: Edit = ("tools.d/flag.set.yaml", "type: integer", "type: integr");
const BROKEN_YAML: (&str, &str) = ("tools.d/broken.yaml", "name: x\n  bad: [\n");

/// A copy of the shipped config with `edits` made.
fn shipped_with(edits: &[Edit]) -> ConfigDir {
    let cfg = ConfigDir::shipped();
    for (file, from, to) in edits {
        cfg.edit(file, from, to);
    }
    cfg
}

/// What `mcpd validate` printed on stdout for `cfg`, once it exited 1.
fn problems(cfg: &ConfigDir) -> String {
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    out
}

#[test]
fn shipped_config_is_valid() {
    let (code, out, err) = validate(&repo());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ok: 2 tools"), "{out}");
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let cfg = ConfigDir::shipped();
    cfg.write(BROKEN_YAML.0, BROKEN_YAML.1);
    let out = problems(&cfg);
    assert!(out.contains("tools.d/broken.yaml:2:6: "), "{out}");
}

#[test]
fn unknown_key_is_rejected_with_its_position() {
    let out = problems(&shipped_with(&[UNKNOWN_KEY]));
    assert!(
        out.contains("tools.d/flag.set.yaml:33:3: unknown field `metod`"),
        "{out}"
    );
}

#[test]
fn template_reading_an_undeclared_argument_is_an_error() {
    let out = problems(&shipped_with(&[UNDECLARED_ARGUMENT]));
    assert!(
        out.contains("orders.export.yaml:29:11: tool 'orders.export': request.query.from: unknown variable 'args.form'"),
        "{out}"
    );
    assert!(out.contains("it declares: from, to"), "{out}");
}

#[test]
fn template_syntax_error_is_reported() {
    let out = problems(&shipped_with(&[(
        "tools.d/flag.set.yaml",
        "\"{{ args.percent }}\"",
        "\"{{ args.percent \"",
    )]));
    assert!(
        out.contains("flag.set.yaml:") && out.contains("request.body.percent: template error"),
        "{out}"
    );
}

#[test]
fn duplicate_tool_names_across_files_are_reported_with_both_places() {
    let cfg = ConfigDir::shipped();
    let copy = cfg.read("tools.d/orders.export.yaml");
    cfg.write("tools.d/zz-copy.yaml", &copy);
    let out = problems(&cfg);
    assert!(
        out.contains("name 'orders.export' is already used by tool 'orders.export' at"),
        "{out}"
    );
    assert!(out.contains("tools.d/orders.export.yaml:2:7"), "{out}");
}

#[test]
fn wire_name_collision_is_a_duplicate() {
    let cfg = ConfigDir::shipped();
    let copy = cfg
        .read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders_export");
    cfg.write("tools.d/zz-copy.yaml", &copy);
    let out = problems(&cfg);
    assert!(
        out.contains("name 'orders_export' is already used"),
        "{out}"
    );
}

#[test]
fn unknown_upstream_is_reported() {
    let out = problems(&shipped_with(&[UNKNOWN_UPSTREAM]));
    assert!(
        out.contains("request.upstream: unknown upstream 'flagz'"),
        "{out}"
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let cfg = shipped_with(&[
        UNKNOWN_UPSTREAM,
        (
            "tools.d/orders.export.yaml",
            "{{ args.to }}",
            "{{ args.too }}",
        ),
    ]);
    cfg.write("tools.d/broken.yaml", "name: [\n");
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(err.contains("3 problems found"), "{err}");
}

/// `mcpd validate` on `cfg` as one text to snapshot: exit code, stdout and stderr, with
/// the temp dir's path replaced by `[CONFIG]`.
fn validate_report(cfg: &ConfigDir) -> String {
    let (code, out, err) = validate(cfg.path());
    let dir = cfg.path().to_str().unwrap();
    format!("exit code: {code}\n--- stdout\n{out}--- stderr\n{err}").replace(dir, "[CONFIG]")
}

#[test]
fn every_problem_of_the_tool_files_is_reported_at_once() {
    let cfg = shipped_with(&[
        // flag.set: an invalid input schema and an unknown upstream.
        INVALID_SCHEMA,
        UNKNOWN_UPSTREAM,
        // orders.export: a template reading an undeclared argument, and a bad JSONPath.
        UNDECLARED_ARGUMENT,
        (
            "tools.d/orders.export.yaml",
            "- \"$[*].email\"",
            "- \"$[*].email[\"",
        ),
    ]);
    // A new tool with an unknown key, and a file that is not YAML.
    let recent = cfg
        .read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders.recent")
        .replace("  method: GET\n", "  method: GET\n  metod: GET\n");
    cfg.write("tools.d/orders.recent.yaml", &recent);
    cfg.write(BROKEN_YAML.0, BROKEN_YAML.1);
    insta::assert_snapshot!("tool_file_problems", validate_report(&cfg));
}

#[test]
fn every_problem_of_the_server_and_policy_files_is_reported_at_once() {
    let cfg = shipped_with(&[
        (
            "mcpd.yaml",
            "  max_ttl: 1h\n",
            "  max_ttl: 1h\n  max_tll: 2h\n",
        ),
        (
            "policies.yaml",
            "when: not (request.body.percent is number and",
            "when: not (request.body.percent is number and and",
        ),
        (
            "policies.yaml",
            "when: actor.region == \"eu\"",
            "when: actor.regin == \"eu\"",
        ),
        (
            "policies.yaml",
            "  - localhost\n",
            "  - localhost\n  - example.com:notaport\n",
        ),
        // A tool file problem is reported beside them.
        UNDECLARED_ARGUMENT,
    ]);
    insta::assert_snapshot!("server_and_policy_problems", validate_report(&cfg));
}

#[test]
fn invalid_input_schema_is_reported() {
    let out = problems(&shipped_with(&[INVALID_SCHEMA]));
    assert!(
        out.contains("tool 'flag.set': input: invalid JSON Schema"),
        "{out}"
    );
}

#[test]
fn upstream_host_missing_from_egress_is_reported() {
    let out = problems(&shipped_with(&[("policies.yaml", "  - 127.0.0.1\n", "")]));
    assert!(
        out.contains("egress to host '127.0.0.1' is not allowed"),
        "{out}"
    );
}

#[test]
fn missing_policy_file_is_reported() {
    let cfg = ConfigDir::shipped();
    std::fs::remove_file(cfg.path().join("policies.yaml")).unwrap();
    let out = problems(&cfg);
    assert!(out.contains("policies.yaml is missing"), "{out}");
}

#[test]
fn editor_temp_files_in_tools_d_are_ignored() {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/.flag.set.yaml.swp", "garbage: [");
    cfg.write("tools.d/flag.set.yaml~", "garbage: [");
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 0, "{out}");
}

/// Issue 15, item 9: validate accepted without comment what hosts reject; it warns now,
/// naming the hosts, and still exits 0 (warnings are not errors).
#[test]
fn what_hosts_leave_out_or_refuse_is_a_warning_naming_the_host() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/search.yaml",
        "name: orders.search\ndescription: Search orders.\ninput:\n  type: object\n  anyOf: [{ required: [q] }, { required: [id] }]\n  properties:\n    q: { type: [string, \"null\"] }\n    id: { $ref: \"#/$defs/id\" }\n  $defs: { id: { type: string } }\nrequest: { upstream: orders, method: GET, path: /orders }\n",
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 3, "{out}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("tools.d/search.yaml:4:3: warning: tool 'orders.search': ")),
        "{out}"
    );
    assert!(out.contains("'anyOf' at the top level, which the Anthropic API refuses (Claude Desktop and Claude Code"), "{out}");
    assert!(
        out.contains("type list with null at '/properties/q'")
            && out.contains("Gemini models refuse and VS Code, Cursor and Continue"),
        "{out}"
    );
    assert!(
        out.contains("'$ref: #/$defs/id' at '/properties/id'"),
        "{out}"
    );
    assert!(out.contains("ok: 3 tools"), "{out}");
}

#[test]
fn yaml_mistakes_are_reported_in_yaml_words_with_what_to_write() {
    for (edit, want) in [
        (
            (
                "tools.d/orders.export.yaml",
                "description: >-",
                "description:\nnotes: >-",
            ),
            "orders.export.yaml:4:12: this key has no value: write one after the colon (\"\" for empty text)",
        ),
        (
            ("tools.d/orders.export.yaml", "  method: GET", "  method:"),
            "orders.export.yaml:26:9: this key has no value: write one of GET, POST, PUT, PATCH, DELETE",
        ),
        (
            ("tools.d/orders.export.yaml", "  method: GET\n", ""),
            "missing key `method`: it is required here, add `method: ...`",
        ),
        (
            (
                "tools.d/orders.export.yaml",
                "  concurrency: 8",
                "  concurrency: eight",
            ),
            "orders.export.yaml:57:16: expected a whole number, 0 or more",
        ),
        (
            (
                "tools.d/orders.export.yaml",
                "  timeout: 5s",
                "  timeout: 5s\n  retries: 300",
            ),
            "expected a whole number from 0 to 255",
        ),
        (
            ("tools.d/orders.export.yaml", "cost: 0.002", "cost: cheap"),
            "expected a number (cost units per call), or `{ per_call: 0.01, from_response: \"$.usage.cost\" }`",
        ),
        (
            (
                "tools.d/orders.export.yaml",
                "  readOnlyHint: true",
                "  readOnlyHint: yes please",
            ),
            "expected true or false",
        ),
        (
            (
                "tools.d/orders.export.yaml",
                "  mask:\n    - \"$[*].email\"",
                "  mask: \"$[*].email\"",
            ),
            "expected a list: `- item` lines, or `[a, b]`",
        ),
        (
            (
                "tools.d/orders.export.yaml",
                "title: Export orders",
                "title: Export orders\ntitle: again",
            ),
            "key `title` appears twice in this mapping: keep one",
        ),
        (
            ("mcpd.yaml", "  audience: mcpd-demo", "  audience:"),
            "mcpd.yaml:19:11: this key has no value",
        ),
    ] {
        // Without the temporary directory's name, which is random ("u8" in it once).
        let out = problems_in(&shipped_with(&[edit]));
        assert!(out.contains(want), "{edit:?}: {out}");
        for rust in ["Option<", "u32", "u8", "untagged", "Options", "CostSpec"] {
            assert!(!out.contains(rust), "{edit:?}: {out}");
        }
    }
}

#[test]
fn a_broken_policy_file_is_one_problem_not_every_upstream_refused_by_egress() {
    let cfg = shipped_with(&[("policies.yaml", "    cost: 5.00", "    cost: five")]);
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("policies.yaml:52:11: expected a number"),
        "{out}"
    );
    assert!(err.contains("1 problem found"), "{out}{err}");
}

#[test]
fn a_broken_server_file_is_one_problem_not_every_tool_missing_its_upstream() {
    let cfg = shipped_with(&[(
        "mcpd.yaml",
        "    timeout: 10s\n  flags:",
        "    timeout: 10s\n  flags: [",
    )]);
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(out.contains("mcpd.yaml:"), "{out}");
    assert!(!out.contains("unknown upstream"), "{out}");
    assert!(err.contains("1 problem found"), "{out}{err}");
}

/// The problems `mcpd validate` reports for `cfg`, with the directory's own path taken
/// out so two directories' reports compare.
fn problems_in(cfg: &ConfigDir) -> String {
    problems(cfg).replace(&cfg.path().display().to_string(), "CFG")
}

/// Broken tool files among hundreds of good ones (read, parsed and compiled across the
/// cores, with schemas shared between tools that declare the same one) are reported
/// exactly as among a few: the same problems, lines, columns and order.
#[test]
fn problems_among_hundreds_of_tool_files_are_reported_as_among_a_few() {
    let broken = |cfg: &ConfigDir| {
        let orders = cfg.read("tools.d/orders.export.yaml");
        cfg.write(BROKEN_YAML.0, BROKEN_YAML.1);
        // One broken output schema, declared by two tools: each is reported.
        let bad = orders.replace(
            "amount_cents: { type: integer }",
            "amount_cents: { type: integr }",
        );
        cfg.write(
            "tools.d/bad.yaml",
            &bad.replace("name: orders.export", "name: bad.one"),
        );
        cfg.write(
            "tools.d/bad2.yaml",
            &bad.replace("name: orders.export", "name: bad.two"),
        );
        // A name already taken, and an argument no tool declares.
        cfg.write("tools.d/zz-dup.yaml", &orders);
        let undeclared = orders
            .replace("name: orders.export", "name: typo")
            .replace("{{ args.from }}", "{{ args.form }}");
        cfg.write("tools.d/typo.yaml", &undeclared);
    };
    let few = ConfigDir::shipped();
    broken(&few);
    let many = ConfigDir::shipped();
    broken(&many);
    let orders = many.read("tools.d/orders.export.yaml");
    for i in 0..300 {
        let text = orders.replace("name: orders.export", &format!("name: gen{i:03}"));
        many.write(&format!("tools.d/gen{i:03}.yaml"), &text);
    }
    let expected = problems_in(&few);
    for want in [
        "broken.yaml:2:6",
        "tool 'bad.one': output: invalid JSON Schema",
        "tool 'bad.two': output: invalid JSON Schema",
        "zz-dup.yaml:2:7",
        "name 'orders.export' is already used",
        "tool 'typo': ",
    ] {
        assert!(expected.contains(want), "{want}:\n{expected}");
    }
    assert_eq!(problems_in(&many), expected);
}
