//! The run's network diagnosis: what failed where, what saved each image, and what to do.
//!
//! Built from the evidence a prefetch records (every pull attempt and every registry request
//! the relay sent, see [`PrefetchReport`]) in two steps:
//!
//! 1. [`Evidence`]: per source (registry or mirror) the requests sent and failed by request
//!    kind and by [`ErrorClass`], the pull attempts, the images it served and the time spent
//!    waiting; per image whether it was recovered by retries, recovered from a mirror after the
//!    origin failed, or lost.
//! 2. [`RULES`], the one table that turns evidence into [`Finding`]s: a plain-language cause
//!    and a concrete remediation each, most important first. The first finding is the run's
//!    root cause.
//!
//! A run without any failed request, failed attempt or lost image has no diagnosis at all.
//! Diagnoses of several runs (matrix shards) merge by adding their evidence and applying the
//! rules again ([`merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::prefetch::{ImageResult, ImageStatus, PrefetchReport};
use crate::reference::Reference;
use crate::registry::RequestKind;
use crate::retry::ErrorClass;

use super::text;
pub use crate::endpoint::SourceRole;

/// Waiting on retries at least this long (in total) gets a finding of its own.
pub const LONG_WAIT_MS: u64 = 30_000;
/// Most images named in one sentence; the rest are counted.
const MAX_NAMED: usize = 4;

/// What went wrong in a run's network, and what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Diagnosis {
    /// The most important finding, in one sentence.
    pub root_cause: String,
    /// What to do about the root cause.
    pub remediation: String,
    /// Every finding, most important first (the first is `root_cause`/`remediation`).
    pub findings: Vec<Finding>,
    /// Per registry and mirror that was tried: requests, failures, images served.
    pub sources: Vec<SourceStats>,
    pub images: ImageOutcomes,
    /// Time spent waiting between retries (requests and whole pulls).
    pub wait_ms: u64,
}

/// One conclusion of a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// The id of the rule in [`RULES`] that found it.
    pub rule: String,
    pub cause: String,
    pub remediation: String,
}

/// Requests of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    pub requests: usize,
    pub failed: usize,
}

/// What one source (a registry host, or a mirror `host[/prefix]`) did in the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceStats {
    /// `registry-1.docker.io`, `mirror.example.com/hub`.
    pub source: String,
    /// The registry it served (or was to serve) images of: `docker.io`, `ghcr.io`.
    pub registry: String,
    pub role: SourceRole,
    /// Registry requests the relay sent to it (every try counts).
    pub requests: usize,
    pub failed_requests: usize,
    pub requests_by_kind: BTreeMap<RequestKind, KindCount>,
    /// Failures by class: of its requests when they were recorded (pulls through the relay),
    /// else of the pull attempts (direct pulls).
    pub failures_by_class: BTreeMap<ErrorClass, usize>,
    pub pull_attempts: usize,
    pub failed_pull_attempts: usize,
    pub images_served: usize,
    /// Time spent waiting before retries of its requests and pulls.
    pub wait_ms: u64,
}

impl SourceStats {
    fn new(source: &str, registry: &str, role: SourceRole) -> SourceStats {
        SourceStats {
            source: source.to_string(),
            registry: registry.to_string(),
            role,
            requests: 0,
            failed_requests: 0,
            requests_by_kind: BTreeMap::new(),
            failures_by_class: BTreeMap::new(),
            pull_attempts: 0,
            failed_pull_attempts: 0,
            images_served: 0,
            wait_ms: 0,
        }
    }

    /// Failures of its requests and pulls (by class), all classes together.
    pub fn failures(&self) -> usize {
        self.failures_by_class.values().sum()
    }

    /// Whether anything it was asked succeeded.
    pub fn answered(&self) -> bool {
        self.images_served > 0
            || self.requests > self.failed_requests
            || self.pull_attempts > self.failed_pull_attempts
    }

    fn failures_of(&self, pick: impl Fn(ErrorClass) -> bool) -> usize {
        self.failures_by_class
            .iter()
            .filter(|(c, _)| pick(**c))
            .map(|(_, n)| n)
            .sum()
    }

    fn add(&mut self, other: &SourceStats) {
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        for (kind, count) in &other.requests_by_kind {
            let mine = self.requests_by_kind.entry(*kind).or_default();
            mine.requests += count.requests;
            mine.failed += count.failed;
        }
        for (class, n) in &other.failures_by_class {
            *self.failures_by_class.entry(*class).or_default() += n;
        }
        self.pull_attempts += other.pull_attempts;
        self.failed_pull_attempts += other.failed_pull_attempts;
        self.images_served += other.images_served;
        self.wait_ms += other.wait_ms;
    }
}

/// What happened to the images that needed help.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageOutcomes {
    /// Pulled from the source they were first tried on, after failed requests or attempts.
    pub recovered_by_retry: Vec<RecoveredImage>,
    /// Pulled from a mirror because the registry (or another source) failed.
    pub recovered_by_mirror: Vec<RecoveredImage>,
    /// Not had from any source.
    pub lost: Vec<LostImage>,
}

/// An image and the source that finally served it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecoveredImage {
    pub image: String,
    pub registry: String,
    pub source: String,
}

/// An image that no source served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LostImage {
    pub image: String,
    pub registry: String,
    /// The class that decides the verdict ([`verdict_class`]): "not found" when a source
    /// said so, else the last failure's.
    pub class: ErrorClass,
    /// The sources tried, in order.
    pub tried: Vec<String>,
    /// What each source that was asked answered last (empty in reports of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<SourceAnswer>,
}

/// What one source answered for an image, its last failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceAnswer {
    pub source: String,
    pub role: SourceRole,
    pub class: ErrorClass,
}

/// Per source tried for `image`, in the order first tried, the class of its last failed
/// attempt: what each source really answered.
pub fn source_answers(image: &ImageResult) -> Vec<SourceAnswer> {
    let (_, origin, _) = registry_of(&image.reference);
    let mut out: Vec<SourceAnswer> = Vec::new();
    for a in &image.attempts {
        let Some(class) = a.class else {
            continue;
        };
        match out.iter_mut().find(|x| x.source == a.source) {
            Some(x) => x.class = class,
            None => out.push(SourceAnswer {
                source: a.source.clone(),
                role: if a.source == origin {
                    SourceRole::Origin
                } else {
                    SourceRole::Mirror
                },
                class,
            }),
        }
    }
    out
}

/// The class that decides what a lost image's verdict is: a source that answered "not
/// found" outranks sources that could not be asked (DNS, refused), then a refusal, else the
/// last failure (`last`).
pub fn verdict_class(answers: &[SourceAnswer], last: ErrorClass) -> ErrorClass {
    answers
        .iter()
        .map(|a| a.class)
        .find(|c| is_not_found(*c))
        .or_else(|| answers.iter().map(|a| a.class).find(|c| is_denied(*c)))
        .unwrap_or(last)
}

/// A failure class as a person reads it (`manifest unknown`, `DNS: no such host`).
pub fn answer_phrase(class: ErrorClass) -> String {
    match class {
        ErrorClass::ManifestUnknown => "manifest unknown".into(),
        ErrorClass::NameUnknown => "repository unknown".into(),
        ErrorClass::NoMatchingPlatform => "no matching platform".into(),
        ErrorClass::InvalidReference => "invalid reference".into(),
        ErrorClass::DnsNotFound => "DNS: no such host".into(),
        ErrorClass::DnsTemporary => "DNS: temporary failure".into(),
        ErrorClass::ConnectionRefused => "connection refused".into(),
        ErrorClass::ConnectionReset => "connection reset".into(),
        ErrorClass::RateLimited => "rate limited (429)".into(),
        ErrorClass::AuthRejected => "credentials rejected".into(),
        ErrorClass::ServerError => "server error (5xx)".into(),
        other => other.to_string(),
    }
}

/// `mirror 127.0.0.1:5000: manifest unknown; origin registry-1.docker.io: DNS: no such host`.
pub fn answers_text(answers: &[SourceAnswer]) -> String {
    answers
        .iter()
        .map(|a| {
            let role = match a.role {
                SourceRole::Origin => "origin",
                SourceRole::Mirror => "mirror",
            };
            format!("{role} {}: {}", a.source, answer_phrase(a.class))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What became of an image no source served, with what each source answered: `not found on
/// any source (mirror M: manifest unknown; origin O: DNS: no such host)`. `None` without
/// answers.
pub fn lost_verdict(answers: &[SourceAnswer]) -> Option<String> {
    if answers.is_empty() {
        return None;
    }
    let classes = || answers.iter().map(|a| a.class);
    let what = if classes().any(is_not_found) {
        "not found on any source"
    } else if classes().all(is_denied) {
        "refused by every source"
    } else {
        "could not be pulled from any source"
    };
    Some(format!("{what} ({})", answers_text(answers)))
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub sources: Vec<SourceStats>,
    pub images: ImageOutcomes,
    pub wait_ms: u64,
}

/// One row of the rule table.
#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    /// When it applies, for people reading the table.
    pub when: &'static str,
    /// Applied only when no other rule found anything.
    pub fallback: bool,
    pub check: fn(&Evidence) -> Vec<Finding>,
}

/// THE rule table, most important first: a lost image outranks a flaky registry that retries
/// absorbed, which outranks waiting time.
pub const RULES: &[Rule] = &[
    Rule {
        id: "lost-dns",
        when: "no source served an image, and the last failure was a DNS failure",
        fallback: false,
        check: lost_dns,
    },
    Rule {
        id: "lost-rate-limited",
        when: "no source served an image, and the last answer was 429 / toomanyrequests",
        fallback: false,
        check: lost_rate_limited,
    },
    Rule {
        id: "lost-not-found",
        when: "no source has the image (manifest or repository unknown, no such platform)",
        fallback: false,
        check: lost_not_found,
    },
    Rule {
        id: "lost-denied",
        when: "no source served an image because access was refused (401/403)",
        fallback: false,
        check: lost_denied,
    },
    Rule {
        id: "lost-tls",
        when: "no source served an image because TLS failed (an untrusted certificate, a client certificate wanted): not retried",
        fallback: false,
        check: lost_tls,
    },
    Rule {
        id: "lost-network",
        when: "no source served an image for another reason (the retries ran out)",
        fallback: false,
        check: lost_network,
    },
    Rule {
        id: "rate-limited",
        when: "a source answered 429 / toomanyrequests",
        fallback: false,
        check: rate_limited,
    },
    Rule {
        id: "source-unresolvable",
        when: "a source's name did not resolve and it answered nothing (no lost image explains it)",
        fallback: false,
        check: source_unresolvable,
    },
    Rule {
        id: "source-down",
        when: "a source answered none of its requests (refused, timed out, cut)",
        fallback: false,
        check: source_down,
    },
    Rule {
        id: "flaky-source",
        when: "a source dropped or failed some requests (EOF, reset, timeouts, 5xx, token fetches) and answered others",
        fallback: false,
        check: flaky_source,
    },
    Rule {
        id: "long-waits",
        when: "retries waited 30 s or more in total",
        fallback: false,
        check: long_waits,
    },
    Rule {
        id: "other-failures",
        when: "failures that no other rule explains",
        fallback: true,
        check: other_failures,
    },
];

/// The diagnosis of a prefetch, or `None` when nothing failed.
pub fn diagnose(prefetch: &PrefetchReport) -> Option<Diagnosis> {
    conclude(evidence(prefetch))
}

/// Applies [`RULES`] to `evidence`; `None` when it holds no failure.
pub fn conclude(evidence: Evidence) -> Option<Diagnosis> {
    let troubled =
        evidence.sources.iter().any(|s| s.failures() > 0) || !evidence.images.lost.is_empty();
    if !troubled {
        return None;
    }
    let mut findings: Vec<Finding> = Vec::new();
    for rule in RULES.iter().filter(|r| !r.fallback) {
        findings.extend((rule.check)(&evidence));
    }
    if findings.is_empty() {
        for rule in RULES.iter().filter(|r| r.fallback) {
            findings.extend((rule.check)(&evidence));
        }
    }
    let first = findings.first().cloned()?;
    Some(Diagnosis {
        root_cause: first.cause,
        remediation: first.remediation,
        findings,
        sources: evidence.sources,
        images: evidence.images,
        wait_ms: evidence.wait_ms,
    })
}

/// One diagnosis for several runs (matrix shards): their evidence added up, the rules
/// applied again.
pub fn merge<'a>(diagnoses: impl IntoIterator<Item = &'a Diagnosis>) -> Option<Diagnosis> {
    let mut evidence = Evidence::default();
    for d in diagnoses {
        for s in &d.sources {
            match evidence
                .sources
                .iter_mut()
                .find(|e| e.source == s.source && e.registry == s.registry)
            {
                Some(mine) => mine.add(s),
                None => evidence.sources.push(s.clone()),
            }
        }
        evidence
            .images
            .recovered_by_retry
            .extend(d.images.recovered_by_retry.iter().cloned());
        evidence
            .images
            .recovered_by_mirror
            .extend(d.images.recovered_by_mirror.iter().cloned());
        evidence.images.lost.extend(d.images.lost.iter().cloned());
        evidence.wait_ms += d.wait_ms;
    }
    conclude(evidence)
}

/// The registry domain and the origin host of an image reference (`docker.io`,
/// `registry-1.docker.io`). Unparsable references stand for themselves.
fn registry_of(reference: &str) -> (String, String, String) {
    match Reference::parse(reference) {
        Ok(r) => (r.domain.clone(), r.registry_host(), r.path.clone()),
        Err(_) => (reference.to_string(), reference.to_string(), String::new()),
    }
}

/// Collects the evidence of a prefetch.
pub fn evidence(prefetch: &PrefetchReport) -> Evidence {
    // Which registry each source served, and in which role.
    let mut roles: BTreeMap<String, (String, SourceRole)> = BTreeMap::new();
    for image in &prefetch.images {
        let (domain, origin, _) = registry_of(&image.reference);
        for label in image
            .source_order
            .iter()
            .chain(image.attempts.iter().map(|a| &a.source))
        {
            let role = if *label == origin {
                SourceRole::Origin
            } else {
                SourceRole::Mirror
            };
            roles
                .entry(label.clone())
                .or_insert_with(|| (domain.clone(), role));
        }
    }
    let mut sources: Vec<SourceStats> = Vec::new();
    let index = |sources: &mut Vec<SourceStats>, label: &str| -> usize {
        if let Some(i) = sources.iter().position(|s| s.source == label) {
            return i;
        }
        let (registry, role) = roles
            .get(label)
            .cloned()
            .unwrap_or_else(|| (label.to_string(), SourceRole::Origin));
        sources.push(SourceStats::new(label, &registry, role));
        sources.len() - 1
    };
    // Every configured source, tried or not, in the order the images name them.
    for image in &prefetch.images {
        for label in &image.source_order {
            index(&mut sources, label);
        }
    }
    for r in &prefetch.requests {
        let i = index(&mut sources, &r.source);
        let s = &mut sources[i];
        s.requests += 1;
        let kind = s.requests_by_kind.entry(r.kind).or_default();
        kind.requests += 1;
        if let Some(class) = r.class {
            kind.failed += 1;
            s.failed_requests += 1;
            *s.failures_by_class.entry(class).or_default() += 1;
        }
        s.wait_ms += r.retry_wait_ms.unwrap_or(0);
    }
    for image in &prefetch.images {
        for a in &image.attempts {
            let i = index(&mut sources, &a.source);
            let s = &mut sources[i];
            s.pull_attempts += 1;
            s.wait_ms += a.wait_ms;
            if let Some(class) = a.class {
                s.failed_pull_attempts += 1;
                // Through the relay, a failed pull is the consequence of the failed requests
                // already counted; direct pulls have only their attempts to show.
                if s.requests == 0 {
                    *s.failures_by_class.entry(class).or_default() += 1;
                }
            }
        }
        if image.status == ImageStatus::Pulled
            && let Some(label) = &image.source
        {
            let i = index(&mut sources, label);
            sources[i].images_served += 1;
        }
    }
    Evidence {
        images: outcomes(prefetch, &sources),
        sources,
        wait_ms: prefetch.total_wait_ms(),
    }
}

/// Sorts each image that needed help into recovered by retry, by mirror, or lost.
fn outcomes(prefetch: &PrefetchReport, sources: &[SourceStats]) -> ImageOutcomes {
    let mut out = ImageOutcomes::default();
    let failed_at = |image: &ImageResult, path: &str, label: &str| {
        image
            .attempts
            .iter()
            .any(|a| a.source == label && a.class.is_some())
            || prefetch
                .requests
                .iter()
                .any(|r| r.source == label && r.repository == path && r.class.is_some())
    };
    for image in &prefetch.images {
        let (registry, origin, path) = registry_of(&image.reference);
        match image.status {
            ImageStatus::Present => {}
            ImageStatus::Failed => {
                let answers = source_answers(image);
                let last = image.error.as_ref().map_or(ErrorClass::Other, |e| e.class);
                out.lost.push(LostImage {
                    image: image.reference.clone(),
                    registry,
                    class: verdict_class(&answers, last),
                    tried: image.source_order.clone(),
                    answers,
                })
            }
            ImageStatus::Pulled => {
                let Some(served) = image.source.clone() else {
                    continue;
                };
                let role = sources
                    .iter()
                    .find(|s| s.source == served)
                    .map_or(SourceRole::Origin, |s| s.role);
                let others_failed = image
                    .source_order
                    .iter()
                    .filter(|label| **label != served)
                    .any(|label| failed_at(image, &path, label));
                let origin_failed = sources
                    .iter()
                    .any(|s| s.source == origin && s.failures() > 0);
                let recovered = RecoveredImage {
                    image: image.reference.clone(),
                    registry,
                    source: served.clone(),
                };
                if role == SourceRole::Mirror && (others_failed || origin_failed) {
                    out.recovered_by_mirror.push(recovered);
                } else if failed_at(image, &path, &served) {
                    out.recovered_by_retry.push(recovered);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The rules

fn is_dns(class: ErrorClass) -> bool {
    matches!(class, ErrorClass::DnsNotFound | ErrorClass::DnsTemporary)
}

fn is_not_found(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::ManifestUnknown
            | ErrorClass::NameUnknown
            | ErrorClass::InvalidReference
            | ErrorClass::NoMatchingPlatform
    )
}

/// Refused access: no credentials, too few rights, or credentials the registry rejected.
fn is_denied(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Unauthorized | ErrorClass::Denied | ErrorClass::AuthRejected
    )
}

/// Failures of a connection or a server under strain: what retries and mirrors are for.
fn is_flaky(class: ErrorClass) -> bool {
    class.is_transient() && class != ErrorClass::RateLimited && !is_dns(class)
}

/// `a, b, c and 2 more` (names in backticks).
fn names(items: &[String]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(MAX_NAMED)
        .map(|i| format!("`{i}`"))
        .collect();
    let rest = items.len().saturating_sub(MAX_NAMED);
    match (shown.len(), rest) {
        (0, _) => String::new(),
        (1, 0) => shown[0].clone(),
        (n, 0) => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
        (_, rest) => format!("{} and {rest} more", shown.join(", ")),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `eof × 6, token-fetch × 2` for the classes `pick` selects.
fn classes(s: &SourceStats, pick: impl Fn(ErrorClass) -> bool) -> String {
    s.failures_by_class
        .iter()
        .filter(|(c, _)| pick(**c))
        .map(|(c, n)| format!("{c} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lost images of which `pick` accepts the class, grouped by registry.
fn lost_by_registry(
    e: &Evidence,
    pick: impl Fn(ErrorClass) -> bool,
) -> BTreeMap<&str, Vec<&LostImage>> {
    let mut out: BTreeMap<&str, Vec<&LostImage>> = BTreeMap::new();
    for l in e.images.lost.iter().filter(|l| pick(l.class)) {
        out.entry(l.registry.as_str()).or_default().push(l);
    }
    out
}

fn image_names(lost: &[&LostImage]) -> String {
    names(&lost.iter().map(|l| l.image.clone()).collect::<Vec<_>>())
}

fn finding(rule: &str, cause: String, remediation: String) -> Finding {
    Finding {
        rule: rule.to_string(),
        cause,
        remediation,
    }
}

fn lost_dns(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, is_dns)
        .into_iter()
        .map(|(registry, lost)| {
            // Only the sources whose name did not resolve (a source that answered something
            // else is named with its answer).
            let answered = lost.iter().any(|l| !l.answers.is_empty());
            let mut hosts: Vec<String> = if answered {
                lost.iter()
                    .flat_map(|l| l.answers.iter().filter(|a| is_dns(a.class)))
                    .map(|a| a.source.clone())
                    .collect()
            } else {
                lost.iter().flat_map(|l| l.tried.clone()).collect()
            };
            hosts.sort();
            hosts.dedup();
            let mut others: Vec<SourceAnswer> = lost
                .iter()
                .flat_map(|l| l.answers.iter().filter(|a| !is_dns(a.class)).cloned())
                .collect();
            others.dedup();
            let others = if others.is_empty() {
                String::new()
            } else {
                format!("; {}", answers_text(&others))
            };
            finding(
                "lost-dns",
                format!(
                    "no source answered for {} (DNS failure: {} did not resolve{others})",
                    image_names(&lost),
                    names(&hosts)
                ),
                format!(
                    "check the runner's DNS or proxy (HTTPS_PROXY, NO_PROXY), or add a mirror the runner can reach: `--mirror {registry}=HOST`"
                ),
            )
        })
        .collect()
}

fn lost_rate_limited(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, |c| c == ErrorClass::RateLimited)
        .into_iter()
        .map(|(registry, lost)| {
            finding(
                "lost-rate-limited",
                format!(
                    "toomanyrequests from {registry}: {} could not be pulled within the retry deadline",
                    image_names(&lost)
                ),
                format!(
                    "authenticate (`docker login`) to raise the pull limit, or add a mirror: `--mirror {registry}=HOST`"
                ),
            )
        })
        .collect()
}

fn lost_not_found(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, is_not_found)
        .into_values()
        .map(|lost| {
            let class = lost[0].class;
            let sources: Vec<String> = lost[0].tried.clone();
            // Every source asked said "not found": it does not exist there. Some could not
            // be asked (DNS, refused): say what each answered.
            let all_said_so = lost[0].answers.iter().all(|a| is_not_found(a.class));
            let cause = match lost_verdict(&lost[0].answers) {
                Some(verdict) if !all_said_so => {
                    format!("{} {verdict}", image_names(&lost))
                }
                _ => format!(
                    "{} does not exist on {} ({class})",
                    image_names(&lost),
                    names(&sources)
                ),
            };
            finding(
                "lost-not-found",
                cause,
                "check the tag and repository name in the FROM line (and the platform); a mirror must hold the image too".to_string(),
            )
        })
        .collect()
}

fn lost_denied(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, is_denied)
        .into_iter()
        .map(|(registry, lost)| {
            let rejected = lost.iter().any(|l| l.class == ErrorClass::AuthRejected);
            finding(
                "lost-denied",
                if rejected {
                    format!(
                        "{registry} rejected the credentials sent for {} ({}, not retried)",
                        image_names(&lost),
                        lost[0].class
                    )
                } else {
                    format!(
                        "access to {} was refused by {registry} ({})",
                        image_names(&lost),
                        lost[0].class
                    )
                },
                if rejected {
                    format!(
                        "fix the password or token where the error says it came from (`docker login {registry}` again, or the credential helper), with an account that may pull it"
                    )
                } else {
                    format!(
                        "log in before the run (`docker login {registry}`) with an account that may pull it"
                    )
                },
            )
        })
        .collect()
}

/// TLS with the registry failed: a configuration to fix on this machine, never retried.
fn lost_tls(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, |c| c == ErrorClass::TlsUntrusted)
        .into_iter()
        .map(|(registry, lost)| {
            finding(
                "lost-tls",
                format!(
                    "{} could not be pulled: TLS with {} failed ({}, not retried)",
                    image_names(&lost),
                    names(&lost[0].tried),
                    lost[0].class
                ),
                format!(
                    "add the file the error names to the registry's certs.d directory (`/etc/docker/certs.d/{registry}/` unless overridden): `ca.crt` for its CA, `client.cert` and `client.key` for a client certificate"
                ),
            )
        })
        .collect()
}

fn lost_network(e: &Evidence) -> Vec<Finding> {
    lost_by_registry(e, |c| {
        !is_dns(c)
            && !is_not_found(c)
            && !is_denied(c)
            && c != ErrorClass::RateLimited
            && c != ErrorClass::TlsUntrusted
    })
    .into_iter()
    .map(|(registry, lost)| {
        let has_mirror = lost.iter().any(|l| l.tried.len() > 1);
        finding(
            "lost-network",
            if lost[0].answers.is_empty() {
                format!(
                    "no source answered for {} ({}, after every retry on {})",
                    image_names(&lost),
                    lost[0].class,
                    names(&lost[0].tried)
                )
            } else {
                format!(
                    "no source answered for {} after every retry ({})",
                    image_names(&lost),
                    answers_text(&lost[0].answers)
                )
            },
            if has_mirror {
                "every source failed: check the network path to them (proxy, firewall), or raise `--max-retries` / `--retry-deadline`".to_string()
            } else {
                format!(
                    "add a mirror (`--mirror {registry}=HOST`), or raise `--max-retries` / `--retry-deadline`"
                )
            },
        )
    })
    .collect()
}

fn rate_limited(e: &Evidence) -> Vec<Finding> {
    e.sources
        .iter()
        .filter(|s| s.failures_of(|c| c == ErrorClass::RateLimited) > 0)
        .filter(|s| {
            // Already explained by a lost image.
            !e.images
                .lost
                .iter()
                .any(|l| l.class == ErrorClass::RateLimited && l.registry == s.registry)
        })
        .map(|s| {
            let n = s.failures_of(|c| c == ErrorClass::RateLimited);
            finding(
                "rate-limited",
                format!(
                    "toomanyrequests from {}: {} rate-limited by {} (retried after its Retry-After)",
                    s.registry,
                    plural(n, "request was", "requests were"),
                    s.source
                ),
                format!(
                    "authenticate (`docker login`) or add a mirror: `--mirror {}=HOST`",
                    s.registry
                ),
            )
        })
        .collect()
}

/// "5 images were recovered by retries, 3 from mirror X" for `registry`.
fn recoveries(e: &Evidence, registry: &str) -> Option<String> {
    let by_retry = e
        .images
        .recovered_by_retry
        .iter()
        .filter(|r| r.registry == registry)
        .count();
    let mut mirrors: BTreeMap<&str, usize> = BTreeMap::new();
    for r in e
        .images
        .recovered_by_mirror
        .iter()
        .filter(|r| r.registry == registry)
    {
        *mirrors.entry(r.source.as_str()).or_default() += 1;
    }
    let mut parts = Vec::new();
    if by_retry > 0 {
        parts.push(format!(
            "{} recovered by retries",
            plural(by_retry, "image was", "images were")
        ));
    }
    for (mirror, n) in mirrors {
        if parts.is_empty() {
            parts.push(format!(
                "{} from mirror {mirror}",
                plural(n, "image came", "images came")
            ));
        } else {
            parts.push(format!("{n} from mirror {mirror}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A configured mirror of `registry` (tried or not).
fn mirror_of<'a>(e: &'a Evidence, registry: &str) -> Option<&'a str> {
    e.sources
        .iter()
        .find(|s| s.registry == registry && s.role == SourceRole::Mirror)
        .map(|s| s.source.as_str())
}

fn mirror_saved(e: &Evidence, registry: &str) -> bool {
    e.images
        .recovered_by_mirror
        .iter()
        .any(|r| r.registry == registry)
}

fn source_unresolvable(e: &Evidence) -> Vec<Finding> {
    e.sources
        .iter()
        .filter(|s| s.failures_of(is_dns) > 0 && !s.answered())
        .filter(|s| {
            // Already explained by a lost image's verdict, which names each source's answer.
            !e.images.lost.iter().any(|l| {
                (is_dns(l.class) && l.tried.contains(&s.source))
                    || l.answers
                        .iter()
                        .any(|a| a.source == s.source && is_dns(a.class))
            })
        })
        .map(|s| {
            let saved = recoveries(e, &s.registry);
            let cause = match &saved {
                Some(saved) => format!("{} did not resolve (DNS); {saved}", s.source),
                None => format!("{} did not resolve (DNS)", s.source),
            };
            let remediation = match s.role {
                SourceRole::Origin if mirror_saved(e, &s.registry) => {
                    "set `mirror-first: true` to skip the failing lookups, or fix the runner's DNS or proxy".to_string()
                }
                SourceRole::Origin => "check the runner's DNS or proxy (HTTPS_PROXY, NO_PROXY)".to_string(),
                SourceRole::Mirror => format!(
                    "check the mirror's name (`{}`) or the runner's DNS, or remove the mirror",
                    s.source
                ),
            };
            finding("source-unresolvable", cause, remediation)
        })
        .collect()
}

fn source_down(e: &Evidence) -> Vec<Finding> {
    e.sources
        .iter()
        .filter(|s| s.failures() > 0 && !s.answered())
        .filter(|s| s.failures_of(is_dns) == 0 && s.failures_of(is_not_found) < s.failures())
        .filter(|s| {
            !e.images
                .lost
                .iter()
                .any(|l| l.tried.contains(&s.source) && !is_dns(l.class))
        })
        .map(|s| {
            let tried = if s.requests > 0 {
                plural(s.requests, "request", "requests")
            } else {
                plural(s.pull_attempts, "pull attempt", "pull attempts")
            };
            let cause = match recoveries(e, &s.registry) {
                Some(saved) => format!(
                    "{} answered none of its {tried} ({}); {saved}",
                    s.source,
                    classes(s, |_| true)
                ),
                None => format!(
                    "{} answered none of its {tried} ({})",
                    s.source,
                    classes(s, |_| true)
                ),
            };
            let remediation = match s.role {
                SourceRole::Mirror => format!(
                    "check that the mirror `{}` is running at that address, or remove it",
                    s.source
                ),
                SourceRole::Origin if mirror_saved(e, &s.registry) => {
                    "check the network path to it (firewall, proxy); meanwhile consider `mirror-first: true`".to_string()
                }
                SourceRole::Origin => match mirror_of(e, &s.registry) {
                    Some(mirror) => format!(
                        "check the network path to it (firewall, proxy); meanwhile `mirror-first: true` tries the mirror `{mirror}` first"
                    ),
                    None => format!(
                        "check the network path to it (firewall, proxy), or add a mirror: `--mirror {}=HOST`",
                        s.registry
                    ),
                },
            };
            finding("source-down", cause, remediation)
        })
        .collect()
}

fn flaky_source(e: &Evidence) -> Vec<Finding> {
    e.sources
        .iter()
        .filter(|s| s.failures_of(is_flaky) > 0 && s.answered())
        .map(|s| {
            let dropped = s.failures_of(|c| {
                matches!(c, ErrorClass::Eof | ErrorClass::ConnectionReset)
            }) * 2
                >= s.failures_of(is_flaky);
            let verb = if dropped { "dropped" } else { "failed" };
            let mut parts: Vec<String> = Vec::new();
            // Manifests first: they are what a pull needs before anything else.
            let order = [
                RequestKind::Manifest,
                RequestKind::Blob,
                RequestKind::Token,
                RequestKind::Ping,
                RequestKind::Other,
            ];
            for kind in order {
                let Some(count) = s.requests_by_kind.get(&kind).filter(|c| c.failed > 0) else {
                    continue;
                };
                parts.push(match kind {
                    // Token fetches are recorded when they fail only.
                    RequestKind::Token => plural(count.failed, "token request", "token requests"),
                    kind => format!(
                        "{} of {} {} requests",
                        count.failed,
                        count.requests,
                        kind_name(kind)
                    ),
                });
            }
            let what = if parts.is_empty() {
                format!(
                    "{} of {} pull attempts",
                    s.failed_pull_attempts, s.pull_attempts
                )
            } else {
                join_and(&parts)
            };
            let mut cause = format!("{} {verb} {what} ({})", s.source, classes(s, |_| true));
            if let Some(saved) = recoveries(e, &s.registry) {
                cause.push_str("; ");
                cause.push_str(&saved);
            }
            let remediation = match s.role {
                SourceRole::Origin if mirror_saved(e, &s.registry) => {
                    "consider `mirror-first: true` (or keep a `--cache-dir`, so the next run tries the healthy source first)".to_string()
                }
                SourceRole::Origin => match mirror_of(e, &s.registry) {
                    Some(mirror) => format!(
                        "retries absorbed it; `mirror-first: true` would try the mirror `{mirror}` first and spare them"
                    ),
                    None => format!(
                        "retries absorbed it; add a mirror (`--mirror {}=HOST`) so a worse day does not fail the build",
                        s.registry
                    ),
                },
                SourceRole::Mirror => format!(
                    "the mirror `{}` is unreliable: check it, or list a second mirror",
                    s.source
                ),
            };
            finding("flaky-source", cause, remediation)
        })
        .collect()
}

fn kind_name(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Ping => "ping",
        RequestKind::Token => "token",
        RequestKind::Manifest => "manifest",
        RequestKind::Blob => "blob",
        RequestKind::Other => "other",
    }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn long_waits(e: &Evidence) -> Vec<Finding> {
    if e.wait_ms < LONG_WAIT_MS {
        return Vec::new();
    }
    vec![finding(
        "long-waits",
        format!("retries waited {} in total", text::duration(e.wait_ms)),
        "a mirror the runner reaches reliably, tried first (`mirror-first: true`), avoids most of the waiting".to_string(),
    )]
}

fn other_failures(e: &Evidence) -> Vec<Finding> {
    let failing: Vec<&SourceStats> = e.sources.iter().filter(|s| s.failures() > 0).collect();
    if failing.is_empty() {
        return Vec::new();
    }
    let what: Vec<String> = failing
        .iter()
        .map(|s| format!("{} ({})", s.source, classes(s, |_| true)))
        .collect();
    vec![finding(
        "other-failures",
        format!(
            "some requests failed without costing an image: {}",
            join_and(&what)
        ),
        "nothing to do unless it recurs; the failure log lists every failed request".to_string(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefetch::{Attempt, ImageFailure};
    use crate::relay::RequestEvent;

    fn image(
        reference: &str,
        status: ImageStatus,
        order: &[&str],
        source: Option<&str>,
    ) -> ImageResult {
        ImageResult {
            reference: reference.to_string(),
            platform: None,
            uses: Vec::new(),
            status,
            source: source.map(str::to_string),
            digest: None,
            source_order: order.iter().map(|s| s.to_string()).collect(),
            via: None,
            via_reason: None,
            attempts: Vec::new(),
            wait_ms: 0,
            duration_ms: 10,
            error: None,
        }
    }

    fn attempt(source: &str, class: Option<ErrorClass>, retried: bool, wait_ms: u64) -> Attempt {
        Attempt {
            at_ms: 1,
            source: source.to_string(),
            attempt: 1,
            class,
            message: class.map(|c| c.to_string()),
            retried,
            wait_ms,
        }
    }

    fn request(
        source: &str,
        repository: &str,
        kind: RequestKind,
        class: Option<ErrorClass>,
    ) -> RequestEvent {
        RequestEvent {
            at_ms: 1,
            source: source.to_string(),
            repository: repository.to_string(),
            kind,
            class,
            status: None,
            message: class.map(|c| c.to_string()),
            retry_wait_ms: class.map(|_| 50),
        }
    }

    fn ok(order: &[&str], reference: &str, source: &str) -> ImageResult {
        let mut i = image(reference, ImageStatus::Pulled, order, Some(source));
        i.attempts.push(attempt(source, None, false, 0));
        i
    }

    fn lost(reference: &str, order: &[&str], class: ErrorClass) -> ImageResult {
        let mut i = image(reference, ImageStatus::Failed, order, None);
        for s in order {
            i.attempts.push(attempt(s, Some(class), false, 0));
        }
        i.error = Some(ImageFailure {
            class,
            message: class.to_string(),
        });
        i
    }

    fn report(images: Vec<ImageResult>, requests: Vec<RequestEvent>) -> PrefetchReport {
        PrefetchReport {
            via: "relay",
            via_reason: None,
            images,
            requests,
            duration_ms: 100,
            source_orders: Vec::new(),
        }
    }

    const HUB: &str = "registry-1.docker.io";
    const MIRROR: &str = "mirror.example.com";

    fn rules_of(d: &Diagnosis) -> Vec<&str> {
        d.findings.iter().map(|f| f.rule.as_str()).collect()
    }

    #[test]
    fn every_rule_has_a_test_below() {
        let source = include_str!("diagnosis.rs");
        for rule in RULES {
            let test = format!("fn rule_{}", rule.id.replace('-', "_"));
            assert!(
                source.contains(&test),
                "no test `{test}` for rule {}",
                rule.id
            );
        }
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len(), "rule ids are unique");
    }

    /// Issue 17 item 7: the root cause names what each source answered: the mirror that
    /// answered "manifest unknown" is not said to have failed DNS, in either order.
    #[test]
    fn issue17_lost_images_name_each_sources_answer() {
        let reference = "docker.io/library/ubuntu:99.99-missing";
        for order in [[HUB, MIRROR], [MIRROR, HUB]] {
            let mut i = image(reference, ImageStatus::Failed, &order, None);
            for s in order {
                let class = if s == HUB {
                    ErrorClass::DnsNotFound
                } else {
                    ErrorClass::ManifestUnknown
                };
                i.attempts.push(attempt(s, Some(class), false, 0));
            }
            let last = i.attempts.last().and_then(|a| a.class).unwrap();
            i.error = Some(ImageFailure {
                class: last,
                message: last.to_string(),
            });
            let d = diagnose(&report(vec![i], Vec::new())).unwrap();
            assert_eq!(rules_of(&d), ["lost-not-found"], "{order:?}: {d:#?}");
            assert!(
                d.root_cause.contains("not found on any source")
                    && d.root_cause
                        .contains("mirror mirror.example.com: manifest unknown")
                    && d.root_cause
                        .contains("origin registry-1.docker.io: DNS: no such host"),
                "{}",
                d.root_cause
            );
        }
        // Lost to DNS at the origin and a refused mirror: only the origin "did not resolve".
        let mut i = image(reference, ImageStatus::Failed, &[MIRROR, HUB], None);
        i.attempts.push(attempt(
            MIRROR,
            Some(ErrorClass::ConnectionRefused),
            false,
            0,
        ));
        i.attempts
            .push(attempt(HUB, Some(ErrorClass::DnsNotFound), false, 0));
        i.error = Some(ImageFailure {
            class: ErrorClass::DnsNotFound,
            message: "no such host".into(),
        });
        let d = diagnose(&report(vec![i], Vec::new())).unwrap();
        assert_eq!(rules_of(&d)[0], "lost-dns");
        assert!(
            d.root_cause
                .contains("`registry-1.docker.io` did not resolve; mirror mirror.example.com: connection refused"),
            "{}",
            d.root_cause
        );
        // Every source said "not found": it does not exist there.
        let d = diagnose(&report(
            vec![lost(reference, &[HUB, MIRROR], ErrorClass::ManifestUnknown)],
            Vec::new(),
        ))
        .unwrap();
        assert!(
            d.root_cause.contains("does not exist on"),
            "{}",
            d.root_cause
        );
    }

    #[test]
    fn a_fault_free_run_has_no_diagnosis() {
        let r = report(
            vec![
                ok(&[HUB, MIRROR], "docker.io/library/a:1", HUB),
                image(
                    "docker.io/library/b:1",
                    ImageStatus::Present,
                    &[],
                    Some("local"),
                ),
            ],
            vec![request(HUB, "library/a", RequestKind::Manifest, None)],
        );
        assert_eq!(diagnose(&r), None);
        assert_eq!(diagnose(&report(vec![], vec![])), None);
    }

    #[test]
    fn rule_flaky_source() {
        // The issue's example: EOF on manifests and token failures on Docker Hub; retries and
        // a mirror saved every image.
        let mut requests = Vec::new();
        for i in 0..14 {
            let class = (i < 6).then_some(ErrorClass::Eof);
            requests.push(request(
                HUB,
                &format!("library/r{}", i % 5),
                RequestKind::Manifest,
                class,
            ));
        }
        requests.push(request(
            HUB,
            "library/r0",
            RequestKind::Token,
            Some(ErrorClass::TokenFetch),
        ));
        requests.push(request(
            HUB,
            "library/r1",
            RequestKind::Token,
            Some(ErrorClass::TokenFetch),
        ));
        requests.push(request(MIRROR, "library/m0", RequestKind::Manifest, None));
        let mut images: Vec<ImageResult> = (0..3)
            .map(|i| ok(&[HUB, MIRROR], &format!("docker.io/library/r{i}:1"), HUB))
            .collect();
        images.push(ok(&[HUB, MIRROR], "docker.io/library/r4:1", HUB));
        let mut m = ok(&[HUB, MIRROR], "docker.io/library/m0:1", MIRROR);
        m.attempts
            .insert(0, attempt(HUB, Some(ErrorClass::Eof), false, 0));
        images.push(m);
        let d = diagnose(&report(images, requests)).expect("a diagnosis");
        assert_eq!(rules_of(&d), ["flaky-source"]);
        assert_eq!(
            d.root_cause,
            "registry-1.docker.io dropped 6 of 14 manifest requests and 2 token requests (eof × 6, token-fetch × 2); 4 images were recovered by retries, 1 from mirror mirror.example.com"
        );
        assert!(
            d.remediation.contains("mirror-first: true"),
            "{}",
            d.remediation
        );
        let hub = &d.sources[0];
        assert_eq!(
            (hub.role, hub.requests, hub.failed_requests),
            (SourceRole::Origin, 16, 8)
        );
        assert_eq!(d.sources[1].role, SourceRole::Mirror);
        assert_eq!(d.images.recovered_by_retry.len(), 4);
        assert_eq!(
            d.images.recovered_by_mirror[0].image,
            "docker.io/library/m0:1"
        );
        assert!(d.images.lost.is_empty());

        // A flaky mirror is named as such; an origin without mirrors is told to add one.
        let d = diagnose(&report(
            vec![ok(&[MIRROR, HUB], "docker.io/library/a:1", MIRROR)],
            vec![
                request(
                    MIRROR,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::ServerError),
                ),
                request(MIRROR, "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        assert!(
            d.root_cause.starts_with(
                "mirror.example.com failed 1 of 2 manifest requests (server-error × 1)"
            ),
            "{}",
            d.root_cause
        );
        assert!(d.remediation.contains("unreliable"), "{}", d.remediation);
        let d = diagnose(&report(
            vec![ok(&[HUB], "docker.io/library/a:1", HUB)],
            vec![
                request(
                    HUB,
                    "library/a",
                    RequestKind::Blob,
                    Some(ErrorClass::ConnectionReset),
                ),
                request(HUB, "library/a", RequestKind::Blob, None),
            ],
        ))
        .unwrap();
        assert!(
            d.remediation.contains("--mirror docker.io=HOST"),
            "{}",
            d.remediation
        );
        // With a mirror configured but not needed: it is named as the way to spare retries,
        // and listed (untried) among the sources.
        let d = diagnose(&report(
            vec![ok(&[HUB, MIRROR], "docker.io/library/a:1", HUB)],
            vec![
                request(
                    HUB,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::Eof),
                ),
                request(HUB, "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        assert!(
            d.remediation
                .contains("`mirror-first: true` would try the mirror `mirror.example.com` first"),
            "{}",
            d.remediation
        );
        assert_eq!(d.sources.len(), 2);
        assert_eq!(
            (d.sources[1].role, d.sources[1].requests),
            (SourceRole::Mirror, 0)
        );
    }

    #[test]
    fn rule_rate_limited() {
        let d = diagnose(&report(
            vec![ok(&[HUB], "docker.io/library/a:1", HUB)],
            vec![
                request(
                    HUB,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::RateLimited),
                ),
                request(HUB, "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["rate-limited"]);
        assert!(
            d.root_cause.starts_with("toomanyrequests from docker.io"),
            "{}",
            d.root_cause
        );
        assert!(
            d.remediation.starts_with("authenticate"),
            "{}",
            d.remediation
        );
        assert!(d.remediation.contains("add a mirror"), "{}", d.remediation);
    }

    #[test]
    fn rule_lost_dns() {
        let d = diagnose(&report(
            vec![lost(
                "ghcr.io/org/base:1",
                &["ghcr.io"],
                ErrorClass::DnsNotFound,
            )],
            vec![request(
                "ghcr.io",
                "org/base",
                RequestKind::Manifest,
                Some(ErrorClass::DnsNotFound),
            )],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["lost-dns"]);
        assert_eq!(
            d.root_cause,
            "no source answered for `ghcr.io/org/base:1` (DNS failure: `ghcr.io` did not resolve)"
        );
        assert!(
            d.remediation.starts_with("check the runner's DNS or proxy"),
            "{}",
            d.remediation
        );
        assert_eq!(d.images.lost[0].class, ErrorClass::DnsNotFound);
    }

    #[test]
    fn rule_lost_rate_limited() {
        let d = diagnose(&report(
            vec![lost(
                "docker.io/library/a:1",
                &[HUB],
                ErrorClass::RateLimited,
            )],
            vec![request(
                HUB,
                "library/a",
                RequestKind::Manifest,
                Some(ErrorClass::RateLimited),
            )],
        ))
        .unwrap();
        assert_eq!(
            rules_of(&d),
            ["lost-rate-limited"],
            "the rate-limited rule does not repeat it"
        );
        assert!(
            d.root_cause
                .starts_with("toomanyrequests from docker.io: `docker.io/library/a:1`"),
            "{}",
            d.root_cause
        );
        assert!(d.remediation.contains("docker login"), "{}", d.remediation);
    }

    #[test]
    fn rule_lost_not_found() {
        let d = diagnose(&report(
            vec![lost(
                "docker.io/library/nope:9",
                &[HUB, MIRROR],
                ErrorClass::ManifestUnknown,
            )],
            vec![],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["lost-not-found"]);
        assert!(d.root_cause.contains("does not exist on `registry-1.docker.io` and `mirror.example.com` (manifest-unknown)"), "{}", d.root_cause);
        assert!(d.remediation.contains("tag"), "{}", d.remediation);
    }

    #[test]
    fn rule_lost_denied() {
        let d = diagnose(&report(
            vec![lost(
                "ghcr.io/org/private:1",
                &["ghcr.io"],
                ErrorClass::Unauthorized,
            )],
            vec![],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["lost-denied"]);
        assert!(
            d.remediation.contains("docker login ghcr.io"),
            "{}",
            d.remediation
        );
    }

    /// Issue 12: a wrong password is a refusal to fix, not a network to retry.
    #[test]
    fn rule_lost_denied_for_rejected_credentials() {
        let d = diagnose(&report(
            vec![lost(
                "10.1.2.3:5000/team/base:1",
                &["10.1.2.3:5000"],
                ErrorClass::AuthRejected,
            )],
            vec![],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["lost-denied"]);
        assert!(
            d.root_cause
                .contains("10.1.2.3:5000 rejected the credentials sent for"),
            "{}",
            d.root_cause
        );
        assert!(
            d.remediation.contains("`docker login 10.1.2.3:5000` again")
                && !d.remediation.contains("--max-retries"),
            "{}",
            d.remediation
        );
    }

    #[test]
    fn rule_lost_tls() {
        let d = diagnose(&report(
            vec![lost(
                "10.1.2.3:5000/team/base:1",
                &["10.1.2.3:5000"],
                ErrorClass::TlsUntrusted,
            )],
            vec![],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["lost-tls"]);
        assert!(d.root_cause.contains("not retried"), "{}", d.root_cause);
        assert!(
            d.remediation.contains("/etc/docker/certs.d/10.1.2.3:5000/")
                && d.remediation.contains("`client.cert` and `client.key`"),
            "{}",
            d.remediation
        );
        assert!(
            !d.remediation.contains("--max-retries"),
            "{}",
            d.remediation
        );
    }

    #[test]
    fn rule_lost_network() {
        let d = diagnose(&report(
            vec![lost(
                "docker.io/library/a:1",
                &[HUB, MIRROR],
                ErrorClass::Eof,
            )],
            vec![],
        ))
        .unwrap();
        assert_eq!(rules_of(&d)[0], "lost-network");
        assert!(
            d.root_cause.contains(
                "after every retry (origin registry-1.docker.io: eof; mirror mirror.example.com: eof)"
            ),
            "{}",
            d.root_cause
        );
        assert!(
            d.remediation.contains("every source failed"),
            "{}",
            d.remediation
        );
        let d = diagnose(&report(
            vec![lost("docker.io/library/a:1", &[HUB], ErrorClass::Timeout)],
            vec![],
        ))
        .unwrap();
        assert!(
            d.remediation.starts_with("add a mirror"),
            "{}",
            d.remediation
        );
    }

    #[test]
    fn rule_source_unresolvable() {
        let mut images = Vec::new();
        let mut requests = Vec::new();
        for i in 0..3 {
            let reference = format!("docker.io/library/i{i}:1");
            let mut m = ok(&[HUB, MIRROR], &reference, MIRROR);
            m.attempts
                .insert(0, attempt(HUB, Some(ErrorClass::DnsNotFound), false, 0));
            images.push(m);
            requests.push(request(
                HUB,
                &format!("library/i{i}"),
                RequestKind::Manifest,
                Some(ErrorClass::DnsNotFound),
            ));
            requests.push(request(
                MIRROR,
                &format!("library/i{i}"),
                RequestKind::Manifest,
                None,
            ));
        }
        let d = diagnose(&report(images, requests)).unwrap();
        assert_eq!(rules_of(&d), ["source-unresolvable"]);
        assert_eq!(
            d.root_cause,
            "registry-1.docker.io did not resolve (DNS); 3 images came from mirror mirror.example.com"
        );
        assert!(
            d.remediation.contains("mirror-first: true"),
            "{}",
            d.remediation
        );
        assert_eq!(d.images.recovered_by_mirror.len(), 3);
    }

    #[test]
    fn rule_source_down() {
        let mut m = ok(&[MIRROR, HUB], "docker.io/library/a:1", HUB);
        m.attempts.insert(
            0,
            attempt(MIRROR, Some(ErrorClass::ConnectionRefused), false, 0),
        );
        let d = diagnose(&report(
            vec![m],
            vec![
                request(
                    MIRROR,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::ConnectionRefused),
                ),
                request(
                    MIRROR,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::ConnectionRefused),
                ),
                request(HUB, "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["source-down"]);
        assert_eq!(
            d.root_cause,
            "mirror.example.com answered none of its 2 requests (connection-refused × 2)"
        );
        assert!(
            d.remediation.contains("is running at that address"),
            "{}",
            d.remediation
        );
    }

    #[test]
    fn rule_long_waits() {
        let mut requests = vec![request(HUB, "library/a", RequestKind::Manifest, None)];
        let mut slow = request(
            HUB,
            "library/a",
            RequestKind::Manifest,
            Some(ErrorClass::ServerError),
        );
        slow.retry_wait_ms = Some(LONG_WAIT_MS);
        requests.insert(0, slow);
        let d = diagnose(&report(
            vec![ok(&[HUB], "docker.io/library/a:1", HUB)],
            requests,
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["flaky-source", "long-waits"]);
        assert_eq!(d.findings[1].cause, "retries waited 30.0s in total");
    }

    #[test]
    fn rule_other_failures() {
        // A failure no rule covers (the registry lacked the image at first): the fallback.
        let mut m = ok(
            &["127.0.0.1:5000"],
            "127.0.0.1:5000/library/a:1",
            "127.0.0.1:5000",
        );
        m.attempts.insert(
            0,
            attempt("127.0.0.1:5000", Some(ErrorClass::Other), true, 0),
        );
        let d = diagnose(&report(
            vec![m],
            vec![
                request(
                    "127.0.0.1:5000",
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::ManifestUnknown),
                ),
                request("127.0.0.1:5000", "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        assert_eq!(rules_of(&d), ["other-failures"]);
        assert!(
            d.root_cause
                .contains("127.0.0.1:5000 (manifest-unknown × 1)"),
            "{}",
            d.root_cause
        );
    }

    #[test]
    fn direct_pulls_count_their_attempts() {
        let mut a = ok(&[HUB], "docker.io/library/a:1", HUB);
        a.attempts
            .insert(0, attempt(HUB, Some(ErrorClass::Eof), true, 120));
        a.wait_ms = 120;
        let mut r = report(vec![a], vec![]);
        r.via = "direct";
        let d = diagnose(&r).unwrap();
        assert_eq!(d.sources[0].failures_by_class[&ErrorClass::Eof], 1);
        assert_eq!(d.sources[0].wait_ms, 120);
        assert_eq!(d.wait_ms, 120);
        assert_eq!(
            d.images.recovered_by_retry[0].image,
            "docker.io/library/a:1"
        );
        assert!(
            d.root_cause.contains("1 of 2 pull attempts"),
            "{}",
            d.root_cause
        );
    }

    #[test]
    fn merged_diagnoses_add_their_evidence() {
        let one = diagnose(&report(
            vec![ok(&[HUB], "docker.io/library/a:1", HUB)],
            vec![
                request(
                    HUB,
                    "library/a",
                    RequestKind::Manifest,
                    Some(ErrorClass::Eof),
                ),
                request(HUB, "library/a", RequestKind::Manifest, None),
            ],
        ))
        .unwrap();
        let merged = merge([&one, &one]).unwrap();
        assert_eq!(merged.sources.len(), 1);
        assert_eq!(merged.sources[0].requests, 4);
        assert!(
            merged
                .root_cause
                .contains("dropped 2 of 4 manifest requests"),
            "{}",
            merged.root_cause
        );
        assert_eq!(merged.images.recovered_by_retry.len(), 2);
        assert_eq!(merge([]), None);
    }

    #[test]
    fn names_are_counted_past_the_limit() {
        let items: Vec<String> = (0..6).map(|i| format!("i{i}")).collect();
        assert_eq!(names(&items[..1]), "`i0`");
        assert_eq!(names(&items[..2]), "`i0` and `i1`");
        assert_eq!(names(&items), "`i0`, `i1`, `i2`, `i3` and 2 more");
    }
}
