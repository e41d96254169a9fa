//! The invalid-file corpus: each file in tests/invalid breaks one rule, names
//! it on its first line, and must produce that code — in every format.

mod common;
use common::*;
use jobgraph::{Code, Severity};

#[test]
fn every_static_check_has_a_corpus_file() {
    let expected: std::collections::HashSet<String> = toml_files("tests/invalid")
        .iter()
        .map(|p| expected_code(p))
        .collect();
    for code in Code::ALL {
        if *code == Code::UnreadableFile {
            continue; // covered by tests/bad_input.rs
        }
        assert!(
            expected.contains(code.as_str()),
            "no corpus file for {code}"
        );
    }
}

#[test]
fn each_file_reports_its_code_with_line_and_column() {
    for path in toml_files("tests/invalid") {
        let code = expected_code(&path);
        let severity = Code::ALL
            .iter()
            .find(|c| c.as_str() == code)
            .map(|c| c.severity());
        let out = jobgraph()
            .args(["validate", "--format", "json"])
            .arg(rel(&path))
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let diags = doc["diagnostics"].as_array().unwrap();
        let hit = diags.iter().find(|d| d["code"] == code.as_str());
        let hit = hit.unwrap_or_else(|| panic!("{}: expected {code}, got {doc:#}", rel(&path)));
        if code != "empty-graph" {
            assert!(
                hit["line"].as_u64().unwrap() >= 1,
                "{}: no line",
                rel(&path)
            );
            assert!(
                hit["column"].as_u64().unwrap() >= 1,
                "{}: no column",
                rel(&path)
            );
        }
        let want_exit = if severity == Some(Severity::Warning) {
            0
        } else {
            1
        };
        assert_eq!(out.status.code(), Some(want_exit), "{}", rel(&path));
    }
}

#[test]
fn human_diagnostics_snapshot() {
    for path in toml_files("tests/invalid") {
        let out = jobgraph().arg("validate").arg(rel(&path)).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("human__{name}"), stderr);
    }
}

#[test]
fn json_and_github_snapshots() {
    for name in [
        "cycle",
        "stream-group-deadlock-3",
        "unknown-key-2",
        "bad-duration",
        "command-not-found",
        "empty-graph",
        "duplicate-name",
    ] {
        let path = format!("tests/invalid/{name}.toml");
        let json = jobgraph()
            .args(["validate", "--format", "json", &path])
            .output()
            .unwrap();
        insta::assert_snapshot!(
            format!("json__{name}"),
            String::from_utf8(json.stdout).unwrap()
        );
        let gh = jobgraph()
            .args(["validate", "--format", "github", &path])
            .output()
            .unwrap();
        insta::assert_snapshot!(
            format!("github__{name}"),
            String::from_utf8(gh.stdout).unwrap()
        );
    }
}

#[test]
fn several_files_at_once_report_each() {
    let out = jobgraph()
        .args([
            "validate",
            "jobs/hello.toml",
            "tests/invalid/cycle.toml",
            "tests/invalid/bad-signal.toml",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("jobs/hello.toml: valid"), "{stderr}");
    assert!(
        stderr.contains("tests/invalid/cycle.toml: invalid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tests/invalid/bad-signal.toml: invalid"),
        "{stderr}"
    );
}
