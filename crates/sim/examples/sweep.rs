//! Sweeps seeds and prints failures:
//! `cargo run --release -p concord-sim --example sweep -- FIRST COUNT [DURATION] [FAULTS] [check]`.
//! FAULTS is `all` (the default), `none` or a list like `crash,loss`. With `check`, every
//! history is also checked for linearizability.
use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::parse_duration;

// Wall-clock time is read only to report the sweep's speed; the simulation never sees it.
#[allow(clippy::disallowed_methods)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let first: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let duration = args
        .get(3)
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(10_000_000_000);
    let faults = args
        .get(4)
        .filter(|a| *a != "check")
        .map(|a| a.parse().expect("a fault list"))
        .unwrap_or(concord_sim::FaultSelection::All);
    let check = args.iter().skip(4).any(|a| a == "check");
    let options = concord_sim::SimOptions {
        duration,
        faults,
        ..Default::default()
    };
    if check {
        for seed in first..first + count {
            let options = concord_sim::SimOptions {
                seed,
                ..options.clone()
            };
            let report = concord_sim::run(&options).expect("valid options");
            let budget = Some(std::time::Duration::from_secs(10));
            let verdict =
                check_linearizability(&report.history, &RegisterModel, budget).map(|r| r.verdict);
            match verdict {
                Ok(Verdict::Linearizable) => {}
                other => println!("seed {seed}: {other:?}\n  replay: {}", report.replay),
            }
        }
        println!("checked {count} histories");
        return;
    }
    let started = std::time::Instant::now();
    let report = concord_sim::sweep(&options, first..first + count, |_| {}).expect("valid options");
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} seeds, {} failures, {} not converged {:?}, {} events, {:.1}s simulated in {:.2}s wall ({:.0}x), {} ok ops",
        report.seeds_run,
        report.failures.len(),
        report.not_converged.len(),
        report.not_converged,
        report.events,
        report.simulated_time as f64 / 1e9,
        wall,
        report.simulated_time as f64 / 1e9 / wall,
        report.operations_ok
    );
    for failure in &report.failures {
        println!(
            "seed {}: {}\n  replay: {}",
            failure.seed, failure.reason, failure.replay
        );
    }
}
