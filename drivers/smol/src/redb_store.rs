//! The embedded, crash-safe default stores on [`redb`]: [`RedbStore`] for a gateway,
//! [`RedbKeyringStore`] for an agent.
//!
//! A gateway's file holds three tables: `tokens` (token id → token record), `keyrings`
//! (client id → keyring record, confirmed or not) and `meta` (the gateway's identity
//! seed); an agent's holds `agent` (its own saved keyring). Values are JSON. Protocol
//! requests run [`boarding::storage::execute`] inside one redb transaction (a read
//! transaction for lookups, a write transaction for redemption and confirmation),
//! committed only if it succeeds: the store adds no rule of its own. Every operation
//! is one redb transaction with immediate durability, so a crash (even `SIGKILL`) loses
//! nothing that was reported stored, and a redemption (expiry, use count, client-id
//! uniqueness, new keyring) is a single write transaction. The file is in redb's file
//! format v3 (redb 3 and later); a file in an older format is refused with
//! [`StoreError::UnsupportedFormat`].
//!
//! redb lets one process at a time open a file. [`RedbStore::open`] holds the file
//! for the life of the store; [`RedbStore::open_shared`] opens it for each operation
//! only, waiting (up to [`RedbStore::with_lock_wait`]) while another process holds
//! it, so a running gateway and operator commands can share a data directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::keys::KeyringId;
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest, StoreTransaction, execute};
use boarding::token::{TokenId, TokenRecord};
use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::certificate::NodeCertificate;
use crate::error::StoreError;
use crate::store::{KeyringStore, Store, check_private};

const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
const KEYRINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("keyrings");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const AGENT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("agent");
const IDENTITY_KEY: &str = "identity-seed";
const AGENT_KEY: &str = "keyring";
/// The node certificate's key in the agent table (next to its keyring).
const CERTIFICATE_KEY: &str = "node certificate";

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
}

/// One redb file, held or opened per operation. Cheap to clone (shared).
#[derive(Debug, Clone)]
struct Db {
    inner: Arc<Inner>,
    lock_wait: Duration,
}

/// A gateway's [`Store`] in one redb file. Cheap to clone (shared).
///
/// A held store ([`RedbStore::open`]) commits writes in groups: redemptions and
/// confirmations that arrive while a commit is in progress are carried out one after
/// the other, each decided by the storage rule on its own (later ones see earlier
/// ones' writes), in one write transaction with one fsync. None is answered before that
/// transaction is durable, so a crash loses no answered redemption and charges nothing
/// twice.
#[derive(Debug, Clone)]
pub struct RedbStore {
    // Dropped before `committer`, whose drop then joins the committer thread, so the
    // file is closed when the last handle is gone.
    db: Db,
    committer: Option<Arc<Committer>>,
}

/// Most requests committed in one write transaction.
const MAX_GROUP: usize = 128;

/// One write request waiting for the group commit, and where its answer goes.
struct Job {
    request: StorageRequest,
    reply: smol::channel::Sender<Result<StorageAnswer>>,
}

/// The group-commit thread of a held store.
struct Committer {
    jobs: Option<smol::channel::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    fn start(db: Db) -> Result<Self> {
        let (jobs, queue) = smol::channel::unbounded::<Job>();
        let path = db.inner.path.clone();
        let thread = std::thread::Builder::new()
            .name("boarding-redb-commit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv_blocking() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let answers = db.with_db(|db, path| Ok(commit_group(db, path, &group)));
                    match answers {
                        Ok(answers) => {
                            for (job, answer) in group.into_iter().zip(answers) {
                                let _ = job.reply.try_send(answer);
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            for job in group {
                                let _ = job.reply.try_send(Err(StoreError::Unavailable {
                                    path: db.inner.path.clone(),
                                    reason: message.clone(),
                                }));
                            }
                        }
                    }
                }
            })
            .map_err(|source| StoreError::DataDir { path, source })?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }
}

/// Carries a group of write requests out in one transaction. If any fails, the
/// transaction is dropped (rolled back) and each is retried in a transaction of its
/// own, so one request's failure never decides another's outcome.
fn commit_group(db: &Database, path: &Path, group: &[Job]) -> Vec<Result<StorageAnswer>> {
    let grouped = (|| {
        let txn = begin_write(db, path)?;
        let answers = {
            let mut tables = Tables {
                path,
                tokens: txn.open_table(TOKENS).map_err(db_error(path))?,
                keyrings: txn.open_table(KEYRINGS).map_err(db_error(path))?,
            };
            group.iter().map(|job| execute(&mut tables, &job.request)).collect::<Result<Vec<_>>>()?
        };
        txn.commit().map_err(db_error(path))?;
        Ok::<_, StoreError>(answers)
    })();
    match grouped {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(_) if group.len() > 1 => group.iter().map(|job| answer(db, path, &job.request)).collect(),
        Err(e) => vec![Err(e)],
    }
}

/// An agent's [`KeyringStore`] in one redb file. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RedbKeyringStore {
    db: Db,
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

/// Creates `dir` (mode 0700 on Unix) if it does not exist, and refuses it if group or
/// others may access it.
///
/// # Errors
///
/// [`StoreError::DataDir`] if the directory cannot be created or its mode read, and
/// [`StoreError::NotPrivate`] if group or others may access it.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::DataDir { path: dir.to_owned(), source })?;
    check_private(dir, "chmod 700")
}

/// Creates the file (mode 0600 on Unix) if it does not exist: it holds secrets. An
/// existing file must not be open to group or others (a data directory is checked by
/// [`prepare_dir`]).
fn prepare_file(path: &Path) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|source| StoreError::DataDir { path: path.to_owned(), source })?;
    check_private(path, "chmod 600")
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

impl Db {
    fn open(path: &Path, tables: &'static [TableDefinition<'static, &'static str, &'static [u8]>]) -> Result<Self> {
        let path = path.to_owned();
        prepare_file(&path)?;
        let db = match create(&path) {
            Ok(db) => db,
            Err(OpenError::Held) => return Err(StoreError::Locked { path }),
            Err(OpenError::Failed(e)) => return Err(e),
        };
        let this = Self::from_parts(path, Mode::Held(db));
        this.with_db(|db, path| init(db, path, tables))?;
        Ok(this)
    }

    fn open_shared(
        path: &Path,
        tables: &'static [TableDefinition<'static, &'static str, &'static [u8]>],
    ) -> Result<Self> {
        let path = path.to_owned();
        prepare_file(&path)?;
        let this = Self::from_parts(path, Mode::PerOperation(Mutex::new(())));
        this.with_db(|db, path| init(db, path, tables))?;
        Ok(this)
    }

    fn from_parts(path: PathBuf, mode: Mode) -> Self {
        Self { inner: Arc::new(Inner { path, mode }), lock_wait: Duration::from_secs(10) }
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
                        Err(OpenError::Held) if started.elapsed() < self.lock_wait => {
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
        f: impl FnOnce(&Database, &Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        smol::unblock(move || this.with_db(f)).await
    }
}

const GATEWAY_TABLES: &[TableDefinition<'static, &'static str, &'static [u8]>] = &[TOKENS, KEYRINGS, META];
const AGENT_TABLES: &[TableDefinition<'static, &'static str, &'static [u8]>] = &[AGENT];

impl RedbStore {
    /// Opens (creating if needed) the gateway database at `path` and holds it open: no
    /// other process can use it until this store is dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError::DataDir`] if the file cannot be created or its mode read;
    /// [`StoreError::NotPrivate`] if group or others may access it; [`StoreError::Locked`]
    /// if another process holds it; [`StoreError::UnsupportedFormat`] for a file in an
    /// older redb format; [`StoreError::Database`] if redb fails to open it or create its
    /// tables. [`StoreError::DataDir`] too if the group-commit thread cannot be started.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = Db::open(path.as_ref(), GATEWAY_TABLES)?;
        let committer = Some(Arc::new(Committer::start(db.clone())?));
        Ok(Self { db, committer })
    }

    /// The gateway database in `data_dir` (created, mode 0700, if missing), held open
    /// for the life of the store: what a running gateway uses.
    ///
    /// # Errors
    ///
    /// Any error of [`prepare_dir`] for `data_dir`, then of [`RedbStore::open`].
    pub fn hold_gateway_in(data_dir: impl AsRef<Path>) -> Result<Self> {
        prepare_dir(data_dir.as_ref())?;
        Self::open(data_dir.as_ref().join(GATEWAY_DB))
    }

    /// Opens (creating if needed) the gateway database at `path` for each operation
    /// only, so other processes may use it in between.
    ///
    /// # Errors
    ///
    /// [`StoreError::DataDir`] if the file cannot be created or its mode read;
    /// [`StoreError::NotPrivate`] if group or others may access it; [`StoreError::Locked`]
    /// if another process holds it for longer than the lock wait;
    /// [`StoreError::UnsupportedFormat`] for a file in an older redb format;
    /// [`StoreError::Database`] if redb fails to open it or create its tables.
    pub fn open_shared(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self { db: Db::open_shared(path.as_ref(), GATEWAY_TABLES)?, committer: None })
    }

    /// The gateway database in `data_dir` (created, mode 0700, if missing), shared.
    ///
    /// # Errors
    ///
    /// Any error of [`prepare_dir`] for `data_dir`, then of [`RedbStore::open_shared`].
    pub fn gateway_in(data_dir: impl AsRef<Path>) -> Result<Self> {
        prepare_dir(data_dir.as_ref())?;
        Self::open_shared(data_dir.as_ref().join(GATEWAY_DB))
    }

    /// How long this handle (and clones made from it afterwards) waits for another
    /// process to release a shared file before failing with [`StoreError::Locked`]
    /// (default 10 s). A held store never waits.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.db.lock_wait = wait;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.inner.path
    }

    /// Reads everything (for checks after a crash): tokens and keyrings.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails to read, [`StoreError::Corrupt`] for a record
    /// that does not decode, and [`StoreError::Locked`] for a shared store another process
    /// holds past the lock wait.
    pub async fn snapshot(&self) -> Result<(Vec<TokenRecord>, Vec<KeyringRecord>)> {
        self.db
            .run(|db, path| {
                let txn = db.begin_read().map_err(db_error(path))?;
                let tokens = all(path, &txn.open_table(TOKENS).map_err(db_error(path))?, "token")?;
                let keyrings = all(path, &txn.open_table(KEYRINGS).map_err(db_error(path))?, "keyring")?;
                Ok((tokens, keyrings))
            })
            .await
    }
}

impl RedbKeyringStore {
    /// Opens (creating if needed) the agent database at `path`, for each operation only.
    ///
    /// # Errors
    ///
    /// [`StoreError::DataDir`] if the file cannot be created or its mode read;
    /// [`StoreError::NotPrivate`] if group or others may access it; [`StoreError::Locked`]
    /// if another process holds it for longer than the lock wait;
    /// [`StoreError::UnsupportedFormat`] for a file in an older redb format;
    /// [`StoreError::Database`] if redb fails to open it or create its tables.
    pub fn open_shared(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self { db: Db::open_shared(path.as_ref(), AGENT_TABLES)? })
    }

    /// The agent database in `data_dir` (created, mode 0700, if missing).
    ///
    /// # Errors
    ///
    /// Any error of [`prepare_dir`] for `data_dir`, then of
    /// [`RedbKeyringStore::open_shared`].
    pub fn agent_in(data_dir: impl AsRef<Path>) -> Result<Self> {
        prepare_dir(data_dir.as_ref())?;
        Self::open_shared(data_dir.as_ref().join(AGENT_DB))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.inner.path
    }
}

/// A protocol request's view of the gateway tables inside one redb transaction:
/// `T` is a read-only table for lookups and a writable one for decisions.
struct Tables<'p, T> {
    path: &'p Path,
    tokens: T,
    keyrings: T,
}

/// Writing through a table, or refusing to in a read transaction.
trait PutTable {
    fn put(&mut self, path: &Path, key: &str, value: &[u8]) -> Result<()>;
}

impl PutTable for Table<'_, &'static str, &'static [u8]> {
    fn put(&mut self, path: &Path, key: &str, value: &[u8]) -> Result<()> {
        self.insert(key, value).map(drop).map_err(db_error(path))
    }
}

impl PutTable for ReadOnlyTable<&'static str, &'static [u8]> {
    fn put(&mut self, path: &Path, _: &str, _: &[u8]) -> Result<()> {
        // `execute` writes only for requests whose `writes()` is true, which get a
        // write transaction; reaching this is a bug in the caller, reported as such.
        Err(StoreError::Corrupt {
            path: path.to_owned(),
            what: "transaction".into(),
            reason: "a write was asked of a read transaction".into(),
        })
    }
}

impl<T: ReadableTable<&'static str, &'static [u8]> + PutTable> StoreTransaction for Tables<'_, T> {
    type Error = StoreError;

    fn token(&mut self, id: TokenId) -> Result<Option<TokenRecord>> {
        get(self.path, &self.tokens, id.as_str(), "token")
    }

    fn scan_tokens(&mut self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<()> {
        for entry in self.tokens.iter().map_err(db_error(self.path))? {
            let (key, value) = entry.map_err(db_error(self.path))?;
            let record = decode(self.path, &format!("token {}", key.value()), value.value())?;
            if !visit(record) {
                break;
            }
        }
        Ok(())
    }

    fn keyring(&mut self, id: &ClientId) -> Result<Option<KeyringRecord>> {
        get(self.path, &self.keyrings, id.as_str(), "keyring")
    }

    fn put_token(&mut self, record: &TokenRecord) -> Result<()> {
        let bytes = encode(self.path, "token", record)?;
        self.tokens.put(self.path, record.id().as_str(), &bytes)
    }

    fn put_keyring(&mut self, record: &KeyringRecord) -> Result<()> {
        let bytes = encode(self.path, "keyring", record)?;
        self.keyrings.put(self.path, record.client_id.as_str(), &bytes)
    }
}

/// Carries a protocol request out in one transaction: read-only for lookups (no
/// disk writes), one durable write transaction for decisions.
fn answer(db: &Database, path: &Path, request: &StorageRequest) -> Result<StorageAnswer> {
    if !request.writes() {
        let txn = db.begin_read().map_err(db_error(path))?;
        let mut tables = Tables {
            path,
            tokens: txn.open_table(TOKENS).map_err(db_error(path))?,
            keyrings: txn.open_table(KEYRINGS).map_err(db_error(path))?,
        };
        return execute(&mut tables, request);
    }
    let txn = begin_write(db, path)?;
    let answer = {
        let mut tables = Tables {
            path,
            tokens: txn.open_table(TOKENS).map_err(db_error(path))?,
            keyrings: txn.open_table(KEYRINGS).map_err(db_error(path))?,
        };
        execute(&mut tables, request)?
    };
    // Dropping an uncommitted transaction (the `?` above) rolls it back.
    txn.commit().map_err(db_error(path))?;
    Ok(answer)
}

fn init(db: &Database, path: &Path, tables: &[TableDefinition<'static, &'static str, &'static [u8]>]) -> Result<()> {
    let txn = begin_write(db, path)?;
    for table in tables {
        txn.open_table(*table).map_err(db_error(path))?;
    }
    txn.commit().map_err(db_error(path))
}

impl Store for RedbStore {
    async fn answer(&self, request: StorageRequest) -> Result<StorageAnswer> {
        let committer = self.committer.as_ref().and_then(|c| c.jobs.as_ref());
        match committer {
            Some(jobs) if request.writes() => {
                let (reply, answered) = smol::channel::bounded(1);
                let gone = || StoreError::Unavailable {
                    path: self.path().to_owned(),
                    reason: "the group-commit thread stopped".into(),
                };
                jobs.send(Job { request, reply }).await.map_err(|_| gone())?;
                answered.recv().await.map_err(|_| gone())?
            }
            // A held store's lookups are read transactions on an open file: short, and
            // never waiting on another process or on the disk's sync, so they run here
            // rather than paying a thread hand-off on every hello.
            _ if self.committer.is_some() => self.db.with_db(|db, path| answer(db, path, &request)),
            _ => self.db.run(move |db, path| answer(db, path, &request)).await,
        }
    }

    async fn identity_or_insert(&self, candidate: ServerIdentity) -> Result<ServerIdentity> {
        self.db
            .run(move |db, path| {
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
                            Some(ServerIdentity::from_seed(*seed))
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
        self.db
            .run(move |db, path| {
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
        self.db.run(move |db, path| remove(db, path, TOKENS, id.as_str())).await
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>> {
        self.snapshot().await.map(|(_, keyrings)| keyrings)
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool> {
        self.db.run(move |db, path| remove(db, path, KEYRINGS, id.as_str())).await
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

impl KeyringStore for RedbKeyringStore {
    async fn save_keyring(&self, saved: &SavedKeyring) -> Result<()> {
        let saved = saved.clone();
        self.db
            .run(move |db, path| {
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
        self.db
            .run(|db, path| {
                let txn = db.begin_read().map_err(db_error(path))?;
                let table = txn.open_table(AGENT).map_err(db_error(path))?;
                get(path, &table, AGENT_KEY, "agent keyring")
            })
            .await
    }

    async fn replace_keyring(&self, replaces: &KeyringId, saved: &SavedKeyring) -> Result<bool> {
        let (replaces, saved) = (*replaces, saved.clone());
        self.db
            .run(move |db, path| {
                let txn = begin_write(db, path)?;
                {
                    let mut table = txn.open_table(AGENT).map_err(db_error(path))?;
                    let stored: Option<SavedKeyring> = get(path, &table, AGENT_KEY, "agent keyring")?;
                    if stored.is_none_or(|s| s.keyring.id() != replaces) {
                        // Dropped uncommitted: nothing changes.
                        return Ok(false);
                    }
                    let bytes = encode(path, "agent keyring", &saved)?;
                    table.insert(AGENT_KEY, bytes.as_slice()).map_err(db_error(path))?;
                }
                txn.commit().map_err(db_error(path))?;
                Ok(true)
            })
            .await
    }

    async fn save_certificate(&self, certificate: &NodeCertificate) -> Result<()> {
        let certificate = certificate.clone();
        self.db
            .run(move |db, path| {
                let txn = begin_write(db, path)?;
                {
                    let mut table = txn.open_table(AGENT).map_err(db_error(path))?;
                    let bytes = encode(path, "node certificate", &certificate)?;
                    table.insert(CERTIFICATE_KEY, bytes.as_slice()).map_err(db_error(path))?;
                }
                txn.commit().map_err(db_error(path))
            })
            .await
    }

    async fn load_certificate(&self) -> Result<Option<NodeCertificate>> {
        self.db
            .run(|db, path| {
                let txn = db.begin_read().map_err(db_error(path))?;
                let table = txn.open_table(AGENT).map_err(db_error(path))?;
                get(path, &table, CERTIFICATE_KEY, "node certificate")
            })
            .await
    }
}
