//! `--format github`: workflow commands that GitHub Actions turns into
//! annotations on the pull request's lines.

use super::{located, Outcome};
use crate::diagnostic::Severity;

/// Renders one `::error` / `::warning` line per diagnostic.
pub fn render_github(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        for d in located(o) {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut props = format!("file={}", escape_property(&d.file));
            if let (Some(l), Some(c)) = (d.line, d.column) {
                props.push_str(&format!(",line={l},col={c}"));
                if let (Some(el), Some(ec)) = (d.end_line, d.end_column) {
                    props.push_str(&format!(",endLine={el},endColumn={ec}"));
                }
            }
            props.push_str(&format!(
                ",title={}",
                escape_property(&format!("jobgraph {}", d.code))
            ));
            let mut message = crate::diagnostic::visible(&d.message).into_owned();
            if let Some(help) = &d.help {
                message.push_str("\nhelp: ");
                message.push_str(&crate::diagnostic::visible(help));
            }
            out.push_str(&format!("::{level} {props}::{}\n", escape_data(&message)));
        }
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_per_workflow_command_rules() {
        assert_eq!(escape_data("50%\nx"), "50%25%0Ax");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }
}
