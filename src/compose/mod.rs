//! The compose reader: compose files read as the Compose specification says, for everything
//! that decides what is built and from which images.
//!
//! - Files: the `-f` files given, else those `COMPOSE_FILE` names (the process environment
//!   over `.env`, split by `COMPOSE_PATH_SEPARATOR`, default `:`; [`files_from_env`]), else
//!   the first of `compose.yaml`, `compose.yml`,
//!   `docker-compose.yaml`, `docker-compose.yml` and its override file
//!   (`compose.override.yaml`, ...). Later files merge into earlier ones ([`merge`]).
//!   Relative paths are relative to the project directory (the first file's directory).
//! - Environment: the process environment over the `.env` file of the project directory,
//!   or over the `--env-file` files instead of it ([`dotenv`]); `env_file:` of a service is
//!   for containers, not builds, and is not read.
//! - YAML: anchors, aliases, merge keys, `x-` extension fields ([`yaml`]).
//! - Interpolation of every value ([`interpolate`]).
//! - `include` (each included project with its own directory and `.env`), `extends` (same
//!   file or another), profiles (a service with `profiles:` is still a service: the plan
//!   builds every service that can be built, as `docker buildx bake` does).
//! - `build` in its short (a context path) and long form; `image` names the built image; a
//!   bare build arg (`args: [NAME]` or `NAME:`) is taken from the environment.
//!
//! `docker compose config` is not consulted: this reader is what [`READER`] says.

pub mod dotenv;
pub mod interpolate;
pub mod merge;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use self::interpolate::interpolate;
use self::merge::{list_to_map, merge, scalar_string};

/// Which reader read the compose files (shown by `plan`).
pub const READER: &str =
    "ai-infra-build's compose reader (Compose specification; `docker compose config` is not used)";

/// The default compose files, in the order Compose looks for them.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// How many `include`/`extends` files deep a project may go.
const MAX_NESTING: usize = 16;

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The compose files (`-f`), in order; empty: the default file and its override.
    pub files: Vec<PathBuf>,
    /// `--env-file` files, in order (instead of the project directory's `.env`).
    pub env_files: Vec<PathBuf>,
    /// The process environment (wins over `.env`).
    pub environment: BTreeMap<String, String>,
}

/// Why the compose files cannot be read. The message names the file, the service, the key
/// and the value (as written and after interpolation) when they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ComposeError {
    pub file: PathBuf,
    pub message: String,
}

fn fail(file: &Path, message: impl Into<String>) -> ComposeError {
    ComposeError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// The compose project, as far as builds are concerned.
#[derive(Debug, Clone, Default)]
pub struct Compose {
    /// The project directory.
    pub dir: PathBuf,
    /// Every file read: compose files, override files, included and extended files.
    pub files: Vec<PathBuf>,
    /// The `.env` / `--env-file` files read.
    pub env_files: Vec<PathBuf>,
    /// Every service, by name.
    pub services: Vec<ComposeService>,
    /// The top-level `secrets:` (what `build.secrets` names), by name.
    pub secrets: BTreeMap<String, SecretDef>,
    /// Things the user should know (unset variables, build keys not applied).
    pub warnings: Vec<String>,
}

/// One service.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeService {
    pub name: String,
    /// The file that defines it (the first one, for a service merged from several).
    pub file: PathBuf,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub profiles: Vec<String>,
    /// `depends_on`: container start order, never a build edge.
    pub depends_on: Vec<String>,
    /// Values as written before interpolation, by key (`image`, `build.context`, ...), for
    /// those that interpolation changed.
    pub written: BTreeMap<String, String>,
}

/// A service's `build` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Build {
    /// The context directory (or a remote context, as written).
    pub context: PathBuf,
    /// Whether the context is a URL (a Git repository or a tarball): not planned.
    pub remote: bool,
    /// The Dockerfile, relative to the context or absolute (default `Dockerfile`).
    pub dockerfile: PathBuf,
    pub dockerfile_inline: Option<String>,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub cache_from: Vec<String>,
    /// Named contexts: a path, `service:<name>`, `docker-image://<ref>`, a URL.
    pub additional_contexts: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    /// `build.secrets` as (source, id): the id the Dockerfile mounts is `target` when the
    /// long syntax gives one, else the source's name (as `docker compose build`).
    pub secret_mounts: Vec<(String, String)>,
    pub ssh: Vec<String>,
    /// Keys of the build section that change a build but that ai-infra-build does not apply.
    pub unsupported: Vec<String>,
}

/// A top-level secret's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretDef {
    /// `file:`, made absolute.
    File(PathBuf),
    /// `environment:`: the variable holding the value.
    Environment(String),
    /// Anything else (`external:`, no source): builds cannot use it.
    Unusable,
}

impl SecretDef {
    fn from_value(value: &Value, base: &Path) -> SecretDef {
        if let Some(file) = value.get("file").and_then(scalar_string) {
            SecretDef::File(base.join(file))
        } else if let Some(var) = value.get("environment").and_then(scalar_string) {
            SecretDef::Environment(var)
        } else {
            SecretDef::Unusable
        }
    }
}

/// Build keys the Compose specification defines. The ones [`Build`] does not apply are
/// reported in [`Build::unsupported`].
const BUILD_KEYS: [&str; 24] = [
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "platforms",
    "tags",
    "labels",
    "network",
    "cache_from",
    "additional_contexts",
    "secrets",
    "ssh",
    "cache_to",
    "extra_hosts",
    "shm_size",
    "isolation",
    "privileged",
    "ulimits",
    "entitlements",
    "no_cache",
    "pull",
    "provenance",
    "sbom",
];

/// The keys of [`BUILD_KEYS`] whose effect the builds do not get.
const NOT_APPLIED: [&str; 12] = [
    "ssh",
    "cache_to",
    "extra_hosts",
    "shm_size",
    "isolation",
    "privileged",
    "ulimits",
    "entitlements",
    "no_cache",
    "pull",
    "provenance",
    "sbom",
];

/// The default compose file of `dir` and its override file, if there is one.
pub fn default_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let main = DEFAULT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())?;
    let name = main.file_name()?.to_str()?.to_string();
    let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
    let over = ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.override.{ext}")))
        .find(|p| p.is_file());
    Some(std::iter::once(main).chain(over).collect())
}

/// The files `COMPOSE_FILE` names, as the Compose CLI reads it when no `-f` is given: from the
/// process environment, else from the env files (`--env-file`, else the `.env` of `dir`);
/// several are separated by `COMPOSE_PATH_SEPARATOR` (default `:`), relative ones are relative
/// to `dir`. `None` when it is not set (or blank). A named file that does not exist is an
/// error naming the variable and where it was set.
pub fn files_from_env(dir: &Path, options: &Options) -> Result<Option<Vec<PathBuf>>, ComposeError> {
    let mut loader = Loader::new(options);
    let env = loader.environment(&env_files(dir, dir, options), options.env_files.is_empty())?;
    let Some(value) = env.get("COMPOSE_FILE").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let origin = if options.environment.contains_key("COMPOSE_FILE") {
        "the environment".to_string()
    } else {
        loader
            .env_files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let separator = env
        .get("COMPOSE_PATH_SEPARATOR")
        .filter(|s| !s.is_empty())
        .map_or(":", String::as_str);
    let mut files = Vec::new();
    for name in value
        .split(separator)
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let file = dir.join(name);
        if !file.is_file() {
            return Err(fail(
                &file,
                format!(
                    "COMPOSE_FILE (set in {origin}) names {name:?}, which is not a file; fix COMPOSE_FILE or pass --compose-file"
                ),
            ));
        }
        files.push(file);
    }
    Ok((!files.is_empty()).then_some(files))
}

/// Reads the compose project of `dir` (the default files) or of `options.files`.
pub fn load(dir: &Path, options: &Options) -> Result<Compose, ComposeError> {
    let files: Vec<PathBuf> = if options.files.is_empty() {
        default_files(dir).ok_or_else(|| {
            fail(
                dir,
                format!("no compose file: none of {}", DEFAULT_FILES.join(", ")),
            )
        })?
    } else {
        options.files.iter().map(|f| dir.join(f)).collect()
    };
    let project_dir = files[0]
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(dir)
        .to_path_buf();
    let mut loader = Loader::new(options);
    let env_files = env_files(dir, &project_dir, options);
    let env = loader.environment(&env_files, options.env_files.is_empty())?;
    let mut project = Project::default();
    for file in &files {
        let layer = loader.read(file, &project_dir, &env, &mut vec![file.clone()])?;
        project.merge(layer);
    }
    loader.extends(&mut project, &env)?;
    let mut services = Vec::new();
    for (name, def) in &project.services {
        services.push(service(name, def, &env)?);
    }
    let mut warnings = Vec::new();
    if !loader.unset.is_empty() {
        let list: Vec<String> = loader
            .unset
            .iter()
            .map(|(name, file)| format!("{name} (in {})", file.display()))
            .collect();
        warnings.push(format!(
            "compose: these variables are not set and are taken as blank strings: {}; set them in the environment or in .env",
            list.join(", ")
        ));
    }
    let mut unsupported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &services {
        for key in s.build.iter().flat_map(|b| b.unsupported.iter()) {
            unsupported
                .entry(key.clone())
                .or_default()
                .push(s.name.clone());
        }
    }
    if !unsupported.is_empty() {
        let list: Vec<String> = unsupported
            .iter()
            .map(|(key, names)| format!("build.{key} ({})", names.join(", ")))
            .collect();
        warnings.push(format!(
            "compose: ai-infra-build does not apply these build keys, so these builds may differ from `docker compose build`: {}",
            list.join("; ")
        ));
    }
    Ok(Compose {
        dir: project_dir,
        files: loader.files,
        env_files: loader.env_files,
        services,
        secrets: project.secrets,
        warnings,
    })
}

/// Services (normalized, paths absolute) and the file that first defined each.
#[derive(Debug, Default)]
struct Project {
    services: BTreeMap<String, Def>,
    /// Top-level `secrets:` (a later file's definition replaces an earlier one's).
    secrets: BTreeMap<String, SecretDef>,
}

#[derive(Debug, Clone)]
struct Def {
    value: Map<String, Value>,
    file: PathBuf,
    /// Where relative paths of `extends.file` are resolved.
    base: PathBuf,
    written: BTreeMap<String, String>,
}

impl Project {
    fn merge(&mut self, layer: Project) {
        self.secrets.extend(layer.secrets);
        for (name, def) in layer.services {
            match self.services.get_mut(&name) {
                Some(existing) => {
                    let mut value = Value::Object(std::mem::take(&mut existing.value));
                    merge(&mut value, Value::Object(def.value), "");
                    if let Value::Object(m) = value {
                        existing.value = m;
                    }
                    existing.written.extend(def.written);
                }
                None => {
                    self.services.insert(name, def);
                }
            }
        }
    }
}

struct Loader {
    process: BTreeMap<String, String>,
    files: Vec<PathBuf>,
    env_files: Vec<PathBuf>,
    /// Unset variables and the first file that used each.
    unset: BTreeMap<String, PathBuf>,
}

/// The env files of a project: the `--env-file`s (relative to `dir`), else the project
/// directory's `.env` when there is one.
fn env_files(dir: &Path, project_dir: &Path, options: &Options) -> Vec<PathBuf> {
    if options.env_files.is_empty() {
        let default = project_dir.join(".env");
        if default.is_file() {
            vec![default]
        } else {
            Vec::new()
        }
    } else {
        options.env_files.iter().map(|f| dir.join(f)).collect()
    }
}

impl Loader {
    fn new(options: &Options) -> Loader {
        Loader {
            process: options.environment.clone(),
            files: Vec::new(),
            env_files: Vec::new(),
            unset: BTreeMap::new(),
        }
    }

    /// The interpolation environment: the process environment over the env files.
    fn environment(
        &mut self,
        env_files: &[PathBuf],
        optional: bool,
    ) -> Result<BTreeMap<String, String>, ComposeError> {
        let mut env = BTreeMap::new();
        for file in env_files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fail(file, format!("cannot read the env file: {e}"))),
            };
            let process = &self.process;
            let so_far = env.clone();
            let vars = dotenv::parse(&text, &|k| {
                process.get(k).cloned().or_else(|| so_far.get(k).cloned())
            })
            .map_err(|e| fail(file, e.to_string()))?;
            env.extend(vars);
            if !self.env_files.contains(file) {
                self.env_files.push(file.clone());
            }
        }
        env.extend(self.process.clone());
        Ok(env)
    }

    /// Reads one compose file: YAML, interpolation, `include`, services normalized with
    /// relative paths resolved against `base`.
    fn read(
        &mut self,
        file: &Path,
        base: &Path,
        env: &BTreeMap<String, String>,
        stack: &mut Vec<PathBuf>,
    ) -> Result<Project, ComposeError> {
        if !self.files.iter().any(|f| f == file) {
            self.files.push(file.to_path_buf());
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            fail(
                file,
                format!("cannot read the compose file: {e}; check the path (-f / --compose-file)"),
            )
        })?;
        let doc = yaml::parse(&text).map_err(|e| fail(file, e.to_string()))?;
        let mut doc = match doc {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => {
                return Err(fail(
                    file,
                    "a compose file must be a mapping (`services:` ...)",
                ));
            }
        };
        let mut written = BTreeMap::new();
        for (key, value) in doc.iter_mut() {
            self.interpolate(value, key, env, file, &mut written)?;
        }
        let mut project = Project::default();
        if let Some(include) = doc.get("include") {
            self.include(include, file, base, stack, &mut project)?;
        }
        if let Some(Value::Object(secrets)) = doc.get("secrets") {
            // Relative to the project directory, as every path of the file.
            for (name, def) in secrets {
                project
                    .secrets
                    .insert(name.clone(), SecretDef::from_value(def, base));
            }
        }
        let services = match doc.get("services") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(fail(file, "`services` must be a mapping of service names")),
        };
        for (name, value) in services {
            let prefix = format!("services.{name}.");
            let mine: BTreeMap<String, String> = written
                .iter()
                .filter_map(|(k, v): (&String, &String)| {
                    k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone()))
                })
                .collect();
            let value = normalize(&name, value, base, file)?;
            if project.services.contains_key(&name) {
                return Err(fail(
                    file,
                    format!(
                        "service {name:?} is defined here and in an included file; rename one (Compose refuses this too)"
                    ),
                ));
            }
            project.services.insert(
                name,
                Def {
                    value,
                    file: file.to_path_buf(),
                    base: base.to_path_buf(),
                    written: mine,
                },
            );
        }
        Ok(project)
    }

    fn include(
        &mut self,
        include: &Value,
        file: &Path,
        base: &Path,
        stack: &mut Vec<PathBuf>,
        project: &mut Project,
    ) -> Result<(), ComposeError> {
        let Value::Array(entries) = include else {
            return Err(fail(file, "`include` must be a list"));
        };
        let here = file.parent().unwrap_or(base);
        for entry in entries {
            let (paths, project_dir, env_files) = match entry {
                Value::String(p) => (vec![p.clone()], None, Vec::new()),
                Value::Object(m) => {
                    let paths = match m.get("path") {
                        Some(Value::String(p)) => vec![p.clone()],
                        Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
                        _ => return Err(fail(file, "each `include` entry needs a `path`")),
                    };
                    let dir = m.get("project_directory").and_then(scalar_string);
                    let env: Vec<String> = match m.get("env_file") {
                        Some(Value::String(p)) => vec![p.clone()],
                        Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
                        _ => Vec::new(),
                    };
                    (paths, dir, env)
                }
                _ => return Err(fail(file, "an `include` entry is a path or a mapping")),
            };
            let Some(first) = paths.first() else {
                continue;
            };
            let first = here.join(first);
            let sub_dir = match project_dir {
                Some(d) => here.join(d),
                None => first.parent().unwrap_or(here).to_path_buf(),
            };
            if stack.len() > MAX_NESTING || stack.contains(&first) {
                return Err(fail(
                    file,
                    format!(
                        "`include` of {} makes a loop or nests more than {MAX_NESTING} deep",
                        first.display()
                    ),
                ));
            }
            let (env_paths, optional) = if env_files.is_empty() {
                (vec![sub_dir.join(".env")], true)
            } else {
                (env_files.iter().map(|e| here.join(e)).collect(), false)
            };
            let env = self.environment(&env_paths, optional)?;
            let mut sub = Project::default();
            for p in &paths {
                let path = here.join(p);
                stack.push(path.clone());
                let layer = self.read(&path, &sub_dir, &env, stack)?;
                stack.pop();
                sub.merge(layer);
            }
            self.extends(&mut sub, &env)?;
            project.secrets.extend(std::mem::take(&mut sub.secrets));
            for (name, def) in sub.services {
                if project.services.contains_key(&name) {
                    return Err(fail(
                        file,
                        format!("service {name:?} comes from two included projects; rename one"),
                    ));
                }
                project.services.insert(name, def);
            }
        }
        Ok(())
    }

    /// Interpolates every string under `value` (keys are left as written).
    fn interpolate(
        &mut self,
        value: &mut Value,
        path: &str,
        env: &BTreeMap<String, String>,
        file: &Path,
        written: &mut BTreeMap<String, String>,
    ) -> Result<(), ComposeError> {
        match value {
            Value::String(s) => {
                if !s.contains('$') {
                    return Ok(());
                }
                let result = interpolate(s, &|k| env.get(k).cloned()).map_err(|e| {
                    fail(
                        file,
                        format!("{}: cannot interpolate {s:?}: {e}", describe_path(path)),
                    )
                })?;
                for name in result.unset {
                    self.unset.entry(name).or_insert_with(|| file.to_path_buf());
                }
                if &result.value != s {
                    written.insert(path.to_string(), s.clone());
                    *s = result.value;
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &format!("{path}[{i}]"), env, file, written)?;
                }
            }
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    self.interpolate(v, &format!("{path}.{k}"), env, file, written)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Resolves `extends` in every service of `project`.
    fn extends(
        &mut self,
        project: &mut Project,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ComposeError> {
        let names: Vec<String> = project.services.keys().cloned().collect();
        for name in names {
            let mut chain = Vec::new();
            let resolved = self.resolve(project, &name, env, &mut chain)?;
            project.services.insert(name, resolved);
        }
        Ok(())
    }

    fn resolve(
        &mut self,
        project: &Project,
        name: &str,
        env: &BTreeMap<String, String>,
        chain: &mut Vec<(PathBuf, String)>,
    ) -> Result<Def, ComposeError> {
        let def = project.services.get(name).cloned().ok_or_else(|| {
            let (file, by) = chain.last().cloned().unwrap_or_default();
            fail(
                &file,
                format!("service {by:?}: `extends` names service {name:?}, which is not defined"),
            )
        })?;
        let Some(ext) = def.value.get("extends").cloned() else {
            return Ok(def);
        };
        let key = (def.file.clone(), name.to_string());
        if chain.contains(&key) || chain.len() > MAX_NESTING {
            let path: Vec<&str> = chain.iter().map(|(_, n)| n.as_str()).collect();
            return Err(fail(
                &def.file,
                format!(
                    "service {name:?}: `extends` makes a cycle ({} -> {name}); remove one `extends`",
                    path.join(" -> ")
                ),
            ));
        }
        chain.push(key);
        let (base_name, base_file) = match &ext {
            Value::String(s) => (s.clone(), None),
            Value::Object(m) => (
                m.get("service").and_then(scalar_string).ok_or_else(|| {
                    fail(
                        &def.file,
                        format!("service {name:?}: `extends` needs `service`"),
                    )
                })?,
                m.get("file").and_then(scalar_string),
            ),
            _ => {
                return Err(fail(
                    &def.file,
                    format!("service {name:?}: `extends` is a service name or a mapping"),
                ));
            }
        };
        let parent = match base_file {
            Some(f) => {
                let path = def.base.join(&f);
                let dir = path.parent().unwrap_or(&def.base).to_path_buf();
                let mut stack = vec![path.clone()];
                let other = self.read(&path, &dir, env, &mut stack)?;
                if !other.services.contains_key(&base_name) {
                    return Err(fail(
                        &def.file,
                        format!(
                            "service {name:?}: `extends` names service {base_name:?} of {}, which does not define it",
                            path.display()
                        ),
                    ));
                }
                self.resolve(&other, &base_name, env, chain)?
            }
            None => self.resolve(project, &base_name, env, chain)?,
        };
        chain.pop();
        let mut value = Value::Object(parent.value);
        let mut own = def.value.clone();
        own.remove("extends");
        merge(&mut value, Value::Object(own), "");
        let mut written = parent.written;
        written.extend(def.written.clone());
        Ok(Def {
            value: match value {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            written,
            ..def
        })
    }
}

/// `services.web.build.context` for messages: "service \"web\", key build.context".
fn describe_path(path: &str) -> String {
    match path
        .strip_prefix("services.")
        .and_then(|p| p.split_once('.'))
    {
        Some((service, key)) => format!("service {service:?}, key `{key}`"),
        None => format!("key `{path}`"),
    }
}

/// `path` without `.` components (`a/./b` is `a/b`); `..` is kept.
fn clean(path: &Path) -> PathBuf {
    path.components().collect()
}

/// A context that is not a local directory: a Git URL, an HTTP(S) tarball.
fn is_remote(context: &str) -> bool {
    context.contains("://") || context.starts_with("git@") || context.starts_with("github.com/")
}

/// One shape for a service: `build` a mapping with an absolute context, `args`, `labels`
/// and `additional_contexts` mappings, `depends_on` a mapping.
fn normalize(
    name: &str,
    value: Value,
    base: &Path,
    file: &Path,
) -> Result<Map<String, Value>, ComposeError> {
    let mut service = match value {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => {
            return Err(fail(file, format!("service {name:?} must be a mapping")));
        }
    };
    if let Some(build) = service.get_mut("build") {
        let mut b = match std::mem::take(build) {
            Value::String(context) => {
                let mut m = Map::new();
                m.insert("context".into(), Value::String(context));
                m
            }
            Value::Object(m) => m,
            _ => {
                return Err(fail(
                    file,
                    format!(
                        "service {name:?}: `build` must be a context path or a mapping with `context`, `dockerfile`, ..."
                    ),
                ));
            }
        };
        if let Some(context) = b.get("context").and_then(scalar_string)
            && !is_remote(&context)
        {
            b.insert(
                "context".into(),
                Value::String(clean(&base.join(&context)).display().to_string()),
            );
        }
        for (key, sep) in [("args", '='), ("labels", '='), ("additional_contexts", '=')] {
            if let Some(v) = b.get(key) {
                let map = list_to_map(v, sep).ok_or_else(|| {
                    fail(
                        file,
                        format!("service {name:?}: `build.{key}` must be a mapping or a list of KEY=VALUE"),
                    )
                })?;
                b.insert(key.into(), Value::Object(map));
            }
        }
        if let Some(Value::Object(contexts)) = b.get_mut("additional_contexts") {
            for (_, v) in contexts.iter_mut() {
                if let Some(s) = scalar_string(v)
                    && !s.starts_with("service:")
                    && !s.starts_with("docker-image://")
                    && !s.starts_with("target:")
                    && !s.starts_with("oci-layout://")
                    && !is_remote(&s)
                {
                    *v = Value::String(clean(&base.join(&s)).display().to_string());
                }
            }
        }
        *build = Value::Object(b);
    }
    if let Some(deps) = service.get("depends_on") {
        let map = match deps {
            Value::Array(items) => items
                .iter()
                .filter_map(scalar_string)
                .map(|d| (d, Value::Object(Map::new())))
                .collect(),
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        service.insert("depends_on".into(), Value::Object(map));
    }
    if let Some(Value::Object(ext)) = service.get_mut("extends")
        && let Some(f) = ext.get("file").and_then(scalar_string)
    {
        let here = file.parent().unwrap_or(base);
        ext.insert(
            "file".into(),
            Value::String(here.join(f).display().to_string()),
        );
    }
    Ok(service)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
        Some(v) => scalar_string(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn string_map(
    value: Option<&Value>,
    env: &BTreeMap<String, String>,
    from_env: bool,
) -> BTreeMap<String, String> {
    let Some(Value::Object(m)) = value else {
        return BTreeMap::new();
    };
    m.iter()
        .filter_map(|(k, v)| match v {
            Value::Null if from_env => env.get(k).map(|e| (k.clone(), e.clone())),
            Value::Null => Some((k.clone(), String::new())),
            other => scalar_string(other).map(|s| (k.clone(), s)),
        })
        .collect()
}

/// The build-relevant part of a resolved service.
fn service(
    name: &str,
    def: &Def,
    env: &BTreeMap<String, String>,
) -> Result<ComposeService, ComposeError> {
    let v = &def.value;
    let image = v.get("image").and_then(scalar_string);
    let build = match v.get("build") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => {
            let context_text = b
                .get("context")
                .and_then(scalar_string)
                .unwrap_or_else(|| def.base.display().to_string());
            let remote = is_remote(&context_text);
            let context = if b.contains_key("context") {
                PathBuf::from(&context_text)
            } else {
                // No context: the project directory (where relative paths resolve).
                def.base.clone()
            };
            let mut unsupported: Vec<String> = b
                .keys()
                .filter(|k| NOT_APPLIED.contains(&k.as_str()))
                .cloned()
                .collect();
            unsupported.extend(
                b.keys()
                    .filter(|k| !BUILD_KEYS.contains(&k.as_str()) && !k.starts_with("x-"))
                    .map(|k| format!("{k} (not a Compose build key)")),
            );
            Some(Build {
                context,
                remote,
                dockerfile: PathBuf::from(
                    b.get("dockerfile")
                        .and_then(scalar_string)
                        .unwrap_or_else(|| "Dockerfile".into()),
                ),
                dockerfile_inline: b.get("dockerfile_inline").and_then(scalar_string),
                args: string_map(b.get("args"), env, true),
                target: b.get("target").and_then(scalar_string),
                platforms: strings(b.get("platforms")),
                tags: strings(b.get("tags")),
                labels: string_map(b.get("labels"), env, false),
                network: b.get("network").and_then(scalar_string),
                cache_from: strings(b.get("cache_from")),
                additional_contexts: string_map(b.get("additional_contexts"), env, false),
                secrets: b
                    .get("secrets")
                    .map(|s| match s {
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| {
                                scalar_string(x).or_else(|| x.get("source").and_then(scalar_string))
                            })
                            .collect(),
                        _ => Vec::new(),
                    })
                    .unwrap_or_default(),
                secret_mounts: match b.get("secrets") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| {
                            let source = scalar_string(x)
                                .or_else(|| x.get("source").and_then(scalar_string))?;
                            let id = x
                                .get("target")
                                .and_then(scalar_string)
                                .unwrap_or_else(|| source.clone());
                            Some((source, id))
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                ssh: match b.get("ssh") {
                    Some(Value::Object(m)) => m.keys().cloned().collect(),
                    other => strings(other),
                },
                unsupported,
            })
        }
        Some(_) => {
            return Err(fail(
                &def.file,
                format!("service {name:?}: `build` must be a context path or a mapping"),
            ));
        }
    };
    let depends_on = match v.get("depends_on") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Ok(ComposeService {
        name: name.to_string(),
        file: def.file.clone(),
        image,
        build,
        profiles: strings(v.get("profiles")),
        depends_on,
        written: def.written.clone(),
    })
}

/// Variables the process gave, for [`Options::environment`].
pub fn process_environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The names of `services` that some build section names with `service:<name>`.
pub fn context_services(build: &Build) -> BTreeSet<String> {
    build
        .additional_contexts
        .values()
        .filter_map(|v| v.strip_prefix("service:"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
