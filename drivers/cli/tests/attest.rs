//! `gateway serve --attest-ca` and `agent join --attest-cert --attest-key` as real
//! processes, with the operator CA and the node keys and certificates made by the very
//! `openssl` commands the README shows. Needs `openssl` on PATH.

mod common;

use std::path::Path;
use std::process::Command;

use common::{GatewayProcess, boarding, ok, readme_block, stderr, stdout};

/// Runs a shell script in `dir` (the README's commands, verbatim), failing clearly if
/// `openssl` is missing.
fn sh(dir: &Path, script: &str) {
    let found = Command::new("openssl").arg("version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "these tests make their keys and certificates with `openssl`, which is not installed (or not on PATH): \
         install it (Debian: `apt-get install openssl`)"
    );
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}\nfailed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The README's "Attested joins" commands: an Ed25519 operator CA, and a P-256 key and
/// certificate named `node-1` (CN and DNS subjectAltName).
const README_CA_AND_NODE: &str = r#"
openssl genpkey -algorithm ed25519 -out ca.key
openssl req -x509 -new -key ca.key -subj "/CN=operator CA" -days 3650 -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out node-1.key
openssl req -new -key node-1.key -subj "/CN=node-1" -out node-1.csr
printf 'subjectAltName=DNS:node-1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > node.ext
openssl x509 -req -in node-1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile node.ext -out node-1.pem
"#;

/// A node certificate for `name` from the CA above, with a key made by `keygen`.
fn node(dir: &Path, name: &str, keygen: &str) {
    sh(
        dir,
        &format!(
            "{keygen} -out {name}.key\n\
             openssl req -new -key {name}.key -subj \"/CN={name}\" -out {name}.csr\n\
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile node.ext \
             -out {name}.pem"
        ),
    );
}

fn join(dir: &Path, gateway: &GatewayProcess, id: &str, cert: &str) -> std::process::Output {
    let gw = dir.join("gw");
    let token = ok(&["token", "create", "--data-dir", gw.to_str().unwrap()]);
    std::fs::write(dir.join(format!("token-{id}")), token.trim()).unwrap();
    let (cert, key) = (dir.join(format!("{cert}.pem")), dir.join(format!("{cert}.key")));
    let (token_file, agent) = (dir.join(format!("token-{id}")), dir.join(format!("agent-{id}")));
    boarding(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--pin",
        &gateway.pin,
        "--token-file",
        token_file.to_str().unwrap(),
        "--id",
        id,
        "--data-dir",
        agent.to_str().unwrap(),
        "--attest-cert",
        cert.to_str().unwrap(),
        "--attest-key",
        key.to_str().unwrap(),
    ])
}

#[test]
fn agents_attest_with_openssl_made_keys_and_a_mismatched_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(d, README_CA_AND_NODE);
    // The other key forms `openssl` writes: SEC1 P-256, PKCS#8 Ed25519.
    node(d, "node-2", "openssl ecparam -name prime256v1 -genkey -noout");
    node(d, "node-3", "openssl genpkey -algorithm ed25519");
    let ca = d.join("ca.pem");
    let gateway = GatewayProcess::start_with(
        &d.join("gw"),
        &["--attest-ca", ca.to_str().unwrap(), "--require-attestation", "--attest-name-is-client-id"],
    );
    for id in ["node-1", "node-2", "node-3"] {
        let o = join(d, &gateway, id, id);
        assert!(o.status.success(), "{id}: {}\n{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(&format!("as {id}")), "{}", stdout(&o));
    }
    // node-3's certificate presented under another client id: refused, exit 4, with a hint.
    let o = join(d, &gateway, "node-4", "node-3");
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("attestation evidence refused"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--attest-cert"), "the hint names the flags: {}", stderr(&o));
    // Nothing was charged for it: its token is unused.
    let gw = d.join("gw");
    let tokens = ok(&["token", "list", "--all", "--data-dir", gw.to_str().unwrap(), "--output", "json"]);
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    let used: Vec<u64> = tokens.as_array().unwrap().iter().map(|t| t["use_count"].as_u64().unwrap()).collect();
    assert_eq!(used.iter().filter(|u| **u == 1).count(), 3, "{tokens}");
    assert_eq!(used.iter().filter(|u| **u == 0).count(), 1, "the refused join was charged: {tokens}");
    let clients = ok(&["clients", "list", "--data-dir", gw.to_str().unwrap()]);
    assert!(!clients.contains("node-4"), "{clients}");
    gateway.kill();
}

#[test]
fn attestation_flags_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // --attest-key without --attest-cert, and the reverse, are usage errors.
    let o = boarding(&["agent", "join", "--pin", "sha256:00", "--attest-key", "k"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = boarding(&["gateway", "serve", "--require-attestation"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A CA file that holds no certificate is refused at start, naming the flag.
    std::fs::write(d.join("empty.pem"), "").unwrap();
    let gw = d.join("gw");
    let o = boarding(&[
        "gateway",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        gw.to_str().unwrap(),
        "--attest-ca",
        d.join("empty.pem").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--attest-ca"), "{}", stderr(&o));
    // A key that is not the certificate's: refused before the token is read.
    sh(d, README_CA_AND_NODE);
    node(d, "other", "openssl genpkey -algorithm ed25519");
    let pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let o = boarding(&[
        "agent",
        "join",
        "--pin",
        pin,
        "--id",
        "node-1",
        "--token-file",
        "does-not-exist",
        "--data-dir",
        d.join("agent").to_str().unwrap(),
        "--attest-cert",
        d.join("node-1.pem").to_str().unwrap(),
        "--attest-key",
        d.join("other.key").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
}

#[test]
fn the_readme_join_with_attestation_and_a_certificate_runs_as_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for line in README_CA_AND_NODE.trim().lines() {
        assert!(readme.contains(&format!("    {line}\n")), "the README no longer shows {line:?}");
    }
    sh(d, README_CA_AND_NODE);
    let (commands, outputs) = readme_block("### A client certificate at join");
    assert_eq!(commands.len(), 7, "{commands:?}");
    // The gateway's own command, on a free port instead of 7443.
    let serve = commands[0].strip_prefix("boarding gateway serve --data-dir gw ").expect("the serve command first");
    // The harness runs it elsewhere: a file it names is the one in the scratch directory.
    let args: Vec<String> = serve
        .split(' ')
        .map(|arg| if d.join(arg).is_file() { d.join(arg).display().to_string() } else { arg.to_owned() })
        .collect();
    let gateway = GatewayProcess::start_with(&d.join("gw"), &args.iter().map(String::as_str).collect::<Vec<_>>());
    common::run_readme_commands(d, &commands[1..], &outputs, &gateway);
    // What the commands left: a certificate for node-1's new key, from the gateway's CA.
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-ext", "subjectAltName", "-in", "node-1-client.pem"])
        .current_dir(d)
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout);
    assert!(subject.contains("CN = node-1") && subject.contains("DNS:node-1"), "{subject}");
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.join("node-1-client.key")).unwrap().permissions());
    assert_eq!(key_mode & 0o077, 0, "the key file is the user's alone");
    let key = std::fs::read_to_string(d.join("node-1-client.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{}", &key[..20.min(key.len())]);
    // The key is the certificate's: openssl derives the same public key from both.
    let from_cert = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in", "node-1-client.pem"])
        .current_dir(d)
        .output()
        .unwrap();
    let from_key =
        Command::new("openssl").args(["pkey", "-pubout", "-in", "node-1-client.key"]).current_dir(d).output().unwrap();
    assert_eq!(from_cert.stdout, from_key.stdout);
    // The same CA with the gateway stopped (from the database) as through its admin socket.
    let gw = d.join("gw");
    let running = ok(&["gateway", "ca", "--data-dir", gw.to_str().unwrap()]);
    gateway.kill();
    assert_eq!(ok(&["gateway", "ca", "--data-dir", gw.to_str().unwrap()]), running);
    assert_eq!(std::fs::read_to_string(d.join("gateway-ca.pem")).unwrap(), running);
}

#[test]
fn a_join_that_asks_for_a_certificate_is_refused_by_a_gateway_that_issues_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gw = d.join("gw");
    let gateway = GatewayProcess::start(&gw);
    let token = ok(&["token", "create", "--data-dir", gw.to_str().unwrap()]);
    std::fs::write(d.join("token"), token.trim()).unwrap();
    let agent = d.join("agent");
    let o = boarding(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--pin",
        &gateway.pin,
        "--token-file",
        d.join("token").to_str().unwrap(),
        "--id",
        "asks",
        "--data-dir",
        agent.to_str().unwrap(),
        "--certificate",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--issue-certificates"), "the note names the gateway's flag: {}", stderr(&o));
    let tokens = ok(&["token", "list", "--data-dir", gw.to_str().unwrap(), "--output", "json"]);
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(tokens[0]["use_count"], 0, "the refused join was charged: {tokens}");
    // An agent with no certificate says so, and what to do.
    let o = boarding(&["agent", "cert", "--data-dir", agent.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    // The certificate flags need --issue-certificates.
    let o = boarding(&["gateway", "serve", "--cert-organization-label", "group"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    gateway.kill();
}
