//! Scheduling: which pending instances may start, the join, skips, locks and slots.
//!
//! Event-driven: a change to a process marks the processes that wait for it
//! dirty; only those are re-examined. Instances whose dependencies hold wait
//! in `ready`, in launch order, for a slot and their locks.

use super::*;

/// Whether a dependency holds now, may still, or never can (and why not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dep {
    Holds,
    Waits,
    Never(String),
}

impl Dep {
    fn when(holds: bool) -> Dep {
        if holds {
            Dep::Holds
        } else {
            Dep::Waits
        }
    }
}

impl Sched<'_> {
    /// Works out what the latest changes mean: skips (all pending ones while
    /// the run stops), ready instances, joins, and the release of top-level
    /// daemons once the work is done. True if anything changed.
    pub(super) fn settle(&mut self) -> bool {
        let mut changed = false;
        if self.cancel.is_some() {
            changed |= self.skip_all_pending();
        }
        // Until both are empty: a join makes its dependents dirty, and they
        // must be ready before the next launch picks among the ready ones
        // (launch order is file order, not the order of readiness).
        loop {
            while let Some(proc) = self.dirty.pop() {
                self.is_dirty[proc] = false;
                self.examine(proc);
                changed = true;
            }
            let Some(k) = self.join_check.pop() else {
                break;
            };
            self.try_join(k);
            changed = true;
        }
        if self.unfinished_non_daemons == 0 && !self.daemons_released {
            self.daemons_released = true;
            self.release_top_level_daemons();
            changed = true;
        }
        changed
    }

    pub(super) fn mark_changed(&mut self, proc: ProcId) {
        for idx in 0..self.rdeps[proc].len() {
            let d = self.rdeps[proc][idx];
            if !self.is_dirty[d] {
                self.is_dirty[d] = true;
                self.dirty.push(d);
            }
        }
    }

    /// Re-examines the pending instances of one process: skip, ready, or keep waiting.
    pub(super) fn examine(&mut self, proc: ProcId) {
        // The same for every instance of the process: evaluated once.
        let state = self.deps_hold(proc);
        for idx in 0..self.of_proc[proc].len() {
            let k = self.of_proc[proc][idx];
            if !matches!(self.insts[k].phase, Phase::Pending) {
                continue;
            }
            match &state {
                Dep::Never(why) => {
                    self.ready.remove(&self.pos_of[k]);
                    self.skip(k, why);
                }
                Dep::Holds => {
                    self.ready.insert(self.pos_of[k]);
                }
                Dep::Waits => {
                    self.ready.remove(&self.pos_of[k]);
                }
            }
        }
    }

    /// Whether all dependencies of `proc` hold, may still, or never can.
    pub(super) fn deps_hold(&self, proc: ProcId) -> Dep {
        let mut all = Dep::Holds;
        let always = self.g.file.processes[proc].always.value;
        for d in &self.g.deps[proc] {
            // `always`: its after targets need only be finished, whatever their outcome.
            if always && matches!(d.kind, DepKind::After(_)) {
                if !self.of_proc[ProcId::of(d.target)]
                    .iter()
                    .all(|&t| self.insts[t].finished)
                {
                    all = Dep::Waits;
                }
                continue;
            }
            match self.dep_state(d.kind, ProcId::of(d.target)) {
                Dep::Never(why) => return Dep::Never(why),
                Dep::Waits => all = Dep::Waits,
                Dep::Holds => {}
            }
        }
        all
    }

    /// Whether one dependency holds, may still hold, or never can (with the reason).
    pub(super) fn dep_state(&self, kind: DepKind, target: ProcId) -> Dep {
        let tname = &self.g.file.processes[target].name.value;
        let targets = &self.of_proc[target];
        let t = |k: InstId| &self.insts[k];
        match kind {
            DepKind::After(Condition::Success) => {
                // Its own failure is known before the join: no need to wait for its children.
                if let Some(k) = targets.iter().find(|&&k| {
                    t(k).outcome()
                        .is_some_and(|o| !o.is_ok() && !self.clean_daemon_stop(k, o))
                }) {
                    let status = t(*k).outcome().map_or("", Outcome::as_str);
                    return Dep::Never(format!("`{tname}` did not succeed ({status})"));
                }
                if let Some(why) = targets.iter().find_map(|&k| t(k).subtree_failure.as_ref()) {
                    return Dep::Never(format!("`{tname}` did not succeed ({why})"));
                }
                Dep::when(targets.iter().all(|&k| t(k).finished))
            }
            DepKind::After(Condition::Exit) => {
                if targets
                    .iter()
                    .any(|&k| t(k).outcome() == Some(Outcome::Skipped))
                {
                    return Dep::Never(format!("`{tname}` was skipped"));
                }
                Dep::when(targets.iter().all(|&k| t(k).finished))
            }
            DepKind::After(Condition::Ready) => {
                // A cached instance was ready (and started) in the run it is
                // taken from: it counts as success for whatever waits for it.
                let ready = |k: InstId| t(k).ready_once || t(k).outcome() == Some(Outcome::Cached);
                if let Some(&k) = targets
                    .iter()
                    .find(|&&k| matches!(t(k).phase, Phase::Done(_)) && !ready(k))
                {
                    let why = if t(k).outcome() == Some(Outcome::Skipped) {
                        "was skipped"
                    } else {
                        "never became ready"
                    };
                    return Dep::Never(format!("`{tname}` {why}"));
                }
                Dep::when(targets.iter().all(|&k| ready(k)))
            }
            DepKind::After(Condition::Start) => {
                if targets
                    .iter()
                    .any(|&k| t(k).outcome() == Some(Outcome::Skipped))
                {
                    return Dep::Never(format!("`{tname}` was skipped"));
                }
                let started = |k: InstId| {
                    t(k).first_start.is_some() || t(k).outcome() == Some(Outcome::Cached)
                };
                if targets
                    .iter()
                    .any(|&k| matches!(t(k).phase, Phase::Done(_)) && !started(k))
                {
                    return Dep::Never(format!("`{tname}` never started"));
                }
                Dep::when(targets.iter().all(|&k| started(k)))
            }
            DepKind::Parent => {
                let Some(&k) = targets.first() else {
                    // A nested run of a group unit: the outer run started the parent.
                    if self.exact {
                        return Dep::Holds;
                    }
                    return Dep::Never(format!("parent `{tname}` is not part of this run"));
                };
                let p = t(k);
                if p.outcome() == Some(Outcome::Skipped) {
                    return Dep::Never(format!("parent `{tname}` was skipped"));
                }
                if p.finished {
                    return Dep::Never(format!("parent `{tname}` finished before it could start"));
                }
                if p.outcome().is_some_and(Outcome::is_failure) {
                    return Dep::Never(format!("parent `{tname}` failed"));
                }
                Dep::when(p.first_start.is_some())
            }
        }
    }

    /// A daemon stopped because its parent or the graph finished ended normally.
    pub(super) fn clean_daemon_stop(&self, k: InstId, o: Outcome) -> bool {
        o == Outcome::Stopped && self.insts[k].stopped_at_end
    }

    pub(super) fn skip(&mut self, k: InstId, reason: &str) {
        if !self.skip_one(k, reason) {
            return;
        }
        // A stream group launches whole or not at all; every other member
        // names `k`, the one that could not start.
        let peers = self.group_peers(k);
        if !peers.is_empty() {
            let why = format!("`{}` in its stream group was skipped", self.insts[k].name);
            for j in peers {
                self.ready.remove(&self.pos_of[j]);
                self.skip_one(j, &why);
            }
        }
    }

    /// Skips `k` alone; false if it was no longer pending.
    fn skip_one(&mut self, k: InstId, reason: &str) -> bool {
        if !matches!(self.insts[k].phase, Phase::Pending) {
            return false;
        }
        self.insts[k].why = Some(reason.to_string());
        self.set_done(k, Outcome::Skipped);
        self.set_finished(k);
        self.fx.push(Effect::Skipped {
            k,
            reason: reason.to_string(),
        });
        true
    }

    /// Skips every pending instance: the run is stopping. `always` steps
    /// still run, unless everything is being killed.
    pub(super) fn skip_all_pending(&mut self) -> bool {
        let why = self.cause();
        // After a signal, an `always` step that could not start within the grace never will.
        let kill = self.kill_now() || self.shutdown_deadline.is_some_and(|t| Instant::now() >= t);
        let pending: Vec<InstId> = self
            .insts
            .ids()
            .filter(|&k| {
                matches!(self.insts[k].phase, Phase::Pending) && (kill || !self.is_always(k))
            })
            .collect();
        for &k in &pending {
            self.ready.remove(&self.pos_of[k]);
            self.skip(k, &why);
        }
        !pending.is_empty()
    }

    /// An `always` step (a `finally`): runs even while the run stops.
    pub(super) fn is_always(&self, k: InstId) -> bool {
        self.g.file.processes[self.insts[k].proc].always.value
    }

    /// The instance's own process is done for good.
    pub(super) fn set_done(&mut self, k: InstId, outcome: Outcome) {
        let i = &mut self.insts[k];
        i.phase = Phase::Done(outcome);
        i.end = Some(Instant::now());
        self.active.remove(&k);
        self.done_count += 1;
        if outcome.is_failure() {
            self.failed_count += 1;
        }
        self.join_check.push(k);
        self.mark_changed(self.insts[k].proc);
        self.fx.push(Effect::Done { k, outcome });
    }

    /// Joined: own process done and non-daemon children finished.
    pub(super) fn set_finished(&mut self, k: InstId) {
        if std::mem::replace(&mut self.insts[k].finished, true) {
            return;
        }
        self.unfinished -= 1;
        let proc = self.insts[k].proc;
        let p = &self.g.file.processes[proc];
        if !p.daemon.value {
            self.unfinished_non_daemons -= 1;
        }
        if let Some(parent) = p
            .parent
            .as_ref()
            .and_then(|n| self.g.process_index(&n.value))
        {
            self.join_check
                .extend(self.of_proc[ProcId::of(parent)].iter().copied());
        }
        self.mark_changed(proc);
    }

    /// Joins: a process is finished when its own process is done and its
    /// non-daemon children are finished; then its daemon children are stopped.
    pub(super) fn try_join(&mut self, k: InstId) {
        let i = &self.insts[k];
        if i.finished || !matches!(i.phase, Phase::Done(_)) {
            return;
        }
        let proc = i.proc;
        let children = &self.g.children[proc];
        let non_daemon = |c: &usize| !self.g.file.processes[*c].daemon.value;
        if !children.iter().filter(|c| non_daemon(c)).all(|&c| {
            self.of_proc[ProcId::of(c)]
                .iter()
                .all(|&ck| self.insts[ck].finished)
        }) {
            return;
        }
        // "success" is the whole subtree's: a non-daemon descendant that did not succeed fails it.
        // Named is the cause: a child's own failure before what it failed in its
        // subtree, and a failure before a consequence of one (skipped, stopped).
        let failure = children
            .iter()
            .filter(|c| non_daemon(c))
            .flat_map(|&c| self.of_proc[ProcId::of(c)].iter().copied())
            .filter_map(|ck| {
                let c = &self.insts[ck];
                match (c.outcome(), &c.subtree_failure) {
                    (Some(o), _) if !o.is_ok() && !self.clean_daemon_stop(ck, o) => {
                        let consequence = matches!(o, Outcome::Skipped | Outcome::Stopped);
                        Some((consequence, format!("child `{}` {}", c.name, o.as_str())))
                    }
                    (_, Some(why)) => Some((c.subtree_consequence, why.clone())),
                    _ => None,
                }
            })
            .min_by_key(|(consequence, _)| *consequence);
        let (consequence, failure) = match failure {
            Some((c, why)) => (c, Some(why)),
            None => (false, None),
        };
        let has_children = !children.is_empty();
        self.insts[k].subtree_failure = failure;
        self.insts[k].subtree_consequence = consequence;
        self.set_finished(k);
        if has_children {
            let i = &self.insts[k];
            let status = match (&i.subtree_failure, i.outcome()) {
                (Some(_), _) => "failed",
                (None, Some(o)) => o.as_str(),
                (None, None) => "ok",
            };
            // Its own failure is its reason: its subtree's is only what followed.
            let reason = match i.outcome() {
                Some(o) if !o.is_ok() => None,
                _ => i.subtree_failure.clone(),
            };
            self.fx.push(Effect::Joined { k, status, reason });
        }
        for ci in 0..self.g.children[proc].len() {
            let c = self.g.children[proc][ci];
            if self.g.file.processes[c].daemon.value {
                for ck in self.of_proc[ProcId::of(c)].clone() {
                    match self.insts[ck].phase {
                        Phase::Pending => self.skip(ck, "its parent finished first"),
                        _ => {
                            let why = format!("daemon: parent `{}` finished", self.insts[k].name);
                            self.request_stop(ck, StopReason::DaemonEnd, why);
                        }
                    }
                }
            }
        }
    }

    /// Top-level daemons stop once every non-daemon process finished.
    pub(super) fn release_top_level_daemons(&mut self) {
        for k in self.insts.ids() {
            let p = &self.g.file.processes[self.insts[k].proc];
            if !(p.daemon.value && p.parent.is_none()) {
                continue;
            }
            match self.insts[k].phase {
                Phase::Pending => {
                    self.ready.remove(&self.pos_of[k]);
                    self.skip(k, "every non-daemon process finished first");
                }
                _ => self.request_stop(
                    k,
                    StopReason::DaemonEnd,
                    "daemon: every non-daemon process finished".into(),
                ),
            }
        }
    }

    /// The next launch among the ready instances at or after `cur`'s
    /// position, in launch order; `None` when there is none for now. Skips
    /// met on the way are made (and `cur.changed` says so); past `slice_end`
    /// it stops with `cur.slice_over`. The caller launches what it returns
    /// (or puts it back) before asking again: slots and locks count then.
    pub(super) fn next_start(&mut self, cur: &mut Cursor, slice_end: Instant) -> Option<Start> {
        loop {
            if self.kill_now() {
                return None;
            }
            let &pos = self.ready.range(cur.from..).next()?;
            cur.from = pos + 1;
            let k = self.order[pos];
            // While the run stops, only `always` steps still start.
            if self.cancel.is_some() && !self.is_always(k) {
                continue;
            }
            if Instant::now() >= slice_end {
                cur.slice_over = true;
                return None;
            }
            // Daemons do not count toward `max_parallel`: a service must not starve the work.
            if self.slots_used >= self.max_parallel && self.needs_slot(k) {
                if !self.any_daemon {
                    return None;
                }
                continue;
            }
            if !matches!(self.insts[k].phase, Phase::Pending | Phase::Retrying) {
                self.ready.remove(&pos);
                continue;
            }
            let group = self.g.group_of[self.insts[k].proc];
            if !self.g.groups[group].edges.is_empty() {
                if matches!(self.insts[k].phase, Phase::Retrying) {
                    if self.locks_free(k) {
                        self.ready.remove(&pos);
                        return Some(Start::Rejoin(k));
                    }
                } else if let Some(members) = self.group_ready(group) {
                    for &m in &members {
                        self.ready.remove(&self.pos_of[m]);
                    }
                    return Some(Start::Group(group, members));
                }
                continue;
            }
            if !self.locks_free(k) {
                continue;
            }
            self.ready.remove(&pos);
            if matches!(self.insts[k].phase, Phase::Pending) {
                // A parent may have finished while this waited for a slot.
                match self.deps_hold(self.insts[k].proc) {
                    Dep::Never(why) => {
                        self.skip(k, &why);
                        cur.changed = true;
                        continue;
                    }
                    Dep::Waits => continue,
                    Dep::Holds => {}
                }
            }
            return Some(Start::One(k));
        }
    }

    /// A stream group's member instances, once every one is ready and the
    /// whole group fits in `max_parallel` and the locks.
    fn group_ready(&self, group: usize) -> Option<Vec<InstId>> {
        let members: Vec<InstId> = self.g.groups[group]
            .members
            .iter()
            .flat_map(|&m| self.of_proc[ProcId::of(m)].iter().copied())
            .collect();
        if members.iter().any(|&m| {
            !matches!(self.insts[m].phase, Phase::Pending) || !self.ready.contains(&self.pos_of[m])
        }) {
            return None;
        }
        let slots = members.iter().filter(|&&m| self.needs_slot(m)).count();
        if self.slots_used + slots > self.max_parallel {
            return None;
        }
        let mut demand: FxHashMap<usize, u32> = FxHashMap::default();
        for &m in &members {
            for &l in &self.g.locks[self.insts[m].proc] {
                *demand.entry(l).or_default() += 1;
            }
        }
        if demand.iter().any(|(&l, &n)| self.lock_free[l] < n) {
            return None;
        }
        Some(members)
    }

    /// Members of `k`'s stream group other than `k` (instances), if it has edges.
    pub(super) fn group_peers(&self, k: InstId) -> Vec<InstId> {
        let group = self.g.group_of[self.insts[k].proc];
        if self.g.groups[group].edges.is_empty() {
            return Vec::new();
        }
        self.g.groups[group]
            .members
            .iter()
            .flat_map(|&m| self.of_proc[ProcId::of(m)].iter().copied())
            .filter(|&j| j != k)
            .collect()
    }

    /// Whether instance `k` takes a `max_parallel` slot while it runs.
    pub(super) fn needs_slot(&self, k: InstId) -> bool {
        !self.g.file.processes[self.insts[k].proc].daemon.value
    }

    pub(super) fn locks_free(&self, k: InstId) -> bool {
        self.g.locks[self.insts[k].proc]
            .iter()
            .all(|&l| self.lock_free[l] > 0)
    }

    pub(super) fn take_locks(&mut self, k: InstId, take: bool) {
        for &l in &self.g.locks[self.insts[k].proc] {
            if take {
                self.lock_free[l] -= 1;
            } else {
                self.lock_free[l] += 1;
            }
        }
    }
}
