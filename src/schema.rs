//! The JSON Schema of the job-file format, for editors (taplo / Even Better
//! TOML). The types here mirror the file's shape for schemars only; decoding
//! is done by [`crate::spec`], and a test keeps the two key sets equal.

#![allow(dead_code)] // fields are read by schemars, not by code

use schemars::JsonSchema;
use serde_json::{json, Value};
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
    env: Option<BTreeMap<String, EnvValue>>,
    /// Named locks, held by processes while they run.
    lock: Option<BTreeMap<String, LockTable>>,
    /// The processes.
    process: Option<BTreeMap<String, ProcessTable>>,
    /// Queues: many producers to many consumers, framed messages.
    queue: Option<BTreeMap<String, QueueTable>>,
    /// Pipes: one-way (from/to) or duplex (between).
    pipe: Option<BTreeMap<String, PipeTable>>,
}

/// A duration: a number and a unit, e.g. "250ms", "10s", "5m", "1h30m".
#[derive(JsonSchema)]
#[schemars(example = "10s")]
struct DurationText(#[schemars(regex(pattern = r"^\s*[0-9]"))] String);

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
    name: Option<String>,
    /// Processes running at once; default unlimited.
    #[schemars(range(min = 1))]
    max_parallel: Option<u32>,
    /// Time from the stop signal to SIGKILL; default "5s".
    shutdown_grace: Option<DurationText>,
    /// Stop everything at the first failure; default true.
    fail_fast: Option<bool>,
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
    List(Vec<String>),
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
    /// "host:port" that accepts a TCP connection.
    tcp: Option<String>,
    /// A command that exits 0 when ready.
    #[schemars(length(min = 1))]
    cmd: Option<Vec<String>>,
    /// A regex matched against the process's output lines.
    log: Option<String>,
    /// A path that exists when ready.
    file: Option<String>,
    /// Time between attempts; default "200ms".
    interval: Option<DurationText>,
    /// Give up after; default "30s".
    timeout: Option<DurationText>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ProcessTable {
    /// argv, exec'd directly without a shell. Exactly one of cmd / shell.
    #[schemars(length(min = 1))]
    cmd: Option<Vec<String>>,
    /// A command line run by /bin/sh -c. Exactly one of cmd / shell.
    shell: Option<String>,
    /// Working directory; default the job file's directory.
    cwd: Option<String>,
    /// Environment added for this process.
    env: Option<BTreeMap<String, EnvValue>>,
    /// How the environment is built; default "fork".
    start: Option<StartMethod>,
    /// When this process may start.
    after: Option<After>,
    /// Logical parent process.
    parent: Option<String>,
    /// Not waited for; stopped when its parent (or the graph) finishes.
    daemon: Option<bool>,
    /// Number of instances; {replica} is replaced in cmd/shell/env/cwd.
    #[schemars(range(min = 1, max = 65536))]
    replicas: Option<u32>,
    /// Readiness probe.
    ready: Option<ReadyTable>,
    /// Run-time limit.
    timeout: Option<DurationText>,
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
    locks: Option<Vec<String>>,
    /// Signal sent to stop it; default "SIGTERM".
    stop_signal: Option<String>,
    /// Exit codes that mean success; default [0].
    #[schemars(length(min = 1))]
    success_codes: Option<Vec<u8>>,
    /// stdin when no stream edge feeds it; default "null".
    stdin: Option<StdinMode>,
    /// stdout when no stream edge takes it; default "log".
    stdout: Option<Output>,
    /// stderr; default "log".
    stderr: Option<Output>,
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
    #[schemars(length(min = 1))]
    from: Vec<String>,
    /// Consumers (a replicated process means all its replicas).
    #[schemars(length(min = 1))]
    to: Vec<String>,
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
    from: Option<String>,
    /// Reader of a one-way pipe.
    to: Option<String>,
    /// The two ends of a duplex pipe.
    #[schemars(length(min = 2, max = 2))]
    between: Option<Vec<String>>,
}

const NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

/// The schema as a JSON value.
pub fn schema() -> Value {
    let mut v = schemars::schema_for!(JobFile).as_value().clone();
    // Rules schemars cannot derive: names of tables, and exactly-one-of keys.
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        for table in ["lock", "process", "queue", "pipe"] {
            if let Some(t) = props.get_mut(table).and_then(Value::as_object_mut) {
                t.insert("propertyNames".into(), json!({ "pattern": NAME_PATTERN }));
            }
        }
    }
    if let Some(defs) = v.get_mut("$defs").and_then(Value::as_object_mut) {
        if let Some(p) = defs.get_mut("ProcessTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([{ "required": ["cmd"] }, { "required": ["shell"] }]),
            );
        }
        if let Some(p) = defs.get_mut("PipeTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([{ "required": ["from", "to"] }, { "required": ["between"] }]),
            );
        }
        if let Some(p) = defs.get_mut("ReadyTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([
                    { "required": ["tcp"] }, { "required": ["cmd"] },
                    { "required": ["log"] }, { "required": ["file"] }
                ]),
            );
        }
    }
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
        assert_eq!(keys(&v, Some("QueueTable")), sorted(spec::KEYS_QUEUE));
        assert_eq!(keys(&v, Some("PipeTable")), sorted(spec::KEYS_PIPE));
    }
}
