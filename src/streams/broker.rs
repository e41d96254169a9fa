//! The queue broker: many producers to many consumers through the engine,
//! framed messages delivered exactly once (balance) or to every consumer
//! (broadcast), with bounded memory.
//!
//! It never handles one message at a time. A read takes up to 256 KiB from a
//! producer's pipe; the complete messages in it form one *batch* (the tail of
//! an unfinished message waits for the next read). Counting messages is one
//! `memchr` pass over each read.
//!
//! Balance: a batch is cut, at message boundaries, into *pieces* no larger
//! than a consumer's pipe, and a consumer is handed a piece only when its pipe
//! can take it (it is writable and nothing is pending for it). Consumer pipes
//! of balance queues are shrunk to one page (`F_SETPIPE_SZ`), so what is
//! committed to a consumer and not yet read by it is one page (plus, for a
//! message longer than that, the rest of that message): a slow consumer gets
//! few messages and never holds the others back. `capacity` counts what the
//! broker itself holds. Broadcast: every consumer gets every batch.
//!
//! The broker keeps its own read end of every consumer pipe. It keeps the
//! pipe alive (a write never fails with EPIPE), and when a consumer exits,
//! what it never read is read back out of the pipe: in balance those messages
//! go back to the front of the queue for another consumer (or its restart),
//! a message it had read only in part is dropped and counted lost. Where the
//! messages start in what is read back is known from the pieces written
//! (kept until a pipe's worth of newer bytes follows them).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes asked for per read from a producer.
const READ_SIZE: usize = 256 * 1024;
/// Largest piece handed to one consumer at once (balance), whatever its pipe.
const PIECE_SIZE: usize = 16 * 1024;
/// First piece for a consumer whose pace is not known yet (balance): one message.
const QUOTA_START: usize = 1;
/// How long a consumer should take to read the piece it is handed: faster, its
/// pieces double (up to its pipe); slower, they shrink to this much of its pace.
const DRAIN_TARGET: Duration = Duration::from_millis(10);
/// The pipe of a consumer that reads a whole page within [`DRAIN_TARGET`]:
/// room to write ahead, for throughput.
const FAST_PIPE: usize = 64 * 1024;
/// How often the broker looks at a larger pipe it waits to see emptied (the
/// kernel only wakes the writer of a pipe that was full).
const TICK: Duration = Duration::from_millis(2);
/// The index that [`Queue::consumer_ready`] takes for the queue's timer.
pub const TIMER: usize = usize::MAX;

/// The memory page: the smallest pipe buffer there is.
fn page_size() -> usize {
    // SAFETY: sysconf only queries a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Delimiters in `bytes`: the messages that end there.
fn count(delim: u8, bytes: &[u8]) -> u64 {
    memchr::memchr_iter(delim, bytes).count() as u64
}

/// How messages are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each message to one consumer.
    Balance,
    /// Each message to every consumer.
    Broadcast,
}

/// A slice of a shared read buffer holding whole messages.
#[derive(Clone)]
struct Piece {
    data: Rc<Vec<u8>>,
    start: usize,
    end: usize,
    msgs: u64,
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }
}

struct Producer {
    file: Option<File>,
    /// Bytes of a message not yet terminated.
    partial: Vec<u8>,
    /// Readiness seen and not yet consumed (mio is edge-triggered).
    readable: bool,
    sent: u64,
    /// The producer process is done for good (no restart will reattach it).
    done: bool,
}

#[derive(Default)]
struct Consumer {
    /// The broker's write end: closing it gives the consumer end-of-file.
    file: Option<File>,
    /// The broker's own read end of the same pipe (close-on-exec): what the
    /// consumer never read is read back through it once the consumer exits.
    reader: Option<File>,
    /// Its pipe buffer, in bytes.
    pipe_size: usize,
    /// The pipe is one page: anything in it fills it, and the consumer
    /// emptying it wakes the broker (the kernel wakes writers of a full pipe).
    one_page: bool,
    /// Balance: the most bytes it is handed at once, from its pace (at least
    /// one message, at most its pipe).
    quota: usize,
    /// When the piece now filling its one-page pipe was written, and its size.
    sent: Option<(Instant, usize)>,
    /// Pieces assigned to this consumer, the first maybe partly written.
    /// Balance: at most one (a piece is handed over only when it can be written).
    pending: VecDeque<Piece>,
    written_in_first: usize,
    /// Messages of the first pending piece already counted as received.
    counted_in_first: u64,
    pending_msgs: u64,
    writable: bool,
    /// Messages whose last byte went into its pipe, less those it left unread
    /// when it exited: so, in the end, the messages the process read.
    received: u64,
    lost: u64,
    /// Messages read back from its pipe (or never written) when it left, put
    /// back in the queue for the others.
    requeued: u64,
    /// Pieces written whole into its pipe, newest last, covering at least a
    /// pipe's worth of bytes: where messages start in what is read back.
    recent: VecDeque<Piece>,
    recent_bytes: usize,
    /// Its process is done for good: no restart will reattach it.
    done: bool,
}

impl Consumer {
    /// A new pipe: `write` for the broker, `read` its own read end. Balance
    /// pipes are shrunk to one page.
    fn attach(&mut self, write: File, read: File, mode: Mode) {
        let fd = write.as_raw_fd();
        let page = page_size();
        if mode == Mode::Balance {
            // SAFETY: F_SETPIPE_SZ only resizes the (still empty) pipe buffer;
            // on failure the pipe keeps its size, which is read back below.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, page as libc::c_int) };
        }
        // SAFETY: F_GETPIPE_SZ only queries the pipe.
        let size = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        self.pipe_size = if size > 0 { size as usize } else { 64 * 1024 };
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
        self.done = false;
    }

    /// Can be handed a piece now (balance).
    fn idle(&self) -> bool {
        self.file.is_some() && self.writable && self.pending.is_empty()
    }

    /// Bytes in its pipe that the consumer has not read yet.
    /// Bytes still in its pipe, seen through the broker's own read end
    /// (also after the write end was closed).
    fn unread_in_pipe(&self) -> usize {
        let Some(f) = &self.reader else { return 0 };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int: the bytes in the pipe.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
            return 0;
        }
        n.max(0) as usize
    }

    fn unread(&self) -> usize {
        let Some(f) = &self.file else { return 0 };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int: the bytes in the pipe.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
            return 0;
        }
        n.max(0) as usize
    }

    /// A piece went whole into the pipe (`counted` of its messages were
    /// already counted as received by partial writes).
    fn wrote_whole(&mut self, piece: Piece, counted: u64) {
        self.received += piece.msgs - counted;
        self.recent_bytes += piece.len();
        self.recent.push_back(piece);
        while self.recent.len() > 1
            && self.recent_bytes - self.recent.front().map_or(0, Piece::len) >= self.pipe_size
        {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
        if self.one_page {
            // Full now; the consumer emptying it is the next writable event.
            self.writable = false;
            self.sent = Some((Instant::now(), self.recent.back().map_or(0, Piece::len)));
        }
    }

    /// Writable again. When its one-page pipe is empty, it read the last piece
    /// in the time since it was written: the next pieces follow its pace.
    fn ready(&mut self) {
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
    /// could still come back to the queue. A larger pipe holding little is
    /// shrunk to a page, so that the kernel wakes the broker when it is read.
    /// `tick`: set when the broker cannot be woken for it and must look again.
    fn holds_unread(&mut self, tick: &mut bool) -> bool {
        if self.file.is_none() {
            return false;
        }
        if !self.pending.is_empty() {
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

/// What became of a piece offered to a consumer.
enum Sent {
    /// In the pipe, or started (the rest is pending for that consumer).
    Taken,
    /// Nothing written: the pipe is full.
    Full(Piece),
    /// Nothing written: the pipe is broken.
    Broken(Piece),
}

/// Counts of one queue, for the summary and events.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueCounts {
    /// Messages read from producers.
    pub messages_in: u64,
    /// Messages read by consumer processes (each consumer counted, in broadcast).
    pub messages_out: u64,
    /// Messages that reached no consumer: read only in part by one that
    /// exited, left unread by one when no other remained, buffered when every
    /// consumer was gone (broadcast: missed by a consumer, each counted).
    pub lost: u64,
    /// Messages a consumer left unread when it exited, put back in the queue
    /// for another consumer (a message can be requeued more than once).
    pub requeued: u64,
    /// Per producer: messages sent.
    pub per_producer: Vec<u64>,
    /// Per consumer: messages received.
    pub per_consumer: Vec<u64>,
    /// Per consumer: messages lost in flight to it.
    pub lost_per_consumer: Vec<u64>,
    /// Per consumer: messages taken back from it and requeued.
    pub requeued_per_consumer: Vec<u64>,
}

/// One queue's state.
pub struct Queue {
    mode: Mode,
    delim: u8,
    capacity: u64,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
    /// Balance: pieces not yet assigned, in arrival order.
    backlog: VecDeque<Piece>,
    backlog_msgs: u64,
    next_consumer: usize,
    messages_in: u64,
    lost_unassigned: u64,
    /// Balance: a one-shot timer, armed while the broker waits to see a larger
    /// pipe emptied.
    timer: Option<File>,
}

impl Queue {
    /// A queue over the engine's ends: producers' read ends, and per consumer
    /// (write end, the broker's own read end of the same pipe). The engine
    /// makes the ends it reads or writes non-blocking.
    pub fn new(
        mode: Mode,
        delim: u8,
        capacity: u32,
        producers: Vec<File>,
        consumers: Vec<(File, File)>,
    ) -> Queue {
        Queue {
            mode,
            delim,
            capacity: u64::from(capacity.max(1)),
            producers: producers
                .into_iter()
                .map(|f| Producer {
                    file: Some(f),
                    partial: Vec::new(),
                    readable: true,
                    sent: 0,
                    done: false,
                })
                .collect(),
            consumers: consumers
                .into_iter()
                .map(|(write, read)| {
                    let mut c = Consumer::default();
                    c.attach(write, read, mode);
                    c
                })
                .collect(),
            backlog: VecDeque::new(),
            backlog_msgs: 0,
            next_consumer: 0,
            messages_in: 0,
            lost_unassigned: 0,
            timer: (mode == Mode::Balance).then(timerfd).flatten(),
        }
    }

    /// The queue's timer, for the event loop to watch (readable when it fires).
    pub fn timer_fd(&self) -> Option<i32> {
        self.timer.as_ref().map(|f| f.as_raw_fd())
    }

    /// Messages held by the engine (not yet written into a consumer's pipe).
    pub fn buffered(&self) -> u64 {
        let per_consumer = self.consumers.iter().map(|c| c.pending_msgs);
        match self.mode {
            Mode::Balance => self.backlog_msgs + per_consumer.sum::<u64>(),
            Mode::Broadcast => per_consumer.max().unwrap_or(0),
        }
    }

    /// Raw descriptors of the producers' read ends still open, by index.
    pub fn producer_fd(&self, i: usize) -> Option<i32> {
        self.producers.get(i)?.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// Raw descriptor of a consumer's write end, if still open.
    pub fn consumer_fd(&self, i: usize) -> Option<i32> {
        self.consumers.get(i)?.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// Readiness reported for producer `i`.
    pub fn producer_ready(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.readable = true;
        }
    }

    /// Readiness reported for consumer `i`.
    pub fn consumer_ready(&mut self, i: usize) {
        if i == TIMER {
            if let Some(mut t) = self.timer.as_ref() {
                let mut expirations = [0u8; 8];
                let _ = t.read(&mut expirations);
            }
        } else if let Some(c) = self.consumers.get_mut(i) {
            c.ready();
        }
    }

    /// Consumer `i` was given end-of-file: every producer is done, nothing is
    /// held, and its end is closed. Restarting it could only read end-of-file.
    pub fn exhausted_for(&self, i: usize) -> bool {
        self.producers.iter().all(|p| p.file.is_none() && p.done)
            && self.buffered() == 0
            && self.consumers.get(i).is_some_and(|c| {
                c.file.is_none() && c.pending.is_empty() && c.unread_in_pipe() == 0
            })
    }

    /// True once every producer is closed and everything was delivered (or lost),
    /// and every consumer end is closed.
    pub fn finished(&self) -> bool {
        self.producers.iter().all(|p| p.file.is_none() && p.done)
            && self.consumers.iter().all(|c| c.file.is_none())
    }

    /// Moves data as far as it can without blocking: reads producers while
    /// under capacity, hands pieces to consumers whose pipes can take them,
    /// closes consumers at the end. Returns the descriptors it closed.
    pub fn pump(&mut self, closed: &mut Vec<i32>) {
        loop {
            let mut progress = false;
            progress |= self.write_pending(closed);
            progress |= self.dispatch(closed);
            if self.buffered() < self.capacity {
                progress |= self.read_producers(closed);
                progress |= self.dispatch(closed);
            }
            if !progress {
                break;
            }
        }
        self.close_if_drained(closed);
    }

    /// Consumers that may still read: attached, or gone but not yet given up
    /// on (its process may restart and reattach). While one remains, messages
    /// wait in the engine (within capacity) rather than being dropped.
    fn alive_consumers(&self) -> usize {
        self.consumers.iter().filter(|c| !c.done).count()
    }

    /// Consumer `k`'s process exited and will be restarted (it reattaches with
    /// a new pipe), or its pipe broke: what it left unread goes back to the
    /// queue (balance; its restart may take it) or is lost to it (broadcast).
    pub fn consumer_gone(&mut self, k: usize, closed: &mut Vec<i32>) {
        self.take_back(k, closed);
    }

    /// Consumer `k`'s process is done for good. What it left unread goes to
    /// the other consumers; when no consumer remains, that and everything
    /// buffered is lost, and the producers' pipes are closed (they get EPIPE /
    /// SIGPIPE, like the left side of a shell pipeline).
    pub fn consumer_done(&mut self, k: usize, closed: &mut Vec<i32>) {
        let Some(c) = self.consumers.get_mut(k) else {
            return;
        };
        c.done = true;
        self.take_back(k, closed);
        if self.alive_consumers() == 0 {
            self.lost_unassigned += self.backlog_msgs;
            self.backlog.clear();
            self.backlog_msgs = 0;
            for i in 0..self.producers.len() {
                // What is already in its pipe was sent: counted in, and lost
                // (at most a pipe's worth: a producer may still be writing).
                let limit = self.producers[i]
                    .file
                    .as_ref()
                    // SAFETY: F_GETPIPE_SZ only queries the pipe.
                    .map(|f| unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETPIPE_SZ) })
                    .map_or(0, |n| n.max(0) as u64);
                self.producers[i].readable = true;
                let mut reads = 0u64;
                while reads * (READ_SIZE as u64) < limit.max(READ_SIZE as u64)
                    && self.producers[i].file.is_some()
                    && self.read_one(i, closed)
                {
                    reads += 1;
                }
                if let Some(f) = self.producers[i].file.take() {
                    closed.push(f.as_raw_fd());
                }
            }
        }
    }

    /// A restarted consumer's new pipe: the write end, and the broker's own
    /// read end of it.
    pub fn reattach_consumer(&mut self, k: usize, file: File, reader: File) {
        let mode = self.mode;
        if let Some(c) = self.consumers.get_mut(k) {
            c.attach(file, reader, mode);
        }
    }

    /// The producer process will not write again (its instance is done).
    pub fn producer_done(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.done = true;
        }
    }

    /// A restarted producer's new read end.
    pub fn reattach_producer(&mut self, i: usize, file: File) {
        // What the previous run left in its pipe is taken first, past capacity if need be.
        let mut closed = Vec::new();
        if let Some(p) = self.producers.get_mut(i) {
            p.readable = true;
        }
        while self.producers.get(i).is_some_and(|p| p.file.is_some())
            && self.read_one(i, &mut closed)
        {}
        if let Some(p) = self.producers.get_mut(i) {
            p.file = Some(file);
            p.readable = true;
            p.partial.clear();
        }
    }

    fn read_producers(&mut self, closed: &mut Vec<i32>) -> bool {
        let mut progress = false;
        for i in 0..self.producers.len() {
            if self.buffered() >= self.capacity {
                break;
            }
            progress |= self.read_one(i, closed);
        }
        progress
    }

    /// One read from producer `i`, if it is readable; true if anything happened.
    fn read_one(&mut self, i: usize, closed: &mut Vec<i32>) -> bool {
        let p = &mut self.producers[i];
        if !p.readable {
            return false;
        }
        let Some(file) = p.file.as_ref() else {
            return false;
        };
        // Read after the unfinished message, in its own buffer: a long message
        // grows in place (amortised linear), it is never copied per read.
        let fd = file.as_raw_fd();
        let mut buf = std::mem::take(&mut p.partial);
        let carried = buf.len();
        // As much as the pipe holds (up to a read), into spare capacity sized
        // to it: the buffer is not zeroed first, and the pieces cut from it,
        // which may be kept a while (in the backlog, or remembered for a
        // read-back), pin no more memory than they hold.
        let mut avail: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int: the bytes in the pipe.
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) } != 0 {
            avail = 0;
        }
        let want = (avail.max(0) as usize).clamp(4096, READ_SIZE);
        buf.reserve(want);
        let result = loop {
            let spare = &mut buf.spare_capacity_mut()[..want];
            // SAFETY: read writes at most `want` bytes, into spare capacity.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
            if n >= 0 {
                // SAFETY: the kernel initialised those n bytes, just past the length.
                unsafe { buf.set_len(carried + n as usize) };
                break Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                break Err(e);
            }
        };
        match result {
            Ok(0) => {
                // EOF: a final unterminated message is still a message.
                buf.truncate(carried);
                if !buf.is_empty() {
                    buf.push(self.delim);
                    self.accept(i, buf, carried + 1);
                }
                self.producers[i].partial.clear();
                if let Some(f) = self.producers[i].file.take() {
                    closed.push(f.as_raw_fd());
                }
                true
            }
            Ok(n) => {
                buf.truncate(carried + n);
                // Only the new bytes can hold the last delimiter.
                let cut =
                    memchr::memrchr(self.delim, &buf[carried..]).map_or(0, |at| carried + at + 1);
                if cut == 0 {
                    self.producers[i].partial = buf;
                    return true;
                }
                self.producers[i].partial = buf[cut..].to_vec();
                buf.truncate(cut);
                let len = buf.len();
                self.accept(i, buf, len);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                buf.truncate(carried);
                self.producers[i].partial = buf;
                self.producers[i].readable = false;
                false
            }
            Err(_) => {
                if let Some(f) = self.producers[i].file.take() {
                    closed.push(f.as_raw_fd());
                }
                true
            }
        }
    }

    /// Takes a buffer of whole messages from producer `i`.
    fn accept(&mut self, i: usize, data: Vec<u8>, len: usize) {
        let msgs = count(self.delim, &data[..len]);
        self.producers[i].sent += msgs;
        self.messages_in += msgs;
        let data = Rc::new(data);
        match self.mode {
            Mode::Balance if self.alive_consumers() == 0 => self.lost_unassigned += msgs,
            Mode::Balance => {
                self.backlog.push_back(Piece {
                    data,
                    start: 0,
                    end: len,
                    msgs,
                });
                self.backlog_msgs += msgs;
            }
            Mode::Broadcast => {
                // A consumer away (restarting, or done) misses what is
                // broadcast meanwhile: counted as lost to it.
                for c in &mut self.consumers {
                    if c.file.is_none() {
                        c.lost += msgs;
                        continue;
                    }
                    c.pending.push_back(Piece {
                        data: Rc::clone(&data),
                        start: 0,
                        end: len,
                        msgs,
                    });
                    c.pending_msgs += msgs;
                }
            }
        }
    }

    /// Balance: hands pieces to the consumers whose pipes can take one now
    /// (writable, nothing pending), round robin. A piece is at most the
    /// consumer's pipe, and at most an even share of the front batch among
    /// the idle consumers. One the pipe refuses goes back to the front.
    fn dispatch(&mut self, closed: &mut Vec<i32>) -> bool {
        if self.mode != Mode::Balance {
            return false;
        }
        let n = self.consumers.len();
        let mut progress = false;
        while let Some(front_msgs) = self.backlog.front().map(|p| p.msgs) {
            let idle: Vec<usize> = (0..n)
                .map(|k| (self.next_consumer + k) % n)
                .filter(|&k| self.consumers[k].idle())
                .collect();
            if idle.is_empty() {
                break;
            }
            let share = front_msgs.div_ceil(idle.len() as u64).max(1);
            for k in idle {
                if self.backlog.is_empty() {
                    break;
                }
                let max = self.consumers[k].quota.min(PIECE_SIZE);
                let piece = split_front(&mut self.backlog, self.delim, max, share);
                self.backlog_msgs -= piece.msgs;
                self.next_consumer = (k + 1) % n;
                match self.send(k, piece) {
                    Sent::Taken => progress = true,
                    Sent::Full(piece) => self.put_back(vec![piece]),
                    Sent::Broken(piece) => {
                        self.put_back(vec![piece]);
                        self.take_back(k, closed);
                        progress = true;
                    }
                }
            }
        }
        progress
    }

    /// Pieces back at the front of the backlog, in their order.
    fn put_back(&mut self, pieces: Vec<Piece>) {
        for piece in pieces.into_iter().rev() {
            self.backlog_msgs += piece.msgs;
            self.backlog.push_front(piece);
        }
    }

    /// Offers a piece to consumer `k` (balance).
    fn send(&mut self, k: usize, piece: Piece) -> Sent {
        let delim = self.delim;
        let c = &mut self.consumers[k];
        let Some(file) = c.file.as_mut() else {
            return Sent::Full(piece);
        };
        let result = loop {
            match file.write(piece.bytes()) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(n) if n == piece.len() => {
                c.wrote_whole(piece, 0);
                Sent::Taken
            }
            Ok(0) => {
                c.writable = false;
                Sent::Full(piece)
            }
            Ok(n) => {
                // Begun (a pipe larger than a page, or a message longer than
                // the pipe): the rest is this consumer's to finish.
                let counted = count(delim, &piece.bytes()[..n]);
                c.received += counted;
                c.counted_in_first = counted;
                c.written_in_first = n;
                c.pending_msgs += piece.msgs;
                c.pending.push_back(piece);
                c.writable = false;
                Sent::Taken
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                c.writable = false;
                Sent::Full(piece)
            }
            Err(_) => Sent::Broken(piece),
        }
    }

    /// Writes what is pending for each consumer (the rest of a begun piece;
    /// in broadcast, its queue of batches).
    fn write_pending(&mut self, closed: &mut Vec<i32>) -> bool {
        let delim = self.delim;
        let mut progress = false;
        for k in 0..self.consumers.len() {
            let mut broken = false;
            loop {
                let c = &mut self.consumers[k];
                if !c.writable {
                    break;
                }
                let Some(front) = c.pending.front() else {
                    break;
                };
                let Some(file) = c.file.as_mut() else { break };
                let bytes = &front.bytes()[c.written_in_first..];
                match file.write(bytes) {
                    Ok(n) if n == bytes.len() => {
                        let Some(done) = c.pending.pop_front() else {
                            break;
                        };
                        c.written_in_first = 0;
                        c.pending_msgs -= done.msgs;
                        let counted = std::mem::take(&mut c.counted_in_first);
                        c.wrote_whole(done, counted);
                        progress = true;
                    }
                    Ok(n) => {
                        let counted = count(delim, &bytes[..n]);
                        c.received += counted;
                        c.counted_in_first += counted;
                        c.written_in_first += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                self.take_back(k, closed);
                progress = true;
            }
        }
        progress
    }

    /// Consumer `k` left (its process exited, or its pipe broke): closes its
    /// write end, reads back what it never read, and settles the counts. Of
    /// the messages written to it, those whose delimiter it read were read by
    /// it; one it had read only in part is lost; the unread ones, and those
    /// not yet written, go back to the front of the queue (balance, while a
    /// consumer remains) or are lost to it (broadcast, or none remains).
    ///
    /// The caller calls this once the consumer process has exited: a reader
    /// still running would race the read back. With the write end closed,
    /// reading back cannot block.
    fn take_back(&mut self, k: usize, closed: &mut Vec<i32>) {
        let delim = self.delim;
        let requeue = self.mode == Mode::Balance && self.alive_consumers() > 0;
        let Some(c) = self.consumers.get_mut(k) else {
            return;
        };
        if let Some(f) = c.file.take() {
            closed.push(f.as_raw_fd());
            drop(f);
        }
        let unread = c.reader.take().map(read_back).unwrap_or_default();
        // What was written and not yet known to be read: the remembered whole
        // pieces, then the pending ones (the first maybe begun).
        let w = std::mem::take(&mut c.written_in_first);
        c.counted_in_first = 0;
        c.pending_msgs = 0;
        c.recent_bytes = 0;
        let mut pieces: Vec<(Piece, usize)> =
            c.recent.drain(..).map(|p| (p.clone(), p.len())).collect();
        pieces.extend(
            c.pending
                .drain(..)
                .enumerate()
                .map(|(i, p)| (p, if i == 0 { w } else { 0 })),
        );
        let written: usize = pieces.iter().map(|(_, n)| n).sum();
        // Every delimiter still in the pipe was counted as received when written.
        c.received = c.received.saturating_sub(count(delim, &unread));
        let mut lost = 0u64;
        let mut back: Vec<Piece> = Vec::new();
        if unread.len() > written {
            // More unread than remembered (the consumer enlarged its pipe): the
            // oldest of it ends at a piece boundary, but where its first message
            // starts is unknown, so that one counts lost; the others go back.
            let old = &unread[..unread.len() - written];
            if let Some(first) = memchr::memchr(delim, old) {
                lost += 1;
                let rest = old[first + 1..].to_vec();
                if !rest.is_empty() {
                    back.push(Piece {
                        msgs: count(delim, &rest),
                        start: 0,
                        end: rest.len(),
                        data: Rc::new(rest),
                    });
                }
            }
        }
        // Bytes of the remembered stream that the consumer read.
        let mut cut = written.saturating_sub(unread.len());
        for (p, _) in pieces {
            let len = p.len();
            if cut >= len {
                cut -= len;
                continue;
            }
            if cut == 0 {
                back.push(p);
                continue;
            }
            let bytes = p.bytes();
            let mut from = cut;
            if bytes[cut - 1] != delim {
                // Read in part: the rest of it is dropped.
                lost += 1;
                from = memchr::memchr(delim, &bytes[cut..]).map_or(len, |at| cut + at + 1);
            }
            if from < len {
                back.push(Piece {
                    msgs: count(delim, &bytes[from..]),
                    start: p.start + from,
                    ..p.clone()
                });
            }
            cut = 0;
        }
        let back_msgs: u64 = back.iter().map(|p| p.msgs).sum();
        if requeue {
            c.requeued += back_msgs;
        } else {
            lost += back_msgs;
        }
        c.lost += lost;
        if requeue {
            self.put_back(back);
        }
    }

    /// After the last producer closed and everything was written, closing the
    /// write ends gives consumers EOF. In balance, only once every message was
    /// read: what a consumer leaves unread comes back, and the others must still
    /// be open to take it. (Emptying a one-page pipe wakes the broker; a larger
    /// pipe, if shrinking failed, is not waited for.)
    fn close_if_drained(&mut self, closed: &mut Vec<i32>) {
        // EOF alone is not the end: a producer that restarts writes again.
        let producers_done = self.producers.iter().all(|p| p.file.is_none() && p.done);
        if !producers_done || !self.backlog.is_empty() {
            return;
        }
        if self.mode == Mode::Balance {
            let mut tick = false;
            let mut waiting = false;
            for c in &mut self.consumers {
                waiting |= c.holds_unread(&mut tick);
            }
            if tick {
                if let Some(t) = &self.timer {
                    arm(t, TICK);
                }
            }
            if waiting {
                return;
            }
        }
        for c in &mut self.consumers {
            if c.pending.is_empty() {
                if let Some(f) = c.file.take() {
                    closed.push(f.as_raw_fd());
                }
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> QueueCounts {
        let per_consumer: Vec<u64> = self.consumers.iter().map(|c| c.received).collect();
        let lost_per_consumer: Vec<u64> = self.consumers.iter().map(|c| c.lost).collect();
        let requeued_per_consumer: Vec<u64> = self.consumers.iter().map(|c| c.requeued).collect();
        QueueCounts {
            messages_in: self.messages_in,
            messages_out: per_consumer.iter().sum(),
            lost: self.lost_unassigned + lost_per_consumer.iter().sum::<u64>(),
            requeued: requeued_per_consumer.iter().sum(),
            per_producer: self.producers.iter().map(|p| p.sent).collect(),
            per_consumer,
            lost_per_consumer,
            requeued_per_consumer,
        }
    }
}

/// A non-blocking, close-on-exec one-shot timer.
fn timerfd() -> Option<File> {
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
fn arm(timer: &File, after: Duration) {
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
fn read_back(mut reader: File) -> Vec<u8> {
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

/// Takes from the front batch a piece of at most `max_bytes` (but at least one
/// message) and at most `max_msgs` messages, cut after a delimiter.
fn split_front(backlog: &mut VecDeque<Piece>, delim: u8, max_bytes: usize, max_msgs: u64) -> Piece {
    let Some(front) = backlog.front_mut() else {
        return empty_piece();
    };
    if front.msgs <= max_msgs && front.end - front.start <= max_bytes {
        return backlog.pop_front().unwrap_or_else(empty_piece);
    }
    let bytes = &front.data[front.start..front.end];
    let mut cut = 0;
    let mut count = 0;
    for at in memchr::memchr_iter(delim, bytes) {
        if count > 0 && (at + 1 > max_bytes || count >= max_msgs) {
            break;
        }
        cut = at + 1;
        count += 1;
    }
    let piece = Piece {
        data: Rc::clone(&front.data),
        start: front.start,
        end: front.start + cut,
        msgs: count,
    };
    front.start += cut;
    front.msgs -= count;
    if front.msgs == 0 {
        backlog.pop_front();
    }
    piece
}

fn empty_piece() -> Piece {
    Piece {
        data: Rc::new(Vec::new()),
        start: 0,
        end: 0,
        msgs: 0,
    }
}

#[cfg(test)]
mod tests {
    //! The broker's accounting on real pipes: the test plays the processes,
    //! writing into the producers' pipes and reading the consumers'.
    use super::*;
    use std::os::fd::OwnedFd;

    fn nonblocking(fd: &impl AsRawFd) {
        // SAFETY: fcntl on a descriptor the test owns.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    /// A consumer's pipe: (the process's read end, the broker's (write, read)).
    fn consumer_pipe() -> (File, (File, File)) {
        let (read, write) = pipe();
        nonblocking(&write);
        nonblocking(&read);
        let keep = read.try_clone().unwrap();
        (File::from(read), (File::from(write), File::from(keep)))
    }

    struct Rig {
        q: Queue,
        producers: Vec<Option<File>>,
        consumers: Vec<File>,
        closed: Vec<i32>,
    }

    impl Rig {
        fn new(mode: Mode, producers: usize, consumers: usize) -> Rig {
            let mut p_ends = Vec::new();
            let mut p_files = Vec::new();
            for _ in 0..producers {
                let (read, write) = pipe();
                nonblocking(&read);
                // SAFETY: F_SETPIPE_SZ only resizes the pipe: room for what a test writes.
                unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
                p_ends.push(Some(File::from(write)));
                p_files.push(File::from(read));
            }
            let mut c_ends = Vec::new();
            let mut c_files = Vec::new();
            for _ in 0..consumers {
                let (mine, theirs) = consumer_pipe();
                c_ends.push(mine);
                c_files.push(theirs);
            }
            Rig {
                q: Queue::new(mode, b'\n', 1024, p_files, c_files),
                producers: p_ends,
                consumers: c_ends,
                closed: Vec::new(),
            }
        }

        /// Producer `i` writes `text` and exits.
        fn produce(&mut self, i: usize, text: &[u8]) {
            let mut f = self.producers[i].take().unwrap();
            f.write_all(text).unwrap();
            drop(f);
            self.q.producer_done(i);
            self.q.producer_ready(i);
        }

        /// One turn of the event loop, every end reported ready.
        fn pump(&mut self) {
            for k in 0..self.consumers.len() {
                self.q.consumer_ready(k);
            }
            for i in 0..self.producers.len() {
                self.q.producer_ready(i);
            }
            self.q.pump(&mut self.closed);
        }

        /// Consumer `k` reads at most `n` bytes now.
        fn read(&mut self, k: usize, n: usize) -> Vec<u8> {
            let mut buf = vec![0u8; n];
            match self.consumers[k].read(&mut buf) {
                Ok(got) => buf.truncate(got),
                Err(e) if e.kind() == ErrorKind::WouldBlock => buf.clear(),
                Err(e) => panic!("{e}"),
            }
            buf
        }

        /// Consumer `k` reads to end-of-file, the broker pumping meanwhile.
        fn read_to_end(&mut self, k: usize) -> Vec<u8> {
            let mut all = Vec::new();
            for _ in 0..100_000 {
                self.pump();
                let mut buf = vec![0u8; 65536];
                match self.consumers[k].read(&mut buf) {
                    Ok(0) => return all,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no end of file; got {} bytes", all.len());
        }
    }

    fn numbers(from: u32, to: u32) -> Vec<u8> {
        (from..=to)
            .flat_map(|n| format!("{n}\n").into_bytes())
            .collect()
    }

    #[test]
    fn consumer_pipes_of_balance_queues_are_one_page() {
        let rig = Rig::new(Mode::Balance, 1, 2);
        for c in &rig.q.consumers {
            assert_eq!(c.pipe_size, page_size());
            assert!(c.one_page);
        }
        let rig = Rig::new(Mode::Broadcast, 1, 1);
        assert!(!rig.q.consumers[0].one_page);
    }

    #[test]
    fn a_new_consumer_is_handed_one_message_then_more_as_it_keeps_up() {
        let mut rig = Rig::new(Mode::Balance, 1, 1);
        rig.produce(0, &numbers(1, 1000));
        // One message, then pieces of 2, 4, 8 bytes (at least a message each).
        rig.pump();
        assert_eq!(rig.read(0, 4096), b"1\n");
        // The next pieces double while it keeps up within the pace target
        // (10 ms). A test thread descheduled for longer (a loaded machine)
        // sees smaller pieces: the exact sizes are checked only when on time.
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        let t = Instant::now();
        for _ in 0..3 {
            rig.pump();
            let piece = rig.read(0, 4096);
            sizes.push(piece.len());
            got.extend_from_slice(&piece);
        }
        if t.elapsed() < Duration::from_millis(5) {
            assert_eq!(sizes, [2, 4, 8], "pieces of 1, 2, then 4 messages");
        }
        got.extend_from_slice(&rig.read_to_end(0));
        assert_eq!(got, &numbers(2, 1000)[..]);
        let c = rig.q.counts();
        assert_eq!((c.messages_in, c.messages_out, c.lost), (1000, 1000, 0));
    }

    #[test]
    fn an_exited_consumers_unread_messages_go_to_another_and_a_half_read_one_is_lost() {
        let mut rig = Rig::new(Mode::Balance, 1, 2);
        rig.q.consumers[0].quota = 4096;
        rig.produce(0, &numbers(1, 100));
        // Only consumer 0 can take anything: it gets all 100 in one piece.
        rig.q.consumers[1].writable = false;
        rig.q.pump(&mut rig.closed);
        assert_eq!(rig.q.consumers[0].unread(), numbers(1, 100).len());
        // It reads "1\n2" and exits.
        assert_eq!(rig.read(0, 3), b"1\n2");
        rig.q.consumer_done(0, &mut rig.closed);
        let c = rig.q.counts();
        assert_eq!(c.per_consumer, [1, 0]);
        assert_eq!(c.lost, 1, "message 2, read in part");
        assert_eq!(c.requeued, 98);
        assert_eq!(rig.q.buffered(), 98);
        // The other consumer gets 3..=100, in order, and then end-of-file.
        assert_eq!(rig.read_to_end(1), &numbers(3, 100)[..]);
        let c = rig.q.counts();
        assert_eq!(c.per_consumer, [1, 98]);
        assert_eq!(c.messages_in, c.messages_out + c.lost);
        assert!(rig.q.finished() || rig.q.consumer_fd(1).is_none());
    }

    #[test]
    fn end_of_file_waits_while_an_unread_pipe_may_come_back() {
        let mut rig = Rig::new(Mode::Balance, 1, 2);
        rig.q.consumers[0].quota = 4096;
        rig.q.consumers[1].writable = false;
        rig.produce(0, &numbers(1, 10));
        rig.q.pump(&mut rig.closed);
        rig.pump();
        // Everything is in consumer 0's pipe; consumer 1 stays open for it.
        assert!(rig.q.consumer_fd(1).is_some());
        assert_eq!(rig.read(1, 100), b"");
        // Consumer 0 reads it all: now both see end-of-file.
        assert_eq!(rig.read(0, 4096), &numbers(1, 10)[..]);
        rig.pump();
        assert!(rig.q.consumer_fd(0).is_none() && rig.q.consumer_fd(1).is_none());
        let c = rig.q.counts();
        assert_eq!((c.messages_out, c.lost, c.requeued), (10, 0, 0));
    }

    #[test]
    fn with_no_consumer_left_what_it_left_unread_is_lost() {
        let mut rig = Rig::new(Mode::Balance, 1, 1);
        rig.produce(0, &numbers(1, 3000));
        rig.pump();
        assert_eq!(rig.read(0, 2), b"1\n");
        rig.q.consumer_done(0, &mut rig.closed);
        let c = rig.q.counts();
        assert_eq!(
            (c.messages_in, c.messages_out, c.lost, c.requeued),
            (3000, 1, 2999, 0)
        );
    }

    #[test]
    fn a_long_message_begun_is_requeued_whole_if_unread_and_lost_if_read_in_part() {
        let long: Vec<u8> = std::iter::repeat_n(b'x', 10_000).chain([b'\n']).collect();
        let mut text = long.clone();
        text.extend_from_slice(b"short\n");
        // Unread: it goes back whole, to the consumer's restart.
        let mut rig = Rig::new(Mode::Balance, 1, 1);
        rig.produce(0, &text);
        rig.pump();
        assert!(rig.q.consumers[0].written_in_first > 0);
        rig.q.consumer_gone(0, &mut rig.closed);
        assert_eq!(
            rig.q.counts().requeued,
            1,
            "the long one; `short` was not handed out"
        );
        let (mine, (write, read)) = consumer_pipe();
        rig.consumers[0] = mine;
        rig.q.reattach_consumer(0, write, read);
        assert_eq!(rig.read_to_end(0), text);
        let c = rig.q.counts();
        assert_eq!((c.messages_in, c.messages_out, c.lost), (2, 2, 0));
        // Read in part: lost, and the next one goes to the restart.
        let mut rig = Rig::new(Mode::Balance, 1, 1);
        rig.produce(0, &text);
        rig.pump();
        assert_eq!(rig.read(0, 100).len(), 100);
        rig.q.consumer_gone(0, &mut rig.closed);
        let (mine, (write, read)) = consumer_pipe();
        rig.consumers[0] = mine;
        rig.q.reattach_consumer(0, write, read);
        assert_eq!(rig.read_to_end(0), b"short\n");
        let c = rig.q.counts();
        assert_eq!(
            (c.messages_in, c.messages_out, c.lost, c.requeued),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn broadcast_counts_what_a_consumer_left_unread_as_lost_to_it() {
        let mut rig = Rig::new(Mode::Broadcast, 1, 2);
        rig.produce(0, &numbers(1, 100));
        rig.pump();
        assert_eq!(rig.read(0, 3), b"1\n2");
        rig.q.consumer_done(0, &mut rig.closed);
        assert_eq!(rig.read_to_end(1), &numbers(1, 100)[..]);
        let c = rig.q.counts();
        assert_eq!(c.per_consumer, [1, 100]);
        assert_eq!(c.lost_per_consumer, [99, 0]);
        assert_eq!(c.requeued, 0);
    }

    #[test]
    fn a_fast_reader_gets_a_larger_pipe() {
        let mut rig = Rig::new(Mode::Balance, 1, 1);
        rig.produce(0, &numbers(1, 100_000));
        let got = rig.read_to_end(0);
        assert_eq!(got, numbers(1, 100_000));
        assert_eq!(rig.q.consumers[0].pipe_size, FAST_PIPE);
    }
}
