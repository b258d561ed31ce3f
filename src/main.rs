use std::process::ExitCode;

use clap::Parser;

// glibc malloc maps and unmaps every large tensor buffer; mimalloc keeps freed memory
// (docs/benchmarks.md, "mimalloc keeps freed pages").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pretext::device::tune_cpu_runtime();
    match pretext::cli::execute(pretext::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
