//! The front door of the library: read a file, decode it, analyse it.

use crate::diagnostic::{Diagnostic, Severity};
use crate::graph::{analyze, Graph};
use crate::source::{LoadError, SourceFile};
use crate::spec::LoadOptions;
use std::path::Path;

/// The outcome of checking one job file.
#[derive(Debug)]
pub struct Checked {
    /// The file's text, for rendering diagnostics.
    pub source: SourceFile,
    /// Every finding, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The analysed graph, present only when there is no error.
    pub graph: Option<Graph>,
}

impl Checked {
    /// True when no error was found (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.graph.is_some()
    }

    /// How many findings have this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Reads and checks a job file.
pub fn check_file(path: &Path) -> Result<Checked, LoadError> {
    Ok(check_source(SourceFile::load(path)?))
}

/// Checks a job file already in memory.
pub fn check_source(source: SourceFile) -> Checked {
    check_source_with(source, &LoadOptions::default())
}

/// Reads and checks a job file, with options from the command line (`--set`).
pub fn check_file_with(path: &Path, opts: &LoadOptions) -> Result<Checked, LoadError> {
    Ok(check_source_with(SourceFile::load(path)?, opts))
}

/// Checks a job file already in memory, with options from the command line.
pub fn check_source_with(source: SourceFile, opts: &LoadOptions) -> Checked {
    let (source, included) = crate::spec::load_includes(source);
    let (file, mut diagnostics) = crate::spec::decode_with(&source, opts);
    diagnostics.extend(included);
    let mut graph = None;
    if let Some(file) = file {
        let decode_failed = diagnostics.iter().any(Diagnostic::is_error);
        let (g, more) = analyze(file, &source);
        diagnostics.extend(more);
        if !decode_failed {
            graph = g;
        }
    }
    diagnostics.sort_by_key(|d| (d.span.as_ref().map_or(usize::MAX, |s| s.start), d.code));
    diagnostics.dedup();
    Checked {
        source,
        diagnostics,
        graph,
    }
}
