//! TOML text to [`JobFile`], checking each value on its own.
//!
//! The walk is by hand over toml's spanned document rather than through
//! `#[derive(Deserialize)]`: serde stops at the first error and loses spans of
//! keys, while users want every problem at once, each with a line, a column and
//! a "did you mean".
//!
//! This file holds the walk of the top level, `[graph]` and `[lock]`; the
//! child modules below decode the rest, each adding an `impl Decoder` block.

use super::*;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

type Span = std::ops::Range<usize>;

/// Keys allowed at the top level.
pub const KEYS_TOP: &[&str] = &[
    "version", "graph", "env", "lock", "process", "queue", "pipe", "vars", "include", "slurm",
];
/// Keys of `[graph]`.
pub const KEYS_GRAPH: &[&str] = &[
    "name",
    "max_parallel",
    "shutdown_grace",
    "fail_fast",
    "env_file",
    "executor",
];
/// Keys of `[lock.NAME]`.
pub const KEYS_LOCK: &[&str] = &["capacity"];
/// Keys of `[process.NAME]`.
pub const KEYS_PROCESS: &[&str] = &[
    "cmd",
    "shell",
    "cwd",
    "env",
    "start",
    "after",
    "parent",
    "daemon",
    "replicas",
    "ready",
    "timeout",
    "retries",
    "retry_delay",
    "restart",
    "max_restarts",
    "locks",
    "stop_signal",
    "success_codes",
    "stdin",
    "stdout",
    "stderr",
    "always",
    "for_each",
    "tty",
    "health",
    "env_file",
    "slurm",
];
/// Keys of a process's `ready` table.
pub const KEYS_READY: &[&str] = &[
    "tcp", "cmd", "log", "file", "http", "status", "interval", "timeout",
];
/// Keys of a process's `health` table.
pub const KEYS_HEALTH: &[&str] = &[
    "tcp", "cmd", "file", "http", "status", "interval", "failures",
];
/// Keys of `[queue.NAME]`.
pub const KEYS_QUEUE: &[&str] = &["from", "to", "capacity", "mode", "framing"];
/// Keys of `[pipe.NAME]`.
pub const KEYS_PIPE: &[&str] = &["from", "to", "between"];

const MAX_COUNT: i64 = 1_000_000;

type Value<'i> = Spanned<DeValue<'i>>;

#[path = "env_file.rs"]
mod env_file;
#[path = "include.rs"]
pub(crate) mod include;
#[path = "decode_pieces.rs"]
mod pieces;
#[path = "decode_probe.rs"]
mod probe;
#[path = "decode_process.rs"]
mod process;
#[path = "decode_queue_pipe.rs"]
mod queue_pipe;
#[path = "slurm_decode.rs"]
mod slurm_decode;
#[path = "decode_values.rs"]
mod values;
#[path = "vars.rs"]
pub(crate) mod vars;
use pieces::{pieces, syntax_error};
pub use slurm_decode::{KEYS_PROCESS_SLURM, KEYS_SLURM};
use vars::LoadOptions;

/// Names other tools use (docker compose, process-compose, GitHub Actions,
/// systemd, Kubernetes...) for jobgraph's keys: (their name, jobgraph's name).
const ALIASES: &[(&str, &str)] = &[
    ("depends_on", "after"),
    ("depends", "after"),
    ("dependencies", "after"),
    ("deps", "after"),
    ("needs", "after"),
    ("requires", "after"),
    ("wait_for", "after"),
    ("command", "cmd"),
    ("args", "cmd"),
    ("argv", "cmd"),
    ("entrypoint", "cmd"),
    ("exec", "cmd"),
    ("program", "cmd"),
    ("script", "shell"),
    ("run", "shell"),
    ("working_dir", "cwd"),
    ("workdir", "cwd"),
    ("working_directory", "cwd"),
    ("dir", "cwd"),
    ("directory", "cwd"),
    ("environment", "env"),
    ("readiness_probe", "ready"),
    ("healthcheck", "ready"),
    ("health_check", "ready"),
    ("is_daemon", "daemon"),
    ("background", "daemon"),
    ("scale", "replicas"),
    ("instances", "replicas"),
    ("restart_policy", "restart"),
    ("max_retries", "retries"),
    ("retry", "retries"),
    ("backoff", "retry_delay"),
    ("signal", "stop_signal"),
    ("exit_codes", "success_codes"),
    ("parallelism", "max_parallel"),
    ("concurrency", "max_parallel"),
    ("jobs", "max_parallel"),
    ("shutdown_timeout", "shutdown_grace"),
    ("stop_grace_period", "shutdown_grace"),
    ("producers", "from"),
    ("consumers", "to"),
    ("size", "capacity"),
    ("maxsize", "capacity"),
];

/// jobgraph's key for a key another tool uses, when this table has it.
fn alias(name: &str, allowed: &[&str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    ALIASES
        .iter()
        .find(|(theirs, ours)| *theirs == lower && allowed.contains(ours))
        .map(|(_, ours)| *ours)
}

/// Keys of a process that take a table.
const PROCESS_TABLES: &[&str] = &[
    "env", "ready", "after", "stdout", "stderr", "health", "slurm",
];

/// The last component of a dotted name: what the user writes inside the table.
fn last_key(what: &dyn std::fmt::Display) -> String {
    let s = what.to_string();
    s.rsplit('.').next().unwrap_or(&s).to_string()
}

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

/// Decodes a job file. `None` when the TOML itself does not parse; otherwise
/// the model, with every invalid value replaced by its default and reported.
pub fn decode(source: &SourceFile) -> (Option<JobFile>, Vec<Diagnostic>) {
    decode_with(source, &LoadOptions::default())
}

/// [`decode`] with options from the command line (`--set`).
pub fn decode_with(source: &SourceFile, opts: &LoadOptions) -> (Option<JobFile>, Vec<Diagnostic>) {
    let mut d = Decoder {
        diags: Vec::new(),
        offset: 0,
        seen: Default::default(),
        vars: Vec::new(),
        base: source.base_dir(),
        graph_env_file: Vec::new(),
        part: 0..source.text().len(),
    };
    let mut file = JobFile::default();
    let parts = source.parts();
    if parts.len() > 1 {
        // Vars of every file first: a file may use the vars of another.
        for part in parts {
            let text = &source.text()[part.range.clone()];
            for piece in pieces(text) {
                d.offset = part.range.start + piece.start;
                if let Ok(root) = DeTable::parse(&text[piece.clone()]) {
                    if let Some(v) = root.get_ref().get("vars") {
                        d.vars_table(v, opts);
                    }
                }
            }
        }
    }
    for (index, part) in parts.iter().enumerate() {
        let text = &source.text()[part.range.clone()];
        d.enter_part(index, part, source);
        for piece in pieces(text) {
            d.offset = part.range.start + piece.start;
            let root = match DeTable::parse(&text[piece.clone()]) {
                Ok(root) => root,
                Err(err) => {
                    let span = err.span().unwrap_or(0..0);
                    let span = span.start + piece.start..span.end + piece.start;
                    let message = err.message().trim().to_string();
                    let diag = syntax_error(text, span, &message);
                    return (None, vec![include::shift(diag, part.range.start)]);
                }
            };
            if parts.len() == 1 {
                if let Some(v) = root.get_ref().get("vars") {
                    d.vars_table(v, opts);
                }
            }
            d.file(root.into_inner(), &mut file, &text[piece.clone()]);
        }
    }
    let declared: Vec<String> = d.vars.iter().map(|v| v.name.clone()).collect();
    d.unknown_overrides(&declared, opts);
    file.env.splice(0..0, std::mem::take(&mut d.graph_env_file));
    if file.processes.is_empty() && !d.diags.iter().any(|x| x.is_error()) {
        d.diags.push(
            Diagnostic::new(Code::EmptyGraph, None, "the file declares no process")
                .help("add a process, e.g. [process.hello] with cmd = [\"echo\", \"hello\"]"),
        );
    }
    (Some(file), d.diags)
}

struct Decoder {
    diags: Vec<Diagnostic>,
    /// Where the piece being decoded starts in the file (see [`pieces`]).
    offset: usize,
    /// Tables already decoded from earlier pieces, to catch redefinitions across pieces.
    seen: rustc_hash::FxHashMap<String, std::ops::Range<usize>>,
    /// `[vars]`, resolved (see vars.rs).
    vars: Vec<vars::Var>,
    /// The job file's directory, for `env_file` paths.
    base: std::path::PathBuf,
    /// `[graph] env_file` variables, put before `[env]` at the end.
    graph_env_file: Vec<(Sp<String>, Sp<String>)>,
    /// The byte range of the file being decoded (the main file, or an included one).
    part: std::ops::Range<usize>,
}

fn key_str<'a>(k: &'a Key<'_>) -> &'a str {
    k.get_ref().as_ref()
}

impl Decoder {
    /// A span of the current piece, as a span of the whole file.
    fn at(&self, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
        span.start + self.offset..span.end + self.offset
    }

    /// Reports a table defined twice, in two pieces; within one piece, toml reports it.
    fn first_definition(&mut self, what: String, span: std::ops::Range<usize>) -> bool {
        let first = match self.seen.entry(what) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(span);
                return true;
            }
            std::collections::hash_map::Entry::Occupied(o) => (o.key().clone(), o.get().clone()),
        };
        let (what, first) = first;
        if first.start < self.part.start {
            self.defined_twice(&what, span, first);
            return false;
        }
        self.push(
            Diagnostic::at(
                Code::TomlSyntax,
                span,
                if what == "version" {
                    "invalid TOML: `version` is defined twice".to_string()
                } else {
                    format!("invalid TOML: table `[{what}]` is defined twice")
                },
            )
            .label("defined again here")
            .related(first, "first defined here")
            .help("merge the two tables into one; a table header may appear only once"),
        );
        false
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Consumes the document table by table, so that a large file's parsed
    /// form is freed while the model is built rather than held until the end.
    fn file(&mut self, root: DeTable<'_>, file: &mut JobFile, text: &str) {
        for (k, v) in root {
            let k = &k;
            if matches!(
                key_str(k),
                "version" | "graph" | "env" | "vars" | "include" | "slurm"
            ) && !self.first_definition(key_str(k).to_string(), self.at(k.span()))
            {
                continue;
            }
            match key_str(k) {
                "version" => {
                    let ok = matches!(v.get_ref(), DeValue::Integer(i) if i.as_str() == "1" && i.radix() == 10);
                    if !ok {
                        self.push(
                            Diagnostic::at(
                                Code::UnsupportedVersion,
                                self.at(v.span()),
                                "this jobgraph reads version 1 files only",
                            )
                            .label("unsupported version")
                            .help("write version = 1, or remove the line"),
                        );
                    }
                }
                "include" if matches!(v.get_ref(), DeValue::Table(_)) => {
                    let help =
                        Some("write include = [\"common.toml\"] at the top of the file".into());
                    self.wrong_type(&"include", "an array of paths", &v, help);
                }
                "vars" | "include" => {} // decoded first, by vars_table / include.rs
                "graph" | "slurm" if self.part.start > 0 => self.graph_in_include(k),
                "slurm" => {
                    if let Some(t) = self.table(&"slurm", &v) {
                        file.slurm = self.slurm_settings(t);
                    }
                }
                "graph" => {
                    if let Some(t) = self.table(&"graph", &v) {
                        file.graph = self.graph(t);
                        if let Some(ef) = t.get("env_file") {
                            self.graph_env_file = self.env_file("graph.env_file", ef);
                        }
                    }
                }
                "env" => {
                    let v = match self.expand_env(text, &v) {
                        Some(new) => Spanned::new(v.span(), new),
                        None => v,
                    };
                    if let Some(t) = self.table(&"env", &v) {
                        let env = self.env(&"env", t);
                        self.merge_env(&mut file.env, env);
                    }
                }
                "lock" => self.each_named("lock", v, |d, name, t| {
                    if let Some(lock) = d.lock(name, t) {
                        file.locks.push(lock);
                    }
                }),
                "process" => {
                    // Grown one by one, the table of (large) processes would be
                    // copied at every doubling: a measurable share of a run's
                    // start on a big file.
                    if let DeValue::Table(t) = v.get_ref() {
                        file.processes.reserve(t.len());
                    }
                    self.each_named("process", v, |d, name, t| {
                        let expanded = d.expand_process(text, &name.value, t);
                        let t = expanded.as_ref().unwrap_or(t);
                        let mut p = d.process(name, t);
                        if let Some(ef) = t.get("env_file") {
                            let what = format!("process.{}.env_file", p.name.value);
                            p.env.splice(0..0, d.env_file(&what, ef));
                        }
                        file.processes.push(p)
                    })
                }
                "queue" => {
                    self.each_named("queue", v, |d, name, t| file.queues.push(d.queue(name, t)))
                }
                "pipe" => self.each_named("pipe", v, |d, name, t| file.pipes.push(d.pipe(name, t))),
                _ => self.unknown_key(k, KEYS_TOP, "the top level"),
            }
        }
    }

    /// Walks `[kind.NAME]` tables, checking names, calling `f` for each.
    fn each_named(
        &mut self,
        kind: &str,
        v: Value<'_>,
        mut f: impl FnMut(&mut Self, Sp<String>, &DeTable<'_>),
    ) {
        if self.table(&kind, &v).is_none() {
            return;
        }
        let DeValue::Table(t) = v.into_inner() else {
            return;
        };
        for (k, v) in t {
            let (k, v) = (&k, &v);
            if !self.first_definition(format!("{kind}.{}", key_str(k)), self.at(k.span())) {
                continue;
            }
            let name = self.name(kind, k);
            match v.get_ref() {
                DeValue::Table(inner) => f(self, name, inner),
                _ => {
                    let help = Some(format!("declare it as a table: [{kind}.{}]", name.value));
                    self.wrong_type(&format!("{kind}.{}", name.value), "a table", v, help);
                }
            }
        }
    }

    fn graph(&mut self, t: &DeTable<'_>) -> GraphSettings {
        let mut g = GraphSettings::default();
        for (k, v) in t.iter() {
            match key_str(k) {
                "name" => {
                    if let Some(s) = self.string(&"graph.name", v) {
                        if s.value.trim().is_empty() {
                            self.push(
                                Diagnostic::at(
                                    Code::BadName,
                                    self.at(v.span()),
                                    "`graph.name` is empty",
                                )
                                .label("empty name"),
                            );
                        } else {
                            g.name = Some(s);
                        }
                    }
                }
                "max_parallel" => {
                    if let Some(n) = self.int(
                        &"graph.max_parallel",
                        v,
                        Code::BadNumber,
                        1,
                        u32::MAX as i64,
                    ) {
                        g.max_parallel = Some(Sp::new(n as u32, self.at(v.span())));
                    }
                }
                "shutdown_grace" => {
                    if let Some(d) = self.duration(&"graph.shutdown_grace", v, true) {
                        g.shutdown_grace = d;
                    }
                }
                "fail_fast" => {
                    if let Some(b) = self.boolean(&"graph.fail_fast", v) {
                        g.fail_fast = b;
                    }
                }
                "env_file" => {} // read by env_file.rs
                "executor" => g.executor = self.executor(v),
                _ => self.unknown_key(k, KEYS_GRAPH, "[graph]"),
            }
        }
        g
    }

    fn lock(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Option<Lock> {
        let mut capacity = Sp::new(1, name.span.clone());
        for (k, v) in t.iter() {
            match key_str(k) {
                "capacity" => {
                    let what = format!("lock.{}.capacity", name.value);
                    if let Some(n) = self.int(&what, v, Code::BadCapacity, 1, MAX_COUNT) {
                        capacity = Sp::new(n as u32, self.at(v.span()));
                    }
                }
                _ => self.unknown_key(k, KEYS_LOCK, "a lock"),
            }
        }
        Some(Lock { name, capacity })
    }
}
