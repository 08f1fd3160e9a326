//! Base images made offline and uploaded to a registry under Docker Hub-like names.
//!
//! [`push_image`] builds a Docker v2 schema2 image without any daemon:
//!
//! - a gzip'd rootfs layer with the static `/bin/busybox`, `/bin/sh` and a few applet
//!   symlinks ([`APPLETS`]), plus empty `/etc`, `/tmp` and `/root`;
//! - one gzip'd layer per entry of [`ImageSpec::extra_layers`], each a single file of that many
//!   random bytes (so image sizes are realistic and every image's layers are unique: a later
//!   pull really downloads them);
//! - a config (amd64/linux, `Cmd ["/bin/sh"]`, `diff_ids` = sha256 of each uncompressed layer
//!   tar) with a random `testbed.id` label, so every pushed image has its own image id even
//!   when it has no extra layer (the busybox layer itself is shared, as base layers are).
//!
//! Blobs go up with the registry API's two-step upload (`POST .../blobs/uploads/`, then `PUT`
//! to the returned location with `?digest=`), the manifest with `PUT .../manifests/TAG` as
//! `application/vnd.docker.distribution.manifest.v2+json`.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, ensure};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http;

/// Where Debian's `busybox-static` installs the static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked in `/bin` next to `/bin/busybox`.
pub const APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "echo",
    "wget",
    "sleep",
    "true",
    "false",
    "env",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "test",
    "head",
    "grep",
    "wc",
    "sha256sum",
    "uname",
    "id",
];

/// Media type of a Docker v2 schema2 manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of an image config.
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Media type of a gzip'd layer.
pub const MEDIA_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Modification time of every file in generated layers (2024-01-01T00:00:00Z).
const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to build and where it goes: `repo:tag` plus the sizes of extra random layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Repository path, e.g. `library/ubuntu`.
    pub repo: String,
    /// Tag, e.g. `22.04`.
    pub tag: String,
    /// Size in bytes of each extra layer's single random file, in layer order.
    pub extra_layers: Vec<usize>,
    /// The config's `os/architecture[/variant]` (default `linux/amd64`). Any platform but the
    /// default also gets a layer with `/etc/testbed-platform` holding it, so a build can tell
    /// which platform's image it started from (the busybox binary stays this machine's).
    pub platform: Option<String>,
}

impl ImageSpec {
    /// `repo:tag` with only the busybox layer.
    pub fn new(repo: impl Into<String>, tag: impl Into<String>) -> Self {
        ImageSpec {
            repo: repo.into(),
            tag: tag.into(),
            extra_layers: Vec::new(),
            platform: None,
        }
    }

    /// The image for `platform` (`os/architecture[/variant]`).
    pub fn for_platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// Adds a layer holding `bytes` random bytes.
    pub fn with_layer(mut self, bytes: usize) -> Self {
        self.extra_layers.push(bytes);
        self
    }

    /// Adds `layers` layers holding `total_bytes` random bytes between them.
    pub fn with_random_bytes(mut self, total_bytes: usize, layers: usize) -> Self {
        let layers = layers.max(1);
        let each = total_bytes / layers;
        self.extra_layers.extend((0..layers).map(|i| {
            if i == 0 {
                each + total_bytes % layers
            } else {
                each
            }
        }));
        self
    }
}

/// A content descriptor as it appears in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
}

/// What [`push_image`] put in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedImage {
    /// `127.0.0.1:PORT` it was pushed to.
    pub registry: String,
    pub repo: String,
    pub tag: String,
    /// `registry/repo:tag`, ready for `docker pull`.
    pub reference: String,
    /// Digest of the manifest (`sha256:…`), as the registry reports it.
    pub digest: String,
    /// Digest of the config, which is the image id the daemon shows.
    pub image_id: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Bytes a pull downloads: config plus compressed layers (without the manifest).
    pub size: u64,
    /// Bytes of the manifest itself (for a descriptor in an index).
    pub manifest_size: u64,
}

impl PushedImage {
    /// `repo:tag` under another registry host, e.g. a [`crate::proxy::FaultProxy`] in front of
    /// the one it was pushed to.
    pub fn reference_via(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repo, self.tag)
    }
}

/// Builds the image `spec` describes and pushes it to the registry at `registry_host`
/// (`127.0.0.1:PORT`).
pub async fn push_image(registry_host: &str, spec: &ImageSpec) -> anyhow::Result<PushedImage> {
    push_as(registry_host, spec, Some(&spec.tag)).await
}

/// Builds `spec` and pushes it, its manifest under `tag`, or by its digest alone (`None`).
async fn push_as(
    registry_host: &str,
    spec: &ImageSpec,
    tag: Option<&str>,
) -> anyhow::Result<PushedImage> {
    let context = || {
        format!(
            "while pushing {}:{} to {registry_host}",
            spec.repo, spec.tag
        )
    };
    let built = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || build_image(&spec))
            .await?
            .with_context(context)?
    };
    for blob in built.layers.iter().map(|l| &l.blob).chain([&built.config]) {
        upload_blob(registry_host, &spec.repo, blob)
            .await
            .with_context(context)?;
    }
    let by_digest = sha256_digest(&built.manifest);
    let digest = put_manifest(
        registry_host,
        &spec.repo,
        tag.unwrap_or(&by_digest),
        &built.manifest,
    )
    .await
    .with_context(context)?;
    let layers: Vec<Descriptor> = built.layers.iter().map(|l| l.blob.descriptor()).collect();
    let config = built.config.descriptor();
    Ok(PushedImage {
        registry: registry_host.to_owned(),
        repo: spec.repo.clone(),
        tag: spec.tag.clone(),
        reference: format!("{registry_host}/{}:{}", spec.repo, spec.tag),
        digest,
        image_id: config.digest.clone(),
        size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        manifest_size: built.manifest.len() as u64,
        config,
        layers,
    })
}

/// Media type of a Docker manifest list (an image index).
pub const MEDIA_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What [`push_index`] put in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedIndex {
    /// `registry/repo:tag`, ready for `docker pull`.
    pub reference: String,
    /// Digest of the manifest list.
    pub digest: String,
    /// Each platform (`os/architecture[/variant]`) and its image, pushed by digest only.
    pub images: Vec<(String, PushedImage)>,
}

impl PushedIndex {
    /// The image of `platform`.
    pub fn image(&self, platform: &str) -> Option<&PushedImage> {
        self.images
            .iter()
            .find(|(p, _)| p == platform)
            .map(|(_, i)| i)
    }
}

/// Builds one image of `spec` per platform (each with `/etc/testbed-platform`, see
/// [`ImageSpec::platform`]), pushes them by digest and then a manifest list of them as
/// `spec.repo:spec.tag`: a multi-platform image as Docker Hub serves them.
pub async fn push_index(
    registry_host: &str,
    spec: &ImageSpec,
    platforms: &[&str],
) -> anyhow::Result<PushedIndex> {
    let mut images = Vec::new();
    let mut manifests = Vec::new();
    for platform in platforms {
        let image = push_as(registry_host, &spec.clone().for_platform(*platform), None).await?;
        let mut parts = platform.split('/');
        let mut entry = json!({
            "mediaType": MEDIA_MANIFEST,
            "size": image.manifest_size,
            "digest": image.digest,
            "platform": {
                "os": parts.next().unwrap_or_default(),
                "architecture": parts.next().unwrap_or_default(),
            },
        });
        if let Some(variant) = parts.next() {
            entry["platform"]["variant"] = json!(variant);
        }
        manifests.push(entry);
        images.push((platform.to_string(), image));
    }
    let list = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST_LIST,
        "manifests": manifests,
    });
    let list: Bytes = serde_json::to_vec(&list)?.into();
    let digest = put_manifest_as(
        registry_host,
        &spec.repo,
        &spec.tag,
        MEDIA_MANIFEST_LIST,
        &list,
    )
    .await
    .with_context(|| format!("while pushing the index {}:{}", spec.repo, spec.tag))?;
    Ok(PushedIndex {
        reference: format!("{registry_host}/{}:{}", spec.repo, spec.tag),
        digest,
        images,
    })
}

/// `sha256:` followed by the lowercase hex SHA-256 of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Uploads one blob to `repo` with `POST /v2/REPO/blobs/uploads/` and a monolithic `PUT`.
pub async fn upload_blob(registry_host: &str, repo: &str, blob: &Blob) -> anyhow::Result<()> {
    let start = http::send(
        Method::POST,
        &format!("http://{registry_host}/v2/{repo}/blobs/uploads/"),
        &[("content-length", "0")],
        Bytes::new(),
    )
    .await?;
    ensure!(
        start.status == StatusCode::ACCEPTED,
        "starting a blob upload to {repo} answered {}: {}",
        start.status,
        start.text()
    );
    let location = start
        .header("location")
        .context("the registry's upload answer has no Location header")?;
    let location = if location.starts_with('/') {
        format!("http://{registry_host}{location}")
    } else {
        location.to_owned()
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let digest = blob.digest.replace(':', "%3A");
    let put = http::send(
        Method::PUT,
        &format!("{location}{separator}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        blob.data.clone(),
    )
    .await?;
    ensure!(
        put.status == StatusCode::CREATED,
        "uploading blob {} to {repo} answered {}: {}",
        blob.digest,
        put.status,
        put.text()
    );
    Ok(())
}

/// Puts a schema2 manifest as `repo:reference` and returns its digest.
pub async fn put_manifest(
    registry_host: &str,
    repo: &str,
    reference: &str,
    manifest: &Bytes,
) -> anyhow::Result<String> {
    put_manifest_as(registry_host, repo, reference, MEDIA_MANIFEST, manifest).await
}

/// Puts a manifest of `media_type` (a manifest, a manifest list or an OCI index) as
/// `repo:reference` and returns its digest.
pub async fn put_manifest_as(
    registry_host: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &Bytes,
) -> anyhow::Result<String> {
    let resp = http::send(
        Method::PUT,
        &format!("http://{registry_host}/v2/{repo}/manifests/{reference}"),
        &[("content-type", media_type)],
        manifest.clone(),
    )
    .await?;
    ensure!(
        resp.status == StatusCode::CREATED,
        "putting manifest {repo}:{reference} answered {}: {}",
        resp.status,
        resp.text()
    );
    let expected = sha256_digest(manifest);
    let digest = resp.header("docker-content-digest").unwrap_or(&expected);
    ensure!(
        digest == expected,
        "the registry reports manifest digest {digest}, expected {expected}"
    );
    Ok(expected)
}

/// Content-addressed bytes: a layer, a config or a manifest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub data: Bytes,
    pub digest: String,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        let digest = sha256_digest(&data);
        Blob {
            media_type,
            data: data.into(),
            digest,
        }
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.to_owned(),
            size: self.data.len() as u64,
            digest: self.digest.clone(),
        }
    }
}

/// A gzip'd layer with the digest of its uncompressed tar (the config's `diff_id`).
#[derive(Debug, Clone)]
struct Layer {
    blob: Blob,
    diff_id: String,
    created_by: String,
}

impl Layer {
    fn from_tar(tar: Vec<u8>, level: Compression, created_by: String) -> anyhow::Result<Self> {
        let diff_id = sha256_digest(&tar);
        let mut gz = GzEncoder::new(Vec::with_capacity(tar.len() / 2), level);
        gz.write_all(&tar)?;
        Ok(Layer {
            blob: Blob::new(MEDIA_LAYER, gz.finish()?),
            diff_id,
            created_by,
        })
    }
}

struct BuiltImage {
    layers: Vec<Layer>,
    config: Blob,
    manifest: Bytes,
}

fn build_image(spec: &ImageSpec) -> anyhow::Result<BuiltImage> {
    let mut layers = vec![busybox_layer()?];
    let platform = spec.platform.as_deref().unwrap_or("linux/amd64");
    let mut parts = platform.split('/');
    let (os, architecture, variant) = (
        parts.next().unwrap_or("linux"),
        parts
            .next()
            .context("a platform is os/architecture[/variant]")?,
        parts.next(),
    );
    if spec.platform.is_some() {
        layers.push(platform_layer(platform)?);
    }
    for (index, &size) in spec.extra_layers.iter().enumerate() {
        layers.push(random_layer(index, size)?);
    }
    let mut config = json!({
        "architecture": architecture,
        "os": os,
        "created": CREATED,
        "config": {
            "Env": [PATH_ENV],
            "Cmd": ["/bin/sh"],
            "Labels": {
                "testbed.id": crate::unique_name("image"),
                "testbed.ref": format!("{}:{}", spec.repo, spec.tag),
            },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": layers
            .iter()
            .map(|l| json!({ "created": CREATED, "created_by": l.created_by }))
            .collect::<Vec<_>>(),
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    let config = Blob::new(MEDIA_CONFIG, serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
    });
    Ok(BuiltImage {
        manifest: serde_json::to_vec(&manifest)?.into(),
        layers,
        config,
    })
}

/// The busybox rootfs layer, built once per process (it is the same for every image).
fn busybox_layer() -> anyhow::Result<Layer> {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    if let Some(layer) = LAYER.get() {
        return Ok(layer.clone());
    }
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!(
            "cannot read {BUSYBOX}: install busybox-static \
             (run scripts/setup or `apt-get install -y busybox-static`)"
        )
    })?;
    let mut tar = TarWriter::new();
    for dir in ["bin", "etc", "root", "tmp"] {
        tar.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    tar.file("bin/busybox", 0o755, &busybox)?;
    for applet in APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let layer = Layer::from_tar(
        tar.finish()?,
        Compression::default(),
        "testbed: busybox rootfs".to_owned(),
    )?;
    Ok(LAYER.get_or_init(|| layer).clone())
}

/// A layer with `/etc/testbed-platform` holding `platform` and a newline.
fn platform_layer(platform: &str) -> anyhow::Result<Layer> {
    let mut tar = TarWriter::new();
    tar.dir("etc", 0o755)?;
    tar.file(
        "etc/testbed-platform",
        0o644,
        format!("{platform}\n").as_bytes(),
    )?;
    Layer::from_tar(
        tar.finish()?,
        Compression::default(),
        format!("testbed: platform {platform}"),
    )
}

/// A layer with one file of `size` random bytes; stored uncompressed inside the gzip stream
/// (random data does not compress), so the blob is about `size` bytes.
fn random_layer(index: usize, size: usize) -> anyhow::Result<Layer> {
    let mut data = vec![0u8; size];
    fill_random(&mut data);
    let mut tar = TarWriter::new();
    tar.dir("testbed", 0o755)?;
    tar.file(&format!("testbed/random-{index}.bin"), 0o644, &data)?;
    Layer::from_tar(
        tar.finish()?,
        Compression::none(),
        format!("testbed: {size} random bytes"),
    )
}

/// Fills `data` with incompressible bytes that differ on every call: xorshift64* seeded from
/// the OS. Not cryptographic, but about 20 times faster than `rand`'s default generator in
/// the unoptimized builds tests run in.
fn fill_random(data: &mut [u8]) {
    let mut state = rand::random::<u64>() | 1;
    for chunk in data.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// A tar stream with fixed owners and times, so equal content gives equal digests.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl TarWriter {
    fn new() -> Self {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        Ok(self
            .builder
            .append_data(&mut header, Path::new(path), std::io::empty())?)
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        Ok(self
            .builder
            .append_data(&mut header, Path::new(path), data)?)
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        Ok(self.builder.append_link(&mut header, path, target)?)
    }

    fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}
