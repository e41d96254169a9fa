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
        fits_in_memory(g, opts)?;
        let core = Sched::new(g, opts)?;
        let poll = Poll::new().map_err(RunError::EventLoop)?;
        let waker = std::sync::Arc::new(
            mio::Waker::new(poll.registry(), WAKE).map_err(RunError::EventLoop)?,
        );
        let reporter = start_reporter(g, &core.insts, reporter, std::sync::Arc::clone(&waker))?;
        let marker = format!("{}-{}", std::process::id(), now_nanos());
        let (signals, null, terminal) = prepare_engine_process(&poll)?;
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        let launches = core.insts.map(|_, _| None);
        let mut e = Engine {
            core,
            g,
            base: base.to_path_buf(),
            launch_more: false,
            probes_pending: false,
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
            groups_checked: Instant::now(),
            leaderless: 0,
            rusage_inherited: super::launch::engine_hwm_kib()
                .is_some_and(|own| own + 1024 < super::launch::rusage_peak_kib()),
            shared_pids: opts.containment != super::super::contain::Containment::PidNamespace,
            launches,
            cwd_seen: Default::default(),
            truncated: Default::default(),
            null,
            engine_env: engine_env(&marker),
            marker,
            reporter,
            watchdog: None,
            resource_wait: None,
            resource_noted: false,
            stdout_is_events: opts.stdout_is_events,
            journal: None,
            keys: PerInst::default(),
            started_at: Instant::now(),
            queues: PerQueue::new(g.file.queues.len(), |_| None),
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
            Err(err) => self.note(
                &format!("cannot start the watchdog ({err}): if the engine is killed, its processes may survive it"),
                true,
            ),
        }
    }
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

/// The least an instance takes in the engine (measured: about 1.2 KiB each
/// over a million); below it, the estimate never refuses a run that fits.
const INSTANCE_BYTES: u64 = 1024;

/// Refuses a run whose instances cannot fit in the memory there is (the
/// available memory, or the address-space limit if lower): building them
/// would end in an out-of-memory abort, not an error. 65 million instances
/// passed every check and then died.
fn fits_in_memory(g: &Graph, opts: &RunOptions) -> Result<(), RunError> {
    let included = match opts.exact {
        true => g.exactly(&opts.only),
        false => g.only(&opts.only),
    }
    .map_err(RunError::Only)?;
    let instances: u64 = g
        .file
        .processes
        .iter()
        .zip(&included)
        .filter(|(_, &inc)| inc)
        .map(|(p, _)| u64::from(p.replicas.value))
        .sum();
    let need = instances.saturating_mul(INSTANCE_BYTES);
    // Small runs never ask: reading /proc costs more than they could save.
    if need < 256 << 20 {
        return Ok(());
    }
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb << 10)
    });
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != nix::sys::resource::RLIM_INFINITY);
    let have = match (available, limit) {
        (Some(a), Some(l)) => a.min(l),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => return Ok(()),
    };
    match need > have {
        true => Err(RunError::TooLarge {
            instances,
            need,
            have,
        }),
        false => Ok(()),
    }
}
