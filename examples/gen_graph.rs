//! Generates large job files for the validate benchmark (benches/validate.sh):
//! `cargo run --release --example gen_graph -- [SHAPE] PROCESSES [EDGES] > big.toml`.
//!
//! Shapes (the first argument; a number there means `dag`, for compatibility):
//! - `dag` PROCESSES EDGES: each process waits for up to a few earlier ones
//!   (about EDGES `after` edges); every 200th pair is joined by a queue.
//! - `wide`: PROCESSES independent processes.
//! - `chain`: p1 after p0, p2 after p1, ... (one long `after` chain).
//! - `cycle`: a chain whose first process also waits for the last (invalid).
//! - `parents`: a parent chain: p1 is a child of p0, p2 of p1, ...
//! - `replicas`: PROCESSES processes of 65,536 replicas each.
//! - `groups`: PROCESSES / 2 stream groups, each a producer piped to a consumer
//!   and one queue per 4 groups.

use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let shape = if args.first().is_some_and(|a| a.parse::<usize>().is_err()) {
        args.remove(0)
    } else {
        "dag".to_string()
    };
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let edges: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2 * n);
    let out = std::io::stdout();
    let mut w = std::io::BufWriter::new(out.lock());
    let _ = writeln!(w, "version = 1\n\n[graph]\nname = \"{shape}\"\n");
    match shape.as_str() {
        "dag" => dag(&mut w, n, edges),
        "wide" => {
            for i in 0..n {
                let _ = writeln!(w, "[process.p{i}]\ncmd = [\"true\", \"{i}\"]\n");
            }
        }
        "chain" | "cycle" => {
            for i in 0..n {
                let _ = writeln!(w, "[process.p{i}]\ncmd = [\"true\"]");
                if i > 0 {
                    let _ = writeln!(w, "after = [\"p{}\"]", i - 1);
                } else if shape == "cycle" {
                    let _ = writeln!(w, "after = [\"p{}\"]", n - 1);
                }
                let _ = writeln!(w);
            }
        }
        "parents" => {
            for i in 0..n {
                let _ = writeln!(w, "[process.p{i}]\ncmd = [\"true\"]");
                if i > 0 {
                    let _ = writeln!(w, "parent = \"p{}\"", i - 1);
                }
                let _ = writeln!(w);
            }
        }
        "replicas" => {
            for i in 0..n {
                let _ = writeln!(
                    w,
                    "[process.p{i}]\ncmd = [\"true\", \"{{replica}}\"]\nreplicas = 65536\n"
                );
            }
        }
        "groups" => {
            for g in 0..n / 2 {
                let _ = writeln!(
                    w,
                    "[process.a{g}]\ncmd = [\"true\"]\n[process.b{g}]\ncmd = [\"true\"]\n[pipe.e{g}]\nfrom = \"a{g}\"\nto = \"b{g}\"\n"
                );
                if g % 4 == 3 {
                    let _ = writeln!(
                        w,
                        "[queue.q{g}]\nfrom = [\"b{g}\"]\nto = [\"b{}\"]\n",
                        g - 1
                    );
                }
            }
        }
        other => {
            eprintln!(
                "unknown shape {other}: dag, wide, chain, cycle, parents, replicas or groups"
            );
            std::process::exit(2);
        }
    }
    let _ = w.flush();
}

fn dag(w: &mut impl Write, n: usize, edges: usize) {
    let per = edges.div_ceil(n.max(1));
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below.max(1) as u64) as usize
    };
    let _ = writeln!(w, "[lock.db]\ncapacity = 4\n");
    let mut made = 0;
    for i in 0..n {
        let _ = writeln!(w, "[process.p{i}]\ncmd = [\"true\", \"{i}\"]");
        if i > 0 && made < edges {
            let k = per.min(edges - made).min(i);
            let mut deps: Vec<usize> = (0..k).map(|_| i - 1 - rand(i.min(1000))).collect();
            deps.sort_unstable();
            deps.dedup();
            made += deps.len();
            let list: Vec<String> = deps.iter().map(|d| format!("\"p{d}\"")).collect();
            let _ = writeln!(w, "after = [{}]", list.join(", "));
        }
        if i % 97 == 0 {
            let _ = writeln!(w, "locks = [\"db\"]");
        }
        let _ = writeln!(w);
    }
    // Queues between processes that have no after path between them: fresh producers.
    for q in 0..n / 200 {
        let _ = writeln!(
            w,
            "[process.prod{q}]\ncmd = [\"true\"]\n[process.cons{q}]\ncmd = [\"true\"]\nreplicas = 2\n"
        );
        let _ = writeln!(
            w,
            "[queue.q{q}]\nfrom = [\"prod{q}\"]\nto = [\"cons{q}\"]\n"
        );
    }
}
