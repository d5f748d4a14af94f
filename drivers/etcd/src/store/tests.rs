//! Ambiguous commits, simulated: a commit reported lost before it was sent, and one
//! applied whose answer is lost.

use boarding::identity::ClientId;
use boarding::keys::{Keyring, SymmetricKey};
use boarding::storage::{RedeemRequest, StorageAnswer, StorageRequest};
use boarding::token::TokenRecord;
use boarding_smol::Store;
use std::sync::atomic::Ordering;
use zeroize::Zeroizing;

use super::EtcdStore;
use crate::testing::EtcdMember;
use crate::{EtcdConfig, SealingKey};

fn store(member: &EtcdMember, prefix: &str) -> EtcdStore {
    let config = EtcdConfig::new([member.endpoint()], SealingKey::from_bytes(Zeroizing::new([7; 32])))
        .with_prefix(prefix)
        .with_runtime_threads(1);
    smol::block_on(EtcdStore::connect(config)).unwrap()
}

fn redeem(record: &TokenRecord, client: &str, ring: u8) -> StorageRequest {
    StorageRequest::Redeem(RedeemRequest {
        token_id: record.id(),
        client_id: ClientId::new(client).unwrap(),
        keyring: Keyring { c2s: SymmetricKey::from_bytes([ring; 32]), s2c: SymmetricKey::from_bytes([ring; 32]) },
        now: 1_700_000_000,
        attested: None,
    })
}

fn use_count(store: &EtcdStore, record: &TokenRecord) -> u32 {
    let tokens = smol::block_on(store.tokens()).unwrap();
    tokens.iter().find(|t| t.id() == record.id()).map(|t| t.use_count).unwrap()
}

fn charged(answer: StorageAnswer) -> bool {
    match answer {
        StorageAnswer::Redeemed(Ok(redemption)) => redemption.charged,
        other => panic!("not a redemption: {other:?}"),
    }
}

#[test]
fn a_lost_commit_answer_is_settled_by_reading_again() {
    let member = EtcdMember::start().unwrap();
    for (prefix, max_uses) in [("/t/lost-one/", 1), ("/t/lost-unlimited/", 0)] {
        let store = store(&member, prefix);
        let record = TokenRecord::new("lost01.0123456789abcdef".parse().unwrap(), None, max_uses);
        assert!(smol::block_on(store.insert_token(record.clone())).unwrap());
        // Applied, but the answer is lost: the re-read finds this redemption's keyring.
        store.inner().faults.lose_reply.store(1, Ordering::SeqCst);
        let answer = smol::block_on(store.answer(redeem(&record, "node-a", 1))).unwrap();
        assert!(charged(answer), "{prefix}: reported as the charging redemption it was");
        assert_eq!(use_count(&store, &record), 1, "{prefix}: charged once");
        let stats = store.stats();
        assert_eq!((stats.ambiguous, stats.transactions), (1, 1), "{prefix}: settled without a second write");
        // Never sent: the re-read finds nothing, and the rule runs again.
        store.inner().faults.fail_before_send.store(1, Ordering::SeqCst);
        let other = smol::block_on(store.answer(redeem(&record, "node-b", 2))).unwrap();
        if max_uses == 1 {
            assert_eq!(other, StorageAnswer::Redeemed(Err(boarding::storage::RedeemRefusal::Exhausted)));
            assert_eq!(store.stats().transactions, 1, "a refusal writes nothing");
        } else {
            assert!(charged(other), "{prefix}: the unsent redemption is made again");
            assert_eq!(use_count(&store, &record), 2, "{prefix}: and charged once");
            assert_eq!(store.stats().ambiguous, 2);
        }
        // The same redemption sent twice (a retry after a lost answer): charged once.
        store.inner().faults.lose_reply.store(1, Ordering::SeqCst);
        let retry = smol::block_on(store.answer(redeem(&record, "node-a", 3))).unwrap();
        assert!(!charged(retry), "{prefix}: a retry of an unconfirmed join is free");
        assert_eq!(use_count(&store, &record), if max_uses == 1 { 1 } else { 2 }, "{prefix}: no new charge");
    }
}
