//! An async driver of the Boarding core on tokio, with a gateway and an agent on
//! 127.0.0.1, and no TLS (put TLS under it in a real deployment: the channel
//! authenticates frames but does not encrypt them).
//!
//! The gateway accepts connections and serves each in a task of its own; the agent
//! joins with a one-use bootstrap token and the gateway's pin, exchanges a message and
//! closes, then resumes with the keyring it saved; a second agent tries the spent token
//! and is refused. The state machines are the same as in any other driver: the core
//! never awaits, so the async code only moves bytes and answers requests.
//!
//! Run with `cargo run -p boarding --example tokio_driver`.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boarding::channel::{Channel, FRAME_OVERHEAD, Received};
use boarding::client::{Client, ClientRequest, ClientSession, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::rand_core::UnwrapErr;
use boarding::server::{Admission, Server, ServerConfig, ServerRequest, ServerSession};
use boarding::storage::Records;
use boarding::token::{BootstrapToken, TokenRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// How long the whole run may take before it is abandoned as hung.
const DEADLINE: Duration = Duration::from_secs(10);
/// How many connections the gateway accepts: join, resume, refused join.
const CONNECTIONS: usize = 3;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The operating system's RNG, as the core's `CryptoRng`.
fn os_rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

/// Reads whatever the peer sent next; an end of stream is an error here, since both
/// callers still expect bytes.
async fn read_some<'a>(stream: &mut TcpStream, buf: &'a mut [u8], during: &str) -> Result<&'a [u8]> {
    let n = stream.read(buf).await?;
    match buf.get(..n) {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(format!("the peer closed the connection during {during}").into()),
    }
}

/// The agent's side of a join or a resume. A join asks for its keyring to be stored
/// before it confirms it; `saved` receives it.
async fn client_handshake(
    stream: &mut TcpStream,
    mut client: Client,
    saved: &mut Option<SavedKeyring>,
) -> Result<ClientSession> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                Output::Transmit(bytes) => stream.write_all(&bytes).await?,
                Output::Request(ClientRequest::Attest { .. }) => {
                    // Nothing to attest: empty evidence. An attester would sign the
                    // request's binding with a key its gateway trusts.
                    let _ = client.handle_evidence(Ok(Vec::new()));
                }
                Output::Request(ClientRequest::PersistKeyring { saved: keyring, .. }) => {
                    // A real agent writes the keyring to disk (and syncs it) here.
                    *saved = Some(keyring);
                    // A failure would come out of `poll_output` as `Failed`.
                    let _ = client.handle_persisted(Ok(()));
                }
                Output::Request(ClientRequest::PersistRotation { saved: rotated, replaces }) => {
                    // The gateway rotates the keyring: a real agent stores it durably,
                    // only over the state this resume started from, before it answers.
                    let current = saved.as_ref().map(|s| s.keyring.id());
                    let stored = if current == Some(replaces) {
                        *saved = Some(rotated);
                        Ok(())
                    } else {
                        Err(boarding::client::PersistFailed)
                    };
                    let _ = client.handle_persisted(stored);
                }
                Output::Established(_) => return Ok(client.into_session()?),
                // The alert for the gateway, if any, was the transmit just before.
                Output::Failed(e) => return Err(e.into()),
            }
        }
        let bytes = read_some(stream, &mut buf, "the handshake").await?;
        let _ = client.handle_input(bytes);
    }
}

/// The gateway's side of a handshake, answering storage requests from `records` (the
/// core's own storage rule, under one lock so each request is atomic; the lock is never
/// held across an await) and admitting every client.
async fn server_handshake(
    stream: &mut TcpStream,
    mut server: Server,
    records: &Mutex<Records>,
) -> Result<ServerSession> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(output) = server.poll_output() {
            match output {
                Output::Transmit(bytes) => stream.write_all(&bytes).await?,
                Output::Request(ServerRequest::Storage(request)) => {
                    let answer = records.lock().unwrap_or_else(PoisonError::into_inner).answer(&request);
                    let _ = server.handle_storage(answer);
                }
                Output::Request(ServerRequest::Admit(_)) => {
                    let _ = server.handle_admission(Admission::admit());
                }
                Output::Request(ServerRequest::Ticket(_)) => {
                    // This gateway answers no resume requests: an empty ticket.
                    let _ = server.handle_ticket(Vec::new());
                }
                Output::Established(_) => return Ok(server.into_session()?),
                Output::Failed(e) => return Err(e.into()),
            }
        }
        let bytes = read_some(stream, &mut buf, "the handshake").await?;
        let _ = server.handle_input(unix_now(), bytes);
    }
}

/// An established session: the stream, the channel, and the bytes read but not yet
/// opened (starting with those the handshake read past its last message).
struct Link {
    stream: TcpStream,
    channel: Channel,
    pending: Vec<u8>,
}

impl Link {
    async fn send(&mut self, message: &[u8]) -> Result<()> {
        let mut frame = vec![0u8; message.len() + FRAME_OVERHEAD];
        let n = self.channel.seal(message, &mut frame)?;
        self.stream.write_all(frame.get(..n).unwrap_or_default()).await?;
        Ok(())
    }

    /// The next message, or `None` once the peer's authenticated Close arrived. A stream
    /// that ends before it was truncated: that is an error.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(len) = Channel::frame_len(&self.pending)?
                && self.pending.len() >= len
            {
                let frame: Vec<u8> = self.pending.drain(..len).collect();
                match self.channel.open(&frame)? {
                    // An empty Data frame is a keepalive.
                    Received::Data([]) => continue,
                    Received::Data(message) => return Ok(Some(message.to_vec())),
                    Received::Close => return Ok(None),
                }
            }
            let bytes = read_some(&mut self.stream, &mut buf, "the session (truncated: no Close)").await?;
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Sends our Close and shuts the stream down. After the peer's Close this is only a
    /// courtesy: the peer may have gone already, so a failure to deliver it is no error.
    async fn close(mut self) -> Result<()> {
        let mut frame = [0u8; FRAME_OVERHEAD];
        let n = self.channel.seal_close(&mut frame)?;
        let sent = match self.stream.write_all(frame.get(..n).unwrap_or_default()).await {
            Ok(()) => self.stream.shutdown().await,
            Err(e) => Err(e),
        };
        match sent {
            Err(_) if self.channel.peer_closed() => Ok(()),
            other => other.map_err(Into::into),
        }
    }
}

/// One connection at the gateway: the handshake, then an echo of every message until
/// the agent closes. `Ok(false)` if the handshake was refused.
async fn serve_one(mut stream: TcpStream, config: Arc<ServerConfig>, records: Arc<Mutex<Records>>) -> Result<bool> {
    stream.set_nodelay(true)?;
    let server = Server::new(config, &mut os_rng());
    let session = match server_handshake(&mut stream, server, &records).await {
        Ok(session) => session,
        Err(e) => {
            println!("gateway: handshake failed: {e}");
            return Ok(false);
        }
    };
    let peer = session.peer;
    println!("gateway: {} established (resumed: {})", peer.client_id(), peer.resumed());
    let mut link = Link { stream, channel: session.channel, pending: session.buffered };
    while let Some(message) = link.recv().await? {
        link.send(&message).await?;
    }
    link.close().await?;
    println!("gateway: {} closed the session", peer.client_id());
    Ok(true)
}

/// Accepts `CONNECTIONS` connections, each served by a task of its own, and returns how
/// many sessions were established and how many handshakes were refused.
async fn gateway(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    records: Arc<Mutex<Records>>,
) -> Result<(usize, usize)> {
    let mut tasks: Vec<JoinHandle<Result<bool>>> = Vec::new();
    for _ in 0..CONNECTIONS {
        let (stream, _) = listener.accept().await?;
        tasks.push(tokio::spawn(serve_one(stream, Arc::clone(&config), Arc::clone(&records))));
    }
    let (mut sessions, mut refused) = (0, 0);
    for task in tasks {
        if task.await?? {
            sessions += 1;
        } else {
            refused += 1;
        }
    }
    Ok((sessions, refused))
}

/// Sends one message and checks the gateway echoes it, then closes.
async fn echo_once(mut link: Link, message: &[u8]) -> Result<()> {
    link.send(message).await?;
    let echoed = link.recv().await?.ok_or("the gateway closed instead of echoing")?;
    if echoed != message {
        return Err("the gateway echoed something else".into());
    }
    println!("agent: echoed {:?}", String::from_utf8_lossy(&echoed));
    link.close().await
}

async fn agent(addr: SocketAddr, token: BootstrapToken, pin: boarding::pin::Pin) -> Result<()> {
    // Join: the keyring is stored before the join is confirmed.
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut saved = None;
    let join = JoinConfig::new(token.clone(), vec![pin], ClientId::new("node-1")?);
    let session = client_handshake(&mut stream, Client::join(join, &mut os_rng()), &mut saved).await?;
    let saved = saved.ok_or("the join established without storing its keyring")?;
    println!("agent: joined with suite {}", session.info.suite);
    echo_once(Link { stream, channel: session.channel, pending: session.buffered }, b"hello").await?;

    // Resume with the stored keyring: no token this time.
    let mut stream = TcpStream::connect(addr).await?;
    let resume = Client::resume(ResumeConfig::new(saved), &mut os_rng());
    let session = client_handshake(&mut stream, resume, &mut None).await?;
    println!("agent: resumed (resumed: {})", session.info.resumed);
    echo_once(Link { stream, channel: session.channel, pending: session.buffered }, b"again").await?;

    // The token admitted one join: a second agent is refused.
    let mut stream = TcpStream::connect(addr).await?;
    let join = JoinConfig::new(token, vec![pin], ClientId::new("node-2")?);
    match client_handshake(&mut stream, Client::join(join, &mut os_rng()), &mut None).await {
        Ok(_) => Err("a spent token was accepted".into()),
        Err(e) => {
            println!("agent: second join refused as expected: {e}");
            Ok(())
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // The gateway's identity, and a token that expires in ten minutes and admits one join.
    let identity = ServerIdentity::generate(&mut os_rng());
    let pin = identity.pin();
    let token = BootstrapToken::generate(&mut os_rng());
    let mut records = Records::default();
    let record = TokenRecord::new(token.clone(), Some(unix_now() + 600), 1);
    records.tokens.insert(record.id(), record);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = tokio::spawn(gateway(listener, Arc::new(ServerConfig::new(identity)), Arc::new(Mutex::new(records))));
    println!("gateway: listening on {addr}, pin {pin}");

    timeout(DEADLINE, agent(addr, token, pin)).await??;
    let (sessions, refused) = timeout(DEADLINE, served).await???;
    if (sessions, refused) != (2, 1) {
        return Err(format!("gateway: {sessions} sessions and {refused} refused, expected 2 and 1").into());
    }
    println!("done: 2 sessions, 1 refused join");
    Ok(())
}
