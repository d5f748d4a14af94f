//! Writes the seed corpora of every fuzz target, and the libFuzzer dictionary, from
//! real Boarding transcripts: the deterministic honest joins and resumes the targets
//! themselves replay, so the seeds reach deep into each state machine from the start.
//!
//! ```text
//! cargo run -p boarding-fuzz-seedgen -- <corpus dir> <dictionary file>
//! ```
//!
//! Every seed is run through its target's checks before it is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use boarding::Alert;
use boarding::channel::MAX_PAYLOAD;
use boarding::jws::{challenge_header_prefix, hs256_header};
use boarding::keys::labels;
use boarding::messages::{
    AlertMessage, FrameType, HandshakeMessage, MAX_EVIDENCE, MAX_TICKET, Message, ResumeFinished, ResumeTicket,
    encode_frame,
};
use boarding::suite::{MacSuite, VERSION_1};
use boarding::transcript::TRANSCRIPT_LABEL;
use boarding_fuzz_harness::checks::TARGETS;
use boarding_fuzz_harness::checks::client::{
    ClientStage, EvidencePlan, evidence_stage_byte, resume_stage_byte, stage_byte,
};
use boarding_fuzz_harness::checks::fixtures::{Flow, Script, concat, recording};
use boarding_fuzz_harness::checks::parsers::{eddsa_reference, hs256_reference};
use boarding_fuzz_harness::checks::server::{AdmissionPlan, ServerAnswers, ServerStage, StoragePlan, Target};
use boarding_fuzz_harness::checks::session::action::*;
use boarding_fuzz_harness::checks::session::{Summary, answer};

type Corpus = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn add(corpus: &mut Corpus, target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
    corpus.entry(target).or_default().push((name.into(), bytes.into()));
}

/// Every frame of every honest flow, with a short name.
fn honest_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for flow in Flow::ALL {
        let name = flow_name(flow);
        let rec = recording(flow);
        for (i, f) in rec.client_sent.iter().enumerate() {
            out.push((format!("{name}-c{i}"), f.clone()));
        }
        for (i, f) in rec.server_sent.iter().enumerate() {
            out.push((format!("{name}-s{i}"), f.clone()));
        }
    }
    out
}

/// A flow's short name in seed names.
fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::Join => "join",
        Flow::UnnamedToken => "seed",
        Flow::Resume => "resume",
        Flow::ResumeUnknown => "decoy",
        Flow::ResumeRotating => "rotating",
        Flow::ResumeClone => "clone",
        Flow::ResumeSettling => "settling",
        Flow::ResumeForeign => "foreign",
        Flow::ResumeUnsettled => "unsettled",
    }
}

fn decoder_target(frame: &[u8]) -> Option<&'static str> {
    Some(match HandshakeMessage::decode_frame(frame).ok()? {
        HandshakeMessage::ClientHello(_) => "decode_client_hello",
        HandshakeMessage::ServerChallenge(_) => "decode_server_challenge",
        HandshakeMessage::ClientAuth(_) => "decode_client_auth",
        HandshakeMessage::ServerFinished(_) => "decode_server_finished",
        HandshakeMessage::ClientFinished(_) => "decode_client_finished",
        HandshakeMessage::ResumeHello(_) => "decode_resume_hello",
        HandshakeMessage::ResumeChallenge(_) => "decode_resume_challenge",
        HandshakeMessage::ResumeFinished(_) => "decode_resume_finished",
        HandshakeMessage::ResumeTicket(_) => "decode_resume_ticket",
        HandshakeMessage::Alert(_) => "decode_alert",
    })
}

fn parsers(corpus: &mut Corpus) {
    let script = Script::new(Flow::Join);
    let token = script.token.to_string();
    add(corpus, "token_parse", "token", token.clone());
    add(corpus, "token_parse", "token-upper", token.to_uppercase());
    add(corpus, "token_parse", "token-no-dot", token.replace('.', ""));
    let pin = script.world.config.pin();
    add(corpus, "pin_parse", "pin-hex", pin.to_string());
    add(corpus, "pin_parse", "pin-upper", pin.to_string().to_uppercase());
    add(corpus, "pin_parse", "pin-b64", format!("sha256:{}", URL_SAFE_NO_PAD.encode(pin.as_bytes())));

    add(corpus, "jws_parse_verify", "hs256", hs256_reference());
    add(corpus, "jws_parse_verify", "eddsa", eddsa_reference());
    for (name, frame) in honest_frames() {
        add(corpus, "frame_decode", name.clone(), frame.clone());
        if let Some(target) = decoder_target(&frame) {
            add(corpus, target, name.clone(), frame[5..].to_vec());
        }
        match HandshakeMessage::decode_frame(&frame) {
            Ok(HandshakeMessage::ServerChallenge(m)) => {
                for (i, c) in m.challenges.iter().enumerate() {
                    add(corpus, "jws_parse_verify", format!("{name}-challenge{i}"), c.clone());
                }
            }
            Ok(HandshakeMessage::ClientAuth(m)) => add(corpus, "jws_parse_verify", format!("{name}-proof"), m.proof),
            _ => {}
        }
    }
    // A resume with a request (the honest flows send none): its ResumeFinished and the
    // ResumeTicket that answers it.
    for message in [
        HandshakeMessage::ResumeFinished(ResumeFinished { request: b"resume request".to_vec(), mac: [0x3c; 32] }),
        HandshakeMessage::ResumeTicket(ResumeTicket { ticket: b"resume ticket".to_vec(), mac: [0x5a; 32] }),
        HandshakeMessage::ResumeTicket(ResumeTicket { ticket: Vec::new(), mac: [0; 32] }),
    ] {
        let frame = message.to_frame();
        let target = decoder_target(&frame).unwrap_or_else(|| panic!("no decoder target for {message:?}"));
        let name = format!("with-request-{}", frame[5..].len());
        add(corpus, "frame_decode", name.clone(), frame.clone());
        add(corpus, target, name, frame[5..].to_vec());
    }
    // Resume messages just outside the rules: a rotate byte that is neither 0 nor 1, and
    // hellos offering no keyring and three.
    let rotating = recording(Flow::ResumeRotating);
    let mut challenge = rotating.server_sent[0][5..].to_vec();
    challenge[4] = 2;
    add(corpus, "decode_resume_challenge", "rotate-2", challenge.clone());
    add(corpus, "frame_decode", "resume-challenge-rotate-2", encode_frame(FrameType::ResumeChallenge, &challenge));
    if let Ok(HandshakeMessage::ResumeHello(hello)) = HandshakeMessage::decode_frame(&rotating.client_sent[0]) {
        for n in [0usize, 3] {
            let mut h = hello.clone();
            h.keyrings = vec![[0x6b; 32]; n];
            add(corpus, "decode_resume_hello", format!("keyrings-{n}"), h.encode_body());
        }
    }
    for alert in [
        Alert::Malformed,
        Alert::BadProof,
        Alert::Internal,
        Alert::AdmissionRefused,
        Alert::AttestationRefused,
        Alert::RetiredKeyring,
    ] {
        let body = vec![alert.code()];
        add(corpus, "decode_alert", format!("alert-{}", alert.code()), body.clone());
        add(corpus, "frame_decode", format!("alert-{}", alert.code()), encode_frame(FrameType::Alert, &body));
    }
}

fn channel(corpus: &mut Corpus) {
    // setup byte, then: seal "hello" (op 0), deliver #0 (op 2), seal close (1), deliver #1.
    let mut honest = vec![0, 0, 5];
    honest.extend_from_slice(b"hello");
    honest.extend_from_slice(&[2, 0, 1, 2, 1]);
    for setup in 0..4u8 {
        let mut s = honest.clone();
        s[0] = setup;
        add(corpus, "channel_open", format!("honest-{setup}"), s);
    }
    let mut tampered = vec![1, 0, 3, b'a', b'b', b'c', 3, 0, 0, 40, 2, 0];
    add(corpus, "channel_open", "flip-then-genuine", tampered.clone());
    tampered.extend_from_slice(&[5, 0, 0x81, 6, 0, 4, 0, 5, 0x17, 0, 0, 0, 0]);
    add(corpus, "channel_open", "mixed", tampered);
    add(corpus, "channel_open", "reorder", vec![2, 0, 1, b'x', 0, 1, b'y', 2, 1, 2, 0]);
}

/// Frames that must end a handshake at its first byte or header: an Alert of every
/// kind (a known code, the three newest ones, an unknown one, an empty and a two-byte body),
/// a channel frame and an undefined type.
fn stoppers() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("alert-internal", AlertMessage { code: Alert::Internal.code() }.to_frame()),
        ("alert-admission-refused", AlertMessage { code: Alert::AdmissionRefused.code() }.to_frame()),
        ("alert-attestation-refused", AlertMessage { code: Alert::AttestationRefused.code() }.to_frame()),
        ("alert-retired-keyring", AlertMessage { code: Alert::RetiredKeyring.code() }.to_frame()),
        ("alert-unknown", AlertMessage { code: 0xee }.to_frame()),
        ("alert-empty", encode_frame(FrameType::Alert, &[])),
        ("alert-long", encode_frame(FrameType::Alert, &[Alert::BadProof.code(), 0])),
        ("data-frame", vec![0x17, 0, 0, 0, 0]),
        ("undefined-type", vec![0x42, 0, 0, 0, 0]),
    ]
}

/// A resume hello with its X25519 share replaced by a low-order point.
fn low_order_hello(frame: &[u8], share: [u8; 32]) -> Vec<u8> {
    match HandshakeMessage::decode_frame(frame) {
        Ok(HandshakeMessage::ResumeHello(mut hello)) => {
            hello.ephemeral = share;
            hello.to_frame()
        }
        other => panic!("recorded resume hello: {other:?}"),
    }
}

fn states(corpus: &mut Corpus) {
    for stage in ClientStage::ALL {
        let next = stage.genuine_next(stage.flow()).map(<[u8]>::to_vec).unwrap_or_else(|| vec![0x17, 0, 0, 0, 0]);
        let idx = stage_byte(stage, false);
        add(corpus, "client_states", format!("{stage:?}"), [&[idx, 0][..], &next].concat());
        add(corpus, "client_states", format!("{stage:?}-split"), [&[idx, 7][..], &next].concat());
        if stage.expected().is_some() {
            for (name, frame) in stoppers() {
                add(corpus, "client_states", format!("{stage:?}-{name}"), [&[idx, 0][..], &frame].concat());
            }
        }
    }
    // The persist answered `PersistFailed`, after the genuine messages.
    let join = recording(Flow::Join);
    let idx = stage_byte(ClientStage::JoinAwaitPersist, true);
    add(corpus, "client_states", "JoinAwaitPersist-persist-failed", vec![idx, 0, 0x17, 0, 0, 0, 0]);
    let idx = stage_byte(ClientStage::JoinExpectServerFinished, true);
    add(
        corpus,
        "client_states",
        "JoinExpectServerFinished-persist-failed",
        [vec![idx, 0], join.server_sent[1].clone()].concat(),
    );
    let idx = stage_byte(ClientStage::JoinExpectChallenge, false);
    add(corpus, "client_states", "JoinExpectChallenge-both", [vec![idx, 0], concat(&join.server_sent[..2])].concat());
    // Evidence answered each way while the genuine ServerFinished waits in the buffer.
    let finished = join.server_sent[1].clone();
    add(
        corpus,
        "client_states",
        "JoinAwaitEvidence-finished",
        [vec![evidence_stage_byte(EvidencePlan::Empty), 0], finished.clone()].concat(),
    );
    add(
        corpus,
        "client_states",
        "JoinAwaitEvidence-attester-failed",
        [vec![evidence_stage_byte(EvidencePlan::Fail), 0], finished.clone()].concat(),
    );
    for len in [64u16, MAX_EVIDENCE as u16, MAX_EVIDENCE as u16 + 1] {
        let head = [&[evidence_stage_byte(EvidencePlan::Sized), 0][..], &len.to_be_bytes()].concat();
        add(corpus, "client_states", format!("JoinAwaitEvidence-evidence-{len}"), [head, finished.clone()].concat());
    }
    add(
        corpus,
        "client_states",
        "JoinAwaitEvidence-evidence-too-long",
        [vec![evidence_stage_byte(EvidencePlan::TooLong), 0], finished].concat(),
    );
    let idx = stage_byte(ClientStage::JoinExpectChallenge, true);
    add(
        corpus,
        "client_states",
        "JoinExpectChallenge-both-persist-failed",
        [vec![idx, 0], concat(&join.server_sent[..2])].concat(),
    );

    resume_client_states(corpus);

    let seed = recording(Flow::UnnamedToken);
    let resume = recording(Flow::Resume);
    let decoy = recording(Flow::ResumeUnknown);
    let rest_of = |stage: ServerStage| -> Vec<Vec<u8>> {
        match stage {
            ServerStage::ExpectHello => join.client_sent.clone(),
            ServerStage::JoinExpectClientAuth => join.client_sent[1..].to_vec(),
            ServerStage::UnnamedExpectClientAuth => seed.client_sent[1..].to_vec(),
            ServerStage::JoinAwaitRedeem | ServerStage::JoinExpectClientFinished => join.client_sent[2..].to_vec(),
            ServerStage::ResumeExpectFinished => resume.client_sent[1..].to_vec(),
            ServerStage::ResumeUnknownExpectFinished => decoy.client_sent[1..].to_vec(),
            ServerStage::JoinEstablished | ServerStage::ResumeEstablished => vec![vec![0x17, 0, 0, 0, 0]],
        }
    };
    let honest = ServerAnswers::HONEST;
    for stage in ServerStage::ALL {
        let idx = honest.stage_byte(stage);
        let rest = concat(&rest_of(stage));
        add(corpus, "server_states", format!("{stage:?}"), [vec![idx, 0], rest.clone()].concat());
        add(corpus, "server_states", format!("{stage:?}-split"), [vec![idx, 3], rest].concat());
        if stage.expected().is_some() {
            for (name, frame) in stoppers() {
                add(corpus, "server_states", format!("{stage:?}-{name}"), [vec![idx, 0], frame].concat());
            }
        }
    }
    add(corpus, "server_states", "ExpectHello-seed", [vec![0, 0], concat(&seed.client_sent)].concat());
    // Admission answered otherwise: refused, tickets at and past the limit, too long.
    for (stage, name) in
        [(ServerStage::ExpectHello, "ExpectHello"), (ServerStage::JoinExpectClientAuth, "JoinExpectClientAuth")]
    {
        let rest = concat(&rest_of(stage));
        let refuse = ServerAnswers { admission: AdmissionPlan::Refuse, ..honest };
        // The byte after the fragmentation byte picks the refusal: even the client's,
        // odd its evidence's.
        add(
            corpus,
            "server_states",
            format!("{name}-refuse"),
            [vec![refuse.stage_byte(stage), 0, 0], rest.clone()].concat(),
        );
        add(
            corpus,
            "server_states",
            format!("{name}-refuse-attestation"),
            [vec![refuse.stage_byte(stage), 0, 1], rest.clone()].concat(),
        );
        let tickets = ServerAnswers { admission: AdmissionPlan::Ticket, ..honest };
        for len in [16u16, MAX_TICKET as u16, MAX_TICKET as u16 + 1] {
            let head = [&[tickets.stage_byte(stage), 0][..], &len.to_be_bytes()].concat();
            add(corpus, "server_states", format!("{name}-ticket-{len}"), [head, rest.clone()].concat());
        }
        let long = ServerAnswers { admission: AdmissionPlan::TooLong, ..honest };
        add(
            corpus,
            "server_states",
            format!("{name}-ticket-too-long"),
            [vec![long.stage_byte(stage), 0, 9], rest].concat(),
        );
    }
    // Storage answered otherwise: failed at once, held and answered late (after
    // mismatched answers), held and failed; the first request or the first write.
    for plan in StoragePlan::ALL.into_iter().skip(1) {
        let answers = ServerAnswers { storage: plan, ..honest };
        for stage in [ServerStage::ExpectHello, ServerStage::JoinAwaitRedeem, ServerStage::ResumeExpectFinished] {
            let first = matches!(
                plan,
                StoragePlan::Fail(Target::First)
                    | StoragePlan::HoldMisuseRelease(Target::First)
                    | StoragePlan::HoldFail(Target::First)
            );
            if stage == ServerStage::ResumeExpectFinished && !first {
                continue;
            }
            let rest =
                if stage == ServerStage::ResumeExpectFinished { resume.client_sent.clone() } else { rest_of(stage) };
            let stage = if stage == ServerStage::ResumeExpectFinished { ServerStage::ExpectHello } else { stage };
            let name = format!("{stage:?}-{}-{plan:?}", if rest.len() == 2 { "decoy-resume" } else { "join" });
            let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            add(corpus, "server_states", name, [vec![answers.stage_byte(stage), 0], concat(&rest)].concat());
        }
    }
    resume_server_states(corpus);
    // Resume hellos with a low-order share, for a known and an unknown client id.
    for (rec, name) in [(resume, "known"), (decoy, "unknown")] {
        let mut one = [0u8; 32];
        one[0] = 1;
        for (share, which) in [([0u8; 32], "zero"), (one, "one")] {
            let hello = low_order_hello(&rec.client_sent[0], share);
            add(
                corpus,
                "server_states",
                format!("ExpectHello-resume-{name}-{which}-share"),
                [vec![0, 0], hello].concat(),
            );
        }
    }
}

/// The agent's resume stages in every flow of [`Flow::RESUMES`]: the genuine next
/// message (split too) and both messages at once; the rotation's store answered both
/// ways, with the genuine ticket or a stopper arriving before the answer.
fn resume_client_states(corpus: &mut Corpus) {
    let data = vec![0x17, 0, 0, 0, 0];
    for flow in Flow::RESUMES.into_iter().skip(1) {
        let name = flow_name(flow);
        let rec = recording(flow);
        for stage in
            [ClientStage::ResumeExpectChallenge, ClientStage::ResumeExpectTicket, ClientStage::ResumeEstablished]
        {
            if stage.flow_for(flow.resume_digit()) != flow {
                continue;
            }
            let idx = resume_stage_byte(stage, flow, false);
            let next = stage.genuine_next(flow).map(<[u8]>::to_vec).unwrap_or_else(|| data.clone());
            add(corpus, "client_states", format!("{stage:?}-{name}"), [&[idx, 0][..], &next].concat());
            add(corpus, "client_states", format!("{stage:?}-{name}-split"), [&[idx, 7][..], &next].concat());
        }
        let idx = resume_stage_byte(ClientStage::ResumeExpectChallenge, flow, false);
        let both = [vec![idx, 0], concat(&rec.server_sent[..2]), data.clone()].concat();
        add(corpus, "client_states", format!("ResumeExpectChallenge-{name}-both"), both);
    }
    // The rotation's store, acknowledged or failed, with the genuine ticket (and data)
    // arriving before the answer, or nothing; in both rotating flows.
    for flow in [Flow::ResumeRotating, Flow::ResumeUnsettled] {
        let name = flow_name(flow);
        let rec = recording(flow);
        let ticket = rec.server_sent[1].clone();
        for fails in [false, true] {
            let suffix = if fails { "-persist-failed" } else { "" };
            let idx = resume_stage_byte(ClientStage::ResumeAwaitRotationPersist, flow, fails);
            add(corpus, "client_states", format!("ResumeAwaitRotationPersist-{name}-nothing{suffix}"), vec![idx, 0]);
            add(
                corpus,
                "client_states",
                format!("ResumeAwaitRotationPersist-{name}-ticket{suffix}"),
                [vec![idx, 0], ticket.clone(), data.clone()].concat(),
            );
            add(
                corpus,
                "client_states",
                format!("ResumeAwaitRotationPersist-{name}-ticket-split{suffix}"),
                [vec![idx, 5], ticket.clone()].concat(),
            );
            let idx = resume_stage_byte(ClientStage::ResumeExpectChallenge, flow, fails);
            add(
                corpus,
                "client_states",
                format!("ResumeExpectChallenge-{name}-both-data{suffix}"),
                [vec![idx, 0], concat(&rec.server_sent[..2]), data.clone()].concat(),
            );
        }
    }
    for (stopper, frame) in stoppers() {
        let idx = stage_byte(ClientStage::ResumeAwaitRotationPersist, false);
        add(corpus, "client_states", format!("ResumeAwaitRotationPersist-{stopper}"), [vec![idx, 0], frame].concat());
    }
}

/// The gateway's resume stages in every flow of [`Flow::RESUMES`] (and a known client
/// offering keyrings it never held), whole and split; the rotation's commit and the
/// clone's record failed, held while more bytes arrive, answered late after mismatched
/// answers, or failed late.
fn resume_server_states(corpus: &mut Corpus) {
    let data = vec![0x17, 0, 0, 0, 0];
    for flow in
        [Flow::ResumeRotating, Flow::ResumeClone, Flow::ResumeSettling, Flow::ResumeForeign, Flow::ResumeUnsettled]
    {
        let name = flow_name(flow);
        let rec = recording(flow);
        let stages: &[ServerStage] = match flow {
            Flow::ResumeForeign => &[ServerStage::ResumeUnknownExpectFinished],
            Flow::ResumeClone => &[ServerStage::ResumeExpectFinished],
            Flow::ResumeUnsettled => &[ServerStage::ResumeEstablished],
            _ => &[ServerStage::ResumeExpectFinished, ServerStage::ResumeEstablished],
        };
        for &stage in stages {
            let idx = ServerAnswers::resume_stage_byte(stage, flow, StoragePlan::Answer);
            let rest =
                if stage == ServerStage::ResumeEstablished { data.clone() } else { concat(&rec.client_sent[1..]) };
            add(corpus, "server_states", format!("{stage:?}-{name}"), [vec![idx, 0], rest.clone()].concat());
            add(corpus, "server_states", format!("{stage:?}-{name}-split"), [vec![idx, 3], rest].concat());
        }
        if !matches!(flow, Flow::ResumeRotating | Flow::ResumeClone) {
            continue;
        }
        // The commit of the rotation, or the clone's record, is the phase's first request
        // and its first write.
        let finished = rec.client_sent[1].clone();
        for plan in StoragePlan::ALL.into_iter().skip(1) {
            let idx = ServerAnswers::resume_stage_byte(ServerStage::ResumeExpectFinished, flow, plan);
            let plan_name: String = format!("{plan:?}").chars().filter(char::is_ascii_alphanumeric).collect();
            let stream = [vec![idx, 0], finished.clone()].concat();
            add(corpus, "server_states", format!("ResumeExpectFinished-{name}-{plan_name}"), stream);
            // More bytes while the request is held.
            let stream = [vec![idx, 4], finished.clone(), data.clone()].concat();
            add(corpus, "server_states", format!("ResumeExpectFinished-{name}-{plan_name}-more"), stream);
        }
    }
    // The stored keyrings the flows leave: a rotation committed, a clone recorded.
    let rotating = recording(Flow::ResumeRotating);
    let clone = recording(Flow::ResumeClone);
    assert!(rotating.peer.as_ref().is_some_and(|p| p.rotated()), "the rotating resume did not rotate");
    assert!(clone.peer.is_none(), "the clone's resume completed");
}

/// Connection `c`'s action byte.
fn op(c: u8, action: u8) -> u8 {
    (c << 4) | action
}

fn honest_join(c: u8) -> Vec<u8> {
    vec![op(c, TO_SERVER), op(c, TO_CLIENT), op(c, TO_SERVER), op(c, TO_CLIENT), op(c, PERSIST), op(c, TO_SERVER)]
}

fn session(corpus: &mut Corpus) {
    let data = [
        op(0, SEND),
        5 << 1,
        b'h',
        b'e',
        b'l',
        b'l',
        b'o',
        op(0, TO_SERVER),
        op(0, SEND),
        (2 << 1) | 1,
        b'o',
        b'k',
        op(0, TO_CLIENT),
    ];
    for (setup, name) in [(0u8, "one-use"), (1, "two-use"), (2, "unlimited")] {
        add(corpus, "session", format!("join-{name}"), [&[setup][..], &honest_join(0), &data].concat());
    }
    // The connection dies after redemption; the retry succeeds without a charge, then a resume.
    let mut retry = vec![4, op(0, TO_SERVER), op(0, TO_CLIENT), op(0, TO_SERVER), op(0, DROP), 1, op(0, CONNECT), 0];
    retry.extend(honest_join(1));
    retry.extend([op(0, CONNECT), 1, op(2, TO_SERVER), op(2, TO_CLIENT), op(2, TO_SERVER)]);
    add(corpus, "session", "retry-then-resume", retry);
    // A second client races the first for a one-use token.
    let mut race = vec![8, op(0, CONNECT), 2];
    race.extend([op(0, TO_SERVER), op(1, TO_SERVER), op(0, TO_CLIENT), op(1, TO_CLIENT)]);
    race.extend([
        op(1, TO_SERVER),
        op(0, TO_SERVER),
        op(0, TO_CLIENT),
        op(1, TO_CLIENT),
        op(1, PERSIST),
        op(1, TO_SERVER),
    ]);
    add(corpus, "session", "race", race);
    // Tampering: a flipped challenge, a replayed proof, a split hello, a failed store.
    let mut tamper = vec![12, op(0, SPLIT), 0, 0, 9, op(0, TO_SERVER), op(0, TO_SERVER), op(0, FLIP), 1, 0, 100];
    tamper.extend([op(0, TO_CLIENT), op(0, CONNECT), 0, op(1, TO_SERVER), op(1, TO_CLIENT), op(1, INJECT), 0, 0, 0]);
    tamper.extend([op(1, REORDER), 0, op(1, TO_SERVER), op(1, TO_SERVER), op(1, DUPLICATE), 1, op(1, TO_CLIENT)]);
    tamper.extend([op(1, FAIL_STORAGE), op(1, TRUNCATE), 0, op(1, TO_SERVER)]);
    add(corpus, "session", "tamper", tamper);

    // The application refuses the first join: nothing is charged; the retry joins.
    let mut refused = vec![0, op(0, ANSWER), answer::REFUSE];
    refused.extend([op(0, TO_SERVER), op(0, TO_CLIENT), op(0, TO_SERVER), op(0, TO_CLIENT), op(0, CONNECT), 0]);
    refused.extend(honest_join(1));
    add(corpus, "session", "admission-refused-then-retry", refused);
    // A ticket within the limit reaches the agent; one past it fails the join.
    let mut ticket = vec![1, op(0, ANSWER), answer::TICKET, 0, 40];
    ticket.extend(honest_join(0));
    ticket.extend(data);
    add(corpus, "session", "ticket", ticket);
    let too_long = u16::try_from(MAX_TICKET + 1).unwrap_or(0).to_be_bytes();
    let mut ticket = vec![1, op(0, ANSWER), answer::TICKET, too_long[0], too_long[1]];
    ticket.extend(honest_join(0));
    add(corpus, "session", "ticket-too-long", ticket);
    // The agent cannot store its keyring: the join fails unconfirmed; the retry is free.
    let mut persist = vec![0, op(0, TO_SERVER), op(0, TO_CLIENT), op(0, TO_SERVER), op(0, TO_CLIENT)];
    persist.extend([op(0, ANSWER), answer::PERSIST_FAILED, op(0, TO_SERVER), op(0, CONNECT), 0]);
    persist.extend(honest_join(1));
    add(corpus, "session", "persist-failed-then-retry", persist);
    // Every storage request held, each side answered what it did not ask for, then the
    // held answers given late: the join completes.
    let hold = |c: u8| [op(c, ANSWER), answer::HOLD_STORAGE];
    let misuse = |c: u8| [op(c, ANSWER), answer::GATEWAY_MISUSE, op(c, ANSWER), answer::AGENT_MISUSE];
    let release = |c: u8| [op(c, ANSWER), answer::RELEASE_STORAGE];
    let mut held = vec![0];
    held.extend(hold(0));
    held.push(op(0, TO_SERVER));
    held.extend(misuse(0));
    held.extend(release(0));
    held.push(op(0, TO_CLIENT));
    held.extend(hold(0));
    held.push(op(0, TO_SERVER));
    held.extend(misuse(0));
    held.extend(release(0));
    held.extend([op(0, TO_CLIENT), op(0, ANSWER), answer::AGENT_MISUSE, op(0, PERSIST)]);
    held.extend(hold(0));
    held.push(op(0, TO_SERVER));
    held.extend(misuse(0));
    held.extend(release(0));
    held.extend(misuse(0));
    add(corpus, "session", "held-storage-and-misuse", held);
    // A second client presents the evidence the first one sent: refused at the
    // gateway's validator (its binding is the first session's), nothing charged.
    let mut replay = vec![2];
    replay.extend(honest_join(0));
    replay.extend([op(0, CONNECT), 2, op(1, ANSWER), answer::REPLAY_EVIDENCE, 0, 0]);
    replay.extend([op(1, TO_SERVER), op(1, TO_CLIENT), op(1, TO_SERVER), op(1, TO_CLIENT)]);
    add(corpus, "session", "replayed-evidence", replay);
    // A held lookup answered `Failed`.
    let mut fail = vec![0];
    fail.extend(hold(0));
    fail.extend([op(0, TO_SERVER), op(0, ANSWER), answer::FAIL_HELD, op(0, TO_CLIENT)]);
    add(corpus, "session", "held-storage-failed", fail);
}

/// Whether a session seed reached what its name says: (connections, established, use
/// count, refused admissions, failed persists).
fn session_seed_reached(name: &str, s: &Summary) -> bool {
    let got = (s.connections, s.established, s.use_count, s.refused, s.persist_failed);
    match name {
        "join-one-use" | "join-two-use" | "join-unlimited" | "ticket" | "held-storage-and-misuse" => {
            got == (1, 1, 1, 0, 0)
        }
        "retry-then-resume" => got == (3, 2, 1, 0, 0),
        "race" => got == (2, 1, 1, 0, 0),
        "admission-refused-then-retry" => got == (2, 1, 1, 1, 0),
        "replayed-evidence" => got == (2, 1, 1, 1, 0),
        "ticket-too-long" => got == (1, 0, 0, 1, 0),
        "persist-failed-then-retry" => got == (2, 1, 1, 0, 1),
        "held-storage-failed" => got == (1, 0, 0, 0, 0),
        "tamper" => s.established == 0,
        _ => true,
    }
}

fn roundtrips(corpus: &mut Corpus) {
    for (target, n) in [("roundtrip_messages", 9u8), ("roundtrip_text", 1), ("roundtrip_channel", 2)] {
        for k in 0..n {
            let bytes: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(31).wrapping_add(k.wrapping_mul(29))).collect();
            let mut seed = vec![k; 2];
            seed.extend(bytes);
            add(corpus, target, format!("seed-{k}"), seed);
        }
    }
}

/// Seeds of the forwarding targets: every message, labels values, and the gateway's
/// PROXY headers for a few identities and address families.
fn forward(corpus: &mut Corpus) {
    use boarding_smol::forward::proxy::{Identity, encode_labels};
    use boarding_smol::forward::wire::{AbortReason, Answer, Message, Refusal};

    let long = "a".repeat(63);
    let data = [0x42u8; 1024];
    let mut messages = vec![
        ("open", Message::Open { service: "db" }),
        ("open-long", Message::Open { service: &long }),
        ("accepted", Message::Answer { version: 1, answer: Answer::Accepted }),
        ("data", Message::Data(b"hi")),
        ("data-1k", Message::Data(&data)),
        ("end", Message::End),
    ];
    for refusal in Refusal::ALL {
        messages.push(("refused", Message::Answer { version: 1, answer: Answer::Refused(refusal) }));
    }
    for reason in AbortReason::ALL {
        messages.push(("abort", Message::Abort(reason)));
    }
    for (i, (name, message)) in messages.iter().enumerate() {
        let mut out = Vec::new();
        message.encode(&mut out);
        add(corpus, "forward_message", format!("{i:02}-{name}"), out);
    }
    add(corpus, "forward_message", "open-v2", vec![0x01, 0x02, 0x02, b'd', b'b']);
    add(corpus, "forward_message", "unknown-kind", vec![0x06]);

    let mut identity = Identity {
        client_id: "node-1".parse().unwrap_or_else(|e| panic!("{e}")),
        token_id: boarding::token::TokenId::from_bytes(b"abcdef").unwrap_or_else(|e| panic!("{e}")),
        labels: BTreeMap::new(),
        attested_name: None,
        resumed: true,
        service: "db".parse().unwrap_or_else(|e| panic!("{e}")),
    };
    let v4 = "10.0.0.7:50000".parse().unwrap_or_else(|e| panic!("{e}"));
    let v4b = "10.0.0.1:7443".parse().unwrap_or_else(|e| panic!("{e}"));
    let v6 = "[2001:db8::7]:50000".parse().unwrap_or_else(|e| panic!("{e}"));
    let header = |identity: &Identity, addresses| identity.header(addresses).unwrap_or_else(|e| panic!("{e}"));
    add(corpus, "forward_proxy_header", "bare-v4", header(&identity, Some((v4, v4b))));
    identity.labels.insert("role".into(), "db".into());
    identity.labels.insert("team".into(), "infra".into());
    add(corpus, "forward_labels", "two", encode_labels(&identity.labels).unwrap_or_else(|e| panic!("{e}")));
    add(corpus, "forward_proxy_header", "labels-v4", header(&identity, Some((v4, v4b))));
    add(corpus, "forward_proxy_header", "labels-v6", header(&identity, Some((v6, v6))));
    add(corpus, "forward_proxy_header", "labels-mixed", header(&identity, Some((v4, v6))));
    add(corpus, "forward_proxy_header", "labels-none", header(&identity, None));
    identity.attested_name = Some("node-1.example".into());
    identity.resumed = false;
    add(corpus, "forward_proxy_header", "attested-join", header(&identity, Some((v4, v4b))));
    let mut wide = BTreeMap::new();
    for i in 0..8 {
        wide.insert(format!("k{i}-{}", "x".repeat(50)), "v".repeat(i * 30));
    }
    add(corpus, "forward_labels", "wide", encode_labels(&wide).unwrap_or_else(|e| panic!("{e}")));
    add(corpus, "forward_labels", "empty", Vec::new());
    // Request and ticket parts: a CSR request, an application ticket with a certificate.
    let parts = |p: &[(u8, &[u8])]| -> Vec<u8> {
        p.iter().flat_map(|(k, b)| [&[*k][..], &(b.len() as u16).to_be_bytes(), b].concat()).collect()
    };
    add(corpus, "ticket_parts", "request", parts(&[(0x01, b"a signing request")]));
    add(corpus, "ticket_parts", "ticket", parts(&[(0x01, b"app"), (0x02, b"a certificate")]));
    add(corpus, "ticket_parts", "empty", Vec::new());
    for k in 0..4u8 {
        let bytes: Vec<u8> = (0..160u8).map(|i| i.wrapping_mul(37).wrapping_add(k.wrapping_mul(11))).collect();
        let mut seed = vec![k; 2];
        seed.extend(bytes);
        add(corpus, "roundtrip_forward", format!("seed-{k}"), seed);
    }
}

/// A libFuzzer dictionary entry: printable ASCII as is, everything else escaped.
fn entry(value: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in value {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

fn dictionary() -> String {
    let mut out =
        String::from("# Boarding's protocol constants, for libFuzzer's -dict (written by boarding-fuzz-seedgen).\n");
    let mut put = |name: &str, value: &[u8]| out.push_str(&format!("{name}={}\n", entry(value)));
    for t in [
        FrameType::ClientHello,
        FrameType::ServerChallenge,
        FrameType::ClientAuth,
        FrameType::ServerFinished,
        FrameType::ClientFinished,
        FrameType::ResumeHello,
        FrameType::ResumeChallenge,
        FrameType::ResumeFinished,
        FrameType::ResumeTicket,
        FrameType::Alert,
        FrameType::Data,
        FrameType::Close,
    ] {
        put(&format!("type_{t:?}"), &[t as u8]);
        put(&format!("header_{t:?}"), &[t as u8, 0, 0]);
    }
    put("version_1", &VERSION_1.to_be_bytes());
    put("offer_version_1", &[1, 0, 1]);
    for s in MacSuite::ALL {
        put(&format!("suite_{s:?}"), &s.code().to_be_bytes());
    }
    put("offer_suites", &[2, 0, 2, 0, 1]);
    put("token_flag", &[1]);
    // A resume's keyring count (one, or two while a rotation is unsettled) and the
    // challenge's rotate flag after the suite.
    put("keyrings_one", &[1]);
    put("keyrings_two", &[2]);
    put("suite_Blake3_no_rotate", &[0, 2, 0]);
    put("suite_Blake3_rotate", &[0, 2, 1]);
    for alert in Alert::ALL {
        let code = alert.code();
        put(&format!("alert_{code}"), &[0x15, 0, 0, 0, 1, code]);
    }
    put("alert_empty", &[0x15, 0, 0, 0, 0]);
    put("max_payload", &u32::try_from(MAX_PAYLOAD).unwrap_or(0).to_be_bytes());
    put("pin_prefix", b"sha256:");
    put("pin_prefix_upper", b"SHA256:");
    put("jws_separator", b"..");
    let hs = URL_SAFE_NO_PAD.encode(hs256_header("abcdef"));
    put("jws_hs256_header_prefix", &hs.as_bytes()[..24]);
    let kid = "abcdef".parse().unwrap_or_else(|e| panic!("{e}"));
    let ed = URL_SAFE_NO_PAD.encode(challenge_header_prefix(kid));
    put("jws_eddsa_header_prefix", &ed.as_bytes()[..24]);
    put("json_alg_hs256", b"{\"alg\":\"HS256\",\"kid\":\"");
    put("json_alg_eddsa", b"{\"alg\":\"EdDSA\",\"kid\":\"");
    put("json_th", b"\",\"th\":\"");
    put("transcript_label", TRANSCRIPT_LABEL);
    for (name, label) in [
        ("keyring_c2s", labels::KEYRING_C2S),
        ("keyring_s2c", labels::KEYRING_S2C),
        ("join_c2s", labels::JOIN_C2S),
        ("join_s2c", labels::JOIN_S2C),
        ("join_server_finished", labels::JOIN_SERVER_FINISHED),
        ("join_client_finished", labels::JOIN_CLIENT_FINISHED),
        ("resume_c2s", labels::RESUME_C2S),
        ("resume_s2c", labels::RESUME_S2C),
        ("resume_server_finished", labels::RESUME_SERVER_FINISHED),
        ("resume_client_finished", labels::RESUME_CLIENT_FINISHED),
        ("resume_ticket", labels::RESUME_TICKET),
        ("rotated_keyring_c2s", labels::ROTATED_KEYRING_C2S),
        ("rotated_keyring_s2c", labels::ROTATED_KEYRING_S2C),
        ("keyring_id", labels::KEYRING_ID),
    ] {
        put(&format!("label_{name}"), label);
    }
    // The forwarding protocol (spec/FORWARDING.md).
    put("forward_open_v1", &[0x01, 0x01]);
    put("forward_answer_v1", &[0x02, 0x01]);
    put("proxy_signature", boarding_smol::forward::proxy::SIGNATURE);
    put("proxy_tcp4", &[0x21, 0x11]);
    put("proxy_tcp6", &[0x21, 0x21]);
    for (name, kind) in [
        ("client_id", 0xE0u8),
        ("token_id", 0xE1),
        ("labels", 0xE2),
        ("attested_name", 0xE3),
        ("session", 0xE4),
        ("service", 0xE5),
    ] {
        put(&format!("proxy_tlv_{name}"), &[kind, 0]);
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(dict)) = (args.next(), args.next()) else {
        eprintln!("usage: boarding-fuzz-seedgen <corpus dir> <dictionary file>");
        std::process::exit(2);
    };
    let mut corpus = Corpus::new();
    parsers(&mut corpus);
    channel(&mut corpus);
    states(&mut corpus);
    session(&mut corpus);
    roundtrips(&mut corpus);
    forward(&mut corpus);
    let checks: BTreeMap<&str, boarding_fuzz_harness::checks::Check> =
        TARGETS.iter().chain(boarding_fuzz_harness::forward::TARGETS).copied().collect();
    let mut total = 0;
    for (target, seeds) in &corpus {
        let out = Path::new(&dir).join(target);
        fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        for (name, bytes) in seeds {
            if let Some(check) = checks.get(target) {
                check(bytes);
            }
            if *target == "session" {
                let summary: Summary = boarding_fuzz_harness::checks::session::run(bytes);
                println!("  {name}: {summary:?}");
                assert!(session_seed_reached(name, &summary), "session seed {name} did not reach what it says");
            }
            fs::write(out.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            total += bytes.len();
        }
        println!("{target}: {} seeds", seeds.len());
    }
    fs::write(&dict, dictionary()).unwrap_or_else(|e| panic!("{dict}: {e}"));
    println!("{total} bytes of seeds; dictionary in {dict}");
}
