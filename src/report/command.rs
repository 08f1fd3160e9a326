//! `ai-infra-build report --from FILE --format VIEW`: re-renders any view of a saved JSON
//! report (the step summary, the workflow commands, the step outputs, the JSON itself, the
//! terminal table), exactly as the run that wrote it would have.

use std::path::Path;

use super::annotations::{self, LogSource, PathMapper};
use super::outputs;
use super::publish::ActionsEnv;
use super::summary::{self, SummaryOptions};
use super::terminal;
use super::{REPORT_VERSION, Report};
use crate::cli::{ReportArgs, ReportFormat};
use crate::error::{Error, Exit};
use crate::ui::Ui;

/// Reads a saved report, refusing one from a newer, incompatible version.
pub fn load(path: &Path) -> Result<Report, Error> {
    let input = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
        input: input.clone(),
        reason: format!(
            "cannot read the report ({e}); it is written to the output directory as {}",
            super::REPORT_FILE
        ),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Input {
        input: input.clone(),
        reason: format!("not a JSON report: {e}"),
    })?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if version > u64::from(REPORT_VERSION) {
        return Err(Error::Input {
            input,
            reason: format!(
                "report format v{version} is newer than this ai-infra-build understands (v{REPORT_VERSION}); use the version that wrote it"
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::Input {
        input,
        reason: format!("not a valid ai-infra-build report: {e}"),
    })
}

/// The text of one view of `report`. `from` is the report's path as given (named in the
/// summary and the `report` output); `env` supplies the workspace and the run's URL.
pub fn render(
    report: &Report,
    format: ReportFormat,
    from: &Path,
    env: &ActionsEnv,
    ui: &Ui,
) -> String {
    match format {
        ReportFormat::Markdown => summary::render(
            report,
            &SummaryOptions {
                run_url: env.run_url.clone(),
                report_path: Some(from.display().to_string()),
                ..SummaryOptions::step_summary()
            },
        ),
        ReportFormat::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        ReportFormat::Annotations => {
            let root = std::env::current_dir().unwrap_or_default();
            let paths = PathMapper::new(&root, env.workspace.as_deref());
            annotations::render(
                report,
                &paths,
                env.run_url.as_deref().unwrap_or(""),
                LogSource::FileOrTail,
            )
        }
        ReportFormat::Outputs => {
            outputs::render(&outputs::outputs(report, &from.display().to_string()))
        }
        ReportFormat::Terminal => terminal::render(report, ui),
    }
}

/// Runs the `report` subcommand.
pub async fn run(args: &ReportArgs, ui: &Ui) -> Result<Exit, Error> {
    let Some(from) = &args.from else {
        return run_merge(args, ui).await;
    };
    let report = load(from)?;
    let text = render(&report, args.format, from, &ActionsEnv::from_env(), ui);
    ui.result(text.strip_suffix('\n').unwrap_or(&text));
    Ok(Exit::Success)
}

/// `report --merge`: loads every shard report, merges, and publishes like `build-all`.
async fn run_merge(args: &ReportArgs, ui: &Ui) -> Result<Exit, Error> {
    let mut reports = Vec::new();
    for path in args.merge.iter().filter(|p| !p.as_os_str().is_empty()) {
        match load(path) {
            Ok(report) => reports.push((path.clone(), report)),
            // A shard whose upload failed may leave nothing (or garbage): it counts as missing.
            Err(err) => ui.note(&format!("warning: {err}; that shard counts as missing")),
        }
    }
    let merged = super::merge::merge(&reports, args.shards);
    let out_dir = std::path::absolute(&args.out_dir).unwrap_or_else(|_| args.out_dir.clone());
    let root = std::env::current_dir().unwrap_or_default();
    let ctx = super::PublishContext::from_env(out_dir, root, Vec::new(), args.github_token.clone());
    super::Publisher::start(ctx, ui).finish(&merged).await?;
    let t = &merged.totals;
    Ok(
        if t.failed + t.skipped + t.cancelled > 0 || !merged.missing_shards.is_empty() {
            Exit::BuildFailed
        } else {
            Exit::Success
        },
    )
}
