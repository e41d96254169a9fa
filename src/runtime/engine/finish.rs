//! The end of a run: the sweep of leftovers and the outcome (summary, events).

use super::*;

impl Engine<'_> {
    /// Stops whatever is left: process groups with members and descendants
    /// that escaped their group (double fork, setsid). Stop signal, grace,
    /// then SIGKILL until nothing is left.
    pub(super) fn sweep(&mut self) {
        self.read_detached();
        let me = std::process::id() as i32;
        let spare = self.watchdog.as_ref().map(Watchdog::pid);
        self.reap_all();
        let ours = self.groups_of_the_run();
        let mut left: Vec<(UnitId, InstId)> = self
            .groups
            .iter()
            .filter(|g| ours.contains(&g.pgid) && self.exec.group_alive(g.pgid))
            .map(|g| (g.pgid, g.inst))
            .collect();
        // A group SIGKILLed a moment ago may still be dying (its processes
        // not yet reaped or torn down): that is not a leftover to report.
        let settle = later(Instant::now(), Duration::from_millis(100));
        let mut escaped = hygiene::descendants(me, spare);
        while !(left.is_empty() && escaped.is_empty()) && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(5));
            self.reap_all();
            left.retain(|&(pgid, _)| self.exec.group_alive(pgid));
            escaped = hygiene::descendants(me, spare);
        }
        if left.is_empty() && escaped.is_empty() {
            return;
        }
        for &(pgid, k) in &left {
            let sig = self.g.file.processes[self.core.insts[k].proc].stop_signal;
            let name = self.core.insts[k].name.clone();
            self.note(
                &format!(
                    "{name} left processes behind in its group; stopping them ({})",
                    sig.name
                ),
                false,
            );
            self.exec.signal_group(pgid, sig.number);
            self.exec.signal_group(pgid, libc::SIGCONT);
        }
        // Those still in a job's group got its stop_signal above: a SIGTERM
        // on top would defeat a stop_signal chosen to be the graceful one.
        let grouped: Vec<i32> = left.iter().map(|&(pgid, _)| pgid.get()).collect();
        let escaped: Vec<i32> = escaped
            .into_iter()
            .filter(|&pid| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                    .map_or(true, |g| !grouped.contains(&g.as_raw()))
            })
            .collect();
        for &pid in &escaped {
            hygiene::signal_pid(pid, Signal::SIGTERM);
        }
        if !escaped.is_empty() {
            self.note(
                &format!(
                    "stopping {} remaining descendant process(es)",
                    escaped.len()
                ),
                false,
            );
        }
        let deadline = if self.core.kill_now() {
            Instant::now()
        } else {
            later(Instant::now(), self.core.grace)
        };
        let hard_stop = later(deadline, Duration::from_secs(5));
        loop {
            self.reap_all();
            left.retain(|&(pgid, _)| self.exec.group_alive(pgid));
            let escaped = hygiene::descendants(me, spare);
            if left.is_empty() && escaped.is_empty() {
                return;
            }
            let now = Instant::now();
            self.sweep_signals(&left);
            if now >= deadline || self.core.kill_now() {
                for &(pgid, _) in &left {
                    self.exec.signal_group(pgid, libc::SIGKILL);
                }
                for pid in escaped {
                    hygiene::signal_pid(pid, Signal::SIGKILL);
                }
            }
            if now >= hard_stop {
                self.note("some processes could not be killed", true);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Signals to the engine during the sweep: the first INT / TERM / HUP is
    /// remembered for the exit code (the sweep is already graceful); a second,
    /// or SIGQUIT, kills at once; SIGUSR2 goes to what is left.
    fn sweep_signals(&mut self, left: &[(UnitId, InstId)]) {
        for sig in self.signals.pending().collect::<Vec<_>>() {
            match sig {
                SIGINT | SIGTERM | SIGHUP => {
                    if self.core.cancel.as_ref().and_then(Cancel::signal).is_none() {
                        self.core.escalate(Cancel::Signal(sig));
                    } else {
                        self.core.escalate(Cancel::Kill(sig));
                    }
                }
                SIGQUIT => {
                    self.core.escalate(Cancel::Kill(sig));
                }
                SIGUSR2 => {
                    for &(pgid, _) in left {
                        self.exec.signal_group(pgid, sig);
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn reap_all(&mut self) {
        while let Some(r) = self.exec.reap() {
            if self
                .watchdog
                .as_ref()
                .is_some_and(|w| UnitId(w.pid()) == r.id)
            {
                self.watchdog = None;
            }
        }
    }

    /// Tells the watchdog the run ended cleanly, and reaps it.
    fn close_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            if let Err(e) = w.finish() {
                // It is gone already: it can no longer kill anything of this run.
                self.note(
                    &format!("the watchdog could not be told the run ended ({e})"),
                    false,
                );
            }
            let pid = nix::unistd::Pid::from_raw(w.pid());
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }

    /// One row per instance, in launch order.
    fn summary_rows(&self) -> Vec<SummaryRow> {
        let restarts = self
            .g
            .file
            .processes
            .iter()
            .any(|p| p.restart != crate::spec::Restart::Never);
        self.core
            .order
            .iter()
            .map(|&k| {
                let i = &self.core.insts[k];
                let p = &self.g.file.processes[i.proc];
                SummaryRow {
                    process: i.name.clone(),
                    status: i.outcome().map_or("skipped", Outcome::as_str).to_string(),
                    exit: match i.last {
                        Some(End::Reaped { exit, .. }) => match exit {
                            Exit::Code(c) => c.to_string(),
                            Exit::Signal(s) => signal_name(s).to_string(),
                        },
                        Some(End::NotStarted { .. }) => "not run".to_string(),
                        None => String::new(),
                    },
                    attempts: i.attempts,
                    duration: i.first_start.zip(i.end).map(|(s, e)| e - s),
                    peak_rss: i.peak_rss,
                    queue: (!self.queues.is_empty()).then(|| self.queue_counts_of(k)),
                    restarts: restarts.then_some(i.restarts),
                    reason: i.why.clone().or_else(|| i.subtree_failure.clone()),
                    replica: (p.replicas.value > 1).then(|| (p.name.value.clone(), i.replica)),
                }
            })
            .collect()
    }

    /// Each queue's counts, as `queue` events and for the summary: the
    /// broker's, then those of queues that ran inside group units.
    fn queue_summaries(&mut self) -> Vec<QueueSummary> {
        let mut queues = Vec::new();
        for q in self.queues.ids() {
            let Some(live) = &self.queues[q] else {
                continue;
            };
            let c = live.broker.counts();
            let name = self.g.file.queues[q.index()].name.value.clone();
            let per_consumer: Vec<(String, u64)> = live
                .consumers
                .iter()
                .zip(&c.per_consumer)
                .map(|(&k, n)| (self.core.insts[k].name.clone(), *n))
                .collect();
            self.emit(RunEvent::Queue {
                queue: &name,
                messages_in: c.messages_in,
                messages_out: c.messages_out,
                lost: c.lost,
                requeued: c.requeued,
                per_consumer: &per_consumer,
            });
            queues.push(QueueSummary {
                name,
                messages_in: c.messages_in,
                messages_out: c.messages_out,
                lost: c.lost,
                requeued: c.requeued,
                per_consumer,
            });
        }
        // Queues that ran inside group units: their nested runs' counts.
        for q in self.exec.relayed_queues() {
            self.emit(RunEvent::Queue {
                queue: &q.name,
                messages_in: q.messages_in,
                messages_out: q.messages_out,
                lost: q.lost,
                requeued: q.requeued,
                per_consumer: &q.per_consumer,
            });
            queues.push(q);
        }
        // One whose group unit died before its nested run reported it (an
        // `scancel`, a node lost): said, not silently left out.
        for q in &self.g.file.queues {
            if queues.iter().any(|s| s.name == q.name.value) {
                continue;
            }
            let members: Vec<usize> = (q.from.value.iter().chain(q.to.value.iter()))
                .filter_map(|p| self.g.process_index(&p.value))
                .collect();
            let ran = self
                .core
                .insts
                .iter()
                .any(|i| i.relayed && i.attempts > 0 && members.contains(&i.proc.index()));
            if ran {
                let name = q.name.value.clone();
                self.note(
                    &format!("queue {name}: no counts: the group unit it ran in ended before its nested run reported them"),
                    true,
                );
            }
        }
        queues
    }

    pub(super) fn finish(mut self) -> RunOutcome {
        self.apply();
        if self.tty_holder.take().is_some() {
            hygiene::take_terminal_back();
        }
        self.report_output_errors();
        self.close_watchdog();
        let rows = self.summary_rows();
        // A process that never ran is not a success, even when nothing failed
        // (it waited for a readiness that never came); a daemon skipped because
        // its work ended first is.
        let failed = self.core.insts.iter().any(|i| {
            i.outcome().is_some_and(Outcome::is_failure)
                || (i.outcome() == Some(Outcome::Skipped)
                    && !self.g.file.processes[i.proc].daemon.value)
        });
        let interrupted = self.core.cancel.as_ref().and_then(Cancel::signal);
        let stalled = self.core.cancel == Some(Cancel::Stalled);
        let exit_code = match interrupted {
            // 128 + the signal: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
            Some(sig) => 128 + sig as u8,
            None if failed || self.output_failed || stalled => 1,
            None => 0,
        };
        let elapsed = self.started_at.elapsed();
        let queues = self.queue_summaries();
        // The engine's own peak, not that of the program that started it.
        let engine_rss =
            super::launch::engine_hwm_kib().unwrap_or_else(super::launch::rusage_peak_kib);
        self.emit(RunEvent::RunFinished {
            code: i32::from(exit_code),
            duration: elapsed,
            engine_peak_rss_kib: engine_rss,
        });
        let mut exit_code = exit_code;
        let (late, late_signal) = self.drain_output(interrupted.is_some());
        for e in &late {
            crate::report::writer::write_stderr(&format!("jobgraph: {e}\n"));
        }
        // A journal that failed is noted; the run's own result stands.
        self.close_journal();
        let interrupted = interrupted.or(late_signal);
        if let (None, Some(sig)) = (
            self.core.cancel.as_ref().and_then(Cancel::signal),
            late_signal,
        ) {
            exit_code = 128 + sig as u8;
        } else if !late.is_empty() && exit_code == 0 {
            exit_code = 1;
        }
        RunOutcome {
            exit_code,
            rows,
            queues,
            elapsed,
            interrupted: interrupted.map(signal_name),
        }
    }

    /// Closes the journal once the output is written: an instance recorded
    /// ok whose lines were not all written (its log file or the console
    /// failed: a full disk, a reader given up on) is recorded again as
    /// `output lost`, so that `--resume` runs it again rather than keep a
    /// result whose output is gone.
    fn close_journal(&mut self) {
        let Some(mut j) = self.journal.take() else {
            return;
        };
        let lost = self.reporter.lost();
        let mut result = Ok(());
        if lost.all || !lost.instances.is_empty() {
            for k in self.core.insts.ids() {
                let i = &self.core.insts[k];
                let hit = lost.all || lost.instances.contains(&k.index());
                if hit && i.outcome() == Some(Outcome::Ok) {
                    let key = self.keys.get(k).map_or("", String::as_str);
                    result = j.record(&i.name, "output lost", key);
                    if result.is_err() {
                        break;
                    }
                }
            }
        }
        if let Err(why) = result.and(j.close()) {
            crate::report::writer::write_stderr(&format!(
                "jobgraph: {why}; this run is not fully journaled\n"
            ));
        }
    }

    /// Writes everything queued for the console and the events, however long
    /// the reader takes. A signal now is the run's interruption (returned: its
    /// exit code stands); a second one (or one after an interrupted run's
    /// first, `interrupted`) gives a reader that does not read half a second
    /// more. Returns the write errors and that signal.
    fn drain_output(&mut self, interrupted: bool) -> (Vec<String>, Option<i32>) {
        let deadline = self
            .core
            .kill_now()
            .then(|| Instant::now() + Duration::from_millis(500));
        let signals = &mut self.signals;
        let mut seen = usize::from(interrupted);
        let mut late_signal: Option<i32> = None;
        let mut give_up: Option<Instant> = deadline;
        let late = self.reporter.finish(deadline, &mut || {
            for sig in signals.pending() {
                // SIGQUIT counts as two: it kills at once.
                let weight = match sig {
                    SIGINT | SIGTERM | SIGHUP => 1,
                    SIGQUIT => 2,
                    _ => continue,
                };
                seen += weight;
                late_signal.get_or_insert(sig);
                if seen >= 2 && give_up.is_none() {
                    give_up = Some(Instant::now() + Duration::from_millis(500));
                }
            }
            give_up.is_some_and(|t| Instant::now() >= t)
        });
        (late, late_signal)
    }
}
