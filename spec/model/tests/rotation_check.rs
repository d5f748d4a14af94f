//! The rotation model's exhaustive check at the CI bounds (or the deep ones with
//! `BOARDING_DEEP=1`), and the known-bad variants it must catch.
//!
//! Run with `--nocapture` to see the states explored and the counterexample traces.

use std::time::Instant;

use boarding_model::rotation::{self, Action, Fresh, Msg, Party, RotationModel, SAFETY, Step, To, Variant, trace};
use stateright::{Checker, Model};

const THREADS: usize = 2;

/// Depth bound of the counterexample searches (the longest shortest one is 9 steps).
const DEPTH: usize = 14;

#[test]
fn boarding_rotation_satisfies_every_property_exhaustively() {
    for model in rotation::bounds() {
        let names: Vec<&str> = model.properties().iter().map(|p| p.name).collect();
        let thief = model.thief_resumes > 0;
        let described = model.describe();
        let start = Instant::now();
        let checker = model.check(THREADS);
        println!(
            "{described}: {} unique states ({} generated), max depth {}, {:.1?}",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            start.elapsed()
        );
        for name in SAFETY {
            if let Some(path) = checker.discovery(name) {
                let steps: Vec<Step> = path
                    .into_actions()
                    .into_iter()
                    .map(|action| Step { action, sent: Vec::new(), after: String::new() })
                    .collect();
                panic!("`{name}` is violated:\n{}", trace(&steps));
            }
        }
        // Every reachability property is witnessed (the clone ones need a thief).
        for name in names.iter().filter(|n| !SAFETY.contains(n)) {
            if !thief && name.starts_with("clone") {
                continue;
            }
            let path = checker.discovery(name).unwrap_or_else(|| panic!("`{name}` is never reached"));
            println!("  `{name}` witnessed by a path of {} steps", path.into_actions().len());
        }
    }
}

/// Finds the shortest counterexample to `property`, prints it and returns it.
fn caught(model: RotationModel, property: &'static str) -> (Vec<Step>, String) {
    let described = model.describe();
    let steps = model
        .counterexample(property, DEPTH)
        .unwrap_or_else(|| panic!("{described}: the checker must find a counterexample to `{property}`"));
    let shown = trace(&steps);
    println!("{described}: counterexample to `{property}`:\n{shown}");
    (steps, shown)
}

fn delivers_finished(step: &Step, session: u8) -> bool {
    matches!(&step.action, Action::Deliver(Msg::Finished { .. }, To::Session(n)) if *n == session)
}

/// A gateway without the re-check establishes a resume without rotation without re-reading the
/// record: a resume that looked `K0` up before a rotation away from it completes under `K0`
/// after the rotation committed.
#[test]
fn stale_acceptance_after_a_rotation_is_caught() {
    let (steps, shown) = caught(RotationModel::new(Variant::StaleAccept, 2, 0, 2, 1), "one acceptable keyring");
    // The stale finished is the older session's, delivered last.
    let last = steps.last().expect("a step");
    assert!(delivers_finished(last, 0), "{shown}");
    assert!(steps.iter().any(|s| delivers_finished(s, 1)), "{shown}");
}

/// Without the fence, the first rotation's delayed finished commits after the owner moved on
/// from that rotation (the gateway used the fallback): the owner is locked out with no thief
/// about, and its next resume raises a false clone alarm.
#[test]
fn delayed_rotation_commit_without_a_fence_is_caught() {
    let (steps, shown) = caught(RotationModel::new(Variant::NoFence, 2, 0, 2, 1), "no silent lockout");
    assert!(steps.iter().all(|s| s.action != Action::Copy), "{shown}");
    assert!(delivers_finished(steps.last().expect("a step"), 0), "{shown}");
    let (steps, shown) = caught(RotationModel::new(Variant::NoFence, 3, 0, 3, 1), "no false clone alarm");
    assert!(steps.iter().all(|s| s.action != Action::Copy), "{shown}");
}

/// Two concurrent resumes of the owner, with an agent that does not check (no check before a
/// finished without rotation): one rotates; the other's hello, looked up after that commit,
/// meets the retired keyring and its finished raises a clone event with no thief.
#[test]
fn unchecked_finish_of_a_concurrent_resume_is_caught() {
    let (steps, shown) = caught(RotationModel::new(Variant::UncheckedFinish, 2, 0, 2, 2), "no false clone alarm");
    assert!(steps.iter().all(|s| s.action != Action::Copy), "{shown}");
    // One resume at a time, the rule is not needed: the same bound holds.
    let checker = RotationModel::new(Variant::UncheckedFinish, 2, 0, 2, 1).check(THREADS);
    assert!(SAFETY.iter().all(|p| checker.discovery(p).is_none()));
}

/// The agent answers before it persists the rotated keyring: the gateway commits it, and an
/// agent crash before the persist loses it for good (its next resume offers the retired one).
#[test]
fn agent_persisting_after_finished_is_caught() {
    caught(RotationModel::new(Variant::AgentPersistsAfterFinished, 1, 0, 1, 1), "no silent lockout");
    let (steps, shown) =
        caught(RotationModel::new(Variant::AgentPersistsAfterFinished, 2, 0, 2, 1), "no false clone alarm");
    assert!(steps.iter().any(|s| s.action == Action::Crash(Party::Owner)), "{shown}");
}

/// The gateway keeps no retired keyring: the thief rotates, and the owner holds nothing the
/// gateway recognises (its next resume meets the decoy, not the clone path); the thief's
/// resume with an old keyring is never detected either.
#[test]
fn gateway_forgetting_retired_keyrings_is_caught() {
    let model = RotationModel::new(Variant::GatewayForgetsOld, 1, 1, 2, 1);
    let (steps, shown) = caught(model.clone(), "no silent lockout");
    assert!(steps.iter().any(|s| s.action == Action::Copy), "{shown}");
    let checker = model.check(THREADS);
    assert!(checker.discovery("clone detected at the owner after the thief rotated").is_none());
    assert!(checker.discovery("clone detected at the thief after the owner rotated").is_none());
}

/// The gateway raises the clone event on a hello that selects a retired keyring, before any
/// proof of possession: the network replays the owner's old hello (or sends one naming the
/// old id) after the owner's rotation, a false alarm.
#[test]
fn clone_alarm_on_a_hello_is_caught() {
    let (steps, shown) = caught(RotationModel::new(Variant::AlarmOnHello, 1, 0, 2, 1), "no false clone alarm");
    let replayed = steps.iter().filter(|s| matches!(s.action, Action::Deliver(Msg::Hello { .. }, _))).count() > 1
        || steps.iter().any(|s| matches!(s.action, Action::Forge(Msg::Hello { nc: Fresh::Attacker, .. }, _)));
    assert!(replayed, "{shown}");
}

/// Detection lasts as long as the gateway keeps the owner's keyring among the retired ones:
/// with one kept, a thief that rotates twice pushes it out and the owner's lockout is silent;
/// with two kept, the same bound holds.
#[test]
fn detection_lasts_as_long_as_the_retired_list() {
    let model = RotationModel::new(Variant::Boarding, 1, 2, 3, 1);
    caught(model.clone().with_retired_kept(1), "no silent lockout");
    let checker = model.check(THREADS);
    assert!(SAFETY.iter().all(|p| checker.discovery(p).is_none()));
}

/// The boundary of the claim: the resume keys come from the keyring, the ephemeral DH and the
/// gateway's public pin alone (§7.7), so a thief holding the keyring and on the path (no TLS
/// pinning) answers the owner's hellos as the gateway and asks it to rotate. Twice (or once,
/// while an honest rotation is unresolved) and the owner has discarded the gateway's current
/// keyring for ones the gateway never saw: locked out, with no thief rotation committed and no
/// retired keyring to raise a clone event.
#[test]
fn a_thief_on_the_path_locks_the_owner_out_silently() {
    for (owner_resumes, answers) in [(2, 2), (3, 1)] {
        let model = RotationModel::new(Variant::Boarding, owner_resumes, 1, 3, 1).with_thief_on_path(answers);
        let (steps, shown) = caught(model, "no silent lockout");
        assert!(steps.iter().any(|s| matches!(s.action, Action::Impersonate(_))), "{shown}");
        // The thief never resumed at the gateway: only its answers as the gateway.
        assert!(steps.iter().all(|s| s.action != Action::Start(Party::Thief)), "{shown}");
    }
}
