//! The `ft` command line: parse flags, then hand off to `cli::<command>::run`.

mod cli;

use clap::Parser;

/// mimalloc keeps and reuses freed pages: training allocates and frees thousands of
/// activation-sized tensors per step, and with glibc's allocator a quarter of the step went to
/// the kernel zeroing fresh pages (perf), and fragmentation doubled peak RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    ft::device::set_threads(args.threads);
    if let Err(e) = cli::dispatch(args.command) {
        // One line: the error and its causes, joined.
        eprintln!("error: {}", cli::one_line(&e));
        std::process::exit(1);
    }
}
