//! `include`: files that share parts, through the binary.

mod common;
use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn validate_json(path: &std::path::Path) -> (i32, serde_json::Value) {
    let out = jobgraph()
        .args(["validate", "--format", "json"])
        .arg(path)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code().unwrap(), doc)
}

#[test]
fn included_parts_join_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.toml",
        "include = [\"lib/common.toml\"]\n[vars]\nwho = \"main\"\n[process.b]\nafter = [\"a\"]\nlocks = [\"db\"]\nshell = 'echo \"b {{ who }} $LEVEL\"'\n",
    );
    write(
        dir.path(),
        "lib/common.toml",
        "include = [\"more.toml\"]\n[env]\nLEVEL = \"lib-env\"\n[lock.db]\n[process.a]\nenv_file = \"lib.env\"\nshell = 'echo \"a {{ who }} {{ extra }} $FROM_LIB\"'\n",
    );
    // env_file paths are relative to the file that names them.
    write(dir.path(), "lib/lib.env", "FROM_LIB=lib-dotenv\n");
    // A file included twice (here by main.toml through common.toml, and by
    // itself nowhere else) is read once.
    write(dir.path(), "lib/more.toml", "[vars]\nextra = \"more\"\n");
    let out = jobgraph()
        .arg("run")
        .arg(dir.path().join("main.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("a main more lib-dotenv"), "{text}");
    assert!(text.contains("b main lib-env"), "{text}");
}

#[test]
fn diagnostics_name_the_included_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.toml",
        "include = [\"sub/x.toml\"]\n[process.a]\ncmd = [\"true\"]\n",
    );
    write(
        dir.path(),
        "sub/x.toml",
        "# line 1\n[process.b]\ncmd = [\"true\"]\nafter = [\"aa\"]\n[process.a]\ncmd = [\"true\"]\n",
    );
    let (code, doc) = validate_json(&dir.path().join("main.toml"));
    assert_eq!(code, 1, "{doc:#}");
    let diags = doc["diagnostics"].as_array().unwrap();
    let dup = diags
        .iter()
        .find(|d| d["code"] == "duplicate-name")
        .expect("duplicate");
    assert!(
        dup["file"].as_str().unwrap().ends_with("sub/x.toml"),
        "{doc:#}"
    );
    assert_eq!(dup["line"], 5);
    assert!(dup["related"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("main.toml"));
    assert_eq!(dup["related"][0]["line"], 2);
    let unknown = diags
        .iter()
        .find(|d| d["code"] == "unknown-process")
        .expect("unknown");
    assert!(unknown["file"].as_str().unwrap().ends_with("sub/x.toml"));
    assert_eq!(unknown["line"], 4);
    assert_eq!(unknown["help"], "did you mean `a`?");
    // The human form shows each snippet under its own file name.
    let out = jobgraph()
        .arg("validate")
        .arg(dir.path().join("main.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sub/x.toml:5:10]"), "{err}");
    assert!(err.contains("main.toml:2:10]"), "{err}");
}

#[test]
fn cycles_missing_files_and_graph_tables_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        "include = [\"b.toml\", \"gone.toml\"]\n[process.a]\ncmd = [\"true\"]\n",
    );
    write(
        dir.path(),
        "b.toml",
        "include = [\"a.toml\"]\n[graph]\nname = \"b\"\n",
    );
    let (code, doc) = validate_json(&dir.path().join("a.toml"));
    assert_eq!(code, 1);
    let messages: Vec<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "bad-include")
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("include cycle: a.toml -> b.toml -> a.toml")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("cannot include `gone.toml`")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("cannot set [graph]")),
        "{messages:?}"
    );
}

#[test]
fn stdin_includes_resolve_against_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common.toml",
        "[process.shared]\ncmd = [\"echo\", \"shared-ran\"]\n",
    );
    let out = jobgraph()
        .current_dir(dir.path())
        .args(["run", "-"])
        .write_stdin("include = [\"common.toml\"]\n[process.own]\ncmd = [\"true\"]\n")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("shared-ran"));
}
