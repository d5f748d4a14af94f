//! The gateway's local admin socket: operator commands against a running gateway.
//!
//! A running gateway holds its database open for its whole life, so operator commands
//! (`token create/list/revoke`, `clients list/revoke`, `gateway pin`, `gateway ca`) reach it over a Unix domain
//! socket in its data directory ([`ADMIN_SOCKET`]), mode 0600 inside the 0700
//! directory. The gateway checks each peer's credentials and refuses a peer of another
//! user. The format is JSON lines, one request and one response per line, versioned
//! ([`ADMIN_VERSION`]):
//!
//! ```text
//! → {"v":1,"request":{"op":"token_revoke","id":"abcdef"}}
//! ← {"v":1,"ok":{"revoked":{"existed":true,"closed_sessions":0}}}
//! ← {"v":1,"error":{"kind":"bad_request","message":"…"}}
//! ```
//!
//! Every request is validated before anything changes: an unknown version or
//! operation, unknown fields, a line over [`MAX_REQUEST_LINE`] bytes, or a value that
//! breaks the token limits gets a typed [`AdminErrorKind`] and changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::storage::{CloneSuspicion, KeyringRecord};
use boarding::token::{BootstrapToken, TokenId, TokenRecord};
use serde::{Deserialize, Serialize};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::unix::{UnixListener, UnixStream};

use crate::error::Error;
use crate::gateway::Gateway;
use crate::store::{Store, TokenTemplate, create_or_insert_token};

/// The admin socket's file name inside a gateway's data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// The admin format's version.
pub const ADMIN_VERSION: u32 = 1;
/// The longest request line accepted, in bytes.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// What an operator asks a running gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// The gateway's pin.
    Pin {},
    /// The certificate (PEM) of the gateway's client CA, which signs the node
    /// certificates agents ask for (public: for the services that verify them).
    CaCertificate {},
    /// Create a token (the response carries its secret, once).
    TokenCreate {
        /// When it expires (Unix seconds); `None` never.
        expires_at: Option<u64>,
        /// Most redemptions; 0 is unlimited.
        max_uses: u32,
        /// Labels for every client that joins with it.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// Free text for operators.
        #[serde(default)]
        description: String,
        /// The token to store, chosen by the operator; absent, the gateway draws one.
        #[serde(default)]
        token: Option<BootstrapToken>,
    },
    /// Every token, without secrets.
    TokenList {},
    /// Delete a token.
    TokenRevoke {
        /// Its id.
        id: TokenId,
    },
    /// Every client, without keys.
    ClientsList {},
    /// Delete a client's keyring and close its live sessions.
    ClientsRevoke {
        /// Its client id.
        id: ClientId,
    },
    /// Rotate a client's keyring at its next resume.
    ClientsRotate {
        /// Its client id.
        id: ClientId,
    },
}

/// A token as operators see it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// The token id.
    pub id: TokenId,
    /// When it expires; `None` never.
    pub expires_at: Option<u64>,
    /// Most redemptions; 0 is unlimited.
    pub max_uses: u32,
    /// Redemptions so far.
    pub use_count: u32,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its description.
    pub description: String,
}

impl From<&TokenRecord> for TokenView {
    fn from(r: &TokenRecord) -> Self {
        Self {
            id: r.id(),
            expires_at: r.expires_at,
            max_uses: r.max_uses,
            use_count: r.use_count,
            labels: r.labels.clone(),
            description: r.description.clone(),
        }
    }
}

/// A client as operators see it: everything but its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    /// The client id.
    pub client_id: ClientId,
    /// The token it joined with.
    pub token_id: TokenId,
    /// That token's labels at join time.
    pub labels: BTreeMap<String, String>,
    /// Whether it has confirmed its keyring.
    pub confirmed: bool,
    /// When it joined (Unix seconds).
    pub created_at: u64,
    /// When a rotation made its current keyring (`None`: the join's).
    #[serde(default)]
    pub rotated_at: Option<u64>,
    /// Whether a rotation is asked for at its next resume.
    #[serde(default)]
    pub rotation_requested: bool,
    /// How many keyrings it rotated away from are kept for clone detection.
    #[serde(default)]
    pub retired_keyrings: usize,
    /// Resumes with a keyring it had rotated away from: a copy of it exists.
    #[serde(default)]
    pub clone_suspected: Option<CloneSuspicion>,
}

impl From<&KeyringRecord> for ClientView {
    fn from(r: &KeyringRecord) -> Self {
        Self {
            client_id: r.client_id.clone(),
            token_id: r.token_id,
            labels: r.labels.clone(),
            confirmed: r.confirmed,
            created_at: r.created_at,
            rotated_at: r.rotated_at,
            rotation_requested: r.rotation_requested,
            retired_keyrings: r.retired.len(),
            clone_suspected: r.clone_suspected.as_deref().cloned(),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminResponse {
    /// The pin.
    Pin(Pin),
    /// The client CA's certificate, PEM.
    CaCertificate(String),
    /// A new token: shown this once.
    Created {
        /// The whole token, secret included.
        token: BootstrapToken,
        /// Its record, without the secret.
        view: TokenView,
    },
    /// Tokens, ordered by id.
    Tokens(Vec<TokenView>),
    /// Clients, ordered by client id.
    Clients(Vec<ClientView>),
    /// The outcome of a rotation request: whether the client exists.
    RotationRequested {
        /// Whether the client has a keyring.
        existed: bool,
    },
    /// The outcome of a revocation.
    Revoked {
        /// Whether the token or client existed.
        existed: bool,
        /// How many live sessions were closed.
        closed_sessions: usize,
    },
}

/// Why an admin request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminErrorKind {
    /// The request did not parse or breaks a limit; nothing changed.
    BadRequest,
    /// The request's format version is not this gateway's.
    UnsupportedVersion,
    /// The peer is not the gateway's user.
    Forbidden,
    /// The gateway's store failed.
    Store,
    /// The request conflicts with what is stored (a chosen token's id is taken);
    /// nothing changed.
    Conflict,
}

/// A failed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminError {
    /// The cause.
    pub kind: AdminErrorKind,
    /// What went wrong, for the operator.
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    v: u32,
    request: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseLine {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<AdminResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<AdminError>,
}

fn bad_request(message: impl Into<String>) -> AdminError {
    AdminError { kind: AdminErrorKind::BadRequest, message: message.into() }
}

/// Parses one request line: the version first, then the request.
fn parse_request(line: &[u8]) -> Result<AdminRequest, AdminError> {
    let envelope: RequestLine =
        serde_json::from_slice(line).map_err(|e| bad_request(format!("not an admin request line: {e}")))?;
    if envelope.v != ADMIN_VERSION {
        return Err(AdminError {
            kind: AdminErrorKind::UnsupportedVersion,
            message: format!("admin format v{} is not supported; this gateway speaks v{ADMIN_VERSION}", envelope.v),
        });
    }
    serde_json::from_value(envelope.request).map_err(|e| bad_request(format!("invalid request: {e}")))
}

async fn execute<S: Store>(gateway: &Gateway<S>, request: AdminRequest) -> Result<AdminResponse, AdminError> {
    let store_error = |e: Error| AdminError { kind: AdminErrorKind::Store, message: e.to_string() };
    match request {
        AdminRequest::Pin {} => Ok(AdminResponse::Pin(gateway.pin())),
        #[cfg(feature = "ca")]
        AdminRequest::CaCertificate {} => gateway
            .certificate_authority(crate::certificate::CertificatePolicy::default())
            .map(|ca| AdminResponse::CaCertificate(ca.certificate_pem()))
            .map_err(|e| AdminError { kind: AdminErrorKind::Store, message: e.to_string() }),
        #[cfg(not(feature = "ca"))]
        AdminRequest::CaCertificate {} => Err(bad_request("this gateway was built without its client CA (`ca`)")),
        AdminRequest::TokenCreate { expires_at, max_uses, labels, description, token } => {
            let template = TokenTemplate { expires_at, max_uses, labels, description };
            match create_or_insert_token(gateway.store(), &template, token).await {
                Ok((token, record)) => Ok(AdminResponse::Created { token, view: TokenView::from(&record) }),
                Err(e @ Error::TokenMetadata(_)) => Err(bad_request(e.to_string())),
                Err(e @ Error::TokenIdTaken { .. }) => {
                    Err(AdminError { kind: AdminErrorKind::Conflict, message: e.to_string() })
                }
                Err(e) => Err(store_error(e)),
            }
        }
        AdminRequest::TokenList {} => {
            let records = gateway.store().tokens().await.map_err(|e| store_error(e.into()))?;
            Ok(AdminResponse::Tokens(records.iter().map(TokenView::from).collect()))
        }
        AdminRequest::TokenRevoke { id } => {
            let existed = gateway.store().revoke_token(id).await.map_err(|e| store_error(e.into()))?;
            Ok(AdminResponse::Revoked { existed, closed_sessions: 0 })
        }
        AdminRequest::ClientsList {} => {
            let records = gateway.store().clients().await.map_err(|e| store_error(e.into()))?;
            Ok(AdminResponse::Clients(records.iter().map(ClientView::from).collect()))
        }
        AdminRequest::ClientsRevoke { id } => {
            let (existed, closed_sessions) = gateway.revoke_client(id).await.map_err(store_error)?;
            Ok(AdminResponse::Revoked { existed, closed_sessions })
        }
        AdminRequest::ClientsRotate { id } => {
            let existed = gateway.request_rotation(id).await.map_err(store_error)?;
            Ok(AdminResponse::RotationRequested { existed })
        }
    }
}

/// Whether the peer on `stream` runs as this process's user.
fn same_user(stream: &UnixStream) -> Result<bool, std::io::Error> {
    let peer = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(peer.uid == rustix::process::geteuid())
}

async fn respond(stream: &mut UnixStream, outcome: Result<AdminResponse, AdminError>) -> std::io::Result<()> {
    let line = match outcome {
        Ok(ok) => ResponseLine { v: ADMIN_VERSION, ok: Some(ok), error: None },
        Err(error) => ResponseLine { v: ADMIN_VERSION, ok: None, error: Some(error) },
    };
    let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    stream.flush().await
}

async fn serve_connection<S: Store>(gateway: Gateway<S>, mut stream: UnixStream) -> std::io::Result<()> {
    if !same_user(&stream)? {
        tracing::warn!("admin connection from another user refused");
        let refusal = AdminError {
            kind: AdminErrorKind::Forbidden,
            message: "the admin socket serves only the gateway's own user".into(),
        };
        return respond(&mut stream, Err(refusal)).await;
    }
    let mut reader = BufReader::new(stream.clone());
    loop {
        // One byte over the limit tells an overlong line from a line of exactly the limit.
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REQUEST_LINE).unwrap_or(u64::MAX).saturating_add(1);
        let n = (&mut reader).take(limit).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            let refusal = bad_request(format!("request line over {MAX_REQUEST_LINE} bytes, or not ended by a newline"));
            return respond(&mut stream, Err(refusal)).await;
        }
        let outcome = match parse_request(&line) {
            Ok(request) => execute(&gateway, request).await,
            Err(e) => Err(e),
        };
        respond(&mut stream, outcome).await?;
    }
}

/// The admin socket of a gateway, serving until dropped.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    task: Option<smol::Task<()>>,
}

impl AdminServer {
    /// Listens on `path` (mode 0600) for `gateway`'s operator commands. A stale socket
    /// file (no one answering) is replaced; a live one is an error: another gateway
    /// serves this data directory.
    ///
    /// # Errors
    ///
    /// [`Error::AdminSocket`] if another gateway answers on `path`, or if the stale socket
    /// file cannot be removed, the socket cannot be bound or its mode cannot be set.
    pub fn start<S: Store>(gateway: &Gateway<S>, path: &Path) -> Result<Self, Error> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::AdminSocket {
                    path: path.to_owned(),
                    reason: "another gateway is serving this data directory".into(),
                });
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::AdminSocket { path: path.to_owned(), reason: e.to_string() })?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::AdminSocket { path: path.to_owned(), reason: e.to_string() })?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| Error::AdminSocket { path: path.to_owned(), reason: e.to_string() })?;
        let spawner = gateway.clone();
        let gateway = gateway.clone();
        let task = spawner.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an admin connection failed");
                        smol::Timer::after(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let connection = gateway.clone();
                gateway
                    .spawn(async move {
                        if let Err(e) = serve_connection(connection, stream).await {
                            tracing::debug!(error = %e, "admin connection ended with an error");
                        }
                    })
                    .detach();
            }
        });
        Ok(Self { path: path.to_owned(), task: Some(task) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        drop(self.task.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connection to a running gateway's admin socket.
#[derive(Debug)]
pub struct AdminClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl AdminClient {
    /// Connects to the admin socket at `path`; `Ok(None)` if no gateway answers there
    /// (no socket file, or a stale one).
    ///
    /// # Errors
    ///
    /// [`Error::AdminSocket`] if the socket exists but cannot be connected to for another
    /// reason than no one listening (for example, no permission).
    pub async fn connect(path: &Path) -> Result<Option<Self>, Error> {
        match UnixStream::connect(path).await {
            Ok(stream) => Ok(Some(Self { reader: BufReader::new(stream.clone()), writer: stream })),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                Ok(None)
            }
            Err(e) => Err(Error::AdminSocket { path: path.to_owned(), reason: e.to_string() }),
        }
    }

    /// Sends one request and reads its answer.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the request cannot be sent or the answer read (and the gateway gave
    /// no answer); [`Error::Admin`] if the gateway refused the request, or its answer does
    /// not parse or is empty.
    pub async fn request(&mut self, request: &AdminRequest) -> Result<AdminResponse, Error> {
        let request = serde_json::to_value(request).map_err(|e| Error::Admin(bad_request(e.to_string())))?;
        let mut line = serde_json::to_vec(&RequestLine { v: ADMIN_VERSION, request })
            .map_err(|e| Error::Admin(bad_request(e.to_string())))?;
        line.push(b'\n');
        // A gateway that refuses this peer answers at once and hangs up, possibly before
        // the request is all written: its answer, if any, says more than the write error.
        let sent = match self.writer.write_all(&line).await {
            Ok(()) => self.writer.flush().await,
            Err(e) => Err(e),
        };
        let mut answer = Vec::new();
        let limit = u64::try_from(MAX_REQUEST_LINE).unwrap_or(u64::MAX).saturating_mul(16);
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut answer).await;
        match (sent, read) {
            (Err(e), _) if answer.is_empty() => {
                return Err(Error::Io { context: "sending an admin request", source: e });
            }
            (_, Err(e)) if answer.is_empty() => {
                return Err(Error::Io { context: "reading an admin response", source: e });
            }
            _ => {}
        }
        let response: ResponseLine = serde_json::from_slice(&answer)
            .map_err(|e| Error::Admin(bad_request(format!("the gateway's admin answer did not parse: {e}"))))?;
        match (response.ok, response.error) {
            (Some(ok), None) => Ok(ok),
            (_, Some(error)) => Err(Error::Admin(error)),
            (None, None) => Err(Error::Admin(bad_request("the gateway's admin answer was empty"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let ok = parse_request(br#"{"v":1,"request":{"op":"token_revoke","id":"abcdef"}}"#);
        assert_eq!(ok, Ok(AdminRequest::TokenRevoke { id: "abcdef".parse().unwrap() }));
        let cases: [(&[u8], AdminErrorKind); 6] = [
            (br#"{"v":2,"request":{"op":"pin"}}"#, AdminErrorKind::UnsupportedVersion),
            (br#"{"v":1,"request":{"op":"drop_tables"}}"#, AdminErrorKind::BadRequest),
            (br#"{"v":1,"request":{"op":"token_revoke","id":"ABC"}}"#, AdminErrorKind::BadRequest),
            (br#"{"v":1,"request":{"op":"clients_revoke","id":"-bad-"}}"#, AdminErrorKind::BadRequest),
            (br#"{"v":1,"request":{"op":"pin","extra":1}}"#, AdminErrorKind::BadRequest),
            (b"not json", AdminErrorKind::BadRequest),
        ];
        for (line, kind) in cases {
            assert_eq!(parse_request(line).map_err(|e| e.kind), Err(kind), "{}", String::from_utf8_lossy(line));
        }
    }
}
