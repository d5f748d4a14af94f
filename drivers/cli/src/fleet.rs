//! Gateway fleets on etcd and the stores the commands open: the etcd options turned
//! into a connected [`EtcdStore`], [`AnyStore`] (the database or etcd, for the operator
//! commands), and the identity key file of `gateway serve --identity`.

use std::path::Path;

use boarding::identity::{ClientId, ServerIdentity};
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
use boarding::token::{TokenId, TokenRecord};
use boarding_etcd::{EtcdConfig, EtcdStore, EtcdTls, SealingKey};
use boarding_smol::{RedbStore, Store, StoreError};
use zeroize::Zeroizing;

use crate::cli::EtcdArgs;
use crate::error::{CliError, Result};

/// The environment variable that may hold the password of `--etcd-user`.
pub const PASSWORD_ENV: &str = "BOARDING_ETCD_PASSWORD";

/// The longest password file read (a password file holds one line).
const MAX_PASSWORD_FILE: u64 = 4096;

/// Whether the command may start a fleet under a prefix that holds none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fleet {
    /// `gateway serve`, `gateway init`: the first one starts the fleet.
    Start,
    /// The `token` and `clients` commands, `gateway pin`: the fleet must exist, so that a
    /// mistyped --etcd-prefix is an error rather than a new, empty fleet.
    Existing,
}

/// The etcd user's password: from --etcd-password-file, else from the environment.
fn password(args: &EtcdArgs) -> Result<Option<Zeroizing<String>>> {
    let Some(user) = &args.etcd_user else { return Ok(None) };
    if let Some(path) = &args.etcd_password_file {
        use std::io::Read;
        let fail = |reason: String| {
            CliError::Usage(format!("cannot read the etcd password file {}: {reason}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_PASSWORD_FILE).read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
        let trimmed = Zeroizing::new(text.trim().to_owned());
        if trimmed.is_empty() {
            return Err(fail("it is empty".into()));
        }
        return Ok(Some(trimmed));
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(value) if !value.is_empty() => Ok(Some(Zeroizing::new(value))),
        _ => Err(CliError::Usage(format!(
            "--etcd-user {user} needs its password: put it in a file for --etcd-password-file, or in the \
             environment variable {PASSWORD_ENV} (never on the command line)"
        ))),
    }
}

/// The store configuration the etcd options describe.
pub fn config(args: &EtcdArgs, fleet: Fleet) -> Result<EtcdConfig> {
    let endpoints: Vec<String> =
        args.etcd_endpoints.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        return Err(CliError::Usage(
            "--store etcd needs --etcd-endpoints (or BOARDING_ETCD_ENDPOINTS), such as http://127.0.0.1:2379".into(),
        ));
    }
    if let Some(bad) = endpoints.iter().find(|e| !e.starts_with("http://") && !e.starts_with("https://")) {
        return Err(CliError::Usage(format!(
            "the etcd endpoint {bad:?} is not a URL: write it as http://HOST:PORT (or https://HOST:PORT with --etcd-ca)"
        )));
    }
    let tls = endpoints.iter().any(|e| e.starts_with("https://"));
    if tls && args.etcd_ca.is_none() {
        return Err(CliError::Usage(
            "https:// etcd endpoints need --etcd-ca, the CA certificate that signs etcd's server certificates".into(),
        ));
    }
    if !tls && args.etcd_ca.is_some() {
        return Err(CliError::Usage("--etcd-ca is for TLS: write the etcd endpoints as https://HOST:PORT".into()));
    }
    let Some(key_file) = &args.etcd_sealing_key else {
        return Err(CliError::Usage(
            "--store etcd needs --etcd-sealing-key FILE (or BOARDING_ETCD_SEALING_KEY): the fleet's sealing key, \
             the same file on every replica; `openssl rand -hex 32 > FILE && chmod 600 FILE` makes one"
                .into(),
        ));
    };
    let sealing_key = SealingKey::load(key_file)?;
    let operation = args.etcd_command_timeout.max(std::time::Duration::from_millis(100));
    let mut config = EtcdConfig::new(endpoints, sealing_key)
        .with_prefix(args.etcd_prefix.clone())
        .with_connect_timeout(args.etcd_dial_timeout)
        .with_operation_timeout(operation)
        .with_request_timeout(operation.min(std::time::Duration::from_secs(3)));
    if let Some(ca) = &args.etcd_ca {
        let mut tls = EtcdTls::from_ca_file(ca)?;
        if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
            tls = tls.with_client_identity_files(cert, key)?;
        }
        config = config.with_tls(tls);
    }
    if let (Some(user), Some(password)) = (&args.etcd_user, password(args)?) {
        config = config.with_user(user.clone(), password);
    }
    if fleet == Fleet::Existing {
        config = config.with_existing_fleet();
    }
    Ok(config)
}

/// Connects to the fleet's store on etcd, failing within --etcd-dial-timeout if etcd
/// does not answer.
pub async fn connect(args: &EtcdArgs, fleet: Fleet) -> Result<EtcdStore> {
    Ok(EtcdStore::connect(config(args, fleet)?).await?)
}

/// The store an operator command opened itself: the gateway's database, or a fleet's
/// store on etcd. The per-command code works on either through [`Store`].
pub enum AnyStore {
    /// `DIR/gateway.redb`, held for this command.
    Redb(RedbStore),
    /// A fleet's store on etcd.
    Etcd(EtcdStore),
}

impl AnyStore {
    /// Where the data is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Redb(store) => store.path().display().to_string(),
            Self::Etcd(store) => format!("the fleet {} on etcd at {}", store.prefix(), store.endpoints()),
        }
    }
}

impl Store for AnyStore {
    async fn answer(&self, request: StorageRequest) -> std::result::Result<StorageAnswer, StoreError> {
        match self {
            Self::Redb(store) => store.answer(request).await,
            Self::Etcd(store) => store.answer(request).await,
        }
    }

    async fn identity_or_insert(&self, candidate: ServerIdentity) -> std::result::Result<ServerIdentity, StoreError> {
        match self {
            Self::Redb(store) => store.identity_or_insert(candidate).await,
            Self::Etcd(store) => store.identity_or_insert(candidate).await,
        }
    }

    async fn insert_token(&self, record: TokenRecord) -> std::result::Result<bool, StoreError> {
        match self {
            Self::Redb(store) => store.insert_token(record).await,
            Self::Etcd(store) => store.insert_token(record).await,
        }
    }

    async fn tokens(&self) -> std::result::Result<Vec<TokenRecord>, StoreError> {
        match self {
            Self::Redb(store) => store.tokens().await,
            Self::Etcd(store) => store.tokens().await,
        }
    }

    async fn revoke_token(&self, id: TokenId) -> std::result::Result<bool, StoreError> {
        match self {
            Self::Redb(store) => store.revoke_token(id).await,
            Self::Etcd(store) => store.revoke_token(id).await,
        }
    }

    async fn clients(&self) -> std::result::Result<Vec<KeyringRecord>, StoreError> {
        match self {
            Self::Redb(store) => store.clients().await,
            Self::Etcd(store) => store.clients().await,
        }
    }

    async fn revoke_client(&self, id: ClientId) -> std::result::Result<bool, StoreError> {
        match self {
            Self::Redb(store) => store.revoke_client(id).await,
            Self::Etcd(store) => store.revoke_client(id).await,
        }
    }

    fn retries(&self) -> u64 {
        match self {
            Self::Redb(store) => store.retries(),
            Self::Etcd(store) => store.retries(),
        }
    }
}

/// Reads an Ed25519 identity key file (PKCS#8 PEM), which must be private to this user.
pub fn load_identity(path: &Path) -> Result<ServerIdentity> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let fail = |reason: String| CliError::DataDir(format!("the identity key file {}: {reason}", path.display()));
    boarding_smol::check_private(path, "chmod 600").map_err(|e| fail(e.to_string()))?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        fail(format!(
            "it does not hold an Ed25519 private key in PKCS#8 PEM ({e}); `openssl genpkey -algorithm ed25519 -out \
             FILE` makes one"
        ))
    })?;
    Ok(ServerIdentity::from_seed(key.to_bytes()))
}
