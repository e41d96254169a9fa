//! The descriptors of a queue: a producer's read end, a consumer's pipe and
//! its pace (how much it is handed at once, the size of its pipe), the
//! queue's timer, and reading back what a consumer left in its pipe.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::super::ledger::Mode;

/// Largest piece handed to one consumer at once (balance), whatever its pipe.
pub(super) const PIECE_SIZE: usize = 16 * 1024;
/// First piece for a consumer whose pace is not known yet (balance): one message.
const QUOTA_START: usize = 1;
/// How long a consumer should take to read the piece it is handed: faster, its
/// pieces double (up to its pipe); slower, they shrink to this much of its pace.
const DRAIN_TARGET: Duration = Duration::from_millis(10);
/// The pipe of a consumer that reads a whole page within [`DRAIN_TARGET`]:
/// room to write ahead, for throughput.
pub(super) const FAST_PIPE: usize = 64 * 1024;

/// The memory page: the smallest pipe buffer there is.
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf only queries a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Bytes waiting in the pipe of `f` (either end); 0 if that cannot be told.
pub(super) fn bytes_in_pipe(f: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int: the bytes in the pipe.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

/// A producer's read end.
pub(super) struct Producer {
    pub(super) file: Option<File>,
    /// Readiness seen and not yet consumed (mio is edge-triggered).
    pub(super) readable: bool,
}

/// A consumer's pipe, as the broker writes it.
#[derive(Default)]
pub(super) struct Consumer {
    /// The broker's write end: closing it gives the consumer end-of-file.
    pub(super) file: Option<File>,
    /// The broker's own read end of the same pipe (close-on-exec): what the
    /// consumer never read is read back through it once the consumer exits.
    pub(super) reader: Option<File>,
    /// Its pipe buffer, in bytes.
    pub(super) pipe_size: usize,
    /// The pipe is one page: anything in it fills it, and the consumer
    /// emptying it wakes the broker (the kernel wakes writers of a full pipe).
    pub(super) one_page: bool,
    /// Balance: the most bytes it is handed at once, from its pace (at least
    /// one message, at most its pipe).
    pub(super) quota: usize,
    /// When the piece now filling its one-page pipe was written, and its size.
    sent: Option<(Instant, usize)>,
    pub(super) writable: bool,
}

impl Consumer {
    /// A new pipe: `write` for the broker, `read` its own read end. Balance
    /// pipes are shrunk to one page.
    pub(super) fn attach(&mut self, write: File, read: File, mode: Mode) {
        use nix::fcntl::{fcntl, FcntlArg};
        let page = page_size();
        if mode == Mode::Balance {
            // On failure the pipe keeps its size, which is read back below.
            let page = libc::c_int::try_from(page).unwrap_or(4096);
            fcntl(&write, FcntlArg::F_SETPIPE_SZ(page)).ok();
        }
        let size = fcntl(&write, FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
        self.pipe_size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(64 * 1024);
        self.one_page = mode == Mode::Balance && self.pipe_size <= page;
        self.quota = if self.one_page {
            QUOTA_START.min(self.pipe_size)
        } else {
            self.pipe_size
        };
        self.sent = None;
        self.file = Some(write);
        self.reader = Some(read);
        self.writable = true;
    }

    /// Bytes still in its pipe, seen through the broker's own read end
    /// (also after the write end was closed).
    pub(super) fn unread_in_pipe(&self) -> usize {
        self.reader.as_ref().map_or(0, bytes_in_pipe)
    }

    /// Bytes in its pipe that the consumer has not read yet, while the write
    /// end is open.
    pub(super) fn unread(&self) -> usize {
        self.file.as_ref().map_or(0, bytes_in_pipe)
    }

    /// A piece of `len` bytes went whole into the pipe.
    pub(super) fn wrote_whole(&mut self, len: usize) {
        if self.one_page {
            // Full now; the consumer emptying it is the next writable event.
            self.writable = false;
            self.sent = Some((Instant::now(), len));
        }
    }

    /// Writable again. When its one-page pipe is empty, it read the last piece
    /// in the time since it was written: the next pieces follow its pace.
    pub(super) fn ready(&mut self) {
        self.writable = true;
        let Some((at, len)) = self.sent else { return };
        if self.unread() > 0 {
            return;
        }
        self.sent = None;
        let took = at.elapsed();
        if took <= DRAIN_TARGET && self.quota >= self.pipe_size {
            // A whole page in time: a fast consumer gets a larger pipe for good.
            self.resize(FAST_PIPE);
            return;
        }
        self.quota = if took <= DRAIN_TARGET {
            self.quota.saturating_mul(2)
        } else {
            (len as f64 * DRAIN_TARGET.as_secs_f64() / took.as_secs_f64()) as usize
        }
        .clamp(1, self.pipe_size);
    }

    /// Sets its pipe's size (the kernel refuses to shrink it below what it
    /// holds); true if the size changed.
    fn resize(&mut self, size: usize) -> bool {
        let Some(f) = &self.file else { return false };
        // SAFETY: F_SETPIPE_SZ only resizes the pipe buffer; it fails, changing
        // nothing, if the content does not fit.
        let got = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        if got <= 0 || got as usize == self.pipe_size {
            return false;
        }
        self.pipe_size = got as usize;
        self.one_page = self.pipe_size <= page_size();
        self.quota = if self.one_page {
            self.pipe_size
        } else {
            PIECE_SIZE.min(self.pipe_size)
        };
        self.sent = None;
        true
    }

    /// Balance, at the end of the stream: true while what it has not read yet
    /// could still come back to the queue (`pending`: the books hold a piece
    /// for it not fully written). A larger pipe holding little is shrunk to a
    /// page, so that the kernel wakes the broker when it is read.
    /// `tick`: set when the broker cannot be woken for it and must look again.
    pub(super) fn holds_unread(&mut self, pending: bool, tick: &mut bool) -> bool {
        if self.file.is_none() {
            return false;
        }
        if pending {
            return true;
        }
        if self.unread() == 0 {
            return false;
        }
        if !self.one_page && !self.resize(page_size()) {
            *tick = true;
        }
        // Read meanwhile (the pipe was not full, so nobody would say so)?
        self.unread() > 0
    }
}

/// A non-blocking, close-on-exec one-shot timer.
pub(super) fn timerfd() -> Option<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: timerfd_create returns a new descriptor that we own, or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    // SAFETY: a descriptor just created and owned by nobody else.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

/// Makes the timer fire once, after `after`.
pub(super) fn arm(timer: &File, after: Duration) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
        },
    };
    // SAFETY: timerfd_settime reads the spec we pass; the old value is not asked for.
    unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
}

/// Everything left in a pipe whose write end is closed (so it cannot block).
pub(super) fn read_back(mut reader: File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}
