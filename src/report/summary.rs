//! The closing summary of `jobgraph run`: the table (consecutive replicas
//! that ended alike folded into one row), the queue lines, the verdict.

pub use crate::runtime::report::{fmt_duration, SummaryRow};
use crate::runtime::report::{PeakRss, QueueSummary};
use std::time::Duration;

/// The closing summary of a run: the table, the queue lines, the verdict.
pub fn render_outcome(
    rows: &[SummaryRow],
    queues: &[QueueSummary],
    elapsed: Duration,
    interrupted: Option<&str>,
    color: bool,
) -> String {
    let mut out = render_summary(rows, color);
    if !queues.is_empty() {
        out.push('\n');
        for q in queues {
            let per: Vec<String> = q
                .per_consumer
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            let per = match per.is_empty() {
                true => String::new(),
                false => format!(" ({})", per.join(", ")),
            };
            out.push_str(&format!(
                "queue {}: {} in, {} out{per}, {} lost, {} requeued\n",
                q.name, q.messages_in, q.messages_out, q.lost, q.requeued
            ));
        }
    }
    out.push('\n');
    out.push_str(&render_verdict(rows, elapsed, interrupted));
    out
}

/// Consecutive replicas that ended alike fold into one row.
fn fold(rows: &[SummaryRow]) -> Vec<(SummaryRow, u32)> {
    let mut out: Vec<(SummaryRow, u32, u32)> = Vec::new();
    for r in rows {
        if let (Some((last, _, n)), Some((proc, idx))) = (out.last_mut(), &r.replica) {
            let alike = last
                .replica
                .as_ref()
                .is_some_and(|(p, i)| p == proc && i + *n == *idx)
                && last.status == r.status
                && last.exit == r.exit
                && last.attempts == r.attempts
                && last.restarts == r.restarts
                && last.reason == r.reason;
            if alike {
                *n += 1;
                last.duration = last.duration.max(r.duration);
                last.peak_rss = match (last.peak_rss, r.peak_rss) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if let (Some(a), Some(b)) = (&mut last.queue, r.queue) {
                    *a = (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3);
                }
                continue;
            }
        }
        let idx = r.replica.as_ref().map_or(0, |(_, i)| *i);
        out.push((r.clone(), idx, 1));
    }
    out.into_iter()
        .map(|(mut r, first, n)| {
            if n > 1 {
                if let Some((proc, _)) = &r.replica {
                    r.process = format!("{proc}[{first}..{}]", first + n - 1);
                }
            }
            (r, n)
        })
        .collect()
}

/// The closing verdict: `1 failed, 2 skipped, 5 ok in 1.04s`.
pub fn render_verdict(rows: &[SummaryRow], elapsed: Duration, interrupted: Option<&str>) -> String {
    let mut parts = Vec::new();
    for status in ["failed", "timed out", "stopped", "skipped", "cached", "ok"] {
        let n = rows.iter().filter(|r| r.status == status).count();
        if n > 0 {
            parts.push(format!("{n} {status}"));
        }
    }
    let mut line = parts.join(", ");
    if line.is_empty() {
        line.push_str("nothing ran");
    }
    line.push_str(&format!(" in {}", fmt_duration(elapsed)));
    match interrupted {
        Some(sig) => format!("interrupted by {sig}: {line}\n"),
        None => format!("{line}\n"),
    }
}

/// The optional columns of the summary table: each only when some row has
/// something to put in it.
#[derive(Clone, Copy)]
struct Columns {
    queues: bool,
    restarts: bool,
    reasons: bool,
}

impl Columns {
    fn of(rows: &[SummaryRow]) -> Columns {
        Columns {
            queues: rows.iter().any(|r| r.queue.is_some()),
            restarts: rows.iter().any(|r| r.restarts.is_some()),
            reasons: rows.iter().any(|r| r.reason.is_some() && r.status != "ok"),
        }
    }

    fn head(self) -> Vec<String> {
        let mut head = vec![
            "process", "status", "exit", "attempts", "duration", "peak RSS",
        ];
        if self.restarts {
            head.insert(4, "restarts");
        }
        if self.queues {
            head.push("queue in/out/lost/requeued");
        }
        if self.reasons {
            head.push("why");
        }
        head.iter().map(|h| h.to_string()).collect()
    }

    /// The cells of a row that stands for `n` replicas.
    fn cells(self, r: &SummaryRow, n: u32) -> Vec<String> {
        let status = if n > 1 {
            format!("{} ×{n}", r.status)
        } else {
            r.status.clone()
        };
        let mut row = vec![
            r.process.clone(),
            status,
            r.exit.clone(),
            r.attempts.to_string(),
            r.duration.map(fmt_duration).unwrap_or_else(|| "-".into()),
            match r.peak_rss {
                Some(PeakRss::Measured(k)) => fmt_kib(k),
                Some(PeakRss::AtMost(k)) => format!("≤ {}", fmt_kib(k)),
                None => "-".into(),
            },
        ];
        if self.restarts {
            row.insert(4, r.restarts.unwrap_or(0).to_string());
        }
        if self.queues {
            row.push(match r.queue {
                Some((i, o, l, r)) if i + o + l + r > 0 => format!("{i}/{o}/{l}/{r}"),
                _ => "-".into(),
            });
        }
        if self.reasons {
            row.push(match &r.reason {
                Some(why) if r.status != "ok" => why.clone(),
                _ => String::new(),
            });
        }
        row
    }
}

/// The summary table as text.
pub fn render_summary(rows: &[SummaryRow], color: bool) -> String {
    let cols = Columns::of(rows);
    let head = cols.head();
    let cells: Vec<Vec<String>> = fold(rows).iter().map(|(r, n)| cols.cells(r, *n)).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    push_row(&mut out, &head, &widths, None, cols.reasons);
    for row in &cells {
        let status = row[1].split(" ×").next().unwrap_or_default();
        let col = color.then_some(match status {
            "ok" | "cached" => "32",
            "failed" | "timed out" => "31",
            "stopped" => "33",
            _ => "90", // skipped: never ran, greyed out
        });
        push_row(&mut out, row, &widths, col, cols.reasons);
    }
    out
}

/// One line of the table: the first three columns (and a last `why`)
/// left-aligned, numbers right-aligned, no trailing blanks.
fn push_row(
    out: &mut String,
    row: &[String],
    widths: &[usize],
    status_colour: Option<&str>,
    reasons: bool,
) {
    let last = widths.len().saturating_sub(1);
    for (k, (c, w)) in row.iter().zip(widths.iter().copied()).enumerate() {
        let pad = w.saturating_sub(c.chars().count());
        let text = match (k, status_colour) {
            (1, Some(col)) => format!("\x1b[{col}m{c}\x1b[0m"),
            _ => c.clone(),
        };
        let left = k < 3 || (reasons && k == last);
        if k == last && left {
            out.push_str(&text);
        } else if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
        if k == last {
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
        } else {
            out.push_str("  ");
        }
    }
}

fn fmt_kib(k: u64) -> String {
    if k < 1024 {
        format!("{k} KiB")
    } else {
        format!("{:.1} MiB", k as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_aligns_columns() {
        let rows = vec![SummaryRow {
            process: "setup".into(),
            status: "ok".into(),
            exit: "0".into(),
            attempts: 1,
            duration: Some(Duration::from_millis(1500)),
            peak_rss: Some(PeakRss::Measured(2048)),
            queue: None,
            restarts: None,
            reason: None,
            replica: None,
        }];
        let s = render_summary(&rows, false);
        let row: Vec<&str> = s.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["setup", "ok", "0", "1"], "{s}");
        let header = s.lines().next().unwrap();
        assert_eq!(
            header.find("status"),
            s.lines().nth(1).unwrap().find("ok"),
            "columns align:\n{s}"
        );
        assert!(s.contains("1.50s"), "{s}");
        assert!(s.contains("2.0 MiB"), "{s}");
    }
}
