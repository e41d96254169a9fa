//! jobgraph: a declarative job-graph engine.
//!
//! A job file declares OS processes, their parent/child and daemon relations,
//! named locks, and the pipe and queue edges between them. This crate reads
//! such a file ([`spec`]), checks and analyses it ([`graph`]), and lays out
//! the launch ([`plan`]). Data flows one way: spec → graph → plan → render.

pub mod check;
pub mod code;
pub mod diagnostic;
pub mod file_identity;
pub mod graph;
pub mod plan;
pub mod render;
pub mod runtime;
pub mod schema;
pub mod source;
pub mod spec;
pub mod streams;

pub use check::{check_file, check_source, Checked};
pub use code::Code;
pub use diagnostic::{Diagnostic, Severity};
pub use source::SourceFile;
pub mod cli;
pub mod output_paths;
pub mod report;
