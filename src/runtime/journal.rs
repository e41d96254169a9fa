//! The run journal, for `--resume` (DAGMan's rescue DAG, GNU parallel's
//! `--resume-failed`).
//!
//! Each run starts `.jobgraph/<graph>.journal` beside the job file (or
//! `--state PATH`) afresh, as only the last run is read: a header line when
//! it starts, then one line per instance
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
        let file = lock(path)?;
        let header = Header {
            run: run.to_string(),
            graph: graph.to_string(),
            version: VERSION,
        };
        let mut start = serde_json::to_string(&header).unwrap_or_default();
        start.push('\n');
        for &(instance, key) in cached {
            let r = Record {
                i: instance.to_string(),
                s: "cached".to_string(),
                k: key.to_string(),
            };
            start.push_str(&serde_json::to_string(&r).unwrap_or_default());
            start.push('\n');
        }
        let mut file = start_afresh(file, path, &start, !cached.is_empty())?;
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

/// Opens `path` for appending (creating it) and takes its lock: one run at
/// a time per journal, as two would mix their records under one header.
/// The lock lasts as long as the file is open.
fn lock(path: &Path) -> Result<std::fs::File, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.into(),
        source,
    };
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(open_err)?;
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
        // A run that started afresh replaced the file under its name: a lock
        // taken on the file it replaced guards nothing; the new one is tried.
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata().map_err(open_err)?;
        match std::fs::metadata(path) {
            Ok(named) if (named.dev(), named.ino()) != (held.dev(), held.ino()) => continue,
            _ => return Ok(file),
        }
    }
}

/// Starts the journal afresh with this run's `start` (its header and cached
/// records): only the last run is ever read, so earlier ones are dropped,
/// and the journal stays the size of one run however many runs there were.
///
/// A run that takes nothing from the cache (`!keeps`) empties the file in
/// place: killed before its header is written, it leaves an empty journal,
/// which runs everything again, as its own records would. A resumed run
/// needs the last run's records until its own start is on disk: that is
/// written to a new file that replaces the journal by `rename`, so the
/// journal is at every moment either the old runs or the new start. Where
/// neither can be done, the start is appended, as a journal always reads.
fn start_afresh(
    mut file: std::fs::File,
    path: &Path,
    start: &str,
    keeps: bool,
) -> Result<std::fs::File, JournalError> {
    let write_err = |source| JournalError::Write {
        path: path.into(),
        source,
    };
    let emptied = match keeps {
        // Dropping the old file releases its lock: the new one's holds.
        true => match replace(path, start) {
            Some(new) => return Ok(new),
            None => false,
        },
        false => file.set_len(0).is_ok(),
    };
    let mut text = String::with_capacity(start.len() + 1);
    // A run killed mid-write left a line cut short: this run starts on a
    // line of its own, so that its header is read.
    if !emptied && !ends_with_newline(&mut file) {
        text.push('\n');
    }
    text.push_str(start);
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_data())
        .map_err(write_err)?;
    Ok(file)
}

/// Writes `start` to a new file beside the journal (under the journal's
/// lock, so no other run writes it), locks it, and renames it over the
/// journal. None if any step fails: the journal is then as it was.
fn replace(path: &Path, start: &str) -> Option<std::fs::File> {
    // Through a symlink, the file it names is replaced, not the link.
    let real = std::fs::canonicalize(path).ok()?;
    let mut name = real.file_name()?.to_os_string();
    name.push(".new");
    let new_path = real.with_file_name(name);
    let made = (|| {
        // A journal start left by a run killed here is stale (the lock is
        // ours); anything else of that name is the user's, and kept.
        if stale_start(&new_path) {
            std::fs::remove_file(&new_path)?;
        }
        let mut new = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&new_path)?;
        new.write_all(start.as_bytes())?;
        new.sync_data()?;
        // Locked before it has the journal's name, so no other run ever
        // holds it; where locks are not supported it goes unguarded, as `lock`.
        // SAFETY: flock on a descriptor this closure owns; no memory is touched.
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&new),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        std::fs::rename(&new_path, &real)?;
        // The rename survives a power loss once its directory is synced. If
        // that fails, the rename is done all the same: a power loss may then
        // bring the old runs back, which `--resume` reads as before.
        if let Some(dir) = real.parent() {
            let synced = std::fs::File::open(dir).and_then(|d| d.sync_all());
            drop(synced);
        }
        Ok::<_, std::io::Error>(new)
    })();
    match made {
        Ok(new) => Some(new),
        Err(e) => {
            // Whatever failed (a full disk, a directory not writable, a file
            // of that name), the journal is untouched. A new file begun by
            // this run is not left behind (or, if even that fails, the next
            // resumed run removes it).
            if e.kind() != std::io::ErrorKind::AlreadyExists && stale_start(&new_path) {
                let removed = std::fs::remove_file(&new_path);
                drop(removed);
            }
            None
        }
    }
}

/// Whether `path` is a regular file that holds only the start of a journal
/// (or nothing): what `replace` writes, left by a run killed before its rename.
fn stale_start(path: &Path) -> bool {
    use std::io::Read;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let mut head = Vec::new();
    meta.is_file()
        && std::fs::File::open(path)
            .and_then(|f| f.take(8).read_to_end(&mut head))
            .is_ok()
        && (head.is_empty() || head.starts_with(b"{\"run\""))
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
mod tests;
