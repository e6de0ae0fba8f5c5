//! Prints the trace of a short Raft run: `cargo run -p concord-sim --example trace -- SEED`.
fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let options = concord_sim::SimOptions {
        seed,
        duration: 3_000_000_000,
        ops: 20,
        trace: true,
        ..Default::default()
    };
    match concord_sim::run(&options) {
        Ok(report) => {
            for line in &report.trace {
                println!("{line}");
            }
            println!("{}", report.replay);
        }
        Err(error) => eprintln!("error: {error}"),
    }
}
