//! Logging: `tracing` to stderr, filtered by the first of `--log`, `BOARDING_LOG` and
//! `RUST_LOG` that is set (else a default per command), as text or JSON lines.

use clap::parser::ValueSource;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};
use crate::error::{CliError, Result};

/// Where `--log`'s value came from, to name it in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `--log` flag.
    Flag,
    /// The `BOARDING_LOG` environment variable.
    Env,
    /// Neither.
    Unset,
}

impl Source {
    /// The source clap recorded for `--log`.
    pub fn of(source: Option<ValueSource>) -> Self {
        match source {
            Some(ValueSource::CommandLine) => Self::Flag,
            Some(ValueSource::EnvVariable) => Self::Env,
            _ => Self::Unset,
        }
    }
}

/// The filter when none is given: the gateway's sessions are worth seeing, the demo
/// prints every step itself (a log would interleave), and other commands stay quiet
/// unless something is wrong.
fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Gateway { .. } => "info",
        Command::Demo(_) => "off",
        _ => "warn",
    }
}

/// The filter text and where it came from. An empty value counts as unset (as
/// `RUST_LOG=` usually means).
fn chosen_filter(args: &Cli, source: Source) -> Result<(String, &'static str)> {
    if let Some(text) = args.log.as_deref().filter(|t| !t.trim().is_empty()) {
        let name = if source == Source::Env { "BOARDING_LOG" } else { "--log" };
        return Ok((text.to_owned(), name));
    }
    match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => Ok((text, "RUST_LOG")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok((default_filter(&args.command).to_owned(), "the default")),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::Usage("RUST_LOG is not valid UTF-8".into())),
    }
}

/// Installs the global subscriber.
///
/// # Errors
///
/// [`CliError::Usage`] if the chosen filter does not parse (it is not replaced by the
/// default: a typo would otherwise silence the log the operator asked for).
pub fn init(args: &Cli, source: Source) -> Result<()> {
    let (text, name) = chosen_filter(args, source)?;
    let filter = EnvFilter::builder().parse(&text).map_err(|e| {
        CliError::Usage(format!(
            "invalid log filter {text:?} from {name}: {e} (examples: `debug`, `warn,boarding_smol=debug`)"
        ))
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second subscriber cannot be installed; there is only ever this one.
    let _ = match args.log_format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(false).try_init()
        }
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(false).try_init(),
    };
    Ok(())
}
