//! `run`'s output paths (`--events`, `--state`, `--log-dir`) checked before
//! anything is written: none may be a job file (the main one or an included
//! one), or another output's file, under any spelling or hard link.
//! `jobgraph run --events job.toml job.toml` replaced the job file with
//! events, and `--events x --state x` wiped the journal, both with exit 0.
//! A process's own `stdout`/`stderr` file may not be one of them either
//! (that it is no job file, `validate` checks: `output-clash`).

use crate::file_identity::{identity, template_hits, Identity};
use std::path::{Path, PathBuf};

/// What a run writes, as given on the command line.
pub struct Outputs<'a> {
    /// `--events`, unless `-`.
    pub events: Option<&'a Path>,
    /// The journal (`--state`, or its default place).
    pub state: &'a Path,
    /// `--log-dir`.
    pub log_dir: Option<&'a Path>,
    /// The processes' `stdout`/`stderr` files.
    pub process_files: Vec<ProcessFile<'a>>,
}

/// A process's `stdout` or `stderr` file.
pub struct ProcessFile<'a> {
    /// The process.
    pub process: &'a str,
    /// `stdout` or `stderr`.
    pub which: &'static str,
    /// The path, resolved against the job file's directory, `{replica}` in it.
    pub template: PathBuf,
    /// How many replicas write it.
    pub replicas: u32,
}

impl<'a> ProcessFile<'a> {
    /// The output files of a graph's processes; `base` is the job file's directory.
    pub fn of(g: &'a crate::graph::Graph, base: &Path) -> Vec<ProcessFile<'a>> {
        use crate::spec::Output;
        g.file
            .processes
            .iter()
            .flat_map(|p| {
                [(&p.stdout, "stdout"), (&p.stderr, "stderr")]
                    .into_iter()
                    .filter_map(move |(o, which)| match o {
                        Output::File(path) => Some(ProcessFile {
                            process: &p.name.value,
                            which,
                            template: base.join(path),
                            replicas: p.replicas.value,
                        }),
                        _ => None,
                    })
            })
            .collect()
    }
}

/// An error naming the clash and what to do, or `Ok`. `job_files` are the
/// files the graph was read from, the main one first.
pub fn check(job_files: &[PathBuf], out: &Outputs<'_>) -> Result<(), String> {
    check_kinds(out)?;
    let jobs: Vec<(usize, Identity)> = job_files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.as_path() != Path::new("-") && f.as_os_str() != crate::cli::STDIN_NAME)
        .map(|(i, f)| (i, identity(f)))
        .collect();
    let events = out.events.map(identity);
    let state = identity(out.state);
    let named = |flag: &str, p: &Path| format!("{flag} {}", p.display());
    let which = |i: usize| match i {
        0 => "the job file itself".to_string(),
        _ => format!("the included job file {}", job_files[i].display()),
    };
    for (i, j) in &jobs {
        if let (Some(e), Some(p)) = (&events, out.events) {
            if j == e {
                return Err(format!(
                    "{} is {}: the run would overwrite it (give --events another path)",
                    named("--events", p),
                    which(*i)
                ));
            }
        }
        if *j == state {
            return Err(format!(
                "{} is {}: the journal would be appended to it (give --state another path)",
                named("--state", out.state),
                which(*i)
            ));
        }
    }
    // The journal is read whole and appended to: a FIFO would block the
    // run for ever, a device (/dev/full, /dev/zero) would be read without end.
    if let Ok(meta) = std::fs::metadata(out.state) {
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file (a directory, a FIFO, a socket or a device): the journal must be a file (give --state another path)",
                named("--state", out.state)
            ));
        }
    }
    if let (Some(e), Some(p)) = (&events, out.events) {
        if *e == state {
            return Err(format!(
                "{} is also the journal (--state): events would overwrite it (give them different paths)",
                named("--events", p)
            ));
        }
    }
    if let Some(dir) = out.log_dir {
        let dir = identity(dir).path;
        let in_logs = |p: &Identity| {
            p.path.parent() == Some(dir.as_path()) && p.path.extension().is_some_and(|x| x == "log")
        };
        for (flag, given, id) in [
            ("--events", out.events, events.as_ref()),
            ("--state", Some(out.state), Some(&state)),
        ] {
            if let (Some(given), Some(id)) = (given, id) {
                if in_logs(id) {
                    return Err(format!(
                        "{} is in --log-dir, where each process writes NAME.log: a process's log would overwrite it (put it outside the log directory, or not named *.log)",
                        named(flag, given)
                    ));
                }
            }
        }
    }
    check_process_files(out, events.as_ref(), &state)
}

/// What a run would find out only when it opens them, found before a dry
/// run too: an empty or directory `--events`, a `--log-dir` that is a file.
fn check_kinds(out: &Outputs<'_>) -> Result<(), String> {
    if let Some(events) = out.events {
        if events.as_os_str().is_empty() {
            return Err("--events needs a path (or - for stdout)".into());
        }
        if events.is_dir() {
            return Err(format!(
                "--events {} is a directory: events go to a file (give a file's path, or - for stdout)",
                events.display()
            ));
        }
    }
    if let Some(dir) = out.log_dir {
        // The nearest part of the path that exists must be a directory.
        if let Some(there) = dir.ancestors().find(|a| a.exists()) {
            if !there.is_dir() {
                return Err(format!(
                    "--log-dir {}: {} exists and is not a directory (give a directory's path)",
                    dir.display(),
                    there.display()
                ));
            }
        }
    }
    Ok(())
}

/// A process's own output file may not be the events, the journal, or a
/// `*.log` in `--log-dir` (two writers on one file, one of them wiping it).
fn check_process_files(
    out: &Outputs<'_>,
    events: Option<&Identity>,
    state: &Identity,
) -> Result<(), String> {
    let log_dir = out.log_dir.map(|d| identity(d).path);
    for f in &out.process_files {
        let owner = format!(
            "`{}`'s {} file {}",
            f.process,
            f.which,
            f.template.display()
        );
        let hits = |id: &Identity| template_hits(&f.template, f.replicas, id);
        if let (Some(e), Some(given)) = (events, out.events) {
            if hits(e) {
                return Err(format!(
                    "--events {} is also {owner}: the process would write into the events (give --events another path)",
                    given.display()
                ));
            }
        }
        if hits(state) {
            return Err(format!(
                "--state {} is also {owner}: the process would write into the journal (give --state another path)",
                out.state.display()
            ));
        }
        if let Some(dir) = &log_dir {
            let name = f.template.file_name().map(Path::new);
            let parent = f.template.parent().map(|p| identity(p).path);
            if parent.as_ref() == Some(dir)
                && name.and_then(Path::extension).is_some_and(|x| x == "log")
            {
                return Err(format!(
                    "{owner} is in --log-dir, where each process writes NAME.log: the two would write one file (put it outside the log directory, or not named *.log)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outs<'a>(
        events: Option<&'a Path>,
        state: &'a Path,
        log_dir: Option<&'a Path>,
    ) -> Outputs<'a> {
        Outputs {
            events,
            state,
            log_dir,
            process_files: Vec::new(),
        }
    }

    #[test]
    fn an_output_may_not_be_the_job_file_or_another_output() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "").unwrap();
        let jobs = [job.clone()];
        let other = dir.path().join("./job.toml");
        let state = dir.path().join("j.journal");
        let err = check(&jobs, &outs(Some(&other), &state, None)).unwrap_err();
        assert!(
            err.contains("--events") && err.contains("job file"),
            "{err}"
        );
        let err = check(&jobs, &outs(None, &job, None)).unwrap_err();
        assert!(err.contains("--state"), "{err}");
        let err = check(&jobs, &outs(Some(&state), &state, None)).unwrap_err();
        assert!(err.contains("also the journal"), "{err}");
        let logs = dir.path().join("logs");
        let inside = logs.join("a.log");
        let err = check(&jobs, &outs(Some(&inside), &state, Some(&logs))).unwrap_err();
        assert!(err.contains("--log-dir"), "{err}");
        let fine = dir.path().join("events.ndjson");
        assert!(check(&jobs, &outs(Some(&fine), &state, Some(&logs))).is_ok());
        assert!(check(&[PathBuf::from("-")], &outs(Some(&fine), &state, None)).is_ok());
    }

    #[test]
    fn a_fifo_or_a_device_is_no_journal_and_a_dangling_link_is_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "").unwrap();
        let jobs = [job.clone()];
        let err = check(&jobs, &outs(None, Path::new("/dev/full"), None)).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let state = dir.path().join("state");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        let err = check(&jobs, &outs(Some(&state), &link, None)).unwrap_err();
        assert!(err.contains("also the journal"), "{err}");
    }

    #[test]
    fn a_hard_link_or_an_included_file_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        let common = dir.path().join("common.toml");
        std::fs::write(&job, "").unwrap();
        std::fs::write(&common, "").unwrap();
        let link = dir.path().join("link.toml");
        std::fs::hard_link(&job, &link).unwrap();
        let state = dir.path().join("j.journal");
        let jobs = [job.clone(), common.clone()];
        let err = check(&jobs, &outs(Some(&link), &state, None)).unwrap_err();
        assert!(err.contains("the job file itself"), "{err}");
        let err = check(&jobs, &outs(None, &common, None)).unwrap_err();
        assert!(err.contains("included job file"), "{err}");
        let other = dir.path().join("other.journal");
        std::fs::write(&state, "").unwrap();
        std::fs::hard_link(&state, &other).unwrap();
        let err = check(&jobs, &outs(Some(&other), &state, None)).unwrap_err();
        assert!(err.contains("also the journal"), "{err}");
    }
}
