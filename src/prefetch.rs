//! Prefetch: make every base image the services need present in the daemon before any build,
//! concurrently, retrying transient failures, falling back to mirrors, and recording every
//! attempt for the report.
//!
//! Pulls go through the Engine API (`create_image`). When the daemon is local, they go through
//! the [`relay`](crate::relay), which retries each registry request where it failed; the pull
//! as a whole is retried too, and a pull with no progress for the idle timeout is cut and
//! retried. After a pull from a mirror (or the relay) the image is re-tagged to its canonical
//! name, so Dockerfiles need no change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use serde::Serialize;

use crate::clock::now_ms;
pub use crate::endpoint::Mirrors;
use crate::endpoint::{Endpoint, Source};
use crate::engine::Engine;
use crate::health::Sample;
pub use crate::plan::{ImageNeed, Use};
use crate::reference::Reference;
use crate::registry::{RegistryClient, Timeouts};
use crate::registry_trust::{DaemonRegistryConfig, RegistryTrust};
use crate::relay::{Relay, RequestEvent};
use crate::retry::{ErrorClass, RetryHint, RetryPolicy, classify_message, classify_status};

/// When to pull an image that is already present locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only images that are not present locally.
    Missing,
    /// Every image, to get the registry's current version.
    Always,
}

/// How the daemon reaches the registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullVia {
    /// The relay when the daemon is on this machine, else direct.
    Auto,
    /// Through our per-request retrying relay on 127.0.0.1.
    Relay,
    /// The daemon pulls from the registry itself; only whole pulls are retried.
    Direct,
}

#[derive(Debug, Clone)]
pub struct PrefetchOptions {
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub idle_timeout: Duration,
    pub mirrors: Mirrors,
    pub mirror_first: bool,
    pub pull: PullPolicy,
    pub via: PullVia,
    /// Told about each image as soon as it is done (so builds can start before the rest).
    pub notify: Option<tokio::sync::mpsc::UnboundedSender<ImageResult>>,
    /// Source health from the cache directory: orders each registry's sources
    /// ([`crate::health::order_sources`]); `None` keeps the configured order.
    pub health: Option<Arc<crate::health::HealthStore>>,
    /// The docker CLI's credentials: the relay's token requests and direct pulls use them.
    pub credentials: Arc<crate::auth::Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageStatus {
    /// Pulled in this run.
    Pulled,
    /// Already present locally; not pulled.
    Present,
    /// Could not be had from any source.
    Failed,
}

/// One try of one pull.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub source: String,
    pub attempt: u32,
    /// `None` for the successful attempt.
    pub class: Option<ErrorClass>,
    pub message: Option<String>,
    /// Whether the same source was tried again after this failure.
    pub retried: bool,
    /// The wait before the next attempt (when there was one).
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageFailure {
    pub class: ErrorClass,
    pub message: String,
}

/// Which way a pull went: through the relay, or the daemon pulling by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPath {
    Relay,
    Direct,
}

impl PullPath {
    pub fn label(self) -> &'static str {
        match self {
            PullPath::Relay => "relay",
            PullPath::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub reference: String,
    /// The platform pulled from a multi-platform image ([`ImageNeed::platform`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub uses: Vec<Use>,
    pub status: ImageStatus,
    /// The source that served it (registry host, or mirror `host[/prefix]`).
    pub source: Option<String>,
    pub digest: Option<String>,
    /// The order the sources were tried in, and why.
    pub source_order: Vec<String>,
    /// How it was pulled (`None` when it was not: already present, vouched for by the cache).
    pub via: Option<PullPath>,
    /// Why a pull went direct (the daemon cannot reach the relay, `--pull-via direct`, …).
    pub via_reason: Option<String>,
    pub attempts: Vec<Attempt>,
    /// Time spent waiting between attempts of this image.
    pub wait_ms: u64,
    pub duration_ms: u64,
    pub error: Option<ImageFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefetchReport {
    /// `relay` or `direct`: how the run's pulls went (at its end, after any switch to direct).
    pub via: &'static str,
    /// Why the pulls went direct, when they did.
    pub via_reason: Option<String>,
    pub images: Vec<ImageResult>,
    /// Every registry request the relay sent (empty when pulling direct).
    pub requests: Vec<RequestEvent>,
    pub duration_ms: u64,
    /// Per registry: the order its sources were tried in, and why.
    pub source_orders: Vec<crate::health::OrderDecision>,
}

/// Base images the cache vouched for before the prefetch (`--pull always`, still current
/// upstream), and the source order each registry's check used.
#[derive(Debug, Clone, Default)]
pub struct Vouched {
    pub images: Vec<ImageResult>,
    pub orders: Vec<crate::health::OrderDecision>,
}

impl Vouched {
    /// Adds the vouched images to `report`, and the order decisions of registries the prefetch
    /// itself did not contact.
    pub fn merge_into(&self, report: &mut PrefetchReport) {
        report.images.extend(self.images.iter().cloned());
        for order in &self.orders {
            if !report
                .source_orders
                .iter()
                .any(|o| o.registry == order.registry)
            {
                report.source_orders.push(order.clone());
            }
        }
        report
            .source_orders
            .sort_by(|a, b| a.registry.cmp(&b.registry));
    }
}

impl PrefetchReport {
    pub fn failed(&self) -> impl Iterator<Item = &ImageResult> {
        self.images
            .iter()
            .filter(|i| i.status == ImageStatus::Failed)
    }

    /// Retries of whole pulls plus retries of single requests inside the relay.
    pub fn total_retries(&self) -> usize {
        let pulls: usize = self
            .images
            .iter()
            .map(|i| i.attempts.iter().filter(|a| a.retried).count())
            .sum();
        let requests = self
            .requests
            .iter()
            .filter(|r| r.retry_wait_ms.is_some())
            .count();
        pulls + requests
    }

    /// What each source did, for source health: one sample per relay request, pull attempt
    /// (with the time a successful one took) and image pulled.
    pub fn health_samples(&self) -> Vec<Sample> {
        let mut samples: Vec<Sample> = self
            .requests
            .iter()
            .map(|r| Sample::request(&r.source, r.class))
            .collect();
        for image in &self.images {
            // The attempts end at `at_ms`; the first began `duration_ms` before the last ended.
            let end = image.attempts.last().map_or(0, |a| a.at_ms);
            let mut began = end.saturating_sub(image.duration_ms);
            for a in &image.attempts {
                let outcome = match a.class {
                    None => Ok(a.at_ms.saturating_sub(began)),
                    Some(class) => Err(class),
                };
                samples.push(Sample::pull(&a.source, outcome));
                began = a.at_ms + a.wait_ms;
            }
            if image.status == ImageStatus::Pulled
                && let Some(source) = &image.source
            {
                samples.push(Sample::served(source));
            }
        }
        samples
    }

    pub fn total_wait_ms(&self) -> u64 {
        let pulls: u64 = self.images.iter().map(|i| i.wait_ms).sum();
        let requests: u64 = self.requests.iter().filter_map(|r| r.retry_wait_ms).sum();
        pulls + requests
    }
}

/// A failed pull attempt, as the daemon (or our idle timer) reported it.
#[derive(Debug, Clone)]
struct PullError {
    class: ErrorClass,
    message: String,
}

impl RetryHint for PullError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// Pulls every image in `needs`; never fails as a whole: each image's result says what happened.
pub async fn prefetch(
    engine: &Engine,
    needs: Vec<ImageNeed>,
    options: &PrefetchOptions,
) -> anyhow::Result<PrefetchReport> {
    let started = Instant::now();
    let daemon = engine
        .docker
        .info()
        .await
        .ok()
        .map(|info| DaemonRegistryConfig::from_info(&info));
    let mut trust = RegistryTrust::from_env();
    if let Some(daemon) = &daemon {
        trust = trust.with_daemon(daemon);
    }
    let trust = Arc::new(trust);
    let rootless = daemon.as_ref().is_some_and(|d| d.rootless);
    let (use_relay, mut via_reason) = match options.via {
        PullVia::Relay => (true, None),
        PullVia::Direct => (false, Some("--pull-via direct".to_string())),
        PullVia::Auto => match relay_unreachable_reason(&engine.host, rootless) {
            Some(reason) => (false, Some(reason)),
            None => (true, None),
        },
    };
    let mut relay = if use_relay {
        let client = RegistryClient::new(Timeouts {
            connect: Duration::from_secs(10),
            idle: options.idle_timeout,
        })?
        .with_credentials(Arc::clone(&options.credentials))
        .with_trust(Arc::clone(&trust));
        Some(Relay::start(client, options.policy).await?)
    } else {
        None
    };
    // Before any pull: can the daemon reach the relay at all? (A daemon on a local socket may
    // still live in another network namespace.) Asked with a pull the relay answers itself.
    if options.via == PullVia::Auto
        && !needs.is_empty()
        && let Some(r) = &relay
        && let Err(reason) = relay_reachable(engine, r, options.idle_timeout).await
    {
        via_reason = Some(reason.to_string());
        relay = None;
    }
    let ctx = Arc::new(Context {
        engine: engine.clone(),
        options: options.clone(),
        relay,
        relay_down: Mutex::new(None),
        direct_reason: via_reason,
        last_good: Mutex::new(HashMap::new()),
        orders: Mutex::new(BTreeMap::new()),
        started_ms: now_ms(),
    });
    // Unordered: a slow image must not hold a free slot (`buffered` starts the next pull only
    // once every earlier one is done); the report keeps the input order.
    let mut images: Vec<(usize, ImageResult)> =
        futures_util::stream::iter(needs.into_iter().enumerate())
            .map(|(index, need)| {
                let ctx = ctx.clone();
                async move {
                    let result = ctx.fetch(need).await;
                    if let Some(notify) = &ctx.options.notify {
                        let _ = notify.send(result.clone());
                    }
                    (index, result)
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    images.sort_by_key(|(index, _)| *index);
    let images: Vec<ImageResult> = images.into_iter().map(|(_, image)| image).collect();
    let requests = ctx.relay.as_ref().map(Relay::events).unwrap_or_default();
    let source_orders = ctx
        .orders
        .lock()
        .map(|o| o.values().cloned().collect())
        .unwrap_or_default();
    let relay_used = ctx.active_relay().is_some();
    Ok(PrefetchReport {
        via: if relay_used { "relay" } else { "direct" },
        via_reason: ctx.direct_reason(),
        images,
        requests,
        duration_ms: started.elapsed().as_millis() as u64,
        source_orders,
    })
}

/// The sources to try for `reference`, in order: origin then mirrors (or mirrors first),
/// reordered by the learned source health ([`crate::health::order_sources`]). The prefetch
/// and the cache's freshness check both ask this, so they try the same source first.
pub fn planned_sources(
    reference: &Reference,
    options: &PrefetchOptions,
    now_ms: u64,
) -> (Vec<Source>, crate::health::OrderDecision) {
    let origin = Source {
        endpoint: Endpoint::new(&reference.registry_host()),
        prefix: String::new(),
    };
    let mirrors = options.mirrors.for_registry(&reference.domain);
    let mut order: Vec<Source> = if options.mirror_first {
        mirrors
            .iter()
            .cloned()
            .chain(std::iter::once(origin))
            .collect()
    } else {
        std::iter::once(origin)
            .chain(mirrors.iter().cloned())
            .collect()
    };
    order.dedup();
    crate::health::order_sources(&reference.domain, order, options.health.as_deref(), now_ms)
}

/// Why a daemon cannot reach a relay on our 127.0.0.1, when that is known from its address
/// and its info: a daemon on another machine (`tcp://` to another address, `ssh://`), or a
/// rootless one (its 127.0.0.1 is RootlessKit's network namespace). `None`: it may.
pub fn relay_unreachable_reason(host: &str, rootless: bool) -> Option<String> {
    if !daemon_is_local(host) {
        return Some(format!(
            "the daemon at {host} is not on this machine's loopback: it cannot reach the relay on 127.0.0.1"
        ));
    }
    if rootless {
        return Some(
            "the daemon runs rootless: its 127.0.0.1 is its own network namespace, not ours"
                .to_string(),
        );
    }
    None
}

/// Asks the daemon to pull a name only the relay serves (and answers `404` itself): the
/// relay counts the request when the daemon reached it. `Err` says why it did not.
async fn relay_reachable(
    engine: &Engine,
    relay: &Relay,
    idle: Duration,
) -> Result<(), RelayUnreachable> {
    let (repository, tag) = relay.reachability_probe();
    let options = CreateImageOptionsBuilder::default()
        .from_image(&repository)
        .tag(&tag)
        .build();
    let mut stream = engine.docker.create_image(Some(options), None, None);
    let mut error = None;
    let limit = idle.clamp(Duration::from_secs(5), Duration::from_secs(30));
    let consumed = tokio::time::timeout(limit, async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        error = Some(detail);
                    }
                }
                Err(err) => error = Some(err.to_string()),
            }
        }
    })
    .await;
    if relay.reachability_hits() > 0 {
        return Ok(());
    }
    let why = match (consumed, error) {
        (Err(_), _) => format!("no answer within {}s", limit.as_secs()),
        (Ok(()), Some(e)) => e.replace(relay.secret(), "***"),
        (Ok(()), None) => "the daemon sent no request to it".to_string(),
    };
    Err(RelayUnreachable {
        relay: relay.host().to_string(),
        why,
    })
}

/// The daemon did not reach the relay with the probe pull.
#[derive(Debug, thiserror::Error)]
#[error(
    "the daemon cannot reach the relay at {relay} ({why}): it runs in another network namespace or on another machine"
)]
struct RelayUnreachable {
    relay: String,
    /// What the pull answered (the relay's secret blanked), or that nothing came.
    why: String,
}

/// A daemon on a Unix socket or on loopback TCP shares our 127.0.0.1 and can reach the relay.
pub fn daemon_is_local(host: &str) -> bool {
    if host.starts_with("unix://") || host.starts_with("npipe://") {
        return true;
    }
    let rest = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let authority = rest.split('/').next().unwrap_or(rest);
    crate::endpoint::is_loopback_host(authority)
}

struct Context {
    engine: Engine,
    options: PrefetchOptions,
    relay: Option<Relay>,
    /// Set when a pull showed that the daemon cannot reach the relay after all: the reason;
    /// every later pull goes direct.
    relay_down: Mutex<Option<String>>,
    /// Why pulls go direct from the start (`None`: through the relay).
    direct_reason: Option<String>,
    /// Per registry: the source that served the last success in this run (tried first).
    last_good: Mutex<HashMap<String, String>>,
    /// Per registry: the first order decision of the run (the report's `source_orders`).
    orders: Mutex<BTreeMap<String, crate::health::OrderDecision>>,
    /// When the run started: the "now" of every order decision, so they all agree.
    started_ms: u64,
}

impl Context {
    /// The relay, unless pulls have switched to direct.
    fn active_relay(&self) -> Option<&Relay> {
        let down = self.relay_down.lock().map(|d| d.is_some()).unwrap_or(true);
        self.relay.as_ref().filter(|_| !down)
    }

    /// Why pulls go (or went, from some point on) direct.
    fn direct_reason(&self) -> Option<String> {
        self.relay_down
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .or_else(|| self.direct_reason.clone())
    }

    /// A relay pull failed: when the failure is the daemon not reaching the relay (it names the
    /// relay's address, and no request of the daemon ever reached the relay), every later pull
    /// goes direct. Returns whether that switch happened now or earlier.
    fn relay_failed(&self, relay: &Relay, message: &str) -> bool {
        if let Ok(down) = self.relay_down.lock()
            && down.is_some()
        {
            return true;
        }
        if relay.daemon_requests() > 0 || !message.contains(&relay.host()) {
            return false;
        }
        let class = classify_message(message);
        let unreachable = matches!(
            class,
            ErrorClass::ConnectionRefused
                | ErrorClass::Timeout
                | ErrorClass::Eof
                | ErrorClass::ConnectionReset
        ) || message.contains("no route to host")
            || message.contains("network is unreachable");
        if unreachable && let Ok(mut down) = self.relay_down.lock() {
            *down = Some(format!(
                "the daemon could not reach the relay at {} ({}): the other pulls went direct",
                relay.host(),
                message.replace(relay.secret(), "***")
            ));
        }
        unreachable
    }

    async fn fetch(&self, need: ImageNeed) -> ImageResult {
        let started = Instant::now();
        let reference = need.reference.clone();
        let platform = need.platform.clone();
        let mut result = ImageResult {
            reference: reference.to_string(),
            platform: need.platform,
            uses: need.uses,
            status: ImageStatus::Failed,
            source: None,
            digest: None,
            source_order: Vec::new(),
            via: None,
            via_reason: None,
            attempts: Vec::new(),
            wait_ms: 0,
            duration_ms: 0,
            error: None,
        };
        if self.options.pull == PullPolicy::Missing
            && let Some(digest) = self.local_digest(&reference, platform.as_deref()).await
        {
            result.status = ImageStatus::Present;
            result.digest = digest;
            result.source = Some("local".to_string());
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
        let sources = self.source_order(&reference);
        result.source_order = sources.iter().map(Source::label).collect();
        let mut last_error = None;
        for source in &sources {
            match self
                .pull_from(&reference, platform.as_deref(), source, &mut result)
                .await
            {
                Ok(digest) => {
                    result.status = ImageStatus::Pulled;
                    result.source = Some(source.label());
                    result.digest = digest;
                    result.error = None;
                    if let Ok(mut good) = self.last_good.lock() {
                        good.insert(reference.domain.clone(), source.label());
                    }
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        if result.status == ImageStatus::Failed {
            let err = last_error.unwrap_or(PullError {
                class: ErrorClass::Other,
                message: "no source to pull from".into(),
            });
            result.error = Some(ImageFailure {
                class: err.class,
                message: err.message,
            });
        }
        result.duration_ms = started.elapsed().as_millis() as u64;
        result
    }

    /// [`planned_sources`]; the source of this run's last success for the same registry goes
    /// to the front.
    fn source_order(&self, reference: &Reference) -> Vec<Source> {
        let (mut order, decision) = planned_sources(reference, &self.options, self.started_ms);
        if let Ok(mut orders) = self.orders.lock() {
            orders.entry(reference.domain.clone()).or_insert(decision);
        }
        let good = self
            .last_good
            .lock()
            .ok()
            .and_then(|g| g.get(&reference.domain).cloned());
        if let Some(pos) = good.and_then(|label| order.iter().position(|s| s.label() == label)) {
            let best = order.remove(pos);
            order.insert(0, best);
        }
        order
    }

    /// The local image's digest (`Some(None)` when present without a repo digest). With a
    /// `platform`, an image of another platform under that name is not present.
    async fn local_digest(
        &self,
        reference: &Reference,
        platform: Option<&str>,
    ) -> Option<Option<String>> {
        let image = self
            .engine
            .docker
            .inspect_image(&reference.familiar())
            .await
            .ok()?;
        if let Some(wanted) = platform.and_then(|p| p.parse::<crate::dockerfile::Platform>().ok())
            && !platform_matches(&wanted, &image)
        {
            return None;
        }
        let digest = image
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|d| d.split_once('@').map(|(_, d)| d.to_string()));
        Some(digest.or_else(|| reference.digest.clone()))
    }

    /// Tries one source with the retry policy; on success the image carries its canonical name.
    async fn pull_from(
        &self,
        reference: &Reference,
        platform: Option<&str>,
        source: &Source,
        result: &mut ImageResult,
    ) -> Result<Option<String>, PullError> {
        let relay = self.active_relay();
        let outcome = self
            .pull_via(reference, platform, source, result, relay)
            .await;
        match (&outcome, relay) {
            // The daemon cannot reach the relay: this pull again, direct (the others follow).
            (Err(_), Some(_)) if self.active_relay().is_none() => {
                self.pull_via(reference, platform, source, result, None)
                    .await
            }
            _ => outcome,
        }
    }

    /// [`Context::pull_from`] through `relay`, or direct when `None`.
    async fn pull_via(
        &self,
        reference: &Reference,
        platform: Option<&str>,
        source: &Source,
        result: &mut ImageResult,
        relay: Option<&Relay>,
    ) -> Result<Option<String>, PullError> {
        // A digest reference must be pulled under its own name, or the daemon will not find it
        // by digest later (a re-tag cannot add a repo digest): the relay cannot serve it.
        let via_relay = relay.filter(|_| reference.digest.is_none());
        result.via = Some(if via_relay.is_some() {
            PullPath::Relay
        } else {
            PullPath::Direct
        });
        result.via_reason = match (via_relay, relay) {
            (Some(_), _) => None,
            (None, Some(_)) => {
                Some("a digest reference is pulled under its own name, by the daemon".into())
            }
            (None, None) => self.direct_reason(),
        };
        let repository = match via_relay {
            Some(relay) => relay.repository(source, &reference.path),
            None if source.endpoint.host == reference.registry_host()
                && source.prefix.is_empty() =>
            {
                reference.name()
            }
            None => format!(
                "{}/{}",
                source.endpoint.host,
                source.path_for(&reference.path)
            ),
        };
        let tag = reference
            .digest
            .clone()
            .or_else(|| reference.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let label = source.label();
        let mut attempt_no = 0u32;
        let attempts = Mutex::new(Vec::new());
        let outcome = self
            .options
            .policy
            .run(
                || {
                    attempt_no += 1;
                    self.pull_once(
                        repository.clone(),
                        tag.clone(),
                        platform,
                        via_relay.map(|r| (r, source)),
                        &reference.path,
                    )
                },
                |err: &PullError, wait| {
                    if let Ok(mut a) = attempts.lock() {
                        a.push(Attempt {
                            at_ms: now_ms(),
                            source: label.clone(),
                            attempt: 0,
                            class: Some(err.class),
                            message: Some(err.message.clone()),
                            retried: true,
                            wait_ms: wait.as_millis() as u64,
                        });
                    }
                },
            )
            .await;
        let mut attempts = attempts.into_inner().unwrap_or_default();
        let final_attempt = match &outcome {
            Ok(_) => Attempt {
                at_ms: now_ms(),
                source: label.clone(),
                attempt: 0,
                class: None,
                message: None,
                retried: false,
                wait_ms: 0,
            },
            Err(err) => Attempt {
                at_ms: now_ms(),
                source: label.clone(),
                attempt: 0,
                class: Some(err.class),
                message: Some(err.message.clone()),
                retried: false,
                wait_ms: 0,
            },
        };
        attempts.push(final_attempt);
        let offset = result.attempts.len() as u32;
        for (i, a) in attempts.iter_mut().enumerate() {
            a.attempt = offset + i as u32 + 1;
        }
        result.wait_ms += attempts.iter().map(|a| a.wait_ms).sum::<u64>();
        result.attempts.extend(attempts);
        outcome?;
        self.finish(reference, &repository, &tag).await
    }

    /// The credentials for a direct pull of `repository` (`HOST/PATH`, or a Docker Hub name).
    async fn direct_credentials(
        &self,
        repository: &str,
    ) -> Option<bollard::auth::DockerCredentials> {
        let host = crate::reference::Reference::parse(repository)
            .map(|r| r.registry_host())
            .unwrap_or_else(|_| "docker.io".to_string());
        let credentials = Arc::clone(&self.options.credentials);
        let lookup_host = host.clone();
        let found = tokio::task::spawn_blocking(move || credentials.lookup(&lookup_host))
            .await
            .ok()?
            .ok()??;
        Some(found.docker_credentials(&crate::auth::Credentials::server_key(&host)))
    }

    /// One `create_image` call, consumed to the end; no progress for the idle timeout aborts it,
    /// unless the relay is still working on this repository upstream (its own idle timeout
    /// and retry policy bound that work, and cutting the pull would throw it away).
    async fn pull_once(
        &self,
        repository: String,
        tag: String,
        platform: Option<&str>,
        relay: Option<(&Relay, &Source)>,
        path: &str,
    ) -> Result<(), PullError> {
        if let Some((relay, _)) = relay
            && self.active_relay().is_none()
        {
            return Err(PullError {
                class: ErrorClass::Other,
                message: format!("the daemon cannot reach the relay at {}", relay.host()),
            });
        }
        // With a platform, the daemon takes that platform's manifest from an index (the
        // relay passes the index through as it is).
        let mut options = CreateImageOptionsBuilder::default()
            .from_image(&repository)
            .tag(&tag);
        if let Some(platform) = platform {
            options = options.platform(platform);
        }
        let options = options.build();
        // A direct pull carries the registry's credentials (X-Registry-Auth); through the
        // relay, the relay sends them upstream and the daemon needs none.
        let auth = match relay {
            Some(_) => None,
            None => self.direct_credentials(&repository).await,
        };
        let mut stream = self.engine.docker.create_image(Some(options), None, auth);
        let idle = self.options.idle_timeout;
        loop {
            match tokio::time::timeout(idle, stream.next()).await {
                Err(_) if relay.is_some_and(|(relay, source)| relay.busy(source, path)) => {}
                Err(_) => {
                    return Err(PullError {
                        class: ErrorClass::Stalled,
                        message: format!(
                            "no progress for {}s pulling {repository}:{tag}; the pull was cut",
                            idle.as_secs()
                        ),
                    });
                }
                Ok(None) => return Ok(()),
                Ok(Some(Ok(info))) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(self.relay_check(self.explain(detail, relay, path), relay));
                    }
                }
                Ok(Some(Err(err))) => {
                    return Err(self.relay_check(self.explain_docker(err, relay, path), relay));
                }
            }
        }
    }

    /// A failed relay pull that shows the daemon cannot reach the relay stops this source's
    /// retries through the relay (a permanent class): the pull is made again, direct.
    fn relay_check(&self, mut err: PullError, relay: Option<(&Relay, &Source)>) -> PullError {
        if let Some((relay, _)) = relay
            && self.relay_failed(relay, &err.message)
        {
            err.class = ErrorClass::Other;
            err.message = format!(
                "{}; switching to direct pulls",
                err.message.replace(relay.secret(), "***")
            );
        }
        err
    }

    fn explain_docker(
        &self,
        err: DockerError,
        relay: Option<(&Relay, &Source)>,
        path: &str,
    ) -> PullError {
        match err {
            DockerError::DockerStreamError { error } => self.explain(error, relay, path),
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => {
                let (mut e, upstream) = self.explain_cause(message, relay, path);
                // The daemon's status (500 for any failed pull) says nothing when the relay's
                // record named the upstream failure: its class stands, `other` included.
                if e.class == ErrorClass::Other && !upstream {
                    e.class = classify_status(status_code).unwrap_or(ErrorClass::Other);
                }
                e
            }
            other => {
                let message = other.to_string();
                PullError {
                    class: classify_message(&message),
                    message,
                }
            }
        }
    }

    /// Classifies a daemon message. Through the relay, a "502 Bad Gateway" hides the upstream
    /// failure: the relay's own record names it.
    fn explain(&self, message: String, relay: Option<(&Relay, &Source)>, path: &str) -> PullError {
        self.explain_cause(message, relay, path).0
    }

    /// [`Self::explain`], and whether the class and message are the relay's record of the
    /// upstream failure.
    fn explain_cause(
        &self,
        message: String,
        relay: Option<(&Relay, &Source)>,
        path: &str,
    ) -> (PullError, bool) {
        let mut upstream = false;
        let mut class = classify_message(&message);
        let mut message = message;
        if let Some((relay, source)) = relay {
            message = message.replace(
                &relay.repository(source, path),
                &format!("{}/{}", source.label(), path),
            );
            let last = relay.last_failure(source, path);
            // An upstream auth failure reaches the daemon as 401/403 ("pull access denied"):
            // the relay's record says whether credentials were sent and where they came from.
            let upstream_auth = last.as_ref().is_some_and(|e| {
                matches!(
                    e.class,
                    Some(ErrorClass::AuthRejected | ErrorClass::Unauthorized | ErrorClass::Denied)
                )
            });
            if (upstream_auth
                || matches!(class, ErrorClass::ServerError | ErrorClass::Other)
                    && message.contains("502"))
                && let Some(event) = last
            {
                class = event.class.unwrap_or(class);
                message = format!("{}: {}", event.source, event.message.unwrap_or_default());
                upstream = true;
            }
        }
        (PullError { class, message }, upstream)
    }

    /// Tags the pulled image with its canonical name and drops the relay's name for it.
    async fn finish(
        &self,
        reference: &Reference,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, PullError> {
        let pulled = if tag.starts_with("sha256:") {
            format!("{repository}@{tag}")
        } else {
            format!("{repository}:{tag}")
        };
        let docker = &self.engine.docker;
        let inspect = docker.inspect_image(&pulled).await.map_err(|e| PullError {
            class: ErrorClass::Other,
            message: format!("pulled {pulled} but cannot inspect it: {e}"),
        })?;
        let digest = inspect
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|d| d.split_once('@').map(|(_, d)| d.to_string()));
        if reference.digest.is_none() && pulled != reference.familiar() {
            let (repo, new_tag) = (
                reference.familiar_name(),
                reference.tag.clone().unwrap_or_else(|| "latest".into()),
            );
            let options = TagImageOptionsBuilder::default()
                .repo(&repo)
                .tag(&new_tag)
                .build();
            docker
                .tag_image(&pulled, Some(options))
                .await
                .map_err(|e| PullError {
                    class: ErrorClass::Other,
                    message: format!("cannot tag {pulled} as {repo}:{new_tag}: {e}"),
                })?;
            if self
                .relay
                .as_ref()
                .is_some_and(|r| repository.starts_with(&r.host()))
            {
                let options = RemoveImageOptionsBuilder::default().noprune(true).build();
                let _ = docker.remove_image(&pulled, Some(options), None).await;
            }
        }
        Ok(digest)
    }
}

/// Whether a local image is of `wanted` (its os and architecture; its variant when both say
/// one, as an image without a variant serves any).
fn platform_matches(
    wanted: &crate::dockerfile::Platform,
    image: &bollard::models::ImageInspect,
) -> bool {
    let same =
        |have: Option<&String>, want: &str| have.is_some_and(|h| h.eq_ignore_ascii_case(want));
    same(image.os.as_ref(), &wanted.os)
        && same(image.architecture.as_ref(), &wanted.architecture)
        && match (&wanted.variant, &image.variant) {
            (Some(w), Some(h)) => w.eq_ignore_ascii_case(h),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue13_a_local_image_of_another_platform_is_not_the_one_needed() {
        let image = |os: &str, arch: &str, variant: Option<&str>| bollard::models::ImageInspect {
            os: Some(os.into()),
            architecture: Some(arch.into()),
            variant: variant.map(str::to_string),
            ..Default::default()
        };
        let arm64: crate::dockerfile::Platform = "linux/arm64".parse().unwrap();
        assert!(platform_matches(&arm64, &image("linux", "arm64", None)));
        assert!(platform_matches(
            &arm64,
            &image("linux", "arm64", Some("v8"))
        ));
        assert!(!platform_matches(&arm64, &image("linux", "amd64", None)));
        assert!(!platform_matches(&arm64, &image("windows", "arm64", None)));
        let v7: crate::dockerfile::Platform = "linux/arm/v7".parse().unwrap();
        assert!(!platform_matches(&v7, &image("linux", "arm", Some("v6"))));
        assert!(platform_matches(&v7, &image("linux", "arm", None)));
    }

    #[test]
    fn health_samples_say_what_each_source_did_and_how_long_its_pulls_took() {
        use crate::health::Sample;
        use crate::registry::RequestKind;
        const HUB: &str = "registry-1.docker.io";
        const MIRROR: &str = "mirror.example.com";
        let request = |source: &str, class| RequestEvent {
            at_ms: 1,
            source: source.to_string(),
            repository: "library/a".to_string(),
            kind: RequestKind::Manifest,
            class,
            status: None,
            message: None,
            retry_wait_ms: None,
        };
        let attempt = |source: &str, at_ms, class, wait_ms| Attempt {
            at_ms,
            source: source.to_string(),
            attempt: 1,
            class,
            message: None,
            retried: false,
            wait_ms,
        };
        let image = |status, source: Option<&str>, attempts, duration_ms| ImageResult {
            reference: "docker.io/library/a:1".into(),
            platform: None,
            uses: Vec::new(),
            status,
            source: source.map(str::to_string),
            digest: None,
            source_order: vec![HUB.into(), MIRROR.into()],
            via: None,
            via_reason: None,
            attempts,
            wait_ms: 0,
            duration_ms,
            error: None,
        };
        let report = PrefetchReport {
            via: "relay",
            via_reason: None,
            images: vec![
                image(
                    ImageStatus::Pulled,
                    Some(HUB),
                    vec![attempt(HUB, 2_000, None, 0)],
                    200,
                ),
                // Began at 800 (500 ms before its end at 1300), failed on the origin at 1000,
                // waited 50 ms, then took 250 ms on the mirror.
                image(
                    ImageStatus::Pulled,
                    Some(MIRROR),
                    vec![
                        attempt(HUB, 1_000, Some(ErrorClass::Eof), 50),
                        attempt(MIRROR, 1_300, None, 0),
                    ],
                    500,
                ),
                image(ImageStatus::Present, Some("local"), Vec::new(), 0),
            ],
            requests: vec![request(HUB, Some(ErrorClass::Eof)), request(MIRROR, None)],
            duration_ms: 1,
            source_orders: Vec::new(),
        };
        assert_eq!(
            report.health_samples(),
            [
                Sample::request(HUB, Some(ErrorClass::Eof)),
                Sample::request(MIRROR, None),
                Sample::pull(HUB, Ok(200)),
                Sample::served(HUB),
                Sample::pull(HUB, Err(ErrorClass::Eof)),
                Sample::pull(MIRROR, Ok(250)),
                Sample::served(MIRROR),
            ]
        );
    }

    #[test]
    fn local_daemons_can_reach_the_relay() {
        assert!(daemon_is_local("unix:///var/run/docker.sock"));
        assert!(daemon_is_local("tcp://127.0.0.1:2375"));
        assert!(daemon_is_local("tcp://localhost:2375"));
        assert!(!daemon_is_local("tcp://docker:2375"));
        assert!(!daemon_is_local("tcp://10.1.2.3:2376"));
        assert!(!daemon_is_local("ssh://builder@build-host"));
        assert_eq!(
            relay_unreachable_reason("unix:///var/run/docker.sock", false),
            None
        );
        assert!(
            relay_unreachable_reason("unix:///run/user/1000/docker.sock", true)
                .unwrap()
                .contains("rootless")
        );
        assert!(
            relay_unreachable_reason("tcp://10.1.2.3:2375", false)
                .unwrap()
                .contains("tcp://10.1.2.3:2375")
        );
    }
}
