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
                SIGQUIT => self.quit(sig),
                SIGUSR2 => self.forward(sig),
                SIGUSR1 => {
                    let table = self.status_table();
                    self.reporter.status(&table);
                }
                _ => {}
            }
        }
    }

    pub(super) fn interrupt(&mut self, sig: i32) {
        if self.core.cancel.as_ref().and_then(Cancel::signal).is_none() {
            self.core.escalate(Cancel::Signal(sig));
            self.reporter.shutdown_began();
            self.note(
                &format!(
                    "{} received: stopping everything (send it again to kill at once)",
                    signal_name(sig)
                ),
                true,
            );
            self.core.begin_shutdown();
        } else if self.core.escalate(Cancel::Kill(sig)) {
            self.note("killing everything now", true);
            self.kill_everything();
        }
    }

    /// SIGQUIT: kill everything at once, as a second SIGINT would (exit 131).
    fn quit(&mut self, sig: i32) {
        let first = self.core.cancel.as_ref().and_then(Cancel::signal).is_none();
        if self.core.escalate(Cancel::Kill(sig)) {
            if first {
                self.reporter.shutdown_began();
            }
            self.note(
                &format!("{} received: killing everything now", signal_name(sig)),
                true,
            );
            self.core.begin_shutdown();
            self.kill_everything();
        }
    }

    /// SIGUSR2 is the processes': it goes to the process group of each
    /// running one (as dumb-init forwards signals); the run goes on.
    fn forward(&mut self, sig: i32) {
        let live: Vec<InstId> = self.core.active.iter().copied().collect();
        for k in live {
            self.signal_unit(k, sig);
        }
    }

    pub(super) fn kill_everything(&mut self) {
        // Each live unit's SIGKILL is told (`killed`), then everything goes.
        self.core.kill_running(Instant::now());
        self.apply();
        for pgid in self.groups_of_the_run() {
            self.exec.signal_group(pgid, libc::SIGKILL);
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
        self.core.placed(k, p.running, Instant::now());
        if let Some(node) = &p.node {
            if self.nodes.get(&k) != Some(node) {
                self.nodes.insert(k, node.clone());
                self.tcp_addrs.retain(|(inst, _), _| *inst != k);
            }
        }
        let name = self.core.insts[k].name.clone();
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
        let exec_error = self.exec.exec_error(pid);
        self.leader_reaped(pid);
        if self
            .watchdog
            .as_ref()
            .is_some_and(|w| UnitId(w.pid()) == pid)
        {
            self.note(
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
        // A child whose exec failed ran nothing: its peak is the engine's.
        let peak_rss_kib = match exec_error {
            Some(e) => {
                self.exec_failed_late(k, &e);
                0
            }
            None => r.peak_rss_kib,
        };
        // What it held (descriptors, a process slot) is free again.
        self.resource_wait = None;
        if self.tty_holder == Some(k) {
            self.tty_holder = None;
            hygiene::take_terminal_back();
            // It had the terminal, so Ctrl-C (Ctrl-\\) went to it, not to the
            // engine: as a shell does for its foreground job, a death by that
            // signal is taken as the user's, and the run is interrupted.
            if let Exit::Signal(sig @ (libc::SIGINT | libc::SIGQUIT)) = r.exit {
                match sig {
                    libc::SIGQUIT => self.quit(sig),
                    _ => self.interrupt(sig),
                }
                self.core.stopped_by_user(k, Instant::now());
            }
        }
        // Read at the reap, when the child's exec is surely past: it ran in
        // the engine's memory until then (a launch need not wait for its
        // exec), and the kernel counts that in the child's peak.
        self.core.insts[k].spawn_rss_kib = self.engine_peak_rss_kib();
        self.core
            .unit_reaped(k, pid, r.exit, r.relayed, peak_rss_kib);
        let i = &mut self.core.insts[k];
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
        let result = self.core.attempt_result(k);
        let i = &self.core.insts[k];
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
        let drained = self.queue_inputs_exhausted(k);
        let again = self.core.next_attempt(k, result, drained);
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
        self.core.after_attempt(k, result, again);
    }

    /// The leader of group `pgid` (a unit or a probe) was reaped. An empty
    /// group is forgotten at once (by the watchdog too): its id may be
    /// reused by any process once pids wrap, and signalling it later killed
    /// unrelated processes. One with leftovers is checked again each second.
    fn leader_reaped(&mut self, pgid: UnitId) {
        let Some(at) = self.groups.iter().position(|g| g.pgid == pgid) else {
            return;
        };
        if self.exec.owns_local_groups() && !self.exec.group_alive(pgid) {
            self.groups.swap_remove(at);
            if let Some(w) = &mut self.watchdog {
                w.forget(pgid.get());
            }
        } else if !std::mem::replace(&mut self.groups[at].leader_gone, true) {
            self.leaderless += 1;
        }
    }

    /// Forgets the groups whose leader is gone and whose last member has
    /// now exited too; at most once a second.
    pub(super) fn prune_groups(&mut self, now: Instant) {
        if now < self.groups_checked + Duration::from_secs(1) || !self.exec.owns_local_groups() {
            return;
        }
        self.groups_checked = now;
        let mut i = 0;
        while i < self.groups.len() {
            let g = &self.groups[i];
            if g.leader_gone && !self.exec.group_alive(g.pgid) {
                let pgid = g.pgid;
                self.groups.swap_remove(i);
                self.leaderless -= 1;
                if let Some(w) = &mut self.watchdog {
                    w.forget(pgid.get());
                }
            } else {
                i += 1;
            }
        }
    }

    /// The groups to signal when the run ends or is killed. Without a PID
    /// namespace, a group counts only while one of its members descends
    /// from the engine (the engine is a subreaper, so everything a job left
    /// does): a group of the run that emptied and whose id an unrelated
    /// process took since is left alone.
    pub(super) fn groups_of_the_run(&self) -> Vec<UnitId> {
        if self.groups.is_empty() || !self.shared_pids || !self.exec.owns_local_groups() {
            return self.groups.iter().map(|g| g.pgid).collect();
        }
        let spare = self.watchdog.as_ref().map(Watchdog::pid);
        let ours: rustc_hash::FxHashSet<i32> =
            hygiene::descendants(std::process::id() as i32, spare)
                .into_iter()
                .filter_map(|pid| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok())
                .map(|g| g.as_raw())
                .collect();
        self.groups
            .iter()
            .map(|g| g.pgid)
            .filter(|g| ours.contains(&g.get()))
            .collect()
    }
}
