//! The in-memory store passes the store conformance suite.

use boarding::identity::ClientId;
use boarding::storage::{KeyringRecord, StorageAnswer, StorageRequest};
use boarding::token::{TokenId, TokenRecord};
use boarding_memory::MemoryStore;
use boarding_memory::conformance::{self, ConformanceStore};

struct Subject(MemoryStore);

impl ConformanceStore for Subject {
    fn insert_token(&self, record: TokenRecord) {
        self.0.insert_token(record);
    }
    fn answer(&self, request: StorageRequest) -> StorageAnswer {
        self.0.answer(&request)
    }
    fn token(&self, id: TokenId) -> Option<TokenRecord> {
        self.0.token(id)
    }
    fn keyring(&self, id: &ClientId) -> Option<KeyringRecord> {
        self.0.keyring(id)
    }
}

#[test]
fn memory_store_conforms() {
    conformance::run(|| Subject(MemoryStore::new()));
}
