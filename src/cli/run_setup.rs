//! `run`'s setup from its arguments: the checks of command-line overrides,
//! the dry run, the console style and the run options.

use super::*;

/// Command-line overrides go through the same checks as the file.
pub(super) fn cli_max_parallel_fits(file: &Path, g: &crate::graph::Graph, args: &RunArgs) -> bool {
    if let Some(max) = args.max_parallel {
        let problems = g.check_max_parallel(max);
        if !problems.is_empty() {
            for d in &problems {
                eprint(&crate::report::render_spanless(file, d));
            }
            return false;
        }
    }
    true
}

pub(super) fn dry_run(g: &crate::graph::Graph, included: &[bool], args: &RunArgs) -> u8 {
    let mut plan = Plan::of(g, included);
    if let Some(max) = args.max_parallel {
        plan.max_parallel = Some(max);
        plan.max_parallel_from_cli = true;
    }
    if args.keep_going {
        plan.fail_fast = false;
        plan.keep_going_from_cli = true;
    }
    print(&plan.render());
    EXIT_OK
}

pub(super) fn console_style(args: &RunArgs) -> crate::report::live::ConsoleStyle {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let logs_to_stderr = args.events.as_deref() == Some("-");
    let logs_tty = if logs_to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    crate::report::live::ConsoleStyle {
        color: logs_tty && !no_color,
        color_stderr: std::io::stderr().is_terminal() && !no_color,
        progress: std::io::stderr().is_terminal() && !args.no_progress && !args.quiet,
        quiet: args.quiet,
        logs_to_stderr,
    }
}

pub(super) fn run_options(
    args: &RunArgs,
    g: &crate::graph::Graph,
    base: &Path,
) -> crate::runtime::RunOptions {
    let exact = !args.members.is_empty();
    crate::runtime::RunOptions {
        only: match exact {
            true => args.members.clone(),
            false => args.only.clone(),
        },
        exact,
        keep_going: args.keep_going,
        max_parallel: args.max_parallel,
        containment: crate::runtime::contain::Containment::Marker,
        journal: Some(
            args.state
                .clone()
                .unwrap_or_else(|| crate::runtime::journal::default_path(base, &g.name)),
        ),
        resume: args.resume,
        stdout_is_events: args.events.as_deref() == Some("-"),
    }
}
