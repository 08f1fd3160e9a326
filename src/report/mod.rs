//! One result model for a run ([`Report`]; its JSON form is versioned: [`REPORT_VERSION`]),
//! its views ([`views`]: step summary, workflow commands, outputs, PR comment, terminal,
//! JSON), the live progress of a run ([`progress`]) and the [`Publisher`] that delivers them.

pub mod diagnosis;
pub mod merge;
pub mod progress;
pub mod publish;
pub mod views;
pub mod workflow;

pub use publish::{PublishContext, Published, Publisher, publish};
pub use views::{annotations, github, outputs, summary, terminal};
// Moved to the bottom layer; re-exported for the views that still name them here.
pub use crate::clock::{now_ms, rfc3339_ms};
pub use crate::text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::build::failure::BuildFailureClass;
use crate::prefetch::{ImageStatus, PrefetchReport};
use crate::retry::ErrorClass;

/// Bumped on any incompatible change of the JSON report.
pub const REPORT_VERSION: u32 = 1;
/// The report's file name in the output directory.
pub const REPORT_FILE: &str = "ai-infra-build-report.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub tool_version: String,
    pub run: RunMeta,
    pub totals: Totals,
    pub services: Vec<ServiceResult>,
    pub base_images: Vec<BaseImageResult>,
    pub network: NetworkStats,
    /// One line per failed attempt (pulls and builds), like a hand-kept `build_errors.log`.
    pub failure_log: Vec<FailureLogEntry>,
    /// For a merged report: the shards (`2/3`) whose report was missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_shards: Vec<String>,
    /// What went wrong on the network and what to do about it; absent when nothing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<diagnosis::Diagnosis>,
    /// Per registry: the order its sources were tried in, and why (learned from the source
    /// health kept in the cache directory, or as configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_order: Vec<crate::health::OrderDecision>,
    /// The cache directory (`--cache-dir`): mode, size, hits, evictions, warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunMeta {
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    pub command: String,
    /// The builder used (`buildx`, `engine (buildkit)`, `engine (classic)`).
    pub builder: String,
    /// The Docker daemon the run worked with (`unix:///var/run/docker.sock`,
    /// `tcp://10.0.0.5:2375`): where the prefetch pulled and where the images built went (a
    /// builder of another driver than `docker` pulls by itself and loads its images here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_host: Option<String>,
    pub engine_version: Option<String>,
    /// `relay` or `direct`.
    pub pull_via: Option<String>,
    pub repository: Option<String>,
    pub commit: Option<String>,
    pub workflow_run: Option<String>,
    /// `I/N` when this run is one shard of a matrix.
    pub shard: Option<String>,
    /// True when the run was interrupted and the results are partial.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub services: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub base_images: usize,
    pub base_images_missing: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceStatus {
    Success,
    Failed,
    /// Not built because a dependency failed (or `--fail-fast` stopped the run).
    Skipped,
    /// Cut by SIGINT/SIGTERM.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceResult {
    pub name: String,
    pub image: String,
    pub tags: Vec<String>,
    pub status: ServiceStatus,
    pub duration_ms: u64,
    pub attempts: u32,
    pub builder: String,
    /// Steps the builder reported as cached, of all steps (when the builder says).
    pub cached_steps: Option<u32>,
    pub total_steps: Option<u32>,
    /// The local image ID (the config digest).
    pub image_id: Option<String>,
    /// After a push: the registry's digest of what was pushed (manifest or index; its
    /// `Docker-Content-Digest`), as the push reported it.
    #[serde(default)]
    pub digest: Option<String>,
    pub size: Option<u64>,
    pub log_path: Option<String>,
    /// The Dockerfile, relative to the workspace.
    pub dockerfile: String,
    pub failure: Option<ServiceFailure>,
    /// Why it was skipped (`dependency failed: backend`).
    pub skipped_reason: Option<String>,
    /// The last lines of the build log.
    pub log_tail: Vec<String>,
    /// Not built: an image of the service made from the very same inputs (Dockerfile,
    /// context, build args, base images) was used as it is: the cache directory's, or the
    /// registry's (see `reused_from`).
    #[serde(default)]
    pub reused: bool,
    /// For a reused service: where its image came from (issue 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<ReusedFrom>,
}

/// Where a reused service's image came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReusedFrom {
    pub source: ReuseSource,
    /// The image it came from: `<repository>:inputs-<hex>` in the registry, the cache
    /// directory's image ID.
    pub image: String,
    /// The registry's manifest digest (registry), the image ID (cache).
    pub digest: Option<String>,
}

/// `registry` or `cache`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReuseSource {
    /// An image recorded in the registry under the same build inputs.
    Registry,
    /// The cache directory's image of the service.
    Cache,
}

impl ReuseSource {
    pub fn label(self) -> &'static str {
        match self {
            ReuseSource::Registry => "registry",
            ReuseSource::Cache => "cache",
        }
    }
}

/// How many services were built and how many reused, from where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseCounts {
    pub built: usize,
    pub registry: usize,
    pub cache: usize,
}

impl ReuseCounts {
    pub fn of(services: &[ServiceResult]) -> ReuseCounts {
        let mut counts = ReuseCounts::default();
        for s in services
            .iter()
            .filter(|s| s.status == ServiceStatus::Success)
        {
            match (s.reused, s.reused_from.as_ref().map(|r| r.source)) {
                (false, _) => counts.built += 1,
                (true, Some(ReuseSource::Registry)) => counts.registry += 1,
                (true, _) => counts.cache += 1,
            }
        }
        counts
    }

    /// `built 1 · reused (registry) 9 · reused (cache) 0`, and `nothing to build` when every
    /// service of a successful run was reused; `None` when nothing was reused.
    pub fn line(&self, totals: &Totals) -> Option<String> {
        if self.registry + self.cache == 0 {
            return None;
        }
        let mut line = format!(
            "built {} · reused (registry) {} · reused (cache) {}",
            self.built, self.registry, self.cache
        );
        if self.built == 0 && totals.succeeded == totals.services {
            line.push_str(" · nothing to build");
        }
        Some(line)
    }
}

impl ServiceResult {
    /// `reused (registry)`, `reused (cache)`, or `None` when it was not reused.
    pub fn reuse_label(&self) -> Option<String> {
        if !self.reused {
            return None;
        }
        let source = self
            .reused_from
            .as_ref()
            .map_or(ReuseSource::Cache, |r| r.source);
        Some(format!("reused ({})", source.label()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceFailure {
    pub class: BuildFailureClass,
    /// For network failures: which kind.
    pub network_class: Option<ErrorClass>,
    pub message: String,
    /// The failing line of the Dockerfile, when the builder named it.
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseImageResult {
    pub reference: String,
    /// The platform pulled from a multi-platform image; `None`: the engine's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `pulled`, `present` or `failed`.
    pub status: ImageStatus,
    /// Registry or mirror that served it (`local` when it was already present).
    pub source: Option<String>,
    pub digest: Option<String>,
    pub attempts: u32,
    pub wait_ms: u64,
    pub duration_ms: u64,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    /// Where it is referenced: `path/Dockerfile:line`.
    pub used_at: Vec<ImageUseSite>,
    /// How it was pulled: through the relay or by the daemon itself (`None`: not pulled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::prefetch::PullPath>,
    /// Why it was pulled direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_reason: Option<String>,
    /// For an image no source served: what each source asked answered last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<diagnosis::SourceAnswer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageUseSite {
    pub dockerfile: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkStats {
    /// Retries of registry requests and whole pulls.
    pub retries: usize,
    /// Base images that could not be had.
    pub failed_pulls: usize,
    /// Time spent waiting between retries.
    pub wait_ms: u64,
    /// Registry requests sent (through the relay).
    pub requests: usize,
    /// Failed requests and attempts by class.
    pub failures_by_class: BTreeMap<ErrorClass, usize>,
    /// Build retries caused by network failures inside builds.
    pub build_retries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureLogEntry {
    /// RFC 3339.
    pub at: String,
    /// The image reference or service name.
    pub subject: String,
    /// `pull`, `request` or `build`.
    pub kind: String,
    pub class: String,
    pub message: String,
}

/// Build retries caused by network failures: a service's failed attempts are logged in order,
/// one entry each, and its `n`-th failure was retried when an attempt `n + 1` was made. The
/// last failure of a service whose retries ran out (or that was cancelled while waiting) was
/// not retried (issue 17, item 15).
fn build_retries(services: &[ServiceResult], build_failures: &[FailureLogEntry]) -> usize {
    services
        .iter()
        .map(|s| {
            build_failures
                .iter()
                .filter(|f| f.kind == "build" && f.subject == s.name)
                .take(s.attempts.saturating_sub(1) as usize)
                .filter(|f| f.class.starts_with("network"))
                .count()
        })
        .sum()
}

impl Totals {
    /// Counts services by status and missing base images.
    pub fn of(services: &[ServiceResult], base_images: &[BaseImageResult]) -> Totals {
        let count = |s: ServiceStatus| services.iter().filter(|r| r.status == s).count();
        Totals {
            services: services.len(),
            succeeded: count(ServiceStatus::Success),
            failed: count(ServiceStatus::Failed),
            skipped: count(ServiceStatus::Skipped),
            cancelled: count(ServiceStatus::Cancelled),
            base_images: base_images.len(),
            base_images_missing: base_images
                .iter()
                .filter(|b| b.status == ImageStatus::Failed)
                .count(),
        }
    }
}

impl Report {
    /// A report of this version from its parts; the totals are counted here.
    pub fn assemble(
        run: RunMeta,
        services: Vec<ServiceResult>,
        base_images: Vec<BaseImageResult>,
        network: NetworkStats,
        failure_log: Vec<FailureLogEntry>,
        missing_shards: Vec<String>,
    ) -> Report {
        let totals = Totals::of(&services, &base_images);
        Report {
            version: REPORT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            run,
            totals,
            services,
            base_images,
            network,
            failure_log,
            missing_shards,
            diagnosis: None,
            source_order: Vec::new(),
            cache: None,
        }
    }

    /// Assembles a report from the prefetch and the service results.
    pub fn new(
        run: RunMeta,
        prefetch: Option<&PrefetchReport>,
        services: Vec<ServiceResult>,
        build_failures: Vec<FailureLogEntry>,
    ) -> Report {
        let mut base_images = Vec::new();
        let mut network = NetworkStats::default();
        let mut failure_log = Vec::new();
        if let Some(p) = prefetch {
            network.retries = p.total_retries();
            network.wait_ms = p.total_wait_ms();
            network.requests = p.requests.len();
            for image in &p.images {
                for a in image.attempts.iter().filter(|a| a.class.is_some()) {
                    let class = a.class.unwrap_or(ErrorClass::Other);
                    *network.failures_by_class.entry(class).or_default() += 1;
                    failure_log.push(FailureLogEntry {
                        at: rfc3339_ms(a.at_ms),
                        subject: image.reference.clone(),
                        kind: "pull".into(),
                        class: class.to_string(),
                        message: format!(
                            "{} (attempt {} via {})",
                            a.message.clone().unwrap_or_default(),
                            a.attempt,
                            a.source
                        ),
                    });
                }
                base_images.push(BaseImageResult {
                    reference: image.reference.clone(),
                    platform: image.platform.clone(),
                    status: image.status,
                    source: image.source.clone(),
                    digest: image.digest.clone(),
                    attempts: image.attempts.len() as u32,
                    wait_ms: image.wait_ms,
                    duration_ms: image.duration_ms,
                    error_class: image.error.as_ref().map(|e| e.class),
                    error: image.error.as_ref().map(|e| e.message.clone()),
                    used_at: image
                        .uses
                        .iter()
                        .map(|u| ImageUseSite {
                            dockerfile: u.dockerfile.display().to_string(),
                            line: u.line,
                        })
                        .collect(),
                    via: image.via,
                    via_reason: image.via_reason.clone(),
                    answers: if image.status == ImageStatus::Failed {
                        diagnosis::source_answers(image)
                    } else {
                        Vec::new()
                    },
                });
            }
            for r in p.requests.iter().filter(|r| r.class.is_some()) {
                let class = r.class.unwrap_or(ErrorClass::Other);
                *network.failures_by_class.entry(class).or_default() += 1;
                failure_log.push(FailureLogEntry {
                    at: rfc3339_ms(r.at_ms),
                    subject: format!("{}/{}", r.source, r.repository),
                    kind: "request".into(),
                    class: class.to_string(),
                    message: format!(
                        "{:?} request: {}",
                        r.kind,
                        r.message.clone().unwrap_or_default()
                    ),
                });
            }
            network.failed_pulls = p.failed().count();
        }
        network.build_retries = build_retries(&services, &build_failures);
        failure_log.extend(build_failures);
        failure_log.sort_by(|a, b| a.at.cmp(&b.at));
        let mut report =
            Report::assemble(run, services, base_images, network, failure_log, Vec::new());
        report.diagnosis = prefetch.and_then(diagnosis::diagnose);
        report.source_order = prefetch
            .map(|p| p.source_orders.clone())
            .unwrap_or_default();
        report
    }

    /// "9/11 succeeded".
    pub fn headline(&self) -> String {
        format!(
            "{}/{} succeeded",
            self.totals.succeeded, self.totals.services
        )
    }
}
/// What the report shows about the cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    pub dir: String,
    /// The cache key of this run, when the caller set it.
    pub key: Option<String>,
    /// A digest of the directory's content after the run (no times, no source health):
    /// equal to the restored entry's when nothing changed, so nothing needs saving.
    #[serde(default)]
    pub content_key: Option<String>,
    /// How layers were cached: `buildx-local`, `inline` or `off`.
    pub mode: String,
    /// Size of the directory after the run (and eviction).
    pub size: u64,
    pub max_size: u64,
    /// Base images served from the cache plus services that built from a cache source.
    pub hits: u32,
    /// Base images pulled although a cache was used, plus services without a cache hit.
    pub misses: u32,
    pub base_image_hits: u32,
    pub base_image_misses: u32,
    pub service_hits: u32,
    pub service_misses: u32,
    /// Per service: whether its build used the cache.
    pub services: BTreeMap<String, bool>,
    /// Bytes loaded into the daemon from archives.
    pub restored_bytes: u64,
    /// Bytes of archives written.
    pub saved_bytes: u64,
    /// Entries removed to stay under the budget, and their size.
    pub evictions: u32,
    pub evicted_bytes: u64,
    /// Archives found corrupted or truncated and discarded.
    pub discarded: u32,
    pub restore_ms: u64,
    pub save_ms: u64,
    pub warnings: Vec<String>,
}
