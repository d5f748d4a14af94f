//! The redb store on its own: file permissions, locking between holders, records that
//! outlive the store, and files in a file format it no longer reads.

use std::time::Duration;

use boarding::identity::ServerIdentity;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{GATEWAY_DB, RedbStore, Store, StoreError, os_rng};

#[cfg(unix)]
#[test]
fn data_dir_and_file_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("gw");
    let store = RedbStore::gateway_in(&data_dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(store.path(), data_dir.join(GATEWAY_DB));
}

#[test]
fn a_database_or_directory_open_to_others_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("gw");
    drop(RedbStore::gateway_in(&data_dir).unwrap());
    let db = data_dir.join(GATEWAY_DB);
    let set =
        |p: &std::path::Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();

    set(&db, 0o644);
    let err = RedbStore::gateway_in(&data_dir).unwrap_err();
    assert!(matches!(err, StoreError::NotPrivate { mode: 0o644, .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("chmod 600") && message.contains(&db.display().to_string()), "{message}");
    assert!(RedbStore::open(&db).is_err(), "a held open is refused too");
    set(&db, 0o600);

    set(&data_dir, 0o755);
    let err = RedbStore::gateway_in(&data_dir).unwrap_err();
    assert!(matches!(err, StoreError::NotPrivate { mode: 0o755, .. }), "{err:?}");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    set(&data_dir, 0o700);
    assert!(RedbStore::gateway_in(&data_dir).is_ok(), "fixed modes open again");
}

#[test]
fn records_outlive_the_store_and_the_identity_is_kept() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let token = BootstrapToken::generate(&mut os_rng());
        let first = ServerIdentity::generate(&mut os_rng());
        // A data directory of the store's own making (mode 0700).
        let data_dir = dir.path().join("gw");
        {
            let store = RedbStore::gateway_in(&data_dir).unwrap();
            let kept = store.identity_or_insert(first.clone()).await.unwrap();
            assert_eq!(kept.pin(), first.pin());
            assert!(store.insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap());
            assert!(!store.insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap(), "ids are unique");
        }
        let store = RedbStore::open(data_dir.join(GATEWAY_DB)).unwrap();
        let other = ServerIdentity::generate(&mut os_rng());
        assert_eq!(store.identity_or_insert(other).await.unwrap().pin(), first.pin(), "the first identity stays");
        let tokens = store.tokens().await.unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].id(), token.id());
        assert!(store.revoke_token(token.id()).await.unwrap());
        assert!(!store.revoke_token(token.id()).await.unwrap());
    });
}

#[test]
fn a_held_store_locks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(GATEWAY_DB);
    let shared = RedbStore::open_shared(&path).unwrap().with_lock_wait(Duration::from_millis(50));
    let held = RedbStore::open(&path).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Locked { path: locked }) => assert_eq!(locked, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    smol::block_on(async {
        match shared.tokens().await {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        assert!(shared.tokens().await.unwrap().is_empty(), "the file is free again");
    });
}

#[test]
fn a_file_in_redb_2_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(GATEWAY_DB);
    {
        let db = redb2::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb2::TableDefinition::<&str, &[u8]>::new("tokens")).unwrap();
        txn.commit().unwrap();
    }
    // Private, as the store requires, so the format is what gets refused.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = std::fs::read(&path).unwrap();
    for result in [RedbStore::open(&path), RedbStore::open_shared(&path)] {
        match result {
            Err(e @ StoreError::UnsupportedFormat { .. }) => {
                let StoreError::UnsupportedFormat { path: reported, version } = &e else { unreachable!() };
                assert_eq!(reported, &path);
                assert_eq!(*version, 2);
                let message = e.to_string();
                assert!(message.contains("file format v2") && message.contains("upgrade"), "{message}");
            }
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "the old file is left as it was");
}
