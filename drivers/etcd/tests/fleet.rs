//! Several stores on one etcd, standing in for gateway replicas (each its own client
//! and runtime): races, retries, expiry, sealing, the shared identity, revocation
//! watches, and etcd failing.

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use boarding::storage::{RedeemRefusal, StorageAnswer, StorageRequest};
use boarding::token::TokenRecord;
use boarding_etcd::{EtcdError, EtcdStats, EtcdStore, Revocation};
use boarding_smol::Store;
use common::*;
use smol::stream::StreamExt;

/// Runs each request on its store from a thread of its own, all released at once.
fn race(requests: Vec<(&EtcdStore, StorageRequest)>) -> Vec<StorageAnswer> {
    let barrier = Barrier::new(requests.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .into_iter()
            .map(|(store, request)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    smol::block_on(store.answer(request))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("a racer failed: {e}"))).collect()
    })
}

fn replicas(member: &boarding_etcd::testing::EtcdMember, prefix: &str, n: usize) -> Vec<EtcdStore> {
    (0..n).map(|_| store(member, prefix)).collect()
}

fn total(stores: &[EtcdStore]) -> EtcdStats {
    stores.iter().map(EtcdStore::stats).fold(EtcdStats::default(), |mut sum, s| {
        sum.transactions += s.transactions;
        sum.conflicts += s.conflicts;
        sum.ambiguous += s.ambiguous;
        sum.read_retries += s.read_retries;
        sum.most_attempts = sum.most_attempts.max(s.most_attempts);
        sum
    })
}

#[test]
fn one_use_token_has_one_winner_across_replicas() {
    const RACERS: usize = 16;
    let member = member();
    let prefix = fresh_prefix("one-use");
    let stores = replicas(&member, &prefix, 4);
    let started = Instant::now();
    for rep in 0..20 {
        let record = TokenRecord::new(token(&format!("race{rep:02}")), None, 1);
        insert(&stores[rep % stores.len()], &record);
        let requests = (0..RACERS)
            .map(|i| (&stores[i % stores.len()], redeem(&record, &format!("r{rep}-node-{i}"), i as u8, NOW)))
            .collect();
        let outcomes = race(requests);
        let winners = outcomes.iter().filter(|o| matches!(o, StorageAnswer::Redeemed(Ok(r)) if r.charged)).count();
        assert_eq!(winners, 1, "repetition {rep}: exactly one of {RACERS} wins: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                StorageAnswer::Redeemed(Ok(_)) | StorageAnswer::Redeemed(Err(RedeemRefusal::Exhausted))
            )),
            "repetition {rep}: the others are told the token is exhausted: {outcomes:?}"
        );
        assert_eq!(use_count(&stores[0], &record), Some(1), "repetition {rep}: charged once");
        let bound = smol::block_on(stores[1].clients()).unwrap().iter().filter(|k| k.token_id == record.id()).count();
        assert_eq!(bound, 1, "repetition {rep}: one keyring written");
    }
    let stats = total(&stores);
    println!(
        "one-use token, 20 x {RACERS} racers on 4 replicas in {:?}: {} transactions, {} conflicts, {} ambiguous, \
         at most {} attempts for one redemption",
        started.elapsed(),
        stats.transactions,
        stats.conflicts,
        stats.ambiguous,
        stats.most_attempts
    );
}

#[test]
fn an_unlimited_token_does_not_serialise_joins() {
    const JOINS: usize = 64;
    let member = member();
    let prefix = fresh_prefix("unlimited");
    let stores = replicas(&member, &prefix, 4);
    let record = TokenRecord::new(token("hot001"), None, 0);
    insert(&stores[0], &record);
    let requests =
        (0..JOINS).map(|i| (&stores[i % stores.len()], redeem(&record, &format!("agent-{i}"), i as u8, NOW))).collect();
    let started = Instant::now();
    let outcomes = race(requests);
    let elapsed = started.elapsed();
    assert!(
        outcomes.iter().all(|o| matches!(o, StorageAnswer::Redeemed(Ok(r)) if r.charged)),
        "every join succeeds and is charged: {outcomes:?}"
    );
    assert_eq!(use_count(&stores[0], &record), Some(JOINS as u32), "{JOINS} uses counted");
    let stats = total(&stores);
    println!(
        "unlimited token, {JOINS} concurrent joins on 4 replicas in {elapsed:?}: {} transactions, {} conflicts, \
         at most {} attempts for one join",
        stats.transactions, stats.conflicts, stats.most_attempts
    );
    assert_eq!(stats.conflicts, 0, "joins with one unlimited token touch disjoint keys: {stats:?}");
    assert_eq!(stats.most_attempts, 1, "{stats:?}");

    // For comparison, a token limited to as many uses: every join rewrites its record.
    let limited_prefix = fresh_prefix("limited");
    let stores: Vec<EtcdStore> =
        (0..4).map(|_| connect(config(&member, &limited_prefix).with_max_attempts(1000))).collect();
    let record = TokenRecord::new(token("hot002"), None, JOINS as u32);
    insert(&stores[0], &record);
    let requests =
        (0..JOINS).map(|i| (&stores[i % stores.len()], redeem(&record, &format!("agent-{i}"), i as u8, NOW))).collect();
    let started = Instant::now();
    let outcomes = race(requests);
    let elapsed = started.elapsed();
    assert!(outcomes.iter().all(|o| matches!(o, StorageAnswer::Redeemed(Ok(r)) if r.charged)), "{outcomes:?}");
    assert_eq!(use_count(&stores[0], &record), Some(JOINS as u32));
    let stats = total(&stores);
    println!(
        "limited token ({JOINS} uses), {JOINS} concurrent joins on 4 replicas in {elapsed:?}: {} transactions, {} \
         conflicts, at most {} attempts for one join",
        stats.transactions, stats.conflicts, stats.most_attempts
    );
}

#[test]
fn a_retried_redemption_is_charged_once() {
    let member = member();
    let prefix = fresh_prefix("retry");
    let (a, b) = (store(&member, &prefix), store(&member, &prefix));
    for (id, max_uses) in [("retr01", 1), ("retr02", 0)] {
        let record = TokenRecord::new(token(id), None, max_uses);
        insert(&a, &record);
        let node = format!("node-{id}");
        let first = answer(&a, redeem(&record, &node, 1, NOW));
        assert!(matches!(first, StorageAnswer::Redeemed(Ok(ref r)) if r.charged), "{id}: {first:?}");
        // The join was interrupted before ClientFinished; the agent retries through
        // another replica, with a new keyring.
        let retry = answer(&b, redeem(&record, &node, 2, NOW + 1));
        assert!(matches!(retry, StorageAnswer::Redeemed(Ok(ref r)) if !r.charged), "{id}: {retry:?}");
        assert_eq!(use_count(&a, &record), Some(1), "{id}: charged once");
        let stored = smol::block_on(b.clients()).unwrap().into_iter().find(|k| k.client_id == client(&node)).unwrap();
        assert!(stored.keyring == keyring(2) && !stored.confirmed, "{id}: the retry's keyring replaced the first");
        if max_uses == 1 {
            let other = answer(&b, redeem(&record, &format!("other-{id}"), 3, NOW));
            assert_eq!(other, StorageAnswer::Redeemed(Err(RedeemRefusal::Exhausted)), "{id}");
        }
        let confirm = StorageRequest::ConfirmKeyring { client_id: client(&node), keyring_id: keyring(2).id() };
        assert_eq!(answer(&a, confirm), StorageAnswer::Confirmed(Ok(())), "{id}");
        let again = answer(&a, redeem(&record, &node, 4, NOW + 2));
        assert_eq!(again, StorageAnswer::Redeemed(Err(RedeemRefusal::ClientIdTaken)), "{id}: once confirmed");
    }
}

#[test]
fn an_expiring_token_vanishes_with_its_lease() {
    let member = member();
    let prefix = fresh_prefix("ttl");
    let store = connect(config(&member, &prefix).with_expiry_grace(Duration::ZERO));
    let raw = Raw::new(&member);
    let now = boarding_smol::unix_now();
    let record = TokenRecord::new(token("ttl001"), Some(now + 2), 0);
    insert(&store, &record);
    let joined = answer(&store, redeem(&record, "node-ttl", 1, now));
    assert!(matches!(joined, StorageAnswer::Redeemed(Ok(_))), "{joined:?}");
    assert_eq!(raw.count(&format!("{prefix}tokens/")), 1);
    assert_eq!(raw.count(&format!("{prefix}uses/")), 1, "the redemption is counted by a key of its own");
    let started = Instant::now();
    let gone = eventually(Duration::from_secs(20), || {
        raw.count(&format!("{prefix}tokens/")) == 0 && raw.count(&format!("{prefix}uses/")) == 0
    });
    assert!(gone, "the token's record and its use keys are deleted by its lease");
    println!("the token expiring in 2 s was deleted after {:?}", started.elapsed());
    assert_eq!(raw.count(&format!("{prefix}keyrings/")), 1, "the client's keyring stays");
    let lookup = answer(&store, StorageRequest::LookupToken { token_id: record.id() });
    assert_eq!(lookup, StorageAnswer::Tokens(vec![]));
}

#[test]
fn sealed_values_do_not_show_secrets() {
    let member = member();
    let prefix = fresh_prefix("sealed");
    let store = store(&member, &prefix);
    let secret_token = token("seal01");
    let record = TokenRecord::new(secret_token.clone(), None, 1).with_label("role", "visible-label").unwrap();
    insert(&store, &record);
    assert!(matches!(answer(&store, redeem(&record, "node-s", 0xab, NOW)), StorageAnswer::Redeemed(Ok(_))));
    let identity = smol::block_on(store.load_or_create_identity()).unwrap();
    let seed = identity.to_seed();
    let raw = Raw::new(&member);
    let values = raw.dump(&prefix);
    assert!(values.len() >= 4, "token, keyring, identity and the sealing check: {:?}", values.len());
    let secrets: [(&str, &[u8]); 6] = [
        ("the token secret", secret_token.secret().expose()),
        ("the whole token", secret_token.to_string().into_bytes().leak()),
        ("a keyring key", &[0xab; 32]),
        ("the identity seed", seed.as_slice()),
        ("a label", b"visible-label"),
        ("the records' JSON", b"\"keyring\""),
    ];
    for (key, value) in &values {
        for (what, secret) in &secrets {
            assert!(!value.windows(secret.len()).any(|w| w == *secret), "{what} is readable in the value of {key}");
        }
    }
    // Key names are not sealed: token ids and client ids are visible.
    assert!(values.iter().any(|(key, _)| key == &format!("{prefix}tokens/seal01")));
    assert!(values.iter().any(|(key, _)| key == &format!("{prefix}keyrings/node-s")));
}

#[test]
fn another_sealing_key_is_refused() {
    let member = member();
    let prefix = fresh_prefix("wrong-key");
    let store = store(&member, &prefix);
    let record = TokenRecord::new(token("wkey01"), None, 1);
    insert(&store, &record);
    let error = smol::block_on(EtcdStore::connect(config_with_key(&member, &prefix, key(8)))).unwrap_err();
    assert!(matches!(error, EtcdError::WrongSealingKey { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&prefix) && message.contains("sealing key"), "{message}");
    assert!(!message.contains(&"07".repeat(32)) && !message.contains(&"08".repeat(32)), "{message}");
    // Another fleet on the same etcd has its own key.
    let other = connect(config_with_key(&member, &fresh_prefix("other-fleet"), key(8)));
    assert_eq!(other.prefix().split('/').nth(2).map(|s| s.starts_with("other-fleet")), Some(true));
    // A value copied to another key does not open there.
    let raw = Raw::new(&member);
    let (_, sealed) = raw.dump(&format!("{prefix}tokens/wkey01")).remove(0);
    raw.put(&format!("{prefix}tokens/wkey02"), sealed);
    let moved = smol::block_on(store.answer(StorageRequest::LookupToken { token_id: token("wkey02").id() }));
    let message = moved.unwrap_err().to_string();
    assert!(message.contains("cannot be unsealed") && message.contains("tokens/wkey02"), "{message}");
}

#[test]
fn replicas_share_one_identity() {
    let member = member();
    let prefix = fresh_prefix("identity");
    let stores = replicas(&member, &prefix, 3);
    let pins: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .map(|s| scope.spawn(move || smol::block_on(s.load_or_create_identity()).unwrap().pin()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pins.iter().all(|p| *p == pins[0]), "one identity for the fleet: {pins:?}");
    let candidate = boarding::identity::ServerIdentity::from_seed([5; 32]);
    let kept = smol::block_on(stores[0].identity_or_insert(candidate)).unwrap();
    assert_eq!(kept.pin(), pins[0], "the first identity stays");
    let later = store(&member, &prefix);
    assert_eq!(smol::block_on(later.load_or_create_identity()).unwrap().pin(), pins[0]);
}

#[test]
fn unreachable_etcd_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config =
        boarding_etcd::EtcdConfig::new([endpoint.clone()], key(1)).with_connect_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let error = smol::block_on(EtcdStore::connect(config)).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, EtcdError::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains(&endpoint), "{error}");
    assert!(elapsed < Duration::from_secs(3), "failed after {elapsed:?}");
    println!("unreachable etcd refused in {elapsed:?}: {error}");
}

#[test]
fn requests_fail_when_etcd_goes_away() {
    let mut member = member();
    let prefix = fresh_prefix("gone");
    let store = connect(
        config(&member, &prefix)
            .with_request_timeout(Duration::from_millis(500))
            .with_operation_timeout(Duration::from_secs(2)),
    );
    let record = TokenRecord::new(token("gone01"), None, 1);
    insert(&store, &record);
    member.kill();
    let started = Instant::now();
    let failed = smol::block_on(store.answer(redeem(&record, "node-g", 1, NOW)));
    let elapsed = started.elapsed();
    let message = failed.unwrap_err().to_string();
    assert!(message.contains(member.endpoint()), "{message}");
    assert!(elapsed < Duration::from_secs(4), "failed after {elapsed:?}");
    assert!(smol::block_on(store.tokens()).is_err());
    println!("with etcd gone, a redemption failed after {elapsed:?}: {message}");
}

#[test]
fn revocations_are_seen_by_every_replica() {
    let member = member();
    let prefix = fresh_prefix("watch");
    let (a, b) = (store(&member, &prefix), store(&member, &prefix));
    let record = TokenRecord::new(token("watc01"), None, 0);
    insert(&a, &record);
    assert!(matches!(answer(&a, redeem(&record, "node-w", 1, NOW)), StorageAnswer::Redeemed(Ok(_))));
    let mut revocations = smol::block_on(b.watch_revocations()).unwrap();
    let next = |revocations: &mut boarding_etcd::Revocations| {
        smol::block_on(smol::future::or(async { revocations.next().await }, async {
            smol::Timer::after(Duration::from_secs(2)).await;
            None
        }))
    };
    let started = Instant::now();
    assert!(smol::block_on(a.revoke_client(client("node-w"))).unwrap());
    assert_eq!(next(&mut revocations), Some(Revocation::Client(client("node-w"))));
    println!("a revocation on one replica was seen on another after {:?}", started.elapsed());
    // Deleted behind the store's back (etcdctl del), or revoked: reported alike.
    Raw::new(&member).delete(&format!("{prefix}tokens/watc01"));
    assert_eq!(next(&mut revocations), Some(Revocation::Token(record.id())));
}

#[test]
fn user_and_password_authentication() {
    let member = member();
    let raw = Raw::new(&member);
    let mut client = raw.client();
    let password = "pw-4d1f0a9c";
    raw.block_on(async {
        client.user_add("root", password, None).await.unwrap();
        client.user_grant_role("root", "root").await.unwrap();
        client.auth_enable().await.unwrap();
    });
    let prefix = fresh_prefix("auth");
    let store = connect(config(&member, &prefix).with_user("root", zeroize::Zeroizing::new(password.to_owned())));
    insert(&store, &TokenRecord::new(token("auth01"), None, 1));
    assert_eq!(smol::block_on(store.tokens()).unwrap().len(), 1);
    let wrong = "not-the-password";
    let error = smol::block_on(EtcdStore::connect(
        config(&member, &prefix).with_user("root", zeroize::Zeroizing::new(wrong.to_owned())),
    ))
    .unwrap_err();
    assert!(matches!(error, EtcdError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains(wrong) && !message.contains(password), "{message}");
    assert!(message.contains("authentication") || message.contains("password"), "{message}");
    let anonymous = smol::block_on(EtcdStore::connect(config(&member, &prefix))).unwrap_err();
    assert!(matches!(anonymous, EtcdError::Unreachable { .. }), "{anonymous:?}");
}

#[test]
fn tls_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("boarding-etcd-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    let (server_cert, server_key) =
        issue(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = issue(vec!["boarding-gateway".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let tls = boarding_etcd::testing::MemberTls {
        cert: write("server.pem", &server_cert),
        key: write("server-key.pem", &server_key),
        client_ca: Some(write("ca.pem", &ca.pem())),
    };
    let member = boarding_etcd::testing::EtcdMember::start_with(&boarding_etcd::testing::MemberOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(member.endpoint().starts_with("https://"));
    let prefix = fresh_prefix("tls");
    let with_cert = boarding_etcd::EtcdTls::new(ca.pem())
        .with_client_identity(client_cert, zeroize::Zeroizing::new(client_key.into_bytes()));
    let store = connect(config(&member, &prefix).with_tls(with_cert));
    insert(&store, &TokenRecord::new(token("tls001"), None, 1));
    assert_eq!(smol::block_on(store.tokens()).unwrap().len(), 1);
    let without_cert = boarding_etcd::EtcdTls::new(ca.pem());
    let refused = smol::block_on(EtcdStore::connect(
        config(&member, &prefix).with_tls(without_cert).with_connect_timeout(Duration::from_secs(2)),
    ))
    .unwrap_err();
    assert!(matches!(refused, EtcdError::Unreachable { .. }), "{refused:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
