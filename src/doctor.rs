//! `doctor`: checks the environment a build needs and says what to fix: the Docker daemon
//! (and its own view of registries: mirrors, insecure registries, proxies), buildx, the proxy
//! settings of this process, and every registry and mirror the project's base images come
//! from, step by step ([`crate::probe`]).
//!
//! Exit status: [`Exit::ImagesMissing`] when a registry the plan needs (or one named with
//! `--registry`) has no healthy source, else success.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{DoctorArgs, GlobalArgs, OutputFormat};
use crate::engine::{self, Buildx, Engine, EngineFacts};
use crate::error::{Error, Exit};
use crate::prefetch::{ImageNeed, Mirrors};
use crate::probe::{self, ProbeOptions, ProxyEnv, RegistryHealth, StepStatus};
use crate::project::Project;
use crate::report::text;
use crate::ui::Ui;

/// Everything doctor found, in the shape `--output json` prints.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub engine: EngineFacts,
    pub buildx: Buildx,
    /// The buildx builders and whether each can export a layer cache.
    pub builders: Vec<engine::BuildxBuilder>,
    /// HTTP(S)_PROXY and NO_PROXY of this process (the prefetch's requests follow them).
    pub proxy_env: ProxyEnv,
    /// The project found in the working directory, or why there is none.
    pub project: ProjectFound,
    /// Every registry probed, with each of its sources.
    pub registries: Vec<RegistryHealth>,
    /// Every registry the plan needs (or named with `--registry`) has a healthy source.
    pub registries_ok: bool,
    /// The most one probe step may take, in milliseconds.
    pub probe_timeout_ms: u64,
}

/// The project doctor looked at.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectFound {
    pub found: bool,
    /// `5 services (directory discovery), 4 base images on 2 registries`, or why not.
    pub note: String,
}

pub async fn run(global: &GlobalArgs, args: &DoctorArgs, ui: &Ui) -> Result<Exit, Error> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (project, needs, mirrors) = load_needs(global, args)?;
    let engine = Engine::connect(timeout).await?;
    let options = ProbeOptions {
        step_timeout: Duration::from_secs(args.probe_timeout.max(1)),
    };
    let proxy_env = ProxyEnv::from_env();
    let targets = probe::targets(&needs, &mirrors, &args.registries);
    let daemon = async {
        let facts = engine.facts().await?;
        let buildx = engine::buildx(timeout).await;
        let builders = match &buildx {
            Buildx::Available { .. } => {
                engine::buildx_builders(timeout, facts.containerd_image_store)
                    .await
                    .unwrap_or_default()
            }
            Buildx::Unavailable { .. } => Vec::new(),
        };
        Ok::<_, Error>((facts, buildx, builders))
    };
    let probes = probe::probe_registries(targets, &options, &proxy_env);
    let (daemon, registries) = tokio::join!(daemon, probes);
    let (facts, buildx, builders) = daemon?;
    let registries = registries.map_err(|e| Error::Environment {
        what: "registry probes".into(),
        reason: format!("{e:#}"),
    })?;
    let registries_ok = registries.iter().filter(|r| r.required).all(|r| r.healthy);
    let report = DoctorReport {
        engine: facts,
        buildx,
        builders,
        proxy_env,
        project,
        registries,
        registries_ok,
        probe_timeout_ms: options.step_timeout.as_millis() as u64,
    };
    match ui.format {
        OutputFormat::Json => ui.json(&report),
        OutputFormat::Human => ui.result(&render(&report, ui)),
    }
    Ok(if report.registries_ok {
        Exit::Success
    } else {
        Exit::ImagesMissing
    })
}

/// The base images of the project in the working directory (none when there is no project:
/// doctor works anywhere), and the mirrors of its config file plus `--mirror`.
fn load_needs(
    global: &GlobalArgs,
    args: &DoctorArgs,
) -> Result<(ProjectFound, Vec<ImageNeed>, Mirrors), Error> {
    // Without a project: the `--mirror` values only.
    let flag_mirrors = || -> Result<Mirrors, Error> {
        let mut mirrors = Mirrors::default();
        crate::commands::add_mirror_flags(&mut mirrors, &args.mirrors)?;
        Ok(mirrors)
    };
    let not_found = |note: String| ProjectFound { found: false, note };
    let root = match std::env::current_dir() {
        Ok(root) => root,
        Err(e) => {
            return Ok((
                not_found(format!("no working directory ({e})")),
                Vec::new(),
                flag_mirrors()?,
            ));
        }
    };
    let project = match Project::load(&root, global.config.as_deref()) {
        Ok(project) => project,
        // A config named on the command line must be usable; without one, doctor works
        // anywhere.
        Err(err) if global.config.is_some() => return Err(err),
        Err(err) => {
            return Ok((
                not_found(format!("no project here ({err})")),
                Vec::new(),
                flag_mirrors()?,
            ));
        }
    };
    let mirrors = crate::commands::project_mirrors(&project, &args.mirrors)?;
    let build_args: BTreeMap<String, String> = args
        .build_args
        .iter()
        .map(|arg| {
            arg.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage {
                    what: format!("--build-arg {arg:?}"),
                    reason: "expected KEY=VALUE".into(),
                })
        })
        .collect::<Result<_, _>>()?;
    let tag = project
        .settings
        .tag
        .as_deref()
        .map(|t| (t, project.source.as_str()));
    let planned = crate::plan::Naming::resolve(&root, project.settings.prefix.as_deref(), tag)
        .and_then(|naming| crate::plan::plan(&project, &naming, &build_args));
    match planned {
        Ok(plan) => {
            let registries: std::collections::BTreeSet<&str> = plan
                .base_images
                .iter()
                .map(|n| n.reference.domain.as_str())
                .collect();
            let note = format!(
                "{} ({}), {} on {}",
                plural(project.services.len(), "service", "services"),
                project.source,
                plural(plan.base_images.len(), "base image", "base images"),
                plural(registries.len(), "registry", "registries"),
            );
            Ok((
                ProjectFound { found: true, note },
                plan.base_images,
                mirrors,
            ))
        }
        Err(err) => Ok((
            not_found(format!(
                "{} ({}), but its plan failed: {err}",
                plural(project.services.len(), "service", "services"),
                project.source
            )),
            Vec::new(),
            mirrors,
        )),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The human view: one fact per line, label column aligned; then the registries.
pub fn render(report: &DoctorReport, ui: &Ui) -> String {
    let e = &report.engine;
    let list = |items: &[String]| {
        if items.is_empty() {
            ui.dim("none")
        } else {
            items.join(", ")
        }
    };
    let opt = |item: &Option<String>| item.clone().unwrap_or_else(|| ui.dim("none"));
    let min_api = e
        .min_api_version
        .as_deref()
        .map(|v| format!(", minimum {v}"))
        .unwrap_or_default();
    let store = if e.containerd_image_store {
        "containerd (snapshotter): buildx local cache export works".to_string()
    } else {
        "classic (graph driver): no buildx local cache export; inline cache is used".to_string()
    };
    let buildx = match &report.buildx {
        Buildx::Available { version, .. } => ui.good(&format!("available, version {version}")),
        Buildx::Unavailable { reason } => {
            format!(
                "{}; the engine API builder will be used",
                ui.bad(&format!("not available ({reason})"))
            )
        }
    };
    let p = &report.proxy_env;
    let rows = [
        (
            "Docker daemon",
            format!("{} {}", ui.good("reachable at"), e.host),
        ),
        (
            "Engine",
            format!("{} (API {}{min_api})", e.engine_version, e.api_version),
        ),
        (
            "System",
            format!("{}, {}, kernel {}", e.os, e.arch, e.kernel),
        ),
        ("Storage driver", e.storage_driver.clone()),
        ("Image store", store),
        ("Registry mirrors", list(&e.registry_mirrors)),
        ("Insecure registries", list(&e.insecure_registries)),
        ("HTTP proxy", opt(&e.http_proxy)),
        ("HTTPS proxy", opt(&e.https_proxy)),
        ("No proxy", opt(&e.no_proxy)),
        ("buildx", buildx),
    ];
    let more = [
        (
            "Our proxy env",
            format!(
                "HTTP_PROXY {}, HTTPS_PROXY {}, NO_PROXY {}",
                opt(&p.http_proxy),
                opt(&p.https_proxy),
                opt(&p.no_proxy)
            ),
        ),
        ("Project", text::clean_line(&report.project.note, 300)),
    ];
    let width = rows
        .iter()
        .chain(&more)
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}"))
        .collect();
    for b in &report.builders {
        lines.push(format!(
            "{:<width$}  {} (driver {}, {}{}), cache export: {}",
            "  builder",
            b.name,
            b.driver,
            b.status,
            if b.endpoint.is_empty() || b.endpoint == b.name {
                String::new()
            } else {
                format!(", {}", b.endpoint)
            },
            if b.cache_export { "yes" } else { "no" }
        ));
    }
    lines.extend(
        more.iter()
            .map(|(label, value)| format!("{label:<width$}  {value}")),
    );
    if !report.registries.is_empty() {
        lines.push(String::new());
        lines.push(registries_table(report, ui));
    }
    lines.join("\n")
}

/// One row per source: each step's time (or what became of it) and the verdict; under each
/// registry, whether a build can get its images; under a failed source, what its failing
/// step said.
fn registries_table(report: &DoctorReport, ui: &Ui) -> String {
    let header: Vec<String> = ["SOURCE", "ROLE"]
        .iter()
        .map(|h| h.to_string())
        .chain(
            probe::Step::ALL
                .iter()
                .map(|s| s.label().to_ascii_uppercase()),
        )
        .chain(["RESULT".to_string()])
        .collect();
    let mut rows: Vec<(usize, Vec<String>, bool)> = Vec::new();
    for (i, r) in report.registries.iter().enumerate() {
        for s in &r.sources {
            let mut row = vec![
                text::clean_line(&s.source, 60),
                match s.role {
                    crate::report::diagnosis::SourceRole::Origin => "registry".to_string(),
                    crate::report::diagnosis::SourceRole::Mirror => "mirror".to_string(),
                },
            ];
            for step in &s.steps {
                row.push(match step.status {
                    StepStatus::Ok => text::duration(step.duration_ms),
                    StepStatus::Failed => "FAIL".to_string(),
                    StepStatus::Skipped if step.detail == probe::PLAIN_HTTP => "plain".to_string(),
                    StepStatus::Skipped => "-".to_string(),
                });
            }
            row.push(match s.failure() {
                None => "healthy".to_string(),
                Some(f) => format!(
                    "{} failed: {}",
                    f.step,
                    f.class.map_or("other".to_string(), |c| c.to_string())
                ),
            });
            rows.push((i, row, s.healthy));
        }
    }
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for (_, row, _) in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![format!(
        "Registries (each step at most {}, tried once):",
        text::duration(report.probe_timeout_ms)
    )];
    out.push(format!("    {}", ui.dim(&line(&header))));
    for (i, r) in report.registries.iter().enumerate() {
        let need = if r.needed_by.is_empty() {
            if r.required {
                "named with --registry".to_string()
            } else {
                "mirrors configured, not needed by the plan".to_string()
            }
        } else {
            format!(
                "needed by {}",
                plural(r.needed_by.len(), "base image", "base images")
            )
        };
        let verdict = match (r.healthy, r.required) {
            (true, _) => ui.good("✔"),
            (false, true) => ui.bad("✘"),
            (false, false) => ui.dim("!"),
        };
        let tail = if r.healthy || !r.required {
            String::new()
        } else {
            format!(": {}", ui.bad("no healthy source"))
        };
        out.push(format!(
            "  {verdict} {} ({need}){tail}",
            text::clean_line(&r.registry, 80)
        ));
        for (_, row, healthy) in rows.iter().filter(|(j, _, _)| *j == i) {
            let text = line(row);
            out.push(format!(
                "    {}",
                if *healthy { text } else { ui.bad(&text) }
            ));
        }
        for s in &r.sources {
            if let Some(f) = s.failure() {
                out.push(format!(
                    "      {} {}",
                    ui.dim(&format!("{} {}:", s.source, f.step)),
                    text::clean_line(&f.detail, 300)
                ));
            }
        }
    }
    out.join("\n")
}
