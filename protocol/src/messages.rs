//! Handshake messages, their framing and their limits.
//!
//! Every frame on the wire is `type (1) | length (4, big-endian) | body`. Handshake
//! bodies are at most [`MAX_HANDSHAKE_BODY`] bytes; channel frames (types `0x17` and
//! `0x18`) add a tag and are handled by [`crate::channel`]. Each message's body is its
//! *signed part* followed by its *proof*; the proof covers the transcript, the type
//! byte and the signed part (see [`crate::transcript`]).
//!
//! Decoding is strict: lengths are checked against the limits before anything is read,
//! lists may not be empty, unknown flag values are rejected, and trailing bytes fail.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, put_bytes_u8, put_bytes_u16};
use crate::identity::MAX_CLIENT_ID_LEN;
use crate::jws::MAX_JWS_LEN;
use crate::token::TokenId;

/// Length of the frame header: type and length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest handshake body.
pub const MAX_HANDSHAKE_BODY: usize = 16 * 1024;
/// Most versions or suites a hello may list.
pub const MAX_OFFERS: usize = 16;
/// Most token challenges in one `ServerChallenge`.
pub const MAX_CHALLENGES: usize = 16;
/// Largest attestation evidence, in bytes.
pub const MAX_EVIDENCE: usize = 8 * 1024;
/// Largest ticket (a join's or a resume's), in bytes.
pub const MAX_TICKET: usize = 4 * 1024;
/// Largest application request carried with a join or a resume (a certificate signing
/// request, say), in bytes.
pub const MAX_REQUEST: usize = 4 * 1024;
/// Most keyrings a `ResumeHello` may offer: the agent's newest, and the one it rotated
/// from while it does not know whether the gateway took the rotation.
pub const MAX_OFFERED_KEYRINGS: usize = 2;
/// Length of a nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a finished MAC.
pub const MAC_LEN: usize = 32;

/// The type byte of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Join, message 1 (C→S).
    ClientHello = 0x01,
    /// Join, message 2 (S→C).
    ServerChallenge = 0x02,
    /// Join, message 3 (C→S).
    ClientAuth = 0x03,
    /// Join, message 4 (S→C).
    ServerFinished = 0x04,
    /// Join, message 5 (C→S).
    ClientFinished = 0x05,
    /// Resume, message 1 (C→S).
    ResumeHello = 0x06,
    /// Resume, message 2 (S→C).
    ResumeChallenge = 0x07,
    /// Resume, message 3 (C→S).
    ResumeFinished = 0x08,
    /// Resume, message 4 (S→C), only after a resume that carried a request.
    ResumeTicket = 0x09,
    /// A handshake abort (either way, unauthenticated).
    Alert = 0x15,
    /// Channel data.
    Data = 0x17,
    /// Channel close.
    Close = 0x18,
}

impl FrameType {
    /// The frame type for a byte.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnknownType`] for a byte that is no frame type of this protocol.
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            0x01 => Self::ClientHello,
            0x02 => Self::ServerChallenge,
            0x03 => Self::ClientAuth,
            0x04 => Self::ServerFinished,
            0x05 => Self::ClientFinished,
            0x06 => Self::ResumeHello,
            0x07 => Self::ResumeChallenge,
            0x08 => Self::ResumeFinished,
            0x09 => Self::ResumeTicket,
            0x15 => Self::Alert,
            0x17 => Self::Data,
            0x18 => Self::Close,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// Whether frames of this type are handshake frames (not channel frames).
    pub fn is_handshake(self) -> bool {
        !matches!(self, Self::Data | Self::Close)
    }
}

/// A handshake frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Its type.
    pub frame_type: FrameType,
    /// Its body.
    pub body: &'a [u8],
    /// The whole frame, header included (what the transcript hashes).
    pub bytes: &'a [u8],
}

/// Finds the handshake frame at the start of `buf`: `Ok(None)` if more bytes are
/// needed, an error if the header is invalid or announces an oversized body.
///
/// # Errors
///
/// [`DecodeError::UnknownType`] for an undefined type or a channel frame (`Data`, `Close`),
/// and [`DecodeError::TooLong`] for a body longer than [`MAX_HANDSHAKE_BODY`], both decided
/// from the 5-byte header alone.
pub fn peek_handshake_frame(buf: &[u8]) -> Result<Option<RawFrame<'_>>, DecodeError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else { return Ok(None) };
    let mut r = Reader::new(header);
    let frame_type = FrameType::from_byte(r.u8("frame type")?)?;
    let len = usize::try_from(r.u32("frame length")?).unwrap_or(usize::MAX);
    if !frame_type.is_handshake() {
        return Err(DecodeError::UnknownType(frame_type as u8));
    }
    Reader::check_count("frame length", len, 0, MAX_HANDSHAKE_BODY)?;
    let total = FRAME_HEADER_LEN.saturating_add(len);
    let (Some(bytes), Some(body)) = (buf.get(..total), buf.get(FRAME_HEADER_LEN..total)) else {
        return Ok(None);
    };
    Ok(Some(RawFrame { frame_type, body, bytes }))
}

/// Wraps `body` in a frame header.
pub fn encode_frame(frame_type: FrameType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN.saturating_add(body.len()));
    out.push(frame_type as u8);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A handshake message.
pub trait Message: Sized {
    /// Its frame type.
    const TYPE: FrameType;
    /// Appends the fields its proof covers.
    fn encode_signed_part(&self, out: &mut Vec<u8>);
    /// Appends its proof (nothing for messages without one).
    fn encode_proof(&self, out: &mut Vec<u8>);
    /// Decodes a body strictly.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for any body that is not exactly one valid encoding: a field cut
    /// short, a length or count outside its specified limits, a value the specification
    /// does not allow, or bytes left over.
    fn decode(body: &[u8]) -> Result<Self, DecodeError>;

    /// The signed part on its own.
    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_signed_part(&mut out);
        out
    }

    /// The body.
    fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_signed_part(&mut out);
        self.encode_proof(&mut out);
        out
    }

    /// The whole frame.
    fn to_frame(&self) -> Vec<u8> {
        encode_frame(Self::TYPE, &self.encode_body())
    }
}

fn put_u16_list(out: &mut Vec<u8>, list: &[u16]) {
    out.push(u8::try_from(list.len()).unwrap_or(u8::MAX));
    for v in list.iter().take(usize::from(u8::MAX)) {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn read_u16_list(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u16>, DecodeError> {
    let n = Reader::check_count(field, usize::from(r.u8(field)?), 1, MAX_OFFERS)?;
    (0..n).map(|_| r.u16(field)).collect()
}

fn read_client_id(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes_u8("client id", 1, MAX_CLIENT_ID_LEN)?.to_vec())
}

fn read_jws(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let bytes = r.bytes_u16(field, 1, MAX_JWS_LEN)?;
    let valid = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(DecodeError::InvalidValue { field });
    }
    // All bytes are ASCII, hence UTF-8.
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidValue { field })
}

/// Join message 1: what the client offers and which token it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Offered protocol versions, most preferred first (1 to 16; unknown ones allowed).
    pub versions: Vec<u16>,
    /// Offered MAC suites, most preferred first (1 to 16; unknown ones allowed).
    pub suites: Vec<u16>,
    /// The client's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The token id, or `None` for the unnamed-token flow (challenges for the first
    /// unexpired tokens, up to the gateway's cap).
    pub token_id: Option<TokenId>,
}

impl Message for ClientHello {
    const TYPE: FrameType = FrameType::ClientHello;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        put_u16_list(out, &self.versions);
        put_u16_list(out, &self.suites);
        out.extend_from_slice(&self.nonce);
        match &self.token_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(id.as_bytes());
            }
        }
    }
    fn encode_proof(&self, _: &mut Vec<u8>) {}
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let versions = read_u16_list(&mut r, "versions")?;
        let suites = read_u16_list(&mut r, "suites")?;
        let nonce = r.array("client nonce")?;
        let token_id = match r.u8("token id flag")? {
            0 => None,
            1 => Some(
                TokenId::from_bytes(r.take(6, "token id")?)
                    .map_err(|_| DecodeError::InvalidValue { field: "token id" })?,
            ),
            _ => return Err(DecodeError::InvalidValue { field: "token id flag" }),
        };
        r.finish("ClientHello")?;
        Ok(Self { versions, suites, nonce, token_id })
    }
}

/// Join message 2: the gateway's choices, identity, ephemeral share and token challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerChallenge {
    /// The chosen version.
    pub version: u16,
    /// The chosen MAC suite.
    pub suite: u16,
    /// The gateway's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The gateway's Ed25519 identity key.
    pub identity_key: [u8; 32],
    /// The gateway's ephemeral X25519 share.
    pub ephemeral: [u8; 32],
    /// Detached EdDSA JWS, one per token (1 to 16, each 1 to 512 bytes).
    pub challenges: Vec<String>,
}

impl Message for ServerChallenge {
    const TYPE: FrameType = FrameType::ServerChallenge;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.suite.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.identity_key);
        out.extend_from_slice(&self.ephemeral);
    }
    fn encode_proof(&self, out: &mut Vec<u8>) {
        out.push(u8::try_from(self.challenges.len()).unwrap_or(u8::MAX));
        for c in self.challenges.iter().take(usize::from(u8::MAX)) {
            put_bytes_u16(out, c.as_bytes());
        }
    }
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u16("version")?;
        let suite = r.u16("suite")?;
        let nonce = r.array("server nonce")?;
        let identity_key = r.array("identity key")?;
        let ephemeral = r.array("server ephemeral")?;
        let n = Reader::check_count("challenges", usize::from(r.u8("challenges")?), 1, MAX_CHALLENGES)?;
        let challenges = (0..n).map(|_| read_jws(&mut r, "challenge")).collect::<Result<_, _>>()?;
        r.finish("ServerChallenge")?;
        Ok(Self { version, suite, nonce, identity_key, ephemeral, challenges })
    }
}

/// Join message 3: the client's id, share, evidence, request and token proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The token the proof is keyed with.
    pub token_id: TokenId,
    /// The client id as sent (1 to 63 bytes; validated by the gateway).
    pub client_id: Vec<u8>,
    /// The client's ephemeral X25519 share.
    pub ephemeral: [u8; 32],
    /// Attestation evidence (0 to 8 KiB, opaque to the protocol).
    pub evidence: Vec<u8>,
    /// The application's request (0 to 4 KiB, opaque to the protocol): what the
    /// gateway's application answers in the ticket, a certificate signing request say.
    pub request: Vec<u8>,
    /// Detached HS256 JWS keyed by the token secret over the transcript hash.
    pub proof: String,
}

impl ClientAuth {
    /// The fields before the evidence (token id, client id, ephemeral share): what the
    /// attestation binding covers, after the transcript so far and the type byte
    /// (`spec/PROTOCOL.md` §7.3).
    pub fn bound_part(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_bound_part(&mut out);
        out
    }

    fn encode_bound_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.token_id.as_bytes());
        put_bytes_u8(out, &self.client_id);
        out.extend_from_slice(&self.ephemeral);
    }
}

impl Message for ClientAuth {
    const TYPE: FrameType = FrameType::ClientAuth;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        self.encode_bound_part(out);
        put_bytes_u16(out, &self.evidence);
        put_bytes_u16(out, &self.request);
    }
    fn encode_proof(&self, out: &mut Vec<u8>) {
        put_bytes_u16(out, self.proof.as_bytes());
    }
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let token_id =
            TokenId::from_bytes(r.take(6, "token id")?).map_err(|_| DecodeError::InvalidValue { field: "token id" })?;
        let client_id = read_client_id(&mut r)?;
        let ephemeral = r.array("client ephemeral")?;
        let evidence = r.bytes_u16("evidence", 0, MAX_EVIDENCE)?.to_vec();
        let request = r.bytes_u16("request", 0, MAX_REQUEST)?.to_vec();
        let proof = read_jws(&mut r, "proof")?;
        r.finish("ClientAuth")?;
        Ok(Self { token_id, client_id, ephemeral, evidence, request, proof })
    }
}

/// A message that is one length-prefixed field (a ticket or a request) and a MAC.
macro_rules! field_and_mac_message {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $field:ident, $max:expr, $field_doc:literal, $mac_name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            #[doc = $field_doc]
            pub $field: Vec<u8>,
            /// HMAC-SHA256 over the transcript.
            pub mac: [u8; MAC_LEN],
        }

        impl Message for $name {
            const TYPE: FrameType = $ty;
            fn encode_signed_part(&self, out: &mut Vec<u8>) {
                put_bytes_u16(out, &self.$field);
            }
            fn encode_proof(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.mac);
            }
            fn decode(body: &[u8]) -> Result<Self, DecodeError> {
                let mut r = Reader::new(body);
                let $field = r.bytes_u16(stringify!($field), 0, $max)?.to_vec();
                let mac = r.array($mac_name)?;
                r.finish(stringify!($name))?;
                Ok(Self { $field, mac })
            }
        }
    };
}

field_and_mac_message!(
    /// Join message 4: the ticket and the gateway's key confirmation.
    ServerFinished,
    FrameType::ServerFinished,
    ticket,
    MAX_TICKET,
    "Application payload for the new client (0 to 4 KiB).",
    "server finished mac"
);

field_and_mac_message!(
    /// Resume message 3: the client's request (empty for none) and key confirmation.
    ResumeFinished,
    FrameType::ResumeFinished,
    request,
    MAX_REQUEST,
    "The application's request (0 to 4 KiB; empty: no `ResumeTicket` follows).",
    "resume finished mac"
);

field_and_mac_message!(
    /// Resume message 4, sent only when the `ResumeFinished` carried a request: the
    /// application's answer, under the gateway's MAC.
    ResumeTicket,
    FrameType::ResumeTicket,
    ticket,
    MAX_TICKET,
    "The application's answer to the request (0 to 4 KiB).",
    "resume ticket mac"
);

/// A message that is a MAC and nothing else.
macro_rules! mac_only_message {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// HMAC-SHA256 over the transcript.
            pub mac: [u8; MAC_LEN],
        }

        impl Message for $name {
            const TYPE: FrameType = $ty;
            fn encode_signed_part(&self, _: &mut Vec<u8>) {}
            fn encode_proof(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.mac);
            }
            fn decode(body: &[u8]) -> Result<Self, DecodeError> {
                let mut r = Reader::new(body);
                let mac = r.array($field)?;
                r.finish(stringify!($name))?;
                Ok(Self { mac })
            }
        }
    };
}

mac_only_message!(
    /// Join message 5: the client's key confirmation.
    ClientFinished,
    FrameType::ClientFinished,
    "client finished mac"
);

/// Resume message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeHello {
    /// Offered protocol versions.
    pub versions: Vec<u16>,
    /// Offered MAC suites.
    pub suites: Vec<u16>,
    /// The client id whose keyring to use.
    pub client_id: Vec<u8>,
    /// The fingerprints ([`crate::keys::KeyringId`]) of the keyrings the client holds,
    /// newest first: one, or two while a rotation's outcome is unknown to it (1 to
    /// [`MAX_OFFERED_KEYRINGS`]).
    pub keyrings: Vec<[u8; 32]>,
    /// The client's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The client's ephemeral X25519 share.
    pub ephemeral: [u8; 32],
}

impl Message for ResumeHello {
    const TYPE: FrameType = FrameType::ResumeHello;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        put_u16_list(out, &self.versions);
        put_u16_list(out, &self.suites);
        put_bytes_u8(out, &self.client_id);
        out.push(u8::try_from(self.keyrings.len()).unwrap_or(u8::MAX));
        for id in self.keyrings.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ephemeral);
    }
    fn encode_proof(&self, _: &mut Vec<u8>) {}
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let versions = read_u16_list(&mut r, "versions")?;
        let suites = read_u16_list(&mut r, "suites")?;
        let client_id = read_client_id(&mut r)?;
        let n = Reader::check_count("keyrings", usize::from(r.u8("keyrings")?), 1, MAX_OFFERED_KEYRINGS)?;
        let keyrings = (0..n).map(|_| r.array("keyring id")).collect::<Result<_, _>>()?;
        let nonce = r.array("client nonce")?;
        let ephemeral = r.array("client ephemeral")?;
        r.finish("ResumeHello")?;
        Ok(Self { versions, suites, client_id, keyrings, nonce, ephemeral })
    }
}

/// Resume message 2: the gateway's choices, share, and proof that it holds the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeChallenge {
    /// The chosen version.
    pub version: u16,
    /// The chosen MAC suite.
    pub suite: u16,
    /// Whether the gateway asks the client to rotate its keyring in this resume (on the
    /// wire one byte, `0x00` or `0x01`; any other value is malformed).
    pub rotate: bool,
    /// The gateway's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The gateway's ephemeral X25519 share.
    pub ephemeral: [u8; 32],
    /// HMAC-SHA256 with the resume server-finished key.
    pub mac: [u8; MAC_LEN],
}

impl Message for ResumeChallenge {
    const TYPE: FrameType = FrameType::ResumeChallenge;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.suite.to_be_bytes());
        out.push(u8::from(self.rotate));
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ephemeral);
    }
    fn encode_proof(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mac);
    }
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u16("version")?;
        let suite = r.u16("suite")?;
        let rotate = match r.u8("rotate")? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::InvalidValue { field: "rotate" }),
        };
        let nonce = r.array("server nonce")?;
        let ephemeral = r.array("server ephemeral")?;
        let mac = r.array("resume challenge mac")?;
        r.finish("ResumeChallenge")?;
        Ok(Self { version, suite, rotate, nonce, ephemeral, mac })
    }
}

/// A handshake abort: one alert code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertMessage {
    /// The alert code (see [`crate::Alert`]); unknown codes decode and are reported as such.
    pub code: u8,
}

impl Message for AlertMessage {
    const TYPE: FrameType = FrameType::Alert;
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.push(self.code);
    }
    fn encode_proof(&self, _: &mut Vec<u8>) {}
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.u8("alert code")?;
        r.finish("Alert")?;
        Ok(Self { code })
    }
}

/// Any handshake message, decoded from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HandshakeMessage {
    ClientHello(ClientHello),
    ServerChallenge(ServerChallenge),
    ClientAuth(ClientAuth),
    ServerFinished(ServerFinished),
    ClientFinished(ClientFinished),
    ResumeHello(ResumeHello),
    ResumeChallenge(ResumeChallenge),
    ResumeFinished(ResumeFinished),
    ResumeTicket(ResumeTicket),
    Alert(AlertMessage),
}

impl HandshakeMessage {
    /// Decodes a frame's body by its type.
    ///
    /// # Errors
    ///
    /// The message's own [`Message::decode`] error; [`DecodeError::UnknownType`] for `Data`
    /// and `Close`, which are channel frames.
    pub fn decode(frame_type: FrameType, body: &[u8]) -> Result<Self, DecodeError> {
        Ok(match frame_type {
            FrameType::ClientHello => Self::ClientHello(ClientHello::decode(body)?),
            FrameType::ServerChallenge => Self::ServerChallenge(ServerChallenge::decode(body)?),
            FrameType::ClientAuth => Self::ClientAuth(ClientAuth::decode(body)?),
            FrameType::ServerFinished => Self::ServerFinished(ServerFinished::decode(body)?),
            FrameType::ClientFinished => Self::ClientFinished(ClientFinished::decode(body)?),
            FrameType::ResumeHello => Self::ResumeHello(ResumeHello::decode(body)?),
            FrameType::ResumeChallenge => Self::ResumeChallenge(ResumeChallenge::decode(body)?),
            FrameType::ResumeFinished => Self::ResumeFinished(ResumeFinished::decode(body)?),
            FrameType::ResumeTicket => Self::ResumeTicket(ResumeTicket::decode(body)?),
            FrameType::Alert => Self::Alert(AlertMessage::decode(body)?),
            FrameType::Data | FrameType::Close => return Err(DecodeError::UnknownType(frame_type as u8)),
        })
    }

    /// Decodes one whole frame (header, body, nothing after).
    ///
    /// # Errors
    ///
    /// Any [`peek_handshake_frame`] error; [`DecodeError::Truncated`] if `bytes` is shorter
    /// than the frame its header announces; [`DecodeError::TrailingBytes`] if bytes follow
    /// the frame; and any error decoding its body.
    pub fn decode_frame(bytes: &[u8]) -> Result<Self, DecodeError> {
        let frame = peek_handshake_frame(bytes)?.ok_or(DecodeError::Truncated { field: "frame" })?;
        if frame.bytes.len() != bytes.len() {
            return Err(DecodeError::TrailingBytes {
                what: "frame",
                extra: bytes.len().saturating_sub(frame.bytes.len()),
            });
        }
        Self::decode(frame.frame_type, frame.body)
    }

    /// Encodes the whole frame.
    pub fn to_frame(&self) -> Vec<u8> {
        match self {
            Self::ClientHello(m) => m.to_frame(),
            Self::ServerChallenge(m) => m.to_frame(),
            Self::ClientAuth(m) => m.to_frame(),
            Self::ServerFinished(m) => m.to_frame(),
            Self::ClientFinished(m) => m.to_frame(),
            Self::ResumeHello(m) => m.to_frame(),
            Self::ResumeChallenge(m) => m.to_frame(),
            Self::ResumeFinished(m) => m.to_frame(),
            Self::ResumeTicket(m) => m.to_frame(),
            Self::Alert(m) => m.to_frame(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ClientHello {
        ClientHello { versions: alloc::vec![1], suites: alloc::vec![2, 1], nonce: [7; 32], token_id: None }
    }

    #[test]
    fn frames_round_trip_and_reject_trailing_bytes() {
        let frame = hello().to_frame();
        assert_eq!(HandshakeMessage::decode_frame(&frame), Ok(HandshakeMessage::ClientHello(hello())));
        let mut long = frame.clone();
        long.push(0);
        assert!(matches!(HandshakeMessage::decode_frame(&long), Err(DecodeError::TrailingBytes { .. })));
        // A body with a trailing byte inside a consistent frame header.
        let mut body = hello().encode_body();
        body.push(0);
        assert!(matches!(
            HandshakeMessage::decode_frame(&encode_frame(FrameType::ClientHello, &body)),
            Err(DecodeError::TrailingBytes { what: "ClientHello", extra: 1 })
        ));
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let header = [0x01, 0x00, 0x00, 0x40, 0x01];
        assert_eq!(
            peek_handshake_frame(&header),
            Err(DecodeError::TooLong { field: "frame length", len: 0x4001, max: MAX_HANDSHAKE_BODY })
        );
        assert_eq!(peek_handshake_frame(&[0x01, 0, 0]), Ok(None));
        assert_eq!(peek_handshake_frame(&[0x01, 0, 0, 0, 9, 1]), Ok(None));
        assert_eq!(peek_handshake_frame(&[0x99, 0, 0, 0, 0]), Err(DecodeError::UnknownType(0x99)));
    }

    #[test]
    fn empty_lists_and_bad_flags_are_malformed() {
        let mut h = hello();
        h.versions.clear();
        assert!(matches!(ClientHello::decode(&h.encode_body()), Err(DecodeError::TooShort { .. })));
        let mut body = hello().encode_body();
        if let Some(last) = body.last_mut() {
            *last = 2;
        }
        assert_eq!(ClientHello::decode(&body), Err(DecodeError::InvalidValue { field: "token id flag" }));
    }
}
