//! Files that are not job files at all: one clear line, exit 1 (2 from run),
//! never a panic or a hang.

mod common;
use common::*;
use std::time::Duration;

fn one_line_error(args: &[&str], path: &std::path::Path, code: i32, needle: &str) {
    let out = jobgraph()
        .args(args)
        .arg(path)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.lines().count() <= 2, "not brief: {stderr}");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.toml");
    one_line_error(&["validate"], &p, 1, "no such file");
    one_line_error(&["run"], &p, 2, "no such file");
}

#[test]
fn directory() {
    let dir = tempfile::tempdir().unwrap();
    one_line_error(&["validate"], dir.path(), 1, "it is a directory");
    one_line_error(&["run"], dir.path(), 2, "it is a directory");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.toml");
    std::fs::write(&p, "").unwrap();
    one_line_error(&["validate"], &p, 1, "declares no process");
    one_line_error(&["run"], &p, 2, "declares no process");
}

#[test]
fn non_utf8_file_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.toml");
    std::fs::write(&p, b"[process.a]\ncmd = [\"caf\xe9\"]\n").unwrap();
    one_line_error(
        &["validate"],
        &p,
        1,
        "latin1.toml:2:12: the file is not UTF-8",
    );
    one_line_error(&["run"], &p, 2, "not UTF-8");
}

#[test]
fn fifty_megabyte_file_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.toml");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    one_line_error(&["validate"], &p, 1, "limited to 32 MiB");
    one_line_error(&["run"], &p, 2, "limited to 32 MiB");
}

#[test]
fn fifo_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
    one_line_error(&["validate"], &p, 1, "FIFO");
}

#[test]
fn deeply_nested_toml_does_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("deep.toml");
    std::fs::write(&p, format!("x = {}", "[".repeat(100_000))).unwrap();
    let out = jobgraph()
        .arg("validate")
        .arg(&p)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn binary_garbage_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.toml");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&p, bytes).unwrap();
    let out = jobgraph().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// A job file whose line 3 puts a diagnostic past column 65,535.
fn long_line_file(dir: &std::path::Path, line: &str) -> std::path::PathBuf {
    let path = dir.join("long.toml");
    std::fs::write(&path, format!("[process.a]\ncmd = [\"true\"]\n{line}\n")).unwrap();
    path
}

#[test]
fn diagnostics_on_very_long_lines_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let spaces = " ".repeat(65_530);
    // An error past column 65,535, in every format.
    let bad = long_line_file(dir.path(), &format!("after = [{spaces}\"nope\"]"));
    let out = jobgraph().arg("validate").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown process `nope`"), "{stderr}");
    assert!(stderr.contains("long.toml:3:65540"), "{stderr}");
    assert!(
        stderr.contains("no snippet: line 3 is 65546 characters long"),
        "{stderr}"
    );
    assert!(stderr.lines().count() < 20, "{stderr}");
    for format in ["json", "github"] {
        let out = jobgraph()
            .args(["validate", "--format", format])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("65540"),
            "{format}"
        );
    }
    jobgraph().arg("plan").arg(&bad).assert().code(1);
    jobgraph().arg("run").arg(&bad).assert().code(2);
    // A valid file whose only diagnostic is a warning on a long line still runs.
    let warn = long_line_file(
        dir.path(),
        &format!("[process.b]\ncmd = [{spaces}\"no-such-program-xyz\"]"),
    );
    let out = jobgraph().arg("validate").arg(&warn).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command-not-found"));
    let out = jobgraph()
        .args(["run", "--no-progress", "--only", "a"])
        .arg(&warn)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("command-not-found"), "{stderr}");
}

#[test]
fn huge_durations_are_rejected_by_validate_and_run() {
    for key in [
        "timeout = \"300000000000y\"",
        "retry_delay = \"18446744073709551615s\"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(&path, format!("[process.a]\ncmd = [\"true\"]\n{key}\n")).unwrap();
        let out = jobgraph().arg("validate").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("bad-duration") && stderr.contains("3650d"),
            "{stderr}"
        );
        jobgraph().arg("run").arg(&path).assert().code(2);
    }
}

#[test]
fn nul_characters_are_rejected_before_graph_or_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.toml");
    std::fs::write(
        &path,
        "[graph]\nname = \"a\\u0000b\"\n[process.a]\nshell = \"true\"\n",
    )
    .unwrap();
    let out = jobgraph()
        .args(["graph", "--format", "dot"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nul-character"));
    jobgraph().arg("run").arg(&path).assert().code(2);
}

#[test]
fn an_edge_name_clash_points_at_the_later_one_in_the_file() {
    // Queues are checked before pipes; the report follows the file's order.
    let job = Job::new(
        "[process.p]\nshell = \"true\"\n[process.c]\nshell = \"true\"\n[pipe.a-b]\nfrom = \"p\"\nto = \"c\"\n[queue.a_b]\nfrom = [\"p\"]\nto = [\"c\"]\n",
    );
    let out = jobgraph()
        .args(["validate", "--format", "json"])
        .arg(job.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("queue `a_b` and `a-b`"), "{text}");
    // The report is at the queue; "first declared here" at the pipe, above it.
    let lines: Vec<u32> = text
        .split("\"line\": ")
        .skip(1)
        .filter_map(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert!(lines.len() >= 2 && lines[0] > lines[1], "{lines:?} {text}");
}

#[test]
fn the_human_header_and_json_name_the_same_column_after_non_ascii_text() {
    let (human, json) = human_and_json("[process.a]\ncmd = [\"échoé\", \"{{ nope }}\"]\n");
    // `{` of `{{ nope }}` is the 18th character of its line (the 20th byte).
    assert_eq!(json["diagnostics"][1]["column"], 18, "{json}");
    assert!(human.contains(":5:18]"), "{human}");
}

#[test]
fn a_glob_through_symlink_loops_is_refused_not_endless() {
    let job = Job::new("[process.a]\ncmd = [\"true\"]\nfor_each = { glob = \"d/**/*\" }\n");
    let d = job.file("d");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink(".", d.join("s1")).unwrap();
    std::os::unix::fs::symlink(".", d.join("s2")).unwrap();
    let out = jobgraph()
        .arg("validate")
        .arg(job.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("matches more than 65536 files"), "{err}");
}

#[test]
fn a_lone_carriage_return_does_not_shift_the_human_position() {
    let (human, json) = human_and_json("[process.a]\ncmd = [\"true\"]\n\rx = 1\n");
    let d = &json["diagnostics"][0];
    let place = format!(":{}:{}]", d["line"], d["column"]);
    assert!(human.contains(&place), "{place} not in {human}");
}

/// `validate` of `text` in the human format (stderr) and as JSON.
fn human_and_json(text: &str) -> (String, serde_json::Value) {
    let job = Job::new(text);
    let human = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    let json = jobgraph()
        .args(["validate", "--format", "json"])
        .arg(job.path())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&human.stderr).into_owned(),
        serde_json::from_slice(&json.stdout).unwrap(),
    )
}

/// A name holding ESC or NUL is shown escaped: a diagnostic never clears or
/// recolours the terminal it is read on (JSON escapes them by itself).
#[test]
fn control_characters_from_the_file_are_shown_escaped() {
    let text = "[process.\"x\\u001b[2Jy\"]\ncmd = [\"true\"]\n[process.b]\ncmd = [\"true\"]\nafter = [\"\\u001b[31mred\"]\n";
    let (human, _) = human_and_json(text);
    let job = Job::new(text);
    let github = jobgraph()
        .args(["validate", "--format", "github"])
        .arg(job.path())
        .output()
        .unwrap();
    let github = String::from_utf8_lossy(&github.stdout).into_owned();
    for out in [&human, &github] {
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(
            out.contains("x\\u{1b}[2Jy") && out.contains("\\u{1b}[31mred"),
            "{out}"
        );
        assert!(
            !out.contains("[process.\\u{1b}"),
            "no invalid name to declare: {out}"
        );
    }
    // Raw controls in the snippet keep their byte length, so the marks stay put.
    let (human, json) = human_and_json("[process.a]\ncmd = [\"true\"]\nx\u{7} = 1\n");
    assert!(!human.contains('\u{7}'), "{human}");
    let d = &json["diagnostics"][0];
    assert!(
        human.contains(&format!(":{}:{}]", d["line"], d["column"])),
        "{human}"
    );
}

/// A byte order mark is not a column: line 1 is marked as without it, in
/// an included file too (where it once sat mid-text).
#[test]
fn a_byte_order_mark_does_not_shift_columns() {
    let dir = tempfile::tempdir().unwrap();
    let columns = |text: &str| {
        let path = dir.path().join("bom.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::write(
            dir.path().join("inc.toml"),
            "\u{feff}[process.c]\ncmd = [\"true\"]\n",
        )
        .unwrap();
        let out = jobgraph()
            .args(["validate", "--format", "github"])
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let body = "version = 2\ninclude = [\"inc.toml\"]\n[process.a]\ncmd = [\"true\"]\n";
    let with = columns(&format!("\u{feff}{body}"));
    assert!(with.contains("line=1,col=11,"), "{with}");
    assert_eq!(with, columns(body));
}

/// More instances than a run can number (2^32) is a static error, at the
/// replicas that pass the limit, not an out-of-memory death in `run`.
#[test]
fn more_instances_than_a_run_can_number_is_refused_by_validate() {
    let mut text = String::new();
    for i in 0..65537 {
        text.push_str(&format!(
            "[process.p{i}]\ncmd = [\"true\"]\nreplicas = 65536\n"
        ));
    }
    let (_, json) = human_and_json(&text);
    let d = &json["diagnostics"][0];
    assert_eq!(d["code"], "bad-replicas", "{json}");
    assert!(
        d["message"].as_str().unwrap().contains("`p65535`"),
        "{json}"
    );
}
