//! Starting attempts: stream groups (pipes, socketpairs, queues) and single
//! instances, through the executor.

use super::super::executor::Endpoint;
use super::*;

/// Why a stream group's pipes or queues could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum GroupSetupError {
    /// A pipe or socketpair could not be created.
    #[error("cannot create pipe `{pipe}`: {source}")]
    Pipe {
        /// The edge's name.
        pipe: String,
        /// Why not (out of descriptors, mostly).
        source: nix::Error,
    },
    /// A queue's broker could not be set up.
    #[error("cannot set up the queues of the stream group: {0}")]
    Queues(std::io::Error),
}

impl Engine<'_> {
    /// Launches what the core says may start, in launch order, until the
    /// launch slice ends (then the loop serves timers, exits and signals
    /// before it goes on). True if anything changed.
    pub(super) fn start_ready(&mut self) -> bool {
        if self.core.ready.is_empty() || self.launch_more {
            return false;
        }
        if self.resource_wait.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let mut cur = Cursor::default();
        let mut started = false;
        while let Some(start) = self.core.next_start(&mut cur, self.slice_end) {
            match start {
                Start::One(k) => self.start(k),
                Start::Group(group, members) => self.start_group(group, &members),
                Start::Rejoin(k) => self.restart_member(k),
            }
            started = true;
        }
        self.launch_more = cur.slice_over;
        started || cur.changed
    }

    pub(super) fn start(&mut self, k: InstId) {
        self.start_with(k, Ends::Own);
    }

    /// Starts every instance of a stream group at once: creates each pipe and
    /// socketpair, hands each member its ends at the numbers the graph
    /// allocated, and closes the engine's copies so EOF reaches the readers.
    pub(super) fn start_group(&mut self, group: usize, members: &[InstId]) {
        if self.start_group_unit(members) {
            return;
        }
        // A group launches whole: out of descriptors half-way, it would fail
        // (and fail-fast the run). Like a single launch refused for lack of
        // them, it waits for running processes to exit instead.
        if self.something_frees_resources() {
            if let Err(err) = self.descriptors_for(members) {
                if out_of_resources(&err) {
                    self.core.group_deferred(members);
                    self.resource_wait = Some(later(Instant::now(), Duration::from_millis(200)));
                    if !std::mem::replace(&mut self.resource_noted, true) {
                        self.note(
                            &format!("{err}: waiting for running processes to exit before launching more"),
                            true,
                        );
                    }
                    return;
                }
            }
        }
        let ends = self.make_pipes(group).and_then(|mut ends| {
            self.open_queues(group, &mut ends)
                .map_err(GroupSetupError::Queues)?;
            Ok(ends)
        });
        let ends = match ends {
            Ok(ends) => ends,
            Err(why) => {
                self.note(&why.to_string(), true);
                for &k in members {
                    self.start_with(k, Ends::Broken);
                }
                return;
            }
        };
        for &k in members {
            let proc = self.core.insts[k].proc;
            let fds: Vec<(i32, std::os::fd::RawFd)> = self.g.endpoints[proc]
                .iter()
                .filter_map(|e| {
                    // Pipe ends are keyed by process, queue ends by instance (replicas differ).
                    let key = match e.kind {
                        crate::graph::EdgeKind::Queue => (EndOwner::Inst(k), e.edge.clone()),
                        _ => (EndOwner::Proc(proc), e.edge.clone()),
                    };
                    ends.get(&key).map(|fd| (e.fd, fd.as_raw_fd()))
                })
                .collect();
            self.start_with(k, Ends::Group(&fds));
        }
        // A member that could not start fails the group: stop those that did.
        if members.iter().any(|&m| {
            self.core.insts[m]
                .outcome()
                .is_some_and(Outcome::is_failure)
        }) {
            for &m in members {
                let why = "stream group: a member could not start".to_string();
                self.core.request_stop(m, StopReason::Shutdown, why);
            }
        }
        // `ends` drops here: the engine keeps no pipe end open.
    }

    /// The group's pipes and socketpairs, both ends keyed by their process
    /// and edge; the first that cannot be made fails them all.
    fn make_pipes(
        &self,
        group: usize,
    ) -> Result<FxHashMap<(EndOwner, String), OwnedFd>, GroupSetupError> {
        let mut ends: FxHashMap<(EndOwner, String), OwnedFd> = FxHashMap::default();
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
                        ends.insert(
                            (EndOwner::Proc(ProcId::of(proc)), pipe.name.value.clone()),
                            fd,
                        );
                    }
                }
                Err(source) => {
                    return Err(GroupSetupError::Pipe {
                        pipe: pipe.name.value.clone(),
                        source,
                    })
                }
            }
        }
        Ok(ends)
    }

    /// Checks that the descriptors a group's launch takes can be had now, by
    /// taking that many (and giving them back): two per stream end and per
    /// log pipe, and a few for the queues' timers and read-backs.
    fn descriptors_for(&self, members: &[InstId]) -> std::io::Result<()> {
        let ends: usize = members
            .iter()
            .map(|&k| self.g.endpoints[self.core.insts[k].proc].len())
            .sum();
        let needed = 2 * (members.len() + ends) + ends + 8;
        let mut held = Vec::with_capacity(needed);
        for _ in 0..needed {
            held.push(self.null.try_clone()?);
        }
        Ok(())
    }

    /// Offers the stream group to the executor as one unit; true if it took
    /// it (its members are then spawned without their stream descriptors,
    /// which the unit's nested run makes, and their ends are relayed).
    fn start_group_unit(&mut self, members: &[InstId]) -> bool {
        let mut procs: Vec<ProcId> = members.iter().map(|&k| self.core.insts[k].proc).collect();
        procs.dedup();
        let parts: Vec<(String, Vec<Endpoint>)> = procs
            .iter()
            .map(|&p| {
                let ends = self.g.endpoints[p]
                    .iter()
                    .map(|e| Endpoint {
                        fd: e.fd,
                        kind: e.kind,
                    })
                    .collect();
                (self.g.file.processes[p].name.value.clone(), ends)
            })
            .collect();
        if !self.exec.group_begin(&parts) {
            return false;
        }
        let null = self.null.as_raw_fd();
        for &k in members {
            // Stand-ins: a stream edge on stdout still replaces its `stdout`.
            let fds: Vec<(i32, std::os::fd::RawFd)> = self.g.endpoints[self.core.insts[k].proc]
                .iter()
                .map(|e| (e.fd, null))
                .collect();
            self.core.relay(k);
            self.start_with(k, Ends::Group(&fds));
        }
        self.exec.group_end();
        true
    }

    /// Starts one attempt of instance `k`, with stream endpoints `(fd, engine fd)`.
    pub(super) fn start_with(&mut self, k: InstId, ends: Ends<'_>) {
        let proc = self.core.insts[k].proc;
        let replica = self.core.insts[k].replica;
        // Prepared once; a failed preparation (program not on PATH) is retried,
        // since a retry delay may be exactly what it takes for the program to appear.
        if !matches!(self.launches[k], Some((_, Ok(_)))) {
            let launch = spawn::launch(self.g, proc.index(), replica, &self.base, &self.engine_env);
            let prepared = Prepared::new(&launch);
            self.launches[k] = Some((launch, prepared));
        }
        let first = self.core.insts[k].attempts == 0;
        let now = Instant::now();
        let was_restart = self.core.attempt_begins(k);
        let endpoints = match ends {
            Ends::Own => &[][..],
            Ends::Group(fds) => fds,
            Ends::Broken => &[][..],
        };
        let spawned = match ends {
            Ends::Broken => Err(std::io::Error::other(
                "its stream group could not be set up",
            )),
            _ => self.spawn_attempt(k, first, endpoints),
        };
        let (pid, log) = match spawned {
            Ok(spawned) => spawned,
            Err(err)
                if matches!(ends, Ends::Own)
                    && out_of_resources(&err)
                    && self.something_frees_resources() =>
            {
                self.wait_for_resources(k, was_restart, &err);
                return;
            }
            Err(err) => {
                self.failed_to_start(k, &err, now);
                return;
            }
        };
        self.running_now(k, pid, log, now);
    }

    /// The attempt tried at `tried` could not be spawned: it fails (its
    /// retries may follow).
    fn failed_to_start(&mut self, k: InstId, err: &std::io::Error, tried: Instant) {
        let name = self.core.insts[k].name.clone();
        let text = err.to_string();
        self.note(&format!("{name}: {text}"), true);
        self.emit(RunEvent::FailedToStart {
            process: &name,
            attempt: self.core.insts[k].attempts,
            reason: &text,
        });
        self.core
            .not_started(k, tried, format!("could not start: {text}"));
        self.attempt_end(k);
    }

    /// The attempt's unit `pid` was spawned at `now`: it holds its locks and
    /// slot, its log pipe is watched, and its probes start afresh.
    fn running_now(&mut self, k: InstId, pid: UnitId, log: Option<OwnedFd>, now: Instant) {
        let proc = self.core.insts[k].proc;
        self.by_pid.insert(pid, k);
        // A process reading the terminal gets its foreground, one at a time, as a
        // shell does for a job; it goes back to the engine when the process exits.
        if self.terminal
            && self.tty_holder.is_none()
            && self.g.file.processes[proc].stdin == crate::spec::Stdin::Inherit
            && !self.g.endpoints[proc].iter().any(|e| e.fd == 0)
            && hygiene::give_terminal(pid.get())
        {
            self.tty_holder = Some(k);
        }
        self.groups.push(Group {
            pgid: pid,
            inst: k,
            leader_gone: false,
        });
        if let Some(w) = &mut self.watchdog {
            w.watch(pid.get());
        }
        let mut open = 0;
        if let Some(fd) = log {
            if self.watch_pipe(k, fd) {
                open += 1;
            }
        }
        self.core.unit_started(k, pid, open, now);
        let (name, attempt) = (self.core.insts[k].name.clone(), self.core.insts[k].attempts);
        self.emit(RunEvent::Started {
            process: &name,
            pid: pid.get(),
            attempt,
        });
    }

    /// One attempt's process: its descriptors, then posix_spawn.
    pub(super) fn spawn_attempt(
        &mut self,
        k: InstId,
        first: bool,
        endpoints: &[(i32, std::os::fd::RawFd)],
    ) -> std::io::Result<(UnitId, Option<OwnedFd>)> {
        use std::io::{Error, ErrorKind};
        let i = &self.core.insts[k];
        let p = &self.g.file.processes[i.proc];
        let Some((launch, prepared)) = &self.launches[k] else {
            return Err(Error::other("internal: no launch prepared"));
        };
        let program = launch.argv.first().map_or("", String::as_str);
        let no_cwd = || {
            Error::new(
                ErrorKind::NotFound,
                format!("working directory {} does not exist", launch.cwd.display()),
            )
        };
        // Looked at once per directory (a stat per launch is measurable in a
        // burst); a directory removed since makes the spawn fail, and is
        // named then.
        if !self.cwd_seen.contains(&launch.cwd) {
            if !launch.cwd.is_dir() {
                return Err(no_cwd());
            }
            self.cwd_seen.insert(launch.cwd.clone());
        }
        let prepared = prepared
            .as_ref()
            .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot run `{program}`: {e}")))?;
        // A stream edge on stdout replaces `stdout`: the file is then not even created.
        let out = match endpoints.iter().any(|(t, _)| *t == 1) {
            true => None,
            false => match spawn::sink(&p.stdout, &self.base, i.replica)? {
                Sink::Inherit if self.stdout_is_events => Some(Sink::EngineStderr),
                sink => Some(sink),
            },
        };
        // The same file for both streams is opened once and shared, like `> f 2>&1`.
        let err = match (&out, &p.stderr) {
            (Some(Sink::File(f)), crate::spec::Output::File(_)) if p.stdout == p.stderr => {
                Sink::File(f.try_clone()?)
            }
            _ => spawn::sink(&p.stderr, &self.base, i.replica)?,
        };
        if first {
            for sink in out.iter().chain([&err]) {
                spawn::empty_once(sink, &mut self.truncated)?;
            }
        }
        let plan = spawn::fd_plan(
            p.stdin,
            out,
            err,
            self.null.as_raw_fd(),
            endpoints,
            p.tty.value,
        )?;
        let pid = self.exec.spawn(prepared, &plan.fds).map_err(|e| {
            if out_of_resources(&e) {
                return e; // kept whole: the caller waits and tries again
            }
            if !launch.cwd.is_dir() {
                return no_cwd();
            }
            let why = match e.kind() {
                ErrorKind::NotFound => not_found(&prepared.program_path()),
                _ => describe_spawn_error(&e),
            };
            Error::new(e.kind(), format!("cannot run `{program}`: {why}"))
        })?;
        // Our copies of the child's write ends and files close here.
        drop(plan.keep);
        Ok((pid, plan.log))
    }

    /// The exec of `k`'s unit failed after its launch had returned (see
    /// [`crate::runtime::executor::Local`]): the unit exited with 127, and
    /// the note says why, as a failed launch's would.
    pub(super) fn exec_failed_late(&mut self, k: InstId, e: &std::io::Error) {
        let Some((launch, Ok(prepared))) = &self.launches[k] else {
            return;
        };
        let program = launch.argv.first().map_or("", String::as_str);
        let why = if !launch.cwd.is_dir() {
            format!("working directory {} does not exist", launch.cwd.display())
        } else if e.kind() == std::io::ErrorKind::NotFound {
            not_found(&prepared.program_path())
        } else {
            describe_spawn_error(e)
        };
        let name = self.core.insts[k].name.clone();
        self.note(
            &format!("{name}: cannot run `{program}`: {why} (exit code 127)"),
            true,
        );
    }

    pub(super) fn watch_pipe(&mut self, k: InstId, fd: OwnedFd) -> bool {
        let raw = fd.as_raw_fd();
        // A fresh pipe's read end has no other status flag to keep.
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        if fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_err() {
            return false;
        }
        let token = self.sources.token();
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&raw), Token(token), Interest::READABLE)
            .is_err()
        {
            return false;
        }
        self.sources.insert(
            token,
            sources::Source::Log(Pipe {
                inst: k,
                file: std::fs::File::from(fd),
                buf: Vec::new(),
                queued: false,
                detached: false,
                read_backlogged: 0,
            }),
        );
        true
    }

    /// Whether waiting frees descriptors or processes: one runs, or one
    /// that exited still drains its output (at most 500 ms more, then its
    /// pipe is closed or detached, within a cap).
    fn something_frees_resources(&self) -> bool {
        self.core.running > 0
            || self
                .core
                .active
                .iter()
                .any(|&k| matches!(self.core.insts[k].phase, Phase::Draining { .. }))
    }

    /// The machine is out of descriptors or processes for now (EMFILE,
    /// ENFILE, EAGAIN, ENOMEM): the attempt did not happen. The instance goes
    /// back to the ready list, and launching pauses until a running process
    /// exits (which frees what it held) or 200 ms pass.
    fn wait_for_resources(&mut self, k: InstId, was_restart: bool, err: &std::io::Error) {
        self.core.attempt_deferred(k, was_restart);
        self.resource_wait = Some(later(Instant::now(), Duration::from_millis(200)));
        if !std::mem::replace(&mut self.resource_noted, true) {
            self.note(
                &format!("{err}: waiting for running processes to exit before launching more"),
                true,
            );
        }
    }
}

/// The stream ends an attempt starts with.
#[derive(Clone, Copy)]
pub(super) enum Ends<'a> {
    /// None: a process outside any stream group (a launch refused for lack
    /// of descriptors is put back, not failed).
    Own,
    /// A stream group member's ends: (descriptor number in the child, the
    /// engine's descriptor).
    Group(&'a [(i32, std::os::fd::RawFd)]),
    /// Its stream group could not be set up: the attempt fails.
    Broken,
}

/// Who holds an end of a stream edge while a group starts: a pipe's ends
/// belong to a process, a queue's to an instance (its replicas differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum EndOwner {
    Proc(ProcId),
    Inst(InstId),
}

/// Why exec found no file at `path`: none is there, or the file is a
/// script whose `#!` interpreter is missing (exec says ENOENT for both).
fn not_found(path: &Path) -> String {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    if n == 0 && !path.exists() {
        return "no such file or directory".into();
    }
    match head[..n].strip_prefix(b"#!") {
        Some(line) => {
            let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
            let text = String::from_utf8_lossy(line);
            let interpreter = text.split_whitespace().next().unwrap_or_default();
            format!(
                "its `#!` line names the interpreter `{interpreter}`, which does not exist; fix the script's first line or install it"
            )
        }
        None => "the file exists, but the loader or a library it needs does not (built for another system?)".into(),
    }
}

/// Errors that say "not now" rather than "never": the system's limits on
/// descriptors, processes or memory.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// The engine's peak resident set size as the kernel's rusage has it, in
/// KiB (0 if unknown). After an exec, Linux keeps the peak of the program
/// that exec'd: an engine started by a 300 MB process reads 300 MB here
/// until its own memory passes that (see [`engine_hwm_kib`]).
pub(super) fn rusage_peak_kib() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u64::try_from(u.max_rss()).unwrap_or(0))
}

/// The engine's own peak resident set size (`VmHWM`), in KiB, if readable.
pub(super) fn engine_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Engine<'_> {
    /// The engine's own peak now, in KiB: rusage (one cheap call) unless it
    /// still holds the peak of the program that started the engine, then
    /// `/proc/self/status`.
    pub(super) fn engine_peak_rss_kib(&mut self) -> u64 {
        if self.rusage_inherited {
            match engine_hwm_kib() {
                // Its own memory passed what it inherited: rusage is exact from now on.
                Some(own) if own < rusage_peak_kib() => return own,
                Some(_) => self.rusage_inherited = false,
                None => {}
            }
        }
        rusage_peak_kib()
    }
}
