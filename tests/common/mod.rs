//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (tests run with it as the working directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `jobgraph` with a fixed, colour-free environment.
pub fn jobgraph() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("jobgraph").expect("binary built");
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE");
    cmd
}

/// `*.toml` files in a directory of the repo, sorted.
pub fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("directory exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// A path relative to the repo root, as the tests pass it on the command line.
pub fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The code a corpus file declares on its first line (`# expect: CODE`).
pub fn expected_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable");
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{} lacks `# expect: CODE`", path.display()))
        .trim()
        .to_string()
}

/// A temp directory with a job file whose processes all carry a unique tag.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub tag: String,
}

impl Job {
    pub fn new(body: &str) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("jgtest-{}-{}", std::process::id(), rand_suffix());
        let text = format!("[env]\nJGTEST_TAG = \"{tag}\"\n\n{body}");
        std::fs::write(dir.path().join("job.toml"), text).unwrap();
        Job { dir, tag }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("job.toml")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    /// Runs to completion (60 s at most) and returns (exit code, stdout, stderr).
    pub fn run(&self, extra: &[&str]) -> (i32, String, String) {
        let out = jobgraph()
            .arg("run")
            .args(extra)
            .arg(self.path())
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs with an events file and returns the parsed events too.
    pub fn run_events(&self, extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
        let events = self.file("events.ndjson");
        let mut args = vec!["--events", events.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, _, stderr) = self.run(&args);
        let evs = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (code, evs, stderr)
    }

    /// Processes still alive that carry this job's tag.
    pub fn survivors(&self) -> Vec<i32> {
        tagged(&self.tag)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for _ in 0..20 {
            let left = tagged(&self.tag);
            if left.is_empty() {
                return;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.as_nanos() as u64)
        .wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 40)
}

/// Living (non-zombie) processes whose environment has JGTEST_TAG=tag.
pub fn tagged(tag: &str) -> Vec<i32> {
    let needle = format!("JGTEST_TAG={tag}");
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
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

pub fn wait_for_file(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn wait_gone(job: &Job, limit: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let left = job.survivors();
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `event` values for one process, in order.
pub fn events_of<'a>(evs: &'a [serde_json::Value], process: &str) -> Vec<&'a str> {
    evs.iter()
        .filter(|e| e["process"] == process)
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// Index of the first event of `kind` for `process`.
pub fn pos(evs: &[serde_json::Value], process: &str, kind: &str) -> usize {
    evs.iter()
        .position(|e| e["process"] == process && e["event"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event for {process}: {evs:#?}"))
}

/// Reads `NAME START END` lines (monotonic nanoseconds) written by `stamp` shells.
pub fn intervals(text: &str) -> Vec<(String, u128, u128)> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// A shell snippet recording this process's [start, end] around a sleep.
pub fn stamp(name: &str, secs: &str) -> String {
    format!("s=$(date +%s%N); sleep {secs}; e=$(date +%s%N); echo \"{name} $s $e\" >> stamps")
}

/// Summary rows by process: [status, exit, attempts, duration, peak RSS].
pub fn summary(stderr: &str) -> std::collections::HashMap<String, Vec<String>> {
    let mut rows = std::collections::HashMap::new();
    let mut in_table = false;
    for line in stderr.lines() {
        if line.starts_with("process ") && line.contains("status") {
            in_table = true;
            continue;
        }
        if !in_table || line.trim().is_empty() {
            continue;
        }
        // Columns are separated by two or more spaces; "timed out" and "not run" contain one.
        let cells: Vec<String> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        if let Some((name, rest)) = cells.split_first() {
            rows.insert(name.clone(), rest.to_vec());
        }
    }
    rows
}

/// Starts `jobgraph run` in the background, waits for `ready` to exist.
pub fn spawn_engine(job: &Job, ready: &str) -> std::process::Child {
    let child = Command::new(assert_cmd::cargo::cargo_bin("jobgraph"))
        .arg("run")
        .arg(job.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&job.file(ready), Duration::from_secs(20)),
        "processes did not start"
    );
    child
}

pub fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Runs each `jobs/NAME.toml` and expects success.
/// Runs examples from jobs/ in a temporary copy of the folder, so that what
/// they write (`jobs/pipeline.toml` writes `out/top-words.txt`) never lands in
/// the source tree.
pub fn examples_run(names: &[&str]) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&root().join("jobs"), &copy.path().join("jobs"));
    for name in names {
        let out = jobgraph()
            .arg("run")
            .arg(copy.path().join(format!("jobs/{name}.toml")))
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Copies a folder recursively, leaving out `out/` (what examples write).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "out" {
                copy_dir(&src, &dst);
            }
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A test that needs an outside tool which is missing. In CI (`CI` set, as
/// `.ci/run` runs) that is a failure: CI installs every tool. Elsewhere the
/// test returns early and says so on the real stderr, which `cargo test`
/// shows even without `--nocapture` (only the print macros are captured).
/// Tests that can skip are named `…_requires_TOOL`.
pub fn skip(test: &str, reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {reason}, and CI must run it (see .ci/run)"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
