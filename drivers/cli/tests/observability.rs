//! `gateway serve --metrics-listen`: the metrics and probes of a real gateway process,
//! scraped over HTTP on loopback while real agents join and resume.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::BootstrapToken;
use boarding_smol::{Agent, AgentConfig, KeyringStore, MemoryKeyringStore};
use common::{GatewayProcess, ok};

/// `GET path` over HTTP/1.1; the status code and the body.
fn get(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// The samples of a scrape: `name{labels}` to value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_what_the_agents_did() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    let gateway = GatewayProcess::start_with(&gw, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = gateway.metrics.clone().expect("the gateway printed its metrics address");
    let gw = gw.to_str().unwrap();

    assert_eq!(get(&metrics, "GET", "/healthz").0, 200);
    assert_eq!(get(&metrics, "GET", "/readyz").0, 200, "ready once `listening on` is printed");
    assert_eq!(get(&metrics, "GET", "/nowhere").0, 404);
    assert_eq!(get(&metrics, "POST", "/metrics").0, 405);

    let token: BootstrapToken = ok(&["token", "create", "--data-dir", gw, "--uses", "2"]).trim().parse().unwrap();
    let before = scrape(&metrics);
    assert_eq!(value(&before, "boarding_tokens_usable"), 1.0);

    let pin: Pin = gateway.pin.parse().unwrap();
    let addr = gateway.addr.clone();
    smol::block_on(async {
        let agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        let keyrings = MemoryKeyringStore::new();
        for id in ["m1", "m2"] {
            let store = if id == "m1" { &keyrings } else { &MemoryKeyringStore::new() };
            let session = agent.join(&addr, token.clone(), &[pin], ClientId::new(id).unwrap(), store).await.unwrap();
            session.close().await.unwrap();
        }
        // The token is spent; another token was never issued.
        let (pins, spare) = ([pin], MemoryKeyringStore::new());
        assert!(agent.join(&addr, token.clone(), &pins, ClientId::new("m3").unwrap(), &spare).await.is_err());
        let unknown = BootstrapToken::generate(&mut boarding_smol::os_rng());
        assert!(agent.join(&addr, unknown, &pins, ClientId::new("m4").unwrap(), &spare).await.is_err());
        let saved = keyrings.load_keyring().await.unwrap().unwrap();
        let session = agent.connect_with(&addr, saved).await.unwrap();
        session.close().await.unwrap();
    });

    let expected = [
        (r#"boarding_handshakes_total{kind="join",outcome="established"}"#, 2.0),
        (r#"boarding_handshakes_total{kind="join",outcome="exhausted_token"}"#, 1.0),
        (r#"boarding_handshakes_total{kind="join",outcome="unknown_token"}"#, 1.0),
        (r#"boarding_handshakes_total{kind="resume",outcome="established"}"#, 1.0),
        (r#"boarding_handshake_duration_seconds_count{kind="join"}"#, 4.0),
        (r#"boarding_handshake_duration_seconds_count{kind="resume"}"#, 1.0),
        ("boarding_connections_accepted_total", 5.0),
        (r#"boarding_sessions_closed_total{reason="ended"}"#, 3.0),
        (r#"boarding_store_operation_duration_seconds_count{operation="redeem"}"#, 3.0),
        (r#"boarding_store_operation_duration_seconds_count{operation="confirm_keyring"}"#, 2.0),
        (r#"boarding_store_operation_duration_seconds_count{operation="lookup_keyring"}"#, 1.0),
    ];
    // The gateway counts a session's end when its task finishes, a moment after the
    // agent's close: wait for the counts, then check that they stay exact.
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = |after: &BTreeMap<String, f64>| {
        expected.iter().map(|(k, _)| (*k, value(after, k) - value(&before, k))).collect::<Vec<_>>()
    };
    let mut after = scrape(&metrics);
    while moved(&after) != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = scrape(&metrics);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = scrape(&metrics);
    assert_eq!(moved(&after), expected);
    assert_eq!(value(&after, "boarding_tokens_usable"), 0.0, "the only token is exhausted");
    assert_eq!(value(&after, "boarding_sessions_open"), 0.0);
    assert_eq!(value(&after, r#"boarding_connections_refused_total{reason="source_cap"}"#), 0.0);
    assert_eq!(value(&after, "boarding_store_errors_total"), 0.0);
    gateway.kill();
}
