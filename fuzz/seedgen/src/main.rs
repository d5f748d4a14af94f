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
use boarding::messages::{FrameType, HandshakeMessage, encode_frame};
use boarding::suite::{MacSuite, VERSION_1};
use boarding::transcript::TRANSCRIPT_LABEL;
use boarding_fuzz_harness::checks::TARGETS;
use boarding_fuzz_harness::checks::client::ClientStage;
use boarding_fuzz_harness::checks::fixtures::{Flow, Script, concat, recording};
use boarding_fuzz_harness::checks::parsers::{eddsa_reference, hs256_reference};
use boarding_fuzz_harness::checks::server::ServerStage;
use boarding_fuzz_harness::checks::session::action::*;

type Corpus = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn add(corpus: &mut Corpus, target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
    corpus.entry(target).or_default().push((name.into(), bytes.into()));
}

/// Every frame of every honest flow, with a short name.
fn honest_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (flow, name) in
        [(Flow::Join, "join"), (Flow::Seed, "seed"), (Flow::Resume, "resume"), (Flow::ResumeUnknown, "decoy")]
    {
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
    for alert in [Alert::Malformed, Alert::BadProof, Alert::Internal] {
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

fn states(corpus: &mut Corpus) {
    for (i, stage) in ClientStage::ALL.iter().enumerate() {
        let next = stage.genuine_next().map(<[u8]>::to_vec).unwrap_or_else(|| vec![0x17, 0, 0, 0, 0]);
        let idx = u8::try_from(i).unwrap_or(0);
        add(corpus, "client_states", format!("{stage:?}"), [&[idx, 0][..], &next].concat());
        add(corpus, "client_states", format!("{stage:?}-split"), [&[idx, 7][..], &next].concat());
    }
    let join = recording(Flow::Join);
    let seed = recording(Flow::Seed);
    let resume = recording(Flow::Resume);
    let decoy = recording(Flow::ResumeUnknown);
    for (i, stage) in ServerStage::ALL.iter().enumerate() {
        let rest: Vec<Vec<u8>> = match stage {
            ServerStage::ExpectHello => join.client_sent.clone(),
            ServerStage::JoinExpectClientAuth => join.client_sent[1..].to_vec(),
            ServerStage::SeedExpectClientAuth => seed.client_sent[1..].to_vec(),
            ServerStage::JoinAwaitRedeem | ServerStage::JoinExpectClientFinished => join.client_sent[2..].to_vec(),
            ServerStage::ResumeExpectFinished => resume.client_sent[1..].to_vec(),
            ServerStage::ResumeUnknownExpectFinished => decoy.client_sent[1..].to_vec(),
            ServerStage::JoinEstablished | ServerStage::ResumeEstablished => vec![vec![0x17, 0, 0, 0, 0]],
        };
        let idx = u8::try_from(i).unwrap_or(0);
        add(corpus, "server_states", format!("{stage:?}"), [vec![idx, 0], concat(&rest)].concat());
        add(corpus, "server_states", format!("{stage:?}-split"), [vec![idx, 3], concat(&rest)].concat());
    }
    add(corpus, "server_states", "ExpectHello-seed", [vec![0, 0], concat(&seed.client_sent)].concat());
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
    for code in 1..=11u8 {
        put(&format!("alert_{code}"), &[0x15, 0, 0, 0, 1, code]);
    }
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
        ("keyring_id", labels::KEYRING_ID),
    ] {
        put(&format!("label_{name}"), label);
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
    let checks: BTreeMap<&str, boarding_fuzz_harness::checks::Check> = TARGETS.iter().copied().collect();
    let mut total = 0;
    for (target, seeds) in &corpus {
        let out = Path::new(&dir).join(target);
        fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        for (name, bytes) in seeds {
            if let Some(check) = checks.get(target) {
                check(bytes);
            }
            if *target == "session" {
                println!("  {name}: {:?}", boarding_fuzz_harness::checks::session::run(bytes));
            }
            fs::write(out.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            total += bytes.len();
        }
        println!("{target}: {} seeds", seeds.len());
    }
    fs::write(&dict, dictionary()).unwrap_or_else(|e| panic!("{dict}: {e}"));
    println!("{total} bytes of seeds; dictionary in {dict}");
}
