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
//! remaining descendant; and a watchdog process kills everything the run
//! started if the engine itself dies, even by SIGKILL ([`watchdog`]).

mod engine;
mod hygiene;
mod posix;
mod spawn;
pub mod watchdog;

pub use engine::{run, RunOptions, RunOutcome};
