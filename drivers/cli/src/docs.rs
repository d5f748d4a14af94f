//! `boarding completions SHELL` and `boarding man`: generated from the same grammar as
//! `--help`, so they cannot drift from it.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CliError, Result};
use crate::output::out_raw;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    // Generated into memory first: the generator panics on a write error, and a closed
    // stdout must be an error instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "boarding", &mut script);
    out_raw(&String::from_utf8_lossy(&script))
}

/// Prints the top-level man page, or writes one page per command into `dir`.
pub fn man(dir: Option<&Path>) -> Result<()> {
    let command = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|source| CliError::Io { context: "cannot render the man page".into(), source })?;
            out_raw(&String::from_utf8_lossy(&page))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|source| CliError::Io { context: format!("cannot create {}", dir.display()), source })?;
            clap_mangen::generate_to(command, dir).map_err(|source| CliError::Io {
                context: format!("cannot write the man pages into {}", dir.display()),
                source,
            })?;
            crate::output::note(format_args!("man pages written to {}", dir.display()));
            Ok(())
        }
    }
}
