//! `--format json`: one document for all files. The shape is documented in
//! docs/commands.md and kept stable: fields are only ever added.

use super::{located, Located, Outcome};
use crate::diagnostic::Severity;

/// Per-file summary in the JSON output.
#[derive(Debug, serde::Serialize)]
pub struct FileReport {
    /// The file, as given.
    pub file: String,
    /// No error found.
    pub valid: bool,
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
}

#[derive(serde::Serialize)]
struct Document {
    version: u32,
    valid: bool,
    files: Vec<FileReport>,
    diagnostics: Vec<Located>,
}

/// Renders all outcomes as one pretty-printed JSON document.
pub fn render_json(outcomes: &[Outcome]) -> String {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for o in outcomes {
        let ds = located(o);
        let file = match o {
            Outcome::Checked(c) => c.source.path().display().to_string(),
            Outcome::Unreadable(p, _) => p.display().to_string(),
        };
        files.push(FileReport {
            file,
            valid: o.is_valid(),
            errors: ds.iter().filter(|d| d.severity == Severity::Error).count(),
            warnings: ds
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .count(),
        });
        diagnostics.extend(ds);
    }
    let doc = Document {
        version: 1,
        valid: outcomes.iter().all(Outcome::is_valid),
        files,
        diagnostics,
    };
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
