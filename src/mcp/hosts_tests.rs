use super::*;

/// The warnings for one tool file's text, served as `server`.
fn warnings(tool: &str, server: &str) -> Vec<HostWarning> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools.d")).unwrap();
    std::fs::write(dir.path().join("tools.d/t.yaml"), tool).unwrap();
    let (loaded, _) = crate::config::load_dir(dir.path());
    assert_eq!(loaded.tools.len(), 1, "{tool}");
    check(&loaded, server)
}

fn tool(name: &str, description: &str, input: &str) -> String {
    format!(
        "name: {name}\ndescription: {description}\ninput: {input}\nrequest: {{ upstream: u, method: GET, path: /x }}\n"
    )
}

const PLAIN: &str = "{ type: object, properties: { a: { type: string } } }";

#[test]
fn the_shipped_tools_draw_no_warning() {
    let (loaded, diags) = crate::config::load_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(diags.is_empty(), "{diags}");
    assert_eq!(check(&loaded, "mcpd"), []);
}

#[test]
fn a_name_over_cursors_60_or_claude_codes_64_with_the_prefix_is_named_per_host() {
    // 'mcpd' (4) + 56 = 60: fine for Cursor; mcp__mcpd__ (11) + 56 = 67: over 64.
    let name = "a".repeat(56);
    let w = warnings(&tool(&name, "d", PLAIN), "mcpd");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].hosts, [HostKind::ClaudeCode]);
    assert!(
        w[0].message
            .contains(&format!("'mcp__mcpd__{name}', 67 characters, over its 64")),
        "{}",
        w[0].message
    );
    // 53 + 'mcpd' = 57 and 64 for Claude Code: fine for both.
    assert_eq!(warnings(&tool(&"a".repeat(53), "d", PLAIN), "mcpd"), []);
    // A longer server name pushes it over Cursor's 60 too (dots become underscores).
    let w = warnings(
        &tool(
            "orders.export_all_regions_for_finance_report_v2",
            "d",
            PLAIN,
        ),
        "corp-internal-apis",
    );
    let hosts: Vec<_> = w.iter().flat_map(|w| w.hosts.clone()).collect();
    assert_eq!(hosts, [HostKind::Cursor, HostKind::ClaudeCode], "{w:?}");
    assert!(w[0].to_string().starts_with("warning: tool 'orders.export_all_regions_for_finance_report_v2': Cursor leaves it out: server name 'corp-internal-apis' and tool name 'orders_export_all_regions_for_finance_report_v2' together are 65 characters"), "{}", w[0]);
}

#[test]
fn schemas_the_models_refuse_are_named_with_where() {
    let w = warnings(
        &tool(
            "t",
            "d",
            "{ type: object, anyOf: [{ required: [a] }, { required: [b] }] }",
        ),
        "mcpd",
    );
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].hosts, HostKind::ALL);
    assert!(
        w[0].message
            .contains("'anyOf' at the top level, which the Anthropic API refuses")
    );

    let w = warnings(
        &tool(
            "t",
            "d",
            "{ type: object, properties: { a: { type: [string, 'null'] } } }",
        ),
        "mcpd",
    );
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].hosts, MULTI_MODEL);
    assert!(
        w[0].message
            .contains("type list with null at '/properties/a'"),
        "{}",
        w[0].message
    );

    let defs = "{ type: object, properties: { a: { $ref: '#/$defs/addr' } }, $defs: { addr: { type: string } } }";
    let w = warnings(&tool("t", "d", defs), "mcpd");
    assert_eq!(w[0].hosts, MULTI_MODEL);
    assert!(
        w[0].message
            .contains("'$ref: #/$defs/addr' at '/properties/a'"),
        "{}",
        w[0].message
    );
    let dangling = "{ type: object, properties: { a: { $ref: '#/$defs/nope' } } }";
    let w = warnings(&tool("t", "d", dangling), "mcpd");
    assert_eq!(w[0].hosts, HostKind::ALL);
    assert!(
        w[0].message.contains("does not resolve within the schema"),
        "{}",
        w[0].message
    );
}

#[test]
fn a_description_over_1024_characters_is_named_for_the_multi_model_hosts() {
    let long = "x".repeat(1025);
    let w = warnings(&tool("t", &long, PLAIN), "mcpd");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].hosts, MULTI_MODEL);
    assert!(w[0].message.contains("1025 characters"));
    assert_eq!(warnings(&tool("t", &"x".repeat(1024), PLAIN), "mcpd"), []);
}
