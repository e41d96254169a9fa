//! The runtime: launch, supervise and join a validated graph.
//!
//! One thread owns all state (like nextest's dispatcher): an event loop over
//! mio that wakes on SIGCHLD, SIGINT / SIGTERM / SIGHUP, output from the
//! processes' log pipes, and the next deadline (timeouts, grace periods,
//! retry delays). Each instance of a process is a small state machine in
//! [`engine`]; nothing ever blocks on a process.
//!
//! Hygiene: every process runs in its own process group; the engine is a
//! child subreaper, so orphans are re-parented to it and reaped; a run ends
//! with a sweep that stops every process group it created and every
//! remaining descendant. Where the kernel allows it, the run lives in a PID
//! namespace whose init is the engine ([`contain`]): when it dies, by any
//! means, the kernel kills everything the run started. Elsewhere a watchdog
//! process does its best ([`watchdog`]).

pub mod contain;
mod engine;
pub mod executor;
pub(crate) mod hygiene;
pub mod journal;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod nowait;
pub mod posix;
pub mod report;
pub mod slurm;
mod sockets;
mod spawn;
pub mod watchdog;

pub use engine::{resume_preview, run, run_with, RunError, RunOptions, RunOutcome};
pub use report::{Reporter, RunEvent};
