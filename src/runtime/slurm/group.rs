//! Group units: a stream group Slurm cannot carry runs as **one** unit, a
//! nested `jobgraph run FILE --members … --executor local` on one node.
//!
//! srun relays only descriptors 0-2, so a duplex pipe or an endpoint on
//! fd ≥ 3 cannot cross it; a queue could, but srun reads a consumer's stdin
//! ahead of it, so a message would count as delivered that no process read.
//! sbatch relays nothing live. Such a group (any stream group in batch mode)
//! is handed to one nested run, which makes the pipes, socketpairs and
//! queues on its node and applies its members' timeouts, probes and retries
//! exactly as a local run does.
//!
//! The nested run writes its events and its members' logs to files in the
//! run directory (a filesystem the nodes share); this module follows them:
//! each member's log lines are copied into the member's own log pipe (so
//! they are prefixed and matched as locally), `ready` events become
//! readiness, an `exited` without `then` is the member's end (with the
//! nested run's verdict), and `queue` events are the queues' counts. A stop
//! signal to any member is one SIGTERM to the unit (the nested engine then
//! stops every member gracefully), SIGKILL kills it; a member the unit's end
//! left without an `exited` ended with the unit.

use super::batch::Follow;
use super::*;
use crate::graph::EdgeKind;
use crate::runtime::executor::{Endpoint, Relayed, RelayedQueue, Verdict};

/// Member ids start here, above the batch ids (which start at 2^30).
const MEMBER_ID_BASE: i32 = (1 << 30) + (1 << 29);

/// A member of a group unit, as the engine knows it.
#[derive(Debug)]
pub(super) struct Member {
    id: UnitId,
    instance: String,
    /// The nested run's log file of the member, copied into its log pipe.
    log: Follow,
    /// Attempts its nested run started, and restarts it made.
    attempts: u32,
    restarts: u32,
    /// Its end, known, waiting for its last log lines to be taken by the engine.
    ending: Option<(Exit, Verdict)>,
    /// Its end is known (handed to the engine, or about to be).
    reported: bool,
    /// The nested run stopped it, though this run did not stop the unit:
    /// its end waits for the nested run's own end to say why (a signal
    /// from outside, such as an `scancel`, makes it a failure).
    held: Option<Exit>,
}

/// One group unit: its members, its nested run's files, its Slurm unit.
#[derive(Debug)]
pub(super) struct GroupUnit {
    /// The members' processes, for `--members`.
    processes: Vec<String>,
    members: Vec<Member>,
    dir: PathBuf,
    events: Lines,
    /// Its Slurm unit, once launched.
    unit: Option<UnitId>,
    /// It ended (the unit's own exit).
    ended: Option<Exit>,
    termed: bool,
    killed: bool,
    /// A member started (the nested run runs).
    started: bool,
    /// The unit's Slurm job (the allocation's, in step mode).
    job: Option<String>,
    /// Its members were told they run (a `running` placement).
    running_told: bool,
}

/// Complete lines appended to a file since the last look.
#[derive(Debug)]
struct Lines {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Lines {
    fn take(&mut self) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = &mut self.file else {
            return Vec::new();
        };
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.partial.extend_from_slice(&chunk[..n]),
            }
        }
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let done: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&done)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// One line of the nested run's `--events`, as far as it matters here.
#[derive(Debug, serde::Deserialize)]
struct NestedEvent {
    event: String,
    #[serde(default)]
    process: Option<String>,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    then: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    messages_in: Option<u64>,
    #[serde(default)]
    messages_out: Option<u64>,
    #[serde(default)]
    lost: Option<u64>,
    #[serde(default)]
    requeued: Option<u64>,
    #[serde(default)]
    consumers: std::collections::BTreeMap<String, u64>,
}

impl Slurm {
    /// Whether this stream group must run as one unit, and (if so) the
    /// start of its collection.
    pub(super) fn begin_group_unit(&mut self, parts: &[(String, Vec<Endpoint>)]) -> bool {
        let srun_carries = |e: &Endpoint| e.fd <= 2 && e.kind == EdgeKind::Pipe;
        let needed = match self.mode {
            Mode::Batch => parts.iter().any(|(_, ends)| !ends.is_empty()),
            Mode::Step { .. } => parts.iter().any(|(_, ends)| !ends.iter().all(srun_carries)),
        };
        if !needed {
            return false;
        }
        if self.config.job_file.is_none() {
            if !std::mem::replace(&mut self.noted_local, true) {
                eprintln!("jobgraph: slurm: the job file was read from stdin, so a stream group Slurm cannot carry ({}) cannot be run again on a node: such groups run on this node, outside Slurm (see docs/slurm.md)", parts.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", "));
            }
            return false;
        }
        self.group_count += 1;
        let dir = self.run_dir.join(format!("group.{}", self.group_count));
        self.collecting = Some(GroupUnit {
            processes: parts.iter().map(|(p, _)| p.clone()).collect(),
            members: Vec::new(),
            events: Lines {
                path: dir.join("events"),
                file: None,
                partial: Vec::new(),
            },
            dir,
            unit: None,
            ended: None,
            termed: false,
            killed: false,
            started: false,
            job: None,
            running_told: false,
        });
        true
    }

    /// A member of the group being collected: an id, and its log pipe.
    pub(super) fn add_member(
        &mut self,
        instance: String,
        fds: &[(i32, Source)],
    ) -> io::Result<UnitId> {
        let id = UnitId(self.next_member_id);
        self.next_member_id = self.next_member_id.checked_add(1).unwrap_or(MEMBER_ID_BASE);
        let Some(g) = &mut self.collecting else {
            return Err(io::Error::other(
                "internal: no group unit is being collected",
            ));
        };
        let stem = crate::report::console::log_file_stem(&instance);
        g.members.push(Member {
            id,
            instance,
            log: Follow {
                path: g.dir.join("logs").join(format!("{stem}.log")),
                file: None,
                sink: log_pipe(fds)?,
                buf: Vec::new(),
            },
            attempts: 0,
            restarts: 0,
            ending: None,
            reported: false,
            held: None,
        });
        Ok(id)
    }

    /// Launches the collected group unit; if it cannot start, its members fail.
    pub(super) fn end_group_unit(&mut self) {
        let Some(mut g) = self.collecting.take() else {
            return;
        };
        let launched = self.launch_group(&g);
        let gi = self.groups.len();
        for m in &g.members {
            self.member_of.insert(m.id, gi);
        }
        match launched {
            Ok(unit) => {
                g.unit = Some(unit);
                g.job = match (self.units.get(&unit).map(|u| &u.kind), &self.mode) {
                    (Some(Kind::Batch(b)), _) => Some(b.job.clone()),
                    (_, Mode::Step { job }) => Some(job.clone()),
                    _ => None,
                };
                self.unit_group.insert(unit, gi);
            }
            Err(e) => {
                eprintln!(
                    "jobgraph: slurm: the group unit of {} could not start: {e}",
                    g.processes.join(", ")
                );
                g.ended = Some(Exit::Code(127));
            }
        }
        self.groups.push(g);
        if self.groups[gi].ended.is_some() {
            self.settle_group(gi);
        }
    }

    fn launch_group(&mut self, g: &GroupUnit) -> io::Result<UnitId> {
        let file = self.config.job_file.clone().unwrap_or_default();
        std::fs::create_dir_all(g.dir.join("logs"))?;
        let exe = std::env::current_exe()?;
        let mut argv = vec![
            exe.display().to_string(),
            "run".into(),
            file.display().to_string(),
            format!("--members={}", g.processes.join(",")),
            "--executor=local".into(),
            format!("--events={}", g.events.path.display()),
            format!("--log-dir={}", g.dir.join("logs").display()),
            format!("--state={}", g.dir.join("journal").display()),
            "--quiet".into(),
            "--no-progress".into(),
        ];
        for (k, v) in &self.config.sets {
            argv.push(format!("--set={k}={v}"));
        }
        let launch = crate::runtime::spawn::Launch {
            argv,
            env: std::env::vars_os().collect(),
            cwd: std::env::current_dir()?,
        };
        let prepared = Prepared::new(&launch)?;
        // The nested run's own words (its errors and summary) stay in a file.
        let console = File::create(g.dir.join("console"))?;
        let null = File::open("/dev/null")?;
        let fds = [
            (0, Source::Fd(null.as_raw_fd())),
            (1, Source::Fd(console.as_raw_fd())),
            (2, Source::Fd(console.as_raw_fd())),
        ];
        let first = g.processes.first().cloned().unwrap_or_default();
        let instance = format!("group.{}", self.group_count);
        let job_name = format!("{}group.{}.{}", self.prefix, self.group_count, first);
        let args = self.config.group_args(&g.processes);
        let daemon = g.processes.iter().any(|p| self.config.daemons.contains(p));
        self.launch(instance, job_name, args, daemon, &prepared, &fds)
    }

    /// Follows every live group unit's files: logs, readiness, ends, queues.
    pub(super) fn pump_groups(&mut self) {
        for gi in 0..self.groups.len() {
            for m in &mut self.groups[gi].members {
                if m.ending.is_some() {
                    hand_over(m, &mut self.member_done);
                }
            }
            if self.groups[gi].members.iter().all(|m| m.reported) {
                continue;
            }
            self.read_group_events(gi);
            if self.groups[gi].ended.is_some() {
                self.settle_group(gi);
            }
        }
    }

    fn read_group_events(&mut self, gi: usize) {
        let g = &mut self.groups[gi];
        for m in &mut g.members {
            m.log.pump();
        }
        let mut newly_started = false;
        for line in g.events.take() {
            let Ok(e) = serde_json::from_str::<NestedEvent>(&line) else {
                continue;
            };
            let member = find_member(&mut g.members, &e.process);
            match e.event.as_str() {
                "started" => {
                    if let Some(m) = member {
                        m.attempts += 1;
                        newly_started |= !std::mem::replace(&mut g.started, true);
                    }
                }
                "restarting" => {
                    if let Some(m) = member {
                        m.restarts += 1;
                    }
                }
                "ready" => {
                    if let Some(m) = member {
                        self.ready_members.push_back(m.id);
                    }
                }
                "exited" if e.then.is_none() => {
                    if let Some(m) = member {
                        let exit = match (e.code, e.signal.as_deref()) {
                            (Some(c), _) => Exit::Code(c),
                            (None, Some(s)) => Exit::Signal(signal_number(s)),
                            (None, None) => Exit::Code(127),
                        };
                        let verdict = match e.status.as_deref() {
                            Some("ok") => Verdict::Ok,
                            Some("timed out") => Verdict::TimedOut,
                            Some("stopped") => Verdict::Stopped,
                            _ => Verdict::Failed,
                        };
                        if verdict == Verdict::Stopped && !(g.termed || g.killed) {
                            m.held = Some(exit);
                        } else {
                            finish_member(m, exit, verdict, &mut self.member_done);
                        }
                    }
                }
                "run-finished" => {
                    // Interrupted by a signal this run did not send: what it
                    // stopped failed, as a process killed from outside does.
                    let outside = e.code.is_some_and(|c| c >= 128) && !(g.termed || g.killed);
                    let verdict = match outside {
                        true => Verdict::Failed,
                        false => Verdict::Stopped,
                    };
                    for m in &mut g.members {
                        if let Some(exit) = m.held.take() {
                            finish_member(m, exit, verdict, &mut self.member_done);
                        }
                    }
                }
                "skipped" => {
                    if let Some(m) = member {
                        finish_member(m, Exit::Code(127), Verdict::Failed, &mut self.member_done);
                    }
                }
                "queue" => {
                    if let Some(name) = e.queue {
                        self.relayed.retain(|q| q.name != name);
                        self.relayed.push(RelayedQueue {
                            name,
                            messages_in: e.messages_in.unwrap_or(0),
                            messages_out: e.messages_out.unwrap_or(0),
                            lost: e.lost.unwrap_or(0),
                            requeued: e.requeued.unwrap_or(0),
                            per_consumer: e.consumers.into_iter().collect(),
                        });
                    }
                }
                _ => {}
            }
        }
        if newly_started {
            self.note_group_start(gi);
        }
    }

    /// A batch job squeue has not yet seen running runs once its members
    /// start: their time counts from now (a `running` placement).
    fn note_group_start(&mut self, gi: usize) {
        let g = &mut self.groups[gi];
        let job = match &g.job {
            Some(job) if !g.running_told => job.clone(),
            _ => return,
        };
        g.running_told = true;
        for m in g.members.iter() {
            self.placements.push_back(Placement {
                id: m.id,
                running: true,
                job_id: job.clone(),
                step_id: None,
                node: None,
            });
        }
    }

    /// The unit is over: what its events did not end, ended with it.
    fn settle_group(&mut self, gi: usize) {
        self.read_group_events(gi);
        let g = &mut self.groups[gi];
        let Some(exit) = g.ended else {
            return;
        };
        let verdict = if g.termed || g.killed {
            Verdict::Stopped
        } else {
            Verdict::Failed
        };
        let unfinished: Vec<String> = g
            .members
            .iter()
            .filter(|m| !m.reported && m.held.is_none())
            .map(|m| m.instance.clone())
            .collect();
        // A unit that could not start was reported as such.
        if !unfinished.is_empty() && verdict == Verdict::Failed && g.unit.is_some() {
            let console = g.dir.join("console");
            let said = std::fs::read_to_string(&console).unwrap_or_default();
            let tail: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(5)..].join("\n  ");
            eprintln!(
                "jobgraph: slurm: the group unit of {} ended ({}) before reporting the end of {}; its console ({}) says:\n  {}",
                g.processes.join(", "),
                describe(exit),
                unfinished.join(", "),
                console.display(),
                if tail.is_empty() { "nothing" } else { &tail }
            );
        }
        for m in &mut g.members {
            if !m.reported {
                let exit = m.held.take().unwrap_or(exit);
                finish_member(m, exit, verdict, &mut self.member_done);
            }
        }
    }

    /// The group unit's own end (its srun or batch job), taken in.
    pub(super) fn group_unit_ended(&mut self, r: &Reaped) -> bool {
        if !self.unit_group.contains_key(&r.id) {
            return false;
        }
        // News of the unit still queued is its members' (before its id is let go).
        let queued: Vec<Placement> = self.placements.drain(..).collect();
        for p in queued {
            let each = self.fan_out(p);
            self.placements.extend(each);
        }
        let Some(gi) = self.unit_group.remove(&r.id) else {
            return false;
        };
        self.groups[gi].ended = Some(r.exit);
        self.settle_group(gi);
        true
    }

    /// A signal for a member: SIGTERM once (or SIGKILL) to its whole unit.
    pub(super) fn signal_member(&mut self, id: UnitId, sig: i32) -> Option<bool> {
        let gi = *self.member_of.get(&id)?;
        let g = &mut self.groups[gi];
        let alive = g.ended.is_none() && g.members.iter().any(|m| m.id == id && !m.reported);
        let unit = g.unit;
        let relay = match sig {
            _ if !alive => None,
            libc::SIGCONT => None,
            libc::SIGKILL if !g.killed => {
                g.killed = true;
                Some(libc::SIGKILL)
            }
            libc::SIGKILL => None,
            _ if !g.termed => {
                g.termed = true;
                Some(libc::SIGTERM)
            }
            _ => None,
        };
        if let (Some(sig), Some(unit)) = (relay, unit) {
            self.signal_group(unit, sig);
        }
        Some(alive)
    }

    /// Whether a member has not ended yet (`None`: not a member).
    pub(super) fn member_alive(&self, id: UnitId) -> Option<bool> {
        let gi = *self.member_of.get(&id)?;
        let g = &self.groups[gi];
        Some(g.ended.is_none() && g.members.iter().any(|m| m.id == id && !m.reported))
    }

    /// News of a group unit is news of each of its members.
    pub(super) fn fan_out(&mut self, p: Placement) -> Vec<Placement> {
        let Some(&gi) = self.unit_group.get(&p.id) else {
            return vec![p];
        };
        self.groups[gi].running_told |= p.running;
        self.groups[gi]
            .members
            .iter()
            .map(|m| Placement {
                id: m.id,
                ..p.clone()
            })
            .collect()
    }

    /// Whether a group unit is live (its files are followed every tick).
    pub(super) fn groups_live(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.members.iter().any(|m| !m.reported || m.ending.is_some()))
    }
}

/// The member of that instance name that has not ended.
fn find_member<'a>(members: &'a mut [Member], name: &Option<String>) -> Option<&'a mut Member> {
    members
        .iter_mut()
        .find(|m| Some(&m.instance) == name.as_ref() && !m.reported)
}

/// Ends a member: once its last log lines are in its pipe, the pipe is
/// closed (the engine's EOF) and its end queued for the engine.
fn finish_member(m: &mut Member, exit: Exit, verdict: Verdict, done: &mut VecDeque<Reaped>) {
    m.reported = true;
    m.ending = Some((exit, verdict));
    hand_over(m, done);
}

/// Hands a member's end to the engine once its log is all delivered (a
/// full pipe is tried again at the next tick: no line is dropped).
fn hand_over(m: &mut Member, done: &mut VecDeque<Reaped>) {
    if !m.log.pump() {
        return;
    }
    let Some((exit, verdict)) = m.ending.take() else {
        return;
    };
    m.log.sink = None;
    done.push_back(Reaped {
        id: m.id,
        exit,
        peak_rss_kib: 0,
        relayed: Some(Relayed {
            verdict,
            attempts: m.attempts.max(1),
            restarts: m.restarts,
        }),
    });
}

/// The member's log pipe: its stdout or stderr, whichever the engine reads.
fn log_pipe(fds: &[(i32, Source)]) -> io::Result<Option<OwnedFd>> {
    for target in [1, 2] {
        if let Some((_, Source::Fd(fd))) = fds.iter().find(|(t, _)| *t == target) {
            // SAFETY: the engine keeps `fd` open through the call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            let is_fifo = nix::sys::stat::fstat(fd)
                .is_ok_and(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFIFO);
            if is_fifo {
                let owned = fd.try_clone_to_owned()?;
                use nix::fcntl::{fcntl, FcntlArg, OFlag};
                let flags = fcntl(&owned, FcntlArg::F_GETFL).map_err(io::Error::from)?;
                let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
                fcntl(&owned, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
                return Ok(Some(owned));
            }
        }
    }
    Ok(None)
}

/// `SIGTERM` (or `TERM`) → 15; an unknown name counts as SIGKILL.
fn signal_number(name: &str) -> i32 {
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map_or(libc::SIGKILL, |s| s as i32)
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_map_back_to_numbers() {
        assert_eq!(signal_number("SIGTERM"), libc::SIGTERM);
        assert_eq!(signal_number("INT"), libc::SIGINT);
        assert_eq!(signal_number("SIGBOGUS"), libc::SIGKILL);
    }

    #[test]
    fn only_complete_lines_are_taken() {
        let dir = std::env::temp_dir().join(format!("jg-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("events");
        let mut lines = Lines {
            path: path.clone(),
            file: None,
            partial: Vec::new(),
        };
        assert!(lines.take().is_empty(), "no file yet");
        std::fs::write(&path, "one\ntw").expect("write");
        assert_eq!(lines.take(), ["one"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, b"o\nthree\n").expect("append");
        assert_eq!(lines.take(), ["two", "three"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
