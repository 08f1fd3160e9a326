//! Glue between the command line and the library: load, validate, run, render.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{GlobalArgs, OutputFormat, PlanArgs, PrefetchArgs, PrefetchFailure};
use crate::engine::Engine;
use crate::error::{Error, Exit};
use crate::plan::{Plan, plan};
use crate::prefetch::{self, ImageStatus, Mirrors, PrefetchOptions, PrefetchReport};
use crate::project::Project;
use crate::retry::RetryPolicy;
use crate::ui::Ui;

fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>, Error> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage {
                    what: format!("--build-arg {arg:?}"),
                    reason: "expected KEY=VALUE".into(),
                })
        })
        .collect()
}

fn load_plan(global: &GlobalArgs, args: &PlanArgs) -> Result<(Project, Plan), Error> {
    let root = std::env::current_dir().map_err(|e| Error::Usage {
        what: "the working directory".into(),
        reason: e.to_string(),
    })?;
    let project = Project::load(&root, global.config.as_deref())?;
    let plan = plan(&project, &parse_build_args(&args.build_args)?)?;
    Ok((project, plan))
}

pub async fn run_plan(global: &GlobalArgs, args: &PlanArgs, ui: &Ui) -> Result<Exit, Error> {
    let (_, plan) = load_plan(global, args)?;
    match ui.format {
        OutputFormat::Json => ui.json(&plan),
        OutputFormat::Human => ui.result(&render_plan(&plan)),
    }
    Ok(Exit::Success)
}

fn render_plan(plan: &Plan) -> String {
    let mut out = format!(
        "Services ({}, from {}):\n",
        plan.services.len(),
        plan.source
    );
    for s in &plan.services {
        out.push_str(&format!(
            "  {:<20} {}  [{}]\n",
            s.name, s.dockerfile, s.origin
        ));
    }
    out.push_str(&format!(
        "Base images to prefetch ({}):\n",
        plan.base_images.len()
    ));
    for need in &plan.base_images {
        let uses: Vec<String> = need
            .uses
            .iter()
            .map(|u| format!("{}:{}", PathBuf::from(&u.dockerfile).display(), u.line))
            .collect();
        out.push_str(&format!("  {}  <- {}\n", need.reference, uses.join(", ")));
    }
    out.trim_end().to_string()
}

/// Turns the prefetch flags (and the config file's settings) into options.
pub fn prefetch_options(args: &PrefetchArgs, project: &Project) -> Result<PrefetchOptions, Error> {
    let mut mirrors = Mirrors::default();
    for (registry, hosts) in &project.settings.mirrors {
        mirrors
            .add(&format!("{registry}={}", hosts.join(",")))
            .map_err(|reason| Error::Input {
                input: project.source.clone(),
                reason,
            })?;
    }
    for spec in args
        .mirrors
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        mirrors.add(spec).map_err(|reason| Error::Usage {
            what: "--mirror".into(),
            reason,
        })?;
    }
    Ok(PrefetchOptions {
        concurrency: usize::from(args.pull_concurrency),
        policy: RetryPolicy {
            max_retries: args.max_retries,
            deadline: Duration::from_secs(args.retry_deadline),
            ..RetryPolicy::default()
        },
        idle_timeout: Duration::from_secs(args.idle_timeout),
        mirrors,
        mirror_first: args.mirror_first || project.settings.mirror_first.unwrap_or(false),
        pull: args.pull,
        via: args.pull_via,
    })
}

pub async fn run_prefetch(
    global: &GlobalArgs,
    args: &PrefetchArgs,
    ui: &Ui,
) -> Result<Exit, Error> {
    let (project, plan) = load_plan(global, &args.plan)?;
    let options = prefetch_options(args, &project)?;
    let engine = Engine::connect(Duration::from_secs(10)).await?;
    let report = prefetch::prefetch(&engine, plan.base_images, &options)
        .await
        .map_err(|e| Error::Usage {
            what: "prefetch".into(),
            reason: format!("{e:#}"),
        })?;
    match ui.format {
        OutputFormat::Json => ui.json(&report),
        OutputFormat::Human => ui.result(&render_prefetch(&report, ui)),
    }
    let missing = report.failed().count();
    Ok(match (missing, args.prefetch_failure) {
        (0, _) => Exit::Success,
        (_, PrefetchFailure::Warn | PrefetchFailure::Fail) => Exit::ImagesMissing,
    })
}

fn render_prefetch(report: &PrefetchReport, ui: &Ui) -> String {
    let mut out = String::new();
    let ok: Vec<_> = report
        .images
        .iter()
        .filter(|i| i.status != ImageStatus::Failed)
        .collect();
    let failed: Vec<_> = report.failed().collect();
    out.push_str(&format!(
        "Base images: {}/{} available ({} pulled, {} already present) in {:.1}s via {}\n",
        ok.len(),
        report.images.len(),
        ok.iter()
            .filter(|i| i.status == ImageStatus::Pulled)
            .count(),
        ok.iter()
            .filter(|i| i.status == ImageStatus::Present)
            .count(),
        report.duration_ms as f64 / 1000.0,
        report.via,
    ));
    for image in &ok {
        let tries = image.attempts.len();
        out.push_str(&format!(
            "  {} {}  from {}{}\n",
            ui.good("ok  "),
            image.reference,
            image.source.as_deref().unwrap_or("?"),
            if tries > 1 {
                format!(", {tries} attempts")
            } else {
                String::new()
            }
        ));
    }
    for image in &failed {
        let error = image.error.as_ref();
        let uses: Vec<String> = image
            .uses
            .iter()
            .map(|u| format!("{}:{}", u.dockerfile.display(), u.line))
            .collect();
        out.push_str(&format!(
            "  {} {}  [{}] {}\n        used at {}\n",
            ui.bad("FAIL"),
            image.reference,
            error.map_or("other".into(), |e| e.class.to_string()),
            error.map_or("", |e| e.message.as_str()),
            uses.join(", ")
        ));
    }
    out.push_str(&format!(
        "Network: {} retries, {} failed pulls, {:.1}s waiting on retries",
        report.total_retries(),
        failed.len(),
        report.total_wait_ms() as f64 / 1000.0
    ));
    out
}
