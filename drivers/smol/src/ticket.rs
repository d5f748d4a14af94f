//! What this driver puts in the protocol's opaque request and ticket fields
//! (`spec/PROTOCOL.md` §7.10): a sequence of typed **parts**, so one join or resume can
//! carry several things (the application's own ticket, a certificate signing request,
//! the certificate issued for it) and a later part kind never changes an older one.
//!
//! A part is `kind (1) || len16(bytes) || bytes`; kinds appear in ascending order, each
//! at most once; an empty field has no parts. Decoding goes through the core's
//! bounds-checked reader and is strict: an undefined kind, a kind out of order or
//! repeated, an empty part, or a byte left over is malformed.

use boarding::codec::{DecodeError, Reader, put_bytes_u16};
use boarding::messages::{MAX_REQUEST, MAX_TICKET};

/// Request part: a PKCS#10 certificate signing request (DER) for the node's key.
pub const PART_CSR: u8 = 0x01;
/// Ticket part: the gateway application's own ticket bytes ([`crate::Decision::Admit`]).
pub const PART_APPLICATION: u8 = 0x01;
/// Ticket part: the node's X.509 certificate (DER), issued for the request's CSR.
pub const PART_CERTIFICATE: u8 = 0x02;

/// Why a request or ticket did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    /// A field cut short, a length out of range, or bytes left over.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// A request or a ticket.
        what: &'static str,
        /// Where the decoder stopped.
        source: DecodeError,
    },
    /// A kind this version does not define, or one out of ascending order or repeated.
    #[error("malformed {what}: part kind 0x{kind:02x} is undefined, repeated or out of order")]
    Kind {
        /// A request or a ticket.
        what: &'static str,
        /// The offending kind byte.
        kind: u8,
    },
    /// The encoded parts exceed the protocol's limit for the field.
    #[error("the {what} would be {len} bytes, the limit is {max}")]
    TooLong {
        /// A request or a ticket.
        what: &'static str,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

fn encode(what: &'static str, parts: &[(u8, &[u8])], max: usize) -> Result<Vec<u8>, PartsError> {
    let mut out = Vec::new();
    for (kind, bytes) in parts.iter().filter(|(_, bytes)| !bytes.is_empty()) {
        if bytes.len() > max {
            return Err(PartsError::TooLong { what, len: bytes.len(), max });
        }
        out.push(*kind);
        put_bytes_u16(&mut out, bytes);
    }
    if out.len() > max {
        return Err(PartsError::TooLong { what, len: out.len(), max });
    }
    Ok(out)
}

/// Decodes `bytes` into the parts of the kinds `defined` (ascending), in that order.
fn decode<'a, const N: usize>(
    what: &'static str,
    bytes: &'a [u8],
    defined: [u8; N],
) -> Result<[Option<&'a [u8]>; N], PartsError> {
    let mut found = [None; N];
    let mut reader = Reader::new(bytes);
    let mut next = 0usize;
    let malformed = |source| PartsError::Malformed { what, source };
    while reader.remaining() > 0 {
        let kind = reader.u8("part kind").map_err(malformed)?;
        // Only kinds after the last one seen are allowed: ascending, each once.
        let index = defined
            .iter()
            .skip(next)
            .position(|&k| k == kind)
            .and_then(|offset| offset.checked_add(next))
            .ok_or(PartsError::Kind { what, kind })?;
        let body = reader.bytes_u16("part", 1, usize::from(u16::MAX)).map_err(malformed)?;
        if let Some(slot) = found.get_mut(index) {
            *slot = Some(body);
        }
        next = index.saturating_add(1);
    }
    reader.finish(what).map_err(malformed)?;
    Ok(found)
}

/// What an agent asks for with a join or a resume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// A certificate signing request (PKCS#10, DER) for the node's key.
    pub csr: Option<Vec<u8>>,
}

impl Request {
    /// The bytes of the protocol's request field.
    ///
    /// # Errors
    ///
    /// [`PartsError::TooLong`] past the protocol's limit ([`MAX_REQUEST`]).
    pub fn encode(&self) -> Result<Vec<u8>, PartsError> {
        encode("request", &[(PART_CSR, self.csr.as_deref().unwrap_or_default())], MAX_REQUEST)
    }

    /// Reads the protocol's request field.
    ///
    /// # Errors
    ///
    /// [`PartsError`] if it is not a sequence of parts as this module defines.
    pub fn decode(bytes: &[u8]) -> Result<Self, PartsError> {
        let [csr] = decode("request", bytes, [PART_CSR])?;
        Ok(Self { csr: csr.map(<[u8]>::to_vec) })
    }
}

/// What a gateway answers a join or a resume with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    /// The gateway application's own ticket (empty for none).
    pub application: Vec<u8>,
    /// The node's certificate (DER), if the request carried a CSR and the gateway's CA
    /// signed it.
    pub certificate: Option<Vec<u8>>,
}

impl Ticket {
    /// The bytes of the protocol's ticket field.
    ///
    /// # Errors
    ///
    /// [`PartsError::TooLong`] past the protocol's limit ([`MAX_TICKET`]).
    pub fn encode(&self) -> Result<Vec<u8>, PartsError> {
        encode(
            "ticket",
            &[
                (PART_APPLICATION, &self.application),
                (PART_CERTIFICATE, self.certificate.as_deref().unwrap_or_default()),
            ],
            MAX_TICKET,
        )
    }

    /// Reads the protocol's ticket field.
    ///
    /// # Errors
    ///
    /// [`PartsError`] if it is not a sequence of parts as this module defines.
    pub fn decode(bytes: &[u8]) -> Result<Self, PartsError> {
        let [application, certificate] = decode("ticket", bytes, [PART_APPLICATION, PART_CERTIFICATE])?;
        Ok(Self {
            application: application.map(<[u8]>::to_vec).unwrap_or_default(),
            certificate: certificate.map(<[u8]>::to_vec),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_have_the_specified_bytes_and_round_trip() {
        let ticket = Ticket { application: b"app".to_vec(), certificate: Some(vec![0x30, 0x01, 0x00]) };
        let bytes = ticket.encode().unwrap();
        assert_eq!(bytes, [0x01, 0x00, 0x03, b'a', b'p', b'p', 0x02, 0x00, 0x03, 0x30, 0x01, 0x00]);
        assert_eq!(Ticket::decode(&bytes), Ok(ticket));
        // Nothing at all is no parts, and an empty application ticket is left out.
        assert_eq!(Ticket::default().encode().unwrap(), Vec::<u8>::new());
        assert_eq!(Ticket::decode(&[]), Ok(Ticket::default()));
        let only_cert = Ticket { application: Vec::new(), certificate: Some(vec![9]) };
        assert_eq!(only_cert.encode().unwrap(), [0x02, 0x00, 0x01, 9]);
        let request = Request { csr: Some(vec![1, 2]) };
        assert_eq!(request.encode().unwrap(), [0x01, 0x00, 0x02, 1, 2]);
        assert_eq!(Request::decode(&[0x01, 0x00, 0x02, 1, 2]), Ok(request));
    }

    #[test]
    fn undefined_repeated_or_unordered_kinds_empty_parts_and_leftovers_are_malformed() {
        let kind = |kind| Err(PartsError::Kind { what: "ticket", kind });
        assert_eq!(Ticket::decode(&[0x03, 0x00, 0x01, 0]), kind(0x03));
        assert_eq!(Ticket::decode(&[0x02, 0x00, 0x01, 0, 0x01, 0x00, 0x01, 0]), kind(0x01));
        assert_eq!(Ticket::decode(&[0x01, 0x00, 0x01, 0, 0x01, 0x00, 0x01, 0]), kind(0x01));
        assert!(matches!(Ticket::decode(&[0x01, 0x00, 0x00]), Err(PartsError::Malformed { .. })));
        assert!(matches!(Ticket::decode(&[0x01, 0x00, 0x02, 0]), Err(PartsError::Malformed { .. })));
        assert!(matches!(Ticket::decode(&[0x01]), Err(PartsError::Malformed { .. })));
        assert_eq!(Request::decode(&[0x02, 0x00, 0x01, 0]), Err(PartsError::Kind { what: "request", kind: 0x02 }));
    }

    #[test]
    fn parts_past_the_protocol_limit_are_refused_when_encoding() {
        let big = Ticket { application: vec![0; MAX_TICKET], certificate: None };
        assert!(matches!(big.encode(), Err(PartsError::TooLong { what: "ticket", .. })));
        let big = Request { csr: Some(vec![0; MAX_REQUEST]) };
        assert!(matches!(big.encode(), Err(PartsError::TooLong { what: "request", .. })));
    }
}
