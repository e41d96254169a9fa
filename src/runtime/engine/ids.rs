//! Typed instance ids, and the tables indexed by them.
//!
//! The engine deals in several kinds of integers: instances, processes (the
//! graph's indices), positions in the launch order, pids and tokens. As bare
//! `usize`s, one could be passed for another and still compile. An instance
//! is an [`InstId`] and a process a [`ProcId`] instead, so that mix-up is a
//! type error.

use std::ops::{Index, IndexMut};

/// One instance of a process (one replica), as the engine numbers them.
///
/// Not a `usize` so that an instance can no longer be confused with a
/// process index, a position in the launch order, or a pid. Only
/// [`PerInst::push`] makes new ones, as the instances are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct InstId(u32);

impl InstId {
    /// Its index into the instance tables (and the reporter's list of names).
    pub(super) fn index(self) -> usize {
        self.0 as usize
    }
}

/// A process of the graph: its index in the file, which every per-process
/// table of the graph (`processes`, `deps`, `children`, `group_of`, …) uses.
/// Those tables are `Vec`s indexed by it directly; a bare index from the
/// graph becomes one with [`ProcId::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ProcId(usize);

impl ProcId {
    /// The process at `index` in the graph's tables.
    pub(super) fn of(index: usize) -> ProcId {
        ProcId(index)
    }

    /// Its index into the graph's tables.
    pub(super) fn index(self) -> usize {
        self.0
    }
}

impl<T> Index<ProcId> for Vec<T> {
    type Output = T;
    fn index(&self, p: ProcId) -> &T {
        &self[p.0]
    }
}

impl<T> IndexMut<ProcId> for Vec<T> {
    fn index_mut(&mut self, p: ProcId) -> &mut T {
        &mut self[p.0]
    }
}

/// A value per process, indexed by [`ProcId`] only: the engine's own
/// per-process tables (a bare index from the graph must say what it is).
#[derive(Debug, Clone)]
pub(super) struct PerProc<T>(Vec<T>);

impl<T> PerProc<T> {
    /// One value per process of `g`, made from its id.
    pub(super) fn new(processes: usize, f: impl FnMut(ProcId) -> T) -> PerProc<T> {
        PerProc((0..processes).map(ProcId).map(f).collect())
    }
}

impl<T> Index<ProcId> for PerProc<T> {
    type Output = T;
    fn index(&self, p: ProcId) -> &T {
        &self.0[p.0]
    }
}

impl<T> IndexMut<ProcId> for PerProc<T> {
    fn index_mut(&mut self, p: ProcId) -> &mut T {
        &mut self.0[p.0]
    }
}

/// A value per instance, indexed by [`InstId`]: the instances themselves
/// ([`super::Insts`]) and the engine's side tables.
///
/// Every table is built from the instances' (with [`PerInst::map`]), so an
/// id of the run is valid in each of them, and there are never more than
/// `u32::MAX` entries.
#[derive(Debug)]
pub(super) struct PerInst<T>(Vec<T>);

impl<T> Default for PerInst<T> {
    fn default() -> Self {
        PerInst(Vec::new())
    }
}

impl<T> PerInst<T> {
    /// Adds the next instance's value and returns its new id; `None` (and
    /// nothing added) once `u32::MAX` instances exist.
    pub(super) fn push(&mut self, value: T) -> Option<InstId> {
        let id = u32::try_from(self.0.len()).ok().filter(|&i| i < u32::MAX)?;
        self.0.push(value);
        Some(InstId(id))
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn get(&self, k: InstId) -> Option<&T> {
        self.0.get(k.index())
    }

    /// The values, in id order.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// Every id, in order. It does not borrow the table, so the loop's body
    /// may change it.
    pub(super) fn ids(&self) -> Ids {
        Ids(0..u32::try_from(self.0.len()).unwrap_or(u32::MAX))
    }

    /// A table with one value per id of this one.
    pub(super) fn map<U>(&self, mut f: impl FnMut(InstId, &T) -> U) -> PerInst<U> {
        PerInst(self.ids().zip(&self.0).map(|(k, v)| f(k, v)).collect())
    }
}

impl<T> Index<InstId> for PerInst<T> {
    type Output = T;
    fn index(&self, k: InstId) -> &T {
        &self.0[k.index()]
    }
}

impl<T> IndexMut<InstId> for PerInst<T> {
    fn index_mut(&mut self, k: InstId) -> &mut T {
        &mut self.0[k.index()]
    }
}

/// The ids of a table, in order (see [`PerInst::ids`]).
#[derive(Debug, Clone)]
pub(super) struct Ids(std::ops::Range<u32>);

impl Iterator for Ids {
    type Item = InstId;
    fn next(&mut self) -> Option<InstId> {
        self.0.next().map(InstId)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_pushes_and_index_every_table_made_from_them() {
        let mut names = PerInst::default();
        let a = names.push("a");
        let b = names.push("b");
        assert_eq!(
            (a.map(InstId::index), b.map(InstId::index)),
            (Some(0), Some(1))
        );
        let ids: Vec<InstId> = names.ids().collect();
        assert_eq!(ids.len(), names.len());
        let mut lens = names.map(|_, n| n.len());
        lens[ids[1]] += 1;
        assert_eq!((names[ids[1]], lens[ids[1]]), ("b", 2));
        assert_eq!(names.iter().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert!(PerInst::<u8>::default().get(ids[0]).is_none());
    }
}

/// A queue of the graph: its index in the file's `[[queue]]` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct QueueId(usize);

impl QueueId {
    /// Its index into the file's queues.
    pub(super) fn index(self) -> usize {
        self.0
    }
}

/// A value per queue of the graph, indexed by [`QueueId`] only.
pub(super) struct PerQueue<T>(Vec<T>);

impl<T> PerQueue<T> {
    /// One value per queue, made from its id.
    pub(super) fn new(queues: usize, f: impl FnMut(QueueId) -> T) -> PerQueue<T> {
        PerQueue((0..queues).map(QueueId).map(f).collect())
    }

    /// Whether the graph has no queue.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every queue's id, in file order.
    pub(super) fn ids(&self) -> impl Iterator<Item = QueueId> + use<T> {
        (0..self.0.len()).map(QueueId)
    }

    /// (id, value) for every queue, in file order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (QueueId, &T)> {
        self.0.iter().enumerate().map(|(i, v)| (QueueId(i), v))
    }
}

impl<T> Index<QueueId> for PerQueue<T> {
    type Output = T;
    fn index(&self, q: QueueId) -> &T {
        &self.0[q.0]
    }
}

impl<T> IndexMut<QueueId> for PerQueue<T> {
    fn index_mut(&mut self, q: QueueId) -> &mut T {
        &mut self.0[q.0]
    }
}
