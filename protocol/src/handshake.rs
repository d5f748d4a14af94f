//! The machinery both handshakes share, and the run-loop contract every driver follows.
//!
//! # The run loop
//!
//! A [`Client`](crate::client::Client) and a [`Server`](crate::server::Server) are driven
//! the same way:
//!
//! 1. Feed an input: bytes from the peer (`handle_input`) or the answer to a request
//!    (`handle_evidence` and `handle_persisted` on the client; `handle_storage` and
//!    `handle_admission` on the gateway).
//! 2. **Drain `poll_output()` until it returns `None`**, after every input, and act on
//!    each [`Output`] in order:
//!    * [`Output::Transmit`]: write the bytes to the peer (in order; they may be
//!      coalesced into one write).
//!    * [`Output::Request`]: carry the request out and answer it with the matching
//!      `handle_*` call. Answering *inside* the drain is allowed (the answer's outputs
//!      are appended to the queue being drained); so is answering later, after any
//!      number of other inputs.
//!    * [`Output::Established`]: the handshake is complete. Write the transmits before
//!      it (the client's last handshake message comes before `Established`), then call
//!      `into_session()`.
//!    * [`Output::Failed`]: the handshake is over. It is always the last output: the
//!      alert for the peer, if any, was the `Transmit` just before it. Write that, then
//!      close the connection.
//! 3. When the queue is empty and nothing is established or failed, wait for more bytes
//!    from the peer (or for the answer to an outstanding request).
//!
//! A driver that only drains outputs is correct: every `handle_*` also returns the
//! error as a `Result` for convenience, but a failure is reported as an output too, so
//! a loop has one way out. An error from `handle_*` without a `Failed` output is API
//! misuse ([`Error::Misuse`]): an answer the state machine did not ask for. Misuse
//! changes nothing and sends nothing; the handshake carries on as if the call had not
//! been made. Once failed, every call returns the same error again and queues nothing.
//!
//! The core never blocks, reads a clock or draws randomness after construction: the
//! gateway takes the current time with each input, and every random value is drawn
//! when the state machine is created.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem;

use crate::error::{ApiMisuse, Error, LocalFailure, ReceivedAlert};
use crate::inbound::{Frame, Inbound};
use crate::messages::{AlertMessage, FrameType, HandshakeMessage, Message};

/// What a handshake wants done next; see the [module docs](self) for the run loop.
///
/// `R` is the side's request type, `P` what the side learns when the handshake
/// completes.
#[derive(Debug)]
pub enum Output<R, P> {
    /// Send these bytes to the peer.
    Transmit(Vec<u8>),
    /// Carry out this request and answer it.
    Request(R),
    /// The handshake is complete; call `into_session()`.
    Established(P),
    /// The handshake failed; this is the last output. Close the connection after
    /// sending the transmits before it.
    Failed(Error),
}

/// The outputs a handshake step queues.
#[derive(Debug)]
pub(crate) struct Outbox<R, P>(VecDeque<Output<R, P>>);

impl<R, P> Outbox<R, P> {
    pub(crate) fn transmit(&mut self, frame: Vec<u8>) {
        self.0.push_back(Output::Transmit(frame));
    }

    pub(crate) fn request(&mut self, request: R) {
        self.0.push_back(Output::Request(request));
    }

    pub(crate) fn established(&mut self, info: P) {
        self.0.push_back(Output::Established(info));
    }
}

/// A side's handshake states.
pub(crate) trait HandshakeState: Sized {
    /// The state's name, for misuse errors.
    fn name(&self) -> &'static str;
    /// The frame types this state consumes, or `None` if it waits for something else
    /// (an answer, or nothing: established).
    fn expected(&self) -> Option<&'static [FrameType]>;
}

/// One connection's handshake: its state (or the error it failed with), its receive
/// buffer and its output queue. `ConnectionCommon` in rustls' terms.
#[derive(Debug)]
pub(crate) struct Machine<S, R, P> {
    state: Result<S, Error>,
    inbound: Inbound,
    outbox: Outbox<R, P>,
}

/// Stands in for the state during a transition: handlers take the state by value and
/// never panic, so nothing ever observes it.
const IN_TRANSITION: Error = Error::Local(LocalFailure::Interrupted);

impl<S: HandshakeState, R, P> Machine<S, R, P> {
    /// A handshake in `state`, with `first` already queued for the peer (if any).
    pub(crate) fn new(state: S, first: Option<Vec<u8>>) -> Self {
        let mut outbox = Outbox(VecDeque::new());
        if let Some(frame) = first {
            outbox.transmit(frame);
        }
        Self { state: Ok(state), inbound: Inbound::default(), outbox }
    }

    pub(crate) fn state(&self) -> Result<&S, &Error> {
        self.state.as_ref()
    }

    pub(crate) fn failure(&self) -> Option<&Error> {
        self.state.as_ref().err()
    }

    pub(crate) fn poll(&mut self) -> Option<Output<R, P>> {
        self.outbox.0.pop_front()
    }

    /// The stored error, if the handshake already failed.
    fn check(&self) -> Result<(), Error> {
        match &self.state {
            Err(e) => Err(e.clone()),
            Ok(_) => Ok(()),
        }
    }

    /// Fails the handshake: queues the alert (if this error sends one), then the
    /// failure itself, last.
    fn fail(&mut self, e: Error) -> Error {
        if let Some(alert) = e.alert() {
            self.outbox.transmit(AlertMessage { code: alert.code() }.to_frame());
        }
        self.outbox.0.push_back(Output::Failed(e.clone()));
        self.state = Err(e.clone());
        e
    }

    /// Runs one transition on the current state.
    fn step(&mut self, f: impl FnOnce(S, &mut Outbox<R, P>) -> Result<S, Error>) -> Result<(), Error> {
        let state = match mem::replace(&mut self.state, Err(IN_TRANSITION)) {
            Ok(state) => state,
            Err(e) => {
                self.state = Err(e.clone());
                return Err(e);
            }
        };
        match f(state, &mut self.outbox) {
            Ok(next) => {
                self.state = Ok(next);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Buffers the peer's bytes and consumes every whole frame the states expect,
    /// handing each to `on_frame`.
    pub(crate) fn handle_input(
        &mut self,
        bytes: &[u8],
        mut on_frame: impl FnMut(S, Frame, HandshakeMessage, &mut Outbox<R, P>) -> Result<S, Error>,
    ) -> Result<(), Error> {
        self.check()?;
        if let Err(e) = self.inbound.push(bytes) {
            return Err(self.fail(e));
        }
        self.process(&mut on_frame)
    }

    /// Consumes buffered frames while the state expects one.
    pub(crate) fn process(
        &mut self,
        on_frame: &mut impl FnMut(S, Frame, HandshakeMessage, &mut Outbox<R, P>) -> Result<S, Error>,
    ) -> Result<(), Error> {
        loop {
            let Some(expected) = self.state.as_ref().ok().and_then(HandshakeState::expected) else {
                return self.check();
            };
            let frame = match self.inbound.next_frame(expected) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            if frame.frame_type == FrameType::Alert {
                // A received alert ends the handshake and is never answered, even one
                // whose body is not a single byte.
                let received = match AlertMessage::decode(frame.body()) {
                    Ok(alert) => ReceivedAlert::from_code(alert.code),
                    Err(_) => ReceivedAlert::Malformed,
                };
                return Err(self.fail(Error::PeerAlert(received)));
            }
            let message = match HandshakeMessage::decode(frame.frame_type, frame.body()) {
                Ok(message) => message,
                Err(e) => return Err(self.fail(e.into())),
            };
            self.step(|state, outbox| on_frame(state, frame, message, outbox))?;
        }
    }

    /// Answers a request: if `pending` says the state is not waiting for this answer,
    /// the call is misuse and changes nothing; otherwise `f` makes the transition. The
    /// caller then [`process`](Self::process)es frames buffered meanwhile.
    pub(crate) fn answer(
        &mut self,
        answer: &'static str,
        pending: impl FnOnce(&S) -> bool,
        f: impl FnOnce(S, &mut Outbox<R, P>) -> Result<S, Error>,
    ) -> Result<(), Error> {
        let state = match &self.state {
            Err(e) => return Err(e.clone()),
            Ok(state) => state,
        };
        if !pending(state) {
            return Err(ApiMisuse::NotPending { answer, state: state.name() }.into());
        }
        self.step(f)
    }

    /// Hands the established state over with the bytes that followed the handshake.
    pub(crate) fn into_established<T>(self, take: impl FnOnce(S) -> Option<T>) -> Result<(T, Vec<u8>), Error> {
        let Self { state, mut inbound, .. } = self;
        let state = state?;
        let name = state.name();
        match take(state) {
            Some(established) => Ok((established, inbound.take_rest())),
            None => Err(ApiMisuse::NotEstablished { state: name }.into()),
        }
    }
}
