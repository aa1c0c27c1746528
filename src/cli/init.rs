//! `mcpd init [DIR] [--force]`: a starter config directory that passes `mcpd validate`
//! and `mcpd test` as created: `mcpd.yaml` (one upstream, the bundled demo API by
//! default), `policies.yaml`, one tool in `tools.d/`, its cases in `tests.d/`, and the
//! JSON Schemas the files' first lines point editors at.
//!
//! Owns the starter files (the templates beside this file; the schemas are rendered by
//! `schema`, so they match this binary). It must never overwrite a file unless told to
//! (`--force`), and when it refuses it writes nothing at all.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::schema;

/// The starter files, relative to the directory, with what each is for.
const TEMPLATES: [(&str, &str, &str); 4] = [
    (
        "mcpd.yaml",
        include_str!("init/mcpd.yaml"),
        "the upstream API (the bundled demo API unless ORDERS_URL says otherwise)",
    ),
    (
        "policies.yaml",
        include_str!("init/policies.yaml"),
        "egress, redaction and one deny rule",
    ),
    (
        "tools.d/orders.list.yaml",
        include_str!("init/tools.d/orders.list.yaml"),
        "one tool: GET /orders for a date range",
    ),
    (
        "tests.d/orders.yaml",
        include_str!("init/tests.d/orders.yaml"),
        "its golden and adversarial cases (recorded responses: no API needed)",
    ),
];

/// Writes the starter files into `dir` (created if missing).
///
/// # Errors
/// When a starter file already exists and `force` is false (nothing is written then),
/// or a file cannot be written.
pub(super) fn run(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let mut files: Vec<(PathBuf, String)> = TEMPLATES
        .iter()
        .map(|(rel, text, _)| (PathBuf::from(rel), (*text).to_owned()))
        .collect();
    for kind in schema::Kind::ALL {
        files.push((
            Path::new("schemas").join(kind.file_name()),
            schema::render(kind)?,
        ));
    }
    if !force {
        // `symlink_metadata`: a dangling link counts as a file that is there.
        let taken: Vec<String> = files
            .iter()
            .filter(|(rel, _)| dir.join(rel).symlink_metadata().is_ok())
            .map(|(rel, _)| rel.display().to_string())
            .collect();
        if !taken.is_empty() {
            bail!(
                "'{}' already has {}: mcpd init wrote nothing; pass --force to overwrite these files, or give another directory",
                dir.display(),
                taken.join(", ")
            );
        }
    }
    for (rel, text) in &files {
        write(&dir.join(rel), text, force)?;
    }
    let shown = dir.display();
    outln!("created a starter config in {shown}:");
    for (rel, _, what) in TEMPLATES {
        outln!("  {rel:<26} {what}");
    }
    outln!(
        "  {:<26} JSON Schemas the files' first lines point editors at",
        "schemas/"
    );
    outln!("next:");
    outln!("  mcpd validate {shown}");
    outln!("  mcpd test {shown}");
    outln!("  mcpd demo-api --port 8080 &     # the example upstream, for real calls");
    outln!("  mcpd host-config claude --config {shown} --launcher npx --write");
    Ok(ExitCode::SUCCESS)
}

/// Writes one file; without `force` it is created only if nothing is at `path`, so a
/// file that appeared since the check is not overwritten either.
fn write(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create '{}'", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write '{}'", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write '{}'", path.display()))
}
