//! What the operator commands print: tables for people, JSON and YAML for scripts.
//!
//! Every format is built from the admin views ([`TokenView`], [`ClientView`]), so a
//! list read through a running gateway's admin socket and one read from the database
//! look the same. No format ever carries a token's secret, except `token create`'s,
//! which exists to hand it over once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use boarding::token::BootstrapToken;
use boarding_smol::admin::{ClientView, TokenView};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::error::{CliError, Result};

/// The latest instant that can be printed as an RFC 3339 date:
/// 9999-12-31T23:59:59Z, in Unix seconds. Later expiries are refused at input, and a
/// stored one (from another tool, or an older version) is shown as a number.
pub const LAST_PRINTABLE: u64 = 253_402_300_799;

/// How a listing or a new token is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: a table (for `token create`, the bare token, or the join command).
    #[default]
    #[value(alias = "text")]
    Table,
    /// One JSON document (an array for lists).
    Json,
    /// One YAML document (a sequence for lists).
    Yaml,
}

/// `unix` as an RFC 3339 date, or `None` past [`LAST_PRINTABLE`].
pub fn rfc3339(unix: u64) -> Option<String> {
    if unix > LAST_PRINTABLE {
        return None;
    }
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(unix))?;
    // Written through `write!` so a formatter error is a `None`, never a panic.
    let mut text = String::new();
    write!(text, "{}", humantime::format_rfc3339_seconds(at)).ok()?;
    Some(text)
}

/// `unix` for a table: a date, or the raw number past the printable range.
pub fn format_time(unix: u64) -> String {
    rfc3339(unix).unwrap_or_else(|| format!("{unix} (Unix seconds, after year 9999)"))
}

/// Whether `view` is expired at `now`: the core's predicate (`TokenRecord::is_expired`),
/// expiry being the instant `expires_at` itself.
pub fn is_expired(view: &TokenView, now: u64) -> bool {
    view.expires_at.is_some_and(|at| now >= at)
}

/// A token's state at `now`.
pub fn token_state(view: &TokenView, now: u64) -> &'static str {
    if is_expired(view, now) {
        "expired"
    } else if view.max_uses != 0 && view.use_count >= view.max_uses {
        "used up"
    } else {
        "active"
    }
}

/// A token as the JSON and YAML formats show it: the view, its state, and its expiry
/// as a date.
#[derive(Debug, Serialize)]
pub struct TokenRow<'a> {
    #[serde(flatten)]
    view: &'a TokenView,
    /// `active`, `used up` or `expired`.
    state: &'static str,
    /// `expires_at` as an RFC 3339 date; `null` for never (or past year 9999).
    expires: Option<String>,
}

impl<'a> TokenRow<'a> {
    /// The row for `view` at `now`.
    pub fn new(view: &'a TokenView, now: u64) -> Self {
        Self { view, state: token_state(view, now), expires: view.expires_at.and_then(rfc3339) }
    }
}

/// A new token as `token create -o json|yaml` shows it: the whole token (this once),
/// its row, and the join command if asked for.
#[derive(Debug, Serialize)]
pub struct CreatedRow<'a> {
    /// The whole token, secret included.
    token: &'a BootstrapToken,
    #[serde(flatten)]
    row: TokenRow<'a>,
    /// The `agent join` command, with `--print-join-command`.
    #[serde(skip_serializing_if = "Option::is_none")]
    join_command: Option<&'a str>,
}

impl<'a> CreatedRow<'a> {
    /// The document for a token just created.
    pub fn new(token: &'a BootstrapToken, view: &'a TokenView, now: u64, join_command: Option<&'a str>) -> Self {
        Self { token, row: TokenRow::new(view, now), join_command }
    }
}

/// A client as the JSON and YAML formats show it: the view and its join time as a date.
#[derive(Debug, Serialize)]
pub struct ClientRow<'a> {
    #[serde(flatten)]
    view: &'a ClientView,
    /// `created_at` as an RFC 3339 date.
    joined: Option<String>,
}

impl<'a> ClientRow<'a> {
    /// The row for `view`.
    pub fn new(view: &'a ClientView) -> Self {
        Self { view, joined: rfc3339(view.created_at) }
    }
}

/// `value` as a JSON or YAML document (with a final newline); `None` for tables, which
/// the caller draws.
pub fn document<T: Serialize>(format: OutputFormat, value: &T) -> Result<Option<String>> {
    let text = match format {
        OutputFormat::Table => return Ok(None),
        OutputFormat::Json => serde_json::to_string_pretty(value).map(|mut s| {
            s.push('\n');
            s
        }),
        OutputFormat::Yaml => {
            return serde_norway::to_string(value).map(Some).map_err(|e| CliError::Output(e.to_string()));
        }
    };
    text.map(Some).map_err(|e| CliError::Output(e.to_string()))
}

fn labels(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The token table (never with secrets).
pub fn token_table(records: &[TokenView], now: u64) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["ID", "STATE", "USES", "EXPIRES", "LABELS", "DESCRIPTION"]);
    for r in records {
        let max = if r.max_uses == 0 { "∞".to_owned() } else { r.max_uses.to_string() };
        table.add_row([
            r.id.to_string(),
            token_state(r, now).to_owned(),
            format!("{}/{max}", r.use_count),
            r.expires_at.map_or_else(|| "never".to_owned(), format_time),
            labels(&r.labels),
            r.description.clone(),
        ]);
    }
    table
}

/// The client table (never with keys).
pub fn client_table(records: &[ClientView]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "CLIENT ID",
        "TOKEN",
        "LABELS",
        "CONFIRMED",
        "JOINED",
        "KEYRING",
        "CLONE SUSPECTED",
    ]);
    for r in records {
        let keyring = match (r.rotated_at, r.rotation_requested) {
            (_, true) => "rotation asked".to_owned(),
            (Some(at), false) => format!("rotated {}", format_time(at)),
            (None, false) => "from the join".to_owned(),
        };
        let clone = r.clone_suspected.as_ref().map_or_else(
            || "no".to_owned(),
            |s| format!("YES: {} resume(s), last {}", s.count, format_time(s.last_at)),
        );
        table.add_row([
            r.client_id.to_string(),
            r.token_id.to_string(),
            labels(&r.labels),
            if r.confirmed { "yes" } else { "not yet" }.to_owned(),
            format_time(r.created_at),
            keyring,
            clone,
        ]);
    }
    table
}

/// Writes `text` to stdout. A closed stdout (`boarding token list | head -1`) is an
/// error to report, not a panic as `println!` would make it.
pub fn out(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Io { context: "cannot write to stdout".into(), source })
}

/// Writes `text` to stdout as is (a document that ends with its own newline).
pub fn out_raw(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Io { context: "cannot write to stdout".into(), source })
}

/// Writes a note for the operator to stderr; a closed stderr loses the note, nothing else.
pub fn note(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_prints() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(LAST_PRINTABLE).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339(LAST_PRINTABLE + 1), None);
        for unix in [LAST_PRINTABLE + 1, u64::MAX / 2, u64::MAX] {
            assert!(format_time(unix).contains("after year 9999"), "{unix}");
        }
    }
}
