//! The floor for the launch benchmark: a plain fork+exec loop with std's
//! `Command`, N processes with at most P running at once, nothing else.
//! `cargo run --release --example spawn_floor -- N P [PROGRAM] [--capture] [--threads=T]`
//!
//! With `--threads=T`, T threads each run N/T processes with P/T slots: what
//! spawning from more than one thread gains (each `posix_spawn` blocks its
//! thread until the child has exec'd).
//!
//! With `--capture`, each child's stdout and stderr go to a pipe of its own
//! that the loop reads to end-of-file before it waits for the child: the
//! least a runner that keeps every process's output apart must do.

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Child, Command, Stdio};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let capture = args.iter().any(|a| a == "--capture");
    let threads: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--threads="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut args = args.into_iter().filter(|a| !a.starts_with("--"));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let p: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .max(1);
    let program = args.next().unwrap_or_else(|| "/bin/true".into());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let program = program.clone();
            // The first threads take the remainders: N and P are split exactly.
            let share = |x: usize| x / threads + usize::from(t < x % threads);
            let (n, p) = (share(n), share(p).max(1));
            std::thread::spawn(move || run(n, p, &program, capture))
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            std::process::exit(1);
        }
    }
}

/// Runs `n` processes of `program`, at most `p` at once.
fn run(n: usize, p: usize, program: &str, capture: bool) {
    let mut running: VecDeque<(Child, Option<std::fs::File>)> = VecDeque::new();
    let finish = |(mut c, out): (Child, Option<std::fs::File>)| {
        if let Some(mut out) = out {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        }
        let _ = c.wait();
    };
    for _ in 0..n {
        if running.len() == p {
            if let Some(c) = running.pop_front() {
                finish(c);
            }
        }
        let mut cmd = Command::new(program);
        let mut out = None;
        if capture {
            match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok((r, w)) => {
                    let w2 = w.try_clone().unwrap_or_else(|e| fail(&e));
                    cmd.stdout(Stdio::from(w)).stderr(Stdio::from(w2));
                    out = Some(std::fs::File::from(r));
                }
                Err(e) => fail(&e.into()),
            }
        }
        match cmd.spawn() {
            // The Command (and its copies of the write ends) drops here.
            Ok(c) => running.push_back((c, out)),
            Err(e) => fail(&e),
        }
    }
    for c in running {
        finish(c);
    }
}

fn fail(e: &std::io::Error) -> ! {
    eprintln!("spawn failed: {e}");
    std::process::exit(1);
}
