//! The scheduler: builds services as soon as their dependencies and their own base images
//! are ready, at most `parallel` at once; retries builds that failed for network reasons;
//! keeps every service's result; stops cleanly when cancelled.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, BuildJob, Log};
use super::failure::{self, BuildFailureClass};
use crate::clock::{now_ms, rfc3339_ms};
use crate::engine::Engine;
use crate::plan::Plan;
use crate::prefetch::ImageResult;
use crate::report::{FailureLogEntry, ServiceFailure, ServiceResult, ServiceStatus};
use crate::retry::{ErrorClass, RetryHint, RetryPolicy, Stopped};

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Builds at once (at least 1; `cmd::build` fills in the default, see
    /// [`super::parallelism`]).
    pub parallel: usize,
    pub fail_fast: bool,
    pub no_cache: bool,
    /// Retries of a build that failed for a network reason.
    pub build_retries: u32,
    /// Cut a build attempt that prints nothing for this long (retried as stalled); `None`:
    /// never (the default: a long, quiet compile is not a stall).
    pub idle_timeout: Option<Duration>,
    /// The longest one build attempt may take (`--build-timeout`); then it fails as
    /// `timed-out`, not retried. `None`: no limit.
    pub build_timeout: Option<Duration>,
    /// Where logs go (`<out_dir>/logs/<service>.log`).
    pub out_dir: PathBuf,
    /// Write inline cache metadata and use the previous image as cache source.
    pub inline_cache: bool,
    /// The cache directory's layer cache: per service `cache-from`/`cache-to` (issue 7).
    pub cache: Option<crate::cache::BuildCachePlan>,
    /// Push the image and its tags after a successful build.
    pub push: bool,
    /// `--label`: labels of every service (over the config file's).
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--platform`: the platforms of every service (replacing the config file's) when given.
    pub platforms: Vec<String>,
    /// Secrets, SSH and attestations (buildx only).
    pub extras: BuildxExtras,
    /// Credentials for every registry the Dockerfiles name (issue 12).
    pub registry_auth: crate::auth::EngineAuth,
    /// Issue 15: the cache directory's image of an unchanged service is used as it is.
    pub reuse_cache: bool,
    /// Issue 15: the registry's decisions (reuse, record), when the registry takes part.
    pub reuse: Option<std::sync::Arc<crate::build::reuse::RunReuse>>,
    /// Issue 15: `--changed-since`: the services the diff touches are built, unasked.
    pub changed: Option<std::sync::Arc<crate::build::changed::ChangedSince>>,
}

impl BuildOptions {
    /// What of these options goes into every service's inputs digest.
    pub fn run_inputs(&self) -> super::inputs::RunInputs {
        super::inputs::RunInputs::new(
            self.labels.clone(),
            self.platforms.clone(),
            self.extras.secrets.iter().map(|s| s.id.clone()).collect(),
            &self.extras.ssh,
        )
    }
}

pub use super::secrets::BuildxExtras;

/// Events the scheduler reports as it goes (for progress views).
#[derive(Debug, Clone)]
pub enum BuildEvent {
    Started {
        service: String,
        attempt: u32,
    },
    Finished {
        service: String,
        status: ServiceStatus,
        duration: Duration,
    },
}

/// The outcome of all builds.
#[derive(Debug, Default)]
pub struct BuildRun {
    pub results: Vec<ServiceResult>,
    pub failure_log: Vec<FailureLogEntry>,
}

/// Builds the `selected` services of `plan` (indices into `plan.services`).
///
/// `images_done` announces base images as the prefetch finishes them; a service starts once
/// all of its base images have been announced (or the channel closed) and its dependencies
/// succeeded.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    backend: &Backend,
    plan: &Plan,
    selected: &BTreeSet<usize>,
    mut images_done: Option<UnboundedReceiver<ImageResult>>,
    options: &BuildOptions,
    cancel: CancellationToken,
    on_event: &(dyn Fn(BuildEvent) + Sync),
) -> BuildRun {
    let reused = |i: usize| options.reuse.as_ref().is_some_and(|r| r.is_reused(i));
    // A service reused from the registry needs no base image (none is prefetched for it).
    let mut waiting_images: Vec<BTreeSet<String>> = plan
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if reused(i) {
                BTreeSet::new()
            } else {
                s.base_images.iter().cloned().collect()
            }
        })
        .collect();
    let mut results: HashMap<usize, ServiceResult> = HashMap::new();
    // Base images the prefetch had from no source, by reference.
    let mut lost: HashMap<String, ImageResult> = HashMap::new();
    let mut failure_log = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut stop_new = false;
    let deps = &plan.graph.deps;

    loop {
        // A service whose Dockerfile could not be planned fails alone (issue 17).
        for i in selected.iter().copied() {
            if results.contains_key(&i) {
                continue;
            }
            if let Some(error) = &plan.services[i].error {
                let mut r = skipped(plan, i, String::new(), ServiceStatus::Failed);
                r.skipped_reason = None;
                r.failure = Some(ServiceFailure {
                    class: match error.kind {
                        crate::plan::ServiceErrorKind::Syntax => BuildFailureClass::Syntax,
                        crate::plan::ServiceErrorKind::Input => BuildFailureClass::Input,
                    },
                    network_class: None,
                    message: error.message.clone(),
                    line: error.line,
                });
                on_event(BuildEvent::Finished {
                    service: r.name.clone(),
                    status: r.status,
                    duration: Duration::ZERO,
                });
                results.insert(i, r);
            }
        }
        // Skip services whose dependencies failed or were skipped.
        for i in selected.iter().copied() {
            if started.contains(&i) || results.contains_key(&i) {
                continue;
            }
            let bad = deps[i].iter().find(|d| {
                results
                    .get(d)
                    .is_some_and(|r| r.status != ServiceStatus::Success)
            });
            if let Some(&d) = bad {
                let r = skipped(
                    plan,
                    i,
                    match &plan.services[d].error {
                        Some(_) => format!(
                            "dependency failed: {} (its Dockerfile cannot be built)",
                            plan.services[d].name
                        ),
                        None => format!("dependency failed: {}", plan.services[d].name),
                    },
                    ServiceStatus::Skipped,
                );
                on_event(BuildEvent::Finished {
                    service: r.name.clone(),
                    status: r.status,
                    duration: Duration::ZERO,
                });
                results.insert(i, r);
            }
        }
        // Start what is ready.
        if !stop_new && !cancel.is_cancelled() {
            for i in selected.iter().copied() {
                if running.len() >= options.parallel.max(1) {
                    break;
                }
                if started.contains(&i) || results.contains_key(&i) {
                    continue;
                }
                let deps_ok = deps[i].iter().all(|d| {
                    !selected.contains(d)
                        || results
                            .get(d)
                            .is_some_and(|r| r.status == ServiceStatus::Success)
                });
                let images_ok = waiting_images[i].is_empty() || images_done.is_none();
                if deps_ok && images_ok {
                    started.insert(i);
                    let cancel = cancel.clone();
                    let lost: Vec<ImageResult> = plan.services[i]
                        .base_images
                        .iter()
                        .filter_map(|r| lost.get(r).cloned())
                        .collect();
                    running.push(async move {
                        (
                            i,
                            build_one(engine, backend, plan, i, options, lost, cancel, on_event)
                                .await,
                        )
                    });
                }
            }
        }
        let all_done = selected.iter().all(|i| results.contains_key(i));
        if all_done {
            break;
        }
        let stuck = running.is_empty() && images_done.is_none();
        if running.is_empty() && (stop_new || cancel.is_cancelled() || stuck) {
            // Nothing runs and nothing may start: the rest did not get to build.
            let rest: Vec<usize> = selected
                .iter()
                .copied()
                .filter(|i| !results.contains_key(i))
                .collect();
            for i in rest {
                let (reason, status) = if cancel.is_cancelled() {
                    (
                        "cancelled before it started".to_string(),
                        ServiceStatus::Cancelled,
                    )
                } else if stop_new {
                    (
                        "not started: --fail-fast stopped the run after a failure".to_string(),
                        ServiceStatus::Skipped,
                    )
                } else {
                    (
                        "not started: its dependencies could not be scheduled".to_string(),
                        ServiceStatus::Skipped,
                    )
                };
                let r = skipped(plan, i, reason, status);
                on_event(BuildEvent::Finished {
                    service: r.name.clone(),
                    status: r.status,
                    duration: Duration::ZERO,
                });
                results.insert(i, r);
            }
            break;
        }
        tokio::select! {
            Some((i, (result, log))) = running.next(), if !running.is_empty() => {
                if result.status == ServiceStatus::Failed && options.fail_fast {
                    stop_new = true;
                }
                failure_log.extend(log);
                on_event(BuildEvent::Finished { service: result.name.clone(), status: result.status, duration: Duration::from_millis(result.duration_ms) });
                results.insert(i, result);
            }
            image = recv(&mut images_done), if images_done.is_some() => {
                match image {
                    Some(done) => {
                        waiting_images.iter_mut().for_each(|w| { w.remove(&done.reference); });
                        if done.status == crate::prefetch::ImageStatus::Failed {
                            lost.insert(done.reference.clone(), done);
                        }
                    }
                    None => images_done = None,
                }
            }
            _ = cancel.cancelled(), if running.is_empty() && !cancel.is_cancelled() => {}
        }
    }
    let mut ordered: Vec<(usize, ServiceResult)> = results.into_iter().collect();
    ordered.sort_by_key(|(i, _)| *i);
    BuildRun {
        results: ordered.into_iter().map(|(_, r)| r).collect(),
        failure_log,
    }
}

async fn recv(rx: &mut Option<UnboundedReceiver<ImageResult>>) -> Option<ImageResult> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn skipped(plan: &Plan, i: usize, reason: String, status: ServiceStatus) -> ServiceResult {
    let s = &plan.services[i];
    ServiceResult {
        name: s.name.clone(),
        image: s.image.clone(),
        tags: s.tags.clone(),
        status,
        duration_ms: 0,
        attempts: 0,
        builder: String::new(),
        cached_steps: None,
        total_steps: None,
        image_id: None,
        digest: None,
        size: None,
        log_path: None,
        dockerfile: s.dockerfile.clone(),
        failure: None,
        skipped_reason: Some(reason),
        log_tail: Vec::new(),
        reused: false,
        reused_from: None,
    }
}

/// Builds one service, retrying network failures; never panics, always returns a result.
/// `lost`: its base images that the prefetch had from no source.
#[allow(clippy::too_many_arguments)]
async fn build_one(
    engine: &Engine,
    backend: &Backend,
    plan: &Plan,
    i: usize,
    options: &BuildOptions,
    lost: Vec<ImageResult>,
    cancel: CancellationToken,
    on_event: &(dyn Fn(BuildEvent) + Sync),
) -> (ServiceResult, Vec<FailureLogEntry>) {
    let s = &plan.services[i];
    let svc = &s.service;
    let started = Instant::now();
    let log_path = options.out_dir.join("logs").join(format!("{}.log", s.name));
    let _ = std::fs::remove_file(&log_path);
    let mut log = Log::create(log_path.clone());
    let dir_cache = options
        .cache
        .as_ref()
        .map(|c| c.job(&s.name))
        .unwrap_or_default();
    // A compose `dockerfile_inline`: written under the output directory and built from there
    // (as a Dockerfile outside the context: the engine gets it in the context's archive under
    // a generated name, buildx as `--file`).
    let dockerfile = match &svc.dockerfile_inline {
        Some(text) => match write_inline_dockerfile(&options.out_dir, &s.name, text) {
            Ok(path) => path,
            Err(err) => {
                let mut result = skipped(plan, i, String::new(), ServiceStatus::Failed);
                result.skipped_reason = None;
                result.builder = backend.label();
                result.failure = Some(ServiceFailure {
                    class: BuildFailureClass::Input,
                    network_class: None,
                    message: format!(
                        "cannot write its dockerfile_inline to {}: {err}; make the output directory (--out-dir) writable",
                        inline_dockerfile_path(&options.out_dir, &s.name).display()
                    ),
                    line: None,
                });
                return (result, Vec::new());
            }
        },
        None => svc.dockerfile.clone(),
    };
    let job = BuildJob {
        service: s.name.clone(),
        image: s.image.clone(),
        tags: s.tags.clone(),
        context: svc.context.clone(),
        dockerfile: dockerfile.clone(),
        build_args: s.build_args.clone(),
        target: svc.target.clone(),
        labels: svc
            .labels
            .iter()
            .chain(options.labels.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        network: svc.network.clone(),
        platforms: if options.platforms.is_empty() {
            svc.platforms.clone()
        } else {
            options.platforms.clone()
        },
        extras: options.extras.clone(),
        no_cache: options.no_cache,
        cache_from: if options.no_cache {
            Vec::new()
        } else {
            let mut from = if !dir_cache.cache_from.is_empty() {
                dir_cache.cache_from.clone()
            } else if options.inline_cache {
                vec![s.image.clone()]
            } else {
                Vec::new()
            };
            // The compose file's own `cache_from`, after ours.
            for c in &svc.cache_from {
                if !from.contains(c) {
                    from.push(c.clone());
                }
            }
            from
        },
        inline_cache: options.inline_cache || dir_cache.inline_cache,
        build_contexts: build_contexts(plan, i),
        cache_to: dir_cache.cache_to,
        // Without an idle cut, the backends wait on output for as long as the build runs.
        idle_timeout: options.idle_timeout.unwrap_or(Duration::MAX),
        registry_auth: options.registry_auth.clone(),
        push: options.push,
    };
    let dockerfile_text = std::fs::read_to_string(&dockerfile).unwrap_or_default();
    let policy = RetryPolicy {
        max_retries: options.build_retries,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(15),
        deadline: Duration::from_secs(3600),
    };
    let mut failure_log = Vec::new();
    let mut result = skipped(plan, i, String::new(), ServiceStatus::Failed);
    result.skipped_reason = None;
    result.builder = backend.label();
    result.log_path = Some(log_path.display().to_string());

    // Issue 15: `--changed-since` says the diff touches it: built, nothing looked up.
    let changed = match options.changed.as_ref().and_then(|c| c.why(i)) {
        Some(why) => {
            log.line(&format!("=== {}: built [changed-since]: {why}", s.name));
            true
        }
        None => false,
    };
    // Issue 15: the registry has an image made from the same inputs.
    if let Some(reuse) = options.reuse.as_deref().filter(|r| r.is_reused(i)) {
        on_event(BuildEvent::Started {
            service: s.name.clone(),
            attempt: 1,
        });
        let mut note = |line: &str| log.line(&format!("=== {}: {line}", s.name));
        match reuse.apply(engine, plan, i, &mut note).await {
            Ok(applied) => {
                log.line(&format!(
                    "=== {}: not built: the registry's {} ({}) was made from the same inputs",
                    s.name, applied.from, applied.digest
                ));
                result.status = ServiceStatus::Success;
                result.reused = true;
                result.reused_from = Some(crate::report::ReusedFrom {
                    source: crate::report::ReuseSource::Registry,
                    image: applied.from,
                    digest: Some(applied.digest.clone()),
                });
                result.digest = Some(applied.digest);
                result.image_id = applied.image_id;
                result.size = applied.size;
                result.attempts = 1;
                result.duration_ms = started.elapsed().as_millis() as u64;
                result.log_tail = log.tail();
                return (result, failure_log);
            }
            Err(why) => log.line(&format!("=== {}: building: {why}", s.name)),
        }
    }
    // Issue 7: the build inputs, and the cache directory's image made from the same ones.
    let tracked = options.cache.as_ref().filter(|c| c.tracks_inputs());
    let mut inputs = None;
    if let Some(cache) = tracked {
        let run_inputs = options.run_inputs();
        match super::inputs::digest(engine, &backend.label(), plan, i, &run_inputs).await {
            Ok(digest) => inputs = Some(digest),
            Err(why) => log.line(&format!("=== {}: build inputs not tracked: {why}", s.name)),
        }
        let reusable = inputs
            .as_deref()
            .filter(|_| !options.no_cache && options.reuse_cache)
            .filter(|_| !changed)
            .and_then(|d| cache.reusable(&s.name, d));
        if let Some(reuse) = reusable {
            on_event(BuildEvent::Started {
                service: s.name.clone(),
                attempt: 1,
            });
            match reuse_image(engine, &reuse.image_id, s).await {
                Ok(()) => {
                    log.line(&format!(
                        "=== {}: not built: the cache directory's image {} was made from the same inputs ({})",
                        s.name,
                        short(&reuse.image_id),
                        short(inputs.as_deref().unwrap_or_default())
                    ));
                    let pushed = if options.push {
                        push(&s.image, &s.tags, &policy, &mut log, &cancel).await
                    } else {
                        Ok(None)
                    };
                    match pushed {
                        Ok(digest) => {
                            if let Some(reuse) = options.reuse.as_deref().filter(|r| r.record) {
                                let note = reuse.record(engine, plan, i, digest.as_deref()).await;
                                log.line(&format!("=== {}: {note}", s.name));
                            }
                            result.status = ServiceStatus::Success;
                            result.digest = digest;
                            result.reused = true;
                            result.reused_from = Some(crate::report::ReusedFrom {
                                source: crate::report::ReuseSource::Cache,
                                image: reuse.image_id.clone(),
                                digest: Some(reuse.image_id.clone()),
                            });
                            result.cached_steps = reuse.total_steps;
                            result.total_steps = reuse.total_steps;
                            result.image_id = Some(reuse.image_id.clone());
                            result.size = engine
                                .docker
                                .inspect_image(&reuse.image_id)
                                .await
                                .ok()
                                .and_then(|i| i.size)
                                .map(|s| s.max(0) as u64);
                            if let Some(d) = inputs.take() {
                                cache.record_inputs(&s.name, d);
                            }
                        }
                        Err(err) => result.failure = Some(push_failure(err)),
                    }
                    result.attempts = 1;
                    result.duration_ms = started.elapsed().as_millis() as u64;
                    result.log_tail = log.tail();
                    return (result, failure_log);
                }
                Err(why) => log.line(&format!("=== {}: building: {why}", s.name)),
            }
        }
    }
    // Every try of the build goes through the one retry runner; a failure's class decides
    // whether it is tried again (network failures and stalls are).
    let tries = std::sync::atomic::AtomicU32::new(0);
    let building = std::sync::atomic::AtomicBool::new(false);
    let last_failure = std::sync::Mutex::new(None::<ServiceFailure>);
    let shared_log = tokio::sync::Mutex::new(&mut log);
    let failures = std::sync::Mutex::new(&mut failure_log);
    let attempt = || async {
        let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        building.store(true, std::sync::atomic::Ordering::SeqCst);
        on_event(BuildEvent::Started {
            service: s.name.clone(),
            attempt: n,
        });
        let mut log = shared_log.lock().await;
        log.line(&format!(
            "=== {} attempt {n} with {}",
            s.name,
            backend.label()
        ));
        let outcome = match options.build_timeout {
            // Dropping the build stops it: buildx is killed, the Engine API request closed.
            Some(limit) => tokio::time::timeout(limit, backend.build(&job, &mut log))
                .await
                .map_err(|_| limit),
            None => Ok(backend.build(&job, &mut log).await),
        };
        building.store(false, std::sync::atomic::Ordering::SeqCst);
        let (f, timed_out) = match outcome {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(f)) => (f, false),
            Err(limit) => (
                super::backend::BuildFailure {
                    message: format!(
                        "timed out after {} (build-timeout): the build was stopped; raise build-timeout if it needs longer",
                        failure::human_duration(limit)
                    ),
                },
                true,
            ),
        };
        let tail = log.tail();
        let (class, network_class) = if timed_out {
            (BuildFailureClass::TimedOut, None)
        } else {
            failure::classify(&f.message, &tail)
        };
        // A base image the prefetch had from no source: that is why (issue 17), at its FROM
        // line, and trying again will not help.
        let lost_base = lost_base_failure(&lost, &s.dockerfile, class, &f.message);
        let (class, network_class) = match &lost_base {
            Some(lost) => (lost.class, None),
            None => (class, network_class),
        };
        log.line(&format!("=== failed ({class:?}): {}", f.message));
        if let Ok(mut failures) = failures.lock() {
            failures.push(FailureLogEntry {
                at: rfc3339_ms(now_ms()),
                subject: s.name.clone(),
                kind: "build".into(),
                class: match class {
                    BuildFailureClass::Network => format!(
                        "network ({})",
                        network_class.map(|c| c.to_string()).unwrap_or_default()
                    ),
                    other => format!("{other:?}").to_ascii_lowercase(),
                },
                message: f.message.clone(),
            });
        }
        let failure = lost_base.unwrap_or_else(|| ServiceFailure {
            class,
            network_class,
            line: failure::failing_line(&dockerfile_text, &f.message, &tail),
            message: f.message,
        });
        if let Ok(mut last) = last_failure.lock() {
            *last = Some(failure.clone());
        }
        Err(BuildAttemptFailed(failure))
    };
    let outcome = policy
        .retry(&cancel, attempt, |failed: &BuildAttemptFailed, wait| {
            // The attempt is over (its lock released) when the runner decides to retry.
            if let Ok(mut log) = shared_log.try_lock() {
                let why = match failed.0.class {
                    BuildFailureClass::Builder => "the builder failed under load",
                    BuildFailureClass::Stalled => "no progress",
                    _ => "network failure",
                };
                log.line(&format!(
                    "=== retrying in {:.1}s ({why})",
                    wait.as_secs_f64()
                ));
            }
        })
        .await;
    let attempts = tries.into_inner();
    result.failure = last_failure.into_inner().unwrap_or_default();
    match outcome {
        Err(Stopped::Cancelled) => {
            result.status = ServiceStatus::Cancelled;
            if building.into_inner() {
                log.line("=== cancelled");
                result.skipped_reason = Some("cancelled while building".into());
            }
        }
        Err(Stopped::Failed(BuildAttemptFailed(failure))) => {
            result.failure = Some(failure);
            result.status = ServiceStatus::Failed;
        }
        Ok(out) if options.push => {
            // A builder that pushed itself (several platforms, attestations) gave the digest.
            let pushed = match out.pushed_digest.clone() {
                Some(digest) => Ok(Some(digest)),
                None => push(&s.image, &s.tags, &policy, &mut log, &cancel).await,
            };
            match pushed {
                Ok(digest) => {
                    if let Some(reuse) = options.reuse.as_deref().filter(|r| r.record) {
                        let note = reuse.record(engine, plan, i, digest.as_deref()).await;
                        log.line(&format!("=== {}: {note}", s.name));
                    }
                    result.status = ServiceStatus::Success;
                    result.digest = digest;
                    result.cached_steps = Some(out.cached_steps);
                    result.total_steps = Some(out.total_steps);
                    result.image_id = out.image_id;
                }
                Err(err) => {
                    result.failure = Some(push_failure(err));
                    result.status = ServiceStatus::Failed;
                }
            }
        }
        Ok(out) => {
            result.status = ServiceStatus::Success;
            result.builder = backend.label();
            result.cached_steps = Some(out.cached_steps);
            result.total_steps = Some(out.total_steps);
            let inspect = engine.docker.inspect_image(&s.image).await.ok();
            result.image_id = out
                .image_id
                .or_else(|| inspect.as_ref().and_then(|i| i.id.clone()));
            result.size = inspect.and_then(|i| i.size).map(|s| s.max(0) as u64);
        }
    }
    if result.status == ServiceStatus::Success {
        result.failure = None;
        if let (Some(cache), Some(d)) = (tracked, inputs) {
            cache.record_inputs(&s.name, d);
        }
    }
    result.attempts = attempts;
    result.duration_ms = started.elapsed().as_millis() as u64;
    result.log_tail = log.tail();
    (result, failure_log)
}

/// The failure of a build that needs a base image (`lost`, in plan order) the prefetch had
/// from no source, unless the build failed for its own reasons (a RUN step, the syntax, a
/// timeout): class `base-image` with what each source answered, at the image's FROM line.
/// A service's named build contexts as buildx takes them: compose's `service:NAME` is that
/// service's image (built before this one: the plan made it a dependency), as `docker
/// compose build` passes it; directories, `docker-image://` references and URLs as written.
fn build_contexts(plan: &Plan, i: usize) -> Vec<(String, String)> {
    plan.services[i]
        .service
        .additional_contexts
        .iter()
        .map(|(name, value)| {
            let value = match value.strip_prefix("service:") {
                Some(other) => plan
                    .services
                    .iter()
                    .find(|s| s.name == other || s.aliases.iter().any(|a| a == other))
                    .map_or_else(|| value.clone(), |s| format!("docker-image://{}", s.image)),
                None => value.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

/// Where a service's `dockerfile_inline` is written for its build.
fn inline_dockerfile_path(out_dir: &std::path::Path, service: &str) -> std::path::PathBuf {
    out_dir
        .join("dockerfiles")
        .join(format!("{service}.Dockerfile"))
}

fn write_inline_dockerfile(
    out_dir: &std::path::Path,
    service: &str,
    text: &str,
) -> std::io::Result<std::path::PathBuf> {
    let path = inline_dockerfile_path(out_dir, service);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

fn lost_base_failure(
    lost: &[ImageResult],
    dockerfile: &str,
    class: BuildFailureClass,
    message: &str,
) -> Option<ServiceFailure> {
    use BuildFailureClass::*;
    if matches!(class, RunFailed | Syntax | Stalled | TimedOut) {
        return None;
    }
    // The one the builder names (it stops at the first it cannot pull), else the first.
    let named = lost.iter().find(|image| {
        crate::reference::Reference::parse(&image.reference).is_ok_and(|r| {
            message.contains(&format!("{}:", r.path)) || message.contains(&format!("{}@", r.path))
        })
    });
    let image = named.or(lost.first())?;
    let verdict =
        crate::report::diagnosis::lost_verdict(&crate::report::diagnosis::source_answers(image))
            .unwrap_or_else(|| {
                format!(
                    "could not be had from any source ({})",
                    image
                        .error
                        .as_ref()
                        .map_or_else(|| "no error recorded".to_string(), |e| e.class.to_string())
                )
            });
    let line = image
        .uses
        .iter()
        .find(|u| u.line > 0 && u.dockerfile == std::path::Path::new(dockerfile))
        .map(|u| u.line);
    Some(ServiceFailure {
        class: BaseImage,
        network_class: None,
        line,
        message: format!(
            "base image {} {verdict}; the build could not pull it either: {message}",
            image.reference
        ),
    })
}

/// A failed build attempt, classified: network failures and stalls are tried again.
#[derive(Debug)]
struct BuildAttemptFailed(ServiceFailure);

impl RetryHint for BuildAttemptFailed {
    fn class(&self) -> ErrorClass {
        self.0.network_class.unwrap_or(ErrorClass::Other)
    }

    fn is_transient(&self) -> bool {
        self.0.class.is_transient()
    }

    /// A build waits the policy's full backoff whatever the network class.
    fn backoff_scale(&self) -> f64 {
        1.0
    }
}

/// A failed push, classified like a build failure.
fn push_failure(err: PushError) -> ServiceFailure {
    let message = err.to_string();
    let (class, network_class) = failure::classify(&message, &[]);
    ServiceFailure {
        class,
        network_class,
        line: None,
        message,
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// A reused image could not be given the service's name or a tag.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("cannot tag {name}: {source}")]
    Reference {
        name: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("cannot tag {id} as {name}: {source}")]
    Daemon {
        id: String,
        name: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Gives the image `id` the service's name and tags (instead of building it).
async fn reuse_image(
    engine: &Engine,
    id: &str,
    s: &crate::plan::ServicePlan,
) -> Result<(), TagError> {
    for name in std::iter::once(&s.image).chain(&s.tags) {
        let reference =
            crate::reference::Reference::parse(name).map_err(|source| TagError::Reference {
                name: name.clone(),
                source,
            })?;
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(&reference.familiar_name())
            .tag(reference.tag.as_deref().unwrap_or("latest"))
            .build();
        engine
            .docker
            .tag_image(id, Some(options))
            .await
            .map_err(|source| TagError::Daemon {
                id: short(id).to_string(),
                name: name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Pushes `image` and `tags` with `docker push` (which reads the user's registry credentials),
/// retrying transient registry failures through the retry runner: at least 3 retries, the
/// build policy's backoff, a deadline of [`PUSH_DEADLINE`] per reference, waits that end
/// when the run is cancelled. `docker push` does not show a rate-limited answer's
/// `Retry-After`, so after a rate-limited push the registry is asked for it
/// ([`retry_after_of`]) and the wait is at least that long.
async fn push(
    image: &str,
    tags: &[String],
    policy: &RetryPolicy,
    log: &mut Log,
    cancel: &CancellationToken,
) -> Result<Option<String>, PushError> {
    let policy = RetryPolicy {
        max_retries: policy.max_retries.max(3),
        deadline: PUSH_DEADLINE,
        ..*policy
    };
    let client = crate::registry::RegistryClient::new(crate::registry::Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(10),
    })
    .ok();
    let log = tokio::sync::Mutex::new(log);
    let mut digest = None;
    for reference in std::iter::once(image.to_string()).chain(tags.iter().cloned()) {
        let attempt = || async {
            let mut log = log.lock().await;
            push_once(&reference, &mut log, client.as_ref()).await
        };
        let pushed = policy
            .retry(cancel, attempt, |err, wait| {
                if let Ok(mut log) = log.try_lock() {
                    log.line(&format!(
                        "=== push of {reference} failed ({}); retrying in {:.1}s",
                        err.class,
                        wait.as_secs_f64()
                    ));
                }
            })
            .await;
        match pushed {
            // The tags name the same image: the first reference's digest is the image's.
            Ok(pushed) => digest = digest.or(pushed),
            Err(Stopped::Failed(err)) => return Err(PushError::Failed(err)),
            Err(Stopped::Cancelled) => return Err(PushError::Cancelled),
        }
    }
    Ok(digest)
}

/// The registry digest `docker push` reports for what it pushed (`TAG: digest: sha256:… size:
/// N`, the manifest's or index's `Docker-Content-Digest`).
fn pushed_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = &line[line.find("digest: ")? + "digest: ".len()..];
        let digest = rest.split_whitespace().next()?;
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
    })
}

/// How long a reference's push may be retried (no retry starts later than this after its
/// first try).
const PUSH_DEADLINE: Duration = Duration::from_secs(300);

/// Why the pushes of a service's references stopped.
#[derive(Debug, thiserror::Error)]
enum PushError {
    /// A reference's push failed and its retries ran out (or the failure was permanent).
    #[error("{}", .0.message)]
    Failed(PushFailed),
    #[error("cancelled while pushing")]
    Cancelled,
}

/// A failed `docker push` of one reference.
#[derive(Debug)]
struct PushFailed {
    class: ErrorClass,
    message: String,
    /// The registry's `Retry-After`, when it was rate limiting.
    retry_after: Option<Duration>,
}

impl RetryHint for PushFailed {
    fn class(&self) -> ErrorClass {
        self.class
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// A push is a whole transfer: it waits the full backoff whatever the class.
    fn backoff_scale(&self) -> f64 {
        1.0
    }
}

/// One `docker push` of `reference`.
async fn push_once(
    reference: &str,
    log: &mut Log,
    client: Option<&crate::registry::RegistryClient>,
) -> Result<Option<String>, PushFailed> {
    log.line(&format!("=== push {reference}"));
    // Not `--quiet`: its output leaves out the `digest:` line.
    let out = tokio::process::Command::new("docker")
        .args(["push", reference])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| PushFailed {
            class: ErrorClass::Other,
            message: format!("cannot run `docker push`: {e}"),
            retry_after: None,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    log.line(text.trim_end());
    if out.status.success() {
        return Ok(pushed_digest(&text));
    }
    let class = crate::retry::classify_message(&text);
    let retry_after = match (class, client) {
        (ErrorClass::RateLimited, Some(client)) => retry_after_of(client, reference).await,
        _ => None,
    };
    Err(PushFailed {
        class,
        message: format!("push of {reference} failed: {}", text.trim()),
        retry_after,
    })
}

/// The `Retry-After` a rate-limiting registry gives for `reference` now: the answer to a
/// `HEAD` of its manifest (a read, counted like the push's own requests by rate limiters in
/// front of a registry). `None` when the registry is not rate limiting that request or gives
/// no hint.
async fn retry_after_of(
    client: &crate::registry::RegistryClient,
    reference: &str,
) -> Option<Duration> {
    let parsed = crate::reference::Reference::parse(reference).ok()?;
    let endpoint = crate::endpoint::Endpoint::new(&parsed.registry_host());
    let tag = parsed.tag.as_deref().unwrap_or("latest");
    let path = format!("/v2/{}/manifests/{tag}", parsed.path);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static(
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        ),
    );
    match client
        .send(&endpoint, reqwest::Method::HEAD, &path, headers)
        .await
    {
        Ok(_) => None,
        Err(err) => err.retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::pushed_digest;

    #[test]
    fn the_pushed_digest_is_read_from_docker_push_output() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let out = format!(
            "The push refers to repository [127.0.0.1:5000/team/api]\n\
             5f70bf18a086: Pushed\n\
             v1: digest: {digest} size: 527\n"
        );
        assert_eq!(pushed_digest(&out), Some(digest));
        assert_eq!(pushed_digest("v1: digest: sha256:short size: 1"), None);
        assert_eq!(pushed_digest("127.0.0.1:5000/team/api:v1\n"), None);
    }
}
