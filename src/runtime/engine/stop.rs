//! Stopping: shutdown, stop requests in reverse dependency order, and the
//! instances' timers (timeouts, grace, retry delays, drain).

use super::*;

impl Sched<'_> {
    pub(super) fn begin_shutdown(&mut self) {
        // After a signal, `always` steps get `shutdown_grace` to do their work.
        if self.cancel.as_ref().and_then(Cancel::signal).is_some()
            && self.shutdown_deadline.is_none()
        {
            self.shutdown_deadline = Some(later(Instant::now(), self.grace));
        }
        let kill = self.kill_now();
        for k in self.insts.ids() {
            match self.insts[k].phase {
                Phase::Running(_) | Phase::Draining { .. } if self.is_always(k) && !kill => {}
                Phase::Running(_) | Phase::Draining { .. } => {
                    let why = format!("shutdown: {}", self.cause());
                    self.request_stop(k, StopReason::Shutdown, why)
                }
                Phase::RetryWait { .. } | Phase::Retrying => {
                    self.ready.remove(&self.pos_of[k]);
                    let why = self.cause();
                    self.stop_waiting(k, &why);
                }
                _ => {}
            }
        }
    }

    /// Ends an instance that waits for a retry or restart: that attempt will
    /// not happen, and its last event says so.
    pub(super) fn stop_waiting(&mut self, k: InstId, reason: &str) {
        self.insts[k].restart_pending = false;
        self.insts[k].why = Some(reason.to_string());
        self.set_done(k, Outcome::Stopped);
        self.fx.push(Effect::Stopped {
            k,
            reason: reason.to_string(),
        });
    }

    /// Asks a running (or waiting) instance to stop; `why` is what the summary says.
    pub(super) fn request_stop(&mut self, k: InstId, reason: StopReason, why: String) {
        // A daemon reader of queues first reads what they hold: a stop at
        // its normal end must not drop messages the work wrote.
        let drain = (reason == StopReason::DaemonEnd && self.reads_queue(k))
            .then(|| later(Instant::now(), self.grace));
        let i = &mut self.insts[k];
        match &mut i.phase {
            Phase::Running(a) if a.stop.is_none() => {
                a.stop = Some(Stop::new(reason));
                i.why = Some(why);
                i.drain_until = drain;
                self.stop_pending.push(k);
            }
            Phase::RetryWait { .. } | Phase::Retrying => {
                i.stopped_at_end = reason == StopReason::DaemonEnd;
                self.ready.remove(&self.pos_of[k]);
                self.stop_waiting(k, &why);
            }
            _ => {}
        }
    }

    /// Whether instance `k` reads a queue.
    fn reads_queue(&self, k: InstId) -> bool {
        self.g.endpoints[self.insts[k].proc].iter().any(|e| {
            e.kind == crate::graph::EdgeKind::Queue && e.direction == crate::graph::Direction::In
        })
    }

    /// Sends stop signals in reverse dependency order (the shell reaps first:
    /// a process that already exited is reported with its own status): an instance is signalled
    /// only once nothing still running that depends on it is being stopped.
    pub(super) fn send_stops(&mut self) {
        let now = Instant::now();
        let pending = std::mem::take(&mut self.stop_pending);
        for k in pending {
            let i = &self.insts[k];
            let Some(stop) = i
                .running()
                .and_then(|a| a.stop)
                .filter(|s| s.signalled.is_none())
            else {
                continue;
            };
            if !matches!(
                stop.reason,
                StopReason::Timeout | StopReason::NotReady | StopReason::Unhealthy
            ) && self.has_running_dependent(k)
            {
                self.stop_pending.push(k);
                continue;
            }
            let i = &self.insts[k];
            if i.drain_until.is_some_and(|t| now < t) && !self.kill_now() {
                self.stop_pending.push(k);
                continue;
            }
            let proc = i.proc;
            let sig = self.g.file.processes[proc].stop_signal;
            self.fx.push(Effect::Signal { k, sig: sig.number });
            // A stopped (SIGSTOP / SIGTTIN) process would not act on the signal: resume it.
            self.fx.push(Effect::Signal {
                k,
                sig: libc::SIGCONT,
            });
            if let Some(a) = self.insts[k].running_mut() {
                a.stop = Some(Stop {
                    reason: stop.reason,
                    signalled: Some(Signalled {
                        at: now,
                        next_kill: later(now, self.grace),
                    }),
                });
            }
            self.fx.push(Effect::Stopping {
                k,
                signal: sig.name,
            });
        }
    }

    pub(super) fn has_running_dependent(&self, k: InstId) -> bool {
        let target = self.insts[k].proc;
        self.active.iter().any(|&j| {
            let other = &self.insts[j];
            j != k
                && other.attempt().is_some_and(|a| a.stop.is_some())
                && other.proc != target
                && self.g.deps[other.proc]
                    .iter()
                    .any(|d| ProcId::of(d.target) == target)
        })
    }

    /// A running attempt's timers: the shutdown grace, its
    /// `timeout`, and SIGKILL while it outlives its stop signal.
    pub(super) fn running_timers(&mut self, k: InstId, now: Instant) {
        if self.shutdown_deadline.is_some_and(|t| now >= t)
            && self.insts[k].running().is_some_and(|a| a.stop.is_none())
        {
            let why = format!("shutdown: {}, after shutdown_grace", self.cause());
            self.request_stop(k, StopReason::Shutdown, why);
        }
        let limit = self.time_limit(&self.insts[k]);
        if let Some(a) = self.insts[k].running_mut() {
            if let (Some(start), Some(limit), None) = (a.start, limit, a.stop) {
                if now >= later(start, limit) {
                    a.stop = Some(Stop::new(StopReason::Timeout));
                    self.stop_pending.push(k);
                }
            }
        }
        let i = &self.insts[k];
        let Some(s) = i.running().and_then(|a| a.stop).and_then(|s| s.signalled) else {
            return;
        };
        if now >= s.next_kill || self.kill_now() {
            self.fx.push(Effect::Signal {
                k,
                sig: libc::SIGKILL,
            });
            if let Some(Stop {
                signalled: Some(sig),
                ..
            }) = self.insts[k].running_mut().and_then(|a| a.stop.as_mut())
            {
                sig.next_kill = now + KILL_RECHECK;
            }
            self.fx.push(Effect::Killed { k });
        }
    }

    /// An attempt's `timeout`, enforced here unless its nested run does.
    pub(super) fn time_limit(&self, i: &Inst) -> Option<Duration> {
        self.g.file.processes[i.proc].timeout.filter(|_| !i.relayed)
    }

    /// The next moment an instance's timer fires (a timeout, SIGKILL after
    /// the grace, a probe, a drain, a retry), or the shutdown grace ends.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        // Once past, it has fired (see on_deadlines): never a busy loop.
        if let Some(t) = self.shutdown_deadline.filter(|t| *t > Instant::now()) {
            consider(t);
        }
        for i in self.active.iter().map(|&k| &self.insts[k]) {
            match &i.phase {
                Phase::Running(a) => {
                    if let (Some(start), Some(limit), None) = (a.start, self.time_limit(i), a.stop)
                    {
                        consider(later(start, limit));
                    }
                    if let Some(s) = a.stop.and_then(|s| s.signalled) {
                        consider(s.next_kill);
                    }
                    if let (Some(s), Some(t)) = (a.stop, i.drain_until) {
                        if s.signalled.is_none() && t > Instant::now() {
                            consider(t);
                        }
                    }
                    for c in &a.probing.checks {
                        if let Some(t) = c.due {
                            consider(t);
                        }
                    }
                    if let (Some(r), false, false) = (
                        &self.g.file.processes[i.proc].ready,
                        a.probing.ready,
                        i.relayed,
                    ) {
                        if let Some(start) = a.start {
                            consider(later(start, r.timeout));
                        }
                    }
                }
                Phase::Draining { since, .. } => consider(self.drain_until(*since)),
                Phase::RetryWait { until } => consider(*until),
                _ => {}
            }
        }
        next
    }

    /// `k`'s retry delay passed at `now`: it may start again.
    pub(super) fn retry_timer(&mut self, k: InstId, now: Instant) {
        if let Phase::RetryWait { until } = self.insts[k].phase {
            if now >= until {
                self.insts[k].phase = Phase::Retrying;
                self.ready.insert(self.pos_of[k]);
            }
        }
    }

    /// `k`'s readiness deadline passed: the attempt fails and is stopped.
    pub(super) fn not_ready_in_time(&mut self, k: InstId) {
        if let Some(a) = self.insts[k].running_mut() {
            a.probing.not_ready = true;
            a.stop = Some(Stop::new(StopReason::NotReady));
            self.stop_pending.push(k);
        }
    }

    /// One more failed health check of `k` (`what`); at `limit` in a row
    /// the attempt fails and is stopped. True if it was.
    pub(super) fn health_check_failed(&mut self, k: InstId, limit: u32, what: &str) -> bool {
        let i = &mut self.insts[k];
        let Some(a) = i.running_mut() else {
            return false;
        };
        let state = &mut a.probing.checks[probes::Check::Health as usize];
        state.failures += 1;
        if state.failures < limit {
            return false;
        }
        a.probing.unhealthy = true;
        a.stop = Some(Stop::new(StopReason::Unhealthy));
        i.why = Some(format!(
            "health check failed {limit} times in a row ({what})"
        ));
        self.stop_pending.push(k);
        true
    }

    /// `k`'s readiness probe passed: its dependents on `ready` may start.
    /// Returns how long it took, or `None` if too late (the attempt failed
    /// readiness or is being stopped) or ready already.
    pub(super) fn became_ready(&mut self, k: InstId) -> Option<Duration> {
        let i = &mut self.insts[k];
        let a = i
            .running_mut()
            .filter(|a| !a.probing.ready && !a.probing.not_ready && a.stop.is_none())?;
        a.probing.ready = true;
        let took = a.start.map(|t| t.elapsed()).unwrap_or_default();
        i.ready_once = true;
        let proc = i.proc;
        self.mark_changed(proc);
        Some(took)
    }

    /// The user's Ctrl-C (Ctrl-\\) reached instance `k`, which held the
    /// terminal, and it died of it: the run's interruption stopped it, as if
    /// the engine had sent the signal, so it is `stopped`, not `failed`.
    pub(super) fn stopped_by_user(&mut self, k: InstId, now: Instant) {
        let why = format!("shutdown: {}", self.cause());
        let grace = self.grace;
        let i = &mut self.insts[k];
        let Some(a) = i.running_mut() else {
            return;
        };
        a.stop = Some(Stop {
            reason: StopReason::Shutdown,
            signalled: Some(Signalled {
                at: now,
                next_kill: later(now, grace),
            }),
        });
        i.why.get_or_insert(why);
        self.stop_pending.retain(|&p| p != k);
    }

    /// Everything is killed at once (a second signal, a loop failure): each
    /// live unit is sent SIGKILL, and sent it again while it outlives it.
    pub(super) fn kill_running(&mut self, now: Instant) {
        let live: Vec<InstId> = self
            .active
            .iter()
            .copied()
            .filter(|&k| self.insts[k].is_running())
            .collect();
        let why = format!("shutdown: {}", self.cause());
        for k in live {
            let i = &mut self.insts[k];
            let Some(a) = i.running_mut() else {
                continue;
            };
            let reason = a.stop.map_or(StopReason::Shutdown, |s| s.reason);
            a.stop = Some(Stop {
                reason,
                signalled: Some(Signalled {
                    at: a.stop.and_then(|s| s.signalled).map_or(now, |s| s.at),
                    next_kill: now + KILL_RECHECK,
                }),
            });
            if i.why.is_none() {
                i.why = Some(why.clone());
            }
            self.fx.push(Effect::Signal {
                k,
                sig: libc::SIGKILL,
            });
            self.fx.push(Effect::Killed { k });
        }
    }

    /// Until when an attempt reaped at `since` waits for its output pipes'
    /// end-of-file: 500 ms, none once everything is being killed (the second
    /// signal must end the run within a second, even with a stalled reader).
    pub(super) fn drain_until(&self, since: Instant) -> Instant {
        if self.kill_now() {
            since
        } else {
            since + DRAIN_TIMEOUT
        }
    }
}
