//! What a run shows while it runs: prefixed log lines in a stable colour per
//! process, an optional progress bar that never garbles them, engine notes,
//! the NDJSON event stream, per-process log files, and the closing summary.

use super::writer::{Target, Wake, Writer, WriterHandle};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// ANSI colours cycled over process names (no red: that is for failures).
const COLOURS: &[&str] = &["36", "32", "33", "35", "34", "96", "92", "93", "95", "94"];

/// How the console looks.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleStyle {
    /// ANSI colours on log prefixes.
    pub color: bool,
    /// ANSI colours on notes and the summary (stderr).
    pub color_stderr: bool,
    /// Show the progress bar (on a terminal only).
    pub progress: bool,
    /// Suppress log lines and non-error notes.
    pub quiet: bool,
    /// Log lines go to stderr (when stdout carries the event stream).
    pub logs_to_stderr: bool,
}

/// The console: log lines, notes, progress. Nothing here waits on a reader:
/// stdout and stderr are written by background [`Writer`]s.
pub struct Console {
    style: ConsoleStyle,
    width: usize,
    bar: Option<ProgressBar>,
    pending: Vec<u8>,
    log_dir: Option<PathBuf>,
    log_files: Vec<Option<LogFile>>,
    out: Writer,
    err: Writer,
    /// Write errors not yet reported, in words.
    errors: Vec<String>,
}

struct LogFile {
    path: PathBuf,
    file: std::fs::File,
}

/// A stable colour for a name: the same process gets the same colour every run.
pub fn colour_of(name: &str) -> &'static str {
    let h = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    COLOURS[h as usize % COLOURS.len()]
}

impl Console {
    /// A console for instances with these names (for padding). `wake` is
    /// called from a writer thread when a backlog drained (see [`Console::backlogged`]).
    pub fn new(
        style: ConsoleStyle,
        names: &[String],
        log_dir: Option<&Path>,
        wake: Option<Arc<Wake>>,
    ) -> Result<Console, String> {
        let width = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .min(32);
        let bar = if style.progress && !style.quiet {
            let bar = ProgressBar::with_draw_target(
                Some(names.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            let template = if style.color_stderr {
                "{spinner:.cyan} {elapsed_precise} [{bar:28.cyan/blue}] {pos}/{len} done {msg}"
            } else {
                "{spinner} {elapsed_precise} [{bar:28}] {pos}/{len} done {msg}"
            };
            if let Ok(st) = ProgressStyle::with_template(template) {
                bar.set_style(st.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        let mut log_files = Vec::new();
        if let Some(dir) = log_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the log directory {}: {e}", dir.display()))?;
            for n in names {
                let path = dir.join(format!("{}.log", log_file_stem(n)));
                let file = std::fs::File::create(&path)
                    .map_err(|e| format!("cannot create the log file {}: {e}", path.display()))?;
                log_files.push(Some(LogFile { path, file }));
            }
        }
        Ok(Console {
            style,
            width,
            out: Writer::start(Target::Stdout, bar.clone(), wake.clone()),
            err: Writer::start(Target::Stderr, bar.clone(), wake),
            bar,
            pending: Vec::with_capacity(64 * 1024),
            log_dir: log_dir.map(Path::to_path_buf),
            log_files,
            errors: Vec::new(),
        })
    }

    /// Queues one log line of instance `inst` (named `name`); `flush` hands the batch on.
    pub fn line(&mut self, inst: usize, name: &str, line: &[u8]) {
        if let Some(slot) = self.log_files.get_mut(inst) {
            if let Some(f) = slot {
                let mut rec = Vec::with_capacity(line.len() + 1);
                rec.extend_from_slice(line);
                rec.push(b'\n');
                if let Err(e) = f.file.write_all(&rec) {
                    // Reported once; the file is then left alone, the console carries on.
                    self.errors.push(format!(
                        "cannot write the log file {}: {e}",
                        f.path.display()
                    ));
                    *slot = None;
                }
            }
        }
        if self.style.quiet {
            return;
        }
        let pad = self.width.saturating_sub(name.chars().count());
        if self.style.color {
            let _ = write!(
                self.pending,
                "\x1b[{}m{name}{:pad$} |\x1b[0m ",
                colour_of(name),
                ""
            );
        } else {
            let _ = write!(self.pending, "{name}{:pad$} | ", "");
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        if self.pending.len() > 60 * 1024 {
            self.flush();
        }
    }

    /// A note from the engine (`jobgraph: ...`) on stderr; errors show even when quiet.
    pub fn note(&mut self, text: &str, error: bool) {
        if self.style.quiet && !error {
            return;
        }
        self.flush();
        let text = if self.style.color_stderr && error {
            format!("\x1b[31mjobgraph: {text}\x1b[0m\n")
        } else {
            format!("jobgraph: {text}\n")
        };
        self.err.send(text.into_bytes());
    }

    /// A status report (SIGUSR1) on stderr, shown even when quiet.
    pub fn status(&mut self, text: &str) {
        self.flush();
        self.err.send(text.as_bytes().to_vec());
    }

    /// Hands queued log lines to the writer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let buf = std::mem::replace(&mut self.pending, Vec::with_capacity(64 * 1024));
        if self.style.logs_to_stderr {
            self.err.send(buf);
        } else {
            self.out.send(buf);
        }
    }

    /// Whether output waits to be written beyond the high-water mark: the
    /// engine should stop reading its children until woken.
    pub fn backlogged(&self) -> bool {
        self.out.backlogged() || self.err.backlogged()
    }

    /// The stream to hand `--events -` lines to.
    pub fn stdout_handle(&self) -> WriterHandle {
        self.out.handle()
    }

    /// Write errors since the last call (log files, stdout, stderr), each once.
    pub fn take_errors(&mut self) -> Vec<String> {
        let mut errors = std::mem::take(&mut self.errors);
        errors.extend(self.out.take_error());
        errors.extend(self.err.take_error());
        errors
    }

    /// Updates the bar: done so far, the running / failed counts, and the
    /// longest-running instances when there is room.
    pub fn progress(&self, done: u64, running: usize, failed: usize, longest: &[&str]) {
        if self.bar.is_some() {
            let mut msg = format!("· {running} running");
            if failed > 0 {
                let _ = write!(msg, " · {failed} failed");
            }
            if !longest.is_empty() {
                let _ = write!(msg, " · {}", longest.join(", "));
            }
            self.err.progress(done, msg);
        }
    }

    /// Writes what is queued and removes the bar before the summary. Gives up
    /// on a reader that does not read once `abandon` says so. Returns the
    /// write errors not reported yet.
    pub fn finish(
        &mut self,
        deadline: Option<Instant>,
        mut abandon: impl FnMut() -> bool,
    ) -> Vec<String> {
        self.flush();
        for f in self.log_files.iter_mut().flatten() {
            if let Err(e) = f.file.flush() {
                self.errors.push(format!(
                    "cannot write the log file {}: {e}",
                    f.path.display()
                ));
            }
        }
        let out_done = self.out.close(deadline, &mut abandon);
        let err_done = self.err.close(deadline, &mut abandon);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut errors = self.take_errors();
        if !out_done || !err_done {
            errors.push("output to a reader that did not read was given up".into());
        }
        errors
    }

    /// Whether a progress bar is shown.
    pub fn has_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Whether ANSI colours are on for stderr (notes, summary).
    pub fn stderr_color(&self) -> bool {
        self.style.color_stderr
    }

    /// Where log files go, if anywhere.
    pub fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }
}

/// `worker[2]` -> `worker.2`: names cannot contain `.`, so this never collides.
pub fn log_file_stem(instance: &str) -> String {
    instance.replace('[', ".").replace(']', "")
}

/// One NDJSON event (see docs/commands.md, "Events").
#[derive(Debug, Default, serde::Serialize)]
pub struct Event<'a> {
    /// RFC 3339 UTC timestamp with milliseconds.
    pub ts: String,
    /// started, ready, exited, retrying, skipped, stopping, killed, failed-to-start, run-finished.
    pub event: &'a str,
    /// Instance name (`worker[2]`), absent for run-level events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<&'a str>,
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal name that ended or is sent to the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'a str>,
    /// Run time of the attempt, or of the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Attempt number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Final status for `exited` and `skipped` (ok, failed, timed out, skipped, stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// Why, in words (skips, start failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Queue name (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<&'a str>,
    /// Messages read from producers (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_in: Option<u64>,
    /// Messages delivered to consumers (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_out: Option<u64>,
    /// Messages lost in flight (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Messages a consumer left unread, put back in the queue (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeued: Option<u64>,
    /// The engine's own peak RSS in KiB (`run-finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_peak_rss_kib: Option<u64>,
}

/// The `--events` writer.
pub struct Events {
    out: EventsOut,
    /// The first write error, not yet reported.
    error: Option<String>,
    failed: bool,
}

enum EventsOut {
    File {
        path: String,
        file: std::io::BufWriter<std::fs::File>,
    },
    /// `-`: through the console's stdout writer, so a slow reader never blocks the engine.
    Stdout(WriterHandle),
}

impl Events {
    /// A file path (truncated), or `-` for stdout (given its writer).
    pub fn open(target: &str, stdout: WriterHandle) -> std::io::Result<Events> {
        let out = if target == "-" {
            EventsOut::Stdout(stdout)
        } else {
            EventsOut::File {
                path: target.to_string(),
                file: std::io::BufWriter::new(std::fs::File::create(target)?),
            }
        };
        Ok(Events {
            out,
            error: None,
            failed: false,
        })
    }

    /// Writes one event, stamping its time.
    pub fn emit(&mut self, mut e: Event<'_>) {
        if self.failed {
            return;
        }
        e.ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let Ok(mut line) = serde_json::to_vec(&e) else {
            return;
        };
        line.push(b'\n');
        match &mut self.out {
            EventsOut::Stdout(w) => w.send(line),
            EventsOut::File { path, file } => {
                // One write and a flush per event: `tail -f` sees it now, and a crash loses none.
                if let Err(err) = file.write_all(&line).and_then(|_| file.flush()) {
                    self.error = Some(format!("cannot write events to {path}: {err}"));
                    self.failed = true;
                }
            }
        }
    }

    /// Flushes buffered events.
    pub fn flush(&mut self) {
        if let EventsOut::File { path, file } = &mut self.out {
            if !self.failed {
                if let Err(err) = file.flush() {
                    self.error = Some(format!("cannot write events to {path}: {err}"));
                    self.failed = true;
                }
            }
        }
    }

    /// The first write error, once.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}

/// One row of the closing summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryRow {
    /// Instance name.
    pub process: String,
    /// ok, failed, timed out, skipped, stopped.
    pub status: String,
    /// Exit code or signal name, empty if it never ran.
    pub exit: String,
    /// Attempts made.
    pub attempts: u32,
    /// From first start to final exit.
    pub duration: Option<Duration>,
    /// Peak resident set size in KiB, from rusage.
    pub peak_rss_kib: Option<u64>,
    /// Queue messages received / sent / lost in flight to it / requeued from
    /// it; `None` when the graph has no queue.
    pub queue: Option<(u64, u64, u64, u64)>,
    /// Restarts under `restart`; `None` when no process has a restart policy.
    pub restarts: Option<u32>,
}

/// The summary table as text.
pub fn render_summary(rows: &[SummaryRow], color: bool) -> String {
    let queues = rows.iter().any(|r| r.queue.is_some());
    let restarts = rows.iter().any(|r| r.restarts.is_some());
    let mut head = vec![
        "process", "status", "exit", "attempts", "duration", "peak RSS",
    ];
    if restarts {
        head.insert(4, "restarts");
    }
    if queues {
        head.push("queue in/out/lost/requeued");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.process.clone(),
                r.status.clone(),
                r.exit.clone(),
                r.attempts.to_string(),
                r.duration.map(fmt_duration).unwrap_or_else(|| "-".into()),
                r.peak_rss_kib.map(fmt_kib).unwrap_or_else(|| "-".into()),
            ];
            if restarts {
                row.insert(4, r.restarts.unwrap_or(0).to_string());
            }
            if queues {
                row.push(match r.queue {
                    Some((i, o, l, r)) if i + o + l + r > 0 => format!("{i}/{o}/{l}/{r}"),
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let last = widths.len() - 1;
    let mut out = String::new();
    let line = |out: &mut String, row: &[String], status_colour: Option<&str>| {
        for (k, (c, w)) in row.iter().zip(widths.iter().copied()).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            let text = match (k, status_colour) {
                (1, Some(col)) => format!("\x1b[{col}m{c}\x1b[0m"),
                _ => c.clone(),
            };
            if k >= 3 {
                let _ = write!(out, "{:pad$}{text}", "");
            } else {
                let _ = write!(out, "{text}{:pad$}", "");
            }
            out.push_str(if k == last { "\n" } else { "  " });
        }
    };
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    line(&mut out, &head, None);
    for row in &cells {
        let col = color.then(|| match row[1].as_str() {
            "ok" => "32",
            "failed" | "timed out" => "31",
            _ => "33",
        });
        line(&mut out, row, col);
    }
    out
}

/// A duration for people: `250ms`, `1.50s`, `2m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
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
    fn colours_are_stable() {
        assert_eq!(colour_of("load"), colour_of("load"));
    }

    #[test]
    fn summary_aligns_columns() {
        let rows = vec![SummaryRow {
            process: "setup".into(),
            status: "ok".into(),
            exit: "0".into(),
            attempts: 1,
            duration: Some(Duration::from_millis(1500)),
            peak_rss_kib: Some(2048),
            queue: None,
            restarts: None,
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

    #[test]
    fn log_file_names_cannot_collide() {
        assert_eq!(log_file_stem("worker[2]"), "worker.2");
    }
}
