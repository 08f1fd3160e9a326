//! Everything that talks to the Docker daemon (and to the `docker buildx` plugin).
//!
//! The client is built once here ([`Engine::connect`]) and passed to whoever needs it.

use std::time::Duration;

use bollard::Docker;
use serde::Serialize;

/// The daemon cannot be reached, or answered an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker daemon at {host} ({reason}): start dockerd or set DOCKER_HOST to a running daemon"
    )]
    Unreachable { host: String, reason: String },
    #[error("the Docker daemon at {host} answered an error: {source}")]
    Api {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// A connected Docker daemon.
#[derive(Debug, Clone)]
pub struct Engine {
    pub docker: Docker,
    /// The address we connected to, as the user would write it in DOCKER_HOST.
    pub host: String,
}

/// What the daemon says about itself: the facts `doctor` prints and later steps decide on.
#[derive(Debug, Clone, Serialize)]
pub struct EngineFacts {
    pub host: String,
    pub engine_version: String,
    pub api_version: String,
    pub min_api_version: Option<String>,
    pub os: String,
    pub arch: String,
    pub kernel: String,
    pub storage_driver: String,
    /// True when images live in containerd's store (the `containerd-snapshotter` feature):
    /// such engines accept buildx `--cache-to type=local` with the docker driver.
    pub containerd_image_store: bool,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl Engine {
    /// Connects to DOCKER_HOST (or the default socket), negotiates the API version and
    /// checks that the daemon answers within `timeout`.
    pub async fn connect(timeout: Duration) -> Result<Engine, EngineError> {
        let host = resolve_docker_host().map_err(|reason| EngineError::Unreachable {
            host: "DOCKER_CONTEXT".into(),
            reason: reason.to_string(),
        })?;
        Engine::connect_to(&host, timeout).await
    }

    /// Connects to the daemon at `host` (`unix://…`, `tcp://…`), as [`Engine::connect`] does.
    pub async fn connect_to(host: &str, timeout: Duration) -> Result<Engine, EngineError> {
        let host = host.to_string();
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.clone(),
            reason,
        };
        let docker = Docker::connect_with_host(&host)
            .map_err(|err| unreachable(err.to_string()))?
            .with_timeout(timeout);
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", timeout.as_secs())))?
            .map_err(|err| unreachable(short_reason(&err)))?;
        Ok(Engine { docker, host })
    }

    /// Reads the daemon's version and info.
    pub async fn facts(&self) -> Result<EngineFacts, EngineError> {
        let docker_err = |source| EngineError::Api {
            host: self.host.clone(),
            source,
        };
        let version = self.docker.version().await.map_err(docker_err)?;
        let info = self.docker.info().await.map_err(docker_err)?;
        let driver_status = info.driver_status.unwrap_or_default();
        let registry = info.registry_config.unwrap_or_default();
        Ok(EngineFacts {
            host: self.host.clone(),
            engine_version: version.version.unwrap_or_else(|| "unknown".into()),
            api_version: version.api_version.unwrap_or_else(|| "unknown".into()),
            min_api_version: version.min_api_version,
            os: info.operating_system.unwrap_or_else(|| "unknown".into()),
            arch: info.architecture.unwrap_or_else(|| "unknown".into()),
            kernel: info.kernel_version.unwrap_or_else(|| "unknown".into()),
            storage_driver: info.driver.unwrap_or_else(|| "unknown".into()),
            containerd_image_store: uses_containerd_store(&driver_status),
            registry_mirrors: registry.mirrors.unwrap_or_default(),
            insecure_registries: registry.insecure_registry_cidrs.unwrap_or_default(),
            http_proxy: info.http_proxy.filter(|s| !s.is_empty()),
            https_proxy: info.https_proxy.filter(|s| !s.is_empty()),
            no_proxy: info.no_proxy.filter(|s| !s.is_empty()),
        })
    }
}

/// The platform's default daemon address.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The daemon address in use, found as the docker CLI finds it (a context it cannot read
/// counts as the default).
pub fn docker_host() -> String {
    resolve_docker_host().unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_string())
}

/// The daemon address as the docker CLI finds it: DOCKER_HOST; else the docker endpoint of
/// the context named by DOCKER_CONTEXT or by `currentContext` in `config.json` (unless it is
/// `default`); else the platform default. A context that cannot be read is an error naming
/// it (the docker CLI refuses it too).
pub fn resolve_docker_host() -> Result<String, ContextError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(host) = var("DOCKER_HOST") {
        return Ok(host);
    }
    let Some(dir) = crate::auth::Credentials::config_dir(&|name| std::env::var(name).ok()) else {
        return Ok(DEFAULT_DOCKER_HOST.to_string());
    };
    let (name, from) = match var("DOCKER_CONTEXT") {
        Some(name) => (name, "DOCKER_CONTEXT".to_string()),
        None => match current_context(&dir) {
            Some(name) => (name, dir.join("config.json").display().to_string()),
            None => return Ok(DEFAULT_DOCKER_HOST.to_string()),
        },
    };
    if name == "default" {
        return Ok(DEFAULT_DOCKER_HOST.to_string());
    }
    context_host(&dir, &name).ok_or_else(|| ContextError {
        meta: context_meta(&dir, &name),
        name,
        from,
    })
}

/// The docker context named by DOCKER_CONTEXT or `currentContext` cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "docker context {name:?} (from {from}) has no docker endpoint in {}: create it with `docker context create` or unset it",
    meta.display()
)]
pub struct ContextError {
    pub name: String,
    /// `DOCKER_CONTEXT`, or the config.json that names it.
    pub from: String,
    /// Where its metadata should be.
    pub meta: std::path::PathBuf,
}

/// `currentContext` of `DIR/config.json`.
fn current_context(config_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config["currentContext"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Where the docker CLI keeps context `name`'s metadata:
/// `DIR/contexts/meta/<sha256 of the name>/meta.json`.
fn context_meta(config_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    config_dir
        .join("contexts/meta")
        .join(format!("{digest:x}"))
        .join("meta.json")
}

/// The docker endpoint (`Endpoints.docker.Host`) of context `name`; `default` has none here.
pub fn context_host(config_dir: &std::path::Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(context_meta(config_dir, name)).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    meta["Endpoints"]["docker"]["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The daemon a buildx builder of the `docker` driver builds in: its endpoint is a context
/// name (or a daemon address); `None` for other drivers, for the `default` context and for
/// a context that cannot be read.
pub fn docker_driver_host(builder: &BuildxBuilder) -> Option<String> {
    if builder.driver != "docker" {
        return None;
    }
    let endpoint = builder.endpoint.as_str();
    if endpoint.contains("://") {
        return Some(endpoint.to_string());
    }
    if endpoint.is_empty() || endpoint == "default" {
        return None;
    }
    let dir = crate::auth::Credentials::config_dir(&|name| std::env::var(name).ok())?;
    context_host(&dir, endpoint)
}

/// With the containerd image store, `docker info` reports the driver status
/// `["driver-type", "io.containerd.snapshotter.v1"]` (moby daemon/info.go).
fn uses_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status.iter().any(|pair| {
        pair.first().is_some_and(|k| k == "driver-type")
            && pair
                .get(1)
                .is_some_and(|v| v.starts_with("io.containerd.snapshotter"))
    })
}

/// The innermost cause of a connection error, which is the part that tells the user what
/// happened ("No such file or directory", "Connection refused").
fn short_reason(err: &bollard::errors::Error) -> String {
    let mut last = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        last = inner.to_string();
        source = inner.source();
    }
    if last == err.to_string() {
        last
    } else {
        format!("{err} ({last})")
    }
}

/// The buildx plugin, as seen through the docker CLI.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Buildx {
    Available { version: String, detail: String },
    Unavailable { reason: String },
}

/// Asks `docker buildx version` (bounded by `timeout`).
pub async fn buildx(timeout: Duration) -> Buildx {
    let child = tokio::process::Command::new("docker")
        .args(["buildx", "version"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Buildx::Unavailable {
            reason: format!(
                "`docker buildx version` did not answer within {}s",
                timeout.as_secs()
            ),
        },
        Ok(Err(err)) => Buildx::Unavailable {
            reason: format!("cannot run `docker`: {err}"),
        },
        Ok(Ok(out)) if !out.status.success() => Buildx::Unavailable {
            reason: first_line(&String::from_utf8_lossy(&out.stderr))
                .unwrap_or("`docker buildx version` failed")
                .to_string(),
        },
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Buildx::Available {
                version: parse_buildx_version(&text),
                detail: text,
            }
        }
    }
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// `github.com/docker/buildx 0.13.1 0.13.1+ds1-3` -> `0.13.1`; `v0.24.0 abc` -> `0.24.0`.
fn parse_buildx_version(text: &str) -> String {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_store_is_detected_from_driver_status() {
        let store = vec![vec![
            "driver-type".to_string(),
            "io.containerd.snapshotter.v1".to_string(),
        ]];
        assert!(uses_containerd_store(&store));
        let overlay = vec![
            vec!["Backing Filesystem".to_string(), "extfs".to_string()],
            vec!["Supports d_type".to_string(), "true".to_string()],
        ];
        assert!(!uses_containerd_store(&overlay));
        assert!(!uses_containerd_store(&[vec!["driver-type".to_string()]]));
    }

    #[test]
    fn buildx_version_is_read_from_each_known_format() {
        assert_eq!(
            parse_buildx_version("github.com/docker/buildx 0.13.1 0.13.1+ds1-3"),
            "0.13.1"
        );
        assert_eq!(
            parse_buildx_version("github.com/docker/buildx v0.24.0 d0e5e86"),
            "0.24.0"
        );
        assert_eq!(parse_buildx_version("something else"), "unknown");
    }
}

/// A buildx builder as `docker buildx ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildxBuilder {
    pub name: String,
    /// `docker`, `docker-container`, `remote`, `kubernetes`.
    pub driver: String,
    /// The first node's status (`running`, `inactive`, …).
    pub status: String,
    pub endpoint: String,
    /// Whether `--cache-to type=local` works: every driver but `docker`, and `docker` only
    /// with the containerd image store.
    pub cache_export: bool,
}

impl BuildxBuilder {
    /// Builders that are not the daemon's own pull base images by themselves: prefetching
    /// into the local daemon does not help them.
    pub fn pulls_by_itself(&self) -> bool {
        self.driver != "docker"
    }
}

/// Why the buildx builders could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildxLsError {
    #[error("`docker buildx ls` did not answer within {0}s")]
    Timeout(u64),
    #[error("cannot run `docker`: {0}")]
    Spawn(String),
    #[error("{0}")]
    Failed(String),
}

/// Lists the buildx builders (`docker buildx ls --format json`, one JSON object per line).
pub async fn buildx_builders(
    timeout: Duration,
    containerd_store: bool,
) -> Result<Vec<BuildxBuilder>, BuildxLsError> {
    let child = tokio::process::Command::new("docker")
        .args(["buildx", "ls", "--format", "json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => return Err(BuildxLsError::Timeout(timeout.as_secs())),
        Ok(Err(err)) => return Err(BuildxLsError::Spawn(err.to_string())),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(BuildxLsError::Failed(
            first_line(&String::from_utf8_lossy(&out.stderr))
                .unwrap_or("`docker buildx ls` failed")
                .to_string(),
        ));
    }
    Ok(parse_buildx_ls(
        &String::from_utf8_lossy(&out.stdout),
        containerd_store,
    ))
}

fn parse_buildx_ls(text: &str, containerd_store: bool) -> Vec<BuildxBuilder> {
    let mut builders: Vec<BuildxBuilder> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() || builders.iter().any(|b| b.name == name) {
            continue;
        }
        let driver = v["Driver"].as_str().unwrap_or("unknown").to_string();
        let node = &v["Nodes"][0];
        builders.push(BuildxBuilder {
            cache_export: driver != "docker" || containerd_store,
            status: node["Status"].as_str().unwrap_or("unknown").to_string(),
            endpoint: node["Endpoint"].as_str().unwrap_or_default().to_string(),
            name,
            driver,
        });
    }
    builders
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    #[test]
    fn buildx_ls_json_lines_are_read_once_per_builder() {
        let text = r#"{"Name":"ci","Driver":"remote","Nodes":[{"Name":"ci0","Endpoint":"tcp://127.0.0.1:1234","Status":"inactive"}]}
{"Name":"ci","Driver":"remote","Nodes":[{"Name":"ci0","Endpoint":"tcp://127.0.0.1:1234","Status":"inactive"}]}
{"Name":"default","Driver":"docker","Nodes":[{"Name":"default","Endpoint":"default","Status":"running"}]}
not json"#;
        let builders = parse_buildx_ls(text, false);
        assert_eq!(builders.len(), 2);
        assert_eq!(builders[0].driver, "remote");
        assert!(builders[0].cache_export && builders[0].pulls_by_itself());
        assert!(!builders[1].cache_export && !builders[1].pulls_by_itself());
        assert!(parse_buildx_ls(text, true)[1].cache_export);
    }
}

#[cfg(test)]
mod context_tests {
    use super::*;

    #[test]
    fn a_context_s_docker_endpoint_is_read_where_the_cli_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        // sha256("remote"), as `docker context create remote` names the directory.
        let meta = dir
            .path()
            .join("contexts/meta/b71199ebd070b36beab7317920c2c2f1d777df8d05e5527d8458fda57cb17a7a");
        assert_eq!(context_meta(dir.path(), "remote").parent().unwrap(), meta);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.0.0.5:2375","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        assert_eq!(
            context_host(dir.path(), "remote").as_deref(),
            Some("tcp://10.0.0.5:2375")
        );
        assert_eq!(context_host(dir.path(), "other"), None);
        let builder = |driver: &str, endpoint: &str| BuildxBuilder {
            name: endpoint.into(),
            driver: driver.into(),
            status: "running".into(),
            endpoint: endpoint.into(),
            cache_export: false,
        };
        assert_eq!(docker_driver_host(&builder("remote", "tcp://x:1")), None);
        assert_eq!(
            docker_driver_host(&builder("docker", "unix:///run/d.sock")).as_deref(),
            Some("unix:///run/d.sock")
        );
        assert_eq!(docker_driver_host(&builder("docker", "default")), None);
    }
}
