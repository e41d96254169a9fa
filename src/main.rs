//! The `jobgraph` binary: everything lives in the library.

/// mimalloc: validating a large generated file is mostly allocating and
/// freeing small strings and tables, where it is much faster than glibc's
/// malloc (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jobgraph::cli::main()
}
