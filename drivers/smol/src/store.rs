//! The stores: one async trait for the gateway ([`Store`]), one for the agent
//! ([`KeyringStore`]), and in-memory implementations of each ([`MemoryStore`],
//! [`MemoryKeyringStore`]). The embedded, crash-safe defaults are [`crate::RedbStore`]
//! and [`crate::RedbKeyringStore`].
//!
//! No store interprets the protocol's requests: each opens a transaction of its own
//! and hands it to [`boarding::storage::execute`], the one storage rule.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use boarding::client::SavedKeyring;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::keys::KeyringId;
use boarding::storage::{KeyringRecord, Records, StorageAnswer, StorageRequest};
use boarding::token::{BootstrapToken, TokenId, TokenRecord};

use crate::certificate::NodeCertificate;
use crate::error::{Error, StoreError};
use crate::os_rng;

/// A gateway's storage: token records, keyrings (confirmed or not) and its identity.
///
/// [`Store::answer`] carries out each [`StorageRequest`] atomically by running
/// [`boarding::storage::execute`] inside one transaction of the store's own, committed
/// only if it succeeds.
pub trait Store: Send + Sync + 'static {
    /// Answers one request of the protocol core, atomically.
    fn answer(&self, request: StorageRequest) -> impl Future<Output = Result<StorageAnswer, StoreError>> + Send;

    /// Returns the stored gateway identity, storing `candidate` first if there is none.
    fn identity_or_insert(
        &self,
        candidate: ServerIdentity,
    ) -> impl Future<Output = Result<ServerIdentity, StoreError>> + Send;

    /// Adds a token record; `false` (and no change) if its id is already taken.
    fn insert_token(&self, record: TokenRecord) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every token record, ordered by id.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRecord>, StoreError>> + Send;

    /// Deletes a token; later joins with it fail with "unknown token". Whether it existed.
    fn revoke_token(&self, id: TokenId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every client's keyring record, ordered by client id.
    fn clients(&self) -> impl Future<Output = Result<Vec<KeyringRecord>, StoreError>> + Send;

    /// Deletes a client's keyring; its resumes then fail. Whether it existed.
    fn revoke_client(&self, id: ClientId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Asks for the client's keyring to be rotated at its next resume, through the
    /// core's rule ([`StorageRequest::RequestRotation`]). Whether the client exists.
    fn request_rotation(&self, id: ClientId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            match self.answer(StorageRequest::RequestRotation { client_id: id }).await? {
                StorageAnswer::RotationRequested(exists) => Ok(exists),
                other => Err(StoreError::Backend {
                    store: "gateway",
                    source: format!("the store answered a rotation request with {}", other.name()).into(),
                }),
            }
        }
    }

    /// Transactions retried so far (after a conflict, or to settle an ambiguous
    /// outcome), for the gateway's metrics. Stores that never retry keep the default, 0.
    fn retries(&self) -> u64 {
        0
    }
}

/// Refuses `path` if group or others have any access to it (Unix): a file or directory
/// that holds, or leads to, secrets (the gateway's identity, keyrings, token secrets, a
/// sealing key). `fix` is the command that repairs it without the path (`chmod 600`,
/// `chmod 700`), which the error shows with the path.
///
/// # Errors
///
/// [`StoreError::NotPrivate`] if it is open to group or others; [`StoreError::DataDir`] if
/// its metadata cannot be read.
pub fn check_private(path: &std::path::Path, fix: &'static str) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| StoreError::DataDir { path: path.to_owned(), source })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::NotPrivate { path: path.to_owned(), mode: mode & 0o7777, fix });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, fix);
    Ok(())
}

/// What a new token is made of, apart from its random id and secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTemplate {
    /// When it expires (Unix seconds); `None` never.
    pub expires_at: Option<u64>,
    /// Most redemptions; 0 is unlimited.
    pub max_uses: u32,
    /// Labels every client that joins with it gets.
    pub labels: BTreeMap<String, String>,
    /// Free text for operators.
    pub description: String,
}

/// How many random token ids [`create_token`] tries before giving up. With 36^6 ids a
/// collision is rare; eight in a row means the id space is nearly full.
const TOKEN_ID_TRIES: usize = 8;

/// Creates a token with a fresh random id and secret from the OS RNG, checks the
/// template against the token limits, and stores it, drawing a new id if the first is
/// taken. Returns the token (shown once to the operator) and its record.
///
/// # Errors
///
/// [`Error::TokenMetadata`] if the template's labels or description break the token limits;
/// [`Error::Store`] if the store fails; [`Error::NoFreeTokenId`] if every id drawn was
/// taken.
pub async fn create_token<S: Store + ?Sized>(
    store: &S,
    template: &TokenTemplate,
) -> Result<(BootstrapToken, TokenRecord), Error> {
    for _ in 0..TOKEN_ID_TRIES {
        let token = BootstrapToken::generate(&mut os_rng());
        let record = token_record(token.clone(), template)?;
        if store.insert_token(record.clone()).await? {
            return Ok((token, record));
        }
    }
    Err(Error::NoFreeTokenId { tries: TOKEN_ID_TRIES })
}

/// Stores a token the operator chose (as `kubeadm token create TOKEN` does), with the
/// template's metadata. Returns its record.
///
/// # Errors
///
/// [`Error::TokenMetadata`] if the template breaks the token limits; [`Error::Store`] if
/// the store fails; [`Error::TokenIdTaken`] (and no change) if a token with its id exists.
pub async fn insert_chosen_token<S: Store + ?Sized>(
    store: &S,
    token: BootstrapToken,
    template: &TokenTemplate,
) -> Result<TokenRecord, Error> {
    let record = token_record(token, template)?;
    if store.insert_token(record.clone()).await? { Ok(record) } else { Err(Error::TokenIdTaken { id: record.id() }) }
}

/// Stores `token` with the template's metadata if the operator chose one
/// ([`insert_chosen_token`]), else a fresh random one ([`create_token`]). Returns the
/// token (shown once to the operator) and its record.
///
/// # Errors
///
/// As [`insert_chosen_token`] or [`create_token`].
pub async fn create_or_insert_token<S: Store + ?Sized>(
    store: &S,
    template: &TokenTemplate,
    token: Option<BootstrapToken>,
) -> Result<(BootstrapToken, TokenRecord), Error> {
    match token {
        Some(token) => insert_chosen_token(store, token.clone(), template).await.map(|record| (token, record)),
        None => create_token(store, template).await,
    }
}

/// A token's record with the template's metadata, checked against the limits.
fn token_record(token: BootstrapToken, template: &TokenTemplate) -> Result<TokenRecord, Error> {
    let mut record =
        TokenRecord::new(token, template.expires_at, template.max_uses).with_description(&template.description)?;
    for (key, value) in &template.labels {
        record = record.with_label(key, value)?;
    }
    Ok(record)
}

/// An agent's storage: the one keyring it joined with, and the node certificate if it
/// asked for one.
pub trait KeyringStore: Send + Sync {
    /// Stores the keyring durably (it must survive a crash right after this returns).
    fn save_keyring(&self, saved: &SavedKeyring) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored keyring, if the agent has joined.
    fn load_keyring(&self) -> impl Future<Output = Result<Option<SavedKeyring>, StoreError>> + Send;

    /// Atomically stores `saved` in place of the stored keyring, only if the stored
    /// keyring's newest key is still `replaces` (one compare-and-swap, durable like
    /// [`KeyringStore::save_keyring`]); `Ok(false)` and no change otherwise. A keyring
    /// rotation stores its new keyring this way before it is confirmed, so two resumes
    /// of one agent that both rotate cannot both be stored.
    fn replace_keyring(
        &self,
        replaces: &KeyringId,
        saved: &SavedKeyring,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores the node's key and certificate durably, replacing any earlier one (an
    /// agent that asks for certificates calls it before it confirms its join, and after a
    /// resume that renewed the certificate). A store that keeps none (the default)
    /// refuses, and the join or resume that needed it fails.
    fn save_certificate(&self, certificate: &NodeCertificate) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = certificate;
        async {
            Err(StoreError::Backend {
                store: "keyring",
                source: "this keyring store keeps no node certificates".into(),
            })
        }
    }

    /// The stored key and certificate, if the agent has one (the default: none).
    fn load_certificate(&self) -> impl Future<Output = Result<Option<NodeCertificate>, StoreError>> + Send {
        async { Ok(None) }
    }
}

#[derive(Debug, Default)]
struct Memory {
    identity: Option<ServerIdentity>,
    records: Records,
}

/// A gateway store in memory, for tests and for a gateway that needs no persistence.
/// Every request is answered under one lock, so each is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Memory>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every write is a whole decision, so the data stays consistent after a panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    async fn answer(&self, request: StorageRequest) -> Result<StorageAnswer, StoreError> {
        Ok(lock(&self.state).records.answer(&request))
    }

    async fn identity_or_insert(&self, candidate: ServerIdentity) -> Result<ServerIdentity, StoreError> {
        Ok(lock(&self.state).identity.get_or_insert(candidate).clone())
    }

    async fn insert_token(&self, record: TokenRecord) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if state.records.tokens.contains_key(&record.id()) {
            return Ok(false);
        }
        state.records.tokens.insert(record.id(), record);
        Ok(true)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(lock(&self.state).records.tokens.values().cloned().collect())
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool, StoreError> {
        Ok(lock(&self.state).records.tokens.remove(&id).is_some())
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>, StoreError> {
        Ok(lock(&self.state).records.keyrings.values().cloned().collect())
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool, StoreError> {
        Ok(lock(&self.state).records.keyrings.remove(&id).is_some())
    }
}

/// An agent's keyring (and node certificate) in memory, lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryKeyringStore {
    saved: Mutex<Option<SavedKeyring>>,
    certificate: Mutex<Option<NodeCertificate>>,
}

impl MemoryKeyringStore {
    /// An empty store: the agent has not joined.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `saved`, as if the agent had joined with it.
    pub fn holding(saved: SavedKeyring) -> Self {
        let store = Self::default();
        *lock(&store.saved) = Some(saved);
        store
    }
}

impl KeyringStore for MemoryKeyringStore {
    async fn save_keyring(&self, saved: &SavedKeyring) -> Result<(), StoreError> {
        *lock(&self.saved) = Some(saved.clone());
        Ok(())
    }

    async fn load_keyring(&self) -> Result<Option<SavedKeyring>, StoreError> {
        Ok(lock(&self.saved).clone())
    }

    async fn replace_keyring(&self, replaces: &KeyringId, saved: &SavedKeyring) -> Result<bool, StoreError> {
        let mut stored = lock(&self.saved);
        if stored.as_ref().is_none_or(|s| s.keyring.id() != *replaces) {
            return Ok(false);
        }
        *stored = Some(saved.clone());
        Ok(true)
    }

    async fn save_certificate(&self, certificate: &NodeCertificate) -> Result<(), StoreError> {
        *lock(&self.certificate) = Some(certificate.clone());
        Ok(())
    }

    async fn load_certificate(&self) -> Result<Option<NodeCertificate>, StoreError> {
        Ok(lock(&self.certificate).clone())
    }
}
