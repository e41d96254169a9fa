//! The dispatcher: one loop that alone owns every instance's state.

mod status;

use super::hygiene;
use super::posix::{self, Prepared};
use super::spawn::{self, Launch, Sink};
use super::watchdog::Watchdog;
use crate::graph::{DepKind, Graph};
use crate::report::live::{render_summary, Console, ConsoleStyle, Event, Events, SummaryRow};
use crate::spec::Condition;
use crate::streams::broker;
use mio::unix::SourceFd;
use mio::{Events as PollEvents, Interest, Poll, Token};
use nix::sys::signal::Signal;
use rustc_hash::FxHashMap;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
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
/// At most this much is read from one output pipe before others get a turn.
const READ_TURN: usize = 256 * 1024;
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
    /// `--events PATH|-`.
    pub events: Option<String>,
    /// `--log-dir`.
    pub log_dir: Option<PathBuf>,
    /// Console look.
    pub console: ConsoleStyle,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// 0 ok, 1 failure, 130 / 143 / 129 interrupted.
    pub exit_code: u8,
    /// One row per instance, in launch order.
    pub rows: Vec<SummaryRow>,
    /// The summary, rendered.
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    TimedOut,
    Skipped,
    Stopped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Skipped => "skipped",
            Outcome::Stopped => "stopped",
        }
    }
    fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started yet.
    Pending,
    /// Its process is alive.
    Running,
    /// Its process was reaped; its output pipes are still open.
    Draining { since: Instant },
    /// Waiting out `retry_delay`.
    RetryWait { until: Instant },
    /// Retry delay over; waiting for a slot and its locks.
    Retrying,
    /// Its own process is done for good (or it was skipped).
    Done,
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
}

#[derive(Debug, Clone, Copy)]
enum Exit {
    Code(i32),
    Signal(i32),
}

struct Inst {
    proc: usize,
    replica: u32,
    name: String,
    phase: Phase,
    attempts: u32,
    first_start: Option<Instant>,
    attempt_start: Option<Instant>,
    end: Option<Instant>,
    pid: i32,
    pgid: i32,
    open_pipes: u8,
    exit: Option<Exit>,
    peak_rss_kib: u64,
    stop: Option<StopReason>,
    stop_sent: Option<Instant>,
    next_kill: Option<Instant>,
    outcome: Option<Outcome>,
    finished: bool,
    start_error: bool,
    /// Readiness in the current attempt; `ready_once` in any attempt.
    ready: bool,
    ready_once: bool,
    /// Next probe, while probing.
    probe_due: Option<Instant>,
    /// A `cmd` probe still running, and when it started.
    probe_pid: i32,
    probe_started: Option<Instant>,
    /// The readiness deadline passed: the attempt fails.
    not_ready: bool,
    /// Restarts made under `restart`.
    restarts: u32,
    /// A daemon stopped because its parent or the graph finished: a normal end.
    stopped_at_end: bool,
    /// The scheduled next attempt is a restart (counted when it really starts).
    restart_pending: bool,
    /// Once finished (joined): why its subtree did not succeed, if it did not.
    subtree_failure: Option<String>,
}

struct Pipe {
    inst: usize,
    file: std::fs::File,
    buf: Vec<u8>,
    /// In `Engine::readable`: may hold data not read yet.
    queued: bool,
}

/// A process group created by the run that may still have members.
struct Group {
    pgid: i32,
    inst: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    ShuttingDown,
}

struct Engine<'g> {
    g: &'g Graph,
    base: PathBuf,
    fail_fast: bool,
    max_parallel: usize,
    grace: Duration,
    insts: Vec<Inst>,
    /// Instance indices of each process (empty when excluded by --only).
    of_proc: Vec<Vec<usize>>,
    /// Launch order: stage, then file order, then replica.
    order: Vec<usize>,
    lock_free: Vec<u32>,
    /// Instances whose process is alive (daemons included).
    running: usize,
    /// Non-daemon instances whose process is alive: what `max_parallel` bounds.
    slots_used: usize,
    /// Whether the graph has daemons (which need no slot).
    any_daemon: bool,
    /// Launching stopped at the end of a slice with instances still ready to go.
    launch_more: bool,
    /// When the current launch slice ends.
    slice_end: Instant,
    /// When the progress bar may be updated next.
    progress_due: Instant,
    poll: Poll,
    signals: Signals,
    pipes: FxHashMap<usize, Pipe>,
    /// Output pipes that may hold unread data: left for later because the
    /// console is backlogged, or because they had their turn.
    readable: Vec<usize>,
    /// A log, event or console write failed: the run cannot exit 0.
    output_failed: bool,
    /// The run could make no progress and was ended (exit 1).
    stalled: bool,
    next_token: usize,
    by_pid: FxHashMap<i32, usize>,
    groups: Vec<Group>,
    /// Per instance: its launch, and the same prepared for posix_spawn (or why it cannot be).
    launches: Vec<Option<(Launch, Result<Prepared, String>)>>,
    /// /dev/null, for `null` streams.
    null: std::fs::File,
    engine_env: Vec<(OsString, OsString)>,
    console: Console,
    events: Option<Events>,
    mode: Mode,
    interrupted: Option<i32>,
    kill_now: bool,
    watchdog: Option<Watchdog>,
    cause: Option<String>,
    started_at: Instant,
    /// Per process: the processes that wait for it (after or parent).
    rdeps: Vec<Vec<usize>>,
    /// Per instance: its position in `order`.
    pos_of: Vec<usize>,
    /// Processes whose pending instances must be re-examined.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Positions (in `order`) of instances whose dependencies hold, waiting for a slot or locks.
    ready: std::collections::BTreeSet<usize>,
    /// Instances whose join may have completed.
    join_check: Vec<usize>,
    /// Instances with a stop requested but not yet signalled.
    stop_pending: Vec<usize>,
    /// Instances between start and done (running, draining, waiting to retry).
    active: rustc_hash::FxHashSet<usize>,
    unfinished: usize,
    unfinished_non_daemons: usize,
    daemons_released: bool,
    done_count: u64,
    failed_count: usize,
    /// Per queue (file order): the broker, once its stream group started.
    queues: Vec<Option<broker::Queue>>,
    /// Per queue: producer and consumer instances, in the broker's order.
    queue_ends: Vec<(Vec<usize>, Vec<usize>)>,
    /// Tokens of queue ends: (queue, is producer, index).
    stream_tokens: FxHashMap<usize, (usize, bool, usize)>,
    /// Per process: its `ready.log` regex.
    log_probes: Vec<Option<regex::Regex>>,
    /// Running `ready.cmd` probes: pid to instance.
    probe_pids: FxHashMap<i32, usize>,
    /// TCP probes in flight: token to (instance, socket).
    tcp_probes: FxHashMap<usize, (usize, mio::net::TcpStream)>,
    /// Resolved TCP probe addresses, per instance.
    tcp_addrs: FxHashMap<usize, std::net::SocketAddr>,
}

/// Runs a validated graph whose relative paths resolve against `base`.
pub fn run(g: &Graph, base: &Path, opts: &RunOptions) -> Result<RunOutcome, String> {
    let included = g.only(&opts.only)?;
    let mut insts = Vec::new();
    let mut of_proc = vec![Vec::new(); g.file.processes.len()];
    for (i, p) in g.file.processes.iter().enumerate() {
        if !included[i] {
            continue;
        }
        for r in 0..p.replicas.value {
            of_proc[i].push(insts.len());
            let name = if p.replicas.value > 1 {
                format!("{}[{r}]", p.name.value)
            } else {
                p.name.value.clone()
            };
            insts.push(Inst {
                proc: i,
                replica: r,
                name,
                phase: Phase::Pending,
                attempts: 0,
                first_start: None,
                attempt_start: None,
                end: None,
                pid: 0,
                pgid: 0,
                open_pipes: 0,
                exit: None,
                peak_rss_kib: 0,
                stop: None,
                stop_sent: None,
                next_kill: None,
                outcome: None,
                finished: false,
                start_error: false,
                ready: false,
                ready_once: false,
                probe_due: None,
                probe_pid: 0,
                probe_started: None,
                not_ready: false,
                restarts: 0,
                stopped_at_end: false,
                restart_pending: false,
                subtree_failure: None,
            });
        }
    }
    let mut stage_of_proc = vec![0usize; g.file.processes.len()];
    for (s, groups) in g.stages.iter().enumerate() {
        for &grp in groups {
            for &m in &g.groups[grp].members {
                stage_of_proc[m] = s;
            }
        }
    }
    let mut order: Vec<usize> = (0..insts.len()).collect();
    order.sort_by_key(|&k| {
        (
            stage_of_proc[insts[k].proc],
            insts[k].proc,
            insts[k].replica,
        )
    });

    let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
    let waker = std::sync::Arc::new(
        mio::Waker::new(poll.registry(), WAKE)
            .map_err(|e| format!("cannot create the event loop: {e}"))?,
    );
    let wake: std::sync::Arc<crate::report::writer::Wake> =
        std::sync::Arc::new(Box::new(move || {
            let _ = waker.wake();
        }));
    let names: Vec<String> = insts.iter().map(|i| i.name.clone()).collect();
    let console = Console::new(opts.console, &names, opts.log_dir.as_deref(), Some(wake))?;
    let events = match &opts.events {
        Some(target) => Some(
            Events::open(target, console.stdout_handle())
                .map_err(|e| format!("cannot open --events {target}: {e}"))?,
        ),
        None => None,
    };

    let marker = format!("{}-{}", std::process::id(), now_nanos());
    let mut engine_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    engine_env.retain(|(k, _)| k != "JOBGRAPH_RUN");
    engine_env.push(("JOBGRAPH_RUN".into(), marker.clone().into()));

    let mut signals = Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGUSR1])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    hygiene::ensure_std_fds();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    hygiene::become_subreaper();
    hygiene::cloexec_inherited_fds();
    let watchdog = Watchdog::start(&marker);

    let max_parallel = opts
        .max_parallel
        .or(g.file.graph.max_parallel.as_ref().map(|m| m.value))
        .map_or(usize::MAX, |m| m as usize);
    let n = insts.len();
    let mut rdeps = vec![Vec::new(); g.file.processes.len()];
    for (i, ds) in g.deps.iter().enumerate() {
        for d in ds {
            if !rdeps[d.target].contains(&i) {
                rdeps[d.target].push(i);
            }
        }
    }
    let mut pos_of = vec![0; n];
    for (pos, &k) in order.iter().enumerate() {
        pos_of[k] = pos;
    }
    let unfinished_non_daemons = insts
        .iter()
        .filter(|i| !g.file.processes[i.proc].daemon.value)
        .count();
    let procs = g.file.processes.len();
    let mut e = Engine {
        g,
        base: base.to_path_buf(),
        fail_fast: g.file.graph.fail_fast && !opts.keep_going,
        max_parallel,
        grace: g.file.graph.shutdown_grace,
        insts,
        of_proc,
        order,
        lock_free: g.file.locks.iter().map(|l| l.capacity.value).collect(),
        running: 0,
        slots_used: 0,
        any_daemon: g.file.processes.iter().any(|p| p.daemon.value),
        launch_more: false,
        slice_end: Instant::now(),
        progress_due: Instant::now(),
        poll,
        signals,
        pipes: FxHashMap::default(),
        readable: Vec::new(),
        output_failed: false,
        stalled: false,
        next_token: 1,
        by_pid: FxHashMap::default(),
        groups: Vec::new(),
        launches: (0..n).map(|_| None).collect(),
        null,
        engine_env,
        console,
        events,
        mode: Mode::Normal,
        interrupted: None,
        kill_now: false,
        watchdog: None,
        cause: None,
        started_at: Instant::now(),
        rdeps,
        pos_of,
        dirty: (0..procs).collect(),
        is_dirty: vec![true; procs],
        ready: Default::default(),
        join_check: Vec::new(),
        stop_pending: Vec::new(),
        active: Default::default(),
        unfinished: n,
        unfinished_non_daemons,
        daemons_released: false,
        done_count: 0,
        failed_count: 0,
        queues: (0..g.file.queues.len()).map(|_| None).collect(),
        queue_ends: vec![(Vec::new(), Vec::new()); g.file.queues.len()],
        stream_tokens: FxHashMap::default(),
        log_probes: g
            .file
            .processes
            .iter()
            .map(|p| match p.ready.as_ref().map(|r| &r.probe.value) {
                Some(crate::spec::Probe::Log(re)) => regex::Regex::new(re).ok(),
                _ => None,
            })
            .collect(),
        probe_pids: FxHashMap::default(),
        tcp_probes: FxHashMap::default(),
        tcp_addrs: FxHashMap::default(),
    };
    match watchdog {
        Ok(w) => e.watchdog = Some(w),
        Err(err) => e.console.note(
            &format!("cannot start the watchdog ({err}): if the engine is killed, its processes may survive it"),
            true,
        ),
    }
    e.main_loop();
    e.sweep();
    Ok(e.finish())
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
    fn main_loop(&mut self) {
        let mut events = PollEvents::with_capacity(256);
        loop {
            self.step();
            self.check_stall();
            self.console.flush();
            // Groups launched in this slice reach the watchdog now, not after the burst.
            if let Some(w) = &mut self.watchdog {
                if w.due().is_some() {
                    w.flush();
                }
            }
            self.update_progress();
            if self.all_done() {
                break;
            }
            let now = Instant::now();
            let timeout =
                if self.launch_more || (!self.readable.is_empty() && !self.console.backlogged()) {
                    // More to launch: only look at what happened meanwhile, then go on.
                    Some(Duration::ZERO)
                } else {
                    self.next_deadline()
                        .map(|d| d.saturating_duration_since(now))
                };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != std::io::ErrorKind::Interrupted {
                    self.console.note(
                        &format!("event loop failed: {err}; stopping everything"),
                        true,
                    );
                    self.kill_now = true;
                    self.begin_shutdown();
                    self.kill_everything();
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    WAKE => {} // a writer drained: the output pipes are served below
                    Token(t) => match self.stream_tokens.get(&t).copied() {
                        Some((q, producer, i)) => self.on_queue_ready(q, producer, i),
                        None if self.tcp_probes.contains_key(&t) => self.on_tcp_probe(t),
                        None => self.queue_read(t),
                    },
                }
            }
            self.serve_output();
            self.report_output_errors();
            // Children can exit without a fresh SIGCHLD being seen yet (coalesced signals).
            self.reap();
            self.on_deadlines(Instant::now());
        }
        self.console.flush();
    }

    fn all_done(&self) -> bool {
        self.unfinished == 0
    }

    fn emit(&mut self, e: Event<'_>) {
        if let Some(ev) = &mut self.events {
            ev.emit(e);
        }
    }

    fn update_progress(&mut self) {
        if !self.console.has_bar() {
            return;
        }
        let now = Instant::now();
        if now < self.progress_due {
            return;
        }
        self.progress_due = now + Duration::from_millis(100);
        // The longest-running instances, named when the terminal has room.
        let mut longest: Vec<(Instant, usize)> = self
            .active
            .iter()
            .filter(|&&k| self.insts[k].phase == Phase::Running)
            .filter_map(|&k| self.insts[k].attempt_start.map(|t| (t, k)))
            .collect();
        longest.sort_unstable();
        let names: Vec<&str> = longest
            .iter()
            .take(3)
            .filter(|(t, _)| now.saturating_duration_since(*t) >= Duration::from_secs(1))
            .map(|&(_, k)| self.insts[k].name.as_str())
            .collect();
        self.console
            .progress(self.done_count, self.running, self.failed_count, &names);
    }

    // ---- scheduling -------------------------------------------------------
    //
    // Event-driven: a change to a process marks the processes that wait for
    // it dirty; only those are re-examined. Instances whose dependencies hold
    // wait in `ready`, in launch order, for a slot and their locks.

    fn step(&mut self) {
        self.slice_end = Instant::now() + LAUNCH_SLICE;
        self.launch_more = false;
        loop {
            let mut changed = false;
            if self.mode == Mode::ShuttingDown {
                changed |= self.skip_all_pending();
            }
            while let Some(proc) = self.dirty.pop() {
                self.is_dirty[proc] = false;
                self.examine(proc);
                changed = true;
            }
            while let Some(k) = self.join_check.pop() {
                self.try_join(k);
                changed = true;
            }
            if self.unfinished_non_daemons == 0 && !self.daemons_released {
                self.daemons_released = true;
                self.release_top_level_daemons();
                changed = true;
            }
            changed |= self.start_ready();
            if !changed {
                break;
            }
        }
        self.send_stops();
    }

    fn mark_changed(&mut self, proc: usize) {
        for idx in 0..self.rdeps[proc].len() {
            let d = self.rdeps[proc][idx];
            if !self.is_dirty[d] {
                self.is_dirty[d] = true;
                self.dirty.push(d);
            }
        }
    }

    /// Re-examines the pending instances of one process: skip, ready, or keep waiting.
    fn examine(&mut self, proc: usize) {
        for idx in 0..self.of_proc[proc].len() {
            let k = self.of_proc[proc][idx];
            if self.insts[k].phase != Phase::Pending {
                continue;
            }
            match self.deps_hold(proc) {
                Err(why) => {
                    self.ready.remove(&self.pos_of[k]);
                    self.skip(k, &why);
                }
                Ok(true) => {
                    self.ready.insert(self.pos_of[k]);
                }
                Ok(false) => {
                    self.ready.remove(&self.pos_of[k]);
                }
            }
        }
    }

    /// All dependencies of `proc` hold (`Ok(true)`), may still (`Ok(false)`), or never can.
    fn deps_hold(&self, proc: usize) -> Result<bool, String> {
        let mut all = true;
        for d in &self.g.deps[proc] {
            all &= self.dep_state(d.kind, d.target)?;
        }
        Ok(all)
    }

    /// Whether a dependency holds (`Ok(true)`), may still hold (`Ok(false)`),
    /// or never can (`Err`, with the reason).
    fn dep_state(&self, kind: DepKind, target: usize) -> Result<bool, String> {
        let tname = &self.g.file.processes[target].name.value;
        let targets = &self.of_proc[target];
        let t = |k: usize| &self.insts[k];
        match kind {
            DepKind::After(Condition::Success) => {
                // Its own failure is known before the join: no need to wait for its children.
                if let Some(k) = targets.iter().find(|&&k| {
                    t(k).outcome
                        .is_some_and(|o| o != Outcome::Ok && !self.clean_daemon_stop(k, o))
                }) {
                    let status = t(*k).outcome.map_or("", Outcome::as_str);
                    return Err(format!("`{tname}` did not succeed ({status})"));
                }
                if let Some(why) = targets.iter().find_map(|&k| t(k).subtree_failure.as_ref()) {
                    return Err(format!("`{tname}` did not succeed ({why})"));
                }
                Ok(targets.iter().all(|&k| t(k).finished))
            }
            DepKind::After(Condition::Exit) => {
                if targets
                    .iter()
                    .any(|&k| t(k).outcome == Some(Outcome::Skipped))
                {
                    return Err(format!("`{tname}` was skipped"));
                }
                Ok(targets.iter().all(|&k| t(k).finished))
            }
            DepKind::After(Condition::Ready) => {
                if let Some(&k) = targets
                    .iter()
                    .find(|&&k| t(k).phase == Phase::Done && !t(k).ready_once)
                {
                    let why = if t(k).outcome == Some(Outcome::Skipped) {
                        "was skipped"
                    } else {
                        "never became ready"
                    };
                    return Err(format!("`{tname}` {why}"));
                }
                Ok(targets.iter().all(|&k| t(k).ready_once))
            }
            DepKind::After(Condition::Start) => {
                if targets
                    .iter()
                    .any(|&k| t(k).outcome == Some(Outcome::Skipped))
                {
                    return Err(format!("`{tname}` was skipped"));
                }
                if targets
                    .iter()
                    .any(|&k| t(k).phase == Phase::Done && t(k).first_start.is_none())
                {
                    return Err(format!("`{tname}` never started"));
                }
                Ok(targets.iter().all(|&k| t(k).first_start.is_some()))
            }
            DepKind::Parent => {
                let Some(&k) = targets.first() else {
                    return Err(format!("parent `{tname}` is not part of this run"));
                };
                let p = t(k);
                if p.outcome == Some(Outcome::Skipped) {
                    return Err(format!("parent `{tname}` was skipped"));
                }
                if p.finished {
                    return Err(format!("parent `{tname}` finished before it could start"));
                }
                if p.outcome.is_some_and(Outcome::is_failure) {
                    return Err(format!("parent `{tname}` failed"));
                }
                Ok(p.first_start.is_some())
            }
        }
    }

    /// A daemon stopped because its parent or the graph finished ended normally.
    fn clean_daemon_stop(&self, k: usize, o: Outcome) -> bool {
        o == Outcome::Stopped && self.insts[k].stopped_at_end
    }

    fn skip(&mut self, k: usize, reason: &str) {
        if self.insts[k].phase != Phase::Pending {
            return;
        }
        self.set_done(k, Outcome::Skipped);
        self.set_finished(k);
        // A stream group launches whole or not at all.
        let peers = self.group_peers(k);
        if !peers.is_empty() {
            let why = format!("`{}` in its stream group was skipped", self.insts[k].name);
            for j in peers {
                self.ready.remove(&self.pos_of[j]);
                self.skip(j, &why);
            }
        }
        let name = self.insts[k].name.clone();
        self.emit(Event {
            event: "skipped",
            process: Some(&name),
            status: Some("skipped"),
            reason: Some(reason),
            ..Default::default()
        });
    }

    fn skip_all_pending(&mut self) -> bool {
        let why = self
            .cause
            .clone()
            .unwrap_or_else(|| "the run is stopping".into());
        let pending: Vec<usize> = (0..self.insts.len())
            .filter(|&k| self.insts[k].phase == Phase::Pending)
            .collect();
        for &k in &pending {
            self.skip(k, &why);
        }
        self.ready.clear();
        !pending.is_empty()
    }

    /// The instance's own process is done for good.
    fn set_done(&mut self, k: usize, outcome: Outcome) {
        let i = &mut self.insts[k];
        i.phase = Phase::Done;
        i.outcome = Some(outcome);
        i.end = Some(Instant::now());
        self.active.remove(&k);
        self.launches[k] = None; // no further attempt: free its argv and environment
        self.done_count += 1;
        if outcome.is_failure() {
            self.failed_count += 1;
        }
        self.join_check.push(k);
        self.mark_changed(self.insts[k].proc);
        for q in 0..self.queues.len() {
            if let Some(i) = self.queue_ends[q].0.iter().position(|&p| p == k) {
                if let Some(queue) = self.queues[q].as_mut() {
                    queue.producer_done(i);
                }
                self.pump(q);
            }
        }
    }

    /// Joined: own process done and non-daemon children finished.
    fn set_finished(&mut self, k: usize) {
        if std::mem::replace(&mut self.insts[k].finished, true) {
            return;
        }
        self.unfinished -= 1;
        let proc = self.insts[k].proc;
        let p = &self.g.file.processes[proc];
        if !p.daemon.value {
            self.unfinished_non_daemons -= 1;
        }
        if let Some(parent) = p
            .parent
            .as_ref()
            .and_then(|n| self.g.process_index(&n.value))
        {
            self.join_check.extend(self.of_proc[parent].iter().copied());
        }
        self.mark_changed(proc);
    }

    /// Joins: a process is finished when its own process is done and its
    /// non-daemon children are finished; then its daemon children are stopped.
    fn try_join(&mut self, k: usize) {
        let i = &self.insts[k];
        if i.finished || i.phase != Phase::Done {
            return;
        }
        let proc = i.proc;
        let children = &self.g.children[proc];
        let non_daemon = |c: &usize| !self.g.file.processes[*c].daemon.value;
        if !children
            .iter()
            .filter(|c| non_daemon(c))
            .all(|&c| self.of_proc[c].iter().all(|&ck| self.insts[ck].finished))
        {
            return;
        }
        // "success" is the whole subtree's: a non-daemon descendant that did not succeed fails it.
        let failure = children
            .iter()
            .filter(|c| non_daemon(c))
            .flat_map(|&c| self.of_proc[c].iter().copied())
            .find_map(|ck| {
                let c = &self.insts[ck];
                match (&c.subtree_failure, c.outcome) {
                    (Some(why), _) => Some(why.clone()),
                    (None, Some(o)) if o != Outcome::Ok && !self.clean_daemon_stop(ck, o) => {
                        Some(format!("child `{}` {}", c.name, o.as_str()))
                    }
                    _ => None,
                }
            });
        let has_children = !children.is_empty();
        self.insts[k].subtree_failure = failure;
        self.set_finished(k);
        if has_children {
            let i = &self.insts[k];
            let status = match (&i.subtree_failure, i.outcome) {
                (Some(_), _) => "failed",
                (None, Some(o)) => o.as_str(),
                (None, None) => "ok",
            };
            let (name, reason) = (i.name.clone(), i.subtree_failure.clone());
            self.emit(Event {
                event: "joined",
                process: Some(&name),
                status: Some(status),
                reason: reason.as_deref(),
                ..Default::default()
            });
        }
        for ci in 0..self.g.children[proc].len() {
            let c = self.g.children[proc][ci];
            if self.g.file.processes[c].daemon.value {
                for ck in self.of_proc[c].clone() {
                    match self.insts[ck].phase {
                        Phase::Pending => self.skip(ck, "its parent finished first"),
                        _ => self.request_stop(ck, StopReason::DaemonEnd),
                    }
                }
            }
        }
    }

    /// Top-level daemons stop once every non-daemon process finished.
    fn release_top_level_daemons(&mut self) {
        for k in 0..self.insts.len() {
            let p = &self.g.file.processes[self.insts[k].proc];
            if !(p.daemon.value && p.parent.is_none()) {
                continue;
            }
            match self.insts[k].phase {
                Phase::Pending => {
                    self.ready.remove(&self.pos_of[k]);
                    self.skip(k, "every non-daemon process finished first");
                }
                _ => self.request_stop(k, StopReason::DaemonEnd),
            }
        }
    }

    fn start_ready(&mut self) -> bool {
        if self.mode == Mode::ShuttingDown || self.ready.is_empty() || self.launch_more {
            return false;
        }
        let mut changed = false;
        let candidates: Vec<usize> = self.ready.iter().copied().collect();
        for pos in candidates {
            if self.mode == Mode::ShuttingDown {
                break;
            }
            if Instant::now() >= self.slice_end {
                self.launch_more = true;
                break;
            }
            let k = self.order[pos];
            // Daemons do not count toward `max_parallel`: a service must not starve the work.
            if self.slots_used >= self.max_parallel && self.needs_slot(k) {
                if !self.any_daemon {
                    break;
                }
                continue;
            }
            if !matches!(self.insts[k].phase, Phase::Pending | Phase::Retrying) {
                self.ready.remove(&pos);
                continue;
            }
            let group = self.g.group_of[self.insts[k].proc];
            if !self.g.groups[group].edges.is_empty() {
                if self.insts[k].phase == Phase::Retrying {
                    if self.locks_free(k) {
                        self.ready.remove(&pos);
                        self.restart_member(k);
                        changed = true;
                    }
                } else {
                    changed |= self.try_start_group(group);
                }
                continue;
            }
            if !self.locks_free(k) {
                continue;
            }
            self.ready.remove(&pos);
            if self.insts[k].phase == Phase::Pending {
                // A parent may have finished while this waited for a slot.
                match self.deps_hold(self.insts[k].proc) {
                    Err(why) => {
                        self.skip(k, &why);
                        changed = true;
                        continue;
                    }
                    Ok(false) => continue,
                    Ok(true) => {}
                }
            }
            self.start(k);
            changed = true;
        }
        changed
    }

    /// Launches a stream group once every member instance is ready and the
    /// whole group fits in `max_parallel` and the locks.
    fn try_start_group(&mut self, group: usize) -> bool {
        let members: Vec<usize> = self.g.groups[group]
            .members
            .iter()
            .flat_map(|&m| self.of_proc[m].iter().copied())
            .collect();
        if members.iter().any(|&m| {
            self.insts[m].phase != Phase::Pending || !self.ready.contains(&self.pos_of[m])
        }) {
            return false;
        }
        let slots = members.iter().filter(|&&m| self.needs_slot(m)).count();
        if self.slots_used + slots > self.max_parallel {
            return false;
        }
        let mut demand: FxHashMap<usize, u32> = FxHashMap::default();
        for &m in &members {
            for &l in &self.g.locks[self.insts[m].proc] {
                *demand.entry(l).or_default() += 1;
            }
        }
        if demand.iter().any(|(&l, &n)| self.lock_free[l] < n) {
            return false;
        }
        for &m in &members {
            self.ready.remove(&self.pos_of[m]);
        }
        self.start_group(group, &members);
        true
    }

    /// Members of `k`'s stream group other than `k` (instances), if it has edges.
    fn group_peers(&self, k: usize) -> Vec<usize> {
        let group = self.g.group_of[self.insts[k].proc];
        if self.g.groups[group].edges.is_empty() {
            return Vec::new();
        }
        self.g.groups[group]
            .members
            .iter()
            .flat_map(|&m| self.of_proc[m].iter().copied())
            .filter(|&j| j != k)
            .collect()
    }

    /// Whether instance `k` takes a `max_parallel` slot while it runs.
    fn needs_slot(&self, k: usize) -> bool {
        !self.g.file.processes[self.insts[k].proc].daemon.value
    }

    fn locks_free(&self, k: usize) -> bool {
        self.g.locks[self.insts[k].proc]
            .iter()
            .all(|&l| self.lock_free[l] > 0)
    }

    fn take_locks(&mut self, k: usize, take: bool) {
        for &l in &self.g.locks[self.insts[k].proc] {
            if take {
                self.lock_free[l] -= 1;
            } else {
                self.lock_free[l] += 1;
            }
        }
    }

    // ---- starting -----------------------------------------------------------

    fn start(&mut self, k: usize) {
        self.start_with(k, &[]);
    }

    /// Starts every instance of a stream group at once: creates each pipe and
    /// socketpair, hands each member its ends at the numbers the graph
    /// allocated, and closes the engine's copies so EOF reaches the readers.
    fn start_group(&mut self, group: usize, members: &[usize]) {
        let mut ends: FxHashMap<(usize, String), OwnedFd> = FxHashMap::default();
        let mut failure = None;
        for pipe in &self.g.file.pipes {
            let idx = |n: &str| self.g.process_index(n);
            let made = match &pipe.ends {
                crate::spec::PipeEnds::OneWay { from, to } => match (idx(from), idx(to)) {
                    (Some(a), Some(b)) if self.g.group_of[a] == group => {
                        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                            .map(|(r, w)| [(a, w), (b, r)])
                    }
                    _ => continue,
                },
                crate::spec::PipeEnds::Duplex { between } => {
                    match (idx(&between[0]), idx(&between[1])) {
                        (Some(a), Some(b)) if self.g.group_of[a] == group => {
                            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
                            socketpair(
                                AddressFamily::Unix,
                                SockType::Stream,
                                None,
                                SockFlag::SOCK_CLOEXEC,
                            )
                            .map(|(x, y)| [(a, x), (b, y)])
                        }
                        _ => continue,
                    }
                }
                crate::spec::PipeEnds::Invalid => continue,
            };
            match made {
                Ok(pair) => {
                    for (proc, fd) in pair {
                        ends.insert((proc, pipe.name.value.clone()), fd);
                    }
                }
                Err(e) => failure = Some(format!("cannot create pipe `{}`: {e}", pipe.name.value)),
            }
        }
        if failure.is_none() {
            if let Err(e) = self.open_queues(group, &mut ends) {
                failure = Some(format!("cannot set up the queues of the stream group: {e}"));
            }
        }
        if let Some(why) = failure {
            self.console.note(&why, true);
            for &k in members {
                self.insts[k].start_error = true;
                self.start_with(k, &[(-1, -1)]);
            }
            return;
        }
        for &k in members {
            let proc = self.insts[k].proc;
            let fds: Vec<(i32, std::os::fd::RawFd)> = self.g.endpoints[proc]
                .iter()
                .filter_map(|e| {
                    // Pipe ends are keyed by process, queue ends by instance (replicas differ).
                    let key = match e.kind {
                        crate::graph::EdgeKind::Queue => (k, e.edge.clone()),
                        _ => (proc, e.edge.clone()),
                    };
                    ends.get(&key).map(|fd| (e.fd, fd.as_raw_fd()))
                })
                .collect();
            self.start_with(k, &fds);
        }
        // A member that could not start fails the group: stop those that did.
        if members
            .iter()
            .any(|&m| self.insts[m].outcome.is_some_and(Outcome::is_failure))
        {
            for &m in members {
                self.request_stop(m, StopReason::Shutdown);
            }
        }
        // `ends` drops here: the engine keeps no pipe end open.
    }

    /// Creates the pipes of every queue in `group`: producers write into pipes
    /// the broker reads, consumers read pipes the broker writes. Each end for a
    /// process goes into `ends` under (instance, queue name); the broker keeps
    /// its own ends, non-blocking and registered with the event loop.
    fn open_queues(
        &mut self,
        group: usize,
        ends: &mut FxHashMap<(usize, String), OwnedFd>,
    ) -> std::io::Result<()> {
        for qi in 0..self.g.file.queues.len() {
            let q = &self.g.file.queues[qi];
            let procs = |names: &[crate::spec::Sp<String>]| -> Vec<usize> {
                names
                    .iter()
                    .filter_map(|n| self.g.process_index(&n.value))
                    .collect()
            };
            let (from, to) = (procs(&q.from.value), procs(&q.to.value));
            if from.first().is_none_or(|&p| self.g.group_of[p] != group) {
                continue;
            }
            let producers: Vec<usize> = from
                .iter()
                .flat_map(|&p| self.of_proc[p].iter().copied())
                .collect();
            let consumers: Vec<usize> = to
                .iter()
                .flat_map(|&p| self.of_proc[p].iter().copied())
                .collect();
            let name = q.name.value.clone();
            let mut producer_files = Vec::new();
            let mut consumer_files = Vec::new();
            for &k in &producers {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // SAFETY: F_SETPIPE_SZ only resizes the pipe buffer; failure keeps the default.
                unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
                ends.insert((k, name.clone()), write);
                producer_files.push(std::fs::File::from(read));
            }
            for &k in &consumers {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // The broker keeps a read end of its own (close-on-exec) to
                // read back what the consumer leaves unread.
                let keep = read.try_clone()?;
                ends.insert((k, name.clone()), read);
                consumer_files.push((std::fs::File::from(write), std::fs::File::from(keep)));
            }
            for (i, f) in producer_files.iter().enumerate() {
                self.register_stream(f.as_raw_fd(), (qi, true, i), Interest::READABLE)?;
            }
            for (i, (f, _)) in consumer_files.iter().enumerate() {
                self.register_stream(f.as_raw_fd(), (qi, false, i), Interest::WRITABLE)?;
            }
            let q = &self.g.file.queues[qi];
            let mode = match q.mode {
                crate::spec::QueueMode::Balance => broker::Mode::Balance,
                crate::spec::QueueMode::Broadcast => broker::Mode::Broadcast,
            };
            let delim = match q.framing {
                crate::spec::Framing::Line => b'\n',
                crate::spec::Framing::Nul => 0,
            };
            let queue = broker::Queue::new(mode, delim, q.capacity, producer_files, consumer_files);
            if let Some(fd) = queue.timer_fd() {
                self.register_stream(fd, (qi, false, broker::TIMER), Interest::READABLE)?;
            }
            self.queues[qi] = Some(queue);
            self.queue_ends[qi] = (producers, consumers);
        }
        Ok(())
    }

    fn register_stream(
        &mut self,
        fd: std::os::fd::RawFd,
        what: (usize, bool, usize),
        interest: Interest,
    ) -> std::io::Result<()> {
        // SAFETY: fcntl on a descriptor the broker owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(token), interest)?;
        self.stream_tokens.insert(token, what);
        Ok(())
    }

    fn on_queue_ready(&mut self, q: usize, producer: bool, i: usize) {
        if let Some(queue) = self.queues[q].as_mut() {
            if producer {
                queue.producer_ready(i);
            } else {
                queue.consumer_ready(i);
            }
        }
        self.pump(q);
    }

    fn pump(&mut self, q: usize) {
        // Closed descriptors leave epoll as they close; their tokens just go unused.
        let mut closed = Vec::new();
        if let Some(queue) = self.queues[q].as_mut() {
            queue.pump(&mut closed);
        }
    }

    /// A consumer instance exited: whatever is still in its pipe is lost.
    /// `returning`: it will restart and reattach, so the queue keeps its
    /// messages for it (and its producers open) meanwhile.
    fn queue_consumer_exited(&mut self, k: usize, returning: bool) {
        for q in 0..self.queues.len() {
            let Some(i) = self.queue_ends[q].1.iter().position(|&c| c == k) else {
                continue;
            };
            let mut closed = Vec::new();
            if let Some(queue) = self.queues[q].as_mut() {
                if returning {
                    queue.consumer_gone(i, &mut closed);
                } else {
                    queue.consumer_done(i, &mut closed);
                }
            }
            self.pump(q);
        }
    }

    /// True when every stream edge of the process is a queue: a restart can
    /// then reattach it (a pipe's other end is gone for good).
    fn only_queue_edges(&self, proc: usize) -> bool {
        self.g.endpoints[proc]
            .iter()
            .all(|e| e.kind == crate::graph::EdgeKind::Queue)
    }

    /// Restarts a member of a running stream group: fresh pipes to the broker
    /// for each of its queues, then a normal launch with those ends.
    fn restart_member(&mut self, k: usize) {
        let proc = self.insts[k].proc;
        let mut ends: Vec<(i32, OwnedFd)> = Vec::new();
        let mut failed = false;
        for e in self.g.endpoints[proc].clone() {
            let Some(q) = self
                .g
                .file
                .queues
                .iter()
                .position(|q| q.name.value == e.edge)
            else {
                continue;
            };
            let Ok((read, write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
                failed = true;
                break;
            };
            let (producers, consumers) = self.queue_ends[q].clone();
            if let Some(i) = consumers.iter().position(|&c| c == k) {
                let Ok(keep) = read.try_clone() else {
                    failed = true;
                    break;
                };
                let file = std::fs::File::from(write);
                if self
                    .register_stream(file.as_raw_fd(), (q, false, i), Interest::WRITABLE)
                    .is_err()
                {
                    failed = true;
                }
                if let Some(queue) = self.queues[q].as_mut() {
                    queue.reattach_consumer(i, file, std::fs::File::from(keep));
                }
                ends.push((e.fd, read));
            } else if let Some(i) = producers.iter().position(|&c| c == k) {
                let file = std::fs::File::from(read);
                if self
                    .register_stream(file.as_raw_fd(), (q, true, i), Interest::READABLE)
                    .is_err()
                {
                    failed = true;
                }
                if let Some(queue) = self.queues[q].as_mut() {
                    queue.reattach_producer(i, file);
                }
                ends.push((e.fd, write));
            }
        }
        if failed {
            self.start_with(k, &[(-1, -1)]);
            return;
        }
        let fds: Vec<(i32, std::os::fd::RawFd)> =
            ends.iter().map(|(t, fd)| (*t, fd.as_raw_fd())).collect();
        self.start_with(k, &fds);
        for q in 0..self.queues.len() {
            self.pump(q);
        }
    }

    /// Runs the instance's readiness probe if it is due, and fails the attempt
    /// once the readiness timeout passed. Probing stops at the first success.
    fn probe_if_due(&mut self, k: usize, now: Instant) {
        let i = &self.insts[k];
        let Some(due) = i.probe_due else { return };
        let Some(ready) = self.g.file.processes[i.proc].ready.as_ref() else {
            return;
        };
        if i.ready || i.stop.is_some() {
            return;
        }
        if i.attempt_start
            .is_some_and(|s| now >= later(s, ready.timeout))
        {
            let i = &mut self.insts[k];
            i.not_ready = true;
            i.probe_due = None;
            i.stop = Some(StopReason::NotReady);
            self.stop_pending.push(k);
            self.stop_probing(k);
            return;
        }
        if now < due {
            return;
        }
        self.insts[k].probe_due = Some(later(now, ready.interval));
        match &ready.probe.value {
            crate::spec::Probe::Log(_) => {}
            crate::spec::Probe::File(path) => {
                let cwd = self.launches[k]
                    .as_ref()
                    .map(|(l, _)| l.cwd.clone())
                    .unwrap_or_else(|| self.base.clone());
                let path = cwd.join(spawn::interpolate(path, self.insts[k].replica));
                if path.exists() {
                    self.set_ready(k);
                }
            }
            crate::spec::Probe::Tcp { host, port } => {
                if self.tcp_probes.values().any(|(j, _)| *j == k) {
                    return; // one connect in flight at a time
                }
                // Resolved once per instance (the lookup blocks), then reused.
                let addr = match self.tcp_addrs.get(&k) {
                    Some(a) => *a,
                    None => {
                        use std::net::ToSocketAddrs;
                        let Some(a) = (host.as_str(), *port)
                            .to_socket_addrs()
                            .ok()
                            .and_then(|mut a| a.next())
                        else {
                            return;
                        };
                        self.tcp_addrs.insert(k, a);
                        a
                    }
                };
                if let Ok(mut stream) = mio::net::TcpStream::connect(addr) {
                    let token = self.next_token;
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(token), Interest::WRITABLE)
                        .is_ok()
                    {
                        self.tcp_probes.insert(token, (k, stream));
                    }
                }
            }
            crate::spec::Probe::Cmd(argv) => {
                if self.insts[k].probe_pid != 0 {
                    // The previous probe is still running: each run gets at most
                    // max(interval, 1s), then it is killed and counts as not ready.
                    let limit = ready.interval.max(Duration::from_secs(1));
                    if self.insts[k]
                        .probe_started
                        .is_some_and(|t| now >= later(t, limit))
                    {
                        hygiene::signal_group(self.insts[k].probe_pid, libc::SIGKILL);
                    }
                    return;
                }
                let Some((launch, _)) = &self.launches[k] else {
                    return;
                };
                let mut probe = launch.clone();
                probe.argv = argv
                    .iter()
                    .map(|a| spawn::interpolate(a, self.insts[k].replica))
                    .collect();
                let null = self.null.as_raw_fd();
                let fds = [
                    (0, posix::Source::Fd(null)),
                    (1, posix::Source::Fd(null)),
                    (2, posix::Source::Fd(null)),
                ];
                if let Ok(pid) = Prepared::new(&probe).and_then(|prep| posix::spawn(&prep, &fds)) {
                    self.insts[k].probe_pid = pid;
                    self.insts[k].probe_started = Some(now);
                    self.probe_pids.insert(pid, k);
                    self.groups.push(Group { pgid: pid, inst: k });
                }
            }
        }
    }

    fn on_tcp_probe(&mut self, token: usize) {
        let Some((k, mut stream)) = self.tcp_probes.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream);
        let connected = matches!(stream.take_error(), Ok(None)) && stream.peer_addr().is_ok();
        if connected && self.insts[k].phase == Phase::Running && !self.insts[k].ready {
            self.set_ready(k);
        }
    }

    fn set_ready(&mut self, k: usize) {
        let i = &mut self.insts[k];
        // Too late once the attempt failed readiness or is being stopped.
        if i.not_ready || i.stop.is_some() || i.phase != Phase::Running {
            return;
        }
        i.ready = true;
        i.ready_once = true;
        i.probe_due = None;
        let (name, pid, proc) = (i.name.clone(), i.pid, i.proc);
        self.stop_probing(k);
        self.emit(Event {
            event: "ready",
            process: Some(&name),
            pid: Some(pid),
            ..Default::default()
        });
        self.mark_changed(proc);
    }

    /// Ends any probe of instance `k` still in flight.
    fn stop_probing(&mut self, k: usize) {
        self.insts[k].probe_due = None;
        let pid = std::mem::take(&mut self.insts[k].probe_pid);
        if pid > 0 {
            hygiene::signal_group(pid, libc::SIGKILL);
        }
        let tokens: Vec<usize> = self
            .tcp_probes
            .iter()
            .filter(|(_, (j, _))| *j == k)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, mut stream)) = self.tcp_probes.remove(&t) {
                let _ = self.poll.registry().deregister(&mut stream);
            }
        }
    }

    /// Starts one attempt of instance `k`, with stream endpoints `(fd, engine fd)`.
    /// An endpoint `(-1, -1)` means the group could not be set up: the attempt fails.
    fn start_with(&mut self, k: usize, endpoints: &[(i32, std::os::fd::RawFd)]) {
        let proc = self.insts[k].proc;
        let replica = self.insts[k].replica;
        // Prepared once; a failed preparation (program not on PATH) is retried,
        // since a retry delay may be exactly what it takes for the program to appear.
        if !matches!(self.launches[k], Some((_, Ok(_)))) {
            let launch = spawn::launch(self.g, proc, replica, &self.base, &self.engine_env);
            let prepared = Prepared::new(&launch).map_err(|e| e.to_string());
            self.launches[k] = Some((launch, prepared));
        }
        let first = self.insts[k].attempts == 0;
        let now = Instant::now();
        {
            let i = &mut self.insts[k];
            // A restart counts once it is really attempted, not when it is scheduled.
            if std::mem::take(&mut i.restart_pending) {
                i.restarts += 1;
            }
            i.attempts += 1;
            i.attempt_start = Some(now);
            i.exit = None;
            i.stop = None;
            i.stop_sent = None;
            i.next_kill = None;
            i.start_error = false;
        }
        self.active.insert(k);
        let spawned = if endpoints.first() == Some(&(-1, -1)) {
            Err(std::io::Error::other(
                "its stream group could not be set up",
            ))
        } else {
            self.spawn_attempt(k, first, endpoints)
        };
        let (pid, log) = match spawned {
            Ok(spawned) => spawned,
            Err(err) => {
                let name = self.insts[k].name.clone();
                let text = err.to_string();
                self.console.note(&format!("{name}: {text}"), true);
                self.emit(Event {
                    event: "failed-to-start",
                    process: Some(&name),
                    attempt: Some(self.insts[k].attempts),
                    reason: Some(&text),
                    ..Default::default()
                });
                self.insts[k].start_error = true;
                self.insts[k].exit = None;
                self.attempt_end(k);
                return;
            }
        };
        self.take_locks(k, true);
        self.running += 1;
        if self.needs_slot(k) {
            self.slots_used += 1;
        }
        self.by_pid.insert(pid, k);
        self.groups.push(Group { pgid: pid, inst: k });
        if let Some(w) = &mut self.watchdog {
            w.watch(pid);
        }
        let mut open = 0;
        if let Some(fd) = log {
            if self.watch_pipe(k, fd) {
                open += 1;
            }
        }
        let i = &mut self.insts[k];
        i.pid = pid;
        i.pgid = pid;
        i.open_pipes = open;
        i.phase = Phase::Running;
        // `after = start` and children wait for a process that really started.
        let first_success = i.first_start.is_none();
        i.first_start.get_or_insert(now);
        i.ready = false;
        i.not_ready = false;
        i.probe_due = self.g.file.processes[proc].ready.as_ref().map(|_| now);
        let (name, attempt) = (i.name.clone(), i.attempts);
        self.active.insert(k);
        if first_success {
            self.mark_changed(proc);
        }
        self.emit(Event {
            event: "started",
            process: Some(&name),
            pid: Some(pid),
            attempt: Some(attempt),
            ..Default::default()
        });
    }

    /// One attempt's process: its descriptors, then posix_spawn.
    fn spawn_attempt(
        &self,
        k: usize,
        first: bool,
        endpoints: &[(i32, std::os::fd::RawFd)],
    ) -> std::io::Result<(i32, Option<OwnedFd>)> {
        use std::io::{Error, ErrorKind};
        let i = &self.insts[k];
        let p = &self.g.file.processes[i.proc];
        let Some((launch, prepared)) = &self.launches[k] else {
            return Err(Error::other("internal: no launch prepared"));
        };
        let program = launch.argv.first().map_or("", String::as_str);
        if !launch.cwd.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("working directory {} does not exist", launch.cwd.display()),
            ));
        }
        let prepared = prepared
            .as_ref()
            .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot run `{program}`: {e}")))?;
        // A stream edge on stdout replaces `stdout`: the file is then not even created.
        let out = match endpoints.iter().any(|(t, _)| *t == 1) {
            true => None,
            false => Some(spawn::sink(&p.stdout, &self.base, i.replica, first)?),
        };
        // The same file for both streams is opened once and shared, like `> f 2>&1`.
        let err = match (&out, &p.stderr) {
            (Some(Sink::File(f)), crate::spec::Output::File(_)) if p.stdout == p.stderr => {
                Sink::File(f.try_clone()?)
            }
            _ => spawn::sink(&p.stderr, &self.base, i.replica, first)?,
        };
        let plan = spawn::fd_plan(p.stdin, out, err, self.null.as_raw_fd(), endpoints)?;
        let pid = posix::spawn(prepared, &plan.fds).map_err(|e| {
            Error::new(
                e.kind(),
                format!("cannot run `{program}`: {}", describe_spawn_error(&e)),
            )
        })?;
        // Our copies of the child's write ends and files close here.
        drop(plan.keep);
        Ok((pid, plan.log))
    }

    fn watch_pipe(&mut self, k: usize, fd: OwnedFd) -> bool {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let token = self.next_token;
        self.next_token += 1;
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&raw), Token(token), Interest::READABLE)
            .is_err()
        {
            return false;
        }
        self.pipes.insert(
            token,
            Pipe {
                inst: k,
                file: std::fs::File::from(fd),
                buf: Vec::new(),
                queued: false,
            },
        );
        true
    }

    // ---- output -------------------------------------------------------------

    /// Notes that an output pipe has data; it is read by [`Engine::serve_output`].
    fn queue_read(&mut self, token: usize) {
        if let Some(pipe) = self.pipes.get_mut(&token) {
            if !std::mem::replace(&mut pipe.queued, true) {
                self.readable.push(token);
            }
        }
    }

    /// Reads the output pipes with data, a bounded turn each, unless the
    /// console is backlogged: then they wait (and their writers block on a
    /// full pipe) until a writer wakes the loop.
    fn serve_output(&mut self) {
        if self.readable.is_empty() {
            return;
        }
        let backlogged = self.console.backlogged();
        for t in std::mem::take(&mut self.readable) {
            let Some(pipe) = self.pipes.get_mut(&t) else {
                continue;
            };
            // A process that exited has at most a pipe's worth left: read it, so
            // its end is seen at once and not after the drain timeout.
            if backlogged && !matches!(self.insts[pipe.inst].phase, Phase::Draining { .. }) {
                self.readable.push(t);
                continue;
            }
            pipe.queued = false;
            if self.read_pipe(t, READ_TURN) {
                self.queue_read(t);
            }
        }
        self.console.flush();
    }

    /// Reports each new write error of the console, logs or events once; the
    /// run then exits non-zero.
    fn report_output_errors(&mut self) {
        let mut errors = self.console.take_errors();
        errors.extend(self.events.as_mut().and_then(Events::take_error));
        for e in errors {
            self.output_failed = true;
            self.console.note(&e, true);
        }
    }

    /// Reads up to `limit` bytes; returns true if the pipe may hold more.
    fn read_pipe(&mut self, token: usize, limit: usize) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let mut taken = 0;
        loop {
            if taken >= limit {
                return true;
            }
            let Some(pipe) = self.pipes.get_mut(&token) else {
                return false;
            };
            match pipe.file.read(&mut chunk) {
                Ok(0) => {
                    self.close_pipe(token);
                    return false;
                }
                Ok(n) => {
                    taken += n;
                    pipe.buf.extend_from_slice(&chunk[..n]);
                    let k = pipe.inst;
                    let mut lines = Vec::new();
                    let mut start = 0;
                    for (at, b) in pipe.buf.iter().enumerate() {
                        if *b == b'\n' {
                            lines.push(start..at);
                            start = at + 1;
                        }
                    }
                    let buf = std::mem::take(&mut pipe.buf);
                    let probing =
                        self.log_probes[self.insts[k].proc].is_some() && !self.insts[k].ready;
                    let mut matched = false;
                    for r in lines {
                        let line = &buf[r];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        self.console.line(k, &self.insts[k].name, line);
                        if probing && !matched {
                            if let Some(re) = &self.log_probes[self.insts[k].proc] {
                                matched = re.is_match(&String::from_utf8_lossy(line));
                            }
                        }
                    }
                    if matched && self.insts[k].phase == Phase::Running {
                        self.set_ready(k);
                    }
                    let mut rest = buf[start..].to_vec();
                    while rest.len() >= MAX_LINE {
                        let tail = rest.split_off(MAX_LINE);
                        self.console.line(k, &self.insts[k].name, &rest);
                        rest = tail;
                    }
                    if let Some(pipe) = self.pipes.get_mut(&token) {
                        pipe.buf = rest;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_pipe(token);
                    return false;
                }
            }
        }
    }

    fn close_pipe(&mut self, token: usize) {
        let Some(pipe) = self.pipes.remove(&token) else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&pipe.file.as_raw_fd()));
        let k = pipe.inst;
        if !pipe.buf.is_empty() {
            self.console.line(k, &self.insts[k].name, &pipe.buf);
        }
        let i = &mut self.insts[k];
        i.open_pipes = i.open_pipes.saturating_sub(1);
        if i.open_pipes == 0 && matches!(i.phase, Phase::Draining { .. }) {
            self.attempt_end(k);
        }
    }

    fn close_pipes_of(&mut self, k: usize) {
        let tokens: Vec<usize> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.inst == k)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            // Bounded: a leftover grandchild may write for ever.
            self.read_pipe(t, READ_TURN);
            self.close_pipe(t);
        }
    }

    // ---- exits --------------------------------------------------------------

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap(),
                SIGINT | SIGTERM | SIGHUP => self.interrupt(sig),
                SIGUSR1 => {
                    let table = self.status_table();
                    self.console.status(&table);
                }
                _ => {}
            }
        }
    }

    fn interrupt(&mut self, sig: i32) {
        if self.interrupted.is_none() {
            self.interrupted = Some(sig);
            self.cause = Some(format!("interrupted by {}", signal_name(sig)));
            self.console.note(
                &format!(
                    "{} received: stopping everything (send it again to kill at once)",
                    signal_name(sig)
                ),
                true,
            );
            self.begin_shutdown();
        } else if !self.kill_now {
            self.kill_now = true;
            self.console.note("killing everything now", true);
            self.kill_everything();
        }
    }

    fn kill_everything(&mut self) {
        for g in &self.groups {
            hygiene::signal_group(g.pgid, libc::SIGKILL);
        }
        let spare = self.watchdog.as_ref().map(Watchdog::pid);
        for pid in hygiene::descendants(std::process::id() as i32, spare) {
            hygiene::signal_pid(pid, Signal::SIGKILL);
        }
    }

    /// Reaps every exited child: our processes, and orphans re-parented to us.
    fn reap(&mut self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: plain syscall with valid out-pointers.
            let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
            if pid <= 0 {
                return;
            }
            if self.watchdog.as_ref().is_some_and(|w| w.pid() == pid) {
                self.console.note("the watchdog process exited early; an engine crash would now leave processes behind", true);
                self.watchdog = None;
                continue;
            }
            if let Some(k) = self.probe_pids.remove(&pid) {
                self.insts[k].probe_pid = 0;
                let passed = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                if passed && self.insts[k].phase == Phase::Running && !self.insts[k].ready {
                    self.set_ready(k);
                }
                continue;
            }
            let Some(k) = self.by_pid.remove(&pid) else {
                continue;
            };
            let exit = if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else {
                Exit::Signal(libc::WTERMSIG(status))
            };
            self.running -= 1;
            if self.needs_slot(k) {
                self.slots_used -= 1;
            }
            self.take_locks(k, false);
            let i = &mut self.insts[k];
            i.exit = Some(exit);
            i.peak_rss_kib = i.peak_rss_kib.max(usage.ru_maxrss as u64);
            if i.open_pipes == 0 {
                self.attempt_end(k);
            } else {
                i.phase = Phase::Draining {
                    since: Instant::now(),
                };
            }
        }
    }

    /// An attempt is over (process reaped and its output drained, or it never started).
    fn attempt_end(&mut self, k: usize) {
        self.stop_probing(k);
        let now = Instant::now();
        let proc = self.insts[k].proc;
        let p = &self.g.file.processes[proc];
        let i = &self.insts[k];
        let result = match (i.stop, i.stop_sent.is_some(), i.exit) {
            _ if i.not_ready => Outcome::Failed,
            (Some(StopReason::Timeout), _, _) => Outcome::TimedOut,
            (Some(_), true, _) => Outcome::Stopped,
            (_, _, Some(Exit::Code(c))) if p.success_codes.contains(&c) => Outcome::Ok,
            // A writer in a stream group killed by SIGPIPE: its reader stopped reading,
            // which is how `yes | head` ends; not a failure of the group.
            (_, _, Some(Exit::Signal(libc::SIGPIPE)))
                if !self.g.groups[self.g.group_of[proc]].edges.is_empty() =>
            {
                Outcome::Ok
            }
            _ => Outcome::Failed,
        };
        let duration = i.attempt_start.map(|s| now - s);
        let at_end = result == Outcome::Stopped && i.stop == Some(StopReason::DaemonEnd);
        let (code, signal) = match i.exit {
            Some(Exit::Code(c)) => (Some(c), None),
            Some(Exit::Signal(s)) => (None, Some(signal_name(s))),
            None => (None, None),
        };
        let (name, pid, attempt) = (i.name.clone(), i.pid, i.attempts);
        let in_group = !self.g.groups[self.g.group_of[proc]].edges.is_empty();
        // A stream group member reruns alone only if all its edges are queues
        // (it reattaches); a pipe's other end is gone for good.
        let rejoinable = !in_group || self.only_queue_edges(proc);
        let retry =
            result.is_failure() && attempt <= p.retries && self.mode == Mode::Normal && rejoinable;
        self.emit(Event {
            event: "exited",
            process: Some(&name),
            pid: (pid > 0 && !i.start_error).then_some(pid),
            code,
            signal,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            attempt: Some(attempt),
            status: Some(result.as_str()),
            ..Default::default()
        });
        // `restart` keeps long-running processes up: after retries, on exits we did not ask for.
        let asked_to_stop = matches!(
            self.insts[k].stop,
            Some(StopReason::Shutdown | StopReason::DaemonEnd)
        );
        let restart = !retry
            && !asked_to_stop
            && rejoinable
            && self.mode == Mode::Normal
            && self.insts[k].restarts < p.max_restarts
            && match p.restart {
                crate::spec::Restart::Never => false,
                crate::spec::Restart::OnFailure => result.is_failure(),
                crate::spec::Restart::Always => true,
            };
        self.queue_consumer_exited(k, restart || retry);
        if restart {
            let n = self.insts[k].restarts;
            let delay = restart_delay(n);
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => "was not ready in time".to_string(),
                (Outcome::TimedOut, _, _) => "timed out".to_string(),
                (_, Some(c), _) => format!("exited {c}"),
                (_, _, Some(s)) => format!("was killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.console.note(
                &format!(
                    "{name} {what}; restart {} of {} in {}",
                    n + 1,
                    p.max_restarts,
                    crate::spec::format_duration(delay)
                ),
                result.is_failure(),
            );
            self.emit(Event {
                event: "restarting",
                process: Some(&name),
                attempt: Some(attempt + 1),
                duration_ms: Some(delay.as_millis() as u64),
                ..Default::default()
            });
            let i = &mut self.insts[k];
            i.restart_pending = true;
            i.phase = Phase::RetryWait {
                until: later(now, delay),
            };
            i.stop = None;
            i.stop_sent = None;
            return;
        }
        if retry {
            let delay = p.retry_delay;
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => "was not ready in time".to_string(),
                (Outcome::TimedOut, _, _) => "timed out".to_string(),
                (_, Some(c), _) => format!("exited {c}"),
                (_, _, Some(s)) => format!("killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.console.note(
                &format!(
                    "{name} {what}; retry {} of {} in {}",
                    attempt,
                    p.retries,
                    crate::spec::format_duration(delay)
                ),
                false,
            );
            self.emit(Event {
                event: "retrying",
                process: Some(&name),
                attempt: Some(attempt + 1),
                ..Default::default()
            });
            let i = &mut self.insts[k];
            i.phase = Phase::RetryWait {
                until: later(now, delay),
            };
            i.stop = None;
            i.stop_sent = None;
            return;
        }
        self.insts[k].stopped_at_end = at_end;
        self.set_done(k, result);
        if result.is_failure() && in_group {
            // pipefail: the group fails together; stop the members still running.
            for j in self.group_peers(k) {
                self.request_stop(j, StopReason::Shutdown);
            }
        }
        if result.is_failure() {
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => format!(
                    "was not ready within {}",
                    p.ready
                        .as_ref()
                        .map(|r| crate::spec::format_duration(r.timeout))
                        .unwrap_or_default()
                ),
                (Outcome::TimedOut, _, _) => format!(
                    "timed out after {}",
                    p.timeout
                        .map(crate::spec::format_duration)
                        .unwrap_or_default()
                ),
                (_, Some(c), _) => format!("failed with exit code {c}"),
                (_, _, Some(s)) => format!("was killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.console.note(&format!("{name} {what}"), true);
            if self.fail_fast && self.mode == Mode::Normal {
                self.cause = Some(format!("`{name}` failed and fail_fast is on"));
                self.begin_shutdown();
            }
        }
    }

    // ---- stopping -------------------------------------------------------------

    fn begin_shutdown(&mut self) {
        self.mode = Mode::ShuttingDown;
        for k in 0..self.insts.len() {
            match self.insts[k].phase {
                Phase::Running | Phase::Draining { .. } => {
                    self.request_stop(k, StopReason::Shutdown)
                }
                Phase::RetryWait { .. } | Phase::Retrying => {
                    self.ready.remove(&self.pos_of[k]);
                    let why = self
                        .cause
                        .clone()
                        .unwrap_or_else(|| "the run is stopping".into());
                    self.stop_waiting(k, &why);
                }
                _ => {}
            }
        }
    }

    /// Ends an instance that waits for a retry or restart: that attempt will
    /// not happen, and its last event says so.
    fn stop_waiting(&mut self, k: usize, reason: &str) {
        self.insts[k].restart_pending = false;
        self.set_done(k, Outcome::Stopped);
        let name = self.insts[k].name.clone();
        self.emit(Event {
            event: "stopped",
            process: Some(&name),
            status: Some("stopped"),
            reason: Some(reason),
            ..Default::default()
        });
    }

    fn request_stop(&mut self, k: usize, reason: StopReason) {
        let i = &mut self.insts[k];
        match i.phase {
            Phase::Running if i.stop.is_none() => {
                i.stop = Some(reason);
                self.stop_pending.push(k);
            }
            Phase::RetryWait { .. } | Phase::Retrying => {
                i.stopped_at_end = reason == StopReason::DaemonEnd;
                let why = match reason {
                    StopReason::DaemonEnd => "daemon: its parent or every non-daemon finished",
                    _ => "the run is stopping",
                };
                self.ready.remove(&self.pos_of[k]);
                self.stop_waiting(k, why);
            }
            _ => {}
        }
    }

    /// Sends stop signals in reverse dependency order: an instance is signalled
    /// only once nothing still running that depends on it is being stopped.
    fn send_stops(&mut self) {
        if self.stop_pending.is_empty() {
            return;
        }
        // A process that already exited must be reported with its own status, not "stopped".
        self.reap();
        let now = Instant::now();
        let pending = std::mem::take(&mut self.stop_pending);
        for k in pending {
            let i = &self.insts[k];
            if i.phase != Phase::Running || i.stop.is_none() || i.stop_sent.is_some() {
                continue;
            }
            if !matches!(i.stop, Some(StopReason::Timeout | StopReason::NotReady))
                && self.has_running_dependent(k)
            {
                self.stop_pending.push(k);
                continue;
            }
            let proc = i.proc;
            let sig = self.g.file.processes[proc].stop_signal;
            let (pgid, name, pid) = (i.pgid, i.name.clone(), i.pid);
            hygiene::signal_group(pgid, sig.number);
            // A stopped (SIGSTOP / SIGTTIN) process would not act on the signal: resume it.
            hygiene::signal_group(pgid, libc::SIGCONT);
            let i = &mut self.insts[k];
            i.stop_sent = Some(now);
            i.next_kill = Some(later(now, self.grace));
            self.emit(Event {
                event: "stopping",
                process: Some(&name),
                pid: Some(pid),
                signal: Some(sig.name),
                ..Default::default()
            });
        }
    }

    fn has_running_dependent(&self, k: usize) -> bool {
        let target = self.insts[k].proc;
        self.active.iter().any(|&j| {
            let other = &self.insts[j];
            j != k
                && matches!(other.phase, Phase::Running | Phase::Draining { .. })
                && other.stop.is_some()
                && other.proc != target
                && self.g.deps[other.proc].iter().any(|d| d.target == target)
        })
    }

    // ---- time -----------------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.watchdog.as_ref().and_then(Watchdog::due) {
            consider(t);
        }
        for i in self.active.iter().map(|&k| &self.insts[k]) {
            match i.phase {
                Phase::Running => {
                    if let (Some(start), Some(limit), None) = (
                        i.attempt_start,
                        self.g.file.processes[i.proc].timeout,
                        i.stop,
                    ) {
                        consider(later(start, limit));
                    }
                    if let Some(t) = i.next_kill {
                        consider(t);
                    }
                    if let (Some(t), Some(r)) = (i.probe_due, &self.g.file.processes[i.proc].ready)
                    {
                        consider(t);
                        if let Some(start) = i.attempt_start {
                            consider(later(start, r.timeout));
                        }
                    }
                }
                Phase::Draining { since } => consider(since + DRAIN_TIMEOUT),
                Phase::RetryWait { until } => consider(until),
                _ => {}
            }
        }
        next
    }

    fn on_deadlines(&mut self, now: Instant) {
        let active: Vec<usize> = self.active.iter().copied().collect();
        for k in active {
            match self.insts[k].phase {
                Phase::RetryWait { until } if now >= until => {
                    self.insts[k].phase = Phase::Retrying;
                    self.ready.insert(self.pos_of[k]);
                }
                Phase::Running => {
                    self.probe_if_due(k, now);
                    let i = &self.insts[k];
                    let limit = self.g.file.processes[i.proc].timeout;
                    if let (Some(start), Some(limit), None) = (i.attempt_start, limit, i.stop) {
                        if now >= later(start, limit) {
                            self.insts[k].stop = Some(StopReason::Timeout);
                            self.stop_pending.push(k);
                        }
                    }
                    let i = &self.insts[k];
                    if let Some(t) = i.next_kill {
                        if now >= t || self.kill_now {
                            let (pgid, name, pid) = (i.pgid, i.name.clone(), i.pid);
                            hygiene::signal_group(pgid, libc::SIGKILL);
                            self.insts[k].next_kill = Some(now + KILL_RECHECK);
                            self.emit(Event {
                                event: "killed",
                                process: Some(&name),
                                pid: Some(pid),
                                signal: Some("SIGKILL"),
                                ..Default::default()
                            });
                        }
                    }
                }
                Phase::Draining { since } if now >= since + DRAIN_TIMEOUT => {
                    // A leftover process still holds the output open: stop waiting for EOF.
                    self.close_pipes_of(k);
                    if matches!(self.insts[k].phase, Phase::Draining { .. }) {
                        self.attempt_end(k);
                    }
                }
                _ => {}
            }
        }
    }

    // ---- the end ----------------------------------------------------------------

    /// Stops whatever is left: process groups with members and descendants
    /// that escaped their group (double fork, setsid). Stop signal, grace,
    /// then SIGKILL until nothing is left.
    fn sweep(&mut self) {
        let me = std::process::id() as i32;
        let spare = self.watchdog.as_ref().map(Watchdog::pid);
        self.reap_all();
        let mut left: Vec<(i32, usize)> = self
            .groups
            .iter()
            .filter(|g| hygiene::group_alive(g.pgid))
            .map(|g| (g.pgid, g.inst))
            .collect();
        let escaped = hygiene::descendants(me, spare);
        if left.is_empty() && escaped.is_empty() {
            return;
        }
        for &(pgid, k) in &left {
            let sig = self.g.file.processes[self.insts[k].proc].stop_signal;
            let name = self.insts[k].name.clone();
            self.console.note(
                &format!(
                    "{name} left processes behind in its group; stopping them ({})",
                    sig.name
                ),
                false,
            );
            hygiene::signal_group(pgid, sig.number);
            hygiene::signal_group(pgid, libc::SIGCONT);
        }
        for &pid in &escaped {
            hygiene::signal_pid(pid, Signal::SIGTERM);
        }
        if !escaped.is_empty() {
            self.console.note(
                &format!(
                    "stopping {} remaining descendant process(es)",
                    escaped.len()
                ),
                false,
            );
        }
        let deadline = if self.kill_now {
            Instant::now()
        } else {
            later(Instant::now(), self.grace)
        };
        let hard_stop = later(deadline, Duration::from_secs(5));
        loop {
            self.reap_all();
            left.retain(|&(pgid, _)| hygiene::group_alive(pgid));
            let escaped = hygiene::descendants(me, spare);
            if left.is_empty() && escaped.is_empty() {
                return;
            }
            let now = Instant::now();
            for sig in self.signals.pending().collect::<Vec<_>>() {
                if matches!(sig, SIGINT | SIGTERM | SIGHUP) {
                    if self.interrupted.is_none() {
                        // Already stopping gracefully; remember it for the exit code.
                        self.interrupted = Some(sig);
                    } else {
                        self.kill_now = true;
                    }
                }
            }
            if now >= deadline || self.kill_now {
                for &(pgid, _) in &left {
                    hygiene::signal_group(pgid, libc::SIGKILL);
                }
                for pid in escaped {
                    hygiene::signal_pid(pid, Signal::SIGKILL);
                }
            }
            if now >= hard_stop {
                self.console
                    .note("some processes could not be killed", true);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn reap_all(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain syscall with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.watchdog.as_ref().is_some_and(|w| w.pid() == pid) {
                self.watchdog = None;
            }
        }
    }

    fn finish(mut self) -> RunOutcome {
        self.report_output_errors();
        if let Some(mut w) = self.watchdog.take() {
            w.finish();
            let pid = w.pid();
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        let rows: Vec<SummaryRow> = self
            .order
            .iter()
            .map(|&k| {
                let i = &self.insts[k];
                SummaryRow {
                    process: i.name.clone(),
                    status: i.outcome.map_or("skipped", Outcome::as_str).to_string(),
                    exit: match i.exit {
                        Some(Exit::Code(c)) => c.to_string(),
                        Some(Exit::Signal(s)) => signal_name(s).to_string(),
                        None if i.start_error => "not run".to_string(),
                        None => String::new(),
                    },
                    attempts: i.attempts,
                    duration: i.first_start.zip(i.end).map(|(s, e)| e - s),
                    peak_rss_kib: (i.peak_rss_kib > 0).then_some(i.peak_rss_kib),
                    queue: (!self.queues.is_empty()).then(|| self.queue_counts_of(k)),
                    restarts: (self
                        .g
                        .file
                        .processes
                        .iter()
                        .any(|p| p.restart != crate::spec::Restart::Never))
                    .then_some(i.restarts),
                }
            })
            .collect();
        let failed = self
            .insts
            .iter()
            .any(|i| i.outcome.is_some_and(Outcome::is_failure));
        let exit_code = match self.interrupted {
            Some(SIGINT) => 130,
            Some(SIGTERM) => 143,
            Some(SIGHUP) => 129,
            _ if failed || self.output_failed || self.stalled => 1,
            _ => 0,
        };
        let elapsed = self.started_at.elapsed();
        let mut queue_lines = String::new();
        for q in 0..self.queues.len() {
            let Some(queue) = &self.queues[q] else {
                continue;
            };
            let c = queue.counts();
            let name = self.g.file.queues[q].name.value.clone();
            let per: Vec<String> = self.queue_ends[q]
                .1
                .iter()
                .zip(&c.per_consumer)
                .map(|(&k, n)| format!("{} {n}", self.insts[k].name))
                .collect();
            queue_lines.push_str(&format!(
                "queue {name}: {} in, {} out ({}), {} lost, {} requeued\n",
                c.messages_in,
                c.messages_out,
                per.join(", "),
                c.lost,
                c.requeued
            ));
            self.emit(Event {
                event: "queue",
                queue: Some(&name),
                messages_in: Some(c.messages_in),
                messages_out: Some(c.messages_out),
                lost: Some(c.lost),
                requeued: Some(c.requeued),
                ..Default::default()
            });
        }
        // SAFETY: getrusage fills the struct we pass.
        let engine_rss = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage.ru_maxrss as u64
        };
        self.emit(Event {
            event: "run-finished",
            code: Some(i32::from(exit_code)),
            duration_ms: Some(elapsed.as_millis() as u64),
            engine_peak_rss_kib: Some(engine_rss),
            ..Default::default()
        });
        if let Some(ev) = &mut self.events {
            ev.flush();
        }
        let mut exit_code = exit_code;
        let mut late: Vec<String> = self
            .events
            .as_mut()
            .and_then(Events::take_error)
            .into_iter()
            .collect();
        // Everything queued is written before the summary; after a second
        // signal, a reader that does not read gets half a second.
        let deadline = self
            .kill_now
            .then(|| Instant::now() + Duration::from_millis(500));
        let signals = &mut self.signals;
        late.extend(self.console.finish(deadline, || {
            signals
                .pending()
                .any(|s| matches!(s, SIGINT | SIGTERM | SIGHUP))
        }));
        for e in &late {
            eprintln!("jobgraph: {e}");
        }
        if !late.is_empty() && exit_code == 0 {
            exit_code = 1;
        }
        let mut summary = render_summary(&rows, self.console.stderr_color());
        if !queue_lines.is_empty() {
            summary.push('\n');
            summary.push_str(&queue_lines);
        }
        RunOutcome {
            exit_code,
            rows,
            summary,
        }
    }

    /// (received, sent, lost in flight to it, requeued from it) over every
    /// queue, for one instance.
    fn queue_counts_of(&self, k: usize) -> (u64, u64, u64, u64) {
        let mut total = (0, 0, 0, 0);
        for q in 0..self.queues.len() {
            let Some(queue) = &self.queues[q] else {
                continue;
            };
            let c = queue.counts();
            let (producers, consumers) = &self.queue_ends[q];
            if let Some(i) = consumers.iter().position(|&j| j == k) {
                total.0 += c.per_consumer[i];
                total.2 += c.lost_per_consumer[i];
                total.3 += c.requeued_per_consumer[i];
            }
            if let Some(i) = producers.iter().position(|&j| j == k) {
                total.1 += c.per_producer[i];
            }
        }
        total
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
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::live::ConsoleStyle;

    fn graph(text: &str) -> Graph {
        let src = crate::source::SourceFile::new(Path::new("t.toml"), text.to_string());
        let checked = crate::check_source(src);
        checked.graph.expect("a valid graph")
    }

    fn opts() -> RunOptions {
        RunOptions {
            only: Vec::new(),
            keep_going: false,
            max_parallel: None,
            events: None,
            log_dir: None,
            console: ConsoleStyle {
                color: false,
                color_stderr: false,
                progress: false,
                quiet: true,
                logs_to_stderr: false,
            },
        }
    }

    #[test]
    fn a_run_that_can_never_progress_ends_at_once() {
        let g = graph(
            "[process.a]\ncmd = [\"true\"]\n[process.b]\nafter = [\"a\"]\ncmd = [\"true\"]\n",
        );
        let mut o = opts();
        o.max_parallel = Some(0);
        let out = run(&g, Path::new("."), &o).expect("runs");
        assert_eq!(out.exit_code, 1);
        assert!(
            out.rows.iter().all(|r| r.status == "skipped"),
            "{:?}",
            out.rows
        );
    }

    #[test]
    fn huge_durations_do_not_overflow_the_clock() {
        let t = Instant::now();
        assert!(later(t, Duration::MAX) > t);
        assert_eq!(later(t, Duration::from_secs(1)), t + Duration::from_secs(1));
    }

    #[test]
    fn restart_back_off_doubles_up_to_thirty_seconds() {
        assert_eq!(restart_delay(0), Duration::from_millis(250));
        assert_eq!(restart_delay(2), Duration::from_millis(1000));
        assert_eq!(restart_delay(40), Duration::from_secs(30));
    }
}
