//! What the commands do: opening the data directories, creating and listing tokens
//! and clients, serving, joining and sending. The dispatcher (`dispatch`) calls these.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boarding::identity::{ClientId, ServerIdentity};
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenId, TokenRecord};
use boarding_smol::admin::{
    ADMIN_SOCKET, AdminClient, AdminRequest, AdminResponse, AdminServer, ClientView, TokenView,
};
use boarding_smol::{
    Gateway, GatewayConfig, MemoryStore, RedbKeyringStore, RedbStore, Store, StoreError, TokenTemplate, echo, os_rng,
    unix_now,
};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use smol::stream::StreamExt;

use crate::cli::Ttl;
use crate::error::{CliError, Result};

/// Formats a duration in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Whether a command may create the gateway's data directory and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `gateway pin`, `token create`: the first use creates the identity.
    Yes,
    /// Listing and revoking: there must be a gateway already.
    No,
}

/// How an operator command reaches a gateway's data: through the running gateway's
/// admin socket, or (no gateway running) by opening the database itself.
pub enum GatewayAccess {
    /// A running gateway answers on its admin socket.
    Admin(Box<AdminClient>, std::path::PathBuf),
    /// No gateway runs: the database, held for this command.
    Direct(RedbStore),
}

impl GatewayAccess {
    /// Connects to the gateway serving `dir`, or opens its database if none does.
    pub async fn open(dir: &Path, create: Create) -> Result<Self> {
        let socket = dir.join(ADMIN_SOCKET);
        if let Some(client) = AdminClient::connect(&socket).await? {
            return Ok(Self::Admin(Box::new(client), socket));
        }
        let path = dir.join(boarding_smol::GATEWAY_DB);
        if create == Create::No && !path.exists() {
            return Err(CliError::Usage(format!(
                "no gateway database at {}: run `boarding gateway serve --data-dir {}` (or `boarding gateway pin`) \
                 first, or pass the gateway's --data-dir",
                path.display(),
                dir.display()
            )));
        }
        match RedbStore::hold_gateway_in(dir) {
            Ok(store) => Ok(Self::Direct(store)),
            Err(StoreError::Locked { path }) => Err(CliError::Usage(format!(
                "{} is held by a running gateway, but its admin socket {} does not answer; check that the gateway \
                 runs as this user, or stop it",
                path.display(),
                socket.display()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the commands go, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Admin(_, socket) => format!("the running gateway (via {})", socket.display()),
            Self::Direct(store) => store.path().display().to_string(),
        }
    }

    async fn ask(client: &mut AdminClient, request: AdminRequest) -> Result<AdminResponse> {
        Ok(client.request(&request).await?)
    }

    fn unexpected(response: AdminResponse) -> CliError {
        CliError::Usage(format!("the gateway gave an unexpected admin answer: {response:?}"))
    }

    /// The gateway's pin.
    pub async fn pin(&mut self) -> Result<Pin> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::Pin {}).await? {
                AdminResponse::Pin(pin) => Ok(pin),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => Ok(store.identity_or_insert(ServerIdentity::generate(&mut os_rng())).await?.pin()),
        }
    }

    /// Creates a token.
    pub async fn create_token(&mut self, template: TokenTemplate) -> Result<(BootstrapToken, TokenView)> {
        match self {
            Self::Admin(client, _) => {
                let request = AdminRequest::TokenCreate {
                    expires_at: template.expires_at,
                    max_uses: template.max_uses,
                    labels: template.labels,
                    description: template.description,
                };
                match Self::ask(client, request).await? {
                    AdminResponse::Created { token, view } => Ok((token, view)),
                    other => Err(Self::unexpected(other)),
                }
            }
            Self::Direct(store) => {
                let (token, record) = boarding_smol::create_token(store, &template).await?;
                Ok((token, TokenView::from(&record)))
            }
        }
    }

    /// Every token.
    pub async fn tokens(&mut self) -> Result<Vec<TokenView>> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::TokenList {}).await? {
                AdminResponse::Tokens(tokens) => Ok(tokens),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => Ok(store.tokens().await?.iter().map(TokenView::from).collect()),
        }
    }

    /// Every client.
    pub async fn clients(&mut self) -> Result<Vec<ClientView>> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::ClientsList {}).await? {
                AdminResponse::Clients(clients) => Ok(clients),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => Ok(store.clients().await?.iter().map(ClientView::from).collect()),
        }
    }

    /// Revokes a token; whether it existed.
    pub async fn revoke_token(&mut self, id: TokenId) -> Result<bool> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::TokenRevoke { id }).await? {
                AdminResponse::Revoked { existed, .. } => Ok(existed),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => Ok(store.revoke_token(id).await?),
        }
    }

    /// Revokes a client; whether it existed, and how many live sessions were closed.
    pub async fn revoke_client(&mut self, id: ClientId) -> Result<(bool, usize)> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::ClientsRevoke { id }).await? {
                AdminResponse::Revoked { existed, closed_sessions } => Ok((existed, closed_sessions)),
                other => Err(Self::unexpected(other)),
            },
            // No gateway runs, so no session is live.
            Self::Direct(store) => Ok((store.revoke_client(id).await?, 0)),
        }
    }
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

/// `gateway serve`: runs the gateway until SIGINT or SIGTERM, holding its database
/// open and answering operator commands on its admin socket.
pub async fn serve(listen: &str, dir: &Path, config: GatewayConfig) -> Result<()> {
    let fresh = !dir.join(boarding_smol::GATEWAY_DB).exists();
    let store = match RedbStore::hold_gateway_in(dir) {
        Ok(store) => store,
        Err(StoreError::Locked { path }) => {
            return Err(CliError::Usage(format!(
                "{} is held by another process: is a gateway already serving {}?",
                path.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let gateway = Gateway::open(store, config).await?;
    if fresh {
        println!("created a new gateway identity in {}", dir.display());
    } else {
        println!("loaded the gateway identity from {}", dir.display());
    }
    run_gateway(listen, dir, gateway).await
}

/// `gateway serve --memory`: the same service on an in-memory store.
pub async fn serve_in_memory(listen: &str, dir: &Path, config: GatewayConfig) -> Result<()> {
    boarding_smol::prepare_dir(dir)?;
    let gateway = Gateway::open(MemoryStore::new(), config).await?;
    println!("created a new in-memory gateway identity (nothing is kept at exit)");
    run_gateway(listen, dir, gateway).await
}

/// Raises the soft limit on open files to the hard limit: every session is a socket,
/// and the common soft default (1,024) is far below the gateway's session cap.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
}

/// Serves `gateway` on `listen` with its admin socket in `dir`, until a signal.
async fn run_gateway<S: Store>(listen: &str, dir: &Path, gateway: Gateway<S>) -> Result<()> {
    raise_open_file_limit();
    let admin = AdminServer::start(&gateway, &dir.join(ADMIN_SOCKET))?;
    println!("pin: {}", gateway.pin());
    let listener = smol::net::TcpListener::bind(listen).await.map_err(|source| CliError::Io {
        context: format!("cannot listen on {listen} (is another gateway running there? choose another --listen)"),
        source,
    })?;
    let serving = gateway.serve(listener, echo)?;
    println!("listening on {}", serving.local_addr());
    println!("admin socket: {}", admin.path().display());
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
    drop(admin);
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

/// The template for a new token, checked against the limits.
fn template(ttl: Ttl, uses: u32, labels: &[(String, String)], description: &str) -> Result<TokenTemplate> {
    Ok(TokenTemplate {
        expires_at: expiry(ttl)?,
        max_uses: uses,
        labels: labels.iter().cloned().collect(),
        description: description.to_owned(),
    })
}

/// Creates and stores a token record in a store this process holds (a fresh random
/// id; the driver retries a taken one).
pub async fn create_token<S: Store>(
    store: &S,
    ttl: Ttl,
    uses: u32,
    labels: &[(String, String)],
    description: &str,
) -> Result<(BootstrapToken, TokenRecord)> {
    Ok(boarding_smol::create_token(store, &template(ttl, uses, labels, description)?).await?)
}

/// `token create`.
pub async fn token_create(
    dir: &Path,
    ttl: Ttl,
    uses: u32,
    labels: &[(String, String)],
    description: &str,
) -> Result<()> {
    let mut access = GatewayAccess::open(dir, Create::Yes).await?;
    let (token, view) = access.create_token(template(ttl, uses, labels, description)?).await?;
    let pin = access.pin().await?;
    println!("{token}");
    let expires = view.expires_at.map_or_else(|| "never".to_owned(), format_time);
    let uses = if uses == 0 { "unlimited".to_owned() } else { uses.to_string() };
    eprintln!("token {} created: expires {expires}, uses {uses}", view.id);
    eprintln!("this is the only time the token is shown; hand it to the agent over a trusted channel");
    eprintln!("join with: boarding agent join --pin {pin} --token <TOKEN> --id <NAME> --gateway <ADDR>");
    Ok(())
}

fn state(view: &TokenView, now: u64) -> &'static str {
    if view.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else if view.max_uses != 0 && view.use_count >= view.max_uses {
        "used up"
    } else {
        "active"
    }
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The token table (never with secrets).
pub fn token_table(records: &[TokenView]) -> Table {
    let now = unix_now();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["ID", "STATE", "USES", "EXPIRES", "LABELS", "DESCRIPTION"]);
    for r in records {
        let max = if r.max_uses == 0 { "∞".to_owned() } else { r.max_uses.to_string() };
        table.add_row([
            r.id.to_string(),
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
pub fn client_table(records: &[ClientView]) -> Table {
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
    let records = GatewayAccess::open(dir, Create::No).await?.tokens().await?;
    if records.is_empty() {
        println!("no tokens; create one with `boarding token create`");
    } else {
        println!("{}", token_table(&records));
    }
    Ok(())
}

/// `clients list`.
pub async fn clients_list(dir: &Path) -> Result<()> {
    let records = GatewayAccess::open(dir, Create::No).await?.clients().await?;
    if records.is_empty() {
        println!("no clients have joined yet");
    } else {
        println!("{}", client_table(&records));
    }
    Ok(())
}
