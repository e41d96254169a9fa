//! No FILE: the nearest `jobgraph.toml`; `-`: the file from stdin.

mod common;
use common::*;

const JOB: &str = r#"
[process.build]
cmd = ["echo", "building"]
[process.test]
after = ["build"]
cmd = ["echo", "testing"]
"#;

fn in_dir(dir: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = jobgraph();
    cmd.current_dir(dir);
    cmd
}

#[test]
fn the_nearest_jobgraph_toml_is_used_and_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobgraph.toml"), JOB).unwrap();
    let deep = dir.path().join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    let found = dir.path().join("jobgraph.toml");
    let using = format!("jobgraph: using {}\n", found.display());
    for args in [&["validate"][..], &["plan"], &["graph"], &["run"]] {
        let out = in_dir(&deep).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.starts_with(&using), "{args:?}: {err}");
    }
}

#[test]
fn without_file_positionals_are_targets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobgraph.toml"), JOB).unwrap();
    let out = in_dir(dir.path()).args(["run", "build"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text.contains("building") && !text.contains("testing"),
        "{text}"
    );
    // A typo gets did-you-mean; a path-like argument is still a file.
    let out = in_dir(dir.path()).args(["plan", "tset"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `test`?"));
    let out = in_dir(dir.path())
        .args(["run", "nope.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read nope.toml"));
}

#[test]
fn no_file_and_no_jobgraph_toml_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_dir(dir.path()).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no jobgraph.toml"));
}

#[test]
fn dash_reads_the_file_from_stdin_relative_to_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.env"), "WHO=stdin-env\n").unwrap();
    let job = "[process.a]\nenv_file = \"x.env\"\nshell = 'echo \"who=$WHO\"'\n";
    let out = in_dir(dir.path())
        .args(["run", "-"])
        .write_stdin(job)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("who=stdin-env"));
    let out = in_dir(dir.path())
        .args(["run", "-"])
        .write_stdin("[process.a]\nshell = 'echo \"graph=$JOBGRAPH_GRAPH\"'\n")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("graph=stdin"));
    let out = in_dir(dir.path())
        .args(["validate", "-"])
        .write_stdin("[process.a]\ncmd = 1\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>:2:7"));
}
