//! The Slurm keys of the job file: `[graph] executor`, the `[slurm]` table
//! and a process's `slurm` table (see docs/slurm.md).

use super::Sp;
use std::time::Duration;

/// `[graph] executor`: where units run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Processes of this machine.
    #[default]
    Local,
    /// Job steps or batch jobs of a Slurm cluster.
    Slurm,
}

/// `[slurm] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlurmMode {
    /// Steps inside an allocation (`SLURM_JOB_ID` set), else batch jobs.
    #[default]
    Auto,
    /// Job steps of the current allocation.
    Step,
    /// One `sbatch` job per unit.
    Batch,
}

/// What a unit asks of Slurm: the `[slurm]` table's defaults, or a process's
/// `slurm` table (which overrides them key by key and adds to `extra`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmResources {
    /// `cpus`: `--cpus-per-task`.
    pub cpus: Option<Sp<u32>>,
    /// `mem`: `--mem`, as Slurm writes it (`512M`, `8G`).
    pub mem: Option<Sp<String>>,
    /// `time`: `--time`, Slurm's own limit (a backstop: `timeout` is the engine's).
    pub time: Option<Sp<Duration>>,
    /// `partition`: `--partition`.
    pub partition: Option<Sp<String>>,
    /// `account`: `--account`.
    pub account: Option<Sp<String>>,
    /// `extra`: more `srun` / `sbatch` options, each one whole (`--gres=gpu:1`).
    pub extra: Vec<Sp<String>>,
}

impl SlurmResources {
    /// These settings with `over`'s on top: its keys win, its `extra` comes after.
    pub fn merged(&self, over: &SlurmResources) -> SlurmResources {
        let mut extra = self.extra.clone();
        extra.extend(over.extra.iter().cloned());
        SlurmResources {
            cpus: over.cpus.clone().or_else(|| self.cpus.clone()),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
            extra,
        }
    }
}

/// The `[slurm]` table.
#[derive(Debug, Clone, Default)]
pub struct SlurmSettings {
    /// `mode`.
    pub mode: Option<Sp<SlurmMode>>,
    /// `dir`: where run directories go (on a filesystem the nodes share),
    /// relative to the job file's directory.
    pub dir: Option<Sp<String>>,
    /// `orphan_timeout`: how long units outlive a silent engine.
    pub orphan_timeout: Option<Sp<Duration>>,
    /// `keep`: keep the run directory (wrapper, batch output, statuses).
    pub keep: bool,
    /// Defaults for every unit.
    pub defaults: SlurmResources,
}

/// Options jobgraph sets itself on every unit: `extra` must not repeat them.
/// Long names, then the short letters that mean the same.
pub const OWNED_OPTIONS: &[(&str, Option<char>)] = &[
    ("--job-name", Some('J')),
    ("--output", Some('o')),
    ("--error", Some('e')),
    ("--input", Some('i')),
    ("--chdir", Some('D')),
    ("--jobid", None),
    ("--parsable", None),
    ("--wrap", None),
    ("--ntasks", Some('n')),
    ("--array", Some('a')),
    ("--dependency", Some('d')),
    ("--overlap", None),
    ("--exact", None),
];

/// The owned option an `extra` entry sets, if any (`--output=x`, `-ox`, `-o`).
pub fn owned_option(arg: &str) -> Option<&'static str> {
    if let Some(long) = arg.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        return OWNED_OPTIONS
            .iter()
            .map(|(l, _)| *l)
            .find(|l| l[2..] == *name);
    }
    let letter = arg.strip_prefix('-')?.chars().next()?;
    OWNED_OPTIONS
        .iter()
        .find(|(_, s)| *s == Some(letter))
        .map(|(l, _)| *l)
}

/// Is `mem` a size as Slurm reads it: digits, then at most one of K, M, G, T?
pub fn is_slurm_mem(mem: &str) -> bool {
    let digits = mem.trim_end_matches(|c: char| "KMGTkmgt".contains(c));
    mem.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A duration as Slurm's `--time` (`D-HH:MM:SS`), rounded up to whole minutes
/// (Slurm's granularity).
pub fn slurm_time(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60).max(1);
    let (days, rest) = (minutes / 1440, minutes % 1440);
    format!("{days}-{:02}:{:02}:00", rest / 60, rest % 60)
}

/// The Slurm time limit jobgraph sets behind a `timeout`: the timeout and the
/// grace, plus two minutes for Slurm's coarse enforcement, in whole minutes.
pub fn backstop(timeout_and_grace: Duration) -> Duration {
    let secs = (timeout_and_grace + Duration::from_secs(120)).as_secs();
    Duration::from_secs(secs.div_ceil(60) * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_options_are_found_in_every_spelling() {
        for (arg, owned) in [
            ("--output=x", Some("--output")),
            ("--output", Some("--output")),
            ("-o", Some("--output")),
            ("-ox.log", Some("--output")),
            ("-J", Some("--job-name")),
            ("--gres=gpu:1", None),
            ("-c4", None),
            ("--exclusive", None),
            ("--outputs", None),
            ("plain", None),
        ] {
            assert_eq!(owned_option(arg), owned, "{arg}");
        }
    }

    #[test]
    fn memory_sizes_are_slurms() {
        for ok in ["512", "512M", "8G", "1t", "64k"] {
            assert!(is_slurm_mem(ok), "{ok}");
        }
        for bad in ["", "G", "8GB", "8 G", "1.5G", "-1G", "8g8"] {
            assert!(!is_slurm_mem(bad), "{bad}");
        }
    }

    #[test]
    fn times_round_up_to_minutes() {
        assert_eq!(slurm_time(Duration::from_secs(1)), "0-00:01:00");
        assert_eq!(slurm_time(Duration::from_secs(61)), "0-00:02:00");
        assert_eq!(slurm_time(Duration::from_secs(3600)), "0-01:00:00");
        assert_eq!(slurm_time(Duration::from_secs(90_000)), "1-01:00:00");
    }
}
