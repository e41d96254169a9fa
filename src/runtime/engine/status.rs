//! Why a run waits: what each pending instance waits for, the status table
//! printed on SIGUSR1, and the stall check that ends a run which can never
//! make progress.

use super::{Engine, InstId, Phase, ProcId};
use crate::graph::DepKind;
use crate::runtime::report::fmt_duration;
use crate::spec::Condition;
use std::time::Instant;

/// Rows of each kind printed at most, so a 100,000-replica run stays readable.
const MAX_ROWS: usize = 40;

impl Engine<'_> {
    /// What a pending (or joining) instance waits for, in words.
    pub(super) fn waits_for(&self, k: InstId) -> String {
        let i = &self.core.insts[k];
        match i.phase {
            Phase::RetryWait { until } => {
                let left = until.saturating_duration_since(Instant::now());
                let what = if i.restart_pending {
                    "its restart"
                } else {
                    "its retry"
                };
                return format!("{what} in {}", fmt_duration(left));
            }
            Phase::Retrying => return self.waits_for_launch(k),
            Phase::Done(_) if !i.finished => {
                let kids: Vec<&str> = self.g.children[i.proc]
                    .iter()
                    .filter(|&&c| !self.g.file.processes[c].daemon.value)
                    .flat_map(|&c| self.core.of_proc[ProcId::of(c)].iter())
                    .filter(|&&ck| !self.core.insts[ck].finished)
                    .map(|&ck| self.core.insts[ck].name.as_str())
                    .collect();
                return format!("its children to finish: {}", list(&kids));
            }
            Phase::Pending => {}
            _ => return String::new(),
        }
        let mut waits = Vec::new();
        for d in &self.g.deps[i.proc] {
            let waiting = if self.g.file.processes[i.proc].always.value
                && matches!(d.kind, DepKind::After(_))
            {
                !self.core.of_proc[ProcId::of(d.target)]
                    .iter()
                    .all(|&t| self.core.insts[t].finished)
            } else {
                self.core.dep_state(d.kind, ProcId::of(d.target)) == super::schedule::Dep::Waits
            };
            if !waiting {
                continue;
            }
            let t = &self.g.file.processes[d.target].name.value;
            let always = self.g.file.processes[i.proc].always.value;
            waits.push(match d.kind {
                DepKind::After(_) if always => format!("`{t}` to finish"),
                DepKind::After(Condition::Success) => format!("`{t}` to succeed"),
                DepKind::After(Condition::Exit) => format!("`{t}` to exit"),
                DepKind::After(Condition::Ready) => format!("`{t}` to be ready"),
                DepKind::After(Condition::Start) => format!("`{t}` to start"),
                DepKind::Parent => format!("its parent `{t}` to start"),
            });
        }
        if !waits.is_empty() {
            return waits.join(", ");
        }
        self.waits_for_launch(k)
    }

    /// Dependencies hold: what keeps it from launching now.
    fn waits_for_launch(&self, k: InstId) -> String {
        let proc = self.core.insts[k].proc;
        let group = self.g.group_of[proc];
        if !self.g.groups[group].edges.is_empty()
            && matches!(self.core.insts[k].phase, Phase::Pending)
        {
            let behind: Vec<&str> = self.g.groups[group]
                .members
                .iter()
                .flat_map(|&m| self.core.of_proc[ProcId::of(m)].iter())
                .filter(|&&j| j != k && !self.core.ready.contains(&self.core.pos_of[j]))
                .map(|&j| self.core.insts[j].name.as_str())
                .collect();
            if !behind.is_empty() {
                return format!("its stream group: {}", list(&behind));
            }
        }
        let busy: Vec<&str> = self.g.locks[proc]
            .iter()
            .filter(|&&l| self.core.lock_free[l] == 0)
            .map(|&l| self.g.file.locks[l].name.value.as_str())
            .collect();
        if !busy.is_empty() {
            return format!("lock {}", list(&busy));
        }
        if self.core.needs_slot(k) && self.core.slots_used >= self.core.max_parallel {
            return format!("a free slot (max_parallel {})", self.core.max_parallel);
        }
        "its turn to launch".into()
    }

    /// The status table (SIGUSR1): running instances with pid and run time,
    /// then what each pending one waits for.
    pub(super) fn status_table(&self) -> String {
        let now = Instant::now();
        let w = self
            .core
            .order
            .iter()
            .map(|&k| self.core.insts[k].name.chars().count())
            .max()
            .unwrap_or(0)
            .min(32);
        let mut running = Vec::new();
        let mut waiting = Vec::new();
        for &k in &self.core.order {
            let i = &self.core.insts[k];
            match &i.phase {
                Phase::Running(a) | Phase::Draining { attempt: a, .. } => {
                    let took = a
                        .start
                        .map(|s| now.saturating_duration_since(s))
                        .unwrap_or_default();
                    let mut row = format!(
                        "  running  {}  pid {:<7}  {}",
                        crate::report::padded(&i.name, w),
                        i.pid(),
                        fmt_duration(took)
                    );
                    if a.start.is_none() {
                        row.push_str("  (queued on the cluster)");
                    }
                    if i.relayed {
                        // Its id is the executor's, not a pid of this machine.
                        row.push_str("  (in a group unit: its nested run probes and times it)");
                    }
                    if let Some(sig) = a.stop.and_then(|s| s.signalled) {
                        let since = now.saturating_duration_since(sig.at);
                        row.push_str(&format!("  (stopping for {})", fmt_duration(since)));
                    } else if self.g.file.processes[i.proc].ready.is_some() {
                        row.push_str(if a.probing.ready {
                            "  ready"
                        } else {
                            "  not ready yet"
                        });
                    }
                    running.push(row);
                }
                Phase::Pending | Phase::RetryWait { .. } | Phase::Retrying => {
                    waiting.push(format!(
                        "  waiting  {}  for {}",
                        crate::report::padded(&i.name, w),
                        self.waits_for(k)
                    ));
                }
                Phase::Done(_) if !i.finished => {
                    waiting.push(format!(
                        "  joining  {}  for {}",
                        crate::report::padded(&i.name, w),
                        self.waits_for(k)
                    ));
                }
                Phase::Done(_) => {}
            }
        }
        let mut out = format!(
            "status after {}: {} running, {} waiting, {} done\n",
            fmt_duration(now.saturating_duration_since(self.started_at)),
            running.len(),
            waiting.len(),
            self.core.done_count
        );
        for rows in [running, waiting] {
            for r in rows.iter().take(MAX_ROWS) {
                out.push_str(r);
                out.push('\n');
            }
            if rows.len() > MAX_ROWS {
                out.push_str(&format!("  … and {} more\n", rows.len() - MAX_ROWS));
            }
        }
        out
    }

    /// Nothing runs, nothing waits for a timer, nothing can start, and yet
    /// instances are unfinished: no event can ever change that. The run ends
    /// at once, naming what each pending instance waits for.
    /// Says whether it stalled the run (the loop then settles again at once:
    /// daemons still running are released).
    pub(super) fn check_stall(&mut self) -> bool {
        // A launch put back for lack of descriptors is tried again when its
        // wait ends (then it starts, or fails as a start failure).
        if self.launch_more || !self.probe_pids.is_empty() || self.resource_wait.is_some() {
            return false;
        }
        let Some(stuck) = self.core.stuck() else {
            return false;
        };
        // Every reason first: skipping one changes what the others wait for.
        let reasons: Vec<String> = stuck.iter().map(|&k| self.waits_for(k)).collect();
        let mut text = String::from("nothing can run any more, yet some processes wait:");
        for (&k, why) in stuck.iter().zip(&reasons).take(MAX_ROWS) {
            text.push_str(&format!("\n  {} waits for {why}", self.core.insts[k].name));
        }
        if stuck.len() > MAX_ROWS {
            text.push_str(&format!("\n  … and {} more", stuck.len() - MAX_ROWS));
        }
        self.note(&text, true);
        let stalled = !stuck.is_empty();
        self.core.stall(stuck.into_iter().zip(reasons));
        stalled
    }
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}
