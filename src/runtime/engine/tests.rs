//! The engine's scheduling, driven by a fake executor: units are scripted by
//! their arguments (`cmd = ["true", "run=50", "exit=3"]`) and nothing is
//! really started, so each rule is checked exactly and fast.

use super::*;
use crate::report::live::{ConsoleStyle, LiveReporter};
use crate::runtime::executor::{Endpoint, Placement, Reaped, Verdict};
use crate::runtime::posix::Source;
use std::cell::RefCell;
use std::rc::Rc;

/// One scripted unit.
struct Unit {
    id: UnitId,
    name: String,
    ends_at: Option<Instant>,
    exit: Exit,
    ignore_term: bool,
    reaped: bool,
    /// `queue=MS`: waits this long in a cluster's queue, then runs `run=MS`.
    queued_until: Option<Instant>,
    /// Placements reported: 0 none, 1 queued, 2 running.
    placed: u8,
    /// Spawned as a member of a group unit: ends with this verdict.
    verdict: Option<Verdict>,
}

/// What the fake saw, in order: `start NAME`, `signal NAME SIG`, `end NAME`.
#[derive(Default)]
struct Book {
    units: Vec<Unit>,
    log: Vec<String>,
    /// Most units alive at once (daemons named `d*` excluded).
    peak: usize,
    /// Stream groups run as group units (as the Slurm executor's do).
    group_units: bool,
    /// A group unit's members are being spawned.
    collecting: bool,
}

struct Fake(Rc<RefCell<Book>>);

impl Executor for Fake {
    fn spawn(&mut self, prepared: &Prepared, _fds: &[(i32, Source)]) -> std::io::Result<UnitId> {
        let args = prepared.args();
        let mut b = self.0.borrow_mut();
        let id = UnitId(1000 + b.units.len() as i32);
        let (mut run, mut code, mut ignore_term, mut name) = (None, 0, false, String::new());
        let mut queue = None;
        let mut verdict = None;
        for a in &args[1..] {
            match a.split_once('=') {
                Some(("verdict", v)) => {
                    verdict = Some(match v {
                        "ok" => Verdict::Ok,
                        "timed-out" => Verdict::TimedOut,
                        "stopped" => Verdict::Stopped,
                        _ => Verdict::Failed,
                    })
                }
                Some(("run", ms)) => run = ms.parse::<u64>().ok(),
                Some(("exit", c)) => code = c.parse().unwrap_or(0),
                Some(("name", n)) => name = n.to_string(),
                Some(("queue", ms)) => queue = ms.parse::<u64>().ok(),
                _ if a == "ignore-term" => ignore_term = true,
                _ => {}
            }
        }
        b.log.push(format!("start {name}"));
        let verdict = verdict.filter(|_| b.collecting);
        b.units.push(Unit {
            id,
            name,
            ends_at: run.map(|ms| Instant::now() + Duration::from_millis(ms + queue.unwrap_or(0))),
            exit: Exit::Code(code),
            ignore_term,
            reaped: false,
            queued_until: queue.map(|ms| Instant::now() + Duration::from_millis(ms)),
            placed: 0,
            verdict,
        });
        let alive = b
            .units
            .iter()
            .filter(|u| !u.reaped && !u.name.starts_with('d'))
            .count();
        b.peak = b.peak.max(alive);
        Ok(id)
    }

    fn signal_group(&mut self, id: UnitId, sig: i32) -> bool {
        let mut b = self.0.borrow_mut();
        let now = Instant::now();
        let Some(u) = b.units.iter_mut().find(|u| u.id == id && !u.reaped) else {
            return false;
        };
        if sig == libc::SIGCONT || (sig == libc::SIGTERM && u.ignore_term) {
            return true;
        }
        if u.ends_at.is_none_or(|t| t > now) {
            u.ends_at = Some(now);
            u.exit = Exit::Signal(sig);
        }
        let line = format!("signal {} {}", u.name, sig);
        b.log.push(line);
        true
    }

    fn group_alive(&mut self, id: UnitId) -> bool {
        self.0
            .borrow()
            .units
            .iter()
            .any(|u| u.id == id && !u.reaped)
    }

    fn reap(&mut self) -> Option<Reaped> {
        let mut b = self.0.borrow_mut();
        let now = Instant::now();
        let u = b
            .units
            .iter_mut()
            .find(|u| !u.reaped && u.ends_at.is_some_and(|t| t <= now))?;
        u.reaped = true;
        let r = Reaped {
            id: u.id,
            exit: u.exit,
            peak_rss_kib: 0,
            relayed: u.verdict.map(|verdict| crate::runtime::executor::Relayed {
                verdict,
                attempts: 1,
                restarts: 0,
            }),
        };
        let line = format!("end {}", u.name);
        b.log.push(line);
        Some(r)
    }

    fn group_begin(&mut self, members: &[(String, Vec<Endpoint>)]) -> bool {
        let mut b = self.0.borrow_mut();
        if b.group_units {
            let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
            b.log.push(format!("group {}", names.join(",")));
            b.collecting = true;
        }
        b.group_units
    }

    fn group_end(&mut self) {
        let mut b = self.0.borrow_mut();
        b.collecting = false;
        b.log.push("group end".into());
    }

    fn poll_due(&self) -> Option<Instant> {
        let b = self.0.borrow();
        let live = b.units.iter().filter(|u| !u.reaped);
        live.flat_map(|u| [u.ends_at, u.queued_until.filter(|_| u.placed < 2)])
            .flatten()
            .min()
    }

    fn placed(&mut self) -> Option<Placement> {
        let mut b = self.0.borrow_mut();
        let now = Instant::now();
        let u = b.units.iter_mut().find(|u| {
            !u.reaped
                && u.queued_until
                    .is_some_and(|t| u.placed == 0 || (u.placed == 1 && t <= now))
        })?;
        u.placed += 1;
        let running = u.placed == 2;
        let (id, line) = (
            u.id,
            format!("{} {}", if running { "runs" } else { "queued" }, u.name),
        );
        b.log.push(line);
        Some(Placement {
            id,
            running,
            job_id: format!("j{}", id.get()),
            step_id: None,
            node: running.then(|| "n1".to_string()),
        })
    }
}

pub(super) fn graph(text: &str) -> Graph {
    let src = crate::source::SourceFile::new(Path::new("t.toml"), text.to_string());
    let checked = crate::check_source(src);
    match checked.graph {
        Some(g) => g,
        None => panic!("invalid test graph: {:?}", checked.diagnostics),
    }
}

pub(super) fn opts() -> RunOptions {
    RunOptions {
        only: Vec::new(),
        keep_going: false,
        max_parallel: None,
        containment: crate::runtime::contain::Containment::None,
        journal: None,
        resume: false,
        exact: false,
        stdout_is_events: false,
    }
}

/// A process line for the fake: `p("a", "run=20 exit=1", "after = [\"b\"]")`.
fn p(name: &str, script: &str, extra: &str) -> String {
    let mut args = vec![format!("\"name={name}\"")];
    args.extend(script.split_whitespace().map(|a| format!("\"{a}\"")));
    format!(
        "[process.{name}]\ncmd = [\"true\", {}]\nstdout = \"null\"\nstderr = \"null\"\n{extra}\n",
        args.join(", ")
    )
}

struct Ran {
    out: RunOutcome,
    log: Vec<String>,
    peak: usize,
    events: Vec<serde_json::Value>,
}

impl Ran {
    fn at(&self, line: &str) -> usize {
        self.log
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in {:?}", self.log))
    }
    fn status(&self, name: &str) -> &str {
        &self
            .out
            .rows
            .iter()
            .find(|r| r.process == name)
            .unwrap_or_else(|| panic!("no row {name}"))
            .status
    }
    fn row(&self, name: &str) -> &SummaryRow {
        self.out.rows.iter().find(|r| r.process == name).unwrap()
    }
}

fn run_fake(text: &str, tweak: impl FnOnce(&mut RunOptions)) -> Ran {
    run_fake_with(text, tweak, Book::default())
}

fn run_fake_with(text: &str, tweak: impl FnOnce(&mut RunOptions), book: Book) -> Ran {
    let g = graph(text);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let mut o = opts();
    tweak(&mut o);
    let style = ConsoleStyle {
        color: false,
        color_stderr: false,
        progress: false,
        quiet: true,
        logs_to_stderr: false,
    };
    let reporter = LiveReporter::new(style, None, Some(events.display().to_string()));
    let book = Rc::new(RefCell::new(book));
    let fake = Box::new(Fake(Rc::clone(&book)));
    let out = run_with(&g, Path::new("."), &o, fake, Box::new(reporter)).unwrap();
    let b = book.borrow();
    let events = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ran {
        out,
        log: b.log.clone(),
        peak: b.peak,
        events,
    }
}

#[test]
fn a_parent_is_joined_before_its_dependents() {
    let r = run_fake(
        &[
            p("parent", "run=10", ""),
            p("kid", "run=60", "parent = \"parent\""),
            p("next", "run=1", "after = [\"parent\"]"),
        ]
        .concat(),
        |_| {},
    );
    assert_eq!(r.out.exit_code, 0);
    assert!(r.at("end parent") < r.at("end kid"));
    assert!(r.at("end kid") < r.at("start next"), "{:?}", r.log);
}

#[test]
fn nested_children_join_recursively() {
    let r = run_fake(
        &[
            p("top", "run=1", ""),
            p("mid", "run=1", "parent = \"top\""),
            p("leaf", "run=50", "parent = \"mid\""),
            p("after", "run=1", "after = [\"top\"]"),
        ]
        .concat(),
        |_| {},
    );
    assert!(r.at("end leaf") < r.at("start after"), "{:?}", r.log);
    let joined: Vec<&str> = r
        .events
        .iter()
        .filter(|e| e["event"] == "joined")
        .map(|e| e["process"].as_str().unwrap())
        .collect();
    assert_eq!(joined, ["mid", "top"]);
}

#[test]
fn a_failed_child_skips_its_parents_dependents_under_keep_going() {
    let r = run_fake(
        &[
            p("parent", "run=1", ""),
            p("kid", "run=20 exit=3", "parent = \"parent\""),
            p("next", "run=1", "after = [\"parent\"]"),
            p("other", "run=40", ""),
        ]
        .concat(),
        |o| o.keep_going = true,
    );
    assert_eq!(r.out.exit_code, 1);
    assert_eq!(r.status("parent"), "ok");
    assert_eq!(r.status("kid"), "failed");
    assert_eq!(r.status("next"), "skipped");
    assert_eq!(r.status("other"), "ok");
    assert!(r
        .row("next")
        .reason
        .as_deref()
        .unwrap()
        .contains("child `kid` failed"));
}

#[test]
fn fail_fast_skips_pending_and_stops_dependents_before_what_they_started_after() {
    let r = run_fake(
        &[
            p("main", "run=30 exit=1", ""),
            p("db", "", "daemon = true"),
            p("api", "", "daemon = true\nafter = { db = \"start\" }"),
            p("later", "run=1", "after = [\"main\"]"),
        ]
        .concat(),
        |_| {},
    );
    assert_eq!(r.out.exit_code, 1);
    assert_eq!(r.status("later"), "skipped");
    assert_eq!(r.status("db"), "stopped");
    assert!(
        r.at(&format!("signal api {}", libc::SIGTERM))
            < r.at(&format!("signal db {}", libc::SIGTERM)),
        "{:?}",
        r.log
    );
}

#[test]
fn retries_come_before_restarts_and_count_only_real_attempts() {
    let r = run_fake(
        &p(
            "flaky",
            "run=1 exit=1",
            "retries = 1\nrestart = \"on-failure\"\nmax_restarts = 2",
        ),
        |_| {},
    );
    assert_eq!(r.status("flaky"), "failed");
    // Attempt 1 fails, attempt 2 is the retry; then the 2 restarts (retries are used up).
    assert_eq!(r.row("flaky").attempts, 4, "{:?}", r.log);
    assert_eq!(r.row("flaky").restarts, Some(2));
}

#[test]
fn lock_capacity_bounds_holders() {
    let mut text = String::from("[lock.db]\ncapacity = 2\n");
    for i in 0..5 {
        text.push_str(&p(&format!("w{i}"), "run=20", "locks = [\"db\"]"));
    }
    let r = run_fake(&text, |_| {});
    assert_eq!(r.out.exit_code, 0);
    assert_eq!(r.peak, 2, "{:?}", r.log);
}

#[test]
fn max_parallel_bounds_workers_but_not_daemons() {
    let text = [
        p("d_db", "", "daemon = true"),
        p("build", "run=5", ""),
        p("test", "run=5", "after = [\"build\"]"),
        p("x1", "run=5", ""),
        p("x2", "run=5", ""),
    ]
    .concat();
    let r = run_fake(&text, |o| o.max_parallel = Some(1));
    assert_eq!(r.out.exit_code, 0, "{:?}", r.log);
    assert_eq!(r.peak, 1);
    assert!(r.at("start d_db") < r.at("end build"));
}

#[test]
fn a_stream_group_launches_whole_or_not_at_all() {
    let text = [
        p("x", "run=40", ""),
        p("a", "run=5", ""),
        p("b", "run=5", "after = [\"x\"]"),
        "[pipe.ab]\nfrom = \"a\"\nto = \"b\"\n".to_string(),
    ]
    .concat()
    .replace("stdout = \"null\"\n", "");
    let r = run_fake(&text, |_| {});
    assert_eq!(r.out.exit_code, 0, "{:?}", r.log);
    // `a` could start at once, but only starts with `b`, once `x` is done.
    assert!(r.at("end x") < r.at("start a"), "{:?}", r.log);
}

#[test]
fn a_group_member_that_fails_stops_the_rest() {
    let text = [
        p("a", "run=10 exit=2", ""),
        p("b", "run=5000", ""),
        "[pipe.ab]\nfrom = \"a\"\nto = \"b\"\n".to_string(),
    ]
    .concat()
    .replace("stdout = \"null\"\n", "");
    let r = run_fake(&text, |o| o.keep_going = true);
    assert_eq!(r.status("a"), "failed");
    assert_eq!(r.status("b"), "stopped");
    assert!(r
        .row("b")
        .reason
        .as_deref()
        .unwrap()
        .contains("stream group"));
}

#[test]
fn every_instance_ends_with_a_terminal_event() {
    let text = [
        p(
            "again",
            "run=1 exit=1",
            "retries = 3\nretry_delay = \"20s\"",
        ),
        p("back", "run=1", "restart = \"always\""),
        p("fail", "run=80 exit=1", ""),
        p("never", "run=1", "after = [\"fail\"]"),
        p("d_svc", "", "daemon = true"),
    ]
    .concat();
    let r = run_fake(&text, |_| {});
    assert_eq!(r.out.exit_code, 1);
    for name in ["again", "back", "fail", "never", "d_svc"] {
        let last = r
            .events
            .iter()
            .rev()
            .find(|e| e["process"] == name)
            .unwrap_or_else(|| panic!("no event for {name}"));
        assert!(
            ["exited", "skipped", "stopped"].contains(&last["event"].as_str().unwrap()),
            "{name}: {last}"
        );
    }
}

#[test]
fn a_timeout_stops_and_fails() {
    let r = run_fake(&p("slow", "run=5000", "timeout = \"30ms\""), |_| {});
    assert_eq!(r.status("slow"), "timed out");
    assert!(r.log.contains(&format!("signal slow {}", libc::SIGTERM)));
}

#[test]
fn a_timeout_counts_from_the_start_not_from_the_submission() {
    // 300 ms in a cluster's queue, then 100 ms of work: within a 200 ms timeout.
    let r = run_fake(
        &p("queued", "queue=300 run=100", "timeout = \"200ms\""),
        |_| {},
    );
    assert_eq!(r.status("queued"), "ok", "{:?}", r.log);
    assert!(r.at("queued queued") < r.at("runs queued"));
    let states: Vec<&str> = r
        .events
        .iter()
        .filter(|e| e["event"] == "placed")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "running"]);
    // ... and it still fires once the unit runs.
    let r = run_fake(
        &p("slow", "queue=100 run=5000", "timeout = \"50ms\""),
        |_| {},
    );
    assert_eq!(r.status("slow"), "timed out");
    assert!(r.at("runs slow") < r.at(&format!("signal slow {}", libc::SIGTERM)));
}

#[test]
fn a_process_that_ignores_the_stop_signal_is_killed_after_the_grace() {
    let text = format!(
        "[graph]\nshutdown_grace = \"50ms\"\n{}{}",
        p("stubborn", "ignore-term", ""),
        p("fail", "run=10 exit=1", "")
    );
    let r = run_fake(&text, |_| {});
    assert_eq!(r.status("stubborn"), "stopped");
    assert!(
        r.log
            .contains(&format!("signal stubborn {}", libc::SIGKILL)),
        "{:?}",
        r.log
    );
}

#[test]
fn a_run_that_can_never_progress_ends_at_once() {
    let r = run_fake(
        &[p("a", "run=1", ""), p("b", "run=1", "after = [\"a\"]")].concat(),
        |o| o.max_parallel = Some(0),
    );
    assert_eq!(r.out.exit_code, 1);
    assert!(r.out.rows.iter().all(|row| row.status == "skipped"));
    assert!(r.log.is_empty());
}

#[test]
fn huge_durations_do_not_overflow_the_clock() {
    let t = Instant::now();
    assert!(later(t, Duration::MAX) > t);
    assert_eq!(later(t, Duration::from_secs(1)), t + Duration::from_secs(1));
}

#[test]
fn restart_back_off_doubles_up_to_thirty_seconds() {
    assert_eq!(restart_delay(0), Duration::from_millis(250));
    assert_eq!(restart_delay(2), Duration::from_millis(1000));
    assert_eq!(restart_delay(40), Duration::from_secs(30));
}

#[test]
fn a_group_units_members_take_their_nested_runs_word() {
    let text = format!(
        "{}{}{}[pipe.rpc]\nbetween = [\"a\", \"b\"]\n",
        p("a", "run=300 exit=1 verdict=failed", "retries = 2"),
        p("b", "run=150 verdict=ok", "timeout = \"50ms\""),
        p("c", "run=1", "after = [\"b\"]\nalways = true"),
    );
    let book = Book {
        group_units: true,
        ..Book::default()
    };
    let ran = run_fake_with(&text, |o| o.keep_going = true, book);
    // Both members spawned between group_begin and group_end.
    assert!(ran.at("group a,b") < ran.at("start a"));
    assert!(ran.at("start b") < ran.at("group end"));
    // Its retries were the nested run's: no second attempt here.
    assert_eq!(ran.status("a"), "failed");
    assert_eq!(ran.row("a").attempts, 1);
    // Its timeout was the nested run's: not enforced here, the verdict stands.
    assert_eq!(ran.status("b"), "ok");
    assert!(ran.at("end b") < ran.at("end a"), "{:?}", ran.log);
    assert!(
        !ran.log.iter().any(|l| l.starts_with("signal b")),
        "{:?}",
        ran.log
    );
    assert_eq!(ran.status("c"), "ok");
}

#[test]
fn a_group_units_timed_out_member_is_timed_out_here() {
    let text = format!(
        "{}{}[pipe.rpc]\nbetween = [\"a\", \"b\"]\n",
        p("a", "run=20 exit=143 verdict=timed-out", ""),
        p("b", "run=20 verdict=stopped", ""),
    );
    let book = Book {
        group_units: true,
        ..Book::default()
    };
    let ran = run_fake_with(&text, |_| {}, book);
    assert_eq!(ran.status("a"), "timed out");
    assert_eq!(ran.status("b"), "stopped");
    assert_eq!(ran.out.exit_code, 1);
}
