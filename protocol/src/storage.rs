//! What the gateway needs from storage, yielded as requests and resumed with
//! answers, and the one redemption rule every store applies atomically.
//!
//! A store implements [`decide_redemption`] and [`decide_confirmation`] inside one
//! write transaction each: read the token record and the client's keyring record,
//! call the rule, write what it says. That is what makes redemption atomic (N racing
//! joins on a one-use token: exactly one wins) and retries charge-once (an unconfirmed
//! keyring from the same token is replaced without charging the token again).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::UnixTime;
use crate::identity::ClientId;
use crate::keys::{Keyring, KeyringId};
use crate::token::{TokenId, TokenRecord, TokenUnusable};

/// A storage operation the gateway state machine is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageRequest {
    /// Fetch one token record. Answer with [`StorageAnswer::Tokens`] (empty if unknown).
    LookupToken {
        /// The token id the client named.
        token_id: TokenId,
    },
    /// Fetch up to `limit` token records not expired at `now` (the seed flow),
    /// exhausted ones included: the retry of an interrupted join may still redeem a
    /// token its first attempt used up, and redemption decides. Answer with
    /// [`StorageAnswer::Tokens`].
    ActiveTokens {
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
    /// Attestation evidence the client sent (opaque; empty if none).
    pub evidence: Vec<u8>,
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
}

/// A successful redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The labels to hand the client's verified identity.
    pub labels: BTreeMap<String, String>,
    /// Whether this redemption used up one of the token's uses (false on a retry).
    pub charged: bool,
    /// The ticket to send the client in `ServerFinished` (at most 4 KiB).
    pub ticket: Vec<u8>,
}

impl Redemption {
    /// Builds an answer.
    pub fn new(labels: BTreeMap<String, String>, charged: bool, ticket: Vec<u8>) -> Self {
        Self { labels, charged, ticket }
    }
}

/// Why a store refused a redemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum ConfirmRefusal {
    /// No keyring for the client id any more (revoked).
    Missing,
    /// The stored keyring is not the one the handshake derived (a later join replaced it).
    Replaced,
}

/// A store's answer to a [`StorageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageAnswer {
    /// Token records ([`StorageRequest::LookupToken`], [`StorageRequest::ActiveTokens`]).
    Tokens(Vec<TokenRecord>),
    /// The outcome of [`StorageRequest::Redeem`].
    Redeemed(Result<Redemption, RedeemRefusal>),
    /// The client's keyring record, if any ([`StorageRequest::LookupKeyring`]).
    Keyring(Option<KeyringRecord>),
    /// The outcome of [`StorageRequest::ConfirmKeyring`].
    Confirmed(Result<(), ConfirmRefusal>),
    /// The store failed; the handshake aborts with an internal alert.
    Failed,
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
        },
    })
}

/// The confirmation rule: confirm only the keyring the handshake derived.
pub fn decide_confirmation(existing: Option<&KeyringRecord>, keyring_id: &KeyringId) -> Result<(), ConfirmRefusal> {
    match existing {
        None => Err(ConfirmRefusal::Missing),
        Some(record) if record.keyring.id() != *keyring_id => Err(ConfirmRefusal::Replaced),
        Some(_) => Ok(()),
    }
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
            evidence: Vec::new(),
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
}
