//! Every example in jobs/ validates cleanly, plans, and draws as DOT and Mermaid.

mod common;
use common::*;

#[test]
fn there_are_at_least_ten_examples() {
    assert!(toml_files("jobs").len() >= 10);
}

#[test]
fn every_example_validates_without_warnings() {
    for path in toml_files("jobs") {
        let out = jobgraph()
            .args(["validate", "--format", "json"])
            .arg(rel(&path))
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["valid"], true, "{}: {doc:#}", rel(&path));
        assert_eq!(
            doc["diagnostics"].as_array().unwrap().len(),
            0,
            "{}: {doc:#}",
            rel(&path)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn every_example_starts_with_schema_directive_and_header() {
    for path in toml_files("jobs") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("#:schema ../docs/jobgraph.schema.json"),
            "{}",
            rel(&path)
        );
        assert!(
            lines.next().unwrap_or_default().starts_with("# "),
            "{} lacks a header comment",
            rel(&path)
        );
    }
}

#[test]
fn every_example_plans() {
    for path in toml_files("jobs") {
        let out = jobgraph().arg("plan").arg(rel(&path)).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", rel(&path));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("stage 1"), "{text}");
    }
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn dot_output_is_accepted_by_graphviz_requires_dot() {
    if !have("dot") {
        // CI installs graphviz (.ci/run), so there this check always runs.
        skip(
            "dot_output_is_accepted_by_graphviz_requires_dot",
            "graphviz `dot` is not installed (apt-get install graphviz)",
        );
        return;
    }
    for path in toml_files("jobs") {
        let out = jobgraph()
            .args(["graph", "--format", "dot"])
            .arg(rel(&path))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let dot = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        dot.stdin.as_ref().unwrap().write_all(&out.stdout).unwrap();
        let res = dot.wait_with_output().unwrap();
        assert!(
            res.status.success(),
            "{}: dot rejected:\n{}",
            rel(&path),
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(String::from_utf8_lossy(&res.stdout).contains("<svg"));
    }
}

#[test]
fn graph_snapshots() {
    for fmt in ["dot", "mermaid"] {
        let out = jobgraph()
            .args(["graph", "--format", fmt, "jobs/nightly.toml"])
            .output()
            .unwrap();
        insta::assert_snapshot!(
            format!("graph_nightly_{fmt}"),
            String::from_utf8(out.stdout).unwrap()
        );
    }
    let out = jobgraph()
        .args(["plan", "jobs/nightly.toml"])
        .output()
        .unwrap();
    insta::assert_snapshot!("plan_nightly", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn mermaid_output_is_accepted_by_mermaid_requires_node() {
    let checker = root().join("tests/mermaid");
    if !checker.join("node_modules/mermaid").exists() || !have("node") {
        // CI runs `npm ci --prefix tests/mermaid` (.ci/run), so there this check always runs.
        skip(
            "mermaid_output_is_accepted_by_mermaid_requires_node",
            "Mermaid is not installed (npm ci --prefix tests/mermaid)",
        );
        return;
    }
    for path in toml_files("jobs") {
        let out = jobgraph()
            .args(["graph", "--format", "mermaid"])
            .arg(rel(&path))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let mut node = std::process::Command::new("node")
            .arg("check.mjs")
            .current_dir(&checker)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        node.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let res = node.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success() && said.starts_with("ok"),
            "{}: mermaid rejected:\n{said}",
            rel(&path)
        );
    }
}

#[test]
fn the_mermaid_checker_can_fail_requires_node() {
    // Guards the guard: a broken flowchart must be rejected by tests/mermaid/check.mjs.
    let checker = root().join("tests/mermaid");
    if !checker.join("node_modules/mermaid").exists() || !have("node") {
        skip(
            "the_mermaid_checker_can_fail_requires_node",
            "Mermaid is not installed (npm ci --prefix tests/mermaid)",
        );
        return;
    }
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "printf 'flowchart LR\\n  a --> b c\\n' | node check.mjs",
        ])
        .current_dir(&checker)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn outputs_shown_in_docs_are_what_the_binary_prints_requires_python3() {
    if !have("python3") {
        skip(
            "outputs_shown_in_docs_are_what_the_binary_prints_requires_python3",
            "python3 is not installed",
        );
        return;
    }
    let docs: Vec<String> = toml_files_ext("docs", "md");
    let out = std::process::Command::new("python3")
        .arg("scripts/verify-doc-outputs.py")
        .args(&docs)
        .current_dir(root())
        .env("JOBGRAPH_BIN", assert_cmd::cargo::cargo_bin("jobgraph"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs show stale output (fix: python3 scripts/verify-doc-outputs.py --fix docs/*.md):\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn toml_files_ext(dir: &str, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| rel(&p))
        .collect();
    v.sort();
    v
}
