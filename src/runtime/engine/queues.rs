//! The queues of running stream groups: pipes to and from the broker,
//! reattachment of restarted members, and the counts per instance.

use super::*;
use std::os::fd::AsFd;

/// A queue of a running stream group: its broker and the instances at its
/// ends, in the broker's order (the broker numbers producers and consumers).
pub(super) struct LiveQueue {
    pub(super) broker: broker::Queue,
    pub(super) producers: Vec<InstId>,
    pub(super) consumers: Vec<InstId>,
}

/// Which of a queue's descriptors an event is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum QueueEnd {
    /// The pipe from the broker's producer `i`.
    Producer(usize),
    /// The pipe to the broker's consumer `i`.
    Consumer(usize),
    /// The queue's timer.
    Timer,
}

impl Engine<'_> {
    /// Creates the pipes of every queue in `group`: producers write into pipes
    /// the broker reads, consumers read pipes the broker writes. Each end for a
    /// process goes into `ends` under (instance, queue name); the broker keeps
    /// its own ends, non-blocking and registered with the event loop.
    pub(super) fn open_queues(
        &mut self,
        group: usize,
        ends: &mut FxHashMap<(launch::EndOwner, String), OwnedFd>,
    ) -> std::io::Result<()> {
        for qi in self.queues.ids() {
            let q = &self.g.file.queues[qi.index()];
            let procs = |names: &[crate::spec::Sp<String>]| -> Vec<usize> {
                names
                    .iter()
                    .filter_map(|n| self.g.process_index(&n.value))
                    .collect()
            };
            let (from, to) = (procs(&q.from.value), procs(&q.to.value));
            if from.first().is_none_or(|&p| self.g.group_of[p] != group) {
                continue;
            }
            let producers: Vec<InstId> = from
                .iter()
                .flat_map(|&p| self.core.of_proc[ProcId::of(p)].iter().copied())
                .collect();
            let consumers: Vec<InstId> = to
                .iter()
                .flat_map(|&p| self.core.of_proc[ProcId::of(p)].iter().copied())
                .collect();
            let name = q.name.value.clone();
            let mut producer_files = Vec::new();
            let mut consumer_files = Vec::new();
            for &k in &producers {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // A bigger pipe means fewer wake-ups; failure keeps the default size.
                nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).ok();
                ends.insert((launch::EndOwner::Inst(k), name.clone()), write);
                producer_files.push(std::fs::File::from(read));
            }
            for &k in &consumers {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // The broker keeps a read end of its own (close-on-exec) to
                // read back what the consumer leaves unread.
                let keep = read.try_clone()?;
                ends.insert((launch::EndOwner::Inst(k), name.clone()), read);
                consumer_files.push((std::fs::File::from(write), std::fs::File::from(keep)));
            }
            for (i, f) in producer_files.iter().enumerate() {
                self.register_stream(f, qi, QueueEnd::Producer(i), Interest::READABLE)?;
            }
            for (i, (f, _)) in consumer_files.iter().enumerate() {
                self.register_stream(f, qi, QueueEnd::Consumer(i), Interest::WRITABLE)?;
            }
            let q = &self.g.file.queues[qi.index()];
            let mode = match q.mode {
                crate::spec::QueueMode::Balance => broker::Mode::Balance,
                crate::spec::QueueMode::Broadcast => broker::Mode::Broadcast,
            };
            let delim = match q.framing {
                crate::spec::Framing::Line => b'\n',
                crate::spec::Framing::Nul => 0,
            };
            let mut queue =
                broker::Queue::new(mode, delim, q.capacity, producer_files, consumer_files);
            for (i, &k) in producers.iter().enumerate() {
                let p = &self.g.file.processes[self.core.insts[k].proc];
                if p.retries == 0 && p.restart == crate::spec::Restart::Never {
                    queue.producer_single(i);
                }
            }
            if let Some(fd) = queue.timer_fd() {
                // SAFETY: the broker owns the timer and keeps it open while the queue lives.
                let timer = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                self.register_stream(&timer, qi, QueueEnd::Timer, Interest::READABLE)?;
            }
            self.queues[qi] = Some(LiveQueue {
                broker: queue,
                producers,
                consumers,
            });
        }
        Ok(())
    }

    /// Registers one of the broker's descriptors (non-blocking from now on)
    /// with the event loop, as `end` of queue `q`.
    pub(super) fn register_stream(
        &mut self,
        fd: &impl AsFd,
        q: QueueId,
        end: QueueEnd,
        interest: Interest,
    ) -> std::io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let token = self.sources.token();
        let raw = fd.as_fd().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&raw), Token(token), interest)?;
        self.sources.insert(token, sources::Source::Queue(q, end));
        Ok(())
    }

    pub(super) fn on_queue_ready(&mut self, q: QueueId, end: QueueEnd) {
        if let Some(live) = self.queues[q].as_mut() {
            match end {
                QueueEnd::Producer(i) => live.broker.producer_ready(i),
                QueueEnd::Consumer(i) => live.broker.consumer_ready(i),
                QueueEnd::Timer => live.broker.timer_ready(),
            }
        }
        self.pump(q);
    }

    pub(super) fn pump(&mut self, q: QueueId) {
        // Closed descriptors leave epoll as they close; their tokens just go unused.
        let mut closed = Vec::new();
        if let Some(live) = self.queues[q].as_mut() {
            live.broker.pump(&mut closed);
        }
    }

    /// A consumer instance exited: whatever is still in its pipe is lost.
    /// `returning`: it will restart and reattach, so the queue keeps its
    /// messages for it (and its producers open) meanwhile.
    pub(super) fn queue_consumer_exited(&mut self, k: InstId, returning: bool) {
        for q in self.queues.ids() {
            let Some(live) = self.queues[q].as_mut() else {
                continue;
            };
            let Some(i) = live.consumers.iter().position(|&c| c == k) else {
                continue;
            };
            let mut closed = Vec::new();
            if returning {
                live.broker.consumer_gone(i, &mut closed);
            } else {
                live.broker.consumer_done(i, &mut closed);
            }
            self.pump(q);
        }
    }

    /// Restarts a member of a running stream group: fresh pipes to the broker
    /// for each of its queues, then a normal launch with those ends.
    pub(super) fn restart_member(&mut self, k: InstId) {
        let proc = self.core.insts[k].proc;
        let mut ends: Vec<(i32, OwnedFd)> = Vec::new();
        let mut failed = false;
        for e in self.g.endpoints[proc].clone() {
            let Some(q) = self
                .queues
                .ids()
                .find(|q| self.g.file.queues[q.index()].name.value == e.edge)
            else {
                continue;
            };
            let Ok((read, write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
                failed = true;
                break;
            };
            let (producers, consumers) = match &self.queues[q] {
                Some(live) => (live.producers.clone(), live.consumers.clone()),
                None => continue,
            };
            if let Some(i) = consumers.iter().position(|&c| c == k) {
                let Ok(keep) = read.try_clone() else {
                    failed = true;
                    break;
                };
                let file = std::fs::File::from(write);
                if self
                    .register_stream(&file, q, QueueEnd::Consumer(i), Interest::WRITABLE)
                    .is_err()
                {
                    failed = true;
                }
                if let Some(live) = self.queues[q].as_mut() {
                    live.broker
                        .reattach_consumer(i, file, std::fs::File::from(keep));
                }
                ends.push((e.fd, read));
            } else if let Some(i) = producers.iter().position(|&c| c == k) {
                let file = std::fs::File::from(read);
                if self
                    .register_stream(&file, q, QueueEnd::Producer(i), Interest::READABLE)
                    .is_err()
                {
                    failed = true;
                }
                if let Some(live) = self.queues[q].as_mut() {
                    live.broker.reattach_producer(i, file);
                }
                ends.push((e.fd, write));
            }
        }
        if failed {
            self.start_with(k, launch::Ends::Broken);
            return;
        }
        let fds: Vec<(i32, std::os::fd::RawFd)> =
            ends.iter().map(|(t, fd)| (*t, fd.as_raw_fd())).collect();
        self.start_with(k, launch::Ends::Group(&fds));
        for q in self.queues.ids() {
            self.pump(q);
        }
    }

    /// (received, sent, lost in flight to it, requeued from it) over every
    /// queue, for one instance.
    pub(super) fn queue_counts_of(&self, k: InstId) -> (u64, u64, u64, u64) {
        let mut total = (0, 0, 0, 0);
        for (_, live) in self.queues.iter() {
            let Some(live) = live else {
                continue;
            };
            let c = live.broker.counts();
            let (producers, consumers) = (&live.producers, &live.consumers);
            if let Some(i) = consumers.iter().position(|&j| j == k) {
                total.0 += c.per_consumer[i];
                total.2 += c.lost_per_consumer[i];
                total.3 += c.requeued_per_consumer[i];
            }
            if let Some(i) = producers.iter().position(|&j| j == k) {
                total.1 += c.per_producer[i];
            }
        }
        total
    }

    /// Instance `k` consumes queues, and every one of them has given it
    /// end-of-file: a restart would only read end-of-file again (a worker
    /// pool is not refilled once the work is done).
    /// How long a daemon reader that got end-of-file from every queue it
    /// reads has to end by itself before its stop signal.
    const EOF_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

    /// Tells the core which daemon readers waiting to stop have read
    /// everything their queues held, and gives those still reading more time.
    pub(super) fn note_drained_readers(&mut self) {
        for j in 0..self.core.stop_pending.len() {
            let k = self.core.stop_pending[j];
            if self.core.insts[k].drain_until.is_none() {
                continue;
            }
            let drained = self.queue_inputs_exhausted(k);
            let read = self.messages_read_by(k);
            let grace = self.core.grace;
            let now = Instant::now();
            let i = &mut self.core.insts[k];
            if read > i.drain_seen {
                i.drain_seen = read;
                i.drain_until = Some(super::later(now, grace));
            }
            if drained && !i.inputs_drained {
                // At end-of-file, as a log pipe's drain: a moment to end on its own.
                let eof = super::later(now, Self::EOF_GRACE);
                i.drain_until = i.drain_until.map(|t| t.min(eof));
            }
            i.inputs_drained = drained;
        }
    }

    /// Messages consumer `k` has read from its queues.
    fn messages_read_by(&self, k: InstId) -> u64 {
        let mut n = 0;
        for (_, live) in self.queues.iter() {
            let Some(live) = live else {
                continue;
            };
            if let Some(i) = live.consumers.iter().position(|&c| c == k) {
                n += live
                    .broker
                    .counts()
                    .per_consumer
                    .get(i)
                    .copied()
                    .unwrap_or(0);
            }
        }
        n
    }

    pub(super) fn queue_inputs_exhausted(&self, k: InstId) -> bool {
        let mut any = false;
        for (_, live) in self.queues.iter() {
            let Some(live) = live else {
                continue;
            };
            let Some(i) = live.consumers.iter().position(|&c| c == k) else {
                continue;
            };
            any = true;
            if !live.broker.exhausted_for(i) {
                return false;
            }
        }
        any
    }
}
