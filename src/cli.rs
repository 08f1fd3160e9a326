//! The command line: one definition shared by the CLI flags and the GitHub Action's inputs
//! (each flag that is also an action input reads `INPUT_…` from the environment). Values are
//! parsed into typed values here (mirrors, shards, build args, sizes); [`crate::settings`]
//! resolves them with the config file and the environment before any work starts. The
//! domain's enums get their command-line names here ([`ValueEnum`]), so no module below
//! knows about clap.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::build::PrefetchFailure;
use crate::build::backend::BuilderChoice;
use crate::build::reuse::ReuseMode;
use crate::build::secrets::{PairKind, SecretSpec};
use crate::prefetch::Mirrors;
use crate::prefetch::{PullPolicy, PullVia};
use crate::ui::{ColorChoice, OutputFormat};

/// Builds every Docker image of a multi-service repository reliably, even on networks
/// where registries fail: base images are prefetched with retries and mirror fall-back,
/// services are built in parallel along their dependency graph, and every service's
/// result is reported.
#[derive(Debug, Parser)]
#[command(name = "ai-infra-build", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 a service failed to build, 2 bad usage or input, \
3 Docker daemon unreachable or environment unusable, 4 base images missing, 130/143 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file listing the services (default: ai-infra-build.yml, else a compose file,
    /// else */Dockerfile discovery).
    #[arg(long, global = true, value_name = "FILE", env = "INPUT_CONFIG")]
    pub config: Option<PathBuf>,
    /// A compose file to read (repeat for several, later ones override earlier ones, as
    /// `docker compose -f`); default: compose.yaml or docker-compose.yml and its override file.
    #[arg(long = "compose-file", global = true, value_name = "FILE")]
    pub compose_files: Vec<PathBuf>,
    /// An env file for compose interpolation instead of .env (repeatable, as
    /// `docker compose --env-file`); the process environment still wins.
    #[arg(long = "env-file", global = true, value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// How results are printed: `human` (tables, progress) or `json` (machine-readable).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// More detail (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When to use colours. `auto` uses them on a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

/// `impl ValueEnum` for a fieldless enum defined elsewhere: its variants, each with its name
/// on the command line and optionally a line of help.
macro_rules! value_enum {
    ($ty:ty { $($variant:expr => $name:literal $(: $help:literal)?),* $(,)? }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),*]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                $(
                    if *self == $variant {
                        return Some(PossibleValue::new($name)$(.help($help))?);
                    }
                )*
                None
            }
        }
    };
}

value_enum!(OutputFormat { OutputFormat::Human => "human", OutputFormat::Json => "json" });
value_enum!(ColorChoice {
    ColorChoice::Auto => "auto",
    ColorChoice::Always => "always",
    ColorChoice::Never => "never",
});
value_enum!(BuilderChoice {
    BuilderChoice::Auto => "auto",
    BuilderChoice::Buildx => "buildx",
    BuilderChoice::Engine => "engine": "The Engine API with BuildKit (falls back to the classic builder where BuildKit over the API does not work)",
    BuilderChoice::EngineClassic => "engine-classic": "The Engine API with the classic builder",
});
value_enum!(PullPolicy {
    PullPolicy::Missing => "missing": "Only images that are not present locally",
    PullPolicy::Always => "always": "Every image, to get the registry's current version",
});
value_enum!(PullVia {
    PullVia::Auto => "auto": "The relay when the daemon is on this machine, else direct",
    PullVia::Relay => "relay": "Through our per-request retrying relay on 127.0.0.1",
    PullVia::Direct => "direct": "The daemon pulls from the registry itself; only whole pulls are retried",
});
value_enum!(PrefetchFailure { PrefetchFailure::Warn => "warn", PrefetchFailure::Fail => "fail" });
value_enum!(ReuseMode {
    ReuseMode::Auto => "auto": "The registry when the run pushes, the cache directory when there is one",
    ReuseMode::Registry => "registry": "The registry only (the image is pulled when the run does not push)",
    ReuseMode::Cache => "cache": "The cache directory only",
    ReuseMode::Off => "off": "Build every service",
});

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prefetch every base image, then build all services in dependency order, in parallel
    /// where the graph allows, and report each service's result.
    BuildAll(BuildArgs),
    /// Build only the named services (and nothing that depends on them).
    Build(BuildServicesArgs),
    /// Pull every base image the services' Dockerfiles name, concurrently, retrying transient
    /// registry errors and falling back to mirrors.
    Prefetch(PrefetchArgs),
    /// Show the resolved services, their images, dependency order and base images, without
    /// pulling or building anything.
    Plan(PlanCommandArgs),
    /// Check the environment: the Docker daemon (version, storage, image store, mirrors),
    /// buildx and its builders, and every registry and mirror the plan needs (DNS, TCP, TLS,
    /// API ping, token, manifest). Run this first when something does not work.
    Doctor(DoctorArgs),
    /// Re-render a saved JSON report as a step summary, annotations, step outputs, JSON or
    /// the terminal table.
    Report(ReportArgs),
}

impl Command {
    /// The subcommand's name as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::BuildAll(_) => "build-all",
            Command::Build(_) => "build",
            Command::Prefetch(_) => "prefetch",
            Command::Plan(_) => "plan",
            Command::Doctor(_) => "doctor",
            Command::Report(_) => "report",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub prefetch: PrefetchArgs,
    /// Build without the layer cache and pull base images again.
    #[arg(long, env = "INPUT_FORCE")]
    pub force: bool,
    /// Build without the layer cache (base images are still used when present).
    #[arg(long, env = "INPUT_NO_CACHE")]
    pub no_cache: bool,
    /// Where an unchanged service's image may come from instead of a build: `auto` (the
    /// registry when pushing, the cache directory when there is one), `registry`, `cache`,
    /// `off`. A service is unchanged when its build inputs digest is (docs/reuse.md).
    #[arg(long, value_enum, default_value_t = ReuseMode::Auto, env = "INPUT_REUSE", value_name = "FROM")]
    pub reuse: ReuseMode,
    /// Build every service, reusing nothing (as `--reuse off`; `--force` does it too).
    #[arg(long)]
    pub no_reuse: bool,
    /// Build a service the `git diff --name-status -M REF...HEAD` touches (its context,
    /// Dockerfile, `.dockerignore`, named contexts, or a service it is built from) without
    /// looking for an image to reuse; an unchanged one is reused when the registry or the cache
    /// has its image, else built. On pull requests the default is the base commit (`off`: none).
    #[arg(long, value_name = "REF", env = "INPUT_CHANGED_SINCE")]
    pub changed_since: Option<String>,
    /// How many services build at once. Default: every service whose dependencies are built
    /// (as bake does: builds wait on the network and I/O, BuildKit schedules their steps), up
    /// to one per 512 MiB of the engine's memory and at most 32.
    #[arg(long, value_name = "N", env = "INPUT_PARALLEL", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: Option<u16>,
    /// Start no new build after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Retries of a build that failed for a network reason (never for its own errors).
    #[arg(
        long,
        default_value_t = 2,
        value_name = "N",
        env = "INPUT_BUILD_RETRIES"
    )]
    pub build_retries: u32,
    /// The longest one build attempt of one service may take (`90s`, `45m`, `2h`, `1h30m`;
    /// a bare number is seconds); a build still running then is stopped and fails as
    /// `timed-out`, not retried. `0` or empty: no limit (the default; the job's own
    /// `timeout-minutes` still applies).
    #[arg(long, value_name = "DURATION", env = "INPUT_BUILD_TIMEOUT", value_parser = parse_duration)]
    pub build_timeout: Option<std::time::Duration>,
    /// Cut a build that prints nothing for this many seconds and retry it as `stalled`.
    /// `0` (the default): never, since a long, quiet compile or test prints nothing for
    /// minutes; bound builds with --build-timeout instead.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub build_idle_timeout: u64,
    /// `buildx` (docker buildx build), `engine` (the Docker Engine API, with BuildKit), or
    /// `auto`: the Engine API, unless buildx is needed (--buildx-builder, a service with
    /// several platforms, secrets, SSH, attestations, an engine with the containerd image
    /// store) and `docker buildx version` works.
    #[arg(long, value_enum, default_value_t = BuilderChoice::Auto, env = "INPUT_BACKEND")]
    pub backend: BuilderChoice,
    /// An existing buildx builder to use (remote, kubernetes, docker-container driver).
    #[arg(long, value_name = "NAME", env = "INPUT_BUILDX_BUILDER")]
    pub buildx_builder: Option<String>,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Provenance attestation, as buildx takes it: `false`, `true`, `mode=min`, `mode=max`
    /// (runs on buildx; the image store must keep attestations, so mostly with --push). Unset:
    /// `mode=min` when buildx pushes with a builder that can attest, as build-push-action.
    #[arg(long, value_name = "SPEC", env = "INPUT_PROVENANCE", value_parser = parse_attestation)]
    pub provenance: Option<String>,
    /// SBOM attestation, as buildx takes it: `false`, `true`, or generator options.
    #[arg(long, value_name = "SPEC", env = "INPUT_SBOM", value_parser = parse_attestation)]
    pub sbom: Option<String>,
    /// Build only these services (comma-separated or repeated) and what they need.
    #[arg(
        long,
        value_name = "SERVICE",
        value_delimiter = ',',
        env = "INPUT_ONLY"
    )]
    pub only: Vec<String>,
    /// Do not build these services (comma-separated or repeated).
    #[arg(
        long,
        value_name = "SERVICE",
        value_delimiter = ',',
        env = "INPUT_SKIP"
    )]
    pub skip: Vec<String>,
    /// Do not add the dependencies of the selected services.
    #[arg(long)]
    pub no_deps: bool,
    /// Build only shard I of N (as `plan --matrix --shards N` printed it; give the same
    /// --durations report to both).
    #[arg(long, value_name = "I/N", env = "INPUT_SHARD", value_parser = parse_shard)]
    pub shard: Option<ShardSpec>,
    /// Push every built image (and its extra tags) with `docker push`, retrying transient
    /// registry failures. Image names must include the registry (see --prefix).
    #[arg(long, env = "INPUT_PUSH")]
    pub push: bool,
    /// A GitHub token: one check run per service and one PR comment (needs `checks: write`,
    /// `pull-requests: write`). Masked in every output.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "INPUT_GITHUB_TOKEN",
        hide_env_values = true
    )]
    pub github_token: Option<String>,
    /// Create check runs (with --github-token).
    #[arg(long, env = "INPUT_CHECKS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub checks: bool,
    /// Create or update the PR comment (with --github-token).
    #[arg(long, env = "INPUT_PR_COMMENT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pr_comment: bool,
}

#[derive(Debug, Args)]
pub struct BuildServicesArgs {
    /// The services to build, by name.
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// What the services' Dockerfiles are read with.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// A build argument for every service, also used to expand `ARG`s in FROM lines
    /// (repeatable; newline-separated in the environment).
    #[arg(
        long = "build-arg",
        value_name = "KEY=VALUE",
        env = "INPUT_BUILD_ARGS",
        value_parser = parse_build_arg_lines
    )]
    pub build_args: Vec<Lines<BuildArg>>,
    /// The tag of every service image (default: VERSION file, `git describe`, short commit).
    #[arg(long, value_name = "TAG", env = "INPUT_TAG")]
    pub tag: Option<String>,
    /// Prefix of every service image name (default: the repository name and `-`).
    #[arg(long, value_name = "PREFIX", env = "INPUT_PREFIX")]
    pub prefix: Option<String>,
    /// A previous run's JSON report: its durations balance the shards.
    #[arg(long, value_name = "REPORT.json")]
    pub durations: Option<std::path::PathBuf>,
}

/// `plan`: the plan itself, or a matrix for GitHub Actions.
#[derive(Debug, Clone, Args)]
pub struct PlanCommandArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print a JSON matrix (`{"include":[{"shard":"1/3","services":"a,b"},...]}`) for
    /// `strategy.matrix`, keeping every dependency chain inside one shard.
    #[arg(long)]
    pub matrix: bool,
    /// How many shards (with --matrix).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "max_per_shard",
        requires = "matrix",
        value_parser = parse_count
    )]
    pub shards: Option<usize>,
    /// At most this many services per shard (with --matrix).
    #[arg(long, value_name = "K", requires = "matrix", value_parser = parse_count)]
    pub max_per_shard: Option<usize>,
    /// Put this before the cache key (to keep several caches of one repository apart).
    /// In GitHub Actions (`GITHUB_OUTPUT` set), `plan` writes the step outputs `cache-key` and
    /// `cache-restore-keys` (one per line) for actions/cache.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "INPUT_CACHE_KEY_PREFIX",
        default_value = ""
    )]
    pub cache_key_prefix: String,
    #[command(flatten)]
    pub registry: RegistryCheckArgs,
}

/// `plan --check-registry` (issue 15): what the build inputs digest depends on besides the
/// plan, read from the same inputs as `build-all` reads them.
#[derive(Debug, Clone, Args)]
pub struct RegistryCheckArgs {
    /// Ask the registry, per service, whether it has an image made from the same build
    /// inputs: the plan says build or reuse and why, and `--matrix` makes jobs only for the
    /// services to build (for `--only ${{ matrix.services }}`).
    #[arg(long)]
    pub check_registry: bool,
    /// Build a service the `git diff --name-status -M REF...HEAD` touches (its context,
    /// Dockerfile, `.dockerignore`, named contexts, or a service it is built from) without
    /// looking for an image to reuse; an unchanged one is reused when the registry or the cache
    /// has its image, else built. On pull requests the default is the base commit (`off`: none).
    #[arg(long, value_name = "REF", env = "INPUT_CHANGED_SINCE")]
    pub changed_since: Option<String>,
    /// With --check-registry: give every reused service this run's tags in the registry
    /// (a manifest PUT, no layer moves), as `build-all --push` would.
    #[arg(long, env = "INPUT_PUSH")]
    pub push: bool,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Labels, platforms, secrets and SSH, as for build-all: only what the build inputs
    /// digest counts is used (the secrets' and SSH sockets' ids; nothing is read).
    #[command(flatten)]
    pub image: ImageArgs,
}

/// Where base images may come from besides their registry (`build-all`, `prefetch`,
/// `plan --check-registry`).
#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// Fall-back sources for a registry, tried after it (repeatable; newline-separated in the
    /// environment): `docker.io=mirror.example.com,harbor.example.com/dockerhub`.
    #[arg(
        long = "mirror",
        value_name = "REGISTRY=HOST[,HOST...]",
        env = "INPUT_MIRRORS",
        value_parser = parse_mirrors
    )]
    pub mirrors: Vec<MirrorList>,
    /// Try the mirrors before the registry itself.
    #[arg(long, env = "INPUT_MIRROR_FIRST")]
    pub mirror_first: bool,
}

/// What every image is built with besides its Dockerfile and build arguments: labels,
/// platforms, secrets and SSH (`build-all`; `plan --check-registry` counts them in the build
/// inputs digest).
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// A label for every service image (repeatable; newline-separated in the environment).
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        env = "INPUT_LABELS",
        value_parser = parse_build_arg_lines
    )]
    pub labels: Vec<Lines<BuildArg>>,
    /// The target platforms of every service, replacing those of the config file
    /// (`linux/amd64,linux/arm64`; comma-separated or repeated). Several need buildx.
    #[arg(
        long = "platform",
        value_name = "PLATFORM",
        env = "INPUT_PLATFORMS",
        value_delimiter = ','
    )]
    pub platforms: Vec<String>,
    /// A build secret for `RUN --mount=type=secret` (buildx syntax, repeatable):
    /// `id=ID[,env=VAR|,src=PATH]`; `id=ID` alone reads the environment variable ID.
    /// Builds with secrets run on buildx.
    #[arg(long = "secret", value_name = "id=ID[,env=VAR|,src=PATH]", value_parser = parse_secret_spec)]
    pub secrets: Vec<SecretSpec>,
    /// Build secrets given by value, `ID=VALUE` one per line (the action's `secrets` input;
    /// read from INPUT_SECRETS, masked in every output). On a command line prefer --secret
    /// id=ID,env=VAR: other processes can see command lines.
    #[arg(
        long = "secret-value",
        value_name = "ID=VALUE",
        env = "INPUT_SECRETS",
        hide_env_values = true,
        value_parser = parse_secret_value_lines
    )]
    pub secret_values: Vec<Lines<SecretSpec>>,
    /// A build secret from an environment variable, `ID=VAR` (repeatable; one per line in
    /// the environment), like `--secret id=ID,env=VAR`.
    #[arg(
        long = "secret-env",
        value_name = "ID=VAR",
        env = "INPUT_SECRET_ENVS",
        value_parser = parse_secret_env_lines
    )]
    pub secret_envs: Vec<Lines<SecretSpec>>,
    /// A build secret from a file, `ID=PATH` (repeatable; one per line in the environment),
    /// like `--secret id=ID,src=PATH`.
    #[arg(
        long = "secret-file",
        value_name = "ID=PATH",
        env = "INPUT_SECRET_FILES",
        value_parser = parse_secret_file_lines
    )]
    pub secret_files: Vec<Lines<SecretSpec>>,
    /// SSH agent sockets or keys for `RUN --mount=type=ssh` (buildx syntax, repeatable; one
    /// per line in the environment): `default` (SSH_AUTH_SOCK) or `ID=PATH[,PATH]`. Builds
    /// with SSH run on buildx.
    #[arg(
        long = "ssh",
        value_name = "default|ID=PATH",
        env = "INPUT_SSH",
        value_parser = parse_ssh_lines
    )]
    pub ssh: Vec<Lines<String>>,
}

impl ImageArgs {
    /// The labels given, by key (a later one replaces an earlier).
    pub fn labels(&self) -> Vec<BuildArg> {
        flatten(&self.labels)
    }

    /// The platforms given, trimmed, blanks dropped.
    pub fn platforms(&self) -> Vec<String> {
        self.platforms
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The ids of every secret given.
    pub fn secret_ids(&self) -> Vec<String> {
        self.secrets
            .iter()
            .cloned()
            .chain(flatten(&self.secret_values))
            .chain(flatten(&self.secret_envs))
            .chain(flatten(&self.secret_files))
            .map(|s| s.id)
            .collect()
    }
}

/// How base images are pulled.
#[derive(Debug, Clone, Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Retries of a failed request or pull after the first try (transient errors only).
    #[arg(long, default_value_t = 5, value_name = "N", env = "INPUT_MAX_RETRIES")]
    pub max_retries: u32,
    /// How many images are pulled at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pull_concurrency: u16,
    /// A pull or registry request with no progress for this long is cut and retried.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// No retry starts later than this after an image's first try.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub retry_deadline: u64,
    /// `missing`: pull only images not present locally; `always`: pull every image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, env = "INPUT_PULL")]
    pub pull: PullPolicy,
    /// What a base image that cannot be had does to the run: `warn` and go on (a build may
    /// still succeed from a local copy), or `fail` at once.
    #[arg(long, value_enum, default_value_t = PrefetchFailure::Warn, env = "INPUT_PREFETCH_FAILURE")]
    pub prefetch_failure: PrefetchFailure,
    /// The cache directory (restored before, saved after the run): base images, the layer
    /// cache and per-source health, which orders the sources of the next run.
    #[arg(long, value_name = "DIR", env = "INPUT_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Size budget of the cache directory (`2GiB`, `500m`, bytes): least recently used
    /// entries are evicted first.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "2GiB",
        env = "INPUT_CACHE_MAX_SIZE",
        value_parser = parse_size
    )]
    pub cache_max_size: u64,
    /// `relay`: through our per-request retrying relay on 127.0.0.1 (needs a local daemon);
    /// `direct`: the daemon pulls itself; `auto`: relay for a local daemon.
    #[arg(long, value_enum, default_value_t = PullVia::Auto)]
    pub pull_via: PullVia,
    /// Where the report (and, for builds, the logs) go.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".ai-infra-build",
        env = "INPUT_OUT_DIR"
    )]
    pub out_dir: std::path::PathBuf,
}

/// Which saved report to show, and as what.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The JSON report a run wrote (`ai-infra-build-report.json` in its output directory).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "merge",
        conflicts_with = "merge"
    )]
    pub from: Option<PathBuf>,
    /// Merge the reports of matrix shards into one and publish it like one `build-all` would
    /// (summary, outputs, annotations, check runs, PR comment). Missing shards are listed.
    #[arg(long, value_name = "REPORT.json", num_args = 1.., env = "INPUT_MERGE_REPORTS", value_delimiter = '\n')]
    pub merge: Vec<PathBuf>,
    /// How many shards there were (default: as the reports say); a shard without a report
    /// is named in the summary and makes the exit code 1.
    #[arg(long, value_name = "N", requires = "merge", value_parser = parse_count)]
    pub shards: Option<usize>,
    /// Where the merged report goes.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".ai-infra-build",
        requires = "merge"
    )]
    pub out_dir: PathBuf,
    /// A GitHub token for the merged check runs and PR comment.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "INPUT_GITHUB_TOKEN",
        hide_env_values = true
    )]
    pub github_token: Option<String>,
    /// The view to print: one of those a run publishes (`markdown` is the step summary,
    /// `annotations` the workflow commands with the log groups, `outputs` the step outputs,
    /// `comment` the PR comment, `terminal` the final table).
    #[arg(long, default_value = "terminal", value_name = "VIEW", value_parser = report_views())]
    pub format: String,
}

/// `doctor`: the daemon, buildx, and every registry and mirror the base images come from.
#[derive(Debug, Args)]
#[command(after_help = "\
Registries: for each registry the project's base images come from (when a project is found \
here) and each configured mirror, doctor probes DNS, TCP, TLS (plain HTTP for loopback \
registries), GET /v2/ with its 401 challenge, the token endpoint, and a manifest HEAD of one \
referenced image; each step once, bounded by --probe-timeout, never retried.

Exit codes: 0 the daemon answers and every registry the plan needs (or every --registry) has \
at least one healthy source; 4 some needed registry has no healthy source (its base images \
could not be had); 3 the Docker daemon cannot be reached; 2 bad usage or input.")]
pub struct DoctorArgs {
    /// How long to wait for the Docker daemon to answer, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
    /// Probe only this registry (repeatable): a host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`)
    /// or an image (`ghcr.io/org/base:1`), whose manifest is then the one probed.
    #[arg(long = "registry", value_name = "HOST|IMAGE")]
    pub registries: Vec<String>,
    /// Mirrors to probe with their registry, as for prefetch (repeatable; newline-separated in
    /// the environment): `docker.io=mirror.example.com,harbor.example.com/dockerhub`.
    #[arg(
        long = "mirror",
        value_name = "REGISTRY=HOST[,HOST...]",
        env = "INPUT_MIRRORS",
        value_parser = parse_mirrors
    )]
    pub mirrors: Vec<MirrorList>,
    /// The most one probe step (lookup, connect, handshake, request) may take, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=120))]
    pub probe_timeout: u64,
    /// A build argument for expanding `ARG`s in FROM lines, as for prefetch (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_build_arg)]
    pub build_args: Vec<BuildArg>,
}

/// `--build-arg KEY=VALUE`.
fn parse_build_arg(text: &str) -> Result<BuildArg, ValueError> {
    BuildArg::parse(text)
}

/// One value, or several lines of them (from the environment); blank lines are skipped.
fn lines<T>(
    text: &str,
    one: impl Fn(&str) -> Result<T, ValueError>,
) -> Result<Lines<T>, ValueError> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(one)
        .collect::<Result<_, _>>()
        .map(Lines)
}

fn parse_build_arg_lines(text: &str) -> Result<Lines<BuildArg>, ValueError> {
    lines(text, parse_build_arg)
}

fn parse_secret_value_lines(text: &str) -> Result<Lines<SecretSpec>, ValueError> {
    lines(text, parse_secret_value)
}

fn parse_secret_env_lines(text: &str) -> Result<Lines<SecretSpec>, ValueError> {
    lines(text, parse_secret_env)
}

fn parse_secret_file_lines(text: &str) -> Result<Lines<SecretSpec>, ValueError> {
    lines(text, parse_secret_file)
}

fn parse_ssh_lines(text: &str) -> Result<Lines<String>, ValueError> {
    lines(text, parse_ssh_spec)
}

/// `--secret id=ID[,env=VAR|,src=PATH]`.
fn parse_secret_spec(text: &str) -> Result<SecretSpec, ValueError> {
    SecretSpec::parse_buildx(text).map_err(|e| ValueError(e.to_string()))
}

/// `--secret-value ID=VALUE` (the `secrets` input).
fn parse_secret_value(text: &str) -> Result<SecretSpec, ValueError> {
    SecretSpec::parse_pair(text, PairKind::Value).map_err(|e| ValueError(e.to_string()))
}

/// `--secret-env ID=VAR` (the `secret-envs` input).
fn parse_secret_env(text: &str) -> Result<SecretSpec, ValueError> {
    SecretSpec::parse_pair(text, PairKind::Env).map_err(|e| ValueError(e.to_string()))
}

/// `--secret-file ID=PATH` (the `secret-files` input).
fn parse_secret_file(text: &str) -> Result<SecretSpec, ValueError> {
    SecretSpec::parse_pair(text, PairKind::File).map_err(|e| ValueError(e.to_string()))
}

/// `--ssh default|ID=PATH[,PATH]`.
fn parse_ssh_spec(text: &str) -> Result<String, ValueError> {
    crate::build::secrets::check_ssh(text).map_err(|e| ValueError(e.to_string()))
}

/// `--provenance`/`--sbom`.
fn parse_attestation(text: &str) -> Result<String, ValueError> {
    crate::build::secrets::check_attestation(text).map_err(|e| ValueError(e.to_string()))
}

/// `--mirror REGISTRY=HOST[,HOST...]`, or several such lines (the `mirrors` input).
fn parse_mirrors(text: &str) -> Result<MirrorList, ValueError> {
    MirrorList::parse(text)
}

/// `--shard I/N`.
fn parse_shard(text: &str) -> Result<ShardSpec, ValueError> {
    ShardSpec::parse(text)
}

/// A count of 1 or more (shards, services per shard): 0 would mean nothing to build.
fn parse_count(text: &str) -> Result<usize, ValueError> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(ValueError("must be 1 or more".into())),
        Ok(n) => Ok(n),
        Err(_) => Err(ValueError(format!("{text:?} is not a whole number"))),
    }
}

/// A duration: `90`, `90s`, `45m`, `2h`, `1h30m` (a bare number is seconds; empty is 0).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, ValueError> {
    let text = text.trim();
    let bad = || {
        ValueError(format!(
            "{text:?} is not a duration: write seconds (`90`), or a number with s, m or h (`90s`, `45m`, `1h30m`)"
        ))
    };
    if text.is_empty() {
        // An empty input means "not given": no limit.
        return Ok(std::time::Duration::ZERO);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// `2GiB`, `500m`, bytes.
fn parse_size(text: &str) -> Result<u64, ValueError> {
    crate::cache::parse_size(text).map_err(|e| ValueError(e.to_string()))
}

/// The names of the report's views, with what each is.
fn report_views() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::report::views::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name())),
    )
}

/// A flag's value that may hold several items, one per line (as action inputs do): blank
/// lines are skipped, each other line is checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines<T>(pub Vec<T>);

/// The items of every value of a repeatable [`Lines`] flag, in order.
pub fn flatten<T: Clone>(values: &[Lines<T>]) -> Vec<T> {
    values.iter().flat_map(|l| l.0.iter().cloned()).collect()
}

/// A value a flag cannot take; clap shows it as `invalid value 'X' for '--flag': REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// `--build-arg KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArg {
    pub key: String,
    pub value: String,
}

impl BuildArg {
    pub fn parse(text: &str) -> Result<BuildArg, ValueError> {
        text.split_once('=')
            .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
            .map(|(k, v)| BuildArg {
                key: k.to_string(),
                value: v.to_string(),
            })
            .ok_or_else(|| ValueError("expected KEY=VALUE".into()))
    }
}

/// One `--mirror` value: one or more `REGISTRY=HOST[,HOST...]` lines (the `mirrors` input is
/// newline-separated; blank lines are skipped). Each line is checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorList(pub Vec<String>);

impl MirrorList {
    pub fn parse(text: &str) -> Result<MirrorList, ValueError> {
        let mut lines = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            Mirrors::default()
                .add(line)
                .map_err(|e| ValueError(e.to_string()))?;
            lines.push(line.to_string());
        }
        Ok(MirrorList(lines))
    }
}

/// `--shard I/N`: shard I (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub total: usize,
}

impl ShardSpec {
    pub fn parse(text: &str) -> Result<ShardSpec, ValueError> {
        crate::matrix::parse_shard(text)
            .map(|(index, total)| ShardSpec { index, total })
            .map_err(|e| ValueError(e.to_string()))
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["ai-infra-build", "doctor", "--output", "json", "-vv"])
            .expect("parses");
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.verbose, 2);
        assert!(matches!(cli.command, Command::Doctor(_)));
    }

    #[test]
    fn build_needs_at_least_one_service() {
        let err = Cli::try_parse_from(["ai-infra-build", "build"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn quiet_and_verbose_conflict() {
        let err = Cli::try_parse_from(["ai-infra-build", "-q", "-v", "doctor"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn color_accepts_only_known_values() {
        assert!(Cli::try_parse_from(["ai-infra-build", "--color", "never", "plan"]).is_ok());
        let err =
            Cli::try_parse_from(["ai-infra-build", "--color", "sometimes", "plan"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn build_args_need_a_key_without_spaces() {
        assert_eq!(
            BuildArg::parse("A=b=c"),
            Ok(BuildArg {
                key: "A".into(),
                value: "b=c".into()
            })
        );
        assert!(BuildArg::parse("A").is_err());
        assert!(BuildArg::parse("=x").is_err());
        assert!(BuildArg::parse("A B=x").is_err());
    }

    #[test]
    fn mirror_lists_skip_blank_lines_and_check_each_line() {
        let list = MirrorList::parse("docker.io=m1.example.com\n\n  \nghcr.io=m2.example.com\n")
            .expect("parses");
        assert_eq!(list.0.len(), 2);
        assert!(MirrorList::parse("docker.io=ok.example.com\nnot-a-mirror").is_err());
        assert_eq!(MirrorList::parse(""), Ok(MirrorList::default()));
    }

    #[test]
    fn list_inputs_take_one_item_per_line_and_skip_blank_lines() {
        let cli = Cli::try_parse_from([
            "ai-infra-build",
            "build-all",
            "--build-arg",
            "A=1\r\n\nB=2 3\n",
            "--label",
            "x=y",
            "--secret-env",
            "tok=VAR\n",
            "--ssh",
            "default\nkey=/k1,/k2",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .expect("parses");
        let Command::BuildAll(args) = cli.command else {
            panic!("build-all")
        };
        let build_args = flatten(&args.prefetch.plan.build_args);
        assert_eq!(build_args.len(), 2);
        assert_eq!(build_args[1].value, "2 3");
        assert_eq!(flatten(&args.image.secret_envs)[0].id, "tok");
        assert_eq!(flatten(&args.image.ssh), ["default", "key=/k1,/k2"]);
        assert_eq!(args.image.platforms, ["linux/amd64", "linux/arm64"]);
        assert!(
            Cli::try_parse_from(["ai-infra-build", "build-all", "--label", "ok=1\nbad"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["ai-infra-build", "build-all", "--provenance", "maybe"]).is_err()
        );
    }

    #[test]
    fn issue17_build_timeouts_are_durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90").unwrap(), 90);
        assert_eq!(secs("90s").unwrap(), 90);
        assert_eq!(secs("45m").unwrap(), 2700);
        assert_eq!(secs("1h30m").unwrap(), 5400);
        assert_eq!(secs(" 2h ").unwrap(), 7200);
        assert_eq!(secs("0").unwrap(), 0);
        assert_eq!(secs("").unwrap(), 0);
        for bad in ["m", "5x", "1.5h", "10m5", "-3", "99999999999999999999h"] {
            let err = secs(bad).unwrap_err().0;
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
        let cli = Cli::try_parse_from(["ai-infra-build", "build-all"]).unwrap();
        let Command::BuildAll(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.build_timeout, None);
        assert_eq!(
            args.build_idle_timeout, 0,
            "no idle cut of builds by default"
        );
        let cli =
            Cli::try_parse_from(["ai-infra-build", "build-all", "--build-timeout", "45m"]).unwrap();
        let Command::BuildAll(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.build_timeout,
            Some(std::time::Duration::from_secs(2700))
        );
    }

    #[test]
    fn issue17_shard_counts_are_one_or_more() {
        assert_eq!(parse_count("3"), Ok(3));
        assert!(parse_count("0").is_err());
        assert!(parse_count("-1").is_err());
        assert!(parse_count("x").is_err());
        for args in [
            &["ai-infra-build", "plan", "--matrix", "--shards", "0"][..],
            &["ai-infra-build", "plan", "--matrix", "--max-per-shard", "0"],
            &[
                "ai-infra-build",
                "report",
                "--merge",
                "a.json",
                "--shards",
                "0",
            ],
        ] {
            let err = Cli::try_parse_from(args).expect_err("0 is refused");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn shards_are_one_based() {
        assert_eq!(
            ShardSpec::parse("2/3"),
            Ok(ShardSpec { index: 2, total: 3 })
        );
        assert_eq!(ShardSpec::parse("2/3").unwrap().to_string(), "2/3");
        assert!(ShardSpec::parse("0/3").is_err());
        assert!(ShardSpec::parse("4/3").is_err());
    }

    #[test]
    fn a_bad_shard_is_a_usage_error_naming_the_form() {
        let err = Cli::try_parse_from(["ai-infra-build", "build-all", "--shard", "3"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains(r#"--shard "3" is not I/N (e.g. 2/3)"#),
            "{err}"
        );
    }
}
