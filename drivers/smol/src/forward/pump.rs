//! The stream pump: one task carries a local stream's bytes through an established
//! session in both directions at once (`spec/FORWARDING.md` §4).
//!
//! Both directions share the session's stream, so they cannot run as two tasks without a
//! lock; and they cannot take turns either, since two sides that both block writing
//! while neither reads would deadlock. The pump is one hand-written poll loop instead,
//! over two buffers allocated once per stream:
//!
//! * **local → session**: the local stream is read straight into the payload slot of the
//!   one outgoing frame (`SEND_BUFFER`), which is sealed in place and written out; the
//!   local stream is not read again until that frame has left. A session peer that does
//!   not read therefore stops the local reads: backpressure, no queue.
//! * **session → local**: frames are read into `RECV_BUFFER` (two largest frames), opened
//!   in place, and a `Data` payload is written to the local stream straight from there;
//!   no further frame is opened until it has been written. A local stream that does not
//!   read therefore stops the session reads.
//!
//! Nothing else is buffered per message and nothing is allocated per message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use boarding::channel::{Channel, ChannelError, FRAME_OVERHEAD, Received};
use boarding::messages::FRAME_HEADER_LEN;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::wire::{AbortReason, MAX_DATA, MAX_MESSAGE, Message, kind};
use crate::session::Lifecycle;

/// The largest session frame of the forwarding protocol.
pub(crate) const MAX_FRAME: usize = MAX_MESSAGE + FRAME_OVERHEAD;
/// The receive buffer: one frame being written to the local stream and the next one
/// arriving.
pub(crate) const RECV_BUFFER: usize = 2 * MAX_FRAME;
/// The send buffer: the one frame in flight.
pub(crate) const SEND_BUFFER: usize = MAX_FRAME;
/// Where the kind byte of an outgoing message sits in the send buffer.
const KIND_AT: usize = FRAME_HEADER_LEN;
/// Where the bytes of an outgoing `Data` message start.
const DATA_AT: usize = FRAME_HEADER_LEN + 1;
/// Compact the receive buffer when less than this is free at its end.
const MIN_READ: usize = 4096;
/// How long the pump waits for the peer's `Close` after sending its own.
const LINGER: Duration = Duration::from_secs(2);
/// How long an abort may take to get its `Abort` and `Close` out.
const ABORT_DEADLINE: Duration = Duration::from_secs(2);
/// Turns of the poll loop before the pump yields to the executor (and to the stop
/// signal and timers raced against it), however much data is ready.
const BUDGET: usize = 32;

/// Why the pump stopped before the stream ended cleanly.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The peer sent `Abort`.
    PeerAborted(AbortReason),
    /// The peer closed the session before the stream ended in both directions.
    Cut,
    /// The peer sent a forwarding message that is malformed or out of place.
    Violation(super::Violation),
    /// Reading or writing the local stream failed.
    Local(io::Error),
    /// Reading or writing the session's stream failed.
    Session(io::Error),
    /// The channel rejected a frame, or cannot seal one.
    Channel(ChannelError),
    /// The session's stream ended without the peer's `Close`.
    Truncated,
    /// The peer announced a frame larger than any forwarding message.
    Oversized(usize),
}

impl From<ChannelError> for Failure {
    fn from(e: ChannelError) -> Self {
        Self::Channel(e)
    }
}

/// How a run of the pump ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Both directions ended and the session's `Close` went out.
    Finished,
    /// The session's stop signal fired (revocation, shutdown).
    Stopped,
    /// Nothing was received for the idle timeout.
    Idle(Duration),
    /// The stream failed.
    Failed(Failure),
}

/// What one poll of the pump reached.
enum Step {
    /// The session's `Close` is out; the peer's answer is awaited (for a while).
    CloseSent,
    /// The peer's `Close` arrived after ours, or ours answered its.
    Done,
}

/// Whether the write side of the local stream is shut down yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shut {
    Open,
    Done,
}

/// One stream's pump. See the module documentation.
pub(crate) struct Pump<IO, L> {
    io: IO,
    channel: Channel,
    local: L,
    /// Received bytes at `rstart..rend`.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// A received `Data` payload (in `rbuf`) still to be written to the local stream.
    out: Option<(usize, usize)>,
    /// The frame in flight at `wpos..wlen`.
    wbuf: Vec<u8>,
    wpos: usize,
    wlen: usize,
    /// Bytes written to the session or the local stream and not flushed yet.
    session_dirty: bool,
    local_dirty: bool,
    /// The local stream reached its end (the `End` goes out next).
    src_done: bool,
    end_sent: bool,
    peer_end: bool,
    local_shut: Shut,
    close_sealed: bool,
    io_closed: bool,
    peer_closed: bool,
    close_reported: bool,
    /// When a frame was last received or the local stream last took bytes (the idle
    /// timeout counts from here), and when a frame last left (the keepalive's).
    heard: Instant,
    sent: Instant,
    /// Stream bytes read from the local stream and sent, and received and written to it.
    pub(crate) up: u64,
    pub(crate) down: u64,
}

impl<IO, L> Pump<IO, L>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    L: AsyncRead + AsyncWrite + Unpin,
{
    /// A pump over a session's stream and channel, starting with the bytes the session
    /// had buffered.
    pub(crate) fn new(io: IO, channel: Channel, buffered: &[u8], local: L) -> Self {
        let mut rbuf = vec![0u8; RECV_BUFFER.max(buffered.len())];
        if let Some(start) = rbuf.get_mut(..buffered.len()) {
            start.copy_from_slice(buffered);
        }
        let now = Instant::now();
        Self {
            io,
            channel,
            local,
            rbuf,
            rstart: 0,
            rend: buffered.len(),
            out: None,
            wbuf: vec![0u8; SEND_BUFFER],
            wpos: 0,
            wlen: 0,
            session_dirty: false,
            local_dirty: false,
            src_done: false,
            end_sent: false,
            peer_end: false,
            local_shut: Shut::Open,
            close_sealed: false,
            io_closed: false,
            peer_closed: false,
            close_reported: false,
            heard: now,
            sent: now,
            up: 0,
            down: 0,
        }
    }

    /// Runs the stream to its end under the session's lifecycle: its stop signal, its
    /// idle timeout (gateway) and its keepalive interval (agent).
    pub(crate) async fn run(&mut self, lifecycle: &Lifecycle) -> Outcome {
        enum Event {
            Polled(Result<Step, Failure>),
            Stop,
            Timer,
        }
        let mut linger: Option<Instant> = None;
        loop {
            let idle = lifecycle.idle_timeout.and_then(|d| self.heard.checked_add(d));
            let keepalive = lifecycle.keepalive.and_then(|d| self.sent.checked_add(d));
            let due = [idle, keepalive, linger].into_iter().flatten().min();
            let event = {
                let polled = async { Event::Polled(std::future::poll_fn(|cx| self.poll_run(cx)).await) };
                let stop = async {
                    match &lifecycle.stop {
                        Some(stop) => {
                            let _ = stop.recv().await;
                            Event::Stop
                        }
                        None => std::future::pending().await,
                    }
                };
                let timer = async {
                    match due {
                        Some(at) => {
                            smol::Timer::at(at).await;
                            Event::Timer
                        }
                        None => std::future::pending().await,
                    }
                };
                smol::future::or(polled, smol::future::or(stop, timer)).await
            };
            match event {
                Event::Polled(Ok(Step::Done)) => return Outcome::Finished,
                Event::Polled(Ok(Step::CloseSent)) => linger = Instant::now().checked_add(LINGER),
                Event::Polled(Err(failure)) => return Outcome::Failed(failure),
                Event::Stop => return Outcome::Stopped,
                Event::Timer => {
                    let now = Instant::now();
                    if linger.is_some_and(|at| now >= at) {
                        // The peer did not answer our Close: not an error (§9).
                        return Outcome::Finished;
                    }
                    if let Some(after) = lifecycle.idle_timeout
                        && self.heard.checked_add(after).is_some_and(|at| now >= at)
                    {
                        return Outcome::Idle(after);
                    }
                    if let Some(every) = lifecycle.keepalive
                        && self.sent.checked_add(every).is_some_and(|at| now >= at)
                        && let Err(e) = self.keepalive()
                    {
                        return Outcome::Failed(e);
                    }
                }
            }
        }
    }

    /// Ends a stream that did not finish: the frame in flight is completed, then what the
    /// failure calls for is sent (an `Abort` with `reason` and the `Close`, or only the
    /// `Close` answering the peer's), within a short deadline; after a failure of the
    /// session's stream or channel nothing more is sent (§9).
    pub(crate) async fn end(&mut self, outcome: &Outcome, local_reason: AbortReason) {
        let abort = match outcome {
            Outcome::Finished => return,
            Outcome::Stopped => Some(AbortReason::Closing),
            Outcome::Idle(_) => Some(AbortReason::IdleTimeout),
            Outcome::Failed(Failure::Local(_)) => Some(local_reason),
            Outcome::Failed(Failure::Violation(_)) => Some(AbortReason::Violation),
            Outcome::Failed(Failure::PeerAborted(_) | Failure::Cut) => None,
            Outcome::Failed(Failure::Session(_) | Failure::Channel(_) | Failure::Truncated | Failure::Oversized(_)) => {
                return;
            }
        };
        let work = async {
            let rest = self.wbuf.get(self.wpos..self.wlen).unwrap_or(&[]);
            self.io.write_all(rest).await?;
            self.wpos = self.wlen;
            if !self.close_sealed {
                if let Some(reason) = abort
                    && !self.channel.locally_closed()
                {
                    let n = seal_message(&mut self.channel, &mut self.wbuf, &[kind::ABORT, reason.code()])
                        .map_err(io::Error::other)?;
                    self.io.write_all(self.wbuf.get(..n).unwrap_or(&[])).await?;
                }
                let n = self.channel.seal_close(&mut self.wbuf).map_err(io::Error::other)?;
                self.close_sealed = true;
                self.io.write_all(self.wbuf.get(..n).unwrap_or(&[])).await?;
            }
            self.io.flush().await?;
            self.io.close().await
        };
        let bounded = smol::future::or(work, async {
            smol::Timer::after(ABORT_DEADLINE).await;
            Ok(())
        });
        if let Err(e) = bounded.await {
            tracing::debug!(error = %e, "ending a forwarded stream: the peer is gone");
        }
    }

    /// Sends a keepalive if no frame is in flight (one in flight is as good).
    fn keepalive(&mut self) -> Result<(), Failure> {
        if self.wpos == self.wlen && !self.close_sealed {
            self.wlen = self.channel.seal_in_place(&mut self.wbuf, 0)?;
            self.wpos = 0;
        } else {
            self.sent = Instant::now();
        }
        Ok(())
    }

    /// Whether the stream has ended both ways and only the courtesy `Close` remains, so
    /// a failure to deliver it is no error.
    fn only_courtesy_left(&self) -> bool {
        self.end_sent && self.peer_end && self.peer_closed
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, Failure>> {
        for _ in 0..BUDGET {
            let progress = match self.poll_once(cx) {
                Ok(progress) => progress,
                Err(Failure::Session(_)) if self.only_courtesy_left() => return Poll::Ready(Ok(Step::Done)),
                Err(e) => return Poll::Ready(Err(e)),
            };
            let flushed = self.close_sealed && self.wpos == self.wlen && !self.session_dirty && self.io_closed;
            if flushed && self.peer_closed {
                return Poll::Ready(Ok(Step::Done));
            }
            if flushed && !self.close_reported {
                self.close_reported = true;
                return Poll::Ready(Ok(Step::CloseSent));
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One turn over every direction; whether anything moved.
    fn poll_once(&mut self, cx: &mut Context<'_>) -> Result<bool, Failure> {
        let sent = self.poll_send(cx)?;
        let filled = self.poll_fill(cx)?;
        let delivered = self.poll_deliver(cx)?;
        let received = self.poll_receive(cx)?;
        Ok(sent || filled || delivered || received)
    }

    /// Writes the frame in flight to the session and flushes it; after the `Close`,
    /// shuts the session's stream down.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Result<bool, Failure> {
        let mut progress = false;
        while self.wpos < self.wlen {
            let rest = self.wbuf.get(self.wpos..self.wlen).unwrap_or(&[]);
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Err(Failure::Session(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wpos = self.wpos.saturating_add(n).min(self.wlen);
                    progress = true;
                    if self.wpos == self.wlen {
                        self.session_dirty = true;
                        self.sent = Instant::now();
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(Failure::Session(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.session_dirty {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.session_dirty = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Failure::Session(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.close_sealed && !self.io_closed {
            match Pin::new(&mut self.io).poll_close(cx) {
                Poll::Ready(result) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "shutting the session's stream down after its Close");
                    }
                    self.io_closed = true;
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// With no frame in flight: seals the `End` once the local stream has ended, the
    /// `Close` once the stream has ended both ways, or else the next bytes the local
    /// stream gives as a `Data` message.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Result<bool, Failure> {
        if self.wpos < self.wlen || self.close_sealed {
            return Ok(false);
        }
        if self.src_done && !self.end_sent {
            self.wlen = seal_message(&mut self.channel, &mut self.wbuf, &[kind::END])?;
            self.wpos = 0;
            self.end_sent = true;
            return Ok(true);
        }
        if self.end_sent && self.peer_end && self.out.is_none() && self.local_shut == Shut::Done {
            self.wlen = self.channel.seal_close(&mut self.wbuf)?;
            self.wpos = 0;
            self.close_sealed = true;
            return Ok(true);
        }
        if self.src_done {
            return Ok(false);
        }
        let Some(slot) = self.wbuf.get_mut(DATA_AT..DATA_AT.saturating_add(MAX_DATA)) else { return Ok(false) };
        match Pin::new(&mut self.local).poll_read(cx, slot) {
            Poll::Ready(Ok(0)) => {
                self.src_done = true;
                Ok(true)
            }
            Poll::Ready(Ok(n)) => {
                let n = n.min(MAX_DATA);
                if let Some(at) = self.wbuf.get_mut(KIND_AT) {
                    *at = kind::DATA;
                }
                self.wlen = self.channel.seal_in_place(&mut self.wbuf, n.saturating_add(1))?;
                self.wpos = 0;
                self.up = self.up.saturating_add(n as u64);
                Ok(true)
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Poll::Ready(Err(e)) => Err(Failure::Local(e)),
            Poll::Pending => Ok(false),
        }
    }

    /// Writes the received payload to the local stream and flushes it; once the peer's
    /// direction has ended and everything is written, shuts the local write side down.
    fn poll_deliver(&mut self, cx: &mut Context<'_>) -> Result<bool, Failure> {
        let mut progress = false;
        while let Some((start, end)) = self.out {
            let rest = self.rbuf.get(start..end).unwrap_or(&[]);
            match Pin::new(&mut self.local).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Err(Failure::Local(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let start = start.saturating_add(n);
                    self.out = (start < end).then_some((start, end));
                    self.local_dirty = true;
                    self.heard = Instant::now();
                    progress = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(Failure::Local(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.local_dirty {
            match Pin::new(&mut self.local).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.local_dirty = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Failure::Local(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.peer_end && self.local_shut == Shut::Open {
            match Pin::new(&mut self.local).poll_close(cx) {
                Poll::Ready(result) => {
                    // A local stream whose reader is gone already: nothing is lost.
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "shutting the local stream's write side down");
                    }
                    self.local_shut = Shut::Done;
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// With the last payload delivered: opens the next buffered frame, or reads more.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Result<bool, Failure> {
        let mut progress = false;
        while self.out.is_none() && !self.peer_closed {
            if let Some(len) = self.buffered_frame()? {
                self.open_frame(len)?;
                progress = true;
                continue;
            }
            if self.rstart == self.rend {
                self.rstart = 0;
                self.rend = 0;
            } else if self.rbuf.len().saturating_sub(self.rend) < MIN_READ && self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend = self.rend.saturating_sub(self.rstart);
                self.rstart = 0;
            }
            let Some(space) = self.rbuf.get_mut(self.rend..).filter(|s| !s.is_empty()) else {
                // Cannot happen: the buffer holds two of the largest frames.
                return Err(Failure::Oversized(self.rend.saturating_sub(self.rstart)));
            };
            match Pin::new(&mut self.io).poll_read(cx, space) {
                Poll::Ready(Ok(0)) => {
                    if self.close_sealed {
                        // Our Close is out and the peer hung up without answering: fine (§9).
                        self.peer_closed = true;
                        return Ok(true);
                    }
                    return Err(Failure::Truncated);
                }
                Poll::Ready(Ok(n)) => {
                    self.rend = self.rend.saturating_add(n).min(self.rbuf.len());
                    self.heard = Instant::now();
                    progress = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(Failure::Session(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        Ok(progress)
    }

    /// The length of the whole frame at `rstart`, once it has all arrived.
    fn buffered_frame(&self) -> Result<Option<usize>, Failure> {
        let buffered = self.rbuf.get(self.rstart..self.rend).unwrap_or(&[]);
        let Some(len) = Channel::frame_len(buffered)? else { return Ok(None) };
        if len > MAX_FRAME {
            return Err(Failure::Oversized(len.saturating_sub(FRAME_OVERHEAD)));
        }
        Ok((buffered.len() >= len).then_some(len))
    }

    /// Opens the frame of `len` bytes at `rstart` and acts on its message.
    fn open_frame(&mut self, len: usize) -> Result<(), Failure> {
        let start = self.rstart;
        let end = start.saturating_add(len);
        self.rstart = end;
        let frame = self.rbuf.get(start..end).unwrap_or(&[]);
        let payload = match self.channel.open(frame)? {
            Received::Close => {
                self.peer_closed = true;
                return if self.peer_end && self.end_sent { Ok(()) } else { Err(Failure::Cut) };
            }
            Received::Data([]) => return Ok(()),
            Received::Data(payload) => payload,
        };
        let unexpected = |message: &'static str, when: &'static str| {
            Failure::Violation(super::Violation::Unexpected { message, when })
        };
        match Message::decode(payload) {
            Ok(Message::Data(data)) if !self.peer_end => {
                let from = start.saturating_add(DATA_AT);
                self.out = Some((from, from.saturating_add(data.len())));
                self.down = self.down.saturating_add(data.len() as u64);
                Ok(())
            }
            Ok(Message::Data(_)) => Err(unexpected("Data", "after the peer's End")),
            Ok(Message::End) if !self.peer_end => {
                self.peer_end = true;
                Ok(())
            }
            Ok(Message::End) => Err(unexpected("End", "after the peer's End")),
            Ok(Message::Abort(reason)) => Err(Failure::PeerAborted(reason)),
            Ok(other) => Err(unexpected(other.name(), "once the stream runs")),
            Err(e) => Err(Failure::Violation(super::Violation::Malformed(e))),
        }
    }
}

/// Seals `message` as a `Data` frame at the start of `buf`; the frame's length.
fn seal_message(channel: &mut Channel, buf: &mut [u8], message: &[u8]) -> Result<usize, ChannelError> {
    let end = KIND_AT.saturating_add(message.len());
    let slot = buf.get_mut(KIND_AT..end).ok_or(ChannelError::BufferTooSmall { needed: end })?;
    slot.copy_from_slice(message);
    channel.seal_in_place(buf, message.len())
}
