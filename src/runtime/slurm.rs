//! The Slurm executor: units run on a Slurm cluster, the engine stays the
//! coordinator (after, joins, retries, timeouts, locks and fail-fast are
//! decided exactly as locally; see docs/slurm.md).
//!
//! Two modes, picked by the environment:
//!
//! - **step mode** (`SLURM_JOB_ID` set: inside `salloc` or an `sbatch`
//!   script): each unit is a job step, `srun --jobid=J -n1 --exact …`, run as a
//!   local process with the unit's descriptors 0-2, which srun relays. The
//!   unit's end is srun's end (`wait4`, woken by SIGCHLD as locally); a stop
//!   signal goes to the step with `scancel --signal` (SIGTERM to srun would
//!   kill the step outright).
//! - **batch mode** (no allocation): each unit is one `sbatch` job. Its
//!   output goes to files in the run directory, which the executor copies
//!   into the unit's own descriptors (so logs are prefixed as locally); its
//!   state comes from one `squeue` call per tick for all units; its exit
//!   status from a file the wrapper writes.
//!
//! The engine touches a heartbeat file in the run directory every second.
//! When it stops (the engine died, even by SIGKILL), the run's units are
//! cancelled: in step mode by the run's guardian step (`guard.sh`, one per
//! run, detached from the engine once it runs), in batch mode by each job's
//! wrapper (`unit.sh`, which also records the command's exit status).
//!
//! A stream group Slurm cannot carry between units (fd ≥ 3, duplex or
//! queue edges; in batch mode any stream edge) runs as one group unit, a
//! nested run of just its members on one node (see `group.rs`). `ready.cmd`
//! probes run here, as local processes (and such groups too, when the job
//! file was read from stdin and cannot be run again on a node).

use super::executor::{Endpoint, Executor, Exit, Local, Placement, Reaped, RelayedQueue, UnitId};
use super::posix::{Prepared, Source};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The wrapper every batch job runs in.
const UNIT_SH: &str = include_str!("slurm/unit.sh");
/// The guardian step of a run in step mode.
const GUARD_SH: &str = include_str!("slurm/guard.sh");
/// Touches the heartbeat every [`BEAT_EVERY`] from a thread of its own, as
/// long as the flag it returns is set: a Slurm command that blocks the loop
/// for the controller's `MessageTimeout` (10 s, twice in one turn when a
/// controller pauses) must not look like a dead engine, or the units cancel
/// a live run. The loop touches it too, and reports a failure to.
fn start_heartbeat(path: PathBuf) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let alive = std::sync::Arc::new(AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&alive);
    let started = super::hygiene::spawn_thread("jobgraph-heartbeat", move || {
        while flag.load(Ordering::Acquire) {
            std::thread::sleep(BEAT_EVERY);
            // A failure is the loop's to report (it touches the file too).
            let touched = File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            drop(touched);
        }
    });
    // Without the thread, the loop's own touches remain.
    drop(started);
    alive
}

/// How often the engine touches its heartbeat file.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Step mode: a step is looked up in `squeue` (for its id and node) once it
/// has run this long; most short steps end before, and cost no call.
const STEP_LOOKUP_AFTER: Duration = Duration::from_millis(100);
/// Batch mode: how often `squeue` is asked about the run's jobs.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A batch job that left the queue without an exit status file: how long to
/// wait for the file to show up (a shared filesystem's attribute cache).
const STATUS_GRACE: Duration = Duration::from_secs(3);
/// How often a live group unit's events and logs are read.
const GROUP_EVERY: Duration = Duration::from_millis(50);
/// Batch ids start above any pid (pid_max is at most 2^22), so that an id is
/// never mistaken for a local process group.
const BATCH_ID_BASE: i32 = 1 << 30;

mod batch;
mod cancel;
mod commands;
mod config;
mod error;
mod group;
mod step;
use batch::BatchUnit;
use commands::{
    already_over, command, find_tool, job_part, run_id, start_guardian, steps_of, Tools,
};
pub use config::{Config, Mode};
pub use error::SlurmError;

#[derive(Debug)]
enum Kind {
    /// A local process (a probe, a member of a stream group Slurm cannot carry).
    Local,
    /// An srun process (its step is found by its job name when signalled).
    Step {
        /// When srun was started.
        since: Instant,
        /// Its step id and node were reported.
        listed: bool,
    },
    Batch(Box<BatchUnit>),
}

#[derive(Debug)]
struct Unit {
    /// The instance (`name` or `name[r]`).
    instance: String,
    /// The Slurm job name.
    job_name: String,
    kind: Kind,
    /// Signals sent to it (srun and the wrapper report a death by signal N as 128 + N).
    sent: Vec<i32>,
}

impl Unit {
    /// `128 + N` after signal N was sent is a death by that signal, as locally.
    fn translate(&self, exit: Exit) -> Exit {
        match exit {
            Exit::Code(c) if c > 128 && self.sent.contains(&(c - 128)) => Exit::Signal(c - 128),
            other => other,
        }
    }
}

/// Runs units as Slurm job steps or batch jobs.
#[derive(Debug)]
pub struct Slurm {
    mode: Mode,
    config: Config,
    tools: Tools,
    local: Local,
    /// `jobgraph-<run>-`: every job and step of this run is named so.
    prefix: String,
    run_dir: PathBuf,
    wrapper: PathBuf,
    heartbeat: PathBuf,
    beat_due: Instant,
    /// Set to stop the heartbeat thread.
    beating: std::sync::Arc<std::sync::atomic::AtomicBool>,
    uid: u32,
    units: FxHashMap<UnitId, Unit>,
    /// Instances with a live unit (a second spawn meanwhile is a probe).
    live: FxHashMap<String, UnitId>,
    /// Attempts per instance, for batch file names.
    attempts: FxHashMap<String, u32>,
    next_batch_id: i32,
    /// Signals to send at the next reap, grouped: (signal, all of the job).
    pending: Vec<(i32, bool, String)>,
    /// Step mode: signals for steps, sent at the next reap: (signal, srun pid, job name).
    pending_steps: Vec<(i32, UnitId, String)>,
    /// Plain `scancel` (cancel a pending job).
    pending_cancel: Vec<String>,
    next_poll: Instant,
    /// Step mode: the next `squeue -s` for the ids and nodes of new steps.
    next_step_poll: Instant,
    done: VecDeque<Reaped>,
    /// News of units' jobs, steps and nodes, for the engine.
    placements: VecDeque<Placement>,
    /// The heartbeat file could not be touched (reported once).
    beat_failed: bool,
    /// `squeue` calls made (batch polling), for the benchmark.
    pub squeue_calls: u64,
    noted_local: bool,
    /// The group unit whose members are being spawned.
    collecting: Option<group::GroupUnit>,
    /// Every group unit of the run.
    groups: Vec<group::GroupUnit>,
    group_count: u32,
    next_member_id: i32,
    /// A member's group unit (index into `groups`).
    member_of: FxHashMap<UnitId, usize>,
    /// A live group unit's Slurm unit, to its index.
    unit_group: FxHashMap<UnitId, usize>,
    /// Members' ends, for the engine.
    member_done: VecDeque<Reaped>,
    /// Members found ready by their nested run, for the engine.
    ready_members: VecDeque<UnitId>,
    /// Queues of group units, with their nested runs' counts.
    relayed: Vec<RelayedQueue>,
}

/// Checks that Slurm answers, and in step mode that the allocation runs.
fn check_slurm(tools: &Tools, mode: &Mode, uid: u32) -> Result<(), SlurmError> {
    match mode {
        Mode::Step { job } => {
            let state = command(
                &tools.squeue,
                &[
                    "-h".into(),
                    "-j".into(),
                    job.clone(),
                    "-o".into(),
                    "%T".into(),
                ],
            )
            .map_err(|e| SlurmError::CheckAllocation {
                job: job.clone(),
                source: Box::new(e),
            })?;
            if state.trim() != "RUNNING" {
                return Err(SlurmError::NotRunning {
                    job: job.clone(),
                    state: state.trim().to_string(),
                });
            }
        }
        Mode::Batch => {
            command(
                &tools.squeue,
                &[
                    "-h".into(),
                    "-u".into(),
                    uid.to_string(),
                    "-o".into(),
                    "%i".into(),
                ],
            )
            .map_err(|e| SlurmError::NoAnswer(Box::new(e)))?;
        }
    }
    Ok(())
}

/// Writes a file of the run directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SlurmError> {
    std::fs::write(path, bytes).map_err(|source| SlurmError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Slurm {
    /// Checks that Slurm answers (and, in step mode, that the allocation
    /// runs), creates the run directory and writes the wrapper.
    pub fn new(config: Config) -> Result<Slurm, SlurmError> {
        let tools = Tools {
            srun: find_tool("srun")?,
            sbatch: find_tool("sbatch")?,
            squeue: find_tool("squeue")?,
            scancel: find_tool("scancel")?,
        };
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        check_slurm(&tools, &config.mode, uid)?;
        let run = run_id();
        let base = if config.dir.is_absolute() {
            config.dir.clone()
        } else {
            std::env::current_dir()
                .map_err(SlurmError::NoCwd)?
                .join(&config.dir)
        };
        let run_dir = base.join(&run);
        std::fs::create_dir_all(&run_dir).map_err(|source| SlurmError::Create {
            path: run_dir.clone(),
            source,
        })?;
        let wrapper = run_dir.join("unit.sh");
        write_file(&wrapper, UNIT_SH.as_bytes())?;
        let heartbeat = run_dir.join("heartbeat");
        write_file(&heartbeat, b"")?;
        let beating = start_heartbeat(heartbeat.clone());
        let prefix = format!("jobgraph-{run}-");
        if let Mode::Step { job } = &config.mode {
            let guard = run_dir.join("guard.sh");
            write_file(&guard, GUARD_SH.as_bytes())?;
            if let Err(e) = start_guardian(
                &tools.srun,
                job,
                &prefix,
                &guard,
                &heartbeat,
                config.stale_secs,
            ) {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e);
            }
        }
        Ok(Slurm {
            mode: config.mode.clone(),
            config,
            tools,
            local: Local::default(),
            prefix,
            run_dir,
            wrapper,
            heartbeat,
            beat_due: Instant::now() + BEAT_EVERY,
            beating,
            uid,
            units: FxHashMap::default(),
            live: FxHashMap::default(),
            attempts: FxHashMap::default(),
            next_batch_id: BATCH_ID_BASE,
            pending: Vec::new(),
            pending_steps: Vec::new(),
            pending_cancel: Vec::new(),
            next_poll: Instant::now(),
            next_step_poll: Instant::now(),
            done: VecDeque::new(),
            placements: VecDeque::new(),
            beat_failed: false,
            squeue_calls: 0,
            noted_local: false,
            collecting: None,
            groups: Vec::new(),
            group_count: 0,
            next_member_id: (1 << 30) + (1 << 29),
            member_of: FxHashMap::default(),
            unit_group: FxHashMap::default(),
            member_done: VecDeque::new(),
            ready_members: VecDeque::new(),
            relayed: Vec::new(),
        })
    }

    /// "step mode (allocation J)" or "batch mode", for the run's first note.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::Step { job } => format!("step mode, allocation {job}"),
            Mode::Batch => "batch mode".into(),
        }
    }

    /// The run directory (wrapper, heartbeat, batch output and statuses).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn spawn_local(
        &mut self,
        prepared: &Prepared,
        fds: &[(i32, Source)],
        why: &str,
    ) -> io::Result<UnitId> {
        if !self.noted_local {
            self.noted_local = true;
            eprintln!("jobgraph: slurm: {why}: such units run on this node, outside Slurm (see docs/slurm.md)");
        }
        self.local.spawn(prepared, fds)
    }

    /// Touches the heartbeat file the units watch.
    fn beat(&mut self, now: Instant) {
        if now < self.beat_due {
            return;
        }
        self.beat_due = now + BEAT_EVERY;
        let touched = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.heartbeat)
            .and_then(|f| f.set_modified(SystemTime::now()));
        match touched {
            Ok(()) => self.beat_failed = false,
            Err(e) if !std::mem::replace(&mut self.beat_failed, true) => eprintln!(
                "jobgraph: slurm: cannot touch the heartbeat {}: {e}; units cancel themselves after {} s without it",
                self.heartbeat.display(),
                self.config.stale_secs
            ),
            Err(_) => {}
        }
    }

    fn forget(&mut self, id: UnitId) {
        if let Some(u) = self.units.remove(&id) {
            if self.live.get(&u.instance) == Some(&id) {
                self.live.remove(&u.instance);
            }
        }
    }

    /// Starts a unit on Slurm (a step or a batch job), announces its job,
    /// and keeps its record.
    fn launch(
        &mut self,
        instance: String,
        job_name: String,
        args: Vec<String>,
        overlap: bool,
        prepared: &Prepared,
        fds: &[(i32, Source)],
    ) -> io::Result<UnitId> {
        let (id, kind) = match self.mode.clone() {
            Mode::Step { job } => self.spawn_step(&job, args, &job_name, overlap, prepared, fds)?,
            Mode::Batch => self.spawn_batch(args, &instance, &job_name, prepared, fds)?,
        };
        let job_id = match (&kind, &self.mode) {
            (Kind::Batch(b), _) => Some(b.job.clone()),
            (Kind::Step { .. }, Mode::Step { job }) => Some(job.clone()),
            _ => None,
        };
        if let Some(job_id) = job_id {
            self.placements.push_back(Placement {
                id,
                running: matches!(kind, Kind::Step { .. }),
                job_id,
                step_id: None,
                node: None,
            });
        }
        self.units.insert(
            id,
            Unit {
                instance,
                job_name,
                kind,
                sent: Vec::new(),
            },
        );
        Ok(id)
    }
}

impl Executor for Slurm {
    /// Units run under slurmstepd, not in a process group of ours: a
    /// listener cannot be traced to them, so the connect alone decides.
    fn owns_local_groups(&self) -> bool {
        false
    }

    fn spawn(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<UnitId> {
        let name = prepared
            .env_var("JOBGRAPH_NAME")
            .unwrap_or_else(|| "unit".into());
        let instance = match prepared.env_var("JOBGRAPH_REPLICAS").as_deref() {
            Some(n) if n != "1" => format!(
                "{name}[{}]",
                prepared.env_var("JOBGRAPH_REPLICA").unwrap_or_default()
            ),
            _ => name.clone(),
        };
        if self.collecting.is_some() {
            return self.add_member(instance, fds);
        }
        let daemon = self.config.daemons.contains(&name);
        let job_name = format!("{}{}", self.prefix, job_part(&instance));
        let streams = prepared.env().iter().any(|e| e.starts_with("JOBGRAPH_FD_"));
        let probe = self.live.contains_key(&instance);
        let local_why = if probe {
            Some("`ready.cmd` probes")
        } else if fds.iter().any(|(t, _)| *t > 2) {
            Some("stream endpoints on descriptors 3 and up cannot cross srun or sbatch")
        } else if streams && self.mode == Mode::Batch {
            Some("stream edges (pipes, queues) cannot cross sbatch")
        } else {
            None
        };
        if let Some(why) = local_why {
            let id = self.spawn_local(prepared, fds, why)?;
            if !probe {
                self.live.insert(instance.clone(), id);
            }
            self.units.insert(
                id,
                Unit {
                    instance,
                    job_name,
                    kind: Kind::Local,
                    sent: Vec::new(),
                },
            );
            return Ok(id);
        }
        let args = self.config.unit_args(&name).cloned().collect();
        let id = self.launch(
            instance.clone(),
            job_name,
            args,
            streams || daemon,
            prepared,
            fds,
        )?;
        self.live.insert(instance, id);
        Ok(id)
    }

    fn signal_group(&mut self, id: UnitId, sig: i32) -> bool {
        if let Some(alive) = self.signal_member(id, sig) {
            return alive;
        }
        let Some(u) = self.units.get_mut(&id) else {
            return self.local.signal_group(id, sig);
        };
        if sig != libc::SIGCONT && !u.sent.contains(&sig) {
            u.sent.push(sig);
        }
        let u = &self.units[&id];
        match &u.kind {
            Kind::Local => self.local.signal_group(id, sig),
            Kind::Step { .. } => {
                if sig == libc::SIGCONT {
                    return self.local.group_alive(id);
                }
                let name = u.job_name.clone();
                self.pending_steps.push((sig, id, name));
                self.local.group_alive(id)
            }
            Kind::Batch(b) => {
                if b.exit.is_some() {
                    return false;
                }
                if sig == libc::SIGCONT {
                    return true;
                }
                let job = b.job.clone();
                let pending = b.state == "PD";
                if pending || sig == libc::SIGKILL {
                    if sig == libc::SIGKILL {
                        self.pending.push((sig, true, job.clone()));
                    }
                    self.pending_cancel.push(job);
                } else {
                    self.pending.push((sig, true, job));
                }
                if let Some(Unit {
                    kind: Kind::Batch(b),
                    ..
                }) = self.units.get_mut(&id)
                {
                    if pending || sig == libc::SIGKILL {
                        b.cancelled = Some(sig);
                    }
                }
                true
            }
        }
    }

    fn group_alive(&mut self, id: UnitId) -> bool {
        if let Some(alive) = self.member_alive(id) {
            return alive;
        }
        match self.units.get(&id).map(|u| &u.kind) {
            Some(Kind::Batch(b)) => b.exit.is_none(),
            _ => self.local.group_alive(id),
        }
    }

    fn exec_error(&mut self, id: UnitId) -> Option<std::io::Error> {
        self.local.exec_error(id)
    }

    fn reap(&mut self) -> Option<Reaped> {
        loop {
            if let Some(r) = self.member_done.pop_front() {
                return Some(r);
            }
            if self.groups_live() {
                self.pump_groups();
                if let Some(r) = self.member_done.pop_front() {
                    return Some(r);
                }
            }
            let r = self.reap_unit()?;
            if !self.group_unit_ended(&r) {
                return Some(r);
            }
        }
    }

    fn placed(&mut self) -> Option<Placement> {
        loop {
            let p = self.placements.pop_front()?;
            let mut each = self.fan_out(p);
            if let Some(first) = each.pop() {
                self.placements.extend(each);
                return Some(first);
            }
        }
    }

    fn group_begin(&mut self, members: &[(String, Vec<Endpoint>)]) -> bool {
        self.begin_group_unit(members)
    }

    fn group_end(&mut self) {
        self.end_group_unit();
    }

    fn ready(&mut self) -> Option<UnitId> {
        self.ready_members.pop_front()
    }

    fn relayed_queues(&mut self) -> Vec<RelayedQueue> {
        let mut v = std::mem::take(&mut self.relayed);
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn poll_due(&self) -> Option<Instant> {
        let due = self.unit_poll_due();
        if !self.member_done.is_empty() || !self.ready_members.is_empty() {
            return Some(Instant::now());
        }
        // A live group unit's files are followed every 50 ms.
        if self.groups_live() {
            let soon = Instant::now() + GROUP_EVERY;
            return Some(due.map_or(soon, |d| d.min(soon)));
        }
        due
    }
}

impl Slurm {
    /// One Slurm unit (or local process) that ended, if any.
    fn reap_unit(&mut self) -> Option<Reaped> {
        let now = Instant::now();
        self.beat(now);
        if !self.pending.is_empty()
            || !self.pending_cancel.is_empty()
            || !self.pending_steps.is_empty()
        {
            self.flush_signals();
        }
        if let Some(mut r) = self.local.reap() {
            if let Some(u) = self.units.get(&r.id) {
                if matches!(u.kind, Kind::Step { .. }) {
                    r.exit = u.translate(r.exit);
                }
            }
            self.forget(r.id);
            return Some(r);
        }
        if self.done.is_empty() {
            self.poll_batch(now);
        }
        self.poll_steps(now);
        self.done.pop_front()
    }

    fn unit_poll_due(&self) -> Option<Instant> {
        let now = Instant::now();
        if !self.done.is_empty()
            || !self.placements.is_empty()
            || !self.pending.is_empty()
            || !self.pending_cancel.is_empty()
            || !self.pending_steps.is_empty()
        {
            return Some(now);
        }
        let mut due = self.beat_due;
        for u in self.units.values() {
            if let Kind::Step {
                since,
                listed: false,
            } = u.kind
            {
                due = due.min((since + STEP_LOOKUP_AFTER).max(self.next_step_poll));
            }
            if let Kind::Batch(b) = &u.kind {
                let t = if b.exit.is_some() || !b.out.buf.is_empty() || !b.err.buf.is_empty() {
                    now + Duration::from_millis(10)
                } else if b.gone_since.is_some() {
                    now + Duration::from_millis(100)
                } else {
                    self.next_poll
                };
                due = due.min(t);
            }
        }
        Some(due)
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        self.beating
            .store(false, std::sync::atomic::Ordering::Release);
        self.flush_signals();
        self.cancel_all();
        if self.squeue_calls > 0 && std::env::var_os("JOBGRAPH_SLURM_STATS").is_some() {
            eprintln!("jobgraph: slurm: {} squeue calls", self.squeue_calls);
        }
        if !self.config.keep {
            let _ = std::fs::remove_dir_all(&self.run_dir);
            // The base directory too, if this run was its only user.
            if let Some(base) = self.run_dir.parent() {
                let _ = std::fs::remove_dir(base);
            }
        }
    }
}
