//! The stores: one async trait for the gateway ([`Store`]), one for the agent
//! ([`KeyringStore`]), and an in-memory implementation of both ([`MemoryStore`]).
//! The embedded, crash-safe default is [`crate::RedbStore`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use boarding::client::SavedKeyring;
use boarding::identity::{ClientId, GatewayIdentity};
use boarding::storage::{
    KeyringRecord, RedeemRefusal, Redemption, StorageAnswer, StorageRequest, decide_confirmation, decide_redemption,
};
use boarding::token::{TokenId, TokenRecord, TokenUnusable};

use crate::error::StoreError;

/// A gateway's storage: token records, keyrings (confirmed or not) and its identity.
///
/// [`Store::answer`] must carry out each [`StorageRequest`] atomically; in particular a
/// `Redeem` reads the token and the client's keyring, applies
/// [`boarding::storage::decide_redemption`] and writes the outcome in one transaction,
/// and a `ConfirmKeyring` applies [`boarding::storage::decide_confirmation`] likewise.
/// [`apply`] does exactly that on a snapshot of the two records, for stores to reuse.
pub trait Store: Send + Sync + 'static {
    /// Answers one request of the protocol core, atomically.
    fn answer(&self, request: StorageRequest) -> impl Future<Output = Result<StorageAnswer, StoreError>> + Send;

    /// Returns the stored gateway identity, storing `candidate` first if there is none.
    fn identity_or_insert(
        &self,
        candidate: GatewayIdentity,
    ) -> impl Future<Output = Result<GatewayIdentity, StoreError>> + Send;

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
}

/// An agent's storage: the one keyring it joined with.
pub trait KeyringStore: Send + Sync {
    /// Stores the keyring durably (it must survive a crash right after this returns).
    fn save_keyring(&self, saved: &SavedKeyring) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored keyring, if the agent has joined.
    fn load_keyring(&self) -> impl Future<Output = Result<Option<SavedKeyring>, StoreError>> + Send;
}

/// What a store must write after [`apply`].
#[derive(Debug, Default)]
pub struct Writes {
    /// The token record to write back (its use count was charged).
    pub token: Option<TokenRecord>,
    /// The keyring record to insert or replace.
    pub keyring: Option<KeyringRecord>,
}

/// Applies the protocol's rules for a `Redeem` or `ConfirmKeyring` request to the
/// records read inside the store's write transaction (`token`: the named token's
/// record; `keyring`: the client's keyring record), returning the answer and what to
/// write in that same transaction. `ticket` is sent to a client that joins.
pub fn apply(
    request: &StorageRequest,
    token: Option<&TokenRecord>,
    keyring: Option<&KeyringRecord>,
    ticket: &[u8],
) -> (StorageAnswer, Writes) {
    match request {
        StorageRequest::Redeem(req) => match decide_redemption(token, keyring, req) {
            Err(refusal) => (StorageAnswer::Redeemed(Err(refusal)), Writes::default()),
            Ok(decision) => {
                let mut writes = Writes::default();
                if decision.charge {
                    let Some(mut record) = token.cloned() else {
                        return (StorageAnswer::Redeemed(Err(RedeemRefusal::UnknownToken)), writes);
                    };
                    record.use_count = record.use_count.saturating_add(1);
                    writes.token = Some(record);
                }
                let labels = decision.record.labels.clone();
                writes.keyring = Some(decision.record);
                (StorageAnswer::Redeemed(Ok(Redemption::new(labels, decision.charge, ticket.to_vec()))), writes)
            }
        },
        StorageRequest::ConfirmKeyring { keyring_id, .. } => {
            let outcome = decide_confirmation(keyring, keyring_id);
            let mut writes = Writes::default();
            if outcome.is_ok()
                && let Some(record) = keyring
                && !record.confirmed
            {
                let mut record = record.clone();
                record.confirmed = true;
                writes.keyring = Some(record);
            }
            (StorageAnswer::Confirmed(outcome), writes)
        }
        _ => (StorageAnswer::Failed, Writes::default()),
    }
}

/// Whether a token may be offered in the seed flow at `now` (not expired).
pub(crate) fn not_expired(record: &TokenRecord, now: u64) -> bool {
    record.usable_at(now) != Err(TokenUnusable::Expired)
}

#[derive(Debug, Default)]
struct Memory {
    identity: Option<GatewayIdentity>,
    tokens: BTreeMap<TokenId, TokenRecord>,
    keyrings: BTreeMap<ClientId, KeyringRecord>,
    agent: Option<SavedKeyring>,
}

/// A store in memory, for tests and for a gateway that needs no persistence. Every
/// request is answered under one lock, so each is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Memory>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // Every write is a whole decision, so the data stays consistent after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer_now(&self, request: &StorageRequest) -> StorageAnswer {
        let mut state = self.lock();
        match request {
            StorageRequest::LookupToken { token_id } => {
                StorageAnswer::Tokens(state.tokens.get(token_id).cloned().into_iter().collect())
            }
            StorageRequest::ActiveTokens { now, limit } => StorageAnswer::Tokens(
                state.tokens.values().filter(|r| not_expired(r, *now)).take(*limit).cloned().collect(),
            ),
            StorageRequest::LookupKeyring { client_id } => {
                StorageAnswer::Keyring(state.keyrings.get(client_id).cloned())
            }
            StorageRequest::Redeem(req) => {
                let (answer, writes) =
                    apply(request, state.tokens.get(&req.token_id), state.keyrings.get(&req.client_id), &[]);
                state.write(writes);
                answer
            }
            StorageRequest::ConfirmKeyring { client_id, .. } => {
                let (answer, writes) = apply(request, None, state.keyrings.get(client_id), &[]);
                state.write(writes);
                answer
            }
            _ => StorageAnswer::Failed,
        }
    }
}

impl Memory {
    fn write(&mut self, writes: Writes) {
        if let Some(token) = writes.token {
            self.tokens.insert(token.id(), token);
        }
        if let Some(keyring) = writes.keyring {
            self.keyrings.insert(keyring.client_id.clone(), keyring);
        }
    }
}

impl Store for MemoryStore {
    async fn answer(&self, request: StorageRequest) -> Result<StorageAnswer, StoreError> {
        Ok(self.answer_now(&request))
    }

    async fn identity_or_insert(&self, candidate: GatewayIdentity) -> Result<GatewayIdentity, StoreError> {
        Ok(self.lock().identity.get_or_insert(candidate).clone())
    }

    async fn insert_token(&self, record: TokenRecord) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.tokens.contains_key(&record.id()) {
            return Ok(false);
        }
        state.tokens.insert(record.id(), record);
        Ok(true)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool, StoreError> {
        Ok(self.lock().tokens.remove(&id).is_some())
    }

    async fn clients(&self) -> Result<Vec<KeyringRecord>, StoreError> {
        Ok(self.lock().keyrings.values().cloned().collect())
    }

    async fn revoke_client(&self, id: ClientId) -> Result<bool, StoreError> {
        Ok(self.lock().keyrings.remove(&id).is_some())
    }
}

impl KeyringStore for MemoryStore {
    async fn save_keyring(&self, saved: &SavedKeyring) -> Result<(), StoreError> {
        self.lock().agent = Some(saved.clone());
        Ok(())
    }

    async fn load_keyring(&self) -> Result<Option<SavedKeyring>, StoreError> {
        Ok(self.lock().agent.clone())
    }
}
