//! Timers, as the loop serves them: the core's (timeouts, grace, retries,
//! drains) and the shell's own (watchdog, cluster polls, resource waits).

use super::*;

impl Engine<'_> {
    /// When the loop must wake next, whatever happens meanwhile.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.watchdog.as_ref().and_then(Watchdog::due) {
            consider(t);
        }
        if let Some(t) = self.exec.poll_due() {
            consider(t);
        }
        if let Some(t) = self.resource_wait.filter(|t| *t > Instant::now()) {
            consider(t);
        }
        if let Some(t) = self.core.next_deadline() {
            consider(t);
        }
        next
    }

    pub(super) fn on_deadlines(&mut self, now: Instant) {
        let active: Vec<InstId> = self.core.active.iter().copied().collect();
        for &k in &active {
            match self.core.insts[k].phase {
                Phase::RetryWait { .. } => self.core.retry_timer(k, now),
                Phase::Running(_) => {
                    self.core.running_timers(k, now);
                    self.readiness_timed_out(k, now);
                }
                Phase::Draining { since, .. } if now >= self.core.drain_until(since) => {
                    // A leftover process still holds the output open: stop
                    // waiting for EOF, but go on reading what it writes.
                    self.detach_pipes_of(k);
                    if matches!(self.core.insts[k].phase, Phase::Draining { .. }) {
                        self.attempt_end(k);
                    }
                }
                _ => {}
            }
        }
        // Probes go last, within a slice: starting a few hundred `cmd` probes
        // takes long enough to make the timers behind them late. Those not
        // started are still due, and the loop comes back at once.
        self.probes_pending = false;
        for k in active {
            if !matches!(self.core.insts[k].phase, Phase::Running(_)) {
                continue;
            }
            if Instant::now() >= later(now, LAUNCH_SLICE) {
                self.probes_pending = true;
                break;
            }
            self.probe_if_due(k, now);
        }
    }
}
