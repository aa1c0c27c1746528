//! `mcpd host-config HOST [--write] [--launcher binary|uvx|npx]`: the MCP host's config
//! entry for mcpd on this machine (how to start mcpd: the binary's absolute path, or a
//! one-line `uvx --from mcpd-server==VERSION mcpd` / `npx -y mcpd@VERSION` with this
//! version pinned; the config directory's absolute path; the token variable), printed,
//! or merged into the host's config file keeping every other server.
//!
//! Owns the hosts' file shapes and where they keep them. It must not touch any other
//! key of a host's file, and never writes a token: the token variable is referenced
//! (VS Code prompts for it, Cursor, Claude Code and Continue read it from their
//! environment / secrets), or left empty for the user to fill in (Claude Desktop). The
//! variable is the config's `identity.token_env` (default `MCPD_TOKEN`). It also lists
//! the tools that host would leave out or refuse (`mcp::hosts`); `--strict` refuses then.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indexmap::IndexMap;

use crate::mcp::hosts::HostKind;

/// The MCP hosts mcpd writes config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    /// Claude Desktop (`claude_desktop_config.json`).
    Claude,
    /// VS Code (`.vscode/mcp.json` in the workspace).
    Vscode,
    /// Cursor (`~/.cursor/mcp.json`).
    Cursor,
    /// Claude Code (`.mcp.json` in the project).
    ClaudeCode,
    /// Continue (a block file, `.continue/mcpServers/mcpd.yaml` in the workspace).
    Continue,
}

/// The PyPI distribution holding the binary (pyproject.toml's `name`). Not `mcpd`:
/// that PyPI name belongs to another project, so `uvx mcpd` would run theirs.
pub(crate) const PYPI_PACKAGE: &str = "mcpd-server";

/// How the host starts mcpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// This mcpd binary by its absolute path (or the one --bin names).
    Binary,
    /// `uvx --from mcpd-server==VERSION mcpd`: the PyPI package, run by uv (no Rust
    /// toolchain needed).
    Uvx,
    /// `npx -y mcpd@VERSION`: the npm package, run by npx (no Rust toolchain needed).
    Npx,
}

impl Launcher {
    /// The command and the arguments before `serve`, with this version pinned, so the
    /// host keeps running the mcpd this entry was written by until it is rewritten.
    /// On Windows `npx` is a batch file (`npx.cmd`) that hosts cannot start directly,
    /// so it goes through `cmd /c`.
    fn command(self, bin: &str, windows: bool) -> (String, Vec<String>) {
        let version = env!("CARGO_PKG_VERSION");
        let pinned = format!("mcpd@{version}");
        match self {
            Launcher::Binary => (bin.to_owned(), Vec::new()),
            Launcher::Uvx => (
                "uvx".to_owned(),
                vec![
                    "--from".to_owned(),
                    format!("{PYPI_PACKAGE}=={version}"),
                    "mcpd".to_owned(),
                ],
            ),
            Launcher::Npx if windows => (
                "cmd".to_owned(),
                ["/c", "npx", "-y", &pinned].map(str::to_owned).to_vec(),
            ),
            Launcher::Npx => ("npx".to_owned(), vec!["-y".to_owned(), pinned]),
        }
    }
}

/// What goes into the entry.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The host to configure.
    #[arg(value_enum)]
    pub host: Host,
    /// Merge the entry into the host's config file instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// The host's config file to merge into (default: where the host keeps it).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The server's name in the host's config.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// How the host starts mcpd: the binary's absolute path, or the published package
    /// through uvx (PyPI) or npx (npm), pinned to this version.
    #[arg(long, value_enum, default_value = "binary")]
    pub launcher: Launcher,
    /// The mcpd binary the host starts (default: this one); only with --launcher binary.
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Extra environment for mcpd, e.g. --env ORDERS_URL=https://orders.internal (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Refuse (exit 1, nothing printed or written) when the host would leave out or
    /// refuse any tool.
    #[arg(long)]
    pub strict: bool,
}

/// The server's name in a host's config unless `--name` says otherwise.
pub(super) const DEFAULT_NAME: &str = "mcpd";

impl Host {
    /// The host as `mcp::hosts` knows its limits.
    fn kind(self) -> HostKind {
        match self {
            Self::Claude => HostKind::ClaudeDesktop,
            Self::Vscode => HostKind::VsCode,
            Self::Cursor => HostKind::Cursor,
            Self::ClaudeCode => HostKind::ClaudeCode,
            Self::Continue => HostKind::Continue,
        }
    }
}

/// Prints the entry, or merges it into the host's file.
///
/// # Errors
/// When a path cannot be resolved, an `--env` is malformed, or the host's file exists
/// but is not valid JSON / YAML.
pub(super) fn run(config_dir: &Path, opts: &Options) -> anyhow::Result<ExitCode> {
    let bin = match (&opts.bin, opts.launcher) {
        (Some(_), Launcher::Uvx | Launcher::Npx) => bail!(
            "--bin names a binary, but --launcher starts the published package instead: drop one of them"
        ),
        (Some(b), Launcher::Binary) => absolute(b)?,
        (None, Launcher::Binary) => {
            absolute(&std::env::current_exe().context("cannot tell where this mcpd binary is")?)?
        }
        (None, Launcher::Uvx | Launcher::Npx) => String::new(),
    };
    let (command, launch_args) = opts.launcher.command(&bin, cfg!(windows));
    // The variable the config's `identity.token_env` names (default MCPD_TOKEN).
    let (loaded, _) = crate::config::load_dir(config_dir);
    let token_env = loaded
        .server
        .1
        .identity
        .clone()
        .and_then(|i| i.token_env)
        .unwrap_or_else(|| crate::identity::DEFAULT_TOKEN_ENV.to_owned());
    let entry = Entry {
        name: opts.name.clone(),
        command,
        launch_args,
        config: absolute(config_dir)?,
        env: parse_env(&opts.env)?,
        token_env,
    };
    report_tools(config_dir);
    match opts.launcher {
        Launcher::Binary => {}
        Launcher::Uvx => eprintln!(
            "the host will run `uvx {}`: uv must be on the PATH the host starts servers with (docs/install.md)",
            entry.launch_args.join(" ")
        ),
        Launcher::Npx => eprintln!(
            "the host will run `{} {}`: Node.js 18 or newer must be on the PATH the host starts servers with (docs/install.md)",
            entry.command,
            entry.launch_args.join(" ")
        ),
    }
    if !report_left_out(opts.host.kind(), &loaded, &opts.name, opts.strict) {
        return Ok(ExitCode::FAILURE);
    }
    if !opts.write {
        out!("{}", render(opts.host, &entry, None)?);
        return Ok(ExitCode::SUCCESS);
    }
    let file = match &opts.file {
        Some(f) => f.clone(),
        None => default_file(opts.host, &opts.name)?,
    };
    let existing = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read '{}'", file.display())),
    };
    let merged = render(opts.host, &entry, existing.as_deref())
        .with_context(|| format!("cannot merge into '{}'", file.display()))?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create '{}'", parent.display()))?;
    }
    if let Some(old) = &existing {
        let backup = file.with_extension("bak");
        std::fs::write(&backup, old)
            .with_context(|| format!("cannot write the backup '{}'", backup.display()))?;
    }
    std::fs::write(&file, merged).with_context(|| format!("cannot write '{}'", file.display()))?;
    eprintln!(
        "wrote server '{}' into {}{}; restart the host (or reload its MCP servers) to pick it up",
        opts.name,
        file.display(),
        if existing.is_some() {
            " (previous version kept as .bak)"
        } else {
            ""
        }
    );
    if opts.host == Host::Claude {
        eprintln!(
            "Claude Desktop does not expand variables: put a token (mcpd token issue) into env.{} in that file; empty runs as default_actor",
            entry.token_env
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One server entry, host-neutral.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The server's name.
    pub name: String,
    /// What the host runs: the mcpd binary's absolute path, `uvx` or `npx`.
    pub command: String,
    /// The launcher's arguments before `serve` (`mcpd@0.1.0` for uvx).
    pub launch_args: Vec<String>,
    /// Absolute path of the config directory.
    pub config: String,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The variable mcpd reads a stdio caller's token from.
    pub token_env: String,
}

/// A JSON / YAML value that keeps its keys in the order they were written, so merging
/// into a user's file does not reorder it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(IndexMap<String, Ordered>),
}

impl Ordered {
    fn str(s: &str) -> Self {
        Self::String(s.to_owned())
    }

    fn object<const N: usize>(pairs: [(&str, Ordered); N]) -> Self {
        Self::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

/// The host's config text with the entry, merged into `existing` when given.
///
/// # Errors
/// When `existing` does not parse, or its servers key is not an object / list.
pub(super) fn render(host: Host, entry: &Entry, existing: Option<&str>) -> anyhow::Result<String> {
    let mut env: IndexMap<String, Ordered> = entry
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Ordered::str(v)))
        .collect();
    let token = match host {
        Host::Claude => String::new(),
        Host::Vscode => "${input:mcpd-token}".to_owned(),
        Host::Cursor => format!("${{env:{}}}", entry.token_env),
        Host::ClaudeCode => format!("${{{}}}", entry.token_env),
        Host::Continue => format!("${{{{ secrets.{} }}}}", entry.token_env),
    };
    env.insert(entry.token_env.clone(), Ordered::String(token));
    let args = Ordered::Array(
        entry
            .launch_args
            .iter()
            .map(String::as_str)
            .chain(["serve", "--config", entry.config.as_str()])
            .map(Ordered::str)
            .collect(),
    );
    let command = Ordered::str(&entry.command);
    let env = Ordered::Object(env);
    if host == Host::Continue {
        let server = Ordered::object([
            ("name", Ordered::str(&entry.name)),
            ("type", Ordered::str("stdio")),
            ("command", command),
            ("args", args),
            ("env", env),
        ]);
        return continue_block(&entry.name, server, existing);
    }
    let mut root: IndexMap<String, Ordered> = match existing {
        Some(text) if !text.trim().is_empty() => serde_json::from_str(text).context(
            "it is not a plain JSON object (comments and trailing commas are not supported): add the printed entry by hand",
        )?,
        _ => IndexMap::new(),
    };
    let (key, server) = match host {
        Host::Vscode | Host::ClaudeCode => (
            if host == Host::Vscode {
                "servers"
            } else {
                "mcpServers"
            },
            Ordered::object([
                ("type", Ordered::str("stdio")),
                ("command", command),
                ("args", args),
                ("env", env),
            ]),
        ),
        _ => (
            "mcpServers",
            Ordered::object([("command", command), ("args", args), ("env", env)]),
        ),
    };
    if host == Host::Vscode {
        let inputs = root
            .entry("inputs".to_owned())
            .or_insert_with(|| Ordered::Array(Vec::new()));
        let Ordered::Array(inputs) = inputs else {
            bail!("'inputs' is not a JSON array");
        };
        let id = Ordered::str("mcpd-token");
        if !inputs
            .iter()
            .any(|i| matches!(i, Ordered::Object(o) if o.get("id") == Some(&id)))
        {
            inputs.push(Ordered::object([
                ("type", Ordered::str("promptString")),
                ("id", id),
                (
                    "description",
                    Ordered::str(
                        "mcpd token (mcpd token issue); leave empty to run as default_actor",
                    ),
                ),
                ("password", Ordered::Bool(true)),
            ]));
        }
    }
    let servers = root
        .entry(key.to_owned())
        .or_insert_with(|| Ordered::Object(IndexMap::new()));
    let Ordered::Object(servers) = servers else {
        bail!("'{key}' is not a JSON object");
    };
    servers.insert(entry.name.clone(), server);
    let mut text = serde_json::to_string_pretty(&root)?;
    text.push('\n');
    Ok(text)
}

/// Continue's block file: `mcpServers` is a list of entries with a `name`.
fn continue_block(name: &str, server: Ordered, existing: Option<&str>) -> anyhow::Result<String> {
    let mut root: IndexMap<String, Ordered> = match existing {
        Some(text) if !text.trim().is_empty() => {
            serde_saphyr::from_str(text).context("it is not a YAML mapping")?
        }
        _ => [
            ("name", Ordered::str(name)),
            ("version", Ordered::str("0.0.1")),
            ("schema", Ordered::str("v1")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };
    let servers = root
        .entry("mcpServers".to_owned())
        .or_insert_with(|| Ordered::Array(Vec::new()));
    let Ordered::Array(servers) = servers else {
        bail!("'mcpServers' is not a YAML list");
    };
    let named = Ordered::str(name);
    match servers
        .iter_mut()
        .find(|s| matches!(s, Ordered::Object(o) if o.get("name") == Some(&named)))
    {
        Some(old) => *old = server,
        None => servers.push(server),
    }
    serde_saphyr::to_string(&root).context("cannot render YAML")
}

/// Where the host keeps its config, on this machine.
fn default_file(host: Host, name: &str) -> anyhow::Result<PathBuf> {
    let home = || {
        std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .map(PathBuf::from)
            .context("HOME is not set: give the file with --file")
    };
    Ok(match host {
        Host::Claude => {
            if cfg!(target_os = "macos") {
                home()?.join("Library/Application Support/Claude/claude_desktop_config.json")
            } else if cfg!(windows) {
                PathBuf::from(std::env::var_os("APPDATA").context("APPDATA is not set")?)
                    .join("Claude/claude_desktop_config.json")
            } else {
                std::env::var_os("XDG_CONFIG_HOME")
                    .map_or_else(
                        || home().map(|h| h.join(".config")),
                        |x| Ok(PathBuf::from(x)),
                    )?
                    .join("Claude/claude_desktop_config.json")
            }
        }
        Host::Vscode => PathBuf::from(".vscode/mcp.json"),
        Host::Cursor => home()?.join(".cursor/mcp.json"),
        Host::ClaudeCode => PathBuf::from(".mcp.json"),
        Host::Continue => PathBuf::from(format!(".continue/mcpServers/{name}.yaml")),
    })
}

/// An absolute path without touching the file system (the path may not exist yet);
/// a host variable such as `${workspaceFolder}` is kept as written.
fn absolute(p: &Path) -> anyhow::Result<String> {
    let s = p.to_string_lossy();
    if s.starts_with("${") {
        return Ok(s.into_owned());
    }
    let abs = std::path::absolute(p)
        .with_context(|| format!("cannot make '{}' absolute", p.display()))?;
    // `a/./b` and a trailing `.` read badly in a host's settings UI.
    let clean: PathBuf = abs
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    Ok(clean.to_string_lossy().into_owned())
}

fn parse_env(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => {
                bail!("--env '{p}': write KEY=VALUE, e.g. --env ORDERS_URL=https://orders.internal")
            }
        })
        .collect()
}

/// Lists on stderr the tools `host` would leave out or refuse; returns false when
/// `strict` and there is one (the caller then refuses).
fn report_left_out(
    host: HostKind,
    loaded: &crate::config::Loaded,
    server: &str,
    strict: bool,
) -> bool {
    let found: Vec<_> = crate::mcp::hosts::check(loaded, server)
        .into_iter()
        .filter(|w| w.applies_to(host))
        .collect();
    if found.is_empty() {
        return true;
    }
    let mut tools: Vec<&str> = found.iter().map(|w| w.tool.as_str()).collect();
    tools.dedup();
    eprintln!(
        "warning: {} will leave out or refuse {} tool(s): {}",
        host.name(),
        tools.len(),
        tools.join(", ")
    );
    for w in &found {
        eprintln!("  {}", w.diagnostic());
    }
    if strict {
        eprintln!(
            "error: --strict: not configuring {} while it would leave out or refuse a tool",
            host.name()
        );
    }
    !strict
}

/// Tells on stderr which tools the host will see (by wire name), or that the config
/// does not load yet, so a wrong directory shows up before the host is restarted.
fn report_tools(dir: &Path) {
    match super::check(dir, &crate::config::Vars::from_env()) {
        Ok((_, catalog)) => {
            let names: Vec<&str> = (catalog.tools.iter())
                .filter(|t| t.is_tool())
                .map(|t| t.wire.as_str())
                .collect();
            eprintln!(
                "the host will see {} tool(s) from {}: {}",
                names.len(),
                dir.display(),
                names.join(", ")
            );
            let prompts: Vec<&str> = catalog.prompts.iter().map(|p| p.wire.as_str()).collect();
            if !prompts.is_empty() {
                eprintln!(
                    "and {} prompt(s) from prompts.d: {}",
                    prompts.len(),
                    prompts.join(", ")
                );
            }
            let resources: Vec<&str> = catalog.resources().map(|(_, r)| r.uri.as_str()).collect();
            if !resources.is_empty() {
                eprintln!(
                    "and {} resource(s): {}",
                    resources.len(),
                    resources.join(", ")
                );
            }
        }
        Err(_) => eprintln!(
            "warning: the config in '{}' does not load; run 'mcpd validate {}' before starting the host",
            dir.display(),
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Launcher;

    #[test]
    fn launchers_pin_this_version_and_npx_goes_through_cmd_on_windows() {
        let v = format!("mcpd@{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(
            Launcher::Binary.command("/opt/mcpd", false),
            ("/opt/mcpd".to_owned(), vec![])
        );
        assert_eq!(
            Launcher::Uvx.command("", true),
            (
                "uvx".to_owned(),
                vec![
                    "--from".to_owned(),
                    format!("mcpd-server=={}", env!("CARGO_PKG_VERSION")),
                    "mcpd".to_owned()
                ]
            )
        );
        assert_eq!(
            Launcher::Npx.command("", false),
            ("npx".to_owned(), vec!["-y".to_owned(), v.clone()])
        );
        assert_eq!(
            Launcher::Npx.command("", true),
            (
                "cmd".to_owned(),
                vec!["/c".to_owned(), "npx".to_owned(), "-y".to_owned(), v]
            )
        );
    }
}
