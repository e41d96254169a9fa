//! `jobgraph run --executor slurm` against a real Slurm (tests/slurm/up.sh
//! brings up a single-node cluster; docs/slurm.md). Every scenario runs in
//! both modes: **step** (inside an allocation made with `salloc --no-shell`,
//! released after) and **batch** (one `sbatch` job per unit). After every
//! run, nothing of it may be left in `squeue`.
//!
//! Without Slurm (no `sinfo`, or the cluster is down) the tests skip with a
//! message; with `CI` set they fail instead, so CI never skips them. They
//! run one at a time (one node, four CPUs).

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Step,
    Batch,
}

/// One test's hold on the cluster: the lock, and in step mode an allocation.
struct Cluster {
    mode: Mode,
    alloc: Option<String>,
    _serial: MutexGuard<'static, ()>,
}

fn slurm_up() -> Result<(), String> {
    let out = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`sinfo` cannot run ({e})"))?;
    let states = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "`sinfo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // A node that takes work (`idle`, `mixed`, `allocated`, `completing`, …),
    // not one that is down, drained, failing or not responding (`*`).
    if states.lines().map(str::trim).any(|s| {
        !s.is_empty()
            && !["down", "drain", "fail", "unk", "*", "~", "#", "!", "%"]
                .iter()
                .any(|bad| s.contains(bad))
    }) {
        Ok(())
    } else {
        Err(format!("no node is up (sinfo: {})", states.trim()))
    }
}

/// The cluster for one test, or None (skipped) when Slurm is not here.
fn cluster(mode: Mode) -> Option<Cluster> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = slurm_up() {
        if std::env::var_os("CI").is_some() {
            panic!("Slurm is not up in CI: {why} (.ci/run runs tests/slurm/up.sh first)");
        }
        eprintln!("SKIPPED (Slurm): {why}; bring it up with `sudo tests/slurm/up.sh`");
        return None;
    }
    let alloc = match mode {
        Mode::Batch => None,
        Mode::Step => {
            let out = Command::new("salloc")
                .args([
                    "--no-shell",
                    "--ntasks=2",
                    "--immediate=60",
                    "--job-name=jgtest-alloc",
                ])
                .stdin(Stdio::null())
                .output()
                .expect("salloc runs");
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            let id = text
                .split("Granted job allocation ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("salloc gave no allocation: {text}"))
                .to_string();
            Some(id)
        }
    };
    Some(Cluster {
        mode,
        alloc,
        _serial: serial,
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(id) = &self.alloc {
            let _ = Command::new("scancel").arg(id).status();
            // The next test's allocation needs the CPUs back.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let out = Command::new("squeue")
                    .args(["-h", "-j", id, "-o", "%T"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The name prefixes (`jobgraph-<run id>-`) of the runs whose run
/// directories are in `slurm_dir` (the tests keep them: JOBGRAPH_SLURM_KEEP),
/// so that other users of the cluster do not count.
fn prefixes(slurm_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(slurm_dir)
        .map(|d| {
            d.flatten()
                .map(|e| format!("jobgraph-{}-", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// Jobs and steps of the runs in `slurm_dir` still known to squeue.
fn leftovers(slurm_dir: &std::path::Path) -> Vec<String> {
    let prefixes = prefixes(slurm_dir);
    let mut left = Vec::new();
    for args in [
        &["-h", "-o", "%i %j %T"][..],
        &["-h", "-s", "-o", "%i %j"][..],
    ] {
        let out = Command::new("squeue").args(args).output().unwrap();
        left.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
                })
                .map(String::from),
        );
    }
    left
}

/// Waits (up to `limit`) until squeue lists nothing of the runs in `slurm_dir`.
fn wait_queue_clear(slurm_dir: &std::path::Path, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = leftovers(slurm_dir);
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// `jobgraph run --executor slurm` with this mode's environment.
    fn command(&self, job_dir: &std::path::Path) -> Command {
        let mut cmd = self.environment(job_dir);
        cmd.args(["run", "--executor", "slurm"]);
        cmd
    }

    /// `jobgraph` with this mode's environment (and no arguments).
    fn environment(&self, job_dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"));
        cmd.current_dir(root())
            .env("NO_COLOR", "1")
            .env("JOBGRAPH_SLURM_DIR", job_dir.join(".slurm"))
            .env("JOBGRAPH_SLURM_STALE", "3")
            .env("JOBGRAPH_SLURM_KEEP", "1")
            .env_remove("JOBGRAPH_SLURM_PARTITION")
            .env_remove("JOBGRAPH_SLURM_ARGS")
            .env_remove("JOBGRAPH_EXECUTOR");
        match (&self.alloc, self.mode) {
            (Some(id), _) => {
                cmd.env("SLURM_JOB_ID", id)
                    .env("JOBGRAPH_SLURM_MODE", "step");
            }
            (None, _) => {
                cmd.env_remove("SLURM_JOB_ID")
                    .env("JOBGRAPH_SLURM_MODE", "batch");
            }
        }
        cmd
    }

    /// Runs the file (90 s at most) and returns (exit code, stdout, stderr);
    /// then checks that squeue lists nothing of the run.
    fn run(
        &self,
        file: &std::path::Path,
        job_dir: &std::path::Path,
        extra: &[&str],
    ) -> (i32, String, String) {
        let mut cmd = self.command(job_dir);
        cmd.args(extra).arg(file);
        let out = assert_cmd::Command::from_std(cmd)
            .timeout(Duration::from_secs(90))
            .output()
            .unwrap();
        let (code, stdout, stderr) = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        let left = wait_queue_clear(&job_dir.join(".slurm"), Duration::from_secs(3));
        assert!(
            left.is_empty(),
            "left in squeue after the run: {left:?}\n{stderr}"
        );
        (code, stdout, stderr)
    }

    fn run_job(&self, job: &Job, extra: &[&str]) -> (i32, String, String) {
        self.run(&job.path(), job.dir.path(), extra)
    }

    fn run_events(&self, job: &Job, extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
        let events = job.file("events.ndjson");
        let mut args = vec!["--events", events.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, _, stderr) = self.run_job(job, &args);
        let evs = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (code, evs, stderr)
    }
}

/// A process's events other than `placed` (whose number depends on timing).
fn lifecycle<'a>(evs: &'a [serde_json::Value], process: &str) -> Vec<&'a str> {
    let mut v = events_of(evs, process);
    v.retain(|e| *e != "placed");
    v
}

/// A scenario, as a test in each mode: `NAME::step` and `NAME::batch`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn step() {
                if let Some(c) = super::cluster(super::Mode::Step) {
                    super::$name(&c);
                }
            }
            #[test]
            fn batch() {
                if let Some(c) = super::cluster(super::Mode::Batch) {
                    super::$name(&c);
                }
            }
        }
    };
}

fn order(c: &Cluster) {
    let job = Job::new(
        r#"
[process.c]
shell = "echo c >> order"
after = ["b"]
[process.a]
shell = "sleep 0.1; echo a >> order"
[process.b]
shell = "echo b >> order"
after = ["a"]
"#,
    );
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("order"), "a\nb\nc\n");
}
both!(order);

fn concurrency(c: &Cluster) {
    let job = Job::new(&format!(
        "[process.x]\nshell = '{}'\n[process.y]\nshell = '{}'\n",
        stamp("x", "1"),
        stamp("y", "1")
    ));
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let iv = intervals(&job.read("stamps"));
    assert_eq!(iv.len(), 2);
    assert!(iv[0].1 < iv[1].2 && iv[1].1 < iv[0].2, "no overlap: {iv:?}");
}
both!(concurrency);

fn join_and_daemon(c: &Cluster) {
    let job = Job::new(
        r#"
[process.boss]
shell = "true"
[process.helper]
parent = "boss"
shell = "sleep 0.5; echo helped >> order"
[process.watch]
parent = "boss"
daemon = true
shell = "trap 'echo watch-stopped >> order; exit 0' TERM; while :; do sleep 0.1; done"
[process.after_boss]
after = ["boss"]
shell = "echo after-boss >> order"
"#,
    );
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        pos(&evs, "helper", "exited") < pos(&evs, "watch", "stopping"),
        "{evs:#?}"
    );
    // `after = boss` waits for boss joined: its non-daemon child done (the
    // daemon is stopped after the join, concurrently with what waited for it).
    let order = job.read("order");
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.first(), Some(&"helped"), "{order}\n{err}");
    assert!(
        lines.contains(&"after-boss") && lines.contains(&"watch-stopped"),
        "{order}\n{err}"
    );
    assert_eq!(summary(&err)["watch"][0], "stopped", "{err}");
}
both!(join_and_daemon);

fn fail_fast(c: &Cluster) {
    let job = Job::new(
        r#"
[process.bad]
shell = "sleep 0.5; exit 3"
[process.slow]
shell = "sleep 60"
[process.later]
after = ["slow"]
shell = "true"
"#,
    );
    let start = Instant::now();
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "slow was not stopped"
    );
    let rows = summary(&err);
    assert_eq!(rows["bad"][..2], ["failed", "3"], "{err}");
    assert_eq!(rows["slow"][0], "stopped", "{err}");
    assert_eq!(rows["later"][0], "skipped", "{err}");
}
both!(fail_fast);

fn keep_going(c: &Cluster) {
    let job = Job::new(
        r#"
[process.a]
shell = "exit 1"
[process.b]
after = ["a"]
shell = "true"
[process.d]
shell = "sleep 0.2"
[process.e]
after = { a = "exit" }
shell = "true"
"#,
    );
    let (code, _, err) = c.run_job(&job, &["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    let rows = summary(&err);
    assert_eq!(rows["a"][0], "failed");
    assert_eq!(rows["b"][0], "skipped");
    assert_eq!(rows["d"][0], "ok");
    assert_eq!(rows["e"][0], "ok");
}
both!(keep_going);

fn retries(c: &Cluster) {
    let job = Job::new(
        r#"
[process.flaky]
shell = "echo x >> tries; test $(wc -l < tries) -ge 3"
retries = 3
retry_delay = "100ms"
"#,
    );
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("tries").lines().count(), 3);
    assert_eq!(summary(&err)["flaky"][2], "3", "{err}");
    assert_eq!(
        lifecycle(&evs, "flaky")
            .iter()
            .filter(|e| **e == "retrying")
            .count(),
        2
    );
}
both!(retries);

fn timeout(c: &Cluster) {
    // The stop signal reaches the command (scancel --signal), which ends itself.
    let job = Job::new(
        "[process.slow]\nshell = \"trap 'echo got-term >> log; exit 5' TERM; sleep 60 & wait\"\ntimeout = \"1s\"\n",
    );
    let start = Instant::now();
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "{err}");
    assert_eq!(summary(&err)["slow"][..2], ["timed out", "5"], "{err}");
    assert_eq!(lifecycle(&evs, "slow"), ["started", "stopping", "exited"]);
    assert_eq!(job.read("log"), "got-term\n");
}
both!(timeout);

fn grace_then_kill(c: &Cluster) {
    let job = Job::new(
        // The timeout counts from submission: a batch job needs a moment to start and set its trap.
        "[graph]\nshutdown_grace = \"1s\"\n[process.stubborn]\nshell = \"trap '' TERM; sleep 60\"\ntimeout = \"3s\"\n",
    );
    let start = Instant::now();
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "{err}");
    assert_eq!(
        summary(&err)["stubborn"][..2],
        ["timed out", "SIGKILL"],
        "{err}"
    );
    assert!(wait_gone(&job, Duration::from_secs(5)).is_empty());
}
both!(grace_then_kill);

fn locks(c: &Cluster) {
    let mut body = String::from("[lock.one]\n");
    for i in 0..3 {
        body.push_str(&format!(
            "[process.a{i}]\nshell = '{}'\nlocks = [\"one\"]\n",
            stamp(&format!("one{i}"), "0.3")
        ));
    }
    let job = Job::new(&body);
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let mut iv = intervals(&job.read("stamps"));
    iv.sort_by_key(|i| i.1);
    assert_eq!(iv.len(), 3);
    for w in iv.windows(2) {
        assert!(w[0].2 <= w[1].1, "lock held twice: {iv:?}");
    }
}
both!(locks);

fn replicas(c: &Cluster) {
    let job = Job::new(
        "[process.w]\nreplicas = 3\nshell = \"echo {replica} $JOBGRAPH_REPLICA $JOBGRAPH_REPLICAS > out.{replica}\"\n",
    );
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    for r in 0..3 {
        assert_eq!(job.read(&format!("out.{r}")), format!("{r} {r} 3\n"));
    }
}
both!(replicas);

fn logs_are_prefixed(c: &Cluster) {
    let job = Job::new("[process.talker]\nshell = \"echo to-out; echo to-err >&2; seq 1 2000\"\n");
    let (code, out, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("talker | to-out"), "{out}");
    assert!(
        out.contains("talker | to-err") || err.contains("talker | to-err"),
        "{out}\n{err}"
    );
    assert!(out.contains("talker | 2000"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("talker | ")).count(),
        2002,
        "{out}"
    );
}
both!(logs_are_prefixed);

fn a_pipe(c: &Cluster) {
    let job = Job::new(
        "[process.gen]\nshell = \"seq 1 100000\"\n[process.count]\nshell = \"wc -l > count\"\n[pipe.p]\nfrom = \"gen\"\nto = \"count\"\n",
    );
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("count").trim(), "100000");
}
both!(a_pipe);

fn a_failing_command(c: &Cluster) {
    let job = Job::new("[process.nope]\ncmd = [\"false\"]\n");
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&err)["nope"][..2], ["failed", "1"], "{err}");
}
both!(a_failing_command);

fn examples(c: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "hello",
        "five",
        "daemon",
        "contexts",
        "locks",
        "pipe",
        "pipeline",
        "duplex",
        "queue",
        "broadcast",
        "logs",
        "nightly",
        "logready",
        "cluster",
    ] {
        let (code, _, err) = c.run(&root().join(format!("jobs/{name}.toml")), dir.path(), &[]);
        assert_eq!(code, 0, "jobs/{name}.toml ({:?}): {err}", c.mode);
    }
}
both!(examples);

fn sigint(c: &Cluster) {
    let job = Job::new(
        "[process.a]\nshell = \"touch started; sleep 60\"\n[process.b]\nshell = \"sleep 60\"\n[process.d]\nparent = \"a\"\ndaemon = true\nshell = \"exec sleep 60\"\n",
    );
    let mut engine = c
        .command(job.dir.path())
        .arg(job.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(500));
    let slurm_dir = job.dir.path().join(".slurm");
    assert!(
        !leftovers(&slurm_dir).is_empty(),
        "nothing of the run in squeue"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(30)).expect("engine did not exit");
    assert_eq!(status.code(), Some(130));
    let left = wait_queue_clear(&slurm_dir, Duration::from_secs(3));
    assert!(left.is_empty(), "left in squeue after SIGINT: {left:?}");
    assert!(wait_gone(&job, Duration::from_secs(3)).is_empty());
}
both!(sigint);

fn a_units_leftovers_go_with_it(c: &Cluster) {
    // `a` leaves a process behind, re-parented to init at once, where Slurm's
    // process tracking (proctrack/linuxproc follows parents) no longer sees it.
    // It holds no output, so nothing waits for it: it must die with its unit.
    let job = Job::new(
        "[process.a]\nshell = \"sleep 60 >/dev/null 2>&1 </dev/null & echo started\"\n[process.b]\nafter = [\"a\"]\nshell = \"sleep 1\"\n",
    );
    let (code, _evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let left = wait_gone(&job, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "left behind by a unit: {}",
        describe_pids(&left)
    );
}
both!(a_units_leftovers_go_with_it);

fn engine_sigkill(c: &Cluster) {
    let job = Job::new(
        "[process.a]\nshell = \"sleep 60 & sleep 60 & touch started; wait\"\n[process.b]\nshell = \"trap '' TERM INT; sleep 60\"\n",
    );
    let mut engine = c
        .command(job.dir.path())
        .arg(job.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(500));
    let slurm_dir = job.dir.path().join(".slurm");
    assert!(
        !leftovers(&slurm_dir).is_empty(),
        "nothing of the run in squeue"
    );
    assert!(job.survivors().len() >= 3, "{:?}", job.survivors());
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    // The units notice the heartbeat stop (JOBGRAPH_SLURM_STALE=3) and cancel the run.
    let left = wait_queue_clear(&slurm_dir, Duration::from_secs(20));
    assert!(
        left.is_empty(),
        "left in squeue after the engine was killed: {left:?}"
    );
    // Slurm kills them KillWait (2 s) after its cancel; a loaded machine is slower.
    let procs = wait_gone(&job, Duration::from_secs(20));
    assert!(
        procs.is_empty(),
        "processes outlived the engine: {}",
        describe_pids(&procs)
    );
}
both!(engine_sigkill);

/// Batch mode polls with one squeue call per tick, whatever the number of units.
#[test]
fn batch_polls_with_one_squeue_per_tick() {
    let Some(c) = cluster(Mode::Batch) else {
        return;
    };
    let job = Job::new("[process.w]\nreplicas = 12\nshell = \"sleep 1\"\n");
    let mut cmd = c.command(job.dir.path());
    cmd.env("JOBGRAPH_SLURM_STATS", "1").arg(job.path());
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let calls: f64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("jobgraph: slurm: ")?
                .strip_suffix(" squeue calls")
        })
        .unwrap_or_else(|| panic!("no squeue count: {err}"))
        .parse()
        .unwrap();
    // 4 ticks a second at most (plus one after each submission burst).
    assert!(
        calls <= secs * 4.0 + 4.0,
        "{calls} squeue calls in {secs:.1} s"
    );
}

#[test]
fn step_mode_outside_a_running_allocation_is_a_clear_error() {
    let Some(c) = cluster(Mode::Batch) else {
        return;
    };
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let mut cmd = c.command(job.dir.path());
    cmd.env("SLURM_JOB_ID", "999999")
        .env("JOBGRAPH_SLURM_MODE", "step")
        .arg(job.path());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("allocation 999999") && err.contains("squeue"),
        "{err}"
    );
}

#[test]
fn an_sbatch_failure_names_sbatch_and_its_error() {
    let Some(c) = cluster(Mode::Batch) else {
        return;
    };
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let mut cmd = c.command(job.dir.path());
    cmd.env("JOBGRAPH_SLURM_PARTITION", "no-such-partition")
        .arg(job.path());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sbatch") && err.contains("invalid partition"),
        "{err}"
    );
}

/// The sbatch wrapper of docs/slurm.md: `jobgraph run` inside a batch script
/// finds SLURM_JOB_ID and runs the graph as steps of that job.
#[test]
fn an_sbatch_script_runs_the_graph_as_steps() {
    let Some(_c) = cluster(Mode::Batch) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sbatch");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n#SBATCH --ntasks=2\n#SBATCH --job-name=jgtest-script\nexport JOBGRAPH_SLURM_DIR={} JOBGRAPH_SLURM_KEEP=1\nexec {} run --executor slurm jobs/five.toml\n",
            dir.path().join(".slurm").display(),
            assert_cmd::cargo::cargo_bin("jobgraph").display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("out");
    let mut cmd = Command::new("sbatch");
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("SLURM_JOB_ID")
        .arg("--wait")
        .arg(format!("--output={}", log.display()))
        .arg(&script);
    let out = assert_cmd::Command::from_std(cmd)
        .timeout(Duration::from_secs(90))
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("setup     | preparing build dir"), "{text}");
    assert!(text.contains("5 ok in"), "{text}");
    let left = wait_queue_clear(&dir.path().join(".slurm"), Duration::from_secs(3));
    assert!(left.is_empty(), "left in squeue: {left:?}");
}

/// `[graph] executor`, `[slurm]` and a process's `slurm` table, with no
/// `--executor` flag: the unit gets its CPUs, and a time limit behind its
/// timeout (55 s + 5 s of grace + 2 min, in minutes: 3 min).
fn file_keys(c: &Cluster) {
    let probe = r#"echo "cpus=$SLURM_CPUS_PER_TASK"; if [ -n "$SLURM_STEP_ID" ]; then scontrol show step $SLURM_JOB_ID.$SLURM_STEP_ID; else scontrol show job $SLURM_JOB_ID; fi | grep -o 'TimeLimit=[^ ]*' | head -1"#;
    let job = Job::new(&format!(
        "[graph]\nexecutor = \"slurm\"\n[slurm]\ncpus = 1\n[process.probe]\nshell = '''{probe}'''\ntimeout = \"55s\"\nslurm = {{ cpus = 2 }}\n[process.plain]\nshell = 'echo \"cpus=$SLURM_CPUS_PER_TASK\"'\n"
    ));
    let mut cmd = c.environment(job.dir.path());
    cmd.arg("run").arg(job.path());
    let out = assert_cmd::Command::from_std(cmd)
        .timeout(Duration::from_secs(90))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("probe | cpus=2\n"), "{stdout}");
    assert!(stdout.contains("probe | TimeLimit=00:03:00\n"), "{stdout}");
    assert!(stdout.contains("plain | cpus=1\n"), "{stdout}");
    let left = wait_queue_clear(&job.dir.path().join(".slurm"), Duration::from_secs(3));
    assert!(left.is_empty(), "{left:?}");
}
both!(file_keys);

/// `placed` events: the job (and in step mode the step) and the node.
fn placements(c: &Cluster) {
    let job = Job::new("[process.a]\nshell = \"sleep 0.6\"\n");
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let placed: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event"] == "placed").collect();
    let job_id = placed[0]["job_id"].as_str().unwrap_or_default();
    assert!(
        !job_id.is_empty() && job_id.bytes().all(|b| b.is_ascii_digit()),
        "{placed:?}"
    );
    let node = Command::new("sinfo")
        .args(["-h", "-o", "%n"])
        .output()
        .unwrap();
    let node = String::from_utf8_lossy(&node.stdout).trim().to_string();
    let last = placed.last().unwrap();
    assert_eq!(last["state"], "running", "{placed:?}");
    assert_eq!(last["node"], node.as_str(), "{placed:?}");
    match c.mode {
        Mode::Batch => assert_eq!(placed[0]["state"], "queued", "{placed:?}"),
        Mode::Step => {
            let step = last["step_id"].as_str().unwrap_or_default();
            assert!(step.starts_with(&format!("{job_id}.")), "{placed:?}");
        }
    }
    // Every placement comes between the start and the end of the unit.
    assert!(pos(&evs, "a", "started") < pos(&evs, "a", "placed"));
    let last_placed = evs.iter().rposition(|e| e["event"] == "placed").unwrap();
    assert!(last_placed < pos(&evs, "a", "exited"));
}
both!(placements);

/// Batch: a job this run cancels while it still waits in the queue never
/// ran, so it has no `placed` event saying it runs, and no duration.
#[test]
fn a_job_cancelled_while_queued_never_ran() {
    let Some(c) = cluster(Mode::Batch) else {
        return;
    };
    let cpus = Command::new("sinfo")
        .args(["-h", "-o", "%c"])
        .output()
        .unwrap();
    let cpus = String::from_utf8_lossy(&cpus.stdout).trim().to_string();
    let job = Job::new(&format!(
        "[process.hog]\nshell = \"touch started; sleep 60\"\nslurm = {{ cpus = {cpus} }}\n[process.waits]\nshell = \"sleep 60\"\n"
    ));
    // Polled at least once more while `waits` is queued behind `hog`.
    let mut engine = start_with_events(&c, &job, Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(30)).expect("engine did not exit");
    assert_eq!(status.code(), Some(130));
    let evs = events_in(&job);
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        evs.iter()
            .filter(|e| e["process"] == "waits" && e["event"] == kind)
            .collect()
    };
    let placed = of("placed");
    assert!(
        !placed.is_empty() && placed.iter().all(|e| e["state"] == "queued"),
        "{placed:?}"
    );
    let exited = of("exited");
    assert_eq!(exited.len(), 1, "{evs:#?}");
    assert!(exited[0].get("duration_ms").is_none(), "{exited:?}");
    let left = wait_queue_clear(&job.dir.path().join(".slurm"), Duration::from_secs(3));
    assert!(left.is_empty(), "{left:?}");
}

/// `--executor local` wins over the file's `executor = "slurm"`: no Slurm needed.
#[test]
fn the_command_line_executor_wins_over_the_file() {
    let job = Job::new(
        "[graph]\nexecutor = \"slurm\"\n[slurm]\nmode = \"step\"\n[process.a]\nshell = \"echo local-${SLURM_JOB_ID:-none}\"\n",
    );
    let out = jobgraph()
        .env_remove("SLURM_JOB_ID")
        .env_remove("JOBGRAPH_EXECUTOR")
        .args(["run", "--executor", "local"])
        .arg(job.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a | local-none"));
    // Without the flag the file's choice stands, and its step mode needs an allocation.
    let out = jobgraph()
        .env_remove("SLURM_JOB_ID")
        .env_remove("JOBGRAPH_EXECUTOR")
        .env_remove("JOBGRAPH_SLURM_MODE")
        .arg("run")
        .arg(job.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[slurm] mode is step, which needs an allocation"),
        "{err}"
    );
}

/// Each pid with its parent and command line, for a failure message.
fn describe_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_string();
            format!("{p} (parent {ppid}): {cmd}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `placed` events' job ids of these processes.
fn job_ids(evs: &[serde_json::Value], processes: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = evs
        .iter()
        .filter(|e| e["event"] == "placed" && processes.iter().any(|p| e["process"] == *p))
        .map(|e| e["job_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A duplex pipe (a socketpair on fd 3) cannot cross srun or sbatch: the
/// group runs as one unit, whose members' logs and ends come back.
fn a_duplex_group_runs_as_one_unit(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["client", "server"]
[process.client]
shell = 'echo ping >&$JOBGRAPH_FD_RPC; read reply <&$JOBGRAPH_FD_RPC; echo "client got $reply"; hostname > client.host'
[process.server]
shell = 'read ask <&$JOBGRAPH_FD_RPC; echo "pong to $ask" >&$JOBGRAPH_FD_RPC; echo "server saw $ask"'
[process.after]
shell = "echo after"
after = ["client", "server"]
"#,
    );
    let events = job.file("events.ndjson");
    let (code, out, err) = c.run_job(&job, &["--events", events.to_str().unwrap()]);
    let evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("client | client got pong to ping"), "{out}");
    assert!(out.contains("server | server saw ping"), "{out}");
    for p in ["client", "server", "after"] {
        assert_eq!(lifecycle(&evs, p), ["started", "exited"], "{p}: {evs:#?}");
    }
    // One Slurm job (batch) or allocation (step) for both members, and the
    // member ran on a node of the cluster (its hostname was written there).
    assert_eq!(job_ids(&evs, &["client", "server"]).len(), 1, "{evs:#?}");
    assert!(!job.read("client.host").trim().is_empty());
    assert!(pos(&evs, "after", "started") > pos(&evs, "client", "exited"));
    assert!(pos(&evs, "after", "started") > pos(&evs, "server", "exited"));
}
both!(a_duplex_group_runs_as_one_unit);

/// A queue inside a group unit: every message read by a consumer exactly
/// once, and the nested run's counts in the summary and the events.
fn a_queue_group_counts_come_back(c: &Cluster) {
    let job = Job::new(
        r#"
[process.producer]
shell = "seq 1 3000"
[queue.tasks]
from = ["producer"]
to = ["worker"]
[process.worker]
replicas = 2
shell = "wc -l > count.{replica}"
"#,
    );
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let total: u64 = ["count.0", "count.1"]
        .iter()
        .map(|f| job.read(f).trim().parse::<u64>().unwrap_or(0))
        .sum();
    assert_eq!(total, 3000, "{err}");
    let q = evs
        .iter()
        .find(|e| e["event"] == "queue")
        .unwrap_or_else(|| panic!("no queue event: {evs:#?}"));
    assert_eq!(q["messages_in"], 3000, "{q}");
    assert_eq!(q["messages_out"], 3000, "{q}");
    let per: u64 = q["consumers"]
        .as_object()
        .expect("consumers")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per, 3000, "{q}");
    assert!(
        err.contains("queue tasks: 3000 in, 3000 out (worker[0] "),
        "{err}"
    );
}
both!(a_queue_group_counts_come_back);

/// Starts the run in the background with `--events events.ndjson` (stderr
/// piped), and returns once its `started` file exists and `settle` passed.
fn start_with_events(c: &Cluster, job: &Job, settle: Duration) -> std::process::Child {
    let engine = c
        .command(job.dir.path())
        .arg("--events")
        .arg(job.file("events.ndjson"))
        .arg(job.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(30)));
    std::thread::sleep(settle);
    engine
}

/// The events written so far by [`start_with_events`]'s run.
fn events_in(job: &Job) -> Vec<serde_json::Value> {
    std::fs::read_to_string(job.file("events.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// [`start_with_events`], then its last unit's Slurm id (the step in step
/// mode, the job in batch mode), from its `placed` events.
fn start_and_find_the_unit(c: &Cluster, job: &Job) -> (std::process::Child, String) {
    let engine = start_with_events(c, job, Duration::from_millis(500));
    let placed: Vec<serde_json::Value> = events_in(job)
        .into_iter()
        .filter(|e| e["event"] == "placed")
        .collect();
    let last = placed.last().expect("no placed event");
    let unit = match c.mode {
        Mode::Step => last["step_id"].as_str(),
        Mode::Batch => last["job_id"].as_str(),
    };
    (engine, unit.expect("no id").to_string())
}

/// A queue's group unit cancelled from outside: its counts come back, or
/// the run says they were lost with the unit; never silence.
fn a_cancelled_queue_group_still_accounts_for_its_queue(c: &Cluster) {
    let job = Job::new(
        r#"
[process.producer]
shell = "touch started; seq 1 100; sleep 60"
[queue.tasks]
from = ["producer"]
to = ["worker"]
[process.worker]
shell = "cat > /dev/null"
"#,
    );
    let (mut engine, unit) = start_and_find_the_unit(c, &job);
    assert!(Command::new("scancel")
        .arg(unit)
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut engine, Duration::from_secs(60)).expect("engine did not exit");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut engine.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("queue tasks: ")
            && (err.contains(" in, ") || err.contains("no counts: the group unit")),
        "{err}"
    );
}
both!(a_cancelled_queue_group_still_accounts_for_its_queue);

/// A member's failure, timeout and retries are its nested run's, and the
/// outer summary says so; the group's other member is stopped (pipefail).
fn a_group_member_fails_or_times_out(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "echo try >> tries; exit 3"
retries = 0
[process.b]
shell = "sleep 30"
timeout = "1s"
[pipe.rpc2]
between = ["c", "d"]
[process.c]
shell = "sleep 30"
timeout = "1s"
[process.d]
shell = "sleep 0.2"
"#,
    );
    let (code, evs, err) = c.run_events(&job, &["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    let rows = summary(&err);
    assert_eq!(rows["a"][..2], ["failed", "3"], "{err}");
    assert_eq!(rows["c"][0], "timed out", "{err}");
    assert_eq!(rows["d"][0], "ok", "{err}");
    assert_ne!(rows["b"][0], "ok", "{err}");
    assert_eq!(lifecycle(&evs, "c"), ["started", "exited"], "{evs:#?}");
}
both!(a_group_member_fails_or_times_out);

/// Starts the run in the background; returns once its `started` file
/// exists (a unit of it runs), and a moment more.
fn start_until_started(c: &Cluster, job: &Job, stderr: Stdio) -> std::process::Child {
    let engine = c
        .command(job.dir.path())
        .arg(job.path())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    engine
}

/// SIGINT to the engine stops a group unit's members and cancels its unit.
fn sigint_stops_a_group_unit(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "touch started; sleep 60"
[process.b]
shell = "sleep 60"
"#,
    );
    let mut engine = start_until_started(c, &job, Stdio::piped());
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    // The status table says where the members run.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(30)).expect("engine did not exit");
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut engine.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("(in a group unit"), "{err}");
    let slurm_dir = job.dir.path().join(".slurm");
    let left = wait_queue_clear(&slurm_dir, Duration::from_secs(3));
    assert!(left.is_empty(), "left in squeue after SIGINT: {left:?}");
    assert!(wait_gone(&job, Duration::from_secs(5)).is_empty());
}
both!(sigint_stops_a_group_unit);

/// A group unit signalled from outside (`scancel --signal=TERM`): its
/// members failed (as a local process killed by a signal the engine did not
/// send), though its nested run stopped them. They ignore SIGTERM, so it is
/// the nested run that stops them (SIGKILL after its grace), and says
/// `stopped`.
fn a_group_unit_signalled_from_outside_fails_its_members(c: &Cluster) {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "1s"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "trap '' TERM; touch started; sleep 60"
[process.b]
shell = "trap '' TERM; sleep 60"
"#,
    );
    let (mut engine, unit) = start_and_find_the_unit(c, &job);
    let mut scancel = Command::new("scancel");
    scancel.arg("--signal=TERM");
    if c.mode == Mode::Batch {
        scancel.arg("--full");
    }
    assert!(scancel.arg(&unit).status().unwrap().success());
    let status = wait_exit(&mut engine, Duration::from_secs(60)).expect("engine did not exit");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut engine.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let rows = summary(&err);
    assert_eq!(rows["a"][0], "failed", "{err}");
    assert_eq!(rows["b"][0], "failed", "{err}");
}
both!(a_group_unit_signalled_from_outside_fails_its_members);

/// SIGKILL to the engine: the group unit (nested engine and members) is
/// cancelled once the heartbeat stops; nothing is left.
fn engine_sigkill_with_a_group_unit(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "touch started; sleep 60"
[process.b]
shell = "trap '' TERM INT; sleep 60"
"#,
    );
    let mut engine = start_until_started(c, &job, Stdio::null());
    assert!(job.survivors().len() >= 2, "{:?}", job.survivors());
    engine.kill().unwrap();
    engine.wait().unwrap();
    let slurm_dir = job.dir.path().join(".slurm");
    let left = wait_queue_clear(&slurm_dir, Duration::from_secs(20));
    assert!(left.is_empty(), "left in squeue: {left:?}");
    // Slurm kills them KillWait (2 s) after its cancel; a loaded machine is slower.
    let procs = wait_gone(&job, Duration::from_secs(20));
    assert!(
        procs.is_empty(),
        "processes outlived the engine: {}",
        describe_pids(&procs)
    );
}
both!(engine_sigkill_with_a_group_unit);

/// A group unit's member logs arrive whole and in order, however many lines.
fn a_group_members_log_arrives_whole(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "seq 1 100000"
[process.b]
shell = "echo b-here >&2"
"#,
    );
    let (code, out, err) = c.run_job(&job, &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("a | ")).collect();
    assert_eq!(lines.len(), 100000, "{err}");
    assert_eq!(lines.last(), Some(&"100000"));
    assert!(lines
        .windows(2)
        .all(|w| w[0].parse::<u32>().unwrap() + 1 == w[1].parse::<u32>().unwrap()));
    assert!(
        out.contains("b | b-here") || err.contains("b | b-here"),
        "{out}\n{err}"
    );
}
both!(a_group_members_log_arrives_whole);

/// A nested run that cannot run its members (here the job file was broken
/// meanwhile) fails them, and says what the nested run said.
fn a_group_unit_that_cannot_run_fails_its_members_with_its_words(c: &Cluster) {
    let job = Job::new(
        r#"
[process.breaker]
shell = "echo 'broken = [' > job.toml"
[pipe.rpc]
between = ["a", "b"]
[process.a]
shell = "true"
after = ["breaker"]
[process.b]
shell = "true"
after = ["breaker"]
"#,
    );
    let (code, _, err) = c.run_job(&job, &[]);
    assert_eq!(code, 1, "{err}");
    let rows = summary(&err);
    assert_eq!(rows["a"][0], "failed", "{err}");
    assert_eq!(rows["b"][0], "failed", "{err}");
    assert!(err.contains("before reporting the end of a, b"), "{err}");
    assert!(err.contains("job.toml"), "{err}");
}
both!(a_group_unit_that_cannot_run_fails_its_members_with_its_words);

/// A member's retries happen in its nested run and count in this run's
/// summary; its `exited` has a duration (counted from its start).
fn a_group_members_retries_are_counted(c: &Cluster) {
    let job = Job::new(
        r#"
[process.prod]
shell = "seq 1 10"
[queue.q]
from = ["prod"]
to = ["cons"]
[process.cons]
shell = "test -f second || { touch second; exit 1; }; wc -l > count"
retries = 2
"#,
    );
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("count").trim(), "10", "{err}");
    assert_eq!(summary(&err)["cons"][..3], ["ok", "0", "2"], "{err}");
    let exited: Vec<&serde_json::Value> = evs
        .iter()
        .filter(|e| e["event"] == "exited" && e["process"] == "cons")
        .collect();
    assert_eq!(exited.len(), 1, "{evs:#?}");
    assert_eq!(exited[0]["attempt"], 2, "{evs:#?}");
    assert!(exited[0]["duration_ms"].is_u64(), "{evs:#?}");
}
both!(a_group_members_retries_are_counted);

/// A member found ready by its nested run is ready here: a process with
/// `after = { member = "ready" }` starts while the member still runs.
fn a_group_members_readiness_is_relayed(c: &Cluster) {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["server", "client"]
[process.server]
shell = 'echo listening; read x <&$JOBGRAPH_FD_RPC; echo "got $x"'
ready = { log = "listening", timeout = "60s" }
[process.client]
shell = 'while [ ! -f go ]; do sleep 0.05; done; echo hello >&$JOBGRAPH_FD_RPC'
[process.starter]
after = { server = "ready" }
shell = "touch go"
"#,
    );
    let (code, evs, err) = c.run_events(&job, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(pos(&evs, "server", "ready") < pos(&evs, "starter", "started"));
    assert!(pos(&evs, "starter", "started") < pos(&evs, "server", "exited"));
}
both!(a_group_members_readiness_is_relayed);

/// A job file read from stdin cannot be run again on a node: a group that
/// needs a group unit runs on the engine's node, and a note says why.
fn a_file_from_stdin_runs_its_groups_here(c: &Cluster) {
    let job = Job::new(
        "[pipe.rpc]\nbetween = [\"a\", \"b\"]\n[process.a]\nshell = \"echo hi >&$JOBGRAPH_FD_RPC\"\n[process.b]\nshell = \"read x <&$JOBGRAPH_FD_RPC; echo \\\"b got $x\\\"\"\n",
    );
    let mut cmd = c.command(job.dir.path());
    cmd.current_dir(job.dir.path()).arg("-");
    let out = assert_cmd::Command::from_std(cmd)
        .pipe_stdin(job.path())
        .unwrap()
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let (out_text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(out_text.contains("b | b got hi"), "{out_text}");
    assert!(err.contains("read from stdin"), "{err}");
}
both!(a_file_from_stdin_runs_its_groups_here);
