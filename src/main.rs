use std::process::ExitCode;

use clap::Parser;

// glibc malloc maps and unmaps every large tensor buffer; mimalloc keeps freed memory
// (docs/benchmarks.md, "mimalloc keeps freed pages").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pretext::dist::set_threads_per_rank();
    pretext::device::tune_cpu_runtime();
    let cli = pretext::cli::Cli::parse();
    let code = match pretext::device::on_cpu_pool(|| pretext::cli::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let world = pretext::dist::world();
            if world.size() > 1 {
                // The other ranks may be waiting for this one in a collective: end the job.
                eprintln!("error on rank {} of {}: {e}", world.rank(), world.size());
                world.abort(1);
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    pretext::dist::finish();
    code
}
