//! mcpd's integration tests: the real binary, over stdio and the command line.

// The no-panic lints guard shipped code; a test's failed unwrap is its assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod util;

mod audit;
mod backtest;
mod backtest_memory;
mod balancer;
mod breaker;
mod call;
mod coverage;
mod docs;
mod egress;
mod explain;
mod features;
mod features_config;
mod forwarding;
mod host_config;
mod http;
mod http_auth;
mod http_direct;
mod http_threads;
mod identity;
mod import;
mod init;
mod kubernetes;
mod leaks;
mod limits;
mod log_lines;
mod memory;
mod newuser;
mod numbers;
mod otlp;
mod pii;
mod policy;
mod policy_reload;
mod protocol;
mod python_client;
mod redis_outage;
mod reload;
mod replicas;
mod safe_writes;
mod safe_writes_kill;
mod schema;
mod scoped_list;
mod state;
mod stdio;
mod stdio_fast;
mod testrun;
mod tickets;
mod token_exchange;
mod validate;
mod version;
