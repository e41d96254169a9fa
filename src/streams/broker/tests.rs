//! The broker's accounting on real pipes: the test plays the processes,
//! writing into the producers' pipes and reading the consumers'.
use super::pipe::{page_size, FAST_PIPE};
use super::*;
use std::os::fd::OwnedFd;
use std::time::Instant;

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
    assert!(rig.q.book.written_in_first(0) > 0);
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
