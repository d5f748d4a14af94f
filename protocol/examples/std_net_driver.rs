//! A blocking driver of the Boarding core over `std::net`, with a gateway thread and an
//! agent on 127.0.0.1, and no TLS (put TLS under it in a real deployment: the channel
//! authenticates frames but does not encrypt them).
//!
//! The agent joins with a one-use bootstrap token and the gateway's pin, exchanges a
//! message and closes; then it resumes with the keyring it saved; then a second agent
//! tries the spent token and is refused. Each side drives its state machine with the
//! run loop of `boarding::handshake`: feed the peer's bytes, drain `poll_output()`,
//! write what it transmits, answer what it requests.
//!
//! Run with `cargo run -p boarding --example std_net_driver`.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boarding::channel::{Channel, FRAME_OVERHEAD, Received};
use boarding::client::{Client, ClientRequest, ClientSession, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::rand_core::UnwrapErr;
use boarding::server::{Admission, Server, ServerConfig, ServerRequest, ServerSession};
use boarding::storage::Records;
use boarding::token::{BootstrapToken, TokenRecord};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// How long either side waits for the peer before giving up.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections the gateway serves before it stops: join, resume, refused join.
const CONNECTIONS: usize = 3;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The operating system's RNG, as the core's `CryptoRng`.
fn os_rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

fn connect(addr: std::net::SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads whatever the peer sent next; an end of stream is an error here, since both
/// callers still expect bytes.
fn read_some<'a>(stream: &mut TcpStream, buf: &'a mut [u8], during: &str) -> Result<&'a [u8]> {
    let n = stream.read(buf)?;
    match buf.get(..n) {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(format!("the peer closed the connection during {during}").into()),
    }
}

/// The agent's side of a join or a resume. A join asks for its keyring to be stored
/// before it confirms it; `saved` receives it.
fn client_handshake(
    stream: &mut TcpStream,
    mut client: Client,
    saved: &mut Option<SavedKeyring>,
) -> Result<ClientSession> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                Output::Transmit(bytes) => stream.write_all(&bytes)?,
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
        let bytes = read_some(stream, &mut buf, "the handshake")?;
        let _ = client.handle_input(bytes);
    }
}

/// The gateway's side of a handshake, answering storage requests from `records` (the
/// core's own storage rule, under one lock so each request is atomic) and admitting
/// every client.
fn server_handshake(stream: &mut TcpStream, mut server: Server, records: &Mutex<Records>) -> Result<ServerSession> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(output) = server.poll_output() {
            match output {
                Output::Transmit(bytes) => stream.write_all(&bytes)?,
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
        let bytes = read_some(stream, &mut buf, "the handshake")?;
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
    fn send(&mut self, message: &[u8]) -> Result<()> {
        let mut frame = vec![0u8; message.len() + FRAME_OVERHEAD];
        let n = self.channel.seal(message, &mut frame)?;
        self.stream.write_all(frame.get(..n).unwrap_or_default())?;
        Ok(())
    }

    /// The next message, or `None` once the peer's authenticated Close arrived. A stream
    /// that ends before it was truncated: that is an error.
    fn recv(&mut self) -> Result<Option<Vec<u8>>> {
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
            let bytes = read_some(&mut self.stream, &mut buf, "the session (truncated: no Close)")?;
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Sends our Close and shuts the stream down. After the peer's Close this is only a
    /// courtesy: the peer may have gone already, so a failure to deliver it is no error.
    fn close(mut self) -> Result<()> {
        let mut frame = [0u8; FRAME_OVERHEAD];
        let n = self.channel.seal_close(&mut frame)?;
        let sent = self.stream.write_all(frame.get(..n).unwrap_or_default());
        let sent = sent.and_then(|()| self.stream.shutdown(Shutdown::Write));
        match sent {
            Err(_) if self.channel.peer_closed() => Ok(()),
            other => other.map_err(Into::into),
        }
    }
}

/// Serves `CONNECTIONS` connections one after the other, echoing every message until
/// the agent closes. Returns how many sessions were established and how many
/// handshakes failed.
fn gateway(listener: TcpListener, config: Arc<ServerConfig>, records: Arc<Mutex<Records>>) -> Result<(usize, usize)> {
    let (mut sessions, mut failures) = (0, 0);
    for stream in listener.incoming().take(CONNECTIONS) {
        let mut stream = stream?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        let server = Server::new(Arc::clone(&config), &mut os_rng());
        let session = match server_handshake(&mut stream, server, &records) {
            Ok(session) => session,
            Err(e) => {
                println!("gateway: handshake failed: {e}");
                failures += 1;
                continue;
            }
        };
        sessions += 1;
        let peer = session.peer;
        println!("gateway: {} established (resumed: {})", peer.client_id(), peer.resumed());
        let mut link = Link { stream, channel: session.channel, pending: session.buffered };
        while let Some(message) = link.recv()? {
            link.send(&message)?;
        }
        link.close()?;
        println!("gateway: {} closed the session", peer.client_id());
    }
    Ok((sessions, failures))
}

/// Sends one message and checks the gateway echoes it, then closes.
fn echo_once(mut link: Link, message: &[u8]) -> Result<()> {
    link.send(message)?;
    let echoed = link.recv()?.ok_or("the gateway closed instead of echoing")?;
    if echoed != message {
        return Err("the gateway echoed something else".into());
    }
    println!("agent: echoed {:?}", String::from_utf8_lossy(&echoed));
    link.close()
}

fn main() -> Result<()> {
    // The gateway's identity, and a token that expires in ten minutes and admits one join.
    let identity = ServerIdentity::generate(&mut os_rng());
    let pin = identity.pin();
    let token = BootstrapToken::generate(&mut os_rng());
    let mut records = Records::default();
    let record = TokenRecord::new(token.clone(), Some(unix_now() + 600), 1);
    records.tokens.insert(record.id(), record);
    let records = Arc::new(Mutex::new(records));

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let config = Arc::new(ServerConfig::new(identity));
    let served = thread::spawn(move || gateway(listener, config, records));
    println!("gateway: listening on {addr}, pin {pin}");

    // Join: the keyring is stored before the join is confirmed.
    let mut stream = connect(addr)?;
    let mut saved = None;
    let join = JoinConfig::new(token.clone(), vec![pin], ClientId::new("node-1")?);
    let session = client_handshake(&mut stream, Client::join(join, &mut os_rng()), &mut saved)?;
    let saved = saved.ok_or("the join established without storing its keyring")?;
    println!("agent: joined with suite {}", session.info.suite);
    echo_once(Link { stream, channel: session.channel, pending: session.buffered }, b"hello")?;

    // Resume with the stored keyring: no token this time.
    let mut stream = connect(addr)?;
    let resume = Client::resume(ResumeConfig::new(saved), &mut os_rng());
    let session = client_handshake(&mut stream, resume, &mut None)?;
    println!("agent: resumed (resumed: {})", session.info.resumed);
    echo_once(Link { stream, channel: session.channel, pending: session.buffered }, b"again")?;

    // The token admitted one join: a second agent is refused.
    let mut stream = connect(addr)?;
    let join = JoinConfig::new(token, vec![pin], ClientId::new("node-2")?);
    match client_handshake(&mut stream, Client::join(join, &mut os_rng()), &mut None) {
        Ok(_) => return Err("a spent token was accepted".into()),
        Err(e) => println!("agent: second join refused as expected: {e}"),
    }

    let (sessions, failures) = served.join().map_err(|_| "the gateway thread panicked")??;
    if (sessions, failures) != (2, 1) {
        return Err(format!("gateway: {sessions} sessions and {failures} failures, expected 2 and 1").into());
    }
    println!("done: 2 sessions, 1 refused join");
    Ok(())
}
