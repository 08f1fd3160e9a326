//! `prefetch`: pulls every base image the services' Dockerfiles name, concurrently, with
//! retries and mirror fall-back, and shows each image's result.

use std::time::Duration;

use crate::actions_env::ActionsEnv;
use crate::cli::{GlobalArgs, PrefetchArgs};
use crate::engine::Engine;
use crate::error::{Error, Exit};
use crate::prefetch::{self, ImageStatus, PrefetchReport};
use crate::settings::{PrefetchSettings, Workspace};
use crate::ui::{OutputFormat, Ui};

pub async fn run(
    global: &GlobalArgs,
    args: &PrefetchArgs,
    ui: &Ui,
    actions: ActionsEnv,
) -> Result<Exit, Error> {
    let ws = Workspace::load(global, &args.plan, actions)?;
    ws.announce(ui);
    let settings = PrefetchSettings::resolve(args, &ws.project)?;
    let options = &settings.options;
    let engine = Engine::connect(Duration::from_secs(10)).await?;
    let mut cache = super::cache::open(settings.cache.as_ref(), &ws, ui);
    let mut needs = ws.plan.base_images.clone();
    let mut vouched = prefetch::Vouched::default();
    if let Some(c) = cache.as_mut() {
        vouched = super::cache::restore(c, &engine, &mut needs, options, ui).await;
    }
    let mut report = prefetch::prefetch(&engine, needs, options)
        .await
        .map_err(prefetch_error)?;
    vouched.merge_into(&mut report);
    if let Some(mut c) = cache {
        c.save_base_images(&engine, &report.images).await;
        super::cache::warnings(&mut c, ui);
        ui.note(&super::cache::render_stats(&c.close()));
    }
    if let Some(c) = &settings.cache
        && let Err(err) = crate::health::HealthStore::update(
            &c.dir,
            &report.health_samples(),
            crate::clock::now_ms(),
        )
    {
        ui.warn(&err.to_string());
    }
    match ui.format {
        OutputFormat::Json => ui.json(&report),
        OutputFormat::Human => ui.result(&render(&report, ui)),
    }
    Ok(match report.failed().count() {
        0 => Exit::Success,
        _ => Exit::ImagesMissing,
    })
}

/// A prefetch that could not start (the pull relay cannot listen on 127.0.0.1, the registry
/// client cannot be made): the environment, not the input.
pub(super) fn prefetch_error(err: anyhow::Error) -> Error {
    Error::Environment {
        what: "prefetch".into(),
        reason: format!(
            "cannot start the pull relay or the registry client: {err:#}; check that 127.0.0.1 is usable, or pass --pull-via direct"
        ),
    }
}

fn render(report: &PrefetchReport, ui: &Ui) -> String {
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
    if let Some(d) = crate::report::diagnosis::diagnose(report) {
        out.push_str(&crate::report::terminal::render_diagnosis(&d, ui));
        out.push('\n');
    }
    out.push_str(&format!(
        "Network: {} retries, {} failed pulls, {:.1}s waiting on retries",
        report.total_retries(),
        failed.len(),
        report.total_wait_ms() as f64 / 1000.0
    ));
    out
}
