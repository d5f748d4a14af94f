//! What the commands do: opening the data directories, creating and listing tokens
//! and clients, serving, joining and sending. The dispatcher (`dispatch`) calls these.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boarding::storage::KeyringRecord;
use boarding::token::{BootstrapToken, TokenRecord, TokenUnusable};
use boarding_smol::{Gateway, GatewayConfig, RedbKeyringStore, RedbStore, Store, TokenTemplate, echo, unix_now};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use smol::stream::StreamExt;

use crate::cli::Ttl;
use crate::error::{CliError, Result};

/// Formats a duration in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The gateway database in `dir`, which must exist already.
pub fn existing_gateway_store(dir: &Path) -> Result<RedbStore> {
    let path = dir.join(boarding_smol::GATEWAY_DB);
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no gateway database at {}: run `boarding gateway serve --data-dir {}` (or `boarding gateway pin`) \
             first, or pass the gateway's --data-dir",
            path.display(),
            dir.display()
        )));
    }
    Ok(RedbStore::gateway_in(dir)?)
}

/// The agent database in `dir`, which must exist already (the agent has joined).
pub fn existing_agent_store(dir: &Path) -> Result<RedbKeyringStore> {
    let path = dir.join(boarding_smol::AGENT_DB);
    if !path.exists() {
        return Err(boarding_smol::Error::NotJoined { location: path.display().to_string() }.into());
    }
    Ok(RedbKeyringStore::agent_in(dir)?)
}

/// Opens (creating on first use) the gateway in `dir`; `true` if the identity is new.
pub async fn open_gateway(dir: &Path, config: GatewayConfig) -> Result<(Gateway<RedbStore>, bool)> {
    let fresh = !dir.join(boarding_smol::GATEWAY_DB).exists();
    let store = RedbStore::gateway_in(dir)?;
    Ok((Gateway::open(store, config).await?, fresh))
}

/// `gateway serve`: runs the gateway until SIGINT or SIGTERM.
pub async fn serve(listen: &str, dir: &Path, config: GatewayConfig) -> Result<()> {
    let (gateway, fresh) = open_gateway(dir, config).await?;
    if fresh {
        println!("created a new gateway identity in {}", dir.display());
    } else {
        println!("loaded the gateway identity from {}", dir.display());
    }
    println!("pin: {}", gateway.pin());
    let listener = smol::net::TcpListener::bind(listen).await.map_err(|source| CliError::Io {
        context: format!("cannot listen on {listen} (is another gateway running there? choose another --listen)"),
        source,
    })?;
    let serving = gateway.serve(listener, echo)?;
    println!("listening on {}", serving.local_addr());
    println!(
        "agents join with: boarding agent join --gateway {} --pin {} --token TOKEN --id NAME",
        serving.local_addr(),
        gateway.pin()
    );
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
        .map_err(|source| CliError::Io { context: "cannot install signal handlers".into(), source })?;
    let signal = signals.next().await;
    // Whoever read our stdout may be gone by now; that must not stop the shutdown.
    let name = match signal {
        Some(Ok(async_signal::Signal::Term)) => "SIGTERM",
        Some(Ok(_)) => "SIGINT",
        _ => "a signal",
    };
    let _ = writeln!(std::io::stdout(), "received {name}: shutting down gracefully");
    serving.shutdown().await;
    Ok(())
}

fn expiry(ttl: Ttl) -> Result<Option<u64>> {
    match ttl {
        Ttl::Never => Ok(None),
        Ttl::For(d) => unix_now()
            .checked_add(d.as_secs().max(1))
            .map(Some)
            .ok_or_else(|| CliError::Usage("the TTL is too long; use `never`".into())),
    }
}

fn format_time(unix: u64) -> String {
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(unix)).unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Creates and stores a token record (a fresh random id; the driver retries a taken one).
pub async fn create_token<S: Store>(
    store: &S,
    ttl: Ttl,
    uses: u32,
    labels: &[(String, String)],
    description: &str,
) -> Result<(BootstrapToken, TokenRecord)> {
    let template = TokenTemplate {
        expires_at: expiry(ttl)?,
        max_uses: uses,
        labels: labels.iter().cloned().collect(),
        description: description.to_owned(),
    };
    Ok(boarding_smol::create_token(store, &template).await?)
}

/// `token create`.
pub async fn token_create(
    dir: &Path,
    ttl: Ttl,
    uses: u32,
    labels: &[(String, String)],
    description: &str,
) -> Result<()> {
    let (gateway, _) = open_gateway(dir, GatewayConfig::default()).await?;
    let (token, record) = create_token(gateway.store(), ttl, uses, labels, description).await?;
    println!("{token}");
    let expires = record.expires_at.map_or_else(|| "never".to_owned(), format_time);
    let uses = if uses == 0 { "unlimited".to_owned() } else { uses.to_string() };
    eprintln!("token {} created: expires {expires}, uses {uses}", record.id());
    eprintln!("this is the only time the token is shown; hand it to the agent over a trusted channel");
    eprintln!("join with: boarding agent join --pin {} --token <TOKEN> --id <NAME> --gateway <ADDR>", gateway.pin());
    Ok(())
}

fn state(record: &TokenRecord, now: u64) -> &'static str {
    match record.usable_at(now) {
        Ok(()) => "active",
        Err(TokenUnusable::Expired) => "expired",
        Err(TokenUnusable::Exhausted) => "used up",
    }
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The token table (never with secrets).
pub fn token_table(records: &[TokenRecord]) -> Table {
    let now = unix_now();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["ID", "STATE", "USES", "EXPIRES", "LABELS", "DESCRIPTION"]);
    for r in records {
        let max = if r.max_uses == 0 { "∞".to_owned() } else { r.max_uses.to_string() };
        table.add_row([
            r.id().to_string(),
            state(r, now).to_owned(),
            format!("{}/{max}", r.use_count),
            r.expires_at.map_or_else(|| "never".to_owned(), format_time),
            labels(&r.labels),
            r.description.clone(),
        ]);
    }
    table
}

/// The client table (never with keys).
pub fn client_table(records: &[KeyringRecord]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["CLIENT ID", "TOKEN", "LABELS", "CONFIRMED", "JOINED"]);
    for r in records {
        table.add_row([
            r.client_id.to_string(),
            r.token_id.to_string(),
            labels(&r.labels),
            if r.confirmed { "yes" } else { "not yet" }.to_owned(),
            format_time(r.created_at),
        ]);
    }
    table
}

/// `token list`.
pub async fn token_list(dir: &Path) -> Result<()> {
    let store = existing_gateway_store(dir)?;
    let records = store.tokens().await?;
    if records.is_empty() {
        println!("no tokens; create one with `boarding token create`");
    } else {
        println!("{}", token_table(&records));
    }
    Ok(())
}

/// `clients list`.
pub async fn clients_list(dir: &Path) -> Result<()> {
    let store = existing_gateway_store(dir)?;
    let records = store.clients().await?;
    if records.is_empty() {
        println!("no clients have joined yet");
    } else {
        println!("{}", client_table(&records));
    }
    Ok(())
}
