//! `report --merge`: one report from the per-shard reports of a matrix build, as if one job
//! had built everything. Shards whose report is missing are listed, never dropped silently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BaseImageResult, NetworkStats, Report, RunMeta};
use crate::prefetch::ImageStatus;

/// `I/N` of a report's run, if it was a shard.
fn shard_of(report: &Report) -> Option<(usize, usize)> {
    crate::matrix::parse_shard(report.run.shard.as_deref()?).ok()
}

/// Merges shard reports. `expected` is the number of shards (else taken from the reports'
/// own `I/N`); every shard without a report is named in `missing_shards`.
pub fn merge(reports: &[(PathBuf, Report)], expected: Option<usize>) -> Report {
    let total = expected.or_else(|| {
        reports
            .iter()
            .filter_map(|(_, r)| shard_of(r))
            .map(|(_, n)| n)
            .max()
    });
    let present: Vec<usize> = reports
        .iter()
        .filter_map(|(_, r)| shard_of(r))
        .map(|(i, _)| i)
        .collect();
    let missing_shards = total.map_or_else(Vec::new, |n| {
        (1..=n)
            .filter(|i| !present.contains(i))
            .map(|i| format!("{i}/{n}"))
            .collect()
    });

    let mut services: Vec<_> = reports
        .iter()
        .flat_map(|(_, r)| r.services.iter().cloned())
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));

    let mut images: BTreeMap<String, BaseImageResult> = BTreeMap::new();
    for image in reports.iter().flat_map(|(_, r)| r.base_images.iter()) {
        match images.get_mut(&image.reference) {
            None => {
                images.insert(image.reference.clone(), image.clone());
            }
            Some(seen) => {
                let rank = |s: ImageStatus| match s {
                    ImageStatus::Pulled => 2,
                    ImageStatus::Present => 1,
                    ImageStatus::Failed => 0,
                };
                if rank(image.status) > rank(seen.status) {
                    let (attempts, wait) = (seen.attempts, seen.wait_ms);
                    *seen = image.clone();
                    seen.attempts += attempts;
                    seen.wait_ms += wait;
                } else {
                    seen.attempts += image.attempts;
                    seen.wait_ms += image.wait_ms;
                }
                for site in &image.used_at {
                    if !seen.used_at.contains(site) {
                        seen.used_at.push(site.clone());
                    }
                }
            }
        }
    }
    let base_images: Vec<BaseImageResult> = images.into_values().collect();

    let mut network = NetworkStats::default();
    for (_, r) in reports {
        network.retries += r.network.retries;
        network.wait_ms += r.network.wait_ms;
        network.requests += r.network.requests;
        network.build_retries += r.network.build_retries;
        for (class, n) in &r.network.failures_by_class {
            *network.failures_by_class.entry(*class).or_default() += n;
        }
    }
    network.failed_pulls = base_images
        .iter()
        .filter(|b| b.status == ImageStatus::Failed)
        .count();

    let mut failure_log: Vec<_> = reports
        .iter()
        .flat_map(|(_, r)| r.failure_log.iter().cloned())
        .collect();
    failure_log.sort_by(|a, b| a.at.cmp(&b.at));

    let first = reports
        .iter()
        .map(|(_, r)| &r.run)
        .min_by(|a, b| a.started_at.cmp(&b.started_at));
    let start_ms = |run: &RunMeta| {
        chrono::DateTime::parse_from_rfc3339(&run.started_at).map_or(0, |t| t.timestamp_millis())
    };
    let begin = reports
        .iter()
        .map(|(_, r)| start_ms(&r.run))
        .min()
        .unwrap_or(0);
    let end = reports
        .iter()
        .map(|(_, r)| start_ms(&r.run) + r.run.duration_ms as i64)
        .max()
        .unwrap_or(0);
    let run = RunMeta {
        started_at: first.map(|r| r.started_at.clone()).unwrap_or_default(),
        duration_ms: (end - begin).max(0) as u64,
        command: format!("report --merge ({} reports)", reports.len()),
        builder: first.map(|r| r.builder.clone()).unwrap_or_default(),
        engine_host: first.and_then(|r| r.engine_host.clone()),
        engine_version: first.and_then(|r| r.engine_version.clone()),
        pull_via: first.and_then(|r| r.pull_via.clone()),
        repository: first.and_then(|r| r.repository.clone()),
        commit: first.and_then(|r| r.commit.clone()),
        workflow_run: first.and_then(|r| r.workflow_run.clone()),
        shard: None,
        interrupted: reports.iter().any(|(_, r)| r.run.interrupted),
    };
    let mut merged = Report::assemble(
        run,
        services,
        base_images,
        network,
        failure_log,
        missing_shards,
    );
    merged.diagnosis =
        super::diagnosis::merge(reports.iter().filter_map(|(_, r)| r.diagnosis.as_ref()));
    merged
}
