//! The plan: every service's image name, what it is built FROM, the dependency graph, and
//! the external base images to prefetch (with every Dockerfile line that references them).
//! Computed before any work, so bad input stops the run with nothing done; only a service's
//! own Dockerfile problem (it cannot be read or parsed, an ARG it needs has no value) is kept
//! in the plan as that service's [`ServicePlan::error`], so that it fails alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::dockerfile::{self, BuildContextArgs};
use crate::graph::Graph;
use crate::project::InputError;
use crate::project::{Project, Service};
use crate::reference::Reference;

/// Where an image is referenced (for annotations).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Use {
    pub dockerfile: std::path::PathBuf,
    pub line: usize,
}

/// One image to prefetch and everywhere it is referenced.
#[derive(Debug, Clone, Serialize)]
pub struct ImageNeed {
    pub reference: Reference,
    /// The platform to pull (`os/architecture[/variant]`) from a multi-platform image: the
    /// `FROM --platform` value, else the service's first `platforms` entry. `None`: the
    /// engine's own platform. The same image needed for two platforms is two needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub uses: Vec<Use>,
}

/// How service images are named: `{prefix}{service}:{tag}`.
#[derive(Debug, Clone, Serialize)]
pub struct Naming {
    pub prefix: String,
    pub tag: String,
    /// Where the tag came from (`--tag`, `VERSION file`, `git describe`, `git commit`, `default`).
    pub tag_source: String,
}

impl Naming {
    /// `prefix`/`tag` from flags or config win; else the repository name and `-`, and the
    /// VERSION file, `git describe --tags`, the short commit, or `latest`.
    /// `tag` comes with where it was given (`--tag`, the config file). `repository` is the
    /// runner's `OWNER/REPO` (`GITHUB_REPOSITORY`), whose name wins over the directory's.
    pub fn resolve(
        root: &Path,
        prefix: Option<&str>,
        tag: Option<(&str, &str)>,
        repository: Option<&str>,
    ) -> Result<Naming, InputError> {
        let prefix = match prefix {
            Some(p) => p.to_string(),
            None => format!("{}-", sanitize(&repository_name(root, repository))),
        };
        let (tag, tag_source) = match tag {
            Some((t, source)) => (t.to_string(), source.to_string()),
            None => detect_tag(root),
        };
        if !valid_tag(&tag) {
            return Err(InputError {
                input: format!("tag {tag:?} (from {tag_source})"),
                reason: "a tag is 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'; pass --tag".into(),
            });
        }
        if !prefix.is_empty() && Reference::parse(&format!("{prefix}x")).is_err() {
            return Err(InputError {
                input: format!("prefix {prefix:?}"),
                reason:
                    "the prefix must make valid image names (lowercase, digits, '.', '_', '-', '/')"
                        .into(),
            });
        }
        Ok(Naming {
            prefix,
            tag,
            tag_source,
        })
    }

    pub fn image_for(&self, service: &Service) -> String {
        service
            .image
            .clone()
            .unwrap_or_else(|| format!("{}{}:{}", self.prefix, service.name, self.tag))
    }
}

fn repository_name(root: &Path, repository: Option<&str>) -> String {
    if let Some(repo) = repository
        && let Some(name) = repo.rsplit('/').next().filter(|n| !n.is_empty())
    {
        return name.to_string();
    }
    let top = git(root, &["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let dir = top.unwrap_or_else(|| root.to_path_buf());
    let dir = dir.canonicalize().unwrap_or(dir);
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app")
        .to_string()
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if s.is_empty() { "app".into() } else { s }
}

fn detect_tag(root: &Path) -> (String, String) {
    if let Ok(text) = std::fs::read_to_string(root.join("VERSION")) {
        let v = text.trim();
        if !v.is_empty() && valid_tag(v) {
            return (v.to_string(), "VERSION file".into());
        }
    }
    if let Some(d) = git(root, &["describe", "--tags"]).filter(|t| valid_tag(t)) {
        return (d, "git describe".into());
    }
    if let Some(c) = git(root, &["rev-parse", "--short", "HEAD"]) {
        return (c, "git commit".into());
    }
    ("latest".into(), "default".into())
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && tag.len() <= 128
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub source: String,
    /// Which reader read the compose files (for a compose project).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader: Option<String>,
    /// Every file the services were read from, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The `.env` / `--env-file` files read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<String>,
    /// What the user should know (unset variables, build keys not applied, skipped folders).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub naming: Naming,
    pub services: Vec<ServicePlan>,
    /// External images to prefetch, deduplicated across services.
    pub base_images: Vec<ImageNeed>,
    /// Service names in a dependency order.
    pub order: Vec<String>,
    #[serde(skip)]
    pub graph: Graph,
}

impl Plan {
    /// Every service's index in dependency order (dependencies first); a service the order
    /// does not name (it could not be planned) comes last.
    pub fn dependency_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = self
            .order
            .iter()
            .filter_map(|n| self.services.iter().position(|s| &s.name == n))
            .collect();
        for i in 0..self.services.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub name: String,
    /// Other services with exactly this build (context, Dockerfile, target, args, ...): built
    /// once, as this one, their images added as tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The image this service produces, `{prefix}{service}:{tag}`.
    pub image: String,
    /// Further references the image gets.
    pub tags: Vec<String>,
    pub dockerfile: String,
    pub origin: String,
    /// Services this one needs first (from `depends-on`, FROM/`COPY --from` lines naming
    /// their images, and `additional_contexts: service:<name>`).
    pub depends_on: Vec<String>,
    /// Canonical references of the external images this service's build needs: the stages
    /// its target reaches, and `docker-image://` named contexts.
    pub base_images: Vec<String>,
    /// The build arguments: `--build-arg`s overridden by the service's own.
    pub build_args: BTreeMap<String, String>,
    /// Why this service cannot be built although the others can (its Dockerfile cannot be
    /// read or parsed, an ARG it needs is missing): it fails alone, its dependents are
    /// skipped, and its base images are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ServiceError>,
    #[serde(skip)]
    pub service: Service,
}

/// A service's own Dockerfile problem, at its file and line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceError {
    /// The Dockerfile, as the plan shows it.
    pub file: String,
    /// The line the problem is at, when it is at one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    /// `syntax` (the parser or an ARG refused it) or `input` (the file cannot be read).
    pub kind: ServiceErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceErrorKind {
    Syntax,
    Input,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// The line a parser error names (`line N: ...`, how every [`dockerfile::DockerfileError`]
/// with a line starts).
fn error_line(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("line ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..]
        .starts_with(':')
        .then(|| digits.parse().ok())
        .flatten()
}

/// `input` for an error about `service`: its file, and the key and value as written and
/// after interpolation when interpolation changed it.
fn written_note(service: &Service, key: &str, value: &str) -> String {
    match service.written.get(key) {
        Some(w) => format!("key `{key}` ({w:?}, which is {value:?} after interpolation)"),
        None => format!("key `{key}` ({value:?})"),
    }
}

/// What makes two builds the same build.
fn build_identity(service: &Service, args: &BTreeMap<String, String>) -> String {
    serde_json::json!([
        service.context,
        service.dockerfile,
        service.dockerfile_inline,
        service.target,
        args,
        service.platforms,
        service.network,
        service.labels,
        service.additional_contexts,
        service.secrets,
    ])
    .to_string()
}

/// Parses every service's Dockerfile and builds the plan. `extra_args` are `--build-arg`s
/// for every service (a service's own build args win). Services with identical builds are
/// planned as one build with several tags; only the stages a build's target reaches count.
pub fn plan(
    project: &Project,
    naming: &Naming,
    extra_args: &BTreeMap<String, String>,
) -> Result<Plan, InputError> {
    let mut seen = BTreeSet::new();
    if let Some(dup) = project
        .services
        .iter()
        .find(|s| !seen.insert(s.name.as_str()))
    {
        return Err(InputError {
            input: project.source.clone(),
            reason: format!("service {:?} is defined twice; rename one", dup.name),
        });
    }

    // Identical builds: the first service of each group builds, the others are its aliases.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut by_identity: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_args = Vec::new();
    for (i, service) in project.services.iter().enumerate() {
        let mut args = extra_args.clone();
        args.extend(service.build_args.clone());
        let identity = build_identity(service, &args);
        all_args.push(args);
        match by_identity.get(&identity) {
            Some(&g) => groups[g].1.push(i),
            None => {
                by_identity.insert(identity, groups.len());
                groups.push((i, Vec::new()));
            }
        }
    }

    // The images each build produces, and which build produces each reference.
    let mut produced: BTreeMap<Reference, usize> = BTreeMap::new();
    let mut images = Vec::new();
    for (g, (first, others)) in groups.iter().enumerate() {
        let mut main_image = None;
        let mut tags: Vec<String> = Vec::new();
        for &i in std::iter::once(first).chain(others.iter()) {
            let service = &project.services[i];
            let image = naming.image_for(service);
            let main = Reference::parse(&image).map_err(|e| InputError {
                input: service.origin.clone(),
                reason: format!(
                    "service {:?}, {}: not a valid image reference: {e}",
                    service.name,
                    written_note(service, "image", &image)
                ),
            })?;
            let mut refs = vec![(main.clone().with_default_tag(), image.clone())];
            for extra in &service.tags {
                let full = if extra.contains(':') || extra.contains('/') {
                    extra.clone()
                } else {
                    format!("{}:{extra}", main.familiar_name())
                };
                let r = Reference::parse(&full).map_err(|e| InputError {
                    input: format!("service {:?} tag {extra:?}", service.name),
                    reason: e.to_string(),
                })?;
                refs.push((r.with_default_tag(), full));
            }
            for (r, text) in refs {
                if let Some(&other) = produced.get(&r)
                    && other != g
                {
                    return Err(InputError {
                        input: service.origin.clone(),
                        reason: format!(
                            "services {:?} and {:?} both produce image {text:?} from different builds; give one another `image:` or make their builds identical",
                            project.services[groups[other].0].name, service.name
                        ),
                    });
                }
                produced.insert(r, g);
                if main_image.is_none() {
                    main_image = Some(text);
                } else if main_image.as_ref() != Some(&text) && !tags.contains(&text) {
                    tags.push(text);
                }
            }
        }
        images.push((main_image.unwrap_or_default(), tags));
    }
    let group_of = |name: &str| {
        project
            .services
            .iter()
            .position(|s| s.name == name)
            .and_then(|i| {
                groups
                    .iter()
                    .position(|(first, others)| *first == i || others.contains(&i))
            })
    };

    let mut needs: BTreeMap<(Reference, Option<String>), Vec<Use>> = BTreeMap::new();
    let mut services = Vec::new();
    let mut edges = Vec::new();
    for (g, (i, others)) in groups.iter().enumerate() {
        let service = &project.services[*i];
        let path = &service.dockerfile;
        let shown = path
            .strip_prefix(&project.root)
            .unwrap_or(path)
            .to_path_buf();
        let args = all_args[*i].clone();
        // The service's own Dockerfile problem fails it alone (issue 17): the others are
        // planned and built.
        let broken = |kind, line, message: String| {
            let (image, tags) = images[g].clone();
            ServicePlan {
                name: service.name.clone(),
                aliases: others
                    .iter()
                    .map(|&o| project.services[o].name.clone())
                    .collect(),
                image,
                tags,
                dockerfile: shown.display().to_string(),
                origin: service.origin.clone(),
                depends_on: service.depends_on.clone(),
                base_images: Vec::new(),
                build_args: args.clone(),
                error: Some(ServiceError {
                    file: shown.display().to_string(),
                    line,
                    message,
                    kind,
                }),
                service: service.clone(),
            }
        };
        let content = match (&service.dockerfile_inline, &service.problem) {
            (Some(text), _) => Ok(text.clone()),
            (None, Some(problem)) => Err(problem.clone()),
            (None, None) => std::fs::read_to_string(path)
                .map_err(|e| format!("{e}; make it a readable UTF-8 text file")),
        };
        let content = match content {
            Ok(content) => content,
            Err(problem) => {
                let plan = broken(
                    ServiceErrorKind::Input,
                    None,
                    format!("cannot read the Dockerfile: {problem}"),
                );
                edges.push((service.name.clone(), plan.depends_on.clone()));
                services.push(plan);
                continue;
            }
        };
        // Issue 13: BUILDPLATFORM is the engine's (this machine's: the engine is local when
        // planning), TARGETPLATFORM the service's first platform, else the same.
        let build_platform = dockerfile::Platform::host();
        let target_platform = service
            .platforms
            .first()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| build_platform.clone());
        let context = BuildContextArgs {
            build_args: &args,
            target_platform,
            build_platform,
        };
        let parsed = match dockerfile::parse(&content, &context) {
            Ok(parsed) => parsed,
            Err(e) => {
                let message = e.to_string();
                let plan = broken(
                    ServiceErrorKind::Syntax,
                    error_line(&message),
                    format!("cannot parse the Dockerfile: {message}"),
                );
                edges.push((service.name.clone(), plan.depends_on.clone()));
                services.push(plan);
                continue;
            }
        };
        let uses = parsed
            .images_for_target(service.target.as_deref())
            .ok_or_else(|| InputError {
                input: service.origin.clone(),
                reason: {
                    let names: Vec<String> = parsed
                        .stages
                        .iter()
                        .filter_map(|s| s.name.clone())
                        .collect();
                    format!(
                        "service {:?}, {}: {} has no stage of that name ({}); fix the target",
                        service.name,
                        written_note(
                            service,
                            "build.target",
                            service.target.as_deref().unwrap_or_default()
                        ),
                        shown.display(),
                        if names.is_empty() {
                            "it has no named stages".to_string()
                        } else {
                            format!("its stages: {}", names.join(", "))
                        }
                    )
                },
            })?;
        let mut deps: BTreeSet<String> = service.depends_on.iter().cloned().collect();
        let mut mine = Vec::new();
        // The platform a use pulls: its `FROM --platform`, else the service's target
        // platform when it names one (the syntax frontend runs on the build platform).
        let service_platform = service.platforms.first().cloned();
        let mut add_need =
            |reference: Reference, platform: Option<String>, use_: Use, mine: &mut Vec<String>| {
                if !mine.contains(&reference.to_string()) {
                    mine.push(reference.to_string());
                }
                needs.entry((reference, platform)).or_default().push(use_);
            };
        for image in uses {
            // A named context of the same name replaces the image (BuildKit's named contexts).
            if service.additional_contexts.contains_key(&image.raw) {
                continue;
            }
            if let Some(&producer) = produced.get(&image.reference) {
                if producer != g {
                    deps.insert(project.services[groups[producer].0].name.clone());
                }
                continue;
            }
            let platform = match image.kind {
                dockerfile::UseKind::Syntax => None,
                _ => image.platform.clone().or_else(|| service_platform.clone()),
            };
            add_need(
                image.reference.clone(),
                platform,
                Use {
                    dockerfile: shown.clone(),
                    line: image.line,
                },
                &mut mine,
            );
        }
        for (key, value) in &service.additional_contexts {
            let context_key = format!("build.additional_contexts.{key}");
            if let Some(other) = value.strip_prefix("service:") {
                let producer = group_of(other).ok_or_else(|| InputError {
                    input: service.origin.clone(),
                    reason: format!(
                        "service {:?}, {}: there is no service {other:?} with a build; fix the name",
                        service.name,
                        written_note(service, &context_key, value)
                    ),
                })?;
                if producer != g {
                    deps.insert(project.services[groups[producer].0].name.clone());
                }
            } else if let Some(image) = value.strip_prefix("docker-image://") {
                let reference = Reference::parse(image)
                    .map_err(|e| InputError {
                        input: service.origin.clone(),
                        reason: format!(
                            "service {:?}, {}: not a valid image reference: {e}",
                            service.name,
                            written_note(service, &context_key, value)
                        ),
                    })?
                    .with_default_tag();
                if let Some(&producer) = produced.get(&reference) {
                    if producer != g {
                        deps.insert(project.services[groups[producer].0].name.clone());
                    }
                } else {
                    add_need(
                        reference,
                        service_platform.clone(),
                        Use {
                            dockerfile: shown.clone(),
                            line: 0,
                        },
                        &mut mine,
                    );
                }
            }
        }
        edges.push((
            service.name.clone(),
            deps.iter().cloned().collect::<Vec<_>>(),
        ));
        let (image, tags) = images[g].clone();
        services.push(ServicePlan {
            name: service.name.clone(),
            aliases: others
                .iter()
                .map(|&o| project.services[o].name.clone())
                .collect(),
            image,
            tags,
            dockerfile: shown.display().to_string(),
            origin: service.origin.clone(),
            depends_on: deps.into_iter().collect(),
            base_images: mine,
            build_args: args,
            error: None,
            service: service.clone(),
        });
    }
    let graph = Graph::new(&edges).map_err(|e| InputError {
        input: project.source.clone(),
        reason: e.to_string(),
    })?;
    let order = graph
        .order()
        .into_iter()
        .map(|i| graph.names[i].clone())
        .collect();
    let base_images = needs
        .into_iter()
        .map(|((reference, platform), mut uses)| {
            uses.sort();
            uses.dedup();
            ImageNeed {
                reference,
                platform,
                uses,
            }
        })
        .collect();
    Ok(Plan {
        source: project.source.clone(),
        reader: project.reader.clone(),
        files: if project.files.len() > 1 {
            project.files.clone()
        } else {
            Vec::new()
        },
        env_files: project.env_files.clone(),
        warnings: project.warnings.clone(),
        naming: naming.clone(),
        services,
        base_images,
        order,
        graph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_dockers_grammar() {
        for ok in [
            "v0.3.6-dev",
            "latest",
            "1.0",
            "_x",
            "a".repeat(128).as_str(),
        ] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a:b",
            "ä",
            "a".repeat(129).as_str(),
            "x\n::error::y",
        ] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    /// Issue 14: BuildKit builds only the stages the target reaches.
    #[test]
    fn issue_14_reachable_stages_follow_from_copy_from_and_mounts() {
        let text = "FROM golang:1.22 AS Build\nFROM node:20 AS assets\nFROM python:3 AS unused\n\
                    FROM alpine AS release\nCOPY --from=build /a /a\nRUN --mount=from=assets,target=/x true\n\
                    COPY --from=0 /b /b\nFROM release AS debug\nCOPY --from=ruby:3 /r /r\n";
        let parsed = dockerfile::parse(text, &BuildContextArgs::default()).unwrap();
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(
            parsed.reachable_stages(Some("RELEASE")),
            Some(set(&[0, 1, 3]))
        );
        assert_eq!(parsed.reachable_stages(None), Some(set(&[0, 1, 3, 4])));
        assert_eq!(parsed.reachable_stages(Some("unused")), Some(set(&[2])));
        assert_eq!(parsed.reachable_stages(Some("nope")), None);
        let images = |target| {
            parsed
                .images_for_target(target)
                .unwrap()
                .iter()
                .map(|u| u.raw.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            images(Some("release")),
            ["golang:1.22", "node:20", "alpine"]
        );
        assert_eq!(
            images(None),
            ["golang:1.22", "node:20", "alpine", "ruby:3"],
            "the last stage is the default target"
        );
    }

    #[test]
    fn issue17_parser_errors_give_their_line() {
        assert_eq!(error_line("line 12: heredoc never ends"), Some(12));
        assert_eq!(error_line("line x: no"), None);
        assert_eq!(error_line("line 3 without a colon"), None);
        assert_eq!(error_line("the Dockerfile has no instructions"), None);
    }

    #[test]
    fn repository_names_become_valid_prefixes() {
        assert_eq!(sanitize("AI-Infra"), "ai-infra");
        assert_eq!(sanitize("my repo!"), "my-repo");
        assert_eq!(sanitize("--"), "app");
    }
}
