//! Generates a large valid job file for the validate benchmark:
//! `cargo run --release --example gen_graph -- PROCESSES EDGES > big.toml`.
//! Each process waits for up to a few earlier ones, so the graph is a DAG
//! with about EDGES `after` edges; every 50th group of four is joined by a queue.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let edges: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2 * n);
    let per = edges.div_ceil(n.max(1));
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below.max(1) as u64) as usize
    };
    let out = std::io::stdout();
    let mut w = std::io::BufWriter::new(out.lock());
    let _ = writeln!(
        w,
        "version = 1\n\n[graph]\nname = \"generated\"\n\n[lock.db]\ncapacity = 4\n"
    );
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
        let _ = writeln!(w, "[process.prod{q}]\ncmd = [\"true\"]\n[process.cons{q}]\ncmd = [\"true\"]\nreplicas = 2\n");
        let _ = writeln!(
            w,
            "[queue.q{q}]\nfrom = [\"prod{q}\"]\nto = [\"cons{q}\"]\n"
        );
    }
    let _ = w.flush();
}
