//! The output contract every state machine keeps, checked the same way by every
//! state-machine target (see `boarding::handshake`):
//!
//! * a failure is reported as an output (`Output::Failed`, what the driver records)
//!   and is the error `failure()` returns;
//! * a failure that sends an alert sends exactly one, and it is the last thing the
//!   side sent; a failure that sends none (a received alert) sends nothing at all;
//! * the frame type is checked before anything else: the first frame a state sees
//!   fails it at once if its type is undefined or not expected, and a received Alert
//!   frame (of any body length) ends the handshake without a reply;
//! * an answer nobody asked for is [`Error::Misuse`]: it changes nothing and queues
//!   nothing (the next `poll_output()` is `None`); once failed, every call returns the
//!   failure again.

use boarding::Error;
use boarding::attestation::AttestFailed;
use boarding::client::PersistFailed;
use boarding::error::{ApiMisuse, PeerMisbehaved, ReceivedAlert};
use boarding::messages::{FRAME_HEADER_LEN, FrameType, HandshakeMessage, MAX_HANDSHAKE_BODY};
use boarding::server::Admission;
use boarding::storage::{ConfirmRefusal, RedeemRefusal, StorageAnswer, StorageRequest};
use boarding_memory::Pair;

use super::fixtures::check_emitted;

/// The alert codes among `sent` (every frame must decode).
pub fn alert_codes(sent: &[Vec<u8>]) -> Vec<u8> {
    sent.iter()
        .filter_map(|f| match check_emitted(f) {
            HandshakeMessage::Alert(a) => Some(a.code),
            _ => None,
        })
        .collect()
}

/// One side's failure against what it sent since the stage was reached: `failure` is
/// the state machine's own (`failure()`), `reported` the one its `Output::Failed`
/// carried (the driver's [`boarding_memory::Standing::Failed`]).
pub fn check_failure(side: &str, failure: Option<&Error>, reported: Option<&Error>, sent: &[Vec<u8>]) {
    assert_eq!(failure, reported, "the {side}'s failure and its Output::Failed differ");
    let alerts = alert_codes(sent);
    match failure.and_then(Error::alert) {
        Some(alert) => {
            assert_eq!(alerts, [alert.code()], "the {side} failed with {failure:?} but sent alerts {alerts:?}");
            let last = sent.last().map(|f| check_emitted(f));
            assert!(
                matches!(last, Some(HandshakeMessage::Alert(a)) if a.code == alert.code()),
                "the {side}'s alert is not the last thing it sent: {last:?}"
            );
        }
        None => assert!(alerts.is_empty(), "the {side} sent alerts {alerts:?} without failing with one ({failure:?})"),
    }
}

/// What the first frame of `stream` must do to a state expecting `expected`, stated
/// from the header alone, independently of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFrame {
    /// Not enough bytes to decide, or a frame the state goes on to process.
    Undecided,
    /// An undefined type byte: malformed, from the first byte.
    UnknownType,
    /// A defined type that is neither expected nor an Alert: unexpected, from the first byte.
    Unexpected(u8),
    /// An Alert frame longer than a handshake body may be: malformed.
    AlertTooLong,
    /// A whole Alert frame: the handshake ends with this, and nothing is sent.
    Alert(ReceivedAlert),
}

/// The verdict on `stream`'s first frame for a state expecting `expected`.
pub fn first_frame(stream: &[u8], expected: &[FrameType]) -> FirstFrame {
    let Some(&t) = stream.first() else { return FirstFrame::Undecided };
    let Ok(frame_type) = FrameType::from_byte(t) else { return FirstFrame::UnknownType };
    if frame_type != FrameType::Alert {
        return if expected.contains(&frame_type) { FirstFrame::Undecided } else { FirstFrame::Unexpected(t) };
    }
    let Some(header) = stream.get(1..FRAME_HEADER_LEN) else { return FirstFrame::Undecided };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_HANDSHAKE_BODY {
        return FirstFrame::AlertTooLong;
    }
    match stream.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) {
        None => FirstFrame::Undecided,
        Some(&[code]) => FirstFrame::Alert(ReceivedAlert::from_code(code)),
        Some(_) => FirstFrame::Alert(ReceivedAlert::Malformed),
    }
}

/// Checks a side that was fed `stream` in a state expecting `expected` against the
/// verdict on its first frame.
pub fn check_first_frame(
    side: &str,
    stream: &[u8],
    expected: &'static [FrameType],
    failure: Option<&Error>,
    sent: &[Vec<u8>],
) {
    // A first piece longer than the receive buffer is refused before any frame is looked at.
    if stream.len() > FRAME_HEADER_LEN + MAX_HANDSHAKE_BODY {
        return;
    }
    match first_frame(stream, expected) {
        FirstFrame::Undecided => {}
        FirstFrame::UnknownType | FirstFrame::AlertTooLong => assert!(
            matches!(failure, Some(Error::PeerMisbehaved(PeerMisbehaved::Malformed(_)))),
            "the {side} did not refuse a malformed first frame: {failure:?}"
        ),
        FirstFrame::Unexpected(got) => assert_eq!(
            failure,
            Some(&Error::PeerMisbehaved(PeerMisbehaved::UnexpectedMessage { expected, got })),
            "the {side} did not refuse an unexpected frame type 0x{got:02x} before decoding it"
        ),
        FirstFrame::Alert(alert) => {
            assert_eq!(failure, Some(&Error::PeerAlert(alert)), "the {side} did not stop on a received alert");
            assert!(sent.is_empty(), "the {side} answered a received alert: {sent:02x?}");
        }
    }
}

/// A call that was not asked for returned what misuse returns: [`Error::Misuse`], or
/// the failure of a machine that already failed.
fn check_misuse(what: &str, result: Result<(), Error>, failure: Option<&Error>) {
    match failure {
        Some(e) => assert_eq!(result.as_ref(), Err(e), "{what} on a failed machine did not return its failure"),
        None => assert!(
            matches!(result, Err(Error::Misuse(ApiMisuse::NotPending { .. }))),
            "{what} was not asked for, yet returned {result:?}"
        ),
    }
}

/// Every kind of storage answer.
pub fn every_answer() -> Vec<StorageAnswer> {
    vec![
        StorageAnswer::Tokens(Vec::new()),
        StorageAnswer::Redeemed(Err(RedeemRefusal::UnknownToken)),
        StorageAnswer::Keyring(None),
        StorageAnswer::Confirmed(Err(ConfirmRefusal::Missing)),
        StorageAnswer::Checked(Err(ConfirmRefusal::Replaced)),
        StorageAnswer::Rotated(Err(ConfirmRefusal::Replaced)),
        StorageAnswer::Fenced(None),
        StorageAnswer::CloneRecorded(true),
        // The answer to the operator's request, which no state machine ever makes.
        StorageAnswer::RotationRequested(true),
        StorageAnswer::Failed,
    ]
}

/// The storage answers that do not answer `request` (every kind but its own, and
/// never [`StorageAnswer::Failed`], which answers anything).
pub fn mismatched(request: &StorageRequest) -> Vec<StorageAnswer> {
    every_answer()
        .into_iter()
        .filter(|a| {
            !matches!(
                (request, a),
                (_, StorageAnswer::Failed)
                    | (
                        StorageRequest::LookupToken { .. } | StorageRequest::UnexpiredTokens { .. },
                        StorageAnswer::Tokens(_)
                    )
                    | (StorageRequest::Redeem(_), StorageAnswer::Redeemed(_))
                    | (StorageRequest::LookupKeyring { .. }, StorageAnswer::Keyring(_))
                    | (StorageRequest::ConfirmKeyring { .. }, StorageAnswer::Confirmed(_))
                    | (StorageRequest::CheckKeyring { .. }, StorageAnswer::Checked(_))
                    | (StorageRequest::RotateKeyring(_), StorageAnswer::Rotated(_))
                    | (StorageRequest::FenceKeyring { .. }, StorageAnswer::Fenced(_))
                    | (StorageRequest::RecordClone { .. }, StorageAnswer::CloneRecorded(_))
                    | (StorageRequest::RequestRotation { .. }, StorageAnswer::RotationRequested(_))
            )
        })
        .collect()
}

/// Answers the gateway what it did not ask for: every storage answer that does not
/// answer its held request (every storage answer if none is held) and every admission
/// answer, the refusal of evidence included (the driver answers admission at once, so
/// none is ever pending here). Each must be misuse, queue nothing and change nothing.
pub fn probe_server_misuse(pair: &mut Pair) {
    pair.flush();
    let before = format!("{:?}", pair.server);
    let failure = pair.server.failure().cloned();
    let answers = match &pair.held_storage {
        Some(request) => mismatched(request),
        None => every_answer(),
    };
    for answer in answers {
        let what = format!("handle_storage({})", answer.name());
        let result = pair.server.handle_storage(answer);
        check_misuse(&what, result, failure.as_ref());
        assert!(pair.server.poll_output().is_none(), "{what} (misuse) queued an output");
    }
    for admission in [Admission::admit(), Admission::Refuse, Admission::RefuseAttestation] {
        let what = format!("handle_admission({admission:?})");
        let result = pair.server.handle_admission(admission);
        check_misuse(&what, result, failure.as_ref());
        assert!(pair.server.poll_output().is_none(), "{what} (misuse) queued an output");
    }
    assert_eq!(format!("{:?}", pair.server), before, "misuse changed the gateway");
}

/// Answers the agent a persist it did not ask for (if none is held), both ways, and
/// evidence (the driver answers the attestation request at once, so none is ever pending
/// here). Each must be misuse, queue nothing and change nothing.
pub fn probe_client_misuse(pair: &mut Pair) {
    pair.flush();
    if pair.held_persist {
        return;
    }
    let before = format!("{:?}", pair.client);
    let failure = pair.client.failure().cloned();
    let evidence_probes =
        if pair.held_attest { Vec::new() } else { vec![Ok(Vec::new()), Ok(vec![0; 9000]), Err(AttestFailed)] };
    for outcome in evidence_probes {
        let what = format!("handle_evidence({:?})", outcome.as_ref().map(Vec::len));
        let result = pair.client.handle_evidence(outcome);
        check_misuse(&what, result, failure.as_ref());
        assert!(pair.client.poll_output().is_none(), "{what} (misuse) queued an output");
    }
    for outcome in [Ok(()), Err(PersistFailed)] {
        let what = format!("handle_persisted({outcome:?})");
        let result = pair.client.handle_persisted(outcome);
        check_misuse(&what, result, failure.as_ref());
        assert!(pair.client.poll_output().is_none(), "{what} (misuse) queued an output");
    }
    assert_eq!(format!("{:?}", pair.client), before, "misuse changed the agent");
}
