//! Log shipping throughput, end to end through the real binaries: a command job prints
//! 100 MiB of numbered 100-byte lines, which go job → supervisor → the sidecar's journal →
//! Watch (mTLS) → the coordinator → its SQLite store. Prints MB/s and lines/s from the
//! start of `coordinator run` to its exit, and the peak memory of the sidecar, the
//! execution's supervisor and the coordinator; then checks every line was stored once,
//! in order (read back with `coordinator logs`).
//!
//! `cargo bench -p agentfleet-e2e --bench log_shipping` (release binaries; set
//! `LOG_SHIPPING_MB` for another volume). Run as a test (`cargo test --benches`), it
//! ships 1 MiB only, as a smoke test.
use agentfleet_e2e::TestEnv;
use agentfleet_e2e::log_volume::{self, LINE_BYTES};

const DEFAULT_MB: u64 = 100;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mib = match std::env::var("LOG_SHIPPING_MB") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("LOG_SHIPPING_MB={v} is not a number of MiB")),
        Err(_) if benchmarking => DEFAULT_MB,
        Err(_) => 1,
    };
    let lines = mib * 1024 * 1024 / LINE_BYTES;
    let env = TestEnv::new("bench-log-shipping");
    let shipped = log_volume::ship(&env, lines);
    print!("{}", shipped.report());
    assert_eq!(shipped.run.code(), Some(0), "{}", shipped.run);
    let stored = &shipped.stored;
    assert_eq!(stored.first_problem, None, "{stored:?}");
    assert_eq!(
        (stored.lines, stored.bytes),
        (shipped.lines, shipped.bytes),
        "{stored:?}"
    );
    println!("all {} lines stored once, in order", stored.lines);
}
