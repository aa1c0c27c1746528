//! The file model: what the user wrote in `mcpd.yaml`, `tools.d/` and `policies.yaml`.
//!
//! This module reads and parses files and reports every problem as a [`Diagnostic`]
//! with its line and column. It never compiles templates or talks to the network: that
//! is the catalog's job, so the call path never parses.

pub mod diag;
pub mod expand;
pub mod policy;
pub mod prompt;
pub mod server;
pub mod settle;
pub mod tool;
pub mod yaml;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::config::diag::{Diagnostic, Diagnostics, Pos};

pub use expand::{ExpandError, Vars, expand_env};
pub use policy::PolicySpec;
pub use prompt::PromptSpec;
pub use server::ServerSpec;
pub use settle::Settle;
pub use tool::ToolSpec;

/// The name of the server file in a config directory.
pub const SERVER_FILE: &str = "mcpd.yaml";
/// The name of the policy file in a config directory.
pub const POLICY_FILE: &str = "policies.yaml";
/// The directory of tool files in a config directory.
pub const TOOLS_DIR: &str = "tools.d";
/// The directory of prompt files in a config directory (optional).
pub const PROMPTS_DIR: &str = "prompts.d";

/// A value with the place it was written, so later checks can point at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// Where it was written (line and column, 1-based; 0 when unknown).
    pub pos: Pos,
}

impl<T> Located<T> {
    /// A value with no known position (built in code, not read from a file).
    pub fn unplaced(value: T) -> Self {
        Self {
            value,
            pos: Pos::default(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Self {
            value: spanned.value,
            pos: Pos::new(spanned.referenced.line(), spanned.referenced.column()),
        })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// One tool file, parsed.
#[derive(Debug, Clone)]
pub struct ToolFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The tools it declares (a file may hold several YAML documents).
    pub tools: Vec<ToolSpec>,
    /// A hash of the file's text: equal fingerprints mean an unchanged file.
    pub fingerprint: u64,
}

/// One prompt file, parsed.
#[derive(Debug, Clone)]
pub struct PromptFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The prompts it declares (a file may hold several YAML documents).
    pub prompts: Vec<PromptSpec>,
    /// A hash of the file's text: equal fingerprints mean an unchanged file.
    pub fingerprint: u64,
}

/// Everything read from one config directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config directory.
    pub root: PathBuf,
    /// `mcpd.yaml`, with its path.
    pub server: (PathBuf, ServerSpec),
    /// `policies.yaml`, with its path.
    pub policy: (PathBuf, PolicySpec),
    /// Every tool file in `tools.d`, sorted by name.
    pub tools: Vec<ToolFile>,
    /// Every prompt file in `prompts.d` (none when it does not exist), sorted by name.
    pub prompts: Vec<PromptFile>,
    /// Fingerprints of the text of `mcpd.yaml` and `policies.yaml` (0 when unread).
    pub fingerprints: (u64, u64),
}

/// Parses one YAML document into `T`, turning a parse error into a diagnostic.
fn parse_one<T: for<'de> Deserialize<'de>>(path: &Path, src: &str) -> Result<T, Diagnostic> {
    serde_saphyr::from_str::<T>(src).map_err(|e| yaml_diagnostic(path, &e))
}

/// Parses a file of one or more YAML documents into `T`s.
fn parse_many<T: for<'de> Deserialize<'de>>(path: &Path, src: &str) -> Result<Vec<T>, Diagnostic> {
    serde_saphyr::from_multiple::<T>(src).map_err(|e| yaml_diagnostic(path, &e))
}

fn yaml_diagnostic(path: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let pos = e
        .location()
        .map(|l| Pos::new(l.line(), l.column()))
        .unwrap_or_default();
    Diagnostic::new(path, pos, yaml::message(e))
}

/// Reads a config file once it has settled (see [`settle`]); a problem is a diagnostic.
fn read(path: &Path, settle: &Settle, diags: &mut Diagnostics) -> Option<String> {
    match settle::read(path, settle) {
        Ok((s, _)) => Some(s),
        Err(e) => {
            diags.push(Diagnostic::new(path, Pos::default(), e.to_string()));
            None
        }
    }
}

/// A hash of a file's text: equal fingerprints mean an unchanged file.
pub fn fingerprint(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// True for files in `tools.d` that are tool files: `*.yaml` / `*.yml`, not hidden and
/// not an editor's temporary or backup file.
pub fn is_tool_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    yaml && !name.starts_with('.') && !name.starts_with('#') && !name.ends_with('~')
}

/// Parses one tool file.
///
/// # Errors
/// The file's diagnostic when it cannot be read or parsed.
pub fn load_tool_file(path: &Path) -> Result<ToolFile, Diagnostics> {
    load_tool_file_with(path, None, &Settle::IMMEDIATE)
}

/// As [`load_tool_file`], but a file whose text is unchanged since `previous` was read
/// is not parsed again: its earlier result is reused. The file is read as `settle` says.
///
/// # Errors
/// The file's diagnostic when it cannot be read or parsed.
pub fn load_tool_file_with(
    path: &Path,
    previous: Option<&Loaded>,
    settle: &Settle,
) -> Result<ToolFile, Diagnostics> {
    let mut diags = Diagnostics::default();
    let Some(src) = read(path, settle, &mut diags) else {
        return Err(diags);
    };
    let fp = fingerprint(&src);
    if let Some(old) = previous.and_then(|p| {
        p.tools
            .iter()
            .find(|f| f.path == path && f.fingerprint == fp)
    }) {
        return Ok(old.clone());
    }
    parse_tool_file(path, &src, fp, diags)
}

/// Parses the text of one tool file (`fp` its fingerprint).
fn parse_tool_file(
    path: &Path,
    src: &str,
    fp: u64,
    mut diags: Diagnostics,
) -> Result<ToolFile, Diagnostics> {
    match parse_many::<ToolSpec>(path, src) {
        Ok(tools) if tools.is_empty() => {
            diags.push(Diagnostic::new(
                path,
                Pos::new(1, 1),
                "file declares no tool",
            ));
            Err(diags)
        }
        Ok(tools) => Ok(ToolFile {
            path: path.to_path_buf(),
            tools,
            fingerprint: fp,
        }),
        Err(d) => {
            diags.push(d);
            Err(diags)
        }
    }
}

/// Reads a whole config directory: `mcpd.yaml`, `policies.yaml` and every tool file.
///
/// Returns what parsed (a missing or broken `mcpd.yaml` / `policies.yaml` reads as the
/// secure default: no upstreams, deny everything) and every problem found, so callers
/// can go on to report compile problems in the files that did parse. Each file is read
/// at once, and again if it changed while it was read.
pub fn load_dir(root: &Path) -> (Loaded, Diagnostics) {
    load_dir_with(root, &Vars::from_env(), None, &Settle::IMMEDIATE)
}

/// Reads `mcpd.yaml` alone, with `${VAR}` read from `vars`: what a command needs before
/// it loads the rest (its telemetry settings). A missing or broken file reads as the
/// default; the full load reports its problems.
pub fn load_server(root: &Path, vars: &Vars) -> ServerSpec {
    let mut diags = Diagnostics::default();
    let path = root.join(SERVER_FILE);
    let (mut server, _) = load_required::<ServerSpec>(&path, "", &Settle::IMMEDIATE, &mut diags);
    if let Some(spec) = &mut server {
        expand::expand_server(&path, spec, vars, &mut diags);
    }
    server.unwrap_or_default()
}

/// As [`load_dir`], with `${VAR}` read from `vars`, reusing the parse of every tool file
/// unchanged since `previous`, and reading each file only once it has settled as
/// `settle` says: a file still being written is a problem (its diagnostic says so),
/// never a parse of half a file.
pub fn load_dir_with(
    root: &Path,
    vars: &Vars,
    previous: Option<&Loaded>,
    settle: &Settle,
) -> (Loaded, Diagnostics) {
    let mut diags = Diagnostics::default();

    let server_path = root.join(SERVER_FILE);
    let (mut server, server_fp) = load_required::<ServerSpec>(
        &server_path,
        "it declares the upstream APIs tools call",
        settle,
        &mut diags,
    );
    if let Some(spec) = &mut server {
        expand::expand_server(&server_path, spec, vars, &mut diags);
    }
    let policy_path = root.join(POLICY_FILE);
    let (mut policy, policy_fp) = load_required::<PolicySpec>(
        &policy_path,
        "create one with at least 'default: allow' and an 'egress' list",
        settle,
        &mut diags,
    );
    if let Some(spec) = &mut policy {
        expand::expand_policy(&policy_path, spec, vars, &mut diags);
    }

    let tools_dir = root.join(TOOLS_DIR);
    let mut tools = Vec::new();
    match tool_paths(&tools_dir) {
        Ok(paths) => {
            for file in load_tool_files(&paths, previous, settle) {
                match file {
                    Ok(f) => tools.push(f),
                    Err(d) => diags.extend(d),
                }
            }
        }
        Err(e) => diags.push(Diagnostic::new(
            &tools_dir,
            Pos::default(),
            format!("cannot list tool files: {e}"),
        )),
    }
    let prompts = load_prompts(&root.join(PROMPTS_DIR), settle, &mut diags);
    let loaded = Loaded {
        root: root.to_path_buf(),
        server: (server_path, server.unwrap_or_default()),
        policy: (policy_path, policy.unwrap_or_default()),
        tools,
        prompts,
        fingerprints: (server_fp, policy_fp),
    };
    (loaded, diags)
}

/// Reads and parses `paths` (as [`load_tool_file_with`] each), split across the cores:
/// a directory of a thousand tool files is read at start in a fraction of the time. A
/// file unchanged since `previous` is found by its path, not by a scan of every file.
fn load_tool_files(
    paths: &[PathBuf],
    previous: Option<&Loaded>,
    settle: &Settle,
) -> Vec<Result<ToolFile, Diagnostics>> {
    let before: std::collections::HashMap<&Path, &ToolFile> = previous
        .map(|p| p.tools.iter().map(|f| (f.path.as_path(), f)).collect())
        .unwrap_or_default();
    let schemas = tool::SchemaPool::default();
    crate::util::par::map(paths, |path| {
        let mut diags = Diagnostics::default();
        let Some(src) = read(path, settle, &mut diags) else {
            return Err(diags);
        };
        let fp = fingerprint(&src);
        match before.get(path.as_path()) {
            Some(old) if old.fingerprint == fp => Ok((*old).clone()),
            _ => parse_tool_file(path, &src, fp, diags).map(|mut file| {
                file.tools.iter_mut().for_each(|t| schemas.share_all(t));
                file
            }),
        }
    })
}

/// Every prompt file of `dir` (`prompts.d`), parsed; a directory that does not exist
/// holds no prompts.
fn load_prompts(dir: &Path, settle: &Settle, diags: &mut Diagnostics) -> Vec<PromptFile> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let paths = match tool_paths(dir) {
        Ok(paths) => paths,
        Err(e) => {
            diags.push(Diagnostic::new(
                dir,
                Pos::default(),
                format!("cannot list prompt files: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for path in paths {
        let Some(src) = read(&path, settle, diags) else {
            continue;
        };
        match parse_many::<PromptSpec>(&path, &src) {
            Ok(prompts) if prompts.is_empty() => {
                diags.push(Diagnostic::new(
                    &path,
                    Pos::new(1, 1),
                    "file declares no prompt",
                ));
            }
            Ok(prompts) => out.push(PromptFile {
                fingerprint: fingerprint(&src),
                path,
                prompts,
            }),
            Err(d) => diags.push(d),
        }
    }
    out
}

/// Reads a policy file on its own (a candidate for `policies.yaml`), expanding `${VAR}`
/// as in a config directory.
///
/// # Errors
/// Every problem reading, parsing or expanding it.
pub fn load_policy_file(path: &Path, vars: &Vars) -> Result<PolicySpec, Diagnostics> {
    let mut diags = Diagnostics::default();
    let (spec, _) = load_required::<PolicySpec>(
        path,
        "name an existing policy file",
        &Settle::IMMEDIATE,
        &mut diags,
    );
    match spec {
        Some(mut spec) if diags.is_empty() => {
            expand::expand_policy(path, &mut spec, vars, &mut diags);
            if diags.is_empty() {
                Ok(spec)
            } else {
                Err(diags)
            }
        }
        _ => Err(diags),
    }
}

fn load_required<T: for<'de> Deserialize<'de>>(
    path: &Path,
    why: &str,
    settle: &Settle,
    diags: &mut Diagnostics,
) -> (Option<T>, u64) {
    if !path.exists() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        diags.push(Diagnostic::new(
            path,
            Pos::default(),
            format!("{name} is missing: {why}"),
        ));
        return (None, 0);
    }
    let Some(src) = read(path, settle, diags) else {
        return (None, 0);
    };
    let parsed = parse_one::<T>(path, &src).map_err(|d| diags.push(d)).ok();
    (parsed, fingerprint(&src))
}

/// The tool files of a `tools.d` directory, sorted by name.
///
/// # Errors
/// When the directory cannot be read.
pub fn tool_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_tool_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_temp_files_are_not_tool_files() {
        assert!(is_tool_file(Path::new("tools.d/a.yaml")));
        assert!(is_tool_file(Path::new("tools.d/a.yml")));
        for p in [
            ".a.yaml.swp",
            "a.yaml~",
            ".#a.yaml",
            "a.yaml.tmp",
            "#a.yaml#",
        ] {
            assert!(!is_tool_file(Path::new(p)), "{p}");
        }
    }
}
