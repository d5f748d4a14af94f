//! The checks behind the forwarding targets (`spec/FORWARDING.md`, boarding-smol's
//! `forward` module): the message decoder, the labels TLV decoder, the PROXY v2 header
//! parser, and round trips of their encoders; and boarding-smol's request and ticket
//! parts (`spec/PROTOCOL.md` §7.10), the other peer-controlled format of that crate. Outside `checks/` because they depend on
//! boarding-smol, which the protocol crate's regression tests do not build.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use arbitrary::{Result, Unstructured};
use boarding::identity::ClientId;
use boarding::token::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, TokenId};
use boarding_smol::forward::proxy::{self, Identity, Proxied, ProxyError, SIGNATURE};
use boarding_smol::forward::wire::{
    AbortReason, Answer, MAX_DATA, MAX_SERVICE_NAME_LEN, Message, Refusal, ServiceName, VERSION, WireError, kind,
};

use crate::checks::Check;

/// The byte-input forwarding targets, as [`crate::checks::TARGETS`] lists the core's.
pub const TARGETS: &[(&str, Check)] = &[
    ("forward_message", message),
    ("forward_labels", labels),
    ("forward_proxy_header", proxy_header),
    ("ticket_parts", ticket_parts),
];

/// Request and ticket parts (`spec/PROTOCOL.md` §7.10): what decodes re-encodes to exactly
/// the input (the format is canonical: ascending kinds, each once, no empty part), and
/// what the specification rules out (an undefined kind, one out of order or repeated, an
/// empty or truncated part, bytes left over) never decodes.
pub fn ticket_parts(data: &[u8]) {
    use boarding_smol::ticket::{Request, Ticket};
    // Walk the parts as §7.10 states them, independently of the decoder.
    let spec_valid = |defined: &[u8]| {
        let (mut rest, mut last) = (data, None::<u8>);
        while let [kind, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if !defined.contains(kind) || last.is_some_and(|l| *kind <= l) || len == 0 || tail.len() < len {
                return false;
            }
            last = Some(*kind);
            rest = &tail[len..];
        }
        rest.is_empty()
    };
    match Ticket::decode(data) {
        Ok(ticket) => {
            assert!(spec_valid(&[0x01, 0x02]), "a ticket the specification rules out decoded: {data:02x?}");
            if data.len() <= boarding::messages::MAX_TICKET {
                assert_eq!(ticket.encode().as_deref(), Ok(data), "a decoded ticket re-encodes differently");
            }
        }
        Err(_) => assert!(!spec_valid(&[0x01, 0x02]), "a ticket the specification allows was refused: {data:02x?}"),
    }
    match Request::decode(data) {
        Ok(request) => {
            assert!(spec_valid(&[0x01]), "a request the specification rules out decoded: {data:02x?}");
            if data.len() <= boarding::messages::MAX_REQUEST {
                assert_eq!(request.encode().as_deref(), Ok(data), "a decoded request re-encodes differently");
            }
        }
        Err(_) => assert!(!spec_valid(&[0x01]), "a request the specification allows was refused: {data:02x?}"),
    }
}

/// Whether the specification says `data` is a message (§3), judged without the decoder.
fn spec_valid(data: &[u8]) -> bool {
    let name_ok = |name: &[u8]| {
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        (1..=MAX_SERVICE_NAME_LEN).contains(&name.len())
            && name.first().is_some_and(alnum)
            && name.last().is_some_and(alnum)
            && name.iter().all(|b| alnum(b) || matches!(b, b'-' | b'.' | b'_'))
    };
    match data {
        [0x01, 0x01, n, name @ ..] => usize::from(*n) == name.len() && name_ok(name),
        [0x02, _, _] | [0x04] | [0x05, _] => true,
        [0x03, rest @ ..] => (1..=MAX_DATA).contains(&rest.len()),
        _ => false,
    }
}

/// A forwarding message: what decodes is exactly what the specification allows, and
/// re-encodes to the same bytes; a refusal names the right cause.
pub fn message(data: &[u8]) {
    let decoded = Message::decode(data);
    assert_eq!(decoded.is_ok(), spec_valid(data), "decoder and specification disagree on {data:?}: {decoded:?}");
    match decoded {
        Ok(m) => {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, data, "a decoded message re-encodes to its bytes");
            match m {
                Message::Open { service } => assert!(ServiceName::new(service).is_ok()),
                Message::Data(d) => assert!((1..=MAX_DATA).contains(&d.len())),
                Message::Answer { answer, .. } => assert_eq!(Answer::from_code(answer.code()), answer),
                Message::Abort(reason) => assert_eq!(AbortReason::from_code(reason.code()), reason),
                Message::End => {}
            }
        }
        Err(WireError::Empty) => assert!(data.is_empty()),
        Err(WireError::UnknownKind(k)) => {
            assert_eq!(data.first(), Some(&k));
            assert!(![kind::OPEN, kind::ANSWER, kind::DATA, kind::END, kind::ABORT].contains(&k));
        }
        Err(WireError::UnsupportedVersion(v)) => {
            assert_ne!(v, VERSION);
            assert_eq!(data.get(..2), Some(&[kind::OPEN, v][..]));
        }
        Err(WireError::Malformed(_)) => {
            assert!(data.first().is_some_and(|k| (kind::OPEN..=kind::ABORT).contains(k)));
        }
        Err(e) => panic!("an error the check does not know: {e}"),
    }
}

/// A labels TLV value: what decodes is within the limits, in ascending key order, and
/// re-encodes to the same bytes.
pub fn labels(data: &[u8]) {
    if let Ok(map) = proxy::decode_labels(data) {
        assert!(map.len() <= MAX_LABELS);
        assert!(map.iter().all(|(k, v)| (1..=MAX_LABEL_KEY_LEN).contains(&k.len()) && v.len() <= MAX_LABEL_VALUE_LEN));
        let again = proxy::encode_labels(&map).unwrap_or_else(|e| panic!("decoded labels do not encode: {e}"));
        assert_eq!(again, data, "decoded labels re-encode to their bytes");
    }
}

/// A PROXY v2 header: what parses starts with the signature, and the identity and
/// addresses it carries, written again by the gateway's encoder, parse back the same.
pub fn proxy_header(data: &[u8]) {
    let Ok((parsed, len)) = Proxied::parse(data) else { return };
    assert!(data.starts_with(SIGNATURE));
    assert!((proxy::FIXED_LEN..=data.len()).contains(&len), "{len} of {}", data.len());
    let addresses = parsed.source.zip(parsed.destination);
    let again = parsed.identity.header(addresses).unwrap_or_else(|e| panic!("a parsed identity does not encode: {e}"));
    let (reparsed, relen) =
        Proxied::parse(&again).unwrap_or_else(|e| panic!("the encoder's header does not parse: {e}"));
    assert_eq!(relen, again.len());
    assert_eq!(reparsed.identity, parsed.identity);
    if addresses.is_some() {
        assert_eq!((reparsed.source, reparsed.destination), (parsed.source, parsed.destination));
    }
}

/// A length around `max`: usually within `min..=max`, sometimes one past either end.
fn length(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => min.saturating_sub(1),
        1 => max + 1,
        2 => max,
        _ => u.int_in_range(min..=max.min(min + 64))?,
    })
}

fn text(u: &mut Unstructured<'_>, alphabet: &[u8], len: usize) -> Result<String> {
    (0..len).map(|_| Ok(char::from(*u.choose(alphabet)?))).collect()
}

/// Any string of about `len` bytes (arbitrary characters, cut at a character boundary).
fn utf8(u: &mut Unstructured<'_>, len: usize) -> Result<String> {
    let mut s = String::new();
    while s.len() < len {
        let c: char = if u.ratio(1u8, 4)? { u.arbitrary()? } else { char::from(*u.choose(b"abcxyz-_=.0")?) };
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    Ok(s)
}

fn address(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    let ip = if u.arbitrary()? {
        IpAddr::V4(u.arbitrary::<[u8; 4]>()?.into())
    } else {
        IpAddr::V6(u.arbitrary::<[u8; 16]>()?.into())
    };
    Ok(SocketAddr::new(ip, u.arbitrary()?))
}

/// Any message within the limits encodes and decodes back to itself; any identity the
/// gateway can carry makes a header that parses back to the identity and the addresses
/// (of one family, as the encoder sends them), and identities outside the limits are
/// refused by the encoder.
pub fn roundtrip(u: &mut Unstructured<'_>) -> Result<()> {
    let n = length(u, 1, MAX_SERVICE_NAME_LEN)?;
    let service = text(u, b"abcdefghijklmnopqrstuvwxyz0123456789-._", n)?;
    let data: Vec<u8> = (0..length(u, 1, MAX_DATA.min(256))?).map(|_| u.arbitrary()).collect::<Result<_>>()?;
    let message = match u.int_in_range(0u8..=4)? {
        0 => Message::Open { service: &service },
        1 => Message::Answer { version: u.arbitrary()?, answer: Answer::from_code(u.arbitrary()?) },
        2 => Message::Data(&data),
        3 => Message::End,
        _ => Message::Abort(AbortReason::from_code(u.arbitrary()?)),
    };
    let mut out = Vec::new();
    message.encode(&mut out);
    let within = match message {
        Message::Open { service } => ServiceName::new(service).is_ok(),
        Message::Data(d) => !d.is_empty(),
        _ => true,
    };
    match Message::decode(&out) {
        Ok(decoded) => {
            assert!(within, "{message:?} is outside the limits but decoded");
            assert_eq!(decoded, message);
        }
        Err(e) => assert!(!within, "{message:?} is within the limits but did not decode: {e}"),
    }
    for refusal in Refusal::ALL {
        assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
    }

    let n = length(u, 1, 63)?;
    let client = text(u, b"abcdefghijklmnopqrstuvwxyz0123456789-", n)?;
    let token = text(u, b"abcdefghijklmnopqrstuvwxyz0123456789", 6)?;
    let (Ok(client_id), Ok(token_id), Ok(service)) =
        (ClientId::new(&client), TokenId::from_bytes(token.as_bytes()), ServiceName::new(&service))
    else {
        return Ok(());
    };
    let mut labels = BTreeMap::new();
    for _ in 0..length(u, 0, MAX_LABELS)? {
        let n = length(u, 1, MAX_LABEL_KEY_LEN)?;
        let key = utf8(u, n)?;
        let n = length(u, 0, MAX_LABEL_VALUE_LEN)?;
        let value = utf8(u, n)?;
        labels.insert(key, value);
    }
    let attested_name = if u.arbitrary()? {
        let n = length(u, 1, 255)?;
        Some(utf8(u, n)?)
    } else {
        None
    };
    let identity = Identity { client_id, token_id, labels, attested_name, resumed: u.arbitrary()?, service };
    let addresses = if u.ratio(7u8, 8)? { Some((address(u)?, address(u)?)) } else { None };
    let labels_ok = identity.labels.len() <= MAX_LABELS
        && identity
            .labels
            .iter()
            .all(|(k, v)| (1..=MAX_LABEL_KEY_LEN).contains(&k.len()) && v.len() <= MAX_LABEL_VALUE_LEN);
    let name_ok = identity.attested_name.as_ref().is_none_or(|n| (1..=255).contains(&n.len()));
    let header = match identity.header(addresses) {
        Ok(header) => {
            assert!(labels_ok && name_ok, "an identity outside the limits was encoded");
            header
        }
        Err(ProxyError::Labels) => {
            assert!(!labels_ok, "labels within the limits were refused");
            return Ok(());
        }
        Err(ProxyError::TooLong) => {
            assert!(!name_ok, "a header within the limits was refused as too long");
            return Ok(());
        }
        Err(e) => panic!("unexpected encoder error: {e}"),
    };
    let mut stream = header.clone();
    stream.extend_from_slice(b"the stream follows");
    let (parsed, len) = Proxied::parse(&stream).unwrap_or_else(|e| panic!("the encoder's header does not parse: {e}"));
    assert_eq!(len, header.len());
    assert_eq!(parsed.identity, identity);
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let (source, destination) = addresses.unwrap_or((unknown, unknown));
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    let expected =
        if source.is_ipv4() == destination.is_ipv4() { (source, destination) } else { (v6(source), v6(destination)) };
    assert_eq!((parsed.source, parsed.destination), (Some(expected.0), Some(expected.1)));
    Ok(())
}
