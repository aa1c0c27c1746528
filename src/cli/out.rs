//! A command's output on stdout, and what happens when its reader goes away.
//!
//! Owns only that: `outln!`/`out!` (cli/mod.rs) write through [`write`]. It must not be
//! used by `serve`, whose stdout is the MCP transport's.

use std::io::Write as _;

/// Writes a command's output. A reader that went away (`mcpd audit verify | head`) ends
/// the process by SIGPIPE, as Unix tools end, instead of a panic on the broken pipe.
/// SIGPIPE itself stays ignored (Rust's default) for everything else: a socket closed
/// under a write (an upstream, a client of `demo-api`) is an error, never a kill.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let Err(e) = std::io::stdout().lock().write_fmt(args) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        #[cfg(unix)]
        // SAFETY: SIG_DFL is a valid action for SIGPIPE, and raising it ends the process
        // (nothing else handles it): no code runs after this with the action changed.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}
