//! mcpd: a declarative MCP server.
//!
//! Platform teams describe internal HTTP APIs as tools in YAML (`tools.d/`); mcpd serves
//! them to agents over MCP and puts governance in the path of every call. The modules
//! mirror the call path of `docs/ARCHITECTURE.md`:
//!
//! - [`config`]: the file model (what the user wrote), loading and diagnostics;
//! - [`catalog`]: the compiled, immutable snapshot the call path reads;
//! - [`engine`]: the pipeline, one call from lookup to answer;
//! - [`policy`]: the rules of policies.yaml, compiled once, evaluated per call;
//! - [`template`], [`upstream`], [`response`], [`jsonpath`], [`redact`]: the steps it calls;
//! - [`reload`]: watching the config and swapping in a new catalog, keeping the last good;
//! - [`mcp`]: the rmcp handler that serves the catalog over stdio, and [`mcp_http`]: the
//!   same handler over Streamable HTTP with bearer auth;
//! - [`telemetry`]: the log subscriber and OTLP span export;
//! - [`audit`]: the signed, hash-chained audit log and its verification;
//! - [`store`]: state that outlives a call (idempotency, counters, grants), behind one trait;
//! - [`identity`], [`elevation`]: who calls (signed tokens, scopes) and just-in-time
//!   grants for sensitive calls;
//! - [`idempotency`], [`spend`]: what the call path keeps in the store (one write per
//!   key; stop rules, rate limits and budgets);
//! - [`demo_api`]: the orders and flags API that ships with the project;
//! - [`openapi`]: `mcpd import openapi`, operations of an OpenAPI 3 spec as tool files;
//! - [`testrun`]: `mcpd test`, the declared golden and adversarial cases;
//! - [`cli`]: one file per subcommand.

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo_api;
pub mod diag;
pub mod elevation;
pub mod engine;
pub mod idempotency;
pub mod identity;
pub mod jsonpath;
pub mod limits;
pub mod mcp;
pub mod mcp_http;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod redact;
pub mod reload;
pub mod response;
pub mod spend;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod testrun;
pub mod trace;
pub mod upstream;
