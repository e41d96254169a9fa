//! Drawing the graph: Graphviz DOT and Mermaid flowcharts.
//!
//! Both show the same things, styled apart: processes (daemons dashed,
//! replicated ones marked ×N), `after` edges labelled with their condition,
//! parent → child edges dashed, pipes bold (duplex both ways), and queues as
//! their own nodes between producers and consumers.

mod dot;
mod mermaid;

pub use dot::render_dot;
pub use mermaid::render_mermaid;

use crate::graph::{DepKind, Graph};
use crate::spec::PipeEnds;

/// A drawable edge, shared by both renderers.
pub(crate) enum Edge {
    /// `to` starts after `from` (condition).
    After {
        from: usize,
        to: usize,
        condition: &'static str,
    },
    /// `parent` → `child`.
    Child { parent: usize, child: usize },
    /// A one-way pipe.
    Pipe {
        from: usize,
        to: usize,
        name: String,
    },
    /// A duplex pipe.
    Duplex { a: usize, b: usize, name: String },
    /// Producer → queue node.
    IntoQueue { from: usize, queue: usize },
    /// Queue node → consumer.
    OutOfQueue { queue: usize, to: usize },
}

pub(crate) fn edges(g: &Graph) -> Vec<Edge> {
    let mut out = Vec::new();
    for (i, ds) in g.deps.iter().enumerate() {
        for d in ds {
            out.push(match d.kind {
                DepKind::After(c) => Edge::After {
                    from: d.target,
                    to: i,
                    condition: c.as_str(),
                },
                DepKind::Parent => Edge::Child {
                    parent: d.target,
                    child: i,
                },
            });
        }
    }
    let idx = |n: &str| g.process_index(n);
    for pipe in &g.file.pipes {
        match &pipe.ends {
            PipeEnds::OneWay { from, to } => {
                if let (Some(from), Some(to)) = (idx(from), idx(to)) {
                    out.push(Edge::Pipe {
                        from,
                        to,
                        name: pipe.name.value.clone(),
                    });
                }
            }
            PipeEnds::Duplex { between } => {
                if let (Some(a), Some(b)) = (idx(&between[0]), idx(&between[1])) {
                    out.push(Edge::Duplex {
                        a,
                        b,
                        name: pipe.name.value.clone(),
                    });
                }
            }
            PipeEnds::Invalid => {}
        }
    }
    for (qi, q) in g.file.queues.iter().enumerate() {
        for p in q.from.value.iter().filter_map(|p| idx(p)) {
            out.push(Edge::IntoQueue { from: p, queue: qi });
        }
        for c in q.to.value.iter().filter_map(|c| idx(c)) {
            out.push(Edge::OutOfQueue { queue: qi, to: c });
        }
    }
    out
}

/// The label of a process node.
pub(crate) fn process_label(g: &Graph, i: usize) -> String {
    let p = &g.file.processes[i];
    let mut s = p.name.value.clone();
    if p.replicas.value > 1 {
        s.push_str(&format!(" ×{}", p.replicas.value));
    }
    if p.daemon.value {
        s.push_str(" (daemon)");
    }
    s
}
