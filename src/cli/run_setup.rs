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

pub(super) fn dry_run(
    g: &crate::graph::Graph,
    included: &[bool],
    args: &RunArgs,
    base: &Path,
    opts: &crate::runtime::RunOptions,
) -> u8 {
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
    if args.resume {
        print(&resume_line(g, base, opts));
    }
    EXIT_OK
}

/// What `--resume` would take from the cache, for a dry run: read from the
/// journal as the run would, nothing started.
fn resume_line(g: &crate::graph::Graph, base: &Path, opts: &crate::runtime::RunOptions) -> String {
    let Some(path) = opts.journal.as_deref() else {
        return String::new();
    };
    match crate::runtime::resume_preview(g, base, opts, path) {
        Ok(cached) if cached.is_empty() => format!(
            "--resume: nothing would be taken from the cache ({} holds no unchanged ok instance): everything runs\n",
            path.display()
        ),
        Ok(cached) => {
            const SHOWN: usize = 20;
            let mut names = cached[..cached.len().min(SHOWN)].join(", ");
            if cached.len() > SHOWN {
                names.push_str(&format!(", and {} more", cached.len() - SHOWN));
            }
            format!(
                "--resume: {} instance(s) ended ok in the last run, unchanged, and would be cached, not run: {names}\n",
                cached.len()
            )
        }
        Err(why) => format!("--resume: {why}; everything would run\n"),
    }
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
