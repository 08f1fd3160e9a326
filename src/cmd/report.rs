//! `report --from FILE --format VIEW`: prints any view of a saved JSON report (the step
//! summary, the workflow commands, the step outputs, the PR comment, the JSON itself, the
//! terminal table), exactly as the run that wrote it would have; `report --merge` merges the
//! reports of matrix shards and publishes them like one `build-all` would.

use std::path::Path;

use crate::actions_env::ActionsEnv;
use crate::cli::ReportArgs;
use crate::error::{Error, Exit};
use crate::report::views::{self, ViewContext, annotations::LogSource, annotations::PathMapper};
use crate::report::{PublishContext, Publisher, REPORT_FILE, REPORT_VERSION, Report};
use crate::ui::Ui;

/// Reads a saved report, refusing one from a newer, incompatible version.
pub fn load(path: &Path) -> Result<Report, Error> {
    let input = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
        input: input.clone(),
        reason: format!(
            "cannot read the report ({e}); it is written to the output directory as {}",
            REPORT_FILE
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

/// Runs the `report` subcommand.
pub async fn run(args: &ReportArgs, ui: &Ui, actions: ActionsEnv) -> Result<Exit, Error> {
    let Some(from) = &args.from else {
        return merge(args, ui, actions).await;
    };
    let report = load(from)?;
    let view = views::find(&args.format).ok_or_else(|| Error::Usage {
        what: format!("--format {:?}", args.format),
        reason: format!("no such view; the views are: {}", views::names().join(", ")),
    })?;
    let root = std::env::current_dir().unwrap_or_default();
    let paths = PathMapper::new(&root, actions.workspace.as_deref());
    let ctx = ViewContext {
        ui,
        actions: &actions,
        paths: &paths,
        report_path: from.display().to_string(),
        report_shown: from.display().to_string(),
        log_source: LogSource::FileOrTail,
    };
    let text = view.render(&report, &ctx);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    match view.name() {
        // The workflow commands are printed to be taken as such.
        "annotations" => ui.sink.command_out(text),
        "json" => ui.result(&crate::ui::inert_json(text)),
        _ => ui.result(text),
    }
    Ok(Exit::Success)
}

/// `report --merge`: loads every shard report, merges, and publishes like `build-all`.
async fn merge(args: &ReportArgs, ui: &Ui, actions: ActionsEnv) -> Result<Exit, Error> {
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for path in args.merge.iter().filter(|p| !p.as_os_str().is_empty()) {
        match load(path) {
            Ok(report) => reports.push((path.clone(), report)),
            // A shard whose upload failed may leave nothing (or garbage): it counts as missing.
            Err(err) => {
                ui.warn(&format!("{err}; that shard counts as missing"));
                unreadable.push(path.display().to_string());
            }
        }
    }
    // Nothing to merge is never a green merge.
    if reports.is_empty() {
        return Err(Error::Input {
            input: "report --merge".into(),
            reason: if unreadable.is_empty() {
                "no report files were given; pass each shard's ai-infra-build-report.json".into()
            } else {
                format!(
                    "none of the {} reports could be read ({}); check that every shard uploaded its report",
                    unreadable.len(),
                    unreadable.join(", ")
                )
            },
        });
    }
    let merged = crate::report::merge::merge(&reports, args.shards);
    let out_dir = std::path::absolute(&args.out_dir).unwrap_or_else(|_| args.out_dir.clone());
    let root = std::env::current_dir().unwrap_or_default();
    let ctx = PublishContext::new(
        out_dir,
        root,
        Vec::new(),
        args.github_token.clone(),
        actions,
    );
    Publisher::start(ctx, ui).finish(&merged).await?;
    let t = &merged.totals;
    Ok(
        if t.failed + t.skipped + t.cancelled > 0
            || !merged.missing_shards.is_empty()
            || !unreadable.is_empty()
        {
            Exit::BuildFailed
        } else {
            Exit::Success
        },
    )
}
