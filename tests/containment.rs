//! Nothing outlives a run, even after `kill -9` of the engine: a PID
//! namespace where the kernel allows one, the marker watchdog elsewhere.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Living processes whose command line has `needle` as an argument.
fn with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Kills them all (so a failing test leaves nothing behind) and returns how many there were.
fn reap_by_arg(needle: &str) -> usize {
    let found = with_arg(needle);
    for &pid in &found {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    found.len()
}

fn wait_until_gone(needle: &str, limit: Duration) -> Vec<i32> {
    let start = std::time::Instant::now();
    loop {
        let left = with_arg(needle);
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn engine(job: &Job, containment: Option<&str>) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"));
    cmd.arg("run")
        .arg("--events")
        .arg(job.file("events.ndjson"))
        .arg(job.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match containment {
        Some(c) => cmd.env("JOBGRAPH_CONTAINMENT", c),
        None => cmd.env_remove("JOBGRAPH_CONTAINMENT"),
    };
    cmd.spawn().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn unique() -> String {
    // A sleep length no other process uses: how the test finds its sleepers.
    format!("300.{}", rand_suffix() % 1_000_000_000)
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_run_names_its_containment() {
    let job = Job::new("[process.a]\ncmd = [\"true\"]\n");
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(evs[0]["event"], "run-started");
    if is_root() {
        assert_eq!(evs[0]["containment"], "pid-namespace", "{evs:?}");
    }
    let job = Job::new("[process.a]\ncmd = [\"true\"]\n");
    let out = jobgraph()
        .env("JOBGRAPH_CONTAINMENT", "marker")
        .args(["run", "--events", "-"])
        .arg(job.path())
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(first.contains("\"containment\":\"marker\""), "{first}");
}

#[test]
fn an_escapee_without_environment_dies_with_the_engine() {
    if !is_root() {
        eprintln!("SKIPPED: PID namespaces need root here");
        return;
    }
    let arg = unique();
    let job = Job::new(&format!(
        "[process.esc]\nshell = \"setsid -f env -i sleep {arg} </dev/null >/dev/null 2>&1; touch started; exec sleep 300\"\n"
    ));
    let mut e = engine(&job, None);
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(with_arg(&arg).len(), 1, "the escapee runs");
    kill9(&mut e);
    let left = wait_until_gone(&arg, Duration::from_secs(5));
    reap_by_arg(&arg);
    assert!(left.is_empty(), "the escapee outlived the engine: {left:?}");
    assert!(wait_gone(&job, Duration::from_secs(5)).is_empty());
}

#[test]
fn a_nested_run_dies_with_the_outer_engine() {
    if !is_root() {
        eprintln!("SKIPPED: PID namespaces need root here");
        return;
    }
    let arg = unique();
    let job = Job::new(&format!(
        "[process.nest]\nshell = \"exec '{}' run inner.toml\"\n",
        assert_cmd::cargo::cargo_bin("jobgraph").display()
    ));
    std::fs::write(
        job.file("inner.toml"),
        format!("[process.deep]\nshell = \"touch started; exec sleep {arg}\"\n"),
    )
    .unwrap();
    for _ in 0..3 {
        let _ = std::fs::remove_file(job.file("started"));
        let mut e = engine(&job, None);
        assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(100));
        kill9(&mut e);
        let left = wait_until_gone(&arg, Duration::from_secs(5));
        reap_by_arg(&arg);
        assert!(
            left.is_empty(),
            "the inner job outlived the outer engine: {left:?}"
        );
    }
}

#[test]
fn a_nested_run_dies_with_the_outer_engine_under_the_marker_watchdog() {
    // The nested run's watchdog must not carry the outer marker, or the outer
    // watchdog kills it before it kills its own run's (setsid) processes.
    let arg = unique();
    let job = Job::new(&format!(
        "[process.nest]\nshell = \"exec '{}' run inner.toml\"\n",
        assert_cmd::cargo::cargo_bin("jobgraph").display()
    ));
    std::fs::write(
        job.file("inner.toml"),
        format!(
            "[process.deep]\nshell = \"setsid sleep {arg} < /dev/null > /dev/null 2>&1 & touch started; exec sleep {arg}\"\n"
        ),
    )
    .unwrap();
    for _ in 0..3 {
        let _ = std::fs::remove_file(job.file("started"));
        let mut e = engine(&job, Some("marker"));
        assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(200));
        kill9(&mut e);
        let left = wait_until_gone(&arg, Duration::from_secs(5));
        reap_by_arg(&arg);
        assert!(
            left.is_empty(),
            "the inner jobs outlived the outer engine: {left:?}"
        );
    }
}

#[test]
fn a_nested_run_stops_cleanly_on_sigint() {
    let job = Job::new(&format!(
        "[process.nest]\nshell = \"exec '{}' run inner.toml\"\n",
        assert_cmd::cargo::cargo_bin("jobgraph").display()
    ));
    std::fs::write(
        job.file("inner.toml"),
        "[process.deep]\nshell = \"touch started; exec sleep 60\"\n",
    )
    .unwrap();
    let mut e = engine(&job, None);
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut e, Duration::from_secs(20)).expect("the run ends");
    assert_eq!(status.code(), Some(130));
    assert!(wait_gone(&job, Duration::from_secs(5)).is_empty());
}

/// The survivors test of tests/run.rs, under the fallback.
#[test]
fn the_marker_watchdog_still_cleans_up_after_sigkill() {
    let job = Job::new(
        r#"
[process.a]
shell = "sleep 60 & sleep 60 & touch started; wait"
[process.b]
shell = "trap '' TERM INT; sleep 60"
[process.c]
shell = "setsid sh -c 'sleep 60' < /dev/null > /dev/null 2>&1 & sleep 60"
"#,
    );
    let mut e = engine(&job, Some("marker"));
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(job.survivors().len() >= 4, "{:?}", job.survivors());
    kill9(&mut e);
    let left = wait_gone(&job, Duration::from_secs(5));
    assert!(left.is_empty(), "survivors: {left:?}");
}

#[test]
fn pids_inside_the_namespace_are_sane() {
    let job = Job::new(
        "[process.a]\nshell = \"echo engine=$JOBGRAPH_ENGINE_PID self=$$; kill -0 $JOBGRAPH_ENGINE_PID && echo reachable\"\n",
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reachable"), "{out}");
}

/// Marker containment shares the host's pids: once a job's group is empty,
/// its id may be any new process's. In a PID namespace of its own (where
/// `ns_last_pid` picks the next pid), an unrelated `setsid` process is given
/// the id of a finished job's group; the end-of-run sweep, SIGQUIT and the
/// watchdog after `kill -9` must all leave it alone (each killed it before).
#[test]
fn a_reused_group_id_is_never_signalled_requires_root() {
    let job = Job::new("[process.a]\ncmd = [\"true\"]\n[process.hold]\nafter = [\"a\"]\ncmd = [\"sleep\", \"2\"]\n");
    let script = job.file("reuse.sh");
    std::fs::write(
        &script,
        r#"
cd "$(dirname "$0")"
rm -f ev.ndjson
JOBGRAPH_CONTAINMENT=marker "$1" run --no-progress --events ev.ndjson job.toml 2>/dev/null &
eng=$!
for i in $(seq 200); do grep -q '"hold"' ev.ndjson 2>/dev/null && break; sleep 0.02; done
apid=$(grep '"process":"a"' ev.ndjson | grep -o '"pid":[0-9]*' | head -1 | cut -d: -f2)
# Another thread or process may take the pid first: tried until the victim has it.
for i in 1 2 3 4 5 6 7 8; do
  echo $((apid - 1)) > /proc/sys/kernel/ns_last_pid
  setsid sleep 30 &
  [ $! = "$apid" ] && break
  kill $!
done
sleep 0.2
case $2 in quit) kill -QUIT $eng;; kill9) kill -9 $eng; sleep 1;; esac
wait $eng
victim=$(pgrep -x -f "sleep 30")
echo "a=$apid victim=$victim"
if [ "$victim" = "$apid" ] && kill -0 "$victim"; then echo ALIVE; kill "$victim"; fi
"#,
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("jobgraph");
    for mode in ["end", "quit", "kill9"] {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh"])
            .arg(&script)
            .arg(&bin)
            .arg(mode)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() && text.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            return skip(
                "a_reused_group_id_is_never_signalled",
                &format!("unshare: {err}"),
            );
        }
        assert!(text.contains("ALIVE"), "{mode}: {text}");
    }
}

/// The engine's peak is its own, not that of the program that started it
/// (Linux keeps a program's rusage peak across exec): started from this
/// test after it touched 256 MiB, a marker engine once reported 256 MiB.
#[test]
fn the_engine_peak_is_its_own_not_its_parents() {
    let mut big = vec![0u8; 256 << 20];
    for i in (0..big.len()).step_by(4096) {
        big[i] = 1;
    }
    let job = Job::new("[process.a]\ncmd = [\"true\"]\n");
    let events = job.file("ev.ndjson");
    let out = jobgraph()
        .env("JOBGRAPH_CONTAINMENT", "marker")
        .args(["run", "--no-progress", "--events"])
        .arg(&events)
        .arg(job.path())
        .output()
        .unwrap();
    drop(big);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&events).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let kib = last["engine_peak_rss_kib"].as_u64().unwrap();
    assert!(kib > 0 && kib < 128 << 10, "{last}");
}
