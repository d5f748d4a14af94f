//! Services behind the gateway with real processes: `boarding gateway serve --service
//! --allow`, `boarding agent forward` and `boarding agent connect`, an upstream in this
//! test that reads the PROXY v2 header and echoes the identity and the bytes. Everything
//! on 127.0.0.1, bounded in count and time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use boarding_smol::forward::{Proxied, proxy};
use common::{BIN, GatewayProcess, boarding, ok, stderr};

/// An upstream: reads the PROXY header, writes `client=ID labels=K=V,… session=N\n`,
/// then echoes until EOF and shuts its write side down.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut fixed = [0u8; proxy::FIXED_LEN];
                stream.read_exact(&mut fixed).unwrap();
                let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
                let mut header = fixed.to_vec();
                header.resize(proxy::FIXED_LEN + len, 0);
                stream.read_exact(&mut header[proxy::FIXED_LEN..]).unwrap();
                let (proxied, _) = Proxied::parse(&header).unwrap();
                let id = &proxied.identity;
                let labels = id.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                let line = format!("client={} labels={labels} session={}\n", id.client_id, u8::from(id.resumed));
                stream.write_all(line.as_bytes()).unwrap();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// Joins `id` with a token carrying `labels`; returns the agent's data directory.
fn join(gateway: &GatewayProcess, gw: &str, dir: &Path, id: &str, labels: &[&str]) -> String {
    let mut args = vec!["token", "create", "--data-dir", gw];
    for label in labels {
        args.extend(["--label", label]);
    }
    let token = ok(&args).trim().to_owned();
    let token_file = dir.join(format!("{id}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let data = dir.join(id).to_str().unwrap().to_owned();
    ok(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--token-file",
        token_file.to_str().unwrap(),
        "--pin",
        &gateway.pin,
        "--id",
        id,
        "--data-dir",
        &data,
    ]);
    data
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_reaches_a_service_behind_the_gateway_with_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let up = upstream().to_string();
    let gateway = GatewayProcess::start_with(
        &gw,
        &["--service", &format!("db={up}"), "--allow", "db=role=db", "--service", &format!("open={up}")],
    );
    let gw = gw.to_str().unwrap();
    let db = join(&gateway, gw, dir.path(), "node-1", &["role=db"]);
    let web = join(&gateway, gw, dir.path(), "web-1", &["role=web"]);

    // `agent forward`: a local port that reaches the service.
    let mut child = Command::new(BIN)
        .args(["agent", "forward", "--gateway", &gateway.addr, "--listen", "127.0.0.1:0", "--service", "db"])
        .args(["--data-dir", &db])
        .env("BOARDING_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::stdout_lines(&mut child);
    let forward = Killed(child);
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("agent forward printed its address");
    let local = line.strip_prefix("forwarding ").and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    for round in 0..2 {
        let mut stream = TcpStream::connect(&local).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let request = format!("request {round}");
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("client=node-1 labels=role=db session=1\n{request}"), "round {round}");
    }
    drop(forward);

    // `agent connect`: stdin and stdout.
    let mut child = Command::new(BIN)
        .args(["agent", "connect", "--gateway", &gateway.addr, "--service", "open", "--data-dir", &web])
        .env("BOARDING_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"over stdin").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "client=web-1 labels=role=web session=1\nover stdin");

    // A service the labels do not allow: refused, exit status 4, the reason on stderr.
    let o = boarding(&["agent", "connect", "--gateway", &gateway.addr, "--service", "db", "--data-dir", &web]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("not allowed"), "{}", stderr(&o));
    let o = boarding(&["agent", "connect", "--gateway", &gateway.addr, "--service", "nope", "--data-dir", &web]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("no service of that name"), "{}", stderr(&o));
    gateway.kill();
}

#[test]
fn service_flags_are_checked_before_the_gateway_starts() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gw = gw.to_str().unwrap();
    for (args, says) in [
        (vec!["--allow", "db=role=db"], "--allow names a service"),
        (vec!["--service", "db"], "NAME=HOST:PORT"),
        (vec!["--service", "DB=127.0.0.1:1"], "invalid service name"),
        (vec!["--service", "db=127.0.0.1:1", "--allow", "web=role=x"], "web is not defined"),
        (vec!["--service", "db=127.0.0.1:1", "--allow", "db=role"], "KEY=VALUE"),
    ] {
        let mut all = vec!["gateway", "serve", "--memory", "--listen", "127.0.0.1:0", "--data-dir", gw];
        all.extend(args);
        let o = boarding(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{all:?}: {}", stderr(&o));
    }
}
