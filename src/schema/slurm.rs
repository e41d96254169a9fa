//! The schema of the Slurm keys: `[graph] executor`, `[slurm]` and a
//! process's `slurm` table (mirroring `crate::spec::slurm`).

#![allow(dead_code)] // fields are read by schemars, not by code

use super::{DurationText, PositiveDuration};
use schemars::JsonSchema;

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ExecutorKind {
    /// Processes of this machine.
    Local,
    /// Job steps (inside an allocation) or sbatch jobs of a Slurm cluster.
    Slurm,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum SlurmMode {
    /// Steps when SLURM_JOB_ID is set, else batch jobs.
    Auto,
    /// Job steps of the current allocation.
    Step,
    /// One sbatch job per unit.
    Batch,
}

/// A memory size as `sbatch --mem` takes it: "512M", "8G" (no letter: megabytes).
#[derive(JsonSchema)]
pub(super) struct SlurmMem(#[schemars(regex(pattern = r"^[0-9]+[KMGTkmgt]?$"))] String);

/// One whole srun/sbatch option, e.g. "--gres=gpu:1".
#[derive(JsonSchema)]
pub(super) struct SlurmOption(#[schemars(regex(pattern = r"^-."))] String);

/// A partition or account name.
#[derive(JsonSchema)]
pub(super) struct SlurmWord(#[schemars(regex(pattern = r"^\S+$"))] String);

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(super) struct SlurmTable {
    /// "auto" (default): steps inside an allocation, else batch jobs.
    mode: Option<SlurmMode>,
    /// Directory for run files, on a filesystem the nodes share; default ".jobgraph-slurm".
    dir: Option<String>,
    /// Units cancel themselves when the engine's heartbeat is older than this; default "10s".
    orphan_timeout: Option<DurationText>,
    /// Keep the run directory (wrapper, batch output, statuses); default false.
    keep: Option<bool>,
    /// CPUs per unit (--cpus-per-task).
    #[schemars(range(min = 1, max = 65536))]
    cpus: Option<u32>,
    /// Memory per unit (--mem).
    mem: Option<SlurmMem>,
    /// Slurm's time limit per unit (--time), a backstop behind `timeout`.
    time: Option<PositiveDuration>,
    /// --partition.
    partition: Option<SlurmWord>,
    /// --account.
    account: Option<SlurmWord>,
    /// More srun/sbatch options for every unit.
    extra: Option<Vec<SlurmOption>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(super) struct ProcessSlurmTable {
    /// CPUs per unit (--cpus-per-task).
    #[schemars(range(min = 1, max = 65536))]
    cpus: Option<u32>,
    /// Memory per unit (--mem).
    mem: Option<SlurmMem>,
    /// Slurm's time limit (--time), a backstop behind `timeout`.
    time: Option<PositiveDuration>,
    /// --partition.
    partition: Option<SlurmWord>,
    /// --account.
    account: Option<SlurmWord>,
    /// More srun/sbatch options, after [slurm]'s.
    extra: Option<Vec<SlurmOption>>,
}
