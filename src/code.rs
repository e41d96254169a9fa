//! The rules the static checks enforce, one name each.
//!
//! The names are stable: they appear in `--format json` output, in GitHub
//! annotations and in docs/checks.md, and scripts may match on them.

use crate::diagnostic::Severity;

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, $sev:ident; )*) => {
        /// A rule of the static checks.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The stable kebab-case name.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $name, )* }
            }

            /// Whether the rule makes the file invalid.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }

            /// What the rule says, in one line.
            pub fn summary(self) -> &'static str {
                match self { $( Code::$variant => concat!($($doc),*).trim_ascii(), )* }
            }
        }
    };
}

codes! {
    /// The file cannot be read: missing, a directory, too large, or not UTF-8.
    UnreadableFile = "unreadable-file", Error;
    /// The file is not valid TOML.
    TomlSyntax = "toml-syntax", Error;
    /// A key that the format does not have.
    UnknownKey = "unknown-key", Error;
    /// A value outside the allowed set (start, mode, restart, ...).
    UnknownValue = "unknown-value", Error;
    /// A value of the wrong TOML type.
    WrongType = "wrong-type", Error;
    /// `version` is not 1.
    UnsupportedVersion = "unsupported-version", Error;
    /// The file declares no process.
    EmptyGraph = "empty-graph", Error;
    /// A process has both `cmd` and `shell`.
    CommandConflict = "command-conflict", Error;
    /// A process has neither `cmd` nor `shell`.
    CommandMissing = "command-missing", Error;
    /// An empty `cmd` array, an empty program name, or an empty `shell`.
    EmptyArgv = "empty-argv", Error;
    /// A name that is not `[A-Za-z_][A-Za-z0-9_-]*`.
    BadName = "bad-name", Error;
    /// A reference to a process that is not declared.
    UnknownProcess = "unknown-process", Error;
    /// A reference to a lock that is not declared.
    UnknownLock = "unknown-lock", Error;
    /// A cycle through `after` and `parent`.
    Cycle = "cycle", Error;
    /// A daemon that is the parent of other processes.
    DaemonWithChildren = "daemon-with-children", Error;
    /// `after = "ready"` on a process that has no `ready` probe.
    ReadyWithoutProbe = "ready-without-probe", Error;
    /// An `after` / `parent` path between members of one stream group, which launch together.
    StreamGroupDeadlock = "stream-group-deadlock", Error;
    /// A queue with no producer.
    QueueWithoutProducers = "queue-without-producers", Error;
    /// A queue with no consumer.
    QueueWithoutConsumers = "queue-without-consumers", Error;
    /// A name listed twice in one `after`, `locks`, `from` or `to`.
    DuplicateReference = "duplicate-reference", Error;
    /// A process that is both producer and consumer of one queue.
    QueueSelfFeed = "queue-self-feed", Error;
    /// A replicated process at an end of a pipe (one-way or duplex).
    PipeReplicatedEndpoint = "pipe-replicated-endpoint", Error;
    /// A pipe from a process to itself.
    PipeToItself = "pipe-to-itself", Error;
    /// A pipe without exactly one of `between` or `from` + `to`.
    PipeShape = "pipe-shape", Error;
    /// `max_parallel` below the size of a stream group, which must run at once.
    MaxParallelTooSmall = "max-parallel-too-small", Error;
    /// A duration that does not parse (`250ms`, `10s`, `5m`, `1h30m`).
    BadDuration = "bad-duration", Error;
    /// A signal name that does not exist.
    BadSignal = "bad-signal", Error;
    /// A queue or lock capacity out of range.
    BadCapacity = "bad-capacity", Error;
    /// A replica count out of range.
    BadReplicas = "bad-replicas", Error;
    /// Another number out of range (retries, exit codes, max_parallel, ...).
    BadNumber = "bad-number", Error;
    /// A `ready` table without exactly one valid probe.
    BadProbe = "bad-probe", Error;
    /// An empty `for_each`, a glob that matches nothing, or `for_each` with `replicas`.
    BadForEach = "bad-for-each", Error;
    /// A process with `always = true` that is a daemon.
    AlwaysDaemon = "always-daemon", Error;
    /// `tty = true` on a process whose stdout or stderr is a stream edge.
    TtyStream = "tty-stream", Error;
    /// A NUL character in a string: no argv, environment variable, path or name can hold one.
    NulCharacter = "nul-character", Error;
    /// Two queues or pipes whose `JOBGRAPH_FD_<EDGE>` variables would have the same name.
    EdgeNameClash = "edge-name-clash", Error;
    /// A stream group whose members together need more of a lock than it has.
    StreamGroupLock = "stream-group-lock", Error;
    /// A `parent` that is replicated.
    ParentReplicated = "parent-replicated", Error;
    /// A `{{ name }}` that names no var (or a `--set` of a var the file does not declare).
    UnknownVar = "unknown-var", Error;
    /// A var read from an environment variable that is not set and has no default.
    UnsetEnvVar = "unset-env-var", Error;
    /// An `env_file` that is missing, unreadable or not valid dotenv.
    BadEnvFile = "bad-env-file", Error;
    /// An `include` that is missing, unreadable, part of a cycle, or sets `[graph]`.
    BadInclude = "bad-include", Error;
    /// A Slurm setting Slurm would refuse, or an `extra` option jobgraph sets itself.
    BadSlurmOption = "bad-slurm-option", Error;
    /// A process, lock, queue, pipe, var or `[env]` variable defined in two files.
    DuplicateName = "duplicate-name", Error;
    /// A `stdout` or `stderr` file that is the job file or a file it includes: the run would overwrite it.
    OutputClash = "output-clash", Error;
    /// A program that is not on PATH or not executable.
    CommandNotFound = "command-not-found", Warning;
    /// A lock that no process takes.
    UnusedLock = "unused-lock", Warning;
    /// A non-daemon waits for a daemon to succeed or exit, which daemons do only when stopped at the end.
    AfterDaemon = "after-daemon", Warning;
    /// `retries` on a stream-group member with a pipe edge, which cannot rerun on its own.
    StreamGroupRetries = "stream-group-retries", Warning;
    /// A `cmd` argument with shell syntax (`$VAR`, `${VAR}`, `|`, `>`, ...), passed literally since `cmd` is not run by a shell.
    ShellSyntaxInCmd = "shell-syntax-in-cmd", Warning;
    /// One-way pipes that form a loop (`a -> b` and `b -> a`), which deadlock if both ends read first.
    PipeCycle = "pipe-cycle", Warning;
    /// A `log` readiness probe on a Python command whose output is block-buffered (no `-u`, no PYTHONUNBUFFERED).
    BufferedLogProbe = "buffered-log-probe", Warning;
    /// A Slurm `time` limit that ends a unit before its own `timeout` (plus the grace) would.
    SlurmTimeBeforeTimeout = "slurm-time-before-timeout", Warning;
    /// Every process is a daemon, so nothing keeps the graph running.
    DaemonsOnly = "daemons-only", Warning;
    /// A reader of daemons only (no end-of-file while it runs), or a daemon reading what others write (stopped with it unread).
    DaemonStream = "daemon-stream", Warning;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate {name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
            assert!(!code.summary().is_empty());
        }
    }
}
