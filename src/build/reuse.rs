//! Build only what changed (issue 15): a service whose build inputs are unchanged is not
//! built again but reused, from the registry or from the cache directory.
//!
//! **The registry as a content-addressed store.** With `--push`, every built service image is
//! also tagged, in its own repository, `inputs-<the first 32 hex digits of its build inputs
//! digest>` ([`inputs_tag`]; the digest is [`crate::build::inputs::registry_digest`]). That tag
//! is written with a manifest `PUT` of the manifest just pushed (no layer moves).
//!
//! **Before building**, each selected service's inputs digest is computed without pulling
//! anything: its context, Dockerfile, arguments, platforms, labels and secret ids are hashed
//! locally, a base image's identity is its config digest for each target platform (one or
//! two manifest requests per base image, through its registry and mirrors as the prefetch
//! orders them), and a dependency's identity is its own inputs digest. A manifest request for
//! `<repository>:inputs-<hex>` then says whether the registry has the image. If it does, the
//! service is reused: this run's tags are added by `PUT`ting the same manifest bytes (a tag in
//! another repository of the same registry first mounts the blobs), nothing is built, pushed
//! or pulled, and its base images are not prefetched. The image is pulled only when the
//! daemon needs it: a service built in this run is built `FROM` it, or the run does not push
//! (its product is the local image).
//!
//! A service whose dependency is built in this run is built too; a service with no digest
//! (`ADD <url>`, a remote named context, a base image no source answers for) is built.
//! The inputs tag is recorded only for what is known to be made from those inputs: every
//! base image in the daemon is the one the digest names, and every dependency was itself
//! reused or recorded in this run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::build::changed::ChangedSince;
use crate::build::inputs::{self, RunInputs};
use crate::endpoint::Endpoint;
use crate::plan::Plan;
use crate::prefetch::PrefetchOptions;
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError, Timeouts};
use crate::retry::RetryPolicy;

/// The tags that record build inputs start with this.
pub const TAG_PREFIX: &str = "inputs-";

/// The tag an image made from the inputs `digest` is recorded under: `inputs-` and the first
/// 32 hex digits (128 bits) of the digest.
pub fn inputs_tag(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("{TAG_PREFIX}{}", &hex[..hex.len().min(32)])
}

/// `--reuse`: where an unchanged service's image may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReuseMode {
    /// The registry when the run pushes, the cache directory when there is one.
    #[default]
    Auto,
    /// The registry only (also without `--push`: the image is then pulled).
    Registry,
    /// The cache directory only.
    Cache,
    /// Build every service.
    Off,
}

/// Which stores this run reuses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReusePolicy {
    pub registry: bool,
    pub cache: bool,
}

impl ReusePolicy {
    /// `disabled`: `--no-reuse` or `--force`.
    pub fn resolve(mode: ReuseMode, disabled: bool, push: bool, cache_dir: bool) -> ReusePolicy {
        if disabled {
            return ReusePolicy::default();
        }
        match mode {
            ReuseMode::Auto => ReusePolicy {
                registry: push,
                cache: cache_dir,
            },
            ReuseMode::Registry => ReusePolicy {
                registry: true,
                cache: false,
            },
            ReuseMode::Cache => ReusePolicy {
                registry: false,
                cache: true,
            },
            ReuseMode::Off => ReusePolicy::default(),
        }
    }
}

/// Every manifest type we read or copy.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest (or index) as the registry sent it: copied byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<PlatformDoc>,
}

#[derive(Debug, Deserialize)]
struct PlatformDoc {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Manifest {
    fn document(&self) -> Option<Document> {
        serde_json::from_slice(&self.bytes).ok()
    }

    /// An index (manifest list) rather than one image's manifest.
    pub fn is_index(&self) -> bool {
        self.media_type.contains("index") || self.media_type.contains("list")
    }

    /// The config digest (the image ID) of a single image's manifest.
    pub fn config_digest(&self) -> Option<String> {
        self.document()?.config.map(|c| c.digest)
    }

    /// The blobs a single image's manifest references (config and layers).
    fn blobs(&self) -> Vec<String> {
        self.document()
            .map(|d| {
                d.config
                    .into_iter()
                    .chain(d.layers)
                    .map(|b| b.digest)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The manifests an index lists.
    fn children(&self) -> Vec<String> {
        self.document()
            .map(|d| d.manifests.into_iter().map(|m| m.digest).collect())
            .unwrap_or_default()
    }

    /// The digest of an index's manifest for `platform` (`os/arch[/variant]`).
    fn child_for(&self, platform: &str) -> Option<String> {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next()?, parts.next()?, parts.next());
        self.document()?
            .manifests
            .into_iter()
            .find(|m| {
                m.platform.as_ref().is_some_and(|p| {
                    p.os == os
                        && p.architecture == arch
                        && (variant.is_none() || p.variant.as_deref() == variant)
                })
            })
            .map(|m| m.digest)
    }

    fn from_response(media_type: Option<String>, digest: Option<String>, bytes: Bytes) -> Self {
        let media_type = media_type
            .filter(|m| !m.is_empty() && m != "application/json")
            .or_else(|| {
                serde_json::from_slice::<Document>(&bytes)
                    .ok()
                    .and_then(|d| d.media_type)
            })
            .unwrap_or_else(|| "application/vnd.docker.distribution.manifest.v2+json".into());
        let digest = digest.unwrap_or_else(|| format!("sha256:{}", hex(&Sha256::digest(&bytes))));
        Manifest {
            digest,
            media_type,
            bytes,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a base image has no identity (its services then have no inputs digest).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BaseError {
    /// The reference does not parse.
    #[error("{0}")]
    Reference(#[from] crate::reference::ReferenceError),
    /// No source (registry or mirror) answered with its manifest.
    #[error("base image {image} could not be resolved ({})", join(failures))]
    NotFound {
        image: String,
        failures: Vec<SourceFailure>,
    },
}

/// One source of a base image that did not give its manifest.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceFailure {
    /// The source answered 404.
    #[error("{source_label}: not found")]
    NotFound { source_label: String },
    /// The request failed (the registry's message).
    #[error("{source_label}: {}", error.message)]
    Request {
        source_label: String,
        error: Box<RegistryError>,
    },
}

fn join(failures: &[SourceFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a service has no registry inputs digest (it is then built).
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// One of its base images has no identity.
    #[error("{0}")]
    Base(#[from] BaseError),
    /// A service it is built `FROM` has no digest.
    #[error("its dependency {dependency} has no inputs digest")]
    Dependency { dependency: String },
    /// Its own inputs cannot be hashed.
    #[error("{0}")]
    Inputs(#[from] inputs::InputsError),
}

/// Why the registry could not be asked for an image recorded under its inputs.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("{0}")]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

/// Why a registry reuse was not applied (the service is then built).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The service was not decided to be reused.
    #[error("not reused")]
    NotReused,
    /// The recorded image's reference does not parse.
    #[error("{0}")]
    Source(crate::reference::ReferenceError),
    /// One of the service's image or tags does not parse.
    #[error("{target}: {source}")]
    Target {
        target: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    /// The manifest `PUT` (or a blob mount before it) failed.
    #[error("tagging {target} failed: {source}")]
    Put {
        target: String,
        #[source]
        source: RegistryError,
    },
    #[error("{0}")]
    Pull(#[from] PullError),
    #[error("{0}")]
    TagLocal(#[from] TagLocalError),
}

/// Why `docker pull` of a reused image failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The docker CLI could not be started.
    #[error("cannot run `docker pull`: {0}")]
    Spawn(#[source] std::io::Error),
    /// The pull failed (its last attempt's message).
    #[error("pull of {image} failed: {message}")]
    Failed { image: String, message: String },
}

/// Why a pulled image could not be given one of the service's tags in the daemon.
#[derive(Debug, thiserror::Error)]
pub enum TagLocalError {
    #[error("{tag}: {source}")]
    Reference {
        tag: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("cannot tag {image} as {tag}: {source}")]
    Engine {
        image: String,
        tag: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// What a base image is, as far as build inputs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseIdentity {
    /// One line per target platform: `from <reference> <platform> <config digest>`.
    pub parents: Vec<String>,
    /// The IDs the daemon may show for it: config digests, manifest and index digests (the
    /// containerd image store names an image by its manifest or index).
    pub ids: BTreeSet<String>,
}

/// Registry requests of the reuse: manifests only (and blob mounts), through one client.
#[derive(Debug)]
pub struct Store {
    client: RegistryClient,
    prefetch: PrefetchOptions,
    policy: RetryPolicy,
    bases: tokio::sync::Mutex<HashMap<BaseKey, Result<BaseIdentity, BaseError>>>,
}

/// A base image reference and the platforms it is resolved for.
type BaseKey = (String, Vec<String>);

impl Store {
    /// A store that reaches base images as the prefetch does (`prefetch`'s mirrors, order
    /// and credentials).
    pub fn new(prefetch: &PrefetchOptions) -> anyhow::Result<Store> {
        let client = RegistryClient::new(Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(30),
        })?
        .with_credentials(std::sync::Arc::clone(&prefetch.credentials));
        Ok(Store {
            client,
            prefetch: prefetch.clone(),
            policy: RetryPolicy {
                max_retries: prefetch.policy.max_retries.min(3),
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
                deadline: Duration::from_secs(20),
            },
            bases: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// `GET` (or `HEAD`) of a manifest; `None` when the registry does not have it.
    async fn manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
        let sent = self
            .policy
            .run(
                || {
                    self.client
                        .send(endpoint, Method::GET, &path, headers.clone())
                },
                |_, _| {},
            )
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(err) if err.status == Some(404) => return Ok(None),
            Err(err) => return Err(err),
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (media_type, digest) = (header("content-type"), header("docker-content-digest"));
        let host = endpoint.host.clone();
        let bytes = resp.bytes().await.map_err(|err| RegistryError {
            host,
            kind: crate::registry::RequestKind::Manifest,
            class: crate::retry::ErrorClass::Eof,
            status: None,
            code: None,
            message: crate::registry::describe_reqwest(&err),
            body: None,
            retry_after: None,
        })?;
        Ok(Some(Manifest::from_response(media_type, digest, bytes)))
    }

    /// The identity of base image `reference` for `platforms` (empty: the host's), from the
    /// first of its sources that answers (the prefetch's order: registry and mirrors).
    pub async fn base_identity(
        &self,
        reference: &str,
        platforms: &[String],
    ) -> Result<BaseIdentity, BaseError> {
        let key = (reference.to_string(), platforms.to_vec());
        if let Some(known) = self.bases.lock().await.get(&key) {
            return known.clone();
        }
        let found = self.resolve_base(reference, platforms).await;
        self.bases.lock().await.insert(key, found.clone());
        found
    }

    async fn resolve_base(
        &self,
        reference: &str,
        platforms: &[String],
    ) -> Result<BaseIdentity, BaseError> {
        let parsed = Reference::parse(reference)?.with_default_tag();
        let (sources, _) =
            crate::prefetch::planned_sources(&parsed, &self.prefetch, crate::clock::now_ms());
        let version = parsed
            .digest
            .clone()
            .or_else(|| parsed.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let platforms: Vec<String> = if platforms.is_empty() {
            vec![crate::dockerfile::Platform::host().to_string()]
        } else {
            platforms.to_vec()
        };
        let mut failures = Vec::new();
        for source in sources {
            let repository = source.path_for(&parsed.path);
            let top = match self.manifest(&source.endpoint, &repository, &version).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    failures.push(SourceFailure::NotFound {
                        source_label: source.label(),
                    });
                    continue;
                }
                Err(err) => {
                    failures.push(SourceFailure::Request {
                        source_label: source.label(),
                        error: Box::new(err),
                    });
                    continue;
                }
            };
            let mut identity = BaseIdentity {
                parents: Vec::new(),
                ids: BTreeSet::from([top.digest.clone()]),
            };
            let canonical = parsed.canonical();
            for platform in &platforms {
                let config = if top.is_index() {
                    match top.child_for(platform) {
                        Some(child) => {
                            identity.ids.insert(child.clone());
                            match self.manifest(&source.endpoint, &repository, &child).await {
                                Ok(Some(m)) => m.config_digest(),
                                _ => None,
                            }
                        }
                        None => None,
                    }
                } else {
                    top.config_digest()
                };
                match config {
                    Some(config) => {
                        identity.ids.insert(config.clone());
                        identity
                            .parents
                            .push(format!("from {canonical} {platform} {config}"));
                    }
                    // No such platform (or an unreadable child): the index as a whole.
                    None => identity
                        .parents
                        .push(format!("from {canonical} {platform} index {}", top.digest)),
                }
            }
            return Ok(identity);
        }
        Err(BaseError::NotFound {
            image: parsed.familiar(),
            failures,
        })
    }

    /// The image recorded for `digest` in `image`'s repository, if there is one.
    pub async fn find(&self, image: &str, digest: &str) -> Result<Option<Manifest>, FindError> {
        let r = Reference::parse(image)?;
        let endpoint = Endpoint::new(&r.registry_host());
        Ok(self
            .manifest(&endpoint, &r.path, &inputs_tag(digest))
            .await?)
    }

    /// Tags `manifest` (found in `from`'s repository) as `to` with a manifest `PUT`; a `to`
    /// in another repository of the same registry first gets the blobs mounted.
    pub async fn put(
        &self,
        manifest: &Manifest,
        from: &Reference,
        to: &Reference,
    ) -> Result<(), RegistryError> {
        let endpoint = Endpoint::new(&to.registry_host());
        if to.path != from.path {
            let mut blobs = manifest.blobs();
            // An index: its manifests (and their blobs) go first.
            for child in manifest.children() {
                let from_endpoint = Endpoint::new(&from.registry_host());
                if let Some(m) = self.manifest(&from_endpoint, &from.path, &child).await? {
                    blobs.extend(m.blobs());
                    for blob in m.blobs() {
                        self.mount(&endpoint, &blob, from, to).await?;
                    }
                    self.put_bytes(&endpoint, &to.path, &m.digest, &m).await?;
                }
            }
            blobs.sort();
            blobs.dedup();
            for blob in blobs {
                self.mount(&endpoint, &blob, from, to).await?;
            }
        }
        let tag = to.tag.as_deref().unwrap_or("latest");
        self.put_bytes(&endpoint, &to.path, tag, manifest).await
    }

    async fn put_bytes(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&manifest.media_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        self.policy
            .run(
                || {
                    self.client.send_body(
                        endpoint,
                        Method::PUT,
                        &path,
                        headers.clone(),
                        manifest.bytes.clone(),
                    )
                },
                |_, _| {},
            )
            .await
            .map(|_| ())
    }

    /// A cross-repository blob mount (`POST /v2/<to>/blobs/uploads/?mount=&from=`).
    async fn mount(
        &self,
        endpoint: &Endpoint,
        blob: &str,
        from: &Reference,
        to: &Reference,
    ) -> Result<(), RegistryError> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={blob}&from={}",
            to.path, from.path
        );
        let resp = self
            .policy
            .run(
                || {
                    self.client.send_body(
                        endpoint,
                        Method::POST,
                        &path,
                        HeaderMap::new(),
                        Bytes::new(),
                    )
                },
                |_, _| {},
            )
            .await?;
        if resp.status().as_u16() == 201 {
            return Ok(());
        }
        Err(RegistryError {
            host: endpoint.host.clone(),
            kind: crate::registry::RequestKind::Blob,
            class: crate::retry::ErrorClass::Other,
            status: Some(resp.status().as_u16()),
            code: None,
            message: format!(
                "the registry did not mount {blob} from {} into {} ({}); it would have to be uploaded",
                from.path,
                to.path,
                resp.status()
            ),
            body: None,
            retry_after: None,
        })
    }

    /// Records the manifest `pushed` (a digest in `image`'s repository) under the inputs tag
    /// of `digest`; the tag written.
    pub async fn record(
        &self,
        image: &str,
        pushed: &str,
        digest: &str,
    ) -> Result<String, RegistryError> {
        let r = Reference::parse(image).map_err(|e| RegistryError {
            host: String::new(),
            kind: crate::registry::RequestKind::Manifest,
            class: crate::retry::ErrorClass::Other,
            status: None,
            code: None,
            message: e.to_string(),
            body: None,
            retry_after: None,
        })?;
        let endpoint = Endpoint::new(&r.registry_host());
        let manifest = self
            .manifest(&endpoint, &r.path, pushed)
            .await?
            .ok_or_else(|| RegistryError {
                host: endpoint.host.clone(),
                kind: crate::registry::RequestKind::Manifest,
                class: crate::retry::ErrorClass::ManifestUnknown,
                status: Some(404),
                code: None,
                message: format!("the pushed manifest {pushed} is not in {}", r.name()),
                body: None,
                retry_after: None,
            })?;
        let tag = inputs_tag(digest);
        self.put_bytes(&endpoint, &r.path, &tag, &manifest).await?;
        Ok(format!("{}:{tag}", r.name()))
    }
}

/// Whether a service is built or reused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Verdict {
    Build {
        reason: String,
    },
    Reuse {
        /// `<repository>:inputs-<hex>`.
        from: String,
        /// Its manifest digest.
        digest: String,
        #[serde(skip)]
        manifest: Manifest,
    },
}

/// The rule that decided a service (issue 15: plan and the report say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `--changed-since`: the diff touches it (or a dependency), so it is built unasked.
    ChangedSince,
    /// The registry has its image (reused).
    Registry,
    /// The cache directory has its image (reused).
    Cache,
    /// Nothing to reuse: built.
    Built,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ChangedSince => "changed-since",
            Rule::Registry => "registry",
            Rule::Cache => "cache",
            Rule::Built => "built",
        }
    }
}

/// One service's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub service: String,
    /// The rule that decided it.
    pub rule: Rule,
    /// The build inputs digest, when there is one.
    pub inputs: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// `--changed-since` was given (the rule is then shown).
    #[serde(skip)]
    pub filtered: bool,
}

impl Decision {
    pub fn is_reuse(&self) -> bool {
        matches!(self.verdict, Verdict::Reuse { .. })
    }

    /// `build: <reason>` or `reuse: <image> (<digest>)`; with `--changed-since`, the rule
    /// that decided it too (`[changed-since]`, `[registry]`, `[built]`).
    pub fn describe(&self) -> String {
        let text = match &self.verdict {
            Verdict::Build { reason } => format!("build: {reason}"),
            Verdict::Reuse { from, digest, .. } => format!("reuse: {from} ({digest})"),
        };
        if self.filtered {
            format!("{text} [{}]", self.rule.as_str())
        } else {
            text
        }
    }
}

/// The registry inputs digest of every service in `services` and their dependencies (by
/// plan index), or why one has none.
pub async fn digests(
    store: &Store,
    plan: &Plan,
    services: &BTreeSet<usize>,
    run: &RunInputs,
) -> BTreeMap<usize, Result<String, DigestError>> {
    let needed = plan
        .graph
        .closure(&services.iter().copied().collect::<Vec<_>>());
    let mut out: BTreeMap<usize, Result<String, DigestError>> = BTreeMap::new();
    for i in plan.dependency_order() {
        if !needed.contains(&i) {
            continue;
        }
        let s = &plan.services[i];
        let mut parents = Vec::new();
        let mut why = None;
        for base in &s.base_images {
            match store.base_identity(base, run.platforms_of(s)).await {
                Ok(identity) => parents.extend(identity.parents),
                Err(err) => {
                    why = Some(DigestError::Base(err));
                    break;
                }
            }
        }
        for &d in &plan.graph.deps[i] {
            match out.get(&d) {
                Some(Ok(digest)) => {
                    parents.push(format!("from service {} {digest}", plan.services[d].name))
                }
                _ => {
                    why.get_or_insert_with(|| DigestError::Dependency {
                        dependency: plan.services[d].name.clone(),
                    });
                }
            }
        }
        let digest = match why {
            Some(why) => Err(why),
            None => inputs::registry_digest(plan, i, run, &parents)
                .await
                .map_err(DigestError::Inputs),
        };
        out.insert(i, digest);
    }
    out
}

/// Decides, for each service in `services`, build or reuse. `lookup` false: only the digests
/// (for recording), every service is built.
pub async fn decide(
    store: &Store,
    plan: &Plan,
    services: &BTreeSet<usize>,
    run: &RunInputs,
    lookup: bool,
    changed: Option<&ChangedSince>,
) -> BTreeMap<usize, Decision> {
    let digests = digests(store, plan, services, run).await;
    let mut decisions: BTreeMap<usize, Decision> = BTreeMap::new();
    for i in plan.dependency_order() {
        if !services.contains(&i) {
            continue;
        }
        let s = &plan.services[i];
        let inputs = digests.get(&i).and_then(|d| d.as_ref().ok()).cloned();
        let built_dep = plan.graph.deps[i]
            .iter()
            .find(|d| decisions.get(d).is_some_and(|x| !x.is_reuse()));
        let changed_why = changed.and_then(|c| c.why(i));
        let verdict = match (&inputs, digests.get(&i)) {
            _ if changed_why.is_some() => Verdict::Build {
                reason: changed_why.unwrap_or_default().to_string(),
            },
            _ if !lookup => Verdict::Build {
                reason: "the registry is not asked (reuse is off for it)".into(),
            },
            (None, Some(Err(why))) => Verdict::Build {
                reason: format!("no inputs digest: {why}"),
            },
            (None, _) => Verdict::Build {
                reason: "no inputs digest".into(),
            },
            _ if built_dep.is_some() => Verdict::Build {
                reason: format!(
                    "its dependency {} is built",
                    plan.services[*built_dep.unwrap_or(&i)].name
                ),
            },
            (Some(digest), _) => match other_registry_tag(s) {
                Some(tag) => Verdict::Build {
                    reason: format!("its tag {tag} is on another registry than its image"),
                },
                None => match store.find(&s.image, digest).await {
                    Ok(Some(manifest)) => Verdict::Reuse {
                        from: format!(
                            "{}:{}",
                            Reference::parse(&s.image)
                                .map(|r| r.name())
                                .unwrap_or_default(),
                            inputs_tag(digest)
                        ),
                        digest: manifest.digest.clone(),
                        manifest,
                    },
                    Ok(None) => Verdict::Build {
                        reason: format!(
                            "changed: the registry has no image with these inputs ({})",
                            inputs_tag(digest)
                        ),
                    },
                    Err(err) => Verdict::Build {
                        reason: format!("the registry could not be asked: {err}"),
                    },
                },
            },
        };
        let rule = match &verdict {
            _ if changed_why.is_some() => Rule::ChangedSince,
            Verdict::Reuse { .. } => Rule::Registry,
            Verdict::Build { .. } => Rule::Built,
        };
        decisions.insert(
            i,
            Decision {
                service: s.name.clone(),
                rule,
                inputs,
                verdict,
                filtered: changed.is_some(),
            },
        );
    }
    decisions
}

/// A tag of `s` on another registry than its image (a manifest cannot be copied there).
fn other_registry_tag(s: &crate::plan::ServicePlan) -> Option<String> {
    let host = Reference::parse(&s.image).ok()?.registry_host();
    s.tags
        .iter()
        .find(|t| Reference::parse(t).is_ok_and(|r| r.registry_host() != host))
        .cloned()
}

/// The reuse of one run, as the scheduler sees it.
#[derive(Debug)]
pub struct RunReuse {
    pub store: Store,
    /// Per selected service (plan index).
    pub decisions: BTreeMap<usize, Decision>,
    /// Reused services the daemon needs (pulled after tagging).
    pub pull: BTreeSet<usize>,
    /// Record built images under their inputs tag (the run pushes).
    pub record: bool,
    /// Services reused or recorded in this run: their dependants may be recorded.
    vouched: Mutex<BTreeSet<usize>>,
}

impl RunReuse {
    /// Decides for the `selected` services; `lookup`: ask the registry (else only the
    /// digests, for recording); `push`: the run pushes (else reused images are pulled).
    pub async fn prepare(
        store: Store,
        plan: &Plan,
        selected: &BTreeSet<usize>,
        run: &RunInputs,
        lookup: bool,
        push: bool,
        changed: Option<&ChangedSince>,
    ) -> RunReuse {
        let decisions = decide(&store, plan, selected, run, lookup, changed).await;
        let reused: BTreeSet<usize> = decisions
            .iter()
            .filter(|(_, d)| d.is_reuse())
            .map(|(i, _)| *i)
            .collect();
        let pull = reused
            .iter()
            .copied()
            .filter(|&i| {
                !push
                    || selected
                        .iter()
                        .any(|&j| !reused.contains(&j) && plan.graph.deps[j].contains(&i))
            })
            .collect();
        RunReuse {
            store,
            decisions,
            pull,
            record: push,
            vouched: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether service `i` is reused from the registry.
    pub fn is_reused(&self, i: usize) -> bool {
        self.decisions.get(&i).is_some_and(Decision::is_reuse)
    }

    fn vouch(&self, i: usize) {
        if let Ok(mut v) = self.vouched.lock() {
            v.insert(i);
        }
    }

    fn vouched(&self, i: usize) -> bool {
        self.vouched.lock().is_ok_and(|v| v.contains(&i))
    }

    /// Adds this run's tags to the registry's image of service `i` (manifest `PUT`s, no
    /// layer moves); what to report, or why it could not.
    pub async fn tag(
        &self,
        plan: &Plan,
        i: usize,
        log: &mut dyn FnMut(&str),
    ) -> Result<Applied, ApplyError> {
        let Some(Decision {
            verdict:
                Verdict::Reuse {
                    from,
                    digest,
                    manifest,
                },
            ..
        }) = self.decisions.get(&i)
        else {
            return Err(ApplyError::NotReused);
        };
        let s = &plan.services[i];
        let source = Reference::parse(from).map_err(ApplyError::Source)?;
        for target in std::iter::once(&s.image).chain(&s.tags) {
            let to = Reference::parse(target)
                .map_err(|source| ApplyError::Target {
                    target: target.clone(),
                    source,
                })?
                .with_default_tag();
            self.store
                .put(manifest, &source, &to)
                .await
                .map_err(|source| ApplyError::Put {
                    target: target.clone(),
                    source,
                })?;
            log(&format!("tagged {target} (manifest PUT of {digest})"));
        }
        self.vouch(i);
        Ok(Applied {
            from: from.clone(),
            digest: digest.clone(),
            image_id: (!manifest.is_index())
                .then(|| manifest.config_digest())
                .flatten(),
            size: None,
        })
    }

    /// [`RunReuse::tag`], then the pull when the daemon needs the image.
    pub async fn apply(
        &self,
        engine: &crate::engine::Engine,
        plan: &Plan,
        i: usize,
        log: &mut dyn FnMut(&str),
    ) -> Result<Applied, ApplyError> {
        let mut applied = self.tag(plan, i, log).await?;
        if self.pull.contains(&i) {
            let s = &plan.services[i];
            pull(&s.image, log).await?;
            for tag in &s.tags {
                tag_local(engine, &s.image, tag).await?;
            }
            let inspect = engine.docker.inspect_image(&s.image).await.ok();
            applied.image_id = inspect
                .as_ref()
                .and_then(|i| i.id.clone())
                .or(applied.image_id);
            applied.size = inspect.and_then(|i| i.size).map(|s| s.max(0) as u64);
        }
        Ok(applied)
    }

    /// After service `i` was built and pushed (`pushed`: the registry's digest), records it
    /// under its inputs tag, when it is known to be made from those inputs. What was done,
    /// for the log.
    pub async fn record(
        &self,
        engine: &crate::engine::Engine,
        plan: &Plan,
        i: usize,
        pushed: Option<&str>,
    ) -> String {
        let s = &plan.services[i];
        let Some(digest) = self.decisions.get(&i).and_then(|d| d.inputs.clone()) else {
            return "not recorded under its inputs: it has no inputs digest".into();
        };
        let Some(pushed) = pushed else {
            return "not recorded under its inputs: the push reported no digest".into();
        };
        if let Some(&d) = plan.graph.deps[i].iter().find(|&&d| !self.vouched(d)) {
            return format!(
                "not recorded under its inputs: its dependency {} was not reused or recorded in this run",
                plan.services[d].name
            );
        }
        for base in &s.base_images {
            let local = Reference::parse(base)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| base.clone());
            let id = engine
                .docker
                .inspect_image(&local)
                .await
                .ok()
                .and_then(|i| i.id);
            let known = self.store.bases.lock().await;
            let ok = known
                .iter()
                .filter(|((r, _), _)| r == base)
                .any(|(_, identity)| {
                    identity
                        .as_ref()
                        .is_ok_and(|x| id.as_ref().is_some_and(|id| x.ids.contains(id)))
                });
            if !ok {
                return format!(
                    "not recorded under its inputs: the daemon's {local} is not the registry's current one"
                );
            }
        }
        match self.store.record(&s.image, pushed, &digest).await {
            Ok(tag) => {
                self.vouch(i);
                format!("recorded as {tag}")
            }
            Err(err) => format!("not recorded under its inputs: {err}"),
        }
    }
}

/// What a registry reuse did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub from: String,
    pub digest: String,
    pub image_id: Option<String>,
    pub size: Option<u64>,
}

/// `docker pull IMAGE` (the user's credentials), retrying transient failures.
async fn pull(image: &str, log: &mut dyn FnMut(&str)) -> Result<(), PullError> {
    let mut last = String::new();
    for attempt in 1..=4u32 {
        let out = tokio::process::Command::new("docker")
            .args(["pull", "--quiet", image])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(PullError::Spawn)?;
        if out.status.success() {
            log(&format!(
                "pulled {image} (a service built in this run needs it)"
            ));
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let class = crate::retry::classify_message(&last);
        if !class.is_transient() {
            break;
        }
        log(&format!("pull of {image} failed ({class}); trying again"));
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
    }
    Err(PullError::Failed {
        image: image.to_string(),
        message: last,
    })
}

async fn tag_local(
    engine: &crate::engine::Engine,
    image: &str,
    tag: &str,
) -> Result<(), TagLocalError> {
    let r = Reference::parse(tag).map_err(|source| TagLocalError::Reference {
        tag: tag.to_string(),
        source,
    })?;
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(&r.familiar_name())
        .tag(r.tag.as_deref().unwrap_or("latest"))
        .build();
    engine
        .docker
        .tag_image(image, Some(options))
        .await
        .map_err(|source| TagLocalError::Engine {
            image: image.to_string(),
            tag: tag.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inputs_tag_is_the_first_32_hex_digits() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(
            inputs_tag(&digest),
            "inputs-0123456789abcdef0123456789abcdef"
        );
        assert!(crate::plan::valid_tag(&inputs_tag(&digest)));
    }

    #[test]
    fn auto_reuses_from_the_registry_when_pushing_and_from_a_cache_directory() {
        let p = |mode, disabled, push, cache| ReusePolicy::resolve(mode, disabled, push, cache);
        assert_eq!(
            p(ReuseMode::Auto, false, true, false),
            ReusePolicy {
                registry: true,
                cache: false
            }
        );
        assert_eq!(
            p(ReuseMode::Auto, false, false, true),
            ReusePolicy {
                registry: false,
                cache: true
            }
        );
        assert_eq!(
            p(ReuseMode::Registry, false, false, true),
            ReusePolicy {
                registry: true,
                cache: false
            }
        );
        assert_eq!(
            p(ReuseMode::Auto, true, true, true),
            ReusePolicy::default(),
            "--no-reuse / --force"
        );
        assert_eq!(p(ReuseMode::Off, false, true, true), ReusePolicy::default());
    }

    #[test]
    fn an_index_yields_the_manifest_of_the_platform() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#;
        let m = Manifest::from_response(
            Some("application/vnd.oci.image.index.v1+json".into()),
            None,
            Bytes::from_static(index),
        );
        assert!(m.is_index());
        assert_eq!(m.child_for("linux/amd64").as_deref(), Some("sha256:aa"));
        assert_eq!(m.child_for("linux/arm/v7").as_deref(), Some("sha256:bb"));
        assert_eq!(m.child_for("linux/arm64"), None);
        assert_eq!(m.children(), ["sha256:aa", "sha256:bb"]);
        assert!(m.digest.starts_with("sha256:"), "computed when not sent");

        let single = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:cc"},"layers":[{"digest":"sha256:dd"}]}"#;
        let m = Manifest::from_response(
            Some("application/json".into()),
            Some("sha256:ee".into()),
            Bytes::from_static(single),
        );
        assert!(!m.is_index());
        assert_eq!(
            m.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(m.config_digest().as_deref(), Some("sha256:cc"));
        assert_eq!(m.blobs(), ["sha256:cc", "sha256:dd"]);
        assert_eq!(m.digest, "sha256:ee");
    }
}
