//! What a run tells the world, as typed values pushed to a [`Reporter`].
//!
//! The runtime knows nothing of terminals, colours, NDJSON or log files: it
//! emits [`RunEvent`]s, log lines and notes, and a reporter (the console and
//! event stream of `report::live`, or a test's recorder) renders them. Like
//! ripgrep's `Sink`, the push interface keeps the layers apart: data flows
//! from the runtime to the reporter, never back, except for the reporter's
//! backpressure ([`Reporter::backlogged`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Called from another thread to wake the engine's loop.
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// Everything that happens to a run, one variant per NDJSON `event`.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent<'a> {
    /// The run began.
    RunStarted {
        /// `pid-namespace`, `marker` or `none`.
        containment: &'a str,
        /// The engine's pid (as its processes see it).
        pid: i32,
    },
    /// An attempt's process was spawned.
    Started {
        process: &'a str,
        pid: i32,
        attempt: u32,
    },
    /// An attempt could not be spawned.
    FailedToStart {
        process: &'a str,
        attempt: u32,
        reason: &'a str,
    },
    /// Its readiness probe passed.
    Ready { process: &'a str, pid: i32 },
    /// An attempt ended (its process exited and its output was drained).
    Exited {
        process: &'a str,
        pid: Option<i32>,
        code: Option<i32>,
        signal: Option<&'a str>,
        duration: Option<Duration>,
        attempt: u32,
        status: &'a str,
        /// `retry` or `restart` when another attempt follows; absent when
        /// this exit is the instance's last.
        then: Option<&'a str>,
    },
    /// A retry is scheduled.
    Retrying { process: &'a str, attempt: u32 },
    /// A restart is scheduled, after `delay`.
    Restarting {
        process: &'a str,
        attempt: u32,
        delay: Duration,
    },
    /// It will never run.
    Skipped { process: &'a str, reason: &'a str },
    /// Not run: it ended ok in the last run, unchanged (`--resume`).
    Cached { process: &'a str },
    /// It was waiting for a retry or restart that will not happen.
    Stopped { process: &'a str, reason: &'a str },
    /// Its subtree (itself and its non-daemon descendants) is finished.
    Joined {
        process: &'a str,
        status: &'a str,
        reason: Option<&'a str>,
    },
    /// Its stop signal was sent.
    Stopping {
        process: &'a str,
        pid: i32,
        signal: &'a str,
    },
    /// SIGKILL was sent to its group.
    Killed { process: &'a str, pid: i32 },
    /// Its health check failed `failures` times in a row: it is stopped and fails.
    HealthFailed {
        process: &'a str,
        pid: i32,
        failures: u32,
    },
    /// A cluster executor placed the unit: `queued` (submitted, waiting for
    /// resources) or `running`, with the job, step and node as far as known.
    Placed {
        process: &'a str,
        pid: i32,
        state: &'a str,
        job_id: &'a str,
        step_id: Option<&'a str>,
        node: Option<&'a str>,
    },
    /// A queue's counts, at the end.
    Queue {
        queue: &'a str,
        messages_in: u64,
        messages_out: u64,
        lost: u64,
        requeued: u64,
        /// Messages delivered to each consumer instance.
        per_consumer: &'a [(String, u64)],
    },
    /// The run ended.
    RunFinished {
        code: i32,
        duration: Duration,
        engine_peak_rss_kib: u64,
    },
}

impl RunEvent<'_> {
    /// The NDJSON `event` name.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => "run-started",
            RunEvent::Started { .. } => "started",
            RunEvent::FailedToStart { .. } => "failed-to-start",
            RunEvent::Ready { .. } => "ready",
            RunEvent::Exited { .. } => "exited",
            RunEvent::Retrying { .. } => "retrying",
            RunEvent::Restarting { .. } => "restarting",
            RunEvent::Skipped { .. } => "skipped",
            RunEvent::Cached { .. } => "cached",
            RunEvent::Stopped { .. } => "stopped",
            RunEvent::Joined { .. } => "joined",
            RunEvent::Stopping { .. } => "stopping",
            RunEvent::Killed { .. } => "killed",
            RunEvent::HealthFailed { .. } => "health-failed",
            RunEvent::Placed { .. } => "placed",
            RunEvent::Queue { .. } => "queue",
            RunEvent::RunFinished { .. } => "run-finished",
        }
    }
}

/// Every `event` name, in the order of the docs' table.
pub const EVENT_NAMES: &[&str] = &[
    "run-started",
    "started",
    "failed-to-start",
    "ready",
    "exited",
    "retrying",
    "restarting",
    "skipped",
    "cached",
    "stopped",
    "joined",
    "stopping",
    "killed",
    "health-failed",
    "placed",
    "queue",
    "run-finished",
];

/// The progress of a run, for a bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Instances done (ended or skipped).
    pub done: u64,
    /// Instances running.
    pub running: usize,
    /// Instances failed.
    pub failed: usize,
    /// The longest-running instances, longest first.
    pub longest: &'a [&'a str],
}

/// What a reporter learns when the run starts.
pub struct RunStart<'a> {
    /// Every instance's name, in launch order (`worker[2]`).
    pub names: &'a [String],
    /// A process of the run reads or writes the terminal itself: no bar.
    pub terminal_taken: bool,
    /// Wakes the engine once a backlog has drained.
    pub wake: Arc<Wake>,
}

/// A process's peak resident set size, as the kernel reports it at the reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakRss {
    /// The process's own peak, in KiB.
    Measured(u64),
    /// At most this many KiB: the kernel also counts, for a child, the memory
    /// it ran in before its `exec`, which is the engine's. A figure no larger
    /// than the engine's own peak at the spawn says only that the process
    /// used no more than that.
    AtMost(u64),
}

impl PeakRss {
    /// The figure, in KiB.
    pub fn kib(self) -> u64 {
        match self {
            PeakRss::Measured(k) | PeakRss::AtMost(k) => k,
        }
    }

    /// The larger of two peaks; at equal figures, the measured one.
    pub fn max(self, other: PeakRss) -> PeakRss {
        match (self.kib().cmp(&other.kib()), other) {
            (std::cmp::Ordering::Less, _) | (std::cmp::Ordering::Equal, PeakRss::Measured(_)) => {
                other
            }
            _ => self,
        }
    }

    /// What the kernel reported (`reaped` KiB) for a child of an engine
    /// whose own peak is `engine` KiB; `None` when it reported nothing.
    ///
    /// The kernel counts in a child's peak the engine's resident memory at
    /// the child's exec, and that can pass the engine's recorded peak by a
    /// little (freed pages given back with `madvise` leave no trace in it),
    /// so a figure within 1 MiB + 1/8 of it is shown as a bound: "at most"
    /// is true of it either way.
    pub fn of(reaped: u64, engine: u64) -> Option<PeakRss> {
        match reaped {
            0 => None,
            k if k <= engine + engine / 8 + 1024 => Some(PeakRss::AtMost(k)),
            k => Some(PeakRss::Measured(k)),
        }
    }
}

/// Whose output lines were not all written (see [`Reporter::lost`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LostOutput {
    /// stdout or stderr failed: any instance's lines may be lost.
    pub all: bool,
    /// Instances (by index) whose log file failed.
    pub instances: Vec<usize>,
}

/// Why a reporter could not start; the run ends before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--log-dir` could not be created.
    #[error("cannot create the log directory {}: {source}", path.display())]
    LogDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// A log file could not be opened (a FIFO or device there).
    #[error("cannot open the log file {}: {source}", path.display())]
    OpenLog {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// A log file could not be created.
    #[error("cannot create the log file {}: {source}", path.display())]
    CreateLog {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The `--events` target could not be opened.
    #[error("cannot open --events {target}: {source}")]
    Events {
        /// The target as given.
        target: String,
        /// Why not.
        source: std::io::Error,
    },
}

/// Receives what a run tells (see the module doc).
pub trait Reporter {
    /// The run starts; an error (a log directory that cannot be made) ends it.
    fn start(&mut self, start: RunStart<'_>) -> Result<(), StartError>;
    /// One event.
    fn event(&mut self, e: &RunEvent<'_>);
    /// One line of output of instance number `inst`, named `name`.
    fn line(&mut self, inst: usize, name: &str, line: &[u8]);
    /// The engine about one instance (`server | ready after 1.20s`).
    fn instance_note(&mut self, name: &str, text: &str);
    /// The engine about the run; errors show even when quiet.
    fn note(&mut self, text: &str, error: bool);
    /// A status table (SIGUSR1).
    fn status(&mut self, text: &str);
    /// Whether progress is shown at all (so the engine can skip computing it).
    fn wants_progress(&self) -> bool {
        false
    }
    /// The current progress.
    fn progress(&mut self, _p: Progress<'_>) {}
    /// Hands on what was batched.
    fn flush(&mut self) {}
    /// Output waits beyond what the reporter wants to hold: the engine stops
    /// reading its processes until woken.
    fn backlogged(&self) -> bool {
        false
    }
    /// Write errors since the last call, each once, in words.
    fn take_errors(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// After [`Reporter::finish`]: whose output lines were not all written
    /// (a log file or the console failed, or its reader was given up on).
    fn lost(&self) -> LostOutput {
        LostOutput::default()
    }
    /// A shutdown began (notes and the summary follow).
    fn shutdown_began(&mut self) {}
    /// The run ended: write what is queued, giving up at `deadline` or when
    /// `abandon` says so. Returns write errors not reported yet.
    fn finish(
        &mut self,
        _deadline: Option<Instant>,
        _abandon: &mut dyn FnMut() -> bool,
    ) -> Vec<String> {
        Vec::new()
    }
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
    /// Peak resident set size, from rusage; `None` when not known (a cluster unit).
    pub peak_rss: Option<PeakRss>,
    /// Queue messages received / sent / lost in flight to it / requeued from
    /// it; `None` when the graph has no queue.
    pub queue: Option<(u64, u64, u64, u64)>,
    /// Restarts under `restart`; `None` when no process has a restart policy.
    pub restarts: Option<u32>,
    /// Why it did not end `ok`, in words (shown on non-ok rows).
    pub reason: Option<String>,
    /// The process and replica index, for a replicated process (rows fold).
    pub replica: Option<(String, u32)>,
}

/// One queue's counts at the end of a run.
#[derive(Debug, Clone)]
pub struct QueueSummary {
    /// The queue's name.
    pub name: String,
    /// Messages read from producers.
    pub messages_in: u64,
    /// Messages delivered.
    pub messages_out: u64,
    /// Messages lost.
    pub lost: u64,
    /// Messages a consumer left unread, put back in the queue.
    pub requeued: u64,
    /// Per consumer instance: its name and messages delivered to it.
    pub per_consumer: Vec<(String, u64)>,
}

#[cfg(test)]
mod peak_rss_tests {
    use super::PeakRss;

    #[test]
    fn a_peak_no_larger_than_the_engines_is_a_bound() {
        assert_eq!(PeakRss::of(0, 9000), None);
        assert_eq!(PeakRss::of(9000, 9000), Some(PeakRss::AtMost(9000)));
        assert_eq!(PeakRss::of(8000, 9000), Some(PeakRss::AtMost(8000)));
        assert_eq!(PeakRss::of(11149, 9000), Some(PeakRss::AtMost(11149)));
        assert_eq!(PeakRss::of(11150, 9000), Some(PeakRss::Measured(11150)));
    }

    #[test]
    fn the_larger_peak_wins_and_a_measured_one_at_a_tie() {
        let (m, b) = (PeakRss::Measured(10), PeakRss::AtMost(10));
        assert_eq!(m.max(b), m);
        assert_eq!(b.max(m), m);
        assert_eq!(b.max(PeakRss::Measured(5)), b);
        assert_eq!(
            PeakRss::Measured(5).max(PeakRss::AtMost(6)),
            PeakRss::AtMost(6)
        );
    }
}
