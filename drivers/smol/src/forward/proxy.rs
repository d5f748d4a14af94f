//! The PROXY protocol v2 header the gateway writes to an upstream before any byte of
//! the agent's (`spec/FORWARDING.md` §5), built and parsed with the `ppp` crate: the
//! agent's source address and the gateway's address the agent reached, and the verified
//! identity in TLVs of Boarding's own types (the range HAProxy leaves to applications,
//! `0xE0`–`0xEF`).
//!
//! | type | TLV | value |
//! |---|---|---|
//! | `0xE0` | [`tlv::CLIENT_ID`] | the client id (1–63 bytes) |
//! | `0xE1` | [`tlv::TOKEN_ID`] | the id of the token it joined with (6 bytes) |
//! | `0xE2` | [`tlv::LABELS`] | that token's labels: `len8(key) \|\| key \|\| len16(value) \|\| value`, keys ascending |
//! | `0xE3` | [`tlv::ATTESTED_NAME`] | the attested name (1–255 bytes), only when the session has one |
//! | `0xE4` | [`tlv::SESSION`] | `0x00` the session came from a join, `0x01` from a resume |
//! | `0xE5` | [`tlv::SERVICE`] | the service name the agent asked for |
//!
//! An upstream written in Rust reads the header with [`read_header`] (or
//! [`Proxied::parse`]); any PROXY v2 reader (HAProxy's, nginx's, Envoy's) reads the
//! addresses and hands the TLVs over by type.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use boarding::attestation::MAX_ATTESTED_NAME_LEN;
use boarding::codec::{DecodeError, Reader};
use boarding::identity::ClientId;
use boarding::server::VerifiedClient;
use boarding::token::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, TokenId};
use ppp::v2::{Addresses, Builder, Command, Header, Protocol, Version};
use smol::io::{AsyncRead, AsyncReadExt};

use super::wire::ServiceName;

/// Boarding's TLV types.
pub mod tlv {
    /// The client id.
    pub const CLIENT_ID: u8 = 0xE0;
    /// The token id.
    pub const TOKEN_ID: u8 = 0xE1;
    /// The token's labels.
    pub const LABELS: u8 = 0xE2;
    /// The attested name.
    pub const ATTESTED_NAME: u8 = 0xE3;
    /// Join or resume.
    pub const SESSION: u8 = 0xE4;
    /// The service name.
    pub const SERVICE: u8 = 0xE5;
}

/// The [`tlv::SESSION`] value of a session that came from a join.
pub const SESSION_JOIN: u8 = 0x00;
/// The [`tlv::SESSION`] value of a session that came from a resume.
pub const SESSION_RESUME: u8 = 0x01;

/// The 12-byte signature every PROXY v2 header starts with.
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a header: signature, version and command, family and protocol,
/// length.
pub const FIXED_LEN: usize = 16;

/// Why an identity does not fit a header, or a header cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The token's labels are outside the protocol's limits (too many, or a key or value
    /// too long), so they cannot be carried.
    #[error(
        "the token's labels do not fit the PROXY header: at most {MAX_LABELS} labels, keys of 1 to \
         {MAX_LABEL_KEY_LEN} bytes, values of at most {MAX_LABEL_VALUE_LEN}"
    )]
    Labels,
    /// The header would be longer than its 16-bit length field can say.
    #[error("the PROXY header would be too long")]
    TooLong,
    /// The header is not a PROXY v2 header `ppp` can parse.
    #[error("not a valid PROXY protocol v2 header: {0}")]
    Header(String),
    /// The header's command is `LOCAL` (a health check): it carries no client.
    #[error("the PROXY header's command is LOCAL: no client identity")]
    Local,
    /// A Boarding TLV is malformed.
    #[error("the PROXY header's TLV 0x{kind:02x} is malformed: {reason}")]
    Tlv {
        /// The TLV type.
        kind: u8,
        /// What is wrong with it.
        reason: String,
    },
    /// A Boarding TLV appears twice.
    #[error("the PROXY header has TLV 0x{0:02x} twice")]
    Duplicate(u8),
    /// A Boarding TLV that every header of Boarding's carries is missing.
    #[error("the PROXY header has no TLV 0x{0:02x}: it was not written by a Boarding gateway")]
    Missing(u8),
    /// Reading the header from the stream failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The verified identity of a forwarded stream's client, as its PROXY header carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client id.
    pub client_id: ClientId,
    /// The token the client joined with.
    pub token_id: TokenId,
    /// That token's labels.
    pub labels: BTreeMap<String, String>,
    /// The attested name, if the session has one (a join's attestation).
    pub attested_name: Option<String>,
    /// Whether the session came from a resume (`false`: a join).
    pub resumed: bool,
    /// The service the agent asked for.
    pub service: ServiceName,
}

impl Identity {
    /// The identity of `client`'s stream to `service`; the attested name is filled when
    /// the session has an attested identity.
    pub fn of(client: &VerifiedClient, service: &ServiceName) -> Self {
        Self {
            client_id: client.client_id().clone(),
            token_id: client.token_id(),
            labels: client.labels().clone(),
            attested_name: client.attested().map(|a| a.name().to_owned()),
            resumed: client.resumed(),
            service: service.clone(),
        }
    }

    /// The whole header: `PROXY` command, TCP over IPv4 or IPv6 with `addresses`
    /// (source: the agent; destination: the gateway address it connected to; `None`:
    /// `0.0.0.0:0` for both), then the TLVs in ascending type.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Labels`] if the labels are outside the protocol's limits,
    /// [`ProxyError::TooLong`] if the header would not fit its length field.
    pub fn header(&self, addresses: Option<(SocketAddr, SocketAddr)>) -> Result<Vec<u8>, ProxyError> {
        // Not the unspecified family: readers disagree on where its TLVs start.
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let addresses = Addresses::from(same_family(addresses.unwrap_or((unknown, unknown))));
        let labels = encode_labels(&self.labels)?;
        let session = [if self.resumed { SESSION_RESUME } else { SESSION_JOIN }];
        let too_long = |_| ProxyError::TooLong;
        let mut builder = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
            .write_tlv(tlv::CLIENT_ID, self.client_id.as_str().as_bytes())
            .map_err(too_long)?
            .write_tlv(tlv::TOKEN_ID, self.token_id.as_bytes())
            .map_err(too_long)?
            .write_tlv(tlv::LABELS, &labels)
            .map_err(too_long)?;
        if let Some(name) = &self.attested_name {
            if name.is_empty() || name.len() > MAX_ATTESTED_NAME_LEN {
                return Err(ProxyError::TooLong);
            }
            builder = builder.write_tlv(tlv::ATTESTED_NAME, name.as_bytes()).map_err(too_long)?;
        }
        builder
            .write_tlv(tlv::SESSION, &session)
            .map_err(too_long)?
            .write_tlv(tlv::SERVICE, self.service.as_str().as_bytes())
            .map_err(too_long)?
            .build()
            .map_err(too_long)
    }

    /// The identity from a header's TLVs, given as `(type, value)`. TLVs of other types
    /// (the standard ones, another application's) are skipped.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Tlv`] for a Boarding TLV whose value breaks its format,
    /// [`ProxyError::Duplicate`] for one that appears twice, [`ProxyError::Missing`] if one
    /// of the TLVs every Boarding header carries (all but the attested name) is absent.
    pub fn from_tlvs<'a>(tlvs: impl IntoIterator<Item = (u8, &'a [u8])>) -> Result<Self, ProxyError> {
        let mut client_id = None;
        let mut token_id = None;
        let mut labels = None;
        let mut attested_name = None;
        let mut resumed = None;
        let mut service = None;
        let bad = |kind: u8, reason: &dyn std::fmt::Display| ProxyError::Tlv { kind, reason: reason.to_string() };
        for (kind, value) in tlvs {
            let fresh = match kind {
                tlv::CLIENT_ID => client_id.replace(ClientId::from_bytes(value).map_err(|e| bad(kind, &e))?).is_none(),
                tlv::TOKEN_ID => token_id.replace(TokenId::from_bytes(value).map_err(|e| bad(kind, &e))?).is_none(),
                tlv::LABELS => labels.replace(decode_labels(value).map_err(|e| bad(kind, &e))?).is_none(),
                tlv::ATTESTED_NAME => {
                    let name = std::str::from_utf8(value)
                        .ok()
                        .filter(|n| !n.is_empty() && n.len() <= MAX_ATTESTED_NAME_LEN)
                        .ok_or_else(|| bad(kind, &"an attested name is 1 to 255 bytes of UTF-8"))?;
                    attested_name.replace(name.to_owned()).is_none()
                }
                tlv::SESSION => {
                    let kind_of = match value {
                        [SESSION_JOIN] => false,
                        [SESSION_RESUME] => true,
                        _ => return Err(bad(kind, &"the session kind is one byte, 0x00 or 0x01")),
                    };
                    resumed.replace(kind_of).is_none()
                }
                tlv::SERVICE => service.replace(ServiceName::from_bytes(value).map_err(|e| bad(kind, &e))?).is_none(),
                _ => true,
            };
            if !fresh {
                return Err(ProxyError::Duplicate(kind));
            }
        }
        Ok(Self {
            client_id: client_id.ok_or(ProxyError::Missing(tlv::CLIENT_ID))?,
            token_id: token_id.ok_or(ProxyError::Missing(tlv::TOKEN_ID))?,
            labels: labels.ok_or(ProxyError::Missing(tlv::LABELS))?,
            attested_name,
            resumed: resumed.ok_or(ProxyError::Missing(tlv::SESSION))?,
            service: service.ok_or(ProxyError::Missing(tlv::SERVICE))?,
        })
    }
}

/// One family for both addresses (PROXY v2 has no mixed form): an IPv4 address beside
/// an IPv6 one becomes IPv4-mapped.
fn same_family((source, destination): (SocketAddr, SocketAddr)) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if source.is_ipv4() == destination.is_ipv4() { (source, destination) } else { (v6(source), v6(destination)) }
}

/// The [`tlv::LABELS`] value: `len8(key) || key || len16(value) || value` per label, in
/// ascending key order (a map's order).
///
/// # Errors
///
/// [`ProxyError::Labels`] if there are more than [`MAX_LABELS`] labels, or a key is empty
/// or longer than [`MAX_LABEL_KEY_LEN`], or a value longer than [`MAX_LABEL_VALUE_LEN`].
pub fn encode_labels(labels: &BTreeMap<String, String>) -> Result<Vec<u8>, ProxyError> {
    if labels.len() > MAX_LABELS {
        return Err(ProxyError::Labels);
    }
    let mut out = Vec::new();
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN || value.len() > MAX_LABEL_VALUE_LEN {
            return Err(ProxyError::Labels);
        }
        boarding::codec::put_bytes_u8(&mut out, key.as_bytes());
        boarding::codec::put_bytes_u16(&mut out, value.as_bytes());
    }
    Ok(out)
}

/// Decodes a [`tlv::LABELS`] value.
///
/// # Errors
///
/// [`DecodeError`] for a truncated entry, a key or value outside its length limit or not
/// UTF-8, keys not in strictly ascending byte order (so each appears once), or more than
/// [`MAX_LABELS`] entries.
pub fn decode_labels(bytes: &[u8]) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut labels = BTreeMap::new();
    let mut last: Option<&str> = None;
    while r.remaining() > 0 {
        Reader::check_count("labels", labels.len().saturating_add(1), 0, MAX_LABELS)?;
        let key = r.bytes_u8("label key", 1, MAX_LABEL_KEY_LEN)?;
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::InvalidValue { field: "label key" })?;
        let value = r.bytes_u16("label value", 0, MAX_LABEL_VALUE_LEN)?;
        let value = std::str::from_utf8(value).map_err(|_| DecodeError::InvalidValue { field: "label value" })?;
        if last.is_some_and(|last| last >= key) {
            return Err(DecodeError::InvalidValue { field: "label order" });
        }
        last = Some(key);
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(labels)
}

/// A parsed header of a forwarded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The agent's address, as the gateway saw it (`0.0.0.0:0` when the gateway did not
    /// know it; `None` for a header of the unspecified or the UNIX family).
    pub source: Option<SocketAddr>,
    /// The gateway's address the agent connected to.
    pub destination: Option<SocketAddr>,
    /// The verified identity.
    pub identity: Identity,
}

impl Proxied {
    /// Parses the header at the start of `bytes`; returns it and its length (the
    /// stream's bytes follow).
    ///
    /// # Errors
    ///
    /// [`ProxyError::Header`] if `bytes` does not start with a whole PROXY v2 header,
    /// [`ProxyError::Local`] for a `LOCAL` header, and the errors of
    /// [`Identity::from_tlvs`].
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), ProxyError> {
        let header = Header::try_from(bytes).map_err(|e| ProxyError::Header(e.to_string()))?;
        if header.command != Command::Proxy {
            return Err(ProxyError::Local);
        }
        let (source, destination) = match header.addresses {
            Addresses::IPv4(a) => (
                Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Some(SocketAddr::new(a.destination_address.into(), a.destination_port)),
            ),
            Addresses::IPv6(a) => (
                Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Some(SocketAddr::new(a.destination_address.into(), a.destination_port)),
            ),
            Addresses::Unspecified | Addresses::Unix(_) => (None, None),
        };
        let tlvs = header.tlvs().collect::<Result<Vec<_>, _>>().map_err(|e| ProxyError::Header(e.to_string()))?;
        let identity = Identity::from_tlvs(tlvs.iter().map(|t| (t.kind, &*t.value)))?;
        Ok((Self { source, destination, identity }, header.len()))
    }
}

/// Reads exactly one PROXY v2 header from the start of `stream` (what an upstream does
/// first) and parses it; the stream's bytes follow.
///
/// # Errors
///
/// [`ProxyError::Io`] if reading fails or the stream ends inside the header,
/// [`ProxyError::Header`] if it does not start with the signature, and the errors of
/// [`Proxied::parse`].
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Proxied, ProxyError> {
    let mut fixed = [0u8; FIXED_LEN];
    stream.read_exact(&mut fixed).await?;
    if !fixed.starts_with(SIGNATURE) {
        return Err(ProxyError::Header("it does not start with the PROXY v2 signature".into()));
    }
    let [.., hi, lo] = fixed;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let mut header = vec![0u8; FIXED_LEN.saturating_add(len)];
    if let Some(start) = header.get_mut(..FIXED_LEN) {
        start.copy_from_slice(&fixed);
    }
    if let Some(rest) = header.get_mut(FIXED_LEN..) {
        stream.read_exact(rest).await?;
    }
    Proxied::parse(&header).map(|(proxied, _)| proxied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(labels: &[(&str, &str)], attested: Option<&str>) -> Identity {
        Identity {
            client_id: ClientId::new("node-1").unwrap(),
            token_id: TokenId::from_bytes(b"abcdef").unwrap(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            attested_name: attested.map(str::to_owned),
            resumed: true,
            service: ServiceName::new("db").unwrap(),
        }
    }

    #[test]
    fn the_header_is_the_specified_bytes() {
        let id = identity(&[("role", "db")], None);
        let source: SocketAddr = "10.0.0.7:50000".parse().unwrap();
        let dest: SocketAddr = "10.0.0.1:7443".parse().unwrap();
        let header = id.header(Some((source, dest))).unwrap();
        let mut expected = SIGNATURE.to_vec();
        let tlvs: Vec<u8> = [
            &[0xE0, 0, 6][..],
            b"node-1",
            &[0xE1, 0, 6],
            b"abcdef",
            &[0xE2, 0, 1 + 4 + 2 + 2, 4],
            b"role",
            &[0, 2],
            b"db",
            &[0xE4, 0, 1, 1],
            &[0xE5, 0, 2],
            b"db",
        ]
        .concat();
        expected.extend_from_slice(&[0x21, 0x11]);
        expected.extend_from_slice(&u16::try_from(12 + tlvs.len()).unwrap().to_be_bytes());
        expected.extend_from_slice(&[10, 0, 0, 7, 10, 0, 0, 1]);
        expected.extend_from_slice(&50000u16.to_be_bytes());
        expected.extend_from_slice(&7443u16.to_be_bytes());
        expected.extend_from_slice(&tlvs);
        assert_eq!(header, expected);
        let (parsed, len) = Proxied::parse(&[&header[..], b"after"].concat()).unwrap();
        assert_eq!(len, header.len());
        assert_eq!(parsed, Proxied { source: Some(source), destination: Some(dest), identity: id });
    }

    #[test]
    fn families_attested_names_and_no_addresses() {
        let id = identity(&[("a", ""), ("b", &"v".repeat(256))], Some("node-1.example"));
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let header = id.header(Some((v4, v6))).unwrap();
        assert_eq!(header[13], 0x21, "TCP over IPv6");
        let (parsed, _) = Proxied::parse(&header).unwrap();
        assert_eq!(parsed.source, Some("[::ffff:127.0.0.1]:2".parse().unwrap()));
        assert_eq!(parsed.identity, id);
        let header = id.header(None).unwrap();
        assert_eq!(header[13], 0x11, "TCP over IPv4, with 0.0.0.0:0");
        let (parsed, _) = Proxied::parse(&header).unwrap();
        let unknown = Some("0.0.0.0:0".parse().unwrap());
        assert_eq!((parsed.source, parsed.destination), (unknown, unknown));
        assert_eq!(parsed.identity, id);
    }

    #[test]
    fn labels_outside_the_limits_are_refused() {
        assert!(matches!(identity(&[("", "v")], None).header(None), Err(ProxyError::Labels)));
        assert!(matches!(identity(&[("k", &"v".repeat(257))], None).header(None), Err(ProxyError::Labels)));
        let many: Vec<(String, String)> = (0..33).map(|i| (format!("k{i:02}"), String::new())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(matches!(identity(&many, None).header(None), Err(ProxyError::Labels)));
        assert!(decode_labels(&[1, b'b', 0, 0, 1, b'a', 0, 0]).is_err(), "out of order");
        assert!(decode_labels(&[1, b'a', 0, 0, 1, b'a', 0, 0]).is_err(), "twice");
        assert!(decode_labels(&[1, b'a', 0]).is_err(), "truncated");
        assert!(decode_labels(&[0, 0, 0]).is_err(), "empty key");
        assert!(decode_labels(&[1, 0xff, 0, 0]).is_err(), "not UTF-8");
    }

    #[test]
    fn missing_duplicate_and_malformed_tlvs() {
        let id = identity(&[], None);
        let header = id.header(None).unwrap();
        let (parsed, _) = Proxied::parse(&header).unwrap();
        let tlv = |kind, value: &'static [u8]| (kind, value);
        let base = [
            tlv(tlv::CLIENT_ID, b"node-1"),
            tlv(tlv::TOKEN_ID, b"abcdef"),
            tlv(tlv::LABELS, b""),
            tlv(tlv::SESSION, &[1]),
            tlv(tlv::SERVICE, b"db"),
        ];
        assert_eq!(Identity::from_tlvs(base).unwrap(), parsed.identity);
        let with_noop = base.iter().copied().chain([tlv(0x04, b"pad"), tlv(0xEF, b"x")]);
        assert_eq!(Identity::from_tlvs(with_noop).unwrap(), parsed.identity);
        for i in 0..base.len() {
            let without = base.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, t)| *t);
            assert!(matches!(Identity::from_tlvs(without), Err(ProxyError::Missing(_))));
            let twice = base.iter().copied().chain([base[i]]);
            assert!(matches!(Identity::from_tlvs(twice), Err(ProxyError::Duplicate(_))));
        }
        for bad in [
            tlv(tlv::CLIENT_ID, b"Node"),
            tlv(tlv::TOKEN_ID, b"abc"),
            tlv(tlv::SESSION, &[2]),
            tlv(tlv::SERVICE, b"-x"),
            tlv(tlv::ATTESTED_NAME, b""),
        ] {
            let tlvs = base.iter().copied().filter(|t| t.0 != bad.0).chain([bad]);
            assert!(matches!(Identity::from_tlvs(tlvs), Err(ProxyError::Tlv { .. })), "{bad:?}");
        }
    }

    #[test]
    fn read_header_reads_exactly_the_header() {
        let id = identity(&[("k", "v")], Some("n"));
        let header = id.header(Some(("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()))).unwrap();
        let bytes = [&header[..], b"rest"].concat();
        let mut stream = smol::io::Cursor::new(bytes);
        let proxied = smol::block_on(read_header(&mut stream)).unwrap();
        assert_eq!(proxied.identity, id);
        assert_eq!(usize::try_from(stream.position()).unwrap(), header.len());
        let mut short = smol::io::Cursor::new(header[..20].to_vec());
        assert!(matches!(smol::block_on(read_header(&mut short)), Err(ProxyError::Io(_))));
        let mut other = smol::io::Cursor::new(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        assert!(matches!(smol::block_on(read_header(&mut other)), Err(ProxyError::Header(_))));
    }
}
