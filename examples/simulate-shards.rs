//! How many matrix shards to use: a simulation of 200 services on N shards.
//!
//! Durations are drawn (deterministically) from the build times recorded for the bundled
//! example's services, scaled to realistic sizes; a fifth of the services hang off another
//! service (chains up to 4 deep). Each shard is one runner with `--parallel` builders plus a
//! fixed per-job overhead (runner start, checkout, binary install, prefetch).
//!
//!     cargo run --example simulate-shards [-- RECORDED_REPORT.json]
//!
//! Prints a Markdown table: N, the expected wall time (slowest shard), total runner time.

use ai_infra_build::build::graph::Graph;
use ai_infra_build::matrix::{shard, simulate_wall_time};

/// Build seconds recorded for the example's services (cold, buildx, this machine), scaled
/// ×10 to stand for real services with dependency installs.
const RECORDED: [f64; 11] = [16.0, 9.0, 14.0, 8.0, 7.0, 6.0, 4.0, 6.0, 12.0, 9.0, 11.0];
const SERVICES: usize = 200;
const PARALLEL: usize = 4;
const JOB_OVERHEAD_S: f64 = 45.0;

/// A small deterministic generator (SplitMix64), so the table is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn recorded_durations() -> Vec<f64> {
    let Some(path) = std::env::args().nth(1) else {
        return RECORDED.to_vec();
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    let durations: Vec<f64> = report["services"]
        .as_array()
        .expect("a report with services")
        .iter()
        .filter_map(|s| s["duration_ms"].as_f64())
        .filter(|d| *d > 0.0)
        .map(|d| d / 1000.0 * 10.0)
        .collect();
    if durations.is_empty() {
        RECORDED.to_vec()
    } else {
        durations
    }
}

fn main() {
    let recorded = recorded_durations();
    let mut rng = Rng(42);
    let names: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i:03}")).collect();
    let mut edges: Vec<(String, Vec<String>)> = Vec::new();
    let mut depth = vec![0usize; SERVICES];
    for i in 0..SERVICES {
        let mut deps = Vec::new();
        if i > 0 && rng.below(5) == 0 {
            let parent = rng.below(i);
            if depth[parent] < 3 {
                deps.push(names[parent].clone());
                depth[i] = depth[parent] + 1;
            }
        }
        edges.push((names[i].clone(), deps));
    }
    let graph = Graph::new(&edges).expect("the generated graph is acyclic");
    let weights: Vec<f64> = (0..SERVICES)
        .map(|_| recorded[rng.below(recorded.len())] * (0.5 + rng.below(100) as f64 / 100.0))
        .collect();
    let total: f64 = weights.iter().sum();
    println!(
        "{SERVICES} services, {:.0} build-seconds in all, {PARALLEL} builders per runner, {JOB_OVERHEAD_S:.0} s overhead per job\n",
        total
    );
    println!("| shards | expected wall time | slowest shard (services) | runner time in all |");
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 2, 3, 4, 6, 8, 12, 16] {
        let shards = shard(&graph, &weights, n);
        let times: Vec<(f64, usize)> = shards
            .iter()
            .map(|s| {
                (
                    simulate_wall_time(&graph, &weights, &s.members, PARALLEL) + JOB_OVERHEAD_S,
                    s.members.len(),
                )
            })
            .collect();
        let (wall, members) = times
            .iter()
            .copied()
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        let runner: f64 = times.iter().map(|t| t.0).sum();
        println!("| {n} | {} | {members} | {} |", mmss(wall), mmss(runner));
    }
}

fn mmss(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
