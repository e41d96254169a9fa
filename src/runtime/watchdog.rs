//! The watchdog: a tiny process that outlives the engine only to clean up.
//!
//! The engine starts it first, in its own process group (so a terminal's
//! Ctrl-C does not reach it), with the read end of a pipe as its stdin. The
//! engine holds the write end (close-on-exec, so no job inherits it) and
//! reports each process group it creates (and forgets each once empty: its
//! id may then be reused by an unrelated process). If the pipe reaches EOF without the
//! engine's final `done`, the engine died — SIGKILL included — and the
//! watchdog kills every group it was told about and every process whose
//! environment carries this run's marker, until none is left.

use super::hygiene;
use nix::sys::signal::Signal;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};

/// The engine's end of the watchdog link.
pub struct Watchdog {
    child: Child,
    link: Option<std::fs::File>,
    pending: String,
    flushed: std::time::Instant,
}

/// Group reports are sent at most this often.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Watchdog {
    /// Starts `jobgraph __watchdog MARKER` (the current executable).
    pub fn start(marker: &str) -> std::io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(exe)
            .arg("__watchdog")
            .arg(marker)
            // In a nested run this is the outer run's marker: carrying it, the
            // watchdog would be killed by the outer one before it cleaned up
            // its own run (whose processes carry only the inner marker).
            .env_remove("JOBGRAPH_RUN")
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let link = std::fs::File::from(write);
        Ok(Watchdog {
            child,
            link: Some(link),
            pending: String::new(),
            flushed: std::time::Instant::now(),
        })
    }

    /// The watchdog's pid, to tell it apart from the run's processes.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Notes a process group the engine created; sent with the next [`Watchdog::flush`].
    pub fn watch(&mut self, pgid: i32) {
        self.pending.push_str(&format!("g {pgid}\n"));
    }

    /// Notes that a group the engine created is empty (its id may be reused:
    /// the watchdog must no longer kill it); sent with the next flush.
    pub fn forget(&mut self, pgid: i32) {
        self.pending.push_str(&format!("f {pgid}\n"));
    }

    /// Sends the groups noted since the last flush in one write. Batching keeps
    /// the watchdog asleep during bursts of launches; a group not yet sent when
    /// the engine dies is still found through the run's environment marker.
    /// An error means the watchdog is gone (its pipe broke): the caller says
    /// so; the engine then reaps it and notes that a crash would leave processes.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        if let (Some(link), false) = (&mut self.link, self.pending.is_empty()) {
            result = link.write_all(self.pending.as_bytes());
            if result.is_err() {
                self.link = None;
            }
        }
        self.pending.clear();
        self.flushed = std::time::Instant::now();
        result
    }

    /// When the noted groups should be sent at the latest, if any are waiting.
    pub fn due(&self) -> Option<std::time::Instant> {
        (!self.pending.is_empty()).then(|| self.flushed + FLUSH_EVERY)
    }

    /// Tells the watchdog the run ended cleanly. The caller reaps it.
    /// A failed write means it is already gone: nothing is left for it to do.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.flush()?;
        match self.link.take() {
            Some(mut link) => link.write_all(b"done\n"),
            None => Ok(()),
        }
    }
}

/// The watchdog's main: returns the process exit code.
pub fn main(marker: &str) -> i32 {
    // Ignore the signals a terminal or the engine's own group could deliver.
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    let mut groups = std::collections::HashSet::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line == "done" {
            return 0;
        }
        if let Some(g) = line.strip_prefix("g ").and_then(|g| g.parse::<i32>().ok()) {
            groups.insert(g);
        } else if let Some(g) = line.strip_prefix("f ").and_then(|g| g.parse::<i32>().ok()) {
            groups.remove(&g);
        }
    }
    // EOF without "done": the engine is gone. Kill everything of this run.
    let tag = format!("JOBGRAPH_RUN={marker}");
    for round in 0..50 {
        let mut any = false;
        for &g in &groups {
            any |= hygiene::signal_group(g, libc::SIGKILL);
        }
        for pid in hygiene::marked(tag.as_bytes()) {
            any |= hygiene::signal_pid(pid, Signal::SIGKILL);
        }
        if !any {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(if round < 10 {
            20
        } else {
            100
        }));
    }
    0
}
