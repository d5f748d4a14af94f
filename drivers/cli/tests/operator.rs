//! The `boarding` command in kubeadm's habits, as an operator and a script use it:
//! exit codes by cause, TTLs, chosen tokens, several deletions, JSON and YAML, token
//! files and stdin, refusing a directory with no gateway, `gateway init`, completions
//! and man pages, and no secret in any error. Real processes, loopback only, every run
//! bounded in time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{RedbStore, Store};
use common::{BIN, GatewayProcess, ok, stderr, stdout};

const WRONG_PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// How a test runs `boarding`: arguments, stdin, extra environment.
struct Run {
    args: Vec<String>,
    stdin: Option<String>,
    env: Vec<(String, String)>,
}

impl Run {
    fn new(args: &[&str]) -> Self {
        Self { args: args.iter().map(|a| (*a).to_owned()).collect(), stdin: None, env: Vec::new() }
    }

    fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self
    }

    /// Runs to completion; a run still going after 60 s is killed.
    fn output(&self) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(&self.args)
            .env_remove("BOARDING_TOKEN")
            .env_remove("BOARDING_LOG")
            .env_remove("RUST_LOG")
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        if let Some(text) = &self.stdin {
            let mut pipe = child.stdin.take().unwrap();
            // The command may stop reading early (a usage error); that is its answer.
            let _ = pipe.write_all(text.as_bytes());
        }
        let pid = child.id().to_string();
        let (done, watched) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if watched.recv_timeout(Duration::from_secs(60)) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
        let out = child.wait_with_output().unwrap();
        drop(done);
        out
    }

    /// Runs, asserting the exit code; returns the output.
    fn code(&self, want: i32) -> Output {
        let out = self.output();
        assert_eq!(
            out.status.code(),
            Some(want),
            "boarding {:?}:\nstdout: {}\nstderr: {}",
            self.args,
            stdout(&out),
            stderr(&out)
        );
        out
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// A gateway directory with an identity and no gateway running.
fn init(dir: &Path) {
    Run::new(&["gateway", "init", "--data-dir", path(dir)]).code(0);
}

#[test]
fn exit_codes_by_cause() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let (gw, addr, pin) = (path(&gw), gateway.addr.as_str(), gateway.pin.as_str());
    let agent = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let token = |uses: &str| stdout(&Run::new(&["token", "create", "--data-dir", gw, "--uses", uses]).code(0));

    // 0: a join, a send.
    let a1 = agent("a1");
    let t1 = token("1");
    Run::new(&["agent", "join", "--gateway", addr, "--pin", pin, "--token", "-", "--id", "n1", "--data-dir", &a1])
        .stdin(&t1)
        .code(0);
    Run::new(&["agent", "send", "--gateway", addr, "--data-dir", &a1, "hi"]).code(0);

    // 2: usage.
    Run::new(&["token", "list", "--no-such-flag"]).code(2);
    Run::new(&["token", "create", "--data-dir", gw, "--ttl", "soon"]).code(2);
    Run::new(&["agent", "join", "--gateway", addr, "--pin", pin, "--token", "abc.def", "--id", "x"]).code(2);
    Run::new(&["--log", "boarding=loud", "token", "list", "--data-dir", gw]).code(2);

    // 4: refused: a spent token, a taken client id, a wrong pin, a revoked client.
    let spent = Run::new(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--pin",
        pin,
        "--token",
        "-",
        "--id",
        "n2",
        "--data-dir",
        &agent("a2"),
    ])
    .stdin(&t1)
    .code(4);
    assert!(stderr(&spent).contains("no uses left"), "{}", stderr(&spent));
    let t2 = token("0");
    Run::new(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--pin",
        pin,
        "--token",
        "-",
        "--id",
        "n1",
        "--data-dir",
        &agent("a3"),
    ])
    .stdin(&t2)
    .code(4);
    Run::new(&[
        "agent",
        "join",
        "--gateway",
        addr,
        "--pin",
        WRONG_PIN,
        "--token",
        "-",
        "--id",
        "n4",
        "--data-dir",
        &agent("a4"),
    ])
    .stdin(&t2)
    .code(4);
    Run::new(&["clients", "revoke", "--data-dir", gw, "n1"]).code(0);
    let revoked = Run::new(&["agent", "send", "--gateway", addr, "--data-dir", &a1, "still there?"]).code(4);
    let err = stderr(&revoked);
    // Said as what it is: TLS checked the gateway's key, so it is not a pin problem.
    assert!(err.contains("no longer knows client n1") && err.contains("join again"), "{err}");
    assert!(!err.contains("--pin") && !err.contains("MAC did not verify"), "{err}");

    // 5: local data.
    Run::new(&["token", "list", "--data-dir", &agent("no-gateway")]).code(5);
    Run::new(&["agent", "send", "--gateway", addr, "--data-dir", &agent("never-joined"), "x"]).code(5);
    Run::new(&["agent", "join", "--gateway", addr, "--pin", pin, "--token", "-", "--id", "n9", "--data-dir", &a1])
        .stdin(&t2)
        .code(5);

    // 1: anything else, e.g. deleting a token that does not exist.
    Run::new(&["token", "delete", "--data-dir", gw, "zzzzzz"]).code(1);

    // 3: unreachable (nothing listens; the agent retries, then gives up).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = Run::new(&[
        "agent",
        "join",
        "--gateway",
        &closed_addr,
        "--pin",
        pin,
        "--token",
        "-",
        "--id",
        "n5",
        "--data-dir",
        &agent("a5"),
    ])
    .stdin(&t2)
    .code(3);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    gateway.kill();

    // The codes are documented where a script author looks.
    let help = stdout(&Run::new(&["--help"]).code(0));
    for line in ["Exit status:", "2  usage", "3  the gateway is unreachable", "4  refused", "5  local data"] {
        assert!(help.contains(line), "{line:?} missing from --help:\n{help}");
    }
}

#[test]
fn a_gateway_that_never_answers_times_out_with_code_3() {
    // Accepts TCP and then says nothing: the agent's handshake deadline (10 s) passes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(15));
        drop(stream);
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Run::new(&[
        "agent",
        "join",
        "--gateway",
        &addr,
        "--pin",
        WRONG_PIN,
        "--token",
        "-",
        "--id",
        "slow",
        "--data-dir",
        path(&dir.path().join("a")),
    ])
    .stdin("abcdef.0123456789abcdef\n")
    .code(3);
    assert!(stderr(&out).contains("did not complete within"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(held);
}

#[test]
fn ttl_takes_go_durations_zero_means_never_and_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    init(&gw);
    let gw = path(&gw);
    for (ttl, secs) in [("24h0m0s", 86_400), ("1h30m", 5_400), ("90s", 90), ("1.5h", 5_400), ("7d", 604_800)] {
        let before = now();
        let created = json(&Run::new(&["token", "create", "--data-dir", gw, "--ttl", ttl, "-o", "json"]).code(0));
        let at = created["expires_at"].as_u64().unwrap();
        assert!(at >= before + secs && at <= now() + secs + 1, "{ttl}: {created}");
        assert!(created["expires"].as_str().unwrap().ends_with('Z'), "{created}");
    }
    for ttl in ["0", "0s", "never"] {
        let created = json(&Run::new(&["token", "create", "--data-dir", gw, "--ttl", ttl, "-o", "json"]).code(0));
        assert!(created["expires_at"].is_null() && created["expires"].is_null(), "{ttl}: {created}");
    }
    let before = json(&Run::new(&["token", "list", "--data-dir", gw, "--all", "-o", "json"]).code(0));
    for ttl in ["8000y", "100000000h", "99999999999999999999999999999h", "-1h", "1x"] {
        let out = Run::new(&["token", "create", "--data-dir", gw, &format!("--ttl={ttl}")]).code(2);
        assert!(stderr(&out).contains("--ttl"), "{ttl}: {}", stderr(&out));
    }
    let out = Run::new(&["token", "create", "--data-dir", gw, "--ttl", "8000y"]).code(2);
    assert!(stderr(&out).contains("9999-12-31") && stderr(&out).contains("never"), "{}", stderr(&out));
    let after = json(&Run::new(&["token", "list", "--data-dir", gw, "--all", "-o", "json"]).code(0));
    assert_eq!(before, after, "a refused TTL stores nothing");
}

#[test]
fn token_list_never_panics_on_any_stored_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    init(&gw);
    // Records another tool (or an older version) may have stored: expiries past what
    // a date can show, up to the largest number.
    smol::block_on(async {
        let store = RedbStore::open(gw.join(boarding_smol::GATEWAY_DB)).unwrap();
        for (token, at) in [("far000.0123456789abcdef", u64::MAX), ("far001.0123456789abcdef", 253_402_300_800)] {
            let token: BootstrapToken = token.parse().unwrap();
            assert!(store.insert_token(TokenRecord::new(token, Some(at), 0)).await.unwrap());
        }
    });
    let gw = path(&gw);
    let table = stdout(&Run::new(&["token", "list", "--data-dir", gw]).code(0));
    assert!(table.contains("far000") && table.contains("far001") && table.contains("after year 9999"), "{table}");
    let listed = json(&Run::new(&["token", "list", "--data-dir", gw, "-o", "json"]).code(0));
    let far = listed.as_array().unwrap().iter().find(|t| t["id"] == "far000").unwrap();
    assert_eq!(far["expires_at"].as_u64(), Some(u64::MAX), "{far}");
    assert!(far["expires"].is_null(), "{far}");
    Run::new(&["token", "list", "--data-dir", gw, "-o", "yaml"]).code(0);
    Run::new(&["token", "delete", "--data-dir", gw, "far000", "far001"]).code(0);
}

#[test]
fn chosen_tokens_generate_and_delete_several() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    init(&gw);
    let gw_str = path(&gw);
    // `generate` prints a valid token and touches nothing.
    let generated = stdout(&Run::new(&["token", "generate"]).code(0)).trim().to_owned();
    assert!(BootstrapToken::is_valid(&generated), "{generated}");
    assert_ne!(generated, stdout(&Run::new(&["token", "generate"]).code(0)).trim());
    assert!(
        json(&Run::new(&["token", "list", "--data-dir", gw_str, "-o", "json"]).code(0)).as_array().unwrap().is_empty()
    );

    // `create TOKEN` stores that token, shown back once; `create -` reads it from stdin.
    let out = Run::new(&["token", "create", "--data-dir", gw_str, &generated, "--label", "k=v"]).code(0);
    assert_eq!(stdout(&out).trim(), generated);
    let second = stdout(&Run::new(&["token", "generate"]).code(0));
    let out = Run::new(&["token", "create", "--data-dir", gw_str, "-", "-o", "json"]).stdin(&second).code(0);
    assert_eq!(json(&out)["token"].as_str(), Some(second.trim()));
    // The same id again is refused, and the first token is untouched.
    let out = Run::new(&["token", "create", "--data-dir", gw_str, &generated]).code(1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let (id1, secret1) = generated.split_once('.').unwrap();
    let (id2, _) = second.trim().split_once('.').unwrap();
    let listed = stdout(&Run::new(&["token", "list", "--data-dir", gw_str]).code(0));
    assert!(listed.contains(id1) && listed.contains("k=v") && listed.contains(id2), "{listed}");

    // Delete several at once: one by id, one by whole token. The secret is not echoed.
    let third = stdout(&Run::new(&["token", "create", "--data-dir", gw_str]).code(0));
    let (id3, _) = third.trim().split_once('.').unwrap();
    let out = Run::new(&["token", "delete", "--data-dir", gw_str, id2, &generated]).code(0);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains(id1) && said.contains(id2) && !said.contains(secret1), "{said}");
    let listed = stdout(&Run::new(&["token", "list", "--data-dir", gw_str]).code(0));
    assert!(!listed.contains(id1) && !listed.contains(id2) && listed.contains(id3), "{listed}");

    // A bad argument stops everything before anything is deleted; `revoke` is the same
    // command; a missing one is reported after the others are deleted.
    let out = Run::new(&["token", "revoke", "--data-dir", gw_str, id3, "not-an-id"]).code(2);
    assert!(stderr(&out).contains("TOKEN argument 2"), "{}", stderr(&out));
    assert!(stdout(&Run::new(&["token", "list", "--data-dir", gw_str]).code(0)).contains(id3));
    let out = Run::new(&["token", "revoke", "--data-dir", gw_str, "zzzzzz", id3]).code(1);
    assert!(stderr(&out).contains("no token zzzzzz") && stdout(&out).contains(id3), "{}", stderr(&out));
}

#[test]
fn a_chosen_token_goes_through_a_running_gateway_and_a_taken_id_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let chosen = "abcdef.0123456789abcdef";
    let out = Run::new(&["token", "create", "--data-dir", path(&gw), chosen]).code(0);
    assert_eq!(stdout(&out).trim(), chosen);
    let listed = stdout(&Run::new(&["token", "list", "--data-dir", path(&gw)]).code(0));
    assert!(listed.contains("abcdef") && !listed.contains("0123456789abcdef"), "{listed}");
    // The same id again, with another secret: refused, and the secret never shown.
    let out = Run::new(&["token", "create", "--data-dir", path(&gw), "abcdef.fedcba9876543210"]).code(1);
    let err = stderr(&out);
    assert!(err.contains("already exists") && !err.contains("fedcba9876543210"), "{err}");
    gateway.kill();
}

#[test]
fn expired_tokens_are_hidden_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    init(&gw);
    let gw = path(&gw);
    let short = stdout(&Run::new(&["token", "create", "--data-dir", gw, "--ttl", "1s"]).code(0));
    let long = stdout(&Run::new(&["token", "create", "--data-dir", gw, "--ttl", "1h"]).code(0));
    let (short_id, long_id) = (&short[..6], &long[..6]);
    std::thread::sleep(Duration::from_millis(2_100));
    let out = Run::new(&["token", "list", "--data-dir", gw]).code(0);
    assert!(!stdout(&out).contains(short_id) && stdout(&out).contains(long_id), "{}", stdout(&out));
    assert!(stderr(&out).contains("1 expired token(s) hidden"), "{}", stderr(&out));
    let all = json(&Run::new(&["token", "list", "--data-dir", gw, "--all", "-o", "json"]).code(0));
    let states: Vec<(&str, &str)> =
        all.as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap(), t["state"].as_str().unwrap())).collect();
    assert!(states.contains(&(short_id, "expired")) && states.contains(&(long_id, "active")), "{states:?}");
    let pruned = stdout(&Run::new(&["token", "prune", "--data-dir", gw]).code(0));
    assert!(pruned.contains(short_id) && !pruned.contains(long_id), "{pruned}");
    let all = json(&Run::new(&["token", "list", "--data-dir", gw, "--all", "-o", "json"]).code(0));
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert!(stdout(&Run::new(&["token", "prune", "--data-dir", gw]).code(0)).contains("no expired tokens"));
}

#[test]
fn json_and_yaml_output() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let gw = path(&gw);
    let created = json(
        &Run::new(&[
            "token",
            "create",
            "--data-dir",
            gw,
            "--uses",
            "3",
            "--label",
            "role=worker",
            "--description",
            "ci",
            "--print-join-command",
            "--gateway",
            &gateway.addr,
            "-o",
            "json",
        ])
        .code(0),
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let id = &token[..6];
    assert_eq!(created["id"], id);
    assert_eq!(created["max_uses"], 3);
    assert_eq!(created["use_count"], 0);
    assert_eq!(created["labels"]["role"], "worker");
    assert_eq!(created["description"], "ci");
    assert_eq!(created["state"], "active");
    assert!(created["join_command"].as_str().unwrap().contains(&gateway.pin), "{created}");

    let listed = json(&Run::new(&["token", "list", "--data-dir", gw, "-o", "json"]).code(0));
    let row = &listed.as_array().unwrap()[0];
    assert_eq!(row["id"], id);
    assert!(row.get("token").is_none() && !listed.to_string().contains(&token[7..]), "no secret in a list: {listed}");
    for field in ["expires_at", "expires", "max_uses", "use_count", "labels", "description", "state"] {
        assert!(row.get(field).is_some(), "{field} missing: {row}");
    }

    Run::new(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--pin",
        &gateway.pin,
        "--token",
        "-",
        "--id",
        "node-7",
        "--data-dir",
        path(&dir.path().join("a")),
    ])
    .stdin(&token)
    .code(0);
    let clients = json(&Run::new(&["clients", "list", "--data-dir", gw, "-o", "json"]).code(0));
    let client = &clients.as_array().unwrap()[0];
    assert_eq!(client["client_id"], "node-7");
    assert_eq!(client["token_id"], id);
    assert_eq!(client["confirmed"], true);
    assert_eq!(client["labels"]["role"], "worker");
    assert!(client["created_at"].as_u64().is_some() && client["joined"].as_str().unwrap().ends_with('Z'));

    // YAML says the same as JSON.
    for args in [&["token", "list"][..], &["clients", "list"]] {
        let mut yaml_args = args.to_vec();
        yaml_args.extend(["--data-dir", gw, "-o", "yaml"]);
        let yaml: serde_json::Value = serde_norway::from_slice(&Run::new(&yaml_args).code(0).stdout).unwrap();
        let mut json_args = args.to_vec();
        json_args.extend(["--data-dir", gw, "-o", "json"]);
        assert_eq!(yaml, json(&Run::new(&json_args).code(0)), "{args:?}");
    }
    let created: serde_json::Value =
        serde_norway::from_slice(&Run::new(&["token", "create", "--data-dir", gw, "-o", "yaml"]).code(0).stdout)
            .unwrap();
    assert!(BootstrapToken::is_valid(created["token"].as_str().unwrap()), "{created}");
    gateway.kill();
}

#[test]
fn agents_take_the_token_from_a_file_stdin_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let gw = path(&gw);
    let (addr, pin) = (gateway.addr.as_str(), gateway.pin.as_str());
    let join = |id: &str, extra: &[&str]| {
        let agent_dir = dir.path().join(id);
        let mut args = vec!["agent", "join", "--gateway", addr, "--pin", pin, "--id", id];
        args.extend(["--data-dir", agent_dir.to_str().unwrap()]);
        args.extend(extra);
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
    };
    let new_token = || stdout(&Run::new(&["token", "create", "--data-dir", gw]).code(0));

    // A file (with its final newline, mode 0600 as an operator would write it).
    let file = dir.path().join("token");
    std::fs::write(&file, new_token()).unwrap();
    let args = join("by-file", &["--token-file", path(&file)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(stdout(&Run::new(&args).code(0)).contains("joined gateway"));

    // Stdin, as `--token -` and as `--token-file -`.
    for (id, flag) in [("by-stdin", "--token"), ("by-stdin-file", "--token-file")] {
        let args = join(id, &[flag, "-"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Run::new(&args).stdin(&new_token()).code(0);
    }

    // The environment, and an explicit --token-file over an exported variable.
    let token = new_token();
    let args = join("by-env", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Run::new(&args).env(&[("BOARDING_TOKEN", token.trim())]).code(0);
    std::fs::write(&file, new_token()).unwrap();
    let args = join("file-over-env", &["--token-file", path(&file)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Run::new(&args).env(&[("BOARDING_TOKEN", "not-a-token")]).code(0);

    // No token at all, an empty file, a missing file: usage errors that say what to pass.
    let args = join("none", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(stderr(&Run::new(&args).code(2)).contains("--token-file"));
    std::fs::write(&file, "").unwrap();
    let args = join("empty", &["--token-file", path(&file)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(stderr(&Run::new(&args).code(2)).contains("empty"));
    let args = join("missing", &["--token-file", path(&dir.path().join("nope"))]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Run::new(&args).code(2);

    let clients = stdout(&Run::new(&["clients", "list", "--data-dir", gw]).code(0));
    for id in ["by-file", "by-stdin", "by-stdin-file", "by-env", "file-over-env"] {
        assert!(clients.contains(id), "{id}: {clients}");
    }
    gateway.kill();
}

#[test]
fn the_printed_join_command_runs_as_pasted_and_keeps_the_secret_off_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start(&gw);
    let out =
        Run::new(&["token", "create", "--data-dir", path(&gw), "--print-join-command", "--gateway", &gateway.addr])
            .code(0);
    let command = stdout(&out).trim().to_owned();
    let (feed, join) = command.split_once(" | ").unwrap();
    let token = feed.strip_prefix("echo ").unwrap();
    assert!(BootstrapToken::is_valid(token), "{command}");
    let (_, secret) = token.split_once('.').unwrap();
    assert!(join.starts_with("boarding agent join ") && !join.contains(secret), "{join}");
    assert!(join.contains(&gateway.pin) && join.contains(&gateway.addr) && join.contains("--token -"), "{join}");

    // Pasted into a shell (with `boarding` on PATH), plus where to keep the keyring.
    let bin_dir = Path::new(BIN).parent().unwrap();
    let shell_path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let agent_dir = dir.path().join("agent");
    let pasted = format!("{command} --id pasted --data-dir {}", agent_dir.display());
    let out =
        Command::new("sh").args(["-c", &pasted]).env("PATH", shell_path).env_remove("BOARDING_TOKEN").output().unwrap();
    assert!(out.status.success(), "{pasted}: {}", stderr(&out));
    assert!(stdout(&out).contains("as pasted"), "{}", stdout(&out));

    // Without --gateway, the address is a placeholder the shell does not misread.
    let out = Run::new(&["token", "create", "--data-dir", path(&gw), "--print-join-command"]).code(0);
    assert!(stdout(&out).contains("--gateway HOST:PORT") && stderr(&out).contains("HOST:PORT"), "{}", stdout(&out));
    gateway.kill();
}

#[test]
fn a_directory_without_a_gateway_is_refused_and_gateway_init_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("gw-typo");
    let typo_str = path(&typo);
    for args in [
        &["token", "create", "--data-dir", typo_str][..],
        &["token", "list", "--data-dir", typo_str],
        &["token", "delete", "--data-dir", typo_str, "abcdef"],
        &["token", "prune", "--data-dir", typo_str],
        &["clients", "list", "--data-dir", typo_str],
        &["clients", "revoke", "--data-dir", typo_str, "node-1"],
        &["gateway", "pin", "--data-dir", typo_str],
    ] {
        let out = Run::new(args).code(5);
        let err = stderr(&out);
        assert!(err.contains("no gateway in") && err.contains("boarding gateway init --data-dir"), "{args:?}: {err}");
        assert!(!typo.join(boarding_smol::GATEWAY_DB).exists(), "{args:?} created a gateway");
    }

    // `gateway init` creates the identity once; again, it changes nothing.
    let out = Run::new(&["gateway", "init", "--data-dir", typo_str]).code(0);
    let pin = stdout(&out).trim().to_owned();
    assert!(pin.starts_with("sha256:") && stderr(&out).contains("created a new gateway identity"), "{}", stderr(&out));
    let again = Run::new(&["gateway", "init", "--data-dir", typo_str]).code(0);
    assert_eq!(stdout(&again).trim(), pin);
    assert!(stderr(&again).contains("already holds a gateway identity"), "{}", stderr(&again));
    assert_eq!(ok(&["gateway", "pin", "--data-dir", typo_str]).trim(), pin);
    Run::new(&["token", "list", "--data-dir", typo_str]).code(0);

    // `gateway serve` on the initialised directory loads that identity.
    let gateway = GatewayProcess::start(&typo);
    assert_eq!(gateway.pin, pin);
    let running = Run::new(&["gateway", "init", "--data-dir", typo_str]).code(0);
    assert_eq!(stdout(&running).trim(), pin);
    gateway.kill();

    // `gateway serve` on a fresh directory still creates one, and says so.
    let fresh = dir.path().join("fresh");
    let mut child = Command::new(BIN)
        .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--data-dir", path(&fresh)])
        .env_remove("BOARDING_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("created a new gateway identity") && first.contains("gateway init"), "{first}");
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&Run::new(&["completions", shell]).code(0));
        assert!(script.len() > 1_000 && script.contains("boarding"), "{shell}: {script}");
        assert!(script.contains("print-join-command"), "{shell} completes the new flags");
    }
    Run::new(&["completions", "tcsh"]).code(2);
    let page = stdout(&Run::new(&["man"]).code(0));
    assert!(page.contains(".TH boarding 1") && page.contains("Exit status"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    Run::new(&["man", "--dir", path(&out_dir)]).code(0);
    for page in ["boarding.1", "boarding-token-create.1", "boarding-agent-join.1", "boarding-gateway-init.1"] {
        let text = std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn no_secret_characters_in_any_error() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    init(&gw);
    let gw = path(&gw);
    let file = dir.path().join("token");
    // Each mistyped token keeps the recognisable run "q7x9w2k4" of its secret.
    let mistyped = [
        "abcdef.q7x9w2k4abcdefg",    // 15 characters of secret
        "abcdef.q7x9w2k4abcdefghi",  // 17
        "abcdef.Q7X9W2K4ABCDEFGH",   // upper case
        "abcdefq7x9w2k4abcdefgh",    // no dot
        "abcdefg.q7x9w2k4abcdefgh",  // a 7-character id
        " abcdef.q7x9w2k4abcde-gh ", // a stray character
    ];
    let pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    for token in mistyped {
        std::fs::write(&file, token).unwrap();
        let runs = [
            Run::new(&["agent", "join", "--gateway", "127.0.0.1:1", "--pin", pin, "--id", "x", "--token", token]),
            Run::new(&["agent", "join", "--gateway", "127.0.0.1:1", "--pin", pin, "--id", "x", "--token", "-"])
                .stdin(token),
            Run::new(&[
                "agent",
                "join",
                "--gateway",
                "127.0.0.1:1",
                "--pin",
                pin,
                "--id",
                "x",
                "--token-file",
                path(&file),
            ]),
            Run::new(&["agent", "join", "--gateway", "127.0.0.1:1", "--pin", pin, "--id", "x"])
                .env(&[("BOARDING_TOKEN", token)]),
            // Typed where no token belongs: clap quotes stray arguments.
            Run::new(&["agent", "join", "--pin", pin, token]),
            Run::new(&["token", "create", "--data-dir", gw, token]),
            Run::new(&["token", "create", "--data-dir", gw, "-"]).stdin(token),
            Run::new(&["token", "delete", "--data-dir", gw, token]),
        ];
        for run in runs {
            let args = format!("{:?}", run.args);
            let out = run.output();
            assert_eq!(out.status.code(), Some(2), "{args}: {}", stderr(&out));
            let said = format!("{}{}", stdout(&out), stderr(&out)).to_lowercase();
            assert!(!said.contains("q7x9") && !said.contains("w2k4"), "{args} showed secret characters: {said}");
        }
    }
}

#[test]
fn logging_honours_rust_log_and_refuses_a_bad_filter() {
    // Each source of a filter is named when its filter is invalid.
    let out = Run::new(&["--log", "x=loud", "token", "generate"]).code(2);
    assert!(stderr(&out).contains("from --log"), "{}", stderr(&out));
    let out = Run::new(&["token", "generate"]).env(&[("BOARDING_LOG", "x=loud")]).code(2);
    assert!(stderr(&out).contains("from BOARDING_LOG"), "{}", stderr(&out));
    let out = Run::new(&["token", "generate"]).env(&[("RUST_LOG", "x=loud")]).code(2);
    assert!(stderr(&out).contains("from RUST_LOG"), "{}", stderr(&out));
    // --log, then BOARDING_LOG, then RUST_LOG: the first set wins and the rest are not read.
    Run::new(&["--log", "warn", "token", "generate"])
        .env(&[("RUST_LOG", "x=loud"), ("BOARDING_LOG", "x=loud")])
        .code(0);
    Run::new(&["token", "generate"]).env(&[("BOARDING_LOG", "warn"), ("RUST_LOG", "x=loud")]).code(0);
    let help = stdout(&Run::new(&["--help"]).code(0));
    assert!(help.contains("RUST_LOG") && help.contains("--log-format"), "{help}");

    // RUST_LOG alone sets the gateway's filter (quiet at `error`), and --log-format
    // json writes one JSON object per line.
    let quiet = gateway_log(&["gateway"], &[("RUST_LOG", "error")]);
    assert!(quiet.is_empty(), "RUST_LOG=error is honoured: {quiet:?}");
    let lines = gateway_log(&["--log-format", "json", "gateway"], &[("RUST_LOG", "info")]);
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(value["timestamp"].is_string() && value["fields"].is_object(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"level\":\"INFO\"")), "{lines:?}");
}

/// Starts `boarding PREFIX… serve` on a fresh directory with `env`, waits until it
/// listens (its startup log is written by then), stops it, and returns its log lines.
fn gateway_log(prefix: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(prefix)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("gw"))
        .env_remove("BOARDING_LOG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = common::stdout_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the gateway listens in time");
        if line.starts_with("listening on ") {
            break;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect()
}
