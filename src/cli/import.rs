//! `mcpd import openapi SPEC`: writes one tool file per operation of an OpenAPI 3
//! document into `tools.d/` (see `crate::openapi`), then says what is left to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::openapi;

/// What to import from.
#[derive(Debug, clap::Subcommand)]
pub enum Source {
    /// An OpenAPI 3.0 or 3.1 document (YAML or JSON): one tool per operation.
    Openapi {
        /// The spec file.
        spec: PathBuf,
        /// Only operations with this tag (repeat for several).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Where to write the tool files (default: the config's tools.d/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The upstream (in mcpd.yaml) the tools call (default: from the spec's title).
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        /// Overwrite tool files that already exist.
        #[arg(long)]
        force: bool,
    },
}

/// Runs an import.
///
/// # Errors
/// When the spec cannot be read or imported, or a file exists (without `--force`).
pub(super) fn run(config_dir: &Path, source: &Source) -> anyhow::Result<ExitCode> {
    let Source::Openapi {
        spec,
        tags,
        out,
        upstream,
        force,
    } = source;
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("cannot read the spec '{}'", spec.display()))?;
    let doc = openapi::parse(&text).with_context(|| format!("'{}'", spec.display()))?;
    let upstream = upstream
        .clone()
        .unwrap_or_else(|| openapi::default_upstream(&doc));
    let result = openapi::import(
        &doc,
        &openapi::Options {
            upstream: upstream.clone(),
            tags: tags.clone(),
        },
    )?;
    for note in &result.notes {
        eprintln!("note: {note}");
    }
    if result.tools.is_empty() {
        bail!("no operation to import from '{}'", spec.display());
    }
    let out = out
        .clone()
        .unwrap_or_else(|| config_dir.join(crate::config::TOOLS_DIR));
    let files: Vec<(PathBuf, &openapi::Generated)> = result
        .tools
        .iter()
        .map(|t| (out.join(format!("{}.yaml", t.id)), t))
        .collect();
    let existing: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !existing.is_empty() && !force {
        bail!(
            "these tool files exist already (nothing was written; --force overwrites them): {}",
            existing.join(", ")
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create '{}'", out.display()))?;
    for (path, tool) in &files {
        std::fs::write(path, &tool.yaml)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        outln!("wrote {} ({})", path.display(), tool.operation);
    }
    outln!("{} tools imported for upstream '{upstream}'", files.len());
    let (loaded, _) = crate::config::load_dir(config_dir);
    if !loaded.server.1.upstreams.contains_key(&upstream) {
        let url = result
            .server_url
            .clone()
            .unwrap_or_else(|| "https://api.example.internal".to_owned());
        let var = format!("{}_URL", upstream.to_uppercase().replace('-', "_"));
        outln!(
            "next: declare the upstream in {}/mcpd.yaml and allow its host in policies.yaml 'egress':\n  upstreams:\n    {upstream}:\n      url: \"${{{var}:-{url}}}\"\nthen run: mcpd validate",
            config_dir.display()
        );
    } else {
        outln!(
            "next: mcpd validate, then add a golden and an adversarial case per tool in tests.d/"
        );
    }
    Ok(ExitCode::SUCCESS)
}
