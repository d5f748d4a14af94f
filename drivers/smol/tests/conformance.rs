//! Both gateway stores pass the store conformance suite: the in-memory one, and redb on
//! a real file (shared mode, the way `boarding gateway serve` opens it, and held).

use boarding::identity::ClientId;
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
use boarding::token::{TokenId, TokenRecord};
use boarding_memory::conformance::{self, ConformanceStore};
use boarding_smol::{MemoryStore, RedbStore, Store};

/// A store under test, driven synchronously; a store error is `StorageAnswer::Failed`.
struct Subject<S> {
    store: S,
    // Keeps a redb file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
}

impl<S: Store> ConformanceStore for Subject<S> {
    fn insert_token(&self, record: TokenRecord) {
        let inserted = smol::block_on(self.store.insert_token(record)).expect("insert_token");
        assert!(inserted, "a fresh token id was taken");
    }

    fn answer(&self, request: StorageRequest) -> StorageAnswer {
        smol::block_on(self.store.answer(request)).unwrap_or(StorageAnswer::Failed)
    }

    fn token(&self, id: TokenId) -> Option<TokenRecord> {
        smol::block_on(self.store.tokens()).expect("tokens").into_iter().find(|t| t.id() == id)
    }

    fn keyring(&self, id: &ClientId) -> Option<KeyringRecord> {
        smol::block_on(self.store.clients()).expect("clients").into_iter().find(|k| k.client_id == *id)
    }
}

#[test]
fn memory_store_conforms() {
    conformance::run(|| Subject { store: MemoryStore::new(), _dir: None });
}

#[test]
fn shared_redb_store_conforms() {
    conformance::run(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RedbStore::gateway_in(dir.path().join("gw")).expect("open the database");
        Subject { store, _dir: Some(dir) }
    });
}

#[test]
fn held_redb_store_conforms() {
    conformance::run(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RedbStore::open(dir.path().join("gateway.redb")).expect("open the database");
        Subject { store, _dir: Some(dir) }
    });
}
