//! The build layer cache: which kind a run uses, the flags each build gets, and the
//! `buildx/` directory (a BuildKit local cache, OCI layout) with its rotation.
//!
//! - [`BuildCacheMode::BuildxLocal`]: every service exports `--cache-to
//!   type=local,dest=<cache>/buildx-new,mode=max,tag=<service>` and imports `--cache-from
//!   type=local,src=<cache>/buildx,tag=<service>`. BuildKit updates `index.json` per tag under
//!   a lock, so parallel builds share one directory. `buildx-new/` starts as a hard-linked copy
//!   of `buildx/` (services not built this run keep their cache); after the builds it is
//!   checked (index readable, every referenced blob present), its unreferenced blobs are
//!   removed, and only then does it replace `buildx/`. An interrupted run or a broken export
//!   leaves `buildx/` as it was.
//! - [`BuildCacheMode::Inline`]: builds write inline cache metadata (`BUILDKIT_INLINE_CACHE=1`
//!   for the engine backend, `--cache-to type=inline` for buildx) and use the previous run's
//!   service image, loaded from `images/` and tagged `ai-infra-build-cache-<dir>/<service>`,
//!   as `cache-from`. BuildKit (20.10's builder, the docker driver) finds such a local image
//!   without asking any registry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::store;

pub const BUILDX: &str = "buildx";
pub const BUILDX_NEW: &str = "buildx-new";
pub const BUILDX_OLD: &str = "buildx-old";

/// How service layers are cached between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildCacheMode {
    /// BuildKit local cache export/import (`buildx/`).
    BuildxLocal,
    /// Inline cache metadata in the service images, kept in `images/`.
    Inline,
    /// No layer cache (e.g. `--no-cache`).
    Off,
}

impl BuildCacheMode {
    pub fn label(self) -> &'static str {
        match self {
            BuildCacheMode::BuildxLocal => "buildx-local",
            BuildCacheMode::Inline => "inline",
            BuildCacheMode::Off => "off",
        }
    }

    /// The mode for a builder: `buildx_driver` is the buildx builder's driver (`None` for
    /// the engine backend, or when `docker buildx inspect` did not say).
    ///
    /// Cache export works with buildx's docker driver only on the containerd image store
    /// (on the classic store it refuses: "Cache export is not supported for the docker
    /// driver"), and always with the docker-container, remote and kubernetes drivers.
    pub fn decide(buildx_driver: Option<&str>, containerd_image_store: bool) -> BuildCacheMode {
        match buildx_driver {
            Some("docker") if containerd_image_store => BuildCacheMode::BuildxLocal,
            Some("docker-container" | "remote" | "kubernetes") => BuildCacheMode::BuildxLocal,
            _ => BuildCacheMode::Inline,
        }
    }
}

/// The cache settings of one build job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCache {
    /// `--cache-from` values (buildx) or image names (engine API `cachefrom`).
    pub cache_from: Vec<String>,
    /// `--cache-to` values (buildx only).
    pub cache_to: Vec<String>,
    /// Write inline cache metadata (`BUILDKIT_INLINE_CACHE=1` / `--cache-to type=inline`).
    pub inline_cache: bool,
}

/// A restored service image (inline mode) and the build inputs it was made from
/// ([`crate::build::inputs`]): when this run's inputs are the same, the image is used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reusable {
    pub image_id: String,
    pub inputs: String,
    /// The steps of the build that made it (reported as all cached).
    pub total_steps: Option<u32>,
}

/// The layer cache of this run: its mode, and per service the cache source that exists.
#[derive(Debug, Clone)]
pub struct BuildCachePlan {
    pub mode: BuildCacheMode,
    pub(super) root: PathBuf,
    /// Service -> the tag in `buildx/` (local mode) or the restored image (inline mode).
    pub(super) sources: BTreeMap<String, String>,
    /// Inline mode: the restored images that carry their build inputs.
    pub(super) reusable: BTreeMap<String, Reusable>,
    /// The build inputs of each service built or reused this run (shared by the clones the
    /// builds get and the cache keeps; saved with the service images).
    pub(super) inputs: Arc<Mutex<BTreeMap<String, String>>>,
}

impl BuildCachePlan {
    pub fn off(root: &Path) -> BuildCachePlan {
        BuildCachePlan::new(BuildCacheMode::Off, root)
    }

    pub(super) fn new(mode: BuildCacheMode, root: &Path) -> BuildCachePlan {
        BuildCachePlan {
            mode,
            root: root.to_path_buf(),
            sources: BTreeMap::new(),
            reusable: BTreeMap::new(),
            inputs: Arc::default(),
        }
    }

    /// Whether the builds should work out their inputs digest (only inline mode keeps the
    /// images it could be checked against).
    pub fn tracks_inputs(&self) -> bool {
        self.mode == BuildCacheMode::Inline
    }

    /// The restored image of `service` that was built from `inputs`, if there is one.
    pub fn reusable(&self, service: &str, inputs: &str) -> Option<&Reusable> {
        self.reusable.get(service).filter(|r| r.inputs == inputs)
    }

    /// Records the inputs `service` was built (or reused) from this run.
    pub fn record_inputs(&self, service: &str, inputs: String) {
        if let Ok(mut map) = self.inputs.lock() {
            map.insert(service.to_string(), inputs);
        }
    }

    pub(super) fn recorded_inputs(&self, service: &str) -> Option<String> {
        self.inputs.lock().ok()?.get(service).cloned()
    }

    /// Whether `service` has something to build from.
    pub fn has_source(&self, service: &str) -> bool {
        self.sources.contains_key(service)
    }

    /// The cache flags of `service`'s build.
    pub fn job(&self, service: &str) -> JobCache {
        match self.mode {
            BuildCacheMode::Off => JobCache::default(),
            BuildCacheMode::Inline => JobCache {
                cache_from: self.sources.get(service).cloned().into_iter().collect(),
                cache_to: Vec::new(),
                inline_cache: true,
            },
            BuildCacheMode::BuildxLocal => {
                let tag = tag_for(service);
                let from = self.root.join(BUILDX);
                let to = self.root.join(BUILDX_NEW);
                JobCache {
                    cache_from: self
                        .sources
                        .contains_key(service)
                        .then(|| {
                            csv(&[
                                "type=local".into(),
                                format!("src={}", from.display()),
                                format!("tag={tag}"),
                            ])
                        })
                        .into_iter()
                        .collect(),
                    cache_to: vec![csv(&[
                        "type=local".into(),
                        format!("dest={}", to.display()),
                        "mode=max".into(),
                        format!("tag={tag}"),
                    ])],
                    inline_cache: false,
                }
            }
        }
    }
}

/// A service's tag in the OCI layout: letters, digits, `.`, `_`, `-`.
pub fn tag_for(service: &str) -> String {
    let t: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Joins `--cache-to`/`--cache-from` fields the way buildx reads them (CSV): a field with a
/// comma or a quote is quoted.
fn csv(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What `docker buildx inspect [BUILDER]` says the builder's driver is.
pub async fn buildx_driver(builder: Option<&str>) -> Option<String> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(["buildx", "inspect"]);
    if let Some(b) = builder {
        cmd.arg(b);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_driver(&String::from_utf8_lossy(&out.stdout))
}

fn parse_driver(inspect: &str) -> Option<String> {
    inspect.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Driver").then(|| v.trim().to_string())
    })
}

/// An OCI layout's tags and the blobs they reach, read from `index.json` and the manifests.
#[derive(Debug, Default)]
pub struct Layout {
    /// `org.opencontainers.image.ref.name` -> the index entry.
    pub tags: BTreeMap<String, serde_json::Value>,
    /// Every digest reachable from the index, with the size its descriptor gives.
    pub blobs: BTreeMap<String, u64>,
}

/// Why the layer cache (`buildx/`, `buildx-new/`) cannot be used or saved. A cache never
/// fails a build: the caller discards it, or keeps the previous one, with a warning.
#[derive(Debug, thiserror::Error)]
pub enum LayerCacheError {
    #[error("index.json: {source}")]
    ReadIndex {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index.json is not JSON: {source}")]
    IndexNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("index.json: {source}")]
    WriteIndex {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index.json lists no manifests")]
    NoManifests { path: PathBuf },
    /// A descriptor lacks its `digest` or its `size`.
    #[error("a descriptor without {missing}")]
    Descriptor { missing: &'static str },
    #[error("unsupported digest {digest}")]
    UnsupportedDigest { digest: String },
    #[error("blob {digest} is missing")]
    BlobMissing {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} has {actual} bytes, not {expected}")]
    BlobSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest}: {source}")]
    ReadBlob {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} is corrupted (checksum mismatch)")]
    Checksum { digest: String },
    #[error("manifest {digest} is not JSON: {source}")]
    ManifestNotJson {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    /// `buildx-new/` has no `index.json`: no build wrote to it.
    #[error("no build exported a cache")]
    NothingExported,
    /// A file operation (`what`: "cannot clear", "cannot create", "cannot copy") failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move buildx/ aside: {source}")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move buildx-new/ into place: {source}")]
    MoveIntoPlace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A [`LayerCacheError::Io`] maker for `map_err`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayerCacheError {
    let path = path.to_path_buf();
    move |source| LayerCacheError::Io { what, path, source }
}

/// Reads and parses a layout's `index.json`.
fn read_index(path: &Path) -> Result<serde_json::Value, LayerCacheError> {
    let bytes = std::fs::read(path).map_err(|source| LayerCacheError::ReadIndex {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| LayerCacheError::IndexNotJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an OCI layout and checks that every blob it references is present with the right
/// size (and, when `verify` is set, the right SHA-256).
pub fn read_layout(dir: &Path, verify: bool) -> Result<Layout, LayerCacheError> {
    let index_path = dir.join("index.json");
    let index = read_index(&index_path)?;
    let mut layout = Layout::default();
    let mut todo: Vec<serde_json::Value> = Vec::new();
    for m in index["manifests"]
        .as_array()
        .ok_or(LayerCacheError::NoManifests { path: index_path })?
    {
        if let Some(tag) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            layout.tags.insert(tag.to_string(), m.clone());
        }
        todo.push(m.clone());
    }
    while let Some(desc) = todo.pop() {
        let digest = desc["digest"]
            .as_str()
            .ok_or(LayerCacheError::Descriptor { missing: "digest" })?;
        let size = desc["size"]
            .as_u64()
            .ok_or(LayerCacheError::Descriptor { missing: "size" })?;
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| LayerCacheError::UnsupportedDigest {
                digest: digest.into(),
            })?;
        if layout.blobs.insert(digest.to_string(), size).is_some() {
            continue;
        }
        let path = dir.join("blobs/sha256").join(hex);
        let meta = std::fs::metadata(&path).map_err(|source| LayerCacheError::BlobMissing {
            digest: digest.into(),
            source,
        })?;
        if meta.len() != size {
            return Err(LayerCacheError::BlobSize {
                digest: digest.into(),
                expected: size,
                actual: meta.len(),
            });
        }
        let read_blob = |source| LayerCacheError::ReadBlob {
            digest: digest.into(),
            source,
        };
        if verify {
            let w = store::sha256_file(&path).map_err(read_blob)?;
            if w.sha256 != hex {
                return Err(LayerCacheError::Checksum {
                    digest: digest.into(),
                });
            }
        }
        let media = desc["mediaType"].as_str().unwrap_or_default();
        if media.contains("index") || media.contains("manifest") {
            let doc: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&path).map_err(read_blob)?,
            )
            .map_err(|source| LayerCacheError::ManifestNotJson {
                digest: digest.into(),
                source,
            })?;
            if let Some(ms) = doc["manifests"].as_array() {
                todo.extend(ms.iter().cloned());
            }
            if let Some(ls) = doc["layers"].as_array() {
                todo.extend(ls.iter().cloned());
            }
            if doc["config"].is_object() {
                todo.push(doc["config"].clone());
            }
        }
    }
    Ok(layout)
}

/// Writes a layout's `index.json` keeping only the entries whose tag is in `keep`.
fn filter_index(dir: &Path, keep: &BTreeSet<String>) -> Result<(), LayerCacheError> {
    let path = dir.join("index.json");
    let mut index = read_index(&path)?;
    if let Some(ms) = index["manifests"].as_array_mut() {
        ms.retain(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|t| keep.contains(t))
        });
    }
    serde_json::to_vec(&index)
        .map_err(std::io::Error::from)
        .and_then(|bytes| std::fs::write(&path, bytes))
        .map_err(|source| LayerCacheError::WriteIndex { path, source })
}

/// Starts `buildx-new/` as a copy of `buildx/` (blobs hard-linked) with only the tags in `keep`.
pub fn seed_new(
    root: &Path,
    keep: &BTreeSet<String>,
    have_old: bool,
) -> Result<(), LayerCacheError> {
    let new = root.join(BUILDX_NEW);
    store::remove(&new).map_err(io("cannot clear", &new))?;
    let blobs = new.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io("cannot create", &blobs))?;
    if !have_old {
        return Ok(());
    }
    let old = root.join(BUILDX);
    for blob in store::files_in(&old.join("blobs/sha256")) {
        let target = blobs.join(blob.file_name().unwrap_or_default());
        if std::fs::hard_link(&blob, &target).is_err() {
            std::fs::copy(&blob, &target).map_err(io("cannot copy", &blob))?;
        }
    }
    for f in ["oci-layout", "index.json"] {
        let from = old.join(f);
        if from.is_file() {
            std::fs::copy(&from, new.join(f)).map_err(io("cannot copy", &from))?;
        }
    }
    if new.join("index.json").is_file() {
        filter_index(&new, keep)?;
    }
    Ok(())
}

/// Checks `buildx-new/`, removes what nothing references, and puts it in place of `buildx/`.
/// Returns the tags it holds.
pub fn rotate(root: &Path) -> Result<Vec<String>, LayerCacheError> {
    let new = root.join(BUILDX_NEW);
    if !new.join("index.json").is_file() {
        return Err(LayerCacheError::NothingExported);
    }
    let layout = read_layout(&new, false)?;
    let keep: BTreeSet<String> = layout
        .blobs
        .keys()
        .filter_map(|d| d.strip_prefix("sha256:").map(str::to_string))
        .collect();
    for blob in store::files_in(&new.join("blobs/sha256")) {
        let name = blob
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(&blob);
        }
    }
    let _ = store::remove(&new.join("ingest"));
    let _ = store::remove(&new.join("index.json.lock"));
    let current = root.join(BUILDX);
    let old = root.join(BUILDX_OLD);
    store::remove(&old).map_err(io("cannot clear", &old))?;
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|source| LayerCacheError::MoveAside {
            path: current.clone(),
            source,
        })?;
    }
    std::fs::rename(&new, &current).map_err(|source| LayerCacheError::MoveIntoPlace {
        path: new.clone(),
        source,
    })?;
    store::sync_dir(root);
    let _ = store::remove(&old);
    Ok(layout.tags.into_keys().collect())
}

/// After a killed run: an unfinished rotation is undone (or completed), `buildx-new/` dropped.
pub fn recover_rotation(root: &Path) {
    let current = root.join(BUILDX);
    let old = root.join(BUILDX_OLD);
    if old.exists() {
        if current.exists() {
            let _ = store::remove(&old);
        } else {
            let _ = std::fs::rename(&old, &current);
        }
    }
    let _ = store::remove(&root.join(BUILDX_NEW));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_export_needs_a_capable_builder() {
        use BuildCacheMode::*;
        assert_eq!(BuildCacheMode::decide(Some("docker"), true), BuildxLocal);
        assert_eq!(
            BuildCacheMode::decide(Some("docker"), false),
            Inline,
            "20.10: export refused"
        );
        assert_eq!(
            BuildCacheMode::decide(Some("docker-container"), false),
            BuildxLocal
        );
        assert_eq!(BuildCacheMode::decide(Some("remote"), false), BuildxLocal);
        assert_eq!(
            BuildCacheMode::decide(None, true),
            Inline,
            "the engine backend"
        );
        assert_eq!(BuildCacheMode::decide(Some("something-new"), true), Inline);
    }

    #[test]
    fn driver_is_read_from_buildx_inspect() {
        let text = "Name:          default\nDriver:        docker\nLast Activity: 2026-11-28\n\nNodes:\nName:      default\n";
        assert_eq!(parse_driver(text).as_deref(), Some("docker"));
        assert_eq!(parse_driver("Name: x\n"), None);
    }

    #[test]
    fn local_mode_flags_name_the_service_tag_and_quote_odd_paths() {
        let plan = BuildCachePlan {
            sources: [("api".to_string(), "api".to_string())].into(),
            ..BuildCachePlan::new(BuildCacheMode::BuildxLocal, Path::new("/c,d"))
        };
        let job = plan.job("api");
        assert_eq!(job.cache_from, ["type=local,\"src=/c,d/buildx\",tag=api"]);
        assert_eq!(
            job.cache_to,
            ["type=local,\"dest=/c,d/buildx-new\",mode=max,tag=api"]
        );
        assert!(!job.inline_cache);
        let fresh = plan.job("web/ui");
        assert!(fresh.cache_from.is_empty(), "no source, no cache-from");
        assert_eq!(
            fresh.cache_to,
            ["type=local,\"dest=/c,d/buildx-new\",mode=max,tag=web_ui"]
        );
    }

    #[test]
    fn inline_mode_uses_the_restored_image() {
        let plan = BuildCachePlan {
            sources: [(
                "api".to_string(),
                "ai-infra-build-cache-1/api:cache".to_string(),
            )]
            .into(),
            ..BuildCachePlan::new(BuildCacheMode::Inline, Path::new("/c"))
        };
        assert_eq!(
            plan.job("api"),
            JobCache {
                cache_from: vec!["ai-infra-build-cache-1/api:cache".into()],
                cache_to: vec![],
                inline_cache: true
            }
        );
        assert_eq!(plan.job("web").cache_from, Vec::<String>::new());
        assert_eq!(
            BuildCachePlan::off(Path::new("/c")).job("api"),
            JobCache::default()
        );
    }

    /// A tiny OCI layout like BuildKit's local cache export: index -> cache manifest
    /// (an image index) -> a layer and a cache config.
    fn write_layout(dir: &Path, tag: &str, layer: &[u8]) -> String {
        use sha2::Digest;
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let hex = store::hex(&sha2::Sha256::digest(data));
            std::fs::write(blobs.join(&hex), data).unwrap();
            (format!("sha256:{hex}"), data.len())
        };
        let (layer_d, layer_n) = put(layer);
        let (cfg_d, cfg_n) = put(br#"{"layers":[]}"#);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_n},
                {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": cfg_d, "size": cfg_n}
            ]
        });
        let (m_d, m_n) = put(&serde_json::to_vec(&manifest).unwrap());
        let index_path = dir.join("index.json");
        let mut index: serde_json::Value = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::json!({"schemaVersion": 2, "manifests": []}));
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json", "digest": m_d, "size": m_n,
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }));
        std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        layer_d
    }

    #[test]
    fn layouts_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let layer = write_layout(dir.path(), "api", b"layer bytes");
        let layout = read_layout(dir.path(), true).unwrap();
        assert_eq!(layout.tags.keys().collect::<Vec<_>>(), ["api"]);
        assert_eq!(layout.blobs.len(), 3);
        // A flipped byte: the size still matches, the checksum does not.
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap());
        std::fs::write(&path, b"layer bytez").unwrap();
        assert!(read_layout(dir.path(), false).is_ok());
        let err = read_layout(dir.path(), true).unwrap_err();
        assert!(matches!(err, LayerCacheError::Checksum { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("blob {layer} is corrupted (checksum mismatch)")
        );
        std::fs::write(&path, b"layer").unwrap();
        let err = read_layout(dir.path(), false).unwrap_err();
        assert!(
            matches!(
                err,
                LayerCacheError::BlobSize {
                    expected: 11,
                    actual: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), format!("blob {layer} has 5 bytes, not 11"));
        std::fs::remove_file(&path).unwrap();
        let err = read_layout(dir.path(), false).unwrap_err();
        assert!(
            matches!(err, LayerCacheError::BlobMissing { .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), format!("blob {layer} is missing"));
    }

    #[test]
    fn rotation_keeps_old_tags_of_unbuilt_services_and_drops_garbage() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write_layout(&root.join(BUILDX), "api", b"api layer v1");
        write_layout(&root.join(BUILDX), "web", b"web layer v1");
        write_layout(&root.join(BUILDX), "removed-service", b"old stuff");
        let keep: BTreeSet<String> = ["api".to_string(), "web".to_string()].into();
        seed_new(root, &keep, true).unwrap();
        // This run rebuilt api only; BuildKit replaced its tag (simulated by a rewrite).
        let new = root.join(BUILDX_NEW);
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(new.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != "api");
        std::fs::write(new.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        write_layout(&new, "api", b"api layer v2");
        std::fs::create_dir_all(new.join("ingest/x")).unwrap();
        let tags = rotate(root).unwrap();
        assert_eq!(tags, ["api", "web"]);
        assert!(!root.join(BUILDX_NEW).exists() && !root.join(BUILDX_OLD).exists());
        let layout = read_layout(&root.join(BUILDX), true).unwrap();
        // Two tags of three blobs each; the cache config is the same blob in both.
        assert_eq!(layout.blobs.len(), 5);
        assert_eq!(
            store::files_in(&root.join("buildx/blobs/sha256")).len(),
            5,
            "garbage removed"
        );
        assert!(!root.join("buildx/ingest").exists());
    }

    #[test]
    fn a_broken_export_is_not_rotated_in() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write_layout(&root.join(BUILDX), "api", b"good");
        seed_new(root, &["api".to_string()].into(), true).unwrap();
        std::fs::write(
            root.join(BUILDX_NEW).join("index.json"),
            b"{\"manifests\": [tru",
        )
        .unwrap();
        let err = rotate(root).unwrap_err();
        assert!(
            matches!(err, LayerCacheError::IndexNotJson { .. }),
            "{err:?}"
        );
        assert!(
            read_layout(&root.join(BUILDX), true).is_ok(),
            "the old cache is untouched"
        );
    }

    #[test]
    fn nothing_exported_is_not_rotated_in() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write_layout(&root.join(BUILDX), "api", b"good");
        seed_new(root, &BTreeSet::new(), false).unwrap();
        let err = rotate(root).unwrap_err();
        assert!(matches!(err, LayerCacheError::NothingExported), "{err:?}");
        assert_eq!(err.to_string(), "no build exported a cache");
        assert!(read_layout(&root.join(BUILDX), true).is_ok());
    }

    #[test]
    fn an_unfinished_rotation_is_recovered() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write_layout(&root.join(BUILDX_OLD), "api", b"v1");
        write_layout(&root.join(BUILDX_NEW), "api", b"v2");
        recover_rotation(root);
        assert!(read_layout(&root.join(BUILDX), true).is_ok());
        assert!(!root.join(BUILDX_NEW).exists());
    }
}
