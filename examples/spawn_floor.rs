//! The floor for the launch benchmark: a plain fork+exec loop with std's
//! `Command`, N processes with at most P running at once, nothing else.
//! `cargo run --release --example spawn_floor -- N P [PROGRAM]`

use std::collections::VecDeque;
use std::process::{Child, Command};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let p: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .max(1);
    let program = args.next().unwrap_or_else(|| "/bin/true".into());
    let mut running: VecDeque<Child> = VecDeque::new();
    for _ in 0..n {
        if running.len() == p {
            if let Some(mut c) = running.pop_front() {
                let _ = c.wait();
            }
        }
        match Command::new(&program).spawn() {
            Ok(c) => running.push_back(c),
            Err(e) => {
                eprintln!("spawn failed: {e}");
                std::process::exit(1);
            }
        }
    }
    for mut c in running {
        let _ = c.wait();
    }
}
