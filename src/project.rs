//! The services of a repository and where each came from.
//!
//! Sources, first found wins: `--compose-file FILE...`, else `--config FILE`, else
//! `ai-infra-build.yml` at the root, else a compose project (the files `COMPOSE_FILE` names, in
//! the environment or `.env`, as the Compose CLI reads them; else `compose.yaml`, `compose.yml`,
//! `docker-compose.yaml`, `docker-compose.yml` and its override file, read by
//! [`crate::compose`]: the services with a `build:` section), else directory discovery
//! (`src/*/Dockerfile`, `services/*/Dockerfile`, `*/Dockerfile`, and one level deeper in a
//! service folder without a Dockerfile of its own: `src/<svc>/<dir>/Dockerfile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::compose::Options as ComposeOptions;

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
    /// Named build contexts (compose `build.additional_contexts`): a `service:<name>` value
    /// makes that service a dependency.
    pub additional_contexts: BTreeMap<String, String>,
    /// The Dockerfile's text when the compose file gives it inline (`dockerfile_inline`).
    pub dockerfile_inline: Option<String>,
    /// Where the build may import a layer cache from (compose `build.cache_from`): image
    /// references or buildx cache specs (`type=registry,ref=...`, `type=gha`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// Values as written before interpolation (`image`, `build.context`, ...), by key.
    pub written: BTreeMap<String, String>,
    /// Build secrets of this service (values are read when a build starts).
    pub secrets: Vec<ServiceSecret>,
    /// Why the Dockerfile cannot be used although discovery found it (a broken symbolic link,
    /// a directory, a FIFO, an unreadable file): the service is planned, and fails alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A build secret one service's file gives (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceSecret {
    /// buildx's `--secret` syntax (`id=ID,env=VAR` or `id=ID,src=PATH`): an entry of the
    /// config file's `secrets:` (relative paths from the project root).
    Buildx(String),
    /// A compose `build.secrets` entry whose top-level secret has `file:`.
    File { id: String, path: PathBuf },
    /// A compose `build.secrets` entry whose top-level secret has `environment:`.
    Env { id: String, variable: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub root: PathBuf,
    pub services: Vec<Service>,
    /// How the services were found.
    pub source: String,
    pub settings: Settings,
    /// Which reader read the compose files (for a compose project).
    pub reader: Option<String>,
    /// Every file the services were read from (compose, override, included files).
    pub files: Vec<String>,
    /// The `.env` / `--env-file` files read.
    pub env_files: Vec<String>,
    /// What the user should know: variables not set, build keys not applied, folders that
    /// discovery skipped.
    pub warnings: Vec<String>,
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
    /// Build secrets in buildx's `--secret` syntax (`id=ID,env=VAR`, `id=ID,src=PATH`).
    #[serde(default)]
    secrets: Vec<String>,
}

/// Whether `path` names a compose file (`compose.yaml`, `docker-compose.prod.yml`, ...).
pub fn is_compose_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    COMPOSE_FILES.contains(&name)
        || (name.contains("compose") && (name.ends_with(".yml") || name.ends_with(".yaml")))
}

/// A path as messages show it.
fn shown(_root: &Path, path: &Path) -> String {
    path.display().to_string()
}

impl Project {
    /// Finds the services under `root`, reading compose files with the process environment.
    pub fn load(root: &Path, config: Option<&Path>) -> Result<Project, InputError> {
        let options = ComposeOptions {
            environment: crate::compose::process_environment(),
            ..ComposeOptions::default()
        };
        Self::load_with(root, config, &options)
    }

    /// Finds the services under `root`: `compose.files` (`--compose-file`), else `config`,
    /// else the first source found (see the module documentation).
    pub fn load_with(
        root: &Path,
        config: Option<&Path>,
        compose: &ComposeOptions,
    ) -> Result<Project, InputError> {
        if !compose.files.is_empty() {
            return Self::from_compose(root, compose.files.clone(), compose);
        }
        let default = root.join(CONFIG_FILE);
        if let Some(path) = config {
            return if is_compose_file(path) {
                Self::from_compose(root, vec![path.to_path_buf()], compose)
            } else {
                Self::from_config(root, path)
            };
        }
        if default.is_file() {
            return Self::from_config(root, &default);
        }
        // As the Compose CLI: COMPOSE_FILE (the environment, else `.env`) names the files.
        let named = crate::compose::files_from_env(root, compose).map_err(|e| InputError {
            input: shown(root, &e.file),
            reason: e.message,
        })?;
        if let Some(files) = named.or_else(|| crate::compose::default_files(root)) {
            return Self::from_compose(root, files, compose);
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
            match dockerfile_entry(&dockerfile) {
                DockerfileEntry::Readable => {}
                DockerfileEntry::Absent => {
                    return Err(bad(format!(
                        "service {name:?}: Dockerfile {} does not exist; fix `context`/`dockerfile`",
                        dockerfile.display()
                    )));
                }
                DockerfileEntry::Unusable(reason) => {
                    return Err(bad(format!(
                        "service {name:?}: Dockerfile {}: {reason}",
                        dockerfile.display()
                    )));
                }
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
                additional_contexts: BTreeMap::new(),
                dockerfile_inline: None,
                cache_from: Vec::new(),
                written: BTreeMap::new(),
                secrets: svc.secrets.into_iter().map(ServiceSecret::Buildx).collect(),
                problem: None,
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
            reader: None,
            files: vec![path.display().to_string()],
            env_files: Vec::new(),
            warnings: Vec::new(),
        })
    }

    /// The services with a `build:` section of a compose project ([`crate::compose`]): every
    /// service that can be built, profiled or not; `depends_on` orders containers, not
    /// builds, and is not kept.
    fn from_compose(
        root: &Path,
        files: Vec<PathBuf>,
        options: &ComposeOptions,
    ) -> Result<Project, InputError> {
        let options = ComposeOptions {
            files,
            ..options.clone()
        };
        let compose = crate::compose::load(root, &options).map_err(|e| InputError {
            input: shown(root, &e.file),
            reason: e.message,
        })?;
        let mut warnings = compose.warnings.clone();
        let mut services = Vec::new();
        for s in &compose.services {
            let Some(build) = &s.build else {
                continue;
            };
            let file = shown(root, &s.file);
            let bad = |key: &str, reason: String| {
                let value = match key {
                    "build.context" => build.context.display().to_string(),
                    "build.dockerfile" => build.dockerfile.display().to_string(),
                    _ => String::new(),
                };
                let as_written = match s.written.get(key) {
                    Some(w) => format!("{w:?}, which is {value:?} after interpolation"),
                    None => format!("{value:?}"),
                };
                InputError {
                    input: file.clone(),
                    reason: format!("service {:?}, key `{key}` ({as_written}): {reason}", s.name),
                }
            };
            if build.remote {
                warnings.push(format!(
                    "compose: service {:?} builds from a remote context ({}); ai-infra-build builds local contexts only and leaves it out",
                    s.name,
                    build.context.display()
                ));
                continue;
            }
            if !build.context.is_dir() {
                return Err(bad(
                    "build.context",
                    "the build context is not a directory; fix the path (it is relative to the project directory)".into(),
                ));
            }
            let dockerfile = build.context.join(&build.dockerfile);
            if build.dockerfile_inline.is_none() {
                match dockerfile_entry(&dockerfile) {
                    DockerfileEntry::Readable => {}
                    DockerfileEntry::Absent => {
                        return Err(bad(
                            "build.dockerfile",
                            format!(
                                "there is no Dockerfile at {}; fix `build.dockerfile` (relative to the context) or `build.context`",
                                shown(root, &dockerfile)
                            ),
                        ));
                    }
                    DockerfileEntry::Unusable(reason) => {
                        return Err(bad(
                            "build.dockerfile",
                            format!("the Dockerfile {}: {reason}", shown(root, &dockerfile)),
                        ));
                    }
                }
            }
            let mut secrets = Vec::new();
            for (source, id) in &build.secret_mounts {
                secrets.push(match compose.secrets.get(source) {
                    Some(crate::compose::SecretDef::File(path)) => ServiceSecret::File {
                        id: id.clone(),
                        path: path.clone(),
                    },
                    Some(crate::compose::SecretDef::Environment(variable)) => ServiceSecret::Env {
                        id: id.clone(),
                        variable: variable.clone(),
                    },
                    Some(crate::compose::SecretDef::Unusable) => {
                        return Err(InputError {
                            input: file.clone(),
                            reason: format!(
                                "service {:?}, key `build.secrets`: secret {source:?} has neither `file:` nor `environment:`, and builds take only those (as `docker compose build`)",
                                s.name
                            ),
                        });
                    }
                    None => {
                        return Err(InputError {
                            input: file.clone(),
                            reason: format!(
                                "service {:?}, key `build.secrets`: there is no top-level secret {source:?}; define it under `secrets:` with `file:` or `environment:`",
                                s.name
                            ),
                        });
                    }
                });
            }
            if s.image.is_none() {
                validate_name(&s.name).map_err(|reason| InputError {
                    input: file.clone(),
                    reason: format!("service {:?}: {reason}; or give it an `image:`", s.name),
                })?;
            }
            services.push(Service {
                name: s.name.clone(),
                context: build.context.clone(),
                dockerfile,
                build_args: build.args.clone(),
                target: build.target.clone(),
                depends_on: Vec::new(),
                tags: build.tags.clone(),
                labels: build.labels.clone(),
                platforms: build.platforms.clone(),
                network: build.network.clone(),
                image: s.image.clone(),
                origin: file,
                additional_contexts: build.additional_contexts.clone(),
                dockerfile_inline: build.dockerfile_inline.clone(),
                cache_from: build.cache_from.clone(),
                written: s.written.clone(),
                secrets,
                problem: None,
            });
        }
        let first = shown(root, &compose.files[0]);
        if services.is_empty() {
            return Err(InputError {
                input: first,
                reason: "no service in it has a `build:` section; add one, or pass --config FILE"
                    .into(),
            });
        }
        Ok(Project {
            root: root.to_path_buf(),
            services,
            source: first,
            settings: Settings::default(),
            reader: Some(crate::compose::READER.to_string()),
            files: compose.files.iter().map(|f| shown(root, f)).collect(),
            env_files: compose.env_files.iter().map(|f| shown(root, f)).collect(),
            warnings,
        })
    }

    /// Directory discovery: `src/*/Dockerfile`, `services/*/Dockerfile`, `*/Dockerfile`, and
    /// for a service folder without a Dockerfile, the one Dockerfile one level deeper
    /// (`src/cart/src/Dockerfile`). What it skips is said in [`Project::warnings`].
    fn discover(root: &Path) -> Result<Project, InputError> {
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut skipped = Vec::new();
        for parent in ["src", "services", "."] {
            let dir = root.join(parent);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for folder in dirs {
                let Some(name) = folder
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                let at = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
                let context = if dockerfile_entry(&folder.join("Dockerfile")).exists() {
                    folder.clone()
                } else if parent == "." {
                    continue;
                } else {
                    let mut deeper: Vec<PathBuf> = std::fs::read_dir(&folder)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_dir() && dockerfile_entry(&p.join("Dockerfile")).exists())
                        .collect();
                    deeper.sort();
                    match deeper.len() {
                        0 => continue,
                        1 => deeper.remove(0),
                        _ => {
                            skipped.push(format!(
                                "{}: no Dockerfile of its own and several one level down ({}); list the service in {CONFIG_FILE}",
                                at(&folder),
                                deeper
                                    .iter()
                                    .map(|d| at(&d.join("Dockerfile")))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                            continue;
                        }
                    }
                };
                if name.starts_with('.') {
                    skipped.push(format!("{}: a hidden folder", at(&folder)));
                    continue;
                }
                if let Err(reason) = validate_name(&name) {
                    skipped.push(format!("{}: {reason}", at(&folder)));
                    continue;
                }
                if let Some(first) = services.get(&name) {
                    skipped.push(format!(
                        "{}: service {name:?} is already {}",
                        at(&context.join("Dockerfile")),
                        at(&first.dockerfile)
                    ));
                    continue;
                }
                // A Dockerfile that cannot be read (a broken link, a folder, a FIFO) still makes
                // the service: it fails alone, naming the file and what to do (issue 17).
                let problem = match dockerfile_entry(&context.join("Dockerfile")) {
                    DockerfileEntry::Unusable(reason) => Some(reason),
                    _ => None,
                };
                let pattern = if context == folder {
                    format!("{parent}/*/Dockerfile")
                } else {
                    format!("{parent}/*/*/Dockerfile")
                };
                services.insert(
                    name.clone(),
                    Service {
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
                        origin: format!("directory discovery ({pattern})"),
                        additional_contexts: BTreeMap::new(),
                        dockerfile_inline: None,
                        cache_from: Vec::new(),
                        written: BTreeMap::new(),
                        secrets: Vec::new(),
                        problem,
                    },
                );
            }
        }
        let warnings: Vec<String> = skipped
            .iter()
            .map(|s| format!("directory discovery skipped {s}"))
            .collect();
        if services.is_empty() {
            let mut reason = format!(
                "no services found: looked for {CONFIG_FILE}, {}, then src/*/Dockerfile, services/*/Dockerfile, */Dockerfile, and src/*/*/Dockerfile or services/*/*/Dockerfile in a folder without a Dockerfile; pass --config FILE",
                COMPOSE_FILES.join(", ")
            );
            if !skipped.is_empty() {
                reason.push_str(&format!("; skipped: {}", skipped.join("; ")));
            }
            return Err(InputError {
                input: root.display().to_string(),
                reason,
            });
        }
        Ok(Project {
            root: root.to_path_buf(),
            services: services.into_values().collect(),
            source: "directory discovery".into(),
            settings: Settings::default(),
            reader: None,
            files: Vec::new(),
            env_files: Vec::new(),
            warnings,
        })
    }
}

/// What is at a Dockerfile's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileEntry {
    /// Nothing (not even a broken link).
    Absent,
    /// A file (or a link to one) that can be opened for reading.
    Readable,
    /// Something that cannot be read as a Dockerfile: why, and what to do.
    Unusable(String),
}

impl DockerfileEntry {
    /// Whether anything is there, usable or not.
    pub fn exists(&self) -> bool {
        !matches!(self, DockerfileEntry::Absent)
    }
}

/// What is at `path`: nothing, a readable file, or something named like a Dockerfile that
/// cannot be one (a broken or looping symbolic link, a directory, a FIFO or device, a file
/// that cannot be opened), said with what to do. Never opens a FIFO (that would block).
pub fn dockerfile_entry(path: &Path) -> DockerfileEntry {
    use std::os::unix::fs::FileTypeExt;
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return DockerfileEntry::Absent;
    };
    let mut via = String::new();
    if link.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        match std::fs::metadata(path) {
            Ok(_) => via = format!(" (through the symbolic link to {target})"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return DockerfileEntry::Unusable(format!(
                    "a broken symbolic link: it points to {target}, which does not exist; fix the link or replace it with the Dockerfile"
                ));
            }
            Err(e) => {
                return DockerfileEntry::Unusable(format!(
                    "a symbolic link to {target} that cannot be followed ({e}); fix the link or replace it with the Dockerfile"
                ));
            }
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return DockerfileEntry::Unusable(format!(
                "cannot be read{via}: {e}; make it readable"
            ));
        }
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return DockerfileEntry::Unusable(format!(
            "a directory{via}, not a file; put the Dockerfile's text in a file of that name, or rename the directory"
        ));
    }
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return DockerfileEntry::Unusable(format!(
            "{what}{via}, not a regular file; replace it with the Dockerfile"
        ));
    }
    match std::fs::File::open(path) {
        Ok(_) => DockerfileEntry::Readable,
        Err(e) => DockerfileEntry::Unusable(format!(
            "cannot be read{via}: {e}; make it readable (e.g. `chmod a+r`)"
        )),
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

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Compose files as the Compose CLI picks them: COMPOSE_FILE (the environment over
    /// `.env`), split by COMPOSE_PATH_SEPARATOR, instead of compose.yaml and its override.
    #[test]
    fn compose_file_in_dot_env_or_the_environment_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "api/Dockerfile", "FROM alpine\n");
        write(root, "web/Dockerfile", "FROM alpine\n");
        write(
            root,
            "compose.yaml",
            "services:\n  api:\n    build: ./api\n",
        );
        write(
            root,
            "compose.override.yaml",
            "services:\n  api:\n    build:\n      args: {FROM_OVERRIDE: \"1\"}\n",
        );
        write(
            root,
            "deploy/base.yml",
            "services:\n  api:\n    build: ../api\n",
        );
        write(
            root,
            "deploy/web.yml",
            "services:\n  web:\n    build: ../web\n",
        );
        let names = |p: &Project| {
            p.services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        let files = |p: &Project| {
            p.files
                .iter()
                .map(|f| f.rsplit('/').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };

        // No COMPOSE_FILE: compose.yaml and its override.
        let plain = Project::load_with(root, None, &ComposeOptions::default()).unwrap();
        assert_eq!(files(&plain), ["compose.yaml", "compose.override.yaml"]);

        // From .env: both files, the override file not read.
        write(
            root,
            ".env",
            "COMPOSE_FILE=deploy/base.yml:deploy/web.yml\n",
        );
        let from_dotenv = Project::load_with(root, None, &ComposeOptions::default()).unwrap();
        assert_eq!(names(&from_dotenv), ["api", "web"]);
        assert_eq!(files(&from_dotenv), ["base.yml", "web.yml"]);
        assert!(from_dotenv.services[0].build_args.is_empty());

        // The environment wins over .env, with its own separator.
        let env = ComposeOptions {
            environment: BTreeMap::from([
                (
                    "COMPOSE_FILE".to_string(),
                    "deploy/web.yml;deploy/base.yml".to_string(),
                ),
                ("COMPOSE_PATH_SEPARATOR".to_string(), ";".to_string()),
            ]),
            ..ComposeOptions::default()
        };
        let from_env = Project::load_with(root, None, &env).unwrap();
        assert_eq!(files(&from_env), ["web.yml", "base.yml"]);
        assert_eq!(names(&from_env), ["api", "web"]);

        // --compose-file wins over COMPOSE_FILE.
        let flags = ComposeOptions {
            files: vec![PathBuf::from("compose.yaml")],
            ..env.clone()
        };
        let from_flags = Project::load_with(root, None, &flags).unwrap();
        assert_eq!(names(&from_flags), ["api"]);

        // A file that is not there: the variable, where it was set, and what to do.
        write(
            root,
            ".env",
            "COMPOSE_FILE=deploy/base.yml:deploy/gone.yml\n",
        );
        let err = Project::load_with(root, None, &ComposeOptions::default()).unwrap_err();
        assert!(err.input.ends_with("deploy/gone.yml"), "{err}");
        assert!(err.reason.contains("COMPOSE_FILE (set in "), "{err}");
        assert!(
            err.reason.contains(".env) names \"deploy/gone.yml\""),
            "{err}"
        );
        assert!(err.reason.contains("pass --compose-file"), "{err}");

        // Blank: the default files again.
        write(root, ".env", "COMPOSE_FILE=\n");
        let blank = Project::load_with(root, None, &ComposeOptions::default()).unwrap();
        assert_eq!(files(&blank), ["compose.yaml", "compose.override.yaml"]);
    }

    /// Issue 17 item 3: discovery names a Dockerfile it cannot read (a broken link, a
    /// directory, a FIFO) instead of skipping its folder: the service is found, with why.
    #[test]
    fn issue17_discovery_keeps_unreadable_dockerfiles_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "fine/Dockerfile", "FROM alpine\n");
        std::fs::create_dir_all(root.join("link")).unwrap();
        std::os::unix::fs::symlink("gone", root.join("link/Dockerfile")).unwrap();
        std::fs::create_dir_all(root.join("loop")).unwrap();
        std::os::unix::fs::symlink("Dockerfile", root.join("loop/Dockerfile")).unwrap();
        std::fs::create_dir_all(root.join("folder/Dockerfile")).unwrap();
        std::fs::create_dir_all(root.join("pipe")).unwrap();
        let mkfifo = std::process::Command::new("mkfifo")
            .arg(root.join("pipe/Dockerfile"))
            .status()
            .unwrap();
        assert!(mkfifo.success());
        // One level deeper, in a service folder without a Dockerfile of its own.
        std::fs::create_dir_all(root.join("src/cart/app")).unwrap();
        std::os::unix::fs::symlink("../../../x", root.join("src/cart/app/Dockerfile")).unwrap();
        let project = Project::discover(root).unwrap();
        let problem = |name: &str| {
            project
                .services
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name} not found: {:?}", project.services))
                .problem
                .clone()
        };
        assert_eq!(problem("fine"), None);
        let link = problem("link").unwrap();
        assert!(
            link.starts_with("a broken symbolic link: it points to gone"),
            "{link}"
        );
        assert!(link.contains("fix the link"), "{link}");
        let looping = problem("loop").unwrap();
        assert!(looping.contains("cannot be followed"), "{looping}");
        assert!(
            problem("folder")
                .unwrap()
                .starts_with("a directory, not a file")
        );
        assert!(problem("pipe").unwrap().starts_with("a FIFO (named pipe)"));
        assert!(problem("cart").unwrap().contains("../../../x"));
    }

    /// Issue 17 item 3: a config or compose file naming a Dockerfile that cannot be read says
    /// what is there and what to do (still a config error, exit 2).
    #[test]
    fn issue17_config_and_compose_name_an_unreadable_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("api")).unwrap();
        std::os::unix::fs::symlink("../shared/Dockerfile", root.join("api/Dockerfile")).unwrap();
        write(root, CONFIG_FILE, "services:\n  api: {}\n");
        let err = Project::load_with(root, None, &ComposeOptions::default()).unwrap_err();
        assert!(
            err.reason.contains(
                "api/Dockerfile: a broken symbolic link: it points to ../shared/Dockerfile"
            ),
            "{err}"
        );
        std::fs::remove_file(root.join(CONFIG_FILE)).unwrap();
        std::fs::create_dir_all(root.join("web/Dockerfile.web")).unwrap();
        write(
            root,
            "compose.yaml",
            "services:\n  web:\n    build:\n      context: web\n      dockerfile: Dockerfile.web\n",
        );
        let err = Project::load_with(root, None, &ComposeOptions::default()).unwrap_err();
        assert!(err.reason.contains("key `build.dockerfile`"), "{err}");
        assert!(err.reason.contains("a directory, not a file"), "{err}");
    }

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
