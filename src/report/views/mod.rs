//! The views of a report, one file per output, all behind [`View`]: the JSON report, the step
//! summary, the step outputs, the workflow commands (annotations and log groups), the PR
//! comment and check runs, and the terminal table.
//!
//! [`ALL`] is the one list: a run publishes every view that applies to its environment
//! ([`crate::report::Publisher`], used by `build-all`, `prefetch` and `report --merge`), and
//! `report --from FILE --format NAME` prints the one named. Add a view here and both get it.

pub mod annotations;
pub mod github;
mod github_http;
pub mod json;
pub mod outputs;
pub mod summary;
pub mod terminal;

use crate::actions_env::ActionsEnv;
use crate::report::Report;
use crate::ui::{OutputFormat, Ui};
use annotations::{LogSource, PathMapper};

/// What a view needs besides the report.
pub struct ViewContext<'a> {
    /// Colours, verbosity and the output format.
    pub ui: &'a Ui,
    /// The runner's environment (run URL, workspace, output files).
    pub actions: &'a ActionsEnv,
    /// Dockerfile paths as the workspace sees them.
    pub paths: &'a PathMapper,
    /// Where the JSON report is (the `report` step output).
    pub report_path: String,
    /// The report's path as shown to people (named in the summary).
    pub report_shown: String,
    /// What the log groups show: whole log files, or only the report's last lines.
    pub log_source: LogSource,
}

/// Where a run puts a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The JSON file in the output directory.
    ReportFile,
    /// Appended to `GITHUB_STEP_SUMMARY`.
    StepSummary,
    /// Appended to `GITHUB_OUTPUT`.
    StepOutputs,
    /// Workflow commands in the step's log (stdout, or stderr when stdout carries JSON).
    WorkflowCommands,
    /// The command's result on stdout.
    Result,
    /// The GitHub REST API (check runs, PR comment).
    GitHubApi,
}

/// One output of a report.
pub trait View: Sync {
    /// The name `report --format` takes.
    fn name(&self) -> &'static str;
    /// One line for `report --help`.
    fn about(&self) -> &'static str;
    /// Where a run in `ctx` puts this view; empty when it does not apply there.
    fn destinations(&self, ctx: &ViewContext) -> Vec<Destination>;
    /// The view's text.
    fn render(&self, report: &Report, ctx: &ViewContext) -> String;
    /// A line for the runner's debug log when the view is delivered.
    fn debug_note(&self, _report: &Report, _ctx: &ViewContext) -> Option<String> {
        None
    }
}

/// Every view, in the order a run publishes them.
pub static ALL: &[&dyn View] = &[
    &json::Json,
    &annotations::Annotations,
    &summary::StepSummary,
    &outputs::StepOutputs,
    &github::GitHubView,
    &terminal::Terminal,
];

/// The view called `name`.
pub fn find(name: &str) -> Option<&'static dyn View> {
    ALL.iter().copied().find(|v| v.name() == name)
}

/// The names of all views, for `report --format`.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|v| v.name()).collect()
}

/// Whether stdout carries JSON (then workflow commands go to stderr).
pub fn json_output(ui: &Ui) -> bool {
    ui.format == OutputFormat::Json
}
