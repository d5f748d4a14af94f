//! Services behind the gateway: an agent forwards one stream (a local TCP connection,
//! stdin and stdout, any `AsyncRead + AsyncWrite`) through a session of its own to a
//! named service; the gateway checks the service's rule against the session's verified
//! client, connects to the service's upstream, writes a PROXY protocol v2 header
//! carrying the client's identity, and then carries the stream's bytes both ways. The
//! protocol is `spec/FORWARDING.md`.
//!
//! * **Gateway**: [`Services`] names each [`Service`] (`name -> host:port`) with its
//!   [`Rule`]s (by token label or attested name; a service with rules admits only the
//!   clients one of them matches, a service without any admits every verified client) and
//!   an optional application check ([`Services::with_authorizer`]).
//!   [`serve_services`] makes the handler for [`Gateway::serve`](crate::Gateway::serve);
//!   [`Services::serve`] serves one session over any stream.
//! * **Agent**: [`Agent::forward`](crate::Agent::forward) resumes a session and forwards
//!   one stream; [`Agent::forward_listener`](crate::Agent::forward_listener) accepts local
//!   TCP connections and forwards each through a session of its own; [`forward`] does it
//!   over a session on any stream. A refusal is [`ForwardError::Refused`] with the
//!   gateway's [`Refusal`].
//! * **The upstream** reads the identity from the PROXY header ([`proxy::read_header`]
//!   in Rust, or any PROXY v2 reader): the agent cannot send or change it, since the
//!   gateway writes it before any byte of the agent's.
//!
//! **Memory.** Each direction holds at most one message in flight: a stream's pump owns
//! [`STREAM_BUFFERS`] bytes (48 KiB), allocated once when the stream starts, and reads
//! from one side only when the other has taken what it read before. A slow upstream or a
//! slow agent therefore stops the other side's reads instead of growing a queue; the
//! rest of a stream's memory is the TLS connection's own bounded buffers.
//!
//! ## Example: a service behind the gateway
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn example(gateway: boarding_smol::Gateway<boarding_smol::MemoryStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use boarding_smol::forward::{Rule, Service, Services, serve_services};
//!
//! let services = Services::new()
//!     .with_service("db".parse()?, Service::new("127.0.0.1:5432").allow(Rule::label("role", "db")))
//!     .with_service("metrics".parse()?, Service::new("127.0.0.1:9100"));
//! let listener = smol::net::TcpListener::bind("0.0.0.0:7443").await?;
//! let serving = gateway.serve(listener, serve_services(services))?;
//! # let _ = serving;
//! # Ok(())
//! # }
//! ```
//!
//! And on the agent, which joined before and stored its keyring:
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn example(keyrings: boarding_smol::RedbKeyringStore) -> Result<(), Box<dyn std::error::Error>> {
//! let agent = boarding_smol::Agent::default();
//! let listener = smol::net::TcpListener::bind("127.0.0.1:15432").await?;
//! // Each connection to 127.0.0.1:15432 reaches the gateway's "db" upstream, through a
//! // session resumed with the keyring in `keyrings` (where a rotation is stored, too).
//! agent.forward_listener("gateway.example:7443", &keyrings, "db", listener, 8).await?;
//! # Ok(())
//! # }
//! ```

pub mod proxy;
mod pump;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use boarding::server::VerifiedClient;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;

pub use self::proxy::{Identity, Proxied, ProxyError, read_header};
use self::pump::{Failure, Outcome, Pump};
pub use self::wire::{AbortReason, Answer, MAX_DATA, MAX_MESSAGE, Refusal, ServiceName, ServiceNameError, WireError};
use self::wire::{Message, VERSION};
use crate::error::Error;
use crate::session::{AgentSession, GatewaySession, deadline};

/// The bytes a stream's pump allocates, once, for its two buffers: the one outgoing
/// frame and room for two incoming ones (§4.3 of `spec/FORWARDING.md`).
pub const STREAM_BUFFERS: usize = pump::SEND_BUFFER + pump::RECV_BUFFER;

/// How long the gateway waits for an upstream's TCP connection by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The stream bytes a finished stream carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Read from this side's local stream (the agent's stream, or the upstream) and sent.
    pub sent: u64,
    /// Received and written to it.
    pub received: u64,
}

/// A forwarding message the peer should not have sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// It does not decode.
    #[error("{0}")]
    Malformed(WireError),
    /// It decodes but is out of place.
    #[error("a {message} message {when}")]
    Unexpected {
        /// The message's name.
        message: &'static str,
        /// Where it came.
        when: &'static str,
    },
}

/// Why forwarding a stream failed (inside [`Error::Forward`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The service name breaks the rules.
    #[error(transparent)]
    InvalidServiceName(#[from] ServiceNameError),
    /// The gateway refused the stream.
    #[error("the gateway refused the stream to service {service}: {refusal}")]
    Refused {
        /// The service asked for.
        service: ServiceName,
        /// The gateway's reason.
        refusal: Refusal,
    },
    /// The gateway closed the session without answering.
    #[error(
        "the gateway closed the session without answering the request for service {service} (it may be at its \
         session cap for this client, or stopping)"
    )]
    NoAnswer {
        /// The service asked for.
        service: ServiceName,
    },
    /// The gateway answered with something other than an answer.
    #[error(
        "the gateway answered the request for service {service} with a{got} message: it does not serve \
         forwarded streams (is it running the echo handler?)"
    )]
    NotForwarding {
        /// The service asked for.
        service: ServiceName,
        /// What it sent (" Data message", " malformed message" and so on, with its article).
        got: &'static str,
    },
    /// The peer gave the stream up.
    #[error("the {peer} aborted the stream: {reason}")]
    Aborted {
        /// `"gateway"` or `"agent"`.
        peer: &'static str,
        /// Its reason.
        reason: AbortReason,
    },
    /// The peer closed the session before the stream ended in both directions.
    #[error("the {peer} closed the session before the stream ended")]
    Cut {
        /// `"gateway"` or `"agent"`.
        peer: &'static str,
    },
    /// The peer broke the forwarding protocol.
    #[error("the {peer} broke the forwarding protocol: {violation}")]
    Protocol {
        /// `"gateway"` or `"agent"`.
        peer: &'static str,
        /// What it sent.
        violation: Violation,
    },
    /// The peer announced a message larger than the protocol allows.
    #[error("the {peer} sent a {len}-byte message, over the forwarding limit of {MAX_MESSAGE} bytes")]
    Oversized {
        /// `"gateway"` or `"agent"`.
        peer: &'static str,
        /// The announced length.
        len: usize,
    },
    /// Reading or writing the agent's local stream failed.
    #[error("the local stream failed: {0}")]
    Local(#[source] io::Error),
    /// Reading or writing the gateway's connection to the upstream failed.
    #[error("the connection to the upstream {upstream} of service {service} failed: {source}")]
    Upstream {
        /// The service.
        service: ServiceName,
        /// Its upstream address.
        upstream: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A rule admitting clients to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The client's token carries the label `key` with exactly this value.
    Label {
        /// The label's key.
        key: String,
        /// Its value.
        value: String,
    },
    /// The session's attested identity has exactly this name. Only a session that
    /// carries an attested identity can match: a join's that attested, or a resume of the
    /// keyring such a join created, which carries the identity attested then (see
    /// `spec/FORWARDING.md` §6).
    AttestedName(String),
}

/// Text that is not a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rule {text:?}: a rule is KEY=VALUE (the token label KEY has the value VALUE) or attested:NAME (the \
     attested name is NAME)"
)]
pub struct RuleError {
    /// The text given.
    pub text: String,
}

impl Rule {
    /// A label rule.
    pub fn label(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Label { key: key.into(), value: value.into() }
    }

    /// An attested-name rule.
    pub fn attested_name(name: impl Into<String>) -> Self {
        Self::AttestedName(name.into())
    }

    /// Whether `client` satisfies the rule.
    pub fn matches(&self, client: &VerifiedClient) -> bool {
        match self {
            Self::Label { key, value } => client.labels().get(key) == Some(value),
            Self::AttestedName(name) => client.attested().is_some_and(|a| a.name() == name),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = RuleError;

    /// `attested:NAME`, or `KEY=VALUE` split at the first `=` (a non-empty key).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("attested:") {
            if !name.is_empty() {
                return Ok(Self::attested_name(name));
            }
        } else if let Some((key, value)) = text.split_once('=')
            && !key.is_empty()
        {
            return Ok(Self::label(key, value));
        }
        Err(RuleError { text: text.to_owned() })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label { key, value } => write!(f, "{key}={value}"),
            Self::AttestedName(name) => write!(f, "attested:{name}"),
        }
    }
}

/// One service: its upstream and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    upstream: String,
    rules: Vec<Rule>,
    proxy_header: bool,
}

impl Service {
    /// A service whose upstream is `upstream` (`host:port`, resolved at each stream),
    /// open to every verified client until a rule is added, sent a PROXY header.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self { upstream: upstream.into(), rules: Vec::new(), proxy_header: true }
    }

    /// Admits the clients `rule` matches (with several rules, a client needs to match one);
    /// a service with rules refuses every other client.
    pub fn allow(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Whether the gateway writes the PROXY v2 header before the stream (the default).
    /// Turning it off serves an upstream that cannot read one (sshd, say), which then
    /// learns nothing of the client.
    pub fn proxy_header(mut self, send: bool) -> Self {
        self.proxy_header = send;
        self
    }

    /// The upstream address.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The rules (empty: every verified client).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the gateway writes the PROXY header to this upstream.
    pub fn sends_proxy_header(&self) -> bool {
        self.proxy_header
    }

    /// Whether `client` may use the service.
    pub fn allows(&self, client: &VerifiedClient) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|rule| rule.matches(client))
    }
}

/// What a gateway application's check ([`Services::with_authorizer`]) decides a stream on.
#[derive(Debug, Clone, Copy)]
pub struct StreamRequest<'a> {
    /// The service asked for.
    pub service: &'a ServiceName,
    /// Its upstream.
    pub upstream: &'a str,
    /// The session's verified client.
    pub client: &'a VerifiedClient,
    /// The agent's address, when the gateway knows it.
    pub source: Option<SocketAddr>,
}

/// A gateway application's check on each stream the service's rules admitted: it sees
/// the verified identity (to decide, or to audit), and refuses with `false`.
pub trait Authorize: Send + Sync + 'static {
    /// Whether to accept the stream.
    fn authorize(&self, request: &StreamRequest<'_>) -> bool;
}

impl<F: Fn(&StreamRequest<'_>) -> bool + Send + Sync + 'static> Authorize for F {
    fn authorize(&self, request: &StreamRequest<'_>) -> bool {
        self(request)
    }
}

/// Text that does not name a service or a rule for one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Not `NAME=HOST:PORT`.
    #[error("invalid service {text:?}: a service is NAME=HOST:PORT")]
    Service {
        /// The text given.
        text: String,
    },
    /// Not `NAME=RULE`.
    #[error("invalid rule {text:?}: a rule is NAME=KEY=VALUE or NAME=attested:ATTESTED_NAME")]
    Allow {
        /// The text given.
        text: String,
    },
    /// The service name breaks the rules.
    #[error(transparent)]
    Name(#[from] ServiceNameError),
    /// The rule breaks the rules.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A rule or option names a service not defined.
    #[error("the service {name} is not defined: define it first (NAME=HOST:PORT)")]
    UnknownService {
        /// The name.
        name: ServiceName,
    },
    /// A service is defined twice.
    #[error("the service {name} is defined twice")]
    Duplicate {
        /// The name.
        name: ServiceName,
    },
}

/// The services a gateway serves, by name.
#[derive(Clone)]
pub struct Services {
    services: BTreeMap<ServiceName, Service>,
    authorizer: Option<Arc<dyn Authorize>>,
    connect_timeout: Duration,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("services", &self.services)
            .field("authorizer", &self.authorizer.as_ref().map(|_| "<authorizer>"))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Services {
    /// No services yet.
    pub fn new() -> Self {
        Self { services: BTreeMap::new(), authorizer: None, connect_timeout: DEFAULT_CONNECT_TIMEOUT }
    }

    /// Adds (or replaces) the service `name`.
    pub fn with_service(mut self, name: ServiceName, service: Service) -> Self {
        self.services.insert(name, service);
        self
    }

    /// Checks each stream the rules admitted with `authorizer` too.
    pub fn with_authorizer(mut self, authorizer: impl Authorize) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// How long to wait for an upstream's TCP connection ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Adds a service from `NAME=HOST:PORT` (a command-line flag, say).
    ///
    /// # Errors
    ///
    /// [`SpecError::Service`] if the text is not of that form, [`SpecError::Name`] for an
    /// invalid name, [`SpecError::Duplicate`] if the name is defined already.
    pub fn add_spec(&mut self, text: &str) -> Result<(), SpecError> {
        let (name, upstream) = text
            .split_once('=')
            .filter(|(_, upstream)| upstream.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && !p.is_empty()))
            .ok_or_else(|| SpecError::Service { text: text.to_owned() })?;
        let name = ServiceName::new(name)?;
        if self.services.contains_key(&name) {
            return Err(SpecError::Duplicate { name });
        }
        self.services.insert(name, Service::new(upstream));
        Ok(())
    }

    /// Adds a rule to a defined service from `NAME=KEY=VALUE` or `NAME=attested:NAME`.
    ///
    /// # Errors
    ///
    /// [`SpecError::Allow`] if the text is not of that form, [`SpecError::Name`] or
    /// [`SpecError::Rule`] for an invalid part, [`SpecError::UnknownService`] if no such
    /// service is defined.
    pub fn add_allow(&mut self, text: &str) -> Result<(), SpecError> {
        let (name, rule) = text.split_once('=').ok_or_else(|| SpecError::Allow { text: text.to_owned() })?;
        let name = ServiceName::new(name)?;
        let rule: Rule = rule.parse()?;
        let service = self.services.get_mut(&name).ok_or(SpecError::UnknownService { name })?;
        service.rules.push(rule);
        Ok(())
    }

    /// Turns the PROXY header of a defined service on or off (see [`Service::proxy_header`]).
    ///
    /// # Errors
    ///
    /// [`SpecError::Name`] for an invalid name, [`SpecError::UnknownService`] if no such
    /// service is defined.
    pub fn set_proxy_header(&mut self, name: &str, send: bool) -> Result<(), SpecError> {
        let name = ServiceName::new(name)?;
        let service = self.services.get_mut(&name).ok_or(SpecError::UnknownService { name })?;
        service.proxy_header = send;
        Ok(())
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// Every service, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceName, &Service)> {
        self.services.iter()
    }

    /// Serves one session over any stream: reads the agent's request, answers it, and
    /// runs the stream until it ends. `addresses` (the agent's, then the gateway's end of
    /// the connection) go into the PROXY header; `None` sends `0.0.0.0:0` for both.
    ///
    /// A refused stream is answered, logged and closed, and is no error.
    ///
    /// # Errors
    ///
    /// [`Error::Revoked`] and [`Error::IdleTimeout`] when the gateway ended the session
    /// (after an `Abort` to the agent); [`ForwardError::Upstream`] if the upstream failed,
    /// [`ForwardError::Aborted`] if the agent aborted, [`ForwardError::Cut`] and
    /// [`ForwardError::Protocol`] for an agent that broke off or broke the protocol (each
    /// inside [`Error::Forward`]); the session's own errors ([`Error::Truncated`],
    /// [`Error::Channel`], [`Error::Io`]).
    pub async fn serve<IO>(
        &self,
        mut session: GatewaySession<IO>,
        addresses: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<(), Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        session.limit_payload(MAX_MESSAGE);
        let Some(request) = session.recv().await? else { return session.close().await };
        let client = session.peer().clone();
        let source = addresses.map(|(source, _)| source);
        let service = match Message::decode(&request) {
            Ok(Message::Open { service }) => service,
            Err(WireError::UnsupportedVersion(version)) => {
                tracing::info!(client = %client.client_id(), version, "forwarding request of an unsupported version");
                return refuse(session, Refusal::UnsupportedVersion).await;
            }
            Ok(other) => {
                tracing::info!(client = %client.client_id(), got = other.name(), "forwarding request is not an Open");
                return refuse(session, Refusal::Malformed).await;
            }
            Err(e) => {
                tracing::info!(client = %client.client_id(), error = %e, "malformed forwarding request");
                return refuse(session, Refusal::Malformed).await;
            }
        };
        let Some((name, entry)) = self.services.get_key_value(service) else {
            tracing::info!(client = %client.client_id(), service, "stream refused: unknown service");
            return refuse(session, Refusal::UnknownService).await;
        };
        let request = StreamRequest { service: name, upstream: &entry.upstream, client: &client, source };
        if !entry.allows(&client) || self.authorizer.as_ref().is_some_and(|a| !a.authorize(&request)) {
            tracing::info!(
                client = %client.client_id(), token = %client.token_id(), service = %name,
                "stream refused: the client is not allowed"
            );
            return refuse(session, Refusal::NotAllowed).await;
        }
        let header = match Identity::of(&client, name).header(addresses) {
            Ok(header) => header,
            Err(e) => {
                tracing::warn!(client = %client.client_id(), service = %name, error = %e, "stream refused");
                return refuse(session, Refusal::Internal).await;
            }
        };
        let upstream = match self.connect(entry, &header).await {
            Ok(upstream) => upstream,
            Err((refusal, e)) => {
                tracing::warn!(
                    client = %client.client_id(), service = %name, upstream = %entry.upstream, error = %e,
                    "stream refused: {refusal}"
                );
                return refuse(session, refusal).await;
            }
        };
        let mut answer = Vec::with_capacity(3);
        Message::Answer { version: VERSION, answer: Answer::Accepted }.encode(&mut answer);
        session.send(&answer).await?;
        tracing::info!(
            client = %client.client_id(), token = %client.token_id(), service = %name, upstream = %entry.upstream,
            source = source.map(tracing::field::display), "stream accepted"
        );
        let (parts, _) = session.into_parts();
        let mut pump = Pump::new(parts.io, parts.channel, &parts.buffered, upstream);
        drop(parts.buffered);
        let outcome = pump.run(&parts.lifecycle).await;
        pump.end(&outcome, AbortReason::UpstreamFailed).await;
        let transfer = Transfer { sent: pump.up, received: pump.down };
        tracing::debug!(client = %client.client_id(), service = %name, ?transfer, ?outcome, "stream ended");
        match outcome {
            Outcome::Failed(Failure::Local(source)) => Err(Error::Forward(ForwardError::Upstream {
                service: name.clone(),
                upstream: entry.upstream.clone(),
                source,
            })),
            outcome => outcome_result(outcome, "agent"),
        }
    }

    /// Connects to the upstream and writes the PROXY header.
    async fn connect(&self, service: &Service, header: &[u8]) -> Result<TcpStream, (Refusal, Error)> {
        let connect = async {
            TcpStream::connect(service.upstream.as_str())
                .await
                .map_err(|source| Error::Connect { addr: service.upstream.clone(), source })
        };
        let mut upstream =
            deadline(self.connect_timeout, "connection to the upstream", connect).await.map_err(|e| {
                let refusal = if matches!(e, Error::Timeout { .. }) {
                    Refusal::UpstreamTimeout
                } else {
                    Refusal::UpstreamUnreachable
                };
                (refusal, e)
            })?;
        let _ = upstream.set_nodelay(true);
        if service.proxy_header {
            let write = async {
                upstream.write_all(header).await?;
                upstream.flush().await
            };
            write.await.map_err(|source| {
                (
                    Refusal::UpstreamUnreachable,
                    Error::Io { context: "writing the PROXY header to the upstream", source },
                )
            })?;
        }
        Ok(upstream)
    }
}

/// Answers the request with `refusal` and closes the session.
async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    mut session: GatewaySession<IO>,
    refusal: Refusal,
) -> Result<(), Error> {
    let mut answer = Vec::with_capacity(3);
    Message::Answer { version: VERSION, answer: Answer::Refused(refusal) }.encode(&mut answer);
    session.send(&answer).await?;
    session.close().await
}

/// What a pump's outcome means for the side that ran it (`peer` names the other side).
fn outcome_result(outcome: Outcome, peer: &'static str) -> Result<(), Error> {
    let forward = |e: ForwardError| Err(Error::Forward(e));
    match outcome {
        Outcome::Finished => Ok(()),
        Outcome::Stopped => Err(Error::Revoked),
        Outcome::Idle(after) => Err(Error::IdleTimeout { after }),
        Outcome::Failed(failure) => match failure {
            Failure::PeerAborted(AbortReason::Closing) if peer == "gateway" => Err(Error::Revoked),
            Failure::PeerAborted(reason) => forward(ForwardError::Aborted { peer, reason }),
            Failure::Cut => forward(ForwardError::Cut { peer }),
            Failure::Violation(violation) => forward(ForwardError::Protocol { peer, violation }),
            Failure::Local(e) => forward(ForwardError::Local(e)),
            Failure::Session(source) => Err(Error::Io { context: "forwarding a stream", source }),
            Failure::Channel(e) => Err(Error::Channel(e)),
            Failure::Truncated => Err(Error::Truncated),
            Failure::Oversized(len) => forward(ForwardError::Oversized { peer, len }),
        },
    }
}

/// Forwards `stream` through `session` (a fresh session of the agent's, on any stream) to
/// `service`: asks for the service, and once the gateway accepted, carries the stream's
/// bytes both ways until both directions have ended; the local stream is not read before
/// the answer. The session is used up.
///
/// # Errors
///
/// Inside [`Error::Forward`]: [`ForwardError::Refused`] with the gateway's [`Refusal`]
/// (unknown service, not allowed, upstream unreachable, …), [`ForwardError::NoAnswer`],
/// [`ForwardError::NotForwarding`] for a gateway that does not serve forwarding,
/// [`ForwardError::Aborted`] if the gateway gave the stream up (its upstream failed, say),
/// [`ForwardError::Local`] if the local stream failed (the gateway is sent an `Abort`),
/// [`ForwardError::Cut`] and [`ForwardError::Protocol`]. [`Error::Revoked`] when the
/// gateway ended the session (revocation, shutdown); the session's own errors
/// ([`Error::Truncated`], [`Error::Channel`], [`Error::Io`]).
pub async fn forward<IO, S>(mut session: AgentSession<IO>, service: &ServiceName, stream: S) -> Result<Transfer, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    session.limit_payload(MAX_MESSAGE);
    let mut open = Vec::with_capacity(MAX_MESSAGE.min(3usize.saturating_add(service.as_str().len())));
    Message::Open { service: service.as_str() }.encode(&mut open);
    session.send(&open).await?;
    let Some(answer) = session.recv().await? else {
        let _ = session.close().await;
        return Err(ForwardError::NoAnswer { service: service.clone() }.into());
    };
    let refused = match Message::decode(&answer) {
        Ok(Message::Answer { version: VERSION, answer: Answer::Accepted }) => None,
        Ok(Message::Answer { answer: Answer::Refused(refusal), .. }) => {
            Some(ForwardError::Refused { service: service.clone(), refusal })
        }
        Ok(Message::Answer { .. }) => Some(ForwardError::Protocol {
            peer: "gateway",
            violation: Violation::Unexpected { message: "Answer", when: "accepting another version" },
        }),
        Ok(other) => Some(ForwardError::NotForwarding { service: service.clone(), got: with_article(other.name()) }),
        Err(_) => Some(ForwardError::NotForwarding { service: service.clone(), got: " malformed" }),
    };
    if let Some(e) = refused {
        let _ = session.close().await;
        return Err(e.into());
    }
    let (parts, _) = session.into_parts();
    let mut pump = Pump::new(parts.io, parts.channel, &parts.buffered, stream);
    drop(parts.buffered);
    let outcome = pump.run(&parts.lifecycle).await;
    pump.end(&outcome, AbortReason::LocalFailed).await;
    let transfer = Transfer { sent: pump.up, received: pump.down };
    outcome_result(outcome, "gateway").map(|()| transfer)
}

fn with_article(name: &'static str) -> &'static str {
    match name {
        "Open" => "n Open",
        "Answer" => "n Answer",
        "Abort" => "n Abort",
        "End" => "n End",
        _ => " Data",
    }
}

/// The handler for [`Gateway::serve`](crate::Gateway::serve) that serves `services`:
/// each session is one forwarded stream, whose PROXY header names the agent's TCP address
/// and the gateway address it connected to.
#[cfg(feature = "tls")]
pub fn serve_services(
    services: Services,
) -> impl Fn(crate::GatewaySession<crate::GatewayStream>) -> ServeFuture + Send + Sync + Clone + 'static {
    let services = Arc::new(services);
    move |session| {
        let services = Arc::clone(&services);
        Box::pin(async move {
            let (tcp, _) = session.stream().get_ref();
            let addresses = tcp.peer_addr().ok().zip(tcp.local_addr().ok());
            services.serve(session, addresses).await
        })
    }
}

/// The future a [`serve_services`] handler returns.
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'static>>;

#[cfg(feature = "tls")]
impl crate::Agent {
    /// Resumes a session with the keyring stored in `keyrings` at `gateway`
    /// (`host:port`; a rotation is stored there) and forwards `stream` through it to
    /// `service` (see [`forward`]).
    ///
    /// # Errors
    ///
    /// [`ForwardError::InvalidServiceName`] (inside [`Error::Forward`]) before connecting;
    /// any error of [`Agent::connect`](crate::Agent::connect), then of [`forward`].
    pub async fn forward<S, K>(&self, gateway: &str, keyrings: &K, service: &str, stream: S) -> Result<Transfer, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        K: crate::KeyringStore + ?Sized,
    {
        let service = ServiceName::new(service).map_err(ForwardError::from)?;
        let session = self.connect(gateway, keyrings).await?;
        forward(session, &service, stream).await
    }

    /// Accepts TCP connections on `listener` and forwards each through a resumed session
    /// of its own to `service`, at most `max_streams` at a time (the next connection waits
    /// in the listener's backlog; the gateway caps sessions per client too). A stream that
    /// fails is logged and closed; the others go on. Runs until dropped.
    ///
    /// # Errors
    ///
    /// [`ForwardError::InvalidServiceName`] (inside [`Error::Forward`]) at once; nothing
    /// else: errors of single streams are logged.
    pub async fn forward_listener<K: crate::KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
        service: &str,
        listener: smol::net::TcpListener,
        max_streams: usize,
    ) -> Result<std::convert::Infallible, Error> {
        ServiceName::new(service).map_err(ForwardError::from)?;
        let slots = smol::lock::Semaphore::new(max_streams.max(1));
        let executor = smol::Executor::new();
        executor
            .run(async {
                loop {
                    let slot = slots.acquire().await;
                    let (stream, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a local connection failed");
                            smol::Timer::after(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    executor
                        .spawn(async move {
                            let _slot = slot;
                            match self.forward(gateway, keyrings, service, stream).await {
                                Ok(transfer) => {
                                    tracing::debug!(%peer, service, ?transfer, "forwarded connection ended")
                                }
                                Err(e) => {
                                    tracing::warn!(%peer, service, error = %e, "forwarding a local connection failed")
                                }
                            }
                        })
                        .detach();
                }
            })
            .await
    }
}

/// A reader and a writer as one stream (stdin and stdout, say), for [`forward`]. Closing
/// it closes the writer.
#[derive(Debug)]
pub struct Duplex<R, W> {
    /// What the stream reads from.
    pub reader: R,
    /// What it writes to.
    pub writer: W,
}

impl<R, W> Duplex<R, W> {
    /// Joins `reader` and `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader, writer }
    }
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Duplex<R, W> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Duplex<R, W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_specs_parse() {
        assert_eq!("role=db".parse::<Rule>().unwrap(), Rule::label("role", "db"));
        assert_eq!("k=".parse::<Rule>().unwrap(), Rule::label("k", ""));
        assert_eq!("k=a=b".parse::<Rule>().unwrap(), Rule::label("k", "a=b"));
        assert_eq!("attested:CN=x".parse::<Rule>().unwrap(), Rule::attested_name("CN=x"));
        for bad in ["", "role", "=v", "attested:"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
        for rule in [Rule::label("role", "db"), Rule::attested_name("node-1")] {
            assert_eq!(rule.to_string().parse::<Rule>().unwrap(), rule);
        }
        let mut services = Services::new();
        services.add_spec("db=127.0.0.1:5432").unwrap();
        services.add_spec("web=[::1]:80").unwrap();
        assert!(matches!(services.add_spec("db=127.0.0.1:1"), Err(SpecError::Duplicate { .. })));
        for bad in ["db", "x=host", "x=:80", "x=host:", "X=h:1"] {
            assert!(services.add_spec(bad).is_err(), "{bad}");
        }
        services.add_allow("db=role=db").unwrap();
        services.add_allow("db=attested:node-1").unwrap();
        assert_eq!(services.get("db").unwrap().rules(), [Rule::label("role", "db"), Rule::attested_name("node-1")]);
        assert!(matches!(services.add_allow("nope=role=db"), Err(SpecError::UnknownService { .. })));
        assert!(matches!(services.add_allow("db"), Err(SpecError::Allow { .. })));
        assert!(matches!(services.add_allow("db=role"), Err(SpecError::Rule(_))));
        assert_eq!(services.get("web").unwrap().upstream(), "[::1]:80");
        assert!(services.get("web").unwrap().sends_proxy_header());
        services.set_proxy_header("web", false).unwrap();
        assert!(!services.get("web").unwrap().sends_proxy_header());
        assert!(matches!(services.set_proxy_header("nope", false), Err(SpecError::UnknownService { .. })));
        assert!(services.get("web").unwrap().rules().is_empty());
    }

    #[test]
    fn the_buffers_are_the_stated_size() {
        assert_eq!(STREAM_BUFFERS, 3 * (16 * 1024 + 1 + 37));
    }
}
