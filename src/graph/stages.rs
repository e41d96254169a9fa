//! Launch stages over stream groups, and the deadlock check that needs them:
//! a group launches as one unit, so a dependency inside a group, or a loop
//! through several groups, can never be satisfied.

use super::cycles::{find_cycle, strongly_connected};
use super::streams::Streams;
use super::Dep;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::spec::JobFile;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Stages of group indices, or `None` after reporting a deadlock.
pub(super) fn launch_stages(
    file: &JobFile,
    deps: &[Vec<Dep>],
    children: &[Vec<usize>],
    streams: &Streams,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Vec<usize>>> {
    let waits = group_waits(file, deps, streams, diags);
    let looped = report_group_loops(file, deps, &waits, diags);
    if waits.inside || looped {
        return None;
    }
    // `after` a process ("success" or "exit") waits for its join: its
    // non-daemon descendants too, so a stage is after theirs, as in a run.
    let joined = with_joins(file, deps, children, streams, &waits.waits);
    if strongly_connected(&joined.waits).is_empty() {
        return Some(layers(&joined.waits));
    }
    // A loop that passes through a join: what waits for a parent to finish
    // waits for its children, and one of them waits (in turn) for it.
    if diags.iter().any(Diagnostic::is_error) {
        // Already reported (a process waiting for its own ancestor).
        return None;
    }
    report_join_loops(file, deps, &waits, &joined, diags);
    None
}

/// Reports each loop of the group graph with joins; the plain loops were
/// reported before, so each of these passes through at least one join.
fn report_join_loops(
    file: &JobFile,
    deps: &[Vec<Dep>],
    waits: &GroupWaits,
    joined: &Joined,
    diags: &mut Vec<Diagnostic>,
) {
    let name = |i: usize| format!("`{}`", file.processes[i].name.value);
    for component in strongly_connected(&joined.waits) {
        let Some(path) = find_cycle(&joined.waits, &component, component[0]) else {
            continue;
        };
        let mut hops: Vec<(usize, usize, String)> = Vec::new();
        let mut span = None;
        for k in 0..path.len() {
            let edge = (path[k], path[(k + 1) % path.len()]);
            let (waiting, target, reached, text) =
                match (waits.witness.get(&edge), joined.via.get(&edge)) {
                    (Some(&(p, t)), _) => (p, t, t, format!("{} waits for {}", name(p), name(t))),
                    (None, Some(&(x, parent, c))) => (
                        x,
                        parent,
                        c,
                        format!(
                            "{} waits for {} to finish, which waits for its child {}",
                            name(x),
                            name(parent),
                            name(c)
                        ),
                    ),
                    (None, None) => continue,
                };
            if span.is_none() {
                span = deps[waiting]
                    .iter()
                    .find(|d| d.target == target)
                    .map(|d| d.span.clone());
            }
            // What the loop went through last is in one stream group with
            // the process waiting now: they launch together.
            let linked = match hops.last() {
                Some(&(_, last, _)) => last,
                None => path_last_target(&path, waits, joined).unwrap_or(waiting),
            };
            if linked != waiting {
                hops.push((
                    linked,
                    waiting,
                    format!(
                        "{} launches with {} (one stream group)",
                        name(linked),
                        name(waiting)
                    ),
                ));
            }
            hops.push((waiting, reached, text));
        }
        let hops: Vec<String> = hops.into_iter().map(|(_, _, t)| t).collect();
        diags.push(
            Diagnostic::new(
                Code::Cycle,
                span,
                format!("dependency cycle through a join: {}", hops.join("; ")),
            )
            .label("part of the loop")
            .help("a process is finished only once its non-daemon children are: wait for \"start\" or \"ready\" of the parent instead, or break another link"),
        );
    }
}

/// The process the last hop of a group loop reaches (the loop closes on it).
fn path_last_target(path: &[usize], waits: &GroupWaits, joined: &Joined) -> Option<usize> {
    let edge = (*path.last()?, *path.first()?);
    match (waits.witness.get(&edge), joined.via.get(&edge)) {
        (Some(&(_, t)), _) => Some(t),
        (None, Some(&(_, _, c))) => Some(c),
        (None, None) => None,
    }
}

/// The group graph with joins, and for each edge a join added: (the process
/// waiting, the parent it waits for, the descendant that parent waits for).
struct Joined {
    waits: Vec<Vec<usize>>,
    via: FxHashMap<(usize, usize), (usize, usize, usize)>,
}

/// `waits`, plus what each `after` on a parent waits for through its join:
/// the groups of its non-daemon descendants.
fn with_joins(
    file: &JobFile,
    deps: &[Vec<Dep>],
    children: &[Vec<usize>],
    streams: &Streams,
    waits: &[Vec<usize>],
) -> Joined {
    use crate::spec::Condition;
    let mut out = waits.to_vec();
    let mut via = FxHashMap::default();
    let daemon = |i: usize| file.processes[i].daemon.value;
    for (p, ds) in deps.iter().enumerate() {
        let gp = streams.group_of[p];
        for d in ds {
            if !matches!(
                d.kind,
                super::DepKind::After(Condition::Success | Condition::Exit)
            ) {
                continue;
            }
            let mut todo: Vec<usize> = children.get(d.target).cloned().unwrap_or_default();
            let mut seen = vec![false; file.processes.len()];
            while let Some(c) = todo.pop() {
                if daemon(c) || std::mem::replace(&mut seen[c], true) {
                    continue;
                }
                let gc = streams.group_of[c];
                if gc != gp && !out[gp].contains(&gc) {
                    out[gp].push(gc);
                    via.insert((gp, gc), (p, d.target, c));
                }
                todo.extend(children.get(c).into_iter().flatten().copied());
            }
        }
    }
    Joined { waits: out, via }
}

/// Which groups wait for which, from the dependencies between their members.
struct GroupWaits {
    waits: Vec<Vec<usize>>,
    /// One witness per group edge: (waiting process, process waited for).
    witness: FxHashMap<(usize, usize), (usize, usize)>,
    /// A dependency inside one group was reported.
    inside: bool,
}

fn group_waits(
    file: &JobFile,
    deps: &[Vec<Dep>],
    streams: &Streams,
    diags: &mut Vec<Diagnostic>,
) -> GroupWaits {
    let groups = &streams.groups;
    let group_of = &streams.group_of;
    let name = |i: usize| file.processes[i].name.value.as_str();
    let mut out = GroupWaits {
        waits: vec![Vec::new(); groups.len()],
        witness: Default::default(),
        inside: false,
    };
    for (p, ds) in deps.iter().enumerate() {
        for d in ds {
            let (gp, gt) = (group_of[p], group_of[d.target]);
            if gp == gt {
                out.inside = true;
                let g = &groups[gp];
                let how = if d.kind == super::DepKind::Parent {
                    "is a child of"
                } else {
                    "starts after"
                };
                diags.push(
                    Diagnostic::at(
                        Code::StreamGroupDeadlock,
                        d.span.clone(),
                        format!(
                            "`{}` {how} `{}`, but both are in one stream group (joined by {}) and launch together",
                            name(p),
                            name(d.target),
                            describe_edges(file, &g.edges)
                        ),
                    )
                    .label("can never be satisfied")
                    .help("processes joined by pipes or queues start at the same time; drop this dependency, or move the stream edge"),
                );
                continue;
            }
            if !out.waits[gp].contains(&gt) {
                out.waits[gp].push(gt);
                out.witness.insert((gp, gt), (p, d.target));
            }
        }
    }
    out
}

/// Reports each loop of groups waiting for each other; true if there was one.
fn report_group_loops(
    file: &JobFile,
    deps: &[Vec<Dep>],
    waits: &GroupWaits,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let mut found = false;
    for component in strongly_connected(&waits.waits) {
        let Some(path) = find_cycle(&waits.waits, &component, component[0]) else {
            continue;
        };
        found = true;
        let hops: Vec<(usize, usize)> = (0..path.len())
            .map(|k| waits.witness[&(path[k], path[(k + 1) % path.len()])])
            .collect();
        let span = deps[hops[0].0]
            .iter()
            .find(|d| d.target == hops[0].1)
            .map(|d| d.span.clone());
        let text = loop_text(file, &hops);
        diags.push(
            Diagnostic::new(Code::StreamGroupDeadlock, span, format!("launch deadlock through stream groups: {text}"))
                .label("part of the loop")
                .help("`~` joins members of one stream group, which launch together; break one `->` dependency"),
        );
    }
    found
}

/// The loop as `a -> b ~ c -> a`, from its (waiting, waited for) hops.
fn loop_text(file: &JobFile, hops: &[(usize, usize)]) -> String {
    let name = |i: usize| file.processes[i].name.value.as_str();
    // (separator before, name)
    let mut parts: Vec<(&str, &str)> = vec![("", name(hops[0].0))];
    let mut at = hops[0].0;
    for &(p, t) in hops {
        if p != at {
            parts.push((" ~ ", name(p)));
        }
        parts.push((" -> ", name(t)));
        at = t;
    }
    if at != hops[0].0 {
        parts.push((" ~ ", name(hops[0].0)));
    }
    // A long loop keeps its ends, so the message stays one line.
    let mut text = String::new();
    let keep = 5;
    for (k, (sep, n)) in parts.iter().enumerate() {
        if parts.len() > 2 * keep + 1 && k == keep {
            text.push_str(&format!(" … ({} more) …", parts.len() - 2 * keep));
        }
        if parts.len() > 2 * keep + 1 && k >= keep && k < parts.len() - keep {
            continue;
        }
        text.push_str(sep);
        text.push_str(n);
    }
    text
}

fn describe_edges(file: &JobFile, edges: &[String]) -> String {
    let mut parts = Vec::new();
    for e in edges.iter().take(3) {
        let kind = if file.queues.iter().any(|q| &q.name.value == e) {
            "queue"
        } else {
            "pipe"
        };
        parts.push(format!("{kind} `{e}`"));
    }
    if edges.len() > 3 {
        parts.push("…".into());
    }
    parts.join(", ")
}

/// Kahn's algorithm, keeping depth: a group's stage is one past the deepest group it waits for.
fn layers(waits: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = waits.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (g, ws) in waits.iter().enumerate() {
        pending[g] = ws.len();
        for &w in ws {
            dependents[w].push(g);
        }
    }
    let mut level = vec![0usize; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&g| pending[g] == 0).collect();
    while let Some(g) = queue.pop_front() {
        for &d in &dependents[g] {
            level[d] = level[d].max(level[g] + 1);
            pending[d] -= 1;
            if pending[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    let depth = level.iter().copied().max().map_or(0, |m| m + 1);
    let mut stages = vec![Vec::new(); if n == 0 { 0 } else { depth }];
    for (g, &l) in level.iter().enumerate() {
        stages[l].push(g);
    }
    stages
}

#[cfg(test)]
mod tests {
    use super::layers;

    #[test]
    fn diamond_has_three_stages() {
        // 0 <- 1, 0 <- 2, {1,2} <- 3
        let waits = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert_eq!(layers(&waits), vec![vec![0], vec![1, 2], vec![3]]);
    }
}
