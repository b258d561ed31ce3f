use std::process::ExitCode;

use clap::Parser;

// glibc malloc maps and unmaps every large tensor buffer; mimalloc keeps freed memory
// (docs/benchmarks.md, "mimalloc keeps freed pages").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pretext::device::tune_cpu_runtime();
    let cli = pretext::cli::Cli::parse();
    match pretext::device::on_cpu_pool(|| pretext::cli::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
