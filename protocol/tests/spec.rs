//! `spec/PROTOCOL.md` and the code agree on every constant the spec tabulates: HKDF
//! labels, frame types, alert codes, suite codes and limits.

use boarding::Alert;
use boarding::channel::MAX_PAYLOAD;
use boarding::keys::labels;
use boarding::messages::{
    FrameType, MAX_CHALLENGES, MAX_EVIDENCE, MAX_HANDSHAKE_BODY, MAX_OFFERED_KEYRINGS, MAX_OFFERS, MAX_REQUEST,
    MAX_TICKET,
};
use boarding::suite::MacSuite;
use boarding::transcript::{BOUND_TRANSCRIPT_LABEL, TLS_EXPORTER_LABEL, TRANSCRIPT_LABEL};

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/PROTOCOL.md")).expect("spec exists")
}

#[test]
fn labels_are_the_specified_ones() {
    let spec = spec();
    let all = [
        labels::KEYRING_C2S,
        labels::KEYRING_S2C,
        labels::JOIN_C2S,
        labels::JOIN_S2C,
        labels::JOIN_SERVER_FINISHED,
        labels::JOIN_CLIENT_FINISHED,
        labels::RESUME_C2S,
        labels::RESUME_S2C,
        labels::RESUME_SERVER_FINISHED,
        labels::RESUME_CLIENT_FINISHED,
        labels::RESUME_TICKET,
        labels::KEYRING_ID,
        labels::ATTESTATION_BINDING,
    ];
    for label in all {
        let text = std::str::from_utf8(label).unwrap();
        assert!(spec.contains(&format!("`{text}`")) || spec.contains(&format!("\"{text}\"")), "{text}");
    }
    assert_eq!(TRANSCRIPT_LABEL, b"boarding transcript\x00");
    assert!(spec.contains("`T0 = \"boarding transcript\" || 0x00` (20 bytes)"));
    assert_eq!(BOUND_TRANSCRIPT_LABEL, b"boarding transcript tls-exporter\x00");
    assert!(spec.contains("T0_bound = \"boarding transcript tls-exporter\" || 0x00 || EKM"));
    assert!(spec.contains(&format!("label = \"{}\"", std::str::from_utf8(TLS_EXPORTER_LABEL).unwrap())));
}

#[test]
fn frame_types_alerts_and_suites_match_the_tables() {
    let spec = spec();
    for (code, name) in [
        (0x01, "ClientHello"),
        (0x02, "ServerChallenge"),
        (0x03, "ClientAuth"),
        (0x04, "ServerFinished"),
        (0x05, "ClientFinished"),
        (0x06, "ResumeHello"),
        (0x07, "ResumeChallenge"),
        (0x08, "ResumeFinished"),
        (0x09, "ResumeTicket"),
        (0x15, "Alert"),
        (0x17, "Data"),
        (0x18, "Close"),
    ] {
        let t = FrameType::from_byte(code).unwrap();
        assert_eq!(format!("{t:?}"), name);
        assert!(spec.contains(&format!("| `0x{code:02x}` | {name} |")), "{name}");
    }
    for code in 0..=255u8 {
        if let Some(alert) = Alert::from_code(code) {
            assert_eq!(alert.code(), code);
            assert!(spec.contains(&format!("| {code} | {alert:?} |")), "alert {code} {alert:?}");
        }
    }
    // The codes are exactly 1 to 14: 12 and 13 the gateway application's refusals, 14 a
    // clone's resume (§8.5).
    assert_eq!(Alert::from_code(12), Some(Alert::AdmissionRefused));
    assert_eq!(Alert::from_code(13), Some(Alert::AttestationRefused));
    assert_eq!(Alert::from_code(14), Some(Alert::RetiredKeyring));
    assert!(Alert::from_code(15).is_none() && Alert::from_code(0).is_none());
    for suite in MacSuite::ALL {
        assert!(spec.contains(&format!("| `0x{:04x}` | {suite}", suite.code())), "{suite}");
    }
}

#[test]
fn limits_match() {
    let spec = spec();
    assert!(spec.contains(&format!("| handshake body (`MAX_HANDSHAKE_BODY`) | {MAX_HANDSHAKE_BODY} bytes")));
    assert!(spec.contains(&format!("| channel payload (`MAX_PAYLOAD`) | {MAX_PAYLOAD} bytes |")));
    assert!(spec.contains(&format!("| versions or suites offered | 1 to {MAX_OFFERS} |")));
    assert!(spec.contains(&format!("| challenges in a ServerChallenge | 1 to {MAX_CHALLENGES} |")));
    assert!(spec.contains(&format!("| keyrings offered in a ResumeHello | 1 to {MAX_OFFERED_KEYRINGS} |")));
    assert!(spec.contains(&format!("| attestation evidence | 0 to {MAX_EVIDENCE} bytes |")));
    assert!(spec.contains(&format!("| ticket (ServerFinished, ResumeTicket) | 0 to {MAX_TICKET} bytes |")));
    assert!(spec.contains(&format!("| application request (ClientAuth, ResumeFinished) | 0 to {MAX_REQUEST} bytes |")));
}
