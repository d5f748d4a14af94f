//! Node attestation with no special hardware, after SPIRE's `x509pop` node attestor: the
//! node holds a private key and a certificate chain an operator CA issued for it, and
//! proves possession of the key by signing the session's attestation binding
//! (`spec/PROTOCOL.md` §7.3.1; the evidence format is §7.9).
//!
//! * [`X509Attester`] (the agent's [`Attester`]): the chain and the key, from PEM as
//!   `openssl` writes them: the key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`, what
//!   `openssl genpkey` writes) for Ed25519 or ECDSA P-256, or as SEC1
//!   (`-----BEGIN EC PRIVATE KEY-----`, what `openssl ecparam -genkey` writes) for P-256.
//! * [`X509Validator`] (the gateway's [`Validator`]): verifies the chain against the
//!   configured CA certificates with `rustls-webpki` at the gateway's time, the key usage,
//!   and the signature over the binding the gateway computed, and attests the leaf's
//!   name: its subject CN, or, without one, its first DNS subjectAltName. Options require
//!   evidence ([`X509Validator::require_attestation`]) and require the client id to be
//!   that name ([`X509Validator::name_is_client_id`]).
//!
//! Evidence is decoded only through the protocol's bounds-checked reader: every length is
//! checked against its limit before it is used, and bytes left over are refused.
//!
//! ```text
//! evidence  = 0x01 || count (1-4) || count × (len16 || DER) || scheme (u16) || len16 || signature
//! signature = Sign(node key, "boarding v1 x509pop signature" || 0x00 || binding)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use boarding::UnixTime;
use boarding::attestation::{AttestationBinding, AttestedIdentity, AttestedIdentityError, MAX_ATTRIBUTE_VALUE_LEN};
use boarding::codec::{DecodeError, Reader, put_bytes_u16};
use boarding::identity::ClientId;
use boarding::messages::MAX_EVIDENCE;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, TrustAnchor};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroize;

use crate::handshake::{AttestError, AttestationRefused, Attester, EvidenceRequest, Validator};

/// The format byte of `x509pop` v1 evidence.
pub const FORMAT_X509POP_V1: u8 = 0x01;
/// What the node key signs, before the binding.
pub const SIGNATURE_CONTEXT: &[u8] = b"boarding v1 x509pop signature\x00";
/// Most certificates in the evidence (the leaf and its intermediates).
pub const MAX_CERTS: usize = 4;
/// Longest certificate in the evidence, in DER bytes.
pub const MAX_CERT_LEN: usize = MAX_EVIDENCE;
/// Longest signature in the evidence.
pub const MAX_SIGNATURE_LEN: usize = 512;

/// The node key's signature scheme, by its TLS 1.3 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Ed25519 (`0x0807`).
    Ed25519,
    /// ECDSA over P-256 with SHA-256, DER signature (`0x0403`).
    EcdsaP256Sha256,
}

impl Scheme {
    /// The scheme's TLS 1.3 `SignatureScheme` code.
    pub fn code(self) -> u16 {
        match self {
            Self::Ed25519 => 0x0807,
            Self::EcdsaP256Sha256 => 0x0403,
        }
    }

    /// The scheme of a code, if it is one of these.
    pub fn from_code(code: u16) -> Option<Self> {
        [Self::Ed25519, Self::EcdsaP256Sha256].into_iter().find(|s| s.code() == code)
    }

    fn verifier(self) -> &'static dyn SignatureVerificationAlgorithm {
        match self {
            Self::Ed25519 => webpki::aws_lc_rs::ED25519,
            Self::EcdsaP256Sha256 => webpki::aws_lc_rs::ECDSA_P256_SHA256,
        }
    }
}

/// `x509pop` v1 evidence, decoded (borrowing the bytes it was decoded from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Evidence<'a> {
    /// The leaf certificate first, then intermediates towards the CA (DER).
    pub certs: Vec<&'a [u8]>,
    /// The signature's scheme.
    pub scheme: Scheme,
    /// The signature over [`SIGNATURE_CONTEXT`] and the binding.
    pub signature: &'a [u8],
}

impl<'a> X509Evidence<'a> {
    /// Decodes evidence strictly (`spec/PROTOCOL.md` §7.9).
    ///
    /// # Errors
    ///
    /// [`X509Refusal::Malformed`] for a field cut short, a count or length outside its
    /// limits or bytes left over; [`X509Refusal::UnknownFormat`] and
    /// [`X509Refusal::UnknownScheme`] for values this version does not define.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, X509Refusal> {
        let mut r = Reader::new(bytes);
        let format = r.u8("format")?;
        if format != FORMAT_X509POP_V1 {
            return Err(X509Refusal::UnknownFormat(format));
        }
        let count = Reader::check_count("certificate count", usize::from(r.u8("certificate count")?), 1, MAX_CERTS)?;
        let mut certs = Vec::with_capacity(count);
        for _ in 0..count {
            certs.push(r.bytes_u16("certificate", 1, MAX_CERT_LEN)?);
        }
        let code = r.u16("signature scheme")?;
        let scheme = Scheme::from_code(code).ok_or(X509Refusal::UnknownScheme(code))?;
        let signature = r.bytes_u16("signature", 1, MAX_SIGNATURE_LEN)?;
        r.finish("x509pop evidence")?;
        Ok(Self { certs, scheme, signature })
    }

    /// The evidence's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_X509POP_V1, u8::try_from(self.certs.len()).unwrap_or(u8::MAX)];
        for cert in &self.certs {
            put_bytes_u16(&mut out, cert);
        }
        out.extend_from_slice(&self.scheme.code().to_be_bytes());
        put_bytes_u16(&mut out, self.signature);
        out
    }
}

/// What the node key signs for `binding`.
pub fn signed_message(binding: &AttestationBinding) -> Vec<u8> {
    [SIGNATURE_CONTEXT, binding.as_bytes()].concat()
}

/// Why an attester or a validator could not be set up from its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no certificate.
    #[error("{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// What was read.
        what: String,
    },
    /// A PEM section could not be read.
    #[error("{what} is not valid PEM: {reason}")]
    Pem {
        /// What was read.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// A certificate could not be parsed or used.
    #[error("{what}: {reason}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// Why.
        reason: String,
    },
    /// The private key is not one this attester uses.
    #[error(
        "the node key is not an Ed25519 or ECDSA P-256 private key in PKCS#8 (-----BEGIN PRIVATE KEY-----) or, for \
         P-256, SEC1 (-----BEGIN EC PRIVATE KEY-----) PEM: {reason}"
    )]
    Key {
        /// Why.
        reason: String,
    },
    /// The private key is not the one the leaf certificate certifies.
    #[error("the node key does not match the public key of the first certificate in the chain")]
    KeyMismatch,
    /// The chain does not fit into the evidence.
    #[error(
        "the certificate chain has {count} certificates of {len} bytes in all; the evidence allows {MAX_CERTS} in {MAX_EVIDENCE} bytes"
    )]
    TooLarge {
        /// Certificates.
        count: usize,
        /// Their DER bytes.
        len: usize,
    },
}

/// Why a validator refused evidence (the agent is told `AttestationRefused`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509Refusal {
    /// The gateway requires attestation and the agent sent none.
    #[error("the agent sent no attestation evidence and this gateway requires it")]
    Missing,
    /// The evidence does not decode.
    #[error("the evidence is not x509pop v1 evidence: {0}")]
    Malformed(#[from] DecodeError),
    /// An evidence format this version does not define.
    #[error("unknown evidence format 0x{0:02x} (x509pop v1 is 0x01)")]
    UnknownFormat(u8),
    /// A signature scheme this version does not define.
    #[error("unknown signature scheme 0x{0:04x} (Ed25519 is 0x0807, ECDSA P-256 SHA-256 is 0x0403)")]
    UnknownScheme(u16),
    /// The chain does not verify against the configured CAs at the gateway's time.
    #[error("the certificate chain does not verify against the trusted CAs at {now}: {reason}")]
    Chain {
        /// rustls-webpki's reason (an unknown issuer, an expired certificate, ...).
        reason: String,
        /// The time it was judged at (Unix seconds).
        now: UnixTime,
    },
    /// The leaf's key usage does not allow signatures.
    #[error("the node certificate's key usage does not include digitalSignature")]
    KeyUsage,
    /// The signature does not verify over this session's binding.
    #[error("the signature does not verify over this session's binding with the certificate's key: {reason}")]
    Signature {
        /// Why (a replay from another session, another key, another scheme).
        reason: String,
    },
    /// The leaf names nothing to attest.
    #[error("the node certificate has no subject CN and no DNS subjectAltName")]
    NoName,
    /// The client id is not the attested name, and the gateway requires it to be.
    #[error("the client id {client_id} is not the certificate's name {name:?}, and this gateway requires it to be")]
    NameMismatch {
        /// The certificate's name.
        name: String,
        /// The client id the agent asked for.
        client_id: ClientId,
    },
    /// The name does not fit an attested identity.
    #[error("the certificate's name cannot be attested: {0}")]
    Identity(AttestedIdentityError),
}

fn read(path: &Path) -> Result<Vec<u8>, X509Error> {
    std::fs::read(path).map_err(|source| X509Error::Read { path: path.to_owned(), source })
}

/// Every certificate of a PEM text, in order.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, X509Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| X509Error::Pem { what: what.to_owned(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(X509Error::NoCertificate { what: what.to_owned() });
    }
    Ok(certs)
}

/// The node's private key.
enum NodeKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl NodeKey {
    /// A key from PEM. The DER copy is zeroized once the key is parsed.
    fn from_pem(pem: &[u8]) -> Result<Self, X509Error> {
        let mut der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| X509Error::Key { reason: format!("no private key: {e}") })?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
                .map(Self::Ed25519)
                .or_else(|_| {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.secret_pkcs8_der()).map(Self::P256)
                })
                .map_err(|e| X509Error::Key { reason: format!("a PKCS#8 key of another type or curve ({e})") }),
            PrivateKeyDer::Sec1(sec1) => {
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, sec1.secret_sec1_der())
                    .map(Self::P256)
                    .map_err(|e| X509Error::Key { reason: format!("a SEC1 key not on P-256 ({e})") })
            }
            _ => Err(X509Error::Key { reason: "an RSA (PKCS#1) key".into() }),
        };
        der.zeroize();
        key
    }

    fn scheme(&self) -> Scheme {
        match self {
            Self::Ed25519(_) => Scheme::Ed25519,
            Self::P256(_) => Scheme::EcdsaP256Sha256,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignFailed> {
        match self {
            Self::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            Self::P256(key) => {
                key.sign(&SystemRandom::new(), message).map(|s| s.as_ref().to_vec()).map_err(|_| SignFailed)
            }
        }
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The public half only: the private key is never printed.
        let public = match self {
            Self::Ed25519(key) => key.public_key().as_ref().to_vec(),
            Self::P256(key) => key.public_key().as_ref().to_vec(),
        };
        write!(f, "NodeKey({:?}, public {}, private <redacted>)", self.scheme(), hex(&public))
    }
}

/// The node key could not sign (the system's random number generator failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node key could not sign (the system random number generator failed)")]
pub struct SignFailed;

/// The agent's `x509pop` attester: signs each session's binding with the node key and
/// sends the chain with it. `Debug` shows the key's public half only.
#[derive(Debug)]
pub struct X509Attester {
    chain: Vec<CertificateDer<'static>>,
    key: NodeKey,
}

impl X509Attester {
    /// An attester from the chain (PEM: the node's certificate first, then intermediates)
    /// and its private key (PEM, see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`X509Error::NoCertificate`] or [`X509Error::Pem`] for an unreadable chain,
    /// [`X509Error::Key`] for a key of another kind, [`X509Error::Certificate`] for a
    /// leaf that is not an X.509 certificate, [`X509Error::KeyMismatch`] if the key is not
    /// the leaf's, [`X509Error::TooLarge`] if the chain does not fit into the evidence.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, X509Error> {
        let chain = certificates(chain_pem, "the node certificate chain")?;
        let total = chain.iter().map(|c| c.len()).fold(0usize, usize::saturating_add);
        // Format, count, lengths, scheme and an ECDSA signature must fit in too.
        let overhead = 2usize.saturating_add(chain.len().saturating_mul(2)).saturating_add(4 + 80);
        if chain.len() > MAX_CERTS || total.saturating_add(overhead) > MAX_EVIDENCE {
            return Err(X509Error::TooLarge { count: chain.len(), len: total });
        }
        let key = NodeKey::from_pem(key_pem)?;
        let attester = Self { chain, key };
        // Proves at once that the key is the leaf's, rather than at every join.
        let leaf = attester.leaf()?;
        let probe = signed_message(&AttestationBinding::from_bytes([0; 32]));
        let signature = attester.key.sign(&probe).map_err(|e| X509Error::Key { reason: e.to_string() })?;
        leaf.verify_signature(attester.key.scheme().verifier(), &probe, &signature)
            .map_err(|_| X509Error::KeyMismatch)?;
        Ok(attester)
    }

    /// [`X509Attester::from_pem`] from two files.
    ///
    /// # Errors
    ///
    /// [`X509Error::Read`] if a file cannot be read, and any error of [`X509Attester::from_pem`].
    pub fn from_files(chain: &Path, key: &Path) -> Result<Self, X509Error> {
        let chain_pem = read(chain)?;
        let mut key_pem = read(key)?;
        let attester = Self::from_pem(&chain_pem, &key_pem);
        key_pem.zeroize();
        attester
    }

    fn leaf(&self) -> Result<EndEntityCert<'_>, X509Error> {
        let first = self.chain.first().ok_or_else(|| X509Error::NoCertificate { what: "the chain".into() })?;
        EndEntityCert::try_from(first)
            .map_err(|e| X509Error::Certificate { what: "the node certificate".into(), reason: e.to_string() })
    }

    /// The evidence for `binding`.
    ///
    /// # Errors
    ///
    /// [`SignFailed`] if the key cannot sign.
    pub fn evidence(&self, binding: &AttestationBinding) -> Result<Vec<u8>, SignFailed> {
        let signature = self.key.sign(&signed_message(binding))?;
        let evidence = X509Evidence {
            certs: self.chain.iter().map(|c| c.as_ref()).collect(),
            scheme: self.key.scheme(),
            signature: &signature,
        };
        Ok(evidence.encode())
    }
}

impl Attester for X509Attester {
    fn attest(&self, binding: &AttestationBinding) -> Result<Vec<u8>, AttestError> {
        self.evidence(binding).map_err(AttestError::new)
    }
}

/// The gateway's `x509pop` validator (see the [module docs](self) and
/// `spec/PROTOCOL.md` §7.9).
#[derive(Debug, Clone)]
pub struct X509Validator {
    anchors: Vec<TrustAnchor<'static>>,
    require: bool,
    name_is_client_id: bool,
}

impl X509Validator {
    /// A validator trusting the CA certificates in `ca_pem` (one or more). By default
    /// empty evidence is admitted with no attested identity, and any client id may
    /// carry any certificate's name.
    ///
    /// # Errors
    ///
    /// [`X509Error::NoCertificate`] or [`X509Error::Pem`] for unreadable PEM,
    /// [`X509Error::Certificate`] for a certificate that cannot be a trust anchor.
    pub fn from_pem(ca_pem: &[u8]) -> Result<Self, X509Error> {
        let anchors = certificates(ca_pem, "the CA certificates")?
            .iter()
            .enumerate()
            .map(|(i, cert)| {
                webpki::anchor_from_trusted_cert(cert).map(|a| a.to_owned()).map_err(|e| X509Error::Certificate {
                    what: format!("CA certificate {}", i.saturating_add(1)),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { anchors, require: false, name_is_client_id: false })
    }

    /// [`X509Validator::from_pem`] from a file.
    ///
    /// # Errors
    ///
    /// [`X509Error::Read`] if the file cannot be read, and any error of [`X509Validator::from_pem`].
    pub fn from_file(path: &Path) -> Result<Self, X509Error> {
        Self::from_pem(&read(path)?)
    }

    /// Whether a join without evidence is refused (default: admitted, attesting nothing).
    pub fn require_attestation(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// Whether the client id must equal the certificate's attested name (default: no).
    pub fn name_is_client_id(mut self, required: bool) -> Self {
        self.name_is_client_id = required;
        self
    }

    /// Judges `evidence` for a session with `binding`, a client asking for `client_id`,
    /// at `now` (Unix seconds; the gateway's time, never read here).
    ///
    /// # Errors
    ///
    /// An [`X509Refusal`] saying which check failed, in the order of `spec/PROTOCOL.md` §7.9.
    pub fn verify(
        &self,
        evidence: &[u8],
        binding: &AttestationBinding,
        client_id: &ClientId,
        now: UnixTime,
    ) -> Result<Option<AttestedIdentity>, X509Refusal> {
        if evidence.is_empty() {
            return if self.require { Err(X509Refusal::Missing) } else { Ok(None) };
        }
        let evidence = X509Evidence::decode(evidence)?;
        let (leaf_der, intermediates) = evidence
            .certs
            .split_first()
            .ok_or(X509Refusal::Malformed(DecodeError::TooShort { field: "certificate count", len: 0, min: 1 }))?;
        let leaf_der = CertificateDer::from(*leaf_der);
        let intermediates: Vec<CertificateDer<'_>> = intermediates.iter().map(|c| CertificateDer::from(*c)).collect();
        let chain_error = |e: webpki::Error| X509Refusal::Chain { reason: e.to_string(), now };
        let leaf = EndEntityCert::try_from(&leaf_der).map_err(chain_error)?;
        let time = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now));
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(chain_error)?;
        // The chain verified, so the leaf is well-formed DER; x509-parser reads its names.
        let (_, parsed) = X509Certificate::from_der(&leaf_der)
            .map_err(|e| X509Refusal::Chain { reason: format!("unparsable node certificate: {e}"), now })?;
        if let Ok(Some(usage)) = parsed.key_usage()
            && !usage.value.digital_signature()
        {
            return Err(X509Refusal::KeyUsage);
        }
        leaf.verify_signature(evidence.scheme.verifier(), &signed_message(binding), evidence.signature)
            .map_err(|e| X509Refusal::Signature { reason: e.to_string() })?;
        let identity = identity_of(&parsed, &leaf_der)?;
        if self.name_is_client_id && identity.name() != client_id.as_str() {
            return Err(X509Refusal::NameMismatch { name: identity.name().to_owned(), client_id: client_id.clone() });
        }
        Ok(Some(identity))
    }
}

impl Validator for X509Validator {
    fn validate(&self, request: &EvidenceRequest<'_>) -> Result<Option<AttestedIdentity>, AttestationRefused> {
        self.verify(request.evidence, request.binding, request.client_id, request.now).map_err(AttestationRefused::new)
    }
}

/// The attested identity of a verified leaf: its name (CN, else the first DNS SAN) and
/// the attributes of §7.9 that fit.
fn identity_of(cert: &X509Certificate<'_>, der: &[u8]) -> Result<AttestedIdentity, X509Refusal> {
    let dns: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some((*name).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
    let name = cn.or_else(|| dns.first().cloned()).filter(|n| !n.is_empty()).ok_or(X509Refusal::NoName)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let attributes = [
        ("fingerprint", format!("sha256:{}", hex(digest.as_ref()))),
        ("serial", hex(cert.raw_serial())),
        ("subject", cert.subject().to_string()),
        ("issuer", cert.issuer().to_string()),
        ("dns", dns.join(",")),
    ];
    let mut identity = AttestedIdentity::new(&name).map_err(X509Refusal::Identity)?;
    for (key, value) in attributes {
        if !value.is_empty() && value.len() <= MAX_ATTRIBUTE_VALUE_LEN {
            identity = identity.with_attribute(key, &value).map_err(X509Refusal::Identity)?;
        }
    }
    Ok(identity)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        X509Evidence { certs: vec![&[1, 2, 3], &[4]], scheme: Scheme::Ed25519, signature: &[9; 64] }.encode()
    }

    #[test]
    fn evidence_round_trips_and_decodes_strictly() {
        let bytes = sample();
        let decoded = X509Evidence::decode(&bytes).unwrap();
        assert_eq!(decoded.certs, vec![&[1u8, 2, 3][..], &[4][..]]);
        assert_eq!(decoded.encode(), bytes);
        // Every strict prefix and one trailing byte are refused.
        for n in 0..bytes.len() {
            assert!(X509Evidence::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            X509Evidence::decode(&longer),
            Err(X509Refusal::Malformed(DecodeError::TrailingBytes { .. }))
        ));
        let mut format = bytes.clone();
        format[0] = 2;
        assert_eq!(X509Evidence::decode(&format), Err(X509Refusal::UnknownFormat(2)));
        for count in [0u8, 5, 255] {
            let mut c = bytes.clone();
            c[1] = count;
            assert!(matches!(X509Evidence::decode(&c), Err(X509Refusal::Malformed(_))), "count {count}");
        }
        // A certificate length past the limit is refused before anything is read.
        let mut huge = vec![FORMAT_X509POP_V1, 1, 0xff, 0xff];
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(X509Evidence::decode(&huge), Err(X509Refusal::Malformed(DecodeError::TooLong { .. }))));
        let mut scheme = bytes.clone();
        let at = bytes.len() - 2 - 64 - 2;
        scheme[at..at + 2].copy_from_slice(&0x0804u16.to_be_bytes());
        assert_eq!(X509Evidence::decode(&scheme), Err(X509Refusal::UnknownScheme(0x0804)));
    }

    #[test]
    fn the_signed_message_is_the_context_then_the_binding() {
        let binding = AttestationBinding::from_bytes([7; 32]);
        let message = signed_message(&binding);
        assert_eq!(&message[..30], b"boarding v1 x509pop signature\0");
        assert_eq!(&message[30..], &[7; 32]);
    }
}
