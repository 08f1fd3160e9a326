//! `build-all` and `build SERVICE...`: prefetch and build, overlapping both (a service builds
//! as soon as its own base images and its dependencies are ready), then publish every view
//! of the report. SIGINT/SIGTERM cancel the builds and still publish a partial report.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::actions_env::ActionsEnv;
use crate::build::PrefetchFailure;
use crate::build::backend::{Backend, RemoteBuilder};
use crate::build::run::{BuildEvent, BuildRun};
use crate::cache::Cache;
use crate::cli::{BuildArgs, GlobalArgs};
use crate::engine::Engine;
use crate::error::{Error, Exit};
use crate::prefetch::{self, PrefetchReport};
use crate::report::{Publisher, Report, RunMeta, ServiceResult, ServiceStatus};
use crate::settings::{BuildSettings, Workspace};
use crate::ui::Ui;

pub async fn run(
    global: &GlobalArgs,
    args: &BuildArgs,
    names: &[String],
    ui: &Ui,
    actions: ActionsEnv,
) -> Result<Exit, Error> {
    let started = std::time::Instant::now();
    let started_at = crate::clock::rfc3339_ms(crate::clock::now_ms());
    let ws = Workspace::load(global, &args.prefetch.plan, actions)?;
    ws.announce(ui);
    let mut settings = BuildSettings::resolve(args, names, &ws)?;
    let engine = Engine::connect(Duration::from_secs(10)).await?;
    let engine =
        crate::build::backend::builder_engine(settings.buildx_builder.as_deref(), engine).await?;
    let multi_platform = ws
        .plan
        .services
        .iter()
        .any(|s| s.service.platforms.len() > 1)
        || settings.options.platforms.len() > 1;
    let backend = Backend::choose(
        settings.backend,
        settings.buildx_builder.as_deref(),
        multi_platform,
        &settings.needs_buildx,
        &engine,
    )
    .await?;
    if let Some(note) = Backend::routing_note(settings.backend, &settings.needs_buildx) {
        settings.publish.warnings.push(note);
    }
    let engine_version = engine.docker.version().await.ok().and_then(|v| v.version);
    let remote = RemoteBuilder::find(
        settings.buildx_builder.as_deref(),
        &settings.prefetch.options.mirrors,
        &engine,
    )
    .await?;
    if let Some(r) = &remote {
        settings.publish.warnings.extend(r.advice.iter().cloned());
    }
    // Issue 15: `--changed-since`: the services the diff touches are built unasked.
    let (changed, why_not) =
        crate::settings::changed_services(&ws, settings.changed_since.as_ref())?;
    if let Some(why_not) = why_not {
        ui.note(&crate::text::clean_line(&why_not, 400));
    }
    let changed = changed.map(std::sync::Arc::new);
    settings.options.changed = changed.clone();
    if let Some(c) = &changed
        && !(settings.reuse.registry || settings.options.push)
    {
        for &i in &settings.selected {
            let name = &ws.plan.services[i].name;
            ui.note(&crate::text::clean_line(
                &match c.why(i) {
                    Some(why) => format!("{name}: build: {why} [changed-since]"),
                    None => format!(
                        "{name}: unchanged since {}: reused when the cache has its image, else built",
                        c.reference
                    ),
                },
                400,
            ));
        }
    }
    // Issue 15: what the registry has, decided before anything is pulled.
    if settings.reuse.registry || settings.options.push {
        match crate::build::reuse::Store::new(&settings.prefetch.options) {
            Ok(store) => {
                let inputs = settings.options.run_inputs();
                let reuse = crate::build::reuse::RunReuse::prepare(
                    store,
                    &ws.plan,
                    &settings.selected,
                    &inputs,
                    settings.reuse.registry,
                    settings.options.push,
                    changed.as_deref(),
                )
                .await;
                if settings.reuse.registry || changed.is_some() {
                    for d in reuse.decisions.values() {
                        ui.note(&crate::text::clean_line(
                            &format!("{}: {}", d.service, d.describe()),
                            400,
                        ));
                    }
                }
                settings.options.reuse = Some(std::sync::Arc::new(reuse));
            }
            Err(err) => settings
                .publish
                .warnings
                .push(format!("registry reuse is off: {err}")),
        }
    }
    let mut publisher = Publisher::start(settings.publish.clone(), ui);

    let plan = &ws.plan;
    let reused = |i: &usize| {
        settings
            .options
            .reuse
            .as_ref()
            .is_some_and(|r| r.is_reused(*i))
    };
    // A service reused from the registry needs none of its base images.
    let wanted: BTreeSet<&String> = settings
        .selected
        .iter()
        .filter(|i| !reused(i))
        .flat_map(|i| plan.services[*i].base_images.iter())
        .collect();
    // A builder that is not the local daemon's pulls base images by itself: prefetching into
    // the local daemon would not help it.
    let mut needs: Vec<_> = match remote {
        Some(_) => Vec::new(),
        None => plan
            .base_images
            .iter()
            .filter(|n| wanted.contains(&n.reference.to_string()))
            .cloned()
            .collect(),
    };
    let mut cache = super::cache::open(settings.prefetch.cache.as_ref(), &ws, ui);
    let mut vouched = prefetch::Vouched::default();
    if let Some(c) = cache.as_mut() {
        if !settings.no_cache {
            c.preload_service_images();
        }
        vouched =
            super::cache::restore(c, &engine, &mut needs, &settings.prefetch.options, ui).await;
        if let Ok(facts) = engine.facts().await {
            let names: Vec<String> = plan.services.iter().map(|s| s.name.clone()).collect();
            settings.options.cache = Some(
                c.prepare_build_cache(&engine, &facts, &backend, &names)
                    .await,
            );
        }
        super::cache::warnings(c, ui);
    }
    let builder_label = match &remote {
        Some(r) => r.label(),
        None => backend.label(),
    };

    if settings.options.parallel == 0 {
        let memory = engine.docker.info().await.ok().and_then(|i| i.mem_total);
        let choice = crate::build::parallelism::default(
            settings.selected.len(),
            memory.and_then(|m| u64::try_from(m).ok()),
        );
        ui.note(&format!(
            "building {} at once: {} (--parallel to change)",
            choice.parallel, choice.why
        ));
        settings.options.parallel = choice.parallel;
    }
    let on_event = |event: BuildEvent| match event {
        BuildEvent::Started { service, attempt } => publisher.service_started(&service, attempt),
        BuildEvent::Finished {
            service,
            status,
            duration,
        } => publisher.service_finished(&service, status, duration),
    };
    let (prefetch_report, outcome, exit_on_signal) = prefetch_and_build(
        &engine, &backend, &ws, &settings, needs, vouched, &on_event, ui,
    )
    .await;
    let prefetch_report = match prefetch_report {
        Ok(report) => Some(report),
        // Cut by the signal: the report says the run was interrupted.
        Err(_) if exit_on_signal.is_some() => None,
        Err(err) => {
            // The builds went on and pulled their base images themselves; say so.
            let err = super::prefetch::prefetch_error(err);
            publisher.warning(format!(
                "the prefetch did not run ({err}); the builds pulled their base images without retries or mirrors{}",
                err.help().map(|h| format!(": {h}")).unwrap_or_default()
            ));
            None
        }
    };
    if let (Some(c), Some(p)) = (&settings.prefetch.cache, &prefetch_report)
        && let Err(err) =
            crate::health::HealthStore::update(&c.dir, &p.health_samples(), crate::clock::now_ms())
    {
        ui.warn(&err.to_string());
    }
    let outcome = outcome.unwrap_or_default();
    let run = RunMeta {
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        command: settings.command.clone(),
        builder: builder_label,
        engine_host: Some(engine.host.clone()),
        engine_version,
        pull_via: prefetch_report.as_ref().map(|p| p.via.to_string()),
        repository: ws.actions.repository.clone(),
        commit: ws.actions.sha.clone(),
        workflow_run: ws.actions.run_id.clone(),
        shard: settings.shard.map(|s| s.to_string()),
        interrupted: exit_on_signal.is_some(),
    };
    let stop_early = settings.prefetch.failure == PrefetchFailure::Fail;
    let missing: Vec<String> = prefetch_report
        .as_ref()
        .map(|p| p.failed().map(|i| i.reference.to_string()).collect())
        .unwrap_or_default();
    let mut results = outcome.results;
    // `--prefetch-failure fail` with images missing: nothing was built on purpose.
    let not_built = if exit_on_signal.is_none() && stop_early && !missing.is_empty() {
        NotBuilt::ImagesMissing(&missing)
    } else {
        NotBuilt::Cancelled
    };
    add_not_built(&mut results, &ws, &settings, &backend, not_built);
    let cache_stats = match cache {
        Some(c) => Some(
            save_cache(
                c,
                &engine,
                prefetch_report.as_ref(),
                &results,
                exit_on_signal.is_some(),
                ui,
            )
            .await,
        ),
        None => None,
    };
    let mut report = Report::new(run, prefetch_report.as_ref(), results, outcome.failure_log);
    report.cache = cache_stats;
    publisher.finish(&report).await?;
    Ok(if let Some(signal) = exit_on_signal {
        signal
    } else if stop_early && report.totals.base_images_missing > 0 {
        Exit::ImagesMissing
    } else if report.totals.failed + report.totals.skipped + report.totals.cancelled > 0 {
        Exit::BuildFailed
    } else {
        Exit::Success
    })
}

type PrefetchOutcome = anyhow::Result<PrefetchReport>;

/// Runs the prefetch and the builds (overlapping unless `--prefetch-failure fail`), until
/// done or a signal; on a signal the builds are cancelled and given 4 s to stop.
#[allow(clippy::too_many_arguments)]
async fn prefetch_and_build(
    engine: &Engine,
    backend: &Backend,
    ws: &Workspace,
    settings: &BuildSettings,
    needs: Vec<prefetch::ImageNeed>,
    vouched: prefetch::Vouched,
    on_event: &(dyn Fn(BuildEvent) + Sync),
    ui: &Ui,
) -> (PrefetchOutcome, Option<BuildRun>, Option<Exit>) {
    let cancel = CancellationToken::new();
    let stop_early = settings.prefetch.failure == PrefetchFailure::Fail;
    let build = |ready| {
        crate::build::run::run(
            engine,
            backend,
            &ws.plan,
            &settings.selected,
            ready,
            &settings.options,
            cancel.clone(),
            on_event,
        )
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // With `--prefetch-failure fail` the builds wait for the prefetch's verdict.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<bool>();
    let vouched = &vouched;
    let prefetch_run = async move {
        let mut options = settings.prefetch.options.clone();
        // Images the cache vouched for (--pull always) are ready now.
        for v in &vouched.images {
            let _ = tx.send(v.clone());
        }
        options.notify = Some(tx);
        let mut report = prefetch::prefetch(engine, needs, &options).await;
        if let Ok(r) = report.as_mut() {
            vouched.merge_into(r);
        }
        let _ = go_tx.send(!report.as_ref().is_ok_and(|r| r.failed().count() > 0));
        report
    };
    let builds_run = async {
        if !stop_early {
            return Some(build(Some(rx)).await);
        }
        tokio::select! {
            go = go_rx => match go {
                Ok(true) => Some(build(None).await),
                _ => None,
            },
            _ = cancel.cancelled() => None,
        }
    };
    tokio::pin!(prefetch_run);
    tokio::pin!(builds_run);
    let signal = super::interrupted();
    tokio::pin!(signal);
    let mut report: Option<PrefetchOutcome> = None;
    let mut builds: Option<Option<BuildRun>> = None;
    let exit = loop {
        if let (Some(_), Some(_)) = (&report, &builds) {
            break None;
        }
        tokio::select! {
            r = &mut prefetch_run, if report.is_none() => report = Some(r),
            b = &mut builds_run, if builds.is_none() => builds = Some(b),
            s = &mut signal => break Some(s),
        }
    };
    if exit.is_some() {
        // Cancel the builds and give them 4 s to stop; what finished is kept, also while the
        // prefetch still pulls (it is cut: its images count as not pulled).
        ui.note("interrupted: cancelling running builds and writing a partial report");
        cancel.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        if builds.is_none() {
            builds = tokio::time::timeout_at(deadline, &mut builds_run)
                .await
                .ok();
        }
        if report.is_none() {
            report = tokio::time::timeout_at(deadline, &mut prefetch_run)
                .await
                .ok();
        }
    }
    let report = report.unwrap_or_else(|| Err(anyhow::anyhow!("interrupted")));
    (report, builds.flatten(), exit)
}

/// Why a selected service has no result.
enum NotBuilt<'a> {
    /// Cut by a signal.
    Cancelled,
    /// `--prefetch-failure fail` stopped the run before any build: these images were missing.
    ImagesMissing(&'a [String]),
}

/// Services that never got a result are reported, never dropped: cancelled (cut by a
/// signal), or skipped because `--prefetch-failure fail` stopped the run.
fn add_not_built(
    results: &mut Vec<ServiceResult>,
    ws: &Workspace,
    settings: &BuildSettings,
    backend: &Backend,
    why: NotBuilt,
) {
    let (status, reason) = match why {
        NotBuilt::Cancelled => (ServiceStatus::Cancelled, "cancelled".to_string()),
        NotBuilt::ImagesMissing(images) => (
            ServiceStatus::Skipped,
            format!(
                "not built: --prefetch-failure fail and {} base image(s) missing ({})",
                images.len(),
                images.join(", ")
            ),
        ),
    };
    for i in &settings.selected {
        let service = &ws.plan.services[*i];
        if results.iter().any(|r| r.name == service.name) {
            continue;
        }
        results.push(ServiceResult {
            name: service.name.clone(),
            image: service.image.clone(),
            tags: service.tags.clone(),
            status,
            duration_ms: 0,
            attempts: 0,
            builder: backend.label(),
            cached_steps: None,
            total_steps: None,
            image_id: None,
            digest: None,
            size: None,
            log_path: None,
            dockerfile: service.dockerfile.clone(),
            failure: None,
            skipped_reason: Some(reason.clone()),
            log_tail: Vec::new(),
            reused: false,
            reused_from: None,
        });
    }
}

/// Saves base images and service images into the cache directory. Interrupted: no new
/// archives (the runner may kill us any moment); the previous cache stays as it was.
async fn save_cache(
    mut cache: Cache,
    engine: &Engine,
    prefetch: Option<&PrefetchReport>,
    results: &[ServiceResult],
    interrupted: bool,
    ui: &Ui,
) -> crate::cache::CacheStats {
    if !interrupted && let Some(p) = prefetch {
        cache.save_base_images(engine, &p.images).await;
    }
    cache.save_build_cache(engine, results, interrupted).await;
    super::cache::warnings(&mut cache, ui);
    let stats = cache.close();
    ui.note(&super::cache::render_stats(&stats));
    stats
}
