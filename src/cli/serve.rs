//! `mcpd serve`: MCP over stdio, or Streamable HTTP with `--http`, with hot reload of the
//! config directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::catalog::Catalog;
use crate::config::diag::Diagnostics;
use crate::config::server::HttpSpec;
use crate::config::{self, Loaded, Vars};
use crate::engine::Engine;
use crate::mcp::McpServer;
use crate::mcp::http::HttpOptions;
use crate::reload::{self, Reloader};

/// The `--http` flags; they add to (or override) `mcpd.yaml`'s `http:` section.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpFlags {
    /// Serve MCP over Streamable HTTP at http://ADDR/mcp instead of stdio, e.g.
    /// 127.0.0.1:8787 (port 0 picks a free one; the address is logged).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Also accept this Host header value (repeatable; loopback is accepted by default).
    #[arg(long, value_name = "HOST", requires = "http")]
    pub allow_host: Vec<String>,
    /// Accept browser requests from this origin, with scheme and port (repeatable).
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    pub allow_origin: Vec<String>,
    /// Do not require bearer tokens (local use only; calls run as default_actor).
    #[arg(long, requires = "http")]
    pub no_auth: bool,
}

/// Serves until the client closes stdin (stdio) or SIGTERM / SIGINT (HTTP).
pub(super) async fn run(
    dir: &Path,
    watch: bool,
    strict: bool,
    metrics: Option<SocketAddr>,
    http: &HttpFlags,
) -> anyhow::Result<ExitCode> {
    let vars = Vars::from_env();
    // Each file is read once it has settled: one being written is never served half-way.
    let settle = crate::config::Settle::default();
    let (loaded, catalog) = if strict {
        super::load_settled(dir, &vars, &settle)?
    } else {
        load_what_compiles(dir, &vars, &settle)?
    };
    let transport = if http.http.is_some() { "http" } else { "stdio" };
    tracing::info!(tools = catalog.tools.len(), config = %dir.display(), watch, transport, "serving MCP");
    // A host that did not expand its variable, or an expired token: say so at start, in
    // the host's log, rather than only in each refused call.
    if let (None, Some(identity)) = (http.http, &catalog.identity)
        && let Err(e) = identity.stdio_actor()
    {
        tracing::warn!(token = %identity.token_source(), "every call will be refused until the host's config is fixed: {e}");
    }
    let http_opts = match http.http {
        Some(addr) => Some(http_options(addr, &loaded.server.1.http, http, metrics)?),
        None => None,
    };
    let store = super::open_store(dir, &loaded.server.1).await?;
    let mut engine = Engine::new(catalog, store);
    if let Some(audit) = super::open_audit(dir, &loaded.server.1)? {
        engine = engine.with_audit(audit);
    }
    let engine = Arc::new(engine);
    if let Some(addr) = metrics
        && http_opts.as_ref().is_none_or(|o| !o.metrics)
    {
        crate::telemetry::metrics::serve(addr, engine.metrics().clone()).await?;
    }
    let reloader = Arc::new(Reloader::new(dir, vars, engine.clone(), loaded));
    let _watcher = reload::spawn(reloader.clone(), watch)?;
    // `mcpd reload` reaches this process here; without it SIGHUP still works.
    let _control = match reload::control::listen(reloader, transport) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "mcpd reload cannot reach this server; SIGHUP still reloads");
            None
        }
    };
    match http_opts {
        Some(opts) => {
            crate::mcp::http::serve(engine.clone(), opts, crate::mcp::http::shutdown_signal())
                .await?;
        }
        None => McpServer::new(engine.clone()).serve_stdio().await?,
    }
    if let Some(audit) = engine.audit() {
        audit.flush();
    }
    Ok(ExitCode::SUCCESS)
}

/// The config with every tool file that compiles: a broken tool file is left out and
/// reported (as hot reload would leave it out), so one team's typo does not take every
/// other tool away at a host's restart. A broken `mcpd.yaml` or `policies.yaml` still
/// refuses to start: there is no policy to serve under.
fn load_what_compiles(
    dir: &Path,
    vars: &Vars,
    settle: &config::Settle,
) -> anyhow::Result<(Loaded, Catalog)> {
    let (mut loaded, mut problems) = config::load_dir_with(dir, vars, None, settle);
    let tools_dir = dir.join(config::TOOLS_DIR);
    let mut skipped = Diagnostics::default();
    // Leave out the files that do not parse, then those that do not compile; a third
    // round catches a problem that only shows once another file is out.
    for _ in 0..3 {
        let broken: BTreeSet<PathBuf> = problems.0.iter().map(|d| d.file.clone()).collect();
        // Only tool files may be left out; any other problem is fatal.
        if broken
            .iter()
            .any(|f| f.parent() != Some(tools_dir.as_path()))
        {
            break;
        }
        loaded.tools.retain(|f| !broken.contains(&f.path));
        skipped.extend(std::mem::take(&mut problems));
        match Catalog::compile(&loaded, vars) {
            Ok(catalog) => {
                report_skipped(&mut skipped, &catalog);
                return Ok((loaded, catalog));
            }
            Err(errors) => problems = errors,
        }
    }
    skipped.extend(problems);
    skipped.sort();
    skipped.0.dedup();
    anyhow::bail!(
        "invalid configuration in '{}' (run 'mcpd validate'):\n{skipped}",
        dir.display()
    )
}

/// Logs the problems of the tool files left out, and what is served.
fn report_skipped(skipped: &mut Diagnostics, catalog: &Catalog) {
    if skipped.is_empty() {
        return;
    }
    skipped.sort();
    let files: BTreeSet<String> = skipped
        .0
        .iter()
        .map(|d| d.file.display().to_string())
        .collect();
    for d in &skipped.0 {
        tracing::warn!(problem = %d, "config problem");
    }
    tracing::warn!(
        left_out = ?files,
        serving = catalog.tools.len(),
        "tool files with problems are left out; the other tools are served, and a fixed file \
         is picked up by the next reload (serve --strict refuses to start instead)"
    );
}

/// `mcpd.yaml`'s `http:` section with the flags applied.
fn http_options(
    addr: SocketAddr,
    spec: &HttpSpec,
    flags: &HttpFlags,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<HttpOptions> {
    let shutdown_grace = match &spec.shutdown_grace {
        Some(g) => crate::util::duration::parse(&g.value)
            .map_err(|e| anyhow::anyhow!("mcpd.yaml: http.shutdown_grace: {e}"))?,
        None => Duration::from_secs(30),
    };
    let mut allowed_hosts = spec.allowed_hosts.clone();
    allowed_hosts.extend(flags.allow_host.iter().cloned());
    let mut allowed_origins = spec.allowed_origins.clone();
    allowed_origins.extend(flags.allow_origin.iter().cloned());
    if spec.max_body_bytes == 0 {
        anyhow::bail!("mcpd.yaml: http.max_body_bytes must be above 0");
    }
    Ok(HttpOptions {
        addr,
        allowed_hosts,
        allowed_origins,
        max_body_bytes: spec.max_body_bytes,
        auth: spec.auth && !flags.no_auth,
        resource_url: spec.resource_url.clone(),
        authorization_servers: spec.authorization_servers.clone(),
        shutdown_grace,
        // `--metrics` on the --http address: one listener for both.
        metrics: metrics == Some(addr),
        jwks: spec.jwks.clone(),
    })
}
