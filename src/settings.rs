//! Settings: the flags, the config file, the environment and the runner's variables
//! ([`ActionsEnv`]) resolved and checked once, before any work starts (ripgrep's LowArgs →
//! HiArgs). The commands in [`crate::cmd`] take these and never look at a raw flag again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actions_env::ActionsEnv;
use crate::build::PrefetchFailure;
use crate::build::backend::BuilderChoice;
use crate::build::run::{BuildOptions, BuildxExtras};
use crate::build::secrets::Secret;
use crate::cache::CacheKey;
use crate::cli::{
    BuildArg, BuildArgs, GlobalArgs, MirrorList, PlanArgs, PrefetchArgs, ShardSpec, flatten,
};
use crate::error::Error;
use crate::plan::{Naming, Plan, plan};
use crate::prefetch::{Mirrors, PrefetchOptions, PullPolicy};
use crate::project::Project;
use crate::report::{PublishContext, Report};
use crate::retry::RetryPolicy;

/// The build args as a map (a later `KEY` wins).
pub fn build_arg_map(args: &[BuildArg]) -> BTreeMap<String, String> {
    args.iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect()
}

/// The mirrors of the project's config file (when there is a project), then the `--mirror`
/// values.
pub fn mirrors(project: Option<&Project>, flags: &[MirrorList]) -> Result<Mirrors, Error> {
    let mut mirrors = Mirrors::default();
    if let Some(project) = project {
        for (registry, hosts) in &project.settings.mirrors {
            mirrors
                .add(&format!("{registry}={}", hosts.join(",")))
                .map_err(|reason| Error::Input {
                    input: project.source.clone(),
                    reason: reason.to_string(),
                })?;
        }
    }
    for line in flags.iter().flat_map(|l| l.0.iter()) {
        mirrors.add(line).map_err(|reason| Error::Usage {
            what: "--mirror".into(),
            reason: reason.to_string(),
        })?;
    }
    Ok(mirrors)
}

/// The project in the working directory and its plan, loaded once.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub project: Project,
    pub plan: Plan,
    pub actions: ActionsEnv,
}

impl Workspace {
    /// Loads the project (`--config`, else discovery) and plans it with `args`.
    pub fn load(
        global: &GlobalArgs,
        args: &PlanArgs,
        actions: ActionsEnv,
    ) -> Result<Workspace, Error> {
        let root = std::env::current_dir().map_err(|e| Error::Usage {
            what: "the working directory".into(),
            reason: e.to_string(),
        })?;
        let compose = crate::project::ComposeOptions {
            files: global.compose_files.clone(),
            env_files: global.env_files.clone(),
            environment: crate::compose::process_environment(),
        };
        let project = Project::load_with(&root, global.config.as_deref(), &compose)?;
        let plan = plan_project(&root, &project, args, &actions)?;
        Ok(Workspace {
            root,
            project,
            plan,
            actions,
        })
    }

    /// Says what reading the project warned about (variables not set, build keys not
    /// applied, folders discovery skipped), each on one cleaned line.
    pub fn announce(&self, ui: &crate::ui::Ui) {
        for warning in &self.plan.warnings {
            ui.warn(&crate::text::clean_line(warning, 4000));
        }
        for s in &self.plan.services {
            if let Some(error) = &s.error {
                let at = error.line.map(|l| format!(":{l}")).unwrap_or_default();
                ui.warn(&crate::text::clean_line(
                    &format!(
                        "service {} cannot be built: {}{at}: {}",
                        s.name, error.file, error.message
                    ),
                    4000,
                ));
            }
        }
    }

    /// The config file's bytes (empty when the services were discovered).
    /// For a compose project read from several files (override, `-f`, include, extends) or
    /// with env files, every one of them, each after its length.
    pub fn config_bytes(&self) -> Vec<u8> {
        let project = &self.project;
        if project.files.len() <= 1 && project.env_files.is_empty() {
            return std::fs::read(project.root.join(&project.source)).unwrap_or_default();
        }
        let mut bytes = Vec::new();
        for file in project.files.iter().chain(&project.env_files) {
            let content = std::fs::read(project.root.join(file)).unwrap_or_default();
            bytes.extend_from_slice(&(content.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&content);
        }
        bytes
    }

    /// This run's cache key, with `prefix` (`--cache-key-prefix`) before it.
    pub fn cache_key(&self, prefix: &str) -> Result<CacheKey, Error> {
        Ok(crate::cache::cache_key(&self.plan, &self.config_bytes()).with_prefix(prefix)?)
    }

    /// Per-service weights for sharding: durations from a previous report, else 1 each.
    pub fn shard_weights(&self, report: Option<&Path>) -> Result<Vec<f64>, Error> {
        let Some(path) = report else {
            return Ok(vec![1.0; self.plan.services.len()]);
        };
        let bad = |reason: String| Error::Input {
            input: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let report: Report = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not an ai-infra-build report: {e}")))?;
        let durations = report
            .services
            .iter()
            .filter(|s| s.duration_ms > 0)
            .map(|s| (s.name.clone(), s.duration_ms as f64 / 1000.0))
            .collect();
        Ok(crate::matrix::weights_from_durations(
            &self.plan.graph.names,
            &durations,
        ))
    }
}

/// Plans `project` with the naming from flags, then the config file, then the repository.
pub fn plan_project(
    root: &Path,
    project: &Project,
    args: &PlanArgs,
    actions: &ActionsEnv,
) -> Result<Plan, Error> {
    let tag = match (&args.tag, &project.settings.tag) {
        (Some(tag), _) => Some((tag.as_str(), "--tag")),
        (None, Some(tag)) => Some((tag.as_str(), project.source.as_str())),
        (None, None) => None,
    };
    let prefix = args
        .prefix
        .as_deref()
        .or(project.settings.prefix.as_deref());
    let naming = Naming::resolve(root, prefix, tag, actions.repository.as_deref())?;
    Ok(plan(
        project,
        &naming,
        &build_arg_map(&flatten(&args.build_args)),
    )?)
}

/// The cache directory and its budget (`--cache-dir`, `--cache-max-size`).
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub dir: PathBuf,
    pub max_size: u64,
}

/// The docker CLI's credentials (`$DOCKER_CONFIG/config.json`, default `~/.docker`).
fn load_credentials() -> Result<crate::auth::Credentials, Error> {
    crate::auth::Credentials::from_env().map_err(|err| Error::Input {
        input: "docker credentials".to_string(),
        reason: format!("{err}; {}", err.help()),
    })
}

/// Reads the credentials of every registry the plan pulls from (mirrors included) before
/// any work, so that every secret is known (and masked) from the start; the secrets read.
pub fn read_credentials(options: &PrefetchOptions, plan: &Plan) -> Result<Vec<String>, Error> {
    for host in &pull_hosts(options, plan) {
        options
            .credentials
            .lookup(host)
            .map_err(|err| Error::Input {
                input: format!("credentials for {host}"),
                reason: format!("{err}; {}", err.help()),
            })?;
    }
    Ok(options.credentials.secrets())
}

/// The hosts a plan pulls from: each base image's registry and its mirrors.
fn pull_hosts(options: &PrefetchOptions, plan: &Plan) -> BTreeSet<String> {
    let mut hosts: BTreeSet<String> = BTreeSet::new();
    for need in &plan.base_images {
        hosts.insert(need.reference.registry_host());
        for source in options.mirrors.for_registry(&need.reference.domain) {
            hosts.insert(source.endpoint.host.clone());
        }
    }
    hosts
}

/// What the Engine API builds are given: the credentials of every host the plan pulls from.
fn engine_auth(options: &PrefetchOptions, plan: &Plan) -> Result<crate::auth::EngineAuth, Error> {
    let hosts = pull_hosts(options, plan);
    crate::auth::EngineAuth::for_hosts(&options.credentials, hosts.iter().map(String::as_str))
        .map_err(|err| Error::Input {
            input: "docker credentials".to_string(),
            reason: format!("{err}; {}", err.help()),
        })
}

/// How base images are had.
#[derive(Debug)]
pub struct PrefetchSettings {
    pub options: PrefetchOptions,
    pub cache: Option<CacheDir>,
    pub failure: PrefetchFailure,
}

impl PrefetchSettings {
    /// The prefetch flags with the config file's settings.
    pub fn resolve(args: &PrefetchArgs, project: &Project) -> Result<PrefetchSettings, Error> {
        let cache = args
            .cache_dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|dir| CacheDir {
                dir: dir.clone(),
                max_size: args.cache_max_size,
            });
        let options = PrefetchOptions {
            concurrency: usize::from(args.pull_concurrency),
            policy: RetryPolicy {
                max_retries: args.max_retries,
                deadline: Duration::from_secs(args.retry_deadline),
                ..RetryPolicy::default()
            },
            idle_timeout: Duration::from_secs(args.idle_timeout),
            mirrors: mirrors(Some(project), &args.mirror.mirrors)?,
            mirror_first: args.mirror.mirror_first
                || project.settings.mirror_first.unwrap_or(false),
            pull: args.pull,
            via: args.pull_via,
            notify: None,
            health: cache.as_ref().map(|c| {
                std::sync::Arc::new(crate::health::HealthStore::load(&c.dir).unwrap_or_default())
            }),
            credentials: std::sync::Arc::new(load_credentials()?),
        };
        Ok(PrefetchSettings {
            options,
            cache,
            failure: args.prefetch_failure,
        })
    }
}

/// Everything `build-all` and `build SERVICE...` need.
#[derive(Debug)]
pub struct BuildSettings {
    pub prefetch: PrefetchSettings,
    /// `build-all`, or `build a b`.
    pub command: String,
    /// The services to build (indices into the plan).
    pub selected: BTreeSet<usize>,
    pub backend: BuilderChoice,
    pub buildx_builder: Option<String>,
    /// What this run needs that only buildx does (build secrets, SSH, attestations).
    pub needs_buildx: Vec<&'static str>,
    /// `--force`: pull base images again and build without the layer cache.
    pub force: bool,
    /// `--no-cache` or `--force`.
    pub no_cache: bool,
    pub shard: Option<ShardSpec>,
    pub options: BuildOptions,
    pub publish: PublishContext,
    /// Issue 15: where unchanged services may come from.
    pub reuse: crate::build::reuse::ReusePolicy,
    /// Issue 15: `--changed-since`, or on pull requests the base commit.
    pub changed_since: Option<ChangedSinceRef>,
}

impl BuildSettings {
    pub fn resolve(
        args: &BuildArgs,
        names: &[String],
        ws: &Workspace,
    ) -> Result<BuildSettings, Error> {
        let plan = &ws.plan;
        let mut selected = select_services(plan, names, &args.only, &args.skip, args.no_deps)?;
        if let Some(shard) = args.shard {
            let weights = ws.shard_weights(args.prefetch.plan.durations.as_deref())?;
            let shards = crate::matrix::shard(&plan.graph, &weights, shard.total);
            let mine: BTreeSet<usize> = shards
                .iter()
                .find(|s| s.index == shard.index)
                .map(|s| s.members.iter().copied().collect())
                .unwrap_or_default();
            selected.retain(|s| mine.contains(s));
        }
        let mut prefetch = PrefetchSettings::resolve(&args.prefetch, &ws.project)?;
        if args.force {
            prefetch.options.pull = PullPolicy::Always;
        }
        let out_dir = &args.prefetch.out_dir;
        let out_dir = std::path::absolute(out_dir).unwrap_or_else(|_| out_dir.clone());
        let secrets = resolve_secrets(args, &ws.root)?;
        let service_secrets = resolve_service_secrets(plan, &selected, &ws.root)?;
        let mut masks: Vec<String> = secrets
            .iter()
            .chain(service_secrets.values().flatten())
            .flat_map(Secret::mask_lines)
            .collect();
        masks.extend(read_credentials(&prefetch.options, plan)?);
        let mut publish = PublishContext::new(
            out_dir.clone(),
            ws.project.root.clone(),
            masks,
            args.github_token.clone(),
            ws.actions.clone(),
        );
        if let Some(github) = publish.github.as_mut() {
            github.settings.comment = args.pr_comment;
            if !args.checks {
                github.settings.max_check_runs = 0;
            }
        }
        let options = BuildOptions {
            // Without --parallel: chosen from the engine once connected (cmd::build).
            parallel: args.parallel.map_or(0, usize::from),
            fail_fast: args.fail_fast,
            no_cache: args.force || args.no_cache,
            build_retries: args.build_retries,
            // Issue 17: no idle cut of builds unless asked for (a quiet compile is not a
            // stall); --build-timeout bounds an attempt's wall time instead.
            idle_timeout: (args.build_idle_timeout > 0)
                .then(|| Duration::from_secs(args.build_idle_timeout)),
            build_timeout: args.build_timeout.filter(|d| !d.is_zero()),
            out_dir,
            inline_cache: false,
            push: args.push,
            cache: None,
            labels: build_arg_map(&args.image.labels()),
            platforms: args.image.platforms(),
            extras: BuildxExtras {
                secrets,
                service_secrets,
                ssh: flatten(&args.image.ssh),
                provenance: args.provenance.clone(),
                sbom: args.sbom.clone(),
            },
            registry_auth: engine_auth(&prefetch.options, plan)?,
            reuse_cache: true,
            reuse: None,
            changed: None,
        };
        let reuse = crate::build::reuse::ReusePolicy::resolve(
            args.reuse,
            args.no_reuse || args.force,
            args.push,
            prefetch.cache.is_some(),
        );
        let mut options = options;
        options.reuse_cache = reuse.cache;
        let mut needs_buildx = options.extras.needs_buildx();
        // A compose `cache_from` of another backend than a registry image (`type=gha`, ...).
        if ws.plan.services.iter().any(|s| {
            s.service
                .cache_from
                .iter()
                .any(|c| crate::build::backend::engine_cache_image(c).is_none())
        }) {
            needs_buildx.push("a cache_from of another cache backend than an image");
        }
        if ws
            .plan
            .services
            .iter()
            .any(|s| !s.service.additional_contexts.is_empty())
        {
            needs_buildx.push("named build contexts (additional_contexts)");
        }
        Ok(BuildSettings {
            prefetch,
            command: if names.is_empty() {
                "build-all".into()
            } else {
                format!("build {}", names.join(" "))
            },
            selected,
            backend: args.backend,
            buildx_builder: args.buildx_builder.clone(),
            needs_buildx,
            force: args.force,
            no_cache: args.force || args.no_cache,
            shard: args.shard,
            options,
            publish,
            reuse,
            changed_since: changed_since(args.changed_since.as_deref(), &ws.actions),
        })
    }
}

/// `--changed-since` (`off`: none), else (absent or empty) on pull requests the base commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSinceRef {
    pub reference: String,
    /// Given as a flag or input (a git failure is then an error); else the pull request's
    /// base, which a shallow clone may not have (the filter is then left out, with a note).
    pub explicit: bool,
}

pub fn changed_since(flag: Option<&str>, actions: &ActionsEnv) -> Option<ChangedSinceRef> {
    match flag.map(str::trim).filter(|r| !r.is_empty()) {
        Some("off") => None,
        Some(r) => Some(ChangedSinceRef {
            reference: r.to_string(),
            explicit: true,
        }),
        None => actions
            .pull_request_base_sha
            .clone()
            .map(|reference| ChangedSinceRef {
                reference,
                explicit: false,
            }),
    }
}

/// [`crate::build::changed::ChangedSince::compute`] for `wanted`: an error when it was
/// asked for, else (the pull request default) `None` and why, to note.
pub fn changed_services(
    ws: &Workspace,
    wanted: Option<&ChangedSinceRef>,
) -> Result<(Option<crate::build::changed::ChangedSince>, Option<String>), Error> {
    let Some(wanted) = wanted else {
        return Ok((None, None));
    };
    match crate::build::changed::ChangedSince::compute(&ws.plan, &ws.root, &wanted.reference) {
        Ok(c) => Ok((Some(c), None)),
        Err(e) if wanted.explicit => Err(Error::Input {
            input: "--changed-since (input `changed-since`)".into(),
            reason: e.to_string(),
        }),
        Err(e) => Ok((
            None,
            Some(format!(
                "the pull request's base commit is not used to skip lookups: {e}"
            )),
        )),
    }
}

/// `--secret`, `--secret-value` (`secrets`), `--secret-env`, `--secret-file`, each read now
/// (a missing variable or file is an input error naming it); a later id replaces an earlier.
fn resolve_secrets(args: &BuildArgs, root: &Path) -> Result<Vec<Secret>, Error> {
    let mut secrets: Vec<Secret> = Vec::new();
    let groups = [
        ("--secret", args.image.secrets.clone()),
        (
            "--secret-value (INPUT_SECRETS)",
            flatten(&args.image.secret_values),
        ),
        (
            "--secret-env (INPUT_SECRET_ENVS)",
            flatten(&args.image.secret_envs),
        ),
        (
            "--secret-file (INPUT_SECRET_FILES)",
            flatten(&args.image.secret_files),
        ),
    ];
    for (flag, specs) in groups {
        for spec in specs {
            let secret = Secret::resolve(&spec, root).map_err(|e| Error::Input {
                input: format!("{flag} secret {:?}", spec.id),
                reason: e.to_string(),
            })?;
            secrets.retain(|s| s.id != secret.id);
            secrets.push(secret);
        }
    }
    Ok(secrets)
}

/// The selected services' own build secrets (config file `secrets:`, compose
/// `build.secrets`), each read now like the run's: a missing variable or file is an input
/// error naming the service.
fn resolve_service_secrets(
    plan: &crate::plan::Plan,
    selected: &BTreeSet<usize>,
    root: &Path,
) -> Result<std::collections::BTreeMap<String, Vec<Secret>>, Error> {
    use crate::build::secrets::{SecretSource, SecretSpec};
    use crate::project::ServiceSecret;
    let mut out = std::collections::BTreeMap::new();
    for &i in selected {
        let service = &plan.services[i];
        let mut secrets: Vec<Secret> = Vec::new();
        for entry in &service.service.secrets {
            let (spec, key) = match entry {
                ServiceSecret::Buildx(text) => (
                    SecretSpec::parse_buildx(text).map_err(|reason| Error::Input {
                        input: format!(
                            "{}: service {:?}, key `secrets` ({text:?})",
                            service.origin, service.name
                        ),
                        reason: format!("{reason}; write id=ID,env=VARIABLE or id=ID,src=PATH"),
                    })?,
                    "secrets",
                ),
                ServiceSecret::File { id, path } => (
                    SecretSpec {
                        id: id.clone(),
                        source: SecretSource::File(path.clone()),
                    },
                    "build.secrets",
                ),
                ServiceSecret::Env { id, variable } => (
                    SecretSpec {
                        id: id.clone(),
                        source: SecretSource::Env(variable.clone()),
                    },
                    "build.secrets",
                ),
            };
            let secret = Secret::resolve(&spec, root).map_err(|reason| Error::Input {
                input: format!(
                    "{}: service {:?}, key `{key}`, secret {:?}",
                    service.origin, service.name, spec.id
                ),
                reason: reason.to_string(),
            })?;
            secrets.retain(|s| s.id != secret.id);
            secrets.push(secret);
        }
        if !secrets.is_empty() {
            out.insert(service.name.clone(), secrets);
        }
    }
    Ok(out)
}

/// Which services to build: `names` (from `build SERVICE...`) or `--only`, minus `--skip`,
/// plus their dependencies unless `--no-deps`. Unknown names are an input error.
pub fn select_services(
    plan: &Plan,
    names: &[String],
    only: &[String],
    skip: &[String],
    no_deps: bool,
) -> Result<BTreeSet<usize>, Error> {
    let index = |name: &String, flag: &str| {
        plan.services
            .iter()
            .position(|s| &s.name == name || s.aliases.contains(name))
            .ok_or_else(|| Error::Usage {
                what: format!("{flag} {name:?}"),
                reason: format!(
                    "no such service; the services are: {}",
                    plan.services
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    };
    let wanted: Vec<&String> = names
        .iter()
        .chain(only.iter())
        .filter(|n| !n.trim().is_empty())
        .collect();
    let roots: Vec<usize> = if wanted.is_empty() {
        (0..plan.services.len()).collect()
    } else {
        wanted
            .into_iter()
            .map(|n| {
                index(
                    n,
                    if names.contains(n) {
                        "service"
                    } else {
                        "--only"
                    },
                )
            })
            .collect::<Result<_, _>>()?
    };
    let skipped: BTreeSet<usize> = skip
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| index(n, "--skip"))
        .collect::<Result<_, _>>()?;
    let mut selected = if no_deps {
        roots.iter().copied().collect()
    } else {
        plan.graph.closure(&roots)
    };
    selected.retain(|i| !skipped.contains(i));
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 item 9: by default a build is never cut for printing nothing, whatever the
    /// prefetch's idle timeout (it was cut at 10x that, at least 600 s, and retried).
    #[test]
    fn issue17_builds_have_no_idle_cut_by_default() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("svc")).unwrap();
        std::fs::write(dir.path().join("svc/Dockerfile"), "FROM alpine:3.20\n").unwrap();
        let project =
            Project::load_with(dir.path(), None, &crate::project::ComposeOptions::default())
                .unwrap();
        let naming = Naming::resolve(dir.path(), Some("p-"), Some(("t", "--tag")), None).unwrap();
        let ws = Workspace {
            root: dir.path().to_path_buf(),
            plan: plan(&project, &naming, &BTreeMap::new()).unwrap(),
            project,
            actions: ActionsEnv::default(),
        };
        let options = |args: &[&str]| {
            let mut argv = vec!["ai-infra-build", "build-all"];
            argv.extend(args);
            let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
            let crate::cli::Command::BuildAll(args) = cli.command else {
                panic!("not build-all")
            };
            BuildSettings::resolve(&args, &[], &ws).unwrap().options
        };
        let default = options(&["--idle-timeout", "1"]);
        assert_eq!(default.idle_timeout, None);
        assert_eq!(default.build_timeout, None);
        let set = options(&["--build-idle-timeout", "30", "--build-timeout", "1h30m"]);
        assert_eq!(set.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(set.build_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(options(&["--build-timeout", "0"]).build_timeout, None);
    }

    #[test]
    fn issue15_changed_since_defaults_to_the_pull_request_base_and_off_turns_it_off() {
        let pr = ActionsEnv {
            pull_request_base_sha: Some("0123abcd".into()),
            ..ActionsEnv::default()
        };
        let got = |flag: Option<&str>, env: &ActionsEnv| {
            changed_since(flag, env).map(|r| (r.reference, r.explicit))
        };
        assert_eq!(got(None, &pr), Some(("0123abcd".into(), false)));
        assert_eq!(
            got(Some(""), &pr),
            Some(("0123abcd".into(), false)),
            "the action's empty input"
        );
        assert_eq!(got(Some("main"), &pr), Some(("main".into(), true)));
        assert_eq!(got(Some("off"), &pr), None);
        assert_eq!(got(None, &ActionsEnv::default()), None);
    }

    /// Issue 14: a service built as another's identical build is selected by its own name.
    #[test]
    fn issue_14_an_alias_selects_the_build_it_shares() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "compose.yaml",
            "x-app: &app\n  build: app\nservices:\n  web:\n    <<: *app\n  worker:\n    <<: *app\n  tools:\n    build: tools\n",
        );
        write("app/Dockerfile", "FROM alpine:3.20\n");
        write("tools/Dockerfile", "FROM alpine:3.20\n");
        let project =
            Project::load_with(dir.path(), None, &crate::project::ComposeOptions::default())
                .unwrap();
        let naming = Naming::resolve(dir.path(), Some("p-"), Some(("t", "--tag")), None).unwrap();
        let plan = plan(&project, &naming, &BTreeMap::new()).unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tools", "web"]);
        assert_eq!(plan.services[1].aliases, ["worker"]);
        assert_eq!(plan.services[1].tags, ["p-worker:t"]);
        let selected = select_services(&plan, &["worker".into()], &[], &[], false).unwrap();
        assert_eq!(selected, [1].into_iter().collect());
        let none = select_services(&plan, &[], &[], &["worker".into()], false).unwrap();
        assert_eq!(
            none,
            [0].into_iter().collect(),
            "--skip of an alias skips the build"
        );
    }
}
