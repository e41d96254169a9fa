//! Step mode: each unit an `srun` job step of the allocation.

use super::*;

/// What a step runs: its command, then, once the command ended, the kill of
/// whatever it left in the step's process group (which the wrapper leads).
/// Such a process keeps the group even once re-parented to init, where
/// Slurm's process tracking (proctrack/linuxproc follows parents) no longer
/// finds it: without this it would outlive the step, the run and the
/// allocation. Stop signals reach every process of the step: the wrapper
/// ignores them and reports the command's status (128 + N for a death by
/// signal N, as srun does).
const STEP_WRAPPER: [&str; 4] = [
    "/bin/sh",
    "-c",
    r#"exec 9<&0
"$@" <&9 9<&- &
c=$!
exec 9<&- </dev/null
trap '' TERM INT HUP QUIT USR1 USR2
wait "$c"; rc=$?
if [ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ]; then
  for p in $(ps -eo pid=,pgid= | awk -v g=$$ '$2 == g && $1 != g { print $1 }'); do
    kill -KILL "$p" 2>/dev/null
  done
fi
exit "$rc""#,
    "jobgraph-step",
];

impl Slurm {
    pub(super) fn spawn_step(
        &mut self,
        job: &str,
        unit_args: Vec<String>,
        job_name: &str,
        overlap: bool,
        prepared: &Prepared,
        fds: &[(i32, Source)],
    ) -> io::Result<(UnitId, Kind)> {
        let srun = self.tools.srun.display().to_string();
        let mut argv = vec![
            srun.clone(),
            format!("--jobid={job}"),
            "--ntasks=1".into(),
            "--exact".into(),
            "--quiet".into(),
            format!("--job-name={job_name}"),
        ];
        // The members of a stream group must run at once (a pipeline blocks
        // otherwise), and daemons take no slot: they may share CPUs.
        if overlap {
            argv.push("--overlap".into());
        }
        argv.extend(unit_args);
        argv.extend(STEP_WRAPPER.iter().map(|a| a.to_string()));
        argv.push(prepared.program());
        argv.extend(prepared.args().into_iter().skip(1));
        let wrapped = prepared.wrapped(&srun, &argv)?;
        let pid = self.local.spawn(&wrapped, fds)?;
        Ok((
            pid,
            Kind::Step {
                since: Instant::now(),
                listed: false,
            },
        ))
    }

    /// Step mode: one `squeue -s` for the ids and nodes of the steps that
    /// have run a while and are not yet reported.
    pub(super) fn poll_steps(&mut self, now: Instant) {
        let Mode::Step { job } = &self.mode else {
            return;
        };
        let due = self.units.values().any(|u| {
            matches!(u.kind, Kind::Step { since, listed: false } if now.duration_since(since) >= STEP_LOOKUP_AFTER)
        });
        if !due || now < self.next_step_poll {
            return;
        }
        self.next_step_poll = now + POLL_EVERY;
        self.squeue_calls += 1;
        let args = ["-h", "-s", "-j", job.as_str(), "-o", "%i %j %N"].map(str::to_string);
        let text = match command(&self.tools.squeue, &args) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("jobgraph: slurm: {e} (retrying)");
                return;
            }
        };
        let steps: FxHashMap<&str, (&str, Option<&str>)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (step, name) = (w.next()?, w.next()?);
                Some((name, (step, w.next().filter(|n| *n != "(null)"))))
            })
            .collect();
        let job = job.clone();
        for (&id, u) in &mut self.units {
            let Kind::Step { listed, .. } = &mut u.kind else {
                continue;
            };
            if let (false, Some((step, node))) = (*listed, steps.get(u.job_name.as_str())) {
                *listed = true;
                self.placements.push_back(Placement {
                    id,
                    running: true,
                    job_id: job.clone(),
                    step_id: Some((*step).to_string()),
                    node: node.map(str::to_string),
                });
            }
        }
    }

    /// Finds the steps of the queued step signals with one `squeue` call and
    /// queues their `scancel`; a unit without a step yet (srun still waiting
    /// for CPUs) has its srun signalled instead, which withdraws the request.
    pub(super) fn resolve_steps(&mut self) {
        let wanted = std::mem::take(&mut self.pending_steps);
        let Mode::Step { job } = &self.mode else {
            return;
        };
        let listed = command(&self.tools.squeue, &steps_of(job));
        let steps: FxHashMap<String, String> = match &listed {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .map(|(id, name)| (name.to_string(), id.to_string()))
                .collect(),
            Err(e) => {
                eprintln!("jobgraph: slurm: {e}");
                FxHashMap::default()
            }
        };
        for (sig, pid, name) in wanted {
            match steps.get(&name) {
                Some(step) => self.pending.push((sig, false, step.clone())),
                None => {
                    self.local.signal_group(pid, sig);
                }
            }
        }
    }
}
