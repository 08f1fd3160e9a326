//! Learned source order: how each registry and mirror behaved in recent runs, kept in the
//! cache directory (`<cache-dir>/source-health.json`), and the order the next run tries them
//! in.
//!
//! The prefetch describes what each source did as [`Sample`]s (one per request, pull attempt
//! and image served); after each prefetch, [`HealthStore::record`] sums them into one
//! [`RunSample`] per source that was tried: requests and pull attempts, how many failed for reasons of availability
//! ([`counts_against`]: connection faults, timeouts, 5xx, 429, token fetches, DNS; not "this
//! tag does not exist"), the images it served, the median time of its successful pulls.
//! Each source keeps its last [`MAX_SAMPLES`] runs and a summary for people reading the file
//! (success rate, median latency, last failure class and time).
//!
//! [`order_sources`] then orders a registry's sources for the next run: a source whose last
//! run was failing ([`HealthPolicy::failing_share`] of its requests or any whole pull) goes
//! last while that failure is recent ([`HealthPolicy::demote_for`]), and when one does, a
//! mirror that was healthy in its last run goes first. Every source stays in the list, so
//! the prefetch still falls back through all of them. A demoted source returns to its
//! configured place after a run in which it was healthy, or when its failure is old.
//! Without a store (no cache directory) the order is the configured one. Each decision says
//! why ([`OrderDecision::reason`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::endpoint::Source;
use crate::retry::ErrorClass;
use crate::text;

/// The file in the cache directory.
pub const HEALTH_FILE: &str = "source-health.json";
/// Bumped on an incompatible change of the file; a file of another version is ignored.
pub const HEALTH_VERSION: u32 = 1;
/// Runs kept per source.
pub const MAX_SAMPLES: usize = 20;

/// When a source counts as failing, and for how long that moves it to the back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// A run in which at least this share of a source's requests (or pull attempts, for
    /// direct pulls) failed is a failing run. Any failed whole pull is too.
    pub failing_share: f64,
    /// A failing source goes last for this long after its failure (unless a later run shows
    /// it healthy): then it gets its configured place back, to be tried again.
    pub demote_for: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failing_share: 0.1,
            demote_for: Duration::from_secs(6 * 3600),
        }
    }
}

/// Whether a failure of this class says something about the source's availability. "Not
/// found", "denied" or a bad reference are answers, not outages.
pub fn counts_against(class: ErrorClass) -> bool {
    class.is_transient() || class == ErrorClass::DnsNotFound
}

/// One thing a source did in a run, as the prefetch saw it: what the store learns from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The source's label (`registry-1.docker.io`, `mirror.example.com/hub`).
    pub source: String,
    pub outcome: Outcome,
}

/// What one [`Sample`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A registry request through the relay (every try): `None` when it succeeded, else the
    /// class of its failure.
    Request(Option<ErrorClass>),
    /// A whole pull attempt: `Ok` with the time it took, or the class of its failure.
    Pull(Result<u64, ErrorClass>),
    /// An image the source served.
    Served,
}

impl Sample {
    pub fn request(source: &str, failure: Option<ErrorClass>) -> Sample {
        Sample::new(source, Outcome::Request(failure))
    }

    pub fn pull(source: &str, outcome: Result<u64, ErrorClass>) -> Sample {
        Sample::new(source, Outcome::Pull(outcome))
    }

    pub fn served(source: &str) -> Sample {
        Sample::new(source, Outcome::Served)
    }

    fn new(source: &str, outcome: Outcome) -> Sample {
        Sample {
            source: source.to_string(),
            outcome,
        }
    }
}

/// What one source did in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSample {
    /// When the run's prefetch ended (milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// Registry requests sent through the relay (every try), and how many failed for a
    /// reason that [`counts_against`] the source.
    pub requests: u64,
    pub failed_requests: u64,
    /// Whole pull attempts, and how many failed for such a reason.
    pub pulls: u64,
    pub failed_pulls: u64,
    /// Images it served.
    pub served: u64,
    /// The median time of its successful pulls in the run.
    pub latency_ms: Option<u64>,
    /// The class of its most frequent failure in the run.
    pub failure_class: Option<ErrorClass>,
}

impl RunSample {
    /// Tries and failures: requests when the relay recorded them, else pull attempts.
    fn tries(&self) -> (u64, u64) {
        if self.requests > 0 {
            (self.requests, self.failed_requests)
        } else {
            (self.pulls, self.failed_pulls)
        }
    }

    /// Whether this run counts as failing under `policy`.
    pub fn failing(&self, policy: &HealthPolicy) -> bool {
        let (tries, failed) = self.tries();
        self.failed_pulls > 0
            || (failed > 0 && failed as f64 >= policy.failing_share * tries as f64)
    }

    /// `6 of 14 requests failed (eof)`.
    fn failures_text(&self) -> String {
        let (tries, failed) = self.tries();
        let unit = if self.requests > 0 {
            "requests"
        } else {
            "pull attempts"
        };
        let class = self
            .failure_class
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        format!("{failed} of {tries} {unit} failed{class}")
    }
}

/// One source's history and its summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    /// Successful tries (requests, or pull attempts) over all tries in the kept runs.
    pub success_rate: f64,
    /// The median of the kept runs' median pull times.
    pub median_latency_ms: Option<u64>,
    pub last_failure_class: Option<ErrorClass>,
    pub last_failure_at_ms: Option<u64>,
    pub last_success_at_ms: Option<u64>,
    /// The last runs, oldest first (at most [`MAX_SAMPLES`]).
    pub runs: Vec<RunSample>,
}

impl SourceHealth {
    fn push(&mut self, sample: RunSample) {
        if sample.failed_requests + sample.failed_pulls > 0 {
            self.last_failure_class = sample.failure_class.or(self.last_failure_class);
            self.last_failure_at_ms = Some(sample.at_ms);
        }
        if sample.served > 0 || sample.requests > sample.failed_requests {
            self.last_success_at_ms = Some(sample.at_ms);
        }
        self.runs.push(sample);
        let excess = self.runs.len().saturating_sub(MAX_SAMPLES);
        self.runs.drain(..excess);
        let (tries, failed) = self
            .runs
            .iter()
            .map(RunSample::tries)
            .fold((0, 0), |(t, f), (t2, f2)| (t + t2, f + f2));
        self.success_rate = if tries == 0 {
            1.0
        } else {
            1.0 - failed as f64 / tries as f64
        };
        self.median_latency_ms = median(self.runs.iter().filter_map(|r| r.latency_ms).collect());
    }

    /// The last run, when there is one.
    pub fn last(&self) -> Option<&RunSample> {
        self.runs.last()
    }
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

/// A problem with the health file. Never fatal: without it the order is the configured one.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot read the source health file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the source health file {path} is not usable ({reason}); it will be rewritten")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the source health file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every source's health, as kept in `<cache-dir>/source-health.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStore {
    pub version: u32,
    /// By source label (`registry-1.docker.io`, `mirror.example.com/hub`).
    pub sources: BTreeMap<String, SourceHealth>,
    #[serde(skip)]
    pub policy: HealthPolicy,
}

impl Default for HealthStore {
    fn default() -> Self {
        HealthStore {
            version: HEALTH_VERSION,
            sources: BTreeMap::new(),
            policy: HealthPolicy::default(),
        }
    }
}

impl HealthStore {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(HEALTH_FILE)
    }

    /// Reads the store from `dir`; an absent file is an empty store.
    pub fn load(dir: &Path) -> Result<HealthStore, HealthError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(HealthStore::default());
            }
            Err(source) => return Err(HealthError::Read { path, source }),
        };
        let store: HealthStore =
            serde_json::from_str(&text).map_err(|err| HealthError::Corrupt {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        if store.version != HEALTH_VERSION {
            return Err(HealthError::Corrupt {
                path,
                reason: format!(
                    "format version {}, this is version {HEALTH_VERSION}",
                    store.version
                ),
            });
        }
        Ok(store)
    }

    /// Writes the store to `dir` (created if needed), atomically: a reader never sees half a
    /// file. Two runs sharing the directory at once: the last to finish wins.
    pub fn save(&self, dir: &Path) -> Result<(), HealthError> {
        let path = Self::path(dir);
        let write = |source| HealthError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write)?;
        let text =
            serde_json::to_string_pretty(self).map_err(|e| write(std::io::Error::other(e)))?;
        let tmp = dir.join(format!(".{HEALTH_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(|err| {
            let _ = std::fs::remove_file(&tmp);
            write(err)
        })
    }

    /// Reads the store in `dir`, adds the run's samples, writes it back. What to call after a
    /// prefetch. A corrupt file is replaced; the error says so.
    pub fn update(dir: &Path, samples: &[Sample], now_ms: u64) -> Result<(), HealthError> {
        let (mut store, problem) = match HealthStore::load(dir) {
            Ok(store) => (store, None),
            Err(err @ HealthError::Corrupt { .. }) => (HealthStore::default(), Some(err)),
            Err(err) => return Err(err),
        };
        store.record(samples, now_ms);
        store.save(dir)?;
        problem.map_or(Ok(()), Err)
    }

    /// Adds one run sample per source the prefetch tried.
    pub fn record(&mut self, samples: &[Sample], now_ms: u64) {
        for (label, sample) in run_samples(samples, now_ms) {
            self.sources.entry(label).or_default().push(sample);
        }
    }

    /// Where this source stands for ordering.
    fn standing(&self, label: &str, now_ms: u64) -> Standing<'_> {
        let Some(last) = self.sources.get(label).and_then(SourceHealth::last) else {
            return Standing::Unknown;
        };
        let age = Duration::from_millis(now_ms.saturating_sub(last.at_ms));
        if last.failing(&self.policy) && age < self.policy.demote_for {
            Standing::Failing(last)
        } else if last.failing(&self.policy) {
            Standing::Unknown
        } else {
            Standing::Healthy(last)
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Standing<'a> {
    Healthy(&'a RunSample),
    Unknown,
    Failing(&'a RunSample),
}

impl Standing<'_> {
    fn tier(self) -> u8 {
        match self {
            Standing::Healthy(_) => 0,
            Standing::Unknown => 1,
            Standing::Failing(_) => 2,
        }
    }
}

/// Each tried source's sample of one prefetch. The failure class of a source is that of its
/// requests when the relay recorded any, else that of its pull attempts.
fn run_samples(samples: &[Sample], now_ms: u64) -> BTreeMap<String, RunSample> {
    let mut out: BTreeMap<String, RunSample> = BTreeMap::new();
    let mut request_classes: BTreeMap<String, BTreeMap<ErrorClass, u64>> = BTreeMap::new();
    let mut pull_classes: BTreeMap<String, BTreeMap<ErrorClass, u64>> = BTreeMap::new();
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let count = |classes: &mut BTreeMap<String, BTreeMap<ErrorClass, u64>>, source: &str, class| {
        *classes
            .entry(source.to_string())
            .or_default()
            .entry(class)
            .or_default() += 1;
    };
    for sample in samples {
        let source = sample.source.as_str();
        let s = out.entry(sample.source.clone()).or_default();
        match sample.outcome {
            Outcome::Request(failure) => {
                s.requests += 1;
                if let Some(class) = failure.filter(|c| counts_against(*c)) {
                    s.failed_requests += 1;
                    count(&mut request_classes, source, class);
                }
            }
            Outcome::Pull(Ok(latency_ms)) => {
                s.pulls += 1;
                latencies
                    .entry(sample.source.clone())
                    .or_default()
                    .push(latency_ms);
            }
            Outcome::Pull(Err(class)) => {
                s.pulls += 1;
                if counts_against(class) {
                    s.failed_pulls += 1;
                    count(&mut pull_classes, source, class);
                }
            }
            Outcome::Served => s.served += 1,
        }
    }
    for (label, sample) in &mut out {
        sample.at_ms = now_ms;
        sample.latency_ms = latencies.remove(label).and_then(median);
        let classes = if sample.requests > 0 {
            request_classes.get(label)
        } else {
            pull_classes.get(label)
        };
        sample.failure_class = classes.and_then(|c| {
            c.iter()
                .max_by_key(|(class, n)| (**n, std::cmp::Reverse(**class)))
                .map(|(class, _)| *class)
        });
    }
    out
}

/// The order one registry's sources were tried in, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDecision {
    /// The registry (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The sources in the order used.
    pub order: Vec<String>,
    /// The order the configuration gives (origin then mirrors, or mirrors first).
    pub configured: Vec<String>,
    /// Whether source health changed the configured order.
    pub learned: bool,
    pub reason: String,
}

/// Orders `configured` (one registry's sources in their configured order) by the health in
/// `store` at `now_ms`; the configured order without a store. Never drops a source. This is
/// what the prefetch calls for each registry before trying its sources.
pub fn order_sources(
    registry: &str,
    configured: Vec<Source>,
    store: Option<&HealthStore>,
    now_ms: u64,
) -> (Vec<Source>, OrderDecision) {
    let labels: Vec<String> = configured.iter().map(Source::label).collect();
    let decision = |order: &[Source], learned: bool, reason: String| OrderDecision {
        registry: registry.to_string(),
        order: order.iter().map(Source::label).collect(),
        configured: labels.clone(),
        learned,
        reason,
    };
    let Some(store) = store else {
        let reason = "configured order (no cache directory, so no source health)".to_string();
        let d = decision(&configured, false, reason);
        return (configured, d);
    };
    let standings: Vec<Standing> = labels.iter().map(|l| store.standing(l, now_ms)).collect();
    if !standings.iter().any(|s| matches!(s, Standing::Failing(_))) {
        let reason = if standings.iter().all(|s| matches!(s, Standing::Unknown)) {
            "configured order (no health history for these sources yet)"
        } else {
            "configured order (no source failed in its last run)"
        };
        let d = decision(&configured, false, reason.to_string());
        return (configured, d);
    }
    // Healthy, then unknown, then failing (the least recent failure first); stable within.
    let mut ranked: Vec<(usize, Source)> = configured.into_iter().enumerate().collect();
    ranked.sort_by_key(|(i, _)| {
        let standing = standings[*i];
        let failed_at = match standing {
            Standing::Failing(s) => s.at_ms,
            _ => 0,
        };
        (standing.tier(), failed_at, *i)
    });
    let order: Vec<Source> = ranked.iter().map(|(_, s)| s.clone()).collect();
    let learned = order.iter().map(Source::label).collect::<Vec<_>>() != labels;
    let mut parts = Vec::new();
    if let Some((i, first)) = ranked.first().filter(|(i, _)| *i != 0) {
        parts.push(match standings[*i] {
            Standing::Healthy(s) => format!(
                "{} first: healthy in its last run{}",
                first.label(),
                s.latency_ms
                    .map(|ms| format!(" (median pull {})", text::duration(ms)))
                    .unwrap_or_default()
            ),
            _ => format!("{} first: no failure on record", first.label()),
        });
    }
    for (i, source) in &ranked {
        if let Standing::Failing(s) = standings[*i] {
            parts.push(format!(
                "{} last: {} in its last run, {} ago",
                source.label(),
                s.failures_text(),
                text::duration(now_ms.saturating_sub(s.at_ms))
            ));
        }
    }
    let reason = if learned {
        format!("learned from source health: {}", parts.join("; "))
    } else {
        format!("configured order (already last: {})", parts.join("; "))
    };
    let d = decision(&order, learned, reason);
    (order, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    const HUB: &str = "registry-1.docker.io";
    const MIRROR: &str = "mirror.example.com";
    const MINUTE: u64 = 60_000;

    /// The origin dropped 6 of 14 requests; one image fell back to the mirror (the origin's
    /// pull failed, the mirror's took 300 ms), the other came from the origin in 200 ms.
    fn bad_origin_run() -> Vec<Sample> {
        let mut samples: Vec<Sample> = (0..14)
            .map(|i| Sample::request(HUB, (i < 6).then_some(ErrorClass::Eof)))
            .collect();
        samples.extend([
            Sample::request(MIRROR, None),
            Sample::pull(HUB, Ok(200)),
            Sample::served(HUB),
            Sample::pull(HUB, Err(ErrorClass::Eof)),
            Sample::pull(MIRROR, Ok(300)),
            Sample::served(MIRROR),
        ]);
        samples
    }

    fn healthy_run(source: &str) -> Vec<Sample> {
        vec![
            Sample::request(source, None),
            Sample::request(source, None),
            Sample::pull(source, Ok(100)),
            Sample::served(source),
        ]
    }

    fn sources() -> Vec<Source> {
        vec![Source::parse(HUB), Source::parse(MIRROR)]
    }

    fn order(store: Option<&HealthStore>, now: u64) -> (Vec<String>, OrderDecision) {
        let (order, d) = order_sources("docker.io", sources(), store, now);
        (order.iter().map(Source::label).collect(), d)
    }

    #[test]
    fn samples_count_requests_pulls_failures_and_latency() {
        let s = run_samples(&bad_origin_run(), 42);
        let hub = &s[HUB];
        assert_eq!((hub.requests, hub.failed_requests), (14, 6));
        assert_eq!((hub.pulls, hub.failed_pulls, hub.served), (2, 1, 1));
        assert_eq!(hub.failure_class, Some(ErrorClass::Eof));
        assert_eq!(hub.latency_ms, Some(200));
        assert_eq!(hub.at_ms, 42);
        let mirror = &s[MIRROR];
        assert_eq!(
            (mirror.requests, mirror.failed_requests, mirror.served),
            (1, 0, 1)
        );
        assert_eq!(mirror.latency_ms, Some(300));
        assert!(hub.failing(&HealthPolicy::default()));
        assert!(!mirror.failing(&HealthPolicy::default()));
    }

    #[test]
    fn answers_that_are_not_outages_do_not_count_against_a_source() {
        let r = [
            Sample::request(HUB, Some(ErrorClass::ManifestUnknown)),
            Sample::request(HUB, Some(ErrorClass::Unauthorized)),
            Sample::request(HUB, None),
        ];
        let s = &run_samples(&r, 1)[HUB];
        assert_eq!(s.failed_requests, 0);
        assert!(!s.failing(&HealthPolicy::default()));
        for class in [
            ErrorClass::Eof,
            ErrorClass::RateLimited,
            ErrorClass::DnsNotFound,
            ErrorClass::TokenFetch,
        ] {
            assert!(counts_against(class), "{class}");
        }
    }

    #[test]
    fn without_requests_the_failure_class_comes_from_the_pull_attempts() {
        let direct = [
            Sample::pull(HUB, Err(ErrorClass::Timeout)),
            Sample::pull(HUB, Err(ErrorClass::Timeout)),
            Sample::pull(HUB, Err(ErrorClass::ManifestUnknown)),
            Sample::pull(HUB, Ok(50)),
        ];
        let s = &run_samples(&direct, 1)[HUB];
        assert_eq!((s.requests, s.pulls, s.failed_pulls), (0, 4, 2));
        assert_eq!(s.failure_class, Some(ErrorClass::Timeout));
        // With requests recorded, their class wins over the pulls'.
        let mut relayed = direct.to_vec();
        relayed.push(Sample::request(HUB, Some(ErrorClass::Eof)));
        let s = &run_samples(&relayed, 1)[HUB];
        assert_eq!(s.failure_class, Some(ErrorClass::Eof));
    }

    #[test]
    fn one_failure_in_many_requests_is_not_a_failing_run() {
        let mut samples: Vec<Sample> = (0..30).map(|_| Sample::request(HUB, None)).collect();
        samples.push(Sample::request(HUB, Some(ErrorClass::Eof)));
        let s = &run_samples(&samples, 1)[HUB];
        assert!(!s.failing(&HealthPolicy::default()));
    }

    #[test]
    fn without_a_store_the_order_is_the_configured_one() {
        let (labels, d) = order(None, 0);
        assert_eq!(labels, [HUB, MIRROR]);
        assert!(!d.learned);
        assert!(d.reason.contains("no cache directory"), "{}", d.reason);
        let empty = HealthStore::default();
        let (labels, d) = order(Some(&empty), 0);
        assert_eq!(labels, [HUB, MIRROR]);
        assert!(d.reason.contains("no health history"), "{}", d.reason);
    }

    #[test]
    fn a_source_that_failed_recently_goes_last_and_a_healthy_mirror_first() {
        let mut store = HealthStore::default();
        store.record(&bad_origin_run(), 10 * MINUTE);
        let (labels, d) = order(Some(&store), 13 * MINUTE);
        assert_eq!(labels, [MIRROR, HUB]);
        assert!(d.learned);
        assert_eq!(d.configured, [HUB, MIRROR]);
        assert_eq!(
            d.reason,
            "learned from source health: mirror.example.com first: healthy in its last run (median pull 300ms); \
             registry-1.docker.io last: 6 of 14 requests failed (eof) in its last run, 3m 00s ago"
        );
    }

    #[test]
    fn a_demoted_source_returns_after_a_healthy_run_or_when_its_failure_is_old() {
        let mut store = HealthStore::default();
        store.record(&bad_origin_run(), 10 * MINUTE);
        // Old failure: the origin gets its place back, to be tried again.
        let later = 10 * MINUTE + HealthPolicy::default().demote_for.as_millis() as u64;
        assert_eq!(order(Some(&store), later).0, [HUB, MIRROR]);
        // A healthy run: back in front at once.
        store.record(&healthy_run(HUB), 20 * MINUTE);
        let (labels, d) = order(Some(&store), 21 * MINUTE);
        assert_eq!(labels, [HUB, MIRROR]);
        assert!(!d.learned);
        assert!(d.reason.contains("no source failed"), "{}", d.reason);
    }

    #[test]
    fn healthy_mirrors_go_before_unknown_ones_when_a_source_fails() {
        let mut store = HealthStore::default();
        store.record(&bad_origin_run(), MINUTE);
        let configured = vec![
            Source::parse(HUB),
            Source::parse("unknown.example.com"),
            Source::parse(MIRROR),
        ];
        let (order, d) = order_sources("docker.io", configured, Some(&store), 2 * MINUTE);
        let labels: Vec<String> = order.iter().map(Source::label).collect();
        assert_eq!(labels, [MIRROR, "unknown.example.com", HUB]);
        assert_eq!(d.order, labels);
    }

    #[test]
    fn a_failing_source_already_last_keeps_the_configured_order() {
        let mut store = HealthStore::default();
        // The mirror failed; it is last already.
        let r = [Sample::request(MIRROR, Some(ErrorClass::ConnectionRefused))];
        store.record(&r, MINUTE);
        let (labels, d) = order(Some(&store), 2 * MINUTE);
        assert_eq!(labels, [HUB, MIRROR]);
        assert!(!d.learned);
        assert!(
            d.reason
                .starts_with("configured order (already last: mirror.example.com last"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_summary_follows_the_kept_runs() {
        let mut store = HealthStore::default();
        for i in 0..(MAX_SAMPLES as u64 + 5) {
            store.record(&healthy_run(HUB), i);
        }
        store.record(&bad_origin_run(), 1_000);
        let hub = &store.sources[HUB];
        assert_eq!(hub.runs.len(), MAX_SAMPLES);
        assert_eq!(hub.last_failure_class, Some(ErrorClass::Eof));
        assert_eq!(hub.last_failure_at_ms, Some(1_000));
        assert_eq!(hub.last_success_at_ms, Some(1_000));
        // 19 healthy runs of 2 requests, one of 14 with 6 failures.
        let expected = 1.0 - 6.0 / (19.0 * 2.0 + 14.0);
        assert!(
            (hub.success_rate - expected).abs() < 1e-9,
            "{}",
            hub.success_rate
        );
        assert_eq!(hub.median_latency_ms, Some(100));
    }

    #[test]
    fn the_store_round_trips_through_the_cache_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            HealthStore::load(dir.path()).unwrap(),
            HealthStore::default()
        );
        HealthStore::update(dir.path(), &bad_origin_run(), MINUTE).unwrap();
        let store = HealthStore::load(dir.path()).unwrap();
        assert_eq!(store.sources[HUB].runs.len(), 1);
        assert!(dir.path().join(HEALTH_FILE).is_file());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());

        // A corrupt file is reported and replaced.
        std::fs::write(dir.path().join(HEALTH_FILE), "{not json").unwrap();
        assert!(matches!(
            HealthStore::load(dir.path()),
            Err(HealthError::Corrupt { .. })
        ));
        let err = HealthStore::update(dir.path(), &healthy_run(HUB), MINUTE).unwrap_err();
        assert!(err.to_string().contains("rewritten"), "{err}");
        assert_eq!(
            HealthStore::load(dir.path()).unwrap().sources[HUB]
                .runs
                .len(),
            1
        );

        // Another version is not read.
        std::fs::write(
            dir.path().join(HEALTH_FILE),
            r#"{"version":99,"sources":{}}"#,
        )
        .unwrap();
        assert!(matches!(
            HealthStore::load(dir.path()),
            Err(HealthError::Corrupt { .. })
        ));
    }
}
