//! Cases from peers' test suites (tini, dumb-init, GNU parallel, DAGMan),
//! as job files through the binary: what an init or a job runner is
//! expected to get right at the edges.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONTAINMENTS: [&str; 2] = ["pid-namespace", "marker"];

/// Runs the job under a containment (60 s at most): (exit code, stderr).
fn run_in(job: &Job, containment: &str) -> (i32, String) {
    let mut cmd = jobgraph();
    if containment == "marker" {
        cmd.env("JOBGRAPH_CONTAINMENT", "marker");
    }
    let out = cmd
        .args(["run", "--no-progress"])
        .arg(job.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

/// tini's pgroup tests: a job that moves itself into another process group
/// is out of reach of a signal to its own group; it must still be stopped.
#[test]
fn a_process_that_leaves_its_group_is_still_stopped() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "500ms"
[process.mover]
timeout = "500ms"
cmd = ["python3", "-c", """
import os, signal, time
r, w = os.pipe()
kid = os.fork()
if kid == 0:
    os.setpgid(0, 0)
    os.write(w, b"x")
    time.sleep(60)
    os._exit(0)
os.read(r, 1)
os.setpgid(0, kid)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(60)
"""]
"#,
    );
    for containment in CONTAINMENTS {
        let start = Instant::now();
        let (code, err) = run_in(&job, containment);
        assert_eq!(code, 1, "{containment}: {err}");
        assert!(start.elapsed() < Duration::from_secs(20), "{err}");
        assert_eq!(summary(&err)["mover"][0], "timed out", "{err}");
        assert!(job.survivors().is_empty(), "{containment}");
    }
}

/// tini's sigconf test: the engine is started with SIGCHLD blocked, or
/// ignored; it must still see every exit and exit with the run's code.
#[test]
fn an_engine_started_with_sigchld_blocked_or_ignored_sees_every_exit() {
    let job = Job::new("[process.nap]\nshell = \"sleep 0.2\"\n");
    let bin = assert_cmd::cargo::cargo_bin("jobgraph");
    for how in [
        "pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})",
        "signal(signal.SIGCHLD, signal.SIG_IGN)",
    ] {
        for containment in CONTAINMENTS {
            let script = format!(
                "import os, signal, sys\nsignal.{how}\nos.execv(sys.argv[1], sys.argv[1:])"
            );
            let mut cmd = Command::new("python3");
            cmd.args(["-c", &script])
                .arg(&bin)
                .args(["run", "--no-progress"])
                .arg(job.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if containment == "marker" {
                cmd.env("JOBGRAPH_CONTAINMENT", "marker");
            }
            let mut child = cmd.spawn().unwrap();
            let status = wait_exit(&mut child, Duration::from_secs(20));
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(0),
                "{how} under {containment}"
            );
        }
    }
}

/// dumb-init's and tini's promise: a job starts with every signal at its
/// default action, glibc's internal real-time signals (32, 33) included.
/// The first replica is launched with posix_spawn, the others without
/// waiting for their exec: both launchers keep it.
#[test]
fn a_job_starts_with_no_signal_ignored_or_blocked() {
    let job = Job::new(
        "[process.mask]\nreplicas = 3\nshell = \"grep -E '^Sig(Ign|Blk)' /proc/self/status > mask{replica}.txt\"\n",
    );
    let (code, err) = run_in(&job, "pid-namespace");
    assert_eq!(code, 0, "{err}");
    for r in 0..3 {
        assert_eq!(
            job.read(&format!("mask{r}.txt")),
            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "replica {r}"
        );
    }
}

/// A third signal neither changes the exit code nor the verdict: the first
/// signal decides them (tini and dumb-init exit with the first signal's code).
#[test]
fn the_first_signal_decides_the_exit_code_whatever_follows() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "3s"
[process.slow]
shell = "trap 'sleep 0.6; exit 0' TERM; touch up; while :; do sleep 0.05; done"
"#,
    );
    let mut engine = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
        .args(["run", "--no-progress"])
        .arg(job.path())
        .env("JOBGRAPH_CONTAINMENT", "marker")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("up"), Duration::from_secs(20)));
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    use nix::sys::signal::{kill, Signal};
    kill(pid, Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    kill(pid, Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    kill(pid, Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20));
    let mut err = String::new();
    if let Some(mut e) = engine.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(!err.contains("interrupted by SIGTERM"), "{err}");
}

/// GNU parallel's --joblog and DAGMan's node logs never clobber the DAG:
/// `--events` through a hard link to the job file is refused like the file itself.
#[test]
fn events_through_a_hard_link_to_the_job_file_are_refused() {
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let link = job.file("link.toml");
    std::fs::hard_link(job.path(), &link).unwrap();
    let before = std::fs::read_to_string(job.path()).unwrap();
    let (code, _, err) = job.run(&["--events", link.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the job file itself"), "{err}");
    assert_eq!(std::fs::read_to_string(job.path()).unwrap(), before);
}

/// A process's own output file over the job file, the events, the journal
/// or a `--log-dir` log: refused before anything runs, nothing overwritten.
#[test]
fn a_process_output_file_never_overwrites_what_the_run_reads_or_writes() {
    let job =
        Job::new("[process.a]\nshell = \"echo clobbered\"\nstdout = { file = \"job.toml\" }\n");
    let before = std::fs::read_to_string(job.path()).unwrap();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("output-clash"), "{err}");
    assert_eq!(std::fs::read_to_string(job.path()).unwrap(), before);
    let job = Job::new("[process.a]\nshell = \"echo x\"\nreplicas = 2\nstdout = { file = \"out-{replica}.log\" }\n");
    for (args, clash) in [
        (vec!["--events", "out-1.log"], "into the events"),
        (vec!["--state", "./out-0.log"], "into the journal"),
        (vec!["--log-dir", "."], "is in --log-dir"),
    ] {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args[1] = job.file(&args[1]).display().to_string();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = job.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(clash), "{args:?}: {err}");
    }
    assert!(!job.file("out-0.log").exists() && !job.file("out-1.log").exists());
}

/// `> f 2>&1` under two spellings, and replicas sharing one output file
/// (GNU parallel's `::: a b c > out`): every line is kept.
#[test]
fn writers_sharing_an_output_file_never_wipe_each_other() {
    let job = Job::new(
        r#"
[process.a]
shell = "echo out1; echo err1 >&2; echo out2"
stdout = { file = "both.txt" }
stderr = { file = "./both.txt" }
[process.r]
replicas = 3
shell = "echo rep $JOBGRAPH_REPLICA"
stdout = { file = "reps.txt" }
"#,
    );
    std::fs::write(job.file("both.txt"), "from before\n").unwrap();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("both.txt"), "out1\nerr1\nout2\n");
    let mut reps: Vec<String> = job.read("reps.txt").lines().map(String::from).collect();
    reps.sort();
    assert_eq!(reps, ["rep 0", "rep 1", "rep 2"]);
}

/// DAGMan's rescue DAG keeps the output of DONE nodes: a `--resume` run
/// keeps the log of what it takes from the cache, and empties the others.
#[test]
fn a_resumed_run_keeps_the_logs_of_cached_instances() {
    let job = Job::new(
        "[process.a]\nshell = \"echo output-of-a\"\n[process.b]\nafter = [\"a\"]\nshell = \"echo b-ran; exit 1\"\n[process.c]\nafter = [\"b\"]\nshell = \"echo c\"\n",
    );
    let logs = job.file("logs");
    let logs = logs.to_str().unwrap();
    let (code, _, err) = job.run(&["--log-dir", logs]);
    assert_eq!(code, 1, "{err}");
    std::fs::write(job.file("logs/c.log"), "stale\n").unwrap();
    let (code, _, err) = job.run(&["--resume", "--log-dir", logs]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&err)["a"][0], "cached", "{err}");
    assert_eq!(job.read("logs/a.log"), "output-of-a\n");
    assert_eq!(job.read("logs/b.log"), "b-ran\n");
    assert_eq!(job.read("logs/c.log"), "");
}

/// multiprocessing's daemon producer feeding a reader that reads to the end:
/// the daemon is stopped only after the reader finishes, so `validate` warns.
#[test]
fn a_reader_of_daemons_only_is_warned_about() {
    let job = Job::new(
        "[process.d]\ndaemon = true\nshell = \"yes\"\n[pipe.p]\nfrom = \"d\"\nto = \"c\"\n[process.c]\nshell = \"wc -l\"\n",
    );
    let out = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("daemon-stream"), "{err}");
    assert!(err.contains("no end-of-file"), "{err}");
}

/// process-compose's custom stop signal: a leftover still in the job's
/// group gets the job's `stop_signal` from the end-of-run sweep, and no
/// SIGTERM on top of it.
#[test]
fn the_sweep_sends_a_leftover_in_its_group_only_the_stop_signal() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "2s"
[process.forker]
stop_signal = "SIGINT"
cmd = ["python3", "-c", '''
import os, signal, time
if os.fork() == 0:
    got = []
    def h(s, f):
        open("got.txt", "a").write(signal.Signals(s).name + "\n")
        got.append(s)
    signal.signal(signal.SIGINT, h)
    signal.signal(signal.SIGTERM, h)
    os.close(1)
    os.close(2)
    end = time.time() + 5
    while not got and time.time() < end:
        time.sleep(0.02)
    time.sleep(0.3)
    os._exit(0)
''']
cwd = "."
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left processes behind"), "{err}");
    assert_eq!(job.read("got.txt"), "SIGINT\n", "{err}");
}

/// multiprocessing's daemon sink on a Queue, as a log shipper: stopped at
/// the end of the work, it still gets every message first, even when it
/// reads for longer than `shutdown_grace`.
#[test]
fn a_daemon_reader_of_a_queue_drains_it_before_its_stop() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "1s"
[process.gen]
shell = "seq 1 3000"
[queue.q]
from = ["gen"]
to = ["shipper"]
[process.shipper]
daemon = true
shell = "i=0; while read -r l; do echo $l >> got.txt; i=$((i+1)); if [ $((i % 500)) = 0 ]; then sleep 0.3; fi; done"
cwd = "."
"#,
    );
    let (code, _, err) = job.run(&["--no-progress"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3000 in, 3000 out"), "{err}");
    assert_eq!(job.read("got.txt").lines().count(), 3000, "{err}");
}

/// A daemon reader that ends by itself at end-of-file, as its release comes:
/// its end, reaped in the stop pass, was once taken for a stall (exit 1 in
/// about 3 runs of 100). Repeated, as the race is narrow.
#[test]
fn a_daemon_reader_ending_at_its_release_is_not_a_stall() {
    let job = Job::new(
        "[process.gen]\nshell = \"seq 1 10\"\n[queue.q]\nfrom = [\"gen\"]\nto = [\"sink\"]\n[process.sink]\ndaemon = true\nshell = \"cat > /dev/null\"\n",
    );
    for _ in 0..60 {
        let (code, _, err) = job.run(&["--no-progress"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("10 in, 10 out"), "{err}");
    }
}

/// A daemon reader that never reads is stopped after `shutdown_grace`,
/// and what it left is counted lost: the drain never hangs the run.
#[test]
fn a_daemon_reader_that_does_not_read_is_stopped_after_the_grace() {
    let job = Job::new(
        "[graph]\nshutdown_grace = \"500ms\"\n[process.gen]\nshell = \"seq 1 100\"\n[queue.q]\nfrom = [\"gen\"]\nto = [\"sink\"]\n[process.sink]\ndaemon = true\nshell = \"exec sleep 30\"\n",
    );
    let start = Instant::now();
    let (code, _, err) = job.run(&["--no-progress"]);
    assert_eq!(code, 0, "{err}");
    assert!(start.elapsed() < Duration::from_secs(15), "{err}");
    assert!(err.contains("100 lost"), "{err}");
}

/// A rescue run must never hang on its journal: a FIFO (or a device) as
/// `--state` is refused before anything runs.
#[test]
fn a_fifo_as_the_journal_is_refused_not_waited_on() {
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let fifo = job.file("state.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, _, err) = job.run(&["--resume", "--state", fifo.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

/// tini and dumb-init act on a signal however early it comes. A SIGTERM
/// that reaches `run` while it still reads its file interrupts the run as
/// soon as it starts: exit 143, with its events. Without that, jobgraph died
/// of the signal (no exit code of its own, no events). The file is long
/// enough to take a while to read; the signal is sent once `/proc` shows it
/// held.
#[test]
fn a_signal_while_the_file_is_read_interrupts_the_run() {
    let mut text = String::new();
    text.push_str("[process.p0]\nshell = \"true\"\n");
    for i in 1..=5000 {
        text.push_str(&format!(
            "[process.p{i}]\nshell = \"true\"\nafter = [\"p{}\"]\n",
            i - 1
        ));
    }
    text.push_str("[process.last]\nshell = \"touch ran\"\nafter = [\"p5000\"]\n");
    for containment in ["pid-namespace", "marker"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.toml");
        std::fs::write(&file, &text).unwrap();
        let events = dir.path().join("events.ndjson");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"));
        if containment == "marker" {
            cmd.env("JOBGRAPH_CONTAINMENT", "marker");
        }
        let mut engine = cmd
            .args(["run", "--no-progress", "--events"])
            .arg(&events)
            .arg(&file)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            // A file: the summary of 5,002 rows would fill a pipe.
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        wait_for_signal_bit(engine.id(), "SigBlk:", libc::SIGTERM);
        let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_exit(&mut engine, Duration::from_secs(30));
        let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        let err: String = err.lines().rev().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(143),
            "{containment}: {err}"
        );
        let evs = std::fs::read_to_string(&events).unwrap_or_default();
        assert!(evs.contains("\"run-finished\""), "{containment}");
        assert!(!dir.path().join("ran").exists(), "{containment}: it ran");
    }
}

/// A SIGUSR2 (forwarded to running processes) or SIGUSR1 (the status table)
/// that comes while `run` still reads its file, before anything runs, is
/// dropped: held, it reached the first processes to start and killed them.
#[test]
fn a_sigusr2_before_anything_runs_is_dropped() {
    let mut text = String::from("[process.last]\nshell = \"touch ran\"\n");
    for i in 0..5000 {
        text.push_str(&format!("[process.f{i}]\nshell = \"true\"\n"));
    }
    for containment in ["pid-namespace", "marker"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.toml");
        std::fs::write(&file, &text).unwrap();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"));
        if containment == "marker" {
            cmd.env("JOBGRAPH_CONTAINMENT", "marker");
        }
        let mut engine = cmd
            .args(["run", "--no-progress", "--only", "last"])
            .arg(&file)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for_signal_bit(engine.id(), "SigIgn:", libc::SIGUSR2),
            "{containment}: SIGUSR2 not set aside while the file is read"
        );
        let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
        let status = wait_exit(&mut engine, Duration::from_secs(30));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{containment}");
        assert!(dir.path().join("ran").exists(), "{containment}");
    }
}

/// Waits (up to 5 s) until `sig` is in the `field` mask (`SigBlk:`,
/// `SigIgn:`) of `/proc/PID/status`; whether it got there.
fn wait_for_signal_bit(pid: u32, field: &str, sig: i32) -> bool {
    let status = format!("/proc/{pid}/status");
    let set = || {
        std::fs::read_to_string(&status).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & (1 << (sig - 1)) != 0)
        })
    };
    let start = Instant::now();
    while !set() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_micros(200));
    }
    set()
}
