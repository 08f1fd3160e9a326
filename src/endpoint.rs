//! Where images come from: a registry [`Endpoint`] (host, plain HTTP or TLS), a [`Source`]
//! (an endpoint and a path prefix: the registry itself or a mirror of it), the [`SourceRole`]
//! it plays, and the [`Mirrors`] configured per registry. Plain data, used by the relay, the
//! prefetch, source health, the probe and the report.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A registry host and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// `registry-1.docker.io`, `127.0.0.1:5000`, `harbor.example.com`.
    pub host: String,
    /// Plain HTTP for loopback registries (as the Docker daemon does), HTTPS otherwise.
    pub insecure: bool,
}

impl Endpoint {
    pub fn new(host: &str) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            insecure: is_loopback_host(host),
        }
    }

    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.insecure { "http" } else { "https" },
            self.host
        )
    }
}

/// `localhost`, `127.x.y.z` and `[::1]`, with or without a port: registries the Docker
/// daemon treats as insecure by default (and so do we).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An upstream that serves images: a registry host and a path prefix on it (for mirrors such
/// as a Harbor proxy-cache project: `harbor.example.com/dockerhub-proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub endpoint: Endpoint,
    pub prefix: String,
}

impl Source {
    /// Parses `HOST[/PATH]`.
    pub fn parse(spec: &str) -> Source {
        let spec = spec.trim().trim_end_matches('/');
        let spec = spec
            .strip_prefix("https://")
            .or_else(|| spec.strip_prefix("http://"))
            .unwrap_or(spec);
        let (host, prefix) = spec.split_once('/').unwrap_or((spec, ""));
        Source {
            endpoint: Endpoint::new(host),
            prefix: prefix.to_string(),
        }
    }

    /// The repository path on this source.
    pub fn path_for(&self, repository: &str) -> String {
        if self.prefix.is_empty() {
            repository.to_string()
        } else {
            format!("{}/{repository}", self.prefix)
        }
    }

    /// `host[/prefix]`, as the user wrote it.
    pub fn label(&self) -> String {
        if self.prefix.is_empty() {
            self.endpoint.host.clone()
        } else {
            format!("{}/{}", self.endpoint.host, self.prefix)
        }
    }
}

/// Whether a source is the image's own registry or a mirror of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceRole {
    Origin,
    Mirror,
}

/// A `--mirror` entry (or a config file's `mirrors:` entry) that is not `REGISTRY=HOST[,HOST...]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorSpecError {
    #[error("mirror {0:?} is not REGISTRY=HOST[,HOST...] (e.g. docker.io=mirror.example.com)")]
    NotRegistryEqHosts(String),
    #[error("mirror {0:?} names no registry before '='")]
    NoRegistry(String),
    #[error("mirror {0:?} names no host after '='")]
    NoHost(String),
    #[error("mirror {spec:?} has an invalid host {host:?}")]
    BadHost { spec: String, host: String },
}

/// Mirrors per registry: `docker.io=mirror.gcr.io,harbor.example.com/dockerhub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mirrors(pub BTreeMap<String, Vec<Source>>);

impl Mirrors {
    /// Parses one `REGISTRY=HOST[,HOST...]` entry (as given to `--mirror`) into `self`.
    pub fn add(&mut self, spec: &str) -> Result<(), MirrorSpecError> {
        let (registry, hosts) = spec
            .split_once('=')
            .ok_or_else(|| MirrorSpecError::NotRegistryEqHosts(spec.to_string()))?;
        let registry = normalize_registry(registry.trim());
        if registry.is_empty() || registry.contains(char::is_whitespace) {
            return Err(MirrorSpecError::NoRegistry(spec.to_string()));
        }
        let hosts: Vec<Source> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(Source::parse)
            .collect();
        if hosts.is_empty() {
            return Err(MirrorSpecError::NoHost(spec.to_string()));
        }
        if let Some(bad) = hosts
            .iter()
            .find(|s| s.endpoint.host.is_empty() || s.endpoint.host.contains(char::is_whitespace))
        {
            return Err(MirrorSpecError::BadHost {
                spec: spec.to_string(),
                host: bad.label(),
            });
        }
        self.0.entry(registry).or_default().extend(hosts);
        Ok(())
    }

    pub fn for_registry(&self, domain: &str) -> &[Source] {
        self.0.get(domain).map_or(&[], Vec::as_slice)
    }
}

/// `index.docker.io`, `registry-1.docker.io` and `docker.io` all mean Docker Hub.
fn normalize_registry(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "harbor.example.com",
            "localhost.example.com",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert_eq!(
            Endpoint::new("127.0.0.1:5000").base_url(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            Endpoint::new("registry-1.docker.io").base_url(),
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn sources_parse_host_and_prefix() {
        let s = Source::parse("harbor.example.com/dockerhub-proxy/");
        assert_eq!(s.endpoint.host, "harbor.example.com");
        assert_eq!(s.prefix, "dockerhub-proxy");
        assert_eq!(
            s.path_for("library/ubuntu"),
            "dockerhub-proxy/library/ubuntu"
        );
        assert_eq!(s.label(), "harbor.example.com/dockerhub-proxy");
        let s = Source::parse("http://127.0.0.1:5001");
        assert_eq!(s.endpoint.host, "127.0.0.1:5001");
        assert!(s.endpoint.insecure);
        assert_eq!(s.path_for("library/ubuntu"), "library/ubuntu");
    }

    #[test]
    fn mirrors_parse_and_collect_per_registry() {
        let mut m = Mirrors::default();
        m.add("docker.io=127.0.0.1:5001, harbor.example.com/hub")
            .unwrap();
        m.add("index.docker.io=mirror.example.com").unwrap();
        m.add("ghcr.io=ghcr-mirror.example.com").unwrap();
        let hub: Vec<_> = m
            .for_registry("docker.io")
            .iter()
            .map(Source::label)
            .collect();
        assert_eq!(
            hub,
            [
                "127.0.0.1:5001",
                "harbor.example.com/hub",
                "mirror.example.com"
            ]
        );
        assert_eq!(m.for_registry("ghcr.io").len(), 1);
        assert!(m.for_registry("quay.io").is_empty());
    }

    #[test]
    fn bad_mirror_specs_say_what_is_wrong() {
        let mut m = Mirrors::default();
        let err = |m: &mut Mirrors, spec: &str| m.add(spec).unwrap_err();
        assert!(matches!(
            err(&mut m, "docker.io"),
            MirrorSpecError::NotRegistryEqHosts(_)
        ));
        assert!(
            err(&mut m, "docker.io")
                .to_string()
                .contains("REGISTRY=HOST")
        );
        assert!(matches!(err(&mut m, "=x"), MirrorSpecError::NoRegistry(_)));
        assert!(err(&mut m, "=x").to_string().contains("names no registry"));
        assert!(matches!(
            err(&mut m, "docker.io= , "),
            MirrorSpecError::NoHost(_)
        ));
        assert!(
            err(&mut m, "docker.io= , ")
                .to_string()
                .contains("names no host")
        );
        assert!(m.0.is_empty(), "a bad spec adds nothing");
    }
}
