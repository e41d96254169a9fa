//! Variables (`[vars]`, `--set`, `{{ name }}`) and env files (`env_file`),
//! through the binary.

mod common;
use common::*;

const VARS: &str = r#"
[vars]
target = "release"
port = { env = "JGTEST_PORT_VAR", default = 8080 }

[process.build]
cmd = ["echo", "build={{ target }}", "me={{name}}", "lit={{{{ target }}", "go={{.Field}}"]

[process.serve]
replicas = 2
env = { SHARD = "{{ name }}-{{ replica }}" }
shell = 'echo "port={{ port }} shard=$SHARD r={replica} home=${HOME:+set}"'
"#;

#[test]
fn vars_are_substituted_in_commands_env_and_per_replica() {
    let job = Job::new(VARS);
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("| build=release me=build lit={{ target }} go={{.Field}}"),
        "{out}"
    );
    assert!(
        out.contains("port=8080 shard=serve-0 r=0 home=set"),
        "{out}"
    );
    assert!(
        out.contains("port=8080 shard=serve-1 r=1 home=set"),
        "{out}"
    );
}

#[test]
fn set_overrides_a_var_and_plan_shows_resolved_values() {
    let job = Job::new(VARS);
    let out = jobgraph()
        .args(["plan", "--set", "target=debug", "--set", "port=9"])
        .arg(job.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("build=debug"), "{text}");
    assert!(text.contains("port=9 "), "{text}");
    // The environment is read when no --set is given.
    let out = jobgraph()
        .args(["plan"])
        .arg(job.path())
        .env("JGTEST_PORT_VAR", "7000")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("port=7000 "));
}

#[test]
fn set_of_an_unknown_var_is_a_usage_error_with_did_you_mean() {
    let job = Job::new(VARS);
    for cmd in ["validate", "plan", "graph", "run"] {
        let out = jobgraph()
            .args([cmd, "--set", "tagret=x"])
            .arg(job.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("--set tagret"), "{cmd}: {err}");
        assert!(
            err.contains("did you mean `--set target=…`?"),
            "{cmd}: {err}"
        );
    }
    let out = jobgraph()
        .args(["validate", "--set", "novalue"])
        .arg(job.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_and_unset_vars_are_errors_pointing_into_the_string() {
    let job = Job::new(
        r#"
[vars]
port = "1"
token = { env = "JGTEST_SURELY_UNSET" }
[process.a]
shell = "echo {{ prot }} {{ token }}"
"#,
    );
    let out = jobgraph()
        .args(["validate", "--format", "json"])
        .arg(job.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diags = doc["diagnostics"].as_array().unwrap();
    let codes: Vec<&str> = diags.iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["unset-env-var", "unknown-var"], "{doc:#}");
    let unknown = &diags[1];
    // `{{ prot }}` starts at column 15 of `shell = "echo {{ prot }} …"`.
    assert_eq!(unknown["column"], 15, "{doc:#}");
    assert_eq!(unknown["end_column"], 25, "{doc:#}");
    assert!(unknown["help"].as_str().unwrap().contains("port"));
    assert!(diags[0]["message"]
        .as_str()
        .unwrap()
        .contains("JGTEST_SURELY_UNSET"));
    // --set gives the unset var a value.
    let out = jobgraph()
        .args(["validate", "--set", "token=t", "--set", "port=2"])
        .arg(job.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unset-env-var"), "{err}");
}

#[test]
fn env_files_follow_the_documented_precedence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("g.env"),
        "A=graph-file\nB=graph-file\nC=graph-file\nD=graph-file\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.env"),
        "C=process-file\nD=process-file\n# comment\nE=\"quoted value\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        r#"
[graph]
env_file = "g.env"
[env]
B = "env-table"
C = "env-table"
D = "env-table"
[process.show]
env_file = ["p.env", { path = "missing.env", optional = true }]
env = { D = "own-env" }
shell = 'echo "A=$A B=$B C=$C D=$D E=$E"'
"#,
    )
    .unwrap();
    let out = jobgraph()
        .arg("run")
        .arg(dir.path().join("job.toml"))
        .env("A", "engine")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("A=graph-file B=env-table C=process-file D=own-env E=quoted value"),
        "{text}"
    );
}

#[test]
fn a_missing_env_file_is_reported_by_validate_with_its_path() {
    let job = Job::new("[process.a]\nenv_file = \"nope.env\"\ncmd = [\"true\"]\n");
    let out = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad-env-file"), "{err}");
    assert!(err.contains("env file `nope.env` does not exist"), "{err}");
    assert!(
        err.contains("job.toml:7:12") || err.contains("job.toml:"),
        "{err}"
    );
}

#[test]
fn checks_see_resolved_values() {
    let job = Job::new(
        r#"
[vars]
port = "8080"
prog = "true"
[process.a]
cmd = ["{{ prog }}"]
ready = { tcp = "127.0.0.1:{{ port }}" }
"#,
    );
    let ok = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let out = jobgraph()
        .args([
            "validate",
            "--set",
            "port=http",
            "--set",
            "prog=no-such-program-jg",
        ])
        .arg(job.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad-probe"), "{err}");
    assert!(err.contains("command-not-found"), "{err}");
}

#[test]
fn vars_reach_for_each_items_and_item_reaches_the_command() {
    let job = Job::new(
        r#"
[vars]
ext = "csv"
[process.convert]
for_each = ["a.{{ ext }}", "b.{{ ext }}"]
cmd = ["echo", "converting {{ item }} by {{ name }}"]
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("converting a.csv by convert"), "{out}");
    assert!(out.contains("converting b.csv by convert"), "{out}");
}

#[test]
fn an_escaped_item_and_a_vars_value_are_never_expanded_per_instance() {
    let job = Job::new(
        r#"
[vars]
v = "{{ item }}-{{{{"
[process.a]
for_each = ["x"]
env = { E = "{{{{ item }} {{ v }}" }
cmd = ["echo", "{{{{ item }} {{ v }} {{ item }} {{.Go}}"]
[process.b]
for_each = ["y"]
after = ["a"]
shell = 'echo "env=$E"'
env = { E = "{{{{ item }} {{ item }}" }
"#,
    );
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("| {{ item }} {{ item }}-{{{{ x {{.Go}}"),
        "{out}"
    );
    assert!(out.contains("| env={{ item }} y"), "{out}");
}

#[test]
fn item_inside_for_each_itself_says_so() {
    let job = Job::new(
        "[process.a]\nfor_each = [\"{{ item }}\", \"{{ replica }}\", \"{{ name }}\"]\ncmd = [\"true\"]\n",
    );
    let out = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`{{ item }}` cannot be used inside `for_each`"),
        "{err}"
    );
    assert!(
        err.contains("`{{ replica }}` cannot be used inside `for_each`"),
        "{err}"
    );
    assert!(!err.contains("`{{ name }}` cannot"), "{err}");
    assert!(!err.contains("output file"), "{err}");
}

#[test]
fn a_program_from_item_is_not_looked_up() {
    let job =
        Job::new("[process.run]\nfor_each = [\"./a.sh\", \"./b.sh\"]\ncmd = [\"{{ item }}\"]\n");
    let out = jobgraph().arg("validate").arg(job.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("command-not-found"), "{err}");
}

#[test]
fn env_file_expansion_takes_whole_names_and_works_inside_double_quotes() {
    let job = Job::new(
        "[graph]\nenv_file = \"db.env\"\n[process.show]\nshell = 'echo \"URL=$URL DSN=$DSN\"'\n",
    );
    std::fs::write(
        job.file("db.env"),
        "DB_HOST=db.local\nURL=pg://$DB_HOST/app\nDSN=\"host $DB_HOST\"\n",
    )
    .unwrap();
    let (code, out, err) = job.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("URL=pg://db.local/app DSN=host db.local"),
        "{out}"
    );
}
