//! Probes: readiness (`ready`) and liveness (`health`), by tcp, http, cmd,
//! log and file, run from the loop without ever blocking it. A tcp connect
//! is an event on the loop, a cmd probe a process reaped like any other, an
//! http request a short-lived thread that wakes the loop with its answer.

use super::http_url::{http_check, http_host_port, is_this_machine, with_host};
use super::*;

/// Which check a probe serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// `ready`: probed until it passes once, then no more.
    Ready = 0,
    /// `health`: probed for as long as the process runs, once it is ready.
    Health = 1,
}

/// A probe's schedule and the run of it in flight, per instance and check.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CheckState {
    /// When to probe next; `None` while not probing.
    pub(super) due: Option<Instant>,
    /// A `cmd` probe running.
    pub(super) pid: Option<UnitId>,
    /// When that run (or the http request in flight) started.
    pub(super) started: Option<Instant>,
    /// An http request or tcp connect is in flight.
    pub(super) inflight: bool,
    /// Consecutive failed health checks.
    pub(super) failures: u32,
    /// The `cmd` probe running was killed for taking too long: the check
    /// that killed it used its turn, so the next one runs when it is reaped.
    pub(super) overdue: bool,
}

/// The answer of an http probe, sent from its thread.
pub(super) struct HttpAnswer {
    pub(super) inst: InstId,
    pub(super) check: Check,
    pub(super) attempt: u32,
    pub(super) passed: bool,
}

impl Engine<'_> {
    fn probe_of(&self, k: InstId, check: Check) -> Option<&crate::spec::Probe> {
        let p = &self.g.file.processes[self.core.insts[k].proc];
        match check {
            Check::Ready => p.ready.as_ref().map(|r| &r.probe.value),
            Check::Health => p.health.as_ref().map(|h| &h.probe.value),
        }
    }

    /// Runs the instance's probes that are due: readiness until it passes
    /// (failing the attempt once its timeout passed), then health.
    pub(super) fn probe_if_due(&mut self, k: InstId, now: Instant) {
        self.readiness_if_due(k, now);
        self.health_if_due(k, now);
    }

    /// Fails the attempt whose readiness did not pass within its timeout;
    /// true if it did so. A timer of its own, not a probe: served each turn.
    pub(super) fn readiness_timed_out(&mut self, k: InstId, now: Instant) -> bool {
        let i = &self.core.insts[k];
        let Some(a) = i.running() else {
            return false;
        };
        if a.probing.checks[Check::Ready as usize].due.is_none()
            || a.probing.ready
            || a.stop.is_some()
        {
            return false;
        }
        let Some(ready) = self.g.file.processes[i.proc].ready.as_ref() else {
            return false;
        };
        if a.start.is_none_or(|s| now < later(s, ready.timeout)) {
            return false;
        }
        self.core.not_ready_in_time(k);
        self.stop_probing(k);
        true
    }

    fn readiness_if_due(&mut self, k: InstId, now: Instant) {
        if self.readiness_timed_out(k, now) {
            return;
        }
        let i = &self.core.insts[k];
        let Some(a) = i.running() else {
            return;
        };
        let Some(due) = a.probing.checks[Check::Ready as usize].due else {
            return;
        };
        let Some(ready) = self.g.file.processes[i.proc].ready.as_ref() else {
            return;
        };
        if a.probing.ready || a.stop.is_some() || now < due {
            return;
        }
        let (interval, probe) = (ready.interval, ready.probe.value.clone());
        if let Some(state) = self.core.insts[k].check_mut(Check::Ready) {
            state.due = Some(later(now, interval));
        }
        // Each run of a command or request gets at most max(interval, 1s).
        self.run_probe(
            k,
            Check::Ready,
            &probe,
            interval.max(Duration::from_secs(1)),
            now,
        );
    }

    fn health_if_due(&mut self, k: InstId, now: Instant) {
        let i = &self.core.insts[k];
        let Some(a) = i.running() else {
            return;
        };
        let Some(due) = a.probing.checks[Check::Health as usize].due else {
            return;
        };
        let Some(health) = self.g.file.processes[i.proc].health.as_ref() else {
            return;
        };
        if a.stop.is_some() || now < due {
            return;
        }
        let (interval, probe) = (health.interval, health.probe.value.clone());
        if let Some(state) = self.core.insts[k].check_mut(Check::Health) {
            state.due = Some(later(now, interval));
        }
        self.run_probe(k, Check::Health, &probe, interval, now);
    }

    fn run_probe(
        &mut self,
        k: InstId,
        check: Check,
        probe: &crate::spec::Probe,
        limit: Duration,
        now: Instant,
    ) {
        match probe {
            crate::spec::Probe::Log(_) => {} // lines are matched as they are read
            crate::spec::Probe::File(path) => {
                let cwd = self.launches[k]
                    .as_ref()
                    .map(|(l, _)| l.cwd.clone())
                    .unwrap_or_else(|| self.base.clone());
                let path = cwd.join(spawn::interpolate(path, self.core.insts[k].replica));
                self.check_result(k, check, path.exists());
            }
            crate::spec::Probe::Tcp { host, port } => {
                self.probe_tcp(k, check, host, *port, limit, now)
            }
            crate::spec::Probe::Cmd(argv) => self.probe_cmd(k, check, argv, limit, now),
            crate::spec::Probe::Http { url, status } => {
                self.probe_http(k, check, url, status, limit, now)
            }
        }
    }

    /// A probe's host, or the node the instance's unit runs on when the probe
    /// names this machine and a cluster executor placed the unit elsewhere.
    fn probe_host<'h>(&'h self, k: InstId, host: &'h str) -> &'h str {
        match self.nodes.get(&k) {
            Some(node) if is_this_machine(host) => node,
            _ => host,
        }
    }

    /// An http probe's URL, with its host placed as [`Self::probe_host`] does.
    fn probe_url(&self, k: InstId, url: &str) -> String {
        let Some((host, _)) = http_host_port(url) else {
            return url.to_string();
        };
        let placed = self.probe_host(k, &host);
        if placed == host {
            return url.to_string();
        }
        with_host(url, &host, placed)
    }

    /// Resolves `host:port` once per instance (the lookup blocks), then reuses it.
    fn probe_addr(&mut self, k: InstId, host: &str, port: u16) -> Option<std::net::SocketAddr> {
        if let Some(a) = self.tcp_addrs.get(&(k, port)) {
            return Some(*a);
        }
        use std::net::ToSocketAddrs;
        let a = (host, port).to_socket_addrs().ok()?.next()?;
        self.tcp_addrs.insert((k, port), a);
        Some(a)
    }

    /// Starts a non-blocking connect, one at a time; its result comes back as
    /// an event ([`Engine::on_tcp_probe`]).
    fn probe_tcp(
        &mut self,
        k: InstId,
        check: Check,
        host: &str,
        port: u16,
        limit: Duration,
        now: Instant,
    ) {
        if let Some(state) = self.core.insts[k].check(check).filter(|s| s.inflight) {
            // A connect that hangs (a full accept queue, dropped packets) gets
            // `limit`, as a command or a request does: then it fails, and
            // this check makes a new one.
            if state.started.is_none_or(|t| now < later(t, limit)) {
                return;
            }
            for t in self.sources.tcp_of(k, check) {
                if let Some(mut p) = self.sources.remove_tcp(t) {
                    let _ = self.poll.registry().deregister(&mut p.stream);
                }
            }
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.inflight = false;
                state.started = None;
            }
            self.check_result(k, check, false);
            if self.probe_moot(k)
                || self.core.insts[k]
                    .check(check)
                    .is_none_or(|s| s.due.is_none())
            {
                return;
            }
        }
        let host = self.probe_host(k, host).to_string();
        let Some(addr) = self.probe_addr(k, &host, port) else {
            self.check_result(k, check, false);
            return;
        };
        let Ok(mut stream) = mio::net::TcpStream::connect(addr) else {
            self.check_result(k, check, false);
            return;
        };
        let token = self.sources.token();
        if self
            .poll
            .registry()
            .register(&mut stream, Token(token), Interest::WRITABLE)
            .is_ok()
        {
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.inflight = true;
                state.started = Some(now);
            }
            self.sources.insert(
                token,
                sources::Source::Tcp(sources::TcpProbe {
                    inst: k,
                    check,
                    addr,
                    stream,
                }),
            );
        }
    }

    /// Runs the probe command in its own group, with the instance's
    /// environment and cwd; a run still going after `limit` is killed and
    /// counts as failed. Its exit comes back through the executor's reap.
    fn probe_cmd(
        &mut self,
        k: InstId,
        check: Check,
        argv: &[String],
        limit: Duration,
        now: Instant,
    ) {
        let state = self.core.insts[k].check(check).copied().unwrap_or_default();
        if let Some(pid) = state.pid {
            if state.started.is_some_and(|t| now >= later(t, limit)) {
                self.exec.signal_group(pid, libc::SIGKILL);
                if let Some(state) = self.core.insts[k].check_mut(check) {
                    state.overdue = true;
                }
            }
            return;
        }
        let Some((launch, _)) = &self.launches[k] else {
            return;
        };
        let mut probe = launch.clone();
        probe.argv = argv
            .iter()
            .map(|a| spawn::interpolate(a, self.core.insts[k].replica))
            .collect();
        let null = self.null.as_raw_fd();
        let fds = [
            (0, posix::Source::Fd(null)),
            (1, posix::Source::Fd(null)),
            (2, posix::Source::Fd(null)),
        ];
        if let Ok(pid) = Prepared::new(&probe).and_then(|prep| self.exec.spawn(&prep, &fds)) {
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.pid = Some(pid);
                state.started = Some(now);
            }
            self.probe_pids.insert(pid, (k, check));
            self.groups.push(Group {
                pgid: pid,
                inst: k,
                leader_gone: false,
            });
        }
    }

    /// A GET in a thread of its own (the loop never waits on the network);
    /// the answer comes back through a channel, and the thread wakes the loop.
    fn probe_http(
        &mut self,
        k: InstId,
        check: Check,
        url: &str,
        accept: &[u16],
        limit: Duration,
        now: Instant,
    ) {
        if self.core.insts[k].check(check).is_some_and(|s| s.inflight) {
            // Due while the last request is still out: it runs as soon as
            // that one is answered (a request that hangs until its limit
            // fails once per interval, not every other).
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.overdue = true;
            }
            return;
        }
        let url = self.probe_url(k, &spawn::interpolate(url, self.core.insts[k].replica));
        let (accept, tx, waker) = (
            accept.to_vec(),
            self.http_tx.clone(),
            Arc::clone(&self.waker),
        );
        let attempt = self.core.insts[k].attempts;
        let spawned = hygiene::spawn_thread("jobgraph-http-probe", move || {
            let passed = http_check(&url, &accept, limit);
            // The engine gone (the receiver dropped): nobody to tell.
            if tx
                .send(HttpAnswer {
                    inst: k,
                    check,
                    attempt,
                    passed,
                })
                .is_err()
            {
                return;
            }
            let _ = waker.wake();
        });
        if spawned.is_ok() {
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.inflight = true;
                state.started = Some(now);
            }
        }
    }

    /// Answers of http probes that arrived since the last turn.
    pub(super) fn on_http_answers(&mut self) {
        while let Ok(a) = self.http_rx.try_recv() {
            if let Some(state) = self.core.insts[a.inst].check_mut(a.check) {
                state.inflight = false;
                state.started = None;
                if std::mem::take(&mut state.overdue) && state.due.is_some() {
                    state.due = Some(Instant::now());
                }
            }
            // An answer for an attempt that is over says nothing about this one.
            if self.core.insts[a.inst].attempts != a.attempt || self.probe_moot(a.inst) {
                continue;
            }
            let passed = a.passed && self.owns_http_listener(a.inst, a.check);
            self.check_result(a.inst, a.check, passed);
        }
    }

    /// A probe's answer about an instance being stopped (or no longer running)
    /// says nothing: its server may be gone, or the port taken by another.
    fn probe_moot(&self, k: InstId) -> bool {
        self.core.insts[k]
            .running()
            .is_none_or(|a| a.stop.is_some())
    }

    /// An http answer counts only if the server is the instance's own (as for tcp).
    fn owns_http_listener(&mut self, k: InstId, check: Check) -> bool {
        let Some(crate::spec::Probe::Http { url, .. }) = self.probe_of(k, check).cloned() else {
            return true;
        };
        let Some((host, port)) =
            http_host_port(&spawn::interpolate(&url, self.core.insts[k].replica))
        else {
            return true;
        };
        let Some(addr) = self.probe_addr(k, &host, port) else {
            return true;
        };
        if self.listener_owner(k, addr) != Some(false) {
            return true;
        }
        if !std::mem::replace(&mut self.core.insts[k].foreign_listener_noted, true) {
            let name = self.core.insts[k].name.clone();
            self.note(
                &format!(
                    "{name}: another program answers on {addr}; not ready until {name} itself does"
                ),
                true,
            );
        }
        false
    }

    /// Whether the listener on `addr` is `k`'s own (None: /proc cannot
    /// tell). Found its own once in an attempt, it is trusted for the rest
    /// of it; found another program's, for a second, as each look scans the
    /// host's socket table (8,000 sockets at a 20 ms interval took 83 % of
    /// a core).
    fn listener_owner(&mut self, k: InstId, addr: std::net::SocketAddr) -> Option<bool> {
        let i = &self.core.insts[k];
        let attempt = i.attempts;
        if i.listener_owned_in == Some(attempt) {
            return Some(true);
        }
        if !self.exec.owns_local_groups() {
            return None;
        }
        if let Some((a, at)) = i.listener_foreign_at {
            if a == attempt && at.elapsed() < Duration::from_secs(1) {
                return Some(false);
            }
        }
        let owned = crate::runtime::sockets::listener_in_group(addr, i.unit()?.get());
        let i = &mut self.core.insts[k];
        match owned {
            Some(true) => i.listener_owned_in = Some(attempt),
            Some(false) => i.listener_foreign_at = Some((attempt, Instant::now())),
            None => {}
        }
        owned
    }

    pub(super) fn on_tcp_probe(&mut self, token: usize) {
        let Some(sources::TcpProbe {
            inst: k,
            check,
            addr,
            mut stream,
        }) = self.sources.remove_tcp(token)
        else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream);
        if let Some(state) = self.core.insts[k].check_mut(check) {
            state.inflight = false;
        }
        if self.probe_moot(k) {
            return;
        }
        let connected = matches!(stream.take_error(), Ok(None)) && stream.peer_addr().is_ok();
        if !connected {
            self.check_result(k, check, false);
            return;
        }
        // The listener must be the instance's own, not another program's on the
        // same port; where /proc cannot tell, the connect is enough. Found once
        // in an attempt, it is trusted for the rest of it.
        if self.listener_owner(k, addr) == Some(false) {
            if !std::mem::replace(&mut self.core.insts[k].foreign_listener_noted, true) {
                let name = self.core.insts[k].name.clone();
                let until = match check {
                    Check::Ready => "not ready until",
                    Check::Health => "not healthy until",
                };
                self.note(
                    &format!(
                        "{name}: another program listens on {addr}; {until} {name} itself does"
                    ),
                    true,
                );
            }
            self.check_result(k, check, false);
            return;
        }
        self.check_result(k, check, true);
    }

    /// A `cmd` probe exited.
    pub(super) fn on_probe_exit(&mut self, pid: UnitId, passed: bool) {
        if let Some((k, check)) = self.probe_pids.remove(&pid) {
            if let Some(state) = self.core.insts[k].check_mut(check) {
                state.pid = None;
                state.started = None;
                if std::mem::take(&mut state.overdue) && state.due.is_some() {
                    // Killed at a check time: that check runs now, so that a
                    // hung command fails once per interval, not every other.
                    state.due = Some(Instant::now());
                }
            }
            self.check_result(k, check, passed);
        }
    }

    /// What a probe found. A process that has exited is never ready or healthy.
    pub(super) fn check_result(&mut self, k: InstId, check: Check, passed: bool) {
        let Some(a) = self.core.insts[k].running().filter(|a| a.stop.is_none()) else {
            return;
        };
        match check {
            Check::Ready if passed && !a.probing.ready => self.set_ready(k),
            Check::Ready => {}
            Check::Health if passed => {
                if let Some(state) = self.core.insts[k].check_mut(Check::Health) {
                    state.failures = 0;
                }
            }
            Check::Health => self.health_failed(k),
        }
    }

    /// One more failed health check; at `failures` in a row the process is
    /// stopped and counts as failed (then its `restart` policy applies).
    fn health_failed(&mut self, k: InstId) {
        let Some(health) = self.g.file.processes[self.core.insts[k].proc]
            .health
            .as_ref()
        else {
            return;
        };
        let replica = self.core.insts[k].replica;
        // As it was probed: `{replica}` resolved.
        let what = spawn::interpolate(&health.probe.value.describe(), replica);
        let limit = health.failures;
        if !self.core.health_check_failed(k, limit, &what) {
            return;
        }
        let i = &self.core.insts[k];
        let (name, pid) = (i.name.clone(), i.pid());
        self.stop_probing(k);
        self.note(
            &format!("{name}: health check failed {limit} times in a row ({what}); stopping it"),
            true,
        );
        self.emit(RunEvent::HealthFailed {
            process: &name,
            pid,
            failures: limit,
        });
    }

    pub(super) fn set_ready(&mut self, k: InstId) {
        let Some(took) = self.core.became_ready(k) else {
            return;
        };
        let i = &self.core.insts[k];
        let (name, pid, proc, relayed) = (i.name.clone(), i.pid(), i.proc, i.relayed);
        self.end_check(k, Check::Ready);
        // Liveness starts once the process is ready (a relayed member's is its nested run's).
        if let Some(h) = self.g.file.processes[proc]
            .health
            .as_ref()
            .filter(|_| !relayed)
        {
            if let Some(state) = self.core.insts[k].check_mut(Check::Health) {
                state.due = Some(later(Instant::now(), h.interval));
            }
        }
        // As it was probed: `{replica}` resolved.
        let what = self
            .probe_of(k, Check::Ready)
            .map(|p| spawn::interpolate(&p.describe(), self.core.insts[k].replica))
            .unwrap_or_default();
        self.reporter.instance_note(
            &name,
            &format!(
                "ready after {} ({what})",
                crate::runtime::report::fmt_duration(took)
            ),
        );
        self.emit(RunEvent::Ready {
            process: &name,
            pid,
        });
    }

    /// Stops one check of instance `k`: no more probes, none in flight.
    fn end_check(&mut self, k: InstId, check: Check) {
        let state = self.core.insts[k]
            .check_mut(check)
            .map(std::mem::take)
            .unwrap_or_default();
        if let Some(pid) = state.pid {
            self.exec.signal_group(pid, libc::SIGKILL);
        }
        for t in self.sources.tcp_of(k, check) {
            if let Some(mut p) = self.sources.remove_tcp(t) {
                let _ = self.poll.registry().deregister(&mut p.stream);
            }
        }
        // An http answer still to come is ignored: the attempt number or the
        // phase will not match, or `inflight` is cleared when it arrives.
    }

    /// Ends every probe of instance `k` (its attempt is over or stopping).
    pub(super) fn stop_probing(&mut self, k: InstId) {
        self.end_check(k, Check::Ready);
        self.end_check(k, Check::Health);
    }
}
