//! The JSON Schema of the job-file format, for editors (taplo / Even Better
//! TOML). The types here mirror the file's shape for schemars only; decoding
//! is done by [`crate::spec`], and a test keeps the two key sets equal.

#![allow(dead_code)] // fields are read by schemars, not by code

use schemars::JsonSchema;

mod rules;
mod slurm;
use serde_json::{json, Value};
use slurm::{ExecutorKind, ProcessSlurmTable, SlurmTable};
use std::collections::BTreeMap;

/// A jobgraph job file (format version 1).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "jobgraph job file")]
struct JobFile {
    /// Format version; only 1 exists.
    #[schemars(range(min = 1, max = 1))]
    version: Option<u32>,
    /// Graph-wide settings.
    graph: Option<GraphTable>,
    /// Environment for every process.
    #[schemars(extend("propertyNames" = { "pattern": "^[^=]+$" }))]
    env: Option<BTreeMap<String, EnvValue>>,
    /// Named locks, held by processes while they run.
    lock: Option<BTreeMap<String, LockTable>>,
    /// The processes (at least one).
    #[schemars(extend("minProperties" = 1))]
    process: BTreeMap<String, ProcessTable>,
    /// Queues: many producers to many consumers, framed messages.
    queue: Option<BTreeMap<String, QueueTable>>,
    /// Pipes: one-way (from/to) or duplex (between).
    pipe: Option<BTreeMap<String, PipeTable>>,
    /// Variables, used as {{ name }} in cmd, shell, env values, cwd, output files and probes; `--set NAME=VALUE` overrides one.
    vars: Option<BTreeMap<String, VarValue>>,
    /// Job files whose processes, locks, queues, pipes, [env] and [vars] join this graph; paths relative to this file.
    include: Option<Vec<IncludePath>>,
    /// Settings of the Slurm executor, and resources for every unit (docs/slurm.md).
    slurm: Option<SlurmTable>,
}

/// A job file to include, relative to the including file.
#[derive(JsonSchema)]
struct IncludePath(#[schemars(length(min = 1))] String);

/// A var: a value, or read from the engine's environment with a default.
#[derive(JsonSchema)]
#[serde(untagged)]
enum VarValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    FromEnv(VarFromEnv),
}

/// A var read from the engine's environment.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct VarFromEnv {
    /// The environment variable to read.
    #[schemars(length(min = 1))]
    env: String,
    /// Used when the environment variable is not set; without it, an unset variable is an error.
    default: Option<EnvValue>,
}

/// Dotenv files, read in order (later ones win); paths relative to the job file's directory.
#[derive(JsonSchema)]
#[serde(untagged)]
enum EnvFile {
    One(EnvFileEntry),
    Many(Vec<EnvFileEntry>),
}

/// One dotenv file: a path, or { path, optional }.
#[derive(JsonSchema)]
#[serde(untagged)]
enum EnvFileEntry {
    Path(#[schemars(length(min = 1))] String),
    Table(EnvFileTable),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct EnvFileTable {
    /// Path, relative to the job file's directory.
    #[schemars(length(min = 1))]
    path: String,
    /// A missing file is not an error; default false.
    optional: Option<bool>,
}

/// A duration: a number and a unit, e.g. "250ms", "10s", "5m", "1h30m"; at most "3650d".
#[derive(JsonSchema)]
#[schemars(example = "10s")]
struct DurationText(#[schemars(regex(pattern = DURATION_PATTERN))] String);

/// A duration longer than zero: a number and a unit, e.g. "250ms", "10s"; at most "3650d".
#[derive(JsonSchema)]
#[schemars(example = "10s")]
#[schemars(extend("not" = { "pattern": "^[^1-9]*$" }))]
pub(crate) struct PositiveDuration(#[schemars(regex(pattern = DURATION_PATTERN))] String);

/// humantime's grammar: one or more `<number>[.<fraction>] <unit>`, spaces allowed.
/// `host:port`: a name, an IPv4 address or an IPv6 one in brackets (or a
/// `{{ var }}`), and a port 1 to 65535 (leading zeros allowed) or a `{{ var }}`.
const TCP_PATTERN: &str = concat!(
    r"^(\[[0-9A-Fa-f:.]+\]|([A-Za-z0-9._-]|\{replica\}|\{\{[^}]*\}\})+):",
    r"(0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])|\{\{[^}]*\}\})$"
);

/// A port 1 to 65535, or one made with `{replica}` or a `{{ var }}`.
pub(crate) const PORT_PATTERN: &str = concat!(
    r"(0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])",
    r"|[0-9]*(\{replica\}|\{\{[^}]*\}\})([0-9]|\{replica\}|\{\{[^}]*\}\})*)"
);

const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// A stop signal: a name such as "SIGTERM" or "TERM".
#[derive(JsonSchema)]
#[schemars(extend("enum" = signal_names()))]
struct SignalName(String);

/// Every name `stop_signal` accepts, with and without `SIG`.
fn signal_names() -> Vec<String> {
    // The usual ones first: validators name the first few in their messages.
    let mut out: Vec<String> = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL"]
        .map(String::from)
        .to_vec();
    for sig in nix::sys::signal::Signal::iterator() {
        if out.iter().any(|o| o == sig.as_str()) {
            continue;
        }
        let name = sig.as_str();
        if crate::spec::parse_signal(name).is_ok() {
            out.push(name.to_string());
        }
    }
    // Other names of the same signals, which `stop_signal` takes too.
    for alias in ["SIGIOT", "SIGPOLL", "SIGCLD"] {
        if crate::spec::parse_signal(alias).is_ok() {
            out.push(alias.to_string());
        }
    }
    let short: Vec<String> = out
        .iter()
        .filter_map(|n| n.strip_prefix("SIG").map(str::to_string))
        .collect();
    out.extend(short);
    out
}

/// An environment value; numbers and booleans are turned into text.
#[derive(JsonSchema)]
#[serde(untagged)]
enum EnvValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct GraphTable {
    /// Graph name; default: the file stem.
    #[schemars(length(min = 1))]
    name: Option<String>,
    /// Processes running at once; default unlimited.
    #[schemars(range(min = 1, max = 4294967295u32))]
    max_parallel: Option<u32>,
    /// Time from the stop signal to SIGKILL; default "5s".
    shutdown_grace: Option<DurationText>,
    /// Stop everything at the first failure; default true.
    fail_fast: Option<bool>,
    /// Dotenv files for every process, below [env].
    env_file: Option<EnvFile>,
    /// Where units run: "local" (default) or "slurm"; `--executor` overrides it.
    executor: Option<ExecutorKind>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct LockTable {
    /// Holders at once; default 1.
    #[schemars(range(min = 1, max = 1000000))]
    capacity: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum StartMethod {
    /// Inherit the engine's environment, [env] and the parent chain's env.
    Fork,
    /// A clean environment: PATH HOME USER LANG TERM, [env] and own env only.
    Spawn,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Condition {
    Success,
    Exit,
    Ready,
    Start,
}

/// Processes to start after: a list (each must succeed), or name -> condition.
#[derive(JsonSchema)]
#[serde(untagged)]
enum After {
    List(#[schemars(extend("uniqueItems" = true))] Vec<ProcessName>),
    Conditions(BTreeMap<String, Condition>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Restart {
    Never,
    OnFailure,
    Always,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum StdinMode {
    Null,
    Inherit,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum OutputMode {
    Log,
    Null,
    Inherit,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct OutputFile {
    /// Path, relative to the job file's directory.
    #[schemars(length(min = 1))]
    file: String,
}

/// Where output goes when no stream edge takes it.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Output {
    Mode(OutputMode),
    File(OutputFile),
}

/// A readiness probe: exactly one of tcp, cmd, log, file.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ReadyTable {
    /// "host:port" that accepts a TCP connection ("[::1]:8080" for IPv6).
    #[schemars(regex(pattern = TCP_PATTERN))]
    tcp: Option<String>,
    /// A command that exits 0 when ready.
    #[schemars(length(min = 1))]
    cmd: Option<Vec<String>>,
    /// A regex matched against the process's output lines.
    log: Option<String>,
    /// A path that exists when ready.
    #[schemars(length(min = 1))]
    file: Option<String>,
    /// An http:// URL that answers with an accepted status (any 2xx by default).
    http: Option<String>,
    /// Accepted HTTP statuses, for an http probe.
    status: Option<HttpStatus>,
    /// Time between attempts; default "200ms".
    interval: Option<PositiveDuration>,
    /// Give up after; default "30s".
    timeout: Option<PositiveDuration>,
}

/// An HTTP status, or several.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum HttpStatus {
    One(#[schemars(range(min = 100, max = 599))] u16),
    Many(#[schemars(length(min = 1))] Vec<StatusCode>),
}

/// One HTTP status.
#[derive(JsonSchema)]
struct StatusCode(#[schemars(range(min = 100, max = 599))] u16);

/// A liveness check, run once the process is ready: exactly one of tcp, http, cmd, file.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HealthTable {
    /// "host:port" that accepts a TCP connection.
    #[schemars(regex(pattern = TCP_PATTERN))]
    tcp: Option<String>,
    /// A command that exits 0 when healthy.
    #[schemars(length(min = 1))]
    cmd: Option<Vec<String>>,
    /// A path that exists while healthy.
    #[schemars(length(min = 1))]
    file: Option<String>,
    /// An http:// URL that answers with an accepted status.
    http: Option<String>,
    /// Accepted HTTP statuses, for an http probe.
    status: Option<HttpStatus>,
    /// Time between checks; default "5s".
    interval: Option<PositiveDuration>,
    /// Failed checks in a row that fail the process; default 3.
    #[schemars(range(min = 1, max = 1000000))]
    failures: Option<u32>,
}

/// One instance per item: a list, or a glob relative to the file's directory.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ForEach {
    List(#[schemars(length(min = 1))] Vec<String>),
    Glob(GlobTable),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct GlobTable {
    /// A glob such as "data/*.csv", expanded at run start, sorted.
    #[schemars(length(min = 1))]
    glob: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ProcessTable {
    /// argv, exec'd directly without a shell. Exactly one of cmd / shell.
    #[schemars(length(min = 1))]
    cmd: Option<Vec<String>>,
    /// A command line run by /bin/sh -c. Exactly one of cmd / shell.
    #[schemars(regex(pattern = r"\S"))]
    shell: Option<String>,
    /// Working directory; default the job file's directory.
    cwd: Option<String>,
    /// Environment added for this process.
    #[schemars(extend("propertyNames" = { "pattern": "^[^=]+$" }))]
    env: Option<BTreeMap<String, EnvValue>>,
    /// How the environment is built; default "fork".
    start: Option<StartMethod>,
    /// When this process may start.
    after: Option<After>,
    /// Logical parent process.
    parent: Option<ProcessName>,
    /// Not waited for; stopped when its parent (or the graph) finishes.
    daemon: Option<bool>,
    /// Number of instances; {replica} is replaced in cmd/shell/env/cwd.
    #[schemars(range(min = 1, max = 65536))]
    replicas: Option<u32>,
    /// Readiness probe.
    ready: Option<ReadyTable>,
    /// Run-time limit.
    timeout: Option<PositiveDuration>,
    /// Re-runs after failure.
    #[schemars(range(min = 0, max = 1000000))]
    retries: Option<u32>,
    /// Pause before a retry.
    retry_delay: Option<DurationText>,
    /// Restart policy for long-running processes.
    restart: Option<Restart>,
    /// Restarts allowed; default 10.
    #[schemars(range(min = 0, max = 1000000))]
    max_restarts: Option<u32>,
    /// Locks held while running, taken all-or-nothing.
    #[schemars(extend("uniqueItems" = true))]
    locks: Option<Vec<ProcessName>>,
    /// Signal sent to stop it; default "SIGTERM".
    stop_signal: Option<SignalName>,
    /// Exit codes that mean success; default [0].
    #[schemars(length(min = 1))]
    success_codes: Option<Vec<u8>>,
    /// stdin when no stream edge feeds it; default "null".
    stdin: Option<StdinMode>,
    /// stdout when no stream edge takes it; default "log".
    stdout: Option<Output>,
    /// stderr; default "log".
    stderr: Option<Output>,
    /// Runs once its after targets are finished, whatever their outcome, even while the run stops (a finally step).
    always: Option<bool>,
    /// One instance per item; {{ item }} and JOBGRAPH_ITEM hold it. Excludes replicas.
    for_each: Option<ForEach>,
    /// stdout and stderr on a pseudo-terminal.
    tty: Option<bool>,
    /// Liveness check.
    health: Option<HealthTable>,
    /// Dotenv files for this process, below its own env.
    env_file: Option<EnvFile>,
    /// What its units ask of Slurm, over [slurm]'s defaults (Slurm executor only).
    slurm: Option<ProcessSlurmTable>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum QueueMode {
    /// Each message to one consumer.
    Balance,
    /// Each message to every consumer.
    Broadcast,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Framing {
    /// Newline-terminated messages.
    Line,
    /// NUL-terminated messages.
    Nul,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct QueueTable {
    /// Producers.
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    from: Vec<ProcessName>,
    /// Consumers (a replicated process means all its replicas).
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    to: Vec<ProcessName>,
    /// Messages buffered in the engine; default 1024.
    #[schemars(range(min = 1, max = 16777216))]
    capacity: Option<u32>,
    /// Default "balance".
    mode: Option<QueueMode>,
    /// Default "line".
    framing: Option<Framing>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PipeTable {
    /// Writer of a one-way pipe.
    from: Option<ProcessName>,
    /// Reader of a one-way pipe.
    to: Option<ProcessName>,
    /// The two ends of a duplex pipe.
    #[schemars(length(min = 2, max = 2))]
    between: Option<Vec<ProcessName>>,
}

const NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

/// A name: letters, digits, `_` and `-`, not starting with a digit or `-`.
#[derive(JsonSchema)]
struct ProcessName(#[schemars(regex(pattern = NAME_PATTERN))] String);

/// TOML has no null: `Option` means "the key may be left out", which
/// `required` already says. Removes every `null` schemars adds for `Option`.
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types[0].clone();
                    o.insert("type".into(), t);
                }
            }
            for key in ["anyOf", "oneOf"] {
                let Some(Value::Array(items)) = o.get_mut(key) else {
                    continue;
                };
                items.retain(|i| i.get("type").is_none_or(|t| t != "null"));
                if items.len() == 1 {
                    let Some(Value::Object(only)) = items.pop() else {
                        continue;
                    };
                    o.remove(key);
                    for (k, val) in only {
                        o.entry(k).or_insert(val);
                    }
                }
            }
            if o.get("default").is_some_and(Value::is_null) {
                o.remove("default");
            }
            for val in o.values_mut() {
                strip_null(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// `oneOf` of `const`s (an enum with documented variants) as a plain `enum`,
/// which editors offer as completions and validators name in their messages.
/// The variants' descriptions move into the description.
fn plain_enums(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let consts: Option<Vec<(Value, Option<String>)>> =
                o.get("oneOf").and_then(Value::as_array).and_then(|items| {
                    items
                        .iter()
                        .map(|i| {
                            let c = i.get("const")?.clone();
                            let d = i
                                .get("description")
                                .and_then(Value::as_str)
                                .map(str::to_string);
                            Some((c, d))
                        })
                        .collect()
                });
            if let Some(consts) = consts {
                o.remove("oneOf");
                let described: Vec<String> = consts
                    .iter()
                    .filter_map(|(c, d)| d.as_ref().map(|d| format!("{c}: {d}")))
                    .collect();
                o.insert("type".into(), json!("string"));
                o.insert(
                    "enum".into(),
                    Value::Array(consts.into_iter().map(|c| c.0).collect()),
                );
                if !described.is_empty() {
                    let mut text = o
                        .get("description")
                        .and_then(Value::as_str)
                        .map(|d| format!("{d}\n"))
                        .unwrap_or_default();
                    text.push_str(&described.join("\n"));
                    o.insert("description".into(), json!(text));
                }
            }
            for val in o.values_mut() {
                plain_enums(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_enums),
        _ => {}
    }
}

/// The schema as a JSON value.
pub fn schema() -> Value {
    let mut v = schemars::schema_for!(JobFile).as_value().clone();
    strip_null(&mut v);
    plain_enums(&mut v);
    rules::add(&mut v);
    v
}

/// The schema as pretty JSON text, newline-terminated.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn keys(v: &Value, def: Option<&str>) -> Vec<String> {
        let obj = match def {
            Some(d) => &v["$defs"][d],
            None => v,
        };
        let mut k: Vec<String> = obj["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn schema_keys_match_the_decoder() {
        let v = schema();
        assert_eq!(keys(&v, None), sorted(spec::KEYS_TOP));
        assert_eq!(keys(&v, Some("GraphTable")), sorted(spec::KEYS_GRAPH));
        assert_eq!(keys(&v, Some("LockTable")), sorted(spec::KEYS_LOCK));
        assert_eq!(keys(&v, Some("ProcessTable")), sorted(spec::KEYS_PROCESS));
        assert_eq!(keys(&v, Some("ReadyTable")), sorted(spec::KEYS_READY));
        assert_eq!(keys(&v, Some("HealthTable")), sorted(spec::KEYS_HEALTH));
        assert_eq!(keys(&v, Some("QueueTable")), sorted(spec::KEYS_QUEUE));
        assert_eq!(keys(&v, Some("PipeTable")), sorted(spec::KEYS_PIPE));
        assert_eq!(keys(&v, Some("SlurmTable")), sorted(spec::KEYS_SLURM));
        assert_eq!(
            keys(&v, Some("ProcessSlurmTable")),
            sorted(spec::KEYS_PROCESS_SLURM)
        );
    }
}
