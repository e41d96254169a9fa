//! What can go wrong talking to Slurm, as values: the engine reports them
//! (their `Display` is the message a user sees) and decides on their kind,
//! never on their text.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// An error of the Slurm executor.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// `[slurm] mode` or `JOBGRAPH_SLURM_MODE` is not a mode.
    #[error("{whence}={value}: expected `auto`, `step` or `batch`")]
    BadMode {
        /// Where the mode was set.
        whence: &'static str,
        /// What it was set to.
        value: String,
    },
    /// Step mode was asked for outside an allocation.
    #[error("{whence} is step, which needs an allocation (SLURM_JOB_ID is not set: run under salloc or sbatch)")]
    StepWithoutAllocation {
        /// Where the mode was set.
        whence: &'static str,
    },
    /// `JOBGRAPH_SLURM_STALE` is not a number of seconds above one.
    #[error("JOBGRAPH_SLURM_STALE={0}: expected seconds (> 1)")]
    BadStale(String),
    /// `JOBGRAPH_SLURM_KEEP` is not a yes or a no.
    #[error("JOBGRAPH_SLURM_KEEP={0}: expected 1 or 0 (true/false, yes/no)")]
    BadKeep(String),
    /// `JOBGRAPH_SLURM_PARTITION` is not one name.
    #[error("JOBGRAPH_SLURM_PARTITION={0:?}: a partition is one name, without spaces (`sinfo -s` lists them)")]
    BadPartition(String),
    /// A `JOBGRAPH_SLURM_ARGS` word the file's `extra` would refuse.
    #[error("JOBGRAPH_SLURM_ARGS: `{arg}` {why}")]
    BadArg {
        /// The word.
        arg: String,
        /// Why it is refused, and what to do.
        why: String,
    },
    /// One of Slurm's commands is not on PATH.
    #[error("--executor slurm: `{0}` is not on PATH (is this a Slurm login or compute node?)")]
    ToolMissing(String),
    /// A Slurm command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line, shortened.
        command: String,
        /// Why it did not start.
        source: io::Error,
    },
    /// A Slurm command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line, shortened.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it said, trimmed.
        stderr: String,
    },
    /// `sbatch --parsable` printed something other than a job id.
    #[error("`sbatch --parsable` printed `{0}`, not a job id")]
    NoJobId(String),
    /// `squeue` could not tell the state of the allocation.
    #[error("--executor slurm: cannot check the allocation {job}: {source}")]
    CheckAllocation {
        /// The allocation's job id.
        job: String,
        /// Why not.
        source: Box<SlurmError>,
    },
    /// The allocation the engine runs in is not running.
    #[error("--executor slurm: the allocation SLURM_JOB_ID={job} is not running (squeue says `{state}`)")]
    NotRunning {
        /// The allocation's job id.
        job: String,
        /// The state `squeue` gave.
        state: String,
    },
    /// `squeue` failed: no Slurm to talk to.
    #[error("--executor slurm: Slurm does not answer: {0}")]
    NoAnswer(Box<SlurmError>),
    /// The run directory is relative and there is no current directory.
    #[error("--executor slurm: no current directory: {0}")]
    NoCwd(io::Error),
    /// The run directory could not be created.
    #[error("--executor slurm: cannot create {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why not.
        source: io::Error,
    },
    /// A file of the run directory could not be written.
    #[error("--executor slurm: cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why not.
        source: io::Error,
    },
    /// `srun` for the run's guardian step could not be started.
    #[error("--executor slurm: cannot run `srun` for the guardian step: {0}")]
    GuardianSpawn(io::Error),
    /// The guardian step ended before it ran.
    #[error("--executor slurm: `srun --jobid={job} … guard.sh` (the run's guardian step) ended ({status}): {stderr}")]
    GuardianEnded {
        /// The allocation's job id.
        job: String,
        /// How srun ended.
        status: ExitStatus,
        /// What srun said, trimmed.
        stderr: String,
    },
    /// The guardian step did not start in time.
    #[error("--executor slurm: `srun --jobid={job} … guard.sh` (the run's guardian step) did not start within 30 s")]
    GuardianTimeout {
        /// The allocation's job id.
        job: String,
    },
}

impl SlurmError {
    /// What the failed command said on stderr, if this is a failed command.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            SlurmError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

impl From<SlurmError> for io::Error {
    fn from(e: SlurmError) -> io::Error {
        io::Error::other(e)
    }
}
