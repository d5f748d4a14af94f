//! Runs the model check at a chosen bound and prints what it explored.
//!
//! ```text
//! cargo run -p boarding-model --release --example check -- [AGENTS ATTEMPTS CONNECTIONS [THREADS]]
//! ```
//!
//! Without arguments it runs the bounds of [`boarding_model::bounds`] (the CI ones,
//! or the deep ones with `BOARDING_DEEP=1`).

use std::time::Instant;

use boarding_model::{BoardingModel, Variant, bounds};
use stateright::{Checker, Model};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let threads = args.get(3).copied().unwrap_or(2);
    let runs = match args.as_slice() {
        [a, t, c, ..] => vec![(*a, u8::try_from(*t).expect("attempts"), u8::try_from(*c).expect("connections"))],
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
            let found = checker.discovery(p.name).is_some();
            let ok = match p.expectation {
                stateright::Expectation::Always | stateright::Expectation::Eventually => !found,
                stateright::Expectation::Sometimes => found,
            };
            let not_applicable = p.name.starts_with("retry") && attempts < 2;
            failed |= !(ok || not_applicable);
            println!("  {:<40} {:?}: {}", p.name, p.expectation, if ok { "ok" } else { "NOT OK" });
        }
    }
    if failed {
        std::process::exit(1);
    }
}
