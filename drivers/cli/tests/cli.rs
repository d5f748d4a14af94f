//! The `boarding` command as an operator uses it: subprocesses, real files, loopback.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, GatewayProcess, boarding, ok, stderr, stdout};

#[test]
fn gateway_serve_to_agent_send() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gw = gw.to_str().unwrap();
    let gateway = GatewayProcess::start(dir.path().join("gw").as_path());
    assert!(gateway.pin.starts_with("sha256:"), "{}", gateway.pin);
    assert_eq!(ok(&["gateway", "pin", "--data-dir", gw]).trim(), gateway.pin, "the pin is stable");

    // Token commands work while the gateway runs on the same data directory.
    let token = ok(&[
        "token",
        "create",
        "--data-dir",
        gw,
        "--ttl",
        "1h",
        "--uses",
        "2",
        "--label",
        "env=test",
        "--description",
        "ci",
    ]);
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 23, "{token}");
    let (token_id, secret) = token.split_once('.').unwrap();

    let list = ok(&["token", "list", "--data-dir", gw]);
    assert!(list.contains(token_id) && list.contains("env=test") && list.contains("0/2"), "{list}");
    assert!(!list.contains(secret), "the secret never appears in the list");

    let a1 = dir.path().join("a1");
    let a1 = a1.to_str().unwrap();
    let addr = gateway.addr.as_str();
    // As the README does it: the token in a file, not on the command line.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let joined = ok(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--token-file",
        token_file.to_str().unwrap(),
        "--pin",
        &gateway.pin,
        "--id",
        "node-1",
        "--data-dir",
        a1,
    ]);
    assert!(joined.contains("joined gateway") && joined.contains("node-1"), "{joined}");
    assert_eq!(ok(&["agent", "send", "--gateway", addr, "--data-dir", a1, "hello gateway"]).trim(), "hello gateway");
    assert_eq!(ok(&["agent", "send", "--gateway", addr, "--data-dir", a1, "second"]).trim(), "second");

    // Joining twice from the same data dir is refused with advice.
    let again = boarding(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--token",
        &token,
        "--pin",
        &gateway.pin,
        "--id",
        "node-1",
        "--data-dir",
        a1,
    ]);
    assert!(!again.status.success() && stderr(&again).contains("agent send"), "{}", stderr(&again));

    // A wrong pin: both pins are shown.
    let a2 = dir.path().join("a2");
    let wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let o = boarding(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--token",
        &token,
        "--pin",
        wrong,
        "--id",
        "node-2",
        "--data-dir",
        a2.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains(&gateway.pin) && err.contains(wrong), "{err}");

    // The token's token is now 1/2 used; clients list shows node-1, never a key.
    assert!(ok(&["token", "list", "--data-dir", gw]).contains("1/2"));
    let clients = ok(&["clients", "list", "--data-dir", gw]);
    assert!(clients.contains("node-1") && clients.contains("yes") && clients.contains(token_id), "{clients}");

    // Revoke the client: its next send fails, says why (not a pin problem) and what to do.
    ok(&["clients", "revoke", "--data-dir", gw, "node-1"]);
    let o = boarding(&["agent", "send", "--gateway", addr, "--data-dir", a1, "hello?"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("join again") && err.contains("revoked"), "{err}");
    assert!(!err.contains("--pin"), "{err}");

    // Revoke the token: joining with it fails with "unknown token" advice.
    ok(&["token", "revoke", "--data-dir", gw, token_id]);
    let o = boarding(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--token",
        &token,
        "--pin",
        &gateway.pin,
        "--id",
        "node-3",
        "--data-dir",
        dir.path().join("a3").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("unknown token"), "{}", stderr(&o));

    // Sending without having joined.
    let o = boarding(&[
        "agent",
        "send",
        "--gateway",
        addr,
        "--data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
        "x",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("boarding agent join"), "{}", stderr(&o));

    // Graceful stop on SIGTERM.
    let GatewayProcess { mut child, .. } = gateway;
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the gateway stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unreachable_gateway_and_bad_arguments_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = boarding(&["token", "list", "--data-dir", dir.path().join("none").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("boarding gateway init"), "{}", stderr(&o));
    let o = boarding(&[
        "agent",
        "join",
        "--gateway",
        "127.0.0.1:1",
        "--token",
        "abcdef.0123456789abcdef",
        "--pin",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "--id",
        "n",
        "--data-dir",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("cannot connect to the gateway"), "{}", stderr(&o));
    let pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let o = boarding(&["agent", "join", "--token", "not-a-token", "--pin", pin, "--id", "n"]);
    assert!(!o.status.success() && stderr(&o).contains("--token"), "{}", stderr(&o));
    let o = boarding(&["agent", "join", "--pin", "x", "--id", "n"]);
    assert!(!o.status.success() && stderr(&o).contains("--pin"), "{}", stderr(&o));
    let gw = dir.path().join("gw");
    ok(&["gateway", "init", "--data-dir", gw.to_str().unwrap()]);
    let o = boarding(&["token", "create", "--data-dir", gw.to_str().unwrap(), "--ttl", "8000y"]);
    assert!(!o.status.success() && stderr(&o).contains("never"), "{}", stderr(&o));
}

#[test]
fn help_is_complete_on_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["demo"],
        &["gateway"],
        &["gateway", "init"],
        &["gateway", "serve"],
        &["gateway", "pin"],
        &["token"],
        &["token", "create"],
        &["token", "generate"],
        &["token", "list"],
        &["token", "delete"],
        &["token", "revoke"],
        &["token", "prune"],
        &["clients"],
        &["clients", "list"],
        &["clients", "revoke"],
        &["agent"],
        &["agent", "join"],
        &["agent", "send"],
        &["completions"],
        &["man"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = ok(&args);
        assert!(help.contains("Usage: boarding"), "{args:?}: {help}");
        assert!(help.lines().count() > 4, "{args:?}: {help}");
    }
    let serve = ok(&["gateway", "serve", "--help"]);
    for option in ["--listen", "--data-dir", "--handshake-timeout", "--max-handshakes"] {
        assert!(serve.contains(option), "{serve}");
    }
    let create = ok(&["token", "create", "--help"]);
    for option in ["--ttl", "--uses", "--label", "--description", "--print-join-command", "--output"] {
        assert!(create.contains(option), "{create}");
    }
    let join = ok(&["agent", "join", "--help"]);
    for option in ["--gateway", "--token", "--token-file", "--pin", "--id", "--data-dir", "BOARDING_TOKEN"] {
        assert!(join.contains(option), "{join}");
    }
}

#[test]
fn demo_runs_every_step() {
    let o = boarding(&["demo"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for expected in [
        "pin: sha256:",
        "token: ",
        "joined in",
        "gateway says \"welcome, node-1\"",
        "got back \"hello from node-1\"",
        "resumed in",
        "token has no uses left",
        "does not match any pin",
        "join again",
        "gateway stopped",
        "demo finished in",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let _ = BIN;
}
