//! The commands' contracts: exit codes, formats, schema, run's honest refusal.

mod common;
use common::*;

#[test]
fn usage_errors_exit_2() {
    jobgraph().arg("validate").assert().code(2);
    jobgraph().arg("frobnicate").assert().code(2);
    jobgraph()
        .args(["graph", "--format", "png", "jobs/hello.toml"])
        .assert()
        .code(2);
}

#[test]
fn help_and_version_exit_0() {
    jobgraph().arg("--help").assert().code(0);
    jobgraph().arg("--version").assert().code(0);
}

#[test]
fn plan_and_graph_refuse_invalid_files_with_1() {
    jobgraph()
        .args(["plan", "tests/invalid/cycle.toml"])
        .assert()
        .code(1);
    jobgraph()
        .args(["graph", "tests/invalid/cycle.toml"])
        .assert()
        .code(1);
}

#[test]
fn run_validates_first_and_exits_2_on_invalid_files() {
    let out = jobgraph()
        .args(["run", "tests/invalid/cycle.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dependency cycle"));
}

#[test]
fn run_dry_run_prints_the_plan() {
    let out = jobgraph()
        .args(["run", "--dry-run", "jobs/five.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stage 1"));
}

/// A dry run refuses what a run would: output paths of the wrong kind and
/// bad Slurm settings from the environment, without asking Slurm.
#[test]
fn a_dry_run_refuses_what_a_run_would() {
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    std::fs::create_dir(job.file("adir")).unwrap();
    std::fs::write(job.file("afile"), "").unwrap();
    let (adir, afile) = (job.file("adir"), job.file("afile"));
    let (adir, afile) = (adir.to_str().unwrap(), afile.to_str().unwrap());
    let cases: [(&[&str], &str, &str); 6] = [
        (&["--events", adir], "", "is a directory"),
        (&["--events="], "", "--events needs a path"),
        (&["--log-dir", afile], "", "is not a directory"),
        (&["--state", adir], "", "not a regular file"),
        (
            &["--executor", "slurm"],
            "JOBGRAPH_SLURM_KEEP=maybe",
            "expected 1 or 0",
        ),
        (
            &["--executor", "slurm"],
            "JOBGRAPH_SLURM_MODE=bogus",
            "expected `auto`",
        ),
    ];
    for (args, env, says) in cases {
        for dry in [true, false] {
            let mut cmd = jobgraph();
            cmd.arg("run").args(args).arg(job.path());
            if dry {
                cmd.arg("--dry-run");
            }
            if let Some((k, v)) = env.split_once('=') {
                cmd.env(k, v);
            }
            let out = cmd
                .timeout(std::time::Duration::from_secs(30))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} {env} dry={dry}: {err}"
            );
            assert!(err.contains(says), "{args:?} {env} dry={dry}: {err}");
        }
    }
}

#[test]
fn run_only_rejects_unknown_names() {
    let out = jobgraph()
        .args(["run", "--dry-run", "--only", "nope", "jobs/five.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_is_json_and_matches_the_committed_copy() {
    let out = jobgraph().arg("schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(live["title"], "jobgraph job file");
    let committed = std::fs::read_to_string(root().join("docs/jobgraph.schema.json")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "docs/jobgraph.schema.json is stale: run `cargo run -- schema > docs/jobgraph.schema.json`"
    );
}

#[test]
fn plan_json_has_stages_in_dependency_order() {
    let out = jobgraph()
        .args(["plan", "--format", "json", "jobs/five.toml"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut stage_of = std::collections::HashMap::new();
    for stage in plan["stages"].as_array().unwrap() {
        for unit in stage["units"].as_array().unwrap() {
            for p in unit["processes"].as_array().unwrap() {
                stage_of.insert(
                    p["name"].as_str().unwrap().to_string(),
                    stage["number"].as_u64().unwrap(),
                );
            }
        }
    }
    assert_eq!(stage_of.len(), 5);
    let text = std::fs::read_to_string(root().join("jobs/five.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    for (name, p) in file["process"].as_table().unwrap() {
        for dep in p
            .get("after")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let dep = dep.as_str().unwrap();
            assert!(stage_of[name] > stage_of[dep], "{name} after {dep}");
        }
    }
}

#[test]
fn plan_shows_descriptors_of_stream_endpoints() {
    let out = jobgraph()
        .args(["plan", "--format", "json", "jobs/nightly.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut fds = Vec::new();
    for stage in plan["stages"].as_array().unwrap() {
        for unit in stage["units"].as_array().unwrap() {
            for p in unit["processes"].as_array().unwrap() {
                for e in p["endpoints"].as_array().unwrap() {
                    fds.push((
                        p["name"].as_str().unwrap().to_string(),
                        e["env"].as_str().unwrap().to_string(),
                        e["fd"].as_i64().unwrap(),
                    ));
                }
            }
        }
    }
    assert!(
        fds.contains(&("load".into(), "JOBGRAPH_FD_TASKS".into(), 1)),
        "{fds:?}"
    );
    assert!(
        fds.contains(&("worker".into(), "JOBGRAPH_FD_TASKS".into(), 0)),
        "{fds:?}"
    );
    assert!(
        fds.contains(&("client".into(), "JOBGRAPH_FD_RPC".into(), 3)),
        "{fds:?}"
    );
}

#[test]
fn completions_are_generated() {
    let out = jobgraph().args(["completions", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("jobgraph"));
}

#[test]
fn validate_never_starts_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let job = dir.path().join("touch.toml");
    std::fs::write(
        &job,
        format!("[process.t]\ncmd = [\"touch\", \"{}\"]\n[process.s]\nshell = \"touch {}\"\nready = {{ cmd = [\"touch\", \"{}\"] }}\n", marker.display(), marker.display(), marker.display()),
    )
    .unwrap();
    jobgraph().arg("validate").arg(&job).assert().code(0);
    jobgraph().arg("plan").arg(&job).assert().code(0);
    jobgraph().arg("graph").arg(&job).assert().code(0);
    assert!(!marker.exists());
}

#[test]
fn dry_run_with_only_shows_just_that_subgraph() {
    let out = jobgraph()
        .args(["run", "--dry-run", "--only", "link", "jobs/five.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 processes"), "{text}");
    assert!(text.contains("link") && text.contains("setup"), "{text}");
    assert!(!text.contains("  test "), "{text}");
}

/// A queue between `load` and 4 `worker` replicas: a stream group of 5.
const GROUP_OF_FIVE: &str = "[process]\nload = { cmd = [\"true\"] }\nworker = { cmd = [\"true\"], replicas = 4 }\n[queue.tasks]\nfrom = [\"load\"]\nto = [\"worker\"]\n";

#[test]
fn max_parallel_on_the_command_line_is_checked_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("group.toml");
    std::fs::write(&job, GROUP_OF_FIVE).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = jobgraph()
            .args(["run", "--max-parallel", "2", "--no-progress"])
            .args(extra)
            .arg(&job)
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("error[max-parallel-too-small]")
                && stderr.contains("--max-parallel is 2")
                && stderr.contains("pass --max-parallel 5 or more"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    // Large enough: the dry run shows the override.
    let out = jobgraph()
        .args(["run", "--dry-run", "--max-parallel", "5"])
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_parallel 5 (--max-parallel)"), "{text}");
}

#[test]
fn only_suggests_a_close_name() {
    let out = jobgraph()
        .args(["run", "--dry-run", "--only", "lnik", "jobs/five.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: jobs/five.toml: --only `lnik`: no such process; did you mean `link`?"
        ),
        "{stderr}"
    );
    let out = jobgraph()
        .args(["plan", "jobs/five.toml", "zzz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the processes are: setup, compile_a"),
        "{stderr}"
    );
}

#[test]
fn positional_targets_mean_only() {
    let by_flag = jobgraph()
        .args([
            "run",
            "--dry-run",
            "--only",
            "compile_a",
            "--only",
            "compile_b",
            "jobs/five.toml",
        ])
        .output()
        .unwrap();
    let by_target = jobgraph()
        .args([
            "run",
            "--dry-run",
            "jobs/five.toml",
            "compile_a",
            "compile_b",
        ])
        .output()
        .unwrap();
    let by_plan = jobgraph()
        .args(["plan", "jobs/five.toml", "compile_a", "compile_b"])
        .output()
        .unwrap();
    assert_eq!(by_target.status.code(), Some(0));
    assert_eq!(by_flag.stdout, by_target.stdout);
    assert_eq!(by_flag.stdout, by_plan.stdout);
    let text = String::from_utf8_lossy(&by_target.stdout);
    assert!(text.contains("3 processes"), "{text}");
    assert!(!text.contains("link"), "{text}");
}

#[test]
fn positional_targets_run_just_that_subgraph() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("t.toml");
    std::fs::write(
        &job,
        "[process.setup]\ncmd = [\"true\"]\n[process.build]\ncmd = [\"true\"]\nafter = [\"setup\"]\n[process.other]\ncmd = [\"false\"]\n",
    )
    .unwrap();
    let out = jobgraph()
        .args(["run", "--no-progress"])
        .arg(&job)
        .arg("build")
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("setup") && stderr.contains("build"),
        "{stderr}"
    );
    assert!(!stderr.contains("other"), "{stderr}");
}

#[test]
fn dynamic_completion_offers_process_names_of_the_file() {
    let complete = |words: &[&str]| {
        let out = jobgraph()
            .env("COMPLETE", "fish")
            .arg("--")
            .args(words)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let targets = complete(&["jobgraph", "run", "jobs/five.toml", "comp"]);
    assert_eq!(
        targets.lines().collect::<Vec<_>>(),
        ["compile_a", "compile_b"]
    );
    let only = complete(&["jobgraph", "run", "jobs/five.toml", "--only", "li"]);
    assert_eq!(only.trim(), "link");
    let plan = complete(&["jobgraph", "plan", "jobs/five.toml", "t"]);
    assert_eq!(plan.trim(), "test");
    // Names from included files too.
    let included = complete(&["jobgraph", "run", "jobs/include.toml", "se"]);
    assert_eq!(included.trim(), "setup");
    // The registration script for a shell.
    let out = jobgraph().env("COMPLETE", "bash").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("_clap_complete_jobgraph"));
}

/// A full disk under stdout (`> /dev/full`) loses the output: never exit 0.
#[test]
fn a_lost_stdout_is_an_error_not_a_silent_success() {
    for args in [
        &["validate", "--format", "json", "jobs/five.toml"][..],
        &["plan", "--format", "json", "jobs/five.toml"],
        &["graph", "jobs/five.toml"],
        &["schema"],
        &["completions", "bash"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
            .current_dir(root())
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn dry_run_refuses_a_bad_executor_variable_as_run_does() {
    let job = Job::new("[process.a]\ncmd = [\"true\"]\n");
    let out = jobgraph()
        .args(["run", "--dry-run"])
        .arg(job.path())
        .env("JOBGRAPH_EXECUTOR", "bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOBGRAPH_EXECUTOR=bogus"));
}

#[test]
fn an_output_path_that_is_the_job_file_or_another_output_is_refused() {
    let job = Job::new("[process.a]\nshell = \"echo hi\"\n");
    let text = std::fs::read_to_string(job.path()).unwrap();
    let path = job.path().display().to_string();
    for args in [
        vec!["--events", path.as_str()],
        vec!["--state", path.as_str()],
        vec!["--events", "x.journal", "--state", "x.journal"],
        vec!["--dry-run", "--events", path.as_str()],
    ] {
        let (code, _, err) = job.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("error: --"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(job.path()).unwrap(), text);
}

#[test]
fn a_bad_containment_variable_is_refused_not_ignored() {
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let out = jobgraph()
        .args(["run"])
        .arg(job.path())
        .env("JOBGRAPH_CONTAINMENT", "MARKER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("JOBGRAPH_CONTAINMENT=MARKER"), "{err}");
}

#[test]
fn a_dry_run_shows_keep_going() {
    let job = Job::new("[process.a]\nshell = \"true\"\n");
    let (code, out, err) = job.run(&["--dry-run", "--keep-going"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fail_fast off (--keep-going)"), "{out}");
}
