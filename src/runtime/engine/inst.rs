//! An instance's state: the phase of its life, the attempt it runs (only
//! while it runs one), and how its latest attempt ended.
//!
//! What belongs to one attempt lives in [`Attempt`], inside the phases that
//! have one: a new attempt is a new `Attempt`, so nothing of the last one
//! (its stop, its probes, its open pipes) can leak into it, and nothing reads
//! a unit or a start time where no attempt runs.

use super::probes::{Check, CheckState};
use super::{Exit, Outcome, PeakRss, ProcId, Stop, StopReason, UnitId, Verdict};
use std::time::Instant;

/// Where an instance is in its life.
#[derive(Debug)]
pub(super) enum Phase {
    /// Not started yet.
    Pending,
    /// Its unit is alive (or, on a cluster, queued).
    Running(Attempt),
    /// Its unit was reaped; its output pipes are still open.
    Draining { since: Instant, attempt: Attempt },
    /// Waiting out `retry_delay`.
    RetryWait { until: Instant },
    /// Retry delay over; waiting for a slot and its locks.
    Retrying,
    /// Its own process is done for good (or it was skipped), so.
    Done(Outcome),
}

/// One attempt of an instance, from its spawn until it is over (its unit
/// reaped and its output drained). Built whole when its unit was spawned.
#[derive(Debug)]
pub(super) struct Attempt {
    /// Its unit (the executor's id: a pid and process group here).
    pub(super) unit: UnitId,
    /// When it started running; `None` while a cluster holds its unit queued
    /// (its time limits count from when it runs).
    pub(super) start: Option<Instant>,
    /// Asked to stop (and whether its signal went out).
    pub(super) stop: Option<Stop>,
    /// Its readiness and health.
    pub(super) probing: Probing,
    /// Its output pipes not at end-of-file yet.
    pub(super) open_pipes: u8,
}

/// An attempt's readiness and health, as its probes found them.
#[derive(Debug, Default)]
pub(super) struct Probing {
    /// Ready in this attempt.
    pub(super) ready: bool,
    /// The readiness and health checks' own state.
    pub(super) checks: [CheckState; 2],
    /// Its health check failed `failures` times in a row: the attempt failed.
    pub(super) unhealthy: bool,
    /// The readiness deadline passed: the attempt fails.
    pub(super) not_ready: bool,
}

/// How an instance's latest attempt ended. Kept on the instance, not in the
/// attempt: the summary shows it once the instance is done, and the `Exited`
/// event of an attempt that never started has no attempt to read it from.
#[derive(Debug, Clone, Copy)]
pub(super) enum End {
    /// Its unit was reaped (its output may still be draining).
    Reaped {
        /// The unit, still named as `pid` (and probed) after it is gone.
        unit: UnitId,
        /// How it ended.
        exit: Exit,
        /// How the nested run that ran it judged it (a member of a group unit).
        verdict: Option<Verdict>,
    },
    /// It could not be started; it was tried at `tried`.
    NotStarted { tried: Instant },
}

/// One instance of a process (a replica).
pub(super) struct Inst {
    pub(super) proc: ProcId,
    pub(super) replica: u32,
    pub(super) name: String,
    /// Where it is in its life; while it runs an attempt, that attempt.
    pub(super) phase: Phase,
    pub(super) attempts: u32,
    pub(super) first_start: Option<Instant>,
    pub(super) end: Option<Instant>,
    /// How its latest attempt ended; `None` before the first ended, and from
    /// the start of each new one.
    pub(super) last: Option<End>,
    /// The peak over all its attempts.
    pub(super) peak_rss: Option<PeakRss>,
    /// The engine's own peak RSS (KiB) when its latest attempt was reaped:
    /// the most the child's peak can owe to the engine's memory.
    pub(super) spawn_rss_kib: u64,
    pub(super) finished: bool,
    /// Restarts made under `restart`.
    pub(super) restarts: u32,
    /// A daemon stopped because its parent or the graph finished: a normal end.
    pub(super) stopped_at_end: bool,
    /// A daemon that reads a queue, asked to stop at its normal end: it
    /// gets until then to read what its queues still hold (then the stop
    /// signal goes, drained or not); each message it takes moves the
    /// moment `shutdown_grace` on.
    pub(super) drain_until: Option<Instant>,
    /// Messages it had read from its queues when last looked at.
    pub(super) drain_seen: u64,
    /// Every queue it reads has given it all and end-of-file (the shell's
    /// news, for the stop above).
    pub(super) inputs_drained: bool,
    /// The scheduled next attempt is a restart (counted when it really starts).
    pub(super) restart_pending: bool,
    /// Once finished (joined): why its subtree did not succeed, if it did not.
    pub(super) subtree_failure: Option<String>,
    /// That failure is a consequence (a descendant skipped or stopped), not a cause.
    pub(super) subtree_consequence: bool,
    /// Why it did not end `ok` (skipped, stopped, failed), for the summary.
    pub(super) why: Option<String>,
    /// Run inside a group unit: its nested run applies its timeouts, probes
    /// and retries, and says how it ended.
    pub(super) relayed: bool,
    /// Ready in some attempt: an `after = "ready"` dependent may have started,
    /// so a later attempt never takes it back.
    pub(super) ready_once: bool,
    /// A probe found another program on its port: said once per instance,
    /// not once per attempt.
    pub(super) foreign_listener_noted: bool,
    /// The attempt whose listener was found to be its own: later probes of
    /// that attempt trust the connect (the check walks `/proc`).
    pub(super) listener_owned_in: Option<u32>,
    /// The attempt, and when, whose listener was found to be another
    /// program's: trusted for a second (the scan grows with the host's sockets).
    pub(super) listener_foreign_at: Option<(u32, std::time::Instant)>,
}

impl Inst {
    pub(super) fn new(proc: ProcId, replica: u32, name: String) -> Inst {
        Inst {
            proc,
            replica,
            name,
            phase: Phase::Pending,
            attempts: 0,
            first_start: None,
            end: None,
            last: None,
            peak_rss: None,
            spawn_rss_kib: 0,
            finished: false,
            restarts: 0,
            stopped_at_end: false,
            drain_until: None,
            drain_seen: 0,
            inputs_drained: false,
            restart_pending: false,
            subtree_failure: None,
            subtree_consequence: false,
            why: None,
            relayed: false,
            ready_once: false,
            foreign_listener_noted: false,
            listener_owned_in: None,
            listener_foreign_at: None,
        }
    }

    /// Its live attempt: its unit runs, or its output drains.
    pub(super) fn attempt(&self) -> Option<&Attempt> {
        match &self.phase {
            Phase::Running(a) | Phase::Draining { attempt: a, .. } => Some(a),
            _ => None,
        }
    }

    pub(super) fn attempt_mut(&mut self) -> Option<&mut Attempt> {
        match &mut self.phase {
            Phase::Running(a) | Phase::Draining { attempt: a, .. } => Some(a),
            _ => None,
        }
    }

    /// Its attempt whose unit is alive (not reaped yet).
    pub(super) fn running(&self) -> Option<&Attempt> {
        match &self.phase {
            Phase::Running(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn running_mut(&mut self) -> Option<&mut Attempt> {
        match &mut self.phase {
            Phase::Running(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// One check's state in its live attempt (none when no attempt runs:
    /// then there is nothing to probe).
    pub(super) fn check(&self, check: Check) -> Option<&CheckState> {
        self.attempt().map(|a| &a.probing.checks[check as usize])
    }

    pub(super) fn check_mut(&mut self, check: Check) -> Option<&mut CheckState> {
        self.attempt_mut()
            .map(|a| &mut a.probing.checks[check as usize])
    }

    /// Its unit was reaped with output pipes still open: the attempt moves on
    /// to drain them, from `since`.
    pub(super) fn drain(&mut self, since: Instant) {
        // `Pending` only holds the place while the attempt moves over.
        self.phase = match std::mem::replace(&mut self.phase, Phase::Pending) {
            Phase::Running(attempt) => Phase::Draining { since, attempt },
            other => other,
        };
    }

    /// Its latest unit: the live attempt's, else the one last reaped (a
    /// probe's answer may come after it).
    pub(super) fn unit(&self) -> Option<UnitId> {
        match (self.attempt(), self.last) {
            (Some(a), _) => Some(a.unit),
            (None, Some(End::Reaped { unit, .. })) => Some(unit),
            _ => None,
        }
    }

    /// Its unit's id as events show it (0 before its first start).
    pub(super) fn pid(&self) -> i32 {
        self.unit().map_or(0, UnitId::get)
    }

    /// How its latest attempt's unit exited, if it was reaped.
    pub(super) fn exit(&self) -> Option<Exit> {
        match self.last {
            Some(End::Reaped { exit, .. }) => Some(exit),
            _ => None,
        }
    }

    /// How the nested run judged its latest attempt (a member of a group unit).
    pub(super) fn verdict(&self) -> Option<Verdict> {
        match self.last {
            Some(End::Reaped { verdict, .. }) => verdict,
            _ => None,
        }
    }

    /// Its live attempt's readiness deadline passed: the attempt fails.
    pub(super) fn not_ready(&self) -> bool {
        self.attempt().is_some_and(|a| a.probing.not_ready)
    }

    /// Its live attempt failed its health check too often: the attempt fails.
    pub(super) fn unhealthy(&self) -> bool {
        self.attempt().is_some_and(|a| a.probing.unhealthy)
    }

    /// How its own process ended for good, once it did.
    pub(super) fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Why its live attempt is being stopped.
    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        self.attempt().and_then(|a| a.stop).map(|s| s.reason)
    }
}
