//! The `jobgraph` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    jobgraph::cli::main()
}
