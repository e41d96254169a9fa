//! Every event source of the loop in one table, by token: a process's log
//! pipe, a queue end (or a queue's timer), a TCP probe in flight. One lookup
//! tells what a readiness event is about; nothing falls through.

use super::ids::{InstId, QueueId};
use super::probes::Check;
use super::queues::QueueEnd;
use super::Pipe;
use rustc_hash::FxHashMap;

/// What a token stands for.
pub(super) enum Source {
    /// A process's output pipe.
    Log(Pipe),
    /// One of a queue's descriptors: a producer's or consumer's pipe, or its timer.
    Queue(QueueId, QueueEnd),
    /// A TCP probe's connect in flight.
    Tcp(TcpProbe),
}

/// A non-blocking connect, for the readiness or health of an instance.
pub(super) struct TcpProbe {
    pub(super) inst: InstId,
    pub(super) check: Check,
    pub(super) addr: std::net::SocketAddr,
    pub(super) stream: mio::net::TcpStream,
}

/// The table. Token 0 is the signals', `usize::MAX` the writers' waker.
pub(super) struct Sources {
    map: FxHashMap<usize, Source>,
    next: usize,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            map: FxHashMap::default(),
            next: 1,
        }
    }
}

impl Sources {
    /// A fresh token, for a source about to be registered.
    pub(super) fn token(&mut self) -> usize {
        let t = self.next;
        self.next += 1;
        t
    }

    pub(super) fn insert(&mut self, token: usize, source: Source) {
        self.map.insert(token, source);
    }

    pub(super) fn get(&self, token: usize) -> Option<&Source> {
        self.map.get(&token)
    }

    pub(super) fn pipe(&self, token: usize) -> Option<&Pipe> {
        match self.map.get(&token) {
            Some(Source::Log(p)) => Some(p),
            _ => None,
        }
    }

    pub(super) fn pipe_mut(&mut self, token: usize) -> Option<&mut Pipe> {
        match self.map.get_mut(&token) {
            Some(Source::Log(p)) => Some(p),
            _ => None,
        }
    }

    pub(super) fn remove_pipe(&mut self, token: usize) -> Option<Pipe> {
        match self.map.get(&token) {
            Some(Source::Log(_)) => match self.map.remove(&token) {
                Some(Source::Log(p)) => Some(p),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn remove_tcp(&mut self, token: usize) -> Option<TcpProbe> {
        match self.map.get(&token) {
            Some(Source::Tcp(_)) => match self.map.remove(&token) {
                Some(Source::Tcp(p)) => Some(p),
                _ => None,
            },
            _ => None,
        }
    }

    /// Tokens of the log pipes of instance `k`'s attempt (not the detached ones).
    pub(super) fn pipes_of(&self, k: InstId) -> Vec<usize> {
        self.map
            .iter()
            .filter(|(_, s)| matches!(s, Source::Log(p) if p.inst == k && !p.detached))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Tokens of the detached log pipes (see `Pipe::detached`).
    pub(super) fn detached_pipes(&self) -> Vec<usize> {
        self.map
            .iter()
            .filter(|(_, s)| matches!(s, Source::Log(p) if p.detached))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Tokens of the TCP probes in flight for instance `k`'s `check`.
    pub(super) fn tcp_of(&self, k: InstId, check: Check) -> Vec<usize> {
        self.map
            .iter()
            .filter(|(_, s)| matches!(s, Source::Tcp(p) if p.inst == k && p.check == check))
            .map(|(t, _)| *t)
            .collect()
    }
}
