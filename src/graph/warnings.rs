//! Warnings: things that are legal but probably not what was meant.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;
use crate::spec::{Command, JobFile, Process};
use rustc_hash::FxHashMap as HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub(super) fn check(
    file: &JobFile,
    source: &SourceFile,
    locks: &[Vec<usize>],
    diags: &mut Vec<Diagnostic>,
) {
    let mut used = vec![false; file.locks.len()];
    for l in locks.iter().flatten() {
        used[*l] = true;
    }
    for (lock, used) in file.locks.iter().zip(used) {
        if !used {
            diags.push(
                Diagnostic::at(
                    Code::UnusedLock,
                    lock.name.span.clone(),
                    format!("lock `{}` is not taken by any process", lock.name.value),
                )
                .label("unused")
                .help(format!(
                    "add locks = [\"{}\"] to the processes that share it, or remove it",
                    lock.name.value
                )),
            );
        }
    }
    if !file.processes.is_empty() && file.processes.iter().all(|p| p.daemon.value) {
        diags.push(
            Diagnostic::at(Code::DaemonsOnly, file.processes[0].daemon.span.clone(), "every process is a daemon, so the run ends as soon as it starts")
                .label("daemon")
                .help("daemons are stopped once every non-daemon process finished; make the main process a non-daemon"),
        );
    }
    for p in &file.processes {
        shell_syntax_in_cmd(p, diags);
        buffered_log_probe(file, p, diags);
        slurm_time_before_timeout(file, p, diags);
    }
    let mut finder = ProgramFinder::new(source.base_dir(), file);
    let by_name: HashMap<&str, usize> = file
        .processes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.value.as_str(), i))
        .collect();
    let lineage = Lineage::new(file, &by_name);
    for (i, p) in file.processes.iter().enumerate() {
        let Command::Argv(argv) = &p.command else {
            continue;
        };
        let Some(program) = argv.first() else {
            continue;
        };
        // Per-instance programs (`{replica}`, a for_each `{{ item }}`) are not looked up.
        if program.value.is_empty()
            || program.value.contains("{replica}")
            || program.value.contains("{{ item }}")
        {
            continue;
        }
        if let Some(problem) = finder.problem(&lineage, file, i, &program.value) {
            diags.push(
                Diagnostic::at(Code::CommandNotFound, program.span.clone(), format!("`{}` {problem}", program.value))
                    .label("program")
                    .help(if program.value.contains('/') {
                        "relative paths are resolved against the process's cwd (by default, the job file's directory)".to_string()
                    } else {
                        "install it, give its full path, or add its directory to PATH in [env]".to_string()
                    }),
            );
        }
    }
}

/// Looks programs up the way exec would, caching answers: a generated graph
/// may run the same program 100,000 times.
struct ProgramFinder {
    base: PathBuf,
    graph_path: Option<String>,
    engine_path: String,
    cache: HashMap<(String, String, PathBuf), Option<String>>,
    /// The common case — no own PATH, no cwd — keyed by program alone.
    plain: HashMap<String, Option<String>>,
}

impl ProgramFinder {
    fn new(base: PathBuf, file: &JobFile) -> Self {
        let graph_path = file
            .env
            .iter()
            .find(|(k, _)| k.value == "PATH")
            .map(|(_, v)| v.value.clone());
        ProgramFinder {
            base,
            graph_path,
            engine_path: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            cache: HashMap::default(),
            plain: HashMap::default(),
        }
    }

    /// Why `program` would not start, or `None` if it looks fine.
    fn problem(
        &mut self,
        lineage: &Lineage,
        file: &JobFile,
        i: usize,
        program: &str,
    ) -> Option<String> {
        let p = &file.processes[i];
        let plain =
            p.cwd.is_none() && p.parent.is_none() && !p.env.iter().any(|(k, _)| k.value == "PATH");
        if plain {
            if let Some(answer) = self.plain.get(program) {
                return answer.clone();
            }
        }
        let answer = self.lookup(lineage, file, i, program);
        if plain {
            self.plain.insert(program.to_string(), answer.clone());
        }
        answer
    }

    fn lookup(
        &mut self,
        lineage: &Lineage,
        file: &JobFile,
        i: usize,
        program: &str,
    ) -> Option<String> {
        let p = &file.processes[i];
        let own_path = p
            .env
            .iter()
            .find(|(k, _)| k.value == "PATH")
            .map(|(_, v)| v.value.clone());
        // Both start methods keep the engine's PATH (spawn passes PATH through).
        let search = own_path
            .or_else(|| self.graph_path.clone())
            .unwrap_or_else(|| self.engine_path.clone());
        // Like the runtime: own cwd, else (fork) the nearest ancestor's, else the file's directory.
        let (replica, from) = lineage.cwd(file, i);
        if replica {
            return None;
        }
        let cwd = match from.and_then(|a| file.processes[a].cwd.as_ref()) {
            Some(c) => self.base.join(&c.value),
            None => self.base.clone(),
        };
        let key = (program.to_string(), search.clone(), cwd.clone());
        if let Some(answer) = self.cache.get(&key) {
            return answer.clone();
        }
        let answer = if program.contains('/') {
            let path: PathBuf = cwd
                .join(program)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            executable_problem(&path)
        } else if search.split(':').any(|dir| {
            !dir.is_empty() && executable_problem(&Path::new(dir).join(program)).is_none()
        }) {
            None
        } else {
            Some("is not found on PATH".to_string())
        };
        self.cache.insert(key, answer.clone());
        answer
    }
}

/// Working directories down parent chains, as the runtime resolves them for
/// `fork`: the nearest `cwd` up the chain wins. Computed once per process, so
/// a 100,000-deep chain costs 100,000 steps, not 100,000².
struct Lineage {
    /// Per process, over itself and all its ancestors: whether a `cwd` on the
    /// way holds `{replica}`, and which process's `cwd` is nearest.
    up: Vec<(bool, Option<usize>)>,
}

impl Lineage {
    fn new(file: &JobFile, by_name: &HashMap<&str, usize>) -> Lineage {
        let n = file.processes.len();
        let parent: Vec<Option<usize>> = file
            .processes
            .iter()
            .map(|p| {
                p.parent
                    .as_ref()
                    .and_then(|x| by_name.get(x.value.as_str()).copied())
            })
            .collect();
        let own = |i: usize| {
            let c = file.processes[i].cwd.as_ref();
            (
                c.is_some_and(|c| c.value.contains("{replica}")),
                c.map(|_| i),
            )
        };
        // 0 = not yet, 1 = on the current walk (a parent cycle: reported elsewhere), 2 = done.
        let mut state = vec![0u8; n];
        let mut up = vec![(false, None); n];
        let mut walk = Vec::new();
        for start in 0..n {
            let mut cur = Some(start);
            while let Some(c) = cur.filter(|&c| state[c] == 0) {
                state[c] = 1;
                walk.push(c);
                cur = parent[c];
            }
            // `cur` is done (or on this walk: a cycle, treated as the top).
            let mut above = match cur {
                Some(c) if state[c] == 2 => up[c],
                _ => (false, None),
            };
            while let Some(c) = walk.pop() {
                let (replica, from) = own(c);
                above = (above.0 || replica, from.or(above.1));
                up[c] = above;
                state[c] = 2;
            }
        }
        Lineage { up }
    }

    /// For process `i`: whether its working directory depends on `{replica}`,
    /// and whose `cwd` it uses (`None`: the job file's directory).
    fn cwd(&self, file: &JobFile, i: usize) -> (bool, Option<usize>) {
        let p = &file.processes[i];
        if p.start == crate::spec::StartMethod::Fork {
            self.up[i]
        } else {
            let c = p.cwd.as_ref();
            (
                c.is_some_and(|c| c.value.contains("{replica}")),
                c.map(|_| i),
            )
        }
    }
}

fn executable_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(_) => Some(format!("does not exist ({})", path.display())),
        Ok(m) if m.is_dir() => Some("is a directory".to_string()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable".to_string()),
        Ok(_) => None,
    }
}

/// The file name of a program path: `/usr/bin/python3` -> `python3`.
fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Programs whose arguments are scripts with their own `$` syntax, or that
/// hand their arguments to a shell.
fn interprets_arguments(program: &str) -> bool {
    let b = basename(program);
    matches!(
        b,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "ksh"
            | "mksh"
            | "fish"
            | "busybox"
            | "awk"
            | "gawk"
            | "mawk"
            | "nawk"
            | "perl"
            | "sed"
            | "ruby"
            | "node"
            | "deno"
            | "jq"
            | "php"
            | "make"
            | "find"
            | "ssh"
            | "docker"
            | "podman"
            | "kubectl"
            | "watch"
            | "tclsh"
            | "expect"
    ) || b.starts_with("python")
}

/// Shell syntax in one argument: a `$NAME` / `${...}` / `$(...)` expansion,
/// or a whole-word operator.
fn shell_syntax(arg: &str) -> Option<&'static str> {
    if matches!(
        arg,
        "|" | "||" | "&&" | ";" | ">" | ">>" | "<" | "2>&1" | "&"
    ) {
        return Some("an operator");
    }
    let b = arg.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c != b'$' {
            continue;
        }
        match b.get(i + 1) {
            Some(b'{') | Some(b'(') => return Some("an expansion"),
            Some(&n) if n.is_ascii_alphabetic() || n == b'_' => return Some("a variable"),
            _ => {}
        }
    }
    None
}

fn shell_syntax_in_cmd(p: &Process, diags: &mut Vec<Diagnostic>) {
    let Command::Argv(argv) = &p.command else {
        return;
    };
    for (i, arg) in argv.iter().enumerate() {
        if interprets_arguments(&arg.value) {
            return;
        }
        if i == 0 {
            continue;
        }
        let Some(kind) = shell_syntax(&arg.value) else {
            continue;
        };
        let line: Vec<&str> = argv.iter().map(|a| a.value.as_str()).collect();
        let what = if kind == "an operator" {
            format!(
                "`{}` is passed to `{}` as an argument",
                arg.value, argv[0].value
            )
        } else {
            format!(
                "`{}` reaches `{}` as written: nothing expands it",
                arg.value, argv[0].value
            )
        };
        diags.push(
            Diagnostic::at(
                Code::ShellSyntaxInCmd,
                arg.span.clone(),
                format!("`cmd` is not run by a shell, so {what}"),
            )
            .label(format!("{kind}, not interpreted"))
            .help(format!(
                "to have /bin/sh interpret it, write shell = \"{}\"; or write the value itself into cmd",
                line.join(" ").replace('\\', "\\\\").replace('"', "\\\"")
            )),
        );
        return;
    }
}

/// A Python program whose stdout is a pipe block-buffers it, so a `log`
/// probe sees nothing until 8 KiB are written or the program exits.
fn buffered_log_probe(file: &JobFile, p: &Process, diags: &mut Vec<Diagnostic>) {
    let Some(ready) = &p.ready else {
        return;
    };
    if !matches!(ready.probe.value, crate::spec::Probe::Log(_)) {
        return;
    }
    let unbuffered_env = p
        .env
        .iter()
        .chain(file.env.iter())
        .any(|(k, v)| k.value == "PYTHONUNBUFFERED" && !v.value.is_empty());
    if unbuffered_env {
        return;
    }
    let (span, python) = match &p.command {
        Command::Argv(argv) => {
            let Some(program) = argv.first() else {
                return;
            };
            if !is_python(basename(&program.value)) {
                return;
            }
            let mut unbuffered = false;
            for a in &argv[1..] {
                let a = a.value.as_str();
                if !a.starts_with('-') || a.starts_with("--") {
                    break;
                }
                if a[1..].contains('u') {
                    unbuffered = true;
                }
                if a.contains(['c', 'm']) {
                    break;
                }
            }
            if unbuffered {
                return;
            }
            (program.span.clone(), program.value.clone())
        }
        Command::Shell(line) => {
            let v = &line.value;
            if v.contains("PYTHONUNBUFFERED") || v.contains("stdbuf") {
                return;
            }
            let words: Vec<&str> = v
                .split(|c: char| c.is_whitespace() || ";&|()".contains(c))
                .collect();
            let Some(at) = words.iter().position(|w| is_python(basename(w))) else {
                return;
            };
            if words[at + 1..]
                .iter()
                .take_while(|w| w.starts_with('-'))
                .any(|w| !w.starts_with("--") && w[1..].contains('u'))
            {
                return;
            }
            (line.span.clone(), words[at].to_string())
        }
        Command::Missing => return,
    };
    diags.push(
        Diagnostic::at(
            Code::BufferedLogProbe,
            span,
            format!(
                "`{}` has a `log` readiness probe, but `{python}` block-buffers its output when it is not a terminal, so the probe may never see the line",
                p.name.value
            ),
        )
        .label("Python without -u")
        .related(ready.probe.span.clone(), "watches the output")
        .help("run it with `python -u`, or set PYTHONUNBUFFERED = \"1\" in its env (or flush after printing)"),
    );
}

fn is_python(word: &str) -> bool {
    word.strip_prefix("python")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Slurm's `time` ends a unit with SIGKILL-like force and no retry; the
/// engine's `timeout` stops it with its stop signal and a grace. A `time`
/// that comes first makes the `timeout` dead text.
fn slurm_time_before_timeout(file: &JobFile, p: &Process, diags: &mut Vec<Diagnostic>) {
    let Some(timeout) = p.timeout else {
        return;
    };
    let own = p.slurm.as_ref().and_then(|s| s.time.as_ref());
    let Some(time) = own.or(file.slurm.defaults.time.as_ref()) else {
        return;
    };
    let needed = timeout + file.graph.shutdown_grace;
    if time.value > needed {
        return;
    }
    let whose = if own.is_some() {
        "its `slurm.time`"
    } else {
        "`[slurm] time`"
    };
    diags.push(
        Diagnostic::at(
            Code::SlurmTimeBeforeTimeout,
            time.span.clone(),
            format!(
                "on Slurm, process `{}` is killed by {whose} ({}) before its `timeout` ({}) and the grace ({}) are over",
                p.name.value,
                crate::spec::format_duration(time.value),
                crate::spec::format_duration(timeout),
                crate::spec::format_duration(file.graph.shutdown_grace),
            ),
        )
        .label("Slurm's limit")
        .help(format!(
            "Slurm's `time` is a backstop: make it longer than timeout + shutdown_grace, e.g. time = \"{}\", or leave it out (jobgraph then sets one with a margin)",
            crate::spec::format_duration(crate::spec::slurm::backstop(needed))
        )),
    );
}
