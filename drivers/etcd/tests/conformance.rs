//! The etcd store passes the store conformance suite, on a real etcd member, each check
//! under a fleet prefix of its own.

mod common;

use boarding::identity::ClientId;
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
use boarding::token::{TokenId, TokenRecord};
use boarding_etcd::EtcdStore;
use boarding_memory::conformance::{self, ConformanceStore};
use boarding_smol::Store;

struct Subject(EtcdStore);

impl ConformanceStore for Subject {
    fn insert_token(&self, record: TokenRecord) {
        let inserted = smol::block_on(self.0.insert_token(record)).expect("insert_token");
        assert!(inserted, "a fresh token id was taken");
    }

    fn answer(&self, request: StorageRequest) -> StorageAnswer {
        smol::block_on(self.0.answer(request)).unwrap_or(StorageAnswer::Failed)
    }

    fn token(&self, id: TokenId) -> Option<TokenRecord> {
        smol::block_on(self.0.tokens()).expect("tokens").into_iter().find(|t| t.id() == id)
    }

    fn keyring(&self, id: &ClientId) -> Option<KeyringRecord> {
        smol::block_on(self.0.clients()).expect("clients").into_iter().find(|k| k.client_id == *id)
    }
}

#[test]
fn etcd_store_conforms() {
    let member = common::member();
    conformance::run(|| Subject(common::store(&member, &common::fresh_prefix("conformance"))));
}
