//! Glue between the command line and the library: load, validate, run, render.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use tokio_util::sync::CancellationToken;

use crate::build::{
    self,
    backend::Backend,
    run::{BuildEvent, BuildOptions},
};
use crate::cli::{BuildArgs, BuilderChoice};
use crate::engine::Buildx;
use crate::report::{PublishContext, Publisher, Report, RunMeta, ServiceResult, ServiceStatus};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{
    GlobalArgs, OutputFormat, PlanArgs, PlanCommandArgs, PrefetchArgs, PrefetchFailure,
};
use crate::engine::Engine;
use crate::error::{Error, Exit};
use crate::plan::{Naming, Plan, plan};
use crate::prefetch::{self, ImageStatus, Mirrors, PrefetchOptions, PrefetchReport};
use crate::project::Project;
use crate::report::now_ms;
use crate::retry::RetryPolicy;
use crate::ui::Ui;

fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>, Error> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage {
                    what: format!("--build-arg {arg:?}"),
                    reason: "expected KEY=VALUE".into(),
                })
        })
        .collect()
}

fn load_plan(global: &GlobalArgs, args: &PlanArgs) -> Result<(Project, Plan), Error> {
    let root = std::env::current_dir().map_err(|e| Error::Usage {
        what: "the working directory".into(),
        reason: e.to_string(),
    })?;
    let project = Project::load(&root, global.config.as_deref())?;
    let tag = match (&args.tag, &project.settings.tag) {
        (Some(tag), _) => Some((tag.as_str(), "--tag")),
        (None, Some(tag)) => Some((tag.as_str(), project.source.as_str())),
        (None, None) => None,
    };
    let prefix = args
        .prefix
        .as_deref()
        .or(project.settings.prefix.as_deref());
    let naming = Naming::resolve(&root, prefix, tag)?;
    let plan = plan(&project, &naming, &parse_build_args(&args.build_args)?)?;
    Ok((project, plan))
}

pub async fn run_plan(global: &GlobalArgs, args: &PlanCommandArgs, ui: &Ui) -> Result<Exit, Error> {
    let (project, plan) = load_plan(global, &args.plan)?;
    let key = crate::cache::cache_key(&plan, &config_bytes(&project))
        .with_prefix(&args.cache_key_prefix)?;
    if let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) {
        let text = crate::report::outputs::render(&[
            ("cache-key".to_string(), key.key.clone()),
            (
                "cache-restore-keys".to_string(),
                key.restore_keys.join("\n"),
            ),
        ]);
        let path = std::path::PathBuf::from(path);
        crate::report::outputs::append(&path, &text).map_err(|e| Error::Environment {
            what: format!("GITHUB_OUTPUT ({})", path.display()),
            reason: e.to_string(),
        })?;
    }
    if args.matrix {
        let n = match (args.shards, args.max_per_shard) {
            (Some(n), _) => n,
            (None, Some(k)) => crate::matrix::shards_for_max(plan.services.len(), k),
            (None, None) => 1,
        };
        let weights = shard_weights(&plan, args.plan.durations.as_deref())?;
        let include = crate::matrix::shard(&plan.graph, &weights, n);
        ui.result(&serde_json::to_string(&crate::matrix::Matrix { include }).unwrap_or_default());
        return Ok(Exit::Success);
    }
    match ui.format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(&plan).unwrap_or_default();
            value["cache_key"] = serde_json::to_value(&key).unwrap_or_default();
            ui.json(&value)
        }
        OutputFormat::Human => ui.result(&format!(
            "{}\nCache key: {}\n  restore keys: {}",
            render_plan(&plan),
            key.key,
            key.restore_keys.join(", ")
        )),
    }
    Ok(Exit::Success)
}

/// Per-service weights for sharding: durations from a previous report, else 1 each.
fn shard_weights(plan: &Plan, report: Option<&std::path::Path>) -> Result<Vec<f64>, Error> {
    let Some(path) = report else {
        return Ok(vec![1.0; plan.services.len()]);
    };
    let bad = |reason: String| Error::Input {
        input: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| bad(format!("not an ai-infra-build report: {e}")))?;
    let durations = report
        .services
        .iter()
        .filter(|s| s.duration_ms > 0)
        .map(|s| (s.name.clone(), s.duration_ms as f64 / 1000.0))
        .collect();
    Ok(crate::matrix::weights_from_durations(
        &plan.graph.names,
        &durations,
    ))
}

fn render_plan(plan: &Plan) -> String {
    let mut out = format!(
        "Services ({}, from {}; images {}<service>:{}, tag from {}):\n",
        plan.services.len(),
        plan.source,
        plan.naming.prefix,
        plan.naming.tag,
        plan.naming.tag_source
    );
    for name in &plan.order {
        let Some(s) = plan.services.iter().find(|s| &s.name == name) else {
            continue;
        };
        let deps = if s.depends_on.is_empty() {
            String::new()
        } else {
            format!("  after {}", s.depends_on.join(", "))
        };
        out.push_str(&format!(
            "  {:<20} {}  {}  [{}]{deps}\n",
            s.name, s.image, s.dockerfile, s.origin
        ));
    }
    out.push_str(&format!(
        "Base images to prefetch ({}):\n",
        plan.base_images.len()
    ));
    for need in &plan.base_images {
        let uses: Vec<String> = need
            .uses
            .iter()
            .map(|u| format!("{}:{}", PathBuf::from(&u.dockerfile).display(), u.line))
            .collect();
        out.push_str(&format!("  {}  <- {}\n", need.reference, uses.join(", ")));
    }
    out.trim_end().to_string()
}

/// Turns the prefetch flags (and the config file's settings) into options.
pub fn prefetch_options(args: &PrefetchArgs, project: &Project) -> Result<PrefetchOptions, Error> {
    let mirrors = project_mirrors(project, &args.mirrors)?;
    Ok(PrefetchOptions {
        concurrency: usize::from(args.pull_concurrency),
        policy: RetryPolicy {
            max_retries: args.max_retries,
            deadline: Duration::from_secs(args.retry_deadline),
            ..RetryPolicy::default()
        },
        idle_timeout: Duration::from_secs(args.idle_timeout),
        mirrors,
        mirror_first: args.mirror_first || project.settings.mirror_first.unwrap_or(false),
        pull: args.pull,
        via: args.pull_via,
        notify: None,
        health: args.cache_dir.as_deref().map(|dir| {
            std::sync::Arc::new(crate::health::HealthStore::load(dir).unwrap_or_default())
        }),
    })
}

pub async fn run_prefetch(
    global: &GlobalArgs,
    args: &PrefetchArgs,
    ui: &Ui,
) -> Result<Exit, Error> {
    let (project, plan) = load_plan(global, &args.plan)?;
    let options = prefetch_options(args, &project)?;
    let engine = Engine::connect(Duration::from_secs(10)).await?;
    let mut cache = open_cache(args, &plan, &project, ui);
    let mut needs = plan.base_images.clone();
    let mut vouched = prefetch::Vouched::default();
    if let Some(c) = cache.as_mut() {
        vouched = restore_from_cache(c, &engine, &mut needs, &options, ui).await;
    }
    let mut report = prefetch::prefetch(&engine, needs, &options)
        .await
        .map_err(|e| Error::Usage {
            what: "prefetch".into(),
            reason: format!("{e:#}"),
        })?;
    vouched.merge_into(&mut report);
    if let Some(mut c) = cache {
        c.save_base_images(&engine, &report.images).await;
        cache_warnings(&mut c, ui);
        ui.note(&render_cache(&c.close()));
    }
    if let Some(dir) = &args.cache_dir
        && let Err(err) = crate::health::HealthStore::update(dir, &report, now_ms())
    {
        ui.note(&format!("warning: {err}"));
    }
    match ui.format {
        OutputFormat::Json => ui.json(&report),
        OutputFormat::Human => ui.result(&render_prefetch(&report, ui)),
    }
    let missing = report.failed().count();
    Ok(match (missing, args.prefetch_failure) {
        (0, _) => Exit::Success,
        (_, PrefetchFailure::Warn | PrefetchFailure::Fail) => Exit::ImagesMissing,
    })
}

/// The mirrors of the project's config file, then the `--mirror` values.
pub(crate) fn project_mirrors(project: &Project, flags: &[String]) -> Result<Mirrors, Error> {
    let mut mirrors = Mirrors::default();
    for (registry, hosts) in &project.settings.mirrors {
        mirrors
            .add(&format!("{registry}={}", hosts.join(",")))
            .map_err(|reason| Error::Input {
                input: project.source.clone(),
                reason,
            })?;
    }
    add_mirror_flags(&mut mirrors, flags)?;
    Ok(mirrors)
}

/// Adds the `--mirror` values (`REGISTRY=HOST[,HOST...]`; blank ones skipped) to `mirrors`.
pub(crate) fn add_mirror_flags(mirrors: &mut Mirrors, specs: &[String]) -> Result<(), Error> {
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        mirrors.add(spec).map_err(|reason| Error::Usage {
            what: "--mirror".into(),
            reason,
        })?;
    }
    Ok(())
}

fn render_prefetch(report: &PrefetchReport, ui: &Ui) -> String {
    let mut out = String::new();
    let ok: Vec<_> = report
        .images
        .iter()
        .filter(|i| i.status != ImageStatus::Failed)
        .collect();
    let failed: Vec<_> = report.failed().collect();
    out.push_str(&format!(
        "Base images: {}/{} available ({} pulled, {} already present) in {:.1}s via {}\n",
        ok.len(),
        report.images.len(),
        ok.iter()
            .filter(|i| i.status == ImageStatus::Pulled)
            .count(),
        ok.iter()
            .filter(|i| i.status == ImageStatus::Present)
            .count(),
        report.duration_ms as f64 / 1000.0,
        report.via,
    ));
    for image in &ok {
        let tries = image.attempts.len();
        out.push_str(&format!(
            "  {} {}  from {}{}\n",
            ui.good("ok  "),
            image.reference,
            image.source.as_deref().unwrap_or("?"),
            if tries > 1 {
                format!(", {tries} attempts")
            } else {
                String::new()
            }
        ));
    }
    for image in &failed {
        let error = image.error.as_ref();
        let uses: Vec<String> = image
            .uses
            .iter()
            .map(|u| format!("{}:{}", u.dockerfile.display(), u.line))
            .collect();
        out.push_str(&format!(
            "  {} {}  [{}] {}\n        used at {}\n",
            ui.bad("FAIL"),
            image.reference,
            error.map_or("other".into(), |e| e.class.to_string()),
            error.map_or("", |e| e.message.as_str()),
            uses.join(", ")
        ));
    }
    if let Some(d) = crate::report::diagnosis::diagnose(report) {
        out.push_str(&crate::report::terminal::render_diagnosis(&d, ui));
        out.push('\n');
    }
    out.push_str(&format!(
        "Network: {} retries, {} failed pulls, {:.1}s waiting on retries",
        report.total_retries(),
        failed.len(),
        report.total_wait_ms() as f64 / 1000.0
    ));
    out
}

/// Which services to build: `names` (from `build SERVICE...`) or `--only`, minus `--skip`,
/// plus their dependencies unless `--no-deps`. Unknown names are an input error.
pub fn select_services(
    plan: &Plan,
    names: &[String],
    only: &[String],
    skip: &[String],
    no_deps: bool,
) -> Result<BTreeSet<usize>, Error> {
    let index = |name: &String, flag: &str| {
        plan.services
            .iter()
            .position(|s| &s.name == name)
            .ok_or_else(|| Error::Usage {
                what: format!("{flag} {name:?}"),
                reason: format!(
                    "no such service; the services are: {}",
                    plan.services
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    };
    let wanted: Vec<&String> = names
        .iter()
        .chain(only.iter())
        .filter(|n| !n.trim().is_empty())
        .collect();
    let roots: Vec<usize> = if wanted.is_empty() {
        (0..plan.services.len()).collect()
    } else {
        wanted
            .into_iter()
            .map(|n| {
                index(
                    n,
                    if names.contains(n) {
                        "service"
                    } else {
                        "--only"
                    },
                )
            })
            .collect::<Result<_, _>>()?
    };
    let skipped: BTreeSet<usize> = skip
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| index(n, "--skip"))
        .collect::<Result<_, _>>()?;
    let mut selected = if no_deps {
        roots.iter().copied().collect()
    } else {
        plan.graph.closure(&roots)
    };
    selected.retain(|i| !skipped.contains(i));
    Ok(selected)
}

/// With `--buildx-builder NAME`: the builder (which must exist), and, when it pulls base
/// images by itself (any driver but `docker`), advice about mirrors we cannot apply to it.
async fn remote_builder(
    args: &BuildArgs,
    options: &PrefetchOptions,
    engine: &Engine,
) -> Result<Option<(crate::engine::BuildxBuilder, Vec<String>)>, Error> {
    let Some(name) = &args.buildx_builder else {
        return Ok(None);
    };
    let store = engine
        .facts()
        .await
        .map(|f| f.containerd_image_store)
        .unwrap_or(false);
    let builders = crate::engine::buildx_builders(Duration::from_secs(10), store)
        .await
        .map_err(|reason| Error::Environment {
            what: "--buildx-builder".into(),
            reason,
        })?;
    let Some(builder) = builders.iter().find(|b| &b.name == name).cloned() else {
        return Err(Error::Usage {
            what: format!("--buildx-builder {name:?}"),
            reason: format!(
                "no such buildx builder; the builders are: {} (create one with `docker buildx create`)",
                builders
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    if !builder.pulls_by_itself() {
        return Ok(None);
    }
    let advice = options
        .mirrors
        .0
        .iter()
        .map(|(registry, sources)| {
            let hosts: Vec<String> = sources.iter().map(|s| format!("\"{}\"", s.label())).collect();
            format!(
                "builder {} (driver {}) pulls base images itself, so the prefetch is skipped and our mirrors are not applied to it; \
                 add them to its buildkitd.toml: [registry.\"{registry}\"] mirrors = [{}]",
                builder.name,
                builder.driver,
                hosts.join(", ")
            )
        })
        .collect();
    Ok(Some((builder, advice)))
}

async fn choose_backend(args: &BuildArgs, engine: &Engine, plan: &Plan) -> Result<Backend, Error> {
    let buildx = || Backend::Buildx {
        builder: args.buildx_builder.clone(),
    };
    let engine_backend = || Backend::Engine {
        engine: engine.clone(),
        buildkit: AtomicBool::new(true),
    };
    Ok(match args.builder {
        BuilderChoice::Engine => engine_backend(),
        BuilderChoice::EngineClassic => Backend::Engine {
            engine: engine.clone(),
            buildkit: AtomicBool::new(false),
        },
        BuilderChoice::Buildx => match crate::engine::buildx(Duration::from_secs(10)).await {
            Buildx::Available { .. } => buildx(),
            Buildx::Unavailable { reason } => {
                return Err(Error::Environment {
                    what: "--builder buildx".into(),
                    reason: format!(
                        "buildx is not available ({reason}); install the docker-buildx plugin or use --builder engine"
                    ),
                });
            }
        },
        BuilderChoice::Auto => {
            if auto_needs_buildx(args, engine, plan).await {
                match crate::engine::buildx(Duration::from_secs(10)).await {
                    Buildx::Available { .. } => buildx(),
                    Buildx::Unavailable { .. } => engine_backend(),
                }
            } else {
                engine_backend()
            }
        }
    })
}

/// Whether `--builder auto` takes buildx rather than the Engine API. Each `docker buildx build`
/// is a process of its own (~0.2 s of CPU here even when every step is cached): on the small
/// services of a monorepo that is most of the build, and it made build-all slower than one
/// `docker buildx bake` (scripts/bench-build: 3.47 s vs 2.52 s cold; the Engine API: 1.89 s).
/// The Engine API builds with the daemon's BuildKit without it, so auto takes it unless buildx
/// is needed: a named buildx builder, a service with several platforms, or an engine with the
/// containerd image store (BuildKit over the API does not work there, moby#47717, and buildx
/// can export a layer cache there).
async fn auto_needs_buildx(args: &BuildArgs, engine: &Engine, plan: &Plan) -> bool {
    if args.buildx_builder.is_some() || plan.services.iter().any(|s| s.service.platforms.len() > 1)
    {
        return true;
    }
    engine
        .facts()
        .await
        .map_or(true, |facts| facts.containerd_image_store)
}

/// Waits for SIGINT or SIGTERM and returns the exit status it stands for.
async fn interrupted() -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Exit::Interrupted,
        _ = term.recv() => Exit::Terminated,
    }
}

/// `build-all` and `build SERVICE...`: prefetch and build, overlapping both: a service builds
/// as soon as its own base images and its dependencies are ready.
/// Opens `--cache-dir` (issue 7) with this run's cache key. A cache that cannot be used is a
/// warning, never a failure.
fn open_cache(
    args: &PrefetchArgs,
    plan: &Plan,
    project: &Project,
    ui: &Ui,
) -> Option<crate::cache::Cache> {
    let dir = args
        .cache_dir
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty())?;
    match crate::cache::Cache::open(dir, args.cache_max_size) {
        Ok(mut cache) => {
            cache.set_key(&crate::cache::cache_key(plan, &config_bytes(project)));
            cache_warnings(&mut cache, ui);
            Some(cache)
        }
        Err(e) => {
            ui.note(&format!("warning: {e}"));
            None
        }
    }
}

/// The config file's bytes (empty when the services were discovered).
fn config_bytes(project: &Project) -> Vec<u8> {
    std::fs::read(project.root.join(&project.source)).unwrap_or_default()
}

fn cache_warnings(cache: &mut crate::cache::Cache, ui: &Ui) {
    for w in cache.take_warnings() {
        ui.note(&format!("warning: {w}"));
    }
}

/// Restores base images from the cache before the prefetch; with `--pull always`, returns the
/// images a manifest check vouched for (taken out of `needs`).
async fn restore_from_cache(
    cache: &mut crate::cache::Cache,
    engine: &Engine,
    needs: &mut Vec<prefetch::ImageNeed>,
    options: &PrefetchOptions,
    ui: &Ui,
) -> prefetch::Vouched {
    let restored = cache.restore_base_images(engine, needs).await;
    if !restored.loaded.is_empty() || !restored.already_present.is_empty() {
        ui.note(&format!(
            "cache: {} base images loaded from {} ({:.1}s), {} already present",
            restored.loaded.len(),
            cache.dir().display(),
            restored.duration_ms as f64 / 1000.0,
            restored.already_present.len()
        ));
    }
    let mut vouched = prefetch::Vouched::default();
    if options.pull == prefetch::PullPolicy::Always {
        vouched = cache.vouch_current(engine, needs, options).await;
        needs.retain(|n| {
            !vouched
                .images
                .iter()
                .any(|v| v.reference == n.reference.to_string())
        });
    }
    cache_warnings(cache, ui);
    vouched
}

fn render_cache(stats: &crate::cache::CacheStats) -> String {
    format!(
        "cache: {} hits, {} misses ({} layer cache); {:.1} MB of {:.1} MB budget, {} evictions",
        stats.hits,
        stats.misses,
        stats.mode,
        stats.size as f64 / 1e6,
        stats.max_size as f64 / 1e6,
        stats.evictions
    )
}

pub async fn run_build(
    global: &GlobalArgs,
    args: &BuildArgs,
    names: &[String],
    ui: &Ui,
) -> Result<Exit, Error> {
    let started = std::time::Instant::now();
    let started_at = crate::report::rfc3339_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let (project, plan) = load_plan(global, &args.prefetch.plan)?;
    let mut selected = select_services(&plan, names, &args.only, &args.skip, args.no_deps)?;
    if let Some(spec) = &args.shard {
        let (i, n) = crate::matrix::parse_shard(spec)?;
        let weights = shard_weights(&plan, args.prefetch.plan.durations.as_deref())?;
        let shards = crate::matrix::shard(&plan.graph, &weights, n);
        let mine: BTreeSet<usize> = shards
            .iter()
            .find(|s| s.index == i)
            .map(|s| s.members.iter().copied().collect())
            .unwrap_or_default();
        selected.retain(|s| mine.contains(s));
    }
    let mut options = prefetch_options(&args.prefetch, &project)?;
    if args.force {
        options.pull = crate::prefetch::PullPolicy::Always;
    }
    let engine = Engine::connect(Duration::from_secs(10)).await?;
    let backend = choose_backend(args, &engine, &plan).await?;
    let engine_version = engine.docker.version().await.ok().and_then(|v| v.version);
    let remote = remote_builder(args, &options, &engine).await?;
    let out_dir = std::path::absolute(&args.out_dir).unwrap_or_else(|_| args.out_dir.clone());
    let mut publish_ctx = PublishContext::from_env(
        out_dir.clone(),
        project.root.clone(),
        Vec::new(),
        args.github_token.clone(),
    );
    if let Some((_, advice)) = &remote {
        publish_ctx.warnings.extend(advice.iter().cloned());
    }
    if let Some(github) = publish_ctx.github.as_mut() {
        github.settings.comment = args.pr_comment;
        if !args.checks {
            github.settings.max_check_runs = 0;
        }
    }
    let publisher = Publisher::start(publish_ctx, ui);

    let wanted: BTreeSet<&String> = selected
        .iter()
        .flat_map(|i| plan.services[*i].base_images.iter())
        .collect();
    // A builder that is not the local daemon's pulls base images by itself: prefetching into
    // the local daemon would not help it.
    let mut needs: Vec<_> = if remote.is_some() {
        Vec::new()
    } else {
        plan.base_images
            .iter()
            .filter(|n| wanted.contains(&n.reference.to_string()))
            .cloned()
            .collect()
    };
    let mut cache = open_cache(&args.prefetch, &plan, &project, ui);
    let mut vouched = prefetch::Vouched::default();
    let mut layer_cache = None;
    if let Some(c) = cache.as_mut() {
        if !args.force && !args.no_cache {
            c.preload_service_images();
        }
        vouched = restore_from_cache(c, &engine, &mut needs, &options, ui).await;
        if let Ok(facts) = engine.facts().await {
            let names: Vec<String> = plan.services.iter().map(|s| s.name.clone()).collect();
            layer_cache = Some(
                c.prepare_build_cache(&engine, &facts, &backend, &names)
                    .await,
            );
        }
        cache_warnings(c, ui);
    }
    let builder_label = match &remote {
        Some((b, _)) => format!("buildx ({}, driver {})", b.name, b.driver),
        None => backend.label(),
    };
    let build_options = BuildOptions {
        parallel: args.parallel.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            usize::from,
        ),
        fail_fast: args.fail_fast,
        no_cache: args.force || args.no_cache,
        build_retries: args.build_retries,
        idle_timeout: Duration::from_secs(args.prefetch.idle_timeout.max(60) * 10),
        out_dir: out_dir.clone(),
        inline_cache: false,
        push: args.push,
        cache: layer_cache,
    };
    let cancel = CancellationToken::new();
    let mut exit_on_signal = None;
    let stop_early = args.prefetch.prefetch_failure == PrefetchFailure::Fail;
    let (prefetch_report, builds) = {
        let on_event = |event: BuildEvent| match event {
            BuildEvent::Started { service, attempt } => {
                publisher.service_started(&service, attempt)
            }
            BuildEvent::Finished {
                service,
                status,
                duration,
            } => publisher.service_finished(&service, status, duration),
        };

        let work = async {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let engine_ref = &engine;
            let vouched = &vouched;
            let prefetch_run = async move {
                let mut options = options;
                // Images the cache vouched for (--pull always) are ready now.
                for v in &vouched.images {
                    let _ = tx.send(v.clone());
                }
                options.notify = Some(tx);
                let mut report = prefetch::prefetch(engine_ref, needs, &options).await;
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
                let builds = build::run::run(
                    &engine,
                    &backend,
                    &plan,
                    &selected,
                    None,
                    &build_options,
                    cancel.clone(),
                    &on_event,
                )
                .await;
                (report, Some(builds))
            } else {
                let builds = build::run::run(
                    &engine,
                    &backend,
                    &plan,
                    &selected,
                    Some(rx),
                    &build_options,
                    cancel.clone(),
                    &on_event,
                );
                let (report, builds) = tokio::join!(prefetch_run, builds);
                (report, Some(builds))
            }
        };
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => outcome,
            signal = interrupted() => {
                exit_on_signal = Some(signal);
                ui.note("interrupted: cancelling running builds and writing a partial report");
                cancel.cancel();
                match tokio::time::timeout(Duration::from_secs(4), &mut work).await {
                    Ok(outcome) => outcome,
                    Err(_) => (Err(anyhow::anyhow!("interrupted")), None),
                }
            }
        }
    };
    let prefetch_report = prefetch_report.ok();
    if let (Some(dir), Some(p)) = (&args.prefetch.cache_dir, &prefetch_report)
        && let Err(err) = crate::health::HealthStore::update(dir, p, now_ms())
    {
        ui.note(&format!("warning: {err}"));
    }
    let builds = builds.unwrap_or_default();
    let run = RunMeta {
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        command: if names.is_empty() {
            "build-all".into()
        } else {
            format!("build {}", names.join(" "))
        },
        builder: builder_label.clone(),
        engine_version,
        pull_via: prefetch_report.as_ref().map(|p| p.via.to_string()),
        repository: std::env::var("GITHUB_REPOSITORY").ok(),
        commit: std::env::var("GITHUB_SHA").ok(),
        workflow_run: std::env::var("GITHUB_RUN_ID").ok(),
        shard: args.shard.clone(),
        interrupted: exit_on_signal.is_some(),
    };
    let mut results = builds.results;
    // Services that never got a result (cut by the signal) are cancelled, never dropped.
    for i in &selected {
        let name = &plan.services[*i].name;
        if !results.iter().any(|r| &r.name == name) {
            results.push(ServiceResult {
                name: name.clone(),
                image: plan.services[*i].image.clone(),
                tags: plan.services[*i].tags.clone(),
                status: ServiceStatus::Cancelled,
                duration_ms: 0,
                attempts: 0,
                builder: backend.label(),
                cached_steps: None,
                total_steps: None,
                image_id: None,
                size: None,
                log_path: None,
                dockerfile: plan.services[*i].dockerfile.clone(),
                failure: None,
                skipped_reason: Some("cancelled".into()),
                log_tail: Vec::new(),
                reused: false,
            });
        }
    }
    let cache_stats = match cache {
        Some(mut c) => {
            // Interrupted: no new archives (the runner may kill us any moment); the previous
            // cache stays as it was.
            if exit_on_signal.is_none()
                && let Some(p) = &prefetch_report
            {
                c.save_base_images(&engine, &p.images).await;
            }
            c.save_build_cache(&engine, &results, exit_on_signal.is_some())
                .await;
            cache_warnings(&mut c, ui);
            let stats = c.close();
            ui.note(&render_cache(&stats));
            Some(stats)
        }
        None => None,
    };
    let mut report = Report::new(run, prefetch_report.as_ref(), results, builds.failure_log);
    report.cache = cache_stats;
    publisher.finish(&report).await?;
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
