//! `index.json`: what the cache directory holds, which format it is in, and when each
//! entry was saved and last used. Written atomically (temp file, then rename), so a reader
//! sees the previous index or the new one, never a mix.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The layout version this code reads and writes. A directory with another version is
/// ignored (and replaced) with a warning.
pub const FORMAT: u32 = 1;

/// The index's file name in the cache directory.
pub const INDEX_FILE: &str = "index.json";

/// Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    /// `ai-infra-build X.Y.Z`: the tool that wrote the index.
    pub written_by: String,
    /// The cache key of the run that wrote it (see [`super::cache_key`]).
    #[serde(default)]
    pub key: Option<String>,
    /// Base images by reference (`docker.io/library/ubuntu:22.04`).
    #[serde(default)]
    pub base_images: BTreeMap<String, BaseImage>,
    /// Image archives by their path relative to the cache directory.
    #[serde(default)]
    pub archives: BTreeMap<String, Archive>,
    /// Inline-cache mode: the service images kept as cache sources, by service name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceImage>,
    /// The BuildKit local cache in `buildx/`, when there is one.
    #[serde(default)]
    pub buildx: Option<BuildxDir>,
}

/// One base image reference and the archive that holds its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BaseImage {
    /// The image ID (config digest; the manifest digest on the containerd image store).
    pub image_id: String,
    /// The registry's manifest digest for the reference when it was pulled (`RepoDigests`):
    /// what `--pull always` compares with the registry's current one.
    pub digest: Option<String>,
    /// Path of the archive relative to the cache directory.
    pub archive: String,
    pub saved_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveKind {
    /// One base image (`base-images/<image id hex>.tar`).
    BaseImage,
    /// The service images of one run, layers shared (`images/services-<hash>.tar`).
    ServiceImages,
}

/// An image archive (`docker save` format) and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Archive {
    pub kind: ArchiveKind,
    pub size: u64,
    /// Hex SHA-256 of the whole archive file.
    pub sha256: String,
    /// The image IDs inside.
    pub image_ids: Vec<String>,
    pub saved_at_ms: u64,
    pub last_used_ms: u64,
}

/// A service image kept as `cache-from` source (inline-cache mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceImage {
    pub image_id: String,
    pub archive: String,
    pub saved_at_ms: u64,
    /// The build inputs digest the image was made from ([`crate::build::inputs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// The steps of the build that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u32>,
}

/// The BuildKit local cache directory (`buildx/`, an OCI layout with one tag per service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BuildxDir {
    pub size: u64,
    /// The services that have a cache manifest in it.
    pub tags: Vec<String>,
    pub saved_at_ms: u64,
    pub last_used_ms: u64,
}

/// What reading `index.json` found.
#[derive(Debug)]
pub enum Loaded {
    /// No index: a new (or never completed) cache directory.
    Missing,
    Ok(Index),
    /// Another format version (older or newer): not ours to read.
    OtherFormat(Option<u64>),
    /// Not readable as an index of this format.
    Corrupt(String),
}

impl Index {
    pub fn new() -> Index {
        Index {
            format: FORMAT,
            written_by: concat!("ai-infra-build ", env!("CARGO_PKG_VERSION")).to_string(),
            key: None,
            base_images: BTreeMap::new(),
            archives: BTreeMap::new(),
            services: BTreeMap::new(),
            buildx: None,
        }
    }

    /// A digest of what the directory holds for the next run: base images (reference and
    /// image ID), archives (by checksum), kept service images (ID and inputs) and the BuildKit
    /// cache (`buildx/index.json`), but no times, key or source health. Two runs that leave
    /// the same content have the same content key: the action saves an Actions cache entry
    /// only when it differs from the restored entry's (issue 16: no churn).
    pub fn content_key(&self, dir: &Path) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut field = |parts: &[&str]| {
            for p in parts {
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
        };
        field(&[&FORMAT.to_string()]);
        for (reference, image) in &self.base_images {
            field(&["base", reference, &image.image_id, &image.archive]);
        }
        for (name, archive) in &self.archives {
            field(&["archive", name, &archive.sha256]);
        }
        for (service, image) in &self.services {
            let inputs = image.inputs.as_deref().unwrap_or_default();
            field(&["service", service, &image.image_id, inputs]);
        }
        if let Some(buildx) = &self.buildx {
            let index = std::fs::read(dir.join(super::layers::BUILDX).join("index.json"))
                .map(|b| format!("{:x}", sha2::Sha256::digest(&b)))
                .unwrap_or_default();
            field(&["buildx", &buildx.tags.join(","), &index]);
        }
        let digest = format!("{:x}", h.finalize());
        digest[..24].to_string()
    }

    /// Reads `dir/index.json`.
    pub fn load(dir: &Path) -> Loaded {
        let path = dir.join(INDEX_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return Loaded::Corrupt(format!("cannot read it: {e}")),
        };
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Loaded {
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return Loaded::Corrupt(format!("not JSON: {e}")),
        };
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(FORMAT)) {
            return Loaded::OtherFormat(format);
        }
        match serde_json::from_value::<Index>(value) {
            Ok(index) => Loaded::Ok(index),
            Err(e) => Loaded::Corrupt(e.to_string()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Drops base image and service entries whose archive is gone.
    pub fn drop_dangling(&mut self) -> Vec<String> {
        let archives = &self.archives;
        let mut dropped = Vec::new();
        self.base_images.retain(|reference, b| {
            let keep = archives.contains_key(&b.archive);
            if !keep {
                dropped.push(reference.clone());
            }
            keep
        });
        self.services
            .retain(|_, s| archives.contains_key(&s.archive));
        dropped
    }

    /// Removes an archive and everything that pointed into it.
    pub fn remove_archive(&mut self, archive: &str) {
        self.archives.remove(archive);
        self.drop_dangling();
    }

    /// Archives no entry points into any more.
    pub fn unreferenced_archives(&self) -> Vec<String> {
        self.archives
            .keys()
            .filter(|a| {
                !self.base_images.values().any(|b| &b.archive == *a)
                    && !self.services.values().any(|s| &s.archive == *a)
            })
            .cloned()
            .collect()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut index = Index::new();
        index.archives.insert(
            "base-images/aa.tar".into(),
            Archive {
                kind: ArchiveKind::BaseImage,
                size: 10,
                sha256: "00".repeat(32),
                image_ids: vec!["sha256:aa".into()],
                saved_at_ms: 1,
                last_used_ms: 2,
            },
        );
        index.base_images.insert(
            "docker.io/library/ubuntu:22.04".into(),
            BaseImage {
                image_id: "sha256:aa".into(),
                digest: Some("sha256:dd".into()),
                archive: "base-images/aa.tar".into(),
                saved_at_ms: 1,
            },
        );
        index
    }

    #[test]
    fn index_round_trips() {
        let index = sample();
        match Index::parse(&index.to_bytes()) {
            Loaded::Ok(back) => assert_eq!(back, index),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_format_versions_are_recognised_not_parsed() {
        for text in [
            r#"{"format": 0, "whatever": true}"#,
            r#"{"format": 2, "base-images": {}}"#,
            r#"{"version": 1}"#,
            r#"[]"#,
        ] {
            assert!(
                matches!(Index::parse(text.as_bytes()), Loaded::OtherFormat(_)),
                "{text}"
            );
        }
        assert!(matches!(
            Index::parse(br#"{"format": 0}"#),
            Loaded::OtherFormat(Some(0))
        ));
    }

    #[test]
    fn broken_indexes_are_corrupt_not_a_crash() {
        for text in [
            "",
            "{",
            "\u{0}\u{1}garbage",
            r#"{"format": 1}"#,
            r#"{"format": 1, "written-by": "x", "surprise": 1}"#,
            r#"{"format": 1, "written-by": "x", "base-images": {"a": {"image-id": 3}}}"#,
        ] {
            assert!(
                matches!(Index::parse(text.as_bytes()), Loaded::Corrupt(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn removing_an_archive_drops_its_references() {
        let mut index = sample();
        index.remove_archive("base-images/aa.tar");
        assert!(index.base_images.is_empty());
        assert!(index.archives.is_empty());
    }

    #[test]
    fn unreferenced_archives_are_found() {
        let mut index = sample();
        assert!(index.unreferenced_archives().is_empty());
        index.base_images.clear();
        assert_eq!(index.unreferenced_archives(), ["base-images/aa.tar"]);
    }
}
