//! mcpd's integration tests: the real binary, over stdio and the command line.

mod util;

mod call;
mod python_client;
mod stdio;
mod validate;
