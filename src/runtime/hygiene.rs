//! Process hygiene: the subreaper, signalling process groups, and finding
//! every process a run started, even those that left their group.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Makes the engine the reaper of every orphan below it, so that
/// double-forked descendants are re-parented to it rather than to init.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// Opens /dev/null on any of 0, 1, 2 that is closed, so that no pipe or file
/// the engine opens later lands on a standard descriptor number.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open/dup2 on /dev/null are harmless.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 && null != fd {
                    libc::dup2(null, fd);
                    libc::close(null);
                }
            }
        }
    }
}

/// Marks every descriptor above stderr close-on-exec, so that descriptors the
/// engine inherited (a jobserver's, a terminal multiplexer's) never reach a
/// job. Rust opens its own descriptors close-on-exec already.
pub fn cloexec_inherited_fds() {
    // SAFETY: close_range only changes descriptor flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if done {
        return;
    }
    // Kernels before 5.11: walk the descriptor table.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: F_SETFD on a descriptor number; a stale one just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Sends `sig` to process group `pgid`; false if the group has no member left.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    let Ok(sig) = Signal::try_from(sig) else {
        return false;
    };
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// True while any process (zombies included) is in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Sends `sig` to one process.
pub fn signal_pid(pid: i32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid), sig).is_ok()
}

/// Sends signal number `sig` to one process.
pub fn signal_pid_raw(pid: i32, sig: i32) -> bool {
    Signal::try_from(sig).is_ok_and(|sig| signal_pid(pid, sig))
}

/// (pid, parent pid, state) of every process, from /proc.
fn processes() -> Vec<(i32, i32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may itself contain spaces or parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let Some(ppid) = rest.next().and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push((pid, ppid, state));
    }
    out
}

/// Every living (non-zombie) descendant of `root`, except the subtree of `spare`.
pub fn descendants(root: i32, spare: Option<i32>) -> Vec<i32> {
    let procs = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, state) in &procs {
            if ppid == parent && Some(pid) != spare && pid != root {
                frontier.push(pid);
                if state != 'Z' {
                    found.push(pid);
                }
            }
        }
    }
    found
}

/// Processes whose environment carries `marker` (`JOBGRAPH_RUN=...`): used by
/// the watchdog after the engine died, when the process tree no longer leads
/// from the engine to what it started.
pub fn marked(marker: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for (pid, _, state) in processes() {
        if pid == me || state == 'Z' {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|var| var == marker) {
            out.push(pid);
        }
    }
    out
}

/// The controlling terminal on stdin, while the engine is its foreground
/// group: a process that inherits stdin may then be given the terminal.
pub fn foreground_terminal() -> Option<std::io::Stdin> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let fg = nix::unistd::tcgetpgrp(&stdin).ok()?;
    (fg == nix::unistd::getpgrp()).then_some(stdin)
}

/// Gives the terminal's foreground to group `pgid` and wakes it (it may have
/// been stopped by SIGTTIN reading before it got the terminal).
pub fn give_terminal(pgid: i32) -> bool {
    let stdin = std::io::stdin();
    let given = nix::unistd::tcsetpgrp(&stdin, nix::unistd::Pid::from_raw(pgid)).is_ok();
    if given {
        signal_group(pgid, libc::SIGCONT);
    }
    given
}

/// Takes the terminal's foreground back for the engine's own group. SIGTTOU
/// is ignored by the engine (see [`ignore_ttou`]), so this works from the background.
pub fn take_terminal_back() {
    let stdin = std::io::stdin();
    let _ = nix::unistd::tcsetpgrp(&stdin, nix::unistd::getpgrp());
}

/// A background engine may set the terminal's foreground (and write to it)
/// without being stopped. Children get default signal dispositions at spawn.
pub fn ignore_ttou() {
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTTOU,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}

/// Undoes what the engine's starter left in its signal state: signals it
/// blocked (a blocked SIGCHLD hid every exit, and the run hung) and an
/// ignored SIGCHLD (the kernel then reaps children itself, so no exit status
/// is ever seen). Call before anything is forked.
pub fn reset_inherited_signals(held: Option<&nix::sys::signal::SigSet>) {
    use nix::sys::signal::{
        pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
    };
    // A valid set is always a valid argument. What the run holds stays held.
    let mask = held.copied().unwrap_or_else(SigSet::empty);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no handler code; SIGCHLD is a valid signal.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &default) };
}

/// Starts a named helper thread with every signal blocked, so that the
/// engine's signals (SIGCHLD above all) go to the engine's loop thread: a
/// signal taken by a helper wakes a second thread, often on the other core,
/// just to pass the news on.
pub fn spawn_thread<F, T>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    // The thread inherits the mask in force when it is created: block
    // everything around the spawn, so no signal can reach it before it runs.
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    if blocked.is_ok() {
        // Restoring the mask this thread had cannot fail with a valid set.
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    spawned
}
