//! Signals and cancels: queued signals sent with one `scancel` per kind, and
//! the end-of-run sweep that cancels whatever of the run Slurm still lists.

use super::*;

impl Slurm {
    /// Sends the queued signals: one `scancel` per kind, for all its targets.
    pub(super) fn flush_signals(&mut self) {
        if !self.pending_steps.is_empty() {
            self.resolve_steps();
        }
        let mut cancel = std::mem::take(&mut self.pending_cancel);
        if !cancel.is_empty() {
            cancel.sort();
            cancel.dedup();
            let mut args = vec!["--quiet".to_string()];
            args.extend(cancel);
            self.scancel(&args);
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort();
        pending.dedup();
        let mut i = 0;
        while i < pending.len() {
            let (sig, full) = (pending[i].0, pending[i].1);
            let mut args = vec!["--quiet".to_string(), format!("--signal={sig}")];
            if full {
                args.push("--full".into());
            }
            while i < pending.len() && pending[i].0 == sig && pending[i].1 == full {
                args.push(pending[i].2.clone());
                i += 1;
            }
            self.scancel(&args);
        }
    }

    pub(super) fn scancel(&self, args: &[String]) {
        if let Err(e) = command(&self.tools.scancel, args) {
            if !e.stderr().is_some_and(already_over) {
                eprintln!("jobgraph: slurm: {e}");
            }
        }
    }

    /// Cancels whatever of the run is still queued or running, and waits
    /// (a few seconds at most) until `squeue` lists none of it.
    pub(super) fn cancel_all(&mut self) {
        let list_args: Vec<String> = match &self.mode {
            Mode::Step { job } => steps_of(job),
            Mode::Batch => vec![
                "-h".into(),
                "-u".into(),
                self.uid.to_string(),
                "-o".into(),
                "%i %j".into(),
            ],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let guard = format!("{}guard", self.prefix);
        let mut first = true;
        loop {
            let Ok(text) = command(&self.tools.squeue, &list_args) else {
                return;
            };
            // The guardian step is cancelled, not waited for: without its srun,
            // Slurm takes about 2 s to complete it.
            let listed: Vec<(&str, &str)> = text
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .filter(|(_, name)| name.starts_with(&self.prefix) && (first || *name != guard))
                .collect();
            let only_guard = listed.iter().all(|(_, name)| *name == guard);
            let ids: Vec<String> = listed.iter().map(|(id, _)| id.to_string()).collect();
            first = false;
            if ids.is_empty() || Instant::now() >= deadline {
                if !ids.is_empty() {
                    eprintln!(
                        "jobgraph: slurm: still listed by squeue after cancelling: {}",
                        ids.join(" ")
                    );
                }
                return;
            }
            let mut args = vec![
                "--quiet".to_string(),
                "--signal=KILL".into(),
                "--full".into(),
            ];
            args.extend(ids.iter().cloned());
            self.scancel(&args);
            let mut args = vec!["--quiet".to_string()];
            args.extend(ids);
            self.scancel(&args);
            if only_guard {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
