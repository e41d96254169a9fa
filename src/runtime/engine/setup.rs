//! Building an engine for a run: instances, their order and tables, the
//! event loop, the reporter, and the engine process's own setup.

use super::*;

impl<'g> Engine<'g> {
    /// An engine ready to run `g` (after `--only`), its reporter started.
    pub(super) fn new(
        g: &'g Graph,
        base: &Path,
        opts: &RunOptions,
        exec: Box<dyn Executor>,
        reporter: Box<dyn Reporter>,
    ) -> Result<Engine<'g>, RunError> {
        let included = match opts.exact {
            true => g.exactly(&opts.only),
            false => g.only(&opts.only),
        }
        .map_err(RunError::Only)?;
        let (insts, of_proc) = build_instances(g, &included)?;
        let order = launch_order(g, &insts);
        let poll = Poll::new().map_err(RunError::EventLoop)?;
        let waker = std::sync::Arc::new(
            mio::Waker::new(poll.registry(), WAKE).map_err(RunError::EventLoop)?,
        );
        let reporter = start_reporter(g, &insts, reporter, std::sync::Arc::clone(&waker))?;
        let marker = format!("{}-{}", std::process::id(), now_nanos());
        let (signals, null, terminal) = prepare_engine_process(&poll)?;
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        let (n, procs) = (insts.len(), g.file.processes.len());
        let launches = insts.map(|_, _| None);
        let mut e = Engine {
            g,
            base: base.to_path_buf(),
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
            launch_more: false,
            slice_end: Instant::now(),
            progress_due: Instant::now(),
            poll,
            signals,
            sources: Default::default(),
            read_buf: vec![0; READ_CHUNK],
            readable: Vec::new(),
            output_failed: false,
            terminal,
            tty_holder: None,
            exec,
            by_pid: FxHashMap::default(),
            groups: Vec::new(),
            launches,
            null,
            engine_env: engine_env(&marker),
            marker,
            reporter,
            watchdog: None,
            cancel: None,
            shutdown_deadline: None,
            resource_wait: None,
            resource_noted: false,
            journal: None,
            keys: PerInst::default(),
            started_at: Instant::now(),
            rdeps: reverse_deps(g),
            dirty: (0..procs).collect(),
            is_dirty: vec![true; procs],
            ready: Default::default(),
            join_check: Vec::new(),
            stop_pending: Vec::new(),
            active: Default::default(),
            unfinished: n,
            daemons_released: false,
            done_count: 0,
            failed_count: 0,
            queues: (0..g.file.queues.len()).map(|_| None).collect(),
            queue_ends: vec![(Vec::new(), Vec::new()); g.file.queues.len()],
            log_probes: log_probes(g),
            probe_pids: FxHashMap::default(),
            tcp_addrs: FxHashMap::default(),
            nodes: FxHashMap::default(),
            http_tx,
            http_rx,
            waker,
        };
        e.start_watchdog(opts.containment);
        Ok(e)
    }

    /// The run's marker (`JOBGRAPH_RUN`), also the journal's run id.
    pub(super) fn marker(&self) -> &str {
        &self.marker
    }

    /// Without a PID namespace, a watchdog process kills the run's
    /// processes if the engine dies (in one, the kernel does it, and better).
    fn start_watchdog(&mut self, containment: super::super::contain::Containment) {
        if containment != super::super::contain::Containment::Marker {
            return;
        }
        match Watchdog::start(&self.marker) {
            Ok(w) => self.watchdog = Some(w),
            Err(err) => self.reporter.note(
                &format!("cannot start the watchdog ({err}): if the engine is killed, its processes may survive it"),
                true,
            ),
        }
    }
}

/// One instance per replica of each included process, and each process's instances.
fn build_instances(g: &Graph, included: &[bool]) -> Result<(Insts, Vec<Vec<InstId>>), RunError> {
    let mut insts = Insts::default();
    let mut of_proc = vec![Vec::new(); g.file.processes.len()];
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
                .push(Inst::new(i, r, name))
                .ok_or(RunError::TooManyInstances)?;
            of_proc[i].push(k);
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

/// Starts the reporter with the instances' names; its writers wake the loop.
fn start_reporter(
    g: &Graph,
    insts: &Insts,
    mut reporter: Box<dyn Reporter>,
    waker: std::sync::Arc<mio::Waker>,
) -> Result<Box<dyn Reporter>, RunError> {
    let wake: std::sync::Arc<super::super::report::Wake> =
        std::sync::Arc::new(Box::new(move || {
            // A failed wake leaves the loop to its next deadline or event: nothing is lost.
            let _ = waker.wake();
        }));
    let names: Vec<String> = insts.iter().map(|i| i.name.clone()).collect();
    reporter
        .start(RunStart {
            names: &names,
            // A process writing to (or reading from) the terminal itself would garble a bar.
            terminal_taken: g.file.processes.iter().any(|p| {
                p.stdin == crate::spec::Stdin::Inherit
                    || p.stdout == crate::spec::Output::Inherit
                    || p.stderr == crate::spec::Output::Inherit
            }),
            wake,
        })
        .map_err(RunError::Reporter)?;
    Ok(reporter)
}

/// The engine's environment for `start = "fork"`, with the run's marker.
fn engine_env(marker: &str) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    env.retain(|(k, _)| k != "JOBGRAPH_RUN");
    env.push(("JOBGRAPH_RUN".into(), marker.into()));
    env
}

/// Per process, the processes whose `after` names it.
fn reverse_deps(g: &Graph) -> Vec<Vec<usize>> {
    let mut rdeps = vec![Vec::new(); g.file.processes.len()];
    for (i, ds) in g.deps.iter().enumerate() {
        for d in ds {
            if !rdeps[d.target].contains(&i) {
                rdeps[d.target].push(i);
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

/// Per process, its `ready.log` regex (checked valid by `validate`).
fn log_probes(g: &Graph) -> Vec<Option<regex::Regex>> {
    g.file
        .processes
        .iter()
        .map(|p| match p.ready.as_ref().map(|r| &r.probe.value) {
            Some(crate::spec::Probe::Log(re)) => regex::Regex::new(re).ok(),
            _ => None,
        })
        .collect()
}
