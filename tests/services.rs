//! Services: readiness probes, `after = "ready"`, restart policies, and
//! graphs that run until they are told to stop.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ts_ms(e: &serde_json::Value) -> u64 {
    let t = humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn the_client_never_runs_before_the_port_listens() {
    let port = free_port();
    let job = Job::new(&format!(
        r#"
[process.server]
daemon = true
cmd = ["python3", "-c", """
import socket, time
time.sleep(0.7)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"hello"); c.close()
"""]
ready = {{ tcp = "127.0.0.1:{port}", interval = "50ms", timeout = "20s" }}
[process.client]
after = {{ server = "ready" }}
cmd = ["python3", "-c", "import socket; s = socket.create_connection(('127.0.0.1', {port})); print(s.recv(5).decode())"]
"#
    ));
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(pos(&evs, "server", "ready") < pos(&evs, "client", "started"));
    assert!(
        ts_ms(&evs[pos(&evs, "server", "ready")]) - ts_ms(&evs[pos(&evs, "server", "started")])
            >= 600
    );
    assert!(job.survivors().is_empty(), "server or probe survived");
}

#[test]
fn a_log_probe_waits_for_its_line() {
    let job = Job::new(
        r#"
[process.db]
daemon = true
shell = "echo booting; sleep 0.5; echo 'ready to accept connections'; exec sleep 60"
ready = { log = "ready to accept", timeout = "10s" }
[process.app]
after = { db = "ready" }
shell = "echo app"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(ts_ms(&evs[pos(&evs, "db", "ready")]) - ts_ms(&evs[pos(&evs, "db", "started")]) >= 450);
    assert!(pos(&evs, "db", "ready") < pos(&evs, "app", "started"));
    // The log probe must not eat the line.
    let (_, out, _) = job.run(&[]);
    assert!(out.contains("db  | ready to accept connections"), "{out}");
}

#[test]
fn cmd_and_file_probes() {
    let job = Job::new(
        r#"
[process.maker]
daemon = true
shell = "sleep 0.3; touch flag; exec sleep 60"
ready = { file = "flag", interval = "50ms" }
[process.checked]
daemon = true
shell = "sleep 0.3; touch ok; exec sleep 60"
ready = { cmd = ["test", "-e", "ok"], interval = "50ms" }
[process.user]
after = { maker = "ready", checked = "ready" }
shell = "test -e flag && test -e ok && echo both-ready"
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("both-ready"), "{out}");
    assert!(job.survivors().is_empty());
}

#[test]
fn a_probe_timeout_fails_the_process_and_skips_dependents() {
    let job = Job::new(
        r#"
[process.never]
shell = "exec sleep 60"
ready = { file = "never-created", interval = "50ms", timeout = "400ms" }
[process.dependent]
after = { never = "ready" }
shell = "true"
"#,
    );
    let start = Instant::now();
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(err.contains("never was not ready within 400ms"), "{err}");
    let rows = summary(&err);
    assert_eq!(rows["never"][0], "failed");
    assert_eq!(rows["dependent"][0], "skipped");
}

#[test]
fn restart_on_failure_backs_off_up_to_max_restarts() {
    let job = Job::new(
        r#"
[process.crashy]
shell = "exit 3"
restart = "on-failure"
max_restarts = 3
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    let starts: Vec<u64> = evs
        .iter()
        .filter(|e| e["process"] == "crashy" && e["event"] == "started")
        .map(ts_ms)
        .collect();
    assert_eq!(starts.len(), 4, "1 run + 3 restarts: {evs:#?}");
    // Back-off 250 ms, 500 ms, 1 s (a few ms of slack for timestamps in ms).
    for (gap, want) in starts.windows(2).map(|w| w[1] - w[0]).zip([250, 500, 1000]) {
        assert!(
            gap + 5 >= want,
            "restart after {gap} ms, back-off is {want} ms"
        );
    }
    let rows = summary(&err);
    assert_eq!(rows["crashy"][..4], ["failed", "3", "4", "3"], "{err}");
}

#[test]
fn an_always_restarting_daemon_is_stopped_cleanly_at_the_end() {
    let job = Job::new(
        r#"
[process.main]
shell = "sleep 1"
[process.pulse]
daemon = true
restart = "always"
shell = "echo beat; sleep 0.1"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(evs
        .iter()
        .any(|e| e["process"] == "pulse" && e["event"] == "restarting"));
    let rows = summary(&err);
    assert_eq!(rows["main"][0], "ok");
    assert!(
        matches!(rows["pulse"][0].as_str(), "stopped" | "ok"),
        "{err}"
    );
    assert!(wait_gone(&job, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_restarting_daemon_does_not_make_its_dependents_skip() {
    let job = Job::new(
        r#"
[process.flaky]
daemon = true
restart = "always"
shell = "sleep 0.2; exit 1"
[process.user]
after = { flaky = "start" }
shell = "sleep 0.8; echo still-ran"
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("still-ran"), "{out}");
}

#[test]
fn services_mode_runs_until_sigterm_and_stops_in_reverse_order() {
    let job = Job::new(
        r#"
[graph]
shutdown_grace = "5s"
[process.db]
shell = "trap 'echo db >> order; exit 0' TERM; touch db-up; while :; do sleep 0.05; done"
[process.api]
after = { db = "start" }
shell = "trap 'sleep 0.2; echo api >> order; exit 0' TERM; touch started; while :; do sleep 0.05; done"
"#,
    );
    let mut engine = spawn_engine(&job, "started");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        engine.try_wait().unwrap().is_none(),
        "services mode must keep running"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(20)).expect("did not stop");
    assert_eq!(status.code(), Some(143));
    assert_eq!(job.read("order"), "api\ndb\n");
    assert!(job.survivors().is_empty());
}

#[test]
fn service_examples_run() {
    examples_run(&["service", "logready"]);
}

#[test]
fn a_restarted_queue_consumer_reattaches_to_its_queue() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["worker"]
capacity = 100
[process.gen]
shell = "seq 1 20000"
[process.worker]
restart = "on-failure"
max_restarts = 2
shell = "if [ -e crashed ]; then cat >> got; else touch crashed; head -n 100 >> got; exit 1; fi"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        evs.iter()
            .any(|e| e["process"] == "worker" && e["event"] == "restarting"),
        "{evs:#?}"
    );
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    let (got_in, lost) = (
        q["messages_in"].as_u64().unwrap(),
        q["lost"].as_u64().unwrap(),
    );
    assert_eq!(got_in, 20000);
    let got: Vec<u64> = job
        .read("got")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "a message was delivered twice");
    // The crashed run printed 100 of what it read; what it read beyond that, and what
    // was in its pipe, is counted as received or lost, never redelivered.
    assert!(got.len() as u64 + lost <= 20000);
    assert!(
        got.iter().any(|&n| n > 19000),
        "the restarted consumer got the tail of the stream"
    );
}

#[test]
fn probing_stops_once_ready_and_a_hung_probe_is_killed() {
    let job = Job::new(
        r#"
[process.svc]
daemon = true
shell = "exec sleep 60"
ready = { cmd = ["sh", "-c", "echo probe >> probes; test $(wc -l < probes) -ge 3"], interval = "50ms" }
[process.slowprobe]
daemon = true
shell = "exec sleep 60"
ready = { cmd = ["sh", "-c", "if [ -e hung ]; then exit 0; fi; touch hung; exec sleep 60"], interval = "100ms", timeout = "10s" }
[process.main]
after = { svc = "ready", slowprobe = "ready" }
shell = "sleep 0.5"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    // Ready on the third probe; none ran after that although svc kept running.
    assert_eq!(job.read("probes").lines().count(), 3);
    assert!(job.survivors().is_empty(), "a probe survived");
}

#[test]
fn a_process_that_never_gets_ready_is_restarted_on_failure() {
    let job = Job::new(
        "[process.svc]\nshell = \"exec sleep 60\"\nready = { file = \"nope\", interval = \"50ms\", timeout = \"200ms\" }\nrestart = \"on-failure\"\nmax_restarts = 1\n",
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("svc was not ready in time; restart 1 of 1"),
        "{err}"
    );
    assert_eq!(
        summary(&err)["svc"][..4],
        ["failed", "SIGTERM", "2", "1"],
        "{err}"
    );
}
