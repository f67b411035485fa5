//! Entry point: parse the command line and hand over to one role or client command.

mod alloc;
mod cmd;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    alloc::start_trimming();
    let cli = cmd::Cli::parse();
    match cmd::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
