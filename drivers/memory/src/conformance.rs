//! The store conformance suite: what every gateway store must do, checked the same way
//! for each (the in-memory stores, redb, and any store to come).
//!
//! A store under test implements [`ConformanceStore`] (usually a few lines over its
//! real API) and a test calls [`run`] with a function that makes a fresh, empty store.
//! Every check panics with a message naming the check and the store's answer.
//!
//! ```
//! use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
//! use boarding::identity::ClientId;
//! use boarding::token::{TokenId, TokenRecord};
//! use boarding_memory::MemoryStore;
//! use boarding_memory::conformance::{self, ConformanceStore};
//!
//! struct Subject(MemoryStore);
//! impl ConformanceStore for Subject {
//!     fn insert_token(&self, record: TokenRecord) { self.0.insert_token(record) }
//!     fn answer(&self, request: StorageRequest) -> StorageAnswer { self.0.answer(&request) }
//!     fn token(&self, id: TokenId) -> Option<TokenRecord> { self.0.token(id) }
//!     fn keyring(&self, id: &ClientId) -> Option<KeyringRecord> { self.0.keyring(id) }
//! }
//! conformance::run(|| Subject(MemoryStore::new()));
//! ```

use std::sync::Barrier;

use boarding::identity::ClientId;
use boarding::keys::{Keyring, SymmetricKey};
use boarding::storage::{
    ConfirmRefusal, KeyringRecord, RedeemRefusal, RedeemRequest, Redemption, RotateRequest, StorageAnswer,
    StorageRequest,
};
use boarding::token::{BootstrapToken, TokenId, TokenRecord};

/// The store interface the suite drives.
pub trait ConformanceStore: Sync {
    /// Adds a token record (the operator's `token create`).
    fn insert_token(&self, record: TokenRecord);
    /// Answers one request of the protocol core; a store error is [`StorageAnswer::Failed`].
    fn answer(&self, request: StorageRequest) -> StorageAnswer;
    /// Reads a token record back.
    fn token(&self, id: TokenId) -> Option<TokenRecord>;
    /// Reads a keyring record back.
    fn keyring(&self, id: &ClientId) -> Option<KeyringRecord>;
}

/// Runs every check, each on a fresh store from `make`.
pub fn run<S: ConformanceStore>(make: impl Fn() -> S) {
    lookups(&make());
    unexpired_tokens_in_id_order(&make());
    unexpired_tokens_past_many_expired(&make());
    one_use_token_is_charged_once(&make());
    refusals_change_nothing(&make());
    confirmation_by_fingerprint(&make());
    unlimited_tokens_count_uses(&make());
    racing_redemptions_one_winner(&make());
    rotation_retires_and_records_clones(&make());
    racing_rotations_one_winner(&make());
}

const NOW: u64 = 1_700_000_000;

fn token(id: &str) -> BootstrapToken {
    let text = format!("{id}.0123456789abcdef");
    text.parse().unwrap_or_else(|e| panic!("conformance token {text}: {e}"))
}

fn client(id: &str) -> ClientId {
    ClientId::new(id).unwrap_or_else(|e| panic!("conformance client id {id}: {e}"))
}

fn keyring(b: u8) -> Keyring {
    Keyring { c2s: SymmetricKey::from_bytes([b; 32]), s2c: SymmetricKey::from_bytes([b.wrapping_add(1); 32]) }
}

fn redeem(token_id: TokenId, client_id: &str, ring: u8) -> StorageRequest {
    StorageRequest::Redeem(RedeemRequest {
        token_id,
        client_id: client(client_id),
        keyring: keyring(ring),
        now: NOW,
        attested: None,
    })
}

fn redeemed<S: ConformanceStore>(store: &S, request: StorageRequest) -> Result<Redemption, RedeemRefusal> {
    match store.answer(request) {
        StorageAnswer::Redeemed(outcome) => outcome,
        other => panic!("a Redeem request was answered with {other:?}"),
    }
}

fn confirmed<S: ConformanceStore>(store: &S, client_id: &str, ring: u8) -> Result<(), ConfirmRefusal> {
    let request = StorageRequest::ConfirmKeyring { client_id: client(client_id), keyring_id: keyring(ring).id() };
    match store.answer(request) {
        StorageAnswer::Confirmed(outcome) => outcome,
        other => panic!("a ConfirmKeyring request was answered with {other:?}"),
    }
}

fn tokens<S: ConformanceStore>(store: &S, request: StorageRequest) -> Vec<TokenId> {
    match store.answer(request) {
        StorageAnswer::Tokens(records) => records.iter().map(TokenRecord::id).collect(),
        other => panic!("a token lookup was answered with {other:?}"),
    }
}

fn lookups<S: ConformanceStore>(store: &S) {
    let record = TokenRecord::new(token("look01"), None, 1).with_label("role", "worker").expect("label");
    store.insert_token(record.clone());
    let id = record.id();
    assert_eq!(
        store.answer(StorageRequest::LookupToken { token_id: id }),
        StorageAnswer::Tokens(vec![record]),
        "lookups: a known token is returned whole"
    );
    let unknown = token("look02").id();
    assert_eq!(tokens(store, StorageRequest::LookupToken { token_id: unknown }), vec![], "lookups: unknown token");
    assert_eq!(
        store.answer(StorageRequest::LookupKeyring { client_id: client("nobody") }),
        StorageAnswer::Keyring(None),
        "lookups: unknown client"
    );
}

fn unexpired_tokens_in_id_order<S: ConformanceStore>(store: &S) {
    // Inserted out of order; one expired, one exhausted.
    for (id, expires, uses) in [
        ("ord05", None, 0),
        ("ord01", Some(NOW + 10), 1),
        ("ord03", Some(NOW), 1),
        ("ord02", None, 1),
        ("ord04", None, 1),
    ] {
        let mut record = TokenRecord::new(token(&format!("{id}x")), expires, uses);
        if id == "ord04" {
            record.use_count = 1;
        }
        store.insert_token(record);
    }
    let ids = |limit| {
        tokens(store, StorageRequest::UnexpiredTokens { now: NOW, limit })
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(16), ["ord01x", "ord02x", "ord04x", "ord05x"], "unexpired tokens: id order, expired skipped");
    assert_eq!(ids(2), ["ord01x", "ord02x"], "unexpired tokens: the first `limit` by id");
    assert_eq!(ids(0), Vec::<String>::new(), "unexpired tokens: limit 0");
}

fn unexpired_tokens_past_many_expired<S: ConformanceStore>(store: &S) {
    // 48 tokens, the first 24 by id expired: a store that reads in pages must read past
    // them, and may stop once it has the first 16 unexpired.
    for i in 0..48u32 {
        let expires = if i < 24 { Some(NOW) } else { None };
        store.insert_token(TokenRecord::new(token(&format!("many{i:02}")), expires, 1));
    }
    let got: Vec<String> = tokens(store, StorageRequest::UnexpiredTokens { now: NOW, limit: 16 })
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    let expected: Vec<String> = (24..40u32).map(|i| format!("many{i:02}")).collect();
    assert_eq!(got, expected, "unexpired tokens: the first 16 unexpired past 24 expired ones");
}

fn one_use_token_is_charged_once<S: ConformanceStore>(store: &S) {
    let id = token("once01").id();
    store.insert_token(TokenRecord::new(token("once01"), Some(NOW + 60), 1).with_label("k", "v").expect("label"));
    let first = redeemed(store, redeem(id, "node-a", 1)).expect("charge once: the first redemption succeeds");
    assert!(first.charged, "charge once: the first redemption is charged");
    assert_eq!(first.labels.get("k").map(String::as_str), Some("v"), "charge once: the token's labels");
    assert_eq!(store.token(id).map(|t| t.use_count), Some(1), "charge once: use count after the first");
    let stored = store.keyring(&client("node-a")).expect("charge once: keyring written");
    assert!(!stored.confirmed && stored.keyring == keyring(1), "charge once: unconfirmed new keyring");
    // Another client: exhausted, and nothing changes.
    assert_eq!(redeemed(store, redeem(id, "node-b", 2)), Err(RedeemRefusal::Exhausted), "charge once: exhausted");
    assert_eq!(store.keyring(&client("node-b")), None, "charge once: a refusal writes nothing");
    // The same client retrying its interrupted join: free, and the keyring is replaced.
    let retry = redeemed(store, redeem(id, "node-a", 3)).expect("charge once: a retry succeeds");
    assert!(!retry.charged, "charge once: a retry is not charged");
    assert_eq!(store.token(id).map(|t| t.use_count), Some(1), "charge once: use count after the retry");
    assert_eq!(store.keyring(&client("node-a")).map(|r| r.keyring), Some(keyring(3)), "charge once: replaced");
}

fn refusals_change_nothing<S: ConformanceStore>(store: &S) {
    let expired = token("gone01").id();
    store.insert_token(TokenRecord::new(token("gone01"), Some(NOW), 0));
    assert_eq!(redeemed(store, redeem(expired, "node-e", 1)), Err(RedeemRefusal::Expired), "refusals: expired");
    let unknown = token("none01").id();
    assert_eq!(redeemed(store, redeem(unknown, "node-u", 1)), Err(RedeemRefusal::UnknownToken), "refusals: unknown");
    assert_eq!(store.keyring(&client("node-e")), None, "refusals: expired writes nothing");
    assert_eq!(store.keyring(&client("node-u")), None, "refusals: unknown writes nothing");
    assert_eq!(store.token(expired).map(|t| t.use_count), Some(0), "refusals: no charge");
}

fn confirmation_by_fingerprint<S: ConformanceStore>(store: &S) {
    let id = token("conf01").id();
    store.insert_token(TokenRecord::new(token("conf01"), None, 0));
    let other = token("conf02").id();
    store.insert_token(TokenRecord::new(token("conf02"), None, 0));
    redeemed(store, redeem(id, "node-c", 1)).expect("confirm: redemption");
    assert_eq!(confirmed(store, "node-c", 9), Err(ConfirmRefusal::Replaced), "confirm: another fingerprint");
    assert!(store.keyring(&client("node-c")).is_some_and(|r| !r.confirmed), "confirm: refusal leaves it unconfirmed");
    assert_eq!(confirmed(store, "node-c", 1), Ok(()), "confirm: the derived fingerprint");
    assert!(store.keyring(&client("node-c")).is_some_and(|r| r.confirmed), "confirm: stored confirmed");
    assert_eq!(confirmed(store, "node-c", 1), Ok(()), "confirm: confirming twice is fine");
    assert_eq!(confirmed(store, "node-m", 1), Err(ConfirmRefusal::Missing), "confirm: missing keyring");
    // Once confirmed, the client id is taken, by the same token or another.
    assert_eq!(redeemed(store, redeem(id, "node-c", 2)), Err(RedeemRefusal::ClientIdTaken), "confirm: id taken");
    assert_eq!(redeemed(store, redeem(other, "node-c", 2)), Err(RedeemRefusal::ClientIdTaken), "confirm: id taken");
    // An unconfirmed keyring from another token also holds the id.
    redeemed(store, redeem(id, "node-d", 3)).expect("confirm: second client");
    assert_eq!(redeemed(store, redeem(other, "node-d", 4)), Err(RedeemRefusal::ClientIdTaken), "confirm: other token");
}

fn unlimited_tokens_count_uses<S: ConformanceStore>(store: &S) {
    let id = token("many01").id();
    store.insert_token(TokenRecord::new(token("many01"), None, 0));
    for i in 0..5u8 {
        let outcome = redeemed(store, redeem(id, &format!("many-{i}"), i));
        assert!(outcome.is_ok_and(|r| r.charged), "unlimited: redemption {i}");
    }
    assert_eq!(store.token(id).map(|t| t.use_count), Some(5), "unlimited: uses counted");
}

fn racing_redemptions_one_winner<S: ConformanceStore>(store: &S) {
    const RACERS: usize = 8;
    let id = token("race01").id();
    store.insert_token(TokenRecord::new(token("race01"), None, 1));
    let barrier = Barrier::new(RACERS);
    let outcomes: Vec<Result<Redemption, RedeemRefusal>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    redeemed(store, redeem(id, &format!("racer-{i}"), u8::try_from(i).unwrap_or(0)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racer panicked"))).collect()
    });
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(winners, 1, "race: exactly one of {RACERS} redemptions of a one-use token wins: {outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o.is_ok() || *o == Err(RedeemRefusal::Exhausted)),
        "race: the losers are told the token is exhausted: {outcomes:?}"
    );
    assert_eq!(store.token(id).map(|t| t.use_count), Some(1), "race: charged once");
}

/// A confirmed keyring `ring` for `client_id`, from a token of its own.
fn enrolled<S: ConformanceStore>(store: &S, token_id: &str, client_id: &str, ring: u8) {
    store.insert_token(TokenRecord::new(token(token_id), None, 1));
    assert!(redeemed(store, redeem(token(token_id).id(), client_id, ring)).is_ok(), "{client_id}: redeemed");
    assert_eq!(confirmed(store, client_id, ring), Ok(()), "{client_id}: confirmed");
}

fn rotate(client_id: &str, from: u8, to: u8, generation: u64, now: u64) -> StorageRequest {
    StorageRequest::RotateKeyring(RotateRequest {
        client_id: client(client_id),
        from: keyring(from).id(),
        to: keyring(to),
        generation,
        now,
    })
}

fn generation<S: ConformanceStore>(store: &S, client_id: &str) -> u64 {
    store.keyring(&client(client_id)).map_or(0, |r| r.generation)
}

fn rotated<S: ConformanceStore>(store: &S, request: StorageRequest) -> Result<(), ConfirmRefusal> {
    match store.answer(request) {
        StorageAnswer::Rotated(outcome) => outcome,
        other => panic!("a RotateKeyring request was answered with {other:?}"),
    }
}

fn rotation_retires_and_records_clones<S: ConformanceStore>(store: &S) {
    enrolled(store, "rota01", "rotor", 10);
    assert_eq!(
        store.answer(StorageRequest::RequestRotation { client_id: client("rotor") }),
        StorageAnswer::RotationRequested(true),
        "rotation: an operator's request for a known client"
    );
    assert_eq!(
        store.answer(StorageRequest::RequestRotation { client_id: client("nobody") }),
        StorageAnswer::RotationRequested(false),
        "rotation: a request for an unknown client"
    );
    assert!(store.keyring(&client("nobody")).is_none(), "rotation: a request creates no record");
    assert!(store.keyring(&client("rotor")).is_some_and(|r| r.rotation_requested), "rotation: the request is stored");
    // A rotation that read the record before the request was stored is refused.
    let read = generation(store, "rotor");
    assert_eq!(rotated(store, rotate("rotor", 10, 20, read - 1, NOW + 5)), Err(ConfirmRefusal::Replaced));
    assert_eq!(rotated(store, rotate("rotor", 10, 20, read, NOW + 5)), Ok(()), "rotation: from the current keyring");
    let record = store.keyring(&client("rotor")).expect("rotation: the record");
    assert_eq!(record.keyring, keyring(20), "rotation: the new keyring is current");
    assert_eq!(record.retired, vec![keyring(10)], "rotation: the old one is retired");
    assert!(record.confirmed && !record.rotation_requested, "rotation: confirmed, the request done");
    assert_eq!(record.rotated_at, Some(NOW + 5), "rotation: its time");
    // From a keyring that is no longer current, or for a client that is gone: nothing.
    let read = generation(store, "rotor");
    assert_eq!(rotated(store, rotate("rotor", 10, 30, read, NOW + 6)), Err(ConfirmRefusal::Replaced));
    assert_eq!(rotated(store, rotate("ghost", 10, 30, 0, NOW + 6)), Err(ConfirmRefusal::Missing));
    assert_eq!(store.keyring(&client("rotor")), Some(record.clone()), "rotation: a refusal changes nothing");
    // A clone suspicion is recorded only for a retired keyring.
    let clone = |ring: u8, now: u64| StorageRequest::RecordClone {
        client_id: client("rotor"),
        keyring_id: keyring(ring).id(),
        now,
    };
    assert_eq!(store.answer(clone(20, NOW + 7)), StorageAnswer::CloneRecorded(false), "clone: not the current one");
    assert_eq!(store.keyring(&client("rotor")), Some(record), "clone: a refusal changes nothing");
    assert_eq!(store.answer(clone(10, NOW + 8)), StorageAnswer::CloneRecorded(true), "clone: a retired keyring");
    assert_eq!(store.answer(clone(10, NOW + 9)), StorageAnswer::CloneRecorded(true), "clone: again");
    let suspicion = store.keyring(&client("rotor")).and_then(|r| r.clone_suspected).expect("clone: recorded");
    assert_eq!(
        (suspicion.first_at, suspicion.last_at, suspicion.count, suspicion.keyring_id),
        (NOW + 8, NOW + 9, 2, keyring(10).id()),
        "clone: first, last and count"
    );
    // A fence moves the generation, so a rotation that read the record before it fails.
    let read = generation(store, "rotor");
    let fence =
        |g| StorageRequest::FenceKeyring { client_id: client("rotor"), keyring_id: keyring(20).id(), generation: g };
    assert_eq!(store.answer(fence(read)), StorageAnswer::Fenced(Some(read + 1)), "fence: over the read record");
    assert_eq!(store.answer(fence(read)), StorageAnswer::Fenced(None), "fence: over a record that moved");
    assert_eq!(rotated(store, rotate("rotor", 20, 40, read, NOW + 10)), Err(ConfirmRefusal::Replaced));
    assert_eq!(rotated(store, rotate("rotor", 20, 40, read + 1, NOW + 10)), Ok(()), "fence: a later read commits");
}

fn racing_rotations_one_winner<S: ConformanceStore>(store: &S) {
    const RACERS: u8 = 8;
    enrolled(store, "rota02", "raced", 1);
    let read = generation(store, "raced");
    let barrier = Barrier::new(usize::from(RACERS));
    let outcomes: Vec<Result<(), ConfirmRefusal>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    rotated(store, rotate("raced", 1, 100 + i, read, NOW))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racer panicked"))).collect()
    });
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(winners, 1, "rotation race: exactly one of {RACERS} rotations of one keyring wins: {outcomes:?}");
    assert!(outcomes.iter().all(|o| o.is_ok() || *o == Err(ConfirmRefusal::Replaced)), "{outcomes:?}");
    let record = store.keyring(&client("raced")).expect("rotation race: the record");
    assert_eq!(record.retired, vec![keyring(1)], "rotation race: retired once");
}
