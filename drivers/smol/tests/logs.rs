//! The gateway's log: one line per handshake outcome naming the peer, the kind, the
//! claimed client and token, the outcome and the duration; failures beyond ten per
//! window summarised in one line; a revoked client's resume logged as what it is.
//! Real TCP and TLS on loopback; the log is captured by a subscriber of this test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::metrics::HandshakeKind;
use boarding_smol::{Agent, AgentConfig, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, Store};
use smol::net::TcpListener;

mod common;

use common::id;

/// Every line the test's subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(containing)).map(str::to_owned).collect()
    }
}

#[test]
fn one_line_per_outcome_and_a_summary_of_a_flood() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("boarding_smol=info")
        .init();

    common::run_within(Duration::from_secs(60), async {
        let window = Duration::from_secs(2);
        let config = GatewayConfig { failure_log_window: window, ..GatewayConfig::default() };
        let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, boarding_smol::echo).unwrap();
        let addr = serving.local_addr().to_string();
        let token = BootstrapToken::generate(&mut boarding_smol::os_rng());
        gateway.store().insert_token(TokenRecord::new(token.clone(), None, 0)).await.unwrap();
        let agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });

        // A join, logged with the client, the token and a duration.
        let keyrings = MemoryKeyringStore::new();
        let session = agent.join(&addr, token.clone(), &[gateway.pin()], id("logged"), &keyrings).await.unwrap();
        session.close().await.unwrap();
        let saved = keyrings.load_keyring().await.unwrap().unwrap();

        // A flood of 25 joins with tokens never issued: ten lines, then a summary.
        const FLOOD: usize = 25;
        for i in 0..FLOOD {
            let unknown = BootstrapToken::generate(&mut boarding_smol::os_rng());
            let pins = [gateway.pin()];
            assert!(agent.join(&addr, unknown, &pins, id(&format!("flood-{i}")), &keyrings).await.is_err());
        }
        // Once the window is over, a revoked client's resume gets a line of its own.
        smol::Timer::after(window + window / 2).await;
        gateway.revoke_client(id("logged")).await.unwrap();
        assert!(agent.connect_with(&addr, saved).await.is_err());
        for _ in 0..100 {
            if gateway.metrics().handshakes(HandshakeKind::Resume, "unknown_client") == 1 {
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        serving.shutdown().await;

        let established = log.lines("handshake established");
        assert_eq!(established.len(), 1, "{established:?}");
        let line = &established[0];
        for field in
            ["kind=join", "client=logged", &format!("token={}", token.id().as_str()), "duration_ms=", "peer=127.0.0.1:"]
        {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        assert!(!line.contains(&String::from_utf8_lossy(token.secret().expose()).into_owned()), "no secret in the log");

        let failed = log.lines("handshake failed");
        let flood: Vec<_> = failed
            .iter()
            .filter(|l| l.contains("outcome=\"unknown_token\"") || l.contains("outcome=unknown_token"))
            .collect();
        assert_eq!(flood.len(), 10, "ten lines of the flood, then none: {failed:#?}");
        let summary = log.lines("were not logged one by one");
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert!(summary[0].contains("suppressed=15"), "{}", summary[0]);
        assert!(summary[0].contains("unknown_token=15"), "{}", summary[0]);
        assert_eq!(
            gateway.metrics().handshakes(HandshakeKind::Join, "unknown_token"),
            FLOOD as u64,
            "the metrics count all"
        );

        let revoked: Vec<_> = failed.iter().filter(|l| l.contains("kind=resume")).collect();
        assert_eq!(revoked.len(), 1, "{failed:#?}");
        assert!(revoked[0].contains("client=logged"), "{}", revoked[0]);
        assert!(revoked[0].contains("revoked"), "the line says the client may be revoked: {}", revoked[0]);
        assert!(!revoked[0].contains("pin"), "not described as a pin problem: {}", revoked[0]);
    });
}
