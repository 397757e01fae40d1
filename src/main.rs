//! The `ft` command line: parse flags, then hand off to `cli::<command>::run`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    ft::device::tune_allocator();
    ft::device::set_threads(args.threads);
    if let Err(e) = cli::dispatch(args.command) {
        // One line: the error and its causes, joined.
        eprintln!("error: {}", cli::one_line(&e));
        std::process::exit(1);
    }
}
