//! The executor seam: how a unit is launched, signalled, and observed to end.
//!
//! The engine decides *what* to run and *when*; an [`Executor`] does the
//! launching. [`Local`] runs units as processes on this machine (posix_spawn,
//! process groups, wait4). A fake executor drives the engine's unit tests,
//! and a cluster executor can run units elsewhere: a unit is named by an
//! opaque id the executor hands out (a pid here, a job id there), and its end
//! is reported by [`Executor::reap`], polled by the engine's loop.

use super::hygiene;
use super::posix::{self, Prepared, Source};
use std::io;

/// A unit, as its executor names it: here a process id, which is also its
/// process group's id; on a cluster, an id the executor hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(pub i32);

impl UnitId {
    /// The number shown as `pid` in events and the status table.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for UnitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// A unit that ended, as the executor observed it.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The id [`Executor::spawn`] returned (or a stray process of the run).
    pub id: UnitId,
    /// How it ended.
    pub exit: Exit,
    /// Its peak resident set, in KiB, where known (0 if not).
    pub peak_rss_kib: u64,
    /// For a member of a group unit: how its nested run judged it (that run
    /// applied its timeouts, probes and retries); the engine takes its word.
    pub relayed: Option<Relayed>,
}

/// A nested run's account of a member it ran (see [`Executor::group_begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// How it ended.
    pub verdict: Verdict,
    /// Attempts it started (retries and restarts included).
    pub attempts: u32,
    /// Restarts it made under `restart`.
    pub restarts: u32,
}

/// How a nested run judged an instance it ran (see [`Executor::group_begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It succeeded.
    Ok,
    /// It failed (or never ran).
    Failed,
    /// Its `timeout` stopped it.
    TimedOut,
    /// It was stopped (a shutdown, its parent's end).
    Stopped,
}

/// One stream endpoint of a member of a stream group, for
/// [`Executor::group_begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The member's descriptor number.
    pub fd: i32,
    /// The edge's kind.
    pub kind: crate::graph::EdgeKind,
}

/// A queue that ran inside a group unit, with its nested run's counts:
/// the same record as a queue of this run's broker.
pub use super::report::QueueSummary as RelayedQueue;

/// Where a cluster executor placed a unit, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The unit's id.
    pub id: UnitId,
    /// Running, or still waiting in the cluster's queue. While it waits, its
    /// `timeout` and readiness timeout do not run: they count from its start.
    pub running: bool,
    /// The cluster's job id.
    pub job_id: String,
    /// The step id (`JOB.STEP`), for a step.
    pub step_id: Option<String>,
    /// The node it runs on, once known: tcp and http probes of a local
    /// address go there.
    pub node: Option<String>,
}

/// Launches, signals and observes units.
pub trait Executor {
    /// Starts a unit with these descriptors; returns its id, which is also
    /// the id of its process group (signals go to the whole group).
    fn spawn(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<UnitId>;
    /// Why the exec of unit `id`, reaped just now, failed after its launch
    /// had returned (see [`Local`]), if it did; asked once, right after the
    /// reap.
    fn exec_error(&mut self, _id: UnitId) -> Option<io::Error> {
        None
    }
    /// Sends `sig` to every process of the unit's group; false if none is left.
    fn signal_group(&mut self, id: UnitId, sig: i32) -> bool;
    /// Sends `sig` to a unit not yet reaped: its group, and its own process
    /// too if that left the group (`setpgid` to another group), which a
    /// signal to the group alone would never reach.
    fn signal_unit(&mut self, id: UnitId, sig: i32) -> bool {
        self.signal_group(id, sig)
    }
    /// Whether any process of the unit's group is alive.
    fn group_alive(&mut self, id: UnitId) -> bool;
    /// One unit (or stray process) that ended since the last call, if any.
    /// Never blocks.
    fn reap(&mut self) -> Option<Reaped>;
    /// When [`Executor::reap`] should be called next without being woken
    /// (an executor that polls a remote system). Local processes wake the
    /// loop with SIGCHLD, so `None`.
    fn poll_due(&self) -> Option<std::time::Instant> {
        None
    }
    /// Whether a unit's processes run on this machine in the unit's own
    /// process group, so that a listening socket can be traced to them
    /// (readiness must not pass on another program's server). A unit run
    /// elsewhere (under a cluster's daemons) cannot be traced: the probe's
    /// connect alone decides.
    fn owns_local_groups(&self) -> bool {
        true
    }
    /// One news of where a unit runs since the last call, if any. Never blocks.
    fn placed(&mut self) -> Option<Placement> {
        None
    }
    /// Whether this executor runs a stream group, given as its members'
    /// processes and their endpoints, as **one** unit (a nested run of just
    /// those members, on one node). If so, the engine then spawns each
    /// member without its stream descriptors (they are made by the nested
    /// run), each spawn handing out the member's id, and calls
    /// [`Executor::group_end`], which launches the unit. The members' ends
    /// come from [`Executor::reap`] with a [`Verdict`], their readiness from
    /// [`Executor::ready`]; a signal to any member goes to the whole unit.
    fn group_begin(&mut self, members: &[(String, Vec<Endpoint>)]) -> bool {
        let _ = members;
        false
    }
    /// Launches the group unit whose members were just spawned.
    fn group_end(&mut self) {}
    /// A member of a group unit that its nested run found ready, if any.
    fn ready(&mut self) -> Option<UnitId> {
        None
    }
    /// The queues that ran inside group units, with their counts (asked once, at the end).
    fn relayed_queues(&mut self) -> Vec<RelayedQueue> {
        Vec::new()
    }
}

/// Processes on this machine.
///
/// A program's first launch from a directory goes through `posix_spawn`,
/// which reports a failed exec as the launch's error; once one has exec'd,
/// the next launches of it from there do not wait for their exec (see
/// [`super::nowait`]), and a later failure is reported by
/// [`Executor::exec_error`]. `JOBGRAPH_SPAWN=wait` makes every launch wait.
#[derive(Debug)]
pub struct Local {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    nowait: Option<super::nowait::Spawner>,
    /// Program and directory pairs that have exec'd in this run.
    proven: std::collections::HashSet<Vec<u8>>,
    /// The exec error of the child reaped last, if it had one.
    last_exec_error: Option<(UnitId, i32)>,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            nowait: (std::env::var_os("JOBGRAPH_SPAWN").as_deref()
                != Some(std::ffi::OsStr::new("wait")))
            .then(super::nowait::Spawner::default),
            proven: std::collections::HashSet::new(),
            last_exec_error: None,
        }
    }
}

impl Local {
    /// Launches with `posix_spawn` until the program has exec'd once from
    /// that directory, then without waiting for the exec.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn launch(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<i32> {
        let Some(spawner) = &mut self.nowait else {
            return posix::spawn(prepared, fds);
        };
        let (program, _, _, cwd) = prepared.c_parts();
        let mut key = Vec::with_capacity(program.to_bytes().len() + cwd.to_bytes().len() + 1);
        key.extend_from_slice(program.to_bytes_with_nul());
        key.extend_from_slice(cwd.to_bytes());
        if self.proven.contains(&key) {
            match spawner.spawn(prepared, fds) {
                Err(e) if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)) => {
                    // A clone this system refuses (a seccomp filter, say):
                    // posix_spawn from now on.
                    self.nowait = None;
                }
                spawned => return spawned,
            }
        }
        let pid = posix::spawn(prepared, fds)?;
        self.proven.insert(key);
        Ok(pid)
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    fn launch(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<i32> {
        posix::spawn(prepared, fds)
    }

    /// A child was reaped: what the launcher kept for it is freed, and why
    /// its exec failed is kept for [`Executor::exec_error`].
    fn reaped(&mut self, pid: i32) {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if let Some(spawner) = &mut self.nowait {
            self.last_exec_error = spawner.reaped(pid).map(|e| (UnitId(pid), e));
            return;
        }
        let _ = pid;
        self.last_exec_error = None;
    }
}

impl Executor for Local {
    fn spawn(&mut self, prepared: &Prepared, fds: &[(i32, Source)]) -> io::Result<UnitId> {
        self.launch(prepared, fds).map(UnitId)
    }

    fn exec_error(&mut self, id: UnitId) -> Option<io::Error> {
        match self.last_exec_error {
            Some((unit, errno)) if unit == id => {
                self.last_exec_error = None;
                Some(io::Error::from_raw_os_error(errno))
            }
            _ => None,
        }
    }

    fn signal_group(&mut self, id: UnitId, sig: i32) -> bool {
        hygiene::signal_group(id.0, sig)
    }

    fn signal_unit(&mut self, id: UnitId, sig: i32) -> bool {
        let group = hygiene::signal_group(id.0, sig);
        // Unreaped, the pid is still this unit's, so signalling it is safe.
        let pid = nix::unistd::Pid::from_raw(id.0);
        if nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g != pid) {
            return hygiene::signal_pid_raw(id.0, sig) || group;
        }
        group
    }

    fn group_alive(&mut self, id: UnitId) -> bool {
        hygiene::group_alive(id.0)
    }

    fn reap(&mut self) -> Option<Reaped> {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall with valid out-pointers.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
        if pid <= 0 {
            return None;
        }
        self.reaped(pid);
        let exit = if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        };
        Some(Reaped {
            id: UnitId(pid),
            exit,
            peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            relayed: None,
        })
    }
}
