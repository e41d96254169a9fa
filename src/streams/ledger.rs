//! A queue's bookkeeping, apart from its descriptors: which messages the
//! engine holds, which each consumer was handed and which it read, and the
//! counts in / out / lost / requeued. The broker ([`super::broker`]) does the
//! reads and writes and tells the ledger what they moved; the ledger decides
//! nothing about pipes, so its accounting is tested without any.
//!
//! Messages are framed by a delimiter; the ledger works on *pieces* (runs of
//! whole messages in a shared read buffer), never one message at a time.
//!
//! What it keeps, at every step: `in = out + lost + held` (balance), where
//! `held` is what the engine holds and has not counted as read yet; in
//! broadcast the same holds for each consumer. A message goes to one consumer
//! at a time (balance), pieces leave the backlog in arrival order, and
//! `capacity` is compared with [`Ledger::buffered`].

use std::collections::VecDeque;
use std::rc::Rc;

/// How messages are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each message to one consumer.
    Balance,
    /// Each message to every consumer.
    Broadcast,
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

/// Delimiters in `bytes`: the messages that end there.
pub fn count(delim: u8, bytes: &[u8]) -> u64 {
    memchr::memchr_iter(delim, bytes).count() as u64
}

/// A slice of a shared read buffer holding whole messages.
#[derive(Clone)]
pub struct Piece {
    data: Rc<Vec<u8>>,
    start: usize,
    end: usize,
    msgs: u64,
}

impl Piece {
    /// The messages' bytes, each ending with the delimiter.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for a piece of no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Messages in it.
    pub fn msgs(&self) -> u64 {
        self.msgs
    }

    /// A piece of its own buffer.
    fn owned(delim: u8, bytes: Vec<u8>) -> Piece {
        Piece {
            msgs: count(delim, &bytes),
            start: 0,
            end: bytes.len(),
            data: Rc::new(bytes),
        }
    }
}

#[derive(Default)]
struct ProducerBook {
    /// Bytes of a message not yet terminated.
    partial: Vec<u8>,
    sent: u64,
    /// The broker has its read end open.
    open: bool,
    /// The producer process is done for good (no restart will reattach it).
    done: bool,
    /// It can have no other attempt: end-of-file on its pipe is its end.
    single: bool,
}

#[derive(Default)]
struct ConsumerBook {
    /// The broker has its write end open.
    open: bool,
    /// Pieces assigned to this consumer, the first maybe partly written.
    /// Balance: at most one (a piece is handed over only when it can be written).
    pending: VecDeque<Piece>,
    written_in_first: usize,
    /// Messages of the first pending piece already counted as received.
    counted_in_first: u64,
    pending_msgs: u64,
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

impl ConsumerBook {
    /// A piece went whole into its pipe of `window` bytes (`counted` of its
    /// messages were already counted as received by partial writes).
    fn wrote_whole(&mut self, piece: Piece, counted: u64, window: usize) {
        self.received += piece.msgs - counted;
        self.recent_bytes += piece.len();
        self.recent.push_back(piece);
        while self.recent.len() > 1
            && self.recent_bytes - self.recent.front().map_or(0, Piece::len) >= window
        {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
    }

    /// Forgets what was written to it and not known to be read: the
    /// remembered whole pieces, then the pending ones, each with the bytes of
    /// it that went into the pipe.
    fn drain_written(&mut self) -> Vec<(Piece, usize)> {
        let w = std::mem::take(&mut self.written_in_first);
        self.counted_in_first = 0;
        self.pending_msgs = 0;
        self.recent_bytes = 0;
        let mut pieces: Vec<(Piece, usize)> = self
            .recent
            .drain(..)
            .map(|p| {
                let n = p.len();
                (p, n)
            })
            .collect();
        pieces.extend(
            self.pending
                .drain(..)
                .enumerate()
                .map(|(i, p)| (p, if i == 0 { w } else { 0 })),
        );
        pieces
    }
}

/// The bookkeeping of one queue: producers and consumers by index, as the
/// broker numbers them.
pub struct Ledger {
    mode: Mode,
    delim: u8,
    capacity: u64,
    producers: Vec<ProducerBook>,
    consumers: Vec<ConsumerBook>,
    /// Balance: pieces not yet assigned, in arrival order.
    backlog: VecDeque<Piece>,
    backlog_msgs: u64,
    next_consumer: usize,
    messages_in: u64,
    lost_unassigned: u64,
}

impl Ledger {
    /// A queue's books with every end open; `capacity` is at least 1.
    pub fn new(mode: Mode, delim: u8, capacity: u32, producers: usize, consumers: usize) -> Ledger {
        Ledger {
            mode,
            delim,
            capacity: u64::from(capacity.max(1)),
            producers: (0..producers)
                .map(|_| ProducerBook {
                    open: true,
                    ..ProducerBook::default()
                })
                .collect(),
            consumers: (0..consumers)
                .map(|_| ConsumerBook {
                    open: true,
                    ..ConsumerBook::default()
                })
                .collect(),
            backlog: VecDeque::new(),
            backlog_msgs: 0,
            next_consumer: 0,
            messages_in: 0,
            lost_unassigned: 0,
        }
    }

    /// How messages are delivered.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The delimiter that ends each message.
    pub fn delim(&self) -> u8 {
        self.delim
    }

    /// Messages held by the engine (not yet written into a consumer's pipe).
    /// A piece begun counts whole until its last byte is written.
    pub fn buffered(&self) -> u64 {
        let per_consumer = self.consumers.iter().map(|c| c.pending_msgs);
        match self.mode {
            Mode::Balance => self.backlog_msgs + per_consumer.sum::<u64>(),
            Mode::Broadcast => per_consumer.max().unwrap_or(0),
        }
    }

    /// The broker may read producers: it holds less than `capacity`.
    pub fn under_capacity(&self) -> bool {
        self.buffered() < self.capacity
    }

    /// Every producer's end is closed and none will be reattached.
    pub fn producers_done(&self) -> bool {
        self.producers.iter().all(|p| !p.open && p.done)
    }

    /// Every producer is done and nothing waits in the backlog: the consumers
    /// may get end-of-file once what they were handed is read.
    pub fn drained(&self) -> bool {
        self.producers_done() && self.backlog.is_empty()
    }

    /// Consumer `k` was given end-of-file as far as the books tell: every
    /// producer is done, nothing is held, its end is closed. (Its pipe may
    /// still hold bytes: the broker checks that.)
    pub fn exhausted_for(&self, k: usize) -> bool {
        self.producers_done()
            && self.buffered() == 0
            && self
                .consumers
                .get(k)
                .is_some_and(|c| !c.open && c.pending.is_empty())
    }

    /// Every producer is done and every consumer end is closed.
    pub fn finished(&self) -> bool {
        self.producers_done() && self.consumers.iter().all(|c| !c.open)
    }

    /// Consumers that may still read: attached, or gone but not yet given up
    /// on (its process may restart and reattach). While one remains, messages
    /// wait in the engine (within capacity) rather than being dropped.
    pub fn alive_consumers(&self) -> usize {
        self.consumers.iter().filter(|c| !c.done).count()
    }

    /// Consumer `k` is open and has nothing pending: it may be handed a piece.
    pub fn can_take(&self, k: usize) -> bool {
        self.consumers
            .get(k)
            .is_some_and(|c| c.open && c.pending.is_empty())
    }

    /// Something assigned to consumer `k` is not fully written yet.
    pub fn has_pending(&self, k: usize) -> bool {
        self.consumers.get(k).is_some_and(|c| !c.pending.is_empty())
    }

    /// The producer's buffer of an unfinished message, to read after.
    pub fn take_partial(&mut self, i: usize) -> Vec<u8> {
        self.producers
            .get_mut(i)
            .map(|p| std::mem::take(&mut p.partial))
            .unwrap_or_default()
    }

    /// Gives back an unfinished message's buffer (nothing more was read).
    pub fn keep_partial(&mut self, i: usize, buf: Vec<u8>) {
        if let Some(p) = self.producers.get_mut(i) {
            p.partial = buf;
        }
    }

    /// A read from producer `i`: `buf` holds `carried` bytes of an unfinished
    /// message, then the new bytes. The messages completed are accepted, the
    /// unfinished tail is kept.
    pub fn producer_read(&mut self, i: usize, mut buf: Vec<u8>, carried: usize) {
        if i >= self.producers.len() {
            return;
        }
        // Only the new bytes can hold the last delimiter.
        let cut = memchr::memrchr(self.delim, &buf[carried.min(buf.len())..])
            .map_or(0, |at| carried + at + 1);
        if cut == 0 {
            self.producers[i].partial = buf;
            return;
        }
        self.producers[i].partial = buf[cut..].to_vec();
        buf.truncate(cut);
        self.accept(i, buf);
    }

    /// End of file from producer `i`, with `buf` the unfinished message: a
    /// final unterminated message is still a message.
    pub fn producer_eof(&mut self, i: usize, mut buf: Vec<u8>) {
        if i >= self.producers.len() {
            return;
        }
        if !buf.is_empty() {
            buf.push(self.delim);
            self.accept(i, buf);
        }
        self.producers[i].partial.clear();
        // It closed its end and no later attempt will reattach it: the
        // consumers need not wait for its process to exit (a producer that
        // closes its stdout, then reads replies on another queue).
        if self.producers[i].single {
            self.producers[i].done = true;
        }
    }

    /// Producer `i` can have no other attempt (no retries, no restart):
    /// end-of-file on its pipe makes it done.
    pub fn producer_single(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.single = true;
        }
    }

    /// The broker closed producer `i`'s read end.
    pub fn producer_closed(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.open = false;
        }
    }

    /// A restarted producer's new read end: it starts with no unfinished message.
    pub fn producer_reopened(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.open = true;
            p.partial.clear();
        }
    }

    /// The producer process will not write again (its instance is done).
    pub fn producer_done(&mut self, i: usize) {
        if let Some(p) = self.producers.get_mut(i) {
            p.done = true;
        }
    }

    /// Takes a buffer of whole messages from producer `i`.
    fn accept(&mut self, i: usize, data: Vec<u8>) {
        let len = data.len();
        let msgs = count(self.delim, &data);
        self.producers[i].sent += msgs;
        self.messages_in += msgs;
        // A long message grew its buffer by doubling, and the allocator keeps
        // a block it is asked to shrink by less than half: copy it out, so a
        // held message pins its own size, not up to twice that.
        let data = match data.capacity() > len + len / 4 + 4096 {
            true => Rc::new(data.as_slice().to_vec()),
            false => Rc::new(data),
        };
        let piece = Piece {
            data,
            start: 0,
            end: len,
            msgs,
        };
        match self.mode {
            Mode::Balance if self.alive_consumers() == 0 => self.lost_unassigned += msgs,
            Mode::Balance => {
                self.backlog.push_back(piece);
                self.backlog_msgs += msgs;
            }
            Mode::Broadcast => {
                // A consumer away (restarting, or done) misses what is
                // broadcast meanwhile: counted as lost to it.
                for c in &mut self.consumers {
                    if !c.open {
                        c.lost += msgs;
                        continue;
                    }
                    c.pending.push_back(piece.clone());
                    c.pending_msgs += msgs;
                }
            }
        }
    }

    /// Balance: messages in the front batch of the backlog, if any.
    pub fn front_msgs(&self) -> Option<u64> {
        self.backlog.front().map(|p| p.msgs)
    }

    /// The consumers in round-robin order, starting after the last one handed
    /// a piece.
    pub fn rotation(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.consumers.len();
        (0..n).map(move |k| (self.next_consumer + k) % n)
    }

    /// Balance: takes for consumer `k` a piece from the front of the backlog
    /// of at most `max_bytes` (but at least one message) and `max_msgs`
    /// messages. The broker writes it, or puts it back.
    pub fn hand_out(&mut self, k: usize, max_bytes: usize, max_msgs: u64) -> Option<Piece> {
        let piece = split_front(&mut self.backlog, self.delim, max_bytes, max_msgs)?;
        self.backlog_msgs -= piece.msgs;
        self.next_consumer = (k + 1) % self.consumers.len().max(1);
        Some(piece)
    }

    /// Pieces back at the front of the backlog, in their order.
    pub fn put_back(&mut self, pieces: Vec<Piece>) {
        for piece in pieces.into_iter().rev() {
            self.backlog_msgs += piece.msgs;
            self.backlog.push_front(piece);
        }
    }

    /// A piece handed to consumer `k` went whole into its pipe of `window` bytes.
    pub fn wrote_whole(&mut self, k: usize, piece: Piece, window: usize) {
        if let Some(c) = self.consumers.get_mut(k) {
            c.wrote_whole(piece, 0, window);
        }
    }

    /// A piece handed to consumer `k` went into its pipe for its first `n`
    /// bytes only: the rest is this consumer's to finish.
    pub fn begun(&mut self, k: usize, piece: Piece, n: usize) {
        let delim = self.delim;
        let Some(c) = self.consumers.get_mut(k) else {
            return;
        };
        let counted = count(delim, &piece.bytes()[..n.min(piece.len())]);
        c.received += counted;
        c.counted_in_first = counted;
        c.written_in_first = n;
        c.pending_msgs += piece.msgs;
        c.pending.push_back(piece);
    }

    /// What is left to write to consumer `k` of its first pending piece.
    pub fn pending_rest(&self, k: usize) -> Option<&[u8]> {
        let c = self.consumers.get(k)?;
        Some(&c.pending.front()?.bytes()[c.written_in_first..])
    }

    /// `n` more bytes of consumer `k`'s first pending piece went into its pipe
    /// of `window` bytes. Returns the piece's length if it is now written whole.
    pub fn wrote_pending(&mut self, k: usize, n: usize, window: usize) -> Option<usize> {
        let delim = self.delim;
        let c = self.consumers.get_mut(k)?;
        let front = c.pending.front()?;
        let rest = &front.bytes()[c.written_in_first..];
        if n < rest.len() {
            let counted = count(delim, &rest[..n]);
            c.received += counted;
            c.counted_in_first += counted;
            c.written_in_first += n;
            return None;
        }
        let done = c.pending.pop_front()?;
        let len = done.len();
        c.written_in_first = 0;
        c.pending_msgs -= done.msgs;
        let counted = std::mem::take(&mut c.counted_in_first);
        c.wrote_whole(done, counted, window);
        Some(len)
    }

    /// The broker closed consumer `k`'s write end.
    pub fn consumer_closed(&mut self, k: usize) {
        if let Some(c) = self.consumers.get_mut(k) {
            c.open = false;
        }
    }

    /// Consumer `k` has a new pipe (a restart).
    pub fn consumer_attached(&mut self, k: usize) {
        if let Some(c) = self.consumers.get_mut(k) {
            c.open = true;
            c.done = false;
        }
    }

    /// Consumer `k`'s process is done for good; the broker takes back what it
    /// left unread next.
    pub fn consumer_done(&mut self, k: usize) {
        if let Some(c) = self.consumers.get_mut(k) {
            c.done = true;
        }
    }

    /// Whether consumer `k` is done for good (an unknown one is).
    pub fn consumer_given_up(&self, k: usize) -> bool {
        self.consumers.get(k).is_none_or(|c| c.done)
    }

    /// No consumer remains: everything in the backlog is lost.
    pub fn lose_backlog(&mut self) {
        self.lost_unassigned += self.backlog_msgs;
        self.backlog.clear();
        self.backlog_msgs = 0;
    }

    /// Consumer `k` left, and `unread` is what was still in its pipe. Of the
    /// messages written to it, those whose delimiter it read were read by it;
    /// one it had read only in part is lost; the unread ones, and those not
    /// yet written, go back to the front of the queue (balance, while a
    /// consumer remains) or are lost to it (broadcast, or none remains).
    pub fn take_back(&mut self, k: usize, unread: &[u8]) {
        let delim = self.delim;
        let requeue = self.mode == Mode::Balance && self.alive_consumers() > 0;
        let Some(c) = self.consumers.get_mut(k) else {
            return;
        };
        let pieces = c.drain_written();
        // Every delimiter still in the pipe was counted as received when written.
        c.received = c.received.saturating_sub(count(delim, unread));
        let (mut lost, back) = settle(delim, pieces, unread);
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

    /// Bytes of consumer `k`'s first pending piece already in its pipe.
    #[cfg(test)]
    pub(crate) fn written_in_first(&self, k: usize) -> usize {
        self.consumers.get(k).map_or(0, |c| c.written_in_first)
    }
}

/// Splits what was written to a consumer that left into the messages lost
/// (read in part, or cut off where their start is unknown) and the pieces it
/// never read. `pieces` are the written stream (each with the bytes of it
/// written), `unread` the end of that stream still in the pipe.
fn settle(delim: u8, pieces: Vec<(Piece, usize)>, unread: &[u8]) -> (u64, Vec<Piece>) {
    let written: usize = pieces.iter().map(|(_, n)| n).sum();
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
                back.push(Piece::owned(delim, rest));
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
    (lost, back)
}

/// Takes from the front batch a piece of at most `max_bytes` (but at least one
/// message) and at most `max_msgs` messages, cut after a delimiter; `None` if
/// the backlog is empty.
fn split_front(
    backlog: &mut VecDeque<Piece>,
    delim: u8,
    max_bytes: usize,
    max_msgs: u64,
) -> Option<Piece> {
    let front = backlog.front_mut()?;
    if front.msgs <= max_msgs && front.len() <= max_bytes {
        return backlog.pop_front();
    }
    let bytes = front.bytes();
    let mut cut = 0;
    let mut taken = 0;
    for at in memchr::memchr_iter(delim, bytes) {
        if taken > 0 && (at + 1 > max_bytes || taken >= max_msgs) {
            break;
        }
        cut = at + 1;
        taken += 1;
    }
    let piece = Piece {
        data: Rc::clone(&front.data),
        start: front.start,
        end: front.start + cut,
        msgs: taken,
    };
    front.start += cut;
    front.msgs -= taken;
    if front.msgs == 0 {
        backlog.pop_front();
    }
    Some(piece)
}

#[cfg(test)]
mod tests;
