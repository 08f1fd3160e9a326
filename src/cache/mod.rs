//! The cache directory (`--cache-dir`): base images and build layers kept between runs, so a
//! warm run asks no registry for anything. Restored before the prefetch, saved after the
//! builds, bounded by `--cache-max-size` (least recently used entries go first).
//!
//! # Layout (format 1)
//!
//! ```text
//! <cache-dir>/
//!   index.json                 what is here: format, base images (reference -> image id,
//!                              manifest digest, archive), archives (size, SHA-256, saved,
//!                              last used), service images, the buildx cache; written
//!                              atomically (temp file + rename)
//!   base-images/<id>.tar       one base image each (Engine API export = `docker save`),
//!                              named by its image id
//!   images/services-<h>.tar    inline-cache mode: the service images of the last run, with
//!                              their inline cache metadata, layers shared
//!   buildx/                    BuildKit local cache (OCI layout, one tag per service) when the
//!                              builder can export a cache
//!   buildx-new/                written during a run; replaces buildx/ only after the export
//!                              succeeded
//!   tmp/                       partial writes; emptied at open
//!   lock                       the pid of the run using the directory
//! ```
//!
//! Other modules may keep their own files in the same directory (the prefetch's
//! `source-health.json`); this module only ever removes the names above.
//!
//! # Life of a run
//!
//! 1. [`Cache::open`]: creates or validates the directory. An index of another format version
//!    (or an unreadable one) is ignored and replaced, with a warning; leftovers of a killed
//!    run (partial files, an unfinished buildx rotation) are cleaned up.
//! 2. [`Cache::restore_base_images`]: before the prefetch, loads (Engine API import) the
//!    archives of the base images the plan needs that the daemon lacks, after checking their
//!    SHA-256; a corrupted or truncated archive is discarded with a warning (the image is
//!    then pulled as usual). Prefetch then finds them present and asks no registry.
//!    With `--pull always`, [`Cache::vouch_current`] asks the registry for the current
//!    manifest digest instead of pulling; if no source answers, the cached copy is used and a
//!    warning says how old it is.
//! 3. [`Cache::prepare_build_cache`]: decides how layers are cached ([`BuildCacheMode`]):
//!    `--cache-to type=local` into `buildx-new/` (seeded with `buildx/`) when the builder can
//!    export a cache (buildx's docker driver on the containerd image store, or a
//!    docker-container/remote/kubernetes builder); else inline cache metadata in the service
//!    images, restored from `images/` and used as `cache-from`.
//! 4. After the builds: [`Cache::save_base_images`], [`Cache::save_build_cache`] (rotates
//!    `buildx-new/` into `buildx/`, or saves the service images), then [`Cache::evict`] to
//!    the budget and [`Cache::close`], which writes the index and gives the stats
//!    ([`CacheStats`]) for the report.
//!
//! A run killed at any point leaves the previous cache usable: archives and the index are
//! renamed into place only when complete, and the index only names complete archives.
//!
//! The library never prints: warnings are collected ([`Cache::warnings`]) for the caller to
//! show.

mod freshness;
mod images;
pub mod index;
mod key;
mod layers;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use freshness::Freshness;
pub use images::RestoreStats;
pub use key::{CacheKey, KeyPrefixError, cache_key};
pub use layers::{BuildCacheMode, BuildCachePlan, JobCache};

use index::{Index, Loaded};

/// `--cache-max-size` default: 2 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 2 << 30;

/// Names this module creates in a cache directory (and the only ones it ever removes).
const OWN_NAMES: [&str; 8] = [
    index::INDEX_FILE,
    "base-images",
    "images",
    layers::BUILDX,
    layers::BUILDX_NEW,
    layers::BUILDX_OLD,
    store::TMP_DIR,
    "lock",
];

/// Why the cache cannot be used at all. The caller should warn and run without it: a cache
/// never fails a build.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cache directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "cache directory {} is in use by another run (pid {pid}); this run goes without the cache",
        path.display()
    )]
    Busy { path: PathBuf, pid: u32 },
}

/// What the report shows about the cache (part of the report model).
pub use crate::report::CacheStats;

/// An open cache directory.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    max_size: u64,
    index: Index,
    stats: CacheStats,
    warnings: Vec<String>,
    /// Base image references whose image the cache restored (or found already loaded).
    restored: std::collections::BTreeSet<String>,
    /// Cache tags this run created in the daemon (removed again when saving).
    cache_tags: Vec<String>,
    build_plan: Option<BuildCachePlan>,
    /// Load the service images with the base images ([`Cache::preload_service_images`]).
    preload_services: bool,
    _lock: Lock,
}

/// "30 s", "10 min", "3 h", "2 days": how old something saved at `then_ms` is at `now_ms`.
pub fn age(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// The advisory lock: `lock` holds the pid of the run using the directory.
#[derive(Debug)]
struct Lock {
    path: PathBuf,
}

impl Lock {
    fn acquire(root: &Path) -> Result<Lock, CacheError> {
        let path = root.join("lock");
        let me = std::process::id();
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{me}");
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match pid {
                        Some(pid) if pid != me && Path::new(&format!("/proc/{pid}")).exists() => {
                            return Err(CacheError::Busy {
                                path: root.to_path_buf(),
                                pid,
                            });
                        }
                        // A dead run's lock (or an unreadable one): take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(source) => {
                    return Err(CacheError::Io {
                        path: root.to_path_buf(),
                        what: "cannot create the lock file",
                        source,
                    });
                }
            }
        }
        Err(CacheError::Io {
            path: root.to_path_buf(),
            what: "cannot take the lock",
            source: std::io::Error::other("the lock file keeps reappearing"),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Cache {
    /// Opens (creating it if needed) the cache directory `dir`, limited to `max_size` bytes.
    ///
    /// Never fails because of what is inside: another format version, a broken index,
    /// partial files of a killed run are warnings, and the directory is repaired. Fails only
    /// when the directory cannot be used at all (not creatable, not a directory, in use).
    pub fn open(dir: impl AsRef<Path>, max_size: u64) -> Result<Cache, CacheError> {
        let root = std::path::absolute(dir.as_ref()).unwrap_or_else(|_| dir.as_ref().to_path_buf());
        let io = |what: &'static str| {
            let path = root.clone();
            move |source| CacheError::Io { path, what, source }
        };
        std::fs::create_dir_all(&root).map_err(io("cannot create it"))?;
        if !root.is_dir() {
            return Err(CacheError::NotADirectory { path: root });
        }
        let lock = Lock::acquire(&root)?;
        let tmp = root.join(store::TMP_DIR);
        store::remove(&tmp).map_err(io("cannot clear tmp/"))?;
        std::fs::create_dir_all(&tmp).map_err(io("cannot create tmp/"))?;

        let mut warnings = Vec::new();
        let index = match Index::load(&root) {
            Loaded::Ok(index) => index,
            Loaded::Missing => Index::new(),
            Loaded::OtherFormat(version) => {
                warnings.push(format!(
                    "cache directory {} has format {} but this version of ai-infra-build uses format {}: \
                     it is ignored and replaced (the first run fills it again)",
                    root.display(),
                    version.map_or("unknown".to_string(), |v| v.to_string()),
                    index::FORMAT
                ));
                reset(&root);
                Index::new()
            }
            Loaded::Corrupt(why) => {
                warnings.push(format!(
                    "the index of cache directory {} is unreadable ({why}): the cache is ignored and replaced",
                    root.display()
                ));
                reset(&root);
                Index::new()
            }
        };
        let mut cache = Cache {
            stats: CacheStats {
                dir: root.display().to_string(),
                max_size,
                mode: "off".into(),
                ..CacheStats::default()
            },
            root,
            max_size,
            index,
            warnings,
            restored: Default::default(),
            cache_tags: Vec::new(),
            build_plan: None,
            preload_services: false,
            _lock: lock,
        };
        cache.repair();
        Ok(cache)
    }

    /// Makes the directory agree with the index after a killed run.
    fn repair(&mut self) {
        layers::recover_rotation(&self.root);
        // Archives the index names but the disk lacks.
        let missing: Vec<String> = self
            .index
            .archives
            .keys()
            .filter(|a| !self.root.join(a).is_file())
            .cloned()
            .collect();
        for a in missing {
            self.warnings.push(format!(
                "cache archive {a} is listed in the index but missing: its images will be pulled again"
            ));
            self.index.remove_archive(&a);
        }
        // Archives on disk the index does not name: a run killed between writing an archive
        // and the index. Not trusted (no checksum on record): removed.
        for sub in ["base-images", "images"] {
            for file in store::files_in(&self.root.join(sub)) {
                let rel = format!(
                    "{sub}/{}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                );
                if !self.index.archives.contains_key(&rel) {
                    let _ = store::remove(&file);
                }
            }
        }
        for a in self.index.unreferenced_archives() {
            let _ = store::remove(&self.root.join(&a));
            self.index.archives.remove(&a);
        }
        let buildx = self.root.join(layers::BUILDX);
        if !buildx.is_dir() {
            self.index.buildx = None;
        } else if self.index.buildx.is_none() {
            // Not on record (the index write of its run did not happen): adopt it as the
            // least recently used entry if it reads as a layout; it is fully checked before use.
            match layers::read_layout(&buildx, false) {
                Ok(layout) => {
                    self.index.buildx = Some(index::BuildxDir {
                        size: store::disk_size(&buildx),
                        tags: layout.tags.into_keys().collect(),
                        saved_at_ms: 0,
                        last_used_ms: 0,
                    });
                }
                Err(_) => {
                    let _ = store::remove(&buildx);
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Everything worth telling the user so far (also kept for [`CacheStats::warnings`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The warnings not yet taken, for a caller that shows them as they come.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let new = std::mem::take(&mut self.warnings);
        self.stats.warnings.extend(new.iter().cloned());
        new
    }

    fn warn(&mut self, text: String) {
        self.warnings.push(text);
    }

    /// Records the cache key of this run (shown in the stats, kept in the index).
    pub fn set_key(&mut self, key: &CacheKey) {
        self.stats.key = Some(key.key.clone());
        self.index.key = Some(key.key.clone());
    }

    /// The image id and manifest digest the index has for `reference` (canonical string).
    pub fn cached_digest(&self, reference: &str) -> Option<&index::BaseImage> {
        self.index.base_images.get(reference)
    }

    /// True when the cache holds `reference` with manifest digest (or image id) `digest`.
    pub fn present(&self, reference: &str, digest: &str) -> bool {
        self.index
            .base_images
            .get(reference)
            .is_some_and(|b| b.digest.as_deref() == Some(digest) || b.image_id == digest)
    }

    /// Current size of the directory in bytes.
    pub fn size(&self) -> u64 {
        store::disk_size(&self.root)
    }

    fn write_index(&mut self) {
        if let Err(e) = store::write_atomic(&self.root, index::INDEX_FILE, &self.index.to_bytes()) {
            self.warn(format!(
                "cannot write the cache index in {}: {e}; the next run starts with an empty cache",
                self.root.display()
            ));
        }
    }

    /// Removes least recently used entries (archives, the buildx cache) until the directory
    /// is at most `budget` bytes. Returns the removed entries' names.
    pub fn evict(&mut self, budget: u64) -> Vec<String> {
        #[derive(Debug)]
        struct Unit {
            name: String,
            last_used_ms: u64,
            size: u64,
        }
        let mut units: Vec<Unit> = self
            .index
            .archives
            .iter()
            .map(|(name, a)| Unit {
                name: name.clone(),
                last_used_ms: a.last_used_ms,
                size: store::disk_size(&self.root.join(name)),
            })
            .collect();
        if let Some(b) = &self.index.buildx {
            units.push(Unit {
                name: layers::BUILDX.to_string(),
                last_used_ms: b.last_used_ms,
                size: store::disk_size(&self.root.join(layers::BUILDX)),
            });
        }
        // Least recently used first; among equals, the biggest first (fewest evictions).
        units.sort_by(|a, b| {
            a.last_used_ms
                .cmp(&b.last_used_ms)
                .then(b.size.cmp(&a.size))
        });
        let mut total = self.size();
        let mut evicted = Vec::new();
        for unit in units {
            if total <= budget {
                break;
            }
            let path = self.root.join(&unit.name);
            if let Err(e) = store::remove(&path) {
                self.warn(format!(
                    "cannot evict {} from the cache: {e}",
                    path.display()
                ));
                continue;
            }
            if unit.name == layers::BUILDX {
                self.index.buildx = None;
            } else {
                self.index.remove_archive(&unit.name);
            }
            total = total.saturating_sub(unit.size);
            self.stats.evictions += 1;
            self.stats.evicted_bytes += unit.size;
            evicted.push(unit.name);
        }
        if !evicted.is_empty() {
            self.write_index();
        }
        evicted
    }

    /// Evicts to `--cache-max-size`, writes the index, releases the directory, and returns
    /// the stats for the report.
    pub fn close(mut self) -> CacheStats {
        let budget = self.max_size;
        self.evict(budget);
        self.write_index();
        let _ = store::remove(&self.root.join(store::TMP_DIR));
        let mut stats = std::mem::take(&mut self.stats);
        stats.content_key = Some(self.index.content_key(&self.root));
        stats.warnings.extend(std::mem::take(&mut self.warnings));
        stats.size = store::disk_size(&self.root);
        stats.hits = stats.base_image_hits + stats.service_hits;
        stats.misses = stats.base_image_misses + stats.service_misses;
        stats
    }

    /// The stats so far (before [`Cache::close`]).
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

/// Removes what this module owns in `root` (after a format change or a broken index).
fn reset(root: &Path) {
    for name in OWN_NAMES {
        if name == "lock" || name == store::TMP_DIR {
            continue;
        }
        let _ = store::remove(&root.join(name));
    }
}

/// A `--cache-max-size` that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{text:?} is not a size (e.g. 2GiB, 500MB, 1048576)")]
    NotANumber { text: String },
    #[error("unknown size unit {unit:?} in {text:?} (use k, m, g or t)")]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?} is out of range")]
    OutOfRange { text: String },
}

/// Parses a size for `--cache-max-size`: bytes, or a number with a unit `k`, `m`, `g`, `t`
/// (also `KB`/`KiB`, `MB`/`MiB`, …): powers of 1024, as Docker counts. `1.5g` works.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| SizeError::NotANumber { text: text.into() })?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(SizeError::UnknownUnit {
                text: text.into(),
                unit: other.into(),
            });
        }
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(SizeError::OutOfRange { text: text.into() });
    }
    Ok(bytes as u64)
}

/// A long timeout for image import and export (the engine's client has a short one).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::index::{Archive, ArchiveKind, BaseImage};
    use super::*;

    fn put_archive(cache: &mut Cache, name: &str, bytes: &[u8], last_used_ms: u64) {
        let path = cache.root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let w = store::sha256_file(&path).unwrap();
        cache.index.archives.insert(
            name.to_string(),
            Archive {
                kind: ArchiveKind::BaseImage,
                size: w.size,
                sha256: w.sha256,
                image_ids: vec![format!("sha256:{name}")],
                saved_at_ms: last_used_ms,
                last_used_ms,
            },
        );
        cache.index.base_images.insert(
            format!("docker.io/library/{}:1", name.replace(['/', '.'], "-")),
            BaseImage {
                image_id: format!("sha256:{name}"),
                digest: None,
                archive: name.to_string(),
                saved_at_ms: last_used_ms,
            },
        );
    }

    #[test]
    fn a_new_directory_is_created_with_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/cache");
        let cache = Cache::open(&path, DEFAULT_MAX_SIZE).unwrap();
        assert!(cache.warnings().is_empty());
        let stats = cache.close();
        assert!(path.join("index.json").is_file());
        assert!(!path.join("lock").exists(), "the lock goes with the run");
        assert_eq!(stats.max_size, 2 * 1024 * 1024 * 1024);
    }

    #[test]
    fn issue7_an_older_format_is_ignored_with_a_warning_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.json"),
            r#"{"format": 0, "images": ["x"]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("base-images")).unwrap();
        std::fs::write(dir.path().join("base-images/old.tar"), b"old").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"the user's").unwrap();
        let cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(cache.warnings().len(), 1, "{:?}", cache.warnings());
        assert!(
            cache.warnings()[0].contains("format 0"),
            "{:?}",
            cache.warnings()
        );
        assert!(cache.index().base_images.is_empty());
        assert!(!dir.path().join("base-images/old.tar").exists());
        assert!(
            dir.path().join("notes.txt").exists(),
            "only our own names are removed"
        );
        drop(cache);
        let reopened = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        assert!(reopened.warnings().is_empty(), "{:?}", reopened.warnings());
    }

    #[test]
    fn a_newer_or_garbled_index_is_a_warning_never_a_crash() {
        for text in [r#"{"format": 99}"#, "{not json", ""] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("index.json"), text).unwrap();
            let cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
            assert_eq!(
                cache.warnings().len(),
                1,
                "{text:?}: {:?}",
                cache.warnings()
            );
        }
    }

    #[test]
    fn a_cache_path_that_is_a_file_is_an_error_to_warn_about() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = Cache::open(&file, DEFAULT_MAX_SIZE).unwrap_err();
        assert!(err.to_string().contains("cache directory"), "{err}");
    }

    #[test]
    fn a_second_run_on_the_same_directory_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        // A live process that is not us: pid 1.
        std::fs::write(dir.path().join("lock"), "1\n").unwrap();
        let err = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap_err();
        assert!(matches!(err, CacheError::Busy { pid: 1, .. }), "{err}");
        // A dead run's lock is taken over.
        std::fs::write(dir.path().join("lock"), "4294967290\n").unwrap();
        Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
    }

    #[test]
    fn issue7_a_run_killed_mid_save_leaves_the_previous_cache_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        put_archive(
            &mut cache,
            "base-images/good.tar",
            b"a complete archive",
            100,
        );
        cache.index.buildx = Some(index::BuildxDir {
            size: 0,
            tags: vec![],
            saved_at_ms: 100,
            last_used_ms: 100,
        });
        cache.write_index();
        let before = cache.index().clone();
        // The killed run: it held the lock, wrote half an archive into tmp/, a complete
        // archive it never recorded, and was halfway through rotating the buildx cache.
        std::mem::forget(cache);
        std::fs::write(dir.path().join("tmp/new.tar.1234.partial"), b"half an arch").unwrap();
        std::fs::write(
            dir.path().join("base-images/unrecorded.tar"),
            b"complete, but not in the index",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("buildx-old/blobs")).unwrap();
        std::fs::write(
            dir.path().join("buildx-old/index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("buildx-new/blobs")).unwrap();
        std::fs::write(dir.path().join("lock"), "4294967290\n").unwrap();

        let cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        assert!(cache.warnings().is_empty(), "{:?}", cache.warnings());
        assert_eq!(cache.index(), &before, "the previous index is intact");
        assert!(dir.path().join("base-images/good.tar").is_file());
        assert!(!dir.path().join("base-images/unrecorded.tar").exists());
        assert!(store::files_in(&dir.path().join("tmp")).is_empty());
        assert!(
            dir.path().join("buildx").is_dir(),
            "the old buildx cache is put back"
        );
        assert!(!dir.path().join("buildx-new").exists());
        assert!(!dir.path().join("buildx-old").exists());
    }

    #[test]
    fn an_archive_missing_from_disk_is_dropped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        put_archive(&mut cache, "base-images/gone.tar", b"x", 1);
        cache.write_index();
        drop(cache);
        std::fs::remove_file(dir.path().join("base-images/gone.tar")).unwrap();
        let cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(cache.warnings().len(), 1);
        assert!(cache.index().base_images.is_empty());
    }

    #[test]
    fn issue7_eviction_removes_least_recently_used_first_until_under_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        put_archive(&mut cache, "base-images/oldest.tar", &[1u8; 4000], 10);
        put_archive(&mut cache, "base-images/middle.tar", &[2u8; 4000], 20);
        put_archive(&mut cache, "base-images/newest.tar", &[3u8; 4000], 30);
        cache.write_index();
        let size = cache.size();
        assert!(size > 12_000);
        // Room for two archives (and the index): the oldest goes.
        let evicted = cache.evict(size - 1000);
        assert_eq!(evicted, ["base-images/oldest.tar"]);
        assert!(cache.size() <= size - 1000);
        assert!(!dir.path().join("base-images/oldest.tar").exists());
        assert_eq!(cache.index().archives.len(), 2);
        assert_eq!(
            cache.index().base_images.len(),
            2,
            "its reference went with it"
        );
        // Room for less than one: everything goes, the directory is under budget.
        let evicted = cache.evict(2000);
        assert_eq!(
            evicted,
            ["base-images/middle.tar", "base-images/newest.tar"]
        );
        assert!(cache.size() <= 2000, "{}", cache.size());
        let stats = cache.close();
        assert_eq!(stats.evictions, 3);
        assert_eq!(stats.evicted_bytes, 12_000);
        assert!(stats.size <= 2000);
    }

    #[test]
    fn eviction_counts_the_buildx_cache_as_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        std::fs::create_dir_all(dir.path().join("buildx/blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("buildx/blobs/sha256/aa"), vec![0u8; 5000]).unwrap();
        cache.index.buildx = Some(index::BuildxDir {
            size: 5000,
            tags: vec!["svc".into()],
            saved_at_ms: 5,
            last_used_ms: 5,
        });
        put_archive(&mut cache, "base-images/recent.tar", &[1u8; 3000], 50);
        let evicted = cache.evict(4000);
        assert_eq!(evicted, ["buildx"]);
        assert!(cache.index().buildx.is_none());
        assert!(dir.path().join("base-images/recent.tar").exists());
    }

    #[test]
    fn present_matches_the_manifest_digest_or_the_image_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), DEFAULT_MAX_SIZE).unwrap();
        put_archive(&mut cache, "base-images/u.tar", b"x", 1);
        let reference = "docker.io/library/base-images-u-tar:1";
        cache.index.base_images.get_mut(reference).unwrap().digest = Some("sha256:d1".into());
        assert!(cache.present(reference, "sha256:d1"));
        assert!(cache.present(reference, "sha256:base-images/u.tar"));
        assert!(!cache.present(reference, "sha256:other"));
        assert!(!cache.present("docker.io/library/nope:1", "sha256:d1"));
        assert_eq!(
            cache.cached_digest(reference).unwrap().digest.as_deref(),
            Some("sha256:d1")
        );
    }

    #[test]
    fn sizes_parse_like_docker_counts_them() {
        assert_eq!(parse_size("2GiB"), Ok(DEFAULT_MAX_SIZE));
        assert_eq!(parse_size("2g"), Ok(DEFAULT_MAX_SIZE));
        assert_eq!(parse_size("500MB"), Ok(500 << 20));
        assert_eq!(parse_size(" 1.5 k"), Ok(1536));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            r#""lots" is not a size (e.g. 2GiB, 500MB, 1048576)"#
        );
        assert_eq!(
            parse_size("5 parsecs").unwrap_err().to_string(),
            r#"unknown size unit "parsecs" in "5 parsecs" (use k, m, g or t)"#
        );
        assert!(matches!(
            parse_size("1e400"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size(&format!("{}t", u64::MAX)),
            Err(SizeError::OutOfRange { .. })
        ));
        assert!(matches!(parse_size(""), Err(SizeError::NotANumber { .. })));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(100_000, 130_000), "30 s");
        assert_eq!(age(0, 600_000), "10 min");
        assert_eq!(age(0, 3 * 3_600_000), "3 h");
        assert_eq!(age(0, 5 * 86_400_000), "5 days");
        assert_eq!(age(10, 5), "0 s");
    }
}
