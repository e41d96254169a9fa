//! Property tests of the graph algorithms, through the library.

use jobgraph::{check_source, Code, SourceFile};
use proptest::prelude::*;
use std::collections::HashMap;

/// A job file with processes p0..pn and `after` edges (i waits for j).
fn job_file(n: usize, edges: &[(usize, usize)]) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("[process.p{i}]\ncmd = [\"true\"]\n"));
        let deps: Vec<String> = edges
            .iter()
            .filter(|e| e.0 == i)
            .map(|e| format!("\"p{}\"", e.1))
            .collect();
        if !deps.is_empty() {
            s.push_str(&format!("after = [{}]\n", deps.join(", ")));
        }
    }
    s
}

/// Edges only from higher to lower index: always acyclic.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (2usize..40).prop_flat_map(|n| {
        let edge = (1..n).prop_flat_map(|i| (Just(i), 0..i));
        (Just(n), proptest::collection::vec(edge, 0..n * 2))
    })
}

fn dedup(mut e: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    e.sort_unstable();
    e.dedup();
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_dag_gets_a_valid_topological_order((n, edges) in dag()) {
        let edges = dedup(edges);
        let checked = check_source(SourceFile::new("dag.toml", job_file(n, &edges)));
        prop_assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
        let g = checked.graph.expect("valid");
        let mut stage_of = HashMap::new();
        for (k, stage) in g.stages.iter().enumerate() {
            for &grp in stage {
                for &m in &g.groups[grp].members {
                    stage_of.insert(m, k);
                }
            }
        }
        prop_assert_eq!(stage_of.len(), n);
        for (i, j) in &edges {
            prop_assert!(stage_of[i] > stage_of[j], "p{} after p{} but stages {} <= {}", i, j, stage_of[i], stage_of[j]);
        }
    }

    #[test]
    fn an_injected_cycle_is_rejected_with_a_real_cycle((n, edges) in dag(), pick in any::<proptest::sample::Index>(), len in 1usize..6) {
        // Inject a back edge closing a path of forward hops: a chain i -> ... -> j plus j -> i.
        let mut edges = dedup(edges);
        let start = pick.index(n);
        let chain: Vec<usize> = (0..len.min(start + 1)).map(|k| start - k).collect();
        for w in chain.windows(2) {
            edges.push((w[0], w[1]));
        }
        let last = *chain.last().unwrap();
        edges.push((last, start)); // the back edge (a self-loop when the chain is one node)
        let edges = dedup(edges);
        let checked = check_source(SourceFile::new("cyclic.toml", job_file(n, &edges)));
        prop_assert!(checked.graph.is_none());
        let cycles: Vec<_> = checked.diagnostics.iter().filter(|d| d.code == Code::Cycle).collect();
        prop_assert!(!cycles.is_empty(), "{:?}", checked.diagnostics);
        for d in cycles {
            let path = d.message.strip_prefix("dependency cycle: ").expect("message shape");
            let nodes: Vec<usize> = path.split(" -> ").map(|p| p[1..].parse().unwrap()).collect();
            prop_assert!(nodes.len() >= 2);
            prop_assert_eq!(nodes.first(), nodes.last(), "path must close: {}", path);
            for w in nodes.windows(2) {
                prop_assert!(edges.contains(&(w[0], w[1])), "{} -> {} is not an edge (path {})", w[0], w[1], path);
            }
        }
    }
}
