//! A service's build inputs, as one digest: when it equals the digest recorded with the
//! service image the cache directory restored, building again would only replay cache hits,
//! so the restored image is used as it is (issue 7: a warm run builds nothing unchanged);
//! when the registry has an image recorded under it, that image is used (issue 15,
//! `build::reuse`).
//!
//! The digest covers what BuildKit's own cache keys depend on, and nothing it ignores:
//!
//! - the builder kind for the cache directory (an image from another backend is not taken
//!   for this one's; the registry's digest leaves it out: any backend's image of the same
//!   inputs serves);
//! - the build context exactly as it is sent ([`crate::context::context_tar`]: `.dockerignore`
//!   applied, the Dockerfile included): each entry's path, type, permission bits, link target
//!   and content, but not its modification time or owner (a fresh `git clone` gives every file
//!   a new mtime; BuildKit's COPY cache does not look at it either); local named contexts
//!   (`additional_contexts`) the same way;
//! - the build arguments, target, platforms (the config file's or `--platform`), network mode
//!   and labels (the config file's and `--label`);
//! - which build secrets and SSH sockets the build is given: their ids, never their values;
//! - the identity of every base image and of every service image it is built `FROM`: for the
//!   cache directory the daemon's image IDs, for the registry the base image's config digest
//!   per target platform (a manifest request; a moved tag changes it) and the dependency
//!   service's own inputs digest (a rebuilt dependency changes its dependents' digests).
//!
//! Where BuildKit itself looks outside those inputs, there is no digest and the service is
//! built: `ADD` of a URL or a git repository (BuildKit asks the remote each time), a remote
//! named context, and (cache directory) a base image that is not in the daemon.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::context::ContextError;
use crate::context::stream::StreamError;
use crate::engine::Engine;
use crate::plan::Plan;
use crate::reference::Reference;

/// Bumped when what goes into the digest changes, so old digests never match.
const SCHEME: &[u8] = b"ai-infra-build build inputs v2";
/// The registry's digest ([`registry_digest`]): other parents, no builder kind.
const REGISTRY_SCHEME: &[u8] = b"ai-infra-build registry build inputs v1";

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Why a service's build inputs have no digest (the service is then built as usual).
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("cannot read {}: {source}", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// BuildKit looks outside the inputs: an `ADD` of a URL or a git repository.
    #[error("line {line} ADDs from a remote source, which BuildKit checks each build")]
    RemoteAdd { line: usize },
    /// The hashing task panicked or was cancelled.
    #[error("hashing the build context failed: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    /// The build context cannot be archived (the build will say so too).
    #[error("{source}")]
    Context {
        #[from]
        source: ContextError,
    },
    #[error("reading the context archive: {source}")]
    Archive {
        #[source]
        source: std::io::Error,
    },
    /// A base image or a service image it is built from is not in the daemon.
    #[error("{name} is not in the daemon")]
    NotInDaemon { name: String },
    /// A named context (`additional_contexts`) is a URL or a git repository.
    #[error("the named context {name:?} is remote ({value}), which BuildKit fetches each build")]
    RemoteContext { name: String, value: String },
}

/// What of the run's options goes into every service's digest (besides the plan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInputs {
    /// `--label`, over the config file's labels.
    pub labels: BTreeMap<String, String>,
    /// `--platform`: replaces the config file's platforms when given.
    pub platforms: Vec<String>,
    /// The ids of the build secrets (never their values).
    pub secrets: Vec<String>,
    /// The ids of the SSH sockets or keys (`default`, `ID`).
    pub ssh: Vec<String>,
}

impl RunInputs {
    /// From the flags' values; `ssh` as given (`default`, `ID=PATH[,PATH]`).
    pub fn new(
        labels: BTreeMap<String, String>,
        platforms: Vec<String>,
        mut secrets: Vec<String>,
        ssh: &[String],
    ) -> RunInputs {
        secrets.sort();
        secrets.dedup();
        let mut ssh: Vec<String> = ssh
            .iter()
            .map(|s| s.split('=').next().unwrap_or_default().trim().to_string())
            .collect();
        ssh.sort();
        ssh.dedup();
        RunInputs {
            labels,
            platforms,
            secrets,
            ssh,
        }
    }

    /// The platforms service `s` is built for (empty: the daemon's own).
    pub fn platforms_of<'a>(&'a self, s: &'a crate::plan::ServicePlan) -> &'a [String] {
        if self.platforms.is_empty() {
            &s.service.platforms
        } else {
            &self.platforms
        }
    }
}

/// The digest of service `i`'s build inputs (`sha256:<hex>`) for the cache directory, with
/// the daemon's image IDs of its base images and dependencies, or why it has none.
pub async fn digest(
    engine: &Engine,
    builder: &str,
    plan: &Plan,
    i: usize,
    run: &RunInputs,
) -> Result<String, InputsError> {
    let mut h = own_inputs(SCHEME, Some(builder), plan, i, run).await?;
    let s = &plan.services[i];
    let mut parents: Vec<String> = Vec::new();
    for base in &s.base_images {
        let name = Reference::parse(base)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| base.clone());
        parents.push(name);
    }
    for &d in &plan.graph.deps[i] {
        parents.push(plan.services[d].image.clone());
    }
    for name in parents {
        let id = engine
            .docker
            .inspect_image(&name)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| InputsError::NotInDaemon { name: name.clone() })?;
        field(&mut h, format!("from {name} {id}").as_bytes());
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

/// The digest of service `i`'s build inputs for the registry (`sha256:<hex>`): `parents`
/// are its base images' identities (`from <reference> <platform> <config digest>`, as
/// `build::reuse` resolves them) and its dependencies' own registry digests, in plan order.
pub async fn registry_digest(
    plan: &Plan,
    i: usize,
    run: &RunInputs,
    parents: &[String],
) -> Result<String, InputsError> {
    let mut h = own_inputs(REGISTRY_SCHEME, None, plan, i, run).await?;
    for parent in parents {
        field(&mut h, parent.as_bytes());
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

/// The service's own inputs (everything but its parents), hashed.
async fn own_inputs(
    scheme: &[u8],
    builder: Option<&str>,
    plan: &Plan,
    i: usize,
    run: &RunInputs,
) -> Result<Sha256, InputsError> {
    let s = &plan.services[i];
    let svc = &s.service;
    let dockerfile = match &svc.dockerfile_inline {
        Some(text) => text.clone(),
        None => {
            std::fs::read_to_string(&svc.dockerfile).map_err(|source| InputsError::Dockerfile {
                path: svc.dockerfile.clone(),
                source,
            })?
        }
    };
    if let Some(line) = remote_add(&dockerfile) {
        return Err(InputsError::RemoteAdd { line });
    }
    let mut h = Sha256::new();
    field(&mut h, scheme);
    if let Some(builder) = builder {
        field(&mut h, builder.as_bytes());
    }

    let (context, file) = (svc.context.clone(), svc.dockerfile.clone());
    let tree = tokio::task::spawn_blocking(move || context_digest(&context, &file))
        .await
        .map_err(|source| InputsError::Task { source })??;
    field(&mut h, tree.as_bytes());
    for (name, value) in &svc.additional_contexts {
        if value.starts_with("service:") || value.starts_with("docker-image://") {
            // A dependency or a base image: hashed with the parents.
            field(&mut h, format!("named context {name}={value}").as_bytes());
            continue;
        }
        if value.contains("://") || value.starts_with("git@") {
            return Err(InputsError::RemoteContext {
                name: name.clone(),
                value: value.clone(),
            });
        }
        let dir = svc.context.join(value);
        let tree = tokio::task::spawn_blocking(move || named_context_digest(&dir))
            .await
            .map_err(|source| InputsError::Task { source })??;
        field(&mut h, format!("named context {name} {tree}").as_bytes());
    }

    // Only the arguments a stage declares reach a step (BuildKit ignores the others, and an
    // `ARG` before the first FROM only names base images, which the parents cover).
    let declared = stage_args(&dockerfile);
    for (k, v) in s.build_args.iter().filter(|(k, _)| declared.contains(*k)) {
        field(&mut h, format!("arg {k}={v}").as_bytes());
    }
    field(&mut h, format!("target {:?}", svc.target).as_bytes());
    for p in run.platforms_of(s) {
        field(&mut h, format!("platform {p}").as_bytes());
    }
    field(&mut h, format!("network {:?}", svc.network).as_bytes());
    let labels: BTreeMap<&String, &String> = svc.labels.iter().chain(run.labels.iter()).collect();
    for (k, v) in labels {
        field(&mut h, format!("label {k}={v}").as_bytes());
    }
    for id in &run.secrets {
        field(&mut h, format!("secret {id}").as_bytes());
    }
    for id in &run.ssh {
        field(&mut h, format!("ssh {id}").as_bytes());
    }
    Ok(h)
}

/// A local named context: every entry under the directory (path, type, permission bits,
/// link target, content), in name order; no mtimes.
fn named_context_digest(dir: &std::path::Path) -> Result<String, InputsError> {
    fn walk(
        h: &mut Sha256,
        root: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<(), std::io::Error> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<std::fs::DirEntry> =
            std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
            let meta = std::fs::symlink_metadata(&path)?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                field(
                    h,
                    format!("{rel}\0l\0{mode:o}\0{}", target.display()).as_bytes(),
                );
            } else if meta.is_dir() {
                field(h, format!("{rel}\0d\0{mode:o}\0").as_bytes());
                walk(h, root, &path)?;
            } else {
                field(h, format!("{rel}\0f\0{mode:o}\0").as_bytes());
                field(h, &Sha256::digest(std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(&mut h, dir, dir).map_err(archive_error)?;
    Ok(hex(&h.finalize()))
}

fn archive_error(source: std::io::Error) -> InputsError {
    InputsError::Archive { source }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of the build context as it is sent, without mtimes and owners. The archive is
/// streamed through the hash (a few chunks in memory, whatever the context's size).
fn context_digest(
    context: &std::path::Path,
    dockerfile: &std::path::Path,
) -> Result<String, InputsError> {
    let prepared = crate::context::prepare_context(context, dockerfile)?;
    // A Dockerfile outside the context goes in under a random name: hash a fixed one.
    let in_context = prepared.dockerfile_in_context().to_string();
    let outside = in_context
        .starts_with(".dockerfile.")
        .then(|| in_context.clone());
    let fixed = |text: &str| match &outside {
        Some(name) => text.replace(name.as_str(), ".dockerfile"),
        None => text.to_string(),
    };
    let mut h = Sha256::new();
    field(&mut h, fixed(&in_context).as_bytes());
    let hash_entries = |stream: &mut dyn Read| -> std::io::Result<()> {
        let mut tar = tar::Archive::new(stream);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = fixed(&String::from_utf8_lossy(&entry.path_bytes()));
            let header = entry.header();
            let kind = header.entry_type().as_byte();
            let mode = header.mode().unwrap_or(0) & 0o7777;
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            field(
                &mut h,
                format!("{path}\0{}\0{mode:o}\0{link}", kind as char).as_bytes(),
            );
            let digest = if outside.is_some() && path == ".dockerignore" {
                let mut content = Vec::new();
                entry.read_to_end(&mut content)?;
                Sha256::digest(fixed(&String::from_utf8_lossy(&content)).as_bytes())
            } else {
                let mut content = Sha256::new();
                std::io::copy(&mut entry, &mut content)?;
                content.finalize()
            };
            field(&mut h, &digest);
        }
        Ok(())
    };
    crate::context::stream::read_streamed(prepared, hash_entries).map_err(|e| match e {
        StreamError::Context(e) => InputsError::Context { source: e },
        StreamError::Read(source) => archive_error(source),
    })?;
    Ok(hex(&h.finalize()))
}

/// The names of the build arguments declared by an `ARG` after the first `FROM`.
fn stage_args(dockerfile: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut in_stage = false;
    let mut logical = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if logical.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let mut words = logical.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("FROM") => in_stage = true,
            Some("ARG") if in_stage => {
                for word in words {
                    let name = word.split('=').next().unwrap_or_default();
                    if !name.is_empty() {
                        names.insert(name.to_string());
                    }
                }
            }
            _ => {}
        }
        logical.clear();
    }
    names
}

/// The 1-based line of the first `ADD` whose source is a URL or a git repository.
fn remote_add(dockerfile: &str) -> Option<usize> {
    let mut logical = String::new();
    let mut first_line = 0;
    for (n, line) in dockerfile.lines().enumerate() {
        if logical.is_empty() {
            first_line = n + 1;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let mut words = logical.split_whitespace();
        let is_add = words.next().is_some_and(|w| w.eq_ignore_ascii_case("ADD"));
        if is_add
            && words.any(|w| {
                let w = w.trim_matches(|c| c == '"' || c == '[' || c == ']' || c == ',');
                w.contains("://") || w.starts_with("git@")
            })
        {
            return Some(first_line);
        }
        logical.clear();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue15_only_arguments_a_stage_declares_count() {
        let names = |text: &str| stage_args(text).into_iter().collect::<Vec<_>>();
        assert_eq!(
            names("ARG VERSION=1\nFROM base:${VERSION}\nARG FLAVOR\nRUN echo $FLAVOR\n"),
            ["FLAVOR"]
        );
        assert_eq!(
            names("FROM a AS one\narg A=1 B \\\n  C=3\nFROM b\n# ARG D\nARG E\n"),
            ["A", "B", "C", "E"]
        );
        assert!(names("ARG ONLY_FOR_FROM\nFROM x\nRUN true\n").is_empty());
    }

    #[test]
    fn remote_adds_are_found_on_their_first_line() {
        assert_eq!(
            remote_add("FROM a\nADD https://example.com/x /x\n"),
            Some(2)
        );
        assert_eq!(
            remote_add("FROM a\nadd \\\n  git@github.com:o/r.git /src\n"),
            Some(2)
        );
        assert_eq!(
            remote_add("FROM a\nADD [\"http://h/f\", \"/f\"]\n"),
            Some(2)
        );
        assert_eq!(remote_add("FROM a\nADD local.tar /x\nCOPY . .\n"), None);
        assert_eq!(remote_add("FROM a\nRUN curl https://h/f\n"), None);
    }

    fn write(dir: &std::path::Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn the_context_digest_follows_content_and_ignores_mtimes_and_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM a\nCOPY . /app\n");
        write(root, "src/main.txt", "one");
        write(root, "notes.log", "ignored");
        write(root, ".dockerignore", "*.log\n");
        let df = root.join("Dockerfile");
        let first = context_digest(root, &df).unwrap();
        assert_eq!(first, context_digest(root, &df).unwrap(), "stable");

        // A new mtime (a fresh checkout) changes nothing.
        let f = std::fs::File::options()
            .write(true)
            .open(root.join("src/main.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        assert_eq!(first, context_digest(root, &df).unwrap(), "mtime");

        // An ignored file changes nothing; a sent one does.
        write(root, "notes.log", "still ignored, other bytes");
        assert_eq!(first, context_digest(root, &df).unwrap(), "ignored file");
        write(root, "src/main.txt", "two");
        let second = context_digest(root, &df).unwrap();
        assert_ne!(first, second, "content");

        // Permission bits count (an executable script behaves differently).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("src/main.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(second, context_digest(root, &df).unwrap(), "mode");
    }

    #[test]
    fn a_context_that_cannot_be_archived_has_no_digest_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "Dockerfile", "FROM a\n");
        let err =
            context_digest(&dir.path().join("gone"), &dir.path().join("Dockerfile")).unwrap_err();
        assert!(
            matches!(
                &err,
                InputsError::Context {
                    source: ContextError::MissingContextDir { .. }
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("build context "), "{err}");
    }

    #[test]
    fn a_dockerfile_outside_the_context_hashes_the_same_each_time() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ctx/a.txt", "a");
        write(dir.path(), "Dockerfile.app", "FROM a\nCOPY a.txt /\n");
        let (ctx, df) = (dir.path().join("ctx"), dir.path().join("Dockerfile.app"));
        assert_eq!(
            context_digest(&ctx, &df).unwrap(),
            context_digest(&ctx, &df).unwrap()
        );
    }
}
