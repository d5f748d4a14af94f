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
use boarding_smol::attest::{X509Attester, X509Validator};
use boarding_smol::certificate::{CertificatePolicy, ca_certificate_pem};
use boarding_smol::forward::{Duplex, ServiceName, Services, serve_services};
use boarding_smol::{
    Agent, Gateway, GatewayConfig, KeyringStore, MemoryStore, RedbKeyringStore, RedbStore, Store, StoreError,
    TokenTemplate, echo, os_rng, unix_now,
};
use smol::stream::StreamExt;

use crate::cli::{AttestServeArgs, CertificateServeArgs, DataStore, EtcdArgs, GatewayData, ServiceArgs, Ttl};
use crate::error::{CliError, Result};
use crate::fleet::{self, AnyStore, Fleet};
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
/// admin socket, or by opening the store itself: the database when no gateway runs,
/// or a fleet's store on etcd.
pub enum GatewayAccess {
    /// A running gateway answers on its admin socket.
    Admin(Box<AdminClient>, std::path::PathBuf),
    /// The store, opened by this command.
    Direct(AnyStore),
}

impl GatewayAccess {
    /// Opens the gateway data `data` names: the fleet's store on etcd, or the gateway
    /// serving --data-dir, or its database if none does.
    pub async fn open(data: &GatewayData, create: Create) -> Result<Self> {
        match data.kind() {
            DataStore::Etcd => {
                let fleet = if create == Create::Yes { Fleet::Start } else { Fleet::Existing };
                Ok(Self::Direct(AnyStore::Etcd(fleet::connect(&data.etcd, fleet).await?)))
            }
            DataStore::Redb => Self::open_dir(&data.dir.data_dir, create).await,
        }
    }

    /// Connects to the gateway serving `dir`, or opens its database if none does.
    async fn open_dir(dir: &Path, create: Create) -> Result<Self> {
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
            Ok(store) => Ok(Self::Direct(AnyStore::Redb(store))),
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
            Self::Direct(store) => store.describe(),
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

    /// The certificate (PEM) of the gateway's client CA.
    pub async fn ca_certificate(&mut self) -> Result<String> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::CaCertificate {}).await? {
                AdminResponse::CaCertificate(pem) => Ok(pem),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => {
                let identity = store.identity_or_insert(ServerIdentity::generate(&mut os_rng())).await?;
                ca_certificate_pem(&identity)
                    .map_err(|e| CliError::Unexpected(format!("cannot make the gateway's client CA: {e}")))
            }
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
            Self::Direct(store) => match boarding_smol::create_or_insert_token(store, &template, given).await {
                Ok((token, record)) => Ok((token, TokenView::from(&record))),
                Err(e @ boarding_smol::Error::TokenIdTaken { .. }) => Err(CliError::Conflict(e.to_string())),
                Err(e) => Err(e.into()),
            },
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

    /// Asks for a client's keyring to be rotated at its next resume; whether it exists.
    pub async fn rotate_client(&mut self, id: ClientId) -> Result<bool> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::ClientsRotate { id }).await? {
                AdminResponse::RotationRequested { existed } => Ok(existed),
                other => Err(Self::unexpected(other)),
            },
            Self::Direct(store) => Ok(store.request_rotation(id).await?),
        }
    }

    /// Revokes a client; whether it existed, and how many live sessions were closed
    /// (`None` on etcd: every replica closes the client's sessions it serves).
    pub async fn revoke_client(&mut self, id: ClientId) -> Result<(bool, Option<usize>)> {
        match self {
            Self::Admin(client, _) => match Self::ask(client, AdminRequest::ClientsRevoke { id }).await? {
                AdminResponse::Revoked { existed, closed_sessions } => Ok((existed, Some(closed_sessions))),
                other => Err(Self::unexpected(other)),
            },
            // No gateway runs on the database, so no session is live.
            Self::Direct(AnyStore::Redb(store)) => Ok((store.revoke_client(id).await?, Some(0))),
            // The replicas follow the deletion in etcd and close the sessions.
            Self::Direct(store) => Ok((store.revoke_client(id).await?, None)),
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

/// Where a gateway's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The store held it.
    Loaded,
    /// Generated now and stored (the first run).
    Created,
    /// The --identity file (and the store holds the same key).
    File,
}

/// The gateway's identity: the one `store` holds (storing a fresh one, or the key in
/// `file`, first if it holds none). A key in `file` that differs from the stored one is
/// refused: the agents pin the stored one.
async fn identity<S: Store>(store: &S, file: Option<&Path>, place: &str) -> Result<(ServerIdentity, Origin)> {
    match file {
        Some(path) => {
            let wanted = crate::fleet::load_identity(path)?;
            let stored = store.identity_or_insert(wanted.clone()).await?;
            if stored.pin() != wanted.pin() {
                return Err(CliError::DataDir(format!(
                    "the identity key in {} (pin {}) is not the gateway identity {place} already holds (pin {}), \
                     which agents pin; drop --identity to use the stored one, or pass the file of that key",
                    path.display(),
                    wanted.pin(),
                    stored.pin()
                )));
            }
            Ok((stored, Origin::File))
        }
        None => {
            let candidate = ServerIdentity::generate(&mut os_rng());
            let stored = store.identity_or_insert(candidate.clone()).await?;
            let origin = if stored.pin() == candidate.pin() { Origin::Created } else { Origin::Loaded };
            Ok((stored, origin))
        }
    }
}

/// What `gateway serve` runs on.
#[derive(Debug)]
pub enum ServeOn<'a> {
    /// The database in this data directory (its admin socket beside it).
    Redb(&'a Path),
    /// Memory; the admin socket in this directory.
    Memory(&'a Path),
    /// A fleet's store on etcd; no local data, no admin socket.
    Etcd(&'a EtcdArgs),
}

/// `gateway serve`: runs the gateway until SIGINT or SIGTERM, on the database in a
/// data directory (held open, with operator commands answered on its admin socket), in
/// memory, or as a replica of a fleet on etcd (following the fleet's revocations).
pub async fn serve(
    listen: &str,
    on: ServeOn<'_>,
    identity_file: Option<&Path>,
    config: GatewayConfig,
    observer: Option<Observer>,
    admission: Admission,
    services: Option<Services>,
) -> Result<()> {
    match on {
        ServeOn::Redb(dir) => {
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
            let (identity, origin) = identity(&store, identity_file, &format!("in {}", dir.display())).await?;
            match origin {
                Origin::Created => {
                    println!(
                        "created a new gateway identity in {} (first run; `boarding gateway init` creates it ahead \
                         of time)",
                        dir.display()
                    );
                    tracing::info!(data_dir = %dir.display(), "created a new gateway identity");
                }
                Origin::Loaded => println!("loaded the gateway identity from {}", dir.display()),
                Origin::File => println!("using the gateway identity from {}", identity_file_name(identity_file)),
            }
            let gateway = admission.apply(Gateway::new(identity, store, config)?)?;
            run_gateway(listen, Some(dir), gateway, observer, services).await
        }
        ServeOn::Memory(dir) => {
            boarding_smol::prepare_dir(dir)?;
            let store = MemoryStore::new();
            let (identity, origin) = identity(&store, identity_file, "in memory").await?;
            if origin == Origin::File {
                println!(
                    "using the gateway identity from {} (in memory: nothing is kept at exit)",
                    identity_file_name(identity_file)
                );
            } else {
                println!("created a new in-memory gateway identity (nothing is kept at exit)");
            }
            let gateway = admission.apply(Gateway::new(identity, store, config)?)?;
            run_gateway(listen, Some(dir), gateway, observer, services).await
        }
        ServeOn::Etcd(args) => {
            // Fails fast, naming the endpoints, if etcd does not answer.
            let store = fleet::connect(args, Fleet::Start).await?;
            let fleet = format!("the fleet {} on etcd at {}", store.prefix(), store.endpoints());
            let (identity, origin) = identity(&store, identity_file, &fleet).await?;
            match origin {
                Origin::Created => {
                    println!("created the gateway identity of {fleet} (sealed; the other replicas load it)");
                    tracing::info!(prefix = store.prefix(), "created the fleet's gateway identity in etcd");
                }
                Origin::Loaded => println!("loaded the gateway identity of {fleet}"),
                Origin::File => println!(
                    "using the gateway identity from {} (the identity of {fleet})",
                    identity_file_name(identity_file)
                ),
            }
            let gateway = admission.apply(Gateway::new(identity, store, config)?)?;
            // Revocations anywhere in the fleet end the client's sessions here too.
            let follower = boarding_etcd::follow_revocations(&gateway).await?;
            tracing::info!(prefix = gateway.store().prefix(), "following the fleet's revocations in etcd");
            let served = run_gateway(listen, None, gateway, observer, services).await;
            drop(follower);
            served
        }
    }
}

/// What `gateway serve` does with a join besides checking its token: judge its
/// attestation, and sign the certificate it asks for.
pub struct Admission {
    /// The `x509pop` validator of --attest-ca, if given.
    pub validator: Option<X509Validator>,
    /// The policy of --issue-certificates, if given.
    pub certificates: Option<CertificatePolicy>,
}

impl Admission {
    /// The gateway, judging evidence with the validator and signing node certificates
    /// with its own CA under the policy, if there are any.
    fn apply<S: Store>(self, gateway: Gateway<S>) -> Result<Gateway<S>> {
        let gateway = match self.validator {
            Some(validator) => gateway.with_validator(validator),
            None => gateway,
        };
        let Some(policy) = self.certificates else { return Ok(gateway) };
        let lifetime = humantime::format_duration(policy.lifetime);
        let ca = gateway.certificate_authority(policy).map_err(|e| CliError::Usage(format!("--cert-lifetime: {e}")))?;
        println!("certificates: issuing node certificates valid for {lifetime} (`boarding gateway ca` prints the CA)");
        Ok(gateway.with_certificates(ca))
    }
}

/// The node-certificate policy `gateway serve --issue-certificates` asks for, if it does.
pub fn certificate_policy(args: &CertificateServeArgs) -> Result<Option<CertificatePolicy>> {
    if !args.issue_certificates {
        return Ok(None);
    }
    if args.cert_lifetime < Duration::from_secs(60) {
        return Err(CliError::Usage(format!(
            "--cert-lifetime {} is too short: a node certificate must be valid for at least a minute",
            humantime::format_duration(args.cert_lifetime)
        )));
    }
    Ok(Some(CertificatePolicy {
        lifetime: args.cert_lifetime,
        organization_label: args.cert_organization_label.clone(),
        attested_unit: args.cert_attested_unit,
    }))
}

/// The `x509pop` validator `gateway serve --attest-ca` asks for, if it does.
pub fn validator(args: &AttestServeArgs) -> Result<Option<X509Validator>> {
    let Some(ca) = &args.attest_ca else { return Ok(None) };
    let validator = X509Validator::from_file(ca).map_err(|e| CliError::Usage(format!("--attest-ca: {e}")))?;
    println!(
        "attestation: trusting the CA certificates in {}{}{}",
        ca.display(),
        if args.require_attestation { "; agents must attest" } else { "" },
        if args.attest_name_is_client_id { "; a client id must be its certificate's name" } else { "" }
    );
    Ok(Some(validator.require_attestation(args.require_attestation).name_is_client_id(args.attest_name_is_client_id)))
}

/// The `x509pop` attester `agent join --attest-cert --attest-key` asks for, if it does.
pub fn attester(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<X509Attester>> {
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    X509Attester::from_files(cert, key)
        .map(Some)
        .map_err(|e| CliError::Usage(format!("--attest-cert {} --attest-key {}: {e}", cert.display(), key.display())))
}

fn identity_file_name(file: Option<&Path>) -> String {
    file.map(|p| p.display().to_string()).unwrap_or_default()
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

/// Serves `gateway` on `listen` (forwarding streams to `services` if there are any, else
/// echoing), with its admin socket in `dir` if there is one, until a signal.
async fn run_gateway<S: Store>(
    listen: &str,
    dir: Option<&Path>,
    gateway: Gateway<S>,
    observer: Option<Observer>,
    services: Option<Services>,
) -> Result<()> {
    raise_open_file_limit();
    if let Some(observer) = &observer {
        observer.attach(&gateway);
        println!("metrics on http://{}/metrics", observer.local_addr());
    }
    let admin = match dir {
        Some(dir) => Some(AdminServer::start(&gateway, &dir.join(ADMIN_SOCKET))?),
        None => None,
    };
    println!("pin: {}", gateway.pin());
    let listener = smol::net::TcpListener::bind(listen).await.map_err(|source| CliError::Io {
        context: format!("cannot listen on {listen} (is another gateway running there? choose another --listen)"),
        source,
    })?;
    let serving = match services {
        Some(services) => {
            for (name, service) in services.iter() {
                let rules = service.rules().iter().map(ToString::to_string).collect::<Vec<_>>();
                let allow = if rules.is_empty() { "every agent".to_owned() } else { rules.join(" or ") };
                let header = if service.sends_proxy_header() { "" } else { ", no PROXY header" };
                println!("service {name} -> {} (allow: {allow}{header})", service.upstream());
            }
            gateway.serve(listener, serve_services(services))?
        }
        None => gateway.serve(listener, echo)?,
    };
    if let Some(observer) = &observer {
        observer.set_ready(true);
    }
    println!("listening on {}", serving.local_addr());
    match &admin {
        Some(admin) => println!("admin socket: {}", admin.path().display()),
        None => println!("no admin socket: operator commands take --store etcd and work on etcd directly"),
    }
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
pub async fn token_create(data: &GatewayData, options: CreateOptions) -> Result<()> {
    let template = template(options.ttl, options.uses, &options.labels, &options.description)?;
    let mut access = GatewayAccess::open(data, Create::No).await?;
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
pub async fn token_list(data: &GatewayData, all: bool, format: OutputFormat) -> Result<()> {
    let records = GatewayAccess::open(data, Create::No).await?.tokens().await?;
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
pub async fn token_delete(data: &GatewayData, tokens: &[SecretArg]) -> Result<()> {
    let mut ids = Vec::with_capacity(tokens.len());
    for (n, arg) in tokens.iter().enumerate() {
        let id = secret::token_id_of(arg, n.saturating_add(1))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut access = GatewayAccess::open(data, Create::No).await?;
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
pub async fn token_prune(data: &GatewayData) -> Result<()> {
    let mut access = GatewayAccess::open(data, Create::No).await?;
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
pub async fn clients_list(data: &GatewayData, format: OutputFormat) -> Result<()> {
    let records = GatewayAccess::open(data, Create::No).await?.clients().await?;
    let rows: Vec<ClientRow<'_>> = records.iter().map(ClientRow::new).collect();
    if let Some(document) = document(format, &rows)? {
        return out_raw(&document);
    }
    if records.is_empty() { out("no clients have joined yet") } else { out(client_table(&records)) }
}

/// `clients rotate`.
pub async fn clients_rotate(data: &GatewayData, id: ClientId) -> Result<()> {
    let mut access = GatewayAccess::open(data, Create::No).await?;
    if access.rotate_client(id.clone()).await? {
        out(format_args!(
            "client {id}: its keyring is rotated at its next resume (its live sessions carry on); from then on a copy \
             of the old keyring is refused and shown as a clone in `boarding clients list`"
        ))
    } else {
        Err(CliError::NotFound(format!("no client {id} in {}; see `boarding clients list`", access.describe())))
    }
}

/// `clients revoke`.
pub async fn clients_revoke(data: &GatewayData, id: ClientId) -> Result<()> {
    let mut access = GatewayAccess::open(data, Create::No).await?;
    match access.revoke_client(id.clone()).await? {
        (true, Some(closed)) => out(format_args!(
            "client {id} revoked: it can no longer connect ({closed} live session(s) closed); its id is free to join \
             again"
        )),
        (true, None) => out(format_args!(
            "client {id} revoked: it can no longer connect, and every replica of the fleet closes its live \
             sessions; its id is free to join again"
        )),
        (false, _) => {
            Err(CliError::NotFound(format!("no client {id} in {}; see `boarding clients list`", access.describe())))
        }
    }
}

/// `gateway init`: creates the identity if there is none, and prints the pin.
pub async fn gateway_init(data: &GatewayData) -> Result<()> {
    let dir = &data.dir.data_dir;
    let fresh_dir = !dir.join(boarding_smol::GATEWAY_DB).exists();
    let mut access = GatewayAccess::open(data, Create::Yes).await?;
    let pin = match &access {
        GatewayAccess::Admin(..) => {
            note(format_args!("a gateway is running on {}; nothing changed", dir.display()));
            access.pin().await?
        }
        GatewayAccess::Direct(store @ AnyStore::Etcd(_)) => {
            let (identity, origin) = identity(store, None, "").await?;
            if origin == Origin::Created {
                note(format_args!("created the gateway identity of {}", store.describe()));
                note("next: boarding gateway serve --store etcd with the same etcd options, on each replica");
            } else {
                note(format_args!("{} already has a gateway identity; nothing changed", store.describe()));
            }
            identity.pin()
        }
        GatewayAccess::Direct(store) => {
            let pin = identity(store, None, "").await?.0.pin();
            if fresh_dir {
                note(format_args!("created a new gateway identity in {}", store.describe()));
                note(format_args!("next: boarding gateway serve --data-dir {}", dir.display()));
            } else {
                note(format_args!("{} already holds a gateway identity; nothing changed", store.describe()));
            }
            pin
        }
    };
    out(pin)
}

/// `gateway pin`: the pin of the gateway in `dir`, which must exist (`gateway init`
/// creates one).
pub async fn gateway_pin(data: &GatewayData) -> Result<()> {
    let pin = GatewayAccess::open(data, Create::No).await?.pin().await?;
    out(pin)
}

/// `gateway ca`: the certificate of the gateway's client CA, in PEM.
pub async fn gateway_ca(data: &GatewayData) -> Result<()> {
    let pem = GatewayAccess::open(data, Create::No).await?.ca_certificate().await?;
    out_raw(&pem)
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

/// `agent join`, attesting with `attester` if there is one.
pub async fn agent_join(
    gateway: &str,
    token: BootstrapToken,
    pins: &[Pin],
    id: ClientId,
    dir: &Path,
    attester: Option<X509Attester>,
    certificate: bool,
) -> Result<()> {
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
    let agent = match attester {
        Some(attester) => Agent::default().with_attester(attester),
        None => Agent::default(),
    };
    let agent = if certificate { agent.with_certificate() } else { agent };
    let session = match agent.join(gateway, token, pins, id.clone(), &store).await {
        Ok(session) => session,
        Err(e) if certificate && e.peer_alert() == Some(boarding::Alert::AdmissionRefused) => {
            note(
                "note: this join asked for a certificate (--certificate); a gateway refuses that unless it serves \
                 with --issue-certificates",
            );
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let joined = session.peer().clone();
    session.close().await?;
    out(format_args!(
        "joined gateway {} as {id} in {} (MAC suite {:?}); keyring stored in {}",
        joined.server_pin,
        millis(started.elapsed()),
        joined.suite,
        store.path().display()
    ))?;
    if let Some(held) = store.load_certificate().await? {
        note(format_args!(
            "node certificate stored, valid until {}; `boarding agent cert --data-dir {}` prints it",
            format_time(held.not_after()),
            dir.display()
        ));
    }
    Ok(())
}

/// `agent cert`: the node certificate this agent holds (or, with `key`, its key), PEM.
pub async fn agent_cert(dir: &Path, key: bool) -> Result<()> {
    let store = existing_agent_store(dir)?;
    let held = store.load_certificate().await?.ok_or_else(|| {
        CliError::DataDir(format!(
            "{} holds no node certificate: this agent joined without --certificate, or its gateway issues none; \
             a resume (`boarding agent send`) asks for one once the gateway serves with --issue-certificates",
            store.path().display()
        ))
    })?;
    note(format_args!(
        "valid from {} until {}; a resume renews it from {}",
        format_time(held.not_before()),
        format_time(held.not_after()),
        format_time(held.renew_at())
    ));
    if key { out_raw(held.key_pem()) } else { out_raw(&held.certificate_pem()) }
}

/// The agent for a command that resumes with `store`: one that renews the node
/// certificate when it is due, if the agent holds one.
async fn resuming_agent(store: &RedbKeyringStore) -> Result<Agent> {
    let agent = Agent::default();
    Ok(if store.load_certificate().await?.is_some() { agent.with_certificate() } else { agent })
}

/// A failed resume as the agent's operator should read it: a gateway that no longer
/// holds the keyring (the driver's [`boarding_smol::Error::UnknownClient`]: TLS checked its
/// key against the stored pin, so never a pin problem) is said as what it is.
pub fn resume_error(e: boarding_smol::Error) -> CliError {
    match e {
        boarding_smol::Error::UnknownClient { gateway, client_id } => {
            CliError::ClientUnknown { gateway, client: client_id }
        }
        boarding_smol::Error::CloneSuspected { gateway, client_id } => {
            CliError::CloneSuspected { gateway, client: client_id }
        }
        e => e.into(),
    }
}

/// A session's first receive that found the gateway's refusal of the resume (it decides
/// some after the agent's last handshake message): a clone's resume is said as what it is.
fn late_refusal(e: boarding_smol::Error, gateway: &str, client: &ClientId) -> CliError {
    match e.peer_alert() {
        Some(boarding::Alert::RetiredKeyring) => {
            CliError::CloneSuspected { gateway: gateway.to_owned(), client: client.clone() }
        }
        _ => e.into(),
    }
}

/// The services `gateway serve --service --allow --no-proxy-header` asks for (`None`:
/// no --service, the gateway echoes).
pub fn services(args: &ServiceArgs) -> Result<Option<Services>> {
    if args.service.is_empty() {
        if let Some(flag) = [(&args.allow, "--allow"), (&args.no_proxy_header, "--no-proxy-header")]
            .iter()
            .find_map(|(values, flag)| (!values.is_empty()).then_some(*flag))
        {
            return Err(CliError::Usage(format!("{flag} names a service: define it with --service NAME=HOST:PORT")));
        }
        return Ok(None);
    }
    let mut services = Services::new();
    let usage = |flag: &str, e: &dyn std::fmt::Display| CliError::Usage(format!("{flag}: {e}"));
    for spec in &args.service {
        services.add_spec(spec).map_err(|e| usage("--service", &e))?;
    }
    for rule in &args.allow {
        services.add_allow(rule).map_err(|e| usage("--allow", &e))?;
    }
    for name in &args.no_proxy_header {
        services.set_proxy_header(name, false).map_err(|e| usage("--no-proxy-header", &e))?;
    }
    Ok(Some(services))
}

/// `agent forward`: accept local connections on `listen` and forward each through a
/// resumed session of its own to `service`, until a signal.
pub async fn agent_forward(
    gateway: &str,
    listen: &str,
    service: &ServiceName,
    max_streams: usize,
    dir: &Path,
) -> Result<()> {
    // One resume first: a gateway that does not know this agent is said at once, not at
    // the first connection; it also renews the node certificate if that is due.
    let store = existing_agent_store(dir)?;
    let agent = resuming_agent(&store).await?;
    let probe = agent.connect(gateway, &store).await;
    let probe = probe.map_err(resume_error)?;
    let _ = probe.close().await;
    let listener = smol::net::TcpListener::bind(listen).await.map_err(|source| CliError::Io {
        context: format!("cannot listen on {listen} (is something else listening there? choose another --listen)"),
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| CliError::Io { context: "cannot read the listening address".into(), source })?;
    out(format_args!("forwarding {local} to service {service} at {gateway}"))?;
    let forwarding = agent.forward_listener(gateway, &store, service.as_str(), listener, max_streams);
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
        .map_err(|source| CliError::Io { context: "cannot install signal handlers".into(), source })?;
    let stopped = async {
        let _ = signals.next().await;
        Ok(())
    };
    smol::future::or(async { forwarding.await.map(|never| match never {}).map_err(CliError::from) }, stopped).await
}

/// `agent connect`: forward stdin and stdout through a resumed session to `service`.
pub async fn agent_connect(gateway: &str, service: &ServiceName, dir: &Path) -> Result<()> {
    let store = existing_agent_store(dir)?;
    // It renews the node certificate too, if that is due.
    let agent = resuming_agent(&store).await?;
    let stream = Duplex::new(smol::Unblock::new(std::io::stdin()), smol::Unblock::new(std::io::stdout()));
    match agent.forward(gateway, &store, service.as_str(), stream).await {
        Ok(transfer) => {
            tracing::debug!(?transfer, "the stream ended");
            Ok(())
        }
        Err(e) => Err(resume_error(e)),
    }
}

/// `agent send`: resume, send `message`, print the reply.
pub async fn agent_send(gateway: &str, dir: &Path, message: &str) -> Result<()> {
    let store = existing_agent_store(dir)?;
    // Said with the store's path, before any connection.
    let saved = store
        .load_keyring()
        .await?
        .ok_or_else(|| boarding_smol::Error::NotJoined { location: store.path().display().to_string() })?;
    let agent = resuming_agent(&store).await?;
    let mut session = agent.connect(gateway, &store).await.map_err(resume_error)?;
    session.send(message.as_bytes()).await?;
    let reply = session
        .recv()
        .await
        .map_err(|e| late_refusal(e, gateway, &saved.client_id))?
        .ok_or_else(|| CliError::Unexpected("the gateway closed the session without replying".into()))?;
    session.close().await?;
    out(String::from_utf8_lossy(&reply))
}
