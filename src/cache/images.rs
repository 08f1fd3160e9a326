//! Image archives: base images saved after the prefetch and loaded before it, and (in
//! inline-cache mode) the service images kept as cache sources. All through the Engine API
//! (`GET /images/get` = `docker save`, `POST /images/load` = `docker load`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{
    ImportImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use super::index::{Archive, ArchiveKind, BaseImage, ServiceImage};
use super::layers::{self, BuildCacheMode, BuildCachePlan};
use super::{Cache, TRANSFER_TIMEOUT, store};
use crate::build::backend::Backend;
use crate::engine::{Engine, EngineFacts};
use crate::prefetch::{ImageNeed, ImageResult, ImageStatus};
use crate::reference::Reference;
use crate::report::now_ms;
use crate::report::{ServiceResult, ServiceStatus};

/// What [`Cache::restore_base_images`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// References loaded from an archive into the daemon.
    pub loaded: Vec<String>,
    /// References whose cached image the daemon already had.
    pub already_present: Vec<String>,
    /// References the daemon has with another image than the cache: left alone.
    pub local_differs: Vec<String>,
    /// References the cache does not hold.
    pub not_cached: Vec<String>,
    /// Archives found corrupted or truncated, discarded.
    pub discarded: Vec<String>,
    pub bytes: u64,
    pub duration_ms: u64,
}

fn docker(engine: &Engine) -> Docker {
    engine.docker.clone().with_timeout(TRANSFER_TIMEOUT)
}

/// The daemon's image id for a name or id, if it has the image.
async fn local_id(docker: &Docker, name: &str) -> Option<String> {
    docker.inspect_image(name).await.ok().and_then(|i| i.id)
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Whether two local images are the same but for their creation time: the same layers and the
/// same config (what a fully cached rebuild gives).
async fn equivalent(docker: &Docker, a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (docker.inspect_image(a).await, docker.inspect_image(b).await) else {
        return false;
    };
    let layers =
        |i: &bollard::models::ImageInspect| i.root_fs.as_ref().and_then(|r| r.layers.clone());
    let config = |i: &bollard::models::ImageInspect| serde_json::to_value(&i.config).ok();
    layers(&a).is_some()
        && layers(&a) == layers(&b)
        && config(&a) == config(&b)
        && a.architecture == b.architecture
        && a.os == b.os
}

/// What a load hashes the archive's bytes into, as they are sent.
type Hasher = std::sync::Arc<std::sync::Mutex<sha2::Sha256>>;

/// Reads a file as a stream of chunks (for the load request body), hashing them into
/// `hasher` if given.
fn file_stream(
    file: tokio::fs::File,
    hasher: Option<Hasher>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Some((file, hasher)), |state| async move {
        let (mut file, hasher) = state?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                if let Some(Ok(mut h)) = hasher.as_ref().map(|h| h.lock()) {
                    h.update(&buf);
                }
                Some((Ok(bytes::Bytes::from(buf)), Some((file, hasher))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Why the daemon did not take an archive or a tag.
#[derive(Debug, thiserror::Error)]
enum ImageError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon refused the archive (or the connection failed while sending it).
    #[error("{}", daemon_message(.source))]
    Load {
        #[source]
        source: bollard::errors::Error,
    },
    #[error("cannot tag {} as {}: {source}", short_id(.id), .reference.familiar())]
    Tag {
        id: String,
        reference: Reference,
        #[source]
        source: bollard::errors::Error,
    },
}

/// What the daemon said, without bollard's wrapping.
fn daemon_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Loads an archive into the daemon (hashing what it sends into `hasher`, if given).
async fn load(docker: &Docker, path: &Path, hasher: Option<Hasher>) -> Result<(), ImageError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let options = ImportImageOptionsBuilder::default().quiet(true).build();
    let mut stream = docker.import_image_stream(options, file_stream(file, hasher), None);
    while let Some(item) = stream.next().await {
        item.map_err(|source| ImageError::Load { source })?;
    }
    Ok(())
}

/// Saves images (by id) into `root/rel`, atomically.
async fn export(
    docker: &Docker,
    root: &Path,
    rel: &str,
    ids: &[String],
) -> Result<store::Written, store::WriteError> {
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let stream = Box::pin(docker.export_images(&names));
    store::write_stream_atomic(root, rel, stream).await
}

async fn tag(docker: &Docker, id: &str, reference: &Reference) -> Result<(), ImageError> {
    let options = TagImageOptionsBuilder::default()
        .repo(&reference.familiar_name())
        .tag(reference.tag.as_deref().unwrap_or("latest"))
        .build();
    docker
        .tag_image(id, Some(options))
        .await
        .map_err(|source| ImageError::Tag {
            id: id.to_string(),
            reference: reference.clone(),
            source,
        })
}

/// How many cache archives are checked and loaded at once.
const RESTORE_CONCURRENCY: usize = 4;

/// An archive, the references it restores, and how checking and loading it went.
type Checked = (String, Vec<(Reference, BaseImage)>, Result<bool, Trouble>);

/// Why an archive could not be restored.
enum Trouble {
    /// Not what the index recorded: to be discarded.
    Corrupted(Corruption),
    /// Intact, but the daemon did not take it.
    Refused(ImageError),
}

/// How an archive differs from what the index recorded.
#[derive(Debug, thiserror::Error)]
enum Corruption {
    #[error("not in the index")]
    NotInIndex,
    #[error("{source}")]
    Unreadable {
        #[source]
        source: std::io::Error,
    },
    #[error("truncated or extended: {actual} bytes, {expected} on record")]
    Size { expected: u64, actual: u64 },
    #[error("checksum mismatch")]
    Checksum,
}

/// Loads the archive at `path` unless the daemon has `image_id` already (`Ok(true)` when it
/// loaded it), checking it against its `record` on the way: the size before, the SHA-256 of
/// the bytes streamed to the daemon after (one read of the file, not two). A mismatch is
/// `Corrupted`, and the images it loaded that were not there before are removed again (the
/// daemon checks every layer against its image config, so they would be sound, but the
/// archive is not what was saved).
async fn check_and_load(
    docker: &Docker,
    path: std::path::PathBuf,
    record: Option<Archive>,
    image_id: &str,
) -> Result<bool, Trouble> {
    let record = record.ok_or(Trouble::Corrupted(Corruption::NotInIndex))?;
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|source| Trouble::Corrupted(Corruption::Unreadable { source }))?
        .len();
    if size != record.size {
        return Err(Trouble::Corrupted(Corruption::Size {
            expected: record.size,
            actual: size,
        }));
    }
    if local_id(docker, image_id).await.is_some() {
        return Ok(false);
    }
    let mut had = BTreeSet::new();
    for id in &record.image_ids {
        if local_id(docker, id).await.is_some() {
            had.insert(id.clone());
        }
    }
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(sha2::Sha256::new()));
    let loaded = load(docker, &path, Some(hasher.clone())).await;
    let streamed = std::sync::Arc::try_unwrap(hasher)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .map(|h| store::hex(&h.finalize()));
    let intact = match (&loaded, streamed) {
        (Ok(()), Some(sha256)) => sha256 == record.sha256,
        // The load stopped early: hash the whole file to tell a bad archive from a refusal.
        _ => store::sha256_file(&path).is_ok_and(|w| w.sha256 == record.sha256),
    };
    if !intact {
        if loaded.is_ok() {
            // Best effort; loaded images have no parent links, so the order does not matter.
            for id in record.image_ids.iter().filter(|id| !had.contains(*id)) {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(id, Some(options), None).await;
            }
        }
        return Err(Trouble::Corrupted(Corruption::Checksum));
    }
    loaded.map_err(Trouble::Refused)?;
    Ok(true)
}

impl Cache {
    /// Drops an archive found broken: file, index entries, and a warning.
    fn discard(&mut self, rel: &str, why: &Corruption, what: &str) {
        let _ = store::remove(&self.root.join(rel));
        self.index.remove_archive(rel);
        self.stats.discarded += 1;
        self.warn(format!(
            "cache archive {rel} is corrupted ({why}): discarded; {what}"
        ));
        self.write_index();
    }

    /// Loads the cached archives of the base images in `needs` that the daemon lacks, and
    /// tags them. Run it before the prefetch: the prefetch then finds them present.
    ///
    /// Digest references (`name@sha256:…`) are not restored: the daemon cannot be given a
    /// repo digest without a pull.
    pub async fn restore_base_images(
        &mut self,
        engine: &Engine,
        needs: &[ImageNeed],
    ) -> RestoreStats {
        let started = Instant::now();
        let docker = docker(engine);
        let mut stats = RestoreStats::default();
        // The services archive (inline mode) holds the base images too: loaded first, it
        // leaves their own archives nothing to load (see `preload_service_images`).
        if self.preload_services {
            let archives: BTreeSet<String> = self
                .index
                .services
                .values()
                .map(|e| e.archive.clone())
                .collect();
            for rel in archives {
                if let Some(id) = self.missing_service_image(&docker, &rel).await {
                    let record = self.index.archives.get(&rel).cloned();
                    let outcome = check_and_load(&docker, self.root.join(&rel), record, &id).await;
                    self.took_services_archive(&rel, outcome);
                }
            }
        }
        // Archive -> the references to restore from it.
        let mut wanted: BTreeMap<String, Vec<(Reference, BaseImage)>> = BTreeMap::new();
        for need in needs {
            let key = need.reference.to_string();
            // The cache keeps one image per reference, of the engine's platform: an image
            // needed for a given platform is the prefetch's.
            if need.platform.is_some() {
                stats.not_cached.push(key);
                continue;
            }
            let Some(entry) = self.index.base_images.get(&key).cloned() else {
                stats.not_cached.push(key);
                continue;
            };
            if need.reference.digest.is_some() {
                stats.not_cached.push(key);
                continue;
            }
            match local_id(&docker, &need.reference.familiar()).await {
                Some(id) if id == entry.image_id => {
                    stats.already_present.push(key.clone());
                    self.restored.insert(key);
                    if let Some(a) = self.index.archives.get_mut(&entry.archive) {
                        a.last_used_ms = now_ms();
                    }
                }
                Some(_) => stats.local_differs.push(key),
                None => wanted
                    .entry(entry.archive.clone())
                    .or_default()
                    .push((need.reference.clone(), entry)),
            }
        }
        // Check and load the archives a few at a time (hashing and the daemon's unpacking
        // overlap), then deal with the outcomes in order.
        let checked: Vec<Checked> = futures_util::stream::iter(wanted)
            .map(|(rel, refs)| {
                let docker = docker.clone();
                let path = self.root.join(&rel);
                let record = self.index.archives.get(&rel).cloned();
                let image_id = refs[0].1.image_id.clone();
                async move {
                    let outcome = check_and_load(&docker, path, record, &image_id).await;
                    (rel, refs, outcome)
                }
            })
            .buffer_unordered(RESTORE_CONCURRENCY)
            .collect()
            .await;
        for (rel, refs, outcome) in checked {
            let names: Vec<String> = refs.iter().map(|(r, _)| r.to_string()).collect();
            match outcome {
                Err(Trouble::Corrupted(why)) => {
                    self.discard(
                        &rel,
                        &why,
                        &format!("{} will be pulled again", names.join(", ")),
                    );
                    stats.discarded.push(rel);
                    continue;
                }
                Err(Trouble::Refused(e)) => {
                    // The checksum was right, so the daemon refused a good archive (disk
                    // full, an engine that cannot read it): keep it, pull this time.
                    self.warn(format!(
                        "cannot load cache archive {rel} into the daemon ({e}); {} will be pulled",
                        names.join(", ")
                    ));
                    continue;
                }
                Ok(true) => stats.bytes += self.index.archives.get(&rel).map_or(0, |a| a.size),
                Ok(false) => {}
            }
            for (reference, entry) in refs {
                let key = reference.to_string();
                let ok = match tag(&docker, &entry.image_id, &reference).await {
                    Ok(()) => {
                        local_id(&docker, &reference.familiar()).await.as_deref()
                            == Some(entry.image_id.as_str())
                    }
                    Err(e) => {
                        self.warn(e.to_string());
                        false
                    }
                };
                if ok {
                    stats.loaded.push(key.clone());
                    self.restored.insert(key);
                }
            }
            if let Some(a) = self.index.archives.get_mut(&rel) {
                a.last_used_ms = now_ms();
            }
        }
        stats.duration_ms = started.elapsed().as_millis() as u64;
        self.stats.restored_bytes += stats.bytes;
        self.stats.restore_ms += stats.duration_ms;
        self.write_index();
        stats
    }

    /// Saves the prefetched base images the cache does not hold yet (one archive per image,
    /// named by its id) and records reference -> image id, manifest digest, archive. Counts
    /// the cache's base image hits (present thanks to the cache) and misses (pulled).
    pub async fn save_base_images(&mut self, engine: &Engine, images: &[ImageResult]) {
        let started = Instant::now();
        let docker = docker(engine);
        for image in images {
            match image.status {
                ImageStatus::Present if self.restored.contains(&image.reference) => {
                    self.stats.base_image_hits += 1
                }
                ImageStatus::Pulled => self.stats.base_image_misses += 1,
                _ => {}
            }
            if image.status == ImageStatus::Failed || image.platform.is_some() {
                continue;
            }
            let Ok(reference) = Reference::parse(&image.reference) else {
                continue;
            };
            if reference.digest.is_some() {
                continue;
            }
            let Some(id) = local_id(&docker, &reference.familiar()).await else {
                continue;
            };
            let key = image.reference.clone();
            let previous = self.index.base_images.get(&key).cloned();
            let digest = image.digest.clone().or_else(|| {
                previous
                    .as_ref()
                    .filter(|p| p.image_id == id)
                    .and_then(|p| p.digest.clone())
            });
            // An archive that already holds this image (for this or another reference).
            let existing = self
                .index
                .archives
                .iter()
                .find(|(_, a)| a.kind == ArchiveKind::BaseImage && a.image_ids.contains(&id))
                .map(|(rel, _)| rel.clone());
            let rel = match existing {
                Some(rel) => rel,
                None => {
                    let rel = format!(
                        "base-images/{}.tar",
                        id.strip_prefix("sha256:").unwrap_or(&id)
                    );
                    match export(&docker, &self.root, &rel, std::slice::from_ref(&id)).await {
                        Ok(w) => {
                            self.stats.saved_bytes += w.size;
                            self.index.archives.insert(
                                rel.clone(),
                                Archive {
                                    kind: ArchiveKind::BaseImage,
                                    size: w.size,
                                    sha256: w.sha256,
                                    image_ids: vec![id.clone()],
                                    saved_at_ms: now_ms(),
                                    last_used_ms: now_ms(),
                                },
                            );
                            rel
                        }
                        Err(e) => {
                            self.warn(format!(
                                "cannot save {} into the cache: {e}",
                                image.reference
                            ));
                            continue;
                        }
                    }
                }
            };
            if let Some(a) = self.index.archives.get_mut(&rel) {
                a.last_used_ms = now_ms();
            }
            let saved_at_ms = previous
                .filter(|p| p.image_id == id)
                .map_or_else(now_ms, |p| p.saved_at_ms);
            self.index.base_images.insert(
                key,
                BaseImage {
                    image_id: id,
                    digest,
                    archive: rel,
                    saved_at_ms,
                },
            );
            // The index is written after each archive: a run killed later keeps this one.
            self.drop_unreferenced();
            self.write_index();
        }
        self.stats.save_ms += started.elapsed().as_millis() as u64;
    }

    fn drop_unreferenced(&mut self) {
        for rel in self.index.unreferenced_archives() {
            let _ = store::remove(&self.root.join(&rel));
            self.index.archives.remove(&rel);
        }
    }

    /// The local tag a restored service image gets: unique to this cache directory.
    fn cache_tag(&self, service: &str) -> String {
        let dir = store::hex(&sha2::Sha256::digest(
            self.root.to_string_lossy().as_bytes(),
        ));
        let name: String = service
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = name.trim_matches('-');
        let name = if name.is_empty() { "service" } else { name };
        format!("ai-infra-build-cache-{}/{name}:cache", &dir[..8])
    }

    /// Chooses the layer cache for this run and gets its sources ready:
    ///
    /// - buildx with a builder that exports caches: checks `buildx/` (a broken one is
    ///   discarded with a warning) and seeds `buildx-new/` from it;
    /// - otherwise (inline): loads the saved service images and tags them as cache sources.
    ///
    /// `services` are all of the plan's services (a service not built this run keeps its
    /// cache). With `no_cache`, builds use no cache source but still write one.
    pub async fn prepare_build_cache(
        &mut self,
        engine: &Engine,
        facts: &EngineFacts,
        backend: &Backend,
        services: &[String],
    ) -> BuildCachePlan {
        let driver = match backend {
            Backend::Buildx { builder, .. } => layers::buildx_driver(builder.as_deref()).await,
            Backend::Engine { .. } => None,
        };
        let mode = BuildCacheMode::decide(driver.as_deref(), facts.containerd_image_store);
        self.stats.mode = mode.label().into();
        let mut plan = BuildCachePlan::new(mode, &self.root);
        match mode {
            BuildCacheMode::BuildxLocal => self.prepare_buildx(&mut plan, services),
            BuildCacheMode::Inline => {
                self.restore_service_images(engine, &mut plan, services)
                    .await
            }
            BuildCacheMode::Off => {}
        }
        self.build_plan = Some(plan.clone());
        plan
    }

    fn prepare_buildx(&mut self, plan: &mut BuildCachePlan, services: &[String]) {
        let dir = self.root.join(layers::BUILDX);
        let mut have_old = false;
        if dir.is_dir() {
            match layers::read_layout(&dir, true) {
                Ok(layout) => {
                    have_old = true;
                    for s in services {
                        let tag = layers::tag_for(s);
                        if layout.tags.contains_key(&tag) {
                            plan.sources.insert(s.clone(), tag);
                        }
                    }
                    let size = store::disk_size(&dir);
                    let b = self.index.buildx.get_or_insert(super::index::BuildxDir {
                        size,
                        tags: layout.tags.keys().cloned().collect(),
                        saved_at_ms: 0,
                        last_used_ms: 0,
                    });
                    b.last_used_ms = now_ms();
                }
                Err(why) => {
                    let _ = store::remove(&dir);
                    self.index.buildx = None;
                    self.stats.discarded += 1;
                    self.warn(format!(
                        "the build layer cache {} is corrupted ({why}): discarded; services build without it",
                        dir.display()
                    ));
                }
            }
        }
        let keep = services.iter().map(|s| layers::tag_for(s)).collect();
        if let Err(e) = layers::seed_new(&self.root, &keep, have_old) {
            self.warn(format!(
                "cannot prepare {}: {e}; the layer cache is not saved this run",
                layers::BUILDX_NEW
            ));
        }
    }

    /// Has [`Cache::restore_base_images`] load the saved service images first (for
    /// `build-all`, whose builds use them): their archive holds the base images too, so one
    /// load restores both, and the later [`Cache::prepare_build_cache`] finds them loaded.
    pub fn preload_service_images(&mut self) {
        self.preload_services = true;
    }

    /// An image of the services archive `rel` that the daemon lacks, if any.
    async fn missing_service_image(&self, docker: &Docker, rel: &str) -> Option<String> {
        for e in self.index.services.values().filter(|e| e.archive == rel) {
            if local_id(docker, &e.image_id).await.is_none() {
                return Some(e.image_id.clone());
            }
        }
        None
    }

    /// Deals with how loading the services archive `rel` went; whether it can serve.
    fn took_services_archive(&mut self, rel: &str, outcome: Result<bool, Trouble>) -> bool {
        match outcome {
            Err(Trouble::Corrupted(why)) => {
                self.discard(rel, &why, "services build without a cache source this time");
                false
            }
            Err(Trouble::Refused(e)) => {
                self.warn(format!(
                    "cannot load cache archive {rel} ({e}); services build without a cache source"
                ));
                false
            }
            Ok(loaded) => {
                if loaded {
                    self.stats.restored_bytes += self.index.archives.get(rel).map_or(0, |a| a.size);
                }
                true
            }
        }
    }

    async fn restore_service_images(
        &mut self,
        engine: &Engine,
        plan: &mut BuildCachePlan,
        services: &[String],
    ) {
        let started = Instant::now();
        let docker = docker(engine);
        let wanted: Vec<(String, ServiceImage)> = services
            .iter()
            .filter_map(|s| self.index.services.get(s).map(|e| (s.clone(), e.clone())))
            .collect();
        let archives: BTreeSet<String> = wanted.iter().map(|(_, e)| e.archive.clone()).collect();
        for rel in archives {
            if let Some(id) = self.missing_service_image(&docker, &rel).await {
                let record = self.index.archives.get(&rel).cloned();
                let outcome = check_and_load(&docker, self.root.join(&rel), record, &id).await;
                if !self.took_services_archive(&rel, outcome) {
                    continue;
                }
            }
            if let Some(a) = self.index.archives.get_mut(&rel) {
                a.last_used_ms = now_ms();
            }
        }
        for (service, entry) in wanted {
            if !self.index.archives.contains_key(&entry.archive) {
                continue;
            }
            let name = self.cache_tag(&service);
            let Ok(reference) = Reference::parse(&name) else {
                continue;
            };
            if tag(&docker, &entry.image_id, &reference).await.is_ok() {
                self.cache_tags.push(name.clone());
                if let Some(inputs) = entry.inputs.clone() {
                    plan.reusable.insert(
                        service.clone(),
                        layers::Reusable {
                            image_id: entry.image_id.clone(),
                            inputs,
                            total_steps: entry.total_steps,
                        },
                    );
                }
                plan.sources.insert(service, name);
            }
        }
        self.stats.restore_ms += started.elapsed().as_millis() as u64;
        self.write_index();
    }

    /// After the builds: in local mode rotates `buildx-new/` into `buildx/` (unless the run
    /// was interrupted or the export is incomplete); in inline mode saves the service images
    /// (successful builds, and the previous cache image of the others) into one archive.
    /// Counts the service hits: a service with a cache source whose build reported cached
    /// steps.
    pub async fn save_build_cache(
        &mut self,
        engine: &Engine,
        results: &[ServiceResult],
        interrupted: bool,
    ) {
        let started = Instant::now();
        let Some(plan) = self.build_plan.clone() else {
            return;
        };
        for r in results {
            if !matches!(r.status, ServiceStatus::Success | ServiceStatus::Failed) {
                continue;
            }
            let hit = r.status == ServiceStatus::Success
                && plan.has_source(&r.name)
                && (r.reused || r.cached_steps.unwrap_or(0) > 0);
            self.stats.services.insert(r.name.clone(), hit);
            if hit {
                self.stats.service_hits += 1;
            } else {
                self.stats.service_misses += 1;
            }
        }
        match plan.mode {
            BuildCacheMode::BuildxLocal if interrupted => {
                let _ = store::remove(&self.root.join(layers::BUILDX_NEW));
            }
            BuildCacheMode::BuildxLocal => {
                match layers::rotate(&self.root) {
                    Ok(tags) => {
                        self.index.buildx = Some(super::index::BuildxDir {
                            size: store::disk_size(&self.root.join(layers::BUILDX)),
                            tags,
                            saved_at_ms: now_ms(),
                            last_used_ms: now_ms(),
                        });
                        self.write_index();
                    }
                    Err(why) => {
                        let _ = store::remove(&self.root.join(layers::BUILDX_NEW));
                        self.warn(format!("the build layer cache was not updated ({why}); the previous one is kept"));
                    }
                }
            }
            BuildCacheMode::Inline if interrupted => self.remove_cache_tags(engine).await,
            BuildCacheMode::Inline => self.save_service_images(engine, results).await,
            BuildCacheMode::Off => {}
        }
        self.stats.save_ms += started.elapsed().as_millis() as u64;
    }

    async fn save_service_images(&mut self, engine: &Engine, results: &[ServiceResult]) {
        let docker = docker(engine);
        let mut images: BTreeMap<String, String> = BTreeMap::new();
        for r in results
            .iter()
            .filter(|r| r.status == ServiceStatus::Success)
        {
            if let Some(id) = local_id(&docker, &r.image).await {
                images.insert(r.name.clone(), id);
            }
        }
        // Services that did not build this run keep their previous cache image if the daemon
        // still has it.
        for (service, entry) in self.index.services.clone() {
            if !images.contains_key(&service) && local_id(&docker, &entry.image_id).await.is_some()
            {
                images.insert(service, entry.image_id);
            }
        }
        // Unchanged when every service's image is the cached one, or has the very same layers
        // (a fully cached rebuild differs only in its config's timestamps: the cached image
        // serves as cache source just as well, and re-saving would cost a full export).
        let mut unchanged = !images.is_empty() && images.len() == self.index.services.len();
        for (service, id) in &images {
            if !unchanged {
                break;
            }
            unchanged = match self.index.services.get(service) {
                Some(e) if &e.image_id == id => true,
                Some(e) => equivalent(&docker, id, &e.image_id).await,
                None => false,
            };
        }
        // What each service that built (or was reused) this run was made from; the others
        // keep what their entry says.
        let plan = self.build_plan.clone();
        let built: BTreeMap<String, (Option<String>, Option<u32>)> = results
            .iter()
            .filter(|r| r.status == ServiceStatus::Success)
            .map(|r| {
                let inputs = plan.as_ref().and_then(|p| p.recorded_inputs(&r.name));
                (r.name.clone(), (inputs, r.total_steps))
            })
            .collect();
        let made_from = |service: &str, old: Option<&ServiceImage>| match built.get(service) {
            Some((inputs, steps)) => (inputs.clone(), *steps),
            None => old.map_or((None, None), |e| (e.inputs.clone(), e.total_steps)),
        };
        if !unchanged && !images.is_empty() {
            // With the base images the daemon has: one load of this archive restores
            // everything a warm build-all needs (the layers are in it anyway).
            let mut ids: BTreeSet<String> = images.values().cloned().collect();
            for base in self.index.base_images.values() {
                if local_id(&docker, &base.image_id).await.is_some() {
                    ids.insert(base.image_id.clone());
                }
            }
            let ids: Vec<String> = ids.into_iter().collect();
            let h = store::hex(&sha2::Sha256::digest(ids.join("\n").as_bytes()));
            let rel = format!("images/services-{}.tar", &h[..12]);
            match export(&docker, &self.root, &rel, &ids).await {
                Ok(w) => {
                    self.stats.saved_bytes += w.size;
                    self.index.archives.insert(
                        rel.clone(),
                        Archive {
                            kind: ArchiveKind::ServiceImages,
                            size: w.size,
                            sha256: w.sha256,
                            image_ids: ids,
                            saved_at_ms: now_ms(),
                            last_used_ms: now_ms(),
                        },
                    );
                    self.index.services = images
                        .into_iter()
                        .map(|(service, image_id)| {
                            let (inputs, total_steps) =
                                made_from(&service, self.index.services.get(&service));
                            let entry = ServiceImage {
                                image_id,
                                archive: rel.clone(),
                                saved_at_ms: now_ms(),
                                inputs,
                                total_steps,
                            };
                            (service, entry)
                        })
                        .collect();
                    self.drop_unreferenced();
                    self.write_index();
                }
                Err(e) => self.warn(format!(
                    "cannot save the service images into the cache: {e}"
                )),
            }
        } else if let Some(rel) = self
            .index
            .services
            .values()
            .next()
            .map(|e| e.archive.clone())
        {
            if let Some(a) = self.index.archives.get_mut(&rel) {
                a.last_used_ms = now_ms();
            }
            // The saved image of each service is this run's or one with the same layers and
            // config: it stands for this run's inputs.
            let services: Vec<String> = self.index.services.keys().cloned().collect();
            for service in services {
                let (inputs, total_steps) = made_from(&service, self.index.services.get(&service));
                if let Some(e) = self.index.services.get_mut(&service) {
                    e.inputs = inputs;
                    e.total_steps = total_steps;
                }
            }
            self.write_index();
        }
        self.remove_cache_tags(engine).await;
    }

    /// The cache tags were only for this run's builds: untag them (an image no other tag
    /// names goes with its tag).
    async fn remove_cache_tags(&mut self, engine: &Engine) {
        let docker = docker(engine);
        let options = RemoveImageOptionsBuilder::default().build();
        for name in std::mem::take(&mut self.cache_tags) {
            let _ = docker
                .remove_image(&name, Some(options.clone()), None)
                .await;
        }
    }
}
