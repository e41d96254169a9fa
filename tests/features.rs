//! Everyday features through the binary: always steps, for_each, tty,
//! http readiness and health (liveness) probes.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn an_always_step_runs_after_a_failure_and_the_run_still_fails() {
    let job = Job::new(
        r#"
[process.build]
shell = "exit 1"
[process.test]
after = ["build"]
shell = "touch tested"
[process.other]
shell = "sleep 30"
[process.cleanup]
after = ["build", "test", "other"]
always = true
shell = "touch cleaned"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(job.file("cleaned").exists(), "{err}");
    assert!(!job.file("tested").exists());
    // It waited for every target to be finished, the stopped one included.
    assert!(pos(&evs, "other", "exited") < pos(&evs, "cleanup", "started"));
}

#[test]
fn an_always_step_runs_on_the_first_signal_within_the_grace() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "2s"
[process.work]
shell = "touch started; sleep 30"
[process.cleanup]
after = ["work"]
always = true
shell = "sleep 0.2; touch cleaned"
[process.slow]
after = ["work"]
always = true
shell = "sleep 30"
"#,
    );
    let mut engine = spawn_engine(&job, "started");
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20)).expect("ends");
    assert_eq!(status.code(), Some(130));
    assert!(job.file("cleaned").exists());
    assert!(wait_gone(&job, Duration::from_secs(5)).is_empty());
}

#[test]
fn an_always_step_does_not_run_after_a_second_signal() {
    let job = Job::new(
        r#"
[process.work]
shell = "trap '' INT TERM; touch started; sleep 30"
[process.cleanup]
after = ["work"]
always = true
shell = "touch cleaned"
"#,
    );
    let mut engine = spawn_engine(&job, "started");
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20)).expect("ends");
    assert_eq!(status.code(), Some(130));
    assert!(!job.file("cleaned").exists());
}

#[test]
fn for_each_makes_one_instance_per_item() {
    let job = Job::new(
        r#"
[process.convert]
for_each = ["a.csv", "b c.csv", "d.csv"]
shell = "echo '{{ item }}' > \"out-$JOBGRAPH_REPLICA\"; test \"$JOBGRAPH_ITEM\" = '{{ item }}'"
[process.report]
after = ["convert"]
shell = "cat out-0 out-1 out-2 > all"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("all"), "a.csv\nb c.csv\nd.csv\n");
    assert!(err.contains("convert[0..2]"), "{err}");
}

#[test]
fn for_each_expands_a_glob_sorted_relative_to_the_file() {
    let job = Job::new(
        r#"
[process.count]
for_each = { glob = "data/*.txt" }
cmd = ["sh", "-c", "wc -l < \"$JOBGRAPH_ITEM\" > \"$(basename \"$JOBGRAPH_ITEM\").n\""]
"#,
    );
    std::fs::create_dir(job.file("data")).unwrap();
    for (n, lines) in [("b.txt", 2), ("a.txt", 1), ("c.txt", 3)] {
        std::fs::write(job.file("data").join(n), "x\n".repeat(lines)).unwrap();
    }
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    for (n, lines) in [("a.txt", "1"), ("b.txt", "2"), ("c.txt", "3")] {
        assert_eq!(job.read(&format!("{n}.n")).trim(), lines);
    }
    assert_eq!(events_of(&evs, "count[2]")[0], "started");
    // An empty expansion is an error, before anything runs.
    let job = Job::new("[process.c]\nfor_each = { glob = \"none/*\" }\ncmd = [\"true\"]\n");
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("matches no file"), "{err}");
}

#[test]
fn tty_gives_the_process_a_terminal_and_its_lines_are_still_logged() {
    let job = Job::new(
        r#"
[process.t]
tty = true
shell = "if [ -t 1 ]; then echo on-a-tty; fi; echo to-stderr >&2"
[process.p]
shell = "if [ -t 1 ]; then echo on-a-tty; else echo on-a-pipe; fi"
"#,
    );
    let logs = job.file("logs");
    let (code, out, err) = job.run(&["--log-dir", logs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("t | on-a-tty\n"), "{out}");
    assert!(out.contains("t | to-stderr\n"), "{out}");
    assert!(out.contains("p | on-a-pipe\n"), "{out}");
    assert_eq!(
        std::fs::read_to_string(logs.join("t.log")).unwrap(),
        "on-a-tty\nto-stderr\n"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_http_probe_waits_for_the_status() {
    let port = free_port();
    let job = Job::new(&format!(
        r#"
[process.server]
daemon = true
cmd = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
ready = {{ http = "http://127.0.0.1:{port}/ready.txt", interval = "50ms", timeout = "20s" }}
stop_signal = "SIGINT"
[process.maker]
shell = "sleep 0.5; touch ready.txt"
[process.client]
after = {{ server = "ready" }}
shell = "test -f ready.txt"
"#
    ));
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    // 404 until the file exists: readiness came after it was made.
    assert!(
        pos(&evs, "maker", "exited") < pos(&evs, "server", "ready"),
        "{err}"
    );
}

#[test]
fn a_process_that_fails_its_health_check_is_stopped_failed_and_restarted() {
    let job = Job::new(
        r#"
[process.svc]
shell = "touch alive; sleep 0.5; rm -f alive; sleep 30"
health = { file = "alive", interval = "100ms", failures = 2 }
restart = "on-failure"
max_restarts = 1
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    let failed: Vec<_> = evs
        .iter()
        .filter(|e| e["event"] == "health-failed")
        .collect();
    assert_eq!(failed.len(), 2, "{evs:#?}");
    assert_eq!(failed[0]["failures"], 2);
    let rows = summary(&err);
    assert_eq!(rows["svc"][0], "failed", "{err}");
    assert!(
        rows["svc"]
            .last()
            .unwrap()
            .contains("failed its health check 2 times"),
        "{err}"
    );
    assert_eq!(
        events_of(&evs, "svc")
            .iter()
            .filter(|e| **e == "started")
            .count(),
        2
    );
}

#[test]
fn a_hung_health_command_fails_once_per_interval_not_every_other() {
    // Each check records when it started, then hangs: it is killed at the
    // next check time, and that check runs as soon as it is reaped.
    let job = Job::new(
        r#"
[process.svc]
shell = "sleep 60"
health = { cmd = ["sh", "-c", "date +%s%N >> checks; sleep 100"], interval = "2s", failures = 3 }
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        evs.iter().any(|e| e["event"] == "health-failed"),
        "{evs:#?}"
    );
    let starts = check_times(&job);
    assert_eq!(starts.len(), 3, "{starts:?}");
    // One interval (2 s) apart; two intervals (4 s) was the defect.
    gaps_under(&starts, 3_000);
    assert!(job.survivors().is_empty());
}

#[test]
fn a_healthy_process_is_left_alone() {
    let job = Job::new(
        r#"
[process.svc]
shell = "touch alive; sleep 0.8"
health = { file = "alive", interval = "100ms", failures = 1 }
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(!evs.iter().any(|e| e["event"] == "health-failed"));
}

#[test]
fn feature_examples_run() {
    examples_run(&["finally", "foreach", "health"]);
}

const RESUMABLE: &str = r#"
[process.a]
shell = "echo a >> ran"
[process.b]
after = ["a"]
shell = "echo b >> ran; test -f fixed"
[process.c]
after = ["b"]
shell = "echo c >> ran"
[process.d]
shell = "echo d >> ran"
"#;

#[test]
fn resume_reruns_only_what_did_not_succeed() {
    let job = Job::new(RESUMABLE);
    // Keep going, so that fail-fast does not stop `d` before it ends ok.
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    std::fs::write(job.file("fixed"), "").unwrap();
    std::fs::remove_file(job.file("ran")).unwrap();
    let (code, evs, err) = job.run_events(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    let mut ran: Vec<String> = job.read("ran").lines().map(String::from).collect();
    ran.sort();
    assert_eq!(ran, ["b", "c"], "{err}");
    assert_eq!(events_of(&evs, "a"), ["cached"]);
    assert_eq!(summary(&err)["d"][0], "cached", "{err}");
    // Resumed again: everything ended ok (or cached) last time.
    std::fs::remove_file(job.file("ran")).unwrap();
    let (code, _, err) = job.run(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(!job.file("ran").exists(), "{err}");
}

/// A full disk: an instance whose log lines could not all be written ended
/// ok, but `--resume` runs it again (its output is gone); the others stay
/// cached. /dev/full in place of a log file fails every write with ENOSPC.
#[test]
fn resume_reruns_what_lost_its_log_to_a_full_disk() {
    let job = Job::new("[process.a]\nshell = \"echo a >> ran; echo from-a\"\n[process.b]\nshell = \"echo b >> ran; echo from-b\"\n");
    let logs = job.file("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::symlink("/dev/full", logs.join("b.log")).unwrap();
    let dir = logs.to_str().unwrap();
    let (code, _, err) = job.run(&["--log-dir", dir]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot write the log file"), "{err}");
    std::fs::remove_file(logs.join("b.log")).unwrap();
    std::fs::remove_file(job.file("ran")).unwrap();
    let (code, _, err) = job.run(&["--log-dir", dir, "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("ran"), "b\n", "{err}");
    assert_eq!(summary(&err)["a"][0], "cached", "{err}");
    assert_eq!(job.read("logs/b.log"), "from-b\n");
}

/// The same when the console's stdout is on a full disk: every instance's
/// lines may be lost, so every one runs again.
#[test]
fn resume_reruns_everything_whose_console_output_was_lost() {
    let job = Job::new("[process.a]\nshell = \"echo a >> ran; echo from-a\"\n");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
        .args(["run", "--no-progress"])
        .arg(job.path())
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let (code, _, err) = job.run(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("ran"), "a\na\n", "{err}");
}

/// `--dry-run --resume` reads the journal as the run would, and says what
/// it would take from the cache; it runs nothing.
#[test]
fn a_dry_run_with_resume_says_what_would_be_cached() {
    let job = Job::new(RESUMABLE);
    let (_, out, err) = job.run(&["--dry-run", "--resume"]);
    assert!(
        out.contains("--resume: nothing would be taken from the cache"),
        "{out}{err}"
    );
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    let ran = job.read("ran");
    let (code, out, err) = job.run(&["--dry-run", "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--resume: 2 instance(s) ended ok in the last run, unchanged, and would be cached, not run: a, d\n"),
        "{out}"
    );
    assert_eq!(job.read("ran"), ran, "the dry run ran something");
}

#[test]
fn resume_reruns_a_changed_process_and_what_needs_it() {
    let job = Job::new(RESUMABLE);
    std::fs::write(job.file("fixed"), "").unwrap();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(job.file("ran")).unwrap();
    let text = std::fs::read_to_string(job.path()).unwrap();
    std::fs::write(job.path(), text.replace("echo a >>", "echo a  >>")).unwrap();
    let (code, _, err) = job.run(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    let mut ran: Vec<String> = job.read("ran").lines().map(String::from).collect();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c"], "{err}");
}

#[test]
fn resume_reruns_an_instance_whose_item_or_replica_count_changed() {
    let job = Job::new(
        r#"
[process.m]
for_each = ["a", "b"]
shell = 'echo "$JOBGRAPH_ITEM" >> ran'
[process.w]
replicas = 2
shell = 'echo "w of $JOBGRAPH_REPLICAS" >> ran'
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(job.file("ran")).unwrap();
    let text = std::fs::read_to_string(job.path()).unwrap();
    let text = text.replace(r#"["a", "b"]"#, r#"["c", "d"]"#);
    std::fs::write(job.path(), text.replace("replicas = 2", "replicas = 3")).unwrap();
    let (code, _, err) = job.run(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ran(&job), ["c", "d", "w of 3", "w of 3", "w of 3"], "{err}");
}

#[test]
fn resume_counts_a_cached_process_as_ready_and_started_for_its_waiters() {
    let job = Job::new(
        r#"
[process.a]
shell = "echo ready-line; sleep 0.2"
ready = { log = "ready-line" }
[process.b]
after = { a = "ready" }
shell = "echo b >> ran; test -f fixed"
[process.c]
after = { a = "start" }
shell = "echo c >> ran; test -f fixed"
"#,
    );
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    std::fs::write(job.file("fixed"), "").unwrap();
    std::fs::remove_file(job.file("ran")).unwrap();
    let (code, evs, err) = job.run_events(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events_of(&evs, "a"), ["cached"]);
    assert_eq!(ran(&job), ["b", "c"], "{err}");
}

/// The sorted lines of the job's `ran` file.
fn ran(job: &Job) -> Vec<String> {
    let mut ran: Vec<String> = job.read("ran").lines().map(String::from).collect();
    ran.sort();
    ran
}

#[test]
fn a_process_skipped_without_any_failure_fails_the_run() {
    // `a` ends ok without ever being ready: `b` can never start.
    let job = Job::new(
        r#"
[process.a]
shell = "true"
ready = { log = "never printed" }
[process.b]
after = { a = "ready" }
shell = "true"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(events_of(&evs, "b"), ["skipped"], "{evs:#?}");
}

#[test]
fn a_journal_of_another_graph_or_a_corrupt_one_is_reported_and_ignored() {
    let job = Job::new(RESUMABLE);
    std::fs::write(job.file("fixed"), "").unwrap();
    let state = job.file("state.journal");
    std::fs::write(
        &state,
        "{\"run\":\"x\",\"graph\":\"other\",\"version\":1}\n",
    )
    .unwrap();
    let (code, _, err) = job.run(&["--resume", "--state", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("belongs to graph `other`"), "{err}");
    assert_eq!(job.read("ran").lines().count(), 4);
    std::fs::write(&state, [0xff, 0xfe, b'\n', b'{']).unwrap();
    let (code, _, err) = job.run(&["--resume", "--state", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn a_hung_http_server_fails_its_health_check_once_per_interval() {
    // The server accepts and never answers; each connection is noted. A
    // request that hangs until its limit used to push the next one an
    // interval further: checks were two intervals apart.
    let port = free_port();
    let job = Job::new(&format!(
        r#"
[process.svc]
cmd = ["python3", "-c", "import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(64)\nkeep = []\nwhile True:\n    c, _ = s.accept(); keep.append(c)\n    open('checks', 'a').write(str(time.time_ns()) + '\\n')"]
ready = {{ tcp = "127.0.0.1:{port}", interval = "100ms" }}
health = {{ http = "http://127.0.0.1:{port}/", interval = "2s", failures = 3 }}
"#
    ));
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        evs.iter().any(|e| e["event"] == "health-failed"),
        "{evs:#?}"
    );
    let starts = check_times(&job);
    // The readiness connect, then the three health requests.
    assert!(starts.len() >= 4, "{starts:?}");
    gaps_under(&starts[1..], 3_000);
    assert!(job.survivors().is_empty());
}

#[test]
fn a_server_whose_accept_queue_is_full_fails_a_tcp_health_check() {
    // It listens and never accepts; its own connects fill the queue, so a
    // probe's connect hangs (the kernel retries the SYN for minutes). The
    // connect gets the check's limit, then fails.
    let port = free_port();
    let job = Job::new(&format!(
        r#"
[process.svc]
timeout = "60s"
cmd = ["python3", "-c", "import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(0)\nkeep = []\nfor _ in range(4):\n    c = socket.socket(); c.setblocking(False)\n    try: c.connect(('127.0.0.1', {port}))\n    except OSError: pass\n    keep.append(c)\nopen('full', 'w').close()\ntime.sleep(100)"]
ready = {{ file = "full", interval = "100ms" }}
health = {{ tcp = "127.0.0.1:{port}", interval = "500ms", failures = 2 }}
"#
    ));
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(evs.iter().any(|e| e["event"] == "health-failed"), "{err}");
    let exited = evs.iter().find(|e| e["event"] == "exited").unwrap();
    assert_ne!(exited["status"], "timed out", "{exited}");
}

/// The times (ns) a job's checks noted in its `checks` file.
fn check_times(job: &Job) -> Vec<u128> {
    job.read("checks")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Each of `times` (ns) follows the one before within `max_ms`.
fn gaps_under(times: &[u128], max_ms: u128) {
    for pair in times.windows(2) {
        let gap_ms = (pair[1] - pair[0]) / 1_000_000;
        assert!(gap_ms < max_ms, "{gap_ms} ms apart: {times:?}");
    }
}
