//! What the gateway needs from storage, yielded as requests and resumed with
//! answers, and the one storage rule every store applies.
//!
//! A store does not interpret requests itself. It implements [`StoreTransaction`]
//! (read and write token and keyring records inside one transaction of its own) and
//! calls [`execute`], which carries the request out through it: lookups read,
//! [`decide_redemption`] and [`decide_confirmation`] decide, and the writes they call
//! for go back through the same transaction. A store commits the transaction when
//! [`execute`] returns `Ok` and rolls it back otherwise. That is what makes redemption
//! atomic (N racing joins on a one-use token: exactly one wins) and retries charge-once
//! (an unconfirmed keyring from the same token is replaced without charging the token
//! again), in every store alike. Rotation ([`decide_rotation`]) and clone suspicion
//! ([`decide_clone`]) are decided the same way, so every store keeps the same
//! keyring history.
//!
//! Stores hold only records: the join ticket and the verdict on a client's evidence are
//! the gateway application's (see [`crate::server::ServerRequest::Admit`]).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::UnixTime;
use crate::attestation::AttestedIdentity;
use crate::identity::ClientId;
use crate::keys::{Keyring, KeyringId};
use crate::token::{TokenId, TokenRecord, TokenUnusable};

/// A storage operation the gateway state machine is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRequest {
    /// Fetch one token record. Answer with [`StorageAnswer::Tokens`] (empty if unknown).
    LookupToken {
        /// The token id the client named.
        token_id: TokenId,
    },
    /// Fetch the first `limit` token records, in ascending token-id order, that are not
    /// expired at `now` (the unnamed-token flow). Exhausted ones are included: the
    /// retry of an interrupted join may still redeem a token its first attempt used
    /// up, and redemption decides. Answer with [`StorageAnswer::Tokens`].
    UnexpiredTokens {
        /// The current time.
        now: UnixTime,
        /// The most records to return.
        limit: usize,
    },
    /// Atomically redeem a token for a client id with a new keyring. Answer with
    /// [`StorageAnswer::Redeemed`], computed by [`decide_redemption`].
    Redeem(RedeemRequest),
    /// Fetch a client's keyring. Answer with [`StorageAnswer::Keyring`].
    LookupKeyring {
        /// The client id the agent named.
        client_id: ClientId,
    },
    /// Mark a keyring confirmed, if it is still the one with this fingerprint. Answer
    /// with [`StorageAnswer::Confirmed`], computed by [`decide_confirmation`].
    ConfirmKeyring {
        /// The client id.
        client_id: ClientId,
        /// The keyring the handshake derived.
        keyring_id: KeyringId,
    },
    /// Check that a confirmed keyring is still the client's current one when a resume
    /// that read it completes (a rotation may have retired it meanwhile). A read: answer
    /// with [`StorageAnswer::Checked`], computed by [`decide_confirmation`].
    CheckKeyring {
        /// The client id.
        client_id: ClientId,
        /// The keyring the resume ran with.
        keyring_id: KeyringId,
    },
    /// Replace a client's current keyring by the one a rotating resume derived, if the
    /// record is still as the resume read it, retiring `from`. Answer with
    /// [`StorageAnswer::Rotated`], computed by [`decide_rotation`].
    RotateKeyring(RotateRequest),
    /// A resume offered two keyrings and runs with the second (the agent does not know
    /// whether its last rotation was committed): fence the record, so that rotation's
    /// commit, if it is still in flight, can never land after this resume. Answer with
    /// [`StorageAnswer::Fenced`], computed by [`decide_fence`].
    FenceKeyring {
        /// The client id.
        client_id: ClientId,
        /// The current keyring the resume selected.
        keyring_id: KeyringId,
        /// The record's generation as the resume read it.
        generation: u64,
    },
    /// The operator asks for the client's keyring to be rotated at its next resume
    /// (`boarding clients rotate`). Never yielded by the state machine: a store's admin
    /// path carries it out through [`execute`] like the others. Answer with
    /// [`StorageAnswer::RotationRequested`].
    RequestRotation {
        /// The client id.
        client_id: ClientId,
    },
    /// A resume proved a keyring the client has rotated away from: record a clone
    /// suspicion for the client id. Answer with [`StorageAnswer::CloneRecorded`],
    /// computed by [`decide_clone`].
    RecordClone {
        /// The client id.
        client_id: ClientId,
        /// The retired keyring the resume proved.
        keyring_id: KeyringId,
        /// The current time.
        now: UnixTime,
    },
}

impl StorageRequest {
    /// Whether carrying the request out may write (a store opens a write transaction
    /// for these and a read transaction for the others).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Redeem(_)
                | Self::ConfirmKeyring { .. }
                | Self::RotateKeyring(_)
                | Self::FenceKeyring { .. }
                | Self::RecordClone { .. }
                | Self::RequestRotation { .. }
        )
    }

    /// The request's name, for logs and misuse errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LookupToken { .. } => "LookupToken",
            Self::UnexpiredTokens { .. } => "UnexpiredTokens",
            Self::Redeem(_) => "Redeem",
            Self::LookupKeyring { .. } => "LookupKeyring",
            Self::ConfirmKeyring { .. } => "ConfirmKeyring",
            Self::CheckKeyring { .. } => "CheckKeyring",
            Self::RotateKeyring(_) => "RotateKeyring",
            Self::FenceKeyring { .. } => "FenceKeyring",
            Self::RecordClone { .. } => "RecordClone",
            Self::RequestRotation { .. } => "RequestRotation",
        }
    }
}

/// The parameters of a redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemRequest {
    /// The token being redeemed.
    pub token_id: TokenId,
    /// The client id being bound.
    pub client_id: ClientId,
    /// The new (unconfirmed) keyring.
    pub keyring: Keyring,
    /// The current time.
    pub now: UnixTime,
    /// The identity the gateway's application attested at this join, if any: kept with
    /// the keyring, so every resume with it carries it too.
    pub attested: Option<AttestedIdentity>,
}

/// The parameters of a rotation's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    /// The client id.
    pub client_id: ClientId,
    /// The keyring the resume proved (the current one when the resume read the record).
    pub from: KeyringId,
    /// The keyring the resume derived to replace it.
    pub to: Keyring,
    /// The record's generation as the resume read it (after its fence, if it made one).
    pub generation: u64,
    /// The current time.
    pub now: UnixTime,
}

/// Most retired keyrings a record keeps for clone detection; a resume with an older
/// one is treated like one with an unknown keyring (a decoy), and detects nothing.
pub const MAX_RETIRED_KEYRINGS: usize = 4;

/// Evidence that a client's keyring was copied: resumes that proved a keyring the
/// client had rotated away from. A legitimate agent only ever holds the newest keyring
/// it confirmed, so one of the holders is a clone (which one, the operator decides).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloneSuspicion {
    /// The first such resume.
    pub first_at: UnixTime,
    /// The latest such resume.
    pub last_at: UnixTime,
    /// How many there were.
    pub count: u64,
    /// The retired keyring the latest one proved.
    pub keyring_id: KeyringId,
}

/// A gateway's stored keyring for one client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyringRecord {
    /// The client.
    pub client_id: ClientId,
    /// The token it joined with.
    pub token_id: TokenId,
    /// The token's labels at join time.
    pub labels: BTreeMap<String, String>,
    /// The keys.
    pub keyring: Keyring,
    /// Whether the client has proven it holds the keyring (finished or resumed).
    pub confirmed: bool,
    /// When it was created.
    pub created_at: UnixTime,
    /// The identity the gateway's application attested at join, if any (absent in
    /// records written before attestation existed: read as none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested: Option<AttestedIdentity>,
    /// The keyrings the client rotated away from, oldest first (at most
    /// [`MAX_RETIRED_KEYRINGS`]). No resume with one succeeds; one that proves it
    /// records a clone suspicion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Keyring>,
    /// When a rotation made the current keyring (`None`: it is the join's, from
    /// `created_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<UnixTime>,
    /// The operator asked for the keyring to be rotated at the client's next resume.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub rotation_requested: bool,
    /// Resumes with a retired keyring, if there were any (boxed: most records have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_suspected: Option<Box<CloneSuspicion>>,
    /// How many times the rules have rewritten this record: a rotation commits only
    /// over the generation its resume read, so no write in between (a fence, another
    /// rotation, an operator's request) can be overtaken by it.
    #[serde(default)]
    pub generation: u64,
}

impl KeyringRecord {
    /// Since when the current keyring has been in use: its rotation, or the join.
    pub fn keyring_since(&self) -> UnixTime {
        self.rotated_at.unwrap_or(self.created_at)
    }

    /// Which of the keyrings a resume offers (by fingerprint) the gateway uses: the
    /// current one if it is offered, else a retired one that is (the resume of a
    /// clone, refused once its proof verifies), else none (the resume gets a decoy).
    ///
    /// Every keyring of the record is fingerprinted, whatever matches, so the choice
    /// costs the same for each offer (see [`crate::server`] on the decoy).
    pub fn select(&self, offered: &[KeyringId]) -> Option<(&Keyring, KeyringStanding)> {
        let current = offered.contains(&self.keyring.id()).then_some((&self.keyring, KeyringStanding::Current));
        let mut retired = None;
        for k in self.retired.iter().rev() {
            if offered.contains(&k.id()) && retired.is_none() {
                retired = Some((k, KeyringStanding::Retired));
            }
        }
        current.or(retired)
    }
}

/// Where a keyring a resume offered stands in the client's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringStanding {
    /// The client's current keyring.
    Current,
    /// A keyring the client rotated away from.
    Retired,
}

/// When the gateway asks a resuming client to rotate its keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RotationPolicy {
    /// Rotate a keyring once it is this many seconds old (`None`: never by age).
    pub max_age: Option<u64>,
}

impl RotationPolicy {
    /// Whether a resume with `record`'s current keyring at `now` rotates it: only a
    /// confirmed keyring, when the operator asked for it or it reached the policy's age.
    pub fn wants_rotation(&self, record: &KeyringRecord, now: UnixTime) -> bool {
        let aged = self.max_age.is_some_and(|age| now >= record.keyring_since().saturating_add(age));
        record.confirmed && (record.rotation_requested || aged)
    }
}

/// A successful redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The labels to hand the client's verified identity (the token's, as read inside
    /// the redemption's transaction).
    pub labels: BTreeMap<String, String>,
    /// Whether this redemption used up one of the token's uses (false on a retry).
    pub charged: bool,
}

/// Why a store refused a redemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRefusal {
    /// The token does not exist (never issued, or revoked).
    UnknownToken,
    /// The token has expired.
    Expired,
    /// The token has no uses left.
    Exhausted,
    /// The client id has a confirmed keyring, or an unconfirmed one from another token.
    ClientIdTaken,
}

impl fmt::Display for RedeemRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownToken => "unknown token",
            Self::Expired => "token expired",
            Self::Exhausted => "token exhausted",
            Self::ClientIdTaken => "client id taken",
        })
    }
}

/// Why a store refused a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmRefusal {
    /// No keyring for the client id any more (revoked).
    Missing,
    /// The stored keyring is not the one the handshake derived (a later join replaced it,
    /// or, for a rotation, another resume rotated it first).
    Replaced,
}

/// A store's answer to a [`StorageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageAnswer {
    /// Token records ([`StorageRequest::LookupToken`], [`StorageRequest::UnexpiredTokens`]).
    Tokens(Vec<TokenRecord>),
    /// The outcome of [`StorageRequest::Redeem`].
    Redeemed(Result<Redemption, RedeemRefusal>),
    /// The client's keyring record, if any ([`StorageRequest::LookupKeyring`]).
    Keyring(Option<KeyringRecord>),
    /// The outcome of [`StorageRequest::ConfirmKeyring`].
    Confirmed(Result<(), ConfirmRefusal>),
    /// The outcome of [`StorageRequest::CheckKeyring`].
    Checked(Result<(), ConfirmRefusal>),
    /// The outcome of [`StorageRequest::RotateKeyring`].
    Rotated(Result<(), ConfirmRefusal>),
    /// The outcome of [`StorageRequest::FenceKeyring`]: the record's new generation, or
    /// `None` if the record is no longer as the resume read it (nothing written).
    Fenced(Option<u64>),
    /// [`StorageRequest::RecordClone`] is done (whether it found the keyring retired:
    /// `false` if the record is gone or no longer lists it).
    CloneRecorded(bool),
    /// [`StorageRequest::RequestRotation`] is done: whether the client exists.
    RotationRequested(bool),
    /// The store failed; the handshake aborts with an internal alert. Any pending
    /// request may be answered with it.
    Failed,
}

impl StorageAnswer {
    /// The answer's name, for misuse errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tokens(_) => "StorageAnswer::Tokens",
            Self::Redeemed(_) => "StorageAnswer::Redeemed",
            Self::Keyring(_) => "StorageAnswer::Keyring",
            Self::Confirmed(_) => "StorageAnswer::Confirmed",
            Self::Checked(_) => "StorageAnswer::Checked",
            Self::Rotated(_) => "StorageAnswer::Rotated",
            Self::Fenced(_) => "StorageAnswer::Fenced",
            Self::CloneRecorded(_) => "StorageAnswer::CloneRecorded",
            Self::RotationRequested(_) => "StorageAnswer::RotationRequested",
            Self::Failed => "StorageAnswer::Failed",
        }
    }
}

/// What a store reads and writes inside one of its transactions: the only thing a
/// store implements. [`execute`] decides everything else.
///
/// A transaction for a request whose [`StorageRequest::writes`] is `false` is never
/// asked to write, so a store may back it with a read-only transaction.
pub trait StoreTransaction {
    /// The store's own error (I/O, corruption, a lost lock).
    type Error;

    /// One token record.
    ///
    /// # Errors
    ///
    /// The store's error if it cannot read the record; [`execute`] returns it unchanged and
    /// the store rolls the transaction back. A missing record is `Ok(None)`.
    fn token(&mut self, id: TokenId) -> Result<Option<TokenRecord>, Self::Error>;

    /// Visits token records in ascending token-id order until `visit` returns `false`.
    ///
    /// # Errors
    ///
    /// The store's error if it cannot read the records; [`execute`] returns it unchanged.
    fn scan_tokens(&mut self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), Self::Error>;

    /// One client's keyring record.
    ///
    /// # Errors
    ///
    /// The store's error if it cannot read the record; a missing record is `Ok(None)`.
    fn keyring(&mut self, id: &ClientId) -> Result<Option<KeyringRecord>, Self::Error>;

    /// Inserts or replaces a token record (keyed by its id).
    ///
    /// # Errors
    ///
    /// The store's error if it cannot write the record; the store then rolls back
    /// everything the transaction wrote.
    fn put_token(&mut self, record: &TokenRecord) -> Result<(), Self::Error>;

    /// Inserts or replaces a keyring record (keyed by its client id).
    ///
    /// # Errors
    ///
    /// The store's error if it cannot write the record; the store then rolls back
    /// everything the transaction wrote.
    fn put_keyring(&mut self, record: &KeyringRecord) -> Result<(), Self::Error>;

    /// Charges one use of `token` (the record as this transaction read it): by default,
    /// writes it back with its use count one higher. A store may count uses otherwise (a
    /// replicated store, a key per redemption of an unlimited token, so that racing
    /// joins do not all rewrite one record); every later read in the transaction must
    /// then see the charged record.
    ///
    /// # Errors
    ///
    /// As [`StoreTransaction::put_token`].
    fn charge_token(&mut self, token: &TokenRecord) -> Result<(), Self::Error> {
        let mut charged = token.clone();
        charged.use_count = charged.use_count.saturating_add(1);
        self.put_token(&charged)
    }
}

/// Carries `request` out inside `txn`: the one storage rule. On `Ok` the store
/// commits `txn`; on `Err` it rolls back (nothing it wrote may stay).
///
/// # Errors
///
/// The first error of `txn`, unchanged; the store must then roll back. A refusal by the
/// rule (an unknown, expired or used-up token, a taken client id, a replaced keyring) is no
/// error: it is part of the `Ok` answer, for the protocol core to act on.
pub fn execute<T: StoreTransaction + ?Sized>(txn: &mut T, request: &StorageRequest) -> Result<StorageAnswer, T::Error> {
    Ok(match request {
        StorageRequest::LookupToken { token_id } => StorageAnswer::Tokens(txn.token(*token_id)?.into_iter().collect()),
        StorageRequest::UnexpiredTokens { now, limit } => {
            let mut found = Vec::new();
            if *limit > 0 {
                txn.scan_tokens(&mut |record| {
                    if !record.is_expired(*now) {
                        found.push(record);
                    }
                    found.len() < *limit
                })?;
            }
            StorageAnswer::Tokens(found)
        }
        StorageRequest::LookupKeyring { client_id } => StorageAnswer::Keyring(txn.keyring(client_id)?),
        StorageRequest::Redeem(req) => {
            let token = txn.token(req.token_id)?;
            let existing = txn.keyring(&req.client_id)?;
            match decide_redemption(token.as_ref(), existing.as_ref(), req) {
                Err(refusal) => StorageAnswer::Redeemed(Err(refusal)),
                Ok(decision) => {
                    if let (true, Some(token)) = (decision.charge, token) {
                        txn.charge_token(&token)?;
                    }
                    txn.put_keyring(&decision.record)?;
                    StorageAnswer::Redeemed(Ok(Redemption {
                        labels: decision.record.labels.clone(),
                        charged: decision.charge,
                    }))
                }
            }
        }
        StorageRequest::ConfirmKeyring { client_id, keyring_id } => {
            let existing = txn.keyring(client_id)?;
            let outcome = decide_confirmation(existing.as_ref(), keyring_id);
            if let (Ok(()), Some(mut record)) = (outcome, existing)
                && !record.confirmed
            {
                record.confirmed = true;
                record.generation = record.generation.saturating_add(1);
                txn.put_keyring(&record)?;
            }
            StorageAnswer::Confirmed(outcome)
        }
        StorageRequest::CheckKeyring { client_id, keyring_id } => {
            StorageAnswer::Checked(decide_confirmation(txn.keyring(client_id)?.as_ref(), keyring_id))
        }
        StorageRequest::RotateKeyring(req) => {
            let existing = txn.keyring(&req.client_id)?;
            match decide_rotation(existing, req) {
                Ok(record) => {
                    txn.put_keyring(&record)?;
                    StorageAnswer::Rotated(Ok(()))
                }
                Err(refusal) => StorageAnswer::Rotated(Err(refusal)),
            }
        }
        StorageRequest::FenceKeyring { client_id, keyring_id, generation } => {
            let existing = txn.keyring(client_id)?;
            match decide_fence(existing, keyring_id, *generation) {
                Some(record) => {
                    txn.put_keyring(&record)?;
                    StorageAnswer::Fenced(Some(record.generation))
                }
                None => StorageAnswer::Fenced(None),
            }
        }
        StorageRequest::RecordClone { client_id, keyring_id, now } => {
            let existing = txn.keyring(client_id)?;
            match decide_clone(existing, keyring_id, *now) {
                Some(record) => {
                    txn.put_keyring(&record)?;
                    StorageAnswer::CloneRecorded(true)
                }
                None => StorageAnswer::CloneRecorded(false),
            }
        }
        StorageRequest::RequestRotation { client_id } => match txn.keyring(client_id)? {
            Some(mut record) => {
                if !record.rotation_requested {
                    record.rotation_requested = true;
                    record.generation = record.generation.saturating_add(1);
                    txn.put_keyring(&record)?;
                }
                StorageAnswer::RotationRequested(true)
            }
            None => StorageAnswer::RotationRequested(false),
        },
    })
}

/// Token and keyring records in memory: the whole of an in-memory store's data, and a
/// [`StoreTransaction`] over itself. A store that keeps its records in memory holds
/// one behind a lock and calls [`Records::answer`] under it, so each request is atomic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Records {
    /// Token records by id.
    pub tokens: BTreeMap<TokenId, TokenRecord>,
    /// Keyring records by client id.
    pub keyrings: BTreeMap<ClientId, KeyringRecord>,
}

impl Records {
    /// Carries a request out on these records ([`execute`]; it cannot fail).
    pub fn answer(&mut self, request: &StorageRequest) -> StorageAnswer {
        match execute(self, request) {
            Ok(answer) => answer,
            Err(never) => match never {},
        }
    }
}

impl StoreTransaction for Records {
    type Error = core::convert::Infallible;

    fn token(&mut self, id: TokenId) -> Result<Option<TokenRecord>, Self::Error> {
        Ok(self.tokens.get(&id).cloned())
    }

    fn scan_tokens(&mut self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), Self::Error> {
        for record in self.tokens.values() {
            if !visit(record.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn keyring(&mut self, id: &ClientId) -> Result<Option<KeyringRecord>, Self::Error> {
        Ok(self.keyrings.get(id).cloned())
    }

    fn put_token(&mut self, record: &TokenRecord) -> Result<(), Self::Error> {
        self.tokens.insert(record.id(), record.clone());
        Ok(())
    }

    fn put_keyring(&mut self, record: &KeyringRecord) -> Result<(), Self::Error> {
        self.keyrings.insert(record.client_id.clone(), record.clone());
        Ok(())
    }
}

/// What a store must write for a redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionDecision {
    /// Increment the token's use count.
    pub charge: bool,
    /// Insert (or replace) this keyring record, unconfirmed.
    pub record: KeyringRecord,
}

/// The redemption rule. `token` and `existing` are the records as read inside the
/// store's write transaction.
///
/// # Errors
///
/// [`RedeemRefusal::UnknownToken`] without a token record; [`RedeemRefusal::ClientIdTaken`]
/// if the client id has a confirmed keyring, or one from another token;
/// [`RedeemRefusal::Expired`]; and [`RedeemRefusal::Exhausted`] if the token has no use
/// left, unless this is the retry of an interrupted join with the same token (which is
/// free).
pub fn decide_redemption(
    token: Option<&TokenRecord>,
    existing: Option<&KeyringRecord>,
    request: &RedeemRequest,
) -> Result<RedemptionDecision, RedeemRefusal> {
    let token = token.ok_or(RedeemRefusal::UnknownToken)?;
    let retry = match existing {
        None => false,
        Some(record) if record.confirmed || record.token_id != request.token_id => {
            return Err(RedeemRefusal::ClientIdTaken);
        }
        // An unconfirmed keyring from this token: an interrupted join being retried.
        // It was charged when first written, so it is replaced without a charge.
        Some(_) => true,
    };
    match token.usable_at(request.now) {
        Ok(()) => {}
        Err(TokenUnusable::Expired) => return Err(RedeemRefusal::Expired),
        Err(TokenUnusable::Exhausted) if !retry => return Err(RedeemRefusal::Exhausted),
        Err(TokenUnusable::Exhausted) => {}
    }
    Ok(RedemptionDecision {
        charge: !retry,
        record: KeyringRecord {
            client_id: request.client_id.clone(),
            token_id: request.token_id,
            labels: token.labels.clone(),
            keyring: request.keyring.clone(),
            confirmed: false,
            created_at: request.now,
            attested: request.attested.clone(),
            retired: Vec::new(),
            rotated_at: None,
            rotation_requested: false,
            clone_suspected: None,
            generation: existing.map_or(0, |e| e.generation.saturating_add(1)),
        },
    })
}

/// The confirmation rule: confirm only the keyring the handshake derived.
///
/// # Errors
///
/// [`ConfirmRefusal::Missing`] if the client has no keyring record (it was revoked
/// meanwhile), [`ConfirmRefusal::Replaced`] if the record holds another keyring than the
/// handshake derived.
pub fn decide_confirmation(existing: Option<&KeyringRecord>, keyring_id: &KeyringId) -> Result<(), ConfirmRefusal> {
    match existing {
        None => Err(ConfirmRefusal::Missing),
        Some(record) if record.keyring.id() != *keyring_id => Err(ConfirmRefusal::Replaced),
        Some(_) => Ok(()),
    }
}

/// The rotation rule: the keyring a rotating resume derived replaces the current one
/// only if that is still the one the resume proved; the old one is retired (the oldest
/// retired ones beyond [`MAX_RETIRED_KEYRINGS`] are forgotten), the new one is confirmed
/// (the client persisted it before its proof, which the gateway verified), and a
/// pending operator request is done. Returns the record to write.
///
/// # Errors
///
/// [`ConfirmRefusal::Missing`] if the client has no keyring record (revoked meanwhile),
/// [`ConfirmRefusal::Replaced`] if its current keyring is no longer `request.from`
/// (another resume rotated it first, or a rejoin replaced it) or the record was rewritten
/// since the resume read it (its generation moved: a fence, an operator's request).
pub fn decide_rotation(
    existing: Option<KeyringRecord>,
    request: &RotateRequest,
) -> Result<KeyringRecord, ConfirmRefusal> {
    let mut record = existing.ok_or(ConfirmRefusal::Missing)?;
    if record.keyring.id() != request.from || record.generation != request.generation {
        return Err(ConfirmRefusal::Replaced);
    }
    record.generation = record.generation.saturating_add(1);
    let old = core::mem::replace(&mut record.keyring, request.to.clone());
    record.retired.push(old);
    let excess = record.retired.len().saturating_sub(MAX_RETIRED_KEYRINGS);
    record.retired.drain(..excess);
    record.confirmed = true;
    record.rotated_at = Some(request.now);
    record.rotation_requested = false;
    Ok(record)
}

/// The fence rule: a resume that runs with the second keyring it offered (the agent
/// holds a rotated keyring whose commit it has not seen) moves the record's generation,
/// if the record is still as the resume read it (current keyring `keyring_id`,
/// `generation`): a commit of that rotation still in flight then finds the generation
/// moved and is refused, so it can never replace a keyring the agent may drop after this
/// resume. Returns the record to write, or `None` if the record changed (nothing to write).
pub fn decide_fence(existing: Option<KeyringRecord>, keyring_id: &KeyringId, generation: u64) -> Option<KeyringRecord> {
    let mut record = existing?;
    if record.keyring.id() != *keyring_id || record.generation != generation {
        return None;
    }
    record.generation = record.generation.saturating_add(1);
    Some(record)
}

/// The clone rule: a resume that proved `keyring_id`, one of the client's retired
/// keyrings, adds to the record's clone suspicion. Returns the record to write, or
/// `None` (nothing to write) if the record is gone or does not list the keyring as
/// retired.
pub fn decide_clone(existing: Option<KeyringRecord>, keyring_id: &KeyringId, now: UnixTime) -> Option<KeyringRecord> {
    let mut record = existing?;
    if !record.retired.iter().any(|k| k.id() == *keyring_id) {
        return None;
    }
    record.generation = record.generation.saturating_add(1);
    record.clone_suspected = Some(Box::new(match record.clone_suspected.take() {
        Some(s) => CloneSuspicion { last_at: now, count: s.count.saturating_add(1), keyring_id: *keyring_id, ..*s },
        None => CloneSuspicion { first_at: now, last_at: now, count: 1, keyring_id: *keyring_id },
    }));
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SymmetricKey;

    fn keyring(b: u8) -> Keyring {
        Keyring { c2s: SymmetricKey::from_bytes([b; 32]), s2c: SymmetricKey::from_bytes([b; 32]) }
    }

    fn request(token: &TokenRecord, now: UnixTime) -> RedeemRequest {
        RedeemRequest {
            token_id: token.id(),
            client_id: ClientId::new("n1").unwrap(),
            keyring: keyring(1),
            now,
            attested: None,
        }
    }

    #[test]
    fn one_use_token_then_retry_is_free() {
        let mut token = TokenRecord::new("abcdef.0123456789abcdef".parse().unwrap(), Some(100), 1);
        let first = decide_redemption(Some(&token), None, &request(&token, 10)).unwrap();
        assert!(first.charge);
        token.use_count = 1;
        // Another client id: exhausted.
        let mut other = request(&token, 10);
        other.client_id = ClientId::new("n2").unwrap();
        assert_eq!(decide_redemption(Some(&token), None, &other), Err(RedeemRefusal::Exhausted));
        // The same client id retrying over its unconfirmed keyring: allowed, not charged.
        let retry = decide_redemption(Some(&token), Some(&first.record), &request(&token, 11)).unwrap();
        assert!(!retry.charge);
        // Once confirmed, the id is taken.
        let mut confirmed = retry.record.clone();
        confirmed.confirmed = true;
        assert_eq!(
            decide_redemption(Some(&token), Some(&confirmed), &request(&token, 12)),
            Err(RedeemRefusal::ClientIdTaken)
        );
        // Expiry applies to retries too.
        assert_eq!(
            decide_redemption(Some(&token), Some(&first.record), &request(&token, 100)),
            Err(RedeemRefusal::Expired)
        );
        assert_eq!(decide_redemption(None, None, &request(&token, 1)), Err(RedeemRefusal::UnknownToken));
    }

    #[test]
    fn confirmation_is_by_fingerprint() {
        let token = TokenRecord::new("abcdef.0123456789abcdef".parse().unwrap(), None, 0);
        let d = decide_redemption(Some(&token), None, &request(&token, 1)).unwrap();
        assert_eq!(decide_confirmation(Some(&d.record), &keyring(1).id()), Ok(()));
        assert_eq!(decide_confirmation(Some(&d.record), &keyring(2).id()), Err(ConfirmRefusal::Replaced));
        assert_eq!(decide_confirmation(None, &keyring(1).id()), Err(ConfirmRefusal::Missing));
    }

    fn confirmed_record() -> KeyringRecord {
        let token = TokenRecord::new("abcdef.0123456789abcdef".parse().unwrap(), None, 0);
        let mut record = decide_redemption(Some(&token), None, &request(&token, 1)).unwrap().record;
        record.confirmed = true;
        record
    }

    fn rotate(record: &KeyringRecord, to: u8, now: UnixTime) -> Result<KeyringRecord, ConfirmRefusal> {
        let req = RotateRequest {
            client_id: record.client_id.clone(),
            from: record.keyring.id(),
            to: keyring(to),
            generation: record.generation,
            now,
        };
        decide_rotation(Some(record.clone()), &req)
    }

    #[test]
    fn rotation_retires_the_old_keyring_and_only_from_the_current_one() {
        let mut record = confirmed_record();
        record.rotation_requested = true;
        let rotated = rotate(&record, 2, 50).unwrap();
        assert_eq!(rotated.keyring, keyring(2));
        assert_eq!(rotated.retired, [keyring(1)]);
        assert_eq!((rotated.rotated_at, rotated.keyring_since(), rotated.rotation_requested), (Some(50), 50, false));
        // A second resume that proved the old keyring lost the race: nothing written.
        let late = RotateRequest {
            client_id: record.client_id.clone(),
            from: keyring(1).id(),
            to: keyring(3),
            generation: record.generation,
            now: 51,
        };
        assert_eq!(decide_rotation(Some(rotated.clone()), &late), Err(ConfirmRefusal::Replaced));
        assert_eq!(decide_rotation(None, &late), Err(ConfirmRefusal::Missing));
        // The selection: current first, retired next, else nothing (a decoy).
        assert_eq!(rotated.select(&[keyring(2).id()]).map(|(_, s)| s), Some(KeyringStanding::Current));
        assert_eq!(rotated.select(&[keyring(1).id()]).map(|(_, s)| s), Some(KeyringStanding::Retired));
        assert_eq!(rotated.select(&[keyring(9).id(), keyring(2).id()]).map(|(_, s)| s), Some(KeyringStanding::Current));
        assert!(rotated.select(&[keyring(9).id()]).is_none());
        // The history is bounded: the oldest retired keyrings are forgotten.
        let mut r = rotated;
        for (i, b) in (3..=8).enumerate() {
            r = rotate(&r, b, 60 + i as u64).unwrap();
        }
        assert_eq!(r.retired, [keyring(4), keyring(5), keyring(6), keyring(7)]);
        assert!(r.select(&[keyring(1).id()]).is_none());
    }

    #[test]
    fn a_fence_overtakes_a_rotation_in_flight() {
        let record = confirmed_record();
        // A rotation read the record; then a resume with the agent's fallback fenced it.
        let fenced = decide_fence(Some(record.clone()), &record.keyring.id(), record.generation).unwrap();
        assert_eq!(fenced.generation, record.generation + 1);
        assert_eq!(rotate(&record, 2, 50), Ok(rotate(&record, 2, 50).unwrap()), "over the read generation: commits");
        assert_eq!(
            decide_rotation(
                Some(fenced.clone()),
                &RotateRequest {
                    client_id: record.client_id.clone(),
                    from: record.keyring.id(),
                    to: keyring(2),
                    generation: record.generation,
                    now: 50,
                }
            ),
            Err(ConfirmRefusal::Replaced),
            "the fenced-off commit is refused"
        );
        // A fence over a record that moved writes nothing.
        assert!(decide_fence(Some(fenced.clone()), &record.keyring.id(), record.generation).is_none());
        assert!(decide_fence(Some(fenced), &keyring(9).id(), record.generation + 1).is_none());
        assert!(decide_fence(None, &record.keyring.id(), 0).is_none());
    }

    #[test]
    fn clone_suspicion_needs_a_retired_keyring() {
        let rotated = rotate(&confirmed_record(), 2, 50).unwrap();
        assert!(decide_clone(Some(rotated.clone()), &keyring(2).id(), 60).is_none(), "the current keyring is no clone");
        assert!(decide_clone(None, &keyring(1).id(), 60).is_none());
        let once = decide_clone(Some(rotated), &keyring(1).id(), 60).unwrap();
        let twice = decide_clone(Some(once), &keyring(1).id(), 70).unwrap();
        assert_eq!(
            twice.clone_suspected.as_deref(),
            Some(&CloneSuspicion { first_at: 60, last_at: 70, count: 2, keyring_id: keyring(1).id() })
        );
    }

    #[test]
    fn rotation_policy() {
        let mut record = confirmed_record();
        let never = RotationPolicy::default();
        let daily = RotationPolicy { max_age: Some(86_400) };
        assert!(!never.wants_rotation(&record, u64::MAX));
        assert!(!daily.wants_rotation(&record, 86_400));
        assert!(daily.wants_rotation(&record, 86_401));
        record.rotation_requested = true;
        assert!(never.wants_rotation(&record, 2));
        record.confirmed = false;
        assert!(!never.wants_rotation(&record, 2), "an unconfirmed keyring is confirmed, not rotated");
    }
}
