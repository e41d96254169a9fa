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
//! Units Slurm cannot carry run here, as local processes: members of stream
//! groups that need descriptors srun does not relay (fd ≥ 3, and in batch
//! mode any stream edge), and `ready.cmd` probes.

use super::executor::{Executor, Exit, Local, Placement, Reaped};
use super::posix::{Prepared, Source};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The wrapper every batch job runs in.
const UNIT_SH: &str = include_str!("slurm/unit.sh");
/// The guardian step of a run in step mode.
const GUARD_SH: &str = include_str!("slurm/guard.sh");
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
/// Batch ids start above any pid (pid_max is at most 2^22), so that an id is
/// never mistaken for a local process group.
const BATCH_ID_BASE: i32 = 1 << 30;

mod config;
pub use config::{Config, Mode};

/// Slurm's commands, resolved once on the engine's PATH.
#[derive(Debug)]
struct Tools {
    srun: PathBuf,
    sbatch: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
}

/// One copy of a batch job's output file into the unit's descriptor.
#[derive(Debug)]
struct Follow {
    path: PathBuf,
    file: Option<File>,
    sink: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl Follow {
    /// Copies what is new; true when everything written so far is delivered.
    fn pump(&mut self) -> bool {
        let Some(sink) = &self.sink else {
            return true;
        };
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut budget: usize = 256 * 1024;
        loop {
            while !self.buf.is_empty() {
                // SAFETY: writing from our buffer to a descriptor we own.
                let n = unsafe {
                    libc::write(sink.as_raw_fd(), self.buf.as_ptr().cast(), self.buf.len())
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => return false,
                        // The reader is gone (EPIPE): nothing to deliver to.
                        _ => {
                            self.buf.clear();
                            self.sink = None;
                            return true;
                        }
                    }
                }
                self.buf.drain(..n as usize);
            }
            let Some(file) = &mut self.file else {
                return true;
            };
            if budget == 0 {
                return false;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

#[derive(Debug)]
struct BatchUnit {
    job: String,
    /// Squeue's compact state at the last tick ("PD", "R", …).
    state: String,
    status: PathBuf,
    out: Follow,
    err: Follow,
    /// The signal of a cancel we asked for (a job without status then ended by it).
    cancelled: Option<i32>,
    /// Seen gone from the queue (or in an end state), since.
    gone_since: Option<Instant>,
    /// How it ended, once known; reaped when its output is delivered.
    exit: Option<Exit>,
    /// Its start was reported (a `running` placement).
    started: bool,
}

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
    uid: u32,
    units: FxHashMap<i32, Unit>,
    /// Instances with a live unit (a second spawn meanwhile is a probe).
    live: FxHashMap<String, i32>,
    /// Attempts per instance, for batch file names.
    attempts: FxHashMap<String, u32>,
    next_batch_id: i32,
    /// Signals to send at the next reap, grouped: (signal, all of the job).
    pending: Vec<(i32, bool, String)>,
    /// Step mode: signals for steps, sent at the next reap: (signal, srun pid, job name).
    pending_steps: Vec<(i32, i32, String)>,
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
}

fn find_tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("--executor slurm: `{name}` is not on PATH (is this a Slurm login or compute node?)")
        })
}

/// Runs a Slurm command and returns its stdout, or an error naming the
/// command and quoting its stderr.
fn command(prog: &Path, args: &[String]) -> Result<String, String> {
    let shown = || {
        let name = prog.file_name().map_or_else(
            || prog.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut s = name;
        for a in args.iter().take(8) {
            s.push(' ');
            s.push_str(a);
        }
        if args.len() > 8 {
            s.push_str(" …");
        }
        s
    };
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", shown()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Scancel's complaints about units that are already over.
fn already_over(stderr: &str) -> bool {
    stderr.lines().all(|l| {
        l.trim().is_empty()
            || l.contains("already completing or completed")
            || l.contains("Invalid job id")
            || l.contains("Job/step already")
            || l.contains("does not exist")
    })
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let x = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:08x}", (x ^ (x >> 29)) as u32)
}

/// A Slurm job name for an instance: `name`, or `name.r` for `name[r]`.
fn job_part(instance: &str) -> String {
    instance.replace('[', ".").replace(']', "")
}

/// Starts the run's guardian step and, once it runs, lets go of its srun:
/// the step lives on in Slurm, outside the engine's process tree, so that
/// the engine's death cannot take it along. srun and its shepherd (the child
/// that cancels the step when srun alone dies) are killed together, as the
/// kernel kills them when the engine's PID namespace ends.
fn start_guardian(
    srun: &Path,
    job: &str,
    prefix: &str,
    guard: &Path,
    heartbeat: &Path,
    stale_secs: u64,
) -> Result<(), String> {
    let ready = guard.with_file_name("guard.ready");
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(srun)
        .process_group(0)
        .args([
            format!("--jobid={job}"),
            "--ntasks=1".into(),
            "--overlap".into(),
            "--quiet".into(),
            format!("--job-name={prefix}guard"),
            "/bin/sh".into(),
            guard.display().to_string(),
            heartbeat.display().to_string(),
            stale_secs.to_string(),
            prefix.to_string(),
            ready.display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `srun` for the guardian step: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready.exists() {
            // The step runs: srun is no longer needed (and must not be the engine's).
            // SAFETY: signalling the process group srun leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!(
                "`srun --jobid={job} … guard.sh` (the run's guardian step) ended ({status}): {}",
                err.trim()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`srun --jobid={job} … guard.sh` (the run's guardian step) did not start within 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Slurm {
    /// Checks that Slurm answers (and, in step mode, that the allocation
    /// runs), creates the run directory and writes the wrapper.
    pub fn new(config: Config) -> Result<Slurm, String> {
        let tools = Tools {
            srun: find_tool("srun")?,
            sbatch: find_tool("sbatch")?,
            squeue: find_tool("squeue")?,
            scancel: find_tool("scancel")?,
        };
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        match &config.mode {
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
                .map_err(|e| format!("--executor slurm: cannot check the allocation {job}: {e}"))?;
                if state.trim() != "RUNNING" {
                    return Err(format!(
                        "--executor slurm: the allocation SLURM_JOB_ID={job} is not running (squeue says `{}`)",
                        state.trim()
                    ));
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
                .map_err(|e| format!("--executor slurm: Slurm does not answer: {e}"))?;
            }
        }
        let run = run_id();
        let base = if config.dir.is_absolute() {
            config.dir.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("--executor slurm: no current directory: {e}"))?
                .join(&config.dir)
        };
        let run_dir = base.join(&run);
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| format!("--executor slurm: cannot create {}: {e}", run_dir.display()))?;
        let wrapper = run_dir.join("unit.sh");
        std::fs::write(&wrapper, UNIT_SH)
            .map_err(|e| format!("--executor slurm: cannot write {}: {e}", wrapper.display()))?;
        let heartbeat = run_dir.join("heartbeat");
        std::fs::write(&heartbeat, b"").map_err(|e| {
            format!(
                "--executor slurm: cannot write {}: {e}",
                heartbeat.display()
            )
        })?;
        let prefix = format!("jobgraph-{run}-");
        if let Mode::Step { job } = &config.mode {
            let guard = run_dir.join("guard.sh");
            std::fs::write(&guard, GUARD_SH)
                .map_err(|e| format!("--executor slurm: cannot write {}: {e}", guard.display()))?;
            if let Err(e) = start_guardian(
                &tools.srun,
                job,
                &prefix,
                &guard,
                &heartbeat,
                config.stale_secs,
            ) {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(format!("--executor slurm: {e}"));
            }
        }
        Ok(Slurm {
            mode: config.mode.clone(),
            config,
            tools,
            local: Local,
            prefix,
            run_dir,
            wrapper,
            heartbeat,
            beat_due: Instant::now() + BEAT_EVERY,
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

    fn wrapper_args(&self, status: &str, prepared: &Prepared) -> Vec<String> {
        let mut v = vec![
            self.wrapper.display().to_string(),
            self.heartbeat.display().to_string(),
            self.config.stale_secs.to_string(),
            status.to_string(),
            self.prefix.clone(),
            prepared.program(),
        ];
        v.extend(prepared.args().into_iter().skip(1));
        v
    }

    fn spawn_local(
        &mut self,
        prepared: &Prepared,
        fds: &[(i32, Source)],
        why: &str,
    ) -> io::Result<i32> {
        if !self.noted_local {
            self.noted_local = true;
            eprintln!("jobgraph: slurm: {why}: such units run on this node, outside Slurm (see docs/slurm.md)");
        }
        self.local.spawn(prepared, fds)
    }

    fn spawn_step(
        &mut self,
        job: &str,
        process: &str,
        job_name: &str,
        overlap: bool,
        prepared: &Prepared,
        fds: &[(i32, Source)],
    ) -> io::Result<(i32, Kind)> {
        let srun = self.tools.srun.display().to_string();
        let mut argv = vec![
            srun.clone(),
            format!("--jobid={job}"),
            "--ntasks=1".into(),
            "--exact".into(),
            "--quiet".into(),
            format!("--job-name={job_name}"),
        ];
        // The members of a stream group must run at once (a pipeline blocks
        // otherwise), and daemons take no slot: they may share CPUs.
        if overlap {
            argv.push("--overlap".into());
        }
        argv.extend(self.config.unit_args(process).cloned());
        argv.push(prepared.program());
        argv.extend(prepared.args().into_iter().skip(1));
        let wrapped = prepared.wrapped(&srun, &argv)?;
        let pid = self.local.spawn(&wrapped, fds)?;
        Ok((
            pid,
            Kind::Step {
                since: Instant::now(),
                listed: false,
            },
        ))
    }

    fn spawn_batch(
        &mut self,
        process: &str,
        instance: &str,
        job_name: &str,
        prepared: &Prepared,
        fds: &[(i32, Source)],
    ) -> io::Result<(i32, Kind)> {
        let attempt = {
            let a = self.attempts.entry(instance.to_string()).or_insert(0);
            *a += 1;
            *a
        };
        let stem = self.run_dir.join(format!("{job_name}.{attempt}"));
        let file = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
        let (out_path, err_path, status) = (file("out"), file("err"), file("status"));
        // The unit's stdout and stderr, for the copies of its output files.
        let sink = |target: i32| -> io::Result<Option<OwnedFd>> {
            let src = match fds.iter().find(|(t, _)| *t == target) {
                Some((_, Source::Fd(fd))) => *fd,
                Some((_, Source::Inherit)) | None => target,
            };
            // SAFETY: duplicating a descriptor the engine keeps open through the call.
            let fd = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor we own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: fstat into a zeroed struct; fcntl on our descriptor.
            unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO {
                    // The engine reads this pipe on the same thread: never block on it.
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
            }
            Ok(Some(owned))
        };
        let (out_sink, err_sink) = (sink(1)?, sink(2)?);
        let cwd = match prepared.cwd() {
            c if c.is_absolute() => c,
            c => std::env::current_dir()?.join(c),
        };
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={job_name}"),
            format!("--output={}", out_path.display()),
            format!("--error={}", err_path.display()),
            format!("--chdir={}", cwd.display()),
            "--ntasks=1".into(),
        ];
        args.extend(self.config.unit_args(process).cloned());
        args.extend(self.wrapper_args(&status.display().to_string(), prepared));
        let out = Command::new(&self.tools.sbatch)
            .args(&args)
            .env_clear()
            .envs(prepared.env().iter().filter_map(|kv| kv.split_once('=')))
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::other(format!("`sbatch` could not be started: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "`sbatch --job-name={job_name} …` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let job = text
            .trim()
            .split(';')
            .next()
            .filter(|j| !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "`sbatch --parsable` printed `{}`, not a job id",
                    text.trim()
                ))
            })?
            .to_string();
        let id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.checked_add(1).unwrap_or(BATCH_ID_BASE);
        Ok((
            id,
            Kind::Batch(Box::new(BatchUnit {
                job,
                state: "PD".into(),
                status,
                out: Follow {
                    path: out_path,
                    file: None,
                    sink: out_sink,
                    buf: Vec::new(),
                },
                err: Follow {
                    path: err_path,
                    file: None,
                    sink: err_sink,
                    buf: Vec::new(),
                },
                cancelled: None,
                gone_since: None,
                exit: None,
                started: false,
            })),
        ))
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

    /// Step mode: one `squeue -s` for the ids and nodes of the steps that
    /// have run a while and are not yet reported.
    fn poll_steps(&mut self, now: Instant) {
        let Mode::Step { job } = &self.mode else {
            return;
        };
        let due = self.units.values().any(|u| {
            matches!(u.kind, Kind::Step { since, listed: false } if now.duration_since(since) >= STEP_LOOKUP_AFTER)
        });
        if !due || now < self.next_step_poll {
            return;
        }
        self.next_step_poll = now + POLL_EVERY;
        self.squeue_calls += 1;
        let args = ["-h", "-s", "-j", job.as_str(), "-o", "%i %j %N"].map(str::to_string);
        let text = match command(&self.tools.squeue, &args) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("jobgraph: slurm: {e} (retrying)");
                return;
            }
        };
        let steps: FxHashMap<&str, (&str, Option<&str>)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (step, name) = (w.next()?, w.next()?);
                Some((name, (step, w.next().filter(|n| *n != "(null)"))))
            })
            .collect();
        let job = job.clone();
        for (&id, u) in &mut self.units {
            let Kind::Step { listed, .. } = &mut u.kind else {
                continue;
            };
            if let (false, Some((step, node))) = (*listed, steps.get(u.job_name.as_str())) {
                *listed = true;
                self.placements.push_back(Placement {
                    id,
                    running: true,
                    job_id: job.clone(),
                    step_id: Some((*step).to_string()),
                    node: node.map(str::to_string),
                });
            }
        }
    }

    /// Finds the steps of the queued step signals with one `squeue` call and
    /// queues their `scancel`; a unit without a step yet (srun still waiting
    /// for CPUs) has its srun signalled instead, which withdraws the request.
    fn resolve_steps(&mut self) {
        let wanted = std::mem::take(&mut self.pending_steps);
        let Mode::Step { job } = &self.mode else {
            return;
        };
        let listed = command(
            &self.tools.squeue,
            &[
                "-h".into(),
                "-s".into(),
                "-j".into(),
                job.clone(),
                "-o".into(),
                "%i %j".into(),
            ],
        );
        let steps: FxHashMap<String, String> = match &listed {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .map(|(id, name)| (name.to_string(), id.to_string()))
                .collect(),
            Err(e) => {
                eprintln!("jobgraph: slurm: {e}");
                FxHashMap::default()
            }
        };
        for (sig, pid, name) in wanted {
            match steps.get(&name) {
                Some(step) => self.pending.push((sig, false, step.clone())),
                None => {
                    self.local.signal_group(pid, sig);
                }
            }
        }
    }

    /// Sends the queued signals: one `scancel` per kind, for all its targets.
    fn flush_signals(&mut self) {
        if !self.pending_steps.is_empty() {
            self.resolve_steps();
        }
        let mut cancel = std::mem::take(&mut self.pending_cancel);
        if !cancel.is_empty() {
            cancel.sort();
            cancel.dedup();
            let mut args = vec!["--quiet".to_string()];
            args.extend(cancel);
            self.scancel(&args);
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort();
        pending.dedup();
        let mut i = 0;
        while i < pending.len() {
            let (sig, full) = (pending[i].0, pending[i].1);
            let mut args = vec!["--quiet".to_string(), format!("--signal={sig}")];
            if full {
                args.push("--full".into());
            }
            while i < pending.len() && pending[i].0 == sig && pending[i].1 == full {
                args.push(pending[i].2.clone());
                i += 1;
            }
            self.scancel(&args);
        }
    }

    fn scancel(&self, args: &[String]) {
        if let Err(e) = command(&self.tools.scancel, args) {
            let stderr = e.split_once("): ").map_or("", |(_, s)| s);
            if !already_over(stderr) {
                eprintln!("jobgraph: slurm: {e}");
            }
        }
    }

    /// One `squeue` call for every batch unit of the run; ends the units
    /// that left the queue; copies new output.
    fn poll_batch(&mut self, now: Instant) {
        let any = self
            .units
            .values()
            .any(|u| matches!(&u.kind, Kind::Batch(b) if b.exit.is_none()));
        if any && now >= self.next_poll {
            self.next_poll = now + POLL_EVERY;
            self.squeue_calls += 1;
            let listed = command(
                &self.tools.squeue,
                &[
                    "-h".into(),
                    "-u".into(),
                    self.uid.to_string(),
                    "-o".into(),
                    "%i %t %N".into(),
                ],
            );
            match listed {
                Err(e) => eprintln!("jobgraph: slurm: {e} (retrying)"),
                Ok(text) => {
                    let states: FxHashMap<&str, (&str, Option<&str>)> = text
                        .lines()
                        .filter_map(|l| {
                            let mut w = l.split_whitespace();
                            let (id, state) = (w.next()?, w.next()?);
                            Some((id, (state, w.next().filter(|n| *n != "(null)"))))
                        })
                        .collect();
                    for (&id, u) in &mut self.units {
                        let Kind::Batch(b) = &mut u.kind else {
                            continue;
                        };
                        if b.exit.is_some() {
                            continue;
                        }
                        let over = match states.get(b.job.as_str()) {
                            Some(&(st, node)) => {
                                b.state = st.to_string();
                                if st != "PD" && !std::mem::replace(&mut b.started, true) {
                                    self.placements.push_back(Placement {
                                        id,
                                        running: true,
                                        job_id: b.job.clone(),
                                        step_id: None,
                                        node: node.map(str::to_string),
                                    });
                                }
                                matches!(
                                    st,
                                    "CG" | "CD"
                                        | "F"
                                        | "CA"
                                        | "TO"
                                        | "NF"
                                        | "OOM"
                                        | "BF"
                                        | "PR"
                                        | "DL"
                                )
                            }
                            None => true,
                        };
                        if over {
                            b.gone_since.get_or_insert(now);
                            // Ended between two polls: it ran, though no poll saw it.
                            if !std::mem::replace(&mut b.started, true) {
                                self.placements.push_back(Placement {
                                    id,
                                    running: true,
                                    job_id: b.job.clone(),
                                    step_id: None,
                                    node: None,
                                });
                            }
                        }
                    }
                }
            }
        }
        let tick = self.next_poll > now; // a poll just happened
        for (&id, u) in &mut self.units {
            let Kind::Batch(b) = &mut u.kind else {
                continue;
            };
            let busy = b.gone_since.is_some() || !b.out.buf.is_empty() || !b.err.buf.is_empty();
            if !tick && !busy {
                continue;
            }
            if b.exit.is_none() {
                if let Some(since) = b.gone_since {
                    b.exit = match std::fs::read_to_string(&b.status) {
                        Ok(s) if s.trim().parse::<i32>().is_ok() => {
                            Some(Exit::Code(s.trim().parse().unwrap_or(1)))
                        }
                        _ if b.cancelled.is_some() => b.cancelled.map(Exit::Signal),
                        _ if now.duration_since(since) >= STATUS_GRACE => {
                            eprintln!(
                                "jobgraph: slurm: job {} ({}) left the queue without an exit status (cancelled outside jobgraph, or its node failed)",
                                b.job, u.instance
                            );
                            Some(Exit::Signal(libc::SIGKILL))
                        }
                        _ => None,
                    };
                }
            }
            let delivered = b.out.pump() & b.err.pump();
            if let (Some(exit), true) = (b.exit, delivered) {
                let exit = match exit {
                    Exit::Code(c) if c > 128 && u.sent.contains(&(c - 128)) => {
                        Exit::Signal(c - 128)
                    }
                    other => other,
                };
                // Everything written is delivered: the engine sees EOF, then the end.
                b.out.sink = None;
                b.err.sink = None;
                self.done.push_back(Reaped {
                    id,
                    exit,
                    peak_rss_kib: 0,
                });
            }
        }
        let ended: Vec<i32> = self
            .done
            .iter()
            .map(|r| r.id)
            .filter(|id| self.units.contains_key(id))
            .collect();
        for id in ended {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: i32) {
        if let Some(u) = self.units.remove(&id) {
            if self.live.get(&u.instance) == Some(&id) {
                self.live.remove(&u.instance);
            }
        }
    }

    /// Cancels whatever of the run is still queued or running, and waits
    /// (a few seconds at most) until `squeue` lists none of it.
    fn cancel_all(&mut self) {
        let list_args: Vec<String> = match &self.mode {
            Mode::Step { job } => vec![
                "-h".into(),
                "-s".into(),
                "-j".into(),
                job.clone(),
                "-o".into(),
                "%i %j".into(),
            ],
            Mode::Batch => vec![
                "-h".into(),
                "-u".into(),
                self.uid.to_string(),
                "-o".into(),
                "%i %j".into(),
            ],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let guard = format!("{}guard", self.prefix);
        let mut first = true;
        loop {
            let Ok(text) = command(&self.tools.squeue, &list_args) else {
                return;
            };
            // The guardian step is cancelled, not waited for: without its srun,
            // Slurm takes about 2 s to complete it.
            let listed: Vec<(&str, &str)> = text
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .filter(|(_, name)| name.starts_with(&self.prefix) && (first || *name != guard))
                .collect();
            let only_guard = listed.iter().all(|(_, name)| *name == guard);
            let ids: Vec<String> = listed.iter().map(|(id, _)| id.to_string()).collect();
            first = false;
            if ids.is_empty() || Instant::now() >= deadline {
                if !ids.is_empty() {
                    eprintln!(
                        "jobgraph: slurm: still listed by squeue after cancelling: {}",
                        ids.join(" ")
                    );
                }
                return;
            }
            let mut args = vec![
                "--quiet".to_string(),
                "--signal=KILL".into(),
                "--full".into(),
            ];
            args.extend(ids.iter().cloned());
            self.scancel(&args);
            let mut args = vec!["--quiet".to_string()];
            args.extend(ids);
            self.scancel(&args);
            if only_guard {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Executor for Slurm {
    /// Units run under slurmstepd, not in a process group of ours: a
    /// listener cannot be traced to them, so the connect alone decides.
    fn owns_local_groups(&self) -> bool {
        false
    }

    fn spawn(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<i32> {
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
        let (id, kind) = match (local_why, self.mode.clone()) {
            (Some(why), _) => (self.spawn_local(prepared, fds, why)?, Kind::Local),
            (None, Mode::Step { job }) => {
                self.spawn_step(&job, &name, &job_name, streams || daemon, prepared, fds)?
            }
            (None, Mode::Batch) => self.spawn_batch(&name, &instance, &job_name, prepared, fds)?,
        };
        if !probe {
            self.live.insert(instance.clone(), id);
        }
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

    fn signal_group(&mut self, id: i32, sig: i32) -> bool {
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

    fn group_alive(&mut self, id: i32) -> bool {
        match self.units.get(&id).map(|u| &u.kind) {
            Some(Kind::Batch(b)) => b.exit.is_none(),
            _ => self.local.group_alive(id),
        }
    }

    fn reap(&mut self) -> Option<Reaped> {
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

    fn placed(&mut self) -> Option<Placement> {
        self.placements.pop_front()
    }

    fn poll_due(&self) -> Option<Instant> {
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
