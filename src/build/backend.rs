//! The two ways we build an image: the Docker Engine API (`engine`: classic builder or
//! BuildKit through bollard's session, needs only the daemon socket) and `docker buildx build`
//! as a child process (`buildx`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::secrets::SecretSource;
use crate::context::stream::{self, ChunkWriter};
use crate::context::{ContextError, ContextStats, PreparedContext, prepare_context};
use crate::engine::{Engine, EngineError};

/// Everything one build needs.
#[derive(Debug, Clone)]
pub struct BuildJob {
    pub service: String,
    pub image: String,
    pub tags: Vec<String>,
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    /// Target platforms; the engine backend builds at most one.
    pub platforms: Vec<String>,
    pub no_cache: bool,
    /// Images to use as cache sources (`--cache-from`).
    pub cache_from: Vec<String>,
    /// Write inline cache metadata into the image (so it can serve as `cache-from` later).
    pub inline_cache: bool,
    /// `--cache-to` values (buildx only): the cache directory's local cache export.
    pub cache_to: Vec<String>,
    /// Named build contexts, `--build-context NAME=VALUE` (buildx only): a directory, a
    /// `docker-image://` reference (a service's own image, for compose's `service:NAME`), a URL.
    pub build_contexts: Vec<(String, String)>,
    pub idle_timeout: Duration,
    /// Secrets, SSH and attestations (buildx only; [`Backend::choose`] takes buildx for them).
    pub extras: super::secrets::BuildxExtras,
    /// Credentials for the registries the Dockerfile pulls from (mirrors included).
    pub registry_auth: crate::auth::EngineAuth,
    /// The run pushes the image and its tags after the build. buildx then pushes itself what
    /// the engine's image store cannot hold (several platforms, attestations), see
    /// [`BuildOutput::pushed_digest`].
    pub push: bool,
}

/// What a successful build produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildOutput {
    pub image_id: Option<String>,
    /// Steps the builder reported as cached, and all steps it reported.
    pub cached_steps: u32,
    pub total_steps: u32,
    /// The registry digest (manifest or index) when the builder pushed the image and its tags
    /// itself; the run then pushes nothing more.
    pub pushed_digest: Option<String>,
}

/// A failed build: the builder's error and whatever it printed last.
#[derive(Debug, Clone)]
pub struct BuildFailure {
    pub message: String,
}

/// A service's build log: written to a file as it comes, last lines kept for the report.
#[derive(Debug)]
pub struct Log {
    file: Option<std::fs::File>,
    pub path: PathBuf,
    tail: VecDeque<String>,
}

pub const TAIL_LINES: usize = 50;

impl Log {
    pub fn create(path: PathBuf) -> Log {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        Log {
            file,
            path,
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    pub fn line(&mut self, text: &str) {
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r');
            if let Some(file) = &mut self.file {
                let _ = writeln!(file, "{line}");
            }
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_string());
        }
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// Which backend the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuilderChoice {
    /// The Engine API, unless buildx is needed (see [`Backend::choose`]).
    #[default]
    Auto,
    /// `docker buildx build`.
    Buildx,
    /// The Engine API with BuildKit (falls back to the classic builder where BuildKit over
    /// the API does not work).
    Engine,
    /// The Engine API with the classic builder.
    EngineClassic,
}

/// Why the chosen backend cannot build here.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("--backend buildx: buildx is not available ({reason})")]
    BuildxUnavailable { reason: String },
    #[error("{what} need buildx, which is not available ({reason})")]
    BuildxNeeded { what: String, reason: String },
    #[error("--buildx-builder: cannot list the buildx builders ({reason})")]
    BuildersUnlisted {
        reason: crate::engine::BuildxLsError,
    },
    #[error("--buildx-builder {name:?}: no such buildx builder; the builders are: {known}")]
    NoSuchBuilder { name: String, known: String },
}

impl BackendError {
    /// What the user can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            BackendError::BuildxUnavailable { .. } => {
                "install the docker-buildx plugin or use --backend engine"
            }
            BackendError::BuildxNeeded { .. } => {
                "install the docker-buildx plugin (the Engine API backend cannot pass secrets or SSH agents to a build)"
            }
            BackendError::BuildersUnlisted { .. } => "check `docker buildx ls`",
            BackendError::NoSuchBuilder { .. } => "create one with `docker buildx create`",
        }
    }
}

/// The daemon a run works with: with `--buildx-builder NAME` of the `docker` driver whose
/// context names another daemon than ours (a remote engine), that daemon: the builder takes
/// its base images from there and leaves the images it built there, so the prefetch, the
/// image checks and the report go there too. Otherwise `engine` as it is (an unknown builder
/// is reported by [`RemoteBuilder::find`]).
pub async fn builder_engine(name: Option<&str>, engine: Engine) -> Result<Engine, EngineError> {
    let Some(name) = name else {
        return Ok(engine);
    };
    let Ok(builders) = crate::engine::buildx_builders(Duration::from_secs(10), false).await else {
        return Ok(engine);
    };
    let host = builders
        .iter()
        .find(|b| b.name == name)
        .and_then(crate::engine::docker_driver_host);
    match host {
        Some(host) if host != engine.host => {
            Engine::connect_to(&host, Duration::from_secs(10)).await
        }
        _ => Ok(engine),
    }
}

/// A `--buildx-builder` that pulls base images by itself (any driver but `docker`), and the
/// advice about mirrors we cannot apply to it.
#[derive(Debug, Clone)]
pub struct RemoteBuilder {
    pub builder: crate::engine::BuildxBuilder,
    pub advice: Vec<String>,
}

impl RemoteBuilder {
    /// With `--buildx-builder NAME`: the builder (which must exist); `None` when there is no
    /// such flag or the builder is the daemon's own (it sees the prefetched images).
    pub async fn find(
        name: Option<&str>,
        mirrors: &crate::prefetch::Mirrors,
        engine: &Engine,
    ) -> Result<Option<RemoteBuilder>, BackendError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let store = engine
            .facts()
            .await
            .map(|f| f.containerd_image_store)
            .unwrap_or(false);
        let builders = crate::engine::buildx_builders(Duration::from_secs(10), store)
            .await
            .map_err(|reason| BackendError::BuildersUnlisted { reason })?;
        let Some(builder) = builders.iter().find(|b| b.name == name).cloned() else {
            return Err(BackendError::NoSuchBuilder {
                name: name.to_string(),
                known: builders
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if !builder.pulls_by_itself() {
            return Ok(None);
        }
        let advice = mirrors
            .0
            .iter()
            .map(|(registry, sources)| {
                let hosts: Vec<String> =
                    sources.iter().map(|s| format!("\"{}\"", s.label())).collect();
                format!(
                    "builder {} (driver {}) pulls base images itself, so the prefetch is skipped and our mirrors are not applied to it; \
                     add them to its buildkitd.toml: [registry.\"{registry}\"] mirrors = [{}]",
                    builder.name,
                    builder.driver,
                    hosts.join(", ")
                )
            })
            .collect();
        Ok(Some(RemoteBuilder { builder, advice }))
    }

    /// The builder as the report names it.
    pub fn label(&self) -> String {
        format!(
            "buildx ({}, driver {})",
            self.builder.name, self.builder.driver
        )
    }
}

/// Which backend builds.
#[derive(Debug)]
pub enum Backend {
    Engine {
        engine: Engine,
        buildkit: AtomicBool,
    },
    Buildx {
        builder: Option<String>,
        /// The engine keeps images in containerd (its `docker` driver then builds several
        /// platforms and attestations).
        containerd_store: bool,
    },
}

impl Backend {
    /// The backend for `choice`. `auto` takes the Engine API unless buildx is needed: each
    /// `docker buildx build` is a process of its own (~0.2 s of CPU here even when every step
    /// is cached): on the small services of a monorepo that is most of the build, and it made
    /// build-all slower than one `docker buildx bake` (scripts/bench-build: 3.47 s vs 2.52 s
    /// cold; the Engine API: 1.89 s). The Engine API builds with the daemon's BuildKit without
    /// it, so auto takes it unless buildx is needed: a named buildx builder, a service with
    /// several platforms, or an engine with the containerd image store (BuildKit over the API
    /// does not work there, moby#47717, and buildx can export a layer cache there).
    ///
    /// `needs_buildx` names what this run needs that only buildx does (build secrets, SSH
    /// forwarding, attestations): bollard's BuildKit session over the Engine API has no
    /// secrets or SSH provider, so such a run builds with buildx whatever the choice
    /// ([`Backend::routing_note`] says so in the report).
    pub async fn choose(
        choice: BuilderChoice,
        buildx_builder: Option<&str>,
        multi_platform: bool,
        needs_buildx: &[&str],
        engine: &Engine,
    ) -> Result<Backend, BackendError> {
        let containerd_store = engine
            .facts()
            .await
            .is_ok_and(|facts| facts.containerd_image_store);
        let buildx = || Backend::Buildx {
            builder: buildx_builder.map(str::to_string),
            containerd_store,
        };
        let engine_backend = |buildkit: bool| Backend::Engine {
            engine: engine.clone(),
            buildkit: AtomicBool::new(buildkit),
        };
        let timeout = Duration::from_secs(10);
        if !needs_buildx.is_empty() {
            return match crate::engine::buildx(timeout).await {
                crate::engine::Buildx::Available { .. } => Ok(buildx()),
                crate::engine::Buildx::Unavailable { reason } => Err(BackendError::BuildxNeeded {
                    what: needs_buildx.join(", "),
                    reason,
                }),
            };
        }
        Ok(match choice {
            BuilderChoice::Engine => engine_backend(true),
            BuilderChoice::EngineClassic => engine_backend(false),
            BuilderChoice::Buildx => match crate::engine::buildx(timeout).await {
                crate::engine::Buildx::Available { .. } => buildx(),
                crate::engine::Buildx::Unavailable { reason } => {
                    return Err(BackendError::BuildxUnavailable { reason });
                }
            },
            BuilderChoice::Auto => {
                let needs_buildx = buildx_builder.is_some()
                    || multi_platform
                    || engine
                        .facts()
                        .await
                        .map_or(true, |facts| facts.containerd_image_store);
                match needs_buildx {
                    true => match crate::engine::buildx(timeout).await {
                        crate::engine::Buildx::Available { .. } => buildx(),
                        crate::engine::Buildx::Unavailable { .. } => engine_backend(true),
                    },
                    false => engine_backend(true),
                }
            }
        })
    }

    /// Why a run that asked for the Engine API builds with buildx (for the report's warnings).
    pub fn routing_note(choice: BuilderChoice, needs_buildx: &[&str]) -> Option<String> {
        if needs_buildx.is_empty() {
            return None;
        }
        let asked = match choice {
            BuilderChoice::Buildx => return None,
            BuilderChoice::Auto => "auto",
            BuilderChoice::Engine => "engine",
            BuilderChoice::EngineClassic => "engine-classic",
        };
        Some(format!(
            "--backend {asked}: this run builds with buildx, because it uses {} and the Engine API backend cannot pass them to BuildKit (its session has no secrets or SSH provider; its build request takes cache images only)",
            needs_buildx.join(", ")
        ))
    }

    /// The name the report shows (`engine (buildkit)`, `engine (classic)`, `buildx`).
    pub fn label(&self) -> String {
        match self {
            Backend::Engine { buildkit, .. } => {
                if buildkit.load(Ordering::Relaxed) {
                    "engine (buildkit)".into()
                } else {
                    "engine (classic)".into()
                }
            }
            Backend::Buildx {
                builder: Some(b), ..
            } => format!("buildx ({b})"),
            Backend::Buildx { builder: None, .. } => "buildx".into(),
        }
    }

    pub async fn build(&self, job: &BuildJob, log: &mut Log) -> Result<BuildOutput, BuildFailure> {
        match self {
            Backend::Engine { engine, buildkit } => {
                if buildkit.load(Ordering::Relaxed) {
                    match engine_build(engine, job, log, true).await {
                        Err(f) if buildkit_unusable(&f.message) => {
                            // moby#47717: BuildKit over the API fails on Engine 26 with the
                            // containerd store; the classic builder works there.
                            log.line(&format!("BuildKit through the Engine API is unusable here ({}); using the classic builder", f.message));
                            buildkit.store(false, Ordering::Relaxed);
                            engine_build(engine, job, log, false).await
                        }
                        other => other,
                    }
                } else {
                    engine_build(engine, job, log, false).await
                }
            }
            Backend::Buildx {
                builder,
                containerd_store,
            } => buildx_build(builder.as_deref(), *containerd_store, job, log).await,
        }
    }
}

/// How long the Engine API client waits for the daemon to answer a build request (bollard
/// times the wait for the response headers only; the progress stream is not timed by it).
const BUILD_REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The image a `--cache-from` value names, as the Engine API takes it: a plain reference, or
/// the `ref` of `type=registry,ref=...`; `None` for another cache backend (`type=gha`,
/// `type=local`, `type=s3`, ...), which only buildx can import.
pub fn engine_cache_image(spec: &str) -> Option<String> {
    let spec = spec.trim();
    if !spec.contains('=') {
        return Some(spec.to_string()).filter(|s| !s.is_empty());
    }
    let fields: Vec<(&str, &str)> = spec
        .split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let kind = fields.iter().find(|(k, _)| *k == "type").map(|(_, v)| *v);
    match kind {
        Some("registry") | None => fields
            .iter()
            .find(|(k, _)| *k == "ref")
            .map(|(_, v)| v.to_string()),
        Some(_) => None,
    }
}

/// A builder error that says what the builder lacks, with what to do about it.
fn with_advice(message: String) -> String {
    if message.contains("unsupported frontend capability moby.buildkit.frontend.contexts") {
        return format!(
            "{message}; named build contexts (compose additional_contexts) need the Dockerfile frontend 1.4 or later, and this engine's built-in one is older (Docker 20.10): use Docker 23 or later, or start the Dockerfile with `# syntax=docker/dockerfile:1` (its frontend image is then pulled)"
        );
    }
    message
}

fn buildkit_unusable(message: &str) -> bool {
    message.contains("failed to read downloaded context")
        || message.contains("build-context-")
        || message.contains("buildkit not supported")
}

async fn engine_build(
    engine: &Engine,
    job: &BuildJob,
    log: &mut Log,
    buildkit: bool,
) -> Result<BuildOutput, BuildFailure> {
    let (context, dockerfile) = (job.context.clone(), job.dockerfile.clone());
    // Checked before the request; the tar itself is streamed as the body while it is written.
    let prepared = tokio::task::spawn_blocking(move || prepare_context(&context, &dockerfile))
        .await
        .map_err(|e| BuildFailure {
            message: format!("archiving the build context failed: {e}"),
        })?
        .map_err(|e| BuildFailure {
            message: e.to_string(),
        })?;
    let dockerfile_in_context = prepared.dockerfile_in_context().to_string();
    let (chunks, archiving) = streamed_context(prepared);
    let mut build_args: HashMap<String, String> = job.build_args.clone().into_iter().collect();
    if job.inline_cache {
        build_args.insert("BUILDKIT_INLINE_CACHE".into(), "1".into());
    }
    let labels: HashMap<String, String> = job.labels.clone().into_iter().collect();
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(&dockerfile_in_context)
        .t(&job.image)
        .buildargs(&build_args)
        .labels(&labels)
        .nocache(job.no_cache)
        .rm(true)
        .forcerm(true)
        .pull("false");
    if let Some(target) = &job.target {
        options = options.target(target);
    }
    if let Some(network) = &job.network {
        options = options.networkmode(network);
    }
    match job.platforms.as_slice() {
        [] => {}
        [one] => options = options.platform(one),
        many => {
            return Err(BuildFailure {
                message: format!(
                    "the engine builder builds one platform at a time, but {} lists {}; use --backend buildx for multi-platform builds",
                    job.service,
                    many.join(", ")
                ),
            });
        }
    }
    // The Engine API takes images: `type=registry,ref=IMAGE` is IMAGE (other cache backends
    // route the run to buildx, see `engine_cache_image`).
    let cache_images: Vec<String> = job
        .cache_from
        .iter()
        .filter_map(|c| engine_cache_image(c))
        .collect();
    if !cache_images.is_empty() {
        options = options.cachefrom(&cache_images);
    }
    if buildkit {
        let session = format!(
            "ai-infra-build-{}-{:016x}",
            job.service,
            rand::random::<u64>()
        );
        options = options
            .version(BuilderVersion::BuilderBuildKit)
            .session(&session);
    }
    let credentials = (!job.registry_auth.is_empty()).then(|| job.registry_auth.0.clone());
    // Not the connection's short timeout: the daemon answers a build request only once it has
    // taken the context and started, which under a hundred concurrent builds takes longer than
    // 10 s ("Timeout error", every build failed). The build's own limits (--build-timeout,
    // the idle cut, cancellation) bound it instead.
    let docker = engine.docker.clone().with_timeout(BUILD_REQUEST_TIMEOUT);
    let stream = docker.build_image(
        options.build(),
        credentials,
        Some(bollard::body_try_stream(chunks)),
    );
    let built = read_build_stream(stream, job, log).await;
    // The request is over (the body dropped with it): the archive is done or stopped.
    match archiving.await {
        Ok(Ok(stats)) => log.line(&format!(
            "context: {} files, {} bytes",
            stats.files, stats.size
        )),
        // Stopped because the daemon stopped reading: the build's own error says why.
        Ok(Err(ContextError::Archive { source, .. }))
            if source.kind() == std::io::ErrorKind::BrokenPipe => {}
        Ok(Err(err)) => {
            return Err(BuildFailure {
                message: err.to_string(),
            });
        }
        Err(err) => {
            return Err(BuildFailure {
                message: format!("archiving the build context failed: {err}"),
            });
        }
    }
    let mut output = built?;
    if output.image_id.is_none() {
        output.image_id = engine
            .docker
            .inspect_image(&job.image)
            .await
            .ok()
            .and_then(|i| i.id);
    }
    tag_extra(engine, job, log).await?;
    Ok(output)
}

/// The build context's tar as a stream of chunks for the request body, written on a blocking
/// thread while the request sends it (a few chunks in memory), and that thread's result.
fn streamed_context(
    prepared: PreparedContext,
) -> (
    impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    tokio::task::JoinHandle<Result<ContextStats, ContextError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let archiving = tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        let out = ChunkWriter::new(move |chunk| {
            tx.blocking_send(Ok(chunk.into()))
                .map_err(|_| stream::reader_gone())
        });
        let written = prepared.write_to(out).and_then(|(mut out, stats)| {
            std::io::Write::flush(&mut out).map_err(|source| ContextError::Archive {
                path: "(end of archive)".into(),
                source,
            })?;
            Ok(stats)
        });
        if let Err(err) = &written {
            // Ends the body with an error, so the daemon does not take a cut archive.
            let _ = failed.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
        written
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (chunks, archiving)
}

/// Follows a build's progress stream into the log until it ends.
async fn read_build_stream(
    stream: impl futures_util::Stream<Item = Result<bollard::models::BuildInfo, bollard::errors::Error>>,
    job: &BuildJob,
    log: &mut Log,
) -> Result<BuildOutput, BuildFailure> {
    let mut stream = std::pin::pin!(stream);
    let mut output = BuildOutput::default();
    let mut vertex_names: HashMap<String, String> = HashMap::new();
    let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut begun: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let item = match tokio::time::timeout(job.idle_timeout, stream.next()).await {
            Err(_) => {
                return Err(BuildFailure {
                    message: format!(
                        "no progress for {}s; the build was cut",
                        job.idle_timeout.as_secs()
                    ),
                });
            }
            Ok(None) => break,
            Ok(Some(item)) => item,
        };
        let info = match item {
            Ok(info) => info,
            Err(err) => {
                return Err(BuildFailure {
                    message: docker_message(err),
                });
            }
        };
        if let Some(text) = &info.stream {
            let text = text.trim_end_matches('\n');
            if !text.is_empty() {
                log.line(text);
            }
            if text.trim_start().starts_with("Step ") {
                output.total_steps += 1;
            }
            if text.contains("Using cache") {
                output.cached_steps += 1;
            }
        }
        if let Some(status) = &info.status {
            log.line(status);
        }
        match info.aux {
            Some(BuildInfoAux::Default(id)) => output.image_id = id.id.or(output.image_id),
            Some(BuildInfoAux::BuildKit(status)) => {
                for v in &status.vertexes {
                    vertex_names.insert(v.digest.clone(), v.name.clone());
                    if v.started.is_some()
                        && v.completed.is_none()
                        && begun.insert(v.digest.clone())
                    {
                        log.line(&v.name);
                    }
                    if v.completed.is_some() && done.insert(v.digest.clone()) {
                        output.total_steps += 1;
                        if v.cached {
                            output.cached_steps += 1;
                            log.line(&format!("{} CACHED", v.name));
                        } else if v.error.is_empty() {
                            log.line(&format!("{} DONE", v.name));
                        }
                    }
                    if !v.error.is_empty() {
                        log.line(&format!("{} ERROR: {}", v.name, v.error));
                    }
                }
                for l in &status.logs {
                    let name = vertex_names
                        .get(&l.vertex)
                        .map(String::as_str)
                        .unwrap_or("");
                    for line in String::from_utf8_lossy(&l.msg).lines() {
                        log.line(&format!("{name}: {line}"));
                    }
                }
            }
            None => {}
        }
    }
    Ok(output)
}

async fn tag_extra(engine: &Engine, job: &BuildJob, log: &mut Log) -> Result<(), BuildFailure> {
    for tag in &job.tags {
        let (repo, t) = split_tag(tag);
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(t)
            .build();
        engine
            .docker
            .tag_image(&job.image, Some(options))
            .await
            .map_err(|e| BuildFailure {
                message: format!("built {} but could not tag it {tag}: {e}", job.image),
            })?;
        log.line(&format!("tagged {tag}"));
    }
    Ok(())
}

/// `host:5000/a/b:tag` -> (`host:5000/a/b`, `tag`); no tag -> `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

fn docker_message(err: bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// What `docker buildx inspect [BUILDER]` says of a builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderInfo {
    pub driver: String,
    /// The first node's BuildKit `(major, minor)` (`v0.13.2` -> `(0, 13)`).
    pub buildkit: Option<(u32, u32)>,
}

impl BuilderInfo {
    fn parse(inspect: &str) -> Option<BuilderInfo> {
        let field = |name: &str| {
            inspect.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let buildkit = field("BuildKit version").and_then(|v| {
            let v = v.trim_start_matches('v');
            let mut parts = v.split(|c: char| !c.is_ascii_digit());
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        });
        Some(BuilderInfo {
            driver: field("Driver")?,
            buildkit,
        })
    }

    /// Whether the builder can push several platforms as one index: every driver but
    /// `docker`, and `docker` on an engine with the containerd image store.
    pub fn multi_platform(&self, containerd_store: bool) -> bool {
        self.driver != "docker" || containerd_store
    }

    /// Whether it makes attestations: BuildKit 0.11 or later, with an exporter that can keep
    /// them (not the `docker` driver on the classic image store). An unknown version (Debian's
    /// engines say `v0.0.0+unknown`) counts as recent: the containerd image store came after
    /// BuildKit 0.11 (Engine 24), and BuildKit's own images carry their version.
    pub fn attests(&self, containerd_store: bool) -> bool {
        self.multi_platform(containerd_store)
            && self.buildkit.is_none_or(|v| v == (0, 0) || v >= (0, 11))
    }
}

/// `docker buildx [--builder BUILDER]`. A builder of the `docker` driver is named after its
/// docker context, and buildx uses it only from that context (from another one it answers
/// "use `docker --context=NAME buildx` to switch to context"): a builder named after a
/// context is run as `docker --context NAME buildx --builder NAME`.
pub fn buildx_command(builder: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("docker");
    if let Some(b) = builder
        && is_docker_context(b)
    {
        cmd.args(["--context", b]);
    }
    cmd.arg("buildx");
    if let Some(b) = builder {
        cmd.args(["--builder", b]);
    }
    cmd
}

/// Whether `name` is a docker context of the CLI's config (not `default`).
fn is_docker_context(name: &str) -> bool {
    name != "default"
        && crate::auth::Credentials::config_dir(&|v| std::env::var(v).ok())
            .is_some_and(|dir| crate::engine::context_host(&dir, name).is_some())
}

/// `docker buildx inspect [BUILDER]`, `None` when it fails.
pub async fn inspect_builder(builder: Option<&str>) -> Option<BuilderInfo> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(["buildx", "inspect"]);
    if let Some(b) = builder {
        cmd.arg(b);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    BuilderInfo::parse(&String::from_utf8_lossy(&out.stdout))
}

/// The provenance a pushing build gets when the user set none, as docker/build-push-action
/// gives it: `mode=min` (its default for private repositories; it gives `mode=max` to public
/// ones, which we cannot tell) when the builder can attest; none when loading.
pub const DEFAULT_PUSH_PROVENANCE: &str = "mode=min";

/// Where `docker buildx build` puts the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// `--load`: into the engine's image store (the run pushes it afterwards).
    Load,
    /// `--push`: buildx pushes it (and keeps it locally where the driver stores images).
    Push,
}

/// `docker buildx build`; its plain progress goes to the log. When the run pushes, buildx
/// pushes itself what `--load` cannot give the engine: several platforms as one index, and
/// attestations (provenance is on by default then, as with docker/build-push-action). A
/// builder that builds one platform at a time (the `docker` driver on the classic image store)
/// builds and pushes each platform, then makes the index of them with
/// `docker buildx imagetools create`.
async fn buildx_build(
    builder: Option<&str>,
    containerd_store: bool,
    job: &BuildJob,
    log: &mut Log,
) -> Result<BuildOutput, BuildFailure> {
    let info = match job.push {
        true => inspect_builder(builder).await,
        false => None,
    };
    let provenance = job.extras.provenance.clone().or_else(|| {
        info.as_ref()
            .filter(|i| job.push && i.attests(containerd_store))
            .map(|_| DEFAULT_PUSH_PROVENANCE.to_string())
    });
    let on = |a: &Option<String>| a.as_deref().is_some_and(super::secrets::attestation_on);
    let attests = on(&provenance) || on(&job.extras.sbom);
    let direct = job.push && (job.platforms.len() > 1 || attests);
    if !direct {
        return buildx_once(builder, job, Output::Load, provenance.as_deref(), log).await;
    }
    let multi_platform = info
        .as_ref()
        .map_or(containerd_store, |i| i.multi_platform(containerd_store));
    if job.platforms.len() <= 1 || multi_platform {
        let out = buildx_once(builder, job, Output::Push, provenance.as_deref(), log).await?;
        if out.pushed_digest.is_none() {
            return Err(BuildFailure {
                message: "buildx pushed the image but its metadata file names no digest".into(),
            });
        }
        return Ok(out);
    }
    log.line(&format!(
        "=== builder {} (driver docker, classic image store) builds one platform at a time: \
         each of {} is pushed by itself, then one index of them",
        builder.unwrap_or("default"),
        job.platforms.join(", ")
    ));
    let mut total = BuildOutput::default();
    let mut digests = Vec::new();
    for platform in &job.platforms {
        let one = BuildJob {
            platforms: vec![platform.clone()],
            tags: Vec::new(),
            ..job.clone()
        };
        let out = buildx_once(builder, &one, Output::Push, provenance.as_deref(), log).await?;
        total.cached_steps += out.cached_steps;
        total.total_steps += out.total_steps;
        digests.push(out.pushed_digest.ok_or_else(|| BuildFailure {
            message: format!(
                "buildx pushed {} for {platform} but its metadata file names no digest",
                job.image
            ),
        })?);
    }
    total.pushed_digest = Some(imagetools_create(builder, job, &digests, log).await?);
    Ok(total)
}

/// `docker buildx imagetools create`: one index of the per-platform manifests `digests`
/// (pushed to `job.image`'s repository), as `job.image` and every tag. Returns its digest.
async fn imagetools_create(
    builder: Option<&str>,
    job: &BuildJob,
    digests: &[String],
    log: &mut Log,
) -> Result<String, BuildFailure> {
    let repository = split_tag(&job.image).0;
    let mut cmd = buildx_command(builder);
    cmd.args(["imagetools", "create", "--progress=plain"]);
    for name in std::iter::once(&job.image).chain(&job.tags) {
        cmd.args(["-t", name]);
    }
    cmd.args(digests.iter().map(|d| format!("{repository}@{d}")));
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    log.line(&format!(
        "running: docker buildx imagetools create -t {} {}",
        job.image,
        digests.join(" ")
    ));
    let limit = job.idle_timeout.max(Duration::from_secs(60));
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| BuildFailure {
            message: format!(
                "`docker buildx imagetools create` did not finish within {}s",
                limit.as_secs()
            ),
        })?
        .map_err(|e| BuildFailure {
            message: format!("cannot run `docker buildx imagetools create`: {e}"),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    log.line(text.trim_end());
    if !out.status.success() {
        return Err(BuildFailure {
            message: format!(
                "making the index of {} failed: {}",
                job.image,
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("`docker buildx imagetools create` failed")
            ),
        });
    }
    index_digest(&text).ok_or_else(|| BuildFailure {
        message: format!(
            "`docker buildx imagetools create` pushed the index of {} but named no digest",
            job.image
        ),
    })
}

/// The digest in `imagetools create`'s `pushing sha256:… to REF` line.
fn index_digest(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let rest = &line[line.find("pushing sha256:")? + "pushing ".len()..];
        let digest = rest.split_whitespace().next()?;
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
    })
}

/// One `docker buildx build` of `job`, its image loaded or pushed.
async fn buildx_once(
    builder: Option<&str>,
    job: &BuildJob,
    output_to: Output,
    provenance: Option<&str>,
    log: &mut Log,
) -> Result<BuildOutput, BuildFailure> {
    let metadata = tempfile::Builder::new()
        .prefix("ai-infra-build-metadata-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| BuildFailure {
            message: format!("cannot create a metadata file: {e}"),
        })?;
    let mut cmd = buildx_command(builder);
    cmd.args(["build", "--progress=plain", "--pull=false"]);
    cmd.arg(match output_to {
        Output::Load => "--load",
        Output::Push => "--push",
    });
    cmd.arg("--metadata-file").arg(metadata.path());
    cmd.arg("-f").arg(&job.dockerfile);
    cmd.args(["-t", &job.image]);
    for tag in &job.tags {
        cmd.args(["-t", tag]);
    }
    for (k, v) in &job.build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    for (k, v) in &job.labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    if let Some(t) = &job.target {
        cmd.args(["--target", t]);
    }
    if let Some(n) = &job.network {
        cmd.args(["--network", n]);
    }
    if !job.platforms.is_empty() {
        cmd.arg("--platform").arg(job.platforms.join(","));
    }
    if job.no_cache {
        cmd.arg("--no-cache");
    }
    for c in &job.cache_from {
        cmd.arg("--cache-from").arg(c);
    }
    for c in &job.cache_to {
        cmd.arg("--cache-to").arg(c);
    }
    for (name, value) in &job.build_contexts {
        cmd.arg("--build-context").arg(format!("{name}={value}"));
    }
    if job.inline_cache && job.cache_to.is_empty() {
        cmd.args(["--cache-to", "type=inline"]);
    }
    // Secrets reach buildx by name only: a value given as such goes through the child's
    // environment, never its command line.
    for (n, secret) in job.extras.secrets_for(&job.service).into_iter().enumerate() {
        let spec = match &secret.source {
            SecretSource::Env(var) => format!("id={},env={var}", secret.id),
            SecretSource::File(path) => format!("id={},src={}", secret.id, path.display()),
            SecretSource::Value(value) => {
                let var = format!("AIB_BUILD_SECRET_{n}");
                cmd.env(&var, value);
                format!("id={},env={var}", secret.id)
            }
        };
        cmd.arg("--secret").arg(spec);
    }
    for ssh in &job.extras.ssh {
        cmd.arg("--ssh").arg(ssh);
    }
    if let Some(p) = provenance {
        cmd.arg(format!("--provenance={p}"));
    }
    if let Some(s) = &job.extras.sbom {
        cmd.arg(format!("--sbom={s}"));
    }
    cmd.arg(&job.context);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if provenance.is_none() {
        cmd.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    }
    log.line(&format!(
        "running: docker buildx build{}{}{} ... {}",
        match output_to {
            Output::Load => " --load",
            Output::Push => " --push",
        },
        if job.platforms.is_empty() {
            String::new()
        } else {
            format!(" --platform {}", job.platforms.join(","))
        },
        provenance
            .map(|p| format!(" --provenance={p}"))
            .unwrap_or_default(),
        job.context.display()
    ));
    let mut child = cmd.spawn().map_err(|e| BuildFailure {
        message: format!("cannot run `docker buildx`: {e}"),
    })?;
    let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let (Some(mut out), Some(mut err)) = (stdout, stderr) else {
        return Err(BuildFailure {
            message: "cannot read `docker buildx` output".into(),
        });
    };
    let mut output = BuildOutput::default();
    let mut last_error: Option<String> = None;
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::time::timeout(job.idle_timeout, async {
            tokio::select! {
                l = out.next_line(), if out_open => (0, l),
                l = err.next_line(), if err_open => (1, l),
            }
        })
        .await;
        let (which, line) = match line {
            Err(_) => {
                let _ = child.kill().await;
                return Err(BuildFailure {
                    message: format!(
                        "no progress for {}s; the build was cut",
                        job.idle_timeout.as_secs()
                    ),
                });
            }
            Ok(x) => x,
        };
        match line {
            Ok(Some(text)) => {
                if text.contains(" CACHED") {
                    output.cached_steps += 1;
                }
                if text.starts_with('#') && text.contains(" DONE ") || text.contains(" CACHED") {
                    output.total_steps += 1;
                }
                if let Some(e) = text
                    .strip_prefix("ERROR: ")
                    .or_else(|| text.strip_prefix("error: "))
                {
                    last_error = Some(e.to_string());
                }
                log.line(&text);
            }
            Ok(None) | Err(_) => {
                if which == 0 {
                    out_open = false
                } else {
                    err_open = false
                }
            }
        }
    }
    let status = child.wait().await.map_err(|e| BuildFailure {
        message: format!("`docker buildx` did not finish: {e}"),
    })?;
    if !status.success() {
        let message =
            last_error.unwrap_or_else(|| format!("`docker buildx build` exited with {status}"));
        return Err(BuildFailure {
            message: with_advice(message),
        });
    }
    let meta: serde_json::Value = std::fs::read(metadata.path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let field = |name: &str| meta.get(name).and_then(|v| v.as_str()).map(str::to_string);
    match output_to {
        Output::Load => {
            output.image_id =
                field("containerimage.config.digest").or_else(|| field("containerimage.digest"));
        }
        // The pushed manifest's or index's digest; an index has no one config.
        Output::Push => {
            output.image_id = field("containerimage.config.digest");
            output.pushed_digest = field("containerimage.digest");
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_from_values_as_the_engine_api_takes_them() {
        assert_eq!(
            engine_cache_image("ghcr.io/o/demo:1-ad").as_deref(),
            Some("ghcr.io/o/demo:1-ad")
        );
        assert_eq!(
            engine_cache_image("type=registry,ref=reg:5000/a:cache").as_deref(),
            Some("reg:5000/a:cache")
        );
        assert_eq!(
            engine_cache_image("ref=reg:5000/a:cache").as_deref(),
            Some("reg:5000/a:cache")
        );
        assert_eq!(engine_cache_image("type=gha"), None);
        assert_eq!(engine_cache_image("type=local,src=/tmp/c"), None);
        assert_eq!(engine_cache_image("type=registry"), None);
        assert_eq!(engine_cache_image("  "), None);
    }

    #[test]
    fn builders_are_read_from_buildx_inspect() {
        let docker = BuilderInfo::parse(
            "Name:          default\nDriver:        docker\n\nNodes:\nName:             default\n\
             Endpoint:         default\nStatus:           running\nBuildKit version: v0.8+unknown\n",
        )
        .unwrap();
        assert_eq!(docker.driver, "docker");
        assert_eq!(docker.buildkit, Some((0, 8)));
        assert!(!docker.multi_platform(false) && !docker.attests(false));
        assert!(
            docker.multi_platform(true) && !docker.attests(true),
            "BuildKit 0.8"
        );
        let modern = BuilderInfo {
            buildkit: Some((0, 13)),
            ..docker.clone()
        };
        assert!(modern.attests(true) && !modern.attests(false));
        let container =
            BuilderInfo::parse("Name: ci\nDriver: docker-container\nBuildKit version: v0.12.5\n")
                .unwrap();
        assert!(container.multi_platform(false) && container.attests(false));
        let debian26 =
            BuilderInfo::parse("Name: default\nDriver: docker\nBuildKit version: v0.0.0+unknown\n")
                .unwrap();
        assert_eq!(debian26.buildkit, Some((0, 0)));
        assert!(debian26.attests(true) && !debian26.attests(false));
        assert_eq!(BuilderInfo::parse("Name: x\n"), None);
    }

    #[test]
    fn the_index_digest_is_read_from_imagetools_output() {
        let digest = format!("sha256:{}", "0a".repeat(32));
        let out = format!(
            "#1 [internal] pushing 127.0.0.1:5000/team/api:1\n#1 0.000 pushing {digest} to 127.0.0.1:5000/team/api:1\n#1 DONE 0.0s\n"
        );
        assert_eq!(index_digest(&out), Some(digest));
        assert_eq!(index_digest("#1 pushing sha256:12 to x"), None);
    }

    #[test]
    fn tags_split_after_the_last_colon_outside_the_host() {
        assert_eq!(split_tag("a:1"), ("a", "1"));
        assert_eq!(
            split_tag("localhost:5000/a/b:v2"),
            ("localhost:5000/a/b", "v2")
        );
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
        assert_eq!(split_tag("a"), ("a", "latest"));
    }

    #[test]
    fn logs_keep_the_last_lines_and_write_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::create(dir.path().join("logs/x.log"));
        for i in 0..120 {
            log.line(&format!("line {i}"));
        }
        let tail = log.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "line 119");
        let written = std::fs::read_to_string(dir.path().join("logs/x.log")).unwrap();
        assert_eq!(written.lines().count(), 120);
    }
}
