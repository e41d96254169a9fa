//! A problem found in a job file: what rule, where, and how to fix it.

use crate::code::Code;
use std::ops::Range;

/// Byte range into the job file's text.
pub type Span = Range<usize>;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; the file is still valid.
    Warning,
    /// The file is invalid and will not run.
    Error,
}

/// One finding of the static checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning; derived from the code.
    pub severity: Severity,
    /// The rule that was broken.
    pub code: Code,
    /// One sentence: what is wrong.
    pub message: String,
    /// Where; `None` for problems of the file as a whole.
    pub span: Option<Span>,
    /// Short text shown under the span.
    pub label: Option<String>,
    /// The likely fix.
    pub help: Option<String>,
    /// Other places that explain the problem (the other end of a cycle...).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    /// A diagnostic for `code` at `span`; severity follows the code.
    pub fn new(code: Code, span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: code.severity(),
            code,
            message: message.into(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// A diagnostic pointing at `span`.
    pub fn at(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Some(span), message)
    }

    /// Sets the label shown under the span.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Sets the suggested fix.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Sets the suggested fix if there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Adds a secondary location.
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}
