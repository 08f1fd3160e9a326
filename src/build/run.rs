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
use crate::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub parallel: usize,
    pub fail_fast: bool,
    pub no_cache: bool,
    /// Retries of a build that failed for a network reason.
    pub build_retries: u32,
    pub idle_timeout: Duration,
    /// Where logs go (`<out_dir>/logs/<service>.log`).
    pub out_dir: PathBuf,
    /// Write inline cache metadata and use the previous image as cache source.
    pub inline_cache: bool,
    /// The cache directory's layer cache: per service `cache-from`/`cache-to` (issue 7).
    pub cache: Option<crate::cache::BuildCachePlan>,
    /// Push the image and its tags after a successful build.
    pub push: bool,
}

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
    let mut waiting_images: Vec<BTreeSet<String>> = plan
        .services
        .iter()
        .map(|s| s.base_images.iter().cloned().collect())
        .collect();
    let mut results: HashMap<usize, ServiceResult> = HashMap::new();
    let mut failure_log = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut stop_new = false;
    let deps = &plan.graph.deps;

    loop {
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
                    format!("dependency failed: {}", plan.services[d].name),
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
                    running.push(async move {
                        (
                            i,
                            build_one(engine, backend, plan, i, options, cancel, on_event).await,
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
                    Some(done) => waiting_images.iter_mut().for_each(|w| { w.remove(&done.reference); }),
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
        size: None,
        log_path: None,
        dockerfile: s.dockerfile.clone(),
        failure: None,
        skipped_reason: Some(reason),
        log_tail: Vec::new(),
        reused: false,
    }
}

/// Builds one service, retrying network failures; never panics, always returns a result.
async fn build_one(
    engine: &Engine,
    backend: &Backend,
    plan: &Plan,
    i: usize,
    options: &BuildOptions,
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
    let job = BuildJob {
        service: s.name.clone(),
        image: s.image.clone(),
        tags: s.tags.clone(),
        context: svc.context.clone(),
        dockerfile: svc.dockerfile.clone(),
        build_args: s.build_args.clone(),
        target: svc.target.clone(),
        labels: svc.labels.clone(),
        network: svc.network.clone(),
        platforms: svc.platforms.clone(),
        no_cache: options.no_cache,
        cache_from: if options.no_cache {
            Vec::new()
        } else if !dir_cache.cache_from.is_empty() {
            dir_cache.cache_from.clone()
        } else if options.inline_cache {
            vec![s.image.clone()]
        } else {
            Vec::new()
        },
        inline_cache: options.inline_cache || dir_cache.inline_cache,
        cache_to: dir_cache.cache_to,
        idle_timeout: options.idle_timeout,
    };
    let dockerfile_text = std::fs::read_to_string(&svc.dockerfile).unwrap_or_default();
    let policy = RetryPolicy {
        max_retries: options.build_retries,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(15),
        deadline: Duration::from_secs(3600),
    };
    let mut waits = policy.backoff();
    let mut attempts = 0u32;
    let mut failure_log = Vec::new();
    let mut result = skipped(plan, i, String::new(), ServiceStatus::Failed);
    result.skipped_reason = None;
    result.builder = backend.label();
    result.log_path = Some(log_path.display().to_string());

    // Issue 7: the build inputs, and the cache directory's image made from the same ones.
    let tracked = options.cache.as_ref().filter(|c| c.tracks_inputs());
    let mut inputs = None;
    if let Some(cache) = tracked {
        match super::inputs::digest(engine, &backend.label(), plan, i).await {
            Ok(digest) => inputs = Some(digest),
            Err(why) => log.line(&format!("=== {}: build inputs not tracked: {why}", s.name)),
        }
        let reusable = inputs
            .as_deref()
            .filter(|_| !options.no_cache)
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
                        Ok(())
                    };
                    attempts = 1;
                    match pushed {
                        Ok(()) => {
                            result.status = ServiceStatus::Success;
                            result.reused = true;
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
                        Err(message) => result.failure = Some(push_failure(message)),
                    }
                    result.attempts = attempts;
                    result.duration_ms = started.elapsed().as_millis() as u64;
                    result.log_tail = log.tail();
                    return (result, failure_log);
                }
                Err(why) => log.line(&format!("=== {}: building: {why}", s.name)),
            }
        }
    }
    loop {
        attempts += 1;
        on_event(BuildEvent::Started {
            service: s.name.clone(),
            attempt: attempts,
        });
        log.line(&format!(
            "=== {} attempt {attempts} with {}",
            s.name,
            backend.label()
        ));
        let outcome = tokio::select! {
            outcome = backend.build(&job, &mut log) => Some(outcome),
            _ = cancel.cancelled() => None,
        };
        match outcome {
            None => {
                log.line("=== cancelled");
                result.status = ServiceStatus::Cancelled;
                result.skipped_reason = Some("cancelled while building".into());
                break;
            }
            Some(Ok(out)) if options.push => {
                match push(&s.image, &s.tags, &policy, &mut log, &cancel).await {
                    Ok(()) => {
                        result.status = ServiceStatus::Success;
                        result.cached_steps = Some(out.cached_steps);
                        result.total_steps = Some(out.total_steps);
                        result.image_id = out.image_id;
                        break;
                    }
                    Err(message) => {
                        result.failure = Some(push_failure(message));
                        result.status = ServiceStatus::Failed;
                        break;
                    }
                }
            }
            Some(Ok(out)) => {
                result.status = ServiceStatus::Success;
                result.builder = backend.label();
                result.cached_steps = Some(out.cached_steps);
                result.total_steps = Some(out.total_steps);
                let inspect = engine.docker.inspect_image(&s.image).await.ok();
                result.image_id = out
                    .image_id
                    .or_else(|| inspect.as_ref().and_then(|i| i.id.clone()));
                result.size = inspect.and_then(|i| i.size).map(|s| s.max(0) as u64);
                break;
            }
            Some(Err(f)) => {
                let tail = log.tail();
                let (class, network_class) = failure::classify(&f.message, &tail);
                log.line(&format!("=== failed ({class:?}): {}", f.message));
                failure_log.push(FailureLogEntry {
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
                result.failure = Some(ServiceFailure {
                    class,
                    network_class,
                    line: failure::failing_line(&dockerfile_text, &f.message, &tail),
                    message: f.message,
                });
                let wait = if class.is_transient() {
                    waits.next()
                } else {
                    None
                };
                match wait {
                    Some(wait) => {
                        log.line(&format!(
                            "=== retrying in {:.1}s (network failure)",
                            wait.as_secs_f64()
                        ));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = cancel.cancelled() => {
                                result.status = ServiceStatus::Cancelled;
                                break;
                            }
                        }
                    }
                    None => {
                        result.status = ServiceStatus::Failed;
                        break;
                    }
                }
            }
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

/// A failed push, classified like a build failure.
fn push_failure(message: String) -> ServiceFailure {
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

/// Gives the image `id` the service's name and tags (instead of building it).
async fn reuse_image(
    engine: &Engine,
    id: &str,
    s: &crate::plan::ServicePlan,
) -> Result<(), String> {
    for name in std::iter::once(&s.image).chain(&s.tags) {
        let reference = crate::reference::Reference::parse(name)
            .map_err(|e| format!("cannot tag {name}: {e}"))?;
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(&reference.familiar_name())
            .tag(reference.tag.as_deref().unwrap_or("latest"))
            .build();
        engine
            .docker
            .tag_image(id, Some(options))
            .await
            .map_err(|e| format!("cannot tag {} as {name}: {e}", short(id)))?;
    }
    Ok(())
}

/// Pushes `image` and `tags` with `docker push` (which reads the user's registry credentials),
/// retrying transient registry failures.
async fn push(
    image: &str,
    tags: &[String],
    policy: &RetryPolicy,
    log: &mut Log,
    cancel: &CancellationToken,
) -> Result<(), String> {
    for reference in std::iter::once(image.to_string()).chain(tags.iter().cloned()) {
        let mut waits = RetryPolicy {
            max_retries: policy.max_retries.max(3),
            ..*policy
        }
        .backoff();
        loop {
            log.line(&format!("=== push {reference}"));
            let out = tokio::process::Command::new("docker")
                .args(["push", "--quiet", &reference])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::select! {
                out = out => out.map_err(|e| format!("cannot run `docker push`: {e}"))?,
                _ = cancel.cancelled() => return Err("cancelled while pushing".into()),
            };
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            log.line(text.trim_end());
            if out.status.success() {
                break;
            }
            let message = format!("push of {reference} failed: {}", text.trim());
            let transient = crate::retry::classify_message(&text).is_transient();
            match waits.next().filter(|_| transient) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(message),
            }
        }
    }
    Ok(())
}
