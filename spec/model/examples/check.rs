//! Runs the model checks at a chosen bound and prints what they explored.
//!
//! ```text
//! cargo run -p boarding-model --release --example check -- [AGENTS ATTEMPTS CONNECTIONS [THREADS]]
//! cargo run -p boarding-model --release --example check -- rotation \
//!     [OWNER_RESUMES THIEF_RESUMES SESSIONS IN_FLIGHT [THREADS [RETIRED_KEPT [VARIANT]]]]
//! ```
//!
//! Without arguments it runs the bounds of [`boarding_model::bounds`] and of
//! [`boarding_model::rotation::bounds`] (the CI ones, or the deep ones with
//! `BOARDING_DEEP=1`). `rotation` without numbers runs only the rotation bounds; `VARIANT`
//! is a [`boarding_model::rotation::Variant`] name (`Boarding` unless given).

use std::time::Instant;

use boarding_model::rotation::{self, RotationModel};
use boarding_model::{BoardingModel, Variant, bounds};
use stateright::{Checker, Expectation, Model};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let failed = match args.first().map(String::as_str) {
        Some("rotation") => rotation_checks(&args[1..]),
        Some(_) => join_checks(&args),
        None => join_checks(&[]) | rotation_checks(&[]),
    };
    if failed {
        std::process::exit(1);
    }
}

fn numbers(args: &[String]) -> Vec<usize> {
    args.iter().map(|a| a.parse().expect("numeric arguments")).collect()
}

fn small(n: usize) -> u8 {
    u8::try_from(n).expect("a small bound")
}

/// Whether the property's verdict is the expected one.
fn verdict(expectation: &Expectation, found: bool) -> bool {
    match expectation {
        Expectation::Always | Expectation::Eventually => !found,
        Expectation::Sometimes => found,
    }
}

fn join_checks(args: &[String]) -> bool {
    let args = numbers(args);
    let threads = args.get(3).copied().unwrap_or(2);
    let runs = match args.as_slice() {
        [a, t, c, ..] => vec![(*a, small(*t), small(*c))],
        _ => bounds(),
    };
    let mut failed = false;
    for (agents, attempts, sessions) in runs {
        let model = BoardingModel::new(Variant::Boarding, agents, attempts, sessions);
        let properties = model.properties();
        let start = Instant::now();
        let checker = model.check(threads);
        println!(
            "{agents} agent(s) x {attempts} attempt(s), {sessions} connections: {} unique states, \
             {} generated, max depth {}, {:.1?} on {threads} thread(s)",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            start.elapsed()
        );
        for p in properties {
            let ok = verdict(&p.expectation, checker.discovery(p.name).is_some());
            let not_applicable = p.name.starts_with("retry") && attempts < 2;
            failed |= !(ok || not_applicable);
            println!("  {:<40} {:?}: {}", p.name, p.expectation, if ok { "ok" } else { "NOT OK" });
        }
    }
    failed
}

fn rotation_checks(args: &[String]) -> bool {
    let variant = match args.get(6).map(String::as_str) {
        None | Some("Boarding") => rotation::Variant::Boarding,
        Some("StaleAccept") => rotation::Variant::StaleAccept,
        Some("NoFence") => rotation::Variant::NoFence,
        Some("UncheckedFinish") => rotation::Variant::UncheckedFinish,
        Some("AgentPersistsAfterFinished") => rotation::Variant::AgentPersistsAfterFinished,
        Some("GatewayForgetsOld") => rotation::Variant::GatewayForgetsOld,
        Some("AlarmOnHello") => rotation::Variant::AlarmOnHello,
        Some(other) => panic!("unknown variant {other}"),
    };
    let numeric = numbers(&args[..args.len().min(6)]);
    let threads = numeric.get(4).copied().unwrap_or(2);
    let runs = match numeric.as_slice() {
        [o, t, s, f, rest @ ..] => {
            let model = RotationModel::new(variant, small(*o), small(*t), small(*s), small(*f));
            vec![match rest.get(1) {
                Some(kept) => model.with_retired_kept(small(*kept)),
                None => model,
            }]
        }
        _ => rotation::bounds(),
    };
    let mut failed = false;
    for model in runs {
        let properties = model.properties();
        let described = model.describe();
        let start = Instant::now();
        let checker = model.check(threads);
        println!(
            "rotation: {described}: {} unique states, {} generated, max depth {}, {:.1?} on {threads} thread(s)",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            start.elapsed()
        );
        for p in properties {
            let found = checker.discovery(p.name);
            let ok = verdict(&p.expectation, found.is_some());
            failed |= !ok;
            let witness = match (&p.expectation, found) {
                (Expectation::Sometimes, Some(path)) => format!(" (a path of {} steps)", path.into_actions().len()),
                _ => String::new(),
            };
            println!("  {:<55} {:?}: {}{witness}", p.name, p.expectation, if ok { "ok" } else { "NOT OK" });
        }
    }
    failed
}
