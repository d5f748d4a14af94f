//! An established session over any `futures-io` stream, and the loops that drive the
//! protocol core's handshakes over such a stream.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boarding::channel::{Channel, FRAME_OVERHEAD, MAX_PAYLOAD, Received};
use boarding::client::{Client, ClientOutput, ClientSession, Joined};
use boarding::server::{Server, ServerOutput, ServerSession, VerifiedClient};
use boarding::storage::StorageAnswer;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::store::{KeyringStore, Store};

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `future`, failing with [`Error::Timeout`] after `after`.
pub(crate) async fn deadline<T>(
    after: Duration,
    what: &'static str,
    hint: &'static str,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    smol::future::or(future, async {
        smol::Timer::after(after).await;
        Err(Error::Timeout { what, after, hint })
    })
    .await
}

/// A session on the MAC-authenticated channel: send and receive whole messages.
///
/// `P` is what the handshake established about the peer: a [`VerifiedClient`] on the
/// gateway ([`GatewaySession`]), the [`Joined`] facts on the agent ([`AgentSession`]).
pub struct Session<IO, P> {
    io: IO,
    channel: Channel,
    peer: P,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    max_payload: usize,
}

/// The gateway's side of a session: [`Session::peer`] is the verified client.
pub type GatewaySession<IO> = Session<IO, VerifiedClient>;
/// The agent's side of a session.
pub type AgentSession<IO> = Session<IO, Joined>;

impl<IO, P: fmt::Debug> fmt::Debug for Session<IO, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("suite", &self.channel.suite())
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, P> Session<IO, P> {
    fn new(io: IO, channel: Channel, peer: P, buffered: Vec<u8>, max_payload: usize) -> Self {
        Self { io, channel, peer, rbuf: buffered, wbuf: Vec::new(), max_payload: max_payload.min(MAX_PAYLOAD) }
    }

    /// What the handshake established about the peer.
    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// The largest message this side sends or accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The underlying stream (for example to read the TLS connection's details).
    pub fn stream(&self) -> &IO {
        &self.io
    }

    /// Sends one message as one authenticated frame.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), Error> {
        if message.len() > self.max_payload {
            return Err(Error::MessageTooLarge { len: message.len(), max: self.max_payload });
        }
        self.wbuf.resize(message.len().saturating_add(FRAME_OVERHEAD), 0);
        let n = self.channel.seal(message, &mut self.wbuf)?;
        let frame = self.wbuf.get(..n).unwrap_or(&[]);
        self.io.write_all(frame).await.map_err(Error::io("sending a message"))?;
        self.io.flush().await.map_err(Error::io("sending a message"))
    }

    /// Receives the next message; `Ok(None)` when the peer closed the session with its
    /// authenticated close. A stream that ends without one is [`Error::Truncated`].
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if let Some(len) = Channel::frame_len(&self.rbuf)? {
                let payload = len.saturating_sub(FRAME_OVERHEAD);
                if payload > self.max_payload {
                    return Err(Error::FrameTooLarge { len: payload, max: self.max_payload });
                }
                if let Some(frame) = self.rbuf.get(..len) {
                    let out = match self.channel.open(frame)? {
                        Received::Data(data) => Some(data.to_vec()),
                        Received::Close => None,
                    };
                    self.rbuf.drain(..len);
                    return Ok(out);
                }
            }
            let n = self.io.read(&mut chunk).await.map_err(Error::io("receiving a message"))?;
            let Some(read) = chunk.get(..n).filter(|r| !r.is_empty()) else {
                return Err(Error::Truncated);
            };
            self.rbuf.extend_from_slice(read);
        }
    }

    /// Sends the authenticated close and shuts the stream down. If the peer closed
    /// first, sending ours is a courtesy and a peer that already hung up is no error.
    pub async fn close(mut self) -> Result<(), Error> {
        let courtesy = self.channel.peer_closed();
        let result = self.close_inner().await;
        if courtesy { Ok(()) } else { result }
    }

    async fn close_inner(&mut self) -> Result<(), Error> {
        if !self.channel.locally_closed() {
            self.wbuf.resize(FRAME_OVERHEAD, 0);
            let n = self.channel.seal_close(&mut self.wbuf)?;
            let frame = self.wbuf.get(..n).unwrap_or(&[]);
            self.io.write_all(frame).await.map_err(Error::io("closing the session"))?;
        }
        self.io.flush().await.map_err(Error::io("closing the session"))?;
        self.io.close().await.map_err(Error::io("closing the session"))
    }
}

/// Sends whatever the failed state machine queued (its alert), best effort.
async fn send_alerts<IO: AsyncWrite + Unpin>(io: &mut IO, frames: Vec<Vec<u8>>) {
    for frame in frames {
        if io.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = io.flush().await;
}

/// Drives a gateway handshake over `io`, answering storage requests from `store`.
pub(crate) async fn run_server<IO, S>(
    io: IO,
    server: Server,
    store: &S,
    max_payload: usize,
) -> Result<GatewaySession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Store + ?Sized,
{
    run_server_inner(io, server, store, max_payload).await.map_err(Error::on_gateway)
}

async fn run_server_inner<IO, S>(
    mut io: IO,
    mut server: Server,
    store: &S,
    max_payload: usize,
) -> Result<GatewaySession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Store + ?Sized,
{
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let mut step = Ok(());
        while let Some(out) = server.poll_output() {
            match out {
                ServerOutput::Transmit(bytes) => {
                    io.write_all(&bytes).await.map_err(Error::io("sending a handshake message"))?;
                }
                ServerOutput::Storage(request) => {
                    let answer = match store.answer(request).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            tracing::error!(error = %e, "the store failed during a handshake");
                            StorageAnswer::Failed
                        }
                    };
                    step = server.handle_storage(answer);
                    if step.is_err() {
                        break;
                    }
                }
                ServerOutput::Established(_) => {
                    io.flush().await.map_err(Error::io("sending a handshake message"))?;
                    let ServerSession { channel, peer, buffered } = server.into_session()?;
                    return Ok(Session::new(io, channel, peer, buffered, max_payload));
                }
            }
        }
        if let Err(e) = step {
            let alerts = drain_server(&mut server);
            send_alerts(&mut io, alerts).await;
            return Err(e.into());
        }
        let read = read_handshake(&mut io, &mut chunk).await?;
        if let Err(e) = server.handle_input(unix_now(), read) {
            let alerts = drain_server(&mut server);
            send_alerts(&mut io, alerts).await;
            return Err(e.into());
        }
    }
}

/// Flushes what the handshake wrote, then reads its next bytes; the stream ending
/// mid-handshake is [`Error::HandshakeEof`].
async fn read_handshake<'a, IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    chunk: &'a mut [u8],
) -> Result<&'a [u8], Error> {
    io.flush().await.map_err(Error::io("sending a handshake message"))?;
    let n = io.read(chunk).await.map_err(Error::io("receiving a handshake message"))?;
    chunk.get(..n).filter(|r| !r.is_empty()).ok_or(Error::HandshakeEof)
}

/// The frames left in a state machine's output queue (after a failure: its alert).
fn drain_transmits<O>(poll: impl FnMut() -> Option<O>, transmit: fn(O) -> Option<Vec<u8>>) -> Vec<Vec<u8>> {
    std::iter::from_fn(poll).filter_map(transmit).collect()
}

fn drain_server(server: &mut Server) -> Vec<Vec<u8>> {
    drain_transmits(|| server.poll_output(), |o| if let ServerOutput::Transmit(b) = o { Some(b) } else { None })
}

fn drain_client(client: &mut Client) -> Vec<Vec<u8>> {
    drain_transmits(|| client.poll_output(), |o| if let ClientOutput::Transmit(b) = o { Some(b) } else { None })
}

/// Drives an agent handshake over `io`; a join's keyring goes to `keyrings` before
/// the key confirmation is sent.
pub(crate) async fn run_client<IO, K>(
    mut io: IO,
    mut client: Client,
    keyrings: Option<&K>,
    max_payload: usize,
) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: KeyringStore + ?Sized,
{
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(out) = client.poll_output() {
            match out {
                ClientOutput::Transmit(bytes) => {
                    io.write_all(&bytes).await.map_err(Error::io("sending a handshake message"))?;
                }
                ClientOutput::PersistKeyring(saved) => {
                    // Durably stored before the confirmation leaves: a crash here leaves
                    // an unconfirmed keyring at the gateway, which a retry replaces.
                    if let Some(store) = keyrings {
                        store.save_keyring(&saved).await?;
                    }
                    client.handle_persisted()?;
                }
                ClientOutput::Established(_) => {
                    // The confirmation is queued before `Established`; send it.
                    for frame in drain_client(&mut client) {
                        io.write_all(&frame).await.map_err(Error::io("sending a handshake message"))?;
                    }
                    io.flush().await.map_err(Error::io("sending a handshake message"))?;
                    let ClientSession { channel, joined, buffered } = client.into_session()?;
                    return Ok(Session::new(io, channel, joined, buffered, max_payload));
                }
            }
        }
        let read = read_handshake(&mut io, &mut chunk).await?;
        if let Err(e) = client.handle_input(read) {
            let alerts = drain_client(&mut client);
            send_alerts(&mut io, alerts).await;
            return Err(e.into());
        }
    }
}
