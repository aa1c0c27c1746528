//! The `mcpd` binary: parse the command line, run it, print the error once.

/// mimalloc instead of glibc's allocator: a call allocates and frees many small,
/// short-lived buffers (JSON values, strings), where glibc's malloc and free were the
/// largest single symbols in profiles of the call path (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` (option 15 of its `mi_option_e`): 0, so memory freed is
/// returned to the OS at once instead of 10 ms later. With the default, the peak RSS of
/// a start-up with 1,000 tool files was 54 MB instead of 37 (glibc) or 48 (this).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: called once, first thing, before any other thread exists (mimalloc's
    // option setters are not thread safe).
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    // No transparent huge pages: mimalloc asks for them on its arenas, and where the
    // kernel grants them on request (`madvise`, a common default) every region touched
    // takes 2 MiB. With 1,000 tool files the peak RSS at start-up was 52 MB with them and
    // 39 MB without (glibc: 37); CPU per call unchanged (A/B, stdio, 16 in flight). The
    // flag is the process's, and processes mcpd starts inherit it.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("mcpd: cannot turn transparent huge pages off ({e}); memory use may be higher");
    }
    mcpd::cli::main()
}
