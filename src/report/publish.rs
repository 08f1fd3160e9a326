//! Publishing a run's report: the one place `build-all`, `prefetch` and `report --merge` hand
//! their results to.
//!
//! [`Publisher::start`] at the beginning of a run (announces secrets with `::add-mask::`
//! before anything else is printed, starts the live progress and the GitHub client), the
//! `*_started`/`*_finished` hooks while it runs, and [`Publisher::finish`] at the end, which
//! delivers every view of [`views::ALL`] that applies to the environment:
//!
//! | view | when |
//! |---|---|
//! | JSON report `OUTPUT_DIR/ai-infra-build-report.json` | always |
//! | log groups and annotations (workflow commands) | in GitHub Actions (`GITHUB_ACTIONS=true`) |
//! | `::debug::` lines | `RUNNER_DEBUG=1` |
//! | step summary (Markdown) | `GITHUB_STEP_SUMMARY` is set |
//! | step outputs | `GITHUB_OUTPUT` is set |
//! | check runs, PR comment | a GitHub token is given |
//! | final table, or the report as JSON with `--output json` | always (stdout) |
//!
//! [`publish`] does it all in one call for a run that needs no live hooks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::progress::Progress;
use super::views::annotations::{Level, LogSource, MAX_PER_LEVEL, PathMapper, cap, collect};
use super::views::github::{ApiSettings, CheckStarter, GitHub, GitHubTarget};
use super::views::{self, Destination, ViewContext, outputs};
use super::workflow;
use super::{REPORT_FILE, Report, ServiceStatus};
use crate::actions_env::ActionsEnv;
use crate::ui::{Sink, Ui};

/// The GitHub API part: a token and where it points. (`Debug` leaves the token out.)
#[derive(Clone)]
pub struct GitHubConfig {
    pub token: String,
    pub target: GitHubTarget,
    pub settings: ApiSettings,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("token", &"***")
            .field("target", &self.target)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Everything [`Publisher`] needs besides the report. (`Debug` leaves the secrets out.)
#[derive(Clone)]
pub struct PublishContext {
    /// The JSON report is written here as [`REPORT_FILE`].
    pub output_dir: PathBuf,
    /// The report's Dockerfile paths are relative to this (absolute) directory.
    pub project_root: PathBuf,
    pub actions: ActionsEnv,
    /// Registry passwords, tokens: masked in the log (`::add-mask::`) and replaced by `***`
    /// in everything we write or send.
    pub secrets: Vec<String>,
    pub github: Option<GitHubConfig>,
    /// What the log groups show: whole log files, or only the report's last lines.
    pub log_source: LogSource,
    /// Problems found while setting up (shown as warnings when publishing).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for PublishContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishContext")
            .field("output_dir", &self.output_dir)
            .field("project_root", &self.project_root)
            .field("actions", &self.actions)
            .field("secrets", &format!("{} hidden", self.secrets.len()))
            .field("github", &self.github)
            .field("log_source", &self.log_source)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl PublishContext {
    /// For a run in `actions`. The GitHub API is used only when `github_token` is given (and
    /// the environment names a repository and commit).
    pub fn new(
        output_dir: PathBuf,
        project_root: PathBuf,
        mut secrets: Vec<String>,
        github_token: Option<String>,
        actions: ActionsEnv,
    ) -> PublishContext {
        let mut warnings = Vec::new();
        let github = github_token
            .filter(|t| !t.trim().is_empty())
            .and_then(|token| {
                secrets.push(token.clone());
                match GitHubTarget::from_actions(&actions) {
                    Ok(target) => Some(GitHubConfig {
                        token,
                        target,
                        settings: ApiSettings::default(),
                    }),
                    Err(why) => {
                        warnings.push(format!(
                            "a GitHub token was given, but {why}: no check runs or PR comment"
                        ));
                        None
                    }
                }
            });
        PublishContext {
            output_dir,
            project_root,
            actions,
            secrets,
            github,
            log_source: LogSource::FileOrTail,
            warnings,
        }
    }

    /// As [`PublishContext::new`], with the runner's environment read through `lookup`.
    pub fn from_lookup(
        output_dir: PathBuf,
        project_root: PathBuf,
        secrets: Vec<String>,
        github_token: Option<String>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> PublishContext {
        let actions = ActionsEnv::from_lookup(lookup);
        PublishContext::new(output_dir, project_root, secrets, github_token, actions)
    }

    pub fn report_path(&self) -> PathBuf {
        self.output_dir.join(REPORT_FILE)
    }

    fn paths(&self) -> PathMapper {
        PathMapper::new(&self.project_root, self.actions.workspace.as_deref())
    }
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub report_path: PathBuf,
    /// Views that could not be written or sent (never fatal).
    pub warnings: Vec<String>,
}

/// A view that could not be written (the JSON report: fatal for the caller).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: cannot write the report ({source})", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Replaces every line of every secret (4 characters or longer) by `***` in all strings of
/// the report.
pub fn redact(report: &Report, secrets: &[String]) -> Report {
    let needles: Vec<&str> = secrets
        .iter()
        .flat_map(|s| s.split('\n'))
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.trim().chars().count() >= 4)
        .collect();
    if needles.is_empty() {
        return report.clone();
    }
    fn walk(v: &mut Value, needles: &[&str]) {
        match v {
            Value::String(s) => {
                for n in needles {
                    if s.contains(n) {
                        *s = s.replace(n, "***");
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, needles)),
            Value::Object(map) => map.values_mut().for_each(|i| walk(i, needles)),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(report) else {
        return report.clone();
    };
    walk(&mut value, &needles);
    serde_json::from_value(value).unwrap_or_else(|_| report.clone())
}

/// A run's views, from start to finish. All hooks take `&self` and may be called from any
/// thread (e.g. the scheduler's `on_event` callback).
pub struct Publisher {
    ctx: PublishContext,
    ui: Ui,
    sink: Arc<dyn Sink>,
    progress: Progress,
    github: Option<Arc<GitHub>>,
    starter: Option<CheckStarter>,
}

impl Publisher {
    /// Starts publishing to the ui's sink, with live progress.
    /// Prints the `::add-mask::` lines first (in Actions). Call inside the Tokio runtime.
    pub fn start(ctx: PublishContext, ui: &Ui) -> Publisher {
        let progress = Progress::new(ui);
        Publisher::start_with(ctx, ui, ui.sink.clone(), progress)
    }

    /// As [`Publisher::start`], writing to `sink` and showing `progress`.
    pub fn start_with(
        mut ctx: PublishContext,
        ui: &Ui,
        sink: Arc<dyn Sink>,
        progress: Progress,
    ) -> Publisher {
        let mut publisher = Publisher {
            ctx: ctx.clone(),
            ui: ui.clone(),
            sink,
            progress,
            github: None,
            starter: None,
        };
        if ctx.actions.in_actions {
            let masks = workflow::add_masks(&ctx.secrets);
            if !masks.is_empty() {
                publisher.commands(&(masks.join("\n") + "\n"));
            }
        }
        if let Some(config) = ctx.github.take() {
            match GitHub::new(&config.token, config.target, config.settings) {
                Ok(gh) => {
                    let gh = Arc::new(gh);
                    if tokio::runtime::Handle::try_current().is_ok() {
                        publisher.starter = Some(CheckStarter::spawn(gh.clone()));
                    }
                    publisher.github = Some(gh);
                }
                Err(e) => publisher
                    .ctx
                    .warnings
                    .push(format!("no check runs or PR comment: {e}")),
            }
        }
        publisher.debug(&format!(
            "publishing: report to {}, step summary {}, outputs {}, GitHub API {}",
            publisher.ctx.report_path().display(),
            if publisher.ctx.actions.step_summary.is_some() {
                "yes"
            } else {
                "no"
            },
            if publisher.ctx.actions.output.is_some() {
                "yes"
            } else {
                "no"
            },
            if publisher.github.is_some() {
                "yes"
            } else {
                "no"
            },
        ));
        publisher
    }

    /// Workflow commands: stdout, or stderr when stdout carries JSON (the runner reads both).
    fn commands(&self, text: &str) {
        if views::json_output(&self.ui) {
            self.sink.command_err(text);
        } else {
            self.sink.command_out(text);
        }
    }

    /// A `::debug::` line when the runner's debug logging is on.
    pub fn debug(&self, message: &str) {
        if self.ctx.actions.in_actions && self.ctx.actions.debug {
            self.commands(&workflow::debug(message));
        }
    }

    /// A problem found while running (shown with the setup warnings when publishing).
    pub fn warning(&mut self, text: String) {
        self.ctx.warnings.push(text);
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn image_started(&self, reference: &str) {
        self.progress.image_started(reference);
    }

    pub fn image_finished(&self, reference: &str, ok: bool, outcome: &str, took: Duration) {
        self.progress.image_finished(reference, ok, outcome, took);
    }

    /// A build (attempt) started: progress, and the service's check run goes `in_progress`.
    pub fn service_started(&self, name: &str, attempt: u32) {
        self.progress.service_started(name, attempt);
        if let Some(starter) = &self.starter {
            starter.service_started(name);
        }
    }

    pub fn service_finished(&self, name: &str, status: ServiceStatus, took: Duration) {
        self.progress.service_finished(name, status, took);
    }

    /// A warning: an annotation in Actions while `budget` (what GitHub still shows of this
    /// step's warning annotations) lasts, else a plain line in the log.
    fn warn(&self, warnings: &mut Vec<String>, budget: &mut usize, text: String) {
        if self.ctx.actions.in_actions && *budget > 0 {
            *budget -= 1;
            self.commands(
                &(workflow::command("warning", &[("title", "ai-infra-build")], &text) + "\n"),
            );
        } else {
            // Past the budget not an annotation: GitHub would drop it, or the report's.
            self.sink.err(&format!("warning: {text}"));
        }
        warnings.push(text);
    }

    /// Delivers every view of `report` that applies (see the module docs). Only a JSON report
    /// that cannot be written is an error, and only after every other view was attempted.
    pub async fn finish(mut self, report: &Report) -> Result<Published, PublishError> {
        let mut starter = self.starter.take();
        self.progress.finish();
        let report = redact(report, &self.ctx.secrets);
        let mut warnings = Vec::new();
        let report_path = self.ctx.report_path();
        let paths = self.ctx.paths();
        // GitHub shows 10 warning annotations per step: the report's own (already capped)
        // come first, setup and API warnings get what is left.
        let hint = self.ctx.actions.run_url.clone().unwrap_or_default();
        let report_warnings = cap(collect(&report, &paths), &hint)
            .iter()
            .filter(|a| a.level == Level::Warning)
            .count();
        let mut budget = MAX_PER_LEVEL.saturating_sub(report_warnings);
        for w in self.ctx.warnings.clone() {
            self.warn(&mut warnings, &mut budget, w);
        }
        let ctx = ViewContext {
            ui: &self.ui,
            actions: &self.ctx.actions,
            paths: &paths,
            report_path: report_path.display().to_string(),
            report_shown: self.shown_path(&report_path),
            log_source: self.ctx.log_source,
        };
        let mut written = Ok(());
        let mut results = Vec::new();
        for view in views::ALL {
            for to in view.destinations(&ctx) {
                if let Some(note) = view.debug_note(&report, &ctx) {
                    self.debug(&note);
                }
                match to {
                    Destination::ReportFile => {
                        written = write_file(&report_path, &view.render(&report, &ctx));
                        if written.is_ok() {
                            self.debug(&format!("wrote {}", report_path.display()));
                        }
                    }
                    Destination::WorkflowCommands => self.commands(&view.render(&report, &ctx)),
                    Destination::StepSummary | Destination::StepOutputs => {
                        let (file, what) = if to == Destination::StepSummary {
                            (&self.ctx.actions.step_summary, "step summary")
                        } else {
                            (&self.ctx.actions.output, "step outputs")
                        };
                        let Some(file) = file else { continue };
                        let text = view.render(&report, &ctx);
                        self.debug(&format!("{what}: {} bytes", text.len()));
                        if let Err(e) = outputs::append(file, &text) {
                            let text = format!("cannot write the {what} {}: {e}", file.display());
                            self.warn(&mut warnings, &mut budget, text);
                        }
                    }
                    Destination::GitHubApi => {
                        let Some(gh) = &self.github else { continue };
                        if let Some(starter) = starter.take() {
                            starter.drain().await;
                        }
                        gh.publish(&report, &paths, &view.render(&report, &ctx))
                            .await;
                        for w in gh.warnings() {
                            self.warn(&mut warnings, &mut budget, w);
                        }
                    }
                    // Printed last, after everything the log shows.
                    Destination::Result if views::json_output(&self.ui) => {
                        results.push(crate::ui::inert_json(&view.render(&report, &ctx)))
                    }
                    Destination::Result => results.push(view.render(&report, &ctx)),
                }
            }
        }
        for text in results {
            self.sink.out(text.strip_suffix('\n').unwrap_or(&text));
        }
        written.map(|()| Published {
            report_path,
            warnings,
        })
    }

    /// The report's path as shown to people: relative to the workspace when inside it.
    fn shown_path(&self, path: &Path) -> String {
        self.ctx
            .actions
            .workspace
            .as_deref()
            .and_then(|ws| path.strip_prefix(ws).ok())
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), PublishError> {
    let err = |source| PublishError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Write then rename: a reader never sees half a report.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Publishes a finished run in one call: [`Publisher::start`] then [`Publisher::finish`].
pub async fn publish(
    report: &Report,
    ctx: PublishContext,
    ui: &Ui,
) -> Result<Published, PublishError> {
    Publisher::start(ctx, ui).finish(report).await
}
