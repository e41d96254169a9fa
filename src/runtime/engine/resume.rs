//! `--resume` and the journal: what the last run finished is not run again,
//! if it is unchanged and nothing it needs runs again.

use super::*;
use crate::runtime::journal::{self, Journal, LastRun};

impl Engine<'_> {
    /// Fingerprints every instance, reads the last run (for `--resume`),
    /// opens this run's journal, and marks the instances that need not run.
    /// A journal problem is reported and the run goes on without it.
    pub(super) fn start_journal(&mut self, path: &Path, resume: bool, run_id: &str) {
        self.keys = self.core.insts.map(|k, _| self.fingerprint(k));
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
        let cached = last.map(|last| self.cached_set(&last)).unwrap_or_default();
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

    /// The resolved definition that decides whether a cached result still
    /// holds: argv (or shell), cwd, the environment the job file gives (not
    /// the engine's own environment, which changes between shells), and the
    /// instance's item and replica count.
    fn fingerprint(&self, k: InstId) -> String {
        let i = &self.core.insts[k];
        let launch = spawn::launch(self.g, i.proc.index(), i.replica, &self.base, &[]);
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
    fn cached_set(&self, last: &LastRun) -> Vec<InstId> {
        let mut cached: PerInst<bool> = self.core.insts.map(|k, i| {
            let p = &self.g.file.processes[i.proc];
            last.ok_with(&i.name, &self.keys[k])
                && !p.daemon.value
                && !p.always.value
                && !self.core.in_stream_group(i.proc)
        });
        let all = |cached: &PerInst<bool>, procs: Vec<usize>| {
            procs
                .into_iter()
                .all(|t| self.core.of_proc[ProcId::of(t)].iter().all(|&j| cached[j]))
        };
        loop {
            let mut changed = false;
            for k in self.core.insts.ids() {
                if !cached[k] {
                    continue;
                }
                let proc = self.core.insts[k].proc;
                let needs: Vec<usize> = self.g.deps[proc].iter().map(|d| d.target).collect();
                let kids: Vec<usize> = self.g.children[proc]
                    .iter()
                    .copied()
                    .filter(|&c| !self.g.file.processes[c].daemon.value)
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
        self.core.insts.ids().filter(|&k| cached[k]).collect()
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
