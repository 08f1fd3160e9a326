//! `doctor`: checks the Docker daemon, buildx, this process's proxy settings and every
//! registry and mirror the project's base images come from ([`crate::probe`]), and says what
//! to fix.

use std::time::Duration;

use crate::actions_env::ActionsEnv;
use crate::cli::{DoctorArgs, GlobalArgs, PlanArgs};
use crate::doctor::{self, DoctorReport, ProjectFound};
use crate::engine::{self, Buildx, Engine};
use crate::error::{Error, Exit};
use crate::prefetch::{ImageNeed, Mirrors};
use crate::probe::{self, ProbeOptions};
use crate::project::Project;
use crate::settings;
use crate::ui::{OutputFormat, Ui};

pub async fn run(
    global: &GlobalArgs,
    args: &DoctorArgs,
    ui: &Ui,
    actions: ActionsEnv,
) -> Result<Exit, Error> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (project, needs, mirrors) = load_needs(global, args, &actions)?;
    let engine = Engine::connect(timeout).await?;
    let options = ProbeOptions {
        step_timeout: Duration::from_secs(args.probe_timeout.max(1)),
    };
    // The daemon's certs.d and insecure registries, this process's proxy environment.
    let trust = crate::registry_trust::RegistryTrust::for_engine(&engine).await;
    let proxy_env = trust.proxies.clone();
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
    let probes = probe::probe_registries(targets, &options, &trust);
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
        OutputFormat::Human => ui.result(&doctor::render(&report, ui)),
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
    actions: &ActionsEnv,
) -> Result<(ProjectFound, Vec<ImageNeed>, Mirrors), Error> {
    // Without a project: the `--mirror` values only.
    let flag_mirrors = || settings::mirrors(None, &args.mirrors);
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
        Err(err) if global.config.is_some() => return Err(err.into()),
        Err(err) => {
            return Ok((
                not_found(format!("no project here ({err})")),
                Vec::new(),
                flag_mirrors()?,
            ));
        }
    };
    let mirrors = settings::mirrors(Some(&project), &args.mirrors)?;
    let plan_args = PlanArgs {
        build_args: vec![crate::cli::Lines(args.build_args.clone())],
        tag: None,
        prefix: None,
        durations: None,
    };
    let planned = settings::plan_project(&root, &project, &plan_args, actions);
    match planned {
        Ok(plan) => {
            let registries: std::collections::BTreeSet<&str> = plan
                .base_images
                .iter()
                .map(|n| n.reference.domain.as_str())
                .collect();
            let note = format!(
                "{} ({}), {} on {}",
                doctor::plural(project.services.len(), "service", "services"),
                project.source,
                doctor::plural(plan.base_images.len(), "base image", "base images"),
                doctor::plural(registries.len(), "registry", "registries"),
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
                doctor::plural(project.services.len(), "service", "services"),
                project.source
            )),
            Vec::new(),
            mirrors,
        )),
    }
}
