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

//!
//! The accounting (what is held, handed, read, requeued, lost) is the
//! [`Ledger`]'s; this module does the reads and writes and tells it what
//! they moved.

mod pipe;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::ledger::{Ledger, Piece};
pub use super::ledger::{Mode, QueueCounts};
use pipe::{arm, read_back, timerfd, Consumer, Producer, PIECE_SIZE};

/// Bytes asked for per read from a producer.
const READ_SIZE: usize = 256 * 1024;
/// How often the broker looks at a larger pipe it waits to see emptied (the
/// kernel only wakes the writer of a pipe that was full).
const TICK: Duration = Duration::from_millis(2);

/// What became of a piece offered to a consumer.
enum Sent {
    /// In the pipe, or started (the rest is pending for that consumer).
    Taken,
    /// Nothing written: the pipe is full.
    Full(Piece),
    /// Nothing written: the pipe is broken.
    Broken(Piece),
}

/// One queue's state.
pub struct Queue {
    book: Ledger,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
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
            book: Ledger::new(mode, delim, capacity, producers.len(), consumers.len()),
            producers: producers
                .into_iter()
                .map(|f| Producer {
                    file: Some(f),
                    readable: true,
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
            timer: (mode == Mode::Balance).then(timerfd).flatten(),
        }
    }

    /// The queue's timer, for the event loop to watch (readable when it fires).
    pub fn timer_fd(&self) -> Option<i32> {
        self.timer.as_ref().map(|f| f.as_raw_fd())
    }

    /// Messages held by the engine (not yet written into a consumer's pipe).
    pub fn buffered(&self) -> u64 {
        self.book.buffered()
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
        if let Some(c) = self.consumers.get_mut(i) {
            c.ready();
        }
    }

    /// The queue's timer ([`Queue::timer_fd`]) fired.
    pub fn timer_ready(&mut self) {
        if let Some(mut t) = self.timer.as_ref() {
            // Only clears the expiration count: the wake-up is what matters,
            // and a failed read leaves the timer readable, so the loop
            // comes back.
            let mut expirations = [0u8; 8];
            let _ = t.read(&mut expirations);
        }
    }

    /// Consumer `i` was given end-of-file: every producer is done, nothing is
    /// held, and its end is closed. Restarting it could only read end-of-file.
    pub fn exhausted_for(&self, i: usize) -> bool {
        self.book.exhausted_for(i)
            && self
                .consumers
                .get(i)
                .is_some_and(|c| c.unread_in_pipe() == 0)
    }

    /// True once every producer is closed and everything was delivered (or lost),
    /// and every consumer end is closed.
    pub fn finished(&self) -> bool {
        self.book.finished()
    }

    /// Moves data as far as it can without blocking: reads producers while
    /// under capacity, hands pieces to consumers whose pipes can take them,
    /// closes consumers at the end. Returns the descriptors it closed.
    pub fn pump(&mut self, closed: &mut Vec<i32>) {
        loop {
            let mut progress = false;
            progress |= self.write_pending(closed);
            progress |= self.dispatch(closed);
            if self.book.under_capacity() {
                progress |= self.read_producers(closed);
                progress |= self.dispatch(closed);
            }
            if !progress {
                break;
            }
        }
        self.close_if_drained(closed);
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
        if k >= self.consumers.len() {
            return;
        }
        self.book.consumer_done(k);
        self.take_back(k, closed);
        if self.book.alive_consumers() > 0 {
            return;
        }
        self.book.lose_backlog();
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
            self.close_producer(i, closed);
        }
    }

    /// Whether consumer `k` was given up on ([`Queue::consumer_done`]).
    pub fn consumer_given_up(&self, k: usize) -> bool {
        self.book.consumer_given_up(k)
    }

    /// A restarted consumer's new pipe: the write end, and the broker's own
    /// read end of it.
    pub fn reattach_consumer(&mut self, k: usize, file: File, reader: File) {
        let mode = self.book.mode();
        if let Some(c) = self.consumers.get_mut(k) {
            c.attach(file, reader, mode);
            self.book.consumer_attached(k);
        }
    }

    /// Producer `i` can have no other attempt: end-of-file on its pipe
    /// means it is done, without waiting for its process to exit.
    pub fn producer_single(&mut self, i: usize) {
        self.book.producer_single(i);
    }

    /// The producer process will not write again (its instance is done).
    pub fn producer_done(&mut self, i: usize) {
        self.book.producer_done(i);
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
            self.book.producer_reopened(i);
        }
    }

    /// Closes producer `i`'s read end, if open.
    fn close_producer(&mut self, i: usize, closed: &mut Vec<i32>) {
        if let Some(f) = self.producers.get_mut(i).and_then(|p| p.file.take()) {
            closed.push(f.as_raw_fd());
            self.book.producer_closed(i);
        }
    }

    /// Closes consumer `k`'s write end, if open: it gets end-of-file once its
    /// pipe is empty.
    fn close_consumer(&mut self, k: usize, closed: &mut Vec<i32>) {
        if let Some(f) = self.consumers.get_mut(k).and_then(|c| c.file.take()) {
            closed.push(f.as_raw_fd());
            self.book.consumer_closed(k);
        }
    }

    fn read_producers(&mut self, closed: &mut Vec<i32>) -> bool {
        let mut progress = false;
        for i in 0..self.producers.len() {
            if !self.book.under_capacity() {
                break;
            }
            progress |= self.read_one(i, closed);
        }
        progress
    }

    /// One read from producer `i`, if it is readable; true if anything happened.
    fn read_one(&mut self, i: usize, closed: &mut Vec<i32>) -> bool {
        let p = &self.producers[i];
        if !p.readable {
            return false;
        }
        let Some(file) = p.file.as_ref() else {
            return false;
        };
        // Read after the unfinished message, in its own buffer: a long message
        // grows in place (amortised linear), it is never copied per read.
        let fd = file.as_raw_fd();
        let mut buf = self.book.take_partial(i);
        let carried = buf.len();
        // As much as the pipe holds (up to a read), into spare capacity sized
        // to it: the buffer is not zeroed first, and the pieces cut from it,
        // which may be kept a while (in the backlog, or remembered for a
        // read-back), pin no more memory than they hold.
        let want = pipe::bytes_in_pipe(file).clamp(4096, READ_SIZE);
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
                buf.truncate(carried);
                self.book.producer_eof(i, buf);
                self.close_producer(i, closed);
                true
            }
            Ok(n) => {
                buf.truncate(carried + n);
                self.book.producer_read(i, buf, carried);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                buf.truncate(carried);
                self.book.keep_partial(i, buf);
                self.producers[i].readable = false;
                false
            }
            Err(_) => {
                self.close_producer(i, closed);
                true
            }
        }
    }

    /// Consumer `k`'s pipe can be handed a piece now (balance).
    fn idle(&self, k: usize) -> bool {
        self.consumers[k].writable && self.book.can_take(k)
    }

    /// Balance: hands pieces to the consumers whose pipes can take one now
    /// (writable, nothing pending), round robin. A piece is at most the
    /// consumer's pipe, and at most an even share of the front batch among
    /// the idle consumers. One the pipe refuses goes back to the front.
    fn dispatch(&mut self, closed: &mut Vec<i32>) -> bool {
        if self.book.mode() != Mode::Balance {
            return false;
        }
        let mut progress = false;
        while let Some(front_msgs) = self.book.front_msgs() {
            let idle: Vec<usize> = self.book.rotation().filter(|&k| self.idle(k)).collect();
            if idle.is_empty() {
                break;
            }
            let share = front_msgs.div_ceil(idle.len() as u64).max(1);
            for k in idle {
                let max = self.consumers[k].quota.min(PIECE_SIZE);
                let Some(piece) = self.book.hand_out(k, max, share) else {
                    break;
                };
                match self.send(k, piece) {
                    Sent::Taken => progress = true,
                    Sent::Full(piece) => self.book.put_back(vec![piece]),
                    Sent::Broken(piece) => {
                        self.book.put_back(vec![piece]);
                        self.take_back(k, closed);
                        progress = true;
                    }
                }
            }
        }
        progress
    }

    /// Offers a piece to consumer `k` (balance).
    fn send(&mut self, k: usize, piece: Piece) -> Sent {
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
                self.book.wrote_whole(k, piece, c.pipe_size);
                c.wrote_whole(n);
                Sent::Taken
            }
            Ok(0) => {
                c.writable = false;
                Sent::Full(piece)
            }
            Ok(n) => {
                // Begun (a pipe larger than a page, or a message longer than
                // the pipe): the rest is this consumer's to finish.
                self.book.begun(k, piece, n);
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
        let mut progress = false;
        for k in 0..self.consumers.len() {
            let mut broken = false;
            loop {
                let c = &mut self.consumers[k];
                if !c.writable {
                    break;
                }
                let Some(bytes) = self.book.pending_rest(k) else {
                    break;
                };
                let Some(file) = c.file.as_mut() else { break };
                match file.write(bytes) {
                    Ok(n) => {
                        if let Some(len) = self.book.wrote_pending(k, n, c.pipe_size) {
                            c.wrote_whole(len);
                        }
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
    /// write end, reads back what it never read, and lets the books settle
    /// it ([`Ledger::take_back`]).
    ///
    /// The caller calls this once the consumer process has exited: a reader
    /// still running would race the read back. With the write end closed,
    /// reading back cannot block.
    fn take_back(&mut self, k: usize, closed: &mut Vec<i32>) {
        if k >= self.consumers.len() {
            return;
        }
        self.close_consumer(k, closed);
        let unread = self.consumers[k]
            .reader
            .take()
            .map(read_back)
            .unwrap_or_default();
        self.book.take_back(k, &unread);
    }

    /// After the last producer closed and everything was written, closing the
    /// write ends gives consumers EOF. In balance, only once every message was
    /// read: what a consumer leaves unread comes back, and the others must still
    /// be open to take it. (Emptying a one-page pipe wakes the broker; a larger
    /// pipe, if shrinking failed, is not waited for.)
    fn close_if_drained(&mut self, closed: &mut Vec<i32>) {
        // EOF alone is not the end: a producer that restarts writes again.
        if !self.book.drained() {
            return;
        }
        if self.book.mode() == Mode::Balance {
            let mut tick = false;
            let mut waiting = false;
            for (k, c) in self.consumers.iter_mut().enumerate() {
                waiting |= c.holds_unread(self.book.has_pending(k), &mut tick);
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
        for k in 0..self.consumers.len() {
            if !self.book.has_pending(k) {
                self.close_consumer(k, closed);
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> QueueCounts {
        self.book.counts()
    }
}

#[cfg(test)]
mod tests;
