//! Showing diagnostics: to people (source snippets), to programs (JSON) and
//! to GitHub Actions (workflow annotations).

pub mod console;
pub mod events;
mod github;
mod human;
mod json;
pub mod live;
pub mod summary;
pub mod writer;

pub use github::render_github;

/// `s` padded with spaces to `width` characters. `format!("{:w$}")` panics
/// past a width of 65,535, and a name from a job file can be that long.
pub fn padded(s: &str, width: usize) -> String {
    let mut out = String::with_capacity(width.max(s.len()));
    out.push_str(s);
    out.extend(std::iter::repeat_n(
        ' ',
        width.saturating_sub(s.chars().count()),
    ));
    out
}
pub use human::{render_human, render_spanless, HumanStyle};
pub use json::{render_json, FileReport};

use crate::check::Checked;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::{LoadError, SourceFile};
use std::path::PathBuf;

/// One checked file, or one that could not be read.
#[derive(Debug)]
pub enum Outcome {
    /// Read and checked.
    Checked(Box<Checked>),
    /// Not readable.
    Unreadable(PathBuf, LoadError),
}

impl Outcome {
    /// True when the file was read and has no error.
    pub fn is_valid(&self) -> bool {
        matches!(self, Outcome::Checked(c) if c.is_valid())
    }
}

/// A diagnostic with its position resolved to 1-based line and column.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Located {
    /// The file, as given.
    pub file: String,
    /// Start line.
    pub line: Option<usize>,
    /// Start column (characters).
    pub column: Option<usize>,
    /// End line.
    pub end_line: Option<usize>,
    /// End column (exclusive).
    pub end_column: Option<usize>,
    /// "error" or "warning".
    pub severity: crate::diagnostic::Severity,
    /// The rule's stable name.
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// Text under the span.
    pub label: Option<String>,
    /// Likely fix.
    pub help: Option<String>,
    /// Other relevant places.
    pub related: Vec<RelatedLocation>,
}

/// A secondary place of a diagnostic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelatedLocation {
    /// The file (another one than the diagnostic's when it is in an included file).
    pub file: String,
    /// Line.
    pub line: usize,
    /// Column.
    pub column: usize,
    /// What is there.
    pub label: String,
}

/// Resolves spans of `d` against `source`.
pub fn locate(source: &SourceFile, d: &Diagnostic) -> Located {
    let start = d.span.as_ref().map(|s| source.line_col(s.start));
    let end = d.span.as_ref().map(|s| source.line_col(s.end));
    let file = match &d.span {
        Some(s) => source.path_at(s.start),
        None => source.path(),
    };
    Located {
        file: file.display().to_string(),
        line: start.map(|x| x.0),
        column: start.map(|x| x.1),
        end_line: end.map(|x| x.0),
        end_column: end.map(|x| x.1),
        severity: d.severity,
        code: d.code,
        message: d.message.clone(),
        label: d.label.clone(),
        help: d.help.clone(),
        related: d
            .related
            .iter()
            .map(|(span, label)| {
                let (line, column) = source.line_col(span.start);
                RelatedLocation {
                    file: source.path_at(span.start).display().to_string(),
                    line,
                    column,
                    label: label.clone(),
                }
            })
            .collect(),
    }
}

/// The located diagnostics of an outcome; an unreadable file yields one.
pub fn located(outcome: &Outcome) -> Vec<Located> {
    match outcome {
        Outcome::Checked(c) => c.diagnostics.iter().map(|d| locate(&c.source, d)).collect(),
        Outcome::Unreadable(path, err) => vec![Located {
            file: path.display().to_string(),
            line: None,
            column: None,
            end_line: None,
            end_column: None,
            severity: crate::diagnostic::Severity::Error,
            code: Code::UnreadableFile,
            message: err.to_string(),
            label: None,
            help: None,
            related: Vec::new(),
        }],
    }
}
