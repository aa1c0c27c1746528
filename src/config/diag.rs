//! Diagnostics: one problem in one file, rendered as `file:line:col: message`.
//!
//! Loading and compiling collect every diagnostic instead of stopping at the first, so
//! `mcpd validate` can print them all. This module only formats; it never decides.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a file, 1-based. `line == 0` means the position is not known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1; 0 when unknown.
    pub line: u64,
    /// Column, from 1; 0 when unknown.
    pub col: u64,
}

impl Pos {
    /// A known position.
    pub fn new(line: u64, col: u64) -> Self {
        Self { line, col }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong and, where possible, what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a position in `file`.
    pub fn new(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Editors and CI annotators read `file:line:col: message`; an unknown position
        // still yields `file:1:1` so the line stays clickable.
        let line = self.pos.line.max(1);
        let col = self.pos.col.max(1);
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            line,
            col,
            self.message
        )
    }
}

/// Every diagnostic of one load or compile, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many were found: a compile step compares it before and after to tell whether
    /// it added any (`compile(spec, &mut Diagnostics) -> Option<Self>`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Moves every diagnostic of `other` into `self`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorts by file, then position, so output is stable.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.file, a.pos.line, a.pos.col).cmp(&(&b.file, b.pos.line, b.pos.col))
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
