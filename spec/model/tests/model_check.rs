//! The exhaustive model check, at the CI bound (or the deep one with
//! `BOARDING_DEEP=1`), and the known-bad variants it must catch.
//!
//! Run with `--nocapture` to see the states explored, the depth and the
//! counterexample traces.

use std::time::Instant;

use boarding_model::{Action, Agent, BoardingModel, Covered, Msg, Proof, Step, Token, Variant, bounds, trace};
use stateright::{Checker, Model};

const THREADS: usize = 2;

/// The always-properties, which must hold in every reachable state.
const SAFETY: [&str; 6] =
    ["authentication", "token secrecy", "use bound", "charge once", "key confirmation", "attestation"];

#[test]
fn boarding_satisfies_every_property_exhaustively() {
    for (agents, attempts, sessions) in bounds() {
        let model = BoardingModel::new(Variant::Boarding, agents, attempts, sessions);
        let names: Vec<&str> = model.properties().iter().map(|p| p.name).collect();
        let start = Instant::now();
        let checker = model.check(THREADS);
        println!(
            "Boarding, {agents} honest agent(s) x {attempts} attempt(s), {sessions} gateway connections: \
             {} unique states ({} generated), max depth {}, {:.1?}",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            start.elapsed()
        );
        for name in SAFETY {
            if let Some(path) = checker.discovery(name) {
                let steps: Vec<Step> =
                    path.into_actions().into_iter().map(|action| Step { action, sent: Vec::new() }).collect();
                panic!("`{name}` is violated:\n{}", trace(&steps));
            }
        }
        // Every reachability property is witnessed, so the model is not vacuous.
        for name in names.iter().filter(|n| !SAFETY.contains(n)) {
            if attempts < 2 && name.starts_with("retry") {
                continue;
            }
            let path = checker.discovery(name).unwrap_or_else(|| panic!("`{name}` is never reached"));
            println!("  `{name}` witnessed by a path of {} steps", path.clone().into_actions().len());
        }
    }
}

/// The reference flow's static bearer proof: replayed into another session with the
/// attacker's own ephemeral key, it makes the gateway accept the honest agent's
/// identity in a session the agent never ran.
#[test]
fn replayable_bearer_proof_is_caught() {
    let steps = BoardingModel::new(Variant::StaticProof, 1, 1, 2)
        .counterexample("authentication", 16)
        .expect("the checker must find the replay attack");
    let shown = trace(&steps);
    println!("StaticProof: counterexample to `authentication`:\n{shown}");
    // The attack re-uses the honest agent's proof in a message the attacker made up.
    let replayed = steps
        .iter()
        .any(|s| matches!(&s.action, Action::Forge(Msg::Auth { tid: Token::T1, proof, .. }, _) if *proof == Proof::Mac(Token::T1, Covered::Static(Token::T1))));
    assert!(replayed, "{shown}");
}

/// A proof that is the token itself gives the token away.
#[test]
fn cleartext_token_proof_is_caught() {
    let model = BoardingModel::new(Variant::CleartextToken, 1, 1, 2);
    let steps = model.clone().counterexample("token secrecy", 16).expect("the checker must see the secret on the wire");
    let shown = trace(&steps);
    println!("CleartextToken: counterexample to `token secrecy`:\n{shown}");
    assert!(shown.contains("secret(T1)"), "{shown}");
    // With the secret, the attacker impersonates the agent too.
    assert!(model.counterexample("authentication", 16).is_some());
}

/// Evidence fixed before the session (the same signature in every join): the attacker,
/// holding a token of its own, presents an honest agent's recorded evidence in a
/// session of its own and is admitted under the agent's name.
#[test]
fn evidence_not_bound_to_the_session_is_caught() {
    let steps = BoardingModel::new(Variant::UnboundEvidence, 1, 1, 2)
        .counterexample("attestation", 16)
        .expect("the checker must find the replayed evidence");
    let shown = trace(&steps);
    println!("UnboundEvidence: counterexample to `attestation`:\n{shown}");
    let replayed = steps.iter().any(|s| {
        matches!(&s.action, Action::Forge(Msg::Auth { tid: Token::TM, cid: Agent::A, ev, .. }, _) if ev.signer == Agent::A)
    });
    assert!(replayed, "{shown}");
}

/// With Boarding's binding that replay is refused: at the same bound the gateway never
/// admits the honest agent's name in a session it did not attest, and the attacker's
/// own attested join still works.
#[test]
fn evidence_bound_to_the_session_is_not_replayable() {
    let checker = BoardingModel::new(Variant::Boarding, 1, 1, 2).check(THREADS);
    assert!(checker.discovery("attestation").is_none());
    assert!(checker.discovery("attacker joins with its own token").is_some(), "the attacker's own join works");
}
