//! Queues through the broker, on real processes: exactly once, broadcast,
//! order per producer, framing, backpressure, consumers that die, pipefail.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Every line of the files `prefix*` in the job's directory.
fn lines_of(job: &Job, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(job.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            out.extend(
                std::fs::read_to_string(entry.path())
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    out
}

/// Checks, streaming (the test process's memory counts in the engine's peak
/// RSS, inherited at exec), that the lines of the files `prefixes*` are the
/// numbers 1..=n, each once. Returns how many lines each prefix had.
fn exactly_once(job: &Job, prefixes: &[&str], n: usize) -> Vec<usize> {
    use std::io::BufRead;
    let mut seen = vec![false; n + 1];
    let mut counts = vec![0; prefixes.len()];
    for entry in std::fs::read_dir(job.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(p) = prefixes.iter().position(|p| name.starts_with(p)) else {
            continue;
        };
        let file = std::io::BufReader::new(std::fs::File::open(entry.path()).unwrap());
        for line in file.lines() {
            let line = line.unwrap();
            let k: usize = line.parse().unwrap_or_else(|_| panic!("{name}: {line:?}"));
            assert!((1..=n).contains(&k), "{name}: {k} out of range");
            assert!(
                !std::mem::replace(&mut seen[k], true),
                "{k} delivered twice"
            );
            counts[p] += 1;
        }
    }
    let missing = seen[1..].iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "{missing} of {n} never delivered");
    counts
}

#[test]
fn a_million_messages_reach_replicated_consumers_exactly_once() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["w"]
[process.gen]
cmd = ["seq", "1", "1000000"]
[process.w]
replicas = 3
shell = "cat > got.{replica}"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    exactly_once(&job, &["got."], 1_000_000);
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(
        (
            q["messages_in"].as_u64(),
            q["messages_out"].as_u64(),
            q["lost"].as_u64()
        ),
        (Some(1_000_000), Some(1_000_000), Some(0))
    );
    // Balance spreads the work: every replica got some.
    for r in 0..3 {
        assert!(
            !job.read(&format!("got.{r}")).is_empty(),
            "replica {r} got nothing"
        );
        // The event's per-consumer count is what that replica really read.
        let read = job.read(&format!("got.{r}")).lines().count() as u64;
        assert_eq!(q["consumers"][format!("w[{r}]")], read, "{q}");
    }
}

#[test]
fn broadcast_gives_every_consumer_everything() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["a", "b"]
mode = "broadcast"
[process.gen]
cmd = ["seq", "1", "50000"]
[process.a]
shell = "cat > a.txt"
[process.b]
shell = "cat > b.txt"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let want: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert_eq!(job.read("a.txt"), want);
    assert_eq!(job.read("b.txt"), want);
}

#[test]
fn order_is_kept_per_producer() {
    let job = Job::new(
        r#"
[queue.q]
from = ["p", "r"]
to = ["c"]
[process.p]
shell = "seq 1 20000 | sed 's/^/p /'"
[process.r]
shell = "seq 1 20000 | sed 's/^/r /'"
[process.c]
replicas = 2
shell = "cat > got.{replica}"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let mut total = 0;
    for r in 0..2 {
        let text = job.read(&format!("got.{r}"));
        for producer in ["p", "r"] {
            let seq: Vec<u64> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{producer} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "{producer}'s messages out of order at consumer {r}"
            );
            total += seq.len();
        }
    }
    assert_eq!(total, 40000);
}

#[test]
fn a_final_unterminated_line_is_a_message() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["c"]
[process.gen]
shell = "printf 'one\ntwo\nlast'"
[process.c]
shell = "cat > got"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("got"), "one\ntwo\nlast\n");
}

#[test]
fn nul_framing_keeps_newlines_inside_messages() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["c"]
framing = "nul"
[process.gen]
shell = "printf 'a\nmulti-line\\0b\\0c'"
[process.c]
replicas = 2
shell = "cat > got.{replica}"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(q["messages_in"], 3, "{q}");
    let mut all: Vec<String> = (0..2)
        .flat_map(|r| {
            job.read(&format!("got.{r}"))
                .split('\0')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    all.sort();
    assert_eq!(all, ["a\nmulti-line", "b", "c"]);
}

#[test]
fn backpressure_bounds_engine_memory_and_loses_nothing() {
    // 100 MB through a queue of capacity 64 to a consumer that sleeps first.
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["slow"]
capacity = 64
[process.gen]
shell = "yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -c 100000000"
[process.slow]
shell = "sleep 1; wc -c > count"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    // `head -c` cut the last line: a final unterminated message gets its newline.
    assert_eq!(job.read("count").trim(), "100000001");
    let fin = evs.iter().find(|e| e["event"] == "run-finished").unwrap();
    let rss_kib = fin["engine_peak_rss_kib"].as_u64().unwrap();
    assert!(rss_kib < 100 * 1024, "engine peak RSS {rss_kib} KiB");
}

#[test]
fn a_consumer_that_leaves_early_loses_only_what_it_was_sent() {
    // `head` exits after 1000 lines (`all` starts late, so that `head` gets
    // them); what was still in its pipe goes back to the queue, to `all`, but
    // for a line `head` read only in part (lost and counted); nothing is
    // delivered twice and nothing hangs.
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["head", "all"]
[process.gen]
cmd = ["seq", "1", "200000"]
[process.head]
shell = "head -n 1000 > head.txt"
[process.all]
shell = "sleep 0.3; cat > all.txt"
"#,
    );
    let start = Instant::now();
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    let lost = q["lost"].as_u64().unwrap();
    let head = job.read("head.txt").lines().count() as u64;
    let all = job.read("all.txt").lines().count() as u64;
    assert_eq!(head, 1000);
    // `head` read more than it printed (its stdio buffer): the broker counts
    // what left the pipe into `head` as received by it.
    let rows = summary(&err);
    let cell = |name: &str| -> Vec<u64> {
        rows[name][5]
            .split('/')
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (head_got, head_lost, all_got) = (cell("head")[0], cell("head")[2], cell("all")[0]);
    assert!(head_got >= head, "{err}");
    assert_eq!(all_got, all, "{err}");
    assert_eq!(head_lost, lost);
    assert!(lost <= 1, "{err}");
    assert_eq!(
        head_got + all_got + lost,
        200000,
        "head {head_got} + all {all_got} + lost {lost}"
    );
    let mut seen: Vec<u64> = lines_of(&job, "head.txt")
        .iter()
        .chain(lines_of(&job, "all.txt").iter())
        .map(|l| l.parse().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len() as u64,
        head + all,
        "a message was delivered twice"
    );
    assert!(err.contains("lost"), "{err}");
}

#[test]
fn a_consumer_killed_mid_stream_fails_the_group_without_hanging() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["victim", "other"]
[process.gen]
shell = "seq 1 100000000"
[process.victim]
shell = "head -n 5000 > /dev/null; kill -9 $$"
[process.other]
shell = "cat > /dev/null"
"#,
    );
    let start = Instant::now();
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "hung");
    let rows = summary(&err);
    assert_eq!(rows["victim"][0], "failed", "{err}");
    assert!(
        evs.iter().any(|e| e["event"] == "queue"),
        "queue counts reported"
    );
    assert!(job.survivors().is_empty());
}

#[test]
fn queue_examples_run() {
    examples_run(&["queue", "broadcast", "logs", "nightly"]);
}

#[test]
fn a_producer_blocked_on_a_full_queue_blocks_nothing_else() {
    let job = Job::new(
        r#"
[queue.q]
from = ["flood"]
to = ["stuck"]
capacity = 64
[process.flood]
cmd = ["yes", "message"]
[process.stuck]
shell = "touch started; sleep 60"
[process.chatty]
shell = "for i in 1 2 3; do echo chat $i; sleep 0.1; done"
[process.limited]
shell = "sleep 60"
timeout = "300ms"
"#,
    );
    let mut engine = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
        .args(["run", "--keep-going"])
        .arg(job.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&job.file("started"), Duration::from_secs(20)));
    // While the producer is blocked: logs flow, the timeout fires, and SIGINT is handled.
    std::thread::sleep(Duration::from_millis(800));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let start = Instant::now();
    let out = loop {
        if engine.try_wait().unwrap().is_some() {
            break engine.wait_with_output().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "engine did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("chat 3"), "{stdout}");
    assert!(stderr.contains("limited timed out"), "{stderr}");
    assert!(job.survivors().is_empty());
}

#[test]
fn a_long_message_arrives_whole() {
    // One 8 MB line: read over many reads, grown in place, delivered once.
    let job = Job::new(
        "[queue.q]\nfrom = [\"gen\"]\nto = [\"c\"]\n[process.gen]\nshell = \"head -c 8000000 /dev/zero | tr '\\\\0' x; echo; echo short\"\n[process.c]\nshell = \"awk '{ print length($0) }' > lens\"\n",
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("lens"), "8000000\n5\n");
}

#[test]
fn a_queue_producer_is_retried_and_reattaches() {
    let job = Job::new(
        r#"
[queue.q]
from = ["gen"]
to = ["c"]
[process.gen]
retries = 1
retry_delay = "50ms"
shell = "if [ -e failed-once ]; then seq 101 200; else touch failed-once; seq 1 100; exit 1; fi"
[process.c]
shell = "cat > got"
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<u64> = job
        .read("got")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        got,
        (1..=200).collect::<Vec<u64>>(),
        "both attempts' messages, in order, once"
    );
    assert_eq!(summary(&err)["gen"][..3], ["ok", "0", "2"], "{err}");
}

/// The queue column of an instance's summary row: in/out/lost/requeued.
fn queue_cell(err: &str, name: &str) -> Vec<u64> {
    let rows = summary(err);
    let row = rows
        .get(name)
        .unwrap_or_else(|| panic!("no row {name}: {err}"));
    row.last()
        .unwrap()
        .split('/')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{row:?}")))
        .collect()
}

#[test]
fn a_slow_consumer_does_not_hold_back_the_others() {
    // Issue 9: `slow` reads about a line a millisecond. It is handed only what
    // it can read at its pace, the fast ones take the rest, and every line
    // arrives exactly once. (Speed is measured in benches/streams.sh.)
    let job = Job::new(
        r#"
[process.gen]
cmd = ["seq", "1", "1000000"]
[process.w]
replicas = 4
shell = "cat > out.{replica}"
[process.slow]
shell = "while read -r l; do echo \"$l\" >> slow.out; sleep 0.0002; done"
[queue.q]
from = ["gen"]
to = ["w", "slow"]
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    let counts = exactly_once(&job, &["out.", "slow.out"], 1_000_000);
    let slow = counts[1];
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(q["messages_out"], 1_000_000, "{q}");
    assert_eq!(q["lost"], 0, "{q}");
    assert_eq!(queue_cell(&err, "slow")[0], slow as u64, "{err}");
    assert!(slow < 100_000, "slow got {slow} lines");
}

#[test]
fn what_an_exited_consumer_never_read_is_counted_exactly() {
    // `one` reads one line and exits; nobody else can take the rest: lost,
    // and `out` is the one line it read. (It waits for `gen` to have written
    // everything: else `gen` may get SIGPIPE first, and `in` is less.)
    let job = Job::new(
        r#"
[process.gen]
shell = "seq 1 3000; touch gen.done"
[process.one]
shell = "while [ ! -e gen.done ]; do sleep 0.01; done; read -r x; echo got $x"
[queue.q]
from = ["gen"]
to = ["one"]
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(
        (
            q["messages_in"].as_u64(),
            q["messages_out"].as_u64(),
            q["lost"].as_u64(),
            q["requeued"].as_u64()
        ),
        (Some(3000), Some(1), Some(2999), Some(0)),
        "{q}"
    );
    assert!(
        err.contains("queue q: 3000 in, 1 out (one 1), 2999 lost, 0 requeued"),
        "{err}"
    );
    assert_eq!(queue_cell(&err, "one")[0], 1, "{err}");
}

#[test]
fn what_an_exited_consumer_never_read_goes_to_another() {
    // `one` reads one line and exits; `rest` (which starts reading late, so
    // that `one` has a pipe full) gets everything else, in order.
    let job = Job::new(
        r#"
[process.gen]
cmd = ["seq", "1", "3000"]
[process.one]
shell = "read -r x; echo $x > one.txt"
[process.rest]
shell = "sleep 0.3; cat > rest.txt"
[queue.q]
from = ["gen"]
to = ["one", "rest"]
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        exactly_once(&job, &["one.txt", "rest.txt"], 3000),
        [1, 2999]
    );
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(q["messages_out"], 3000, "{q}");
    assert_eq!(q["lost"], 0, "{q}");
    assert_eq!(queue_cell(&err, "one")[0], 1, "{err}");
}

#[test]
fn a_pool_with_max_tasks_per_child_handles_every_task_once() {
    // Python's Pool(maxtasksperchild=500) as a graph: each worker handles
    // 500 tasks and exits; its restart takes over what it left unread. Once
    // the queue has given a worker end-of-file it is not restarted again.
    let job = Job::new(
        r#"
[process.gen]
cmd = ["seq", "1", "3000"]
[process.w]
replicas = 2
restart = "always"
shell = "for i in $(seq 500); do read -r x || exit 0; echo \"$x\" >> done.{replica}; done"
[queue.q]
from = ["gen"]
to = ["w"]
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    exactly_once(&job, &["done."], 3000);
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(q["messages_in"], 3000, "{q}");
    assert_eq!(q["messages_out"], 3000, "{q}");
    assert_eq!(q["lost"], 0, "{q}");
}

#[test]
fn a_broadcast_consumer_killed_three_times_is_counted_exactly() {
    // Each attempt of `victim` reads a little and is killed; the fourth reads
    // to the end. What it did not read is lost to it, and only that.
    let job = Job::new(
        r#"
[process.gen]
cmd = ["seq", "1", "3000000"]
[process.victim]
restart = "on-failure"
max_restarts = 3
shell = "echo x >> attempts; if [ $(wc -l < attempts) -le 3 ]; then head -n 20000 > /dev/null; kill -9 $$; fi; cat > /dev/null"
[process.other]
shell = "cat > other.txt"
[queue.q]
from = ["gen"]
to = ["victim", "other"]
mode = "broadcast"
"#,
    );
    let (code, evs, err) = job.run_events(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("attempts").lines().count(), 4, "{err}");
    let victim = queue_cell(&err, "victim");
    let other = queue_cell(&err, "other");
    assert_eq!(victim[0] + victim[2], 3_000_000, "victim {victim:?}: {err}");
    assert!(victim[2] > 0, "{err}");
    assert_eq!(other[..3], [3_000_000, 0, 0], "{err}");
    exactly_once(&job, &["other.txt"], 3_000_000);
    let q = evs.iter().find(|e| e["event"] == "queue").unwrap();
    assert_eq!(q["messages_in"], 3_000_000, "{q}");
    assert_eq!(
        q["messages_out"].as_u64().unwrap() + q["lost"].as_u64().unwrap(),
        2 * 3_000_000,
        "{q}"
    );
}

#[test]
fn a_producer_that_closes_its_end_ends_the_stream_before_it_exits() {
    // Send requests, close the request stream, read the replies to the end:
    // the consumer must see end-of-file when the producer closes, not when it exits.
    let job = Job::new(
        r#"
[process.client]
shell = 'for i in 1 2 3; do echo "req $i"; done; exec >&-; n=0; while read -r l; do n=$((n+1)); done; echo "$n" > replies'
[process.server]
shell = 'while read -r l; do echo "re: $l"; done'
[queue.requests]
from = ["client"]
to = ["server"]
[queue.replies]
from = ["server"]
to = ["client"]
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("replies").trim(), "3", "{err}");
}

#[test]
fn a_producer_that_may_retry_still_ends_the_stream_only_when_it_is_done() {
    // Its next attempt would write again: end-of-file waits for its last exit.
    let job = Job::new(
        r#"
[process.gen]
retries = 1
shell = 'echo "attempt"; exec >&-; if [ -e again ]; then exit 0; fi; touch again; exit 1'
[process.count]
shell = 'wc -l > count'
[queue.q]
from = ["gen"]
to = ["count"]
"#,
    );
    let (code, _, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(job.read("count").trim(), "2", "{err}");
}

#[test]
fn what_a_consumer_in_its_restart_back_off_was_kept_is_lost_and_counted_when_the_run_ends() {
    // The run ends while the only consumer waits out its back-off: it will
    // not come back, so what the queue held for it is lost, and counted.
    for (extra, consumer) in [
        ("", "daemon = true\nrestart = \"always\""),
        (
            "[process.fail]\nshell = \"sleep 0.1; exit 3\"\n",
            "restart = \"always\"",
        ),
        (
            "[process.fail]\nshell = \"sleep 0.1; exit 3\"\n",
            "retries = 3\nretry_delay = \"1s\"\nshell = \"head -n 10; exit 1\"",
        ),
    ] {
        let cmd = if consumer.contains("shell") {
            ""
        } else {
            "cmd = [\"head\", \"-n\", \"10\"]\n"
        };
        let job = Job::new(&format!(
            "[process.gen]\ncmd = [\"seq\", \"100000\"]\n[process.c]\n{consumer}\n{cmd}\
             [queue.q]\nfrom = [\"gen\"]\nto = [\"c\"]\n[process.work]\nshell = \"sleep 0.1\"\n{extra}"
        ));
        let (_, evs, err) = job.run_events(&[]);
        let q = evs
            .iter()
            .find(|e| e["event"] == "queue")
            .expect("a queue event");
        let (inn, out, lost) = (
            q["messages_in"].as_u64().unwrap(),
            q["messages_out"].as_u64().unwrap(),
            q["lost"].as_u64().unwrap(),
        );
        assert_eq!(inn, out + lost, "{consumer}: {q}\n{err}");
        assert!(lost > 0, "{consumer}: {q}\n{err}");
    }
}
