//! `output-clash`: a process's `stdout` or `stderr` file that is the job
//! file itself or a file it includes (under any spelling, a symlink or a
//! hard link). The run would overwrite it: `stdout = { file = "job.toml" }`
//! replaced the job file with the process's output, with exit 0.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::file_identity::{identity, template_hits};
use crate::source::SourceFile;
use crate::spec::{JobFile, Output};

/// The main file read from stdin has no path to overwrite.
const STDIN: &str = "<stdin>";

pub(super) fn check(file: &JobFile, source: &SourceFile, diags: &mut Vec<Diagnostic>) {
    let outputs: Vec<_> = file
        .processes
        .iter()
        .flat_map(|p| {
            [(&p.stdout, "stdout"), (&p.stderr, "stderr")]
                .into_iter()
                .zip(&p.output_spans)
                .filter_map(move |((o, which), span)| match (o, span) {
                    (Output::File(path), Some(span)) => Some((p, which, path, span)),
                    _ => None,
                })
        })
        .collect();
    if outputs.is_empty() {
        return;
    }
    let base = source.base_dir();
    let jobs: Vec<_> = source
        .parts()
        .iter()
        .enumerate()
        .filter(|(_, part)| part.path.as_os_str() != STDIN)
        .map(|(i, part)| (i, identity(&part.path)))
        .collect();
    for (p, which, path, span) in outputs {
        let template = base.join(path);
        let Some((i, _)) = jobs
            .iter()
            .find(|(_, job)| template_hits(&template, p.replicas.value, job))
        else {
            continue;
        };
        let what = match i {
            0 => "the job file itself".to_string(),
            _ => format!(
                "the included job file {}",
                source.parts()[*i].path.display()
            ),
        };
        diags.push(
            Diagnostic::at(
                Code::OutputClash,
                span.clone(),
                format!(
                    "`{}`'s {which} file `{path}` is {what}: the run would overwrite it",
                    p.name.value
                ),
            )
            .help(format!(
                "write the output to another file, e.g. {which} = {{ file = \"{}.{which}.log\" }}",
                p.name.value
            )),
        );
    }
}
