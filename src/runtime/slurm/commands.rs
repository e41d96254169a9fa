//! Slurm's commands: finding them, running them, and the run's guardian step.

use super::*;

/// Slurm's commands, resolved once on the engine's PATH.
#[derive(Debug)]
pub(super) struct Tools {
    pub(super) srun: PathBuf,
    pub(super) sbatch: PathBuf,
    pub(super) squeue: PathBuf,
    pub(super) scancel: PathBuf,
}

pub(super) fn find_tool(name: &str) -> Result<PathBuf, SlurmError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| SlurmError::ToolMissing(name.to_string()))
}

/// Runs a Slurm command and returns its stdout, or an error naming the
/// command and quoting its stderr.
pub(super) fn command(prog: &Path, args: &[String]) -> Result<String, SlurmError> {
    let shown = || {
        let name = prog.file_name().map_or_else(
            || prog.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut s = name;
        for a in args.iter().take(8) {
            s.push(' ');
            s.push_str(a);
        }
        if args.len() > 8 {
            s.push_str(" …");
        }
        s
    };
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SlurmError::Spawn {
            command: shown(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SlurmError::Failed {
            command: shown(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Scancel's complaints about units that are already over.
pub(super) fn already_over(stderr: &str) -> bool {
    stderr.lines().all(|l| {
        l.trim().is_empty()
            || l.contains("already completing or completed")
            || l.contains("Invalid job id")
            || l.contains("Job/step already")
            || l.contains("does not exist")
    })
}

pub(super) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let x = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:08x}", (x ^ (x >> 29)) as u32)
}

/// A Slurm job name for an instance: `name`, or `name.r` for `name[r]`.
pub(super) fn job_part(instance: &str) -> String {
    instance.replace('[', ".").replace(']', "")
}

/// Starts the run's guardian step and, once it runs, lets go of its srun:
/// the step lives on in Slurm, outside the engine's process tree, so that
/// the engine's death cannot take it along. srun and its shepherd (the child
/// that cancels the step when srun alone dies) are killed together, as the
/// kernel kills them when the engine's PID namespace ends.
pub(super) fn start_guardian(
    srun: &Path,
    job: &str,
    prefix: &str,
    guard: &Path,
    heartbeat: &Path,
    stale_secs: u64,
) -> Result<(), SlurmError> {
    let ready = guard.with_file_name("guard.ready");
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(srun)
        .process_group(0)
        .args([
            format!("--jobid={job}"),
            "--ntasks=1".into(),
            "--overlap".into(),
            "--quiet".into(),
            format!("--job-name={prefix}guard"),
            "/bin/sh".into(),
            guard.display().to_string(),
            heartbeat.display().to_string(),
            stale_secs.to_string(),
            prefix.to_string(),
            ready.display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SlurmError::GuardianSpawn)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready.exists() {
            // The step runs: srun is no longer needed (and must not be the engine's).
            // SAFETY: signalling the process group srun leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(SlurmError::GuardianEnded {
                job: job.to_string(),
                status,
                stderr: err.trim().to_string(),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SlurmError::GuardianTimeout {
                job: job.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `squeue` arguments listing the steps of allocation `job` as `ID NAME` lines.
pub(super) fn steps_of(job: &str) -> Vec<String> {
    ["-h", "-s", "-j", job, "-o", "%i %j"]
        .map(str::to_string)
        .to_vec()
}
