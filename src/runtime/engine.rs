//! The dispatcher: one loop that alone owns every instance's state.

mod apply;
mod attempts;
mod cancel;
mod exits;
mod finish;
mod http_url;
mod ids;
mod inst;
mod launch;
mod output;
mod probes;
mod queues;
mod resume;
mod sched;
mod schedule;
mod setup;
mod sources;
mod status;
mod stop;
mod timers;

pub use resume::resume_preview;

use super::executor::{Executor, Exit, Local, UnitId, Verdict};
use super::hygiene;
use super::posix::{self, Prepared};
use super::report::{PeakRss, Progress, QueueSummary, Reporter, RunEvent, RunStart, SummaryRow};
use super::spawn::{self, Launch, Sink};
use super::watchdog::Watchdog;
use crate::graph::{DepKind, Graph};
use crate::spec::Condition;
use crate::streams::broker;
use attempts::{exit_parts, Again};
use cancel::Cancel;
use ids::{InstId, PerInst, PerProc, PerQueue, ProcId, QueueId};
use inst::{Attempt, End, Inst, Phase, Probing};
use mio::unix::SourceFd;
use mio::{Events as PollEvents, Interest, Poll, Token};
use nix::sys::signal::Signal;
use rustc_hash::FxHashMap;
use sched::{Cursor, Effect, Sched, Start};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long output pipes may stay open after their process exited (a
/// grandchild holding them) before the engine stops waiting for EOF.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Between SIGKILLs while a group still has members.
const KILL_RECHECK: Duration = Duration::from_millis(100);
/// A log line longer than this is cut into pieces.
const MAX_LINE: usize = 64 * 1024;
const SIGNALS: Token = Token(0);
/// The console's writers wake the loop through this when their backlog drained.
const WAKE: Token = Token(usize::MAX);
/// The size of one read from an output pipe.
const READ_CHUNK: usize = 64 * 1024;
/// At most this much is read from one output pipe before others get a turn.
const READ_TURN: usize = 256 * 1024;
/// Most bytes asked of an exited process's pipe while the console is
/// backlogged: one pipe's worth, what the process itself could have left,
/// and a byte more so that the same turn sees its end-of-file.
const BACKLOGGED_DRAIN: usize = 64 * 1024 + 1;
/// How long one pass may spend launching before the loop serves timers,
/// exits and signals again (a launch costs about half a millisecond).
const LAUNCH_SLICE: Duration = Duration::from_millis(4);

/// What `jobgraph run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run only these processes and what they need.
    pub only: Vec<String>,
    /// Keep going after a failure (overrides `fail_fast = true`).
    pub keep_going: bool,
    /// Overrides `[graph] max_parallel`.
    pub max_parallel: Option<u32>,
    /// How the run's processes are contained (see [`super::contain`]).
    pub containment: super::contain::Containment,
    /// Where the run's journal goes (see [`super::journal`]); `None`: no journal.
    pub journal: Option<PathBuf>,
    /// Skip what ended ok in the last run, unchanged (`--resume`).
    pub resume: bool,
    /// `only` names exactly the processes to run (`--members`): no closure,
    /// and dependencies outside them are taken as met.
    pub exact: bool,
    /// The engine's stdout carries the events (`--events -`): a process's
    /// `stdout = "inherit"` goes to the engine's stderr instead.
    pub stdout_is_events: bool,
}

/// Why a run could not be started at all (its processes' failures are in
/// the [`RunOutcome`], not here).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--only` named something the graph lacks.
    #[error("{0}")]
    Only(String),
    /// The event loop could not be made.
    #[error("cannot create the event loop: {0}")]
    EventLoop(#[source] std::io::Error),
    /// Signal handlers could not be installed or watched.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// /dev/null could not be opened.
    #[error("cannot open /dev/null: {0}")]
    DevNull(#[source] std::io::Error),
    /// The reporter could not start (a log directory or events file).
    #[error("{0}")]
    Reporter(#[source] super::report::StartError),
    /// More instances than the engine can number.
    #[error("a run can have at most {} instances", u32::MAX)]
    TooManyInstances,
    /// More instances than this machine's memory can hold.
    #[error("{instances} instances need about {} MiB of the engine's memory; {} MiB are available (run fewer replicas, or part of the graph with --only)", need >> 20, have >> 20)]
    TooLarge {
        /// Instances in the run.
        instances: u64,
        /// Bytes they would take, at the least.
        need: u64,
        /// Bytes available (memory, or the address-space limit).
        have: u64,
    },
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// 0 ok, 1 failure, 130 / 143 / 129 interrupted.
    pub exit_code: u8,
    /// One row per instance, in launch order.
    pub rows: Vec<SummaryRow>,
    /// Each queue's counts.
    pub queues: Vec<QueueSummary>,
    /// How long the run took.
    pub elapsed: Duration,
    /// The signal that interrupted it, if any.
    pub interrupted: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Not run: it ended ok in the last run, unchanged (`--resume`).
    Cached,
    Failed,
    TimedOut,
    Skipped,
    Stopped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Skipped => "skipped",
            Outcome::Stopped => "stopped",
        }
    }
    fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }
    /// Succeeded, now or in the run it was cached from.
    fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Cached)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Its `timeout` passed.
    Timeout,
    /// The graph is stopping: a failure with fail_fast, or a signal.
    Shutdown,
    /// A daemon whose parent (or the whole graph) finished.
    DaemonEnd,
    /// Its readiness probe did not pass in time.
    NotReady,
    /// Its health check failed too many times in a row.
    Unhealthy,
}

/// An instance asked to stop, in the current attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stop {
    /// Why.
    reason: StopReason,
    /// Once its stop signal was sent: when, and when SIGKILL is (re)sent.
    signalled: Option<Signalled>,
}

/// A stop signal sent, and the SIGKILL behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signalled {
    /// When the stop signal was sent.
    at: Instant,
    /// When SIGKILL goes to its group (again, until it is gone).
    next_kill: Instant,
}

impl Stop {
    fn new(reason: StopReason) -> Stop {
        Stop {
            reason,
            signalled: None,
        }
    }
}

/// Every instance of the run, by [`InstId`].
type Insts = PerInst<Inst>;

struct Pipe {
    inst: InstId,
    file: std::fs::File,
    buf: Vec<u8>,
    /// In `Engine::readable`: may hold data not read yet.
    queued: bool,
    /// Its attempt ended without waiting for it any more (a leftover
    /// process held it open past the drain): still read, its lines still
    /// the instance's, until end-of-file or the end of the run. Closing it
    /// would kill that process with SIGPIPE at its next write.
    detached: bool,
    /// Bytes read while the console was backlogged (see `BACKLOGGED_DRAIN`).
    read_backlogged: usize,
}

/// A process group created by the run that may still have members.
struct Group {
    pgid: UnitId,
    inst: InstId,
    /// Its leader was reaped: the group lives on only while leftovers do,
    /// and once empty its id may be any new process's (pids wrap).
    leader_gone: bool,
}

struct Engine<'g> {
    g: &'g Graph,
    /// The scheduling core: every instance's state, and what may start next.
    core: sched::Sched<'g>,
    base: PathBuf,
    /// Launching stopped at the end of a slice with instances still ready to go.
    launch_more: bool,
    /// Probes were due but the slice ran out: the loop comes back at once.
    probes_pending: bool,
    /// When the current launch slice ends.
    slice_end: Instant,
    /// When the progress bar may be updated next.
    progress_due: Instant,
    poll: Poll,
    signals: Signals,
    /// Every event source of the loop, by token.
    sources: sources::Sources,
    /// The buffer output pipes are read into.
    read_buf: Vec<u8>,
    /// Output pipes that may hold unread data: left for later because the
    /// console is backlogged, or because they had their turn.
    readable: Vec<usize>,
    /// A log, event or console write failed: the run cannot exit 0.
    output_failed: bool,
    /// The engine started as the foreground of the terminal on its stdin.
    terminal: bool,
    /// The instance that holds the terminal's foreground (`stdin = "inherit"`).
    tty_holder: Option<InstId>,
    /// Launches, signals and reaps the units.
    exec: Box<dyn Executor>,
    by_pid: FxHashMap<UnitId, InstId>,
    groups: Vec<Group>,
    /// When the groups whose leader is gone were last checked for members.
    groups_checked: Instant,
    /// How many groups' leader is gone (their leftovers still run).
    leaderless: usize,
    /// rusage's peak is still that of the program that exec'd the engine.
    rusage_inherited: bool,
    /// Process ids are the host's (no PID namespace): a group id may name
    /// an unrelated process's group once the run's group is empty.
    shared_pids: bool,
    /// Per instance: its launch, and the same prepared for posix_spawn (or why it cannot be).
    launches: PerInst<Option<(Launch, std::io::Result<Prepared>)>>,
    /// Working directories found to exist (each is looked at once).
    cwd_seen: rustc_hash::FxHashSet<PathBuf>,
    /// Output files (device, inode) emptied by this run: each is emptied
    /// once, at its first opening, whatever its spelling or however many
    /// instances share it; every later opening appends.
    truncated: rustc_hash::FxHashSet<(u64, u64)>,
    /// /dev/null, for `null` streams.
    null: std::fs::File,
    engine_env: Vec<(OsString, OsString)>,
    /// The run's marker: `JOBGRAPH_RUN` in every process, and the journal's run id.
    marker: String,
    /// Where everything the run tells goes.
    reporter: Box<dyn Reporter>,
    watchdog: Option<Watchdog>,
    /// Out of descriptors or processes: no launch until this passes or a process exits.
    resource_wait: Option<Instant>,
    /// That was said once.
    resource_noted: bool,
    /// `--events -`: `stdout = "inherit"` goes to the engine's stderr.
    stdout_is_events: bool,
    /// The run's journal, and each instance's definition fingerprint.
    journal: Option<super::journal::Journal>,
    keys: PerInst<String>,
    started_at: Instant,
    /// Per queue: its broker and the instances at its ends, once its
    /// stream group started.
    queues: PerQueue<Option<queues::LiveQueue>>,
    /// Per process: its `ready.log` regex.
    log_probes: Vec<Option<regex::Regex>>,
    /// Running `cmd` probes: pid to instance and check.
    probe_pids: FxHashMap<UnitId, (InstId, probes::Check)>,
    /// Resolved probe addresses, per instance and port.
    tcp_addrs: FxHashMap<(InstId, u16), std::net::SocketAddr>,
    /// The node each instance's unit runs on, when a cluster executor said so:
    /// tcp and http probes of a local address go there.
    nodes: FxHashMap<InstId, String>,
    /// Answers of http probes, from their threads.
    http_tx: std::sync::mpsc::Sender<probes::HttpAnswer>,
    http_rx: std::sync::mpsc::Receiver<probes::HttpAnswer>,
    /// Wakes the loop from another thread.
    waker: std::sync::Arc<mio::Waker>,
}

/// Runs a validated graph whose relative paths resolve against `base`, as
/// processes on this machine, telling `reporter` what happens.
pub fn run(
    g: &Graph,
    base: &Path,
    opts: &RunOptions,
    reporter: Box<dyn Reporter>,
) -> Result<RunOutcome, RunError> {
    run_with(g, base, opts, Box::new(Local::default()), reporter)
}

/// Runs a validated graph with units launched by `exec`.
pub fn run_with(
    g: &Graph,
    base: &Path,
    opts: &RunOptions,
    exec: Box<dyn Executor>,
    reporter: Box<dyn Reporter>,
) -> Result<RunOutcome, RunError> {
    let mut e = Engine::new(g, base, opts, exec, reporter)?;
    e.emit(RunEvent::RunStarted {
        containment: opts.containment.as_str(),
        pid: std::process::id() as i32,
    });
    if let Some(path) = &opts.journal {
        let marker = e.marker().to_string();
        e.start_journal(path, opts.resume, &marker);
    }
    e.main_loop();
    e.sweep();
    e.read_detached();
    Ok(e.finish())
}

/// The engine process's own set-up: signals on the loop, standard
/// descriptors guarded, subreaper, inherited descriptors close-on-exec.
/// Returns the signals, /dev/null, and whether the engine owns a terminal.
fn prepare_engine_process(poll: &Poll) -> Result<(Signals, std::fs::File, bool), RunError> {
    let mut signals = Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGQUIT, SIGUSR2])
        .map_err(RunError::Signals)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(RunError::Signals)?;
    // Signals sent before the handlers were in were held (the engine as pid 1
    // of its namespace would have dropped them): they are taken now.
    super::contain::release_signals();
    hygiene::ensure_std_fds();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(RunError::DevNull)?;
    hygiene::become_subreaper();
    let terminal = hygiene::foreground_terminal().is_some();
    if terminal {
        hygiene::ignore_ttou();
    }
    hygiene::cloexec_inherited_fds();
    Ok((signals, null, terminal))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig).map_or("signal", |s| s.as_str())
}

impl Engine<'_> {
    /// Sends `sig` to instance `k`'s unit while it is alive (a unit reaped
    /// already is not signalled: its id may be another's by now).
    fn signal_unit(&mut self, k: InstId, sig: i32) {
        if let Some(u) = self.core.insts[k].running().map(|a| a.unit) {
            self.exec.signal_unit(u, sig);
        }
    }

    fn main_loop(&mut self) {
        let mut events = PollEvents::with_capacity(256);
        loop {
            self.step();
            if self.leaderless > 0 {
                self.prune_groups(Instant::now());
            }
            if self.check_stall() {
                continue;
            }
            self.apply();
            self.reporter.flush();
            // Groups launched in this slice reach the watchdog now, not after the burst.
            if let Some(w) = &mut self.watchdog {
                if w.due().is_some() {
                    if let Err(e) = w.flush() {
                        self.note(
                            &format!("cannot reach the watchdog ({e}): an engine crash could leave processes behind"),
                            true,
                        );
                    }
                }
            }
            self.update_progress();
            if self.core.all_done() {
                break;
            }
            let now = Instant::now();
            let timeout = if self.launch_more
                || self.probes_pending
                || self.core.unsettled()
                || (!self.readable.is_empty()
                    && (!self.reporter.backlogged() || self.served_pipe_waits()))
            {
                // More to launch: only look at what happened meanwhile, then go on.
                Some(Duration::ZERO)
            } else {
                // At most a second: the kernel lets a wait of T run late by
                // T/1000 (up to 100 ms), so a 120 s timeout fired 90 ms late.
                let leftovers = (self.leaderless > 0).then_some(now + Duration::from_secs(1));
                self.next_deadline()
                    .into_iter()
                    .chain(leftovers)
                    .min()
                    .map(|d| d.saturating_duration_since(now).min(Duration::from_secs(1)))
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != std::io::ErrorKind::Interrupted {
                    self.note(
                        &format!("event loop failed: {err}; stopping everything"),
                        true,
                    );
                    self.core.escalate(Cancel::LoopFailed);
                    self.core.begin_shutdown();
                    self.kill_everything();
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    WAKE => {} // a writer drained: the output pipes are served below
                    Token(t) => match self.sources.get(t) {
                        Some(&sources::Source::Queue(q, end)) => self.on_queue_ready(q, end),
                        Some(sources::Source::Tcp(_)) => self.on_tcp_probe(t),
                        Some(sources::Source::Log(_)) => self.queue_read(t),
                        None => {} // closed since: its token is never reused
                    },
                }
            }
            self.on_http_answers();
            self.serve_output();
            self.report_output_errors();
            // Children can exit without a fresh SIGCHLD being seen yet (coalesced signals).
            if self.reap() {
                // Their SIGCHLD is usually queued by now: taken here, it does
                // not wake the next poll for nothing (one loop turn per exit).
                self.on_signals();
            }
            self.on_deadlines(Instant::now());
        }
        self.reporter.flush();
    }

    //
    // Event-driven: a change to a process marks the processes that wait for
    // it dirty; only those are re-examined. Instances whose dependencies hold
    // wait in `ready`, in launch order, for a slot and their locks.

    fn step(&mut self) {
        self.slice_end = Instant::now() + LAUNCH_SLICE;
        self.launch_more = false;
        loop {
            loop {
                let mut changed = self.core.settle();
                changed |= self.start_ready();
                if !changed {
                    break;
                }
            }
            if self.core.stop_pending.is_empty() {
                break;
            }
            // A process that already exited must be reported with its own status, not "stopped".
            let reaped = self.reap();
            self.note_drained_readers();
            self.core.send_stops();
            // What that reap ended is settled now: the stall check must
            // never see an instance ended but not yet joined.
            if !reaped {
                break;
            }
        }
        self.apply();
    }
}

/// `t + d`, or a moment a century away when that cannot be represented:
/// a duration from the file never overflows the clock.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d.min(CENTURY))
        .or_else(|| t.checked_add(Duration::from_secs(3600)))
        .unwrap_or(t)
}

/// Restart back-off: 250 ms, doubled at each restart, at most 30 s.
pub(crate) fn restart_delay(restarts_so_far: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << restarts_so_far.min(16));
    Duration::from_millis(ms.min(30_000))
}

fn describe_spawn_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory (not on PATH?)".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied (not executable?)".into(),
        _ if e.raw_os_error() == Some(libc::ENOEXEC) => {
            "exec format error (not a program: a script needs a `#!` line)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod sched_tests;
#[cfg(test)]
mod tests;
