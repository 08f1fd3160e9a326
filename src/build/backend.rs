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
use crate::engine::Engine;

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
    pub idle_timeout: Duration,
    /// Secrets, SSH and attestations (buildx only; [`Backend::choose`] takes buildx for them).
    pub extras: super::secrets::BuildxExtras,
    /// Credentials for the registries the Dockerfile pulls from (mirrors included).
    pub registry_auth: crate::auth::EngineAuth,
}

/// What a successful build produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildOutput {
    pub image_id: Option<String>,
    /// Steps the builder reported as cached, and all steps it reported.
    pub cached_steps: u32,
    pub total_steps: u32,
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
        let buildx = || Backend::Buildx {
            builder: buildx_builder.map(str::to_string),
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
            "--backend {asked}: this run builds with buildx, because it uses {} and the Engine API backend cannot pass them to BuildKit (its session has no secrets or SSH provider)",
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
            Backend::Buildx { builder: Some(b) } => format!("buildx ({b})"),
            Backend::Buildx { builder: None } => "buildx".into(),
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
            Backend::Buildx { builder } => buildx_build(builder.as_deref(), job, log).await,
        }
    }
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
    if !job.cache_from.is_empty() {
        options = options.cachefrom(&job.cache_from);
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
    let stream = engine.docker.build_image(
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

/// `docker buildx build` as a child process; its plain progress goes to the log.
async fn buildx_build(
    builder: Option<&str>,
    job: &BuildJob,
    log: &mut Log,
) -> Result<BuildOutput, BuildFailure> {
    let metadata = tempfile::Builder::new()
        .prefix("ai-infra-build-metadata-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| BuildFailure {
            message: format!("cannot create a metadata file: {e}"),
        })?;
    let mut cmd = tokio::process::Command::new("docker");
    cmd.arg("buildx");
    if let Some(b) = builder {
        cmd.args(["--builder", b]);
    }
    cmd.args(["build", "--progress=plain", "--load", "--pull=false"]);
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
    if job.inline_cache && job.cache_to.is_empty() {
        cmd.args(["--cache-to", "type=inline"]);
    }
    // Secrets reach buildx by name only: a value given as such goes through the child's
    // environment, never its command line.
    for (n, secret) in job.extras.secrets.iter().enumerate() {
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
    if let Some(p) = &job.extras.provenance {
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
    if job.extras.provenance.is_none() {
        cmd.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    }
    log.line(&format!(
        "running: docker buildx build ... {}",
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
        return Err(BuildFailure {
            message: last_error
                .unwrap_or_else(|| format!("`docker buildx build` exited with {status}")),
        });
    }
    let meta: serde_json::Value = std::fs::read(metadata.path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    output.image_id = meta
        .get("containerimage.config.digest")
        .or_else(|| meta.get("containerimage.digest"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

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
