//! The gateway's metrics, in the Prometheus data model (`prometheus-client`).
//!
//! A [`Gateway`](crate::Gateway) counts as it goes: every handshake by kind and
//! outcome with its duration, connections refused or evicted by the admission caps,
//! sessions closed by reason, admission refusals, and the latency and failures of each
//! store operation. Values that are a state rather than an event (open sessions,
//! handshakes in progress, usable tokens, store retries) are read when the metrics are
//! encoded ([`Gateway::encode_metrics`](crate::Gateway::encode_metrics)), so they are
//! never out of step with the gateway.
//!
//! Every name starts with `boarding_`. Labels carry only closed sets of values (kinds,
//! outcomes, reasons, operations), never a client id or a token id, so a flood of
//! made-up ids cannot grow the metrics.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boarding::Alert;
use boarding::error::ReceivedAlert;
use boarding::storage::StorageRequest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

/// What a handshake was, as far as the gateway saw: the storage requests it made
/// tell a join (a token lookup) from a resume (a keyring lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HandshakeKind {
    /// A join with a bootstrap token.
    Join,
    /// A resume with a stored keyring.
    Resume,
    /// Neither was reached (TLS failed, or the first message was refused).
    #[default]
    Unknown,
}

impl HandshakeKind {
    /// The label value: `join`, `resume` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Resume => "resume",
            Self::Unknown => "unknown",
        }
    }

    /// The kind a storage request reveals, if any.
    pub(crate) fn of_request(request: &StorageRequest) -> Option<Self> {
        match request {
            StorageRequest::LookupToken { .. } | StorageRequest::UnexpiredTokens { .. } | StorageRequest::Redeem(_) => {
                Some(Self::Join)
            }
            StorageRequest::LookupKeyring { .. }
            | StorageRequest::RotateKeyring(_)
            | StorageRequest::FenceKeyring { .. }
            | StorageRequest::RecordClone { .. } => Some(Self::Resume),
            StorageRequest::ConfirmKeyring { .. }
            | StorageRequest::CheckKeyring { .. }
            | StorageRequest::RequestRotation { .. } => None,
        }
    }
}

impl fmt::Display for HandshakeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome label of a handshake: `established`, the alert the gateway sent or
/// received (`unknown_token`, `bad_proof`, …), or what ended it before any alert
/// (`tls`, `timeout`, `closed`, `io`, `store`). The gateway labels a resume of a client
/// id with no keyring `unknown_client` (see [`HANDSHAKE_OUTCOMES`]), whatever alert the
/// decoy led to. Evicted handshakes are counted apart
/// (`boarding_handshakes_evicted_total`).
pub fn outcome(result: &Result<(), &Error>) -> &'static str {
    let e = match result {
        Ok(()) => return "established",
        Err(e) => e,
    };
    match e {
        Error::Handshake { source, .. } => match (source.alert(), source.peer_alert()) {
            (Some(alert), _) | (None, Some(ReceivedAlert::Known(alert))) => alert_label(alert),
            _ => "protocol",
        },
        Error::Store(_) => "store",
        Error::AttestationRefused { .. } => "attestation_refused",
        Error::Tls { .. } | Error::PinMismatch { .. } | Error::CertificateChain { .. } => "tls",
        Error::Timeout { .. } => "timeout",
        Error::HandshakeEof => "closed",
        Error::FrameTooLarge { .. } => "malformed",
        _ => "io",
    }
}

/// The label of an alert: its name in snake case.
pub fn alert_label(alert: Alert) -> &'static str {
    match alert {
        Alert::UnsupportedVersion => "unsupported_version",
        Alert::Malformed => "malformed",
        Alert::UnexpectedMessage => "unexpected_message",
        Alert::UnknownToken => "unknown_token",
        Alert::ExpiredToken => "expired_token",
        Alert::ExhaustedToken => "exhausted_token",
        Alert::BadProof => "bad_proof",
        Alert::ClientIdTaken => "client_id_taken",
        Alert::InvalidClientId => "invalid_client_id",
        Alert::BadIdentity => "bad_identity",
        Alert::Internal => "internal",
        Alert::AdmissionRefused => "admission_refused",
        Alert::AttestationRefused => "attestation_refused",
        Alert::RetiredKeyring => "retired_keyring",
    }
}

/// The label of a storage operation.
pub(crate) fn operation_label(request: &StorageRequest) -> &'static str {
    match request {
        StorageRequest::LookupToken { .. } => "lookup_token",
        StorageRequest::UnexpiredTokens { .. } => "unexpired_tokens",
        StorageRequest::Redeem(_) => "redeem",
        StorageRequest::LookupKeyring { .. } => "lookup_keyring",
        StorageRequest::ConfirmKeyring { .. } => "confirm_keyring",
        StorageRequest::RotateKeyring(_) => "rotate_keyring",
        StorageRequest::FenceKeyring { .. } => "fence_keyring",
        StorageRequest::CheckKeyring { .. } => "check_keyring",
        StorageRequest::RecordClone { .. } => "record_clone",
        StorageRequest::RequestRotation { .. } => "request_rotation",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Handshakes take from under a millisecond on loopback to the 10 s deadline:
/// 0.5 ms doubling to about 8 s.
fn handshake_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
}

/// Store operations take from microseconds (a read) to an fsync or a network round
/// trip: 10 µs doubling to about 1.3 s.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

/// Why an established session ended, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The agent closed it, or the application's handler returned.
    Ended,
    /// Its client was revoked, or the gateway shut down.
    Revoked,
    /// It received nothing for the idle timeout.
    Idle,
    /// The handler failed (a forged frame, a broken connection).
    Error,
    /// It was closed at once: a session cap was reached.
    OverCap,
}

impl SessionEnd {
    const ALL: [Self; 5] = [Self::Ended, Self::Revoked, Self::Idle, Self::Error, Self::OverCap];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::Revoked => "revoked",
            Self::Idle => "idle",
            Self::Error => "error",
            Self::OverCap => "session_cap",
        }
    }
}

/// Why a connection got no handshake slot, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its source address had too many handshakes in progress.
    SourceCap,
    /// Every handshake slot was taken by handshakes that had made progress.
    GlobalCap,
}

/// A gateway's metrics. Shared by the gateway's clones; encoded with
/// [`Gateway::encode_metrics`](crate::Gateway::encode_metrics).
pub struct GatewayMetrics {
    registry: Registry,
    accepted: Counter,
    handshakes: Family<HandshakeLabels, Counter>,
    handshake_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    refused: Family<ReasonLabels, Counter>,
    evicted: Counter,
    admission_refused: Counter,
    attestation_refused: Counter,
    certificates_issued: Family<KindLabels, Counter>,
    certificates_refused: Family<KindLabels, Counter>,
    keyrings_rotated: Counter,
    clones_suspected: Counter,
    sessions_closed: Family<ReasonLabels, Counter>,
    store_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationLabels, Counter>,
    store_retries: Counter,
    store_retries_seen: AtomicU64,
    established: AtomicU64,
    failed: AtomicU64,
    sessions_open: Gauge,
    handshakes_in_progress: Gauge,
    tokens_usable: Gauge,
}

impl fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Fresh metrics, every counter at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("boarding");
        let accepted = Counter::default();
        registry.register("connections_accepted", "TCP connections accepted", accepted.clone());
        let handshakes = Family::default();
        registry.register(
            "handshakes",
            "Handshakes by kind (join, resume, unknown) and outcome (established, the alert, unknown_client, or \
             tls, timeout, closed, io, store)",
            handshakes.clone(),
        );
        let handshake_seconds = Family::new_with_constructor(handshake_histogram as fn() -> Histogram);
        registry.register(
            "handshake_duration_seconds",
            "Time from accept to the handshake's outcome (TLS and Boarding), by kind",
            handshake_seconds.clone(),
        );
        let refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed at once by the handshake caps, by reason (source_cap, global_cap)",
            refused.clone(),
        );
        let evicted = Counter::default();
        registry.register(
            "handshakes_evicted",
            "Handshakes evicted before their TLS ClientHello to make room for a new connection",
            evicted.clone(),
        );
        let admission_refused = Counter::default();
        registry.register(
            "admission_refusals",
            "Joins the gateway's admission policy refused",
            admission_refused.clone(),
        );
        let attestation_refused = Counter::default();
        registry.register(
            "attestation_refusals",
            "Joins whose attestation evidence the gateway's validator refused",
            attestation_refused.clone(),
        );
        let certificates_issued = Family::default();
        registry.register(
            "certificates_issued",
            "Node certificates the gateway's CA signed, by kind (join, renewal)",
            certificates_issued.clone(),
        );
        let certificates_refused = Family::default();
        registry.register(
            "certificates_refused",
            "Certificate requests not answered (a bad request, a CA that refused, or no CA), by kind (join, renewal)",
            certificates_refused.clone(),
        );
        let keyrings_rotated = Counter::default();
        registry.register(
            "keyrings_rotated",
            "Resumes that rotated the client's keyring (committed in the store)",
            keyrings_rotated.clone(),
        );
        let clones_suspected = Counter::default();
        registry.register(
            "clones_suspected",
            "Resumes refused because they proved a keyring the client had rotated away from: a copy of it exists",
            clones_suspected.clone(),
        );
        let sessions_closed = Family::default();
        registry.register(
            "sessions_closed",
            "Established sessions that ended, by reason (ended, revoked, idle, error, session_cap)",
            sessions_closed.clone(),
        );
        let store_seconds = Family::new_with_constructor(store_histogram as fn() -> Histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Latency of the store's answers to handshakes, by operation",
            store_seconds.clone(),
        );
        let store_errors = Family::default();
        registry.register("store_errors", "Store operations that failed, by operation", store_errors.clone());
        let store_retries = Counter::default();
        registry.register(
            "store_retries",
            "Transactions the store retried (conflicts or ambiguous outcomes)",
            store_retries.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register("sessions_open", "Established sessions right now", sessions_open.clone());
        let handshakes_in_progress = Gauge::default();
        registry.register(
            "handshakes_in_progress",
            "Handshakes holding a slot right now",
            handshakes_in_progress.clone(),
        );
        let tokens_usable = Gauge::default();
        registry.register(
            "tokens_usable",
            "Tokens neither expired nor exhausted, when the metrics were read",
            tokens_usable.clone(),
        );
        // Every reason shows from the start, at zero, so rates work from the first scrape.
        for reason in ["source_cap", "global_cap"] {
            let _ = refused.get_or_create(&ReasonLabels { reason });
        }
        for end in SessionEnd::ALL {
            let _ = sessions_closed.get_or_create(&ReasonLabels { reason: end.as_str() });
        }
        for kind in ["join", "renewal"] {
            let _ = certificates_issued.get_or_create(&KindLabels { kind });
            let _ = certificates_refused.get_or_create(&KindLabels { kind });
        }
        Self {
            registry,
            accepted,
            handshakes,
            handshake_seconds,
            refused,
            evicted,
            admission_refused,
            attestation_refused,
            certificates_issued,
            certificates_refused,
            keyrings_rotated,
            clones_suspected,
            sessions_closed,
            store_seconds,
            store_errors,
            store_retries,
            store_retries_seen: AtomicU64::new(0),
            established: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sessions_open,
            handshakes_in_progress,
            tokens_usable,
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn handshake(&self, kind: HandshakeKind, outcome: &'static str, took: Duration) {
        let total = if outcome == "established" { &self.established } else { &self.failed };
        total.fetch_add(1, Ordering::Relaxed);
        self.handshakes.get_or_create(&HandshakeLabels { kind: kind.as_str(), outcome }).inc();
        self.handshake_seconds.get_or_create(&KindLabels { kind: kind.as_str() }).observe(took.as_secs_f64());
    }

    pub(crate) fn refused(&self, why: Refused) {
        let reason = match why {
            Refused::SourceCap => "source_cap",
            Refused::GlobalCap => "global_cap",
        };
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn evicted(&self) {
        self.evicted.inc();
    }

    pub(crate) fn admission_refused(&self) {
        self.admission_refused.inc();
    }

    pub(crate) fn attestation_refused(&self) {
        self.attestation_refused.inc();
    }

    /// A certificate request answered (`issued`) or not, at a join or a renewal.
    pub(crate) fn certificate(&self, renewal: bool, issued: bool) {
        let kind = if renewal { "renewal" } else { "join" };
        let family = if issued { &self.certificates_issued } else { &self.certificates_refused };
        family.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn keyring_rotated(&self) {
        self.keyrings_rotated.inc();
    }

    pub(crate) fn clone_suspected(&self) {
        self.clones_suspected.inc();
    }

    pub(crate) fn session_closed(&self, why: SessionEnd) {
        self.sessions_closed.get_or_create(&ReasonLabels { reason: why.as_str() }).inc();
    }

    pub(crate) fn store_operation(&self, operation: &'static str, took: Duration, ok: bool) {
        self.store_seconds.get_or_create(&OperationLabels { operation }).observe(took.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&OperationLabels { operation }).inc();
        }
    }

    /// Records the state-like values just before encoding.
    pub(crate) fn set_state(&self, sessions: usize, handshakes: usize, tokens: Option<usize>, retries: u64) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions_open.set(gauge(sessions));
        self.handshakes_in_progress.set(gauge(handshakes));
        if let Some(tokens) = tokens {
            self.tokens_usable.set(gauge(tokens));
        }
        // The store counts its own retries; the counter follows it.
        let seen = self.store_retries_seen.swap(retries, Ordering::Relaxed);
        self.store_retries.inc_by(retries.saturating_sub(seen));
    }

    /// The gateway's counters as plain numbers.
    pub(crate) fn stats(&self) -> crate::GatewayStats {
        let reason =
            |family: &Family<ReasonLabels, Counter>, reason| family.get_or_create(&ReasonLabels { reason }).get();
        crate::GatewayStats {
            accepted: self.accepted.get(),
            established: self.established.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            refused: reason(&self.refused, "source_cap").saturating_add(reason(&self.refused, "global_cap")),
            evicted: self.evicted.get(),
            over_session_cap: reason(&self.sessions_closed, SessionEnd::OverCap.as_str()),
            revoked: reason(&self.sessions_closed, SessionEnd::Revoked.as_str()),
            idle: reason(&self.sessions_closed, SessionEnd::Idle.as_str()),
            rotated: self.keyrings_rotated.get(),
            clones_suspected: self.clones_suspected.get(),
        }
    }

    /// How many handshakes ended with `outcome` for `kind` so far.
    pub fn handshakes(&self, kind: HandshakeKind, outcome: &str) -> u64 {
        // Label values are static strings; look the family up by value.
        let labels = HANDSHAKE_OUTCOMES
            .iter()
            .find(|o| **o == outcome)
            .map(|o| HandshakeLabels { kind: kind.as_str(), outcome: o });
        labels.map_or(0, |l| self.handshakes.get_or_create(&l).get())
    }

    /// The metrics in the Prometheus text exposition format (OpenMetrics 1.0).
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Every outcome label [`outcome`] can give.
pub const HANDSHAKE_OUTCOMES: &[&str] = &[
    "established",
    "unsupported_version",
    "malformed",
    "unexpected_message",
    "unknown_token",
    "expired_token",
    "exhausted_token",
    "bad_proof",
    "retired_keyring",
    "client_id_taken",
    "invalid_client_id",
    "bad_identity",
    "internal",
    "admission_refused",
    "attestation_refused",
    "unknown_client",
    "protocol",
    "store",
    "tls",
    "timeout",
    "closed",
    "io",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_a_listed_outcome() {
        for alert in Alert::ALL {
            assert!(HANDSHAKE_OUTCOMES.contains(&alert_label(alert)), "{alert:?}");
        }
    }

    #[test]
    fn encoding_names_every_family() {
        let metrics = GatewayMetrics::new();
        metrics.handshake(HandshakeKind::Join, "established", Duration::from_millis(3));
        metrics.set_state(2, 1, Some(5), 7);
        let text = metrics.encode().unwrap_or_default();
        assert!(text.contains("boarding_handshakes_total{kind=\"join\",outcome=\"established\"} 1"), "{text}");
        assert!(text.contains("boarding_sessions_open 2"), "{text}");
        assert!(text.contains("boarding_tokens_usable 5"), "{text}");
        assert!(text.contains("boarding_store_retries_total 7"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(metrics.handshakes(HandshakeKind::Join, "established"), 1);
    }
}
