//! An established session over any `futures-io` stream: whole messages, each one
//! MAC-authenticated frame, and the authenticated close.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boarding::channel::{Channel, FRAME_OVERHEAD, MAX_PAYLOAD, Received, Side};
use boarding::client::SessionInfo;
use boarding::messages::FRAME_HEADER_LEN;
use boarding::server::VerifiedClient;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;

/// Bytes read from the stream at a time.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `future`, failing with [`Error::Timeout`] after `after`.
pub(crate) async fn deadline<T>(
    after: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    smol::future::or(future, async {
        smol::Timer::after(after).await;
        Err(Error::Timeout { what, after })
    })
    .await
}

/// A session on the MAC-authenticated channel: send and receive whole messages.
///
/// `P` is what the handshake established about the peer: a [`VerifiedClient`] on the
/// gateway ([`GatewaySession`]), the [`SessionInfo`] on the agent ([`AgentSession`]).
pub struct Session<IO, P> {
    io: IO,
    /// This end's side, for errors.
    side: Side,
    channel: Channel,
    peer: P,
    /// Bytes received: `rbuf[start..]` is not yet opened. Opened frames are dropped from
    /// the front only when more bytes must be read, so a burst of small frames costs one
    /// move of the leftover per read, not one per frame.
    rbuf: Vec<u8>,
    start: usize,
    wbuf: Vec<u8>,
    /// Where reads land before they join `rbuf`, so a `recv` cancelled while waiting
    /// leaves `rbuf` as it was. Allocated on the first read, then reused.
    chunk: Vec<u8>,
    max_payload: usize,
    lifecycle: Lifecycle,
    /// When a frame last arrived (the idle timeout counts from here).
    heard: Instant,
    /// When a frame last left (the keepalive interval counts from here).
    sent: Instant,
    /// The one timer for both, and the instant it is armed for. It is re-armed only
    /// when it fires, not on every frame: traffic just moves `heard` and `sent`, and a
    /// timer that fires early finds the new deadline and is armed again.
    timer: Option<(smol::Timer, Instant)>,
}

/// What ends or keeps a session alive besides its peer: set by the gateway (a stop
/// signal for revocation and shutdown, an idle timeout, its registry entry) and by the
/// agent (a keepalive interval).
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Ends the session with an authenticated close when signalled (or dropped).
    pub(crate) stop: Option<smol::channel::Receiver<()>>,
    /// Ends the session with an authenticated close after this long with nothing received.
    pub(crate) idle_timeout: Option<Duration>,
    /// Sends a keepalive after this long waiting in [`Session::recv`].
    pub(crate) keepalive: Option<Duration>,
    /// Dropped with the session (the gateway's registry entry).
    pub(crate) _guard: Option<Box<dyn Send + Sync>>,
}

/// A session taken apart ([`Session::into_parts`]).
#[cfg(feature = "forward")]
pub(crate) struct Parts<IO> {
    pub(crate) io: IO,
    pub(crate) channel: Channel,
    pub(crate) buffered: Vec<u8>,
    pub(crate) lifecycle: Lifecycle,
}

/// What woke a waiting [`Session::recv`].
enum Wake {
    Read(std::io::Result<usize>),
    Stop,
    Timer,
}

/// The gateway's side of a session: [`Session::peer`] is the verified client.
pub type GatewaySession<IO> = Session<IO, VerifiedClient>;
/// The agent's side of a session.
pub type AgentSession<IO> = Session<IO, SessionInfo>;

impl<IO, P: fmt::Debug> fmt::Debug for Session<IO, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("suite", &self.channel.suite())
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, P> Session<IO, P> {
    pub(crate) fn new(io: IO, side: Side, channel: Channel, peer: P, buffered: Vec<u8>, max_payload: usize) -> Self {
        Self {
            io,
            side,
            channel,
            peer,
            rbuf: buffered,
            start: 0,
            wbuf: Vec::new(),
            chunk: Vec::new(),
            max_payload: max_payload.min(MAX_PAYLOAD),
            lifecycle: Lifecycle::default(),
            heard: Instant::now(),
            sent: Instant::now(),
            timer: None,
        }
    }

    /// Gives the session the limits of the gateway or agent that made it.
    #[cfg(feature = "tls")]
    pub(crate) fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
        self.heard = Instant::now();
        self.sent = Instant::now();
        self.timer = None;
    }

    /// Lowers the largest message this side accepts (the forwarding protocol's limit).
    #[cfg(feature = "forward")]
    pub(crate) fn limit_payload(&mut self, max: usize) {
        self.max_payload = self.max_payload.min(max);
    }

    /// Takes the session apart for the forwarding pump, which runs both directions at
    /// once: the stream, the channel, the bytes received and not yet opened, the
    /// lifecycle, and the peer.
    #[cfg(feature = "forward")]
    pub(crate) fn into_parts(mut self) -> (Parts<IO>, P) {
        self.rbuf.drain(..self.start.min(self.rbuf.len()));
        let parts = Parts { io: self.io, channel: self.channel, buffered: self.rbuf, lifecycle: self.lifecycle };
        (parts, self.peer)
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

    /// Sends one message as one authenticated frame. An empty message is a keepalive:
    /// the peer's [`Session::recv`] does not return it.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] if `message` is longer than [`Session::max_payload`]
    /// (nothing is sent); [`Error::Channel`] if the channel cannot seal it (this side
    /// closed, the channel failed, or its sequence numbers are used up); [`Error::Io`] if
    /// writing fails.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), Error> {
        if message.len() > self.max_payload {
            return Err(Error::MessageTooLarge { len: message.len(), max: self.max_payload });
        }
        self.wbuf.resize(message.len().saturating_add(FRAME_OVERHEAD), 0);
        let n = self.channel.seal(message, &mut self.wbuf)?;
        let frame = self.wbuf.get(..n).unwrap_or(&[]);
        self.io.write_all(frame).await.map_err(Error::io("sending a message"))?;
        self.io.flush().await.map_err(Error::io("sending a message"))?;
        if self.lifecycle.keepalive.is_some() {
            self.sent = Instant::now();
        }
        Ok(())
    }

    /// The earliest instant the idle timeout or the keepalive is due, if either is set.
    fn next_due(&self) -> Option<Instant> {
        let idle = self.lifecycle.idle_timeout.and_then(|d| self.heard.checked_add(d));
        let keepalive = self.lifecycle.keepalive.and_then(|d| self.sent.checked_add(d));
        match (idle, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Receives the next message; `Ok(None)` when the peer closed the session with its
    /// authenticated close. A stream that ends without one is [`Error::Truncated`].
    /// Keepalives (empty messages) are consumed here; an agent's session sends its own
    /// while it waits, a gateway's ends an idle session ([`Error::IdleTimeout`]) or a
    /// revoked one ([`Error::Revoked`]) with an authenticated close.
    ///
    /// Cancelling the returned future while it waits for the peer (for example racing
    /// it against a timer) loses nothing: bytes join the session's buffer only once a
    /// read completes.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the stream ends before the peer's authenticated close;
    /// [`Error::Channel`] for a frame the channel rejects (forged, replayed, reordered or
    /// after the close) and [`Error::FrameTooLarge`] for one over [`Session::max_payload`],
    /// each ending the session; [`Error::IdleTimeout`] and [`Error::Revoked`] as above;
    /// [`Error::Io`] if reading fails.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.recv_ref().await?.map(<[u8]>::to_vec))
    }

    /// [`Session::recv`] without a copy: the message is borrowed from the session's
    /// receive buffer until the next call. What a loop over many messages should use.
    ///
    /// # Errors
    ///
    /// As [`Session::recv`].
    pub async fn recv_ref(&mut self) -> Result<Option<&[u8]>, Error> {
        loop {
            let pending = self.rbuf.get(self.start..).unwrap_or_default();
            if let Some(alert) = self.channel.late_refusal(pending) {
                // The peer refused the handshake after this side's last message.
                return Err(Error::Handshake { source: boarding::Error::PeerAlert(alert), side: self.side });
            }
            if let Some(len) = Channel::frame_len(pending)? {
                let payload = len.saturating_sub(FRAME_OVERHEAD);
                if payload > self.max_payload {
                    return Err(Error::FrameTooLarge { len: payload, max: self.max_payload });
                }
                if let Some(frame) = pending.get(..len) {
                    let at = self.start;
                    self.start = at.saturating_add(len);
                    match self.channel.open(frame)? {
                        Received::Data([]) => continue,
                        // The payload follows the frame's 5-byte header (`spec/PROTOCOL.md` §4).
                        Received::Data(data) => {
                            let from = at.saturating_add(FRAME_HEADER_LEN);
                            return Ok(self.rbuf.get(from..from.saturating_add(data.len())));
                        }
                        Received::Close => return Ok(None),
                    }
                }
            }
            // More bytes are needed: drop the opened frames first, once per read.
            self.rbuf.drain(..self.start.min(self.rbuf.len()));
            self.start = 0;
            if self.chunk.len() < READ_CHUNK {
                self.chunk.resize(READ_CHUNK, 0);
            }
            match (self.next_due(), &self.timer) {
                // Armed at or before the deadline: it fires in time (perhaps early).
                (Some(due), Some((_, armed))) if *armed <= due => {}
                (Some(due), _) => self.timer = Some((smol::Timer::at(due), due)),
                (None, _) => self.timer = None,
            }
            let wake = {
                let read = async { Wake::Read(self.io.read(&mut self.chunk).await) };
                let stop = async {
                    match &self.lifecycle.stop {
                        Some(stop) => {
                            let _ = stop.recv().await;
                            Wake::Stop
                        }
                        None => std::future::pending().await,
                    }
                };
                let timer = async {
                    match &mut self.timer {
                        Some((timer, _)) => {
                            timer.await;
                            Wake::Timer
                        }
                        None => std::future::pending().await,
                    }
                };
                smol::future::or(read, smol::future::or(stop, timer)).await
            };
            match wake {
                Wake::Read(Ok(n)) => {
                    let Some(read) = self.chunk.get(..n).filter(|r| !r.is_empty()) else {
                        return Err(Error::Truncated);
                    };
                    self.rbuf.extend_from_slice(read);
                    if self.lifecycle.idle_timeout.is_some() {
                        self.heard = Instant::now();
                    }
                }
                Wake::Read(Err(e)) => return Err(Error::Io { context: "receiving a message", source: e }),
                Wake::Stop => {
                    let _ = self.close_inner().await;
                    return Err(Error::Revoked);
                }
                Wake::Timer => {
                    // A fired timer is spent; the next turn arms one for what is due next.
                    self.timer = None;
                    let now = Instant::now();
                    if let Some(after) = self.lifecycle.idle_timeout
                        && self.heard.checked_add(after).is_some_and(|due| now >= due)
                    {
                        let _ = self.close_inner().await;
                        return Err(Error::IdleTimeout { after });
                    }
                    if let Some(every) = self.lifecycle.keepalive
                        && self.sent.checked_add(every).is_some_and(|due| now >= due)
                    {
                        self.send(&[]).await?;
                    }
                }
            }
        }
    }

    /// Sends the authenticated close and shuts the stream down. If the peer closed
    /// first, sending ours is a courtesy and a peer that already hung up is no error.
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] if the close cannot be sealed, [`Error::Io`] if writing or
    /// shutting down the stream fails, but only when this side closes first: after the
    /// peer's close, answering is a courtesy (the peer may be gone) and its failure is not
    /// reported.
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
