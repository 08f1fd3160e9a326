//! Fan-out over GitHub Actions matrix jobs: services grouped into shards that keep every
//! dependency chain whole, balanced by the previous run's durations (else by count).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::Graph;

/// One shard: its position (`1/3`) and its services, in plan order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shard {
    pub shard: String,
    pub index: usize,
    pub total: usize,
    /// Comma-separated, for `--only ${{ matrix.services }}`.
    pub services: String,
    #[serde(skip)]
    pub members: Vec<usize>,
    /// Expected build time from the durations given (seconds; a count when none).
    pub weight: f64,
}

/// `{"include": [...]}` for `strategy.matrix`.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub include: Vec<Shard>,
}

/// Splits the services into at most `shards` groups. Connected services (a chain and
/// everything hanging off it) always share a shard. Groups are placed heaviest first on the
/// lightest shard (LPT), so shards are balanced; empty shards are dropped.
/// `weights[i]` is service i's expected duration (1.0 each when unknown).
pub fn shard(graph: &Graph, weights: &[f64], shards: usize) -> Vec<Shard> {
    let shards = shards.max(1);
    let mut groups: Vec<(f64, Vec<usize>)> = graph
        .components()
        .into_iter()
        .map(|g| (g.iter().map(|i| weights[*i]).sum(), g))
        .collect();
    // Heaviest first; ties by first member for determinism.
    groups.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1[0].cmp(&b.1[0])));
    let mut bins: Vec<(f64, Vec<usize>)> = vec![(0.0, Vec::new()); shards];
    for (weight, members) in groups {
        let lightest = bins
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.0.cmp(&b.0)))
            .map_or(0, |(i, _)| i);
        bins[lightest].0 += weight;
        bins[lightest].1.extend(members);
    }
    let bins: Vec<(f64, Vec<usize>)> = bins.into_iter().filter(|b| !b.1.is_empty()).collect();
    let total = bins.len();
    bins.into_iter()
        .enumerate()
        .map(|(i, (weight, mut members))| {
            members.sort_unstable();
            Shard {
                shard: format!("{}/{total}", i + 1),
                index: i + 1,
                total,
                services: members
                    .iter()
                    .map(|m| graph.names[*m].as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                members,
                weight,
            }
        })
        .collect()
}

/// The number of shards for `--max-per-shard K` (by count).
pub fn shards_for_max(services: usize, max_per_shard: usize) -> usize {
    services.div_ceil(max_per_shard.max(1)).max(1)
}

/// Weights from a previous report: each service's duration in seconds; services it does not
/// know get the median of the known ones (or 1.0).
pub fn weights_from_durations(names: &[String], durations: &BTreeMap<String, f64>) -> Vec<f64> {
    let mut known: Vec<f64> = durations
        .values()
        .copied()
        .filter(|d| d.is_finite() && *d > 0.0)
        .collect();
    known.sort_by(f64::total_cmp);
    let fallback = known.get(known.len() / 2).copied().unwrap_or(1.0);
    names
        .iter()
        .map(|n| {
            durations
                .get(n)
                .copied()
                .filter(|d| d.is_finite() && *d > 0.0)
                .unwrap_or(fallback)
        })
        .collect()
}

/// Why a `--shard` value is not a shard. Each names the value as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardSpecError {
    /// No `/` in it.
    #[error("--shard {spec:?} is not I/N (e.g. 2/3)")]
    NotIOfN { spec: String },
    /// `part` (I or N) is not a whole number.
    #[error("--shard {spec:?}: {part:?} is not a number")]
    NotANumber { spec: String, part: String },
    /// I is 0 or greater than N, or N is 0.
    #[error("--shard {spec:?}: I must be between 1 and N")]
    OutOfRange {
        spec: String,
        index: usize,
        total: usize,
    },
}

/// Parses `I/N` (1-based).
pub fn parse_shard(spec: &str) -> Result<(usize, usize), ShardSpecError> {
    let (i, n) = spec
        .split_once('/')
        .ok_or_else(|| ShardSpecError::NotIOfN { spec: spec.into() })?;
    let number = |part: &str| {
        part.trim()
            .parse::<usize>()
            .map_err(|_| ShardSpecError::NotANumber {
                spec: spec.into(),
                part: part.into(),
            })
    };
    let (i, n) = (number(i)?, number(n)?);
    if n == 0 || i == 0 || i > n {
        return Err(ShardSpecError::OutOfRange {
            spec: spec.into(),
            index: i,
            total: n,
        });
    }
    Ok((i, n))
}

/// Expected wall time of building `members` on one runner with `parallel` builders: list
/// scheduling in dependency order, longest remaining path first.
pub fn simulate_wall_time(
    graph: &Graph,
    weights: &[f64],
    members: &[usize],
    parallel: usize,
) -> f64 {
    let inside = |i: &usize| members.contains(i);
    // Longest path to the end from each node (its priority).
    let order = graph.order();
    let mut tail = vec![0.0f64; graph.names.len()];
    for &i in order.iter().rev() {
        let after = (0..graph.names.len())
            .filter(|j| graph.deps[*j].contains(&i))
            .map(|j| tail[j])
            .fold(0.0, f64::max);
        tail[i] = weights[i] + after;
    }
    let mut finish: BTreeMap<usize, f64> = BTreeMap::new();
    let mut slots = vec![0.0f64; parallel.max(1)];
    let mut pending: Vec<usize> = members.to_vec();
    while !pending.is_empty() {
        // Ready: all in-shard dependencies scheduled.
        let ready: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|i| {
                graph.deps[*i]
                    .iter()
                    .filter(|d| inside(d))
                    .all(|d| finish.contains_key(d))
            })
            .collect();
        let Some(&next) = ready
            .iter()
            .max_by(|a, b| tail[**a].total_cmp(&tail[**b]).then(b.cmp(a)))
        else {
            break;
        };
        let deps_done = graph.deps[next]
            .iter()
            .filter_map(|d| finish.get(d))
            .fold(0.0, |a: f64, b| a.max(*b));
        let slot = slots
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        let start = slots[slot].max(deps_done);
        slots[slot] = start + weights[next];
        finish.insert(next, slots[slot]);
        pending.retain(|p| *p != next);
    }
    finish.values().copied().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        let services: Vec<(String, Vec<String>)> = edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect();
        Graph::new(&services).unwrap()
    }

    #[test]
    fn chains_stay_in_one_shard_and_counts_balance() {
        let g = graph(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
            ("e", &[]),
            ("f", &[]),
            ("g", &[]),
        ]);
        let shards = shard(&g, &[1.0; 7], 3);
        assert_eq!(shards.len(), 3);
        let holder = |name: &str| {
            shards
                .iter()
                .position(|s| s.services.split(',').any(|x| x == name))
                .unwrap()
        };
        assert_eq!(holder("a"), holder("b"));
        assert_eq!(holder("b"), holder("c"));
        let sizes: Vec<usize> = shards.iter().map(|s| s.members.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().all(|s| *s >= 2 && *s <= 3), "{sizes:?}");
        assert_eq!(shards[0].shard, "1/3");
    }

    #[test]
    fn durations_balance_better_than_counts() {
        let g = graph(&[("slow", &[]), ("a", &[]), ("b", &[]), ("c", &[])]);
        let w = weights_from_durations(
            &g.names,
            &BTreeMap::from([
                ("slow".to_string(), 30.0),
                ("a".into(), 10.0),
                ("b".into(), 10.0),
                ("c".into(), 10.0),
            ]),
        );
        let shards = shard(&g, &w, 2);
        let slow = shards
            .iter()
            .find(|s| s.services == "slow")
            .expect("slow alone");
        assert_eq!(slow.weight, 30.0);
    }

    #[test]
    fn more_shards_than_groups_leaves_no_empty_shard() {
        let g = graph(&[("a", &[]), ("b", &["a"])]);
        let shards = shard(&g, &[1.0, 1.0], 4);
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].shard, "1/1");
    }

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        for bad in ["0/3", "4/3", "x/3", "3", "1/0", ""] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        // The text users see (the variant says which kind of mistake it was).
        let text = |spec: &str| parse_shard(spec).unwrap_err().to_string();
        assert_eq!(text("3"), r#"--shard "3" is not I/N (e.g. 2/3)"#);
        assert_eq!(text("x/3"), r#"--shard "x/3": "x" is not a number"#);
        assert_eq!(text("4/3"), r#"--shard "4/3": I must be between 1 and N"#);
        assert!(matches!(
            parse_shard("0/3"),
            Err(ShardSpecError::OutOfRange {
                index: 0,
                total: 3,
                ..
            })
        ));
        assert_eq!(shards_for_max(24, 10), 3);
        assert_eq!(shards_for_max(0, 10), 1);
    }

    #[test]
    fn simulation_respects_dependencies_and_parallelism() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &[])]);
        let w = [2.0, 3.0, 1.0, 1.0];
        // a then b on one slot (5); c and d on the other (2).
        assert_eq!(simulate_wall_time(&g, &w, &[0, 1, 2, 3], 2), 5.0);
        assert_eq!(simulate_wall_time(&g, &w, &[0, 1, 2, 3], 1), 7.0);
        assert_eq!(simulate_wall_time(&g, &w, &[2, 3], 4), 1.0);
    }
}
