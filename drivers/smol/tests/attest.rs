//! `x509pop` attestation end to end over real TCP and TLS 1.3 on 127.0.0.1: agents with
//! an `X509Attester`, a gateway with an `X509Validator` and a virtual clock. Each
//! refusal is asserted on both ends (the agent's `AttestationRefused` alert, the
//! validator's reason) and by what it left behind: nothing charged, nothing written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use boarding::Alert;
use boarding::attestation::{AttestationBinding, AttestedIdentity};
use boarding::storage::KeyringRecord;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding::{UnixTime, identity::ClientId};
use boarding_smol::attest::{X509Attester, X509Error, X509Refusal, X509Validator};
use boarding_smol::{
    Agent, AgentConfig, AttestError, AttestationRefused, Attester, Decision, Error, EvidenceRequest, Gateway,
    GatewayConfig, JoinRequest, KeyringStore, MemoryKeyringStore, MemoryStore, Serving, Store, Validator, echo, os_rng,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm, date_time_ymd,
};
use smol::net::TcpListener;

mod common;

use common::id;

fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(60), f);
}

/// 2030-06-01: the gateway's virtual clock, inside every certificate's validity below.
const NOW: UnixTime = 1_906_934_400;
/// 2032-01-01: after every certificate expired.
const LATER: UnixTime = 1_956_528_000;

/// What the gateway application admitted: client ids and attested names.
type Admitted = Arc<Mutex<Vec<(ClientId, Option<String>)>>>;

/// An operator CA.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str, alg: &'static SignatureAlgorithm) -> Self {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2029, 1, 1);
        params.not_after = date_time_ymd(2035, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A node certificate and key (PEM) with this CN and DNS SAN, valid in 2030.
    fn issue(&self, cn: Option<&str>, san: &[&str], alg: &'static SignatureAlgorithm) -> (String, String) {
        self.issue_with(cn, san, alg, |_| {})
    }

    fn issue_with(
        &self,
        cn: Option<&str>,
        san: &[&str],
        alg: &'static SignatureAlgorithm,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(san.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        // rcgen's default subject is a CN of its own: start from an empty one.
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.not_before = date_time_ymd(2030, 1, 1);
        params.not_after = date_time_ymd(2031, 1, 1);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        tweak(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn attester(cert: &str, key: &str) -> X509Attester {
    X509Attester::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
}

/// The validator, recording each refusal's reason for the test to assert.
#[derive(Clone)]
struct Recording {
    inner: X509Validator,
    refusals: Arc<Mutex<Vec<X509Refusal>>>,
}

impl Validator for Recording {
    fn validate(&self, request: &EvidenceRequest<'_>) -> Result<Option<AttestedIdentity>, AttestationRefused> {
        self.inner.verify(request.evidence, request.binding, request.client_id, request.now).map_err(|e| {
            self.refusals.lock().unwrap().push(e.clone());
            AttestationRefused::new(e)
        })
    }
}

/// An attester that sends what it is given, whatever the binding (a replay).
struct Replay(Vec<u8>);

impl Attester for Replay {
    fn attest(&self, _: &AttestationBinding) -> Result<Vec<u8>, AttestError> {
        Ok(self.0.clone())
    }
}

/// An attester that records the evidence of the real one it wraps.
struct Recorder(X509Attester, Arc<Mutex<Vec<Vec<u8>>>>);

impl Attester for Recorder {
    fn attest(&self, binding: &AttestationBinding) -> Result<Vec<u8>, AttestError> {
        let evidence = self.0.attest(binding)?;
        self.1.lock().unwrap().push(evidence.clone());
        Ok(evidence)
    }
}

/// An attester that signs another binding than the session's.
struct OtherBinding(X509Attester);

impl Attester for OtherBinding {
    fn attest(&self, binding: &AttestationBinding) -> Result<Vec<u8>, AttestError> {
        let mut other = *binding.as_bytes();
        other[31] ^= 0x80;
        self.0.evidence(&AttestationBinding::from_bytes(other)).map_err(AttestError::new)
    }
}

/// A gateway trusting `ca`, on the virtual clock `now`, whose application records what
/// it saw and gives each node a ticket naming its attested name.
struct Harness {
    gateway: Gateway<MemoryStore>,
    serving: Serving,
    addr: String,
    refusals: Arc<Mutex<Vec<X509Refusal>>>,
    admitted: Admitted,
    peers: Arc<Mutex<Vec<boarding::server::VerifiedClient>>>,
    token: BootstrapToken,
}

impl Harness {
    async fn start(validator: X509Validator, now: UnixTime) -> Self {
        let refusals: Arc<Mutex<Vec<X509Refusal>>> = Arc::default();
        let admitted: Admitted = Arc::default();
        let peers: Arc<Mutex<Vec<boarding::server::VerifiedClient>>> = Arc::default();
        let seen = admitted.clone();
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig { threads: 1, ..GatewayConfig::default() })
            .await
            .unwrap()
            .with_validator(Recording { inner: validator, refusals: refusals.clone() })
            .with_admission(move |join: &JoinRequest<'_>| {
                let name = join.attested.map(|a| a.name().to_owned());
                seen.lock().unwrap().push((join.client_id.clone(), name.clone()));
                Decision::Admit { ticket: format!("ticket for {}", name.unwrap_or_default()).into_bytes() }
            })
            .with_clock(move || now);
        let token = BootstrapToken::generate(&mut os_rng());
        assert!(gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = peers.clone();
        let serving = gateway
            .serve(listener, move |session| {
                sink.lock().unwrap().push(session.peer().clone());
                echo(session)
            })
            .unwrap();
        let addr = serving.local_addr().to_string();
        Self { gateway, serving, addr, refusals, admitted, peers, token }
    }

    async fn records(&self) -> (Vec<TokenRecord>, Vec<KeyringRecord>) {
        (self.gateway.store().tokens().await.unwrap(), self.gateway.store().clients().await.unwrap())
    }

    /// A join as `client` with `attester`, through the gateway's TLS listener.
    async fn join(&self, client: &str, attester: Option<impl Attester>) -> Result<MemoryKeyringStore, Error> {
        let mut agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        if let Some(attester) = attester {
            agent = agent.with_attester(attester);
        }
        let keyrings = MemoryKeyringStore::new();
        let mut session =
            agent.join(&self.addr, self.token.clone(), &[self.gateway.pin()], id(client), &keyrings).await?;
        let ticket = boarding_smol::ticket::Ticket::decode(&session.peer().ticket).unwrap();
        assert_eq!(ticket.application, format!("ticket for {client}").into_bytes(), "the node's own ticket");
        assert_eq!(ticket.certificate, None, "no certificate was asked for");
        session.send(b"attested").await.unwrap();
        assert_eq!(session.recv().await.unwrap().as_deref(), Some(&b"attested"[..]));
        session.close().await.unwrap();
        Ok(keyrings)
    }

    /// A join that must be refused for its attestation, with `expected` as the
    /// validator's reason, charging and writing nothing on either side.
    async fn refused(&self, client: &str, attester: Option<impl Attester>, expected: impl Fn(&X509Refusal) -> bool) {
        let before = self.records().await;
        let keyrings = MemoryKeyringStore::new();
        let mut agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        if let Some(attester) = attester {
            agent = agent.with_attester(attester);
        }
        let err = agent.join(&self.addr, self.token.clone(), &[self.gateway.pin()], id(client), &keyrings).await;
        let Err(err) = err else { panic!("the join was not refused") };
        assert_eq!(err.peer_alert(), Some(Alert::AttestationRefused), "{err}");
        assert!(err.to_string().contains("attestation evidence refused"), "{err}");
        let refusals = self.refusals.lock().unwrap().clone();
        assert!(refusals.last().is_some_and(&expected), "the validator's reason: {refusals:?}");
        assert_eq!(self.records().await, before, "a refused attestation changed the gateway's store");
        assert_eq!(self.records().await.0[0].use_count, 0, "a refused attestation charged the token");
        assert_eq!(keyrings.load_keyring().await.unwrap(), None, "a refused agent stored a keyring");
        assert!(self.admitted.lock().unwrap().iter().all(|(c, _)| c.as_str() != client), "admitted after a refusal");
    }

    async fn stop(self) {
        self.serving.shutdown().await;
    }
}

#[test]
fn a_valid_attestation_joins_and_the_gateway_application_sees_the_attested_name() {
    run(async {
        for (alg, name) in [(&rcgen::PKCS_ED25519, "ed25519"), (&rcgen::PKCS_ECDSA_P256_SHA256, "p256")] {
            let ca = Ca::new("operator CA", alg);
            let (cert, key) = ca.issue(Some("node-1"), &["node-1"], alg);
            let validator = X509Validator::from_pem(ca.pem.as_bytes()).unwrap().require_attestation(true);
            let harness = Harness::start(validator.name_is_client_id(true), NOW).await;
            let keyrings =
                harness.join("node-1", Some(attester(&cert, &key))).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(keyrings.load_keyring().await.unwrap().is_some(), "{name}");
            assert_eq!(*harness.admitted.lock().unwrap(), [(id("node-1"), Some("node-1".to_owned()))], "{name}");
            let peers = harness.peers.lock().unwrap().clone();
            let attested = peers[0].attested().unwrap_or_else(|| panic!("{name}: no attested identity"));
            assert_eq!(attested.name(), "node-1");
            let fingerprint = attested.attributes().get("fingerprint").unwrap();
            assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 71, "{fingerprint}");
            assert_eq!(attested.attributes().get("dns").map(String::as_str), Some("node-1"));
            assert!(attested.attributes().get("issuer").unwrap().contains("operator CA"));
            assert_eq!(harness.records().await.0[0].use_count, 1, "{name}");
            assert!(harness.refusals.lock().unwrap().is_empty());
            // The resume that follows proves the keyring; it carries no attestation.
            let session = Agent::default().connect(&harness.addr, &keyrings).await.unwrap();
            session.close().await.unwrap();
            harness.stop().await;
        }
    });
}

#[test]
fn a_certificate_named_only_by_its_dns_name_attests_that_name() {
    run(async {
        let alg = &rcgen::PKCS_ED25519;
        let ca = Ca::new("operator CA", alg);
        let (cert, key) = ca.issue(None, &["node-1"], alg);
        let harness =
            Harness::start(X509Validator::from_pem(ca.pem.as_bytes()).unwrap().name_is_client_id(true), NOW).await;
        harness.join("node-1", Some(attester(&cert, &key))).await.unwrap();
        assert_eq!(harness.peers.lock().unwrap()[0].attested().map(|a| a.name().to_owned()).as_deref(), Some("node-1"));
        harness.stop().await;
    });
}

#[test]
fn evidence_replayed_from_another_session_is_refused() {
    run(async {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = Ca::new("operator CA", alg);
        let (cert, key) = ca.issue(Some("node-1"), &["node-1"], alg);
        let validator = X509Validator::from_pem(ca.pem.as_bytes()).unwrap();
        // A first gateway sees node-1's genuine evidence for its session.
        let first = Harness::start(validator.clone(), NOW).await;
        let recorded: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        first.join("node-1", Some(Recorder(attester(&cert, &key), recorded.clone()))).await.unwrap();
        first.stop().await;
        let evidence = recorded.lock().unwrap()[0].clone();
        // Replayed to another session (another gateway; the same would hold for the first).
        let second = Harness::start(validator, NOW).await;
        second.refused("node-1", Some(Replay(evidence)), |r| matches!(r, X509Refusal::Signature { .. })).await;
        second.stop().await;
    });
}

#[test]
fn a_chain_from_another_ca_is_refused() {
    run(async {
        let alg = &rcgen::PKCS_ED25519;
        let trusted = Ca::new("operator CA", alg);
        let harness = Harness::start(X509Validator::from_pem(trusted.pem.as_bytes()).unwrap(), NOW).await;
        // Another CA altogether, and an impostor under the trusted CA's very name.
        let other = Ca::new("another CA", alg);
        let (cert, key) = other.issue(Some("node-1"), &["node-1"], alg);
        let unknown =
            |r: &X509Refusal| matches!(r, X509Refusal::Chain { reason, .. } if reason.contains("UnknownIssuer"));
        harness.refused("node-1", Some(attester(&cert, &key)), unknown).await;
        let impostor = Ca::new("operator CA", alg);
        let (cert, key) = impostor.issue(Some("node-1"), &["node-1"], alg);
        let forged =
            |r: &X509Refusal| matches!(r, X509Refusal::Chain { reason, .. } if reason.contains("InvalidSignature"));
        harness.refused("node-1", Some(attester(&cert, &key)), forged).await;
        harness.stop().await;
    });
}

#[test]
fn an_expired_certificate_is_refused_at_the_gateway_time() {
    run(async {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = Ca::new("operator CA", alg);
        let (cert, key) = ca.issue(Some("node-1"), &["node-1"], alg);
        let validator = X509Validator::from_pem(ca.pem.as_bytes()).unwrap();
        // The same certificate at a virtual time after its notAfter...
        let harness = Harness::start(validator.clone(), LATER).await;
        harness
            .refused(
                "node-1",
                Some(attester(&cert, &key)),
                |r| matches!(r, X509Refusal::Chain { reason, now } if reason.contains("Expired") && *now == LATER),
            )
            .await;
        harness.stop().await;
        // ...and within its validity period.
        let harness = Harness::start(validator, NOW).await;
        harness.join("node-1", Some(attester(&cert, &key))).await.unwrap();
        harness.stop().await;
    });
}

#[test]
fn a_signature_over_another_binding_is_refused() {
    run(async {
        let alg = &rcgen::PKCS_ED25519;
        let ca = Ca::new("operator CA", alg);
        let (cert, key) = ca.issue(Some("node-1"), &["node-1"], alg);
        let harness = Harness::start(X509Validator::from_pem(ca.pem.as_bytes()).unwrap(), NOW).await;
        harness
            .refused("node-1", Some(OtherBinding(attester(&cert, &key))), |r| {
                matches!(r, X509Refusal::Signature { .. })
            })
            .await;
        harness.stop().await;
    });
}

#[test]
fn a_client_id_other_than_the_certificate_name_is_refused_when_the_policy_requires_it() {
    run(async {
        let alg = &rcgen::PKCS_ED25519;
        let ca = Ca::new("operator CA", alg);
        let (cert, key) = ca.issue(Some("node-1"), &["node-1"], alg);
        let validator = X509Validator::from_pem(ca.pem.as_bytes()).unwrap();
        let harness = Harness::start(validator.clone().name_is_client_id(true), NOW).await;
        harness
            .refused("node-2", Some(attester(&cert, &key)), |r| {
                matches!(r, X509Refusal::NameMismatch { name, client_id } if name == "node-1" && client_id.as_str() == "node-2")
            })
            .await;
        harness.stop().await;
        // Without the policy the name is attested and the application decides.
        let harness = Harness::start(validator, NOW).await;
        let admitted = harness.admitted.clone();
        let keyrings = MemoryKeyringStore::new();
        let agent = Agent::default().with_attester(attester(&cert, &key));
        agent
            .join(&harness.addr, harness.token.clone(), &[harness.gateway.pin()], id("node-2"), &keyrings)
            .await
            .unwrap();
        assert_eq!(*admitted.lock().unwrap(), [(id("node-2"), Some("node-1".to_owned()))]);
        harness.stop().await;
    });
}

#[test]
fn a_gateway_that_requires_attestation_refuses_an_agent_without_evidence() {
    run(async {
        let ca = Ca::new("operator CA", &rcgen::PKCS_ED25519);
        let validator = X509Validator::from_pem(ca.pem.as_bytes()).unwrap();
        let harness = Harness::start(validator.clone().require_attestation(true), NOW).await;
        harness.refused("node-1", None::<X509Attester>, |r| matches!(r, X509Refusal::Missing)).await;
        harness.stop().await;
        // Not required: the agent joins on its token alone, attesting nothing.
        let harness = Harness::start(validator, NOW).await;
        let keyrings = MemoryKeyringStore::new();
        let pins = [harness.gateway.pin()];
        let agent = Agent::default();
        let session = agent.join(&harness.addr, harness.token.clone(), &pins, id("node-1"), &keyrings).await.unwrap();
        let ticket = boarding_smol::ticket::Ticket::decode(&session.peer().ticket).unwrap();
        assert_eq!(ticket.application, b"ticket for ");
        session.close().await.unwrap();
        assert_eq!(*harness.admitted.lock().unwrap(), [(id("node-1"), None)]);
        harness.stop().await;
    });
}

#[test]
fn a_leaf_without_digital_signature_or_client_auth_is_refused() {
    run(async {
        let alg = &rcgen::PKCS_ED25519;
        let ca = Ca::new("operator CA", alg);
        let harness = Harness::start(X509Validator::from_pem(ca.pem.as_bytes()).unwrap(), NOW).await;
        let (cert, key) =
            ca.issue_with(Some("node-1"), &[], alg, |p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]);
        harness.refused("node-1", Some(attester(&cert, &key)), |r| matches!(r, X509Refusal::KeyUsage)).await;
        let (cert, key) = ca.issue_with(Some("node-1"), &[], alg, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        });
        harness
            .refused(
                "node-1",
                Some(attester(&cert, &key)),
                |r| matches!(r, X509Refusal::Chain { reason, .. } if reason.contains("RequiredEkuNotFound")),
            )
            .await;
        harness.stop().await;
    });
}

#[test]
fn the_attester_checks_its_key_against_its_certificate() {
    let alg = &rcgen::PKCS_ED25519;
    let ca = Ca::new("operator CA", alg);
    let (cert, _) = ca.issue(Some("node-1"), &[], alg);
    let (_, other_key) = ca.issue(Some("node-2"), &[], alg);
    assert!(matches!(X509Attester::from_pem(cert.as_bytes(), other_key.as_bytes()), Err(X509Error::KeyMismatch)));
    let (p256_cert, p256_key) = ca.issue(Some("node-3"), &[], &rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(matches!(X509Attester::from_pem(p256_cert.as_bytes(), b"not a key"), Err(X509Error::Key { .. })));
    assert!(matches!(X509Attester::from_pem(b"", p256_key.as_bytes()), Err(X509Error::NoCertificate { .. })));
    let attester = attester(&p256_cert, &p256_key);
    let debug = format!("{attester:?}");
    assert!(debug.contains("<redacted>") && !debug.contains("PRIVATE"), "{debug}");
    assert!(X509Validator::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
}
