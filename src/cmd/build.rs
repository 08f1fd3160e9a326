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
    let multi_platform = ws
        .plan
        .services
        .iter()
        .any(|s| s.service.platforms.len() > 1);
    let backend = Backend::choose(
        settings.builder,
        settings.buildx_builder.as_deref(),
        multi_platform,
        &engine,
    )
    .await?;
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
    let publisher = Publisher::start(settings.publish.clone(), ui);

    let plan = &ws.plan;
    let wanted: BTreeSet<&String> = settings
        .selected
        .iter()
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
    let prefetch_report = prefetch_report.ok();
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
        engine_version,
        pull_via: prefetch_report.as_ref().map(|p| p.via.to_string()),
        repository: ws.actions.repository.clone(),
        commit: ws.actions.sha.clone(),
        workflow_run: ws.actions.run_id.clone(),
        shard: settings.shard.map(|s| s.to_string()),
        interrupted: exit_on_signal.is_some(),
    };
    let mut results = outcome.results;
    add_cancelled(&mut results, &ws, &settings, &backend);
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
    let stop_early = settings.prefetch.failure == PrefetchFailure::Fail;
    Ok(if let Some(signal) = exit_on_signal {
        signal
    } else if report.totals.failed + report.totals.skipped + report.totals.cancelled > 0 {
        Exit::BuildFailed
    } else if stop_early && report.totals.base_images_missing > 0 {
        Exit::ImagesMissing
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
    let work = async {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
            report
        };
        if stop_early {
            let report = prefetch_run.await;
            if report.as_ref().is_ok_and(|r| r.failed().count() > 0) {
                return (report, None);
            }
            let builds = build(None).await;
            (report, Some(builds))
        } else {
            let (report, builds) = tokio::join!(prefetch_run, build(Some(rx)));
            (report, Some(builds))
        }
    };
    tokio::pin!(work);
    tokio::select! {
        (report, builds) = &mut work => (report, builds, None),
        signal = super::interrupted() => {
            ui.note("interrupted: cancelling running builds and writing a partial report");
            cancel.cancel();
            match tokio::time::timeout(Duration::from_secs(4), &mut work).await {
                Ok((report, builds)) => (report, builds, Some(signal)),
                Err(_) => (Err(anyhow::anyhow!("interrupted")), None, Some(signal)),
            }
        }
    }
}

/// Services that never got a result (cut by a signal) are cancelled, never dropped.
fn add_cancelled(
    results: &mut Vec<ServiceResult>,
    ws: &Workspace,
    settings: &BuildSettings,
    backend: &Backend,
) {
    for i in &settings.selected {
        let service = &ws.plan.services[*i];
        if results.iter().any(|r| r.name == service.name) {
            continue;
        }
        results.push(ServiceResult {
            name: service.name.clone(),
            image: service.image.clone(),
            tags: service.tags.clone(),
            status: ServiceStatus::Cancelled,
            duration_ms: 0,
            attempts: 0,
            builder: backend.label(),
            cached_steps: None,
            total_steps: None,
            image_id: None,
            size: None,
            log_path: None,
            dockerfile: service.dockerfile.clone(),
            failure: None,
            skipped_reason: Some("cancelled".into()),
            log_tail: Vec::new(),
            reused: false,
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
