//! A background writer: the engine hands it bytes and never waits on the
//! descriptor. A stalled reader of the engine's stdout (a paused pager, a
//! full FIFO) then blocks only this thread; the engine sees the backlog grow
//! and stops reading its children's output, so backpressure reaches them and
//! nothing is dropped, while timers, probes, reaping and signals go on.

use indicatif::ProgressBar;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a [`Writer`] writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The engine's stdout.
    Stdout,
    /// The engine's stderr.
    Stderr,
    /// A file (the `--events` device or socket), and its name.
    File(Arc<std::fs::File>, Arc<str>),
    /// A FIFO, opened by the writer thread: opening one blocks until a
    /// reader comes, which must not hold up the engine.
    Fifo(Arc<str>),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Stdout => "standard output".into(),
            Target::Stderr => "standard error".into(),
            Target::File(_, path) | Target::Fifo(path) => path.to_string(),
        }
    }
}

pub use crate::runtime::report::Wake;

#[derive(Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    bytes: usize,
    closed: bool,
    /// The first write error, in words, until taken; the reader went away (EPIPE) is not one.
    error: Option<String>,
    /// A write failed: the rest is dropped (and the error reported only once).
    failed: bool,
    /// The engine asked to be woken when the backlog drains.
    wake_wanted: bool,
    /// The latest progress to show (position, message), applied by the thread.
    progress: Option<(u64, String)>,
    /// Take the bar off the screen for good before writing anything else.
    hide_bar: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's end of one background writer.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    target: Target,
}

/// Set once the stderr writer was given up on: its thread is blocked in
/// write(2), holding the lock on stderr, for a reader that does not read.
static STDERR_GIVEN_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `text` to stderr, unless its reader was given up on: a write then
/// would wait for ever (on the lock the blocked writer holds, or on the
/// full pipe), and the run could not exit. Returns whether it was written.
pub fn write_stderr(text: &str) -> bool {
    if STDERR_GIVEN_UP.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())
        .and_then(|()| err.flush())
        .is_ok()
}

/// Above this many queued bytes the engine stops reading its children.
pub const HIGH_WATER: usize = 1 << 20;
/// The engine is woken to read again once the backlog is below this.
pub const LOW_WATER: usize = 256 << 10;

impl Writer {
    /// Starts the thread. Writes are made with `bar` (if any) hidden, so log
    /// lines and notes never garble the progress bar.
    pub fn start(target: Target, bar: Option<ProgressBar>, wake: Option<Arc<Wake>>) -> Writer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let inner = Arc::clone(&shared);
        let name = match &target {
            Target::Stdout => "jobgraph-stdout",
            Target::Stderr => "jobgraph-stderr",
            Target::File(..) | Target::Fifo(_) => "jobgraph-file",
        };
        let thread = crate::runtime::hygiene::spawn_thread(name, {
            let target = target.clone();
            move || write_loop(&inner, &target, bar.as_ref(), wake.as_deref())
        })
        .ok();
        Writer {
            shared,
            thread,
            target,
        }
    }

    /// Queues bytes; never blocks on the descriptor.
    pub fn send(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.thread.is_none() {
            // No thread could be started: write in place rather than lose output.
            let result = write_now(&self.target, None, &bytes);
            record(&mut self.shared.lock(), &self.target, result);
            return;
        }
        let mut st = self.shared.lock();
        st.bytes += bytes.len();
        st.chunks.push_back(bytes);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// A handle that can queue bytes from elsewhere (the event stream).
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Shows this progress on the bar, from the writer thread.
    pub fn progress(&self, pos: u64, msg: String) {
        self.shared.lock().progress = Some((pos, msg));
        self.shared.changed.notify_all();
    }

    /// Removes the bar for good, before anything queued after this call.
    pub fn hide_bar(&self) {
        self.shared.lock().hide_bar = true;
        self.shared.changed.notify_all();
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Whether the backlog is over [`HIGH_WATER`]; if so the writer will wake
    /// the engine once it fell below [`LOW_WATER`].
    pub fn backlogged(&self) -> bool {
        let mut st = self.shared.lock();
        if st.bytes > HIGH_WATER {
            st.wake_wanted = true;
            true
        } else {
            false
        }
    }

    /// The first write error, once.
    pub fn take_error(&self) -> Option<String> {
        self.shared.lock().error.take()
    }

    /// Writes everything queued, then stops the thread. Gives up at `deadline`
    /// or when `abandon` says so (checked every 50 ms): a reader that never
    /// reads must not keep a killed run alive. Returns whether all was written.
    pub fn close(&mut self, deadline: Option<Instant>, abandon: impl FnMut() -> bool) -> bool {
        self.close_with(deadline, None, abandon)
    }

    /// As [`Writer::close`], but also gives up once `stall` passes with no
    /// byte written: a reader that reads, however slowly, gets everything.
    pub fn close_unless_stalled(
        &mut self,
        stall: Duration,
        deadline: Option<Instant>,
        abandon: impl FnMut() -> bool,
    ) -> bool {
        self.close_with(deadline, Some(stall), abandon)
    }

    fn close_with(
        &mut self,
        deadline: Option<Instant>,
        stall: Option<Duration>,
        mut abandon: impl FnMut() -> bool,
    ) -> bool {
        {
            let mut st = self.shared.lock();
            st.closed = true;
        }
        self.shared.changed.notify_all();
        let (mut left, mut moved) = (usize::MAX, Instant::now());
        loop {
            let st = self.shared.lock();
            if st.bytes == 0 {
                break;
            }
            let (st, _) = self
                .shared
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            if st.bytes == 0 {
                break;
            }
            if st.bytes != left {
                (left, moved) = (st.bytes, Instant::now());
            }
            drop(st);
            let stalled = stall.is_some_and(|s| moved.elapsed() >= s);
            if stalled || deadline.is_some_and(|d| Instant::now() >= d) || abandon() {
                // The thread stays blocked in write(2); the process exits around it.
                self.thread = None;
                if matches!(self.target, Target::Stderr) {
                    STDERR_GIVEN_UP.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                return false;
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }
}

/// Queues bytes on a [`Writer`] from another owner.
#[derive(Clone)]
pub struct WriterHandle {
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues bytes; never blocks on the descriptor.
    pub fn send(&self, bytes: Vec<u8>) {
        let mut st = self.shared.lock();
        if st.closed {
            return;
        }
        st.bytes += bytes.len();
        st.chunks.push_back(bytes);
        drop(st);
        self.shared.changed.notify_all();
    }
}

fn write_loop(shared: &Shared, target: &Target, bar: Option<&ProgressBar>, wake: Option<&Wake>) {
    let opened;
    let target = match target {
        Target::Fifo(path) => match std::fs::OpenOptions::new().write(true).open(&**path) {
            Ok(f) => {
                opened = Target::File(Arc::new(f), Arc::clone(path));
                &opened
            }
            Err(e) => {
                // Recorded as failed: what is queued is then only counted off.
                record(&mut shared.lock(), target, Err(e));
                target
            }
        },
        _ => target,
    };
    loop {
        let mut st = shared.lock();
        while st.chunks.is_empty() && !st.closed && st.progress.is_none() && !st.hide_bar {
            st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if std::mem::take(&mut st.hide_bar) {
            st.progress = None;
            drop(st);
            if let Some(b) = bar {
                b.finish_and_clear();
                // A terminal's `^C` echo can leave the cursor past what the bar
                // drew: clear the whole line so no stale bar stays above the notes.
                let cleared = std::io::stderr().lock().write_all(b"\r\x1b[2K");
                record(&mut shared.lock(), &Target::Stderr, cleared);
            }
            continue;
        }
        if let Some((pos, msg)) = st.progress.take() {
            // Drawing the bar writes to the terminal: done here, never in the engine's loop.
            drop(st);
            if let Some(b) = bar {
                b.set_position(pos);
                b.set_message(msg);
            }
            continue;
        }
        // Write everything queued in one go: fewer syscalls, fewer bar redraws.
        let mut batch: Vec<u8> = Vec::new();
        while let Some(c) = st.chunks.pop_front() {
            if batch.is_empty() {
                batch = c;
            } else {
                batch.extend_from_slice(&c);
            }
            if batch.len() >= 256 << 10 {
                break;
            }
        }
        if batch.is_empty() && st.closed {
            return;
        }
        let failed = st.failed;
        drop(st);
        // After an error the rest is dropped: its bytes are still accounted for below.
        let result = if failed {
            Ok(())
        } else {
            write_now(target, bar, &batch)
        };
        let mut st = shared.lock();
        st.bytes = st.bytes.saturating_sub(batch.len());
        record(&mut st, target, result);
        let wake_now = st.wake_wanted && st.bytes < LOW_WATER;
        if wake_now {
            st.wake_wanted = false;
        }
        drop(st);
        shared.changed.notify_all();
        if let (true, Some(w)) = (wake_now, wake) {
            w();
        }
    }
}

/// Keeps the first write error, to be reported once.
fn record(st: &mut State, target: &Target, result: std::io::Result<()>) {
    match result {
        Ok(()) => {}
        // The reader went away (`| head`): its choice, not an error of the run.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            if !std::mem::replace(&mut st.failed, true) {
                st.error = Some(format!("cannot write to {}: {e}", target.name()));
            }
        }
    }
}

fn write_now(target: &Target, bar: Option<&ProgressBar>, bytes: &[u8]) -> std::io::Result<()> {
    let mut result = Ok(());
    let mut write = || {
        result = match target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
            Target::File(file, _) => (&**file).write_all(bytes),
            // Opened by the thread before its first write; never written as such.
            Target::Fifo(_) => Ok(()),
        };
    };
    match bar {
        Some(b) => b.suspend(write),
        None => write(),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_waits_for_everything_queued() {
        let mut w = Writer::start(Target::Stderr, None, None);
        w.send(b"".to_vec());
        assert_eq!(w.backlog(), 0);
        assert!(w.close(None, || false));
    }
}
