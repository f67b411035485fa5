//! Entry point: parse the command line and hand over to one role or client command.

mod alloc;

use weft::cmd;

use clap::Parser;

/// Threads for blocking calls (the SQLite store runs each call on one, on its single
/// connection). Tokio's default of 512 let every waiting call park its own thread — 200 threads
/// under a burst of starts, each keeping its stack and allocator cache resident — though only
/// one runs at a time.
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> std::process::ExitCode {
    alloc::start_trimming();
    let cli = cmd::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
