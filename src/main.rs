//! The `ft` command line: parse flags, then hand off to `cli::<command>::run`.

mod cli;

use clap::Parser;

/// mimalloc reuses freed memory well: training allocates and frees thousands of
/// activation-sized tensors per step, and glibc's allocator's fragmentation doubled peak RSS.
/// `tune_allocator` stops it returning pages to the OS (their re-zeroing cost a quarter of
/// a step).
/// Wrapped in `ft::budget::Budgeted` so that chat templates from model files run with a
/// memory budget (a hostile template cannot grow a string until the process aborts).
#[global_allocator]
static GLOBAL: ft::budget::Budgeted<mimalloc::MiMalloc> = ft::budget::Budgeted(mimalloc::MiMalloc);

fn main() {
    ft::device::tune_allocator();
    let args = cli::Cli::parse();
    ft::device::set_threads(args.threads);
    if let Err(e) = cli::dispatch(args.command) {
        // One line: the error and its causes, joined.
        eprintln!("error: {}", cli::one_line(&e));
        std::process::exit(1);
    }
}
