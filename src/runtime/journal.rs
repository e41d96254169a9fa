//! The run journal, for `--resume` (DAGMan's rescue DAG, GNU parallel's
//! `--resume-failed`).
//!
//! Every run appends to `.jobgraph/<graph>.journal` beside the job file (or
//! `--state PATH`): a header line when it starts, then one line per instance
//! that finished, each written and fsync'd as it happens, so a run killed
//! half-way leaves a journal of what it finished. A line is JSON:
//!
//! ```text
//! {"run":"<id>","graph":"nightly","version":1}
//! {"i":"worker[2]","s":"ok","k":"9f1c0e4a2b7d5e63"}
//! ```
//!
//! `k` is a fingerprint of the instance's resolved definition (argv or shell,
//! cwd, and the environment the job file gives it), so a changed command
//! runs again. A journal of another graph, or one that cannot be read, is
//! reported and ignored: it never stops a run.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    run: String,
    graph: String,
    version: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    /// Instance name.
    i: String,
    /// Final status: ok, cached, failed, timed out, stopped, skipped.
    s: String,
    /// Definition fingerprint.
    k: String,
}

/// What the last run of this graph finished `ok` (or `cached`), by
/// instance name, with the fingerprint it had.
#[derive(Debug, Default)]
pub struct LastRun {
    ok: HashMap<String, String>,
}

impl LastRun {
    /// Whether `instance` ended ok last time with this same definition.
    pub fn ok_with(&self, instance: &str, key: &str) -> bool {
        self.ok.get(instance).is_some_and(|k| k == key)
    }
}

/// The default journal path: `.jobgraph/<graph>.journal` in `base`.
pub fn default_path(base: &Path, graph: &str) -> PathBuf {
    base.join(".jobgraph").join(format!("{graph}.journal"))
}

/// Reads the last run recorded in `path` for `graph`. A missing journal is
/// an empty one; anything else wrong is `Err(reason)`, to be reported.
pub fn last_run(path: &Path, graph: &str) -> Result<LastRun, String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LastRun::default()),
        Err(e) => return Err(format!("cannot read the journal {}: {e}", path.display())),
    };
    let mut last = None;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("{\"run\"") {
            let h: Header = serde_json::from_str(line).map_err(|e| {
                format!(
                    "the journal {} is corrupt at line {}: {e}",
                    path.display(),
                    n + 1
                )
            })?;
            if h.graph != graph || h.version != VERSION {
                return Err(format!(
                    "the journal {} belongs to graph `{}`, not `{graph}`",
                    path.display(),
                    h.graph
                ));
            }
            last = Some(LastRun::default());
        } else if let Some(run) = last.as_mut() {
            // A line cut short by a crash ends the journal; it is not an error.
            let Ok(r) = serde_json::from_str::<Record>(line) else {
                continue;
            };
            if r.s == "ok" || r.s == "cached" {
                run.ok.insert(r.i, r.k);
            } else {
                run.ok.remove(&r.i);
            }
        } else if !line.trim().is_empty() {
            return Err(format!(
                "the journal {} is corrupt: line {} comes before any run",
                path.display(),
                n + 1
            ));
        }
    }
    Ok(last.unwrap_or_default())
}

/// The journal being written by this run.
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    failed: bool,
}

impl Journal {
    /// Opens (creating the directory if needed) and writes the run's header.
    pub fn open(path: &Path, graph: &str, run: &str) -> Result<Journal, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the journal {}: {e}", path.display()))?;
        let mut j = Journal {
            file,
            path: path.to_path_buf(),
            failed: false,
        };
        let header = Header {
            run: run.to_string(),
            graph: graph.to_string(),
            version: VERSION,
        };
        j.append(&serde_json::to_string(&header).unwrap_or_default())?;
        Ok(j)
    }

    /// Records a finished instance, durably. The first error is returned
    /// (to be reported once); later records are not attempted.
    pub fn record(&mut self, instance: &str, status: &str, key: &str) -> Result<(), String> {
        if self.failed {
            return Ok(());
        }
        let r = Record {
            i: instance.to_string(),
            s: status.to_string(),
            k: key.to_string(),
        };
        self.append(&serde_json::to_string(&r).unwrap_or_default())
    }

    fn append(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        result.map_err(|e| {
            self.failed = true;
            format!("cannot write the journal {}: {e}", self.path.display())
        })
    }
}

/// A stable fingerprint (FNV-1a, 64 bits) of an instance's definition.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_run_wins_and_a_cut_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        let mut j = Journal::open(&path, "g", "1").unwrap();
        j.record("a", "ok", "k1").unwrap();
        j.record("b", "failed", "k2").unwrap();
        let mut j = Journal::open(&path, "g", "2").unwrap();
        j.record("a", "cached", "k1").unwrap();
        j.record("b", "ok", "k2").unwrap();
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"i\":\"c\",\"s\":\"o")
            .unwrap();
        let last = last_run(&path, "g").unwrap();
        assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
        assert!(!last.ok_with("a", "other") && !last.ok_with("c", "k"));
    }

    #[test]
    fn another_graphs_or_a_corrupt_journal_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        Journal::open(&path, "other", "1").unwrap();
        assert!(last_run(&path, "g")
            .unwrap_err()
            .contains("belongs to graph"));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(last_run(&path, "g").unwrap_err().contains("corrupt"));
        std::fs::write(&path, "{\"run\": 12}\n").unwrap();
        assert!(last_run(&path, "g").unwrap_err().contains("corrupt"));
        assert!(last_run(&dir.path().join("none"), "g").is_ok());
    }

    #[test]
    fn fingerprints_are_stable_and_separate_parts() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}
