//! Turning one instance of a process into a `std::process::Command`:
//! argv or shell, `{replica}`, the fork/spawn environment, cwd, stdio.

use super::posix::Source;
use crate::graph::Graph;
use crate::spec::{Command as Cmd, Output, StartMethod, Stdin};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Variables a `spawn` process keeps from the engine's environment.
pub const SPAWN_KEEP: &[&str] = &["PATH", "HOME", "USER", "LANG", "TERM"];

/// Everything about an instance that does not change between attempts.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program and arguments (`/bin/sh -c ...` for `shell`).
    pub argv: Vec<String>,
    /// The full environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// `{replica}` replaced, the only interpolation jobgraph does.
pub fn interpolate(text: &str, replica: u32) -> String {
    if text.contains("{replica}") {
        text.replace("{replica}", &replica.to_string())
    } else {
        text.to_string()
    }
}

/// A `for_each` process's cmd, shell, env value or cwd, resolved for one
/// instance: `{{ item }}` becomes its item (left as it is without one) and
/// `{{{{` a literal `{{`, in one pass, so that neither an escape nor a var's
/// value is expanded again (the file was read with every literal `{{` there
/// written `{{{{`).
pub fn interpolate_item(text: String, item: Option<&str>) -> String {
    const ITEM: &str = "{{ item }}";
    if !text.contains("{{") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{{{{") {
            out.push_str("{{");
            rest = after;
        } else if let (Some(after), Some(item)) = (rest.strip_prefix(ITEM), item) {
            out.push_str(item);
            rest = after;
        } else {
            out.push_str("{{");
            rest = &rest[2..];
        }
    }
    out.push_str(rest);
    out
}

/// The chain of parents from the top down to `i` (inclusive).
fn lineage(g: &Graph, i: usize) -> Vec<usize> {
    let mut chain = vec![i];
    let mut cur = i;
    while let Some(parent) = g.file.processes[cur]
        .parent
        .as_ref()
        .and_then(|p| g.process_index(p))
    {
        if chain.contains(&parent) {
            break; // cycles are rejected by validation; never loop regardless
        }
        chain.push(parent);
        cur = parent;
    }
    chain.reverse();
    chain
}

/// The engine's pid, asked of the kernel once (glibc does not cache it). The
/// engine of a PID namespace asks it there, after the fork into it.
fn engine_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Builds the launch of process `i`, replica `replica`, for a graph rooted at `base`.
pub fn launch(
    g: &Graph,
    i: usize,
    replica: u32,
    base: &Path,
    engine_env: &[(OsString, OsString)],
) -> Launch {
    let p = &g.file.processes[i];
    let item = p.items.get(replica as usize).map(String::as_str);
    // Only a `for_each` process's own strings were read for `{{ item }}`.
    let for_each = |a: usize| g.file.processes[a].for_each.is_some();
    let interpolate_own = |text: &str, replica: u32| match for_each(i) {
        true => interpolate_item(interpolate(text, replica), item),
        false => interpolate(text, replica),
    };
    let argv = match &p.command {
        Cmd::Argv(a) => a
            .iter()
            .map(|s| interpolate_own(&s.value, replica))
            .collect(),
        Cmd::Shell(s) => vec![
            "/bin/sh".into(),
            "-c".into(),
            interpolate_own(&s.value, replica),
        ],
        Cmd::Missing => vec![],
    };
    let chain = lineage(g, i);
    let mut env: Vec<(OsString, OsString)> = match p.start {
        StartMethod::Fork => engine_env.to_vec(),
        StartMethod::Spawn => engine_env
            .iter()
            .filter(|(k, _)| SPAWN_KEEP.iter().any(|keep| k == keep))
            .cloned()
            .collect(),
    };
    let mut set = |k: &str, v: String| {
        let k = OsString::from(k);
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v.into(),
            None => env.push((k, v.into())),
        }
    };
    for (k, v) in &g.file.env {
        set(&k.value, interpolate(&v.value, replica));
    }
    // fork: the parent chain's env, top-down, then our own; spawn: only our own.
    let env_sources: Vec<usize> = match p.start {
        StartMethod::Fork => chain.clone(),
        StartMethod::Spawn => vec![i],
    };
    for &a in &env_sources {
        for (k, v) in &g.file.processes[a].env {
            let v = interpolate(&v.value, replica);
            // A `for_each` ancestor's value has its item placeholder and
            // escapes too; this instance's item (if any) fills it.
            let v = match for_each(a) {
                true => interpolate_item(v, item),
                false => v,
            };
            set(&k.value, v);
        }
    }
    // The run's marker, whatever the start method: the watchdog finds processes by it.
    if let Some((_, marker)) = engine_env.iter().find(|(k, _)| k == "JOBGRAPH_RUN") {
        set("JOBGRAPH_RUN", marker.to_string_lossy().into_owned());
    }
    set("JOBGRAPH_NAME", p.name.value.clone());
    set("JOBGRAPH_GRAPH", g.name.clone());
    set("JOBGRAPH_ENGINE_PID", engine_pid().to_string());
    set("JOBGRAPH_REPLICA", replica.to_string());
    set("JOBGRAPH_REPLICAS", p.replicas.value.to_string());
    if let Some(item) = item {
        set("JOBGRAPH_ITEM", item.to_string());
    }
    for e in &g.endpoints[i] {
        set(&e.env, e.fd.to_string());
    }
    // cwd: own, else (fork) the nearest ancestor's, else the job file's directory.
    let mut cwd = base.to_path_buf();
    let cwd_sources: Vec<usize> = match p.start {
        StartMethod::Fork => chain,
        StartMethod::Spawn => vec![i],
    };
    for &a in &cwd_sources {
        if let Some(c) = &g.file.processes[a].cwd {
            let c = interpolate(&c.value, replica);
            cwd = base.join(match for_each(a) {
                true => interpolate_item(c, item),
                false => c,
            });
        }
    }
    Launch { argv, env, cwd }
}

/// Where a stream goes for one attempt.
pub enum Sink {
    /// A pipe the engine reads as log lines.
    Log,
    /// /dev/null.
    Null,
    /// The engine's own descriptor.
    Inherit,
    /// The engine's stderr: `stdout = "inherit"` while the engine's stdout
    /// carries only `--events -`.
    EngineStderr,
    /// A file, opened for appending.
    File(std::fs::File),
}

/// The sink for stdout or stderr. Files are opened for appending (writers
/// sharing one never overwrite each other); emptying a file at its first
/// use in a run is the caller's ([`empty_once`]), so every attempt's output is kept.
pub fn sink(output: &Output, base: &Path, replica: u32) -> std::io::Result<Sink> {
    Ok(match output {
        Output::Log => Sink::Log,
        Output::Null => Sink::Null,
        Output::Inherit => Sink::Inherit,
        Output::File(path) => {
            let path = base.join(interpolate(path, replica));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                })?;
            Sink::File(file)
        }
    })
}

/// Empties an output file opened by [`sink`] unless this run has emptied it
/// before (`done` holds each file's device and inode): two spellings of one
/// path, or replicas sharing one, must not wipe each other's output.
pub fn empty_once(
    sink: &Sink,
    done: &mut rustc_hash::FxHashSet<(u64, u64)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Sink::File(f) = sink {
        let meta = f.metadata()?;
        if meta.is_file() && done.insert((meta.dev(), meta.ino())) {
            f.set_len(0)?;
        }
    }
    Ok(())
}

/// The descriptors of one attempt: what goes on 0, 1, 2, the read end of the
/// log pipe, and the engine-side descriptors to close once the child exists.
pub struct FdPlan {
    /// Target descriptor and where it comes from.
    pub fds: Vec<(i32, Source)>,
    /// The engine's end of the log pipe, if any stream goes to the log.
    pub log: Option<OwnedFd>,
    /// Write ends and files the child gets; closed in the engine after spawning.
    pub keep: Vec<OwnedFd>,
}

/// Plans the child's descriptors: stream endpoints (`(fd, engine fd)`, from
/// the graph's descriptor allocation) take their numbers first; stdin, stdout
/// and stderr not taken by an endpoint follow `stdin`, `out` and `err`.
/// Streams going to the log share one pipe, so stdout and stderr lines keep
/// their relative order at one pipe per process.
pub fn fd_plan(
    stdin: Stdin,
    out: Option<Sink>,
    err: Sink,
    null: RawFd,
    endpoints: &[(i32, RawFd)],
    tty: bool,
) -> std::io::Result<FdPlan> {
    let mut plan = FdPlan {
        fds: Vec::with_capacity(3 + endpoints.len()),
        log: None,
        keep: Vec::new(),
    };
    let endpoint = |target: i32| {
        endpoints
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, fd)| Source::Fd(*fd))
    };
    plan.fds.push((
        0,
        endpoint(0).unwrap_or(match stdin {
            Stdin::Null => Source::Fd(null),
            Stdin::Inherit => Source::Inherit,
        }),
    ));
    let mut log_write: Option<RawFd> = None;
    for (target, sink) in [(1, out), (2, Some(err))] {
        let source = match (endpoint(target), sink) {
            (Some(source), _) => source,
            (None, None) => Source::Fd(null),
            (None, Some(Sink::Null)) => Source::Fd(null),
            (None, Some(Sink::Inherit)) => Source::Inherit,
            (None, Some(Sink::EngineStderr)) => Source::Fd(2),
            (None, Some(Sink::File(f))) => {
                let fd = OwnedFd::from(f);
                let raw = fd.as_raw_fd();
                plan.keep.push(fd);
                Source::Fd(raw)
            }
            (None, Some(Sink::Log)) => match log_write {
                Some(w) => Source::Fd(w),
                None => {
                    let (read, write) = if tty {
                        log_terminal()?
                    } else {
                        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                            .map_err(std::io::Error::from)?
                    };
                    let raw = write.as_raw_fd();
                    plan.keep.push(write);
                    plan.log = Some(read);
                    log_write = Some(raw);
                    Source::Fd(raw)
                }
            },
        };
        plan.fds.push((target, source));
    }
    for &(target, fd) in endpoints.iter().filter(|(t, _)| *t >= 3) {
        plan.fds.push((target, Source::Fd(fd)));
    }
    // dup2 runs in order in the child: a source numbered like an earlier
    // target would be overwritten before use. Move every source above the
    // highest target first (close-on-exec copies that the engine drops).
    let top = plan.fds.iter().map(|(t, _)| *t).max().unwrap_or(2);
    for (_, source) in plan.fds.iter_mut() {
        if let Source::Fd(fd) = *source {
            if fd <= top {
                // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
                let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, top + 1) };
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: `copy` is a fresh descriptor owned by nobody else.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
                *source = Source::Fd(copy);
                plan.keep.push(owned);
            }
        }
    }
    Ok(plan)
}

/// A pseudo-terminal in place of the log pipe (`tty = true`): the child writes
/// to the terminal side, so programs that line-buffer or colour only on a
/// terminal do so; the engine reads the other side as it reads a pipe.
/// Returns (the engine's side, the child's side), both close-on-exec.
fn log_terminal() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(std::io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    }
    Ok((pty.master, pty.slave))
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    #[test]
    fn replica_is_the_only_interpolation() {
        assert_eq!(interpolate("w{replica}-$HOME-${X}", 3), "w3-$HOME-${X}");
        assert_eq!(interpolate("{ print }", 3), "{ print }");
    }
}
