//! The queue broker: many producers to many consumers through the engine,
//! framed messages delivered exactly once (balance) or to every consumer
//! (broadcast), with bounded memory.
//!
//! It never handles one message at a time. A read takes up to 256 KiB from a
//! producer's pipe; the complete messages in it form one *batch* (the tail of
//! an unfinished message waits for the next read). Batches are cut into
//! *pieces* of at most 16 KiB at message boundaries and handed whole to a
//! consumer, so a message is never split between consumers, and order is kept
//! per producer. Counting messages is one `memchr` pass over each read.
//! Cost: a message waits at most for the read it arrived in, so latency is a
//! pipe round trip, not a timer.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// Bytes asked for per read from a producer.
const READ_SIZE: usize = 256 * 1024;
/// Largest piece handed to one consumer at once (balance).
const PIECE_SIZE: usize = 16 * 1024;

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
}

struct Producer {
    file: Option<std::fs::File>,
    /// Bytes of a message not yet terminated.
    partial: Vec<u8>,
    /// Readiness seen and not yet consumed (mio is edge-triggered).
    readable: bool,
    sent: u64,
    /// The producer process is done for good (no restart will reattach it).
    done: bool,
}

struct Consumer {
    file: Option<std::fs::File>,
    /// Pieces assigned to this consumer, the first maybe partly written.
    pending: VecDeque<Piece>,
    written_in_first: usize,
    pending_msgs: u64,
    writable: bool,
    received: u64,
    lost: u64,
    /// Recent pieces fully written, to count what is still unread in the pipe if it dies.
    recent: VecDeque<Piece>,
    recent_bytes: usize,
    /// Its process is done for good: no restart will reattach it.
    done: bool,
}

/// Counts of one queue, for the summary and events.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueCounts {
    /// Messages read from producers.
    pub messages_in: u64,
    /// Messages written to consumers (each consumer counted, in broadcast).
    pub messages_out: u64,
    /// Messages that reached no consumer: in a dead consumer's pipe, or
    /// buffered when every consumer was gone.
    pub lost: u64,
    /// Per producer: messages sent.
    pub per_producer: Vec<u64>,
    /// Per consumer: messages received.
    pub per_consumer: Vec<u64>,
    /// Per consumer: messages lost in flight to it.
    pub lost_per_consumer: Vec<u64>,
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
    pipe_size: usize,
}

impl Queue {
    /// A queue over the engine's ends: producers' read ends, consumers' write
    /// ends, all non-blocking.
    pub fn new(
        mode: Mode,
        delim: u8,
        capacity: u32,
        producers: Vec<std::fs::File>,
        consumers: Vec<std::fs::File>,
    ) -> Queue {
        let pipe_size = consumers
            .first()
            // SAFETY: F_GETPIPE_SZ only queries the pipe.
            .map(|f| unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETPIPE_SZ) })
            .filter(|n| *n > 0)
            .map_or(64 * 1024, |n| n as usize);
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
                .map(|f| Consumer {
                    file: Some(f),
                    pending: VecDeque::new(),
                    written_in_first: 0,
                    pending_msgs: 0,
                    writable: true,
                    received: 0,
                    lost: 0,
                    recent: VecDeque::new(),
                    recent_bytes: 0,
                    done: false,
                })
                .collect(),
            backlog: VecDeque::new(),
            backlog_msgs: 0,
            next_consumer: 0,
            messages_in: 0,
            lost_unassigned: 0,
            pipe_size,
        }
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
        if let Some(c) = self.consumers.get_mut(i) {
            c.writable = true;
        }
    }

    /// True once every producer is closed and everything was delivered (or lost),
    /// and every consumer end is closed.
    pub fn finished(&self) -> bool {
        self.producers.iter().all(|p| p.file.is_none() && p.done)
            && self.consumers.iter().all(|c| c.file.is_none())
    }

    /// Moves data as far as it can without blocking: reads producers while
    /// under capacity, assigns and writes pieces, closes consumers at the end.
    /// Returns the descriptors it closed, for the caller to deregister first.
    pub fn pump(&mut self, closed: &mut Vec<i32>) {
        loop {
            let mut progress = false;
            progress |= self.write_consumers(closed);
            self.assign();
            progress |= self.write_consumers(closed);
            if self.buffered() < self.capacity {
                progress |= self.read_producers(closed);
                self.assign();
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

    /// Consumer `k`'s process is done for good. When no consumer remains, what
    /// is buffered is lost, and the producers' pipes are closed (they get
    /// EPIPE / SIGPIPE, like the left side of a shell pipeline).
    pub fn consumer_done(&mut self, k: usize, closed: &mut Vec<i32>) {
        self.consumer_gone(k, closed);
        if let Some(c) = self.consumers.get_mut(k) {
            c.done = true;
        }
        if self.alive_consumers() == 0 {
            self.lost_unassigned += self.backlog_msgs;
            self.backlog.clear();
            self.backlog_msgs = 0;
            for p in &mut self.producers {
                if let Some(f) = p.file.take() {
                    closed.push(f.as_raw_fd());
                }
            }
        }
    }

    /// A restarted consumer's new write end.
    pub fn reattach_consumer(&mut self, k: usize, file: std::fs::File) {
        if let Some(c) = self.consumers.get_mut(k) {
            c.file = Some(file);
            c.done = false;
            c.writable = true;
        }
    }

    /// The producer process will not write again (its instance is done).
    pub fn producer_done(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.done = true;
        }
    }

    /// A restarted producer's new read end.
    pub fn reattach_producer(&mut self, i: usize, file: std::fs::File) {
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
        let Some(file) = p.file.as_mut() else {
            return false;
        };
        // Read after the unfinished message, in its own buffer: a long message
        // grows in place (amortised linear), it is never copied per read.
        let mut buf = std::mem::take(&mut p.partial);
        let carried = buf.len();
        buf.resize(carried + READ_SIZE, 0);
        let result = loop {
            match file.read(&mut buf[carried..]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
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
        let msgs = memchr::memchr_iter(self.delim, &data[..len]).count() as u64;
        self.producers[i].sent += msgs;
        self.messages_in += msgs;
        let data = Rc::new(data);
        if self.alive_consumers() == 0 {
            self.lost_unassigned += msgs;
            return;
        }
        match self.mode {
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
                // A consumer away (restarting) misses what is broadcast meanwhile: counted as lost.
                for c in self
                    .consumers
                    .iter_mut()
                    .filter(|c| c.file.is_none() && !c.done)
                {
                    c.lost += msgs;
                }
                for c in self.consumers.iter_mut().filter(|c| c.file.is_some()) {
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

    /// Balance: hands pieces to consumers that can take them now (writable,
    /// nothing pending), round robin; a big batch is cut so idle consumers share it.
    fn assign(&mut self) {
        if self.mode != Mode::Balance {
            return;
        }
        let n = self.consumers.len();
        while let Some(front) = self.backlog.front() {
            let idle: Vec<usize> = (0..n)
                .map(|k| (self.next_consumer + k) % n)
                .filter(|&k| {
                    let c = &self.consumers[k];
                    c.file.is_some() && c.writable && c.pending.is_empty()
                })
                .collect();
            let Some(&k) = idle.first() else { return };
            // Cut at a message boundary: at most PIECE_SIZE bytes, and at most an
            // even share of the batch's messages among the idle consumers.
            let share = front.msgs.div_ceil(idle.len() as u64).max(1);
            let piece = split_front(&mut self.backlog, self.delim, PIECE_SIZE, share);
            self.backlog_msgs -= piece.msgs;
            let c = &mut self.consumers[k];
            c.pending_msgs += piece.msgs;
            c.pending.push_back(piece);
            self.next_consumer = (k + 1) % n;
        }
    }

    fn write_consumers(&mut self, closed: &mut Vec<i32>) -> bool {
        let mut progress = false;
        for k in 0..self.consumers.len() {
            loop {
                let c = &mut self.consumers[k];
                if !c.writable || c.pending.is_empty() {
                    break;
                }
                let Some(file) = c.file.as_mut() else { break };
                let Some(front) = c.pending.front() else {
                    break;
                };
                let bytes = &front.bytes()[c.written_in_first..];
                match file.write(bytes) {
                    Ok(n) if n == bytes.len() => {
                        let Some(done) = c.pending.pop_front() else {
                            break;
                        };
                        c.written_in_first = 0;
                        c.pending_msgs -= done.msgs;
                        c.received += done.msgs;
                        c.recent_bytes += done.end - done.start;
                        c.recent.push_back(done);
                        while c.recent_bytes > self.pipe_size + PIECE_SIZE {
                            match c.recent.pop_front() {
                                Some(old) => c.recent_bytes -= old.end - old.start,
                                None => break,
                            }
                        }
                        progress = true;
                    }
                    Ok(n) => {
                        c.written_in_first += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        // EPIPE: the consumer is gone.
                        self.consumer_gone(k, closed);
                        progress = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    /// A consumer exited or its pipe broke: messages still in its pipe are
    /// lost (counted); what it was not yet sent goes to the other consumers
    /// (balance). A message is never delivered twice.
    pub fn consumer_gone(&mut self, k: usize, closed: &mut Vec<i32>) {
        let delim = self.delim;
        let count = |b: &[u8]| memchr::memchr_iter(delim, b).count() as u64;
        let Some(c) = self.consumers.get_mut(k) else {
            return;
        };
        let Some(file) = c.file.take() else { return };
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int: the bytes still in the pipe.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut unread) } != 0 {
            unread = 0;
        }
        closed.push(file.as_raw_fd());
        drop(file);
        let mut unread = unread.max(0) as usize;
        let mut lost = 0u64;
        let mut redeliver: Vec<Piece> = Vec::new();
        // The piece being written: the part in the pipe is its most recent data.
        if let Some(front) = c.pending.pop_front() {
            let w = std::mem::take(&mut c.written_in_first);
            if w == 0 {
                redeliver.push(front);
            } else {
                let written = &front.data[front.start..front.start + w];
                let in_pipe = unread.min(w);
                unread -= in_pipe;
                let consumed = w - in_pipe;
                let got = count(&written[..consumed]);
                let mut gone = count(&written[consumed..]);
                let mut rest = front.start + w;
                if written.last() != Some(&delim) {
                    // The message cut by the partial write is lost, whatever was read of it.
                    gone += 1;
                    rest = memchr::memchr(delim, &front.data[rest..front.end])
                        .map_or(front.end, |at| rest + at + 1);
                }
                c.received += got;
                lost += gone;
                if rest < front.end {
                    redeliver.push(Piece {
                        msgs: front.msgs - got - gone,
                        start: rest,
                        ..front.clone()
                    });
                }
            }
        }
        redeliver.extend(c.pending.drain(..));
        // Fully written pieces: whatever is still unread is their tail.
        for piece in c.recent.iter().rev() {
            if unread == 0 {
                break;
            }
            let take = (piece.end - piece.start).min(unread);
            let n = count(&piece.data[piece.end - take..piece.end]);
            lost += n;
            c.received = c.received.saturating_sub(n);
            unread -= take;
        }
        c.recent.clear();
        c.recent_bytes = 0;
        c.pending_msgs = 0;
        c.lost += lost;
        match self.mode {
            Mode::Balance => {
                for piece in redeliver.into_iter().rev() {
                    self.backlog_msgs += piece.msgs;
                    self.backlog.push_front(piece);
                }
            }
            Mode::Broadcast => c.lost += redeliver.iter().map(|p| p.msgs).sum::<u64>(),
        }
    }

    /// After the last producer closed and everything was written, closing the
    /// write ends gives consumers EOF.
    fn close_if_drained(&mut self, closed: &mut Vec<i32>) {
        // EOF alone is not the end: a producer that restarts writes again.
        let producers_done = self.producers.iter().all(|p| p.file.is_none() && p.done);
        if !producers_done || !self.backlog.is_empty() {
            return;
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
        QueueCounts {
            messages_in: self.messages_in,
            messages_out: per_consumer.iter().sum(),
            lost: self.lost_unassigned + lost_per_consumer.iter().sum::<u64>(),
            per_producer: self.producers.iter().map(|p| p.sent).collect(),
            per_consumer,
            lost_per_consumer,
        }
    }
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
