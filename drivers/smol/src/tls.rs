//! TLS 1.3 with the gateway's identity: a self-signed Ed25519 certificate on the
//! gateway, and on the agent a verifier that trusts pins, not names or authorities.

use std::fmt;
use std::sync::Arc;

use boarding::identity::ServerIdentity;
use boarding::pin::Pin;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::Error;

/// The ALPN protocol id both sides require.
pub const ALPN: &[u8] = b"boarding/1";
/// The name the agent asks for (the verifier ignores names; rustls needs one).
pub const SERVER_NAME: &str = "boarding-gateway.invalid";
/// The longest certificate chain the agent looks at.
pub const MAX_CHAIN: usize = 8;

/// The one crypto provider of both sides: aws-lc-rs, with the key exchange groups in
/// preference order X25519MLKEM768 (hybrid post-quantum), then X25519. Both sides offer
/// and accept only these two, so every Boarding TLS session is at least X25519, and
/// post-quantum whenever both ends are this driver.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups =
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768, rustls::crypto::aws_lc_rs::kx_group::X25519];
    Arc::new(provider)
}

/// The gateway's self-signed certificate (DER), signed with its Ed25519 identity key,
/// and that key in PKCS#8 for rustls.
///
/// # Errors
///
/// [`Error::TlsSetup`] if the identity key cannot be encoded or loaded, or the certificate
/// cannot be made; none of these happens with a valid identity.
pub fn gateway_certificate(
    identity: &ServerIdentity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
    let seed = identity.to_seed();
    let signing = SigningKey::from_bytes(&seed);
    let pkcs8 = signing.to_pkcs8_der().map_err(|e| Error::TlsSetup(format!("encoding the identity key: {e}")))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(|e| Error::TlsSetup(format!("loading the identity key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .map_err(|e| Error::TlsSetup(format!("certificate parameters: {e}")))?;
    // A short fixed name: X.509 bounds a CN at 64 characters, and the pin is computed
    // from the key by the agent, never read from a name.
    params.distinguished_name.push(rcgen::DnType::CommonName, "boarding gateway");
    // Agents check the pin, not the validity period; keep it wide so clocks never matter.
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let cert = params.self_signed(&key_pair).map_err(|e| Error::TlsSetup(format!("self-signing: {e}")))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key_der)))
}

/// The Boarding channel binding of a TLS session (`spec/PROTOCOL.md` §6.1): its RFC 8446
/// exporter value for [`TLS_EXPORTER_LABEL`](boarding::transcript::TLS_EXPORTER_LABEL),
/// empty context, 32 bytes. Both ends of one TLS session compute the same value; ends of
/// two different sessions (a relay in between) do not.
///
/// # Errors
///
/// [`Error::TlsSetup`] if the TLS handshake has not completed (rustls exports nothing
/// before).
pub fn channel_binding<D>(
    connection: &rustls::ConnectionCommon<D>,
) -> Result<boarding::transcript::ChannelBinding, Error> {
    let value = connection
        .export_keying_material([0u8; 32], boarding::transcript::TLS_EXPORTER_LABEL, Some(&[]))
        .map_err(|e| Error::TlsSetup(format!("exporting the channel binding: {e}")))?;
    Ok(boarding::transcript::ChannelBinding::from_exporter(value))
}

/// The gateway's TLS 1.3 server configuration.
///
/// # Errors
///
/// [`Error::TlsSetup`] as [`gateway_certificate`], or if rustls refuses the configuration.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<rustls::ServerConfig>, Error> {
    let (cert, key) = gateway_certificate(identity)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::TlsSetup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| Error::TlsSetup(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Why the verifier refused the gateway's certificate. It travels inside the rustls
/// error of that connection, so the agent can report the pins involved while one
/// verifier (and one client configuration) serves every connection.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    Pin { presented: Vec<Pin> },
    Chain(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pin { presented } => write!(f, "no certificate key matches a pin ({} presented)", presented.len()),
            Self::Chain(reason) => write!(f, "certificate chain rejected: {reason}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal inside a failed TLS connection's error, if the verifier refused.
    pub(crate) fn from_io(e: &std::io::Error) -> Option<Self> {
        match e.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(inner))) => {
                inner.downcast_ref::<Self>().cloned()
            }
            _ => None,
        }
    }

    fn into_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(self))))
    }
}

/// The agent's certificate verifier: every certificate in the chain must be signed by
/// the next one, and one of them must carry a pinned public key. Names, validity
/// periods and authorities are deliberately ignored; the TLS 1.3 handshake signature
/// is still verified against the end-entity key.
pub struct PinVerifier {
    pins: Vec<Pin>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinVerifier").field("pins", &self.pins).finish_non_exhaustive()
    }
}

impl PinVerifier {
    /// A verifier accepting any of `pins`.
    pub fn new(pins: Vec<Pin>) -> Self {
        Self { pins, algorithms: provider().signature_verification_algorithms }
    }

    /// Checks that each certificate of a chain (end-entity first) is signed by the next;
    /// returns the pins of all their keys (the caller matches them against its pins).
    ///
    /// # Errors
    ///
    /// What is wrong with the chain, as text: it is empty or longer than [`MAX_CHAIN`], a
    /// certificate does not parse or has trailing bytes, or one is not signed by the next.
    pub fn check_chain(&self, chain: &[&[u8]]) -> Result<Vec<Pin>, String> {
        check_chain(chain)
    }
}

/// Parses and links the chain; `Err(reason)` for a structural failure.
fn check_chain(chain: &[&[u8]]) -> Result<Vec<Pin>, String> {
    if chain.is_empty() {
        return Err("no certificate was presented".into());
    }
    if chain.len() > MAX_CHAIN {
        return Err(format!("{} certificates, more than {MAX_CHAIN}", chain.len()));
    }
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der) {
            Ok((&[], cert)) => parsed.push(cert),
            Ok(_) => return Err(format!("certificate {i} has trailing bytes")),
            Err(e) => return Err(format!("certificate {i} does not parse: {e}")),
        }
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if let [child, parent] = pair {
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|e| format!("certificate {i} is not signed by certificate {}: {e}", i.saturating_add(1)))?;
        }
    }
    Ok(parsed.iter().map(|c| Pin::from_spki_der(c.public_key().raw)).collect())
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&[u8]> =
            std::iter::once(end_entity.as_ref()).chain(intermediates.iter().map(|c| c.as_ref())).collect();
        match check_chain(&chain) {
            Err(reason) => Err(Refusal::Chain(reason).into_error()),
            Ok(presented) if presented.iter().any(|p| p.matches_any(&self.pins)) => Ok(ServerCertVerified::assertion()),
            Ok(presented) => Err(Refusal::Pin { presented }.into_error()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The client configuration only enables TLS 1.3; refuse rather than trust.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The agent's TLS 1.3 client configuration, pinned to `verifier`.
///
/// # Errors
///
/// [`Error::TlsSetup`] if rustls refuses the configuration (it does not with its own
/// provider).
pub fn client_config(verifier: Arc<PinVerifier>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::TlsSetup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_key_pin_equals_identity_pin() {
        let identity = ServerIdentity::from_seed([9; 32]);
        let (cert, _) = gateway_certificate(&identity).unwrap();
        let verifier = PinVerifier::new(vec![identity.pin()]);
        let pins = verifier.check_chain(&[cert.as_ref()]).unwrap();
        assert_eq!(pins, vec![identity.pin()]);
    }

    #[test]
    fn chain_links_are_checked() {
        let a = gateway_certificate(&ServerIdentity::from_seed([1; 32])).unwrap().0;
        let b = gateway_certificate(&ServerIdentity::from_seed([2; 32])).unwrap().0;
        let verifier = PinVerifier::new(vec![]);
        // a is self-signed, not signed by b.
        let err = verifier.check_chain(&[a.as_ref(), b.as_ref()]).unwrap_err();
        assert!(err.contains("not signed by certificate 1"), "{err}");
        assert!(verifier.check_chain(&[b"garbage".as_slice()]).unwrap_err().contains("does not parse"));
        assert!(verifier.check_chain(&[]).is_err());
    }
}
