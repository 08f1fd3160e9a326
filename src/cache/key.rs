//! The cache key: which saved cache directory a run should restore.
//!
//! `ai-infra-build-cache-v1-<os>-<arch>-<bases>-<config>-<dockerfiles>`, each part the first
//! 12 hex digits of a SHA-256 over:
//!
//! - `bases`: the resolved base image references (sorted, canonical), what a cache holds
//!   most of;
//! - `config`: the config file's bytes;
//! - `dockerfiles`: each service's name, Dockerfile path (relative to the project) and
//!   content, sorted by service name.
//!
//! The restore keys are the key's prefixes from the right (`…-<bases>-<config>-`,
//! `…-<bases>-`, `…-<arch>-`), so a run whose Dockerfiles changed still restores the cache of
//! the same base images, and any cache of the same format beats none. Nothing in the key
//! depends on where the project is checked out or on the image tag.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::Plan;

use super::index::FORMAT;
use super::store::hex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheKey {
    pub key: String,
    /// Most specific first.
    pub restore_keys: Vec<String>,
}

fn short(hasher: Sha256) -> String {
    hex(&hasher.finalize())[..12].to_string()
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    // Length-prefixed, so no two different field lists hash alike.
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The cache key of `plan` with the config file's bytes (empty when there is no file).
pub fn cache_key(plan: &Plan, config: &[u8]) -> CacheKey {
    let mut bases: Vec<String> = plan
        .base_images
        .iter()
        .map(|n| n.reference.to_string())
        .collect();
    bases.sort();
    bases.dedup();
    let mut h = Sha256::new();
    for b in &bases {
        field(&mut h, b.as_bytes());
    }
    let bases = short(h);

    let mut h = Sha256::new();
    field(&mut h, config);
    let config = short(h);

    let mut services: Vec<_> = plan.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for s in services {
        field(&mut h, s.name.as_bytes());
        field(&mut h, s.dockerfile.replace('\\', "/").as_bytes());
        // A Dockerfile the plan could not read (a FIFO would block) is not read again.
        let unreadable = s
            .error
            .as_ref()
            .is_some_and(|e| e.kind == crate::plan::ServiceErrorKind::Input);
        let content = if unreadable {
            None
        } else {
            std::fs::read(&s.service.dockerfile).ok()
        };
        match content {
            Some(content) => field(&mut h, &content),
            None => field(&mut h, b"\0unreadable"),
        }
    }
    let dockerfiles = short(h);

    let prefix = format!(
        "ai-infra-build-cache-v{FORMAT}-{}-{}-",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    CacheKey {
        key: format!("{prefix}{bases}-{config}-{dockerfiles}"),
        restore_keys: vec![
            format!("{prefix}{bases}-{config}-"),
            format!("{prefix}{bases}-"),
            prefix,
        ],
    }
}

/// A `cache-key-prefix` the Actions cache would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPrefixError {
    /// A comma, a control character or whitespace.
    #[error(
        "the cache key prefix {prefix:?} contains {character:?}; use letters, digits, '-', '_' or '.'"
    )]
    Character { prefix: String, character: char },
    #[error("the cache key prefix is {len} characters long; keep it under 200")]
    TooLong { len: usize },
}

impl CacheKey {
    /// The key and restore keys behind a user's prefix (the action's `cache-key-prefix`), which
    /// keeps several caches of one repository apart. Empty keeps the key as it is. The Actions
    /// cache refuses commas and keys over 512 characters; a prefix that would break either is
    /// an error naming the input.
    pub fn with_prefix(self, prefix: &str) -> Result<CacheKey, KeyPrefixError> {
        if prefix.is_empty() {
            return Ok(self);
        }
        if let Some(c) = prefix
            .chars()
            .find(|c| *c == ',' || c.is_control() || c.is_whitespace())
        {
            return Err(KeyPrefixError::Character {
                prefix: prefix.into(),
                character: c,
            });
        }
        if prefix.len() > 200 {
            return Err(KeyPrefixError::TooLong { len: prefix.len() });
        }
        Ok(CacheKey {
            key: format!("{prefix}-{}", self.key),
            restore_keys: self
                .restore_keys
                .iter()
                .map(|k| format!("{prefix}-{k}"))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::plan::{Naming, plan};
    use crate::project::Project;

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn example() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("monorepo");
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monorepo"),
            &root,
        );
        (dir, root)
    }

    fn key_of(root: &Path, tag: &str) -> CacheKey {
        let project = Project::load(root, None).unwrap();
        let naming = Naming::resolve(root, None, Some((tag, "--tag")), None).unwrap();
        let plan = plan(&project, &naming, &BTreeMap::new()).unwrap();
        let config = std::fs::read(root.join("ai-infra-build.yml")).unwrap_or_default();
        cache_key(&plan, &config)
    }

    fn parts(key: &str) -> Vec<&str> {
        key.rsplitn(4, '-').collect()
    }

    #[test]
    fn the_key_is_stable_across_checkouts_and_tags() {
        let (_a, root_a) = example();
        let (_b, root_b) = example();
        let a = key_of(&root_a, "v1");
        assert_eq!(a, key_of(&root_a, "v1"), "same input, same key");
        assert_eq!(
            a,
            key_of(&root_b, "v2"),
            "the checkout path and the tag do not count"
        );
        assert!(a.key.starts_with("ai-infra-build-cache-v1-"), "{}", a.key);
        // Each restore key is a prefix of the key, most specific first.
        for r in &a.restore_keys {
            assert!(a.key.starts_with(r), "{r} / {}", a.key);
        }
        let lens: Vec<usize> = a.restore_keys.iter().map(String::len).collect();
        assert!(lens.windows(2).all(|w| w[0] > w[1]), "{lens:?}");
    }

    #[test]
    fn a_dockerfile_change_changes_only_the_last_part() {
        let (_d, root) = example();
        let before = key_of(&root, "t");
        std::fs::write(
            root.join("scheduler/Dockerfile"),
            "FROM ubuntu:22.04\nRUN echo changed > /crontab\n",
        )
        .unwrap();
        let after = key_of(&root, "t");
        assert_ne!(before.key, after.key);
        assert_eq!(
            before.restore_keys, after.restore_keys,
            "the partial match still restores"
        );
        assert_eq!(parts(&before.key)[1..], parts(&after.key)[1..]);
    }

    #[test]
    fn a_base_image_change_changes_the_bases_part() {
        let (_d, root) = example();
        let before = key_of(&root, "t");
        std::fs::write(
            root.join("scheduler/Dockerfile"),
            "FROM ubuntu:24.04\nRUN true\n",
        )
        .unwrap();
        let after = key_of(&root, "t");
        assert_ne!(before.restore_keys[1], after.restore_keys[1]);
        assert_eq!(before.restore_keys[2], after.restore_keys[2]);
    }

    #[test]
    fn a_prefix_the_actions_cache_would_refuse_is_an_error() {
        let key = CacheKey {
            key: "k".into(),
            restore_keys: vec!["r-".into()],
        };
        let prefixed = key.clone().with_prefix("team.a_1").unwrap();
        assert_eq!(prefixed.key, "team.a_1-k");
        assert_eq!(prefixed.restore_keys, ["team.a_1-r-"]);
        assert_eq!(key.clone().with_prefix(""), Ok(key.clone()));
        let err = key.clone().with_prefix("a,b").unwrap_err();
        assert_eq!(
            err,
            KeyPrefixError::Character {
                prefix: "a,b".into(),
                character: ','
            }
        );
        assert_eq!(
            err.to_string(),
            r#"the cache key prefix "a,b" contains ','; use letters, digits, '-', '_' or '.'"#
        );
        assert_eq!(
            key.with_prefix(&"x".repeat(201)),
            Err(KeyPrefixError::TooLong { len: 201 })
        );
    }

    #[test]
    fn a_config_change_changes_the_config_part() {
        let (_d, root) = example();
        let before = key_of(&root, "t");
        let mut config = std::fs::read_to_string(root.join("ai-infra-build.yml")).unwrap();
        config.push_str("# a comment\n");
        std::fs::write(root.join("ai-infra-build.yml"), config).unwrap();
        let after = key_of(&root, "t");
        assert_ne!(before.restore_keys[0], after.restore_keys[0]);
        assert_eq!(before.restore_keys[1], after.restore_keys[1]);
    }
}
