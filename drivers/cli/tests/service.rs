//! `boarding gateway serve` as a service: real processes, a real redb file, the admin
//! socket. Loads target 127.0.0.1 only and are bounded in count and time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::BootstrapToken;
use boarding_smol::{Agent, MemoryKeyringStore};
use common::{BIN, GatewayProcess, boarding, ok, stderr, stdout};

/// Sends raw lines to the admin socket and returns the answers, one per line.
fn admin_lines(socket: &Path, lines: &[&[u8]]) -> Vec<serde_json::Value> {
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    lines
        .iter()
        .map(|line| {
            // The gateway may answer and hang up before an over-long line is all written.
            let _ = writer.write_all(line).and_then(|()| writer.write_all(b"\n"));
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
        })
        .collect()
}

#[test]
fn operator_commands_answer_within_a_second_under_a_join_load() {
    const AGENTS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let gw = gw.to_str().unwrap();
    let token: BootstrapToken = ok(&["token", "create", "--data-dir", gw, "--uses", "0"]).trim().parse().unwrap();
    let pin: Pin = gateway.pin.parse().unwrap();
    let addr = gateway.addr.clone();

    // 50 agents join at once, in another thread, while the operator works.
    let load = std::thread::spawn(move || {
        smol::block_on(async {
            let tasks: Vec<_> = (0..AGENTS)
                .map(|i| {
                    let (addr, token) = (addr.clone(), token.clone());
                    smol::spawn(async move {
                        let id = ClientId::new(&format!("load-{i}")).unwrap();
                        let keyrings = MemoryKeyringStore::new();
                        let session = Agent::default().join(&addr, token, &[pin], id, &keyrings).await?;
                        session.close().await
                    })
                })
                .collect();
            let mut failures = Vec::new();
            for task in tasks {
                if let Err(e) = task.await {
                    failures.push(e.to_string());
                }
            }
            failures
        })
    });

    let mut slowest = Duration::ZERO;
    let mut rounds = 0;
    while !load.is_finished() || rounds < 3 {
        for args in [
            &["token", "list", "--data-dir", gw][..],
            &["clients", "list", "--data-dir", gw],
            &["token", "create", "--data-dir", gw, "--ttl", "10m"],
            &["gateway", "pin", "--data-dir", gw],
        ] {
            let started = Instant::now();
            let out = boarding(args);
            let took = started.elapsed();
            assert!(out.status.success(), "boarding {args:?} failed under load: {}", stderr(&out));
            assert!(took < Duration::from_secs(1), "boarding {args:?} took {took:?} under load");
            slowest = slowest.max(took);
        }
        rounds += 1;
        assert!(rounds < 500, "bounded");
    }
    let failures = load.join().unwrap();
    assert!(failures.is_empty(), "every agent joined: {failures:?}");
    let clients = ok(&["clients", "list", "--data-dir", gw]);
    assert_eq!(clients.matches("load-").count(), AGENTS, "{clients}");
    // Revoking through the running gateway.
    let revoked = ok(&["clients", "revoke", "--data-dir", gw, "load-7"]);
    assert!(revoked.contains("load-7 revoked"), "{revoked}");
    eprintln!("{rounds} rounds of operator commands during {AGENTS} joins; slowest {slowest:?}");
    gateway.kill();
}

#[test]
fn the_admin_socket_validates_every_request_and_refuses_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let socket = gw.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is private");
    let before = ok(&["token", "list", "--data-dir", gw.to_str().unwrap()]);

    let answers = admin_lines(
        &socket,
        &[
            b"not json",
            br#"{"v":2,"request":{"op":"token_list"}}"#,
            br#"{"v":1,"request":{"op":"drop_everything"}}"#,
            br#"{"v":1,"request":{"op":"token_revoke","id":"NOT-AN-ID"}}"#,
            br#"{"v":1,"request":{"op":"token_create","expires_at":null,"max_uses":1,"description":"x","extra":true}}"#,
            br#"{"v":1,"request":{"op":"token_create","expires_at":null,"max_uses":1,"labels":{"":"empty key"}}}"#,
            br#"{"v":1,"request":{"op":"pin"}}"#,
        ],
    );
    let kinds: Vec<_> = answers.iter().map(|a| a["error"]["kind"].as_str().unwrap_or("ok").to_owned()).collect();
    assert_eq!(
        kinds,
        ["bad_request", "unsupported_version", "bad_request", "bad_request", "bad_request", "bad_request", "ok"],
        "{answers:#?}"
    );
    assert_eq!(answers[6]["ok"]["pin"].as_str(), Some(gateway.pin.as_str()));
    assert_eq!(ok(&["token", "list", "--data-dir", gw.to_str().unwrap()]), before, "nothing changed");

    // An over-long line is refused, and the connection closed.
    let long = vec![b'x'; 70_000];
    let answers = admin_lines(&socket, &[&long]);
    assert_eq!(answers[0]["error"]["kind"], "bad_request", "{answers:?}");

    // A peer of another user is refused by its credentials even when the file modes
    // would let it in (only checkable as root, which can run a command as nobody).
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&gw, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = Command::new(BIN)
            .args(["token", "list", "--data-dir"])
            .arg(&gw)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&gw, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(stderr(&out).contains("Forbidden"), "{}", stderr(&out));
    } else {
        eprintln!("not root: the other-user check is covered by the socket's and directory's modes only");
    }
    gateway.kill();
}

#[test]
fn a_database_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gw_str = gw.to_str().unwrap();
    ok(&["gateway", "init", "--data-dir", gw_str]);
    let db = gw.join("gateway.redb");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["gateway", "serve", "--listen", "127.0.0.1:0", "--data-dir", gw_str][..],
        &["token", "list", "--data-dir", gw_str],
    ] {
        let out = boarding(args);
        assert!(!out.status.success(), "boarding {args:?} accepted a world-readable database");
        let err = stderr(&out);
        assert!(err.contains("chmod 600") && err.contains("gateway.redb"), "{err}");
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&["token", "list", "--data-dir", gw_str]);
}

#[test]
fn an_in_memory_gateway_serves_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start_with(&gw, &["--memory", "--threads", "1"]);
    let gw_str = gw.to_str().unwrap();
    let token = ok(&["token", "create", "--data-dir", gw_str]);
    let a = dir.path().join("a");
    let joined = ok(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--token",
        token.trim(),
        "--pin",
        &gateway.pin,
        "--id",
        "mem-1",
        "--data-dir",
        a.to_str().unwrap(),
    ]);
    assert!(joined.contains("mem-1"), "{joined}");
    assert!(ok(&["clients", "list", "--data-dir", gw_str]).contains("mem-1"));
    assert!(!gw.join("gateway.redb").exists(), "nothing on disk but the admin socket");
    gateway.kill();
}
