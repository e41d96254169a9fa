//! The command line: parse arguments, call the library, print, pick the exit code.

use crate::check::check_file;
use crate::plan::Plan;
use crate::render::{render_dot, render_mermaid};
use crate::report::{render_github, render_human, render_json, HumanStyle, Outcome};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        /// Job files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Human)]
        format: ValidateFormat,
    },
    /// Show the launch order as stages, with why each process waits.
    Plan {
        /// Job file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Draw the graph for Graphviz or Mermaid.
    Graph {
        /// Job file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
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
    /// Job file.
    file: PathBuf,
    /// Run only these processes plus what they need (repeat, or separate with commas).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
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
    /// Show the plan and stop (same as `jobgraph plan`).
    #[arg(long)]
    dry_run: bool,
    /// Where units run: this machine, or Slurm (job steps inside an allocation,
    /// else sbatch jobs; see docs/slurm.md). Default: $JOBGRAPH_EXECUTOR, else local.
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

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    ExitCode::from(match cli.command {
        Cmd::Validate { files, format } => validate(&files, format),
        Cmd::Plan { file, format } => plan(&file, format),
        Cmd::Graph { file, format } => graph(&file, format),
        Cmd::Schema => {
            print(&crate::schema::schema_text());
            EXIT_OK
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "jobgraph", &mut std::io::stdout());
            EXIT_OK
        }
        Cmd::Run(args) => run(&args),
        Cmd::Watchdog { marker } => crate::runtime::watchdog::main(&marker) as u8,
    })
}

fn human_style() -> HumanStyle {
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    HumanStyle { color, width: 100 }
}

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error worth a panic.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn eprint(s: &str) {
    let _ = std::io::stderr().write_all(s.as_bytes());
}

fn outcome(path: &Path) -> Outcome {
    match check_file(path) {
        Ok(c) => Outcome::Checked(Box::new(c)),
        Err(e) => Outcome::Unreadable(path.to_path_buf(), e),
    }
}

fn validate(files: &[PathBuf], format: ValidateFormat) -> u8 {
    let outcomes: Vec<Outcome> = files.iter().map(|f| outcome(f)).collect();
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
    if outcomes.iter().all(Outcome::is_valid) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Checks one file for plan/graph/run; prints diagnostics when there are any.
fn checked_graph(path: &Path) -> Result<crate::graph::Graph, ()> {
    let o = outcome(path);
    let quiet_ok = matches!(&o, Outcome::Checked(c) if c.diagnostics.is_empty());
    if !quiet_ok {
        eprint(&render_human(&o, human_style()));
    }
    match o {
        Outcome::Checked(c) => c.graph.ok_or(()),
        Outcome::Unreadable(..) => Err(()),
    }
}

fn plan(path: &Path, format: PlanFormat) -> u8 {
    let Ok(g) = checked_graph(path) else {
        return EXIT_FAILED;
    };
    let plan = Plan::new(&g);
    match format {
        PlanFormat::Human => print(&plan.render()),
        PlanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&plan).unwrap_or_default();
            s.push('\n');
            print(&s);
        }
    }
    EXIT_OK
}

fn graph(path: &Path, format: GraphFormat) -> u8 {
    let Ok(g) = checked_graph(path) else {
        return EXIT_FAILED;
    };
    print(&match format {
        GraphFormat::Dot => render_dot(&g),
        GraphFormat::Mermaid => render_mermaid(&g),
    });
    EXIT_OK
}

fn run(args: &RunArgs) -> u8 {
    let Ok(g) = checked_graph(&args.file) else {
        return EXIT_USAGE;
    };
    let included = match g.only(&args.only) {
        Ok(inc) => inc,
        Err(message) => {
            eprint(&format!("error: {message} in {}\n", args.file.display()));
            return EXIT_USAGE;
        }
    };
    if args.dry_run {
        print(&Plan::of(&g, &included).render());
        return EXIT_OK;
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let logs_to_stderr = args.events.as_deref() == Some("-");
    let logs_tty = if logs_to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let opts = crate::runtime::RunOptions {
        only: args.only.clone(),
        keep_going: args.keep_going,
        max_parallel: args.max_parallel,
        events: args.events.clone(),
        log_dir: args.log_dir.clone(),
        console: crate::report::live::ConsoleStyle {
            color: logs_tty && !no_color,
            color_stderr: std::io::stderr().is_terminal() && !no_color,
            progress: std::io::stderr().is_terminal() && !args.no_progress && !args.quiet,
            quiet: args.quiet,
            logs_to_stderr,
        },
        containment: crate::runtime::contain::Containment::Marker,
    };
    let base = crate::source::SourceFile::new(&args.file, String::new()).base_dir();
    let executor = match (
        args.executor,
        std::env::var("JOBGRAPH_EXECUTOR").ok().as_deref(),
    ) {
        (Some(e), _) => e,
        (None, None | Some("" | "local")) => ExecutorKind::Local,
        (None, Some("slurm")) => ExecutorKind::Slurm,
        (None, Some(other)) => {
            eprint(&format!(
                "error: JOBGRAPH_EXECUTOR={other}: expected `local` or `slurm`\n"
            ));
            return EXIT_USAGE;
        }
    };
    // Still single-threaded: the only safe moment to fork into a namespace.
    let opts = match crate::runtime::contain::enter() {
        crate::runtime::contain::Entered::Exited(code) => return code,
        crate::runtime::contain::Entered::Engine(containment) => crate::runtime::RunOptions {
            containment,
            ..opts
        },
    };
    let exec: Box<dyn crate::runtime::executor::Executor> = match executor {
        ExecutorKind::Local => Box::new(crate::runtime::executor::Local),
        ExecutorKind::Slurm => match crate::runtime::slurm::Config::from_env()
            .map(|mut c| {
                let daemons = g.file.processes.iter().filter(|p| p.daemon.value);
                c.daemons = daemons.map(|p| p.name.value.clone()).collect();
                c
            })
            .and_then(crate::runtime::slurm::Slurm::new)
        {
            Ok(s) => Box::new(s),
            Err(message) => {
                eprint(&format!("error: {message}\n"));
                return EXIT_USAGE;
            }
        },
    };
    match crate::runtime::run_with(&g, &base, &opts, exec) {
        Ok(outcome) => {
            eprint(&format!("\n{}", outcome.summary));
            outcome.exit_code
        }
        Err(message) => {
            eprint(&format!("error: {message}\n"));
            EXIT_USAGE
        }
    }
}
