//! `[process.NAME]` and the values only a process has (`after`,
//! `success_codes`, `stdout`/`stderr`, `for_each`).
//!
//! This is a child module of `decode.rs`.

use super::*;

const CONDITIONS: &[&str] = &["success", "exit", "ready", "start"];
const MAX_REPLICAS: i64 = 65_536;

/// Whether `text` names a signal at all, to tell SIGSTOP-like signals (which
/// `parse_signal` refuses because they cannot stop a process) from typos.
fn is_signal_name(text: &str) -> bool {
    use std::str::FromStr;
    let full = if text.starts_with("SIG") {
        text.to_string()
    } else {
        format!("SIG{text}")
    };
    nix::sys::signal::Signal::from_str(&full).is_ok()
}

/// `prefix.key`, formatted only when a message needs it.
struct Dotted<'a>(&'a str, &'a str);

impl std::fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Decoder {
    /// One `[process.NAME]` table; its `env_file` is read by the caller.
    pub(super) fn process(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Process {
        let mut p = Process::new(name);
        let n = p.name.value.clone();
        let prefix = format!("process.{n}");
        let mut cmd: Option<(Command, Span)> = None;
        let mut shell: Option<(Command, Span)> = None;
        let mut typo_command = false;
        for (k, v) in t.iter() {
            match key_str(k) {
                "cmd" => cmd = Some(self.cmd(&Dotted(&prefix, "cmd"), k, v)),
                "shell" => shell = Some(self.shell(&Dotted(&prefix, "shell"), k, v)),
                "env_file" => {} // read by env_file.rs
                _ if self.setup_key(&mut p, &prefix, k, v) => {}
                _ if self.lifecycle_key(&mut p, &prefix, k, v) => {}
                _ if self.io_key(&mut p, &prefix, k, v) => {}
                _ => typo_command |= self.unknown_process_key(k, v, &n),
            }
        }
        p.command = self.command(&p.name, cmd, shell, typo_command);
        p
    }

    /// `cmd`: the argv, or `Command::Missing` when it is invalid (reported),
    /// with the key's span for a conflict with `shell`.
    fn cmd(&mut self, what: &Dotted<'_>, k: &Key<'_>, v: &Value<'_>) -> (Command, Span) {
        let help = || {
            Some("cmd takes an argv array such as [\"ls\", \"-l\"]; for a shell command line write shell = \"...\"".to_string())
        };
        let Some(argv) = self.strings(what, v, &help) else {
            return (Command::Missing, self.at(k.span()));
        };
        if argv.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::EmptyArgv,
                    self.at(v.span()),
                    format!("`{what}` is empty"),
                )
                .label("no program")
                .help("name the program and its arguments: cmd = [\"echo\", \"hi\"]"),
            );
        } else if argv[0].value.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::EmptyArgv,
                    argv[0].span.clone(),
                    "the program name is empty",
                )
                .label("empty program name"),
            );
        }
        (Command::Argv(argv), self.at(k.span()))
    }

    /// `shell`: the command line, or `Command::Missing` when it is invalid.
    fn shell(&mut self, what: &Dotted<'_>, k: &Key<'_>, v: &Value<'_>) -> (Command, Span) {
        let Some(s) = self.string(what, v) else {
            return (Command::Missing, self.at(k.span()));
        };
        if s.value.trim().is_empty() {
            self.push(
                Diagnostic::at(
                    Code::EmptyArgv,
                    self.at(v.span()),
                    format!("`{what}` is empty"),
                )
                .label("empty command line"),
            );
        }
        (Command::Shell(s), self.at(k.span()))
    }

    /// Keys of what a process runs with and waits for; false for other keys.
    fn setup_key(&mut self, p: &mut Process, prefix: &str, k: &Key<'_>, v: &Value<'_>) -> bool {
        let q = |key: &'static str| Dotted(prefix, key);
        match key_str(k) {
            "cwd" => p.cwd = self.string(&q("cwd"), v),
            "env" => {
                if let Some(t) = self.table(&q("env"), v) {
                    p.env = self.env(&q("env"), t);
                }
            }
            "start" => {
                if let Some(i) = self.choice(&q("start"), v, &["fork", "spawn"]) {
                    p.start = [StartMethod::Fork, StartMethod::Spawn][i];
                }
            }
            "after" => p.after = self.after(&q("after"), v),
            "parent" => p.parent = self.string(&q("parent"), v),
            "daemon" => {
                if let Some(b) = self.boolean(&q("daemon"), v) {
                    p.daemon = Sp::new(b, self.at(v.span()));
                }
            }
            "replicas" => {
                if let Some(r) = self.int(&q("replicas"), v, Code::BadReplicas, 1, MAX_REPLICAS) {
                    p.replicas = Sp::new(r as u32, self.at(v.span()));
                }
            }
            "ready" => p.ready = self.ready(&q("ready"), v),
            "locks" => {
                let help = || {
                    Some(format!(
                        "write locks = [\"{}\"]",
                        match v.get_ref() {
                            DeValue::String(s) => s.as_ref(),
                            _ => "db",
                        }
                    ))
                };
                p.locks = self.names(&q("locks"), v, &help);
            }
            "for_each" => p.for_each = self.for_each(&q("for_each"), v),
            "health" => p.health = self.health(&q("health"), v),
            "slurm" => p.slurm = self.process_slurm(&p.name.value, v),
            _ => return false,
        }
        true
    }

    /// Keys of how a process ends, fails and is retried; false for other keys.
    fn lifecycle_key(&mut self, p: &mut Process, prefix: &str, k: &Key<'_>, v: &Value<'_>) -> bool {
        let q = |key: &'static str| Dotted(prefix, key);
        match key_str(k) {
            "timeout" => p.timeout = self.duration(&q("timeout"), v, false),
            "retries" => {
                if let Some(r) = self.int(&q("retries"), v, Code::BadNumber, 0, MAX_COUNT) {
                    p.retries = r as u32;
                }
            }
            "retry_delay" => {
                if let Some(d) = self.duration(&q("retry_delay"), v, true) {
                    p.retry_delay = d;
                }
            }
            "restart" => {
                if let Some(i) = self.choice(&q("restart"), v, &["never", "on-failure", "always"]) {
                    p.restart = [Restart::Never, Restart::OnFailure, Restart::Always][i];
                }
            }
            "max_restarts" => {
                if let Some(r) = self.int(&q("max_restarts"), v, Code::BadNumber, 0, MAX_COUNT) {
                    p.max_restarts = r as u32;
                }
            }
            "stop_signal" => {
                if let Some(sig) = self.stop_signal(&q("stop_signal"), v) {
                    p.stop_signal = sig;
                }
            }
            "success_codes" => {
                if let Some(codes) = self.success_codes(&q("success_codes"), v) {
                    p.success_codes = codes;
                }
            }
            "always" => {
                if let Some(b) = self.boolean(&q("always"), v) {
                    p.always = Sp::new(b, self.at(v.span()));
                }
            }
            _ => return false,
        }
        true
    }

    /// Keys of a process's standard streams and terminal; false for other keys.
    fn io_key(&mut self, p: &mut Process, prefix: &str, k: &Key<'_>, v: &Value<'_>) -> bool {
        let q = |key: &'static str| Dotted(prefix, key);
        match key_str(k) {
            "stdin" => {
                if let Some(i) = self.choice(&q("stdin"), v, &["null", "inherit"]) {
                    p.stdin = [Stdin::Null, Stdin::Inherit][i];
                }
            }
            "stdout" => {
                if let Some((o, span)) = self.output(&q("stdout"), v) {
                    p.output_spans[0] = span;
                    p.stdout = o;
                }
            }
            "stderr" => {
                if let Some((o, span)) = self.output(&q("stderr"), v) {
                    p.output_spans[1] = span;
                    p.stderr = o;
                }
            }
            "tty" => {
                if let Some(b) = self.boolean(&q("tty"), v) {
                    p.tty = Sp::new(b, self.at(v.span()));
                }
            }
            _ => return false,
        }
        true
    }

    /// `stop_signal`: a signal that can stop a process.
    fn stop_signal(&mut self, what: &Dotted<'_>, v: &Value<'_>) -> Option<Signal> {
        let s = self.string(what, v)?;
        match parse_signal(&s.value) {
            Ok(sig) => Some(sig),
            Err(suggestion) => {
                self.push(
                    Diagnostic::at(
                        Code::BadSignal,
                        s.span,
                        if is_signal_name(&s.value) {
                            format!(
                                "`{}` pauses or resumes a process; it cannot stop one",
                                s.value
                            )
                        } else {
                            format!("`{}` is not a signal", s.value)
                        },
                    )
                    .label("unusable signal")
                    .help(match suggestion {
                        Some(s) => format!("did you mean \"{s}\"?"),
                        None => {
                            "use a signal name such as \"SIGTERM\", \"SIGINT\" or \"SIGHUP\"".into()
                        }
                    }),
                );
                None
            }
        }
    }

    /// Reports a key a process does not have; true when it looks like a
    /// misspelt `cmd`/`shell`, so that it is not reported again as a missing command.
    fn unknown_process_key(&mut self, k: &Key<'_>, v: &Value<'_>, process: &str) -> bool {
        let other = key_str(k);
        let typo_command = did_you_mean(other, ["cmd", "shell"]).is_some()
            || matches!(alias(other, KEYS_PROCESS), Some("cmd" | "shell"));
        if matches!(v.get_ref(), DeValue::Table(_)) && alias(other, PROCESS_TABLES).is_none() {
            self.unknown_table(k, process);
        } else if let (Some("cmd"), DeValue::String(line)) =
            (alias(other, KEYS_PROCESS), v.get_ref())
        {
            // compose's `command: make all` is a command line: jobgraph's `shell`.
            self.push(
                Diagnostic::at(
                    Code::UnknownKey,
                    self.at(k.span()),
                    format!("unknown key `{other}` in a process"),
                )
                .label("unknown key")
                .help(format!(
                    "did you mean `cmd`? jobgraph's `cmd` is an argv array, cmd = [\"program\", \"arg\"]; for a command line write shell = \"{line}\""
                )),
            );
        } else {
            self.unknown_key(k, KEYS_PROCESS, "a process");
        }
        typo_command
    }

    /// The process's command from `cmd` and `shell`: exactly one of them.
    fn command(
        &mut self,
        name: &Sp<String>,
        cmd: Option<(Command, Span)>,
        shell: Option<(Command, Span)>,
        typo_command: bool,
    ) -> Command {
        let n = &name.value;
        match (cmd, shell) {
            (Some((c, _)), None) | (None, Some((c, _))) => c,
            (Some((c, cmd_span)), Some((_, shell_span))) => {
                self.push(
                    Diagnostic::at(Code::CommandConflict, shell_span, format!("process `{n}` has both `cmd` and `shell`"))
                        .label("second command")
                        .related(cmd_span, "first command")
                        .help("keep `cmd` to exec a program directly, or `shell` to run a command line through /bin/sh"),
                );
                c
            }
            (None, None) if typo_command => Command::Missing,
            (None, None) => {
                self.push(
                    Diagnostic::at(
                        Code::CommandMissing,
                        name.span.clone(),
                        format!("process `{n}` has no command"),
                    )
                    .label("no `cmd` or `shell`")
                    .help("add cmd = [\"program\", \"arg\"] or shell = \"a | command line\""),
                );
                Command::Missing
            }
        }
    }

    fn after(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Vec<After> {
        match v.get_ref() {
            DeValue::Table(t) => {
                let mut out = Vec::with_capacity(t.len());
                for (k, cond) in t.iter() {
                    let condition =
                        match self.choice(&format!("{what}.{}", key_str(k)), cond, CONDITIONS) {
                            Some(i) => [
                                Condition::Success,
                                Condition::Exit,
                                Condition::Ready,
                                Condition::Start,
                            ][i],
                            None => continue,
                        };
                    out.push(After {
                        process: Sp::new(key_str(k).to_string(), self.at(k.span())),
                        condition,
                    });
                }
                out
            }
            _ => {
                let help = || match v.get_ref() {
                    DeValue::String(s) => Some(format!("write after = [\"{s}\"]")),
                    _ => Some("write after = [\"name\"] or after = { name = \"ready\" }".into()),
                };
                let names = self.names(what, v, &help);
                names
                    .into_iter()
                    .map(|process| After {
                        process,
                        condition: Condition::Success,
                    })
                    .collect()
            }
        }
    }

    fn success_codes(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Vec<i32>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                what,
                "an array of integers",
                v,
                Some(format!("write {} = [0, 1]", "success_codes")),
            );
            return None;
        };
        if items.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::BadNumber,
                    self.at(v.span()),
                    format!("`{what}` is empty, so the process could never succeed"),
                )
                .label("empty")
                .help("list at least one exit code, e.g. [0]"),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.int(&format!("{what}[{i}]"), item, Code::BadNumber, 0, 255)? as i32);
        }
        Some(out)
    }

    /// `stdout` / `stderr`, with the span of a file's path (for `output-clash`).
    fn output(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
    ) -> Option<(Output, Option<Span>)> {
        match v.get_ref() {
            DeValue::Table(t) => {
                let mut path = None;
                let mut reported = false;
                for (k, fv) in t.iter() {
                    match key_str(k) {
                        "file" => {
                            path = self.string(&format!("{what}.file"), fv);
                            reported |= path.is_none();
                        }
                        _ => self.unknown_key(k, &["file"], &format!("`{what}`")),
                    }
                }
                match path {
                    Some(p) if !p.value.is_empty() => Some((Output::File(p.value), Some(p.span))),
                    None if reported => None,
                    _ => {
                        self.push(
                            Diagnostic::at(
                                Code::WrongType,
                                self.at(v.span()),
                                format!("`{what}` as a table needs a non-empty `file`"),
                            )
                            .help(format!(
                                "write {} = {{ file = \"out.log\" }}",
                                what.to_string().rsplit('.').next().unwrap_or("stdout")
                            )),
                        );
                        None
                    }
                }
            }
            DeValue::String(text) if !matches!(text.as_ref(), "log" | "null" | "inherit") => {
                let text = text.to_string();
                if !self.no_nul(what, &text, v.span()) {
                    return None;
                }
                let key = last_key(what);
                let file = format!("{key} = {{ file = \"{text}\" }}");
                let help = match did_you_mean(&text, ["log", "null", "inherit"]) {
                    _ if text.contains(['.', '/']) => format!("to write to a file, write {file}"),
                    Some(c) => format!("did you mean \"{c}\"? (a file is written {file})"),
                    None => format!(
                        "write \"log\", \"null\" or \"inherit\"; to write to a file, write {file}"
                    ),
                };
                self.push(
                    Diagnostic::at(
                        Code::UnknownValue,
                        self.at(v.span()),
                        format!(
                            "`{what}` cannot be \"{text}\"; it is one of \"log\", \"null\", \"inherit\" or {{ file = \"path\" }}"
                        ),
                    )
                    .label("unknown value")
                    .help(help),
                );
                None
            }
            _ => {
                let i = self.choice(what, v, &["log", "null", "inherit"])?;
                Some((
                    [Output::Log, Output::Null, Output::Inherit][i].clone(),
                    None,
                ))
            }
        }
    }

    /// `for_each = ["a", "b"]` or `for_each = { glob = "data/*.csv" }`.
    fn for_each(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<ForEach> {
        match v.get_ref() {
            DeValue::Array(_) => {
                let items = self.strings(what, v, &|| None)?;
                if items.is_empty() {
                    self.push(
                        Diagnostic::at(
                            Code::BadForEach,
                            self.at(v.span()),
                            format!("`{what}` is empty"),
                        )
                        .label("no items")
                        .help("list at least one item, or drop for_each"),
                    );
                    return None;
                }
                Some(ForEach::List(items))
            }
            DeValue::Table(t) => {
                let mut glob = None;
                for (k, gv) in t.iter() {
                    match key_str(k) {
                        "glob" => glob = self.string(&format!("{what}.glob"), gv),
                        _ => self.unknown_key(k, &["glob"], "`for_each`"),
                    }
                }
                match glob {
                    Some(g) if !g.value.is_empty() => Some(ForEach::Glob(g)),
                    Some(_) | None => {
                        self.push(
                            Diagnostic::at(
                                Code::BadForEach,
                                self.at(v.span()),
                                format!("`{what}` has no glob pattern"),
                            )
                            .help("write for_each = { glob = \"data/*.csv\" }"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(what, "an array of strings or { glob = \"...\" }", v, None);
                None
            }
        }
    }
}
