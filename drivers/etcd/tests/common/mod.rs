//! Helpers shared by the etcd store's tests: a member, stores on it, raw etcd access.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use boarding::identity::ClientId;
use boarding::keys::{Keyring, SymmetricKey};
use boarding::storage::{RedeemRequest, StorageAnswer, StorageRequest};
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_etcd::testing::EtcdMember;
use boarding_etcd::{EtcdConfig, EtcdStore, SealingKey};
use boarding_smol::Store;
use etcd_client::GetOptions;
use zeroize::Zeroizing;

pub const NOW: u64 = 1_700_000_000;

/// A member, or a test failure that says to install etcd.
pub fn member() -> EtcdMember {
    EtcdMember::start().unwrap_or_else(|e| panic!("{e}"))
}

pub fn key(b: u8) -> SealingKey {
    SealingKey::from_bytes(Zeroizing::new([b; 32]))
}

pub fn config(member: &EtcdMember, prefix: &str) -> EtcdConfig {
    config_with_key(member, prefix, key(7))
}

pub fn config_with_key(member: &EtcdMember, prefix: &str, key: SealingKey) -> EtcdConfig {
    EtcdConfig::new([member.endpoint()], key).with_prefix(prefix).with_runtime_threads(1)
}

pub fn connect(config: EtcdConfig) -> EtcdStore {
    smol::block_on(EtcdStore::connect(config)).unwrap_or_else(|e| panic!("connect: {e}"))
}

pub fn store(member: &EtcdMember, prefix: &str) -> EtcdStore {
    connect(config(member, prefix))
}

/// A prefix no other test of this process uses.
pub fn fresh_prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("/test/{name}-{}/", N.fetch_add(1, Ordering::Relaxed))
}

pub fn token(id: &str) -> BootstrapToken {
    format!("{id}.0123456789abcdef").parse().unwrap()
}

pub fn client(id: &str) -> ClientId {
    ClientId::new(id).unwrap()
}

pub fn keyring(b: u8) -> Keyring {
    Keyring { c2s: SymmetricKey::from_bytes([b; 32]), s2c: SymmetricKey::from_bytes([b.wrapping_add(1); 32]) }
}

pub fn redeem(record: &TokenRecord, client_id: &str, ring: u8, now: u64) -> StorageRequest {
    StorageRequest::Redeem(RedeemRequest {
        token_id: record.id(),
        client_id: client(client_id),
        keyring: keyring(ring),
        now,
        attested: None,
    })
}

pub fn answer(store: &EtcdStore, request: StorageRequest) -> StorageAnswer {
    smol::block_on(store.answer(request)).unwrap_or_else(|e| panic!("answer: {e}"))
}

pub fn insert(store: &EtcdStore, record: &TokenRecord) {
    assert!(smol::block_on(store.insert_token(record.clone())).unwrap(), "a fresh token id was taken");
}

pub fn use_count(store: &EtcdStore, record: &TokenRecord) -> Option<u32> {
    smol::block_on(store.tokens()).unwrap().into_iter().find(|t| t.id() == record.id()).map(|t| t.use_count)
}

/// Direct access to etcd, bypassing the store (to read raw values, or change keys
/// behind its back).
pub struct Raw {
    runtime: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Raw {
    pub fn new(member: &EtcdMember) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(etcd_client::Client::connect([member.endpoint()], None)).unwrap();
        Self { runtime, client }
    }

    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Every key and value under `prefix`.
    pub fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut client = self.client();
        let response = self.block_on(client.get(prefix, Some(GetOptions::new().with_prefix()))).unwrap();
        response.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect()
    }

    pub fn count(&self, prefix: &str) -> i64 {
        let mut client = self.client();
        self.block_on(client.get(prefix, Some(GetOptions::new().with_prefix().with_count_only()))).unwrap().count()
    }

    pub fn put(&self, key: &str, value: Vec<u8>) {
        let mut client = self.client();
        self.block_on(client.put(key, value, None)).unwrap();
    }

    pub fn delete(&self, key: &str) {
        let mut client = self.client();
        self.block_on(client.delete(key, None)).unwrap();
    }
}

/// Waits up to `within` for `done`, polling.
pub fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
