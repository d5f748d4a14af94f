//! The exhaustive model check, at the CI bound (or the deep one with
//! `BOARDING_DEEP=1`), and the known-bad variants it must catch.
//!
//! Run with `--nocapture` to see the states explored, the depth and the
//! counterexample traces.

use std::time::Instant;

use boarding_model::{Action, BoardingModel, Covered, Msg, Proof, Step, Token, Variant, bounds, trace};
use stateright::{Checker, Model};

const THREADS: usize = 2;

/// The always-properties, which must hold in every reachable state.
const SAFETY: [&str; 5] = ["authentication", "token secrecy", "use bound", "charge once", "key confirmation"];

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
