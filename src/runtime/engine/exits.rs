//! Exits: signals to the engine, reaping, and what an attempt's end means
//! (retry, restart, done, fail-fast).

use super::*;

impl Engine<'_> {
    pub(super) fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => {
                    self.reap();
                }
                SIGINT | SIGTERM | SIGHUP => self.interrupt(sig),
                SIGUSR1 => {
                    let table = self.status_table();
                    self.reporter.status(&table);
                }
                _ => {}
            }
        }
    }

    pub(super) fn interrupt(&mut self, sig: i32) {
        if self.cancel.as_ref().and_then(Cancel::signal).is_none() {
            self.escalate(Cancel::Signal(sig));
            self.reporter.shutdown_began();
            self.reporter.note(
                &format!(
                    "{} received: stopping everything (send it again to kill at once)",
                    signal_name(sig)
                ),
                true,
            );
            self.begin_shutdown();
        } else if self.escalate(Cancel::Kill(sig)) {
            self.reporter.note("killing everything now", true);
            self.kill_everything();
        }
    }

    pub(super) fn kill_everything(&mut self) {
        for g in &self.groups {
            self.exec.signal_group(g.pgid, libc::SIGKILL);
        }
        let spare = self.watchdog.as_ref().map(Watchdog::pid);
        for pid in hygiene::descendants(std::process::id() as i32, spare) {
            hygiene::signal_pid(pid, Signal::SIGKILL);
        }
    }

    /// Reaps every ended unit: our processes, and orphans re-parented to
    /// us. True if any was.
    pub(super) fn reap(&mut self) -> bool {
        let mut any = false;
        loop {
            let reaped = self.exec.reap();
            // News of a unit comes before its end (a job seen only once gone
            // was running): placements first, while the unit is still known.
            while let Some(p) = self.exec.placed() {
                self.on_placed(p);
            }
            while let Some(id) = self.exec.ready() {
                if let Some(&k) = self.by_pid.get(&id) {
                    self.set_ready(k);
                }
            }
            match reaped {
                Some(r) => {
                    any = true;
                    self.on_reaped(r);
                }
                None => return any,
            }
        }
    }

    /// A cluster's news of a unit: its job, step and node, and whether it
    /// runs yet. Time limits count from when it runs, not from its submission.
    fn on_placed(&mut self, p: super::super::executor::Placement) {
        let Some(&k) = self.by_pid.get(&p.id) else {
            return;
        };
        if let Some(a) = self.insts[k].attempt_mut() {
            if !p.running {
                a.start = None;
            } else if a.start.is_none() {
                a.start = Some(Instant::now());
            }
        }
        if let Some(node) = &p.node {
            if self.nodes.get(&k) != Some(node) {
                self.nodes.insert(k, node.clone());
                self.tcp_addrs.retain(|(inst, _), _| *inst != k);
            }
        }
        let name = self.insts[k].name.clone();
        self.emit(RunEvent::Placed {
            process: &name,
            pid: p.id.get(),
            state: if p.running { "running" } else { "queued" },
            job_id: &p.job_id,
            step_id: p.step_id.as_deref(),
            node: p.node.as_deref(),
        });
    }

    fn on_reaped(&mut self, r: super::super::executor::Reaped) {
        let pid = r.id;
        if self
            .watchdog
            .as_ref()
            .is_some_and(|w| UnitId(w.pid()) == pid)
        {
            self.reporter.note(
                "the watchdog process exited early; an engine crash would now leave processes behind",
                true,
            );
            self.watchdog = None;
            return;
        }
        if self.probe_pids.contains_key(&pid) {
            self.on_probe_exit(pid, r.exit == Exit::Code(0));
            return;
        }
        let Some(k) = self.by_pid.remove(&pid) else {
            return;
        };
        // What it held (descriptors, a process slot) is free again.
        self.resource_wait = None;
        if self.tty_holder == Some(k) {
            self.tty_holder = None;
            hygiene::take_terminal_back();
        }
        self.running -= 1;
        if self.needs_slot(k) {
            self.slots_used -= 1;
        }
        self.take_locks(k, false);
        let i = &mut self.insts[k];
        i.last = Some(End::Reaped {
            unit: pid,
            exit: r.exit,
            verdict: r.relayed.map(|x| x.verdict),
        });
        if let Some(x) = r.relayed {
            // Its nested run's attempts and restarts are its own.
            i.attempts = i.attempts.max(x.attempts);
            i.restarts = x.restarts;
        }
        i.peak_rss_kib = i.peak_rss_kib.max(r.peak_rss_kib);
        if i.attempt().is_some_and(|a| a.open_pipes > 0) {
            i.drain(Instant::now());
        } else {
            self.attempt_end(k);
        }
    }

    /// An attempt is over (process reaped and its output drained, or it never
    /// started): report it, then retry, restart, or end the instance. The
    /// attempt stays in the phase, to be read, until that retry, restart or
    /// end replaces the phase.
    pub(super) fn attempt_end(&mut self, k: InstId) {
        self.stop_probing(k);
        let result = self.attempt_result(k);
        let i = &self.insts[k];
        let (name, attempt) = (i.name.clone(), i.attempts);
        let (pid, duration) = match (i.attempt(), i.last) {
            (Some(a), _) => (
                Some(a.unit.get()).filter(|&pid| pid > 0),
                a.start.map(|s| s.elapsed()),
            ),
            // It could not start: no unit, and it lasted from the try on.
            (None, Some(End::NotStarted { tried })) => (None, Some(tried.elapsed())),
            (None, _) => (None, None),
        };
        let (code, signal) = exit_parts(i.exit());
        let again = self.next_attempt(k, result);
        self.emit(RunEvent::Exited {
            process: &name,
            pid,
            code,
            signal,
            duration,
            attempt,
            status: result.as_str(),
            then: again.map(|a| match a {
                Again::Retry => "retry",
                Again::Restart => "restart",
            }),
        });
        self.queue_consumer_exited(k, again.is_some());
        match again {
            Some(Again::Restart) => self.schedule_restart(k, result),
            Some(Again::Retry) => self.schedule_retry(k, result),
            None => self.end_instance(k, result),
        }
    }

    /// What the attempt's end means for the instance.
    fn attempt_result(&self, k: InstId) -> Outcome {
        let i = &self.insts[k];
        let proc = i.proc;
        let p = &self.g.file.processes[proc];
        // One that could not start has no attempt: no stop, no probes.
        let stop = i.attempt().and_then(|a| a.stop);
        let signalled = stop.is_some_and(|s| s.signalled.is_some());
        // The nested run that ran it knows best (its timeouts, probes, codes).
        match i.verdict() {
            Some(Verdict::Ok) => return Outcome::Ok,
            Some(Verdict::Failed) => return Outcome::Failed,
            Some(Verdict::TimedOut) => return Outcome::TimedOut,
            Some(Verdict::Stopped) => return Outcome::Stopped,
            None => {}
        }
        match (stop.map(|s| s.reason), signalled, i.exit()) {
            _ if i.not_ready() || i.unhealthy() => Outcome::Failed,
            (Some(StopReason::Timeout), _, _) => Outcome::TimedOut,
            (Some(_), true, _) => Outcome::Stopped,
            (_, _, Some(Exit::Code(c))) if p.success_codes.contains(&c) => Outcome::Ok,
            // A writer in a stream group killed by SIGPIPE: its reader stopped reading,
            // which is how `yes | head` ends; not a failure of the group.
            (_, _, Some(Exit::Signal(libc::SIGPIPE))) if self.in_stream_group(proc) => Outcome::Ok,
            _ => Outcome::Failed,
        }
    }

    pub(super) fn in_stream_group(&self, proc: usize) -> bool {
        !self.g.groups[self.g.group_of[proc]].edges.is_empty()
    }

    /// Retry first (a failure within `retries`), then `restart` for exits the
    /// engine did not ask for; neither while the run is cancelled, nor for a
    /// stream-group member with a pipe edge (its other end is gone for good).
    fn next_attempt(&self, k: InstId, result: Outcome) -> Option<Again> {
        let i = &self.insts[k];
        let p = &self.g.file.processes[i.proc];
        let rejoinable = !self.in_stream_group(i.proc) || self.only_queue_edges(i.proc);
        // A relayed member's retries and restarts were its nested run's.
        if self.cancel.is_some() || !rejoinable || i.relayed {
            return None;
        }
        if result.is_failure() && i.attempts <= p.retries {
            return Some(Again::Retry);
        }
        let asked_to_stop = matches!(
            i.stop_reason(),
            Some(StopReason::Shutdown | StopReason::DaemonEnd)
        );
        let policy = match p.restart {
            crate::spec::Restart::Never => false,
            crate::spec::Restart::OnFailure => result.is_failure(),
            crate::spec::Restart::Always => true,
        };
        // A worker that ended well after its queues gave it end-of-file is done:
        // restarting it could only read end-of-file again.
        let drained = !result.is_failure() && self.queue_inputs_exhausted(k);
        (policy && !asked_to_stop && i.restarts < p.max_restarts && !drained)
            .then_some(Again::Restart)
    }

    /// How the attempt ended, in a few words (`exited 3`, `timed out`).
    fn attempt_words(&self, k: InstId, result: Outcome) -> String {
        let i = &self.insts[k];
        match (result, exit_parts(i.exit())) {
            _ if i.not_ready() => "was not ready in time".to_string(),
            _ if i.unhealthy() => "failed its health check".to_string(),
            (Outcome::TimedOut, _) => "timed out".to_string(),
            (_, (Some(c), _)) => format!("exited {c}"),
            (_, (_, Some(s))) => format!("was killed by {s}"),
            _ => "could not start".to_string(),
        }
    }

    fn schedule_restart(&mut self, k: InstId, result: Outcome) {
        let p = &self.g.file.processes[self.insts[k].proc];
        let (n, max) = (self.insts[k].restarts, p.max_restarts);
        let delay = restart_delay(n);
        let (name, attempt) = (self.insts[k].name.clone(), self.insts[k].attempts);
        let what = self.attempt_words(k, result);
        let when = crate::spec::format_duration(delay);
        self.reporter.note(
            &format!("{name} {what}; restart {} of {max} in {when}", n + 1),
            result.is_failure(),
        );
        self.emit(RunEvent::Restarting {
            process: &name,
            attempt: attempt + 1,
            delay,
        });
        self.insts[k].restart_pending = true;
        self.wait_for_next_attempt(k, delay);
    }

    fn schedule_retry(&mut self, k: InstId, result: Outcome) {
        let p = &self.g.file.processes[self.insts[k].proc];
        let (delay, retries) = (p.retry_delay, p.retries);
        let (name, attempt) = (self.insts[k].name.clone(), self.insts[k].attempts);
        let what = self.attempt_words(k, result);
        let when = crate::spec::format_duration(delay);
        self.reporter.note(
            &format!("{name} {what}; retry {attempt} of {retries} in {when}"),
            false,
        );
        self.emit(RunEvent::Retrying {
            process: &name,
            attempt: attempt + 1,
        });
        self.wait_for_next_attempt(k, delay);
    }

    fn wait_for_next_attempt(&mut self, k: InstId, delay: Duration) {
        // The attempt (its stop, its probes) ends with its phase.
        self.insts[k].phase = Phase::RetryWait {
            until: later(Instant::now(), delay),
        };
    }

    /// No further attempt: the instance is done; a failure fails its stream
    /// group (pipefail) and, with fail-fast, the run.
    fn end_instance(&mut self, k: InstId, result: Outcome) {
        let proc = self.insts[k].proc;
        self.insts[k].stopped_at_end = result == Outcome::Stopped
            && self.insts[k].stop_reason() == Some(StopReason::DaemonEnd);
        // Said of the attempt, which `set_done` ends.
        let what = result.is_failure().then(|| self.failure_words(k, result));
        self.set_done(k, result);
        let Some(what) = what else {
            return;
        };
        if self.in_stream_group(proc) {
            for j in self.group_peers(k) {
                let why = format!("stream group: `{}` {}", self.insts[k].name, result.as_str());
                self.request_stop(j, StopReason::Shutdown, why);
            }
        }
        let name = self.insts[k].name.clone();
        self.reporter.note(&format!("{name} {what}"), true);
        if !(what == "could not start" && self.insts[k].why.is_some()) {
            self.insts[k].why = Some(what);
        }
        if self.fail_fast && self.cancel.is_none() {
            self.escalate(Cancel::FailFast(name));
            self.begin_shutdown();
        }
    }

    /// Why an instance failed for good, as the note and the summary say it.
    fn failure_words(&self, k: InstId, result: Outcome) -> String {
        let i = &self.insts[k];
        let p = &self.g.file.processes[i.proc];
        let limit = |d: Option<Duration>| d.map(crate::spec::format_duration).unwrap_or_default();
        match (result, exit_parts(i.exit())) {
            _ if i.not_ready() => format!(
                "was not ready within {}",
                limit(p.ready.as_ref().map(|r| r.timeout))
            ),
            _ if i.unhealthy() => format!(
                "failed its health check {} times in a row",
                p.health.as_ref().map_or(0, |h| h.failures)
            ),
            (Outcome::TimedOut, _) => format!("timed out after {}", limit(p.timeout)),
            (_, (Some(c), _)) => format!("failed with exit code {c}"),
            (_, (_, Some(s))) => format!("was killed by {s}"),
            _ => "could not start".to_string(),
        }
    }
}

/// What comes after an attempt that did not end the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    Retry,
    Restart,
}

/// An exit as (code, signal name).
fn exit_parts(exit: Option<Exit>) -> (Option<i32>, Option<&'static str>) {
    match exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(signal_name(s))),
        None => (None, None),
    }
}
