//! The console of `jobgraph run`: prefixed log lines in a stable colour per
//! process, an optional progress bar that never garbles them, engine notes,
//! the SIGUSR1 status table, and per-process log files.

use super::writer::{Target, Wake, Writer, WriterHandle};
use crate::runtime::report::LostOutput;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Instance name to its index in `log_files`.
    log_index: std::collections::HashMap<String, usize>,
    /// The log files open now, oldest first: at most `open_logs_cap`, so
    /// that a graph of 10,000 processes does not hold 10,000 descriptors
    /// (nor fail to start under `ulimit -n 1024`).
    open_logs: std::collections::VecDeque<usize>,
    /// How many log files may be open at once.
    open_logs_cap: usize,
    /// A descriptor held in reserve (/dev/null) and given up to write a log
    /// line when the run's processes hold every other one: out of
    /// descriptors, lines are still written, never lost.
    reserve: Option<std::fs::File>,
    out: Writer,
    err: Writer,
    /// Write errors not yet reported, in words.
    errors: Vec<String>,
    /// What lost lines so far: instances whose log file failed, and whether
    /// stdout or stderr did (which carry every instance's lines).
    lost: LostOutput,
}

struct LogFile {
    path: PathBuf,
    /// Open for appending while recently written.
    file: Option<std::fs::File>,
    /// A FIFO or device put in the log directory in place of a file: its
    /// reader may stall, so it is written by a thread of its own.
    stream: Option<Writer>,
    /// Emptied by this run already, or kept: a `--resume` run keeps the log
    /// of an instance it takes from the cache, and empties the others when
    /// they start (or at the end, for those that never do).
    settled: bool,
}

/// How long the end of a run waits for a reader of a log FIFO that reads
/// nothing (one that reads, however slowly, gets every line).
const LOG_READER_GRACE: Duration = Duration::from_secs(5);

/// Most log files kept open at once: 64, or an eighth of the descriptor
/// limit if that is less, so that the run's processes keep their pipes.
fn open_log_files_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 8).unwrap_or(64).clamp(1, 64)
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
    ) -> Result<Console, crate::runtime::report::StartError> {
        use crate::runtime::report::StartError;
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
            if dir.exists() && !dir.is_dir() {
                return Err(StartError::LogDir {
                    path: dir.to_path_buf(),
                    source: std::io::Error::other("it exists and is not a directory"),
                });
            }
            std::fs::create_dir_all(dir).map_err(|source| StartError::LogDir {
                path: dir.to_path_buf(),
                source,
            })?;
            // Each is created now, so a bad path stops the run before it
            // starts, then closed until its process writes. It is emptied
            // when its process starts: one taken from a resumed run's
            // cache keeps what that run wrote.
            for n in names {
                let path = dir.join(format!("{}.log", log_file_stem(n)));
                let stream =
                    log_stream(&path, wake.clone()).map_err(|source| StartError::OpenLog {
                        path: path.clone(),
                        source,
                    })?;
                if stream.is_none() {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|source| StartError::CreateLog {
                            path: path.clone(),
                            source,
                        })?;
                }
                log_files.push(Some(LogFile {
                    path,
                    file: None,
                    settled: stream.is_some(),
                    stream,
                }));
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
            log_index: match log_dir {
                Some(_) => names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), i))
                    .collect(),
                None => Default::default(),
            },
            log_files,
            open_logs: std::collections::VecDeque::new(),
            open_logs_cap: open_log_files_cap(),
            reserve: log_dir.and_then(|_| std::fs::File::open("/dev/null").ok()),
            errors: Vec::new(),
            lost: LostOutput::default(),
        })
    }

    /// Queues one log line of instance `inst` (named `name`); `flush` hands the batch on.
    pub fn line(&mut self, inst: usize, name: &str, line: &[u8]) {
        if let Some(Some(LogFile {
            stream: Some(w), ..
        })) = self.log_files.get(inst)
        {
            let mut rec = Vec::with_capacity(line.len() + 1);
            rec.extend_from_slice(line);
            rec.push(b'\n');
            w.send(rec);
        } else if matches!(self.log_files.get(inst), Some(Some(_))) {
            let mut rec = Vec::with_capacity(line.len() + 1);
            rec.extend_from_slice(line);
            rec.push(b'\n');
            let written = self.write_log(inst, &rec);
            if let Err(e) = written {
                // Reported once; the file is then left alone, the console carries on.
                if let Some(f) = self.log_files[inst].take() {
                    self.lost.instances.push(inst);
                    self.errors.push(format!(
                        "cannot write the log file {}: {e}",
                        f.path.display()
                    ));
                }
                self.open_logs.retain(|&k| k != inst);
            }
        }
        if self.style.quiet {
            return;
        }
        push_prefix(&mut self.pending, name, self.width, self.style.color);
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
        push_prefix(&mut self.pending, name, self.width, self.style.color);
        if self.style.color {
            self.pending.extend_from_slice(b"\x1b[2m");
            self.pending.extend_from_slice(text.as_bytes());
            self.pending.extend_from_slice(b"\x1b[0m");
        } else {
            self.pending.extend_from_slice(text.as_bytes());
        }
        self.pending.push(b'\n');
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
        // A small batch goes as a copy of its own size: queued behind a
        // stalled reader, a 15-byte line in a 64 KiB buffer held a page each
        // (a retry loop grew the engine without bound). A large one is moved.
        let buf = if self.pending.len() < 16 * 1024 {
            let copy = self.pending.clone();
            self.pending.clear();
            copy
        } else {
            std::mem::replace(&mut self.pending, Vec::with_capacity(64 * 1024))
        };
        if self.style.logs_to_stderr {
            self.err.send(buf);
        } else {
            self.out.send(buf);
        }
    }

    /// Whether output waits to be written beyond the high-water mark: the
    /// engine should stop reading its children until woken.
    pub fn backlogged(&self) -> bool {
        self.out.backlogged()
            || self.err.backlogged()
            || self.streams().any(|(_, w)| w.backlogged())
    }

    /// The log FIFOs and devices, with their paths.
    fn streams(&self) -> impl Iterator<Item = (&Path, &Writer)> {
        self.log_files
            .iter()
            .flatten()
            .filter_map(|f| f.stream.as_ref().map(|w| (f.path.as_path(), w)))
    }

    /// The stream to hand `--events -` lines to.
    pub fn stdout_handle(&self) -> WriterHandle {
        self.out.handle()
    }

    /// Write errors since the last call (log files, stdout, stderr), each once.
    pub fn take_errors(&mut self) -> Vec<String> {
        let mut errors = std::mem::take(&mut self.errors);
        let console = [self.out.take_error(), self.err.take_error()];
        self.lost.all |= console.iter().any(Option::is_some);
        errors.extend(console.into_iter().flatten());
        for (inst, f) in self.log_files.iter().enumerate() {
            let Some(w) = f.as_ref().and_then(|f| f.stream.as_ref()) else {
                continue;
            };
            if let Some(e) = w.take_error() {
                self.lost.instances.push(inst);
                // The writer names the path: "cannot write to PATH: why".
                errors.push(e.replacen("cannot write to", "cannot write the log file", 1));
            }
        }
        errors
    }

    /// Whose lines were not all written, as far as the errors taken so far say.
    pub fn lost(&self) -> &LostOutput {
        &self.lost
    }

    /// Updates the bar: done so far, the running / failed counts, and the
    /// longest-running instances when there is room.
    pub fn progress(&self, done: u64, running: usize, failed: usize, longest: &[&str]) {
        if self.bar.is_some() {
            let mut msg = format!("· {running} running");
            if failed > 0 {
                msg.push_str(&format!(" · {failed} failed"));
            }
            if !longest.is_empty() {
                msg.push_str(&format!(" · {}", longest.join(", ")));
            }
            self.err.progress(done, msg);
        }
    }

    /// Appends to instance `inst`'s log file. Out of descriptors, it closes
    /// the other log files, then uses the reserve descriptor for this write.
    fn write_log(&mut self, inst: usize, rec: &[u8]) -> std::io::Result<()> {
        let out_of_fds = |e: &std::io::Error| {
            matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
        };
        match self.log_file(inst) {
            Ok(f) => return f.write_all(rec),
            Err(e) if !out_of_fds(&e) => return Err(e),
            Err(_) => self.close_logs(),
        }
        let has_reserve = self.reserve.is_some();
        match self.log_file(inst) {
            Ok(f) => return f.write_all(rec),
            Err(e) if !out_of_fds(&e) || !has_reserve => return Err(e),
            Err(_) => self.reserve = None,
        }
        let written = self.log_file(inst).and_then(|f| f.write_all(rec));
        self.close_logs();
        self.reserve = std::fs::File::open("/dev/null").ok();
        written
    }

    /// Closes every open log file (they are reopened when written).
    fn close_logs(&mut self) {
        for k in std::mem::take(&mut self.open_logs) {
            if let Some(f) = &mut self.log_files[k] {
                f.file = None;
            }
        }
    }

    /// Instance `inst`'s log file, opened for appending if it is not open;
    /// the one opened longest ago is closed when too many are.
    fn log_file(&mut self, inst: usize) -> std::io::Result<&mut std::fs::File> {
        let open = matches!(&self.log_files[inst], Some(LogFile { file: Some(_), .. }));
        if !open {
            if self.open_logs.len() >= self.open_logs_cap {
                if let Some(old) = self.open_logs.pop_front() {
                    if let Some(f) = &mut self.log_files[old] {
                        f.file = None;
                    }
                }
            }
            let path = match &self.log_files[inst] {
                Some(f) => f.path.clone(),
                None => return Err(std::io::Error::other("closed after an error")),
            };
            let file = std::fs::OpenOptions::new().append(true).open(&path)?;
            if let Some(f) = &mut self.log_files[inst] {
                if !f.settled {
                    file.set_len(0)?;
                    f.settled = true;
                }
                f.file = Some(file);
            }
            self.open_logs.push_back(inst);
        }
        match &mut self.log_files[inst] {
            Some(LogFile {
                file: Some(file), ..
            }) => Ok(file),
            _ => Err(std::io::Error::other("closed after an error")),
        }
    }

    /// Instance `name` starts (`keep` false) or is taken from the cache of a
    /// resumed run (`keep` true): its log file is emptied, or kept as it is.
    pub fn settle_log_of(&mut self, name: &str, keep: bool) {
        if let Some(&inst) = self.log_index.get(name) {
            self.settle_log(inst, keep);
        }
    }

    fn settle_log(&mut self, inst: usize, keep: bool) {
        let Some(Some(f)) = self.log_files.get_mut(inst) else {
            return;
        };
        if f.settled {
            return;
        }
        f.settled = true;
        if keep {
            return;
        }
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .open(&f.path)
            .and_then(|file| file.set_len(0));
        if let Err(e) = emptied {
            self.errors.push(format!(
                "cannot empty the log file {}: {e}",
                f.path.display()
            ));
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
        // Instances that never started: no stale log of an earlier run is left.
        for inst in 0..self.log_files.len() {
            self.settle_log(inst, false);
        }
        for (inst, f) in self.log_files.iter_mut().enumerate() {
            let Some(f) = f else {
                continue;
            };
            let Some(file) = &mut f.file else {
                continue;
            };
            if let Err(e) = file.flush() {
                self.lost.instances.push(inst);
                self.errors.push(format!(
                    "cannot write the log file {}: {e}",
                    f.path.display()
                ));
            }
        }
        for (inst, f) in self.log_files.iter_mut().enumerate() {
            let Some(f) = f else {
                continue;
            };
            if let Some(w) = &mut f.stream {
                if !w.close_unless_stalled(LOG_READER_GRACE, deadline, &mut abandon) {
                    self.lost.instances.push(inst);
                    self.errors.push(format!(
                        "the reader of the log file {} did not read its last lines",
                        f.path.display()
                    ));
                }
            }
        }
        let out_done = self.out.close(deadline, &mut abandon);
        let err_done = self.err.close(deadline, &mut abandon);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut errors = self.take_errors();
        if !out_done || !err_done {
            self.lost.all = true;
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

/// Appends `name | ` padded to `width`, in the name's colour if `color`:
/// byte by byte, as this runs for every log line.
fn push_prefix(out: &mut Vec<u8>, name: &str, width: usize, color: bool) {
    let pad = width.saturating_sub(name.chars().count());
    if color {
        out.extend_from_slice(b"\x1b[");
        out.extend_from_slice(colour_of(name).as_bytes());
        out.push(b'm');
    }
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.extend_from_slice(if color { b" |\x1b[0m " } else { b" | " });
}

/// `worker[2]` -> `worker.2`: names cannot contain `.`, so this never collides.
pub fn log_file_stem(instance: &str) -> String {
    instance.replace('[', ".").replace(']', "")
}

/// A writer thread for a log path that is a FIFO, a terminal or a socket
/// (someone streams a process's log elsewhere); `None` for a regular file or
/// a path that does not exist yet.
fn log_stream(path: &Path, wake: Option<Arc<Wake>>) -> std::io::Result<Option<Writer>> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(kind) = std::fs::metadata(path).map(|m| m.file_type()) else {
        return Ok(None);
    };
    if kind.is_fifo() {
        let target = Target::Fifo(path.display().to_string().into());
        return Ok(Some(Writer::start(target, None, wake)));
    }
    if kind.is_char_device() || kind.is_socket() {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let target = Target::File(Arc::new(file), path.display().to_string().into());
        return Ok(Some(Writer::start(target, None, wake)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stable() {
        assert_eq!(colour_of("load"), colour_of("load"));
    }

    #[test]
    fn log_prefixes_pad_names_and_colour_them() {
        // (name, width, colour) → the prefix, as `format!` would pad it.
        for (name, width) in [("db", 6), ("worker[2]", 6), ("λx", 4), ("", 0)] {
            let pad = width - name.chars().count().min(width);
            for color in [false, true] {
                let mut got = b"x".to_vec();
                push_prefix(&mut got, name, width, color);
                let want = if color {
                    format!("x\x1b[{}m{name}{:pad$} |\x1b[0m ", colour_of(name), "")
                } else {
                    format!("x{name}{:pad$} | ", "")
                };
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    want,
                    "{name} {width} {color}"
                );
            }
        }
    }

    #[test]
    fn log_file_names_cannot_collide() {
        assert_eq!(log_file_stem("worker[2]"), "worker.2");
    }
}
