//! What an attempt's end means: its outcome, then a retry, a restart, or
//! the instance's end (pipefail in its stream group, fail-fast for the run).

use super::*;

/// How a shell reports a command of its that SIGPIPE killed: 128 + 13.
const SHELL_SIGPIPE: i32 = 128 + libc::SIGPIPE;

impl Sched<'_> {
    /// What the attempt's end means for the instance.
    pub(super) fn attempt_result(&self, k: InstId) -> Outcome {
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
            // The same through a shell, which reports a command it ran that
            // died of SIGPIPE as exit code 128 + 13 (`shell = "yes"`).
            (_, _, Some(Exit::Code(SHELL_SIGPIPE))) if self.in_stream_group(proc) => Outcome::Ok,
            _ => Outcome::Failed,
        }
    }

    pub(super) fn in_stream_group(&self, proc: ProcId) -> bool {
        !self.g.groups[self.g.group_of[proc]].edges.is_empty()
    }

    /// Retry first (a failure within `retries`), then `restart` for exits the
    /// engine did not ask for; neither while the run is cancelled, nor for a
    /// stream-group member with a pipe edge (its other end is gone for good).
    /// `drained`: every queue `k` consumes gave it end-of-file.
    pub(super) fn next_attempt(&self, k: InstId, result: Outcome, drained: bool) -> Option<Again> {
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
        let drained = !result.is_failure() && drained;
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

    pub(super) fn schedule_restart(&mut self, k: InstId, result: Outcome) {
        let p = &self.g.file.processes[self.insts[k].proc];
        let (n, max) = (self.insts[k].restarts, p.max_restarts);
        let delay = restart_delay(n);
        let (name, attempt) = (self.insts[k].name.clone(), self.insts[k].attempts);
        let what = self.attempt_words(k, result);
        let when = crate::spec::format_duration(delay);
        self.note(
            format!("{name} {what}; restart {} of {max} in {when}", n + 1),
            result.is_failure(),
        );
        self.fx.push(Effect::Restarting {
            k,
            attempt: attempt + 1,
            delay,
        });
        self.insts[k].restart_pending = true;
        self.wait_for_next_attempt(k, delay);
    }

    pub(super) fn schedule_retry(&mut self, k: InstId, result: Outcome) {
        let p = &self.g.file.processes[self.insts[k].proc];
        let (delay, retries) = (p.retry_delay, p.retries);
        let (name, attempt) = (self.insts[k].name.clone(), self.insts[k].attempts);
        let what = self.attempt_words(k, result);
        let when = crate::spec::format_duration(delay);
        self.note(
            format!("{name} {what}; retry {attempt} of {retries} in {when}"),
            false,
        );
        self.fx.push(Effect::Retrying {
            k,
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
    pub(super) fn end_instance(&mut self, k: InstId, result: Outcome) {
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
        self.note(format!("{name} {what}"), true);
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

    /// True when every stream edge of the process is a queue: a restart can
    /// then reattach it (a pipe's other end is gone for good).
    pub(super) fn only_queue_edges(&self, proc: ProcId) -> bool {
        self.g.endpoints[proc]
            .iter()
            .all(|e| e.kind == crate::graph::EdgeKind::Queue)
    }

    /// After attempt `k` was reported: the next attempt, or the end.
    pub(super) fn after_attempt(&mut self, k: InstId, result: Outcome, again: Option<Again>) {
        match again {
            Some(Again::Restart) => self.schedule_restart(k, result),
            Some(Again::Retry) => self.schedule_retry(k, result),
            None => self.end_instance(k, result),
        }
    }
}

/// What comes after an attempt that did not end the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Again {
    Retry,
    Restart,
}

/// An exit as (code, signal name).
pub(super) fn exit_parts(exit: Option<Exit>) -> (Option<i32>, Option<&'static str>) {
    match exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(signal_name(s))),
        None => (None, None),
    }
}
