//! Exits: signals to the engine, reaping, and what an attempt's end means
//! (retry, restart, done, fail-fast).

use super::*;

impl Engine<'_> {
    pub(super) fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap(),
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

    /// Reaps every ended unit: our processes, and orphans re-parented to us.
    pub(super) fn reap(&mut self) {
        while let Some(r) = self.exec.reap() {
            self.on_reaped(r);
        }
    }

    fn on_reaped(&mut self, r: super::super::executor::Reaped) {
        let pid = r.id;
        if self.watchdog.as_ref().is_some_and(|w| w.pid() == pid) {
            self.reporter.note(
                "the watchdog process exited early; an engine crash would now leave processes behind",
                true,
            );
            self.watchdog = None;
            return;
        }
        if let Some(k) = self.probe_pids.remove(&pid) {
            self.insts[k].probe_pid = 0;
            let passed = r.exit == Exit::Code(0);
            if passed && self.insts[k].phase == Phase::Running && !self.insts[k].ready {
                self.set_ready(k);
            }
            return;
        }
        let Some(k) = self.by_pid.remove(&pid) else {
            return;
        };
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
        i.exit = Some(r.exit);
        i.peak_rss_kib = i.peak_rss_kib.max(r.peak_rss_kib);
        if i.open_pipes == 0 {
            self.attempt_end(k);
        } else {
            i.phase = Phase::Draining {
                since: Instant::now(),
            };
        }
    }

    /// An attempt is over (process reaped and its output drained, or it never started).
    pub(super) fn attempt_end(&mut self, k: usize) {
        self.stop_probing(k);
        let now = Instant::now();
        let proc = self.insts[k].proc;
        let p = &self.g.file.processes[proc];
        let i = &self.insts[k];
        let result = match (i.stop, i.stop_sent.is_some(), i.exit) {
            _ if i.not_ready => Outcome::Failed,
            (Some(StopReason::Timeout), _, _) => Outcome::TimedOut,
            (Some(_), true, _) => Outcome::Stopped,
            (_, _, Some(Exit::Code(c))) if p.success_codes.contains(&c) => Outcome::Ok,
            // A writer in a stream group killed by SIGPIPE: its reader stopped reading,
            // which is how `yes | head` ends; not a failure of the group.
            (_, _, Some(Exit::Signal(libc::SIGPIPE)))
                if !self.g.groups[self.g.group_of[proc]].edges.is_empty() =>
            {
                Outcome::Ok
            }
            _ => Outcome::Failed,
        };
        let duration = i.attempt_start.map(|s| now - s);
        let at_end = result == Outcome::Stopped && i.stop == Some(StopReason::DaemonEnd);
        let (code, signal) = match i.exit {
            Some(Exit::Code(c)) => (Some(c), None),
            Some(Exit::Signal(s)) => (None, Some(signal_name(s))),
            None => (None, None),
        };
        let (name, pid, attempt) = (i.name.clone(), i.pid, i.attempts);
        let in_group = !self.g.groups[self.g.group_of[proc]].edges.is_empty();
        // A stream group member reruns alone only if all its edges are queues
        // (it reattaches); a pipe's other end is gone for good.
        let rejoinable = !in_group || self.only_queue_edges(proc);
        let retry =
            result.is_failure() && attempt <= p.retries && self.cancel.is_none() && rejoinable;
        self.emit(RunEvent::Exited {
            process: &name,
            pid: (pid > 0 && !i.start_error).then_some(pid),
            code,
            signal,
            duration,
            attempt,
            status: result.as_str(),
        });
        // `restart` keeps long-running processes up: after retries, on exits we did not ask for.
        let asked_to_stop = matches!(
            self.insts[k].stop,
            Some(StopReason::Shutdown | StopReason::DaemonEnd)
        );
        let restart = !retry
            && !asked_to_stop
            && rejoinable
            && self.cancel.is_none()
            && self.insts[k].restarts < p.max_restarts
            && match p.restart {
                crate::spec::Restart::Never => false,
                crate::spec::Restart::OnFailure => result.is_failure(),
                crate::spec::Restart::Always => true,
            };
        self.queue_consumer_exited(k, restart || retry);
        if restart {
            let n = self.insts[k].restarts;
            let delay = restart_delay(n);
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => "was not ready in time".to_string(),
                (Outcome::TimedOut, _, _) => "timed out".to_string(),
                (_, Some(c), _) => format!("exited {c}"),
                (_, _, Some(s)) => format!("was killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.reporter.note(
                &format!(
                    "{name} {what}; restart {} of {} in {}",
                    n + 1,
                    p.max_restarts,
                    crate::spec::format_duration(delay)
                ),
                result.is_failure(),
            );
            self.emit(RunEvent::Restarting {
                process: &name,
                attempt: attempt + 1,
                delay,
            });
            let i = &mut self.insts[k];
            i.restart_pending = true;
            i.phase = Phase::RetryWait {
                until: later(now, delay),
            };
            i.stop = None;
            i.stop_sent = None;
            return;
        }
        if retry {
            let delay = p.retry_delay;
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => "was not ready in time".to_string(),
                (Outcome::TimedOut, _, _) => "timed out".to_string(),
                (_, Some(c), _) => format!("exited {c}"),
                (_, _, Some(s)) => format!("killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.reporter.note(
                &format!(
                    "{name} {what}; retry {} of {} in {}",
                    attempt,
                    p.retries,
                    crate::spec::format_duration(delay)
                ),
                false,
            );
            self.emit(RunEvent::Retrying {
                process: &name,
                attempt: attempt + 1,
            });
            let i = &mut self.insts[k];
            i.phase = Phase::RetryWait {
                until: later(now, delay),
            };
            i.stop = None;
            i.stop_sent = None;
            return;
        }
        self.insts[k].stopped_at_end = at_end;
        self.set_done(k, result);
        if result.is_failure() && in_group {
            // pipefail: the group fails together; stop the members still running.
            for j in self.group_peers(k) {
                let why = format!("stream group: `{}` {}", self.insts[k].name, result.as_str());
                self.request_stop(j, StopReason::Shutdown, why);
            }
        }
        if result.is_failure() {
            let what = match (result, code, signal) {
                _ if self.insts[k].not_ready => format!(
                    "was not ready within {}",
                    p.ready
                        .as_ref()
                        .map(|r| crate::spec::format_duration(r.timeout))
                        .unwrap_or_default()
                ),
                (Outcome::TimedOut, _, _) => format!(
                    "timed out after {}",
                    p.timeout
                        .map(crate::spec::format_duration)
                        .unwrap_or_default()
                ),
                (_, Some(c), _) => format!("failed with exit code {c}"),
                (_, _, Some(s)) => format!("was killed by {s}"),
                _ => "could not start".to_string(),
            };
            self.reporter.note(&format!("{name} {what}"), true);
            if !(what == "could not start" && self.insts[k].why.is_some()) {
                self.insts[k].why = Some(what);
            }
            if self.fail_fast && self.cancel.is_none() {
                self.escalate(Cancel::FailFast(name.clone()));
                self.begin_shutdown();
            }
        }
    }
}
