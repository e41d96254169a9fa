//! Stream edges between daemons and the processes they outlive: a daemon is
//! stopped only once the non-daemon processes finish (or its parent does),
//! so a reader of a daemon gets no end-of-file while it runs, and a daemon
//! reader of a pipe is stopped with whatever it has not read yet (a daemon
//! reader of a queue is given time to drain it, at run time).

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::spec::{JobFile, PipeEnds, Sp};
use rustc_hash::FxHashMap as HashMap;

/// Warns about each reader whose every writer is a top-level daemon, and
/// each daemon that reads a pipe non-daemon processes write.
pub(super) fn check(file: &JobFile, index: &HashMap<&str, usize>, diags: &mut Vec<Diagnostic>) {
    let edges = file
        .queues
        .iter()
        .map(|q| {
            (
                "queue",
                &q.name.value,
                q.from.value.iter().collect(),
                q.to.value.iter().collect(),
            )
        })
        .chain(file.pipes.iter().filter_map(|p| match &p.ends {
            PipeEnds::OneWay { from, to } => Some(("pipe", &p.name.value, vec![from], vec![to])),
            PipeEnds::Duplex { .. } | PipeEnds::Invalid => None,
        }));
    for (kind, name, writers, readers) in edges {
        edge(file, index, (kind, name), &writers, &readers, diags);
    }
}

fn edge(
    file: &JobFile,
    index: &HashMap<&str, usize>,
    (kind, name): (&str, &String),
    writers: &[&Sp<String>],
    readers: &[&Sp<String>],
    diags: &mut Vec<Diagnostic>,
) {
    let procs = &file.processes;
    let of = |s: &Sp<String>| index.get(s.value.as_str()).map(|&i| &procs[i]);
    let writers: Vec<_> = writers.iter().filter_map(|w| of(w)).collect();
    let all_top_daemons =
        !writers.is_empty() && writers.iter().all(|p| p.daemon.value && p.parent.is_none());
    let some_non_daemon = writers.iter().any(|p| !p.daemon.value);
    for r in readers {
        let Some(p) = of(r) else { continue };
        if all_top_daemons && !p.daemon.value {
            diags.push(
                Diagnostic::at(
                    Code::DaemonStream,
                    r.span.clone(),
                    format!(
                        "`{}` reads {kind} `{name}`, whose writers are all daemons: they are stopped only once every non-daemon process finished, so `{}` gets no end-of-file while it runs",
                        p.name.value, p.name.value
                    ),
                )
                .label("may wait forever for end-of-file")
                .help("if it reads to the end, the run never ends: make a writer a non-daemon, or let the reader stop on its own (a count, a last message)"),
            );
        } else if p.daemon.value && some_non_daemon && kind == "pipe" {
            diags.push(
                Diagnostic::at(
                    Code::DaemonStream,
                    r.span.clone(),
                    format!(
                        "daemon `{}` reads pipe `{name}`: it is stopped once the work it serves finished, and what it has not read by then is lost",
                        p.name.value
                    ),
                )
                .label("a daemon reader")
                .help("make it a non-daemon (it then ends at end-of-file), or use a queue: a daemon reader of a queue is given the time to read what it holds"),
            );
        }
    }
}
