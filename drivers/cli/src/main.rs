//! # `boarding`: the command line for Boarding
//!
//! One binary for every role:
//!
//! * `boarding demo`: a gateway and an agent in one process on loopback, in a
//!   temporary directory, printing every step (identity and pin, token, join, resume,
//!   messages both ways, timings) and the errors a mistake produces.
//! * `boarding gateway init --data-dir DIR`: creates the gateway's Ed25519 identity in
//!   `DIR/gateway.redb` and prints its pin.
//! * `boarding gateway serve --listen ADDR --data-dir DIR`: runs a gateway (creating
//!   its identity on the first run, and saying so); agents get an echo of every
//!   message they send, or, with `--service NAME=HOST:PORT` (and `--allow NAME=RULE`),
//!   reach services behind the gateway, whose upstreams read the agent's verified
//!   identity from a PROXY protocol v2 header. It holds the database open for its whole
//!   life and answers operator commands on `DIR/admin.sock`.
//! * `boarding token create|generate|list|delete|prune` and
//!   `boarding clients list|revoke`: manage the gateway's data: through the running
//!   gateway's admin socket, or, with no gateway running, by opening the database in
//!   `--data-dir` directly (which must hold a gateway). `clients revoke` also ends the
//!   client's live sessions. Lists print as tables, JSON or YAML (`-o`).
//! * `--store etcd` (on `gateway serve`, `gateway init|pin`, `token` and `clients`): a
//!   fleet of gateway replicas sharing one store on etcd (`--etcd-endpoints`,
//!   `--etcd-prefix`, `--etcd-sealing-key`, TLS and user options). The replicas share
//!   one identity and follow each other's revocations; the operator commands work on
//!   etcd directly, from any machine, with no data directory.
//! * `boarding agent join` (once, with a token from `--token-file`, stdin or the
//!   environment, and the gateway's pin) and `boarding agent send MESSAGE` (resume with
//!   the stored keyring, send, print the gateway's reply); `boarding agent forward
//!   --listen ADDR --service NAME` (each local TCP connection through a resumed session
//!   of its own to a service) and `boarding agent connect --service NAME` (stdin and
//!   stdout, as an ssh `ProxyCommand`).
//! * `boarding completions SHELL` and `boarding man`: shell completions and manual pages.
//!
//! Failures exit with a status by cause (usage, unreachable, refused, local data; see
//! `boarding --help`). `boarding <command> --help` documents every option.

// Nothing a user types may panic the command: outside tests these are errors.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]

mod cli;
mod demo;
mod dispatch;
mod docs;
mod duration;
mod error;
mod fleet;
mod logging;
mod observe;
mod ops;
mod output;
mod secret;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::error::CliError;

fn main() -> ExitCode {
    let (args, log_source) = match parse_args() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&args, log_source) {
        return report(&e);
    }
    match smol::block_on(dispatch::run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Parses the command line. clap's own errors (exit status 2) and `--help` are printed
/// here rather than by clap, so that a token typed where it does not belong is
/// redacted: clap quotes stray arguments.
fn parse_args() -> Result<(cli::Cli, logging::Source), ExitCode> {
    let parsed =
        cli::Cli::command().try_get_matches().and_then(|matches| Ok((cli::Cli::from_arg_matches(&matches)?, matches)));
    match parsed {
        Ok((args, matches)) => Ok((args, logging::Source::of(matches.value_source("log")))),
        Err(e) => {
            use std::io::{IsTerminal, Write};
            let rendered = e.render();
            let terminal =
                if e.use_stderr() { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
            let text = if terminal { rendered.ansi().to_string() } else { rendered.to_string() };
            let text = secret::redact_tokens(&text);
            // Nothing more can be said if the terminal is gone.
            let _ = if e.use_stderr() {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
            Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
        }
    }
}

/// Prints `e` (with its hint) and returns its exit status.
fn report(e: &CliError) -> ExitCode {
    match e.hint() {
        Some(hint) => output::note(format_args!("error: {e}; {hint}")),
        None => output::note(format_args!("error: {e}")),
    }
    e.exit().into()
}
