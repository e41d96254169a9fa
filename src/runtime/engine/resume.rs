//! `--resume` and the journal: what the last run finished is not run again,
//! if it is unchanged and nothing it needs runs again.

use super::*;
use crate::runtime::journal::{self, Journal, LastRun};

impl Engine<'_> {
    /// Fingerprints every instance, reads the last run (for `--resume`),
    /// opens this run's journal, and marks the instances that need not run.
    /// A journal problem is reported and the run goes on without it.
    pub(super) fn start_journal(&mut self, path: &Path, resume: bool, run_id: &str) {
        self.keys = fingerprints(&self.core, self.g, &self.base);
        let last = if resume {
            match journal::last_run(path, &self.g.name) {
                Ok(last) => Some(last),
                Err(why) => {
                    self.note(
                        &format!("{why}; ignoring it, so everything runs (this run's records start it afresh)"),
                        true,
                    );
                    None
                }
            }
        } else {
            None
        };
        let cached = last
            .map(|last| cached_set(&self.core, self.g, &self.keys, &last))
            .unwrap_or_default();
        let records: Vec<(&str, &str)> = cached
            .iter()
            .map(|&k| (self.core.insts[k].name.as_str(), self.keys[k].as_str()))
            .collect();
        match Journal::open(path, &self.g.name, run_id, &records) {
            Ok(j) => self.journal = Some(j),
            Err(why) => self.note(&format!("{why}; this run will not be resumable"), true),
        }
        for k in cached {
            self.core.cached(k);
            let name = self.core.insts[k].name.clone();
            self.emit(RunEvent::Cached { process: &name });
        }
    }

    /// Records an instance's final status in the journal (fsync'd).
    pub(super) fn journal_record(&mut self, k: InstId, outcome: Outcome) {
        // Cached ones went in with the run's header.
        let Some(j) = self.journal.as_mut().filter(|_| outcome != Outcome::Cached) else {
            return;
        };
        let key = self.keys.get(k).map_or("", String::as_str);
        if let Err(why) = j.record(&self.core.insts[k].name, outcome.as_str(), key) {
            self.note(
                &format!("{why}; the rest of this run is not journaled"),
                true,
            );
        }
    }
}

/// Every instance's fingerprint (see [`fingerprint`]).
pub(super) fn fingerprints(core: &Sched, g: &Graph, base: &Path) -> PerInst<String> {
    core.insts.map(|k, _| fingerprint(core, g, base, k))
}

/// The resolved definition that decides whether a cached result still
/// holds: argv (or shell), cwd, the environment the job file gives (not
/// the engine's own environment, which changes between shells), and the
/// instance's item and replica count.
pub(super) fn fingerprint(core: &Sched, g: &Graph, base: &Path, k: InstId) -> String {
    let i = &core.insts[k];
    let launch = spawn::launch(g, i.proc.index(), i.replica, base, &[]);
    let mut parts: Vec<String> = launch.argv.clone();
    parts.push(format!("\u{1}cwd={}", launch.cwd.display()));
    let mut env: Vec<String> = launch
        .env
        .iter()
        .filter(|(key, _)| {
            // The run's own (JOBGRAPH_RUN, JOBGRAPH_ENGINE_PID) change every
            // run; what says which instance this is does not, and a job
            // reads it: a new item or replica count is a new definition.
            let key = key.to_string_lossy();
            !key.starts_with("JOBGRAPH_")
                || matches!(
                    &*key,
                    "JOBGRAPH_ITEM" | "JOBGRAPH_REPLICA" | "JOBGRAPH_REPLICAS"
                )
        })
        .map(|(key, v)| format!("{}={}", key.to_string_lossy(), v.to_string_lossy()))
        .collect();
    env.sort();
    parts.extend(env);
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    journal::fingerprint(&refs)
}

/// The instances to take from the cache: each ended ok last time with the same
/// definition, is not a daemon, an `always` step or a stream-group
/// member, and nothing it needs (after targets, parent) nor any
/// non-daemon child of it will run again. Computed to a fixed point.
pub(super) fn cached_set(
    core: &Sched,
    g: &Graph,
    keys: &PerInst<String>,
    last: &LastRun,
) -> Vec<InstId> {
    let mut cached: PerInst<bool> = core.insts.map(|k, i| {
        let p = &g.file.processes[i.proc];
        last.ok_with(&i.name, &keys[k])
            && !p.daemon.value
            && !p.always.value
            && !core.in_stream_group(i.proc)
    });
    let all = |cached: &PerInst<bool>, procs: Vec<usize>| {
        procs
            .into_iter()
            .all(|t| core.of_proc[ProcId::of(t)].iter().all(|&j| cached[j]))
    };
    loop {
        let mut changed = false;
        for k in core.insts.ids() {
            if !cached[k] {
                continue;
            }
            let proc = core.insts[k].proc;
            let needs: Vec<usize> = g.deps[proc].iter().map(|d| d.target).collect();
            let kids: Vec<usize> = g.children[proc]
                .iter()
                .copied()
                .filter(|&c| !g.file.processes[c].daemon.value)
                .collect();
            if !all(&cached, needs) || !all(&cached, kids) {
                cached[k] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    core.insts.ids().filter(|&k| cached[k]).collect()
}

/// What `run --resume` would take from the cache, by instance name, in
/// launch order: for `run --dry-run --resume`. Reads the journal at `path`
/// (a missing one means nothing is cached).
pub fn resume_preview(
    g: &Graph,
    base: &Path,
    opts: &RunOptions,
    path: &Path,
) -> Result<Vec<String>, String> {
    let core = Sched::new(g, opts).map_err(|e| e.to_string())?;
    let last = journal::last_run(path, &g.name).map_err(|e| e.to_string())?;
    let keys = fingerprints(&core, g, base);
    let mut cached = cached_set(&core, g, &keys, &last);
    cached.sort_by_key(|&k| core.pos_of[k]);
    Ok(cached
        .into_iter()
        .map(|k| core.insts[k].name.clone())
        .collect())
}
