//! `--pull always` with a cache: instead of pulling, ask the registry (then its mirrors) for
//! the tag's current manifest digest (`HEAD /v2/<name>/manifests/<tag>`, read-only) and
//! compare it with the one recorded when the image was saved. Current: the cached copy is
//! used. Changed: the prefetch pulls. No source answers: the cached copy is used and a
//! warning says how old it is.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};

use super::{Cache, age};
use crate::engine::Engine;
use crate::prefetch::{ImageNeed, ImageResult, ImageStatus, Vouched};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError, Timeouts};
use crate::relay::Source;
use crate::report::now_ms;

/// What the registry says about a cached image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// A source names the digest the cache holds.
    Current { source: String },
    /// A source names another digest: the image changed upstream.
    Stale { source: String, digest: String },
    /// No source answered with a digest.
    Unreachable { errors: Vec<String> },
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why a source gave no manifest digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The request failed or the registry answered an error (its class, status and code
    /// are in the source).
    #[error("{}", .source.message)]
    Registry {
        #[source]
        source: RegistryError,
    },
    /// The manifest's body could not be read.
    #[error("{source}")]
    Body {
        #[source]
        source: reqwest::Error,
    },
}

/// The first source's answer decides; sources that fail are skipped.
pub fn decide<E: std::fmt::Display>(
    answers: &[(String, Result<String, E>)],
    cached: &str,
) -> Freshness {
    let mut errors = Vec::new();
    for (source, answer) in answers {
        match answer {
            Ok(d) if d == cached => {
                return Freshness::Current {
                    source: source.clone(),
                };
            }
            Ok(d) => {
                return Freshness::Stale {
                    source: source.clone(),
                    digest: d.clone(),
                };
            }
            Err(e) => errors.push(format!("{source}: {e}")),
        }
    }
    Freshness::Unreachable { errors }
}

/// Asks one source for the manifest digest of `path:tag`.
async fn manifest_digest(
    client: &RegistryClient,
    source: &Source,
    path: &str,
    tag: &str,
) -> Result<String, DigestError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
    let url_path = format!("/v2/{}/manifests/{tag}", source.path_for(path));
    let head = client
        .send(&source.endpoint, Method::HEAD, &url_path, headers.clone())
        .await
        .map_err(|source| DigestError::Registry { source })?;
    if let Some(d) = head
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(d.to_string());
    }
    // Some registries leave the header out of HEAD answers: hash the manifest.
    let get = client
        .send(&source.endpoint, Method::GET, &url_path, headers)
        .await
        .map_err(|source| DigestError::Registry { source })?;
    let body = get
        .bytes()
        .await
        .map_err(|source| DigestError::Body { source })?;
    use sha2::Digest;
    Ok(format!(
        "sha256:{}",
        super::store::hex(&sha2::Sha256::digest(&body))
    ))
}

impl Cache {
    /// With `--pull always`: the base images in `needs` that the cache restored and that are
    /// still current upstream (or whose sources cannot be reached) are vouched for: returned
    /// as `present` results (source `cache`), to be left out of the prefetch. The others are
    /// not returned: the prefetch pulls them.
    pub async fn vouch_current(
        &mut self,
        engine: &Engine,
        needs: &[ImageNeed],
        options: &crate::prefetch::PrefetchOptions,
    ) -> Vouched {
        let Ok(client) = RegistryClient::new(Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(15),
        })
        .map(|c| c.with_credentials(std::sync::Arc::clone(&options.credentials))) else {
            return Vouched::default();
        };
        // The daemon's certs.d and insecure registries, as the prefetch uses them.
        let client = client.with_trust(std::sync::Arc::new(
            crate::registry_trust::RegistryTrust::for_engine(engine).await,
        ));
        let mut vouched = Vouched::default();
        for need in needs {
            let started = Instant::now();
            // The cache keeps one image per reference, of the engine's platform.
            if need.platform.is_some() {
                continue;
            }
            let key = need.reference.to_string();
            let Some(entry) = self.index.base_images.get(&key).cloned() else {
                continue;
            };
            let Some(cached) = entry.digest.clone() else {
                continue;
            };
            let reference: &Reference = &need.reference;
            if reference.digest.is_some() {
                continue;
            }
            let local = engine
                .docker
                .inspect_image(&reference.familiar())
                .await
                .ok()
                .and_then(|i| i.id);
            if local.as_deref() != Some(entry.image_id.as_str()) {
                continue;
            }
            let (sources, order) = crate::prefetch::planned_sources(reference, options, now_ms());
            if !vouched.orders.iter().any(|o| o.registry == order.registry) {
                vouched.orders.push(order);
            }
            let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
            let mut answers = Vec::new();
            for source in &sources {
                let answer = manifest_digest(&client, source, &reference.path, &tag).await;
                let done = answer.is_ok();
                answers.push((source.label(), answer));
                if done {
                    break;
                }
            }
            let source = match decide(&answers, &cached) {
                Freshness::Current { source } => format!("cache (current on {source})"),
                Freshness::Stale { .. } => continue,
                Freshness::Unreachable { errors } => {
                    self.warn(format!(
                        "{key}: no registry answered ({}); using the cached copy saved {} ago",
                        errors.join("; "),
                        age(entry.saved_at_ms, now_ms())
                    ));
                    "cache (registry unreachable)".to_string()
                }
            };
            self.restored.insert(key.clone());
            vouched.images.push(ImageResult {
                via: None,
                via_reason: None,
                reference: key,
                platform: None,
                uses: need.uses.clone(),
                status: ImageStatus::Present,
                source: Some(source),
                digest: Some(cached),
                source_order: sources.iter().map(Source::label).collect(),
                attempts: Vec::new(),
                wait_ms: 0,
                duration_ms: started.elapsed().as_millis() as u64,
                error: None,
            });
        }
        vouched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, d: &str) -> (String, Result<String, String>) {
        (s.into(), Ok(d.into()))
    }
    fn err(s: &str, e: &str) -> (String, Result<String, String>) {
        (s.into(), Err(e.into()))
    }

    #[test]
    fn the_first_answer_decides() {
        assert_eq!(
            decide(
                &[err("hub", "no such host"), ok("mirror", "sha256:a")],
                "sha256:a"
            ),
            Freshness::Current {
                source: "mirror".into()
            }
        );
        assert_eq!(
            decide(&[ok("hub", "sha256:b")], "sha256:a"),
            Freshness::Stale {
                source: "hub".into(),
                digest: "sha256:b".into()
            }
        );
        assert_eq!(
            decide(
                &[err("hub", "no such host"), err("mirror", "503")],
                "sha256:a"
            ),
            Freshness::Unreachable {
                errors: vec!["hub: no such host".into(), "mirror: 503".into()]
            }
        );
        assert_eq!(
            decide::<String>(&[], "sha256:a"),
            Freshness::Unreachable { errors: vec![] }
        );
    }
}
