//! # `boarding`: the command line for Boarding
//!
//! One binary for every role:
//!
//! * `boarding demo`: a gateway and an agent in one process on loopback, in a
//!   temporary directory, printing every step (identity and pin, token, join, resume,
//!   messages both ways, timings) and the errors a mistake produces.
//! * `boarding gateway serve --listen ADDR --data-dir DIR`: runs a gateway. The first
//!   run creates its Ed25519 identity in `DIR/gateway.redb` and prints its pin; agents
//!   get an echo of every message they send. It holds the database open for its whole
//!   life and answers operator commands on `DIR/admin.sock`.
//! * `boarding token create|list|revoke` and `boarding clients list|revoke`: manage the
//!   gateway's data: through the running gateway's admin socket, or, with no gateway
//!   running, by opening the database in `--data-dir` directly. `clients revoke` also
//!   ends the client's live sessions.
//! * `boarding agent join` (once, with a token and the gateway's pin) and
//!   `boarding agent send MESSAGE` (resume with the stored keyring, send, print the
//!   gateway's reply).
//!
//! `boarding <command> --help` documents every option.

mod cli;
mod demo;
mod dispatch;
mod error;
mod ops;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(&args);
    match smol::block_on(dispatch::run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.hint() {
                Some(hint) => eprintln!("error: {e}; {hint}"),
                None => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &cli::Cli) {
    let default = match args.command {
        cli::Command::Gateway { .. } => "info",
        // The demo prints every step itself; the gateway's log would interleave.
        cli::Command::Demo(_) => "off",
        _ => "warn",
    };
    let filter = args.log.clone().unwrap_or_else(|| default.to_owned());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
