//! The job-file model: what a file declares, with the byte span of every value
//! so that later checks can point at it.
//!
//! [`decode`] turns TOML into this model, checking everything that can be
//! checked on one value at a time (types, names, durations, signals, ranges).
//! Checks that relate values to each other live in [`crate::graph`].

mod decode;
mod dotenv;
mod duration;
mod name;
mod signal;
pub mod slurm;
mod suggest;

pub use decode::include::load as load_includes;
pub use decode::vars::{parse_set, LoadOptions};
pub use decode::{
    decode, decode_with, KEYS_GRAPH, KEYS_HEALTH, KEYS_LOCK, KEYS_PIPE, KEYS_PROCESS,
    KEYS_PROCESS_SLURM, KEYS_QUEUE, KEYS_READY, KEYS_SLURM, KEYS_TOP,
};
pub use duration::{format_duration, parse_duration, MAX_DURATION};
pub use name::is_valid_name;
pub use signal::parse_signal;
pub use slurm::{ExecutorKind, SlurmMode, SlurmResources, SlurmSettings};
pub use suggest::did_you_mean;

use crate::diagnostic::Span;
use std::time::Duration;

/// A value with the byte span it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<T> {
    /// The decoded value.
    pub value: T,
    /// Where it is in the file.
    pub span: Span,
}

impl<T> Sp<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: Span) -> Sp<T> {
        Sp { value, span }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A whole job file.
#[derive(Debug, Clone, Default)]
pub struct JobFile {
    /// `[graph]` settings.
    pub graph: GraphSettings,
    /// `[env]`, in file order.
    pub env: Vec<(Sp<String>, Sp<String>)>,
    /// `[lock.*]`, in file order.
    pub locks: Vec<Lock>,
    /// `[process.*]`, in file order.
    pub processes: Vec<Process>,
    /// `[queue.*]`, in file order.
    pub queues: Vec<Queue>,
    /// `[pipe.*]`, in file order.
    pub pipes: Vec<Pipe>,
    /// `[slurm]`.
    pub slurm: SlurmSettings,
}

/// The `[graph]` table.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// `name`; `None` means the file stem.
    pub name: Option<Sp<String>>,
    /// `max_parallel`; `None` means unlimited.
    pub max_parallel: Option<Sp<u32>>,
    /// `shutdown_grace`: stop signal to SIGKILL.
    pub shutdown_grace: Duration,
    /// `fail_fast`.
    pub fail_fast: bool,
    /// `executor`; `None` means local unless the command line says otherwise.
    pub executor: Option<Sp<ExecutorKind>>,
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            name: None,
            max_parallel: None,
            shutdown_grace: Duration::from_secs(5),
            fail_fast: true,
            executor: None,
        }
    }
}

/// A `[lock.NAME]` table.
#[derive(Debug, Clone)]
pub struct Lock {
    /// The lock's name (span: the key in the header).
    pub name: Sp<String>,
    /// Holders at once.
    pub capacity: Sp<u32>,
}

/// What a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `cmd = [...]`: exec'd directly.
    Argv(Vec<Sp<String>>),
    /// `shell = "..."`: run by `/bin/sh -c`.
    Shell(Sp<String>),
    /// Neither was given (already reported).
    Missing,
}

/// `start`: how a process's environment is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMethod {
    /// Inherit the engine's and the parent chain's environment.
    #[default]
    Fork,
    /// A clean environment.
    Spawn,
}

/// When an `after` dependency is satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The other process finished successfully.
    #[default]
    Success,
    /// The other process finished, whatever its status.
    Exit,
    /// The other process's readiness probe passed.
    Ready,
    /// The other process has started.
    Start,
}

impl Condition {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "success",
            Condition::Exit => "exit",
            Condition::Ready => "ready",
            Condition::Start => "start",
        }
    }
}

/// One `after` entry.
#[derive(Debug, Clone)]
pub struct After {
    /// The process waited for.
    pub process: Sp<String>,
    /// What it waits for.
    pub condition: Condition,
}

/// A readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to host:port succeeds.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A command exits 0.
    Cmd(Vec<String>),
    /// A line of output matches this regex.
    Log(String),
    /// A file exists.
    File(String),
    /// An HTTP GET of the URL answers with an accepted status.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Accepted statuses; empty means any 2xx.
        status: Vec<u16>,
    },
}

impl Probe {
    /// The probe in words, as notes show it (`tcp 127.0.0.1:8080`).
    pub fn describe(&self) -> String {
        match self {
            Probe::Tcp { host, port } => format!("tcp {host}:{port}"),
            Probe::Cmd(argv) => format!("cmd {}", argv.join(" ")),
            Probe::Log(re) => format!("log /{re}/"),
            Probe::File(f) => format!("file {f}"),
            Probe::Http { url, .. } => format!("http {url}"),
        }
    }
}

/// The `health` table: a liveness check, run once the process is ready.
#[derive(Debug, Clone)]
pub struct Health {
    /// The probe (span: its value).
    pub probe: Sp<Probe>,
    /// Time between checks (and the most one check may take).
    pub interval: Duration,
    /// Consecutive failed checks that fail the process.
    pub failures: u32,
}

/// `for_each`: one instance per item.
#[derive(Debug, Clone)]
pub enum ForEach {
    /// `for_each = ["a", "b"]`.
    List(Vec<Sp<String>>),
    /// `for_each = { glob = "data/*.csv" }`, relative to the file's directory.
    Glob(Sp<String>),
}

/// The `ready` table.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The probe (span: the whole table).
    pub probe: Sp<Probe>,
    /// Time between attempts.
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

/// `restart` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never restart.
    #[default]
    Never,
    /// Restart after a failure.
    OnFailure,
    /// Restart whenever it exits.
    Always,
}

/// `stdin` when no stream edge feeds the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stdin {
    /// /dev/null.
    #[default]
    Null,
    /// The engine's stdin.
    Inherit,
}

/// `stdout` / `stderr` when no stream edge takes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Prefixed lines in the engine's log.
    #[default]
    Log,
    /// /dev/null.
    Null,
    /// The engine's own stdout / stderr.
    Inherit,
    /// A file (relative to the job file's directory).
    File(String),
}

/// A signal by number and canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The signal number.
    pub number: i32,
    /// `SIGTERM`-style name.
    pub name: &'static str,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            number: 15,
            name: "SIGTERM",
        }
    }
}

/// A `[process.NAME]` table.
#[derive(Debug, Clone)]
pub struct Process {
    /// The name (span: the key in the header).
    pub name: Sp<String>,
    /// `cmd` or `shell`.
    pub command: Command,
    /// `cwd`, as written.
    pub cwd: Option<Sp<String>>,
    /// `env`, in file order.
    pub env: Vec<(Sp<String>, Sp<String>)>,
    /// `start`.
    pub start: StartMethod,
    /// `after`, in file order.
    pub after: Vec<After>,
    /// `parent`.
    pub parent: Option<Sp<String>>,
    /// `daemon` (span of the value when given).
    pub daemon: Sp<bool>,
    /// `replicas`.
    pub replicas: Sp<u32>,
    /// `ready`.
    pub ready: Option<Ready>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `retries`.
    pub retries: u32,
    /// `retry_delay`.
    pub retry_delay: Duration,
    /// `restart`.
    pub restart: Restart,
    /// `max_restarts`.
    pub max_restarts: u32,
    /// `locks`, in file order.
    pub locks: Vec<Sp<String>>,
    /// `stop_signal`.
    pub stop_signal: Signal,
    /// `success_codes`.
    pub success_codes: Vec<i32>,
    /// `stdin`.
    pub stdin: Stdin,
    /// `stdout`.
    pub stdout: Output,
    /// `stderr`.
    pub stderr: Output,
    /// Where `stdout` and `stderr` name a file, the span of that value.
    pub output_spans: [Option<Span>; 2],
    /// `always`: runs once its `after` targets are finished, whatever their
    /// outcome, even while the run stops (DAGMan's FINAL node).
    pub always: Sp<bool>,
    /// `for_each`, as written.
    pub for_each: Option<ForEach>,
    /// The items of `for_each`, expanded (globs at check time); one instance each.
    pub items: Vec<String>,
    /// `tty`: stdout and stderr on a pseudo-terminal.
    pub tty: Sp<bool>,
    /// `health`: a liveness check.
    pub health: Option<Health>,
    /// `slurm`: what its units ask of Slurm, over `[slurm]`'s defaults.
    pub slurm: Option<SlurmResources>,
}

impl Process {
    /// A process with every key at its default, as if only its header were written.
    pub fn new(name: Sp<String>) -> Process {
        let span = name.span.clone();
        Process {
            name,
            command: Command::Missing,
            cwd: None,
            env: Vec::new(),
            start: StartMethod::Fork,
            after: Vec::new(),
            parent: None,
            daemon: Sp::new(false, span.clone()),
            replicas: Sp::new(1, span.clone()),
            ready: None,
            timeout: None,
            retries: 0,
            retry_delay: Duration::ZERO,
            restart: Restart::Never,
            max_restarts: 10,
            locks: Vec::new(),
            stop_signal: Signal::default(),
            success_codes: vec![0],
            stdin: Stdin::Null,
            stdout: Output::Log,
            stderr: Output::Log,
            output_spans: [None, None],
            always: Sp::new(false, span.clone()),
            for_each: None,
            items: Vec::new(),
            tty: Sp::new(false, span.clone()),
            health: None,
            slurm: None,
        }
    }
}

/// `mode` of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// Each message to one consumer.
    #[default]
    Balance,
    /// Each message to every consumer.
    Broadcast,
}

/// `framing` of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// Newline-terminated messages.
    #[default]
    Line,
    /// NUL-terminated messages.
    Nul,
}

/// A `[queue.NAME]` table.
#[derive(Debug, Clone)]
pub struct Queue {
    /// The name (span: the key in the header).
    pub name: Sp<String>,
    /// Producers.
    pub from: Sp<Vec<Sp<String>>>,
    /// Consumers.
    pub to: Sp<Vec<Sp<String>>>,
    /// Messages buffered in the engine.
    pub capacity: u32,
    /// `mode`.
    pub mode: QueueMode,
    /// `framing`.
    pub framing: Framing,
}

/// The shape of a pipe.
#[derive(Debug, Clone)]
pub enum PipeEnds {
    /// `from` / `to`: a kernel pipe.
    OneWay {
        /// Writer.
        from: Sp<String>,
        /// Reader.
        to: Sp<String>,
    },
    /// `between`: a socketpair.
    Duplex {
        /// The two ends.
        between: [Sp<String>; 2],
    },
    /// Malformed (already reported).
    Invalid,
}

/// A `[pipe.NAME]` table.
#[derive(Debug, Clone)]
pub struct Pipe {
    /// The name (span: the key in the header).
    pub name: Sp<String>,
    /// Its ends.
    pub ends: PipeEnds,
}
