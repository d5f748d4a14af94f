//! What the commands do: opening the data directories, creating and listing tokens
//! and clients, serving, joining and sending. The dispatcher (`dispatch`) calls these.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use boarding::identity::{ClientId, ServerIdentity};
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenId, TokenRecord};
use boarding_smol::admin::{
    ADMIN_SOCKET, AdminClient, AdminErrorKind, AdminRequest, AdminResponse, AdminServer, ClientView, TokenView,
};
use boarding_smol::{
    Agent, Gateway, GatewayConfig, KeyringStore, MemoryStore, RedbKeyringStore, RedbStore, Store, StoreError,
    TokenTemplate, echo, os_rng, unix_now,
};
use smol::stream::StreamExt;

use crate::cli::Ttl;
use crate::error::{CliError, Result};
use crate::observe::Observer;
use crate::output::{
    ClientRow, CreatedRow, OutputFormat, TokenRow, client_table, document, format_time, is_expired, note, out, out_raw,
    token_table,
};
use crate::secret::{self, SecretArg};

/// Formats a duration in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Whether a command may create the gateway's data directory and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `gateway init`, `gateway pin`: the first use creates the identity.
    Yes,
    /// The `token` and `clients` commands: there must be a gateway already, so that a
    /// mistyped --data-dir is an error rather than a new, empty gateway.
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
            return Err(CliError::DataDir(format!(
                "no gateway in {}: {} does not exist and no gateway answers on {}; pass the gateway's --data-dir \
                 (or set BOARDING_GATEWAY_DIR), or create a gateway there with `boarding gateway init --data-dir {}`",
                dir.display(),
                path.display(),
                socket.display(),
                dir.display()
            )));
        }
        match RedbStore::hold_gateway_in(dir) {
            Ok(store) => Ok(Self::Direct(store)),
            Err(StoreError::Locked { path }) => Err(CliError::DataDir(format!(
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
        // `Debug` of a response redacts any token secret in it.
        CliError::Unexpected(format!("the gateway gave an unexpected admin answer: {response:?}"))
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

    /// Creates a token: `given`, or a fresh random one.
    pub async fn create_token(
        &mut self,
        template: TokenTemplate,
        given: Option<BootstrapToken>,
    ) -> Result<(BootstrapToken, TokenView)> {
        match self {
            Self::Admin(client, _) => {
                let request = AdminRequest::TokenCreate {
                    expires_at: template.expires_at,
                    max_uses: template.max_uses,
                    labels: template.labels,
                    description: template.description,
                    token: given,
                };
                match client.request(&request).await {
                    Ok(AdminResponse::Created { token, view }) => Ok((token, view)),
                    Ok(other) => Err(Self::unexpected(other)),
                    Err(boarding_smol::Error::Admin(e)) if e.kind == AdminErrorKind::Conflict => {
                        Err(CliError::Conflict(e.message))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Self::Direct(store) => {
                let created = match given {
                    Some(token) => boarding_smol::insert_chosen_token(store, token.clone(), &template)
                        .await
                        .map(|record| (token, record)),
                    None => boarding_smol::create_token(store, &template).await,
                };
                match created {
                    Ok((token, record)) => Ok((token, TokenView::from(&record))),
                    Err(e @ boarding_smol::Error::TokenIdTaken { .. }) => Err(CliError::Conflict(e.to_string())),
                    Err(e) => Err(e.into()),
                }
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

/// The record for an operator-chosen token, checked against the token limits as the
/// driver checks a drawn one.

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
pub async fn serve(listen: &str, dir: &Path, config: GatewayConfig, observer: Option<Observer>) -> Result<()> {
    let fresh = !dir.join(boarding_smol::GATEWAY_DB).exists();
    let store = match RedbStore::hold_gateway_in(dir) {
        Ok(store) => store,
        Err(StoreError::Locked { path }) => {
            return Err(CliError::DataDir(format!(
                "{} is held by another process: is a gateway already serving {}?",
                path.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let gateway = Gateway::open(store, config).await?;
    if fresh {
        println!(
            "created a new gateway identity in {} (first run; `boarding gateway init` creates it ahead of time)",
            dir.display()
        );
        tracing::info!(data_dir = %dir.display(), "created a new gateway identity");
    } else {
        println!("loaded the gateway identity from {}", dir.display());
    }
    run_gateway(listen, dir, gateway, observer).await
}

/// `gateway serve --memory`: the same service on an in-memory store.
pub async fn serve_in_memory(
    listen: &str,
    dir: &Path,
    config: GatewayConfig,
    observer: Option<Observer>,
) -> Result<()> {
    boarding_smol::prepare_dir(dir)?;
    let gateway = Gateway::open(MemoryStore::new(), config).await?;
    println!("created a new in-memory gateway identity (nothing is kept at exit)");
    run_gateway(listen, dir, gateway, observer).await
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
async fn run_gateway<S: Store>(
    listen: &str,
    dir: &Path,
    gateway: Gateway<S>,
    observer: Option<Observer>,
) -> Result<()> {
    raise_open_file_limit();
    if let Some(observer) = &observer {
        observer.attach(&gateway);
        println!("metrics on http://{}/metrics", observer.local_addr());
    }
    let admin = AdminServer::start(&gateway, &dir.join(ADMIN_SOCKET))?;
    println!("pin: {}", gateway.pin());
    let listener = smol::net::TcpListener::bind(listen).await.map_err(|source| CliError::Io {
        context: format!("cannot listen on {listen} (is another gateway running there? choose another --listen)"),
        source,
    })?;
    let serving = gateway.serve(listener, echo)?;
    if let Some(observer) = &observer {
        observer.set_ready(true);
    }
    println!("listening on {}", serving.local_addr());
    println!("admin socket: {}", admin.path().display());
    // The hint keeps the secret off the agent's command line (and out of `ps`).
    println!(
        "agents join with: boarding agent join --gateway {} --pin {} --token-file FILE (a file holding a token \
         from `boarding token create`; `--token -` reads it from stdin)",
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
    if let Some(observer) = &observer {
        observer.set_ready(false);
    }
    drop(admin);
    serving.shutdown().await;
    Ok(())
}

/// The template for a new token, checked against the limits.
fn template(ttl: Ttl, uses: u32, labels: &[(String, String)], description: &str) -> Result<TokenTemplate> {
    // The parser checked the TTL against the clock already; checked again here because
    // the clock has moved on since.
    let expires_at = ttl.expires_at(unix_now()).ok_or_else(|| {
        CliError::Usage("the TTL would expire after 9999-12-31T23:59:59Z; use 0 or never for no expiry".into())
    })?;
    Ok(TokenTemplate {
        expires_at,
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

/// What `token create` was asked for.
#[derive(Debug)]
pub struct CreateOptions {
    /// The operator's own token, or `None` to draw one.
    pub token: Option<BootstrapToken>,
    /// Its lifetime.
    pub ttl: Ttl,
    /// Most redemptions; 0 is unlimited.
    pub uses: u32,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its description.
    pub description: String,
    /// Print the join command instead of the bare token.
    pub print_join_command: bool,
    /// The gateway's address for the join command.
    pub gateway: Option<String>,
    /// How to print.
    pub output: OutputFormat,
}

/// The `agent join` command for `token`: the token goes in on stdin through `echo`, a
/// shell builtin, so it never appears in a process list; the client id defaults to
/// the agent's host name, so the command runs as pasted.
pub fn join_command(token: &BootstrapToken, pin: &Pin, gateway: Option<&str>) -> String {
    format!("echo {token} | boarding agent join --gateway {} --pin {pin} --token -", gateway.unwrap_or("HOST:PORT"))
}

/// `token create`.
pub async fn token_create(dir: &Path, options: CreateOptions) -> Result<()> {
    let template = template(options.ttl, options.uses, &options.labels, &options.description)?;
    let mut access = GatewayAccess::open(dir, Create::No).await?;
    let (token, view) = access.create_token(template, options.token).await?;
    let pin = access.pin().await?;
    let join = options.print_join_command.then(|| join_command(&token, &pin, options.gateway.as_deref()));
    let now = unix_now();
    if let Some(document) = document(options.output, &CreatedRow::new(&token, &view, now, join.as_deref()))? {
        return out_raw(&document);
    }
    match &join {
        Some(command) => out(command)?,
        None => out(&token)?,
    }
    let expires = view.expires_at.map_or_else(|| "never".to_owned(), format_time);
    let uses = if view.max_uses == 0 { "unlimited".to_owned() } else { view.max_uses.to_string() };
    note(format_args!("token {} created: expires {expires}, uses {uses}", view.id));
    note("this is the only time the token is shown; hand it to the agent over a trusted channel");
    match (&join, options.gateway) {
        (Some(_), None) => note("replace HOST:PORT by the gateway's address (or pass --gateway to `token create`)"),
        (Some(_), Some(_)) => {}
        (None, _) => note(format_args!(
            "the agent joins with: boarding agent join --gateway ADDR --pin {pin} --token-file FILE (FILE holds the \
             token; `--token -` reads it from stdin; --print-join-command prints a command to paste)"
        )),
    }
    Ok(())
}

/// `token list`: expired tokens are hidden unless `all`.
pub async fn token_list(dir: &Path, all: bool, format: OutputFormat) -> Result<()> {
    let records = GatewayAccess::open(dir, Create::No).await?.tokens().await?;
    let now = unix_now();
    let (shown, hidden): (Vec<TokenView>, Vec<TokenView>) =
        records.into_iter().partition(|view| all || !is_expired(view, now));
    let rows: Vec<TokenRow<'_>> = shown.iter().map(|view| TokenRow::new(view, now)).collect();
    if let Some(document) = document(format, &rows)? {
        return out_raw(&document);
    }
    if shown.is_empty() {
        out("no tokens; create one with `boarding token create`")?;
    } else {
        out(token_table(&shown, now))?;
    }
    if !hidden.is_empty() {
        note(format_args!(
            "{} expired token(s) hidden: `--all` shows them, `boarding token prune` deletes them",
            hidden.len()
        ));
    }
    Ok(())
}

/// `token delete`: every argument is checked first, then each token deleted; the ones
/// that did not exist are reported together at the end.
pub async fn token_delete(dir: &Path, tokens: &[SecretArg]) -> Result<()> {
    let mut ids = Vec::with_capacity(tokens.len());
    for (n, arg) in tokens.iter().enumerate() {
        let id = secret::token_id_of(arg, n.saturating_add(1))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut access = GatewayAccess::open(dir, Create::No).await?;
    let mut missing = Vec::new();
    for id in ids {
        if access.revoke_token(id).await? {
            out(format_args!("token {id} deleted: no agent can join with it any more"))?;
        } else {
            missing.push(id.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound(format!(
            "no token {} in {}; see `boarding token list --all`",
            missing.join(", "),
            access.describe()
        )))
    }
}

/// `token prune`: deletes the tokens expired now. An expiry never moves, so a token
/// listed as expired is still expired when it is deleted.
pub async fn token_prune(dir: &Path) -> Result<()> {
    let mut access = GatewayAccess::open(dir, Create::No).await?;
    let now = unix_now();
    let expired: Vec<TokenId> =
        access.tokens().await?.iter().filter(|view| is_expired(view, now)).map(|view| view.id).collect();
    let mut deleted = Vec::with_capacity(expired.len());
    for id in expired {
        // Deleted meanwhile by someone else: nothing left to do for it.
        if access.revoke_token(id).await? {
            deleted.push(id.to_string());
        }
    }
    if deleted.is_empty() {
        out("no expired tokens")
    } else {
        out(format_args!("deleted {} expired token(s): {}", deleted.len(), deleted.join(", ")))
    }
}

/// `clients list`.
pub async fn clients_list(dir: &Path, format: OutputFormat) -> Result<()> {
    let records = GatewayAccess::open(dir, Create::No).await?.clients().await?;
    let rows: Vec<ClientRow<'_>> = records.iter().map(ClientRow::new).collect();
    if let Some(document) = document(format, &rows)? {
        return out_raw(&document);
    }
    if records.is_empty() { out("no clients have joined yet") } else { out(client_table(&records)) }
}

/// `clients revoke`.
pub async fn clients_revoke(dir: &Path, id: ClientId) -> Result<()> {
    let mut access = GatewayAccess::open(dir, Create::No).await?;
    match access.revoke_client(id.clone()).await? {
        (true, closed) => out(format_args!(
            "client {id} revoked: it can no longer connect ({closed} live session(s) closed); its id is free to join \
             again"
        )),
        (false, _) => {
            Err(CliError::NotFound(format!("no client {id} in {}; see `boarding clients list`", access.describe())))
        }
    }
}

/// `gateway init`: creates the identity if there is none, and prints the pin.
pub async fn gateway_init(dir: &Path) -> Result<()> {
    let fresh = !dir.join(boarding_smol::GATEWAY_DB).exists();
    let mut access = GatewayAccess::open(dir, Create::Yes).await?;
    let pin = access.pin().await?;
    match (&access, fresh) {
        (GatewayAccess::Admin(..), _) => {
            note(format_args!("a gateway is running on {}; nothing changed", dir.display()));
        }
        (GatewayAccess::Direct(_), true) => {
            note(format_args!("created a new gateway identity in {}", access.describe()));
            note(format_args!("next: boarding gateway serve --data-dir {}", dir.display()));
        }
        (GatewayAccess::Direct(_), false) => {
            note(format_args!("{} already holds a gateway identity; nothing changed", access.describe()));
        }
    }
    out(pin)
}

/// `gateway pin`: the pin of the gateway in `dir`, which must exist (`gateway init`
/// creates one).
pub async fn gateway_pin(dir: &Path) -> Result<()> {
    let pin = GatewayAccess::open(dir, Create::No).await?.pin().await?;
    out(pin)
}

/// This host's name as a client id, the default of `agent join --id`: its first label,
/// in lowercase, as kubeadm names a node after its host.
pub fn default_client_id() -> Result<ClientId> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    let label = name.split('.').next().unwrap_or_default().to_ascii_lowercase();
    ClientId::new(&label).map_err(|e| {
        CliError::Usage(format!(
            "this host's name {label:?} is not a valid client id ({e}); pass --id with a DNS label (lowercase \
             letters, digits and '-')"
        ))
    })
}

/// `agent join`.
pub async fn agent_join(gateway: &str, token: BootstrapToken, pins: &[Pin], id: ClientId, dir: &Path) -> Result<()> {
    let store = RedbKeyringStore::agent_in(dir)?;
    if let Some(saved) = store.load_keyring().await? {
        return Err(CliError::DataDir(format!(
            "{} already holds a keyring: this agent joined gateway {} as {}; use `boarding agent send`, or a fresh \
             --data-dir to join again",
            dir.display(),
            saved.server_pin,
            saved.client_id
        )));
    }
    let started = std::time::Instant::now();
    let session = Agent::default().join(gateway, token, pins, id.clone(), &store).await?;
    let joined = session.peer().clone();
    session.close().await?;
    out(format_args!(
        "joined gateway {} as {id} in {} (MAC suite {:?}); keyring stored in {}",
        joined.server_pin,
        millis(started.elapsed()),
        joined.suite,
        store.path().display()
    ))
}

/// A failed resume as the agent's operator should read it. A gateway that no longer
/// holds the keyring (the client was revoked, or the database replaced) makes the
/// resume proof fail; TLS had already checked the gateway's key against the stored
/// pin, so this is never a pin problem, and is said as what it is.
pub fn resume_error(e: boarding_smol::Error, gateway: &str, client: &ClientId) -> CliError {
    use boarding::error::{PeerMisbehaved, ReceivedAlert};
    match e.protocol() {
        Some(boarding::Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof))
        | Some(boarding::Error::PeerAlert(ReceivedAlert::Known(boarding::Alert::BadProof))) => {
            CliError::ClientUnknown { gateway: gateway.to_owned(), client: client.clone() }
        }
        _ => e.into(),
    }
}

/// `agent send`: resume, send `message`, print the reply.
pub async fn agent_send(gateway: &str, dir: &Path, message: &str) -> Result<()> {
    let store = existing_agent_store(dir)?;
    let saved = store
        .load_keyring()
        .await?
        .ok_or_else(|| boarding_smol::Error::NotJoined { location: store.path().display().to_string() })?;
    let client = saved.client_id.clone();
    let mut session =
        Agent::default().connect_with(gateway, saved).await.map_err(|e| resume_error(e, gateway, &client))?;
    session.send(message.as_bytes()).await?;
    let reply = session
        .recv()
        .await?
        .ok_or_else(|| CliError::Unexpected("the gateway closed the session without replying".into()))?;
    session.close().await?;
    out(String::from_utf8_lossy(&reply))
}
