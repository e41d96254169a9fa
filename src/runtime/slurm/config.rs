//! The Slurm executor's settings: the job file's `[slurm]` table and
//! per-process `slurm` tables, under the `JOBGRAPH_SLURM_*` environment
//! variables (the environment wins, as a command line would).

use super::error::SlurmError;
use crate::spec::slurm::{backstop, slurm_time};
use crate::spec::{JobFile, SlurmMode, SlurmResources};
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

/// Step or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Job steps of this allocation.
    Step {
        /// The allocation's job id.
        job: String,
    },
    /// One `sbatch` job per unit.
    Batch,
}

/// The executor's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `JOBGRAPH_SLURM_MODE`, else `[slurm] mode`; `auto`: step when
    /// `SLURM_JOB_ID` is set.
    pub mode: Mode,
    /// `JOBGRAPH_SLURM_DIR`, else `[slurm] dir` (relative to the job file):
    /// where run directories go, on a filesystem the nodes share. Default
    /// `.jobgraph-slurm` in the current directory.
    pub dir: PathBuf,
    /// `JOBGRAPH_SLURM_STALE`, else `[slurm] orphan_timeout`: seconds without
    /// a heartbeat after which units cancel themselves (default 10).
    pub stale_secs: u64,
    /// `JOBGRAPH_SLURM_KEEP=1`, else `[slurm] keep`: keep the run directory.
    pub keep: bool,
    /// `JOBGRAPH_SLURM_PARTITION` and `JOBGRAPH_SLURM_ARGS` (split on
    /// whitespace), for every unit, after the file's options.
    pub env_args: Vec<String>,
    /// Each process's own `srun` / `sbatch` options, by process name.
    pub args: FxHashMap<String, Vec<String>>,
    /// The graph's daemon processes: in step mode they share CPUs
    /// (`--overlap`), as locally they do not count toward `max_parallel`.
    pub daemons: Vec<String>,
    /// The job file, absolute, for the nested runs of group units (`None`:
    /// read from stdin, so such groups run on this node).
    pub job_file: Option<PathBuf>,
    /// The run's `--set` overrides, passed on to nested runs.
    pub sets: Vec<(String, String)>,
}

impl Config {
    /// Settings for `file` (whose directory is `base`), under the environment.
    pub fn new(file: &JobFile, base: &Path) -> Result<Config, SlurmError> {
        Config::with_env(file, base, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    fn with_env(
        file: &JobFile,
        base: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, SlurmError> {
        let s = &file.slurm;
        let job = var("SLURM_JOB_ID");
        let from_file = match s.mode.as_ref().map(|m| m.value) {
            None | Some(SlurmMode::Auto) => None,
            Some(SlurmMode::Step) => Some("step"),
            Some(SlurmMode::Batch) => Some("batch"),
        };
        let (wanted, whence) = match var("JOBGRAPH_SLURM_MODE") {
            Some(m) => (Some(m), "JOBGRAPH_SLURM_MODE"),
            None => (from_file.map(str::to_string), "[slurm] mode"),
        };
        let mode = match (wanted.as_deref(), job) {
            (Some("batch"), _) | (None | Some("auto"), None) => Mode::Batch,
            (Some("step" | "auto") | None, Some(job)) => Mode::Step { job },
            (Some("step"), None) => return Err(SlurmError::StepWithoutAllocation { whence }),
            (Some(other), _) => {
                return Err(SlurmError::BadMode {
                    whence,
                    value: other.to_string(),
                })
            }
        };
        let stale_secs = match var("JOBGRAPH_SLURM_STALE") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|&n| n > 1)
                .ok_or_else(|| SlurmError::BadStale(v.clone()))?,
            None => s
                .orphan_timeout
                .as_ref()
                .map_or(10, |d| d.value.as_secs().max(2)),
        };
        let dir = match (var("JOBGRAPH_SLURM_DIR"), &s.dir) {
            (Some(d), _) => PathBuf::from(d),
            (None, Some(d)) => base.join(&d.value),
            (None, None) => PathBuf::from(".jobgraph-slurm"),
        };
        let keep = match var("JOBGRAPH_SLURM_KEEP").as_deref() {
            Some("1" | "true" | "yes") => true,
            Some("0" | "false" | "no" | "") => false,
            Some(other) => return Err(SlurmError::BadKeep(other.to_string())),
            None => s.keep,
        };
        // The same rules as `[slurm]` in the file (`bad-slurm-option`).
        let mut env_args = Vec::new();
        if let Some(p) = var("JOBGRAPH_SLURM_PARTITION") {
            if p.is_empty() || p.contains(char::is_whitespace) {
                return Err(SlurmError::BadPartition(p));
            }
            env_args.push(format!("--partition={p}"));
        }
        if let Some(extra) = var("JOBGRAPH_SLURM_ARGS") {
            for arg in extra.split_whitespace() {
                if !arg.starts_with('-') || arg.len() < 2 {
                    return Err(SlurmError::BadArg {
                        arg: arg.to_string(),
                        why: "is not an option: write each option whole, with its value after `=` (--gres=gpu:1)".into(),
                    });
                }
                if let Some(owned) = crate::spec::slurm::owned_option(arg) {
                    return Err(SlurmError::BadArg {
                        arg: arg.to_string(),
                        why: format!("sets `{owned}`, which jobgraph sets itself on every unit: remove it (see docs/slurm.md)"),
                    });
                }
                env_args.push(arg.to_string());
            }
        }
        let grace = file.graph.shutdown_grace;
        let args = file
            .processes
            .iter()
            .map(|p| {
                let own = p.slurm.clone().unwrap_or_default();
                let r = s.defaults.merged(&own);
                let time = r
                    .time
                    .as_ref()
                    .map(|t| t.value)
                    .or_else(|| p.timeout.map(|t| backstop(t + grace)));
                (p.name.value.clone(), options(&r, time))
            })
            .collect();
        Ok(Config {
            mode,
            dir,
            stale_secs,
            keep,
            env_args,
            args,
            daemons: file
                .processes
                .iter()
                .filter(|p| p.daemon.value)
                .map(|p| p.name.value.clone())
                .collect(),
            job_file: None,
            sets: Vec::new(),
        })
    }

    /// The options of every unit of `process`: the file's, then the environment's.
    pub fn unit_args(&self, process: &str) -> impl Iterator<Item = &String> {
        let own = self.args.get(process).map(Vec::as_slice).unwrap_or(&[]);
        own.iter().chain(&self.env_args)
    }
}

impl Config {
    /// The options of a group unit running `processes` at once on one
    /// node. Its members share its CPUs as a pipeline shares a machine: it
    /// asks for the most any member asks for (a sum could exceed any node).
    /// A time limit is the longest, and only if each has one; any other
    /// option is the first member's that sets it.
    pub fn group_args(&self, processes: &[String]) -> Vec<String> {
        let key = |o: &str| o.split_once('=').map_or(o, |(k, _)| k).to_string();
        let (mut cpus, mut times, mut seen, mut rest) = (None, Vec::new(), Vec::new(), Vec::new());
        for p in processes {
            let own = self.args.get(p).map(Vec::as_slice).unwrap_or(&[]);
            for o in own {
                if let Some(n) = o.strip_prefix("--cpus-per-task=") {
                    cpus = cpus.max(Some(n.parse::<u64>().unwrap_or(1)));
                } else if let Some(t) = o.strip_prefix("--time=") {
                    times.push(t.to_string());
                } else if !seen.contains(&key(o)) || !o.starts_with("--") {
                    seen.push(key(o));
                    rest.push(o.clone());
                }
            }
        }
        let mut v: Vec<String> = cpus
            .map(|c| format!("--cpus-per-task={c}"))
            .into_iter()
            .collect();
        // Slurm's `D-HH:MM:SS`: longer is later, then text order.
        if times.len() == processes.len() {
            if let Some(t) = times.iter().max_by_key(|t| (t.len(), (*t).clone())) {
                v.push(format!("--time={t}"));
            }
        }
        v.extend(rest);
        v.extend(self.env_args.iter().cloned());
        v
    }
}

/// `srun` / `sbatch` options for resolved resources.
fn options(r: &SlurmResources, time: Option<std::time::Duration>) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(c) = &r.cpus {
        v.push(format!("--cpus-per-task={}", c.value));
    }
    if let Some(m) = &r.mem {
        v.push(format!("--mem={}", m.value));
    }
    if let Some(t) = time {
        v.push(format!("--time={}", slurm_time(t)));
    }
    if let Some(p) = &r.partition {
        v.push(format!("--partition={}", p.value));
    }
    if let Some(a) = &r.account {
        v.push(format!("--account={}", a.value));
    }
    v.extend(r.extra.iter().map(|e| e.value.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn config(text: &str, env: &[(&str, &str)]) -> Result<Config, SlurmError> {
        let src = SourceFile::new("t.toml", text.to_string());
        let (file, diags) = crate::spec::decode(&src);
        assert!(diags.is_empty(), "{diags:?}");
        let file = file.expect("decodes");
        Config::with_env(&file, Path::new("/jobs"), |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    const FILE: &str = r#"
[graph]
shutdown_grace = "10s"
[slurm]
partition = "short"
cpus = 2
extra = ["--exclusive"]
dir = "runs"
orphan_timeout = "30s"
[process.a]
cmd = ["true"]
timeout = "1m"
slurm = { cpus = 8, mem = "4G", extra = ["--gres=gpu:1"] }
[process.b]
cmd = ["true"]
"#;

    #[test]
    fn a_process_overrides_the_defaults_and_adds_its_extra() {
        let c = config(FILE, &[]).expect("config");
        let a: Vec<&String> = c.unit_args("a").collect();
        assert_eq!(
            a,
            [
                "--cpus-per-task=8",
                "--mem=4G",
                "--time=0-00:04:00",
                "--partition=short",
                "--exclusive",
                "--gres=gpu:1"
            ]
        );
        let b: Vec<&String> = c.unit_args("b").collect();
        assert_eq!(b, ["--cpus-per-task=2", "--partition=short", "--exclusive"]);
        assert_eq!(c.dir, Path::new("/jobs/runs"));
        assert_eq!(c.stale_secs, 30);
        assert_eq!(c.mode, Mode::Batch);
    }

    #[test]
    fn a_group_unit_takes_the_most_cpus_and_the_longest_time_only_if_all_have_one() {
        let c = config(FILE, &[]).expect("config");
        let both = c.group_args(&["a".into(), "b".into()]);
        assert_eq!(
            both,
            [
                "--cpus-per-task=8",
                "--mem=4G",
                "--partition=short",
                "--exclusive",
                "--gres=gpu:1"
            ]
        );
        let text = "[process.a]\ncmd = [\"true\"]\ntimeout = \"1m\"\n[process.b]\ncmd = [\"true\"]\ntimeout = \"20m\"\n";
        let c = config(text, &[]).expect("config");
        let g = c.group_args(&["a".into(), "b".into()]);
        assert_eq!(g, ["--time=0-00:23:00"]);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let env = [
            ("JOBGRAPH_SLURM_DIR", "/scratch"),
            ("JOBGRAPH_SLURM_STALE", "5"),
            ("JOBGRAPH_SLURM_PARTITION", "long"),
            ("SLURM_JOB_ID", "42"),
        ];
        let c = config(FILE, &env).expect("config");
        assert_eq!(c.dir, Path::new("/scratch"));
        assert_eq!(c.stale_secs, 5);
        assert_eq!(c.mode, Mode::Step { job: "42".into() });
        // The environment's partition comes last, so it is the one srun keeps.
        assert_eq!(
            c.unit_args("b").last().map(String::as_str),
            Some("--partition=long")
        );
    }

    #[test]
    fn the_environment_gets_the_checks_the_file_gets() {
        let text = "[process.a]\ncmd = [\"true\"]\n";
        for (k, v) in [
            ("JOBGRAPH_SLURM_ARGS", "--output=x"),
            ("JOBGRAPH_SLURM_ARGS", "--gres=gpu:1 --job-name=x"),
            ("JOBGRAPH_SLURM_ARGS", "gpu:1"),
            ("JOBGRAPH_SLURM_PARTITION", "a b"),
            ("JOBGRAPH_SLURM_KEEP", "maybe"),
        ] {
            let e = config(text, &[(k, v)]).expect_err(v);
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        let ok = config(
            text,
            &[
                ("JOBGRAPH_SLURM_ARGS", "--gres=gpu:1"),
                ("JOBGRAPH_SLURM_KEEP", "false"),
            ],
        )
        .expect("fine");
        assert!(!ok.keep);
        assert!(ok.unit_args("a").any(|a| a == "--gres=gpu:1"));
    }

    #[test]
    fn step_mode_outside_an_allocation_is_an_error_naming_its_source() {
        let text = "[slurm]\nmode = \"step\"\n[process.a]\ncmd = [\"true\"]\n";
        let e = config(text, &[]).expect_err("no allocation");
        assert!(
            matches!(
                e,
                SlurmError::StepWithoutAllocation {
                    whence: "[slurm] mode"
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("[slurm] mode is step"), "{e}");
        let bad = config(text, &[("JOBGRAPH_SLURM_MODE", "bogus")]).expect_err("no such mode");
        assert!(matches!(bad, SlurmError::BadMode { .. }), "{bad}");
        let stale = config(
            text,
            &[
                ("JOBGRAPH_SLURM_MODE", "batch"),
                ("JOBGRAPH_SLURM_STALE", "1"),
            ],
        );
        assert!(matches!(stale, Err(SlurmError::BadStale(_))));
        let batch = config(text, &[("JOBGRAPH_SLURM_MODE", "batch")]).expect("env wins");
        assert_eq!(batch.mode, Mode::Batch);
    }
}
