//! `mcpd schema`: the JSON Schema of the config files, generated from the structs that
//! parse them, for editor completion and checking (yaml-language-server, VS Code).
//!
//! Draft-07, because that is the draft yaml-language-server completes best. The schemas
//! are checked in under `schemas/`; a test regenerates them and fails on drift. This
//! module only renders schemas: it must not read or validate config files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;

use crate::config::{PolicySpec, ServerSpec, ToolSpec};

/// Which file's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A tool file in `tools.d/`.
    Tool,
    /// `policies.yaml`.
    Policies,
    /// `mcpd.yaml`.
    Server,
    /// A test case file in `tests.d/`.
    Tests,
    /// A prompt file in `prompts.d/`.
    Prompt,
}

impl Kind {
    /// Every kind, in the order they are written.
    pub const ALL: [Kind; 5] = [
        Kind::Tool,
        Kind::Policies,
        Kind::Server,
        Kind::Tests,
        Kind::Prompt,
    ];

    /// The file name under `schemas/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Tool => "tool.schema.json",
            Kind::Policies => "policies.schema.json",
            Kind::Server => "mcpd.schema.json",
            Kind::Tests => "tests.schema.json",
            Kind::Prompt => "prompt.schema.json",
        }
    }
}

/// The schema of one kind of file, as pretty JSON with a trailing newline.
///
/// # Errors
/// Only if serialisation fails, which a generated schema does not.
pub(super) fn render(kind: Kind) -> anyhow::Result<String> {
    let (schema, title) = match kind {
        Kind::Tool => (generate::<ToolSpec>(), "mcpd tool file (tools.d/*.yaml)"),
        Kind::Policies => (generate::<PolicySpec>(), "mcpd policies.yaml"),
        Kind::Server => (generate::<ServerSpec>(), "mcpd server file (mcpd.yaml)"),
        Kind::Tests => (
            generate::<crate::testrun::CaseFile>(),
            "mcpd test cases (tests.d/*.yaml)",
        ),
        Kind::Prompt => (
            generate::<crate::config::PromptSpec>(),
            "mcpd prompt file (prompts.d/*.yaml)",
        ),
    };
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("title".to_owned(), title.into());
    }
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

fn generate<T: JsonSchema>() -> schemars::Schema {
    SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Prints one schema, or writes the chosen ones (all without `kind`) into `out`.
///
/// # Errors
/// When neither a kind nor `--out` is given, or a file cannot be written.
pub(super) fn run(kind: Option<Kind>, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    match (kind, out) {
        (Some(kind), None) => out!("{}", render(kind)?),
        (None, None) => anyhow::bail!(
            "name the file kind to print (mcpd schema tool | policies | server | tests), or write them all with --out DIR"
        ),
        (kind, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create '{}'", dir.display()))?;
            for k in kind.map_or(Kind::ALL.to_vec(), |k| vec![k]) {
                let path = dir.join(k.file_name());
                std::fs::write(&path, render(k)?)
                    .with_context(|| format!("cannot write '{}'", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
