//! The queue's accounting without a descriptor: the tests play the broker
//! (what went into a pipe) and the consumers (what they read of it).

use super::*;
use proptest::prelude::*;

/// A pipe big enough that the window never forgets a piece in these tests.
const WINDOW: usize = 4096;

/// `in = out + lost + held`, where `held` is what the engine holds less what
/// of a begun piece is already counted as received; in broadcast, for each
/// consumer (what it missed counts as lost to it).
fn assert_balanced(l: &Ledger) {
    let c = l.counts();
    let unsent = |b: &ConsumerBook| b.pending_msgs - b.counted_in_first;
    match l.mode {
        Mode::Balance => {
            let held = l.backlog_msgs + l.consumers.iter().map(unsent).sum::<u64>();
            assert_eq!(
                c.messages_in,
                c.messages_out + c.lost + held,
                "in = out + lost + held: {c:?}, held {held}"
            );
        }
        Mode::Broadcast => {
            for (k, b) in l.consumers.iter().enumerate() {
                assert_eq!(
                    c.messages_in,
                    b.received + b.lost + unsent(b),
                    "consumer {k}: in = out + lost + held: {c:?}"
                );
            }
        }
    }
}

/// A queue of one producer that sent `text`.
fn fed(mode: Mode, consumers: usize, text: &[u8]) -> Ledger {
    let mut l = Ledger::new(mode, b'\n', 1024, 1, consumers);
    l.producer_read(0, text.to_vec(), 0);
    l
}

/// Everything consumer `k` may be handed now, as bytes.
fn hand_all(l: &mut Ledger, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = l.hand_out(k, usize::MAX, u64::MAX) {
        out.extend_from_slice(p.bytes());
    }
    out
}

#[test]
fn split_front_cuts_after_a_delimiter_within_the_limits() {
    // (max bytes, max messages) → the piece taken from "aa\nb\ncccc\n".
    let cases: &[(usize, u64, &[u8])] = &[
        (100, 10, b"aa\nb\ncccc\n"),
        (3, 10, b"aa\n"),
        (1, 10, b"aa\n"),
        (100, 2, b"aa\nb\n"),
        (6, 10, b"aa\nb\n"),
        (100, 1, b"aa\n"),
    ];
    for &(max_bytes, max_msgs, want) in cases {
        let mut l = fed(Mode::Balance, 1, b"aa\nb\ncccc\n");
        let p = l.hand_out(0, max_bytes, max_msgs);
        let p = p.as_ref().map(Piece::bytes);
        assert_eq!(p, Some(want), "max {max_bytes} bytes, {max_msgs} msgs");
        assert_eq!(l.buffered(), 3 - count(b'\n', want));
        // The rest follows, in order.
        let mut all = want.to_vec();
        all.extend(hand_all(&mut l, 0));
        assert_eq!(all, b"aa\nb\ncccc\n");
    }
    let mut empty = Ledger::new(Mode::Balance, b'\n', 8, 1, 1);
    assert!(empty.hand_out(0, 10, 10).is_none());
}

#[test]
fn producer_reads_are_framed_and_an_unterminated_last_message_counts() {
    let mut l = Ledger::new(Mode::Balance, b'\n', 1024, 2, 1);
    l.producer_read(0, b"one\ntw".to_vec(), 0);
    let mut buf = l.take_partial(0);
    assert_eq!(buf, b"tw");
    buf.extend_from_slice(b"o\nthr");
    l.producer_read(0, buf, 2);
    l.producer_read(1, b"x\n".to_vec(), 0);
    let rest = l.take_partial(0);
    l.producer_eof(0, rest);
    assert_eq!(l.counts().per_producer, [3, 1]);
    assert_eq!(l.counts().messages_in, 4);
    assert_eq!(hand_all(&mut l, 0), b"one\ntwo\nx\nthr\n");
}

/// How consumer 0 leaves in a requeue case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaves {
    /// Exits to be restarted: consumer 1 is alive too.
    Gone,
    /// Done for good, and so is consumer 1: nobody can take its messages.
    LastDone,
}

/// A requeue case: consumer 0 is handed "1\n2\n3\n", (`written`) bytes of it
/// go into its pipe, it reads (`read`) of them and leaves; then (out, lost,
/// requeued, buffered), and what the next consumer is handed.
type Requeue = (usize, usize, Leaves, (u64, u64, u64, u64), &'static [u8]);

#[rustfmt::skip]
const REQUEUE: &[Requeue] = &[
    (6, 0, Leaves::Gone, (0, 0, 3, 3), b"1\n2\n3\n"),
    (6, 2, Leaves::Gone, (1, 0, 2, 2), b"2\n3\n"),
    (6, 3, Leaves::Gone, (1, 1, 1, 1), b"3\n"),
    (6, 6, Leaves::Gone, (3, 0, 0, 0), b""),
    (3, 0, Leaves::Gone, (0, 0, 3, 3), b"1\n2\n3\n"),
    (3, 2, Leaves::Gone, (1, 0, 2, 2), b"2\n3\n"),
    (3, 3, Leaves::Gone, (1, 1, 1, 1), b"3\n"),
    (6, 2, Leaves::LastDone, (1, 2, 0, 0), b""),
    (3, 3, Leaves::LastDone, (1, 2, 0, 0), b""),
];

#[test]
fn what_a_consumer_left_unread_is_requeued_and_a_half_read_message_lost() {
    let text = b"1\n2\n3\n";
    for (i, &(written, read, leaves, want, rest)) in REQUEUE.iter().enumerate() {
        let mut l = fed(Mode::Balance, 2, text);
        let piece = l.hand_out(0, 1024, 10).expect("a piece");
        if written == piece.len() {
            l.wrote_whole(0, piece, WINDOW);
        } else {
            l.begun(0, piece, written);
        }
        assert_balanced(&l);
        if leaves == Leaves::LastDone {
            l.consumer_done(1);
            l.consumer_closed(1);
            l.take_back(1, b"");
            l.consumer_done(0);
        }
        l.consumer_closed(0);
        l.take_back(0, &text[read..written]);
        let c = l.counts();
        let got = (c.messages_out, c.lost, c.requeued, l.buffered());
        assert_eq!(got, want, "case {i}: (out, lost, requeued, buffered)");
        assert_balanced(&l);
        assert_eq!(hand_all(&mut l, 1), rest, "case {i}: requeued, in order");
    }
}

#[test]
fn more_unread_than_remembered_loses_only_the_message_whose_start_is_unknown() {
    // A window of 2 bytes remembers only the last piece, "3\n"; the pipe
    // still holds "2\n3\n" (it grew): the start of "2\n" is not known.
    let mut l = fed(Mode::Balance, 2, b"1\n2\n3\n");
    for _ in 0..3 {
        let p = l.hand_out(0, 2, 1).expect("a piece");
        l.wrote_whole(0, p, 2);
    }
    l.consumer_closed(0);
    l.take_back(0, b"2\n3\n");
    let c = l.counts();
    assert_eq!((c.messages_out, c.lost, c.requeued), (1, 1, 1));
    assert_balanced(&l);
    assert_eq!(hand_all(&mut l, 1), b"3\n");
}

#[test]
fn broadcast_counts_what_each_consumer_missed_as_lost_to_it() {
    // Consumer 0 reads `read` bytes of "1\n2\n3\n" and is done; consumer 1
    // was away (restarting) when the messages came.
    // (read) → (received by 0, lost to 0)
    let cases: &[(usize, (u64, u64))] = &[(0, (0, 3)), (2, (1, 2)), (3, (1, 2)), (6, (3, 0))];
    for &(read, want) in cases {
        let mut l = Ledger::new(Mode::Broadcast, b'\n', 1024, 1, 2);
        l.consumer_closed(1);
        l.producer_read(0, b"1\n2\n3\n".to_vec(), 0);
        assert_eq!(l.buffered(), 3);
        let rest = l.pending_rest(0).map(<[u8]>::to_vec).unwrap_or_default();
        assert_eq!(l.wrote_pending(0, rest.len(), WINDOW), Some(6));
        assert_eq!(l.buffered(), 0);
        assert_balanced(&l);
        l.consumer_done(0);
        l.consumer_closed(0);
        l.take_back(0, &rest[read..]);
        let c = l.counts();
        assert_eq!(
            (c.per_consumer[0], c.lost_per_consumer[0]),
            want,
            "read {read}"
        );
        assert_eq!(c.lost_per_consumer[1], 3, "consumer 1 was away");
        assert_eq!(c.requeued, 0, "broadcast never requeues");
        assert_balanced(&l);
        // Back, it gets what comes next.
        l.consumer_attached(1);
        l.producer_read(0, b"4\n".to_vec(), 0);
        assert_eq!(l.pending_rest(1), Some(&b"4\n"[..]));
        assert_balanced(&l);
    }
}

#[test]
fn capacity_counts_a_begun_piece_until_its_last_byte_is_written() {
    let mut l = Ledger::new(Mode::Balance, b'\n', 2, 1, 1);
    assert!(l.under_capacity());
    l.producer_read(0, b"a\n".to_vec(), 0);
    assert!(l.under_capacity());
    l.producer_read(0, b"bb\n".to_vec(), 0);
    assert!(!l.under_capacity());
    let p = l.hand_out(0, 1024, 10).expect("a piece");
    assert_eq!(p.bytes(), b"a\n");
    l.begun(0, p, 1);
    assert!(!l.can_take(0), "one piece at a time");
    assert!(!l.under_capacity(), "begun, still held");
    assert_eq!(l.wrote_pending(0, 1, WINDOW), Some(2));
    assert!(l.under_capacity());
    assert_eq!(l.buffered(), 1);
    // Broadcast: the slowest consumer's backlog is what is held.
    let mut l = Ledger::new(Mode::Broadcast, b'\n', 2, 1, 2);
    l.producer_read(0, b"a\n".to_vec(), 0);
    l.producer_read(0, b"b\n".to_vec(), 0);
    assert!(!l.under_capacity());
    while let Some(n) = l.pending_rest(0).map(<[u8]>::len) {
        l.wrote_pending(0, n, WINDOW);
    }
    assert!(!l.under_capacity(), "consumer 1 still holds both");
    assert_balanced(&l);
}

#[test]
fn with_no_consumer_left_the_backlog_and_what_comes_later_are_lost() {
    let mut l = fed(Mode::Balance, 1, b"1\n2\n");
    l.consumer_done(0);
    l.consumer_closed(0);
    l.take_back(0, b"");
    l.lose_backlog();
    l.producer_read(0, b"3\n".to_vec(), 0);
    let c = l.counts();
    assert_eq!((c.messages_in, c.messages_out, c.lost), (3, 0, 3));
    assert_eq!(l.buffered(), 0);
    assert_balanced(&l);
}

#[test]
fn pieces_go_round_robin_and_the_end_is_told() {
    let mut l = fed(Mode::Balance, 3, b"1\n2\n");
    assert_eq!(l.rotation().collect::<Vec<_>>(), [0, 1, 2]);
    let p = l.hand_out(1, 1024, 1).expect("a piece");
    l.wrote_whole(1, p, WINDOW);
    assert_eq!(l.rotation().collect::<Vec<_>>(), [2, 0, 1]);
    assert!(!l.drained() && !l.finished());
    l.producer_closed(0);
    assert!(!l.drained(), "a producer not done may be restarted");
    l.producer_done(0);
    assert!(!l.drained(), "one message left");
    let p = l.hand_out(2, 1024, 1).expect("a piece");
    l.wrote_whole(2, p, WINDOW);
    assert!(l.drained() && !l.finished());
    for k in 0..3 {
        assert!(!l.exhausted_for(k), "{k} is open");
        l.consumer_closed(k);
        assert!(l.exhausted_for(k));
    }
    assert!(l.finished());
}

/// One step of a random run, as the broker and the processes would take it.
#[derive(Debug, Clone)]
enum Op {
    /// Producer `p` writes its next `n` bytes.
    Produce(usize, usize),
    /// Producer `p` ends (an unfinished message still counts).
    ProducerEnd(usize),
    /// The broker hands consumer `k` a piece (balance) or writes what is
    /// pending for it, as far as its pipe has room.
    Write(usize, usize, u64),
    /// Consumer `k` reads up to `n` bytes.
    Read(usize, usize),
    /// Consumer `k` exits, to be restarted.
    Gone(usize),
    /// Consumer `k` restarts with a new pipe.
    Reattach(usize),
    /// Consumer `k` is done for good.
    Done(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..40usize).prop_map(|(p, n)| Op::Produce(p, n)),
        1 => (0..2usize).prop_map(Op::ProducerEnd),
        5 => (0..3usize, 1..48usize, 1..4u64).prop_map(|(k, b, m)| Op::Write(k, b, m)),
        5 => (0..3usize, 1..24usize).prop_map(|(k, n)| Op::Read(k, n)),
        1 => (0..3usize).prop_map(Op::Gone),
        1 => (0..3usize).prop_map(Op::Reattach),
        1 => (0..3usize).prop_map(Op::Done),
    ]
}

/// The processes around a ledger: producers writing numbered messages,
/// consumers with a pipe of [`Sim::PIPE`] bytes.
struct Sim {
    l: Ledger,
    /// Per producer: the next message number, bytes of it already sent, ended.
    producers: Vec<(u32, usize, bool)>,
    /// Per consumer: its pipe, the bytes read of its current message,
    /// attached, done.
    consumers: Vec<(Vec<u8>, Vec<u8>, bool, bool)>,
    /// Per consumer: the messages it read whole.
    delivered: Vec<Vec<Vec<u8>>>,
}

impl Sim {
    const PIPE: usize = 32;

    fn new(mode: Mode) -> Sim {
        Sim {
            l: Ledger::new(mode, b'\n', 8, 2, 3),
            producers: vec![(0, 0, false); 2],
            consumers: vec![(Vec::new(), Vec::new(), true, false); 3],
            delivered: vec![Vec::new(); 3],
        }
    }

    fn message(p: usize, n: u32) -> Vec<u8> {
        format!("p{p}-{n:06}\n").into_bytes()
    }

    fn produce(&mut self, p: usize, mut n: usize) {
        if self.producers[p].2 {
            return;
        }
        let mut bytes = self.l.take_partial(p);
        let carried = bytes.len();
        while n > 0 {
            let (num, off, _) = self.producers[p];
            let msg = Sim::message(p, num);
            let take = (msg.len() - off).min(n);
            bytes.extend_from_slice(&msg[off..off + take]);
            n -= take;
            self.producers[p].1 += take;
            if self.producers[p].1 == msg.len() {
                self.producers[p] = (num + 1, 0, false);
            }
        }
        self.l.producer_read(p, bytes, carried);
    }

    fn end(&mut self, p: usize) {
        if self.producers[p].2 {
            return;
        }
        // The unfinished message is completed by the ledger's delimiter.
        let (num, off, _) = self.producers[p];
        self.producers[p] = (num + u32::from(off > 0), 0, true);
        let partial = self.l.take_partial(p);
        self.l.producer_eof(p, partial);
        self.l.producer_closed(p);
        self.l.producer_done(p);
    }

    fn write(&mut self, k: usize, max_bytes: usize, max_msgs: u64) {
        let room = Sim::PIPE - self.consumers[k].0.len();
        if !self.consumers[k].2 || room == 0 {
            return;
        }
        if let Some(rest) = self.l.pending_rest(k) {
            let n = rest.len().min(room);
            let written = rest[..n].to_vec();
            self.consumers[k].0.extend_from_slice(&written);
            self.l.wrote_pending(k, n, Sim::PIPE);
            return;
        }
        if self.l.mode() != Mode::Balance || !self.l.can_take(k) {
            return;
        }
        let Some(piece) = self.l.hand_out(k, max_bytes, max_msgs) else {
            return;
        };
        let n = piece.len().min(room);
        self.consumers[k].0.extend_from_slice(&piece.bytes()[..n]);
        if n == piece.len() {
            self.l.wrote_whole(k, piece, Sim::PIPE);
        } else {
            self.l.begun(k, piece, n);
        }
    }

    fn read(&mut self, k: usize, n: usize) {
        let (pipe, current, ..) = &mut self.consumers[k];
        let n = n.min(pipe.len());
        for b in pipe.drain(..n) {
            current.push(b);
            if b == b'\n' {
                self.delivered[k].push(std::mem::take(current));
            }
        }
    }

    /// Consumer `k` leaves: the broker closes its end and reads its pipe back.
    fn leave(&mut self, k: usize, done: bool) {
        if done {
            if self.consumers[k].3 {
                return;
            }
            self.consumers[k].3 = true;
            self.l.consumer_done(k);
        } else if !self.consumers[k].2 {
            return;
        }
        let (pipe, current, attached, _) = &mut self.consumers[k];
        *attached = false;
        current.clear();
        let unread = std::mem::take(pipe);
        self.l.consumer_closed(k);
        self.l.take_back(k, &unread);
        if done && self.l.alive_consumers() == 0 {
            self.l.lose_backlog();
        }
    }

    fn reattach(&mut self, k: usize) {
        let c = &mut self.consumers[k];
        if c.2 || c.3 {
            return;
        }
        c.2 = true;
        self.l.consumer_attached(k);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce(p, n) => self.produce(p, n),
            Op::ProducerEnd(p) => self.end(p),
            Op::Write(k, b, m) => self.write(k, b, m),
            Op::Read(k, n) => self.read(k, n),
            Op::Gone(k) => self.leave(k, false),
            Op::Reattach(k) => self.reattach(k),
            Op::Done(k) => self.leave(k, true),
        }
    }

    /// What the books say against what the consumers did.
    fn check(&self) {
        assert_balanced(&self.l);
        let c = self.l.counts();
        for k in 0..3 {
            // Out: what it read whole, and the delimiters waiting in its pipe.
            let in_pipe = count(b'\n', &self.consumers[k].0);
            assert_eq!(
                c.per_consumer[k],
                self.delivered[k].len() as u64 + in_pipe,
                "consumer {k}"
            );
        }
        // A message cut short by its producer's end is one of a kind; the
        // others are all as long as `message` makes them.
        let whole = |m: &&Vec<u8>| m.len() == Sim::message(0, 0).len();
        let mut seen: Vec<&Vec<u8>> = self.delivered.iter().flatten().filter(whole).collect();
        seen.sort();
        let all = seen.len();
        seen.dedup();
        match self.l.mode() {
            Mode::Balance => assert_eq!(seen.len(), all, "a message delivered twice"),
            Mode::Broadcast => {
                // Each consumer reads each producer's messages once, in order.
                for got in &self.delivered {
                    for p in 0..2 {
                        let prefix = format!("p{p}-");
                        let nums: Vec<u32> = got
                            .iter()
                            .filter(whole)
                            .filter_map(|m| {
                                let text = std::str::from_utf8(m).ok()?;
                                text.strip_prefix(&prefix)?.trim_end().parse().ok()
                            })
                            .collect();
                        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
                    }
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn in_equals_out_plus_lost_plus_held_whatever_happens(
        broadcast in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mode = if broadcast { Mode::Broadcast } else { Mode::Balance };
        let mut sim = Sim::new(mode);
        for op in &ops {
            sim.apply(op);
            sim.check();
        }
        // Whatever is left, once every consumer left, is counted somewhere.
        for k in 0..3 {
            sim.leave(k, true);
        }
        sim.check();
        let c = sim.l.counts();
        prop_assert_eq!(sim.l.buffered(), 0);
        if mode == Mode::Balance {
            prop_assert_eq!(c.messages_in, c.messages_out + c.lost);
        }
    }
}
