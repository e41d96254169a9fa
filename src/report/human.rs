//! Human output: miette's source snippets with labels and help.

use super::Outcome;
use crate::check::Checked;
use crate::diagnostic::{Diagnostic, Severity};
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use std::fmt;

/// At most this many diagnostics per file are drawn; the rest are counted.
const MAX_SHOWN: usize = 50;

/// How to draw.
#[derive(Debug, Clone, Copy)]
pub struct HumanStyle {
    /// ANSI colours.
    pub color: bool,
    /// Wrap width.
    pub width: usize,
}

struct Report<'a> {
    diag: &'a Diagnostic,
    source: &'a NamedSource<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.diag.span.clone()?;
        let primary = LabeledSpan::new_primary_with_span(self.diag.label.clone(), span);
        let related = self
            .diag
            .related
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), s.clone()));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// Renders one file's diagnostics and a closing line, for stderr.
pub fn render_human(outcome: &Outcome, style: HumanStyle) -> String {
    match outcome {
        Outcome::Unreadable(_, err) => format!("error[unreadable-file]: {err}\n"),
        Outcome::Checked(c) => render_checked(c, style),
    }
}

fn render_checked(c: &Checked, style: HumanStyle) -> String {
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false)
        .with_context_lines(1);
    let name = c.source.path().display().to_string();
    let source = NamedSource::new(name.clone(), c.source.text().to_string());
    let mut out = String::new();
    for d in c.diagnostics.iter().take(MAX_SHOWN) {
        if d.span.is_none() {
            let level = if d.is_error() { "error" } else { "warning" };
            out.push_str(&format!("{level}[{}]: {name}: {}", d.code, d.message));
            if let Some(h) = &d.help {
                out.push_str(&format!(" (help: {h})"));
            }
            out.push('\n');
            continue;
        }
        let report = Report {
            diag: d,
            source: &source,
        };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{}: {}\n", d.code, d.message));
        }
        out.push('\n');
    }
    if c.diagnostics.len() > MAX_SHOWN {
        out.push_str(&format!(
            "... and {} more (use --format json to see all)\n",
            c.diagnostics.len() - MAX_SHOWN
        ));
    }
    let (errors, warnings) = (c.count(Severity::Error), c.count(Severity::Warning));
    let plural = |n: usize, w: &str| {
        if n == 1 {
            format!("1 {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    if errors == 0 {
        if warnings == 0 {
            out.push_str(&format!("{name}: valid\n"));
        } else {
            out.push_str(&format!("{name}: valid, {}\n", plural(warnings, "warning")));
        }
    } else {
        out.push_str(&format!(
            "{name}: invalid, {}, {}\n",
            plural(errors, "error"),
            plural(warnings, "warning")
        ));
    }
    out
}
