//! The services of a repository and where each came from.
//!
//! Sources, first found wins: `--config FILE`, else `ai-infra-build.yml` at the root, else a
//! compose file (`compose.yaml`, `compose.yml`, `docker-compose.yaml`, `docker-compose.yml`:
//! the services with a `build:` section), else directory discovery (`src/*/Dockerfile`,
//! `services/*/Dockerfile`, `*/Dockerfile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "ai-infra-build.yml";
pub const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Bad input: a config file, a compose file, a Dockerfile, a reference. Names the input and
/// what is wrong with it (and so what to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input}: {reason}")]
pub struct InputError {
    pub input: String,
    pub reason: String,
}

/// One buildable service.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile's path.
    pub dockerfile: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub depends_on: Vec<String>,
    /// Extra tags (full references or bare tags) besides the main image.
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub platforms: Vec<String>,
    /// The network for RUN steps (`host` lets a build reach services on 127.0.0.1).
    pub network: Option<String>,
    /// An explicit image name (compose `image:`), instead of `{prefix}{name}:{tag}`.
    pub image: Option<String>,
    /// Where this service was defined (`ai-infra-build.yml`, `directory discovery`).
    pub origin: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub root: PathBuf,
    pub services: Vec<Service>,
    /// How the services were found.
    pub source: String,
    pub settings: Settings,
}

/// Run-wide settings a config file may give (CLI flags override them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Mirrors per registry: `docker.io: [mirror.example.com]`.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub mirror_first: Option<bool>,
    /// Image name prefix (default: the repository's name and `-`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Image tag (default: VERSION file, `git describe`, short commit).
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    services: BTreeMap<String, ServiceConfig>,
    #[serde(flatten)]
    settings: Settings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServiceConfig {
    #[serde(default)]
    context: Option<PathBuf>,
    #[serde(default)]
    dockerfile: Option<PathBuf>,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    platforms: Vec<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

impl Project {
    /// Finds the services under `root`.
    pub fn load(root: &Path, config: Option<&Path>) -> Result<Project, InputError> {
        let default = root.join(CONFIG_FILE);
        if let Some(path) = config {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            return if COMPOSE_FILES.contains(&name) {
                Self::from_compose(root, path)
            } else {
                Self::from_config(root, path)
            };
        }
        if default.is_file() {
            return Self::from_config(root, &default);
        }
        if let Some(compose) = COMPOSE_FILES
            .iter()
            .map(|f| root.join(f))
            .find(|p| p.is_file())
        {
            return Self::from_compose(root, &compose);
        }
        Self::discover(root)
    }

    fn from_config(root: &Path, path: &Path) -> Result<Project, InputError> {
        let bad = |reason: String| InputError {
            input: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let file: ConfigFile = serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(root);
        let origin = path.display().to_string();
        let mut services = Vec::new();
        for (name, svc) in file.services {
            let context = base.join(svc.context.unwrap_or_else(|| PathBuf::from(&name)));
            let dockerfile = context.join(
                svc.dockerfile
                    .unwrap_or_else(|| PathBuf::from("Dockerfile")),
            );
            if !dockerfile.is_file() {
                return Err(bad(format!(
                    "service {name:?}: Dockerfile {} does not exist; fix `context`/`dockerfile`",
                    dockerfile.display()
                )));
            }
            if !context.is_dir() {
                return Err(bad(format!(
                    "service {name:?}: context {} is not a directory; fix `context`",
                    context.display()
                )));
            }
            validate_name(&name).map_err(|reason| bad(format!("service {name:?}: {reason}")))?;
            services.push(Service {
                name,
                context,
                dockerfile,
                build_args: svc.build_args,
                target: svc.target,
                depends_on: svc.depends_on,
                tags: svc.tags,
                labels: svc.labels,
                platforms: svc.platforms,
                network: svc.network,
                image: svc.image,
                origin: origin.clone(),
            });
        }
        if services.is_empty() {
            return Err(bad("it lists no services; add a `services:` map".into()));
        }
        Ok(Project {
            root: root.to_path_buf(),
            services,
            source: origin,
            settings: file.settings,
        })
    }

    /// Reads the services with a `build:` section from a compose file (other keys are the
    /// compose file's business and are ignored).
    fn from_compose(root: &Path, path: &Path) -> Result<Project, InputError> {
        let bad = |reason: String| InputError {
            input: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let doc: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(root);
        let origin = path.display().to_string();
        let Some(entries) = doc.get("services").and_then(|s| s.as_object()) else {
            return Err(bad("it has no `services:` map".into()));
        };
        let strings = |v: Option<&serde_json::Value>| -> BTreeMap<String, String> {
            match v {
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        )
                    })
                    .collect(),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| {
                        x.as_str()?
                            .split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
                _ => BTreeMap::new(),
            }
        };
        let mut services = Vec::new();
        for (name, svc) in entries {
            let Some(build) = svc.get("build") else {
                continue;
            };
            let (context, dockerfile) = match build {
                serde_json::Value::String(ctx) => (base.join(ctx), None),
                serde_json::Value::Object(b) => (
                    base.join(b.get("context").and_then(|c| c.as_str()).unwrap_or(".")),
                    b.get("dockerfile")
                        .and_then(|d| d.as_str())
                        .map(PathBuf::from),
                ),
                _ => {
                    return Err(bad(format!(
                        "service {name:?}: `build` must be a path or a map"
                    )));
                }
            };
            let dockerfile =
                context.join(dockerfile.unwrap_or_else(|| PathBuf::from("Dockerfile")));
            if !dockerfile.is_file() {
                return Err(bad(format!(
                    "service {name:?}: Dockerfile {} does not exist; fix `build.context`/`build.dockerfile`",
                    dockerfile.display()
                )));
            }
            let depends_on = match svc.get("depends_on") {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect(),
                Some(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            };
            services.push(Service {
                name: name.clone(),
                context,
                dockerfile,
                build_args: strings(build.get("args")),
                target: build
                    .get("target")
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                depends_on,
                tags: Vec::new(),
                labels: strings(build.get("labels")),
                platforms: Vec::new(),
                network: build
                    .get("network")
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                image: svc
                    .get("image")
                    .and_then(|i| i.as_str())
                    .map(str::to_string),
                origin: origin.clone(),
            });
        }
        if services.is_empty() {
            return Err(bad("no service in it has a `build:` section".into()));
        }
        Ok(Project {
            root: root.to_path_buf(),
            services,
            source: origin,
            settings: Settings::default(),
        })
    }

    fn discover(root: &Path) -> Result<Project, InputError> {
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        for parent in ["src", "services", "."] {
            let dir = root.join(parent);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("Dockerfile").is_file())
                .collect();
            dirs.sort();
            for context in dirs {
                let Some(name) = context
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                services.entry(name.clone()).or_insert_with(|| Service {
                    name,
                    dockerfile: context.join("Dockerfile"),
                    context,
                    build_args: BTreeMap::new(),
                    target: None,
                    depends_on: Vec::new(),
                    tags: Vec::new(),
                    labels: BTreeMap::new(),
                    platforms: Vec::new(),
                    network: None,
                    image: None,
                    origin: format!("directory discovery ({parent}/*/Dockerfile)"),
                });
            }
        }
        if services.is_empty() {
            return Err(InputError {
                input: root.display().to_string(),
                reason: format!(
                    "no services found: no {CONFIG_FILE}, and no src/*/Dockerfile, services/*/Dockerfile or */Dockerfile; pass --config FILE"
                ),
            });
        }
        Ok(Project {
            root: root.to_path_buf(),
            services: services.into_values().collect(),
            source: "directory discovery".into(),
            settings: Settings::default(),
        })
    }
}

/// A service name that cannot be an image name (see [`validate_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error(
        "a service name must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Characters { name: String },
    #[error("a service name has at most 128 characters, this one {len}")]
    TooLong { name: String, len: usize },
}

/// Service names become image names: lowercase letters, digits and `._-`, starting with a
/// letter or digit (Docker's repository path component rule).
pub fn validate_name(name: &str) -> Result<(), ServiceNameError> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !(ok_start && ok_chars) {
        Err(ServiceNameError::Characters { name: name.into() })
    } else if name.len() > 128 {
        Err(ServiceNameError::TooLong {
            name: name.into(),
            len: name.len(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_must_make_image_names() {
        assert_eq!(validate_name("api-2.v_1"), Ok(()));
        assert!(matches!(
            validate_name("Api"),
            Err(ServiceNameError::Characters { .. })
        ));
        assert!(matches!(
            validate_name("-api"),
            Err(ServiceNameError::Characters { .. })
        ));
        assert!(matches!(
            validate_name(""),
            Err(ServiceNameError::Characters { .. })
        ));
        assert_eq!(validate_name(&"a".repeat(128)), Ok(()));
        let long = validate_name(&"a".repeat(129)).unwrap_err();
        assert!(matches!(long, ServiceNameError::TooLong { len: 129, .. }));
        assert_eq!(
            long.to_string(),
            "a service name has at most 128 characters, this one 129"
        );
    }
}
