//! The scheduling core on its own: no executor, no descriptor, no reporter.
//! Each test drives [`Sched`] as the shell does (settle, take the launches,
//! say which units ended, fire timers) and reads what it decided: the
//! launches, in order, and its effects.

use super::tests::{graph, opts};
use super::*;

/// A core and a record of what it decided, in words.
struct Drive<'g> {
    s: Sched<'g>,
    next_unit: i32,
    /// `start NAME`, then the effects: `skipped NAME`, `joined NAME STATUS`,
    /// `signal NAME SIG`, `stopped NAME`, `retrying NAME`, `restarting NAME`,
    /// `done NAME OUTCOME`.
    log: Vec<String>,
}

impl<'g> Drive<'g> {
    fn new(g: &'g Graph, opts: &RunOptions) -> Drive<'g> {
        let s = Sched::new(g, opts).unwrap_or_else(|e| panic!("{e}"));
        Drive {
            s,
            next_unit: 100,
            log: Vec::new(),
        }
    }

    fn k(&self, name: &str) -> InstId {
        self.s
            .insts
            .ids()
            .find(|&k| self.s.insts[k].name == name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    /// What the shell's step does: settle and launch until nothing changes,
    /// then send the stops. Returns the instances started, in order.
    fn step(&mut self) -> Vec<String> {
        let mut started = Vec::new();
        loop {
            let mut changed = self.s.settle();
            let mut cur = Cursor::default();
            let far = Instant::now() + Duration::from_secs(3600);
            while let Some(start) = self.s.next_start(&mut cur, far) {
                let ks = match start {
                    Start::One(k) | Start::Rejoin(k) => vec![k],
                    Start::Group(_, members) => members,
                };
                for k in ks {
                    self.s.attempt_begins(k);
                    self.next_unit += 1;
                    self.s
                        .unit_started(k, UnitId(self.next_unit), 0, Instant::now());
                    // As the shell's `emit`: what was decided before is told first.
                    self.effects();
                    let name = self.s.insts[k].name.clone();
                    self.log.push(format!("start {name}"));
                    started.push(name);
                }
                changed = true;
            }
            if !(changed || cur.changed) {
                break;
            }
        }
        self.s.send_stops();
        self.effects();
        started
    }

    /// The unit of `name` ended with `code` (or by the stop signal, if it
    /// was sent one): the shell's `on_reaped` and `attempt_end`.
    fn exit(&mut self, name: &str, code: i32) {
        let k = self.k(name);
        let unit = self.s.insts[k]
            .running()
            .map(|a| a.unit)
            .expect("not running");
        let signalled = self.s.insts[k]
            .running()
            .and_then(|a| a.stop)
            .is_some_and(|s| s.signalled.is_some());
        let exit = if signalled {
            Exit::Signal(libc::SIGTERM)
        } else {
            Exit::Code(code)
        };
        self.s.unit_reaped(k, unit, exit, None, 0);
        let result = self.s.attempt_result(k);
        let again = self.s.next_attempt(k, result, false);
        self.s.after_attempt(k, result, again);
        self.effects();
    }

    /// Renders and drops the effects decided so far.
    fn effects(&mut self) {
        for fx in self.s.take_effects() {
            let name = |k: InstId| self.s.insts[k].name.clone();
            let line = match fx {
                Effect::Skipped { k, .. } => format!("skipped {}", name(k)),
                Effect::Joined { k, status, .. } => format!("joined {} {status}", name(k)),
                Effect::Stopped { k, .. } => format!("stopped {}", name(k)),
                Effect::Signal { k, sig } if sig != libc::SIGCONT => {
                    format!("signal {} {}", name(k), signal_name(sig))
                }
                Effect::Retrying { k, .. } => format!("retrying {}", name(k)),
                Effect::Restarting { k, .. } => format!("restarting {}", name(k)),
                Effect::Done { k, outcome } => format!("done {} {}", name(k), outcome.as_str()),
                _ => continue,
            };
            self.log.push(line);
        }
    }

    fn said(&self, line: &str) -> bool {
        self.log.iter().any(|l| l == line)
    }

    fn before(&self, a: &str, b: &str) -> bool {
        let at = |l: &str| self.log.iter().position(|x| x == l);
        matches!((at(a), at(b)), (Some(x), Some(y)) if x < y)
    }
}

const JOIN: &str = "[process.parent]\ncmd = [\"p\"]\n[process.kid]\nparent = \"parent\"\ncmd = [\"k\"]\n[process.next]\nafter = [\"parent\"]\ncmd = [\"n\"]\n";

#[test]
fn a_dependent_waits_for_the_parents_join_and_a_joined_effect_says_it() {
    let g = graph(JOIN);
    let mut d = Drive::new(&g, &opts());
    assert_eq!(
        d.step(),
        ["parent", "kid"],
        "a child starts once its parent started"
    );
    d.exit("parent", 0);
    assert!(
        d.step().is_empty(),
        "`next` must wait for `kid`: {:?}",
        d.log
    );
    d.exit("kid", 0);
    assert_eq!(d.step(), ["next"]);
    assert!(d.before("joined parent ok", "start next"), "{:?}", d.log);
}

#[test]
fn a_failed_child_fails_the_join_and_skips_the_parents_dependents() {
    let g = graph(JOIN);
    let o = RunOptions {
        keep_going: true,
        ..opts()
    };
    let mut d = Drive::new(&g, &o);
    d.step();
    d.exit("parent", 0);
    d.exit("kid", 3);
    d.step();
    assert!(d.said("joined parent failed"), "{:?}", d.log);
    assert!(d.said("skipped next"), "{:?}", d.log);
    assert!(!d.said("start next"));
}

#[test]
fn a_nested_childs_failure_reaches_the_top_of_the_subtree() {
    let g = graph(
        "[process.a]\ncmd = [\"a\"]\n[process.b]\nparent = \"a\"\ncmd = [\"b\"]\n[process.c]\nparent = \"b\"\ncmd = [\"c\"]\n[process.z]\nafter = [\"a\"]\ncmd = [\"z\"]\n",
    );
    let o = RunOptions {
        keep_going: true,
        ..opts()
    };
    let mut d = Drive::new(&g, &o);
    assert_eq!(d.step(), ["a", "b", "c"]);
    d.exit("a", 0);
    d.exit("b", 0);
    assert!(
        d.step().is_empty(),
        "`z` waits for the grandchild: {:?}",
        d.log
    );
    d.exit("c", 1);
    d.step();
    assert!(
        d.said("joined b failed") && d.said("joined a failed"),
        "{:?}",
        d.log
    );
    assert!(d.said("skipped z"));
}

#[test]
fn a_daemon_child_is_stopped_when_its_parent_joins() {
    let g = graph(
        "[process.p]\ncmd = [\"p\"]\n[process.d]\nparent = \"p\"\ndaemon = true\ncmd = [\"d\"]\n",
    );
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["p", "d"]);
    d.exit("p", 0);
    d.step();
    assert!(d.said("signal d SIGTERM"), "{:?}", d.log);
    d.exit("d", 0);
    d.step();
    assert!(d.said("done d stopped"), "{:?}", d.log);
    assert!(d.s.all_done());
}

#[test]
fn daemons_take_no_slot_and_locks_bound_what_runs_at_once() {
    // (graph, max_parallel, what starts first)
    let cases: &[(&str, Option<u32>, &[&str])] = &[
        (
            "[process.db]\ndaemon = true\ncmd = [\"db\"]\n[process.build]\ncmd = [\"b\"]\n[process.test]\nafter = [\"build\"]\ncmd = [\"t\"]\n",
            Some(1),
            &["db", "build"],
        ),
        (
            "[lock.gpu]\ncapacity = 2\n[process.a]\nlocks = [\"gpu\"]\ncmd = [\"a\"]\n[process.b]\nlocks = [\"gpu\"]\ncmd = [\"b\"]\n[process.c]\nlocks = [\"gpu\"]\ncmd = [\"c\"]\n",
            None,
            &["a", "b"],
        ),
        (
            "[process.a]\ncmd = [\"a\"]\n[process.b]\ncmd = [\"b\"]\n[process.c]\ncmd = [\"c\"]\n",
            Some(2),
            &["a", "b"],
        ),
    ];
    for (text, max, first) in cases {
        let g = graph(text);
        let o = RunOptions {
            max_parallel: *max,
            ..opts()
        };
        let mut d = Drive::new(&g, &o);
        assert_eq!(d.step(), *first, "{text}");
        // One ends: the next takes its slot or lock.
        d.exit(first[first.len() - 1], 0);
        assert_eq!(d.step().len(), 1, "{text}: {:?}", d.log);
    }
}

#[test]
fn a_stream_group_starts_whole_or_not_at_all() {
    let g = graph(
        "[process.gate]\ncmd = [\"g\"]\n[process.w]\ncmd = [\"w\"]\n[process.r]\nafter = [\"gate\"]\ncmd = [\"r\"]\n[pipe.p]\nfrom = \"w\"\nto = \"r\"\n",
    );
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["gate"], "`w` waits with its group for `r`");
    d.exit("gate", 0);
    let mut both = d.step();
    both.sort();
    assert_eq!(both, ["r", "w"]);
}

#[test]
fn fail_fast_skips_the_pending_and_stops_dependents_before_what_they_need() {
    let g = graph(
        "[process.db]\ncmd = [\"db\"]\n[process.api]\nafter = { db = \"start\" }\ncmd = [\"api\"]\n[process.bad]\ncmd = [\"x\"]\n[process.late]\nafter = [\"bad\"]\ncmd = [\"l\"]\n",
    );
    let mut d = Drive::new(&g, &opts());
    d.step();
    d.step();
    d.exit("bad", 1);
    d.step();
    assert!(d.said("skipped late"), "{:?}", d.log);
    assert!(d.said("signal api SIGTERM"), "{:?}", d.log);
    assert!(
        !d.said("signal db SIGTERM"),
        "db waits for api to stop: {:?}",
        d.log
    );
    d.exit("api", 0);
    d.step();
    assert!(d.said("signal db SIGTERM"), "{:?}", d.log);
    assert!(matches!(d.s.cancel, Some(Cancel::FailFast(_))));
}

#[test]
fn a_retry_comes_before_a_restart_and_both_are_counted_when_they_start() {
    let g = graph(
        "[process.s]\ncmd = [\"s\"]\nretries = 1\nretry_delay = \"0s\"\nrestart = \"on-failure\"\nmax_restarts = 1\n",
    );
    let mut d = Drive::new(&g, &opts());
    d.step();
    d.exit("s", 1);
    assert!(d.said("retrying s"), "{:?}", d.log);
    let k = d.k("s");
    d.s.retry_timer(k, Instant::now() + Duration::from_secs(1));
    assert_eq!(d.step(), ["s"]);
    d.exit("s", 1);
    assert!(d.said("restarting s"), "retries used up: {:?}", d.log);
    assert_eq!(d.s.insts[k].restarts, 0, "counted when it starts");
    d.s.retry_timer(k, Instant::now() + Duration::from_secs(60));
    d.step();
    assert_eq!((d.s.insts[k].attempts, d.s.insts[k].restarts), (3, 1));
}

#[test]
fn a_timeout_fires_from_the_timers_even_while_others_wait_to_launch() {
    let g = graph("[process.slow]\ncmd = [\"s\"]\ntimeout = \"30ms\"\n");
    let mut d = Drive::new(&g, &opts());
    d.step();
    let k = d.k("slow");
    let deadline = d.s.next_deadline().expect("a timeout is a deadline");
    d.s.running_timers(k, deadline);
    d.step();
    assert!(d.said("signal slow SIGTERM"), "{:?}", d.log);
    d.exit("slow", 0);
    assert!(d.said("done slow timed out"), "{:?}", d.log);
}

#[test]
fn an_instance_waiting_to_retry_when_the_run_stops_ends_stopped() {
    let g = graph("[process.f]\ncmd = [\"f\"]\nretries = 3\nretry_delay = \"1h\"\n");
    let mut d = Drive::new(&g, &opts());
    d.step();
    d.exit("f", 1);
    d.s.escalate(Cancel::Signal(libc::SIGINT));
    d.s.begin_shutdown();
    d.effects();
    // Its last event is `stopped`, not the `retrying` that announced an attempt.
    assert_eq!(
        d.log[d.log.len() - 2..],
        ["done f stopped", "stopped f"],
        "{:?}",
        d.log
    );
    assert_eq!(d.s.insts[d.k("f")].attempts, 1, "the retry never started");
}

#[test]
fn a_dependent_on_ready_waits_for_the_probe_and_a_late_answer_does_not_count() {
    let g = graph(
        "[process.db]\ncmd = [\"db\"]\nready = { file = \"up\", timeout = \"5s\" }\n[process.api]\nafter = { db = \"ready\" }\ncmd = [\"api\"]\n",
    );
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["db"]);
    let k = d.k("db");
    assert!(d.s.became_ready(k).is_some());
    assert!(d.s.became_ready(k).is_none(), "ready once per attempt");
    assert_eq!(d.step(), ["api"]);
    // Another run: the deadline passes first; a pass after it is too late.
    let mut d = Drive::new(&g, &opts());
    d.step();
    d.s.not_ready_in_time(k);
    assert!(d.s.became_ready(k).is_none());
    d.step();
    assert!(d.said("signal db SIGTERM"), "{:?}", d.log);
    d.exit("db", 0);
    d.step();
    assert!(
        d.said("done db failed") && d.said("skipped api"),
        "{:?}",
        d.log
    );
}

#[test]
fn health_fails_the_attempt_only_after_failures_in_a_row() {
    let g = graph(
        "[process.s]\ncmd = [\"s\"]\nhealth = { cmd = [\"true\"], interval = \"1s\", failures = 3 }\n",
    );
    let mut d = Drive::new(&g, &opts());
    d.step();
    let k = d.k("s");
    assert!(!d.s.health_check_failed(k, 3, "cmd"));
    assert!(!d.s.health_check_failed(k, 3, "cmd"));
    assert!(d.s.health_check_failed(k, 3, "cmd"));
    d.step();
    d.exit("s", 0);
    assert!(d.said("done s failed"), "{:?}", d.log);
}

#[test]
fn a_stall_is_found_beside_a_daemon_nothing_waits_for_but_not_one_waited_for() {
    let text = "[process.d]\ndaemon = true\ncmd = [\"d\"]\n[process.a]\ncmd = [\"a\"]\n[process.w]\nafter = [\"a\"]\ncmd = [\"w\"]\n[process.r]\ncmd = [\"r\"]\n[pipe.p]\nfrom = \"w\"\nto = \"r\"\n";
    let o = RunOptions {
        max_parallel: Some(1),
        ..opts()
    };
    let g = graph(text);
    let mut d = Drive::new(&g, &o);
    assert_eq!(d.step(), ["d", "a"]);
    d.exit("a", 0);
    assert!(d.step().is_empty(), "the group needs two slots");
    assert!(d.s.stuck().is_some(), "`d` cannot unblock `w` and `r`");
    // The same, but `w` waits for the daemon's start: not stuck on its account.
    let g = graph(&text.replace(
        "after = [\"a\"]",
        "after = { a = \"success\", d = \"start\" }",
    ));
    let mut d = Drive::new(&g, &o);
    assert_eq!(d.step(), ["d", "a"]);
    d.exit("a", 0);
    d.step();
    assert_eq!(d.s.stuck(), None);
}

#[test]
fn a_run_that_can_never_go_on_is_found_stuck_and_ends() {
    // Validation refuses this `--max-parallel`; the core must not hang on it either.
    let g = graph(
        "[process.a]\ncmd = [\"a\"]\n[process.w]\nafter = [\"a\"]\ncmd = [\"w\"]\n[process.r]\ncmd = [\"r\"]\n[pipe.p]\nfrom = \"w\"\nto = \"r\"\n",
    );
    let o = RunOptions {
        max_parallel: Some(1),
        ..opts()
    };
    let mut d = Drive::new(&g, &o);
    assert_eq!(d.step(), ["a"]);
    assert_eq!(d.s.stuck(), None, "`a` runs");
    d.exit("a", 0);
    assert!(d.step().is_empty(), "the group needs two slots");
    let stuck = d.s.stuck().expect("stuck");
    let names: Vec<&str> = stuck.iter().map(|&k| d.s.insts[k].name.as_str()).collect();
    assert_eq!(names, ["w", "r"]);
    d.s.stall(stuck.into_iter().map(|k| (k, "a slot".to_string())));
    d.effects();
    assert!(d.said("skipped w") && d.said("skipped r"), "{:?}", d.log);
    assert!(d.s.all_done());
    assert_eq!(d.s.cancel, Some(Cancel::Stalled));
}

#[test]
fn killing_everything_tells_each_sigkill_and_drains_no_more() {
    let g = graph("[process.a]\ncmd = [\"a\"]\n[process.b]\ncmd = [\"b\"]\n[process.c]\nafter = [\"a\"]\ncmd = [\"c\"]\n");
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["a", "b"]);
    d.s.escalate(Cancel::Kill(libc::SIGINT));
    d.s.begin_shutdown();
    d.s.kill_running(Instant::now());
    d.effects();
    for p in ["a", "b"] {
        assert!(d.said(&format!("signal {p} SIGKILL")), "{:?}", d.log);
    }
    let since = Instant::now();
    assert_eq!(d.s.drain_until(since), since, "no drain once killing");
    d.step();
    assert!(d.said("skipped c"));
    d.exit("a", 0);
    assert!(d.said("done a stopped"), "{:?}", d.log);
}

#[test]
fn the_first_signal_decides_the_exit_code_whatever_follows() {
    let g = graph("[process.a]\ncmd = [\"a\"]\n");
    let mut d = Drive::new(&g, &opts());
    d.step();
    assert!(d.s.escalate(Cancel::Signal(libc::SIGINT)));
    assert!(
        d.s.escalate(Cancel::Kill(libc::SIGHUP)),
        "a second signal kills"
    );
    assert!(
        !d.s.escalate(Cancel::Kill(libc::SIGTERM)),
        "a third changes nothing"
    );
    assert_eq!(d.s.cancel, Some(Cancel::Kill(libc::SIGINT)));
}

#[test]
fn a_skipped_group_names_the_member_that_could_not_start() {
    let g = graph(
        "[process.gate]\ncmd = [\"g\"]\n[process.a]\nafter = [\"gate\"]\ncmd = [\"a\"]\n[process.b]\ncmd = [\"b\"]\n[process.c]\nreplicas = 2\ncmd = [\"c\"]\n[pipe.p]\nfrom = \"a\"\nto = \"b\"\n[queue.q]\nfrom = [\"b\"]\nto = [\"c\"]\n",
    );
    let o = RunOptions {
        keep_going: true,
        ..opts()
    };
    let mut d = Drive::new(&g, &o);
    assert_eq!(d.step(), ["gate"]);
    d.exit("gate", 1);
    d.step();
    for name in ["b", "c[0]", "c[1]"] {
        let k = d.k(name);
        assert_eq!(
            d.s.insts[k].why.as_deref(),
            Some("`a` in its stream group was skipped"),
            "{name}"
        );
    }
}

#[test]
fn a_daemon_reader_of_a_queue_is_signalled_only_once_its_drain_is_over() {
    let g = graph(
        "[process.gen]\ncmd = [\"g\"]\n[queue.q]\nfrom = [\"gen\"]\nto = [\"sink\"]\n[process.sink]\ndaemon = true\ncmd = [\"s\"]\n",
    );
    let mut d = Drive::new(&g, &opts());
    d.step();
    d.exit("gen", 0);
    d.step();
    let k = d.k("sink");
    assert!(d.s.insts[k].drain_until.is_some(), "{:?}", d.log);
    assert!(
        !d.said("signal sink SIGTERM"),
        "still draining: {:?}",
        d.log
    );
    assert!(
        d.s.next_deadline().is_some(),
        "the drain's end is a deadline"
    );
    d.s.insts[k].drain_until = Some(Instant::now());
    d.step();
    assert!(d.said("signal sink SIGTERM"), "{:?}", d.log);
}

#[test]
fn a_freed_slot_goes_to_the_first_in_file_order_even_if_it_became_ready_last() {
    let g = graph(
        "[graph]\nmax_parallel = 1\n[process.a]\ncmd = [\"a\"]\n[process.b]\nafter = [\"a\"]\ncmd = [\"b\"]\n[process.c]\nafter = { a = \"start\" }\ncmd = [\"c\"]\n",
    );
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["a"]);
    d.exit("a", 0);
    assert_eq!(d.step(), ["b"], "`b` joins the ready list before a launch");
}

#[test]
fn an_end_not_yet_joined_is_never_taken_for_a_stall() {
    // A daemon that ends by itself while being released: between its reap
    // and the next settle, nothing runs and nothing is pending, yet it is
    // not joined. That is not a stall (it once ended such a run with exit 1).
    let g = graph("[process.w]\ncmd = [\"w\"]\n[process.d]\ndaemon = true\ncmd = [\"d\"]\n");
    let mut d = Drive::new(&g, &opts());
    assert_eq!(d.step(), ["w", "d"]);
    d.exit("w", 0);
    d.step();
    d.exit("d", 0);
    assert_eq!(d.s.stuck(), None);
    d.step();
    assert!(d.s.all_done(), "{:?}", d.log);
    assert_eq!(d.s.stuck(), None);
}
