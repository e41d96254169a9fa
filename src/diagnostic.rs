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

/// Whether `c` would act on a terminal instead of showing: C0 and C1
/// controls and DEL, but not a newline or a tab.
fn is_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// `text` with its control characters escaped (`\u{1b}`), as they are
/// shown to a person: a name from the file holding ESC must not clear the
/// screen or recolour the terminal.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match is_control(c) {
            true => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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
    /// This diagnostic with the control characters of its texts escaped
    /// ([`visible`]), for the human and GitHub formats.
    pub fn shown(&self) -> std::borrow::Cow<'_, Diagnostic> {
        let texts = std::iter::once(self.message.as_str())
            .chain(self.label.as_deref())
            .chain(self.help.as_deref())
            .chain(self.related.iter().map(|(_, l)| l.as_str()));
        if !texts.flat_map(str::chars).any(is_control) {
            return std::borrow::Cow::Borrowed(self);
        }
        let v = |t: &str| visible(t).into_owned();
        std::borrow::Cow::Owned(Diagnostic {
            message: v(&self.message),
            label: self.label.as_deref().map(v),
            help: self.help.as_deref().map(v),
            related: self
                .related
                .iter()
                .map(|(s, l)| (s.clone(), v(l)))
                .collect(),
            ..self.clone()
        })
    }

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
