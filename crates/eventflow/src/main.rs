//! `eventflow`: the command line. `serve` runs the server; `migrate`,
//! `tenants` manage the database; `bench` measures; `listen`, `trigger` and
//! `events tail` are clients of a running server.
//!
//! Errors are one clear line on standard error and a non-zero exit code.
//!
//! # Layout
//! - `cli`: the arguments, the configuration's precedence, logging, `serve`,
//!   `migrate` and `tenants create`.
//! - `client`: the commands that speak to a running server over its API:
//!   `listen`, `trigger`, `events tail`, `keys`.
//! - `bench`: `eventflow bench`, the load generator and its scenarios.

mod bench;
mod cli;
mod client;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
