//! The embedded, crash-safe default store on [`redb`].
//!
//! One file holds four tables: `tokens` (token id → token record), `keyrings`
//! (client id → keyring record, confirmed or not), `meta` (the gateway's identity
//! seed) and `agent` (an agent's own saved keyring). Values are JSON. Every operation
//! is one redb transaction with immediate durability, so a crash (even `SIGKILL`) loses
//! nothing that was reported stored, and a redemption (expiry, use count, client-id
//! uniqueness, new keyring) is a single write transaction. The file is in redb's file
//! format v3 (redb 3 and later); a file in an older format is refused with
//! [`StoreError::UnsupportedFormat`].
//!
//! redb lets one process at a time open a file. [`RedbStore::open`] holds the file
//! for the life of the store; [`RedbStore::open_shared`] opens it for each operation
//! only, waiting (up to [`RedbStore::with_lock_wait`]) while another process holds
//! it, so a running gateway and the `boarding token` commands can share a data
//! directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::identity::{ClientId, GatewayIdentity};
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
use boarding::token::{TokenId, TokenRecord};
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::store::{KeyringStore, Store, Writes, apply, not_expired};

const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
const KEYRINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("keyrings");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const AGENT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("agent");
const IDENTITY_KEY: &str = "identity-seed";
const AGENT_KEY: &str = "keyring";

/// The gateway database's file name inside a data directory.
pub const GATEWAY_DB: &str = "gateway.redb";
/// The agent database's file name inside a data directory.
pub const AGENT_DB: &str = "agent.redb";

#[derive(Debug)]
enum Mode {
    Held(Database),
    PerOperation(Mutex<()>),
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    mode: Mode,
    lock_wait: Duration,
    ticket: Vec<u8>,
}

/// A [`Store`] and [`KeyringStore`] in one redb file. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

type Result<T> = std::result::Result<T, StoreError>;

fn db_error<E: Into<redb::Error>>(path: &Path) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Database { path: path.to_owned(), source: Box::new(e.into()) }
}

/// Why [`create`] could not open the file.
enum OpenError {
    /// Another process holds it; the caller decides whether to wait.
    Held,
    /// Anything else.
    Failed(StoreError),
}

/// Opens (creating if needed) the database file.
fn create(path: &Path) -> std::result::Result<Database, OpenError> {
    match Database::create(path) {
        Ok(db) => Ok(db),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::Held),
        Err(DatabaseError::UpgradeRequired(version)) => {
            Err(OpenError::Failed(StoreError::UnsupportedFormat { path: path.to_owned(), version }))
        }
        Err(e) => Err(OpenError::Failed(db_error(path)(e))),
    }
}

/// Begins a write transaction that is on disk once `commit` returns, whatever redb's
/// default: every write of this store must survive a crash right after it is reported.
fn begin_write(db: &Database, path: &Path) -> Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(db_error(path))?;
    txn.set_durability(Durability::Immediate).map_err(db_error(path))?;
    Ok(txn)
}

/// Creates `dir` (mode 0700 on Unix) if it does not exist.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::DataDir { path: dir.to_owned(), source })
}

/// Creates the file (mode 0600 on Unix) if it does not exist: it holds secrets.
fn prepare_file(path: &Path) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|source| StoreError::DataDir { path: path.to_owned(), source })
}

fn encode<T: Serialize>(path: &Path, what: &str, value: &T) -> Result<Zeroizing<Vec<u8>>> {
    serde_json::to_vec(value).map(Zeroizing::new).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    match table.get(key).map_err(db_error(path))? {
        Some(value) => decode(path, &format!("{what} {key}"), value.value()).map(Some),
        None => Ok(None),
    }
}

fn all<T: DeserializeOwned>(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(db_error(path))? {
        let (key, value) = entry.map_err(db_error(path))?;
        out.push(decode(path, &format!("{what} {}", key.value()), value.value())?);
    }
    Ok(out)
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path` and holds it open: no other
    /// process can use it until this store is dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        prepare_file(&path)?;
        let db = match create(&path) {
            Ok(db) => db,
            Err(OpenError::Held) => return Err(StoreError::Locked { path }),
            Err(OpenError::Failed(e)) => return Err(e),
        };
        let store = Self::from_parts(path, Mode::Held(db));
        store.with_db(init)?;
        Ok(store)
    }

    /// Opens (creating if needed) the database at `path` for each operation only, so
    /// other processes may use it in between.
    pub fn open_shared(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        prepare_file(&path)?;
        let store = Self::from_parts(path, Mode::PerOperation(Mutex::new(())));
        store.with_db(init)?;
        Ok(store)
    }

    /// The gateway database in `data_dir` (created, mode 0700, if missing), shared.
    pub fn gateway_in(data_dir: impl AsRef<Path>) -> Result<Self> {
        prepare_dir(data_dir.as_ref())?;
        Self::open_shared(data_dir.as_ref().join(GATEWAY_DB))
    }

    /// The agent database in `data_dir` (created, mode 0700, if missing), shared.
    pub fn agent_in(data_dir: impl AsRef<Path>) -> Result<Self> {
        prepare_dir(data_dir.as_ref())?;
        Self::open_shared(data_dir.as_ref().join(AGENT_DB))
    }

    fn from_parts(path: PathBuf, mode: Mode) -> Self {
        Self { inner: Arc::new(Inner { path, mode, lock_wait: Duration::from_secs(10), ticket: Vec::new() }) }
    }

    /// How long a shared store waits for another process to release the file before
    /// failing with [`StoreError::Locked`] (default 10 s). Call before sharing the store.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.lock_wait = wait;
        }
        self
    }

    /// The ticket every joining client receives (at most 4 KiB). Call before sharing.
    pub fn with_ticket(mut self, ticket: Vec<u8>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.ticket = ticket;
        }
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn with_db<T>(&self, f: impl FnOnce(&Database, &Path) -> Result<T>) -> Result<T> {
        let path = self.inner.path.as_path();
        match &self.inner.mode {
            Mode::Held(db) => f(db, path),
            Mode::PerOperation(lock) => {
                // One operation at a time in this process; other processes are kept
                // out by redb's file lock, which we wait for.
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let started = Instant::now();
                let mut pause = Duration::from_millis(2);
                let db = loop {
                    match create(path) {
                        Ok(db) => break db,
                        Err(OpenError::Held) if started.elapsed() < self.inner.lock_wait => {
                            std::thread::sleep(pause);
                            pause = (pause.saturating_mul(2)).min(Duration::from_millis(50));
                        }
                        Err(OpenError::Held) => return Err(StoreError::Locked { path: path.to_owned() }),
                        Err(OpenError::Failed(e)) => return Err(e),
                    }
                };
                f(&db, path)
            }
        }
    }

    /// Runs a blocking database operation on smol's blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Path, &[u8]) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        smol::unblock(move || this.with_db(|db, path| f(db, path, &this.inner.ticket))).await
    }

    /// Reads everything (for checks after a crash): tokens and keyrings.
    pub async fn snapshot(&self) -> Result<(Vec<TokenRecord>, Vec<KeyringRecord>)> {
        self.run(|db, path, _| {
            let txn = db.begin_read().map_err(db_error(path))?;
            let tokens = all(path, &txn.open_table(TOKENS).map_err(db_error(path))?, "token")?;
            let keyrings = all(path, &txn.open_table(KEYRINGS).map_err(db_error(path))?, "keyring")?;
            Ok((tokens, keyrings))
        })
        .await
    }
}

fn init(db: &Database, path: &Path) -> Result<()> {
    let txn = begin_write(db, path)?;
    for table in [TOKENS, KEYRINGS, META, AGENT] {
        txn.open_table(table).map_err(db_error(path))?;
    }
    txn.commit().map_err(db_error(path))
}

fn answer(db: &Database, path: &Path, ticket: &[u8], request: &StorageRequest) -> Result<StorageAnswer> {
    match request {
        StorageRequest::LookupToken { token_id } => {
            let txn = db.begin_read().map_err(db_error(path))?;
            let table = txn.open_table(TOKENS).map_err(db_error(path))?;
            let record: Option<TokenRecord> = get(path, &table, token_id.as_str(), "token")?;
            Ok(StorageAnswer::Tokens(record.into_iter().collect()))
        }
        StorageRequest::ActiveTokens { now, limit } => {
            let txn = db.begin_read().map_err(db_error(path))?;
            let table = txn.open_table(TOKENS).map_err(db_error(path))?;
            let records: Vec<TokenRecord> = all(path, &table, "token")?;
            Ok(StorageAnswer::Tokens(records.into_iter().filter(|r| not_expired(r, *now)).take(*limit).collect()))
        }
        StorageRequest::LookupKeyring { client_id } => {
            let txn = db.begin_read().map_err(db_error(path))?;
            let table = txn.open_table(KEYRINGS).map_err(db_error(path))?;
            Ok(StorageAnswer::Keyring(get(path, &table, client_id.as_str(), "keyring")?))
        }
        StorageRequest::Redeem(req) => write_decision(db, path, request, Some(req.token_id), &req.client_id, ticket),
        StorageRequest::ConfirmKeyring { client_id, .. } => write_decision(db, path, request, None, client_id, ticket),
        _ => Ok(StorageAnswer::Failed),
    }
}

/// Reads the records, decides and writes, all in one write transaction.
fn write_decision(
    db: &Database,
    path: &Path,
    request: &StorageRequest,
    token_id: Option<TokenId>,
    client_id: &ClientId,
    ticket: &[u8],
) -> Result<StorageAnswer> {
    let txn = begin_write(db, path)?;
    let answer = {
        let mut tokens = txn.open_table(TOKENS).map_err(db_error(path))?;
        let mut keyrings = txn.open_table(KEYRINGS).map_err(db_error(path))?;
        let token: Option<TokenRecord> = match token_id {
            Some(id) => get(path, &tokens, id.as_str(), "token")?,
            None => None,
        };
        let keyring: Option<KeyringRecord> = get(path, &keyrings, client_id.as_str(), "keyring")?;
        let (answer, Writes { token, keyring }) = apply(request, token.as_ref(), keyring.as_ref(), ticket);
        if let Some(record) = token {
            let bytes = encode(path, "token", &record)?;
            tokens.insert(record.id().as_str(), bytes.as_slice()).map_err(db_error(path))?;
        }
        if let Some(record) = keyring {
            let bytes = encode(path, "keyring", &record)?;
            keyrings.insert(record.client_id.as_str(), bytes.as_slice()).map_err(db_error(path))?;
        }
        answer
    };
    txn.commit().map_err(db_error(path))?;
    Ok(answer)
}

impl Store for RedbStore {
    async fn answer(&self, request: StorageRequest) -> Result<StorageAnswer> {
        self.run(move |db, path, ticket| answer(db, path, ticket, &request)).await
    }

    async fn identity_or_insert(&self, candidate: GatewayIdentity) -> Result<GatewayIdentity> {
        self.run(move |db, path, _| {
            let txn = begin_write(db, path)?;
            let identity = {
                let mut meta = txn.open_table(META).map_err(db_error(path))?;
                let stored = match meta.get(IDENTITY_KEY).map_err(db_error(path))? {
                    Some(value) => {
                        let seed: [u8; 32] = value.value().try_into().map_err(|_| StoreError::Corrupt {
                            path: path.to_owned(),
                            what: "gateway identity".into(),
                            reason: "the seed is not 32 bytes".into(),
                        })?;
                        let seed = Zeroizing::new(seed);
                        Some(GatewayIdentity::from_seed(*seed))
                    }
                    None => None,
                };
                match stored {
                    Some(identity) => identity,
                    None => {
                        let seed = candidate.to_seed();
                        meta.insert(IDENTITY_KEY, seed.as_slice()).map_err(db_error(path))?;
                        candidate
                    }
                }
            };
            txn.commit().map_err(db_error(path))?;
            Ok(identity)
        })
        .await
    }

    async fn insert_token(&self, record: TokenRecord) -> Result<bool> {
        self.run(move |db, path, _| {
            let txn = begin_write(db, path)?;
            let inserted = {
                let mut tokens = txn.open_table(TOKENS).map_err(db_error(path))?;
                let id = record.id();
                if tokens.get(id.as_str()).map_err(db_error(path))?.is_some() {
                    false
                } else {
                    let bytes = encode(path, "token", &record)?;
                    tokens.insert(id.as_str(), bytes.as_slice()).map_err(db_error(path))?;
                    true
                }
            };
            txn.commit().map_err(db_error(path))?;
            Ok(inserted)
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.snapshot().await.map(|(tokens, _)| tokens)
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool> {
        self.run(move |db, path, _| remove(db, path, TOKENS, id.as_str())).await
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>> {
        self.snapshot().await.map(|(_, keyrings)| keyrings)
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool> {
        self.run(move |db, path, _| remove(db, path, KEYRINGS, id.as_str())).await
    }
}

fn remove(db: &Database, path: &Path, table: TableDefinition<'_, &str, &[u8]>, key: &str) -> Result<bool> {
    let txn = begin_write(db, path)?;
    let existed = {
        let mut table = txn.open_table(table).map_err(db_error(path))?;
        table.remove(key).map_err(db_error(path))?.is_some()
    };
    txn.commit().map_err(db_error(path))?;
    Ok(existed)
}

impl KeyringStore for RedbStore {
    async fn save_keyring(&self, saved: &SavedKeyring) -> Result<()> {
        let saved = saved.clone();
        self.run(move |db, path, _| {
            let txn = begin_write(db, path)?;
            {
                let mut table = txn.open_table(AGENT).map_err(db_error(path))?;
                let bytes = encode(path, "agent keyring", &saved)?;
                table.insert(AGENT_KEY, bytes.as_slice()).map_err(db_error(path))?;
            }
            txn.commit().map_err(db_error(path))
        })
        .await
    }

    async fn load_keyring(&self) -> Result<Option<SavedKeyring>> {
        self.run(|db, path, _| {
            let txn = db.begin_read().map_err(db_error(path))?;
            let table = txn.open_table(AGENT).map_err(db_error(path))?;
            get(path, &table, AGENT_KEY, "agent keyring")
        })
        .await
    }
}
