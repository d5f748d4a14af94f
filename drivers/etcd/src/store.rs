//! [`EtcdStore`]: the gateway [`Store`] on etcd.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boarding::identity::{ClientId, ServerIdentity};
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest, StoreTransaction, execute};
use boarding::token::{TokenId, TokenRecord};
use boarding_smol::{Store, StoreError};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, Identity,
    KeyValue, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use futures_channel::oneshot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::{EtcdConfig, EtcdTls};
use crate::error::EtcdError;
use crate::layout::{Layout, prefix_end};
use crate::seal::{OpenError, Sealer};
use crate::watch::{self, Revocations};

/// The sealing check's plaintext: a replica that opens it holds the fleet's key.
const SEALING_CHECK: &[u8] = b"boarding-etcd sealing check v1";
/// Records per page when listing a prefix.
const PAGE: i64 = 256;
/// etcd's longest lease (`MaxLeaseTTL`).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A gateway [`Store`] on etcd, shared by every replica of a fleet. Cheap to clone
/// (clones share one etcd client and one runtime).
///
/// The etcd client runs on a tokio runtime this store owns (its own threads); the
/// [`Store`] methods hand each operation to it and await the answer over a channel, so
/// they can be awaited from any executor (the smol gateway's, for one).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
    runtime: Arc<Runtime>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.layout.prefix())
            .finish_non_exhaustive()
    }
}

/// The store's tokio runtime, shut down (without blocking) when the last handle goes.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Runtime {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        if let Some(runtime) = &self.0 {
            drop(runtime.spawn(future));
        }
    }
}

/// Counters of the store's transactions, for metrics and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdStats {
    /// Write transactions sent (redemptions, confirmations; every attempt counts).
    pub transactions: u64,
    /// Attempts whose compares failed because another writer changed a key this one
    /// read; each is retried on the fresh values the transaction returned.
    pub conflicts: u64,
    /// Attempts whose outcome was unknown (a timeout or a lost connection after the
    /// transaction was sent), settled by reading the keys again.
    pub ambiguous: u64,
    /// Requests that change nothing when repeated (reads, deletions, create-if-absent)
    /// retried after a transient failure.
    pub read_retries: u64,
    /// The most attempts one operation needed.
    pub most_attempts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    conflicts: AtomicU64,
    ambiguous: AtomicU64,
    read_retries: AtomicU64,
    most_attempts: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> EtcdStats {
        EtcdStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            ambiguous: self.ambiguous.load(Ordering::Relaxed),
            read_retries: self.read_retries.load(Ordering::Relaxed),
            most_attempts: self.most_attempts.load(Ordering::Relaxed),
        }
    }
}

/// Test hooks that make a commit's outcome ambiguous.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Commits to report as ambiguous without sending them.
    pub(crate) fail_before_send: std::sync::atomic::AtomicU32,
    /// Commits to send, and then report as ambiguous whatever etcd answered.
    pub(crate) lose_reply: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl Faults {
    fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// What the tasks on the runtime share.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    sealer: Sealer,
    pub(crate) endpoints: String,
    operation_timeout: Duration,
    max_attempts: u32,
    expiry_grace: Duration,
    stats: Counters,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// Whether a failed request may succeed if tried again, and whether a write it carried
/// may have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The request was refused or never sent: it changed nothing, and trying again
    /// will not help (bad arguments, permission denied, authentication).
    Definite,
    /// A lease the request names is gone (the token's lease expired): the keys read
    /// have changed; read them again.
    LeaseGone,
    /// The transport failed or etcd timed out: the request may or may not have been
    /// applied, and trying again may succeed.
    Transient,
}

fn classify(error: &etcd_client::Error) -> Failure {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
            | Code::ResourceExhausted => Failure::Transient,
            Code::NotFound if status.message().contains("lease not found") => Failure::LeaseGone,
            _ => Failure::Definite,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Failure::Transient,
        _ => Failure::Definite,
    }
}

/// A short message for an etcd error: the gRPC status message rather than its whole
/// debug form (never a secret: etcd does not echo values or passwords).
fn reason(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}

/// What a create-if-absent transaction did.
enum Created {
    /// The value is stored now.
    Stored,
    /// A value was there already, read in the same transaction. After an attempt whose
    /// outcome was unknown, that value may be this one's.
    Present {
        /// The stored key and value.
        stored: KeyValue,
        /// Whether an earlier attempt may have landed.
        after_unknown_outcome: bool,
    },
}

/// The pause before attempt `attempt` (2 and up): jittered, growing, at most 100 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 2u64.saturating_mul(1u64 << attempt.min(6)).min(100);
    let jitter = getrandom::u64().unwrap_or(0).checked_rem(ceiling_ms).unwrap_or(0);
    Duration::from_millis(jitter.saturating_add(1))
}

/// 16 random hexadecimal digits, naming one per-redemption key.
fn nonce() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| EtcdError::Config { reason: format!("the OS random generator failed: {e}") })?;
    Ok(hex::encode(bytes))
}

/// What a request reads: the keys of its snapshot.
#[derive(Debug, Clone)]
enum Reads {
    Token(TokenId),
    Keyring(ClientId),
    Redeem(TokenId, ClientId),
    /// The first `limit` tokens unexpired at `now`, in id order, and the expired ones
    /// among them: a prefix of the token range, read page by page until it has them.
    UnexpiredTokens {
        limit: usize,
        now: u64,
    },
}

impl Reads {
    fn of(request: &StorageRequest) -> Self {
        match request {
            StorageRequest::LookupToken { token_id } => Self::Token(*token_id),
            StorageRequest::UnexpiredTokens { limit, now } => Self::UnexpiredTokens { limit: *limit, now: *now },
            StorageRequest::Redeem(req) => Self::Redeem(req.token_id, req.client_id.clone()),
            StorageRequest::LookupKeyring { client_id }
            | StorageRequest::ConfirmKeyring { client_id, .. }
            | StorageRequest::RecordClone { client_id, .. }
            | StorageRequest::FenceKeyring { client_id, .. }
            | StorageRequest::CheckKeyring { client_id, .. }
            | StorageRequest::RequestRotation { client_id } => Self::Keyring(client_id.clone()),
            StorageRequest::RotateKeyring(req) => Self::Keyring(req.client_id.clone()),
        }
    }

    /// The point reads, as transaction operations (none for a scan).
    fn ops(&self, layout: &Layout) -> Vec<TxnOp> {
        match self {
            Self::Token(id) => vec![TxnOp::get(layout.token(*id), None)],
            Self::Keyring(id) => vec![TxnOp::get(layout.keyring(id), None)],
            Self::Redeem(token, client) => {
                vec![TxnOp::get(layout.token(*token), None), TxnOp::get(layout.keyring(client), None)]
            }
            Self::UnexpiredTokens { .. } => Vec::new(),
        }
    }
}

/// One key as read: its record (if present), its `mod_revision` (0 if absent) and lease.
#[derive(Debug, Clone)]
struct Slot<T> {
    value: Option<T>,
    mod_revision: i64,
    lease: i64,
}

/// The records a request reads, all as of one etcd revision.
#[derive(Debug, Default)]
struct Snapshot {
    tokens: BTreeMap<TokenId, Slot<TokenRecord>>,
    keyrings: BTreeMap<ClientId, Slot<KeyringRecord>>,
    scan: Option<Vec<TokenRecord>>,
}

/// A write the storage rule asked for.
#[derive(Debug)]
enum Write {
    /// Replace (or create) a token record; an existing key keeps its lease.
    Token { record: TokenRecord, existing: bool },
    /// Count one charged redemption of an unlimited token without rewriting its record.
    Use { token_id: TokenId, client_id: ClientId, lease: i64 },
    /// Insert or replace a keyring record.
    Keyring(KeyringRecord),
}

/// What a request's run of the storage rule read and wants written.
#[derive(Debug, Default)]
struct Plan {
    /// Keys read, with the `mod_revision` they had (0: absent).
    compares: BTreeMap<String, i64>,
    writes: Vec<Write>,
}

/// The storage rule's view of a snapshot: reads come from it, writes are recorded, and
/// the keys read become the commit's compares.
struct View<'a> {
    layout: &'a Layout,
    snapshot: &'a Snapshot,
    /// The client a redemption binds (names the per-redemption key of an unlimited token).
    redeeming: Option<&'a ClientId>,
    tokens: BTreeMap<TokenId, TokenRecord>,
    keyrings: BTreeMap<ClientId, KeyringRecord>,
    plan: Plan,
}

fn unread(what: &str) -> EtcdError {
    EtcdError::Unexpected { reason: format!("the storage rule read {what}, which the request's snapshot lacks") }
}

impl<'a> View<'a> {
    fn new(layout: &'a Layout, snapshot: &'a Snapshot, request: &'a StorageRequest) -> Self {
        let redeeming = match request {
            StorageRequest::Redeem(req) => Some(&req.client_id),
            _ => None,
        };
        Self { layout, snapshot, redeeming, tokens: BTreeMap::new(), keyrings: BTreeMap::new(), plan: Plan::default() }
    }

    fn read<T>(&mut self, key: String, slot: &Slot<T>) {
        self.plan.compares.entry(key).or_insert(slot.mod_revision);
    }
}

impl StoreTransaction for View<'_> {
    type Error = EtcdError;

    fn token(&mut self, id: TokenId) -> Result<Option<TokenRecord>> {
        if let Some(written) = self.tokens.get(&id) {
            return Ok(Some(written.clone()));
        }
        let slot = self.snapshot.tokens.get(&id).ok_or_else(|| unread("a token"))?;
        self.read(self.layout.token(id), slot);
        Ok(slot.value.clone())
    }

    fn scan_tokens(&mut self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<()> {
        let scan = self.snapshot.scan.as_ref().ok_or_else(|| unread("every token"))?;
        for record in scan {
            if !visit(record.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn keyring(&mut self, id: &ClientId) -> Result<Option<KeyringRecord>> {
        if let Some(written) = self.keyrings.get(id) {
            return Ok(Some(written.clone()));
        }
        let slot = self.snapshot.keyrings.get(id).ok_or_else(|| unread("a keyring"))?;
        self.read(self.layout.keyring(id), slot);
        Ok(slot.value.clone())
    }

    fn put_token(&mut self, record: &TokenRecord) -> Result<()> {
        let id = record.id();
        let existing = self.snapshot.tokens.get(&id).is_some_and(|s| s.value.is_some());
        self.plan.writes.push(Write::Token { record: record.clone(), existing });
        self.tokens.insert(id, record.clone());
        Ok(())
    }

    fn charge_token(&mut self, token: &TokenRecord) -> Result<()> {
        let id = token.id();
        let mut charged = token.clone();
        charged.use_count = charged.use_count.saturating_add(1);
        match (token.max_uses, self.redeeming, self.snapshot.tokens.get(&id)) {
            // An unlimited token's use is counted by a key of its own, so racing joins
            // never rewrite the token's record.
            (0, Some(client), Some(slot)) => {
                self.plan.writes.push(Write::Use { token_id: id, client_id: client.clone(), lease: slot.lease });
                self.tokens.insert(id, charged);
                Ok(())
            }
            _ => self.put_token(&charged),
        }
    }

    fn put_keyring(&mut self, record: &KeyringRecord) -> Result<()> {
        self.plan.writes.push(Write::Keyring(record.clone()));
        self.keyrings.insert(record.client_id.clone(), record.clone());
        Ok(())
    }
}

/// How a commit ended.
enum Commit {
    /// The compares held and the writes are applied.
    Done,
    /// A key read has changed since: here are its fresh values.
    Conflict(Snapshot),
    /// Unknown: the transaction may or may not have been applied.
    Ambiguous,
}

impl EtcdStore {
    /// Connects to etcd and opens the fleet's store: checks the configuration, reaches
    /// etcd (failing with [`EtcdError::Unreachable`] within the connect timeout if it
    /// cannot) and checks the sealing key against the fleet's values (failing with
    /// [`EtcdError::WrongSealingKey`] if another key sealed them; the first store opened
    /// on a prefix records the key's check value there).
    ///
    /// # Errors
    ///
    /// [`EtcdError::Config`] for a configuration that cannot work,
    /// [`EtcdError::Unreachable`] if etcd does not answer (or refuses the credentials)
    /// within the connect timeout, [`EtcdError::WrongSealingKey`] for another fleet's key,
    /// [`EtcdError::NoFleet`] for an empty prefix when asked for an existing fleet
    /// ([`EtcdConfig::with_existing_fleet`]).
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let layout = Layout::new(&config.prefix)?;
        if config.endpoints.is_empty() || config.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(EtcdError::Config {
                reason: "no etcd endpoints: give at least one, such as http://127.0.0.1:2379".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads)
            .thread_name("boarding-etcd")
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Config { reason: format!("cannot start the etcd client's runtime: {e}") })?;
        let runtime = Runtime(Some(runtime));
        let (reply, answer) = oneshot::channel();
        runtime.spawn(async move {
            let _ = reply.send(Inner::open(config, layout).await);
        });
        let inner = answer.await.unwrap_or(Err(EtcdError::Stopped))?;
        Ok(Self { inner: Arc::new(inner), runtime: Arc::new(runtime) })
    }

    /// The fleet's key prefix (ending with `/`).
    pub fn prefix(&self) -> &str {
        self.inner.layout.prefix()
    }

    /// The etcd endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }

    /// The store's transaction counters so far.
    pub fn stats(&self) -> EtcdStats {
        self.inner.stats.snapshot()
    }

    /// The gateway identity the fleet's replicas share: the first replica to ask
    /// creates it (a random seed, sealed, written only if the key is absent) and every
    /// other replica loads that one. The same as [`Store::identity_or_insert`] with a
    /// fresh random candidate.
    ///
    /// # Errors
    ///
    /// An [`EtcdError`] if etcd fails, or the stored identity does not unseal.
    pub async fn load_or_create_identity(&self) -> Result<ServerIdentity> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| EtcdError::Config { reason: format!("the OS random generator failed: {e}") })?;
        let candidate = ServerIdentity::from_seed(*seed);
        self.run(move |inner| async move { inner.identity_or_insert(candidate).await }).await
    }

    /// Follows revocations on every replica: deletions of keyring and token records
    /// under this fleet's prefix (by any replica, by `etcdctl`, or by a token's lease
    /// running out), as a stream. Returns once the watch is established, so every
    /// deletion after that is reported. The watch resumes by itself after etcd
    /// failures; if etcd compacted the revisions it missed, the stream yields
    /// [`crate::Revocation::Resync`]. Dropping the stream ends the watch; the stream
    /// ends when the last handle of this store is dropped.
    ///
    /// # Errors
    ///
    /// An [`EtcdError`] if etcd does not establish the watch.
    pub async fn watch_revocations(&self) -> Result<Revocations> {
        let runtime = Arc::clone(&self.runtime);
        let started = self.run(|inner| async move { watch::start(inner).await }).await?;
        let (revocations, task) = started;
        runtime.spawn(task);
        Ok(revocations)
    }

    /// Runs one operation on the store's runtime, within the operation deadline.
    fn run<T, F, Fut>(&self, operation: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let deadline = inner.operation_timeout;
        let endpoints = inner.endpoints.clone();
        let future = operation(inner);
        let (reply, answer) = oneshot::channel();
        self.runtime.spawn(async move {
            let outcome = match tokio::time::timeout(deadline, future).await {
                Ok(outcome) => outcome,
                Err(_) => Err(EtcdError::Timeout { endpoints, op: "the store operation", after: deadline }),
            };
            let _ = reply.send(outcome);
        });
        async move { answer.await.unwrap_or(Err(EtcdError::Stopped)) }
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Store for EtcdStore {
    async fn answer(&self, request: StorageRequest) -> Result<StorageAnswer, StoreError> {
        Ok(self.run(move |inner| async move { inner.answer(&request).await }).await?)
    }

    async fn identity_or_insert(&self, candidate: ServerIdentity) -> Result<ServerIdentity, StoreError> {
        Ok(self.run(move |inner| async move { inner.identity_or_insert(candidate).await }).await?)
    }

    async fn insert_token(&self, record: TokenRecord) -> Result<bool, StoreError> {
        Ok(self.run(move |inner| async move { inner.insert_token(record).await }).await?)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.run(|inner| async move { inner.tokens().await }).await?)
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool, StoreError> {
        Ok(self.run(move |inner| async move { inner.revoke_token(id).await }).await?)
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>, StoreError> {
        Ok(self.run(|inner| async move { inner.clients().await }).await?)
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool, StoreError> {
        Ok(self.run(move |inner| async move { inner.revoke_client(id).await }).await?)
    }

    fn retries(&self) -> u64 {
        let stats = self.stats();
        stats.conflicts.saturating_add(stats.ambiguous)
    }
}

fn tls_options(tls: &EtcdTls) -> TlsOptions {
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some((cert, key)) = &tls.client {
        options = options.identity(Identity::from_pem(cert, key.as_slice()));
    }
    if let Some(name) = &tls.domain_name {
        options = options.domain_name(name.clone());
    }
    options
}

impl Inner {
    async fn open(config: EtcdConfig, layout: Layout) -> Result<Self> {
        let endpoints = config.endpoints();
        let mut options = ConnectOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), config.request_timeout)
            // A member cut off from its cluster answers at once rather than waiting.
            .with_require_leader(true);
        if let Some((name, password)) = &config.user {
            options = options.with_user(name.clone(), password.as_str()).with_auto_token_refresh(true);
        }
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls));
        }
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoints: endpoints.clone(),
            after: config.connect_timeout,
            reason,
        };
        let connecting = async {
            let client =
                Client::connect(&config.endpoints, Some(options)).await.map_err(|e| unreachable(reason(&e)))?;
            let inner = Self {
                client,
                layout,
                sealer: Sealer::new(&config.sealing_key),
                endpoints: endpoints.clone(),
                operation_timeout: config.operation_timeout,
                max_attempts: config.max_attempts,
                expiry_grace: config.expiry_grace,
                stats: Counters::default(),
                #[cfg(test)]
                faults: Faults::default(),
            };
            inner.check_sealing_key(config.existing_fleet).await.map_err(|e| match e {
                EtcdError::Request { reason, .. } => unreachable(reason),
                other => other,
            })?;
            Ok(inner)
        };
        match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(opened) => opened,
            Err(_) => Err(unreachable("no answer".into())),
        }
    }

    fn request_error(&self, op: &'static str, error: &etcd_client::Error) -> EtcdError {
        EtcdError::Request { endpoints: self.endpoints.clone(), op, reason: reason(error) }
    }

    fn corrupt(&self, key: &[u8], what: &'static str, reason: impl Into<String>) -> EtcdError {
        EtcdError::Corrupt {
            endpoints: self.endpoints.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            what,
            reason: reason.into(),
        }
    }

    fn seal<T: Serialize>(&self, key: &str, what: &'static str, value: &T) -> Result<Vec<u8>> {
        let plaintext = serde_json::to_vec(value)
            .map(Zeroizing::new)
            .map_err(|e| self.corrupt(key.as_bytes(), what, e.to_string()))?;
        self.sealer.seal(key.as_bytes(), &plaintext)
    }

    fn open_value(&self, key: &[u8], sealed: &[u8], what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
        self.sealer.open(key, sealed).map_err(|e| match e {
            OpenError::Authentication => {
                EtcdError::Unseal { endpoints: self.endpoints.clone(), key: String::from_utf8_lossy(key).into_owned() }
            }
            OpenError::Format => self.corrupt(key, what, "not a sealed value"),
        })
    }

    fn unseal<T: DeserializeOwned>(&self, kv: &KeyValue, what: &'static str) -> Result<T> {
        let plaintext = self.open_value(kv.key(), kv.value(), what)?;
        serde_json::from_slice(&plaintext).map_err(|e| self.corrupt(kv.key(), what, e.to_string()))
    }

    fn token_record(&self, kv: &KeyValue) -> Result<TokenRecord> {
        let record: TokenRecord = self.unseal(kv, "token record")?;
        if self.layout.token(record.id()).as_bytes() != kv.key() {
            return Err(self.corrupt(kv.key(), "token record", "it names another token"));
        }
        Ok(record)
    }

    fn keyring_record(&self, kv: &KeyValue) -> Result<KeyringRecord> {
        let record: KeyringRecord = self.unseal(kv, "keyring record")?;
        if self.layout.keyring(&record.client_id).as_bytes() != kv.key() {
            return Err(self.corrupt(kv.key(), "keyring record", "it names another client"));
        }
        Ok(record)
    }

    fn slot<T>(&self, response: &GetResponse, decode: impl Fn(&KeyValue) -> Result<T>) -> Result<Slot<T>> {
        Ok(match response.kvs().first() {
            None => Slot { value: None, mod_revision: 0, lease: 0 },
            Some(kv) => Slot { value: Some(decode(kv)?), mod_revision: kv.mod_revision(), lease: kv.lease() },
        })
    }

    /// A snapshot from the responses to `reads.ops()`, in their order.
    fn parse_reads(&self, reads: &Reads, responses: Vec<TxnOpResponse>) -> Result<Snapshot> {
        let mut gets = responses.into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let mut next = || {
            gets.next().ok_or_else(|| EtcdError::Unexpected {
                reason: "a transaction returned fewer reads than it asked".into(),
            })
        };
        let mut snapshot = Snapshot::default();
        match reads {
            Reads::Token(id) => {
                snapshot.tokens.insert(*id, self.slot(&next()?, |kv| self.token_record(kv))?);
            }
            Reads::Keyring(id) => {
                snapshot.keyrings.insert(id.clone(), self.slot(&next()?, |kv| self.keyring_record(kv))?);
            }
            Reads::Redeem(token, client) => {
                snapshot.tokens.insert(*token, self.slot(&next()?, |kv| self.token_record(kv))?);
                snapshot.keyrings.insert(client.clone(), self.slot(&next()?, |kv| self.keyring_record(kv))?);
            }
            Reads::UnexpiredTokens { .. } => {}
        }
        Ok(snapshot)
    }

    /// Reads a request's snapshot (linearizable: etcd's default), retrying transient
    /// failures with backoff.
    async fn read(&self, op: &'static str, reads: &Reads) -> Result<Snapshot> {
        let mut attempt: u32 = 1;
        loop {
            let outcome = match reads {
                Reads::UnexpiredTokens { limit, now } => self
                    .unexpired_tokens(*limit, *now)
                    .await
                    .map(|scan| Snapshot { scan: Some(scan), ..Snapshot::default() }),
                _ => match self.client.kv_client().txn(Txn::new().and_then(reads.ops(&self.layout))).await {
                    Ok(response) => self.parse_reads(reads, response.op_responses()),
                    Err(e) if classify(&e) == Failure::Definite || attempt >= self.max_attempts => {
                        Err(self.request_error(op, &e))
                    }
                    Err(_) => {
                        Counters::bump(&self.stats.read_retries);
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                },
            };
            return outcome;
        }
    }

    /// Sends a request whose repetition changes nothing more than its first sending
    /// (a read, a deletion, a create-if-absent), again after a transient failure (etcd
    /// restarting, a member gone, a leader election), with backoff, up to the attempt
    /// bound; the operation deadline bounds it too.
    async fn retrying<T, F, Fut>(&self, op: &'static str, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut attempt: u32 = 1;
        loop {
            match request().await {
                Ok(answer) => return Ok(answer),
                Err(e) if classify(&e) == Failure::Transient && attempt < self.max_attempts => {
                    Counters::bump(&self.stats.read_retries);
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.request_error(op, &e)),
            }
        }
    }

    /// The token records, in id order, up to and including the `limit`-th one unexpired
    /// at `now`: what the storage rule's `UnexpiredTokens` reads (it stops there), so an
    /// anonymous hello that names no token costs a page or two of unsealing, not one per
    /// token in the fleet.
    async fn unexpired_tokens(&self, limit: usize, now: u64) -> Result<Vec<TokenRecord>> {
        let page = i64::try_from(limit.saturating_mul(2)).unwrap_or(PAGE).clamp(16, PAGE);
        let mut scan = Vec::new();
        let mut unexpired = 0usize;
        self.range_pages(&self.layout.tokens(), page, |kvs| {
            for kv in kvs {
                let record = self.token_record(kv)?;
                if !record.is_expired(now) {
                    unexpired = unexpired.saturating_add(1);
                }
                scan.push(record);
                if unexpired >= limit {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        Ok(scan)
    }

    /// Every key under `prefix`, in key order, as of one revision (paged).
    async fn range_all(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>)> {
        let mut all = Vec::new();
        let revision = self
            .range_pages(prefix, PAGE, |page| {
                all.extend_from_slice(page);
                Ok(true)
            })
            .await?;
        Ok((revision, all))
    }

    /// The keys under `prefix` in key order, as of one revision, `page` at a time to
    /// `visit` until it returns `false` or the range ends. Returns that revision.
    async fn range_pages(
        &self,
        prefix: &str,
        page: i64,
        mut visit: impl FnMut(&[KeyValue]) -> Result<bool>,
    ) -> Result<i64> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = self
                .retrying("a listing", || {
                    let (mut kv, key, options) = (self.client.kv_client(), from.clone(), options.clone());
                    async move { kv.get(key, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = response.more();
            let kvs = response.take_kvs();
            match kvs.last() {
                Some(last) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                None => return Ok(revision),
            }
            if !visit(&kvs)? || !more {
                return Ok(revision);
            }
        }
    }

    /// Carries a protocol request out: the storage rule over a snapshot, and its writes
    /// committed only if no key it read has changed.
    async fn answer(&self, request: &StorageRequest) -> Result<StorageAnswer> {
        let op = request.name();
        let reads = Reads::of(request);
        let mut snapshot = self.read(op, &reads).await?;
        let mut attempts: u32 = 0;
        // The answer of the last attempt whose outcome was unknown.
        let mut unsettled: Option<StorageAnswer> = None;
        loop {
            if let Some(answer) = &unsettled
                && landed(request, &snapshot)
            {
                return Ok(answer.clone());
            }
            let mut view = View::new(&self.layout, &snapshot, request);
            let answer = execute(&mut view, request)?;
            let plan = view.plan;
            if plan.writes.is_empty() {
                return Ok(answer);
            }
            attempts = attempts.saturating_add(1);
            if attempts > self.max_attempts {
                return Err(EtcdError::Contention {
                    endpoints: self.endpoints.clone(),
                    op,
                    attempts: self.max_attempts,
                });
            }
            if attempts > 2 {
                tokio::time::sleep(backoff(attempts)).await;
            }
            self.stats.most_attempts.fetch_max(u64::from(attempts), Ordering::Relaxed);
            match self.commit(op, &plan, &reads).await? {
                Commit::Done => return Ok(answer),
                Commit::Conflict(fresh) => {
                    Counters::bump(&self.stats.conflicts);
                    snapshot = fresh;
                }
                Commit::Ambiguous => {
                    Counters::bump(&self.stats.ambiguous);
                    unsettled = Some(answer);
                    snapshot = self.read(op, &reads).await?;
                }
            }
        }
    }

    /// Sends one attempt's writes, conditional on every key read being unchanged.
    async fn commit(&self, op: &'static str, plan: &Plan, reads: &Reads) -> Result<Commit> {
        let compares: Vec<Compare> = plan
            .compares
            .iter()
            .map(|(key, revision)| match revision {
                0 => Compare::version(key.as_str(), CompareOp::Equal, 0),
                _ => Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision),
            })
            .collect();
        let mut puts = Vec::with_capacity(plan.writes.len());
        for write in &plan.writes {
            puts.push(match write {
                Write::Token { record, existing } => {
                    let key = self.layout.token(record.id());
                    let value = self.seal(&key, "token record", record)?;
                    // The record keeps the lease it was created with (its expiry).
                    TxnOp::put(key, value, existing.then(|| PutOptions::new().with_ignore_lease()))
                }
                Write::Use { token_id, client_id, lease } => {
                    let key = self.layout.use_key(*token_id, client_id, &nonce()?);
                    TxnOp::put(key, Vec::new(), (*lease != 0).then(|| PutOptions::new().with_lease(*lease)))
                }
                Write::Keyring(record) => {
                    let key = self.layout.keyring(&record.client_id);
                    let value = self.seal(&key, "keyring record", record)?;
                    TxnOp::put(key, value, None)
                }
            });
        }
        let txn = Txn::new().when(compares).and_then(puts).or_else(reads.ops(&self.layout));
        Counters::bump(&self.stats.transactions);
        #[cfg(test)]
        if Faults::take(&self.faults.fail_before_send) {
            return Ok(Commit::Ambiguous);
        }
        let response: TxnResponse = match self.client.kv_client().txn(txn).await {
            Ok(response) => response,
            Err(e) => {
                return match classify(&e) {
                    Failure::Transient => Ok(Commit::Ambiguous),
                    Failure::LeaseGone => Ok(Commit::Conflict(self.read(op, reads).await?)),
                    Failure::Definite => Err(self.request_error(op, &e)),
                };
            }
        };
        #[cfg(test)]
        if Faults::take(&self.faults.lose_reply) {
            return Ok(Commit::Ambiguous);
        }
        if response.succeeded() {
            Ok(Commit::Done)
        } else {
            Ok(Commit::Conflict(self.parse_reads(reads, response.op_responses())?))
        }
    }

    /// Creates the fleet's sealing check if it is absent (unless `existing` asks for a
    /// fleet that exists already), and opens it otherwise.
    async fn check_sealing_key(&self, existing: bool) -> Result<()> {
        let key = self.layout.sealing_check();
        let sealed = self.sealer.seal(key.as_bytes(), SEALING_CHECK)?;
        let create = if existing { Vec::new() } else { vec![TxnOp::put(key.as_str(), sealed, None)] };
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then(create)
            .or_else([TxnOp::get(key.as_str(), None)]);
        // Create-if-absent: sending it again changes nothing more.
        let response = self
            .retrying("opening the store", || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return if existing {
                Err(EtcdError::NoFleet { endpoints: self.endpoints.clone(), prefix: self.layout.prefix().to_owned() })
            } else {
                Ok(())
            };
        }
        let stored = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let Some(stored) = stored else {
            // Deleted between the compare and the read: create it again next time.
            return Ok(());
        };
        let wrong = || EtcdError::WrongSealingKey {
            endpoints: self.endpoints.clone(),
            prefix: self.layout.prefix().to_owned(),
        };
        match self.sealer.open(stored.key(), stored.value()) {
            Ok(plaintext) if bool::from(plaintext.as_slice().ct_eq(SEALING_CHECK)) => Ok(()),
            Ok(_) | Err(OpenError::Authentication) => Err(wrong()),
            Err(OpenError::Format) => Err(self.corrupt(stored.key(), "sealing check", "not a sealed value")),
        }
    }

    async fn identity_or_insert(&self, candidate: ServerIdentity) -> Result<ServerIdentity> {
        let key = self.layout.identity();
        let seed = candidate.to_seed();
        let sealed = self.sealer.seal(key.as_bytes(), seed.as_slice())?;
        // An attempt that may have landed is settled by the next one: its compare then
        // fails and the stored seed (this one) is read back.
        let stored = match self.create_if_absent("storing the gateway identity", &key, sealed, None).await? {
            Created::Stored => return Ok(candidate),
            Created::Present { stored, .. } => stored,
        };
        let plaintext = self.open_value(stored.key(), stored.value(), "gateway identity")?;
        let mut seed = Zeroizing::new([0u8; 32]);
        if plaintext.len() != seed.len() {
            return Err(self.corrupt(stored.key(), "gateway identity", "the seed is not 32 bytes"));
        }
        seed.copy_from_slice(&plaintext);
        Ok(ServerIdentity::from_seed(*seed))
    }

    /// Stores `value` under `key` only if the key is absent, in one transaction that
    /// reads the value there otherwise. Transient failures are retried; a key deleted
    /// between the compare and the read is tried again.
    async fn create_if_absent(
        &self,
        op: &'static str,
        key: &str,
        value: Vec<u8>,
        options: Option<PutOptions>,
    ) -> Result<Created> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, options)])
            .or_else([TxnOp::get(key, None)]);
        let mut attempt: u32 = 1;
        loop {
            let response = match self.client.kv_client().txn(txn.clone()).await {
                Ok(response) => response,
                Err(e) if classify(&e) == Failure::Transient && attempt < self.max_attempts => {
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(self.request_error(op, &e)),
            };
            if response.succeeded() {
                return Ok(Created::Stored);
            }
            let stored = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                _ => None,
            });
            if let Some(stored) = stored {
                return Ok(Created::Present { stored, after_unknown_outcome: attempt > 1 });
            }
            attempt = attempt.saturating_add(1);
            if attempt > self.max_attempts {
                return Err(EtcdError::Contention {
                    endpoints: self.endpoints.clone(),
                    op,
                    attempts: self.max_attempts,
                });
            }
        }
    }

    /// The lease that clears an expiring token's keys away `expiry_grace` after it expires.
    async fn token_lease(&self, expires_at: Option<u64>) -> Result<i64> {
        let Some(expires_at) = expires_at else { return Ok(0) };
        let ttl = expires_at.saturating_sub(boarding_smol::unix_now()).saturating_add(self.expiry_grace.as_secs());
        let ttl = i64::try_from(ttl).unwrap_or(MAX_LEASE_TTL).clamp(1, MAX_LEASE_TTL);
        // A lease granted by an attempt whose answer was lost runs out by itself.
        let granted = self
            .retrying("granting a token lease", || {
                let mut leases = self.client.lease_client();
                async move { leases.grant(ttl, None).await }
            })
            .await?;
        Ok(granted.id())
    }

    async fn drop_lease(&self, lease: i64) {
        if lease != 0 {
            // Best effort: an unused lease also runs out by itself.
            let _ = self.client.lease_client().revoke(lease).await;
        }
    }

    async fn insert_token(&self, record: TokenRecord) -> Result<bool> {
        let key = self.layout.token(record.id());
        let lease = self.token_lease(record.expires_at).await?;
        let value = self.seal(&key, "token record", &record)?;
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let created = match self.create_if_absent("storing a token", &key, value, options).await {
            Ok(created) => created,
            Err(e) => {
                self.drop_lease(lease).await;
                return Err(e);
            }
        };
        match created {
            Created::Stored => Ok(true),
            // After an attempt with an unknown outcome, the record there may be this
            // one: then it was stored.
            Created::Present { stored, after_unknown_outcome: true }
                if self.token_record(&stored).is_ok_and(|stored| stored == record) =>
            {
                Ok(true)
            }
            Created::Present { .. } => {
                self.drop_lease(lease).await;
                Ok(false)
            }
        }
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let (revision, kvs) = self.range_all(&self.layout.tokens()).await?;
        let mut records = kvs.iter().map(|kv| self.token_record(kv)).collect::<Result<Vec<_>>>()?;
        for record in records.iter_mut().filter(|r| r.max_uses == 0) {
            // An unlimited token's charges are keys of their own, counted as of the
            // listing's revision.
            let mut options = GetOptions::new().with_prefix().with_count_only();
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let counted = self
                .retrying("counting token uses", || {
                    let (mut kv, key, options) =
                        (self.client.kv_client(), self.layout.uses(record.id()), options.clone());
                    async move { kv.get(key, Some(options)).await }
                })
                .await?;
            let uses = u32::try_from(counted.count()).unwrap_or(u32::MAX);
            record.use_count = record.use_count.saturating_add(uses);
        }
        Ok(records)
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>> {
        let (_, kvs) = self.range_all(&self.layout.keyrings()).await?;
        kvs.iter().map(|kv| self.keyring_record(kv)).collect()
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool> {
        let txn = Txn::new().and_then([
            TxnOp::delete(self.layout.token(id), Some(DeleteOptions::new().with_prev_key())),
            TxnOp::delete(self.layout.uses(id), Some(DeleteOptions::new().with_prefix())),
        ]);
        // A deletion sent again deletes nothing more (though an attempt whose answer
        // was lost, then repeated, reports the token as absent).
        let response = self
            .retrying("revoking a token", || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        let deleted = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(delete) => Some(delete),
            _ => None,
        });
        let Some(deleted) = deleted else { return Ok(false) };
        if let Some(previous) = deleted.prev_kvs().first() {
            self.drop_lease(previous.lease()).await;
        }
        Ok(deleted.deleted() > 0)
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool> {
        let deleted = self
            .retrying("revoking a client", || {
                let (mut kv, key) = (self.client.kv_client(), self.layout.keyring(&id));
                async move { kv.delete(key, None).await }
            })
            .await?;
        Ok(deleted.deleted() > 0)
    }
}

/// Whether a redemption whose commit had an unknown outcome was applied: the client's
/// keyring is the one it wrote (the same keys, token and time). A keyring is fresh
/// randomness from one handshake, so no other redemption writes the same one.
fn landed(request: &StorageRequest, snapshot: &Snapshot) -> bool {
    let StorageRequest::Redeem(req) = request else { return false };
    snapshot.keyrings.get(&req.client_id).and_then(|slot| slot.value.as_ref()).is_some_and(|stored| {
        stored.token_id == req.token_id && stored.created_at == req.now && stored.keyring == req.keyring
    })
}

#[cfg(test)]
mod tests;
