//! The scheduling core: every instance's state, dependencies, joins, locks,
//! slots, stops and the cancel reason. It owns no descriptor and calls no
//! executor or reporter: what it decides reaches the I/O shell ([`Engine`])
//! as [`Effect`]s, and what happens reaches it as calls.

use super::*;

/// The run's scheduling state.
pub(super) struct Sched<'g> {
    pub(super) g: &'g Graph,
    pub(super) fail_fast: bool,
    /// A nested run of exactly some processes (`--members`).
    pub(super) exact: bool,
    pub(super) max_parallel: usize,
    pub(super) grace: Duration,
    pub(super) insts: Insts,
    /// The instances of each process (empty when excluded by --only).
    pub(super) of_proc: PerProc<Vec<InstId>>,
    /// Launch order: stage, then file order, then replica.
    pub(super) order: Vec<InstId>,
    pub(super) lock_free: Vec<u32>,
    /// Instances whose process is alive (daemons included).
    pub(super) running: usize,
    /// Non-daemon instances whose process is alive: what `max_parallel` bounds.
    pub(super) slots_used: usize,
    /// Whether the graph has daemons (which need no slot).
    pub(super) any_daemon: bool,
    /// Set once the run is being cancelled; only ever escalates.
    pub(super) cancel: Option<Cancel>,
    /// After a signal: when running `always` steps are stopped.
    pub(super) shutdown_deadline: Option<Instant>,
    /// Per process: the processes that wait for it (after or parent).
    pub(super) rdeps: PerProc<Vec<ProcId>>,
    /// Per instance: its position in `order`.
    pub(super) pos_of: PerInst<usize>,
    /// Processes whose pending instances must be re-examined.
    pub(super) dirty: Vec<ProcId>,
    pub(super) is_dirty: PerProc<bool>,
    /// Positions (in `order`) of instances whose dependencies hold, waiting for a slot or locks.
    pub(super) ready: std::collections::BTreeSet<usize>,
    /// Instances whose join may have completed.
    pub(super) join_check: Vec<InstId>,
    /// Instances with a stop requested but not yet signalled.
    pub(super) stop_pending: Vec<InstId>,
    /// Instances between start and done (running, draining, waiting to retry).
    pub(super) active: rustc_hash::FxHashSet<InstId>,
    pub(super) unfinished: usize,
    pub(super) unfinished_non_daemons: usize,
    pub(super) daemons_released: bool,
    pub(super) done_count: u64,
    pub(super) failed_count: usize,
    /// What the shell is to do, in the order it was decided.
    pub(super) fx: Vec<Effect>,
}

/// What the core asks of the I/O shell. Applied in order, before anything
/// else the shell tells or does, so the events keep the order of the decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// `k` will not run (the `skipped` event).
    Skipped { k: InstId, reason: String },
    /// `k`, a process with children, finished with its subtree (`joined`).
    Joined {
        k: InstId,
        status: &'static str,
        reason: Option<String>,
    },
    /// `k`, waiting for another attempt, was stopped instead (`stopped`).
    Stopped { k: InstId, reason: String },
    /// Send `sig` to `k`'s unit, if it is still alive.
    Signal { k: InstId, sig: i32 },
    /// `k`'s stop signal went out (`stopping`).
    Stopping { k: InstId, signal: &'static str },
    /// `k` outlived its stop signal and was sent SIGKILL (`killed`).
    Killed { k: InstId },
    /// Another attempt of `k` follows a failed one (`retrying`).
    Retrying { k: InstId, attempt: u32 },
    /// `k` restarts after a delay (`restarting`).
    Restarting {
        k: InstId,
        attempt: u32,
        delay: Duration,
    },
    /// A line for the console (`failure`: it says something went wrong).
    Note { text: String, failure: bool },
    /// `k` is done for good: journal it, free its launch, end what it produced.
    Done { k: InstId, outcome: Outcome },
}

impl<'g> Sched<'g> {
    /// The core of a run of `g` (after `--only` or `--members`): every
    /// instance pending, every process to be examined.
    pub(super) fn new(g: &'g Graph, opts: &RunOptions) -> Result<Sched<'g>, RunError> {
        let included = match opts.exact {
            true => g.exactly(&opts.only),
            false => g.only(&opts.only),
        }
        .map_err(RunError::Only)?;
        let (insts, of_proc) = build_instances(g, &included)?;
        let order = launch_order(g, &insts);
        let (n, procs) = (insts.len(), g.file.processes.len());
        Ok(Sched {
            g,
            fail_fast: g.file.graph.fail_fast && !opts.keep_going,
            exact: opts.exact,
            max_parallel: opts
                .max_parallel
                .or(g.file.graph.max_parallel.as_ref().map(|m| m.value))
                .map_or(usize::MAX, |m| m as usize),
            grace: g.file.graph.shutdown_grace,
            unfinished_non_daemons: insts
                .iter()
                .filter(|i| !g.file.processes[i.proc].daemon.value)
                .count(),
            pos_of: positions(&order, &insts),
            insts,
            of_proc,
            order,
            lock_free: g.file.locks.iter().map(|l| l.capacity.value).collect(),
            running: 0,
            slots_used: 0,
            any_daemon: g.file.processes.iter().any(|p| p.daemon.value),
            cancel: None,
            shutdown_deadline: None,
            rdeps: reverse_deps(g),
            dirty: (0..procs).map(ProcId::of).collect(),
            is_dirty: PerProc::new(procs, |_| true),
            ready: Default::default(),
            join_check: Vec::new(),
            stop_pending: Vec::new(),
            active: Default::default(),
            unfinished: n,
            daemons_released: false,
            done_count: 0,
            failed_count: 0,
            fx: Vec::new(),
        })
    }
}

/// One instance per replica of each included process, and each process's instances.
fn build_instances(
    g: &Graph,
    included: &[bool],
) -> Result<(Insts, PerProc<Vec<InstId>>), RunError> {
    // Counted before anything is allocated: too many is an error, not an abort.
    let total: u64 = g
        .file
        .processes
        .iter()
        .zip(included)
        .filter(|(_, &inc)| inc)
        .map(|(p, _)| u64::from(p.replicas.value))
        .sum();
    if total > u64::from(u32::MAX) {
        return Err(RunError::TooManyInstances);
    }
    let mut insts = Insts::default();
    let mut of_proc = PerProc::new(g.file.processes.len(), |_| Vec::new());
    for (i, p) in g.file.processes.iter().enumerate() {
        if !included[i] {
            continue;
        }
        for r in 0..p.replicas.value {
            let name = if p.replicas.value > 1 {
                format!("{}[{r}]", p.name.value)
            } else {
                p.name.value.clone()
            };
            let k = insts
                .push(Inst::new(ProcId::of(i), r, name))
                .ok_or(RunError::TooManyInstances)?;
            of_proc[ProcId::of(i)].push(k);
        }
    }
    Ok((insts, of_proc))
}

/// Launch order: stage, then file order, then replica.
fn launch_order(g: &Graph, insts: &Insts) -> Vec<InstId> {
    let mut stage_of_proc = vec![0usize; g.file.processes.len()];
    for (s, groups) in g.stages.iter().enumerate() {
        for &grp in groups {
            for &m in &g.groups[grp].members {
                stage_of_proc[m] = s;
            }
        }
    }
    let mut order: Vec<InstId> = insts.ids().collect();
    order.sort_by_key(|&k| {
        (
            stage_of_proc[insts[k].proc],
            insts[k].proc,
            insts[k].replica,
        )
    });
    order
}

/// Per process, the processes whose `after` names it.
fn reverse_deps(g: &Graph) -> PerProc<Vec<ProcId>> {
    let mut rdeps = PerProc::new(g.file.processes.len(), |_| Vec::new());
    for (i, ds) in g.deps.iter().enumerate() {
        let waiter = ProcId::of(i);
        for d in ds {
            let target = ProcId::of(d.target);
            if !rdeps[target].contains(&waiter) {
                rdeps[target].push(waiter);
            }
        }
    }
    rdeps
}

/// Per instance, its place in the launch order.
fn positions(order: &[InstId], insts: &Insts) -> PerInst<usize> {
    let mut pos_of = insts.map(|_, _| 0);
    for (pos, &k) in order.iter().enumerate() {
        pos_of[k] = pos;
    }
    pos_of
}

/// A launch [`Sched::next_start`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// One instance, on its own.
    One(InstId),
    /// A whole stream group (its index), every member at once.
    Group(usize, Vec<InstId>),
    /// A member of a running stream group restarts and rejoins its queues.
    Rejoin(InstId),
}

/// Where a pass over the ready instances is.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// The next position (in launch order) to look at.
    pub(super) from: usize,
    /// Something changed on the way (a skip).
    pub(super) changed: bool,
    /// The launch slice ended with instances still to look at.
    pub(super) slice_over: bool,
}

impl Sched<'_> {
    /// Raises the cancel reason to `c` if it is more severe; says whether it did.
    pub(super) fn escalate(&mut self, c: Cancel) -> bool {
        if self
            .cancel
            .as_ref()
            .is_some_and(|now| now.rank() >= c.rank())
        {
            return false;
        }
        // A second signal kills at once, but the exit code stays the first's.
        let c = match (&self.cancel, c) {
            (Some(Cancel::Signal(first)), Cancel::Kill(_)) => Cancel::Kill(*first),
            (_, c) => c,
        };
        self.cancel = Some(c);
        true
    }

    /// A second signal (or a loop failure): no grace for anything any more.
    pub(super) fn kill_now(&self) -> bool {
        self.cancel.as_ref().is_some_and(Cancel::kills)
    }

    /// The cancel reason in words.
    pub(super) fn cause(&self) -> String {
        self.cancel
            .as_ref()
            .map_or_else(|| "the run is stopping".into(), Cancel::describe)
    }

    /// Every instance finished (joined).
    pub(super) fn all_done(&self) -> bool {
        self.unfinished == 0
    }

    /// `k` runs inside a group unit: its nested run applies its timeouts,
    /// probes and retries, and says how it ended.
    pub(super) fn relay(&mut self, k: InstId) {
        self.insts[k].relayed = true;
    }

    /// An attempt of `k` begins (its unit is about to be spawned); says
    /// whether it is a restart.
    pub(super) fn attempt_begins(&mut self, k: InstId) -> bool {
        let i = &mut self.insts[k];
        // Only a pending or retrying instance starts: no attempt of it is live.
        debug_assert!(i.attempt().is_none());
        // A restart counts once it is really attempted, not when it is scheduled.
        let restart = std::mem::take(&mut i.restart_pending);
        if restart {
            i.restarts += 1;
        }
        i.attempts += 1;
        // How the last attempt ended no longer describes the instance.
        i.last = None;
        self.active.insert(k);
        restart
    }

    /// The attempt [`Sched::attempt_begins`] began did not happen (the
    /// machine is out of descriptors or processes): `k` is ready again.
    /// A stream group taken to start could not be (out of descriptors): its
    /// members wait in `ready` again.
    pub(super) fn group_deferred(&mut self, members: &[InstId]) {
        for &k in members {
            self.ready.insert(self.pos_of[k]);
        }
    }

    pub(super) fn attempt_deferred(&mut self, k: InstId, was_restart: bool) {
        let i = &mut self.insts[k];
        i.attempts -= 1;
        if was_restart {
            i.restarts -= 1;
            i.restart_pending = true;
        }
        if matches!(i.phase, Phase::Pending) {
            self.active.remove(&k);
        }
        self.ready.insert(self.pos_of[k]);
    }

    /// `k`'s attempt, tried at `tried`, could not be spawned (`why`).
    pub(super) fn not_started(&mut self, k: InstId, tried: Instant, why: String) {
        self.insts[k].last = Some(End::NotStarted { tried });
        self.insts[k].why = Some(why);
    }

    /// `k`'s new attempt runs as `unit` since `now`, with `open_pipes` output
    /// pipes watched: it holds its locks and slot, and is probed afresh.
    pub(super) fn unit_started(&mut self, k: InstId, unit: UnitId, open_pipes: u8, now: Instant) {
        self.take_locks(k, true);
        self.running += 1;
        if self.needs_slot(k) {
            self.slots_used += 1;
        }
        let i = &mut self.insts[k];
        // `after = start` and children wait for a process that really started.
        let first_success = i.first_start.is_none();
        i.first_start.get_or_insert(now);
        // A new attempt is probed afresh (what was said once is said on the instance).
        let mut probing = Probing::default();
        let p = &self.g.file.processes[i.proc];
        // A relayed member is probed by its nested run, which says when it is ready.
        let probed = !i.relayed;
        probing.checks[probes::Check::Ready as usize].due =
            p.ready.as_ref().filter(|_| probed).map(|_| now);
        // Without `ready`, liveness checks start with the process.
        if p.ready.is_none() && probed {
            probing.checks[probes::Check::Health as usize].due =
                p.health.as_ref().map(|h| later(now, h.interval));
        }
        i.phase = Phase::Running(Attempt {
            unit,
            start: Some(now),
            stop: None,
            probing,
            open_pipes,
        });
        let proc = i.proc;
        self.active.insert(k);
        if first_success {
            self.mark_changed(proc);
        }
    }

    /// `k`'s unit ended with `exit` (as its nested run judged it, if
    /// `relayed`): what it held is free; the attempt ends once drained.
    pub(super) fn unit_reaped(
        &mut self,
        k: InstId,
        unit: UnitId,
        exit: Exit,
        relayed: Option<super::super::executor::Relayed>,
        peak_rss_kib: u64,
    ) {
        self.running -= 1;
        if self.needs_slot(k) {
            self.slots_used -= 1;
        }
        self.take_locks(k, false);
        let i = &mut self.insts[k];
        i.last = Some(End::Reaped {
            unit,
            exit,
            verdict: relayed.map(|x| x.verdict),
        });
        if let Some(x) = relayed {
            // Its nested run's attempts and restarts are its own.
            i.attempts = i.attempts.max(x.attempts);
            i.restarts = x.restarts;
        }
        if let Some(peak) = PeakRss::of(peak_rss_kib, i.spawn_rss_kib) {
            i.peak_rss = Some(i.peak_rss.map_or(peak, |p| p.max(peak)));
        }
    }

    /// A cluster says whether `k`'s unit runs yet, at `now`: its time limits
    /// count from when it runs, not from its submission.
    pub(super) fn placed(&mut self, k: InstId, running: bool, now: Instant) {
        if let Some(a) = self.insts[k].attempt_mut() {
            if !running {
                a.start = None;
            } else if a.start.is_none() {
                a.start = Some(now);
            }
        }
    }

    /// One of `k`'s output pipes reached end-of-file. True if that ends its
    /// attempt (its unit was reaped and this was the last pipe).
    pub(super) fn pipe_closed(&mut self, k: InstId) -> bool {
        let i = &mut self.insts[k];
        // Every pipe is its live attempt's: an attempt ends only once they closed.
        let Some(a) = i.attempt_mut() else {
            return false;
        };
        a.open_pipes = a.open_pipes.saturating_sub(1);
        a.open_pipes == 0 && matches!(i.phase, Phase::Draining { .. })
    }

    /// `k` ended ok in the last run, unchanged (`--resume`): it is not run.
    pub(super) fn cached(&mut self, k: InstId) {
        self.ready.remove(&self.pos_of[k]);
        self.set_done(k, Outcome::Cached);
    }

    /// The pending instances, in launch order, when nothing runs, waits for
    /// a timer or is being stopped, yet instances are unfinished: then no
    /// event can ever change anything (the shell also checks its own work).
    pub(super) fn stuck(&self) -> Option<Vec<InstId>> {
        if self.unfinished == 0 || !self.stop_pending.is_empty() || self.unsettled() {
            return None;
        }
        // Asked at every loop turn: anything but idle daemons running answers
        // at once, without a pass over every instance.
        if !self.active.is_empty() && !self.only_top_daemons_run() {
            return None;
        }
        let pending: Vec<InstId> = self
            .order
            .iter()
            .copied()
            .filter(|&k| matches!(self.insts[k].phase, Phase::Pending))
            .collect();
        if !self.active.is_empty() && (pending.is_empty() || !self.only_idle_daemons_run(&pending))
        {
            return None;
        }
        Some(pending)
    }

    /// Whether everything active is a running top-level daemon that nothing
    /// pending waits for (no `after` on a daemon, no lock a daemon may hold):
    /// such daemons are stopped only once the non-daemon work is finished,
    /// so they cannot unblock it, and the run would wait for ever.
    fn only_idle_daemons_run(&self, pending: &[InstId]) -> bool {
        let procs = &self.g.file.processes;
        self.only_top_daemons_run()
            && pending.iter().all(|&k| {
                let p = self.insts[k].proc;
                self.g.locks[p].is_empty()
                    && self.g.deps[p].iter().all(|d| !procs[d.target].daemon.value)
            })
    }

    /// Whether changes wait for `settle` (an end not yet joined, a process
    /// whose dependents were not looked at again).
    pub(super) fn unsettled(&self) -> bool {
        !self.join_check.is_empty() || !self.dirty.is_empty()
    }

    /// Whether every active instance is a running top-level daemon.
    fn only_top_daemons_run(&self) -> bool {
        let procs = &self.g.file.processes;
        self.active.iter().all(|&k| {
            let i = &self.insts[k];
            let p = &procs[i.proc.index()];
            p.daemon.value && p.parent.is_none() && matches!(i.phase, Phase::Running(_))
        })
    }

    /// Nothing can ever start or end any more, yet `stuck` instances wait
    /// (each with what it waits for): they are skipped and the run ends.
    pub(super) fn stall(&mut self, stuck: impl IntoIterator<Item = (InstId, String)>) {
        self.escalate(Cancel::Stalled);
        for (k, why) in stuck {
            let why = format!("stalled: waited for {why}");
            self.ready.remove(&self.pos_of[k]);
            self.skip(k, &why);
        }
        // Instances done but never joined (children that could not start) end here too.
        for k in self.insts.ids() {
            if !self.insts[k].finished && self.insts[k].outcome().is_some() {
                self.set_finished(k);
            }
        }
        debug_assert!(self
            .insts
            .iter()
            .all(|i| i.outcome() != Some(Outcome::Ok) || i.finished));
    }

    /// Takes the effects decided so far, to be applied in order.
    pub(super) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.fx)
    }

    pub(super) fn note(&mut self, text: String, failure: bool) {
        self.fx.push(Effect::Note { text, failure });
    }
}
