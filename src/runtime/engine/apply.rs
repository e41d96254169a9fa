//! The shell's side of the core's [`Effect`]s: signals to units, events and
//! notes to the reporter, the journal and the queues of a finished instance.

use super::*;

impl Engine<'_> {
    /// Applies what the core decided, in order. Everything the shell tells
    /// goes through here first, so events keep the order of the decisions.
    pub(super) fn apply(&mut self) {
        while !self.core.fx.is_empty() {
            for fx in self.core.take_effects() {
                self.apply_one(fx);
            }
        }
    }

    fn apply_one(&mut self, fx: Effect) {
        let name = |e: &Engine, k: InstId| e.core.insts[k].name.clone();
        match fx {
            Effect::Skipped { k, reason } => {
                let process = name(self, k);
                self.reporter.event(&RunEvent::Skipped {
                    process: &process,
                    reason: &reason,
                });
            }
            Effect::Joined { k, status, reason } => {
                let process = name(self, k);
                self.reporter.event(&RunEvent::Joined {
                    process: &process,
                    status,
                    reason: reason.as_deref(),
                });
            }
            Effect::Stopped { k, reason } => {
                let process = name(self, k);
                self.reporter.event(&RunEvent::Stopped {
                    process: &process,
                    reason: &reason,
                });
            }
            Effect::Signal { k, sig } => self.signal_unit(k, sig),
            Effect::Stopping { k, signal } => {
                let (process, pid) = (name(self, k), self.core.insts[k].pid());
                self.reporter.event(&RunEvent::Stopping {
                    process: &process,
                    pid,
                    signal,
                });
            }
            Effect::Killed { k } => {
                let (process, pid) = (name(self, k), self.core.insts[k].pid());
                self.reporter.event(&RunEvent::Killed {
                    process: &process,
                    pid,
                });
            }
            Effect::Retrying { k, attempt } => {
                let process = name(self, k);
                self.reporter.event(&RunEvent::Retrying {
                    process: &process,
                    attempt,
                });
            }
            Effect::Restarting { k, attempt, delay } => {
                let process = name(self, k);
                self.reporter.event(&RunEvent::Restarting {
                    process: &process,
                    attempt,
                    delay,
                });
            }
            Effect::Note { text, failure } => self.reporter.note(&text, failure),
            Effect::Done { k, outcome } => self.instance_done(k, outcome),
        }
    }

    /// Instance `k` is done for good: the journal says so, its launch is
    /// freed, and the queues it produced for see its end.
    fn instance_done(&mut self, k: InstId, outcome: Outcome) {
        self.journal_record(k, outcome);
        self.launches[k] = None; // no further attempt: free its argv and environment
        for q in self.queues.ids() {
            let Some(live) = self.queues[q].as_mut() else {
                continue;
            };
            if let Some(i) = live.producers.iter().position(|&p| p == k) {
                live.broker.producer_done(i);
                self.pump(q);
            }
            // A consumer that ends in its restart back-off or retry delay (the
            // run stopped meanwhile) will not come back: what the queue kept
            // for it goes to the others, or is lost and counted.
            let Some(live) = self.queues[q].as_mut() else {
                continue;
            };
            if let Some(i) = live.consumers.iter().position(|&c| c == k) {
                if !live.broker.consumer_given_up(i) {
                    let mut closed = Vec::new();
                    live.broker.consumer_done(i, &mut closed);
                    self.pump(q);
                }
            }
        }
    }

    /// A line for the console, after what the core decided before it.
    pub(super) fn note(&mut self, text: &str, failure: bool) {
        self.apply();
        self.reporter.note(text, failure);
    }
}
