//! Containment by the kernel: the run lives in a PID namespace of its own.
//!
//! `jobgraph run` forks; the child enters a new PID (and mount) namespace as
//! its init (pid 1), mounts a fresh `/proc` there, and runs the engine. The
//! parent stays outside, forwards signals, hands over the terminal, and exits
//! with the engine's code. The kernel then guarantees what no watchdog can:
//!
//! - when the engine (pid 1) dies, by whatever means, the kernel kills every
//!   process of the namespace, including ones that left their process group,
//!   cleared their environment, or double-forked;
//! - when the outer process is killed (`kill -9` of the pid the user started),
//!   the engine gets SIGKILL through `PR_SET_PDEATHSIG`, and the same follows.
//!
//! Where a namespace cannot be made (no privilege), the run falls back to the
//! marker watchdog ([`super::watchdog`]) and says so once on stderr.

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// How the run's processes are contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// A PID namespace whose init is the engine.
    PidNamespace,
    /// Process groups, a subreaper, and a watchdog that kills marked processes.
    Marker,
    /// None of jobgraph's own: the caller contains the run (embedding, tests).
    None,
}

impl Containment {
    /// The name used in the `run-started` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Containment::PidNamespace => "pid-namespace",
            Containment::Marker => "marker",
            Containment::None => "none",
        }
    }
}

/// Where this process stands after [`enter`].
pub enum Entered {
    /// This is the engine; run the graph with this containment.
    Engine(Containment),
    /// This was the outer process and the engine has ended: exit with this code.
    Exited(u8),
}

/// The environment variable that picks the containment: `marker` forces the
/// fallback (for tests and for hosts where namespaces misbehave).
pub const ENV: &str = "JOBGRAPH_CONTAINMENT";

/// `JOBGRAPH_CONTAINMENT` is unset, `auto` (the default: a namespace where
/// the kernel allows one), or `marker`; anything else is an error in words.
pub fn check_env() -> Result<(), String> {
    match std::env::var(ENV) {
        Err(std::env::VarError::NotPresent) => Ok(()),
        Ok(v) if v.is_empty() || v == "auto" || v == "marker" => Ok(()),
        Ok(v) => Err(format!(
            "{ENV}={v}: expected `auto` or `marker` (lower case); unset it for the default"
        )),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{ENV} is not UTF-8: expected `auto` or `marker`"))
        }
    }
}

/// Puts the run in a PID namespace if it can. Must be called while the
/// process has a single thread (before any thread is started).
pub fn enter() -> Entered {
    let held = HELD.load(std::sync::atomic::Ordering::SeqCst);
    super::hygiene::reset_inherited_signals(held.then(forwarded).as_ref());
    if std::env::var(ENV).is_ok_and(|v| v == "marker") {
        return Entered::Engine(Containment::Marker);
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS) {
        eprintln!(
            "jobgraph: no PID namespace ({e}): containment falls back to a watchdog; a process that leaves its group and clears its environment can outlive a killed engine"
        );
        return Entered::Engine(Containment::Marker);
    }
    // The outer process holds the write end: EOF on it means the outer is gone.
    let Ok((alive_r, alive_w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return Entered::Engine(Containment::Marker);
    };
    let terminal = super::hygiene::foreground_terminal().is_some();
    // Until each side has its handlers, the signals it forwards or acts on
    // wait, blocked: the engine is pid 1 of the namespace, and the kernel
    // drops a signal that pid 1 has no handler for (a SIGTERM sent a few
    // milliseconds after the start was lost, and the run went on).
    let held = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&forwarded()),
        None,
    )
    .is_ok();
    HELD.store(held, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: single-threaded here (the caller's contract); the child only
    // makes async-signal-safe calls before it continues as the engine.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("jobgraph: cannot fork into a PID namespace ({e}); using a watchdog");
            release_signals();
            Entered::Engine(Containment::Marker)
        }
        Ok(ForkResult::Child) => {
            // Dies with the outer process; then the kernel ends the namespace.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            drop(alive_w);
            let _ = nix::fcntl::fcntl(
                &alive_r,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            if matches!(nix::unistd::read(&alive_r, &mut [0u8; 1]), Ok(0)) {
                // The outer process died before the death signal was armed.
                std::process::exit(1);
            }
            drop(alive_r);
            // Our own process group, so the terminal can be handed to us and
            // to the processes we start (a group the namespace can name).
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if terminal {
                // Wait (briefly) for the outer process to hand us the terminal, so
                // the engine sees itself in the foreground and can pass it on.
                for _ in 0..500 {
                    if super::hygiene::foreground_terminal().is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            if !mount_private_proc() {
                eprintln!("jobgraph: cannot mount /proc in the run's namespace; the end-of-run sweep may miss escaped processes");
            }
            Entered::Engine(Containment::PidNamespace)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_r);
            let code = outer_main(child, terminal);
            drop(alive_w);
            Entered::Exited(code)
        }
    }
}

/// A `/proc` that shows the namespace's processes (the sweep and the
/// descendant walk read it), in a mount namespace of our own.
fn mount_private_proc() -> bool {
    use nix::mount::{mount, MsFlags};
    let private = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    private.is_ok()
        && mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .is_ok()
}

/// The signals the outer process forwards to the engine.
fn forwarded() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2]
        .into_iter()
        .collect()
}

/// Whether the forwarded signals are blocked ([`hold_signals`], [`enter`]).
static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From the start of `run`, before the file is read: the signals that end
/// a run are blocked, so that one arriving before the engine has its
/// handlers waits, and interrupts the run as soon as it starts, instead of
/// killing jobgraph with the default action (no exit code of its own, no
/// events file). SIGUSR1 and SIGUSR2 are ignored until then: a status
/// request or a signal to forward to running processes means nothing before
/// any runs (held, SIGUSR2 would reach the first processes to start).
/// [`release_signals`] lets the others in.
pub fn hold_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal::*};
    let ending: SigSet = [SIGINT, SIGTERM, SIGHUP, SIGQUIT].into_iter().collect();
    let held = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&ending),
        None,
    )
    .is_ok();
    HELD.store(held, std::sync::atomic::Ordering::SeqCst);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for sig in [SIGUSR1, SIGUSR2] {
        // SAFETY: SIG_IGN runs no code; the engine installs its handlers later.
        let _ = unsafe { sigaction(sig, &ignore) };
    }
}

/// Unblocks the signals [`enter`] blocked, once this process has its
/// handlers for them; those that arrived meanwhile are delivered now.
pub fn release_signals() {
    if HELD.swap(false, std::sync::atomic::Ordering::SeqCst) {
        // A SIGUSR1 or SIGUSR2 held until now is stale (see [`hold_signals`]).
        let stale: nix::sys::signal::SigSet = [
            nix::sys::signal::Signal::SIGUSR1,
            nix::sys::signal::Signal::SIGUSR2,
        ]
        .into_iter()
        .collect();
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: sigtimedwait takes a pending, blocked signal of the set, if
        // any, without waiting; the set and the timeout are valid.
        while unsafe { libc::sigtimedwait(stale.as_ref(), std::ptr::null_mut(), &now) } > 0 {}
        // Unblocking a valid set cannot fail.
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&forwarded()),
            None,
        );
    }
}

/// The engine's pid, for the outer process's signal handlers.
static ENGINE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The outer process: hands the terminal to the engine, forwards signals,
/// waits, takes the terminal back, and returns the engine's exit code. It
/// cannot start threads (it unshared its PID namespace), so signals are
/// forwarded from their handlers: `kill` is async-signal-safe.
fn outer_main(child: Pid, terminal: bool) -> u8 {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    ENGINE.store(child.as_raw(), std::sync::atomic::Ordering::SeqCst);
    // The child may not have made its group yet: make it from here too.
    let _ = nix::unistd::setpgid(child, child);
    if terminal {
        super::hygiene::ignore_ttou();
        super::hygiene::give_terminal(child.as_raw());
    }
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] {
        // SAFETY: the handler only loads an atomic and calls kill(2).
        let _ = unsafe {
            signal_hook::low_level::register(sig, move || {
                let pid = ENGINE.load(std::sync::atomic::Ordering::SeqCst);
                if pid > 0 {
                    // SAFETY: kill(2) is async-signal-safe.
                    libc::kill(pid, sig);
                }
            })
        };
    }
    // The handlers are in: what arrived meanwhile is forwarded now.
    release_signals();
    let code = wait_for(child);
    if terminal {
        super::hygiene::take_terminal_back();
    }
    code
}

fn wait_for(child: Pid) -> u8 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u8,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128u8.wrapping_add(sig as u8),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}
