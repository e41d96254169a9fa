//! Checks of the per-process features that relate a key to others or to the
//! file system: `for_each` (lists and globs, expanded here), `always`, `tty`.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;
use crate::spec::{ForEach, JobFile, Sp};

/// Expands `for_each` into items (globs against the file's directory, sorted)
/// and sets the instance count; then checks `always` and `tty`.
pub(super) fn resolve(file: &mut JobFile, source: &SourceFile, diags: &mut Vec<Diagnostic>) {
    let base = source.base_dir();
    for p in &mut file.processes {
        let Some(each) = &p.for_each else { continue };
        if p.replicas.span != p.name.span {
            diags.push(
                Diagnostic::at(
                    Code::BadForEach,
                    p.replicas.span.clone(),
                    format!("`{}` has both for_each and replicas", p.name.value),
                )
                .label("replicas here")
                .help("for_each makes one instance per item: drop replicas"),
            );
            continue;
        }
        let items = match each {
            ForEach::List(items) => items.iter().map(|i| i.value.clone()).collect(),
            ForEach::Glob(pattern) => match expand(&base, pattern) {
                Ok(items) => items,
                Err(d) => {
                    diags.push(*d);
                    continue;
                }
            },
        };
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        p.replicas = Sp::new(n, p.replicas.span.clone());
        p.items = items;
    }
    for p in &file.processes {
        if p.always.value && p.daemon.value {
            diags.push(
                Diagnostic::at(
                    Code::AlwaysDaemon,
                    p.always.span.clone(),
                    format!("`{}` is a daemon, and a daemon cannot be `always`", p.name.value),
                )
                .label("always")
                .related(p.daemon.span.clone(), "daemon here")
                .help("an always step runs once, after its after targets, like a finally block: drop daemon = true, or always"),
            );
        }
    }
}

/// At most this many instances from one glob, as `replicas` allows.
const MAX_GLOB_ITEMS: usize = 65_536;

/// The sorted matches of a glob, relative to `base`; none is an error.
fn expand(base: &std::path::Path, pattern: &Sp<String>) -> Result<Vec<String>, Box<Diagnostic>> {
    let full = base.join(&pattern.value);
    let text = full.to_string_lossy().into_owned();
    let paths = glob::glob(&text).map_err(|e| {
        Box::new(
            Diagnostic::at(
                Code::BadForEach,
                pattern.span.clone(),
                format!("`{}` is not a valid glob: {}", pattern.value, e.msg),
            )
            .label("invalid pattern")
            .help("use *, ? and [abc] as in a shell, e.g. \"data/*.csv\""),
        )
    })?;
    // Bounded: `**` follows symbolic links, and two links to `.` make the
    // matches grow without end.
    let mut items: Vec<String> = paths
        .flatten()
        .take(MAX_GLOB_ITEMS + 1)
        .map(|p| {
            let rel = p.strip_prefix(base).unwrap_or(&p);
            rel.to_string_lossy().into_owned()
        })
        .collect();
    if items.len() > MAX_GLOB_ITEMS {
        return Err(Box::new(
            Diagnostic::at(
                Code::BadForEach,
                pattern.span.clone(),
                format!(
                    "the glob `{}` matches more than {MAX_GLOB_ITEMS} files (a link back to a directory above makes `**` endless)",
                    pattern.value
                ),
            )
            .label("too many matches")
            .help("narrow the pattern (e.g. \"data/*.csv\" rather than \"**/*\"), or list the items"),
        ));
    }
    items.sort();
    if items.is_empty() {
        return Err(Box::new(Diagnostic::at(
            Code::BadForEach,
            pattern.span.clone(),
            format!("the glob `{}` matches no file", pattern.value),
        )
        .label("no match")
        .help(format!(
            "paths are relative to the job file's directory ({}); check the pattern, or list the items",
            base.display()
        ))));
    }
    Ok(items)
}

/// `tty = true` with a stream edge on stdout or stderr: the terminal would
/// take the place of the pipe.
pub(super) fn check_tty(
    file: &JobFile,
    endpoints: &[Vec<crate::graph::Endpoint>],
    diags: &mut Vec<Diagnostic>,
) {
    for (i, p) in file.processes.iter().enumerate() {
        if !p.tty.value {
            continue;
        }
        if let Some(e) = endpoints
            .get(i)
            .and_then(|es| es.iter().find(|e| e.fd == 1 || e.fd == 2))
        {
            diags.push(
                Diagnostic::at(
                    Code::TtyStream,
                    p.tty.span.clone(),
                    format!(
                        "`{}` has tty = true, but its {} is the stream edge `{}`",
                        p.name.value,
                        if e.fd == 1 { "stdout" } else { "stderr" },
                        e.edge
                    ),
                )
                .label("a terminal here")
                .help("a pseudo-terminal and a pipe cannot both be its stdout: drop tty, or move the edge to another descriptor"),
            );
        }
    }
}
