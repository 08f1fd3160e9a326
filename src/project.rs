//! The services of a repository and where each came from.
//!
//! Sources, first found wins: `--config FILE`, else `ai-infra-build.yml` at the root, else
//! directory discovery (`src/*/Dockerfile`, `services/*/Dockerfile`, `*/Dockerfile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub const CONFIG_FILE: &str = "ai-infra-build.yml";

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
}

impl Project {
    /// Finds the services under `root`.
    pub fn load(root: &Path, config: Option<&Path>) -> Result<Project, Error> {
        let default = root.join(CONFIG_FILE);
        match config {
            Some(path) => Self::from_config(root, path),
            None if default.is_file() => Self::from_config(root, &default),
            None => Self::discover(root),
        }
    }

    fn from_config(root: &Path, path: &Path) -> Result<Project, Error> {
        let bad = |reason: String| Error::Input {
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
            services.push(Service {
                name,
                context,
                dockerfile,
                build_args: svc.build_args,
                target: svc.target,
                depends_on: svc.depends_on,
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

    fn discover(root: &Path) -> Result<Project, Error> {
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
                    origin: format!("directory discovery ({parent}/*/Dockerfile)"),
                });
            }
        }
        if services.is_empty() {
            return Err(Error::Input {
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
