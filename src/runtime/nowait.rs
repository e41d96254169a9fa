//! Launching without waiting for the exec (x86-64 Linux).
//!
//! `posix_spawn` is `clone(CLONE_VM | CLONE_VFORK)`: the engine's thread
//! sleeps while the child resets its signals, moves its descriptors and
//! execs, a median 224 µs per launch here, more than all the engine's own
//! work for a process. This spawner clones without `CLONE_VFORK`: the child
//! runs on a stack of its own in the engine's memory until its exec, and the
//! engine goes on at once, its next launch overlapping the last one's exec.
//! The kernel says when the child is done with that memory:
//! `CLONE_CHILD_CLEARTID` zeroes a word at the child's exec or exit, at the
//! very point where a vfork parent is woken.
//!
//! What is lost is exec's error as the launch's result: a failed exec is
//! known only once the child has exited. So [`super::executor::Local`]
//! launches a program this way only after `posix_spawn` has exec'd it from
//! the same directory in this run; should a later exec fail (the file
//! replaced meanwhile), the child exits with 127 and [`Spawner::exec_error`]
//! says why.
//!
//! The child shares the engine's memory and thread-local storage, so it
//! makes only raw system calls (glibc's wrappers would set the shared
//! `errno` under the engine's feet), reads only its own launch record, and
//! neither allocates nor can panic.

use super::posix::{Prepared, Source};
use std::collections::HashMap;
use std::ffi::c_char;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// Stack of a child until its exec: it makes system calls, nothing else.
const STACK: usize = 64 * 1024;
/// Stacks kept for reuse; a burst's extra ones are unmapped.
const POOL: usize = 16;

/// What the child reads, at a fixed address until its exec or exit.
#[repr(C)]
struct Record {
    /// Non-zero until the kernel clears it at the child's exec or exit.
    tid: AtomicI32,
    /// The errno of the step that failed, written by the child before it exits.
    err: AtomicI32,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    dups: *const (i32, i32),
    ndups: usize,
}

/// A launch whose child may still run in the engine's memory.
struct InFlight {
    pid: i32,
    record: Box<Record>,
    stack: Stack,
    // Pointed at by the record: kept until the child is done with them.
    _strings: Vec<u8>,
    _ptrs: Vec<*const c_char>,
    _dups: Vec<(i32, i32)>,
}

/// A child stack: an anonymous mapping with a guard page at its foot.
struct Stack(*mut libc::c_void);

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh anonymous mapping, owned by the Stack from here on.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack(base);
            if libc::mprotect(base, 4096, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, 16-byte aligned.
        unsafe { self.0.cast::<u8>().add(STACK).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no child runs on it any more.
        unsafe { libc::munmap(self.0, STACK) };
    }
}

/// Launches children without waiting for their exec, and keeps each
/// child's stack and strings until the kernel says it is done with them.
#[derive(Default)]
pub struct Spawner {
    in_flight: Vec<InFlight>,
    pool: Vec<Stack>,
    /// Children whose exec failed, by pid, until reaped.
    failed: HashMap<i32, i32>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("in_flight", &self.in_flight.len())
            .field("failed", &self.failed)
            .finish()
    }
}

// SAFETY: the raw pointers point into buffers the Spawner owns.
unsafe impl Send for Spawner {}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.sweep();
        // A child not yet exec'd still runs on its stack and reads its
        // strings: they are left to it (the engine is exiting anyway).
        for f in std::mem::take(&mut self.in_flight) {
            std::mem::forget(f);
        }
    }
}

impl Spawner {
    /// Spawns `prep` as [`super::posix::spawn`] does (own process group,
    /// every signal at its default and none blocked, `fds[n]` as descriptor
    /// `n`), returning as soon as the child exists.
    pub fn spawn(&mut self, prep: &Prepared, fds: &[(i32, Source)]) -> io::Result<i32> {
        self.sweep();
        let stack = match self.pool.pop() {
            Some(s) => s,
            None => Stack::new()?,
        };
        let (program, argv, envp, cwd) = prep.c_parts();
        let all = || {
            std::iter::once(program)
                .chain(argv.iter().map(|s| s.as_c_str()))
                .chain(envp.iter().map(|s| s.as_c_str()))
                .chain(std::iter::once(cwd))
        };
        // One buffer for every string, then pointers into it: it is not
        // touched again until the child is done.
        let len = all().map(|s| s.to_bytes_with_nul().len()).sum();
        let mut strings = Vec::with_capacity(len);
        let mut offsets = Vec::with_capacity(argv.len() + envp.len() + 2);
        for s in all() {
            offsets.push(strings.len());
            strings.extend_from_slice(s.to_bytes_with_nul());
        }
        let at = |o: usize| strings[o..].as_ptr().cast::<c_char>();
        let mut ptrs = Vec::with_capacity(argv.len() + envp.len() + 2);
        ptrs.extend(offsets[1..=argv.len()].iter().map(|&o| at(o)));
        ptrs.push(std::ptr::null());
        ptrs.extend(
            offsets[argv.len() + 1..offsets.len() - 1]
                .iter()
                .map(|&o| at(o)),
        );
        ptrs.push(std::ptr::null());
        let dups: Vec<(i32, i32)> = fds
            .iter()
            .filter_map(|&(target, source)| match source {
                Source::Fd(fd) => Some((fd, target)),
                Source::Inherit => None,
            })
            .collect();
        let record = Box::new(Record {
            tid: AtomicI32::new(1),
            err: AtomicI32::new(0),
            program: at(offsets[0]),
            argv: ptrs.as_ptr(),
            envp: ptrs[argv.len() + 1..].as_ptr(),
            cwd: at(offsets[offsets.len() - 1]),
            dups: dups.as_ptr(),
            ndups: dups.len(),
        });
        let pid = clone_child(&record, &stack);
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) => {
                self.pool.push(stack);
                return Err(e);
            }
        };
        // The group exists from here on, whatever step the child is at, so a
        // stop sent at once reaches it. Once it has exec'd this fails
        // (EACCES): it made the group itself by then.
        // SAFETY: plain syscall on our own child.
        unsafe { libc::setpgid(pid, pid) };
        self.in_flight.push(InFlight {
            pid,
            record,
            stack,
            _strings: strings,
            _ptrs: ptrs,
            _dups: dups,
        });
        Ok(pid)
    }

    /// Child `pid` was reaped: why its exec failed, if it did.
    pub fn reaped(&mut self, pid: i32) -> Option<i32> {
        self.sweep();
        // Dead, it is done with its memory even if the kernel left the word
        // set (a core dump before its exec does).
        if let Some(at) = self.in_flight.iter().position(|f| f.pid == pid) {
            let f = self.in_flight.swap_remove(at);
            self.release(f);
        }
        self.failed.remove(&pid)
    }

    /// Children gone past their exec (or dead) give back their memory.
    fn sweep(&mut self) {
        let mut at = 0;
        while at < self.in_flight.len() {
            if self.in_flight[at].record.tid.load(Ordering::Acquire) == 0 {
                let f = self.in_flight.swap_remove(at);
                self.release(f);
            } else {
                at += 1;
            }
        }
    }

    fn release(&mut self, f: InFlight) {
        let err = f.record.err.load(Ordering::Acquire);
        if err != 0 {
            self.failed.insert(f.pid, err);
        }
        if self.pool.len() < POOL {
            self.pool.push(f.stack);
        }
    }
}

/// Clones the child with every signal blocked (it must not run the engine's
/// handlers before it has reset them), then restores the thread's mask.
fn clone_child(record: &Record, stack: &Stack) -> io::Result<i32> {
    // SAFETY: the sets are plain data; clone gets a valid stack top, a
    // record that outlives the child's use of it (kept in InFlight), and
    // the record's tid word for CLONE_CHILD_CLEARTID.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        std::ptr::write_bytes(
            std::ptr::addr_of_mut!(all).cast::<u8>(),
            0xff,
            std::mem::size_of::<libc::sigset_t>(),
        );
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD,
            std::ptr::from_ref(record).cast_mut().cast(),
            std::ptr::null_mut::<libc::pid_t>(),
            std::ptr::null_mut::<libc::c_void>(),
            record.tid.as_ptr(),
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        Ok(pid)
    }
}

/// The child, in the engine's memory until its exec: raw system calls only.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the Record the parent keeps alive until this child
    // has exec'd or exited; every pointer in it is NUL-terminated data or a
    // NULL-terminated array, owned alongside.
    unsafe {
        let r = &*arg.cast::<Record>();
        // Handlers are the engine's: every signal goes back to its default
        // (SIGKILL and SIGSTOP cannot be set). 32 and 33, glibc's own, too,
        // so that the program does not start with them ignored.
        let default = KernelSigaction::default();
        let mut sig: usize = 1;
        while sig <= 64 {
            if sig != 9 && sig != 19 {
                raw(libc::SYS_rt_sigaction, [sig, addr(&default), 0, 8]);
            }
            sig += 1;
        }
        check(r, raw(libc::SYS_setpgid, [0, 0, 0, 0]));
        let mut i = 0;
        while i < r.ndups {
            let (from, to) = *r.dups.add(i);
            // As glibc's posix_spawn does for a descriptor onto itself: it
            // only loses its close-on-exec flag.
            let rc = match from == to {
                true => raw(libc::SYS_fcntl, [to as usize, libc::F_SETFD as usize, 0, 0]),
                false => raw(libc::SYS_dup3, [from as usize, to as usize, 0, 0]),
            };
            check(r, rc);
            i += 1;
        }
        check(r, raw(libc::SYS_chdir, [r.cwd as usize, 0, 0, 0]));
        let none: u64 = 0;
        raw(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, addr(&none), 0, 8],
        );
        let rc = raw(
            libc::SYS_execve,
            [r.program as usize, r.argv as usize, r.envp as usize, 0],
        );
        fail(r, rc)
    }
}

/// The kernel's `struct sigaction` on x86-64; all zero is SIG_DFL.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn addr<T>(x: &T) -> usize {
    std::ptr::from_ref(x) as usize
}

/// A failed step (a negative return) ends the child with 127.
fn check(r: &Record, rc: isize) {
    if rc < 0 {
        fail(r, rc);
    }
}

fn fail(r: &Record, rc: isize) -> ! {
    let errno = i32::try_from(rc.wrapping_neg()).unwrap_or(libc::EINVAL);
    r.err.store(errno, Ordering::Release);
    loop {
        raw(libc::SYS_exit_group, [127, 0, 0, 0]);
    }
}

/// A system call that returns `-errno` instead of setting the `errno`
/// shared with the engine's thread.
fn raw(nr: libc::c_long, args: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the syscall instruction with the kernel's x86-64 convention;
    // the callers pass valid pointers for each call.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spawn::Launch;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn prepared(argv: &[&str], cwd: &str) -> Prepared {
        Prepared::new(&Launch {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("X".into(), "from-env".into())],
            cwd: cwd.into(),
        })
        .unwrap()
    }

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "{status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fresh descriptors, owned from here on.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are fresh and ours.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn the_child_gets_its_descriptors_directory_environment_and_own_group() {
        let mut spawner = Spawner::default();
        let (read, write) = pipe();
        let prep = prepared(&["/bin/sh", "-c", "echo $X; pwd; exit 5"], "/tmp");
        let pid = spawner
            .spawn(&prep, &[(1, Source::Fd(write.as_raw_fd()))])
            .unwrap();
        // The group exists as soon as the spawn returns.
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::getpgid(pid) }, pid);
        drop(write);
        drop(prep); // the child reads its own copy of the strings
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        assert_eq!(out, "from-env\n/tmp\n");
        assert_eq!(wait(pid), 5);
        assert_eq!(spawner.reaped(pid), None);
        assert!(spawner.in_flight.is_empty());
    }

    #[test]
    fn a_descriptor_placed_onto_its_own_number_stays_open_across_the_exec() {
        let mut spawner = Spawner::default();
        let (read, write) = pipe(); // both close-on-exec
        let fd = write.as_raw_fd();
        // Through /proc: dash takes only one digit after `>&`.
        let script = format!("echo through > /proc/self/fd/{fd}");
        let prep = prepared(&["/bin/sh", "-c", &script], "/");
        let pid = spawner.spawn(&prep, &[(fd, Source::Fd(fd))]).unwrap();
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        assert_eq!(out, "through\n");
        assert_eq!(wait(pid), 0);
        assert_eq!(spawner.reaped(pid), None);
    }

    #[test]
    fn a_failed_exec_exits_127_and_says_why() {
        let mut spawner = Spawner::default();
        let prep = prepared(&["/no/such/program"], "/");
        let pid = spawner.spawn(&prep, &[]).unwrap();
        assert_eq!(wait(pid), 127);
        assert_eq!(spawner.reaped(pid), Some(libc::ENOENT));
        // Asked once: a later child with the same pid is not blamed.
        assert_eq!(spawner.reaped(pid), None);
        let prep = prepared(&["/bin/true"], "/no/such/dir");
        let pid = spawner.spawn(&prep, &[]).unwrap();
        assert_eq!(wait(pid), 127);
        assert_eq!(spawner.reaped(pid), Some(libc::ENOENT));
    }

    #[test]
    fn stacks_are_reused_once_children_have_exec_d() {
        let mut spawner = Spawner::default();
        let prep = prepared(&["/bin/true"], "/");
        for _ in 0..3 * POOL {
            let pids: Vec<i32> = (0..4).map(|_| spawner.spawn(&prep, &[]).unwrap()).collect();
            for pid in pids {
                assert_eq!(wait(pid), 0);
                assert_eq!(spawner.reaped(pid), None);
            }
        }
        assert!(spawner.in_flight.is_empty());
        assert!(!spawner.pool.is_empty() && spawner.pool.len() <= POOL);
    }
}
