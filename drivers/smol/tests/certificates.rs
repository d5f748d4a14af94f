//! Client certificates at join and their renewal on resume, end to end over real TCP and
//! TLS 1.3 on 127.0.0.1: an agent that asks for a certificate, a gateway whose CA signs
//! it, and a virtual clock on both sides. The issued certificate is checked with
//! `openssl verify` against the CA the gateway prints, and each refusal by what it left
//! behind (nothing charged, nothing stored).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use boarding::Alert;
use boarding::UnixTime;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::certificate::{
    CertificatePolicy, CertificateSigner, NodeCertificate, NodeSubject, ca_certificate_pem,
};
use boarding_smol::{
    Agent, AgentConfig, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, Serving, Store, echo,
    os_rng,
};
use smol::net::TcpListener;

mod common;

use common::id;

fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(60), f);
}

/// The virtual clock both sides read: 2030-06-01.
const START: UnixTime = 1_906_934_400;
/// The certificates' lifetime in these tests: 30 days.
const LIFETIME: u64 = 30 * 24 * 3600;

/// A gateway on the shared virtual clock, with one unlimited token labelled
/// `group=workers`, and (unless `ca` is false) its own CA, counting what it signs.
struct Harness {
    gateway: Gateway<MemoryStore>,
    serving: Serving,
    addr: String,
    token: BootstrapToken,
    clock: Arc<AtomicU64>,
    signed: Arc<AtomicUsize>,
}

/// Counts the requests the CA signs.
struct Counting<S>(S, Arc<AtomicUsize>);

impl<S: CertificateSigner> CertificateSigner for Counting<S> {
    fn sign(
        &self,
        csr_der: &[u8],
        subject: &NodeSubject<'_>,
        now: UnixTime,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.sign(csr_der, subject, now)
    }
}

/// A CA that refuses every request.
struct Refusing;

impl CertificateSigner for Refusing {
    fn sign(
        &self,
        _: &[u8],
        _: &NodeSubject<'_>,
        _: UnixTime,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        Err("this CA signs nothing".into())
    }
}

enum Authority {
    Own,
    None,
    Refusing,
}

impl Harness {
    async fn start(authority: Authority) -> Self {
        let clock = Arc::new(AtomicU64::new(START));
        let now = clock.clone();
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig { threads: 1, ..GatewayConfig::default() })
            .await
            .unwrap()
            .with_clock(move || now.load(Ordering::SeqCst));
        let signed = Arc::new(AtomicUsize::new(0));
        let policy = CertificatePolicy {
            lifetime: Duration::from_secs(LIFETIME),
            organization_label: Some("group".into()),
            ..CertificatePolicy::default()
        };
        let gateway = match authority {
            Authority::Own => {
                let ca = gateway.certificate_authority(policy).unwrap();
                gateway.with_certificates(Counting(ca, signed.clone()))
            }
            Authority::Refusing => gateway.with_certificates(Counting(Refusing, signed.clone())),
            Authority::None => gateway,
        };
        let token = BootstrapToken::generate(&mut os_rng());
        let record = TokenRecord::new(token.clone(), None, 0).with_label("group", "workers").unwrap();
        assert!(gateway.store().insert_token(record).await.unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, echo).unwrap();
        let addr = serving.local_addr().to_string();
        Self { gateway, serving, addr, token, clock, signed }
    }

    fn agent(&self) -> Agent {
        let now = self.clock.clone();
        Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() })
            .with_certificate()
            .with_clock(move || now.load(Ordering::SeqCst))
    }

    async fn join(&self, client: &str) -> Result<MemoryKeyringStore, boarding_smol::Error> {
        let keyrings = MemoryKeyringStore::new();
        let session =
            self.agent().join(&self.addr, self.token.clone(), &[self.gateway.pin()], id(client), &keyrings).await?;
        session.close().await.unwrap();
        Ok(keyrings)
    }

    async fn resume(&self, keyrings: &MemoryKeyringStore) {
        let mut session = self.agent().connect(&self.addr, keyrings).await.unwrap();
        session.send(b"ping").await.unwrap();
        assert_eq!(session.recv().await.unwrap().as_deref(), Some(&b"ping"[..]));
        session.close().await.unwrap();
    }

    fn ca_pem(&self) -> String {
        self.gateway.certificate_authority(CertificatePolicy::default()).unwrap().certificate_pem()
    }

    async fn use_count(&self) -> u32 {
        self.gateway.store().tokens().await.unwrap()[0].use_count
    }
}

async fn stored(keyrings: &MemoryKeyringStore) -> NodeCertificate {
    keyrings.load_certificate().await.unwrap().expect("a stored node certificate")
}

/// `openssl verify` of `cert` against `ca` at the virtual time `at`: its output.
fn openssl_verify(ca: &str, cert: &NodeCertificate, at: UnixTime) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("node.pem"), cert.certificate_pem()).unwrap();
    Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-attime", &at.to_string(), "-CAfile"])
        .arg(dir.path().join("ca.pem"))
        .arg(dir.path().join("node.pem"))
        .output()
        .expect("openssl runs (the tests need it, as .ci/run installs it)")
}

#[test]
fn a_join_gets_a_certificate_for_its_own_key_that_openssl_verifies_against_the_gateways_ca() {
    run(async {
        let harness = Harness::start(Authority::Own).await;
        let keyrings = harness.join("node-1").await.unwrap();
        let cert = stored(&keyrings).await;
        assert!(keyrings.load_keyring().await.unwrap().is_some());
        assert_eq!(harness.signed.load(Ordering::SeqCst), 1);
        assert_eq!(cert.not_after(), START + LIFETIME);
        assert!(cert.not_before() <= START);
        assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"), "the agent's own key is stored with it");

        let ca = harness.ca_pem();
        assert_eq!(ca, ca_certificate_pem(&identity_of(&harness).await).unwrap(), "one CA per identity");
        let verified = openssl_verify(&ca, &cert, START + 60);
        assert!(verified.status.success(), "openssl verify: {}", String::from_utf8_lossy(&verified.stderr));
        // The names: the client id as CN and as the DNS name, the label as O.
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(cert.certificate_pem().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("O = workers, CN = node-1"), "{text}");
        assert!(text.contains("DNS:node-1"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        // Past its lifetime it no longer verifies.
        let expired = openssl_verify(&ca, &cert, START + LIFETIME + 60);
        assert!(!expired.status.success(), "an expired certificate verified");
        harness.serving.shutdown().await;
    });
}

/// The gateway's identity (stored in its store when it opened).
async fn identity_of(harness: &Harness) -> boarding::identity::ServerIdentity {
    let unused = boarding::identity::ServerIdentity::from_seed([0; 32]);
    harness.gateway.store().identity_or_insert(unused).await.unwrap()
}

#[test]
fn a_resume_renews_the_certificate_past_two_thirds_of_its_lifetime_and_not_before() {
    run(async {
        let harness = Harness::start(Authority::Own).await;
        let keyrings = harness.join("renew-me").await.unwrap();
        let first = stored(&keyrings).await;
        let renew_at = first.renew_at();
        assert_eq!(renew_at, first.not_before() + (first.not_after() - first.not_before()) * 2 / 3);

        // One second before the two-thirds mark: the resume asks for nothing.
        harness.clock.store(renew_at - 1, Ordering::SeqCst);
        harness.resume(&keyrings).await;
        assert_eq!(harness.signed.load(Ordering::SeqCst), 1, "renewed before two thirds of the lifetime");
        assert_eq!(stored(&keyrings).await, first);

        // At the mark: a new key and a new certificate, stored before the session is used.
        harness.clock.store(renew_at, Ordering::SeqCst);
        harness.resume(&keyrings).await;
        assert_eq!(harness.signed.load(Ordering::SeqCst), 2);
        let metrics = harness.gateway.encode_metrics().await.unwrap();
        assert!(metrics.contains("boarding_certificates_issued_total{kind=\"join\"} 1"), "{metrics}");
        assert!(metrics.contains("boarding_certificates_issued_total{kind=\"renewal\"} 1"), "{metrics}");
        let second = stored(&keyrings).await;
        assert_ne!(second.key_pem(), first.key_pem(), "a renewal makes a new key");
        assert_eq!(second.not_after(), renew_at + LIFETIME);
        let verified = openssl_verify(&harness.ca_pem(), &second, renew_at + 60);
        assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));

        // Right after, nothing is due again.
        harness.resume(&keyrings).await;
        assert_eq!(harness.signed.load(Ordering::SeqCst), 2);
        harness.serving.shutdown().await;
    });
}

#[test]
fn a_gateway_without_a_ca_or_whose_ca_refuses_refuses_the_join_and_charges_nothing() {
    run(async {
        for authority in [Authority::None, Authority::Refusing] {
            let harness = Harness::start(authority).await;
            let err = harness.join("no-ca").await.expect_err("the join was refused");
            assert_eq!(err.peer_alert(), Some(Alert::AdmissionRefused), "{err}");
            let metrics = harness.gateway.encode_metrics().await.unwrap();
            assert!(metrics.contains("boarding_certificates_refused_total{kind=\"join\"} 1"), "{metrics}");
            assert_eq!(harness.use_count().await, 0, "a refused join charged the token");
            assert!(harness.gateway.store().clients().await.unwrap().is_empty(), "a refused join stored a keyring");
            harness.serving.shutdown().await;
        }
    });
}

#[test]
fn an_agent_that_asks_for_no_certificate_joins_a_gateway_with_a_ca_and_gets_none() {
    run(async {
        let harness = Harness::start(Authority::Own).await;
        let keyrings = MemoryKeyringStore::new();
        let agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        let session = agent
            .join(&harness.addr, harness.token.clone(), &[harness.gateway.pin()], id("plain"), &keyrings)
            .await
            .unwrap();
        let ticket = boarding_smol::ticket::Ticket::decode(&session.peer().ticket).unwrap();
        assert_eq!(ticket, boarding_smol::ticket::Ticket::default());
        session.close().await.unwrap();
        assert_eq!(harness.signed.load(Ordering::SeqCst), 0);
        assert_eq!(keyrings.load_certificate().await.unwrap(), None);
        // Asking later, at a resume, gets one: an agent can turn certificates on.
        harness.resume(&keyrings).await;
        assert_eq!(harness.signed.load(Ordering::SeqCst), 1);
        assert_eq!(stored(&keyrings).await.not_after(), START + LIFETIME);
        harness.serving.shutdown().await;
    });
}

#[test]
fn a_renewal_the_gateway_cannot_give_keeps_the_current_certificate_and_the_session() {
    run(async {
        // A certificate from a gateway with a CA...
        let issuing = Harness::start(Authority::Own).await;
        let first = stored(&issuing.join("kept").await.unwrap()).await;
        issuing.serving.shutdown().await;
        // ...held by an agent of a gateway whose CA refuses, when it falls due.
        let refusing = Harness::start(Authority::Refusing).await;
        let keyrings = MemoryKeyringStore::new();
        let plain = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        let pins = [refusing.gateway.pin()];
        plain
            .join(&refusing.addr, refusing.token.clone(), &pins, id("kept"), &keyrings)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        keyrings.save_certificate(&first).await.unwrap();
        refusing.clock.store(first.renew_at(), Ordering::SeqCst);
        refusing.resume(&keyrings).await;
        assert_eq!(refusing.signed.load(Ordering::SeqCst), 1, "the renewal was asked for");
        assert_eq!(stored(&keyrings).await, first, "the current certificate stays");
        refusing.serving.shutdown().await;
    });
}
