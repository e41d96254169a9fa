//! Mermaid flowchart output.

use super::{edges, process_label, Edge};
use crate::graph::Graph;
use std::fmt::Write;

/// The graph as a Mermaid `flowchart LR`.
pub fn render_mermaid(g: &Graph) -> String {
    let mut o = String::from("flowchart LR\n");
    let mut daemons = Vec::new();
    let mut parents = Vec::new();
    for (i, p) in g.file.processes.iter().enumerate() {
        let label = text(&process_label(g, i));
        if p.replicas.value > 1 {
            o.push_str(&format!("  p{i}[[\"{label}\"]]\n"));
        } else {
            o.push_str(&format!("  p{i}[\"{label}\"]\n"));
        }
        if p.daemon.value {
            daemons.push(format!("p{i}"));
        } else if !g.children[i].is_empty() {
            parents.push(format!("p{i}"));
        }
    }
    for (qi, q) in g.file.queues.iter().enumerate() {
        let mode = match q.mode {
            crate::spec::QueueMode::Balance => "balance",
            crate::spec::QueueMode::Broadcast => "broadcast",
        };
        o.push_str(&format!(
            "  q{qi}[(\"queue {} ({mode})\")]\n",
            text(&q.name.value)
        ));
    }
    let mut styles: Vec<(usize, &str)> = Vec::new();
    for (k, e) in edges(g).into_iter().enumerate() {
        let _ = match e {
            Edge::After {
                from,
                to,
                condition,
            } => writeln!(o, "  p{from} -->|\"{condition}\"| p{to}"),
            Edge::Child { parent, child } => writeln!(o, "  p{parent} -.->|\"child\"| p{child}"),
            Edge::Pipe { from, to, name } => {
                styles.push((k, "stroke:#15803d,stroke-width:3px"));
                writeln!(o, "  p{from} ==>|\"pipe {}\"| p{to}", text(&name))
            }
            Edge::Duplex { a, b, name } => {
                styles.push((k, "stroke:#7c3aed,stroke-width:3px"));
                writeln!(o, "  p{a} <-->|\"duplex {}\"| p{b}", text(&name))
            }
            Edge::IntoQueue { from, queue } => {
                styles.push((k, "stroke:#1d4ed8,stroke-width:2px"));
                writeln!(o, "  p{from} ==> q{queue}")
            }
            Edge::OutOfQueue { queue, to } => {
                styles.push((k, "stroke:#1d4ed8,stroke-width:2px"));
                writeln!(o, "  q{queue} ==> p{to}")
            }
        };
    }
    for (k, style) in styles {
        o.push_str(&format!("  linkStyle {k} {style}\n"));
    }
    if !parents.is_empty() {
        o.push_str("  classDef parent stroke-width:3px\n");
        o.push_str(&format!("  class {} parent\n", parents.join(",")));
    }
    if !daemons.is_empty() {
        o.push_str("  classDef daemon stroke-dasharray: 5 5\n");
        o.push_str(&format!("  class {} daemon\n", daemons.join(",")));
    }
    o
}

/// Text inside a Mermaid quoted label: quotes and markup as entity codes.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            _ => out.push(c),
        }
    }
    out
}
