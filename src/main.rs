//! The `mcpd` binary: parse the command line, run it, print the error once.

fn main() -> std::process::ExitCode {
    mcpd::cli::main()
}
