//! Annotations from a report: an error at the failing Dockerfile line of each failed build,
//! a warning at each FROM line of a base image that could not be pulled, a notice for builds
//! that needed retries. Ranked (most actionable first) and capped at what GitHub shows per
//! step (10 errors, 10 warnings, 10 notices), the rest folded into one annotation per level
//! that points at the job summary.
//!
//! Also the step's log view: one `::group::` per service holding its raw build log inside
//! `stop-commands`, so nothing a build prints is taken as a workflow command.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::failure::BuildFailureClass;
use crate::prefetch::ImageStatus;
use crate::report::text;
use crate::report::workflow;
use crate::report::{Report, ServiceResult, ServiceStatus};

/// GitHub shows at most this many annotations of one level per step.
pub const MAX_PER_LEVEL: usize = 10;
/// Log lines quoted in an annotation's message.
const MESSAGE_LOG_LINES: usize = 5;
/// Longest annotation message we send (GitHub cuts longer ones anyway).
const MAX_MESSAGE_CHARS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    /// The workflow command's name.
    pub fn command(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }

    /// The check-run API's `annotation_level`.
    pub fn check_run_level(self) -> &'static str {
        match self {
            Level::Error => "failure",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Level::Error => "errors",
            Level::Warning => "warnings",
            Level::Notice => "notices",
        }
    }
}

/// One annotation, before it becomes a workflow command or a check-run annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub level: Level,
    /// Relative to the workspace.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub title: String,
    pub message: String,
    /// The service it is about (for its check run): the failed service, or every service
    /// whose Dockerfile uses the image that could not be pulled.
    pub services: Vec<String>,
    /// Lower is shown first within a level.
    pub rank: (u8, u8, usize),
}

impl Annotation {
    /// The workflow command (`::error file=...,line=...,title=...::message`).
    pub fn to_command(&self) -> String {
        let line = self.line.map(|l| l.to_string()).unwrap_or_default();
        let file = self.file.clone().unwrap_or_default();
        // `line` without `file` means nothing to the runner.
        let line = if file.is_empty() { String::new() } else { line };
        workflow::command(
            self.level.command(),
            &[("file", &file), ("line", &line), ("title", &self.title)],
            &self.message,
        )
    }
}

/// Maps the report's paths (relative to the project root) to paths relative to the
/// workspace (`GITHUB_WORKSPACE`), which is what annotations need.
#[derive(Debug, Clone, Default)]
pub struct PathMapper {
    /// The project root relative to the workspace (empty when they are the same).
    prefix: PathBuf,
}

impl PathMapper {
    /// `project_root` and `workspace` as absolute paths; a project outside the workspace
    /// keeps its paths as they are.
    pub fn new(project_root: &Path, workspace: Option<&Path>) -> PathMapper {
        let prefix = workspace
            .and_then(|ws| project_root.strip_prefix(ws).ok())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        PathMapper { prefix }
    }

    /// A path of the report as the workspace-relative path for an annotation (`/`-separated,
    /// no `./`).
    pub fn map(&self, path: &str) -> String {
        let path = Path::new(path);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.prefix.join(path)
        };
        let mut parts: Vec<String> = Vec::new();
        for comp in joined.components() {
            match comp {
                std::path::Component::CurDir | std::path::Component::RootDir => {}
                std::path::Component::ParentDir => {
                    if parts.pop().is_none() {
                        parts.push("..".into());
                    }
                }
                other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
            }
        }
        let text = parts.join("/");
        if joined.has_root() {
            format!("/{text}")
        } else {
            text
        }
    }
}

/// A build failure class in the report's words (`run-failed`) and for people.
pub fn failure_label(class: BuildFailureClass) -> (&'static str, &'static str) {
    match class {
        BuildFailureClass::Network => ("network", "network failure inside the build"),
        BuildFailureClass::Syntax => ("syntax", "Dockerfile syntax error"),
        BuildFailureClass::RunFailed => ("run-failed", "a RUN step failed"),
        BuildFailureClass::Input => ("input", "missing build input"),
        BuildFailureClass::Stalled => ("stalled", "no progress until the idle timeout"),
        BuildFailureClass::TimedOut => ("timed-out", "stopped by build-timeout"),
        BuildFailureClass::BaseImage => ("base-image", "a base image no source had"),
        BuildFailureClass::Auth => ("auth", "the registry refused the credentials"),
        BuildFailureClass::Builder => ("builder", "the builder failed under load"),
        BuildFailureClass::Other => ("other", "build failed"),
    }
}

fn failure_rank(class: BuildFailureClass) -> u8 {
    match class {
        BuildFailureClass::Syntax => 0,
        BuildFailureClass::Input => 1,
        BuildFailureClass::RunFailed => 2,
        BuildFailureClass::Other => 3,
        BuildFailureClass::Network => 4,
        BuildFailureClass::Stalled => 5,
        BuildFailureClass::TimedOut => 2,
        BuildFailureClass::BaseImage => 1,
        BuildFailureClass::Auth => 1,
        BuildFailureClass::Builder => 4,
    }
}

fn service_error(index: usize, s: &ServiceResult, paths: &PathMapper) -> Option<Annotation> {
    if s.status != ServiceStatus::Failed {
        return None;
    }
    let (class, line, mut message) = match &s.failure {
        Some(f) => {
            let (label, human) = failure_label(f.class);
            let label = match f.network_class {
                Some(n) => format!("{label}: {n}"),
                None => label.to_string(),
            };
            (Some((f.class, label, human)), f.line, f.message.clone())
        }
        None => (None, None, "the build failed".to_string()),
    };
    let tail: Vec<String> = s
        .log_tail
        .iter()
        .rev()
        .map(|l| text::clean_line(l, 300))
        .filter(|l| !l.trim().is_empty())
        .take(MESSAGE_LOG_LINES)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if !tail.is_empty() {
        message.push_str("\n\nLast log lines:\n");
        message.push_str(&tail.join("\n"));
    }
    let title = match &class {
        // "api: base image docker.io/library/x:1 not found on any source (base-image)".
        Some((BuildFailureClass::BaseImage, label, _)) => format!(
            "{}: {} ({label})",
            s.name,
            message.split(" (").next().unwrap_or_default()
        ),
        Some((_, label, human)) => format!("{}: {human} ({label})", s.name),
        None => format!("{}: build failed", s.name),
    };
    let file = (!s.dockerfile.is_empty()).then(|| paths.map(&s.dockerfile));
    let rank = (
        class.as_ref().map_or(3, |(c, _, _)| failure_rank(*c)),
        u8::from(line.is_none()),
        index,
    );
    Some(Annotation {
        level: Level::Error,
        line: line.filter(|_| file.is_some()),
        file,
        title,
        message: text::truncate(&message, MAX_MESSAGE_CHARS),
        services: vec![s.name.clone()],
        rank,
    })
}

/// Every annotation the report calls for, ranked within each level (errors, then warnings,
/// then notices), uncapped.
pub fn collect(report: &Report, paths: &PathMapper) -> Vec<Annotation> {
    let mut out: Vec<Annotation> = report
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| service_error(i, s, paths))
        .collect();

    for (i, image) in report.base_images.iter().enumerate() {
        if image.status != ImageStatus::Failed {
            continue;
        }
        let class = image
            .error_class
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unknown".into());
        let verdict = crate::report::diagnosis::lost_verdict(&image.answers);
        let mut message = match &verdict {
            // What each source really answered (issue 17): not "a network failure".
            Some(verdict) => format!(
                "{} {verdict}, after {} attempt{}. Last error: {}",
                image.reference,
                image.attempts,
                if image.attempts == 1 { "" } else { "s" },
                image.error.as_deref().unwrap_or("no error message")
            ),
            None => format!(
                "{} could not be pulled after {} attempt{} ({class}): {}",
                image.reference,
                image.attempts,
                if image.attempts == 1 { "" } else { "s" },
                image.error.as_deref().unwrap_or("no error message")
            ),
        };
        if let Some(source) = image.source.as_ref().filter(|_| verdict.is_none()) {
            message.push_str(&format!("\nLast source tried: {source}"));
        }
        let title = match verdict.as_deref().and_then(|v| v.split(" (").next()) {
            Some(short) => format!("base image {short}: {}", image.reference),
            None => format!("base image not pulled: {}", image.reference),
        };
        // Permanent failures (unknown tag, denied) first: retrying will not fix those.
        let transient = image.error_class.is_some_and(|c| c.is_transient());
        let users: Vec<String> = report
            .services
            .iter()
            .filter(|s| image.used_at.iter().any(|u| u.dockerfile == s.dockerfile))
            .map(|s| s.name.clone())
            .collect();
        if image.used_at.is_empty() {
            out.push(Annotation {
                level: Level::Warning,
                file: None,
                line: None,
                title,
                message: text::truncate(&message, MAX_MESSAGE_CHARS),
                services: users,
                rank: (0, u8::from(transient), i),
            });
            continue;
        }
        for (site_index, site) in image.used_at.iter().enumerate() {
            let site_users = report
                .services
                .iter()
                .filter(|s| s.dockerfile == site.dockerfile)
                .map(|s| s.name.clone())
                .collect();
            out.push(Annotation {
                level: Level::Warning,
                file: Some(paths.map(&site.dockerfile)),
                line: Some(site.line),
                title: title.clone(),
                message: text::truncate(&message, MAX_MESSAGE_CHARS),
                services: site_users,
                // Every image's first site before any image's second site.
                rank: (site_index.min(200) as u8, u8::from(transient), i),
            });
        }
    }

    for (i, s) in report.services.iter().enumerate() {
        if s.status == ServiceStatus::Success && s.attempts > 1 {
            out.push(Annotation {
                level: Level::Notice,
                file: (!s.dockerfile.is_empty()).then(|| paths.map(&s.dockerfile)),
                line: None,
                title: format!("{}: built after {} attempts", s.name, s.attempts),
                message: format!(
                    "{} was built on attempt {} after network failures inside the build; see the failure log in the report.",
                    s.name, s.attempts
                ),
                services: vec![s.name.clone()],
                rank: (0, 0, i),
            });
        }
    }
    out.sort_by_key(|a| (a.level, a.rank));
    out
}

/// At most [`MAX_PER_LEVEL`] annotations per level: when a level has more, its first
/// `MAX_PER_LEVEL - 1` are kept and the rest folded into one annotation that names them and
/// points at `summary_hint` (e.g. the run's URL). Expects the ranked order of [`collect`].
pub fn cap(annotations: Vec<Annotation>, summary_hint: &str) -> Vec<Annotation> {
    let mut out = Vec::new();
    for level in [Level::Error, Level::Warning, Level::Notice] {
        let of_level: Vec<Annotation> = annotations
            .iter()
            .filter(|a| a.level == level)
            .cloned()
            .collect();
        if of_level.len() <= MAX_PER_LEVEL {
            out.extend(of_level);
            continue;
        }
        let (shown, rest) = of_level.split_at(MAX_PER_LEVEL - 1);
        out.extend(shown.iter().cloned());
        let mut names: Vec<String> = Vec::new();
        for a in rest {
            let name = match (&a.file, a.line) {
                (Some(f), Some(l)) => format!("{} ({f}:{l})", a.title),
                (Some(f), None) => format!("{} ({f})", a.title),
                _ => a.title.clone(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let listed = names.len().min(20);
        let mut message = format!(
            "GitHub shows {MAX_PER_LEVEL} {} per step; {} more are in the job summary{}:\n{}",
            level.plural(),
            rest.len(),
            if summary_hint.is_empty() {
                String::new()
            } else {
                format!(" ({summary_hint})")
            },
            names[..listed].join("\n")
        );
        if names.len() > listed {
            message.push_str(&format!("\n… and {} more", names.len() - listed));
        }
        out.push(Annotation {
            level,
            file: None,
            line: None,
            title: format!("ai-infra-build: {} more {}", rest.len(), level.plural()),
            message: text::truncate(&message, MAX_MESSAGE_CHARS),
            services: Vec::new(),
            rank: (u8::MAX, u8::MAX, usize::MAX),
        });
    }
    out
}

/// Where a service's log comes from in the log groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The whole log file when it can be read (else the report's last lines).
    FileOrTail,
    /// Only the last lines kept in the report (deterministic; for re-rendering).
    Tail,
}

/// Largest log file put into a group (its end is kept).
const MAX_GROUP_LOG_BYTES: u64 = 4 * 1024 * 1024;

fn service_log(s: &ServiceResult, source: LogSource) -> String {
    if source == LogSource::FileOrTail
        && let Some(text) = s.log_path.as_deref().and_then(|p| read_tail(Path::new(p)))
    {
        return text;
    }
    let mut out = s.log_tail.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn read_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut prefix = String::new();
    if len > MAX_GROUP_LOG_BYTES {
        file.seek(SeekFrom::Start(len - MAX_GROUP_LOG_BYTES)).ok()?;
        prefix = format!(
            "[… first {} of the log left out; the whole log is {}]\n",
            text::size(len - MAX_GROUP_LOG_BYTES),
            path.display()
        );
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(prefix + &String::from_utf8_lossy(&bytes))
}

/// One `::group::` per service (failed ones first) with its raw log inside stop-commands.
pub fn log_groups(report: &Report, source: LogSource) -> String {
    let mut order: Vec<&ServiceResult> = report.services.iter().collect();
    order.sort_by_key(|s| match s.status {
        ServiceStatus::Failed => 0,
        ServiceStatus::Cancelled => 1,
        ServiceStatus::Success => 2,
        ServiceStatus::Skipped => 3,
    });
    let mut out = String::new();
    for s in order {
        let status = match s.status {
            ServiceStatus::Success => "succeeded".to_string(),
            ServiceStatus::Failed => "FAILED".to_string(),
            ServiceStatus::Skipped => format!(
                "skipped: {}",
                s.skipped_reason.as_deref().unwrap_or("not built")
            ),
            ServiceStatus::Cancelled => "cancelled".to_string(),
        };
        let log = service_log(s, source);
        if log.is_empty() && s.status == ServiceStatus::Skipped {
            continue;
        }
        let title = format!(
            "build ({}): {status}, {}",
            s.name,
            text::duration(s.duration_ms)
        );
        out.push_str(&workflow::group(&title, &log));
    }
    out
}

/// What the step prints for a report in Actions: the log groups, then the capped annotations.
pub fn render(
    report: &Report,
    paths: &PathMapper,
    summary_hint: &str,
    source: LogSource,
) -> String {
    let mut out = log_groups(report, source);
    for a in cap(collect(report, paths), summary_hint) {
        out.push_str(&a.to_command());
        out.push('\n');
    }
    out
}

/// The workflow commands of a run: log groups, then the capped annotations.
pub struct Annotations;

impl super::View for Annotations {
    fn name(&self) -> &'static str {
        "annotations"
    }

    fn about(&self) -> &'static str {
        "workflow commands: the log groups, then the annotations"
    }

    fn destinations(&self, ctx: &super::ViewContext) -> Vec<super::Destination> {
        if ctx.actions.in_actions {
            vec![super::Destination::WorkflowCommands]
        } else {
            Vec::new()
        }
    }

    fn render(&self, report: &Report, ctx: &super::ViewContext) -> String {
        render(
            report,
            ctx.paths,
            ctx.actions.run_url.as_deref().unwrap_or(""),
            ctx.log_source,
        )
    }

    fn debug_note(&self, report: &Report, ctx: &super::ViewContext) -> Option<String> {
        let all = collect(report, ctx.paths);
        let total = all.len();
        let shown = cap(all, ctx.actions.run_url.as_deref().unwrap_or("")).len();
        Some(format!("{total} annotations, {shown} shown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_workspace_relative() {
        let m = PathMapper::new(Path::new("/ws/repo/sub"), Some(Path::new("/ws/repo")));
        assert_eq!(m.map("svc/Dockerfile"), "sub/svc/Dockerfile");
        assert_eq!(m.map("./svc/../other/Dockerfile"), "sub/other/Dockerfile");
        let same = PathMapper::new(Path::new("/ws/repo"), Some(Path::new("/ws/repo")));
        assert_eq!(same.map("./a/Dockerfile"), "a/Dockerfile");
        let outside = PathMapper::new(Path::new("/elsewhere"), Some(Path::new("/ws/repo")));
        assert_eq!(outside.map("a/Dockerfile"), "a/Dockerfile");
        assert_eq!(
            PathMapper::default().map("/abs/Dockerfile"),
            "/abs/Dockerfile"
        );
    }

    fn ann(level: Level, n: usize) -> Annotation {
        Annotation {
            level,
            file: Some(format!("s{n}/Dockerfile")),
            line: Some(n),
            title: format!("t{n}"),
            message: "m".into(),
            services: vec![],
            rank: (0, 0, n),
        }
    }

    #[test]
    fn cap_keeps_ten_per_level_with_one_overflow_note() {
        let mut all: Vec<Annotation> = (0..25).map(|n| ann(Level::Error, n)).collect();
        all.extend((0..10).map(|n| ann(Level::Warning, n)));
        all.extend((0..11).map(|n| ann(Level::Notice, n)));
        let capped = cap(all, "https://example.invalid/run");
        let count = |l| capped.iter().filter(|a| a.level == l).count();
        assert_eq!(
            (
                count(Level::Error),
                count(Level::Warning),
                count(Level::Notice)
            ),
            (10, 10, 10)
        );
        let errors: Vec<&Annotation> = capped.iter().filter(|a| a.level == Level::Error).collect();
        assert_eq!(errors[8].title, "t8");
        let note = errors[9];
        assert_eq!(note.title, "ai-infra-build: 16 more errors");
        assert!(note.file.is_none());
        assert!(
            note.message.contains("https://example.invalid/run"),
            "{}",
            note.message
        );
        assert!(note.message.contains("t9 (s9/Dockerfile:9)") && note.message.contains("t24"));
        // Warnings were not over the cap: all ten, no note.
        assert!(
            capped
                .iter()
                .filter(|a| a.level == Level::Warning)
                .all(|a| a.file.is_some())
        );
        let notices: Vec<&Annotation> =
            capped.iter().filter(|a| a.level == Level::Notice).collect();
        assert_eq!(notices[9].title, "ai-infra-build: 2 more notices");
    }

    #[test]
    fn overflow_list_is_bounded() {
        let all: Vec<Annotation> = (0..200).map(|n| ann(Level::Error, n)).collect();
        let capped = cap(all, "");
        let note = capped.last().unwrap();
        assert!(note.message.contains("… and 171 more"), "{}", note.message);
        assert!(!note.message.contains("()"));
    }

    #[test]
    fn command_has_no_line_without_a_file() {
        let mut a = ann(Level::Warning, 3);
        a.file = None;
        assert_eq!(a.to_command(), "::warning title=t3::m");
        assert_eq!(
            ann(Level::Error, 4).to_command(),
            "::error file=s4/Dockerfile,line=4,title=t4::m"
        );
    }
}
