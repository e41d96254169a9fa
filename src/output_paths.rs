//! `run`'s output paths (`--events`, `--state`, `--log-dir`) checked before
//! anything is written: none may be the job file, or another output's file.
//! `jobgraph run --events job.toml job.toml` replaced the job file with
//! events, and `--events x --state x` wiped the journal, both with exit 0.

use std::path::{Path, PathBuf};

/// What a run writes, as given on the command line.
pub struct Outputs<'a> {
    /// `--events`, unless `-`.
    pub events: Option<&'a Path>,
    /// The journal (`--state`, or its default place).
    pub state: &'a Path,
    /// `--log-dir`.
    pub log_dir: Option<&'a Path>,
}

/// An error naming the clash and what to do, or `Ok`.
pub fn check(job_file: &Path, out: &Outputs<'_>) -> Result<(), String> {
    let job = (job_file != Path::new("-")).then(|| identity(job_file));
    let events = out.events.map(identity);
    let state = identity(out.state);
    let named = |flag: &str, p: &Path| format!("{flag} {}", p.display());
    if let (Some(j), Some(e), Some(p)) = (&job, &events, out.events) {
        if j == e {
            return Err(format!(
                "{} is the job file itself: the run would overwrite it (give --events another path)",
                named("--events", p)
            ));
        }
    }
    if job.as_ref() == Some(&state) {
        return Err(format!(
            "{} is the job file itself: the journal would be appended to it (give --state another path)",
            named("--state", out.state)
        ));
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
        let dir = identity(dir);
        let in_logs = |p: &PathBuf| {
            p.parent() == Some(dir.as_path()) && p.extension().is_some_and(|x| x == "log")
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
    Ok(())
}

/// `p` as an absolute path with its directory's links resolved, so that two
/// spellings of one file compare equal (the file itself need not exist).
fn identity(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(real) = abs.canonicalize() {
        return real;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| abs.clone(), |d| d.join(name)),
        _ => abs,
    }
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
        }
    }

    #[test]
    fn an_output_may_not_be_the_job_file_or_another_output() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "").unwrap();
        let other = dir.path().join("./job.toml");
        let state = dir.path().join("j.journal");
        let err = check(&job, &outs(Some(&other), &state, None)).unwrap_err();
        assert!(
            err.contains("--events") && err.contains("job file"),
            "{err}"
        );
        let err = check(&job, &outs(None, &job, None)).unwrap_err();
        assert!(err.contains("--state"), "{err}");
        let err = check(&job, &outs(Some(&state), &state, None)).unwrap_err();
        assert!(err.contains("also the journal"), "{err}");
        let logs = dir.path().join("logs");
        let inside = logs.join("a.log");
        let err = check(&job, &outs(Some(&inside), &state, Some(&logs))).unwrap_err();
        assert!(err.contains("--log-dir"), "{err}");
        let fine = dir.path().join("events.ndjson");
        assert!(check(&job, &outs(Some(&fine), &state, Some(&logs))).is_ok());
        assert!(check(Path::new("-"), &outs(Some(&fine), &state, None)).is_ok());
    }
}
