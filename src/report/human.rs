//! Human output: miette's source snippets with labels and help.

use super::Outcome;
use crate::check::Checked;
use crate::diagnostic::{Diagnostic, Severity};
use crate::source::SourceFile;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan};
use std::fmt;

/// At most this many diagnostics per file are drawn; the rest are counted.
const MAX_SHOWN: usize = 50;

/// Snippets are drawn only when every line they show is at most this many
/// characters long. A longer line would be unreadable in a terminal, and
/// miette's renderer cannot pad past column 65,535.
const MAX_SNIPPET_LINE: usize = 1000;

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
    source: &'a Files<'a>,
}

/// The source code of a check: the main file and the files it includes,
/// each snippet named after the file it is in.
struct Files<'a>(&'a SourceFile, std::borrow::Cow<'a, str>);

impl<'a> Files<'a> {
    /// miette ends a line at a lone `\r` too; TOML, the JSON output and
    /// editors do not. A lone `\r` is shown as a blank (same byte length),
    /// so that both name the same line and column.
    ///
    /// Other control characters (ESC, NUL) would act on the terminal: each
    /// is shown as `?` (or `¿` for a two-byte one), the same byte length.
    fn new(file: &'a SourceFile) -> Files<'a> {
        let text = file.text();
        let bytes = text.as_bytes();
        let lone = |at: usize| bytes.get(at + 1) != Some(&b'\n');
        let odd = |at: usize, c: char| match c {
            '\r' => lone(at),
            '\n' | '\t' => false,
            c => c.is_control(),
        };
        let shown = match text.char_indices().any(|(at, c)| odd(at, c)) {
            false => std::borrow::Cow::Borrowed(text),
            true => {
                let fixed: String = text
                    .char_indices()
                    .map(|(at, c)| match c {
                        '\r' if lone(at) => ' ',
                        c if odd(at, c) && c.len_utf8() == 1 => '?',
                        c if odd(at, c) => '¿',
                        c => c,
                    })
                    .collect();
                std::borrow::Cow::Owned(fixed)
            }
        };
        Files(file, shown)
    }
}

impl miette::SourceCode for Files<'_> {
    fn read_span<'b>(
        &'b self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'b> + 'b>, miette::MietteError> {
        let part = self.0.part_at(span.offset());
        let (start, end) = (part.range.start, part.range.end);
        if span.offset() + span.len() > end {
            return Err(miette::MietteError::OutOfBounds);
        }
        let text: &'b str = &self.1[start..end];
        let local = miette::SourceSpan::new((span.offset() - start).into(), span.len());
        let inner = text.read_span(&local, before, after)?;
        let shifted =
            miette::SourceSpan::new((inner.span().offset() + start).into(), inner.span().len());
        // miette counts the header's column in bytes; `--format json` and
        // editors count characters, so a line with `é` before the span
        // would name two different columns.
        let column = match text.get(..local.offset()) {
            Some(before) if inner.column() > 0 => {
                let line_start = before.rfind('\n').map_or(0, |n| n + 1);
                before[line_start..].chars().count()
            }
            _ => inner.column(),
        };
        Ok(Box::new(miette::MietteSpanContents::new_named(
            part.path.display().to_string(),
            inner.data(),
            shifted,
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
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

/// One line for a diagnostic of the file as a whole, or of a command-line option.
pub fn render_spanless(path: &std::path::Path, d: &Diagnostic) -> String {
    let level = if d.is_error() { "error" } else { "warning" };
    let mut out = format!("{level}[{}]: {}: {}", d.code, path.display(), d.message);
    if let Some(h) = &d.help {
        out.push_str(&format!(" (help: {h})"));
    }
    out.push('\n');
    out
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
    let source = Files::new(&c.source);
    let mut out = String::new();
    for d in c.diagnostics.iter().take(MAX_SHOWN) {
        let d = &*d.shown();
        if d.span.is_none() {
            out.push_str(&render_spanless(c.source.path(), d));
            continue;
        }
        if let Some(long) = long_line(&c.source, d) {
            render_plain(&mut out, &c.source, d, long);
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

/// The first line a snippet of `d` would show (1-based line, characters) that
/// is too long to draw, if any.
fn long_line(source: &SourceFile, d: &Diagnostic) -> Option<(usize, usize)> {
    let text = source.text();
    let spans = d.span.iter().chain(d.related.iter().map(|(s, _)| s));
    for span in spans {
        let first = source.global_line(span.start);
        let last = source.global_line(span.end.max(span.start));
        let shift = first - source.line_col(span.start).0;
        // One line of context either side, as the handler is configured.
        for line in first.saturating_sub(1).max(1)..=last + 1 {
            let Some(range) = source.line_range(line) else {
                continue;
            };
            let t = &text[range];
            if t.len() > MAX_SNIPPET_LINE && t.chars().count() > MAX_SNIPPET_LINE {
                return Some((line.saturating_sub(shift).max(1), t.chars().count()));
            }
        }
    }
    None
}

/// A diagnostic without a snippet: message, locations, labels and help, one per line.
fn render_plain(out: &mut String, source: &SourceFile, d: &Diagnostic, long: (usize, usize)) {
    let name = |offset: usize| source.path_at(offset).display();
    let mark = if d.is_error() { "×" } else { "⚠" };
    out.push_str(&format!("{}\n\n  {mark} {}\n", d.code, d.message));
    if let Some(span) = &d.span {
        let (line, col) = source.line_col(span.start);
        let label = d.label.as_deref().unwrap_or("here");
        out.push_str(&format!(
            "  at {}:{line}:{col}: {label}\n",
            name(span.start)
        ));
    }
    for (span, label) in &d.related {
        let (line, col) = source.line_col(span.start);
        out.push_str(&format!(
            "  and {}:{line}:{col}: {label}\n",
            name(span.start)
        ));
    }
    out.push_str(&format!(
        "  (no snippet: line {} is {} characters long)\n",
        long.0, long.1
    ));
    if let Some(h) = &d.help {
        out.push_str(&format!("  help: {h}\n"));
    }
}
