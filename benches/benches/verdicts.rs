//! Runs last in `cargo bench -p boarding-benches` (bench targets run in name order):
//! reads the estimates the criterion benches of the same run just wrote, and prints the
//! throughput, ratio and handshake tables and each target's verdict, as Markdown.

use std::path::{Path, PathBuf};

use boarding_benches::{SIZES, size_label};

/// Where criterion wrote its results: `$CRITERION_HOME`, or `<target dir>/criterion`
/// (this binary lives in `<target dir>/<profile>/deps/`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median time per iteration (nanoseconds) criterion estimated for one bench.
fn median_ns(root: &Path, group: &str, bench: &str) -> Option<f64> {
    let text = std::fs::read_to_string(root.join(group).join(bench).join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

struct Verdicts {
    met: usize,
    missed: usize,
    unknown: usize,
}

impl Verdicts {
    fn check(&mut self, target: &str, value: Option<f64>, bound: f64, at_least: bool) {
        let Some(v) = value else {
            self.unknown += 1;
            println!("| {target} | not measured in this run | - |");
            return;
        };
        let ok = if at_least { v >= bound } else { v <= bound };
        if ok {
            self.met += 1;
        } else {
            self.missed += 1;
        }
        println!("| {target} | {v:.3} | {} |", if ok { "met" } else { "MISSED" });
    }
}

fn gib_s(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns / 1.073_741_824
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(root) = criterion_dir().filter(|d| d.is_dir()) else {
        println!("verdicts: no criterion results found (run the other benches first)");
        return;
    };
    let t = |len: usize, bench: &str| median_ns(&root, &format!("throughput-{}", size_label(len)), bench);
    // For two times a and b: b / a, i.e. how many times faster a is than b (for
    // throughput), or how many times b costs a (for handshakes, read as cost(b) / cost(a)).
    let ratio = |a: Option<f64>, b: Option<f64>| Some(b? / a?);
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));

    println!("\n## Throughput (GiB/s of payload, seal + open; median)\n");
    let columns = [
        "hmac-channel",
        "hmac-channel-copy",
        "hmac-raw",
        "blake3-channel",
        "blake3-channel-copy",
        "blake3-raw",
        "snow-chachapoly",
        "rustls-aes128gcm",
    ];
    println!("| payload | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for len in SIZES {
        let cells: Vec<String> = columns.iter().map(|c| fmt(t(len, c).map(|ns| gib_s(len, ns)))).collect();
        println!("| {} | {} |", size_label(len), cells.join(" | "));
    }

    println!("\n## Ratios (throughput of the first over the second; > 1 means the first is faster)\n");
    let pairs = [
        ("hmac-channel", "hmac-raw"),
        ("hmac-channel-copy", "hmac-raw"),
        ("blake3-channel", "blake3-raw"),
        ("blake3-channel", "hmac-channel"),
        ("blake3-channel", "snow-chachapoly"),
        ("blake3-channel", "rustls-aes128gcm"),
        ("hmac-channel", "snow-chachapoly"),
        ("hmac-channel", "rustls-aes128gcm"),
    ];
    println!("| payload | {} |", pairs.iter().map(|(a, b)| format!("{a} / {b}")).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---:|".repeat(pairs.len()));
    for len in SIZES {
        let cells: Vec<String> = pairs.iter().map(|(a, b)| fmt(ratio(t(len, a), t(len, b)))).collect();
        println!("| {} | {} |", size_label(len), cells.join(" | "));
    }

    println!("\n## Handshakes (client + gateway CPU, in memory; median)\n");
    let h = |bench: &str| median_ns(&root, "handshake", bench);
    println!("| handshake | µs | ÷ its public-key bound | ÷ rustls full handshake |");
    println!("|---|---:|---:|---:|");
    let rustls = h("rustls-tls13-full");
    for (bench, bound) in [
        ("boarding-join", Some("pk-bound-join")),
        ("boarding-join-memory-driver", Some("pk-bound-join")),
        ("boarding-resume", Some("pk-bound-resume")),
        ("pk-bound-join", None),
        ("pk-bound-resume", None),
        ("pk-ed25519-sign", None),
        ("pk-ed25519-verify", None),
        ("snow-noise-xx", None),
        ("rustls-tls13-full", None),
    ] {
        let us = h(bench).map(|ns| ns / 1000.0);
        let vs_bound = bound.and_then(|b| Some(h(bench)? / h(b)?));
        let vs_rustls = ratio(rustls, h(bench));
        println!("| {bench} | {} | {} | {} |", fmt(us), fmt(vs_bound), fmt(vs_rustls));
    }

    println!("\n## Targets\n");
    println!("| target | measured | verdict |");
    println!("|---|---:|---|");
    let mut v = Verdicts { met: 0, missed: 0, unknown: 0 };
    let k1 = 1024;
    let k16 = 16 * 1024;
    v.check("HMAC channel ÷ raw HMAC at 1 KiB ≥ 0.90", ratio(t(k1, "hmac-channel"), t(k1, "hmac-raw")), 0.90, true);
    v.check("HMAC channel ÷ raw HMAC at 16 KiB ≥ 0.97", ratio(t(k16, "hmac-channel"), t(k16, "hmac-raw")), 0.97, true);
    v.check(
        "BLAKE3 channel ÷ HMAC channel at 16 KiB ≥ 3.5",
        ratio(t(k16, "blake3-channel"), t(k16, "hmac-channel")),
        3.5,
        true,
    );
    for len in SIZES.into_iter().filter(|&l| l >= 1024) {
        v.check(
            &format!("BLAKE3 channel ÷ snow at {} > 1", size_label(len)),
            ratio(t(len, "blake3-channel"), t(len, "snow-chachapoly")),
            1.0,
            true,
        );
    }
    v.check("join ÷ its public-key bound ≤ 1.25", ratio(h("pk-bound-join"), h("boarding-join")), 1.25, false);
    v.check("join ÷ rustls full handshake < 1", ratio(rustls, h("boarding-join")), 1.0, false);
    v.check("resume ÷ rustls full handshake ≤ 0.5", ratio(rustls, h("boarding-resume")), 0.5, false);
    let allocs = std::fs::read_to_string(root.join("boarding-allocations.txt")).ok();
    match allocs.as_deref().map(str::trim) {
        Some(line) => {
            let zero = line == "0";
            println!(
                "| allocations per sealed or opened frame = 0 | {line} | {} |",
                if zero { "met" } else { "MISSED" }
            );
            if zero {
                v.met += 1;
            } else {
                v.missed += 1;
            }
        }
        None => {
            v.unknown += 1;
            println!("| allocations per sealed or opened frame = 0 | not measured in this run | - |");
        }
    }
    println!("\ntargets: {} met, {} missed, {} not measured", v.met, v.missed, v.unknown);
}
