//! Graphviz DOT output.

use super::{edges, process_label, Edge};
use crate::graph::Graph;

/// The graph as a DOT digraph.
pub fn render_dot(g: &Graph) -> String {
    let mut o = String::new();
    o.push_str(&format!("digraph {} {{\n", quote(&g.name)));
    o.push_str("  rankdir=LR;\n");
    o.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    o.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    for (i, p) in g.file.processes.iter().enumerate() {
        let mut attrs = format!("label={}", quote(&process_label(g, i)));
        if p.daemon.value {
            attrs.push_str(", style=\"rounded,dashed\"");
        } else if !g.children[i].is_empty() {
            attrs.push_str(", style=\"rounded,bold\"");
        }
        if p.replicas.value > 1 {
            attrs.push_str(", peripheries=2");
        }
        o.push_str(&format!("  p{i} [{attrs}];\n"));
    }
    for (qi, q) in g.file.queues.iter().enumerate() {
        o.push_str(&format!(
            "  q{qi} [label={}, shape=cds, style=filled, fillcolor=\"#dbeafe\"];\n",
            quote(&format!("queue {} ({})", q.name.value, mode(q)))
        ));
    }
    for e in edges(g) {
        let line = match e {
            Edge::After {
                from,
                to,
                condition,
            } => {
                format!("  p{from} -> p{to} [label={}];", quote(condition))
            }
            Edge::Child { parent, child } => {
                format!(
                    "  p{parent} -> p{child} [style=dashed, arrowhead=odiamond, label=\"child\"];"
                )
            }
            Edge::Pipe { from, to, name } => format!(
                "  p{from} -> p{to} [penwidth=2.5, color=\"#15803d\", label={}];",
                quote(&format!("pipe {name}"))
            ),
            Edge::Duplex { a, b, name } => format!(
                "  p{a} -> p{b} [dir=both, penwidth=2.5, color=\"#7c3aed\", label={}];",
                quote(&format!("duplex {name}"))
            ),
            Edge::IntoQueue { from, queue } => {
                format!("  p{from} -> q{queue} [penwidth=2, color=\"#1d4ed8\"];")
            }
            Edge::OutOfQueue { queue, to } => {
                format!("  q{queue} -> p{to} [penwidth=2, color=\"#1d4ed8\"];")
            }
        };
        o.push_str(&line);
        o.push('\n');
    }
    o.push_str("}\n");
    o
}

fn mode(q: &crate::spec::Queue) -> &'static str {
    match q.mode {
        crate::spec::QueueMode::Balance => "balance",
        crate::spec::QueueMode::Broadcast => "broadcast",
    }
}

/// A DOT double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}
