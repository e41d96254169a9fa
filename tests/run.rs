//! `jobgraph run` on real processes: order, concurrency, locks, environments,
//! joins, failures, signals and hygiene. Every process a test starts carries a
//! unique tag in its environment; a guard kills anything still tagged when the
//! test ends, pass or fail, and the hygiene tests assert nothing survived.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn after_runs_in_topological_order() {
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
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("order"), "a\nb\nc\n");
}

#[test]
fn independent_processes_run_at_the_same_time() {
    let job = Job::new(&format!(
        "[process.x]\nshell = '{}'\n[process.y]\nshell = '{}'\n",
        stamp("x", "0.5"),
        stamp("y", "0.5")
    ));
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let iv = intervals(&job.read("stamps"));
    assert_eq!(iv.len(), 2);
    // Overlap: each started before the other ended.
    assert!(iv[0].1 < iv[1].2 && iv[1].1 < iv[0].2, "no overlap: {iv:?}");
}

#[test]
fn a_lock_is_held_by_at_most_capacity_processes() {
    let mut body = String::from("[lock.one]\n[lock.two]\ncapacity = 2\n");
    for i in 0..3 {
        body.push_str(&format!(
            "[process.a{i}]\nshell = '{}'\nlocks = [\"one\"]\n",
            stamp(&format!("one{i}"), "0.2")
        ));
    }
    for i in 0..4 {
        body.push_str(&format!(
            "[process.b{i}]\nshell = '{}'\nlocks = [\"two\"]\n",
            stamp(&format!("two{i}"), "0.2")
        ));
    }
    let job = Job::new(&body);
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let iv = intervals(&job.read("stamps"));
    for (lock, cap) in [("one", 1), ("two", 2)] {
        let mine: Vec<_> = iv.iter().filter(|x| x.0.starts_with(lock)).collect();
        assert_eq!(mine.len(), if lock == "one" { 3 } else { 4 });
        let mut max = 0;
        for a in &mine {
            // How many hold the lock at the moment `a` starts.
            let holding = mine.iter().filter(|b| b.1 <= a.1 && a.1 < b.2).count();
            max = max.max(holding);
        }
        assert!(
            max <= cap,
            "lock {lock}: {max} holders at once, capacity {cap}: {mine:?}"
        );
        assert_eq!(max, cap, "lock {lock} was never used to capacity: {mine:?}");
    }
}

#[test]
fn max_parallel_bounds_running_processes() {
    let mut body = String::from("[graph]\nmax_parallel = 2\n");
    for i in 0..5 {
        body.push_str(&format!(
            "[process.p{i}]\nshell = '{}'\n",
            stamp(&format!("p{i}"), "0.15")
        ));
    }
    let job = Job::new(&body);
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let iv = intervals(&job.read("stamps"));
    let most = iv
        .iter()
        .map(|a| iv.iter().filter(|b| b.1 <= a.1 && a.1 < b.2).count())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} at once: {iv:?}");
}

#[test]
fn fork_inherits_and_spawn_starts_clean() {
    let job = Job::new(
        r#"
[process.parent]
shell = "sleep 0.3"
env = { CHAIN = "from-parent" }
[process.forked]
parent = "parent"
env = { OWN = "own" }
shell = 'echo "fork OUTER=${OUTER-unset} CHAIN=${CHAIN-unset} OWN=$OWN TAG=${JGTEST_TAG:+set} NAME=$JOBGRAPH_NAME" >> envs'
[process.spawned]
parent = "parent"
start = "spawn"
env = { OWN = "own" }
shell = 'echo "spawn OUTER=${OUTER-unset} CHAIN=${CHAIN-unset} OWN=$OWN TAG=${JGTEST_TAG:+set} PATH=${PATH:+set}" >> envs'
"#,
    );
    let out = jobgraph()
        .arg("run")
        .arg(job.path())
        .env("OUTER", "outer")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envs = job.read("envs");
    assert!(
        envs.contains("fork OUTER=outer CHAIN=from-parent OWN=own TAG=set NAME=forked"),
        "{envs}"
    );
    assert!(
        envs.contains("spawn OUTER=unset CHAIN=unset OWN=own TAG=set PATH=set"),
        "{envs}"
    );
}

#[test]
fn replicas_get_their_index() {
    let job = Job::new(
        r#"
[process.w]
replicas = 3
shell = "echo w{replica} $JOBGRAPH_REPLICA/$JOBGRAPH_REPLICAS >> reps"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<String> = job.read("reps").lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["w0 0/3", "w1 1/3", "w2 2/3"]);
}

#[test]
fn parent_waits_for_children_and_daemons_stop_after() {
    let job = Job::new(
        r#"
[process.boss]
shell = "true"
[process.helper]
parent = "boss"
shell = "sleep 0.4"
[process.watch]
parent = "boss"
daemon = true
shell = "exec sleep 30"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    // The daemon is stopped only once the non-daemon child finished.
    assert!(
        pos(&evs, "helper", "exited") < pos(&evs, "watch", "stopping"),
        "{evs:#?}"
    );
    assert!(err.contains("watch") && err.contains("stopped"), "{err}");
    assert!(job.survivors().is_empty());
}

#[test]
fn shutdown_stops_dependents_before_what_they_started_after() {
    let job = Job::new(
        r#"
[process.main]
shell = "sleep 0.3"
[process.db]
daemon = true
shell = "trap 'echo db-stopped >> order; exit 0' TERM; while :; do sleep 0.05; done"
[process.api]
daemon = true
after = { db = "start" }
shell = "trap 'sleep 0.2; echo api-stopped >> order; exit 0' TERM; while :; do sleep 0.05; done"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("order"), "api-stopped\ndb-stopped\n", "{err}");
}

#[test]
fn fail_fast_stops_the_others() {
    let job = Job::new(
        r#"
[process.bad]
shell = "sleep 0.2; exit 3"
[process.slow]
shell = "sleep 30"
[process.later]
after = ["slow"]
shell = "true"
"#,
    );
    let start = Instant::now();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "slow was not stopped"
    );
    assert!(err.contains("bad failed with exit code 3"), "{err}");
    let rows = summary(&err);
    assert_eq!(rows["bad"][0], "failed");
    assert_eq!(rows["slow"][0], "stopped");
    assert_eq!(rows["later"][0], "skipped");
}

#[test]
fn keep_going_skips_dependents_transitively() {
    let job = Job::new(
        r#"
[process.a]
shell = "exit 1"
[process.b]
after = ["a"]
shell = "true"
[process.c]
after = ["b"]
shell = "true"
[process.d]
shell = "sleep 0.2"
[process.e]
after = { a = "exit" }
shell = "true"
"#,
    );
    let (code, evs, err) = job.run_events(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    let rows = summary(&err);
    assert_eq!(rows["a"][0], "failed");
    assert_eq!(rows["b"][0], "skipped");
    assert_eq!(rows["c"][0], "skipped");
    assert_eq!(rows["d"][0], "ok");
    assert_eq!(rows["e"][0], "ok");
    assert_eq!(events_of(&evs, "c"), ["skipped"]);
}

#[test]
fn fail_fast_false_in_the_file_keeps_going_too() {
    let job = Job::new("[graph]\nfail_fast = false\n[process.a]\nshell = \"exit 1\"\n[process.d]\nshell = \"sleep 0.2\"\n");
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1);
    assert_eq!(summary(&err)["d"][0], "ok", "{err}");
}

#[test]
fn timeout_stops_and_fails() {
    let job = Job::new("[process.slow]\nshell = \"sleep 30\"\ntimeout = \"300ms\"\n");
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&err)["slow"][0], "timed out");
    assert_eq!(events_of(&evs, "slow"), ["started", "stopping", "exited"]);
    assert!(err.contains("timed out after 300ms"), "{err}");
}

#[test]
fn retries_rerun_until_success() {
    let job = Job::new(
        r#"
[process.flaky]
shell = "echo x >> tries; test $(wc -l < tries) -ge 3"
retries = 3
retry_delay = "50ms"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("tries").lines().count(), 3);
    assert_eq!(summary(&err)["flaky"][2], "3", "{err}");
    assert_eq!(
        events_of(&evs, "flaky")
            .iter()
            .filter(|e| **e == "retrying")
            .count(),
        2
    );
}

#[test]
fn retries_run_out() {
    let job = Job::new("[process.never]\nshell = \"exit 2\"\nretries = 1\n");
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1);
    let rows = summary(&err);
    assert_eq!(rows["never"][..3], ["failed", "2", "2"], "{err}");
}

#[test]
fn success_codes_decide_success() {
    let job = Job::new("[process.three]\nshell = \"exit 3\"\nsuccess_codes = [0, 3]\n[process.zero]\nshell = \"exit 0\"\nsuccess_codes = [1]\n");
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1);
    let rows = summary(&err);
    assert_eq!(rows["three"][0], "ok", "{err}");
    assert_eq!(rows["zero"][0], "failed", "{err}");
}

#[test]
fn only_runs_the_subgraph_and_what_it_needs() {
    let job = Job::new(
        r#"
[process.a]
shell = "echo a >> ran"
[process.b]
after = ["a"]
shell = "echo b >> ran"
[process.c]
shell = "echo c >> ran"
"#,
    );
    let (code, _, err) = job.run(&["--only", "b"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("ran"), "a\nb\n");
    assert!(!summary(&err).contains_key("c"));
}

#[test]
fn a_command_that_cannot_start_is_a_clear_failure() {
    let job = Job::new("[process.ghost]\ncmd = [\"./no-such-program\"]\n[process.nodir]\ncmd = [\"true\"]\ncwd = \"missing-dir\"\n");
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ghost: cannot run `./no-such-program`: no such file or directory"),
        "{err}"
    );
    assert!(
        err.contains("nodir: working directory") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(summary(&err)["ghost"][..3], ["failed", "not run", "1"]);
}

/// After its first exec a program is launched without waiting for the
/// next ones: one that then fails (here the file was replaced by text that
/// is no program) ends that attempt with 127, and the note says why.
#[test]
fn an_exec_that_fails_after_a_first_good_one_is_exit_127_with_the_reason() {
    let job = Job::new("[process.p]\ncmd = [\"./prog\"]\nretries = 1\n");
    let prog = job.file("prog");
    let script =
        "#!/bin/sh\nprintf 'no program' > prog.new\nchmod +x prog.new\nmv prog.new prog\nexit 3\n";
    std::fs::write(&prog, script).unwrap();
    let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&prog, mode.clone()).unwrap();
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("p: cannot run `./prog`: exec format error (not a program: a script needs a `#!` line) (exit code 127)"),
        "{err}"
    );
    let codes: Vec<_> = evs
        .iter()
        .filter(|e| e["event"] == "exited")
        .map(|e| e["code"].clone())
        .collect();
    assert_eq!(codes, [3, 127], "{err}");
    // A second process of the same program is launched the same way; it ran
    // nothing, so it has no peak RSS (the engine's memory is not its).
    let job = Job::new("[process.first]\ncmd = [\"./prog\"]\n[process.second]\ncmd = [\"./prog\"]\nafter = { first = \"exit\" }\n");
    let prog = job.file("prog");
    std::fs::write(&prog, script).unwrap();
    std::fs::set_permissions(&prog, mode).unwrap();
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    let rows = summary(&err);
    assert_eq!(rows["second"][..3], ["failed", "127", "1"], "{err}");
    let row = err
        .lines()
        .find(|l| l.starts_with("second "))
        .unwrap_or_default();
    assert!(!row.contains("MiB") && row.contains(" - "), "{err}");
}

/// make's background helper: a process a job left running writes after the
/// job ended and its output's drain passed. Its lines are the job's, and it
/// is not killed by SIGPIPE at that write: it runs on until the run ends.
#[test]
fn a_leftover_helper_writes_on_after_its_job_ended() {
    let job = Job::new(
        r#"
[process.bg]
shell = "(sleep 1; touch before; echo helper still alive; touch after) & echo launched"
[process.longer]
shell = "sleep 2"
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(job.file("after").exists(), "{out}{err}");
    assert!(out.contains("bg     | helper still alive\n"), "{out}");
    assert_eq!(summary(&err)["bg"][0], "ok", "{err}");
}

/// A line past 64 KiB is printed in pieces, each cut between two UTF-8
/// characters: no piece holds half of one.
#[test]
fn a_long_line_is_cut_between_characters() {
    let job =
        Job::new("[process.long]\nshell = \"printf x; yes é | head -n 40000 | tr -d '\\\\n'\"\n");
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\u{fffd}'), "a character was split");
    let text: String = out
        .lines()
        .map(|l| l.strip_prefix("long | ").unwrap_or(l))
        .collect();
    assert_eq!(text, format!("x{}", "é".repeat(40000)));
    assert!(out.lines().count() >= 2, "not cut at all");
}

#[test]
fn log_lines_are_prefixed_and_routed() {
    let job = Job::new(
        r#"
[process.talk]
shell = "echo out; echo err >&2; printf partial"
[process.quiet]
shell = "echo hidden"
stdout = "null"
[process.tofile]
shell = "echo saved"
stdout = { file = "saved.txt" }
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    // Names are padded to the longest (`tofile`), so columns line up.
    let has = |text: &str| out.lines().any(|l| l == format!("talk   | {text}"));
    assert!(has("out"), "{out}");
    assert!(has("err"), "stderr is logged too: {out}");
    assert!(
        has("partial"),
        "a final unterminated line is still a line: {out}"
    );
    assert!(!out.contains("hidden"), "{out}");
    assert_eq!(job.read("saved.txt"), "saved\n");
    assert!(!out.contains('\x1b'), "no colour off a terminal: {out:?}");
}

#[test]
fn log_dir_gets_one_file_per_instance() {
    let job = Job::new("[process.w]\nreplicas = 2\nshell = \"echo hi from {replica}\"\n");
    let logs = job.file("logs");
    let (code, _, err) = job.run(&["--log-dir", logs.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(logs.join("w.0.log")).unwrap(),
        "hi from 0\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("w.1.log")).unwrap(),
        "hi from 1\n"
    );
}

#[test]
fn events_describe_the_run() {
    let job = Job::new(
        "[process.a]\nshell = \"exit 0\"\n[process.b]\nafter = [\"a\"]\nshell = \"exit 4\"\n",
    );
    let (code, evs, _) = job.run_events(&[]);
    assert_eq!(code, 1);
    let started = &evs[pos(&evs, "a", "started")];
    assert!(started["pid"].as_i64().unwrap() > 0);
    assert!(started["ts"].as_str().unwrap().ends_with('Z'));
    let exited = &evs[pos(&evs, "b", "exited")];
    assert_eq!(exited["code"], 4);
    assert_eq!(exited["status"], "failed");
    assert!(exited["duration_ms"].is_u64());
    assert!(pos(&evs, "a", "exited") < pos(&evs, "b", "started"));
    assert_eq!(evs.last().unwrap()["event"], "run-finished");
}

#[test]
fn summary_has_every_column() {
    let job = Job::new("[process.a]\nshell = \"exit 0\"\n");
    let (_, _, err) = job.run(&[]);
    let header = err.lines().find(|l| l.starts_with("process")).unwrap();
    for col in [
        "process", "status", "exit", "attempts", "duration", "peak RSS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = &summary(&err)["a"];
    assert_eq!(row[..3], ["ok", "0", "1"]);
    assert!(
        row[4].ends_with("MiB") || row[4].ends_with("KiB"),
        "{row:?}"
    );
}

#[test]
fn peak_rss_is_the_process_own_when_large_and_a_bound_when_below_the_engines() {
    // The kernel counts the engine's memory in a child's peak until its exec:
    // a small figure says only "at most", a large one is the process's own.
    let job = Job::new(
        "[process.small]\ncmd = [\"true\"]\n\
         [process.big]\ncmd = [\"python3\", \"-c\", \"x = bytearray(120 << 20)\"]\n",
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let rows = summary(&err);
    let small = &rows["small"][4];
    assert!(small.starts_with("≤ ") && small.ends_with("MiB"), "{err}");
    let big = &rows["big"][4];
    let mib: f64 = big
        .trim_end_matches(" MiB")
        .parse()
        .expect("a measured figure");
    assert!(mib >= 120.0, "{err}");
}

#[test]
fn children_see_only_their_standard_descriptors() {
    let job = Job::new("[process.fds]\nshell = \"ls /proc/self/fd > fds.txt\"\nstdin = \"null\"\n");
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let mut fds: Vec<i32> = job
        .read("fds.txt")
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    fds.sort();
    // 0, 1, 2, and the one `ls` opened to read the directory.
    assert_eq!(fds.len(), 4, "leaked descriptors: {fds:?}");
    assert_eq!(fds[..3], [0, 1, 2]);
}

#[test]
fn an_orphan_holding_stdout_does_not_hang_the_run() {
    let job = Job::new("[process.leaky]\nshell = \"sleep 30 & echo parent done\"\n");
    let start = Instant::now();
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("parent done"), "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "hung on the orphan's pipe"
    );
    assert!(err.contains("left processes behind"), "{err}");
    assert!(job.survivors().is_empty(), "the orphan survived");
}

#[test]
fn a_double_forked_escapee_is_killed() {
    let job = Job::new(
        "[process.escape]\nshell = \"setsid sh -c 'sleep 60 & echo $! > escapee' < /dev/null > /dev/null 2>&1 & sleep 0.3\"\n",
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let pid: i32 = job
        .read("escapee")
        .trim()
        .parse()
        .expect("escapee pid recorded");
    assert!(pid > 0);
    assert!(
        wait_gone(&job, Duration::from_secs(2)).is_empty(),
        "escapee {pid} survived the run"
    );
}

#[test]
fn a_term_ignoring_process_is_killed_after_the_grace() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "300ms"
[process.main]
shell = "sleep 0.2"
[process.stubborn]
daemon = true
shell = "trap '' TERM; sh -c 'trap \"\" TERM; sleep 60' & while :; do sleep 0.1; done"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(events_of(&evs, "stubborn").contains(&"killed"), "{evs:#?}");
    assert!(
        wait_gone(&job, Duration::from_secs(2)).is_empty(),
        "a TERM-ignoring process survived"
    );
}

#[test]
fn no_zombies_pile_up_during_a_run() {
    let mut body = String::from("[process.long]\nshell = \"sleep 1\"\n");
    for i in 0..20 {
        body.push_str(&format!("[process.q{i}]\nshell = \"sh -c 'true &'\"\n"));
    }
    let after: Vec<String> = (0..20).map(|i| format!("\"q{i}\"")).collect();
    body.push_str(&format!(
        "[process.check]\nafter = [{}]\nshell = \"sleep 0.2; grep -l '^PPid:\\\\s*'$JOBGRAPH_ENGINE_PID'$' /proc/[0-9]*/status 2>/dev/null | while read f; do grep -q '^State:\\\\s*Z' $f && echo zombie; done > zombies; true\"\n",
        after.join(", ")
    ));
    let job = Job::new(&body);
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("zombies"), "", "zombies of the engine were found");
}

const STUBBORN_TREE: &str = r#"
[graph]
shutdown_grace = "500ms"
[process.a]
shell = "sleep 60 & sleep 60 & touch started; wait"
[process.b]
shell = "trap '' TERM INT; sleep 60"
[process.c]
start = "spawn"
shell = "setsid sh -c 'sleep 60' < /dev/null > /dev/null 2>&1 & sleep 60"
"#;

#[test]
fn sigint_stops_everything_and_exits_130() {
    let job = Job::new(STUBBORN_TREE);
    let mut engine = spawn_engine(&job, "started");
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20)).expect("engine did not exit");
    assert_eq!(status.code(), Some(130));
    assert!(
        wait_gone(&job, Duration::from_secs(2)).is_empty(),
        "survivors after SIGINT"
    );
}

#[test]
fn sigterm_exits_143() {
    let job = Job::new("[process.a]\nshell = \"touch started; sleep 60\"\n");
    let mut engine = spawn_engine(&job, "started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20)).expect("engine did not exit");
    assert_eq!(status.code(), Some(143));
    assert!(wait_gone(&job, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_second_sigint_kills_at_once() {
    let job = Job::new(
        "[graph]\nshutdown_grace = \"30s\"\n[process.a]\nshell = \"trap '' INT TERM; touch started; sleep 60\"\n",
    );
    let mut engine = spawn_engine(&job, "started");
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(10))
        .expect("second SIGINT did not kill at once");
    assert_eq!(status.code(), Some(130));
    assert!(wait_gone(&job, Duration::from_secs(2)).is_empty());
}

#[test]
fn sigkill_of_the_engine_leaves_no_survivor() {
    let job = Job::new(STUBBORN_TREE);
    let mut engine = spawn_engine(&job, "started");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        job.survivors().len() >= 5,
        "expected a tree of processes: {:?}",
        job.survivors()
    );
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    let left = wait_gone(&job, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "survivors after the engine was SIGKILLed: {left:?}"
    );
}

#[test]
fn runnable_examples_run() {
    examples_run(&[
        "hello", "five", "daemon", "contexts", "locks", "pipe", "duplex", "pipeline", "vars",
        "envfile", "include", "common",
    ]);
}

#[test]
fn programs_are_found_on_the_processs_own_path_and_cwd() {
    // `bin` on PATH is relative, so it resolves against the process's cwd (the job's directory).
    let job = Job::new(
        r#"
[process.viapath]
cmd = ["hello-tool"]
env = { PATH = "bin:/usr/bin:/bin" }
[process.relative]
cmd = ["./run.sh"]
cwd = "sub"
"#,
    );
    use std::os::unix::fs::PermissionsExt;
    for (path, text) in [
        ("bin/hello-tool", "#!/bin/sh\necho from-path\n"),
        ("sub/run.sh", "#!/bin/sh\necho from-cwd $(basename $PWD)\n"),
    ] {
        let f = job.file(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| from-path"), "{out}");
    assert!(out.contains("| from-cwd sub"), "{out}");
}

#[test]
fn a_retry_waits_for_a_free_slot() {
    let job = Job::new(
        r#"
[graph]
max_parallel = 1
[process.flaky]
shell = "echo x >> tries; test $(wc -l < tries) -ge 2"
retries = 1
retry_delay = "10ms"
[process.hog]
shell = "sleep 0.4; echo hog >> order"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("tries").lines().count(), 2);
    assert_eq!(summary(&err)["flaky"][..3], ["ok", "0", "2"]);
}

// ---- pipes and stream groups ------------------------------------------------

#[test]
fn a_one_way_pipe_carries_every_byte() {
    let job = Job::new(
        r#"
[pipe.numbers]
from = "gen"
to = "hash"
[process.gen]
cmd = ["seq", "1", "300000"]
[process.hash]
shell = "sha256sum > digest"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let want = Command::new("sh")
        .args(["-c", "seq 1 300000 | sha256sum"])
        .output()
        .unwrap();
    assert_eq!(job.read("digest"), String::from_utf8_lossy(&want.stdout));
}

#[test]
fn duplex_ping_pong_between_python_processes() {
    let job = Job::new(
        r#"
[pipe.rpc]
between = ["client", "server"]
[process.client]
cmd = ["python3", "-c", """
import os, socket
s = socket.socket(fileno=int(os.environ["JOBGRAPH_FD_RPC"]))
f = s.makefile("rw")
for i in range(100):
    f.write(f"ping {i}\\n"); f.flush()
    assert f.readline() == f"pong {i}\\n"
print("client ok", os.environ["JOBGRAPH_FD_RPC"])
"""]
[process.server]
cmd = ["python3", "-c", """
import os, socket
s = socket.socket(fileno=int(os.environ["JOBGRAPH_FD_RPC"]))
f = s.makefile("rw")
n = 0
for line in f:
    f.write(line.replace("ping", "pong")); f.flush(); n += 1
print("server saw", n)
"""]
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(
        out.contains("client ok 3"),
        "duplex ends take fd 3, not stdio: {out}"
    );
    assert!(out.contains("server saw 100"), "{out}");
}

#[test]
fn endpoints_are_closed_everywhere_else_so_readers_see_eof() {
    // `relay` must see EOF when `src` exits although `idle` (same group, via a
    // duplex pipe with relay) keeps running: no copy of the write end may leak.
    let job = Job::new(
        r#"
[pipe.a]
from = "src"
to = "relay"
[pipe.b]
from = "relay"
to = "sink"
[pipe.side]
between = ["relay", "idle"]
[process.src]
shell = "echo one; echo two"
[process.relay]
shell = "cat; echo relay-eof >&2"
[process.sink]
shell = "cat > got"
[process.idle]
shell = "sleep 3"
daemon = true
[process.main]
shell = "sleep 0.2"
"#,
    );
    let start = Instant::now();
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relay-eof"), "{out}");
    assert_eq!(job.read("got"), "one\ntwo\n");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_stream_group_launches_together() {
    let job = Job::new(
        r#"
[process.setup]
shell = "sleep 0.3"
[pipe.p]
from = "gen"
to = "sum"
[process.gen]
shell = "seq 3"
after = ["setup"]
[process.sum]
shell = "cat > /dev/null"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    // `sum` has no dependency of its own, but waits for its group.
    assert!(
        pos(&evs, "setup", "exited") < pos(&evs, "sum", "started"),
        "{evs:#?}"
    );
}

#[test]
fn a_stream_group_fails_together() {
    let job = Job::new(
        r#"
[graph]
fail_fast = false
[pipe.p]
from = "gen"
to = "slow"
[process.gen]
shell = "echo one; exit 3"
[process.slow]
shell = "cat > /dev/null; sleep 30"
[process.after_slow]
after = ["slow"]
shell = "true"
[process.other]
shell = "true"
"#,
    );
    let start = Instant::now();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the group was not stopped"
    );
    let rows = summary(&err);
    assert_eq!(rows["gen"][0], "failed");
    assert_eq!(rows["slow"][0], "stopped");
    assert_eq!(rows["after_slow"][0], "skipped");
    assert_eq!(rows["other"][0], "ok");
}

#[test]
fn stdout_and_stderr_to_one_file_keep_every_line() {
    let job = Job::new(
        "[process.both]\nshell = \"for i in 1 2 3; do echo out$i; echo err$i >&2; done\"\nstdout = { file = \"both.log\" }\nstderr = { file = \"both.log\" }\n",
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<String> = job.read("both.log").lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["err1", "err2", "err3", "out1", "out2", "out3"]);
}

#[test]
fn a_program_that_appears_before_a_retry_is_found() {
    let job = Job::new(
        r#"
[process.maker]
shell = "sleep 0.1; mkdir -p bin; printf '#!/bin/sh\necho made it\n' > bin/late-tool; chmod +x bin/late-tool"
[process.user]
cmd = ["late-tool"]
env = { PATH = "bin:/usr/bin:/bin" }
retries = 3
retry_delay = "300ms"
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("made it"), "{out}");
}

#[test]
fn after_start_of_a_process_that_never_started_is_skipped() {
    let job = Job::new(
        "[process.ghost]\ncmd = [\"./missing\"]\n[process.fan]\nafter = { ghost = \"start\" }\nshell = \"true\"\n",
    );
    let (code, _, err) = job.run(&["--keep-going"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&err)["fan"][0], "skipped", "{err}");
}

#[test]
fn a_suspended_process_is_resumed_so_it_can_stop() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "30s"
[process.main]
shell = "sleep 0.3"
[process.frozen]
daemon = true
shell = "kill -STOP $$; sleep 60"
"#,
    );
    let start = Instant::now();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "waited out the grace: SIGCONT missing"
    );
}

#[test]
fn a_writer_ended_by_sigpipe_does_not_fail_its_group() {
    let job = Job::new("[pipe.p]\nfrom = \"gen\"\nto = \"first\"\n[process.gen]\ncmd = [\"yes\"]\n[process.first]\nshell = \"head -n 1 > got\"\n");
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("got"), "y\n");
}

#[test]
fn a_shell_writer_ended_by_sigpipe_does_not_fail_its_group_either() {
    // dash does not exec `yes`: it reports its death by SIGPIPE as exit 141.
    for edge in [
        "[pipe.p]\nfrom = \"gen\"\nto = \"first\"\n",
        "[queue.p]\nfrom = [\"gen\"]\nto = [\"first\"]\n",
    ] {
        let job = Job::new(&format!("{edge}[process.gen]\nshell = \"yes; exit $?\"\n[process.first]\nshell = \"head -n 1 > got\"\n"));
        let (code, _, err) = job.run(&[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(summary(&err)["gen"][..2], ["ok", "141"], "{err}");
        assert_eq!(job.read("got"), "y\n");
    }
}

#[test]
fn only_brings_the_whole_stream_group() {
    let job = Job::new("[pipe.p]\nfrom = \"gen\"\nto = \"sum\"\n[process.gen]\ncmd = [\"seq\", \"10\"]\n[process.sum]\nshell = \"wc -l > count\"\n[process.other]\nshell = \"touch other\"\n");
    let (code, _, err) = job.run(&["--only", "sum"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("count").trim(), "10");
    assert!(!job.file("other").exists());
}

#[test]
fn a_group_member_that_cannot_start_stops_the_others() {
    let job = Job::new("[pipe.p]\nfrom = \"ghost\"\nto = \"reader\"\n[process.ghost]\ncmd = [\"./no-such-program\"]\n[process.reader]\nshell = \"cat; sleep 30\"\n");
    let start = Instant::now();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the reader was not stopped"
    );
    assert_eq!(summary(&err)["reader"][0], "stopped", "{err}");
}

/// `--members` (a group unit's nested run): exactly those whole stream
/// groups, their `after` and `parent` outside taken as met.
#[test]
fn members_runs_exactly_whole_stream_groups() {
    let job = Job::new(
        r#"
[process.first]
shell = "touch first-ran"
[process.parent]
shell = "sleep 0.1"
[process.prod]
shell = "printf 'a\nb\nc\n'"
after = ["first"]
parent = "parent"
[process.cons]
shell = "wc -l > count"
[pipe.p]
from = "prod"
to = "cons"
"#,
    );
    let (code, evs, err) = job.run_events(&["--members", "prod,cons"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("count").trim(), "3");
    assert!(!job.file("first-ran").exists(), "a dependency outside ran");
    assert!(events_of(&evs, "parent").is_empty(), "{evs:#?}");
    let (code, _, err) = job.run(&["--members", "prod"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stream group whose other members are not listed"),
        "{err}"
    );
}

/// An `exited` event says `then` when another attempt follows, and not on the last.
#[test]
fn exited_says_then_when_another_attempt_follows() {
    let job = Job::new("[process.flaky]\nshell = \"exit 1\"\nretries = 1\n");
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    let exits: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event"] == "exited").collect();
    assert_eq!(exits.len(), 2, "{evs:#?}");
    assert_eq!(exits[0]["then"], "retry");
    assert!(exits[1].get("then").is_none(), "{:?}", exits[1]);
}

#[test]
fn a_signal_in_the_first_milliseconds_is_not_lost() {
    // Before the engine (pid 1 of its namespace) has its handlers, the kernel
    // would drop a forwarded signal: the run then went on to the end.
    use std::os::unix::process::ExitStatusExt;
    let job = Job::new("[process.w]\ncmd = [\"sleep\", \"30\"]\n");
    for i in 0..80u64 {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
            .args(["run", "--no-progress"])
            .arg(job.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(i % 8 * 1000));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("the run ends");
        // 143, or killed by it before jobgraph had any handler at all.
        assert!(
            status.code() == Some(143) || status.signal() == Some(libc::SIGTERM),
            "attempt {i}: {status:?}"
        );
    }
}
