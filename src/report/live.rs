//! What a run shows while it runs: prefixed log lines in a stable colour per
//! process, an optional progress bar that never garbles them, engine notes,
//! the NDJSON event stream, per-process log files, and the closing summary.

use super::writer::{Target, Wake, Writer, WriterHandle};
pub use crate::runtime::report::{fmt_duration, SummaryRow};
use crate::runtime::report::{Progress, QueueSummary, Reporter, RunEvent, RunStart};
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

/// stderr, reported a few columns narrower than it is. indicatif pads the bar
/// to the full width and leaves the cursor at the right edge, so the terminal's
/// `^C` echo would wrap it onto a new line and the bar's own clearing would then
/// miss it, leaving a stale bar above the notes. The spare columns absorb the echo.
#[derive(Debug)]
struct NarrowTerm(console::Term);

impl indicatif::TermLike for NarrowTerm {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(4).max(20)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
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
                ProgressDrawTarget::term_like_with_hz(
                    Box::new(NarrowTerm(console::Term::stderr())),
                    20,
                ),
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

    /// An engine note about one instance, shown like its log lines
    /// (`server | ready after 1.20s (tcp 127.0.0.1:8765)`) but not written to its log file.
    pub fn instance_note(&mut self, name: &str, text: &str) {
        if self.style.quiet {
            return;
        }
        let pad = self.width.saturating_sub(name.chars().count());
        if self.style.color {
            let _ = writeln!(
                self.pending,
                "\x1b[{}m{name}{:pad$} |\x1b[0m \x1b[2m{text}\x1b[0m",
                colour_of(name),
                ""
            );
        } else {
            let _ = writeln!(self.pending, "{name}{:pad$} | {text}", "");
        }
    }

    /// Takes the progress bar off the screen for the rest of the run (a
    /// shutdown began: the notes and the summary follow).
    pub fn hide_bar(&mut self) {
        if self.bar.is_some() {
            self.flush();
            self.err.hide_bar();
        }
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

/// The reporter of `jobgraph run`: the console (log lines, notes, progress
/// bar, log files) and the `--events` stream.
pub struct LiveReporter {
    style: ConsoleStyle,
    log_dir: Option<PathBuf>,
    events_target: Option<String>,
    console: Option<Console>,
    events: Option<Events>,
}

impl LiveReporter {
    /// Nothing is opened until the run starts.
    pub fn new(style: ConsoleStyle, log_dir: Option<PathBuf>, events: Option<String>) -> Self {
        LiveReporter {
            style,
            log_dir,
            events_target: events,
            console: None,
            events: None,
        }
    }
}

impl Reporter for LiveReporter {
    fn start(&mut self, start: RunStart<'_>) -> Result<(), String> {
        let mut style = self.style;
        if start.terminal_taken {
            style.progress = false;
        }
        let console = Console::new(
            style,
            start.names,
            self.log_dir.as_deref(),
            Some(start.wake),
        )?;
        if let Some(target) = &self.events_target {
            self.events = Some(
                Events::open(target, console.stdout_handle())
                    .map_err(|e| format!("cannot open --events {target}: {e}"))?,
            );
        }
        self.console = Some(console);
        Ok(())
    }

    fn event(&mut self, e: &RunEvent<'_>) {
        if let Some(ev) = &mut self.events {
            ev.emit(ndjson(e));
        }
    }

    fn line(&mut self, inst: usize, name: &str, line: &[u8]) {
        if let Some(c) = &mut self.console {
            c.line(inst, name, line);
        }
    }

    fn instance_note(&mut self, name: &str, text: &str) {
        if let Some(c) = &mut self.console {
            c.instance_note(name, text);
        }
    }

    fn note(&mut self, text: &str, error: bool) {
        match &mut self.console {
            Some(c) => c.note(text, error),
            None => eprintln!("jobgraph: {text}"),
        }
    }

    fn status(&mut self, text: &str) {
        if let Some(c) = &mut self.console {
            c.status(text);
        }
    }

    fn wants_progress(&self) -> bool {
        self.console.as_ref().is_some_and(Console::has_bar)
    }

    fn progress(&mut self, p: Progress<'_>) {
        if let Some(c) = &self.console {
            c.progress(p.done, p.running, p.failed, p.longest);
        }
    }

    fn flush(&mut self) {
        if let Some(c) = &mut self.console {
            c.flush();
        }
    }

    fn backlogged(&self) -> bool {
        self.console.as_ref().is_some_and(Console::backlogged)
    }

    fn take_errors(&mut self) -> Vec<String> {
        let mut errors = self
            .console
            .as_mut()
            .map(Console::take_errors)
            .unwrap_or_default();
        errors.extend(self.events.as_mut().and_then(Events::take_error));
        errors
    }

    fn shutdown_began(&mut self) {
        if let Some(c) = &mut self.console {
            c.hide_bar();
        }
    }

    fn finish(
        &mut self,
        deadline: Option<Instant>,
        abandon: &mut dyn FnMut() -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(ev) = &mut self.events {
            ev.flush();
            errors.extend(ev.take_error());
        }
        if let Some(c) = &mut self.console {
            errors.extend(c.finish(deadline, abandon));
        }
        errors
    }
}

/// The NDJSON shape of an event (see docs/commands.md, "Events").
fn ndjson<'a>(e: &RunEvent<'a>) -> Event<'a> {
    let mut out = Event {
        event: e.name(),
        ..Default::default()
    };
    let ms = |d: &Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match *e {
        RunEvent::RunStarted { containment, pid } => {
            out.containment = Some(containment);
            out.pid = Some(pid);
        }
        RunEvent::Started {
            process,
            pid,
            attempt,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.attempt = Some(attempt);
        }
        RunEvent::FailedToStart {
            process,
            attempt,
            reason,
        } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
            out.reason = Some(reason);
        }
        RunEvent::Ready { process, pid } => {
            out.process = Some(process);
            out.pid = Some(pid);
        }
        RunEvent::Exited {
            process,
            pid,
            code,
            signal,
            ref duration,
            attempt,
            status,
        } => {
            out.process = Some(process);
            out.pid = pid;
            out.code = code;
            out.signal = signal;
            out.duration_ms = duration.as_ref().and_then(ms);
            out.attempt = Some(attempt);
            out.status = Some(status);
        }
        RunEvent::Retrying { process, attempt } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
        }
        RunEvent::Restarting {
            process,
            attempt,
            ref delay,
        } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
            out.duration_ms = ms(delay);
        }
        RunEvent::Skipped { process, reason } => {
            out.process = Some(process);
            out.status = Some("skipped");
            out.reason = Some(reason);
        }
        RunEvent::Cached { process } => {
            out.process = Some(process);
            out.status = Some("cached");
        }
        RunEvent::Stopped { process, reason } => {
            out.process = Some(process);
            out.status = Some("stopped");
            out.reason = Some(reason);
        }
        RunEvent::Joined {
            process,
            status,
            reason,
        } => {
            out.process = Some(process);
            out.status = Some(status);
            out.reason = reason;
        }
        RunEvent::Stopping {
            process,
            pid,
            signal,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.signal = Some(signal);
        }
        RunEvent::Killed { process, pid } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.signal = Some("SIGKILL");
        }
        RunEvent::HealthFailed {
            process,
            pid,
            failures,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.failures = Some(failures);
        }
        RunEvent::Placed {
            process,
            pid,
            state,
            job_id,
            step_id,
            node,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.state = Some(state);
            out.job_id = Some(job_id);
            out.step_id = step_id;
            out.node = node;
        }
        RunEvent::Queue {
            queue,
            messages_in,
            messages_out,
            lost,
            requeued,
        } => {
            out.queue = Some(queue);
            out.messages_in = Some(messages_in);
            out.messages_out = Some(messages_out);
            out.lost = Some(lost);
            out.requeued = Some(requeued);
        }
        RunEvent::RunFinished {
            code,
            ref duration,
            engine_peak_rss_kib,
        } => {
            out.code = Some(code);
            out.duration_ms = ms(duration);
            out.engine_peak_rss_kib = Some(engine_peak_rss_kib);
        }
    }
    out
}

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
            let _ = writeln!(
                out,
                "queue {}: {} in, {} out ({}), {} lost, {} requeued",
                q.name,
                q.messages_in,
                q.messages_out,
                per.join(", "),
                q.lost,
                q.requeued
            );
        }
    }
    out.push('\n');
    out.push_str(&render_verdict(rows, elapsed, interrupted));
    out
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
    /// Consecutive failed health checks (`health-failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How the run's processes are contained (`run-started`): `pid-namespace` or `marker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containment: Option<&'a str>,
    /// The engine's own peak RSS in KiB (`run-finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_peak_rss_kib: Option<u64>,
    /// `queued` or `running` (`placed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a str>,
    /// The Slurm job (`placed`): the unit's own in batch mode, the allocation in step mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<&'a str>,
    /// The Slurm step, `JOB.STEP` (`placed`, step mode, once Slurm lists it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<&'a str>,
    /// The node it runs on (`placed`, once running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<&'a str>,
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

/// Consecutive replicas that ended alike fold into one row.
fn fold(rows: &[SummaryRow]) -> Vec<(SummaryRow, u32)> {
    let mut out: Vec<(SummaryRow, u32, u32)> = Vec::new();
    for r in rows {
        if let (Some((last, first, n)), Some((proc, idx))) = (out.last_mut(), &r.replica) {
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
                last.peak_rss_kib = last.peak_rss_kib.max(r.peak_rss_kib);
                if let (Some(a), Some(b)) = (&mut last.queue, r.queue) {
                    *a = (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3);
                }
                let _ = first;
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
    let _ = write!(line, " in {}", fmt_duration(elapsed));
    match interrupted {
        Some(sig) => format!("interrupted by {sig}: {line}\n"),
        None => format!("{line}\n"),
    }
}

/// The summary table as text.
pub fn render_summary(rows: &[SummaryRow], color: bool) -> String {
    let queues = rows.iter().any(|r| r.queue.is_some());
    let restarts = rows.iter().any(|r| r.restarts.is_some());
    let reasons = rows.iter().any(|r| r.reason.is_some() && r.status != "ok");
    let rows = fold(rows);
    let mut head = vec![
        "process", "status", "exit", "attempts", "duration", "peak RSS",
    ];
    if restarts {
        head.insert(4, "restarts");
    }
    if queues {
        head.push("queue in/out/lost/requeued");
    }
    if reasons {
        head.push("why");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(r, n)| {
            let status = if *n > 1 {
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
            if reasons {
                row.push(match &r.reason {
                    Some(why) if r.status != "ok" => why.clone(),
                    _ => String::new(),
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
            let left = k < 3 || (reasons && k == last);
            if k == last && left {
                out.push_str(&text);
            } else if left {
                let _ = write!(out, "{text}{:pad$}", "");
            } else {
                let _ = write!(out, "{:pad$}{text}", "");
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
    };
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    line(&mut out, &head, None);
    for row in &cells {
        let status = row[1].split(" ×").next().unwrap_or_default();
        let col = color.then_some(match status {
            "ok" | "cached" => "32",
            "failed" | "timed out" => "31",
            "stopped" => "33",
            _ => "90", // skipped: never ran, greyed out
        });
        line(&mut out, row, col);
    }
    out
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

    #[test]
    fn every_event_has_its_documented_name() {
        use crate::runtime::report::EVENT_NAMES;
        let d = Duration::from_millis(5);
        let all = [
            RunEvent::RunStarted {
                containment: "none",
                pid: 1,
            },
            RunEvent::Started {
                process: "a",
                pid: 2,
                attempt: 1,
            },
            RunEvent::FailedToStart {
                process: "a",
                attempt: 1,
                reason: "r",
            },
            RunEvent::Ready {
                process: "a",
                pid: 2,
            },
            RunEvent::Exited {
                process: "a",
                pid: Some(2),
                code: Some(0),
                signal: None,
                duration: Some(d),
                attempt: 1,
                status: "ok",
            },
            RunEvent::Retrying {
                process: "a",
                attempt: 2,
            },
            RunEvent::Restarting {
                process: "a",
                attempt: 2,
                delay: d,
            },
            RunEvent::Skipped {
                process: "a",
                reason: "r",
            },
            RunEvent::Cached { process: "a" },
            RunEvent::Stopped {
                process: "a",
                reason: "r",
            },
            RunEvent::Joined {
                process: "a",
                status: "ok",
                reason: None,
            },
            RunEvent::Stopping {
                process: "a",
                pid: 2,
                signal: "SIGTERM",
            },
            RunEvent::Killed {
                process: "a",
                pid: 2,
            },
            RunEvent::HealthFailed {
                process: "a",
                pid: 2,
                failures: 3,
            },
            RunEvent::Placed {
                process: "a",
                pid: 2,
                state: "running",
                job_id: "7",
                step_id: Some("7.1"),
                node: Some("n1"),
            },
            RunEvent::Queue {
                queue: "q",
                messages_in: 1,
                messages_out: 1,
                lost: 0,
                requeued: 0,
            },
            RunEvent::RunFinished {
                code: 0,
                duration: d,
                engine_peak_rss_kib: 1,
            },
        ];
        let names: Vec<&str> = all.iter().map(|e| ndjson(e).event).collect();
        assert_eq!(names, EVENT_NAMES);
        // The docs' table lists every one of them.
        let docs = include_str!("../../docs/commands.md");
        for n in EVENT_NAMES {
            assert!(
                docs.contains(&format!("| `{n}` |")),
                "docs/commands.md lacks `{n}`"
            );
        }
    }

    #[test]
    fn log_file_names_cannot_collide() {
        assert_eq!(log_file_stem("worker[2]"), "worker.2");
    }
}
