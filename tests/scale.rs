//! Shapes that used to be quadratic, through the binary (a debug build, so
//! the time limits are generous; benches/validate.sh measures the release
//! build): a long `after` cycle, a deep parent chain, and heavy replicas.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn write(dir: &tempfile::TempDir, name: &str, text: String) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_long_cycle_gives_a_short_message_quickly() {
    let n = 10_000;
    let mut text = String::new();
    for i in 0..n {
        let prev = if i == 0 { n - 1 } else { i - 1 };
        text.push_str(&format!(
            "[process.p{i}]\ncmd = [\"true\"]\nafter = [\"p{prev}\"]\n\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "cycle.toml", text);
    let start = Instant::now();
    let out = jobgraph()
        .arg("validate")
        .arg(&path)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(9,991 more)"), "{stderr}");
    assert!(
        stderr.lines().count() < 200,
        "{} lines",
        stderr.lines().count()
    );
    assert!(stderr.matches("starts after").count() <= 10, "{stderr}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_deep_parent_chain_validates_quickly() {
    let n = 20_000;
    let mut text = String::from("[process.p0]\ncmd = [\"true\"]\ncwd = \"/\"\n\n");
    for i in 1..n {
        text.push_str(&format!(
            "[process.p{i}]\ncmd = [\"true\"]\nparent = \"p{}\"\n\n",
            i - 1
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "parents.toml", text);
    let start = Instant::now();
    jobgraph()
        .arg("validate")
        .arg(&path)
        .timeout(Duration::from_secs(60))
        .assert()
        .code(0);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn plan_of_heavy_replicas_counts_instances_without_making_them() {
    let mut text = String::new();
    for i in 0..600 {
        text.push_str(&format!(
            "[process.p{i}]\ncmd = [\"true\", \"{{replica}}\"]\nreplicas = 65536\n\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "replicas.toml", text);
    for args in [&["plan"][..], &["run", "--dry-run"][..]] {
        let start = Instant::now();
        let out = jobgraph()
            .args(args)
            .arg(&path)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("600 processes (39321600 instances)"),
            "{text}"
        );
        assert!(text.contains("p599[0..65535]"), "{text}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
    // JSON still lists every instance, written out one at a time.
    let one = write(
        &dir,
        "one.toml",
        "[process.w]\ncmd = [\"true\"]\nreplicas = 3\n".to_string(),
    );
    let out = jobgraph()
        .args(["plan", "--format", "json"])
        .arg(&one)
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["stages"][0]["units"][0]["processes"][0]["instances"],
        serde_json::json!(["w[0]", "w[1]", "w[2]"])
    );
}
