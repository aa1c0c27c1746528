//! mcpd: a declarative MCP server.
//!
//! Platform teams describe internal HTTP APIs as tools in YAML (`tools.d/`); mcpd serves
//! them to agents over MCP and puts governance in the path of every call. The modules
//! mirror the call path of `docs/ARCHITECTURE.md`, in the order a call meets them:
//!
//! - [`config`]: the file model (what the user wrote), loading and diagnostics;
//! - [`catalog`]: the compiled, immutable snapshot the call path reads;
//! - [`engine`]: the pipeline, one call from lookup to answer, in `Engine::call`;
//! - [`identity`]: who calls (the typed actor, tokens, scopes, elevation grants);
//! - [`policy`]: the rules of policies.yaml, compiled once, evaluated per call;
//! - [`idempotency`]: one write per key (claim, replay, finish);
//! - [`limits`]: stop rules, rate limits, concurrency caps and budgets;
//! - [`template`], [`upstream`], [`response`], [`redact`]: rendering, sending, mapping
//!   and redacting;
//! - [`telemetry`]: traces, logs, metrics and latency objectives; [`audit`]: the signed,
//!   hash-chained audit log;
//! - [`store`]: state that outlives a call, behind one trait; [`results`]: results too
//!   large to send inline, kept for their caller;
//! - [`reload`]: watching the config and swapping in a new catalog, keeping the last good;
//! - `mcp`: the rmcp handler over stdio and Streamable HTTP;
//! - [`util`]: leaf helpers (durations, globs, the clock) every step may use;
//! - off the call path: [`cli`] (one file per subcommand), `testrun` (`mcpd test`),
//!   [`backtest`] (`mcpd backtest`, `mcpd shadow report`),
//!   `openapi` (`mcpd import openapi`), [`demo_api`] (the bundled orders/flags API).

pub mod audit;
pub mod backtest;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo_api;
pub mod engine;
pub mod idempotency;
pub mod identity;
pub mod limits;
pub(crate) mod mcp;
pub(crate) mod openapi;
pub mod policy;
pub mod redact;
pub mod reload;
pub mod response;
pub mod results;
pub mod store;
pub mod telemetry;
pub mod template;
pub(crate) mod testrun;
pub mod upstream;
pub mod util;
