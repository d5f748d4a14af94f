//! Client certificates at join, after the kubelet's TLS bootstrap: the agent makes a key
//! pair and sends a certificate signing request with its join (a [`Request`] part), the
//! gateway's [`CertificateAuthority`] signs it (the client id as the subject alternative
//! name, the operator's [`CertificatePolicy`] for the lifetime and the names), and the
//! certificate comes back in the join's [`Ticket`]. The agent stores the key and the
//! certificate ([`NodeCertificate`]) before it confirms the join; a resume past two
//! thirds of the certificate's lifetime sends a new request and gets a new certificate
//! (`spec/PROTOCOL.md` §7.10).
//!
//! [`Request`]: crate::ticket::Request
//! [`Ticket`]: crate::ticket::Ticket

use std::collections::BTreeMap;
use std::fmt;

use boarding::UnixTime;
use boarding::attestation::AttestedIdentity;
use boarding::identity::ClientId;
use zeroize::Zeroizing;

/// Who a certificate is for: what the handshake verified about the client.
#[derive(Debug, Clone, Copy)]
pub struct NodeSubject<'a> {
    /// Its client id: the common name and the one DNS subject alternative name.
    pub client_id: &'a ClientId,
    /// The labels of the token it joined with.
    pub labels: &'a BTreeMap<String, String>,
    /// Who its join's evidence attested it to be.
    pub attested: Option<&'a AttestedIdentity>,
}

/// What the gateway needs of a certificate authority: a certificate (DER) for the key in
/// a signing request, naming `subject`, valid from about `now`. The `ca` feature's
/// [`CertificateAuthority`] is one; an embedder may bring another (an HSM-held CA, say).
pub trait CertificateSigner: Send + Sync + 'static {
    /// Signs a node certificate over the key in `csr_der` for `subject`.
    ///
    /// # Errors
    ///
    /// Why it will not: the request does not verify, or the certificate cannot be made.
    /// The agent is refused (`AdmissionRefused` at a join, no certificate at a resume);
    /// the gateway logs the reason.
    fn sign(
        &self,
        csr_der: &[u8],
        subject: &NodeSubject<'_>,
        now: UnixTime,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>;
}

/// The key and certificate the gateway's CA issued to this node, as the agent stores
/// them. The key never leaves the agent; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCertificate {
    /// The node's private key, PKCS#8 in PEM.
    #[serde(with = "secret_pem")]
    key_pem: Zeroizing<String>,
    /// The certificate, DER.
    certificate_der: Vec<u8>,
    /// Its validity period (Unix seconds), read from the certificate when it was stored.
    not_before: UnixTime,
    not_after: UnixTime,
}

impl fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertificate")
            .field("key_pem", &"<redacted>")
            .field("certificate_der", &format_args!("{} bytes", self.certificate_der.len()))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The key PEM is read into a `String` that `Zeroizing` then owns, without a copy.
mod secret_pem {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(pem: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(pem)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
        String::deserialize(d).map(Zeroizing::new)
    }
}

impl NodeCertificate {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The certificate in PEM (`-----BEGIN CERTIFICATE-----`).
    #[cfg(feature = "ca")]
    pub fn certificate_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.certificate_der.clone()))
    }

    /// When the certificate becomes valid (Unix seconds).
    pub fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// When it expires (Unix seconds).
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The moment a resume renews it: two thirds of the way through its validity period
    /// (the kubelet's rotation point), so a renewal that fails has a third of the
    /// lifetime left to be retried.
    pub fn renew_at(&self) -> UnixTime {
        let lifetime = self.not_after.saturating_sub(self.not_before);
        // ⌊2L/3⌋ without overflow, for L = 3q + r: 2q + ⌊2r/3⌋.
        let two_thirds = (lifetime / 3).saturating_mul(2).saturating_add((lifetime % 3).saturating_mul(2) / 3);
        self.not_before.saturating_add(two_thirds)
    }

    /// Whether a resume at `now` should renew it.
    pub fn renewal_due(&self, now: UnixTime) -> bool {
        now >= self.renew_at()
    }
}

#[cfg(feature = "ca")]
pub use authority::{CertificateAuthority, CertificateError, CertificatePolicy, NodeKey, ca_certificate_pem};

#[cfg(feature = "ca")]
mod authority {
    use std::time::Duration;

    use boarding::UnixTime;
    use boarding::identity::{ClientId, ServerIdentity};
    use hkdf::Hkdf;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };
    use rustls_pki_types::{CertificateSigningRequestDer, PrivatePkcs8KeyDer};
    use sha2::Sha256;
    use zeroize::Zeroizing;

    use super::{CertificateSigner, NodeCertificate, NodeSubject};

    /// The HKDF label that derives the CA key from the identity seed.
    const CA_KEY_LABEL: &[u8] = b"boarding v1 client certificate authority";
    /// How far a node certificate's validity starts before its issue, for relying
    /// services whose clocks run a little behind the gateway's (as Kubernetes' signer).
    const BACKDATE: u64 = 5 * 60;

    /// Why a certificate could not be made or read.
    #[derive(Debug, thiserror::Error)]
    pub enum CertificateError {
        /// The signing request does not parse, its signature does not verify (the
        /// requester does not hold the key), or it uses an algorithm or extension this
        /// CA does not sign.
        #[error("the certificate signing request is not acceptable: {0}")]
        Request(rcgen::Error),
        /// The certificate in a ticket does not parse as X.509.
        #[error("the issued certificate does not parse: {0}")]
        Certificate(String),
        /// A key could not be made, loaded or encoded.
        #[error("certificate key: {0}")]
        Key(rcgen::Error),
        /// The certificate could not be made (a name or a date out of range).
        #[error("making the certificate: {0}")]
        Signing(rcgen::Error),
        /// The lifetime is zero or runs past the year 9999.
        #[error("a certificate lifetime of {0:?} is not usable")]
        Lifetime(Duration),
        /// The operating system's RNG failed (for a serial number).
        #[error("the operating system's RNG failed")]
        Randomness,
    }

    /// How the gateway's CA fills in a node certificate. Only the key comes from the
    /// agent's request: names, usages and dates are the gateway's, so a request cannot
    /// ask for more than this policy gives.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CertificatePolicy {
        /// How long a certificate is valid from its issue. Default 30 days.
        pub lifetime: Duration,
        /// A token label whose value becomes the certificate's organization (`O`), as
        /// Kubernetes reads groups from `O`; `None` for no organization.
        pub organization_label: Option<String>,
        /// Whether the attested name, when the join attested one, becomes the
        /// certificate's organizational unit (`OU`).
        pub attested_unit: bool,
    }

    impl Default for CertificatePolicy {
        fn default() -> Self {
            Self { lifetime: Duration::from_secs(30 * 24 * 3600), organization_label: None, attested_unit: false }
        }
    }

    /// The gateway's certificate authority for node certificates.
    ///
    /// Its Ed25519 key is derived from the gateway's identity seed with HKDF-SHA256 (label
    /// `boarding v1 client certificate authority`): a key apart from the identity key (no
    /// signature by one is one by the other), yet the same on every replica of the
    /// gateway and across restarts, with no second secret to store or share. Its
    /// certificate is made deterministically from that key, so every replica prints the
    /// same CA certificate (`boarding gateway ca`).
    pub struct CertificateAuthority {
        issuer: Issuer<'static, KeyPair>,
        certificate_der: Vec<u8>,
        policy: CertificatePolicy,
    }

    impl std::fmt::Debug for CertificateAuthority {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CertificateAuthority")
                .field("key", &"<redacted>")
                .field("policy", &self.policy)
                .finish_non_exhaustive()
        }
    }

    fn ed25519_pkcs8(seed: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, CertificateError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let der = ed25519_dalek::SigningKey::from_bytes(seed)
            .to_pkcs8_der()
            .map_err(|_| CertificateError::Key(rcgen::Error::CouldNotParseKeyPair))?;
        Ok(Zeroizing::new(der.as_bytes().to_vec()))
    }

    impl CertificateAuthority {
        /// The CA of the gateway with this identity.
        ///
        /// # Errors
        ///
        /// [`CertificateError`] if the key or the certificate cannot be made (not with a
        /// valid identity).
        pub fn for_identity(identity: &ServerIdentity) -> Result<Self, CertificateError> {
            let mut seed = Zeroizing::new([0u8; 32]);
            Hkdf::<Sha256>::new(None, &identity.to_seed()[..])
                .expand(CA_KEY_LABEL, &mut seed[..])
                .map_err(|_| CertificateError::Key(rcgen::Error::CouldNotParseKeyPair))?;
            let pkcs8 = ed25519_pkcs8(&seed)?;
            let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_slice());
            let key =
                KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519).map_err(CertificateError::Key)?;
            let params = Self::params(&identity.pin().to_string(), &key)?;
            let certificate = params.self_signed(&key).map_err(CertificateError::Signing)?;
            Ok(Self {
                certificate_der: certificate.der().to_vec(),
                issuer: Issuer::new(params, key),
                policy: CertificatePolicy::default(),
            })
        }

        /// Issues under `policy` (lifetime and names) instead of the default.
        ///
        /// # Errors
        ///
        /// [`CertificateError::Lifetime`] for a lifetime that is zero or ends past the
        /// year 9999 from now on.
        pub fn with_policy(mut self, policy: CertificatePolicy) -> Result<Self, CertificateError> {
            validity(crate::unix_now(), policy.lifetime)?;
            self.policy = policy;
            Ok(self)
        }

        /// The policy it issues under.
        pub fn policy(&self) -> &CertificatePolicy {
            &self.policy
        }

        fn params(pin: &str, key: &KeyPair) -> Result<CertificateParams, CertificateError> {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CertificateError::Signing)?;
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::OrganizationName, "Boarding");
            // X.509 bounds a CN at 64 characters: the pin's digest part names the gateway.
            let short = pin.strip_prefix("sha256:").unwrap_or(pin);
            let name = format!("boarding client CA {}", short.get(..16).unwrap_or(short));
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            // Fixed dates and a serial from the key: the same certificate every time.
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(9999, 12, 31);
            let digest = <sha2::Sha256 as sha2::Digest>::digest(key.public_key_raw());
            let mut serial = digest.get(..16).map(<[u8]>::to_vec).unwrap_or_default();
            if let Some(first) = serial.first_mut() {
                // A positive INTEGER.
                *first &= 0x7f;
            }
            params.serial_number = Some(SerialNumber::from(serial));
            Ok(params)
        }

        /// The CA certificate, DER.
        pub fn certificate_der(&self) -> &[u8] {
            &self.certificate_der
        }

        /// The CA certificate in PEM, for the services that verify node certificates.
        pub fn certificate_pem(&self) -> String {
            pem::encode(&pem::Pem::new("CERTIFICATE", self.certificate_der.clone()))
        }

        /// Signs a node certificate for `subject` over the key in `csr_der`, valid from
        /// five minutes before `now` until `now` plus the policy's lifetime. The request's
        /// signature must verify (the requester holds the key); its names and extensions
        /// are ignored.
        ///
        /// # Errors
        ///
        /// [`CertificateError::Request`] for a request that does not parse or verify;
        /// [`CertificateError::Lifetime`] for an unusable lifetime;
        /// [`CertificateError::Signing`] if the certificate cannot be made.
        pub fn issue(
            &self,
            csr_der: &[u8],
            subject: &NodeSubject<'_>,
            now: UnixTime,
        ) -> Result<Vec<u8>, CertificateError> {
            let policy = &self.policy;
            let request = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CertificateError::Request)?;
            let client_id = subject.client_id.as_str();
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CertificateError::Signing)?;
            let dns = client_id.to_owned().try_into().map_err(CertificateError::Signing)?;
            params.subject_alt_names = vec![SanType::DnsName(dns)];
            params.distinguished_name = DistinguishedName::new();
            if let Some(org) = policy.organization_label.as_ref().and_then(|label| subject.labels.get(label)) {
                params.distinguished_name.push(DnType::OrganizationName, org.as_str());
            }
            if let Some(attested) = subject.attested.filter(|_| policy.attested_unit) {
                params.distinguished_name.push(DnType::OrganizationalUnitName, attested.name());
            }
            params.distinguished_name.push(DnType::CommonName, client_id);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let (not_before, not_after) = validity(now, policy.lifetime)?;
            params.not_before = not_before;
            params.not_after = not_after;
            let mut serial = [0u8; 16];
            rand_core::TryRng::try_fill_bytes(&mut getrandom::SysRng, &mut serial)
                .map_err(|_| CertificateError::Randomness)?;
            serial[0] &= 0x7f;
            params.serial_number = Some(SerialNumber::from_slice(&serial));
            let signed = CertificateSigningRequestParams { params, public_key: request.public_key };
            Ok(signed.signed_by(&self.issuer).map_err(CertificateError::Signing)?.der().to_vec())
        }
    }

    impl CertificateSigner for CertificateAuthority {
        fn sign(
            &self,
            csr_der: &[u8],
            subject: &NodeSubject<'_>,
            now: UnixTime,
        ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
            Ok(self.issue(csr_der, subject, now)?)
        }
    }

    fn validity(
        now: UnixTime,
        lifetime: Duration,
    ) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertificateError> {
        let unusable = || CertificateError::Lifetime(lifetime);
        if lifetime.is_zero() {
            return Err(unusable());
        }
        let at = |secs: u64| {
            i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .filter(|t| t.year() <= 9999)
                .ok_or_else(unusable)
        };
        Ok((at(now.saturating_sub(BACKDATE))?, at(now.checked_add(lifetime.as_secs()).ok_or_else(unusable)?)?))
    }

    /// The PEM of the CA certificate for `identity` (what `boarding gateway ca` prints).
    ///
    /// # Errors
    ///
    /// As [`CertificateAuthority::for_identity`].
    pub fn ca_certificate_pem(identity: &ServerIdentity) -> Result<String, CertificateError> {
        CertificateAuthority::for_identity(identity).map(|ca| ca.certificate_pem())
    }

    /// A key the agent makes for its certificate (ECDSA P-256, which every TLS stack
    /// accepts), and the signing request that proves it holds it.
    pub struct NodeKey {
        key: KeyPair,
    }

    impl std::fmt::Debug for NodeKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("NodeKey(<redacted>)")
        }
    }

    impl NodeKey {
        /// A fresh key from the operating system's RNG.
        ///
        /// # Errors
        ///
        /// [`CertificateError::Key`] if no key can be made.
        pub fn generate() -> Result<Self, CertificateError> {
            Ok(Self { key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertificateError::Key)? })
        }

        /// A PKCS#10 signing request (DER) naming `client_id`, signed with this key. The
        /// gateway ignores the names in it: they only make the request readable.
        ///
        /// # Errors
        ///
        /// [`CertificateError::Signing`] if the request cannot be made.
        pub fn signing_request(&self, client_id: &ClientId) -> Result<Vec<u8>, CertificateError> {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CertificateError::Signing)?;
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, client_id.as_str());
            let csr = params.serialize_request(&self.key).map_err(CertificateError::Signing)?;
            Ok(csr.der().to_vec())
        }

        /// This key with the certificate the gateway issued for it, ready to store.
        ///
        /// # Errors
        ///
        /// [`CertificateError::Certificate`] if `certificate_der` is not an X.509
        /// certificate, or certifies another key.
        pub fn with_certificate(&self, certificate_der: Vec<u8>) -> Result<NodeCertificate, CertificateError> {
            let bad = |reason: &str| CertificateError::Certificate(reason.to_owned());
            let (rest, parsed) = x509_parser::parse_x509_certificate(&certificate_der)
                .map_err(|e| CertificateError::Certificate(e.to_string()))?;
            if !rest.is_empty() {
                return Err(bad("bytes follow the certificate"));
            }
            if parsed.public_key().subject_public_key.data.as_ref() != self.key.public_key_raw() {
                return Err(bad("it certifies another key than the one this agent asked for"));
            }
            let seconds = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
            let (not_before, not_after) =
                (seconds(&parsed.validity().not_before), seconds(&parsed.validity().not_after));
            Ok(NodeCertificate {
                key_pem: Zeroizing::new(self.key.serialize_pem()),
                certificate_der,
                not_before,
                not_after,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::BTreeMap;

        use super::*;

        fn identity() -> ServerIdentity {
            ServerIdentity::from_seed([7; 32])
        }

        #[test]
        fn the_ca_is_the_same_for_an_identity_and_apart_from_its_key() {
            let a = CertificateAuthority::for_identity(&identity()).unwrap();
            let b = CertificateAuthority::for_identity(&identity()).unwrap();
            assert_eq!(a.certificate_der(), b.certificate_der(), "byte-identical on every replica");
            let other = CertificateAuthority::for_identity(&ServerIdentity::from_seed([8; 32])).unwrap();
            assert_ne!(a.certificate_der(), other.certificate_der());
            let (_, ca) = x509_parser::parse_x509_certificate(a.certificate_der()).unwrap();
            assert_ne!(ca.public_key().subject_public_key.data.as_ref(), identity().public_key().as_bytes());
            assert!(ca.is_ca());
        }

        #[test]
        fn the_ca_key_is_the_spec_derivation_of_the_identity_seed() {
            // spec/PROTOCOL.md §7.10, recomputed with the primitives alone.
            let seed = [7u8; 32];
            let mut ca_seed = [0u8; 32];
            Hkdf::<Sha256>::new(Some(&[0u8; 32]), &seed)
                .expand(b"boarding v1 client certificate authority", &mut ca_seed)
                .unwrap();
            let public = ed25519_dalek::SigningKey::from_bytes(&ca_seed).verifying_key();
            let ca = CertificateAuthority::for_identity(&ServerIdentity::from_seed(seed)).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(ca.certificate_der()).unwrap();
            assert_eq!(cert.public_key().subject_public_key.data.as_ref(), public.as_bytes());
            let pin = ServerIdentity::from_seed(seed).pin().to_string();
            let digits = pin.strip_prefix("sha256:").unwrap();
            let expected = format!("O=Boarding, CN=boarding client CA {}", &digits[..16]);
            assert_eq!(cert.subject().to_string(), expected);
            assert_eq!(cert.validity().not_after.to_datetime().year(), 9999);
        }

        #[test]
        fn a_request_gets_the_client_id_the_policy_names_and_the_lifetime() {
            let key = NodeKey::generate().unwrap();
            let client_id = ClientId::new("node-7").unwrap();
            let labels = BTreeMap::from([("group".to_owned(), "workers".to_owned())]);
            let subject = NodeSubject { client_id: &client_id, labels: &labels, attested: None };
            let policy = CertificatePolicy {
                lifetime: Duration::from_secs(3600),
                organization_label: Some("group".into()),
                ..CertificatePolicy::default()
            };
            let ca = CertificateAuthority::for_identity(&identity()).unwrap().with_policy(policy).unwrap();
            let der = ca.issue(&key.signing_request(&client_id).unwrap(), &subject, 1_800_000_000).unwrap();
            let stored = key.with_certificate(der.clone()).unwrap();
            assert_eq!(stored.not_before(), 1_800_000_000 - BACKDATE);
            assert_eq!(stored.not_after(), 1_800_003_600);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert_eq!(cert.subject().to_string(), "O=workers, CN=node-7");
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(format!("{:?}", san.value.general_names), r#"[DNSName("node-7")]"#);
            assert!(
                cert.verify_signature(Some(
                    &x509_parser::parse_x509_certificate(ca.certificate_der()).unwrap().1.tbs_certificate.subject_pki
                ))
                .is_ok()
            );
            // Another agent's key cannot claim this certificate.
            assert!(NodeKey::generate().unwrap().with_certificate(der).is_err());
        }

        #[test]
        fn a_request_whose_signature_fails_or_that_is_no_request_is_refused() {
            let ca = CertificateAuthority::for_identity(&identity()).unwrap();
            let client_id = ClientId::new("node-8").unwrap();
            let labels = BTreeMap::new();
            let subject = NodeSubject { client_id: &client_id, labels: &labels, attested: None };
            let mut csr = NodeKey::generate().unwrap().signing_request(&client_id).unwrap();
            let last = csr.len() - 1;
            csr[last] ^= 1;
            assert!(matches!(ca.issue(&csr, &subject, 1_800_000_000), Err(CertificateError::Request(_))));
            assert!(matches!(ca.issue(b"junk", &subject, 1_800_000_000), Err(CertificateError::Request(_))));
            let zero = CertificatePolicy { lifetime: Duration::ZERO, ..CertificatePolicy::default() };
            assert!(matches!(ca.with_policy(zero), Err(CertificateError::Lifetime(_))));
        }

        #[test]
        fn renewal_falls_due_two_thirds_of_the_way_through() {
            let cert = NodeCertificate {
                key_pem: Zeroizing::new(String::new()),
                certificate_der: Vec::new(),
                not_before: 1_000,
                not_after: 1_000 + 3_000,
            };
            assert_eq!(cert.renew_at(), 3_000);
            assert!(!cert.renewal_due(2_999));
            assert!(cert.renewal_due(3_000));
            assert!(format!("{cert:?}").contains("<redacted>"));
        }
    }
}
