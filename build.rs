//! Build script: records the git commit mcpd is built from, for `mcpd --version`.
//!
//! Reads `git rev-parse` when the source is a git checkout and git is installed;
//! anywhere else (a source archive, a crate unpacked by cargo) the commit is "unknown".
//! It must not fail the build: every problem falls back to "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    // Only when this crate is the checkout's root: a crate vendored inside another
    // repository must not report that repository's commit.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let top = git(&["-C", &manifest_dir, "rev-parse", "--show-toplevel"]);
    let is_root = top.is_some_and(|t| {
        Path::new(&t).canonicalize().ok() == Path::new(&manifest_dir).canonicalize().ok()
    });
    let commit = if is_root {
        git(&["-C", &manifest_dir, "rev-parse", "--short=12", "HEAD"])
    } else {
        None
    };
    println!(
        "cargo:rustc-env=MCPD_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // Rebuild when HEAD moves (a commit, a checkout), not on every file change. Only
    // paths that exist: a missing one would make cargo rerun this script every build.
    let mut watched = vec!["build.rs".to_owned()];
    if is_root {
        let mut refs = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        if let Some(branch) = git(&["-C", &manifest_dir, "symbolic-ref", "-q", "HEAD"]) {
            refs.push(branch);
        }
        for r in refs {
            if let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", &r]) {
                let p = Path::new(&manifest_dir).join(p);
                if p.exists() {
                    watched.push(p.display().to_string());
                }
            }
        }
    }
    for p in watched {
        println!("cargo:rerun-if-changed={p}");
    }
}
