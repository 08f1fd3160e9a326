//! `prefetch`: pulls every base image the services' Dockerfiles name, concurrently, with
//! retries and mirror fall-back, and shows each image's result.

use std::sync::Arc;
use std::time::Duration;

use crate::actions_env::ActionsEnv;
use crate::cli::{GlobalArgs, PrefetchArgs};
use crate::engine::Engine;
use crate::error::{Error, Exit};
use crate::prefetch::{self, ImageStatus, PrefetchReport};
use crate::report::progress::Progress;
use crate::report::{PublishContext, Publisher, Report, RunMeta};
use crate::settings::{PrefetchSettings, Workspace};
use crate::ui::{OutputFormat, Sink, Ui};

pub async fn run(
    global: &GlobalArgs,
    args: &PrefetchArgs,
    ui: &Ui,
    actions: ActionsEnv,
) -> Result<Exit, Error> {
    let started = std::time::Instant::now();
    let started_at = crate::clock::rfc3339_ms(crate::clock::now_ms());
    let ws = Workspace::load(global, &args.plan, actions)?;
    ws.announce(ui);
    let settings = PrefetchSettings::resolve(args, &ws.project)?;
    let options = &settings.options;
    // Every credential the pulls will use is read now, and in Actions masked before anything
    // else is printed (as build-all does).
    let masks = crate::settings::read_credentials(options, &ws.plan)?;
    if ws.actions.in_actions {
        let lines = crate::report::workflow::add_masks(&masks);
        if !lines.is_empty() {
            let text = lines.join("\n") + "\n";
            if crate::report::views::json_output(ui) {
                ui.sink.command_err(&text);
            } else {
                ui.sink.command_out(&text);
            }
        }
    }
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
    if ws.actions.in_actions {
        publish_in_actions(&ws, &report, &args.out_dir, masks, started, started_at, ui).await?;
    }
    Ok(match report.failed().count() {
        0 => Exit::Success,
        _ => Exit::ImagesMissing,
    })
}

/// In Actions, a `prefetch` step publishes as `build-all` does: step summary, outputs,
/// annotations at the FROM lines, diagnosis and the JSON report (in `--out-dir`), from a report with no services. Its result (table or JSON) was
/// already printed above, so the publisher's own result is left out.
async fn publish_in_actions(
    ws: &Workspace,
    prefetch: &PrefetchReport,
    out_dir: &std::path::Path,
    masks: Vec<String>,
    started: std::time::Instant,
    started_at: String,
    ui: &Ui,
) -> Result<(), Error> {
    let out_dir = std::path::absolute(out_dir).unwrap_or_else(|_| out_dir.to_path_buf());
    let ctx = PublishContext::new(
        out_dir,
        ws.project.root.clone(),
        masks,
        None,
        ws.actions.clone(),
    );
    let run = RunMeta {
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        command: "prefetch".into(),
        builder: String::new(),
        engine_host: None,
        engine_version: None,
        pull_via: Some(prefetch.via.to_string()),
        repository: ws.actions.repository.clone(),
        commit: ws.actions.sha.clone(),
        workflow_run: ws.actions.run_id.clone(),
        shard: None,
        interrupted: false,
    };
    let report = Report::new(run, Some(prefetch), Vec::new(), Vec::new());
    let sink: Arc<dyn Sink> = Arc::new(NoResult(ui.sink.clone()));
    Publisher::start_with(ctx, ui, sink, Progress::hidden())
        .finish(&report)
        .await?;
    Ok(())
}

/// Passes notes and workflow commands on, drops the result stream, and the publisher's
/// `::add-mask::` lines: the same masks were printed when the credentials were read.
struct NoResult(Arc<dyn Sink>);

impl NoResult {
    fn without_masks(text: &str) -> String {
        text.split_inclusive('\n')
            .filter(|line| !line.starts_with("::add-mask::"))
            .collect()
    }
}

impl Sink for NoResult {
    fn out(&self, _: &str) {}
    fn err(&self, text: &str) {
        self.0.err(text);
    }
    fn command_out(&self, text: &str) {
        let text = NoResult::without_masks(text);
        if !text.is_empty() {
            self.0.command_out(&text);
        }
    }
    fn command_err(&self, text: &str) {
        let text = NoResult::without_masks(text);
        if !text.is_empty() {
            self.0.command_err(&text);
        }
    }
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
    if let Some(reason) = &report.via_reason {
        out.push_str(&format!("  Pulls went direct: {reason}\n"));
    }
    for image in &ok {
        let tries = image.attempts.len();
        out.push_str(&format!(
            "  {} {}  from {}{}{}\n",
            ui.good("ok  "),
            image.reference,
            image.source.as_deref().unwrap_or("?"),
            if image.via == Some(prefetch::PullPath::Direct) && report.via == "relay" {
                " (direct)"
            } else {
                ""
            },
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
        "Retries: {}, failed pulls: {}, {:.1}s waiting on retries",
        report.total_retries(),
        failed.len(),
        report.total_wait_ms() as f64 / 1000.0
    ));
    out
}
