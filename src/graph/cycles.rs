//! Cycles in `after` / `parent`, reported with their whole path.
//!
//! petgraph's `toposort` names one node of a cycle; users need the loop
//! itself (`a -> b -> c -> a`) to decide which edge to cut, so we find
//! strongly connected components and walk one loop inside each.

use super::{Dep, DepKind};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::spec::JobFile;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::VecDeque;

/// Reports every cycle; returns true if there was one.
pub(super) fn check_cycles(file: &JobFile, deps: &[Vec<Dep>], diags: &mut Vec<Diagnostic>) -> bool {
    let adj: Vec<Vec<usize>> = deps
        .iter()
        .map(|ds| ds.iter().map(|d| d.target).collect())
        .collect();
    let mut found = false;
    for component in strongly_connected(&adj) {
        let start = component[0];
        let Some(path) = find_cycle(&adj, &component, start) else {
            continue;
        };
        found = true;
        diags.push(cycle_diagnostic(file, deps, &path));
    }
    found
}

/// Components that hold a cycle: two or more nodes, or one with a self-loop.
/// Iterative (Kosaraju over an explicit stack), so a 100,000-long chain is fine.
pub(crate) fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    if is_acyclic(adj) {
        return Vec::new();
    }
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(adj.len(), adj.iter().map(Vec::len).sum());
    for _ in 0..adj.len() {
        g.add_node(());
    }
    for (from, targets) in adj.iter().enumerate() {
        for &to in targets {
            g.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
    }
    let mut out: Vec<Vec<usize>> = petgraph::algo::kosaraju_scc(&g)
        .into_iter()
        .map(|c| {
            let mut c: Vec<usize> = c.into_iter().map(|n| n.index()).collect();
            c.sort_unstable();
            c
        })
        .filter(|c| c.len() > 1 || adj[c[0]].contains(&c[0]))
        .collect();
    out.sort();
    out
}

/// Kahn's algorithm: true when every node can be taken off in topological
/// order, the usual case, which then needs no component search at all.
fn is_acyclic(adj: &[Vec<usize>]) -> bool {
    let mut indegree = vec![0u32; adj.len()];
    for targets in adj {
        for &t in targets {
            indegree[t] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..adj.len()).filter(|&i| indegree[i] == 0).collect();
    let mut taken = 0;
    while let Some(i) = ready.pop() {
        taken += 1;
        for &t in &adj[i] {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(t);
            }
        }
    }
    taken == adj.len()
}

/// A shortest loop from `start` back to itself, staying inside `component`
/// (sorted). Returns the nodes in order, `start` first, not repeated at the end.
pub(crate) fn find_cycle(
    adj: &[Vec<usize>],
    component: &[usize],
    start: usize,
) -> Option<Vec<usize>> {
    let inside = |n: usize| component.binary_search(&n).is_ok();
    let mut prev: rustc_hash::FxHashMap<usize, usize> = rustc_hash::FxHashMap::default();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &adj[node] {
            if next == start {
                let mut path = vec![node];
                let mut cur = node;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if inside(next) && !prev.contains_key(&next) {
                prev.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// How many names of a long loop are shown at each end.
const SHOWN_AT_EACH_END: usize = 5;
/// How many links of a loop are marked in the file, at most.
const MAX_MARKED: usize = 10;

/// `a -> b -> c -> a`, or for a long loop its first and last names around
/// `… (9,990 more) …`, so a message stays one line whatever the loop's length.
pub(crate) fn shorten(names: &[&str]) -> String {
    let k = SHOWN_AT_EACH_END;
    if names.len() <= 2 * k + 1 {
        return names.join(" -> ");
    }
    let hidden = names.len() - 2 * k;
    format!(
        "{} -> … ({} more) … -> {}",
        names[..k].join(" -> "),
        thousands(hidden),
        names[names.len() - k..].join(" -> ")
    )
}

/// 9990 -> "9,990".
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cycle_diagnostic(file: &JobFile, deps: &[Vec<Dep>], path: &[usize]) -> Diagnostic {
    let name = |i: usize| file.processes[i].name.value.as_str();
    let mut shown: Vec<&str> = path.iter().map(|&i| name(i)).collect();
    shown.push(name(path[0]));
    let text = shorten(&shown);
    let hop = |k: usize| {
        let from = path[k];
        let to = path[(k + 1) % path.len()];
        let dep = deps[from].iter().find(|d| d.target == to);
        (from, to, dep)
    };
    let (from, to, first) = hop(0);
    let describe = |from: usize, to: usize, d: Option<&Dep>| match d.map(|d| d.kind) {
        Some(DepKind::Parent) => format!("`{}` is a child of `{}`", name(from), name(to)),
        Some(k) => format!(
            "`{}` starts after `{}` ({})",
            name(from),
            name(to),
            k.describe()
        ),
        None => format!("`{}` waits for `{}`", name(from), name(to)),
    };
    let span = first
        .map(|d| d.span.clone())
        .unwrap_or_else(|| file.processes[from].name.span.clone());
    let mut diag = Diagnostic::at(Code::Cycle, span, format!("dependency cycle: {text}"))
        .label(describe(from, to, first))
        .help(if path.len() == 1 {
            format!(
                "a process cannot wait for itself: remove `{}` from its own after/parent",
                name(path[0])
            )
        } else {
            "nothing in a cycle can ever start: remove one of these dependencies".to_string()
        });
    // Mark the first links and the last one; a long loop is named in the message.
    let marked: Vec<usize> = if path.len() <= MAX_MARKED {
        (1..path.len()).collect()
    } else {
        (1..MAX_MARKED - 1).chain([path.len() - 1]).collect()
    };
    for k in marked {
        let (from, to, d) = hop(k);
        if let Some(d) = d {
            diag = diag.related(d.span.clone(), describe(from, to, Some(d)));
        }
    }
    diag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loop_not_just_a_node() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 0 hanging off it
        let adj = vec![vec![1], vec![2], vec![0], vec![0]];
        let comps = strongly_connected(&adj);
        assert_eq!(comps, vec![vec![0, 1, 2]]);
        assert_eq!(find_cycle(&adj, &comps[0], 0), Some(vec![0, 1, 2]));
    }

    #[test]
    fn long_loops_are_shortened() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("p{i}"))
            .chain(["p0".into()])
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            shorten(&refs),
            "p0 -> p1 -> p2 -> p3 -> p4 -> … (9,991 more) … -> p9996 -> p9997 -> p9998 -> p9999 -> p0"
        );
        assert_eq!(shorten(&["a", "b", "a"]), "a -> b -> a");
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let adj = vec![vec![0], vec![]];
        assert_eq!(strongly_connected(&adj), vec![vec![0]]);
        assert_eq!(find_cycle(&adj, &[0], 0), Some(vec![0]));
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let adj: Vec<Vec<usize>> = (0..n)
            .map(|i| if i + 1 < n { vec![i + 1] } else { vec![] })
            .collect();
        assert!(strongly_connected(&adj).is_empty());
    }
}
