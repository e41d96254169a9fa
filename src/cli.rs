//! The command line: parse arguments, call the library, print, pick the exit code.

use crate::check::check_file_with;
use crate::plan::Plan;
use crate::render::{render_dot, render_mermaid};
use crate::report::{render_github, render_human, render_json, HumanStyle, Outcome};
use crate::spec::LoadOptions;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod run_setup;
use run_setup::{cli_max_parallel_fits, console_style, dry_run, run_options};

/// Exit code: everything valid / succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: invalid file (validate, plan, graph) or a failed process (run).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error, or an invalid file given to `run`.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "jobgraph",
    version,
    about = "Run a declared graph of OS processes: pipes, queues, locks, parents and daemons"
)]
#[command(propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate, then launch, supervise and join the graph.
    Run(RunArgs),
    /// Run every static check; never starts a process.
    Validate {
        /// Job files to check; `-` reads stdin; none: the nearest jobgraph.toml.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Human)]
        format: ValidateFormat,
        /// Override a var of the file's [vars] (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::spec::parse_set)]
        set: Vec<(String, String)>,
    },
    /// Show the launch order as stages, with why each process waits.
    Plan {
        /// Job file; `-` reads stdin; left out: the nearest jobgraph.toml.
        file: Option<PathBuf>,
        /// Plan only these processes plus what they need (the same as --only).
        #[arg(value_name = "TARGET", add = process_completer())]
        targets: Vec<String>,
        /// Plan only these processes plus what they need (repeat, or separate with commas).
        #[arg(long, value_name = "NAME", value_delimiter = ',', add = process_completer())]
        only: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
        /// Override a var of the file's [vars] (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::spec::parse_set)]
        set: Vec<(String, String)>,
    },
    /// Draw the graph for Graphviz or Mermaid.
    Graph {
        /// Job file; `-` reads stdin; left out: the nearest jobgraph.toml.
        file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Override a var of the file's [vars] (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::spec::parse_set)]
        set: Vec<(String, String)>,
    },
    /// Print the JSON Schema of the job-file format.
    Schema,
    /// The watchdog a run starts to clean up if the engine dies (internal).
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The run's marker.
        marker: String,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Job file; `-` reads stdin; left out (or not a file): the nearest
    /// jobgraph.toml, and every positional is a target.
    file: Option<PathBuf>,
    /// Run only these processes plus what they need (the same as --only).
    #[arg(value_name = "TARGET", add = process_completer())]
    targets: Vec<String>,
    /// Run only these processes plus what they need (repeat, or separate with commas).
    #[arg(long, value_name = "NAME", value_delimiter = ',', add = process_completer())]
    only: Vec<String>,
    /// Run exactly these whole stream groups, their dependencies taken as
    /// met: the nested run of a Slurm group unit (see docs/slurm.md).
    #[arg(long, value_name = "NAME", value_delimiter = ',', hide = true)]
    members: Vec<String>,
    /// Keep going after a failure: run everything that does not depend on it.
    #[arg(long)]
    keep_going: bool,
    /// Processes running at once (overrides [graph] max_parallel).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
    /// Write NDJSON events to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    events: Option<String>,
    /// One log file per process in DIR.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Only the summary and errors.
    #[arg(long)]
    quiet: bool,
    /// Skip what ended ok in the last run, if its definition is unchanged and nothing it needs runs again.
    #[arg(long)]
    resume: bool,
    /// The run's journal (default: .jobgraph/GRAPH.journal beside the file).
    #[arg(long, value_name = "PATH")]
    state: Option<std::path::PathBuf>,
    /// Show the plan and stop (same as `jobgraph plan`).
    #[arg(long)]
    dry_run: bool,
    /// Override a var of the file's [vars] (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::spec::parse_set)]
    set: Vec<(String, String)>,
    /// Where units run: this machine, or Slurm (job steps inside an allocation,
    /// else sbatch jobs; see docs/slurm.md). Default: $JOBGRAPH_EXECUTOR, else the
    /// file's `[graph] executor`, else local.
    #[arg(long, value_name = "EXECUTOR")]
    executor: Option<ExecutorKind>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ExecutorKind {
    /// Processes on this machine.
    Local,
    /// Slurm job steps or batch jobs.
    Slurm,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ValidateFormat {
    /// Source snippets with labels and help, on stderr.
    Human,
    /// One JSON document on stdout.
    Json,
    /// GitHub Actions workflow commands on stdout.
    Github,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PlanFormat {
    /// Text.
    Human,
    /// JSON.
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Completes process names from the job file named on the command line being
/// completed (dynamic completion: `source <(COMPLETE=bash jobgraph)`).
fn process_completer() -> clap_complete::engine::ArgValueCompleter {
    clap_complete::engine::ArgValueCompleter::new(|current: &std::ffi::OsStr| {
        let current = current.to_string_lossy();
        // The words being completed follow `--` in this process's arguments.
        let file = std::env::args_os()
            .skip(1)
            .map(PathBuf::from)
            .find(|a| a.extension().is_some_and(|e| e == "toml") && a.is_file())
            .or_else(nearest_default);
        let Some(file) = file else {
            return Vec::new();
        };
        let Ok(source) = crate::source::SourceFile::load(&file) else {
            return Vec::new();
        };
        let (source, _) = crate::spec::load_includes(source);
        let (Some(job), _) = crate::spec::decode(&source) else {
            return Vec::new();
        };
        job.processes
            .iter()
            .map(|p| p.name.value.as_str())
            .filter(|n| n.starts_with(current.as_ref()))
            .map(clap_complete::engine::CompletionCandidate::new)
            .collect()
    })
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // With COMPLETE=SHELL set, print completions (or the registration) and exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command)
        .bin("jobgraph")
        .complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage text to stdout (`--help`) or the error to stderr.
            stdout_result(e.print());
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = match cli.command {
        Cmd::Validate {
            mut files,
            format,
            set,
        } => {
            if files.is_empty() {
                match resolve_file(None, &mut Vec::new()) {
                    Ok(f) => files.push(f),
                    Err(code) => return ExitCode::from(code),
                }
            }
            validate(&files, format, &load_options(set))
        }
        Cmd::Plan {
            file,
            mut targets,
            mut only,
            format,
            set,
        } => {
            let file = match resolve_file(file, &mut targets) {
                Ok(f) => f,
                Err(code) => return ExitCode::from(code),
            };
            only.extend(targets);
            plan(&file, &only, format, &load_options(set))
        }
        Cmd::Graph { file, format, set } => match resolve_file(file, &mut Vec::new()) {
            Ok(file) => graph(&file, format, &load_options(set)),
            Err(code) => code,
        },
        Cmd::Schema => {
            print(&crate::schema::schema_text());
            EXIT_OK
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: a write error is then reported, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "jobgraph", &mut script);
            print(&String::from_utf8_lossy(&script));
            EXIT_OK
        }
        Cmd::Run(mut args) => {
            let mut targets = std::mem::take(&mut args.targets);
            let file = match resolve_file(args.file.take(), &mut targets) {
                Ok(f) => f,
                Err(code) => return ExitCode::from(code),
            };
            args.only.extend(targets);
            // Not while a file is read from a terminal: Ctrl-C must stop that.
            if file != Path::new("-") {
                crate::runtime::contain::hold_signals();
            }
            run(&file, &args)
        }
        Cmd::Watchdog { marker } => crate::runtime::watchdog::main(&marker) as u8,
    };
    let lost = STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    ExitCode::from(match lost {
        Some(e) => {
            eprint(&format!("error: cannot write to standard output: {e}\n"));
            code.max(EXIT_USAGE)
        }
        None => code,
    })
}

fn human_style() -> HumanStyle {
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    HumanStyle { color, width: 100 }
}

/// The first error writing standard output (a full disk, a broken device):
/// the command's output is lost, so it must not exit as if all went well.
static STDOUT_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(s.as_bytes()).and_then(|()| out.flush());
    stdout_result(written);
}

/// Keeps the first error of a write to stdout; a closed reader (`| head`)
/// is the reader's choice, not an error.
fn stdout_result(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut slot = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Diagnostics and notes. If stderr itself cannot be written there is
/// nowhere left to say so; the exit code still tells what happened.
fn eprint(s: &str) {
    if !crate::report::writer::write_stderr(s) {
        // Nothing to do: this is the channel errors would be reported on.
    }
}

fn load_options(set: Vec<(String, String)>) -> LoadOptions {
    LoadOptions { set }
}

/// A `--set` of a var the file does not declare: a usage error (exit 2).
fn bad_override(o: &Outcome) -> bool {
    matches!(o, Outcome::Checked(c) if c.diagnostics.iter().any(|d| d.code == crate::Code::UnknownVar && d.span.is_none()))
}

/// The name diagnostics give the file read from stdin (`-`).
pub const STDIN_NAME: &str = "<stdin>";

/// The job file of a command: FILE as given; else the nearest `jobgraph.toml`
/// in the current directory or a parent, announced on stderr. A FILE that is
/// not a file (no such path, no `/`, no `.toml`) while a `jobgraph.toml` is
/// found is taken as the first target: `jobgraph run build` runs `build`.
fn resolve_file(file: Option<PathBuf>, targets: &mut Vec<String>) -> Result<PathBuf, u8> {
    if let Some(f) = &file {
        let s = f.to_string_lossy();
        let path_like = s == "-" || s.contains('/') || s.ends_with(".toml") || f.exists();
        if path_like {
            return Ok(f.clone());
        }
    }
    let found = nearest_default();
    match (found, file) {
        (Some(found), first) => {
            if let Some(first) = first {
                targets.insert(0, first.to_string_lossy().into_owned());
            }
            eprint(&format!("jobgraph: using {}\n", found.display()));
            Ok(found)
        }
        (None, Some(f)) => Ok(f),
        (None, None) => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            eprint(&format!(
                "error: no FILE given, and no jobgraph.toml in {} or any parent directory\n",
                cwd.display()
            ));
            Err(EXIT_USAGE)
        }
    }
}

/// `jobgraph.toml` in the current directory or the nearest parent that has one.
fn nearest_default() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join("jobgraph.toml"))
        .find(|p| p.is_file())
}

/// Reads the job file from stdin, with the limits of a file on disk.
fn read_stdin() -> Result<crate::source::SourceFile, crate::source::LoadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = crate::source::MAX_FILE_BYTES;
    let name = PathBuf::from(STDIN_NAME);
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::source::LoadError::Io(name.clone(), e))?;
    if bytes.len() as u64 > limit {
        return Err(crate::source::LoadError::TooLarge(name, bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map(|text| crate::source::SourceFile::new(STDIN_NAME, text))
        .map_err(|e| {
            let good = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
            let (line, col) = crate::source::SourceFile::new(STDIN_NAME, prefix).line_col(good);
            crate::source::LoadError::NotUtf8(name, line, col)
        })
}

fn outcome(path: &Path, opts: &LoadOptions) -> Outcome {
    if path.as_os_str() == "-" {
        return match read_stdin() {
            Ok(source) => Outcome::Checked(Box::new(crate::check::check_source_with(source, opts))),
            Err(e) => Outcome::Unreadable(PathBuf::from(STDIN_NAME), e),
        };
    }
    match check_file_with(path, opts) {
        Ok(c) => Outcome::Checked(Box::new(c)),
        Err(e) => Outcome::Unreadable(path.to_path_buf(), e),
    }
}

fn validate(files: &[PathBuf], format: ValidateFormat, opts: &LoadOptions) -> u8 {
    let outcomes: Vec<Outcome> = files.iter().map(|f| outcome(f, opts)).collect();
    match format {
        ValidateFormat::Human => {
            let style = human_style();
            for o in &outcomes {
                eprint(&render_human(o, style));
            }
        }
        ValidateFormat::Json => print(&render_json(&outcomes)),
        ValidateFormat::Github => print(&render_github(&outcomes)),
    }
    let code = if outcomes.iter().any(bad_override) {
        EXIT_USAGE
    } else if outcomes.iter().all(Outcome::is_valid) {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    // The process ends here: leave freeing large graphs to the OS.
    std::mem::forget(outcomes);
    code
}

/// Checks one file for plan/graph/run; prints diagnostics when there are
/// any. The error is the exit code for an invalid file (`invalid`), or
/// [`EXIT_USAGE`] for a `--set` of an unknown var.
fn checked_graph(path: &Path, opts: &LoadOptions, invalid: u8) -> Result<crate::graph::Graph, u8> {
    checked_graph_and_files(path, opts, invalid).map(|(g, _)| g)
}

/// The graph, and the job files it was read from (the main file, then the
/// included ones).
fn checked_graph_and_files(
    path: &Path,
    opts: &LoadOptions,
    invalid: u8,
) -> Result<(crate::graph::Graph, Vec<std::path::PathBuf>), u8> {
    let o = outcome(path, opts);
    let quiet_ok = matches!(&o, Outcome::Checked(c) if c.diagnostics.is_empty());
    if !quiet_ok {
        eprint(&render_human(&o, human_style()));
    }
    let code = if bad_override(&o) {
        EXIT_USAGE
    } else {
        invalid
    };
    match o {
        Outcome::Checked(c) => {
            let files = c.source.parts().iter().map(|p| p.path.clone()).collect();
            c.graph.map(|g| (g, files)).ok_or(code)
        }
        Outcome::Unreadable(..) => Err(code),
    }
}

fn plan(path: &Path, only: &[String], format: PlanFormat, opts: &LoadOptions) -> u8 {
    let g = match checked_graph(path, opts, EXIT_FAILED) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let included = match g.only(only) {
        Ok(inc) => inc,
        Err(message) => {
            eprint(&format!("error: {}: {message}\n", path.display()));
            return EXIT_USAGE;
        }
    };
    let plan = Plan::of(&g, &included);
    match format {
        PlanFormat::Human => print(&plan.render()),
        PlanFormat::Json => {
            // Streamed: replicas are written name by name, never all held at once.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = serde_json::to_writer_pretty(&mut out, &plan)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            stdout_result(written);
        }
    }
    // The process ends here: leave freeing a large graph to the OS.
    std::mem::forget(plan);
    std::mem::forget(g);
    EXIT_OK
}

fn graph(path: &Path, format: GraphFormat, opts: &LoadOptions) -> u8 {
    let g = match checked_graph(path, opts, EXIT_FAILED) {
        Ok(g) => g,
        Err(code) => return code,
    };
    print(&match format {
        GraphFormat::Dot => render_dot(&g),
        GraphFormat::Mermaid => render_mermaid(&g),
    });
    EXIT_OK
}

fn run(file: &Path, args: &RunArgs) -> u8 {
    let opts = load_options(args.set.clone());
    let Ok((g, files)) = checked_graph_and_files(file, &opts, EXIT_USAGE) else {
        return EXIT_USAGE;
    };
    let included = match args.members.is_empty() {
        true => g.only(&args.only),
        false => g.exactly(&args.members),
    };
    let included = match included {
        Ok(inc) => inc,
        Err(message) => {
            eprint(&format!("error: {}: {message}\n", file.display()));
            return EXIT_USAGE;
        }
    };
    if !cli_max_parallel_fits(file, &g, args) {
        return EXIT_USAGE;
    }
    // Checked before --dry-run, so that a dry run refuses what a run would.
    let Some(executor) = executor_kind(args, &g) else {
        return EXIT_USAGE;
    };
    if let Err(message) = crate::runtime::contain::check_env() {
        eprint(&format!("error: {message}\n"));
        return EXIT_USAGE;
    }
    let base = crate::source::SourceFile::new(file, String::new()).base_dir();
    let opts = run_options(args, &g, &base);
    let outputs = crate::output_paths::Outputs {
        events: args.events.as_deref().filter(|e| *e != "-").map(Path::new),
        state: opts.journal.as_deref().unwrap_or(Path::new("")),
        log_dir: args.log_dir.as_deref(),
        process_files: crate::output_paths::ProcessFile::of(&g, &base),
    };
    if let Err(message) = crate::output_paths::check(&files, &outputs) {
        eprint(&format!("error: {message}\n"));
        return EXIT_USAGE;
    }
    // Slurm's settings from the environment are checked without asking Slurm.
    if executor == ExecutorKind::Slurm {
        if let Err(message) = crate::runtime::slurm::Config::new(&g.file, &base) {
            eprint(&format!(
                "error: {message}\n  help: to run this graph on this machine instead, pass --executor local\n"
            ));
            return EXIT_USAGE;
        }
    }
    if args.dry_run {
        return dry_run(&g, &included, args, &base, &opts);
    }
    let style = console_style(args);
    // Still single-threaded: the only safe moment to fork into a namespace.
    let opts = match crate::runtime::contain::enter() {
        crate::runtime::contain::Entered::Exited(code) => return code,
        crate::runtime::contain::Entered::Engine(containment) => crate::runtime::RunOptions {
            containment,
            ..opts
        },
    };
    let Some(exec) = make_executor(executor, &g, &base, file, &args.set) else {
        return EXIT_USAGE;
    };
    let reporter =
        crate::report::live::LiveReporter::new(style, args.log_dir.clone(), args.events.clone());
    let result = crate::runtime::run_with(&g, &base, &opts, exec, Box::new(reporter));
    finish_run(result, style.color_stderr)
}

/// `--executor`, else `JOBGRAPH_EXECUTOR`, else the file's `executor`;
/// `None` after reporting a bad variable.
fn executor_kind(args: &RunArgs, g: &crate::graph::Graph) -> Option<ExecutorKind> {
    match (
        args.executor,
        std::env::var("JOBGRAPH_EXECUTOR").ok().as_deref(),
    ) {
        (Some(e), _) => Some(e),
        (None, None | Some("")) => match g.file.graph.executor.as_ref().map(|e| e.value) {
            Some(crate::spec::ExecutorKind::Slurm) => Some(ExecutorKind::Slurm),
            None | Some(crate::spec::ExecutorKind::Local) => Some(ExecutorKind::Local),
        },
        (None, Some("local")) => Some(ExecutorKind::Local),
        (None, Some("slurm")) => Some(ExecutorKind::Slurm),
        (None, Some(other)) => {
            eprint(&format!(
                "error: JOBGRAPH_EXECUTOR={other}: expected `local` or `slurm`\n"
            ));
            None
        }
    }
}

/// `None` after reporting why Slurm cannot be used.
fn make_executor(
    kind: ExecutorKind,
    g: &crate::graph::Graph,
    base: &Path,
    file: &Path,
    sets: &[(String, String)],
) -> Option<Box<dyn crate::runtime::executor::Executor>> {
    match kind {
        ExecutorKind::Local => Some(Box::new(crate::runtime::executor::Local::default())),
        ExecutorKind::Slurm => match crate::runtime::slurm::Config::new(&g.file, base)
            .map(|mut c| {
                // Group units run the file again, on a node (not one read from stdin).
                c.job_file = (file != Path::new("-"))
                    .then(|| std::path::absolute(file).ok())
                    .flatten();
                c.sets = sets.to_vec();
                c
            })
            .and_then(crate::runtime::slurm::Slurm::new)
        {
            Ok(s) => Some(Box::new(s)),
            Err(message) => {
                eprint(&format!(
                    "error: {message}\n  help: to run this graph on this machine instead, pass --executor local\n"
                ));
                None
            }
        },
    }
}

fn finish_run(
    result: Result<crate::runtime::RunOutcome, crate::runtime::RunError>,
    color_stderr: bool,
) -> u8 {
    match result {
        Ok(outcome) => {
            let summary = crate::report::live::render_outcome(
                &outcome.rows,
                &outcome.queues,
                outcome.elapsed,
                outcome.interrupted,
                color_stderr,
            );
            // A summary that cannot be written is output lost: the run does
            // not exit 0 (a signal's code stands, whatever else happened).
            let written = crate::report::writer::write_stderr(&format!("\n{summary}"));
            match outcome.exit_code {
                0 if !written => 1,
                code => code,
            }
        }
        Err(message) => {
            eprint(&format!("error: {message}\n"));
            EXIT_USAGE
        }
    }
}
