//! Saved fuzz inputs, replayed through the very checks the fuzz targets run (the
//! fuzz harness's `checks` module, included by path), so every input the fuzzer
//! ever turned up stays fixed and the invariants keep holding in a plain
//! `cargo test`.
//!
//! `fuzz-inputs/<target>/<name>` is one input for the target of that name. Crashes
//! found by fuzzing are added here with a name saying what they were; the rest are
//! seeds and corpus entries that reach deep into each target.

#[allow(dead_code, missing_docs, unused_imports, clippy::all)]
#[path = "../../fuzz/harness/src/checks/mod.rs"]
mod checks;

use std::fs;
use std::path::{Path, PathBuf};

fn inputs_of(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-inputs").join(target);
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))).collect()
}

fn input(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-inputs").join(target).join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_saved_input_passes_its_target_checks() {
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        for (path, bytes) in inputs_of(target) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} breaks an invariant", path.display());
            replayed += 1;
        }
    }
    // Every directory must name a target, so an input is never silently skipped.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-inputs");
    for entry in fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let name = entry.unwrap_or_else(|e| panic!("{e}")).file_name();
        let name = name.to_string_lossy();
        assert!(checks::TARGETS.iter().any(|(t, _)| *t == name), "fuzz-inputs/{name} is not a fuzz target");
    }
    assert!(replayed >= 10, "only {replayed} inputs replayed");
}

/// The saved session scripts do what their names say, so the replay above is not
/// vacuous: a join that exchanges data, a retry that is not charged again followed by
/// a resume, and a race for a one-use token with one winner.
#[test]
fn saved_session_scripts_reach_deep() {
    let run = |name: &str| checks::session::run(&input("session", name));
    let join = run("join-one-use");
    assert_eq!((join.established, join.frames_accepted, join.use_count), (1, 2, 1));
    let retry = run("retry-then-resume");
    assert_eq!((retry.connections, retry.established, retry.use_count), (3, 2, 1));
    let race = run("race");
    assert_eq!((race.connections, race.established, race.use_count), (2, 1, 1));
    assert_eq!(run("tamper").established, 0);
}

/// The scripted resumes of the state-machine targets reach the rotation states they are
/// built for, so the saved inputs for them (and the fuzzer) exercise those states: the
/// agent awaiting the store of a rotated keyring, the gateway fencing a rotation in
/// doubt, committing a rotation and recording a clone.
#[test]
fn scripted_resumes_reach_the_rotation_states() {
    use boarding::storage::StorageRequest;
    use boarding_memory::StorageAction;
    use checks::client::ClientStage;
    use checks::fixtures::{Flow, Script, recording};
    use checks::server::ServerStage;

    for flow in [Flow::ResumeRotating, Flow::ResumeUnsettled] {
        let script = ClientStage::ResumeAwaitRotationPersist.build(flow);
        assert!(format!("{:?}", script.pair.client).contains("AwaitRotationPersist("), "{flow:?}");
    }
    // The gateway, its storage writes held: the request it waits on, and its state.
    let held = |script: &mut Script, bytes: Option<&[u8]>| {
        script.pair.storage =
            Box::new(|request| if request.writes() { StorageAction::Hold } else { StorageAction::Answer });
        match bytes {
            Some(bytes) => {
                let now = script.world.now;
                let _ = script.pair.server.handle_input(now, bytes);
                script.pair.flush();
            }
            None => script.hop_to_server(),
        }
        (script.pair.held_storage.clone(), format!("{:?}", script.pair.server))
    };
    let mut unsettled = Script::new(Flow::ResumeUnsettled);
    let (request, state) = held(&mut unsettled, None);
    assert!(matches!(request, Some(StorageRequest::FenceKeyring { .. })) && state.contains("AwaitFence("), "{state}");
    for (flow, state_name) in [(Flow::ResumeRotating, "AwaitRotation("), (Flow::ResumeClone, "AwaitCloneRecord")] {
        let mut script = ServerStage::ResumeExpectFinished.build(flow);
        let (request, state) = held(&mut script, Some(&recording(flow).client_sent[1]));
        let expected = match flow {
            Flow::ResumeRotating => matches!(request, Some(StorageRequest::RotateKeyring(_))),
            _ => matches!(request, Some(StorageRequest::RecordClone { .. })),
        };
        assert!(expected && state.contains(state_name), "{flow:?}: {request:?} in {state}");
    }
}
