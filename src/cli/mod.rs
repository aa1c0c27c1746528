//! The command line: one file per subcommand, this one parses and dispatches.
//!
//! Owns the process edge: argument parsing, logging to stderr (stdout belongs to the
//! stdio protocol), the tokio runtime, exit codes, and rendering an error once.

/// `outln!` for a command's output: see [`out::write`].
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for a command's output: see [`out::write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

mod audit;
mod backtest;
mod budget;
mod call;
mod demo;
mod elevate;
mod explain;
mod host_config;
mod idempotency;
mod import;
mod init;
mod open;
mod out;
mod reload;
mod schema;
mod serve;
mod test;
mod token;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Vars};

pub use open::DEFAULT_STATE;
pub(crate) use open::{check, load, load_catalog, load_settled, open_audit, open_store};

/// mcpd: internal HTTP APIs as governed MCP tools, described in YAML.
#[derive(Debug, Parser)]
#[command(name = "mcpd", version = SHORT_VERSION, long_version = long_version(), about)]
pub struct Cli {
    /// The config directory: mcpd.yaml, policies.yaml and tools.d/.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "MCPD_CONFIG",
        default_value = "."
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `mcpd -V`: the version and the git commit it was built from ("unknown" when it
/// was built outside a git checkout; see build.rs).
const SHORT_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MCPD_GIT_COMMIT"),
    ")"
);

/// `mcpd --version`: the version, the commit, and the MCP protocol revisions served.
fn long_version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let protocols: Vec<&str> = crate::mcp::protocol_versions()
            .iter()
            .map(rmcp::model::ProtocolVersion::as_str)
            .collect();
        format!(
            "{}\ncommit: {}\nMCP protocol versions: {}",
            env!("CARGO_PKG_VERSION"),
            env!("MCPD_GIT_COMMIT"),
            protocols.join(", ")
        )
    });
    &TEXT
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdio (for Claude Desktop, VS Code, Cursor, Continue), or over
    /// Streamable HTTP with --http.
    Serve {
        /// Do not watch the config directory (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
        /// Serve Prometheus metrics (and /healthz, /readyz) on this address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Refuse to start when any file has a problem (by default a broken tool file is
        /// left out and reported, and the other tools are served).
        #[arg(long)]
        strict: bool,
        /// Serve MCP over Streamable HTTP at http://ADDR/mcp instead of stdio.
        #[command(flatten)]
        http: serve::HttpFlags,
    },
    /// Apply the config directory's changes now in every `mcpd serve` running on it
    /// (also a pinned policy: reload.policy: manual), and print what each applied.
    Reload,
    /// Check tools.d, policies.yaml and mcpd.yaml; print every problem as file:line:col.
    Validate {
        /// The config directory to check (default: --config).
        dir: Option<PathBuf>,
        /// Also run the cases in tests.d and require, for every enforced deny or require
        /// rule, a passing case that makes it match and one that makes it not match.
        #[arg(long)]
        strict: bool,
    },
    /// Make one call through the full pipeline and print the MCP result as JSON.
    Call {
        /// The tool id (`orders.export`) or wire name (`orders_export`).
        tool: String,
        /// The arguments, as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Show which rules a call would meet and the decision, without calling upstream.
    Explain {
        /// The tool id or wire name.
        tool: String,
        /// The arguments, as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Who the call is made as.
        #[command(flatten)]
        actor: explain::AsActor,
    },
    /// Run the test cases in tests.d/ (golden and adversarial flows) through the pipeline.
    Test {
        /// The config directory (default: --config); cases come from its tests.d/.
        dir: Option<PathBuf>,
        /// A case file or directory to run instead of DIR/tests.d/.
        #[arg(long, value_name = "PATH")]
        cases: Option<PathBuf>,
        /// Also write a JUnit XML report to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Also report, for every enforced policy rule, whether some passing case made
        /// it match and some made it not match.
        #[arg(long)]
        coverage: bool,
    },
    /// Create a starter config directory (one tool, policies, test cases, schemas).
    Init {
        /// Where to create it (default: --config).
        dir: Option<PathBuf>,
        /// Overwrite starter files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Print (or --write) an MCP host's config entry for mcpd, with this machine's paths.
    HostConfig(host_config::Options),
    /// Generate tool files from an API description (OpenAPI 3).
    Import {
        /// What to import from.
        #[command(subcommand)]
        source: import::Source,
    },
    /// Show what each budget in policies.yaml has left (calls, cost units, reset time).
    Budget {
        /// The actor whose budgets to show (default: the configured default actor).
        #[arg(long, value_name = "SUBJECT")]
        actor: Option<String>,
    },
    /// Signing keys and short-lived tokens for non-human callers.
    Token {
        /// What to do.
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Grant (or list, or revoke) a just-in-time elevation tied to a change ticket.
    Elevate {
        /// Who may make the sensitive call, e.g. agent:copilot.
        #[arg(long, required_unless_present_any = ["list", "revoke"])]
        subject: Option<String>,
        /// The tool (id or glob), e.g. flag.set.
        #[arg(long, required_unless_present_any = ["list", "revoke"])]
        tool: Option<String>,
        /// Limit the grant to calls with this `env` argument, e.g. prod.
        #[arg(long)]
        env: Option<String>,
        /// The change ticket, e.g. CHG-1234 (checked against elevation.ticket_pattern).
        #[arg(long, required_unless_present_any = ["list", "revoke"])]
        ticket: Option<String>,
        /// How long the grant lasts, e.g. 10m (at most elevation.max_ttl).
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// Who grants it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// List live grants (of --subject, if given).
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Remove the grant with this id.
        #[arg(long, value_name = "ID")]
        revoke: Option<String>,
    },
    /// See idempotency keys (in flight, held with their outcome unknown, done) and
    /// resolve a held one once the upstream was checked.
    Idempotency {
        /// What to do.
        #[command(subcommand)]
        action: IdempotencyAction,
    },
    /// Start the bundled demo API and play the demo flows through mcpd.
    Demo,
    /// Check the audit log: signatures, sequence and hash chain.
    Audit {
        /// What to do with the log.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Replay the calls of a recorded audit log through a candidate policy, without
    /// calling anything: what each rule would newly deny or allow, by tool and actor.
    Backtest(backtest::BacktestArgs),
    /// What shadow rules recorded they would have done.
    Shadow {
        /// What to do.
        #[command(subcommand)]
        action: ShadowAction,
    },
    /// Print the JSON Schema (draft-07) of tool files, policies.yaml or mcpd.yaml, for editors.
    Schema {
        /// Which file's schema to print (all three with --out).
        kind: Option<schema::Kind>,
        /// Write the schema files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Run the bundled demo orders/flags API on its own.
    DemoApi {
        /// Port on 127.0.0.1 (0 picks a free one; the URL is printed on stdout).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

/// `mcpd token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a new Ed25519 signing key (prints MCPD_TOKEN_KEY=... and its public half).
    Keygen {
        /// The key id tokens will name (`kid`); use a new one for each rotation.
        #[arg(long, default_value = "k1")]
        kid: String,
    },
    /// Issue a short-lived token signed with MCPD_TOKEN_KEY.
    Issue {
        /// Who, e.g. agent:copilot.
        #[arg(long)]
        subject: String,
        /// A tool it may call: TOOL, TOOL:ENV or TOOL@PURPOSE (globs allowed); repeat.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Why it calls, e.g. support.
        #[arg(long)]
        purpose: Option<String>,
        /// The data region it works in, e.g. eu.
        #[arg(long)]
        region: Option<String>,
        /// Lifetime, e.g. 15m (at most identity.max_ttl).
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
    /// Check a token against this config: prints its actor, or why it is refused.
    Verify {
        /// The token.
        token: String,
    },
    /// Print the verification keys as a JWKS document, for upstreams that check mcpd's
    /// identity assertions (`serve --http` also serves it at /.well-known/jwks.json).
    Jwks,
}

/// `mcpd idempotency` subcommands.
#[derive(Debug, Subcommand)]
pub enum IdempotencyAction {
    /// List the keys in the state store: tool, key, actor, state, age, expiry.
    List {
        /// Only this tool's keys.
        #[arg(long)]
        tool: Option<String>,
        /// Only held keys (outcome unknown: an operator must check the upstream).
        #[arg(long)]
        held: bool,
    },
    /// Settle a held key once the upstream was checked: --sent-ok (it landed; retries
    /// get a success) or --not-sent (it did not; the next call sends it).
    Resolve {
        /// The idempotency key, as `list` shows it.
        key: String,
        /// The tool id.
        #[arg(long)]
        tool: String,
        /// The write landed.
        #[arg(
            long,
            conflicts_with = "not_sent",
            required_unless_present = "not_sent"
        )]
        sent_ok: bool,
        /// The write did not land.
        #[arg(long)]
        not_sent: bool,
        /// Whose key, when several actors hold it (their subject).
        #[arg(long)]
        actor: Option<String>,
        /// Who resolves it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// `mcpd shadow` subcommands.
#[derive(Debug, Subcommand)]
pub enum ShadowAction {
    /// Summarise what each shadow rule would have done over an audit log's period.
    Report(backtest::LogArgs),
}

/// `mcpd audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Verify a log: prints OK with the record count, or the first broken record.
    Verify {
        /// The log file.
        file: PathBuf,
        /// The environment variable holding the signing key.
        #[arg(long, default_value = "MCPD_AUDIT_KEY")]
        key_env: String,
        /// Verify Ed25519 signatures with this public key (64 hex digits, or a file
        /// holding them) instead of the HMAC key.
        #[arg(long, value_name = "HEX|FILE")]
        public_key: Option<String>,
    },
    /// Make an Ed25519 key pair for `audit: { signing: ed25519 }`.
    Keygen,
}

/// Runs the command line and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = init_logging(&cli.command, &cli.config);
    let runtime = match runtime_for(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                no_watch,
                metrics,
                strict,
                http,
            } => serve::run(&cli.config, !no_watch, strict, metrics, &http).await,
            Command::Validate { dir, strict } => {
                validate::run(dir.as_deref().unwrap_or(&cli.config), strict).await
            }
            Command::Reload => reload::run(&cli.config).await,
            Command::Call { tool, args } => call::run(&cli.config, &tool, &args).await,
            Command::Demo => demo::run(&cli.config).await,
            Command::Token { action } => match action {
                TokenAction::Keygen { kid } => token::run_keygen(&kid),
                TokenAction::Issue {
                    subject,
                    scopes,
                    purpose,
                    region,
                    ttl,
                } => {
                    let ttl = crate::util::duration::parse(&ttl)
                        .map_err(|e| anyhow::anyhow!("--ttl: {e}"));
                    match ttl {
                        Ok(ttl) => token::run_issue(
                            &cli.config,
                            &crate::identity::TokenRequest {
                                subject,
                                scopes,
                                purpose,
                                region,
                                ttl,
                            },
                        ),
                        Err(e) => Err(e),
                    }
                }
                TokenAction::Verify { token } => token::run_verify(&cli.config, &token),
                TokenAction::Jwks => token::run_jwks(&cli.config),
            },
            Command::Elevate {
                subject,
                tool,
                env,
                ticket,
                ttl,
                by,
                list,
                revoke,
            } => {
                let action = if list {
                    Ok(elevate::Action::List(subject))
                } else if let Some(id) = revoke {
                    Ok(elevate::Action::Revoke(id))
                } else {
                    crate::util::duration::parse(&ttl)
                        .map_err(|e| anyhow::anyhow!("--ttl: {e}"))
                        .map(|ttl| {
                            elevate::Action::Grant(crate::identity::elevation::GrantRequest {
                                subject: subject.unwrap_or_default(),
                                tool: tool.unwrap_or_default(),
                                env,
                                ticket: ticket.unwrap_or_default(),
                                granted_by: by.unwrap_or_else(operator),
                                ttl,
                            })
                        })
                };
                match action {
                    Ok(a) => elevate::run(&cli.config, a).await,
                    Err(e) => Err(e),
                }
            }
            Command::Budget { actor } => budget::run(&cli.config, actor.as_deref()).await,
            Command::Idempotency { action } => {
                let action = match action {
                    IdempotencyAction::List { tool, held } => {
                        idempotency::Action::List { tool, held }
                    }
                    IdempotencyAction::Resolve {
                        key,
                        tool,
                        sent_ok,
                        not_sent: _,
                        actor,
                        by,
                    } => idempotency::Action::Resolve {
                        key,
                        tool,
                        actor,
                        to: if sent_ok {
                            crate::idempotency::operator::Resolution::SentOk
                        } else {
                            crate::idempotency::operator::Resolution::NotSent
                        },
                        by: by.unwrap_or_else(operator),
                    },
                };
                idempotency::run(&cli.config, action).await
            }
            Command::Explain { tool, args, actor } => {
                explain::run(&cli.config, &tool, &args, &actor)
            }
            Command::Audit {
                action:
                    AuditAction::Verify {
                        file,
                        key_env,
                        public_key,
                    },
            } => audit::verify(&file, &key_env, public_key.as_deref()),
            Command::Audit {
                action: AuditAction::Keygen,
            } => audit::keygen(),
            Command::DemoApi { port } => demo::run_api(port).await,
            Command::Backtest(args) => backtest::run(&cli.config, &args),
            Command::Shadow {
                action: ShadowAction::Report(args),
            } => backtest::run_shadow(&cli.config, &args),
            Command::Import { source } => import::run(&cli.config, &source),
            Command::Init { dir, force } => init::run(dir.as_deref().unwrap_or(&cli.config), force),
            Command::HostConfig(opts) => host_config::run(&cli.config, &opts),
            Command::Schema { kind, out } => schema::run(kind, out.as_deref()),
            Command::Test {
                dir,
                cases,
                junit,
                coverage,
            } => {
                let dir = dir.as_deref().unwrap_or(&cli.config);
                test::run(dir, cases.as_deref(), junit.as_deref(), coverage).await
            }
        }
    });
    // Flush queued spans before the runtime goes away.
    telemetry.shutdown();
    drop(runtime);
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Who runs this command, for grants and resolutions: `user:$USER`.
fn operator() -> String {
    std::env::var("USER")
        .ok()
        .map(|u| format!("user:{u}"))
        .unwrap_or_else(|| "unknown-operator".to_owned())
}

/// `mcpd serve` runs on one thread: over stdio a call is read, run and answered with no
/// hand-off between worker threads (stdin, the engine and the upstream connection wake
/// each other on the same thread), which cuts what a call adds at one in flight and
/// the CPU per call at any load (docs/performance.md). Over HTTP this thread accepts
/// connections and runs the background work (reloads, the state store), and each
/// connection is served by one of a thread per core, each on a runtime of its own
/// (`mcp::http`). Blocking work (reloads, the state file's writes) still runs on
/// threads of its own. Everything else gets a worker per core.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if matches!(command, Command::Serve { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Logs go to stderr, always: stdout carries MCP messages (serve) or results (call).
/// Commands that make calls also export spans over OTLP when mcpd.yaml (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) says so.
fn init_logging(command: &Command, dir: &Path) -> crate::telemetry::Telemetry {
    let default = match command {
        Command::Serve { .. } | Command::DemoApi { .. } => "info,rmcp=warn",
        _ => "warn",
    };
    let calls = matches!(
        command,
        Command::Serve { .. } | Command::Call { .. } | Command::Demo
    );
    let vars = Vars::from_env();
    let otlp = if calls {
        // mcpd.yaml alone: parsing every tool file here too would double the start-up.
        let server = config::load_server(dir, &vars);
        crate::telemetry::otlp_settings(server.telemetry.otlp.as_ref(), &vars)
    } else {
        None
    };
    match crate::telemetry::init(default, otlp.as_ref(), &vars) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}; traces are not exported");
            // Logging still works without export.
            crate::telemetry::init(default, None, &vars).unwrap_or_default()
        }
    }
}
