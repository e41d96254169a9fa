//! The run journal, for `--resume` (DAGMan's rescue DAG, GNU parallel's
//! `--resume-failed`).
//!
//! Every run appends to `.jobgraph/<graph>.journal` beside the job file (or
//! `--state PATH`): a header line when it starts, then one line per instance
//! that finished, written within milliseconds and fsync'd at most every
//! 100 ms and at the end, so a run killed half-way leaves a journal of what
//! it finished. A line is JSON:
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

/// What can go wrong with a journal. None of it stops a run: it is reported,
/// and the run goes on without `--resume` (reading) or without a journal
/// (writing).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// It exists but cannot be read.
    #[error("cannot read the journal {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A run header that is not JSON.
    #[error("the journal {} is corrupt at line {line}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    /// Lines that are not a run, and no run after them.
    #[error("the journal {} is corrupt: line {line} is not a run, and no run follows", path.display())]
    NoRun { path: PathBuf, line: usize },
    /// Its last run is another graph's.
    #[error("the journal {} belongs to graph `{found}`, not `{graph}`", path.display())]
    OtherGraph {
        path: PathBuf,
        found: String,
        graph: String,
    },
    /// Written by another version of jobgraph.
    #[error("the journal {} is of version {found} (this jobgraph writes version {VERSION})", path.display())]
    Version { path: PathBuf, found: u32 },
    /// Its directory is a file.
    #[error("cannot write the journal {}: {} is not a directory", path.display(), dir.display())]
    NotADirectory { path: PathBuf, dir: PathBuf },
    /// Its directory cannot be made.
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// It cannot be opened for writing.
    #[error("cannot open the journal {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write or an fsync failed (a full disk).
    #[error("cannot write the journal {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another run holds it (the same graph and state, running now).
    #[error("the journal {} is in use by another run of this graph", path.display())]
    Busy { path: PathBuf },
    /// The writer thread could not be started.
    #[error("cannot start the journal writer: {0}")]
    Thread(std::io::Error),
    /// The writer thread panicked.
    #[error("the journal writer failed: the last records may be missing")]
    WriterFailed,
}
/// How long a record may wait for others to share its write.
const GROUP_COMMIT: std::time::Duration = std::time::Duration::from_millis(5);
/// How often written records are forced to disk. A record is written (and
/// survives a killed engine) within `GROUP_COMMIT`; a power loss can forget
/// the last `SYNC_EVERY` of them, which only makes `--resume` run them again.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

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
    // The graph's name is the file's name, never a path: `/`, `..` or a
    // leading dot cannot put the journal outside `.jobgraph/`.
    let mut file: String = graph
        .chars()
        .map(|c| match c {
            c if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
            _ => '_',
        })
        .collect();
    if file.is_empty() || file.starts_with('.') {
        file.insert(0, '_');
    }
    base.join(".jobgraph").join(format!("{file}.journal"))
}

/// Reads the last run recorded in `path` for `graph`. A missing journal is
/// an empty one; anything else wrong is `Err(reason)`, to be reported.
pub fn last_run(path: &Path, graph: &str) -> Result<LastRun, JournalError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LastRun::default()),
        Err(source) => {
            return Err(JournalError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let mut last = None;
    let mut junk = None;
    // A run this graph cannot use (cut short, another graph's, another
    // version's): its records are skipped, and a later run of ours recovers.
    let mut unusable = None;
    for (n, line) in text.lines().enumerate() {
        // A header glued to a record cut short by a crash (a journal written
        // before runs began on a fresh line) still starts a run.
        let header = match line.rfind("{\"run\"") {
            Some(0) => Some(line),
            Some(at) if serde_json::from_str::<Record>(line).is_err() => Some(&line[at..]),
            _ => None,
        };
        if let Some(header) = header {
            match usable(header, path, n + 1, graph) {
                Ok(()) => {
                    last = Some(LastRun::default());
                    unusable = None;
                }
                Err(e) => {
                    last = None;
                    unusable = Some(e);
                }
            }
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
        } else if unusable.is_none() && !line.trim().is_empty() {
            junk.get_or_insert(n + 1);
        }
    }
    // Anything before the first run is not a run: the runs after it count
    // (a journal damaged once recovers with the next run).
    if let Some(e) = unusable {
        return Err(e);
    }
    match (last, junk) {
        (Some(run), _) => Ok(run),
        (None, Some(line)) => Err(JournalError::NoRun {
            path: path.into(),
            line,
        }),
        (None, None) => Ok(LastRun::default()),
    }
}

/// Whether a run header (line `line`) starts a run of `graph` this version reads.
fn usable(header: &str, path: &Path, line: usize, graph: &str) -> Result<(), JournalError> {
    let h: Header = serde_json::from_str(header).map_err(|source| JournalError::Corrupt {
        path: path.into(),
        line,
        source,
    })?;
    if h.graph != graph {
        return Err(JournalError::OtherGraph {
            path: path.into(),
            found: h.graph,
            graph: graph.into(),
        });
    }
    if h.version != VERSION {
        return Err(JournalError::Version {
            path: path.into(),
            found: h.version,
        });
    }
    Ok(())
}

/// The journal being written by this run. Records go to a thread that
/// writes and fsyncs them in batches (a group commit), so the engine's loop
/// never waits on the disk: a record is durable a moment after its instance
/// finished, and a burst of a thousand exits costs a few fsyncs, not a thousand.
pub struct Journal {
    tx: Option<std::sync::mpsc::Sender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    error: std::sync::Arc<std::sync::Mutex<Option<JournalError>>>,
    reported: bool,
    /// Set by `close`: the writer stops waiting for more records to batch.
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Journal {
    /// Opens (creating the directory if needed) and writes the run's header,
    /// with the records of the instances taken from the cache (`cached`:
    /// instance and fingerprint) in the same write, so that a run killed at
    /// once does not leave a last run that forgot them.
    pub fn open(
        path: &Path,
        graph: &str,
        run: &str,
        cached: &[(&str, &str)],
    ) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| match dir.exists() && !dir.is_dir() {
                true => JournalError::NotADirectory {
                    path: path.into(),
                    dir: dir.into(),
                },
                false => JournalError::CreateDir {
                    dir: dir.into(),
                    source,
                },
            })?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|source| JournalError::Open {
                path: path.into(),
                source,
            })?;
        // One run at a time per journal: two would mix their records under
        // one header. The lock lasts as long as the file is open.
        // SAFETY: flock on a descriptor this function owns; no memory is touched.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        // A filesystem without locks (some network ones) goes unguarded.
        if locked != 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
            return Err(JournalError::Busy { path: path.into() });
        }
        let header = Header {
            run: run.to_string(),
            graph: graph.to_string(),
            version: VERSION,
        };
        let mut line = serde_json::to_string(&header).unwrap_or_default();
        line.push('\n');
        for &(instance, key) in cached {
            let r = Record {
                i: instance.to_string(),
                s: "cached".to_string(),
                k: key.to_string(),
            };
            line.push_str(&serde_json::to_string(&r).unwrap_or_default());
            line.push('\n');
        }
        // A run killed mid-write left a line cut short: this run starts on a
        // line of its own, so that its header is read.
        if !ends_with_newline(&mut file) {
            line.insert(0, '\n');
        }
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|source| JournalError::Write {
                path: path.into(),
                source,
            })?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let error = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (err, shown) = (std::sync::Arc::clone(&error), path.to_path_buf());
        let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&closing);
        let thread = super::hygiene::spawn_thread("jobgraph-journal", move || {
            if let Err(source) = write_records(&mut file, &rx, &stop) {
                let mut slot = err.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some(JournalError::Write {
                    path: shown,
                    source,
                });
            }
        })
        .map_err(JournalError::Thread)?;
        Ok(Journal {
            tx: Some(tx),
            thread: Some(thread),
            error,
            reported: false,
            closing,
        })
    }

    /// Records a finished instance. A write error (from an earlier record)
    /// is returned once, to be reported; the journal then stops.
    pub fn record(&mut self, instance: &str, status: &str, key: &str) -> Result<(), JournalError> {
        if let Some(e) = self.take_error() {
            self.tx = None;
            return Err(e);
        }
        let r = Record {
            i: instance.to_string(),
            s: status.to_string(),
            k: key.to_string(),
        };
        let mut line = serde_json::to_string(&r).unwrap_or_default();
        line.push('\n');
        // A send fails only if the writer thread stopped on an error, which
        // `take_error` reports at the next record or at `close`.
        if self.tx.as_ref().is_some_and(|tx| tx.send(line).is_err()) {
            self.tx = None;
        }
        Ok(())
    }

    fn take_error(&mut self) -> Option<JournalError> {
        if self.reported {
            return None;
        }
        let e = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.reported |= e.is_some();
        e
    }

    /// Writes everything recorded and waits for it to be on disk.
    pub fn close(&mut self) -> Result<(), JournalError> {
        self.tx = None;
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() && !self.reported {
                self.reported = true;
                return Err(JournalError::WriterFailed);
            }
        }
        self.take_error().map_or(Ok(()), Err)
    }
}

/// The writer thread: writes what `rx` brings, in batches, until the engine
/// closes the channel; fsyncs at most every `SYNC_EVERY` and at the end.
fn write_records(
    file: &mut std::fs::File,
    rx: &std::sync::mpsc::Receiver<String>,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::sync::mpsc::TryRecvError;
    let mut synced = std::time::Instant::now();
    let mut dirty = false;
    let mut open = true;
    while open {
        // Idle, it waits on the channel. Once records flow it only polls:
        // records that arrive within a few milliseconds share one write, and
        // no record wakes it (a waiting receiver is woken by every send: a
        // futex call and a context switch on another core, per record).
        let mut batch = String::new();
        if !dirty {
            match rx.recv() {
                Ok(line) => batch = line,
                Err(_) => break,
            }
        }
        let window = match dirty {
            true => GROUP_COMMIT
                .min((synced + SYNC_EVERY).saturating_duration_since(std::time::Instant::now())),
            false => GROUP_COMMIT,
        };
        sleep_out(stop, window);
        loop {
            match rx.try_recv() {
                Ok(more) => batch.push_str(&more),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            file.write_all(batch.as_bytes())?;
            dirty = true;
        }
        if dirty && (synced.elapsed() >= SYNC_EVERY || !open) {
            file.sync_data()?;
            (synced, dirty) = (std::time::Instant::now(), false);
        }
    }
    match dirty {
        true => file.sync_data(),
        false => Ok(()),
    }
}

/// Sleeps for `window`, or less once `stop` is set (the journal is closing).
fn sleep_out(stop: &std::sync::atomic::AtomicBool, window: std::time::Duration) {
    let until = std::time::Instant::now() + window;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::park_timeout(left);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Whether `file` is empty or ends with a newline.
fn ends_with_newline(file: &mut std::fs::File) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [b'\n'];
    let empty = file.metadata().map_or(true, |m| m.len() == 0);
    empty
        || (file.seek(SeekFrom::End(-1)).is_ok()
            && file.read_exact(&mut last).is_ok()
            && last[0] == b'\n')
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
    fn a_record_is_in_the_file_within_milliseconds_without_waiting_for_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        let mut j = Journal::open(&path, "g", "1", &[]).unwrap();
        j.record("a", "ok", "k1").unwrap();
        // Well before SYNC_EVERY: the record was written, so a killed engine keeps it.
        let mut seen = false;
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            if std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"i\":\"a\"")
            {
                seen = true;
                break;
            }
        }
        assert!(seen, "the record was not written before close");
        j.close().unwrap();
        assert!(last_run(&path, "g").unwrap().ok_with("a", "k1"));
    }

    #[test]
    fn the_last_run_wins_and_a_cut_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        let mut j = Journal::open(&path, "g", "1", &[]).unwrap();
        j.record("a", "ok", "k1").unwrap();
        j.record("b", "failed", "k2").unwrap();
        j.close().unwrap();
        let mut j = Journal::open(&path, "g", "2", &[]).unwrap();
        j.record("a", "cached", "k1").unwrap();
        j.record("b", "ok", "k2").unwrap();
        j.close().unwrap();
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
        Journal::open(&path, "other", "1", &[]).unwrap();
        let err = last_run(&path, "g").unwrap_err();
        assert!(matches!(&err, JournalError::OtherGraph { found, .. } if found == "other"));
        assert!(err
            .to_string()
            .contains("belongs to graph `other`, not `g`"));
        std::fs::write(&path, "{\"run\":\"x\",\"graph\":\"g\",\"version\":99}\n").unwrap();
        let err = last_run(&path, "g").unwrap_err();
        assert!(matches!(err, JournalError::Version { found: 99, .. }));
        assert!(err.to_string().contains("version 99"));
        std::fs::write(&path, "garbage\n").unwrap();
        let err = last_run(&path, "g").unwrap_err();
        assert!(matches!(err, JournalError::NoRun { line: 1, .. }), "{err}");
        std::fs::write(&path, "{\"run\": 12}\n").unwrap();
        let err = last_run(&path, "g").unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 1, .. }),
            "{err}"
        );
        assert!(last_run(&dir.path().join("none"), "g").is_ok());
    }

    #[test]
    fn a_bad_run_is_skipped_and_a_later_run_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        std::fs::write(
            &path,
            "{\"run\":\"1\",\"graph\":\"other\",\"version\":1}\n{\"i\":\"z\",\"s\":\"ok\",\"k\":\"kz\"}\n{\"run\":\"2\",\"gra\n",
        )
        .unwrap();
        assert!(last_run(&path, "g").is_err(), "the last run is unusable");
        let mut j = Journal::open(&path, "g", "3", &[("a", "k1")]).unwrap();
        j.record("b", "ok", "k2").unwrap();
        j.close().unwrap();
        let last = last_run(&path, "g").unwrap();
        assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
        assert!(
            !last.ok_with("z", "kz"),
            "another graph's records never count"
        );
    }

    #[test]
    fn cached_records_are_written_with_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        let j = Journal::open(&path, "g", "1", &[("a", "k1"), ("b", "k2")]).unwrap();
        // Before any record or close: a kill now still leaves them.
        let last = last_run(&path, "g").unwrap();
        assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
        drop(j);
    }

    #[test]
    fn a_second_run_on_one_journal_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        let mut first = Journal::open(&path, "g", "1", &[]).unwrap();
        let err = Journal::open(&path, "g", "2", &[]).err().expect("busy");
        assert!(matches!(err, JournalError::Busy { .. }), "{err}");
        first.close().unwrap();
        drop(first);
        assert!(Journal::open(&path, "g", "3", &[]).is_ok());
    }

    #[test]
    fn fingerprints_are_stable_and_separate_parts() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }

    #[test]
    fn a_run_after_a_cut_line_starts_on_a_line_of_its_own_and_junk_before_runs_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.journal");
        std::fs::write(&path, "garbage\n").unwrap();
        let mut j = Journal::open(&path, "g", "1", &[]).unwrap();
        j.record("a", "ok", "k1").unwrap();
        j.record("c", "ok", "k3").unwrap();
        j.close().unwrap();
        // Killed in the middle of its last record...
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 8]).unwrap();
        // ...and the next run records `a` only.
        let mut j = Journal::open(&path, "g", "2", &[]).unwrap();
        j.record("a", "ok", "k1").unwrap();
        j.close().unwrap();
        let last = last_run(&path, "g").unwrap();
        assert!(last.ok_with("a", "k1"));
        assert!(!last.ok_with("c", "k3"), "`c` was not in the last run");
        // A journal written before that fix has the header glued on.
        std::fs::write(
            &path,
            "{\"run\":\"1\",\"graph\":\"g\",\"version\":1}\n{\"i\":\"c\",\"s\":\"ok\",\"k\":\"k3\"}\n{\"i\":\"b\",\"s\":\"ok\",\"k{\"run\":\"2\",\"graph\":\"g\",\"version\":1}\n{\"i\":\"a\",\"s\":\"ok\",\"k\":\"k1\"}\n",
        )
        .unwrap();
        let last = last_run(&path, "g").unwrap();
        assert!(last.ok_with("a", "k1") && !last.ok_with("c", "k3"));
    }

    #[test]
    fn a_graph_name_never_puts_the_journal_outside_its_directory() {
        let base = Path::new("/w");
        for (name, file) in [
            ("nightly", "nightly.journal"),
            ("../../escaped", "_.._.._escaped.journal"),
            ("a/b", "a_b.journal"),
            (".", "_..journal"),
            ("", "_.journal"),
        ] {
            assert_eq!(default_path(base, name), base.join(".jobgraph").join(file));
        }
    }
}
