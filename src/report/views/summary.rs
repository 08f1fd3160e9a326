//! The Markdown view (GitHub-flavoured) of a report: the job's step summary
//! (`GITHUB_STEP_SUMMARY`), the PR comment and the check runs' summaries.
//!
//! Layout: a headline with the count, the network diagnosis when anything failed (root
//! cause, fix, what each registry and mirror did), a `<details>` block per failure (error
//! and last log lines), the service table, the base-image table (and a learned source
//! order), network statistics, the failure log.
//! Everything taken from the run (names, messages, log lines) is escaped for where it goes:
//! table cells and `<summary>` lines get HTML entities and Markdown escapes, log lines go into
//! fenced code blocks whose fence is longer than any backtick run inside.
//!
//! The result always fits a byte budget (GitHub rejects a step summary over 1 MiB and a
//! comment over 65 536 characters): when the whole view is too large, succeeded rows, the
//! failure log and log lines are left out step by step, with a visible note; the headline,
//! the totals and every failure are kept.

use std::fmt::Write as _;

use super::annotations::failure_label;
use crate::prefetch::ImageStatus;
use crate::report::diagnosis::{Diagnosis, SourceRole};
use crate::report::text::{self, cell, code_block, html};
use crate::report::{BaseImageResult, Report, ServiceResult, ServiceStatus};

/// GitHub's limit for one step's summary.
pub const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;
/// GitHub's limit for a comment body or a check run's summary (characters; we count bytes,
/// which is never fewer).
pub const COMMENT_LIMIT: usize = 65_536;
/// The hidden marker that identifies our PR comment.
pub const COMMENT_MARKER: &str = "<!-- ai-infra-build -->";

/// Longest line of a log or message shown in the summary.
const MAX_LINE_CHARS: usize = 500;
/// Longest error message shown in a failure block.
const MAX_MESSAGE_CHARS: usize = 4000;

#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// The rendered text stays at or under this many bytes.
    pub max_bytes: usize,
    /// Log lines shown per failure (at most; fewer when the budget is tight).
    pub log_lines: usize,
    /// Link to the workflow run.
    pub run_url: Option<String>,
    /// Where the JSON report is (named in the footer and the trim note).
    pub report_path: Option<String>,
    /// A first line, e.g. [`COMMENT_MARKER`].
    pub header: Option<String>,
}

impl SummaryOptions {
    /// For `GITHUB_STEP_SUMMARY`: under 1 MiB with room to spare for other steps' lines.
    pub fn step_summary() -> SummaryOptions {
        SummaryOptions {
            max_bytes: STEP_SUMMARY_LIMIT - 24 * 1024,
            log_lines: 30,
            run_url: None,
            report_path: None,
            header: None,
        }
    }

    /// For the PR comment: starts with the hidden marker, under GitHub's comment limit.
    pub fn comment() -> SummaryOptions {
        SummaryOptions {
            max_bytes: COMMENT_LIMIT - 1536,
            log_lines: 15,
            header: Some(COMMENT_MARKER.to_string()),
            ..SummaryOptions::step_summary()
        }
    }
}

/// How much of the report one rendering shows.
#[derive(Debug, Clone, Copy)]
struct Detail {
    /// All rows of the service and base-image tables, or only the ones that need attention.
    all_rows: bool,
    services_table: bool,
    failure_log: bool,
    log_lines: usize,
    /// Failures as `<details>` blocks, or one line each.
    failure_blocks: bool,
}

/// Renders the Markdown summary of `report` within `opts.max_bytes`.
pub fn render(report: &Report, opts: &SummaryOptions) -> String {
    let full = Detail {
        all_rows: true,
        services_table: true,
        failure_log: true,
        log_lines: opts.log_lines,
        failure_blocks: true,
    };
    let mut levels = vec![full];
    let reduced = Detail {
        all_rows: false,
        failure_log: false,
        ..full
    };
    levels.push(reduced);
    for lines in [10, 3, 0] {
        if lines < opts.log_lines {
            levels.push(Detail {
                log_lines: lines,
                ..reduced
            });
        }
    }
    levels.push(Detail {
        services_table: false,
        log_lines: 0,
        ..reduced
    });
    levels.push(Detail {
        services_table: false,
        log_lines: 0,
        failure_blocks: false,
        ..reduced
    });
    for detail in levels {
        let text = render_with(report, opts, detail, None);
        if text.len() <= opts.max_bytes {
            return text;
        }
    }
    // Even one line per failure is too much: list as many as fit.
    let failures = failure_count(report);
    let mut shown = failures;
    loop {
        shown = shown.saturating_mul(9) / 10;
        let detail = Detail {
            all_rows: false,
            services_table: false,
            failure_log: false,
            log_lines: 0,
            failure_blocks: false,
        };
        let text = render_with(report, opts, detail, Some(shown));
        if text.len() <= opts.max_bytes || shown == 0 {
            return text;
        }
    }
}

fn failure_count(report: &Report) -> usize {
    report.services.iter().filter(|s| is_failure(s)).count()
        + report
            .base_images
            .iter()
            .filter(|b| b.status == ImageStatus::Failed)
            .count()
}

fn is_failure(s: &ServiceResult) -> bool {
    matches!(s.status, ServiceStatus::Failed | ServiceStatus::Cancelled)
}

fn status_icon(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Success => "✅",
        ServiceStatus::Failed => "❌",
        ServiceStatus::Skipped => "⏭️",
        ServiceStatus::Cancelled => "⏹️",
    }
}

fn image_icon(status: ImageStatus) -> &'static str {
    match status {
        ImageStatus::Pulled => "✅",
        ImageStatus::Present => "💾",
        ImageStatus::Failed => "❌",
    }
}

fn headline_icon(report: &Report) -> &'static str {
    let t = &report.totals;
    if t.failed > 0
        || t.cancelled > 0
        || report.run.interrupted
        || !report.missing_shards.is_empty()
    {
        "❌"
    } else if t.skipped > 0 || t.base_images_missing > 0 || t.services == 0 {
        "⚠️"
    } else {
        "✅"
    }
}

fn render_with(
    report: &Report,
    opts: &SummaryOptions,
    detail: Detail,
    max_failures: Option<usize>,
) -> String {
    let mut out = String::new();
    if let Some(header) = &opts.header {
        out.push_str(header);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "## {} ai-infra-build: {}\n",
        headline_icon(report),
        cell(&report.headline())
    );
    out.push_str(&stats_line(report));
    out.push_str("\n\n");
    let counts = crate::report::ReuseCounts::of(&report.services);
    if let Some(line) = counts.line(&report.totals) {
        let _ = writeln!(out, "{}\n", cell(&line));
        let reused: Vec<String> = report
            .services
            .iter()
            .filter(|s| s.reused)
            .filter_map(|s| {
                let from = s.reused_from.as_ref()?;
                Some(format!(
                    "<code>{}</code> reused ({}) from <code>{}</code>{}",
                    cell(&s.name),
                    from.source.label(),
                    cell(&from.image),
                    from.digest
                        .as_deref()
                        .filter(|d| *d != from.image)
                        .map(|d| format!(" <code>{}</code>", cell(d)))
                        .unwrap_or_default()
                ))
            })
            .collect();
        if !reused.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>Reused ({})</summary>\n\n{}\n\n</details>\n",
                reused.len(),
                reused.join("<br>\n")
            );
        }
    }
    for shard in &report.missing_shards {
        let _ = writeln!(
            out,
            "> **shard {}: no report**: its job uploaded none, so its services are missing below.\n",
            cell(shard)
        );
    }
    if report.run.interrupted {
        out.push_str("> **Interrupted:** the run was stopped before every service was built; these results are partial.\n\n");
    }
    let left_out = left_out(report, detail, max_failures);
    if !left_out.is_empty() {
        let _ = writeln!(
            out,
            "> **Shortened** to stay under GitHub's size limit: {} left out.{}\n",
            left_out.join(", "),
            match &opts.report_path {
                Some(p) => format!(" Everything is in <code>{}</code>.", cell(p)),
                None => " Everything is in the JSON report.".to_string(),
            }
        );
    }

    if let Some(d) = &report.diagnosis {
        out.push_str(&diagnosis_section(d));
    }

    let failures = failure_count(report);
    if failures > 0 {
        let _ = writeln!(out, "### Failures ({failures})\n");
        let mut shown = 0;
        let limit = max_failures.unwrap_or(usize::MAX);
        for s in report.services.iter().filter(|s| is_failure(s)) {
            if shown == limit {
                break;
            }
            shown += 1;
            if detail.failure_blocks {
                out.push_str(&service_failure_block(s, detail.log_lines));
            } else {
                out.push_str(&service_failure_line(s));
            }
        }
        for b in report
            .base_images
            .iter()
            .filter(|b| b.status == ImageStatus::Failed)
        {
            if shown == limit {
                break;
            }
            shown += 1;
            if detail.failure_blocks {
                out.push_str(&image_failure_block(report, b, detail.log_lines));
            } else {
                out.push_str(&image_failure_line(b));
            }
        }
        if !detail.failure_blocks {
            out.push('\n');
        }
        if shown < failures {
            let _ = writeln!(
                out,
                "… and {} more failures (see the JSON report).\n",
                failures - shown
            );
        }
    }

    if detail.services_table && !report.services.is_empty() {
        out.push_str(&services_table(report, detail.all_rows));
    }
    if !report.base_images.is_empty() {
        out.push_str(&base_images_table(report, detail.all_rows));
    }
    out.push_str(&source_order_lines(report));
    out.push_str(&network_section(report));
    if detail.failure_log && !report.failure_log.is_empty() {
        out.push_str(&failure_log(report));
    }
    out.push_str(&footer(report, opts));
    out
}

/// What a rendering at `detail` leaves out, for the trim note.
fn left_out(report: &Report, detail: Detail, max_failures: Option<usize>) -> Vec<String> {
    let mut what = Vec::new();
    if let Some(n) = max_failures {
        what.push(format!(
            "{} of {} failures",
            failure_count(report).saturating_sub(n),
            failure_count(report)
        ));
    }
    if !detail.failure_blocks {
        what.push("the failures' error details and logs".to_string());
    } else if detail.log_lines == 0 {
        what.push("the failures' log lines".to_string());
    } else if detail.all_rows && detail.failure_log {
        // Nothing left out.
    } else {
        let longest = report
            .services
            .iter()
            .map(|s| s.log_tail.len())
            .max()
            .unwrap_or(0);
        if longest > detail.log_lines {
            what.push(format!(
                "log lines before each failure's last {}",
                detail.log_lines
            ));
        }
    }
    let succeeded = report
        .services
        .iter()
        .filter(|s| s.status == ServiceStatus::Success)
        .count();
    if !detail.services_table {
        what.push("the service table".to_string());
    } else if !detail.all_rows && succeeded > 0 {
        what.push(format!(
            "the rows of {}",
            count(succeeded, "succeeded service", "succeeded services")
        ));
    }
    let fine = report
        .base_images
        .iter()
        .filter(|b| b.status != ImageStatus::Failed)
        .count();
    if !detail.all_rows && fine > 0 {
        what.push(format!(
            "the rows of {}",
            count(fine, "available base image", "available base images")
        ));
    }
    if !detail.failure_log && !report.failure_log.is_empty() {
        what.push(format!(
            "the failure log ({} entries)",
            report.failure_log.len()
        ));
    }
    what
}

fn stats_line(report: &Report) -> String {
    let t = &report.totals;
    let mut parts = Vec::new();
    if t.failed > 0 {
        parts.push(format!("**{} failed**", t.failed));
    } else {
        parts.push("0 failed".to_string());
    }
    parts.push(format!("{} skipped", t.skipped));
    if t.cancelled > 0 {
        parts.push(format!("**{} cancelled**", t.cancelled));
    }
    if t.base_images_missing > 0 {
        parts.push(format!(
            "{} (**{} not pulled**)",
            count(t.base_images, "base image", "base images"),
            t.base_images_missing
        ));
    } else {
        parts.push(count(t.base_images, "base image", "base images"));
    }
    parts.push(format!("took {}", text::duration(report.run.duration_ms)));
    if !report.run.builder.is_empty() {
        parts.push(format!(
            "builder <code>{}</code>",
            cell(&report.run.builder)
        ));
    }
    if let Some(shard) = &report.run.shard {
        parts.push(format!("shard {}", cell(shard)));
    }
    parts.join(" · ")
}

fn service_failure_line(s: &ServiceResult) -> String {
    let what = match &s.failure {
        Some(f) => failure_label(f.class).1.to_string(),
        None if s.status == ServiceStatus::Cancelled => "cancelled".to_string(),
        None => "failed".to_string(),
    };
    let first = s
        .failure
        .as_ref()
        .map(|f| text::truncate(f.message.lines().next().unwrap_or(""), 160))
        .unwrap_or_default();
    format!(
        "- {} **{}**: {what}{}\n",
        status_icon(s.status),
        cell(&s.name),
        if first.is_empty() {
            String::new()
        } else {
            format!(": {}", cell(&first))
        }
    )
}

fn image_failure_line(b: &BaseImageResult) -> String {
    format!(
        "- ⚠️ base image **{}** not pulled ({})\n",
        cell(&b.reference),
        cell(
            &b.error_class
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into())
        )
    )
}

fn location(s: &ServiceResult) -> Option<String> {
    if s.dockerfile.is_empty() {
        return None;
    }
    Some(match s.failure.as_ref().and_then(|f| f.line) {
        Some(line) => format!("{}:{line}", s.dockerfile),
        None => s.dockerfile.clone(),
    })
}

fn last_lines(lines: &[String], n: usize) -> Vec<String> {
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| text::clean_line(l, MAX_LINE_CHARS))
        .collect()
}

fn message_lines(message: &str) -> Vec<String> {
    text::truncate(message, MAX_MESSAGE_CHARS)
        .lines()
        .map(|l| text::clean_line(l, MAX_LINE_CHARS))
        .collect()
}

/// A `<details>` block for a failed (or cancelled) service: error, where, last log lines.
fn service_failure_block(s: &ServiceResult, log_lines: usize) -> String {
    let mut out = String::from("<details>\n<summary>");
    let _ = write!(out, "{} <b>{}</b>", status_icon(s.status), h(&s.name));
    match &s.failure {
        Some(f) => {
            let (label, human) = failure_label(f.class);
            let label = match f.network_class {
                Some(n) => format!("{label}: {n}"),
                None => label.to_string(),
            };
            let _ = write!(out, ": {} ({})", h(human), h(&label));
        }
        None if s.status == ServiceStatus::Cancelled => out.push_str(": cancelled"),
        None => out.push_str(": failed"),
    }
    if let Some(loc) = location(s) {
        let _ = write!(out, " at <code>{}</code>", h(&loc));
    }
    out.push_str("</summary>\n\n");
    let mut facts = vec![format!("image <code>{}</code>", cell(&s.image))];
    if s.attempts > 0 {
        facts.push(format!(
            "{} attempt{}",
            s.attempts,
            if s.attempts == 1 { "" } else { "s" }
        ));
    }
    facts.push(format!("after {}", text::duration(s.duration_ms)));
    if !s.builder.is_empty() {
        facts.push(format!("builder <code>{}</code>", cell(&s.builder)));
    }
    let _ = writeln!(out, "{}\n", facts.join(" · "));
    if let Some(f) = &s.failure {
        out.push_str("**Error**\n\n");
        out.push_str(&code_block("text", &message_lines(&f.message)));
        out.push('\n');
    } else if let Some(reason) = &s.skipped_reason {
        let _ = writeln!(out, "{}\n", cell(reason));
    }
    if log_lines > 0 && !s.log_tail.is_empty() {
        let lines = last_lines(&s.log_tail, log_lines);
        let _ = writeln!(out, "**Last {} log lines**\n", lines.len());
        out.push_str(&code_block("text", &lines));
        out.push('\n');
    }
    if let Some(path) = &s.log_path {
        let _ = writeln!(out, "Full log: <code>{}</code>\n", cell(path));
    }
    out.push_str("</details>\n\n");
    out
}

/// A `<details>` block for a base image that could not be pulled: error, attempts, users.
fn image_failure_block(report: &Report, b: &BaseImageResult, log_lines: usize) -> String {
    let class = b
        .error_class
        .map(|c| c.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut out = String::from("<details>\n<summary>");
    let _ = write!(
        out,
        "⚠️ base image <b>{}</b> not pulled ({}) after {} attempt{}",
        h(&b.reference),
        h(&class),
        b.attempts,
        if b.attempts == 1 { "" } else { "s" }
    );
    out.push_str("</summary>\n\n");
    let users: Vec<String> = b
        .used_at
        .iter()
        .map(|u| {
            format!(
                "<code>{}</code>",
                cell(&format!("{}:{}", u.dockerfile, u.line))
            )
        })
        .collect();
    if !users.is_empty() {
        let _ = writeln!(out, "Used at {}\n", users.join(", "));
    }
    let _ = writeln!(out, "Waited {} on retries.\n", text::duration(b.wait_ms));
    out.push_str("**Error**\n\n");
    out.push_str(&code_block(
        "text",
        &message_lines(b.error.as_deref().unwrap_or("no error message")),
    ));
    out.push('\n');
    if log_lines > 0 {
        let attempts: Vec<String> = report
            .failure_log
            .iter()
            .filter(|e| e.subject == b.reference)
            .map(|e| {
                text::clean_line(
                    &format!("{}  {}  {}  {}", e.at, e.kind, e.class, e.message),
                    MAX_LINE_CHARS,
                )
            })
            .collect();
        if !attempts.is_empty() {
            let attempts = last_lines(&attempts, log_lines);
            let _ = writeln!(out, "**Failed attempts**\n");
            out.push_str(&code_block("text", &attempts));
            out.push('\n');
        }
    }
    out.push_str("</details>\n\n");
    out
}

/// `1 base image`, `2 base images`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Untrusted text for a raw HTML line (`<summary>`): one line, entities for HTML specials.
fn h(text: &str) -> String {
    html(&text::clean_line(text, MAX_LINE_CHARS))
}

fn dash() -> String {
    "—".to_string()
}

fn services_table(report: &Report, all_rows: bool) -> String {
    let mut out = String::from("### Services\n\n");
    out.push_str("| | Service | Image | Duration | Attempts | Cached | Size |\n");
    out.push_str("|:-:|:--|:--|--:|--:|--:|--:|\n");
    for s in &report.services {
        if !all_rows && s.status == ServiceStatus::Success {
            continue;
        }
        let mut image = format!("<code>{}</code>", cell(&s.image));
        let extra = s.tags.iter().filter(|t| **t != s.image).count();
        if extra > 0 {
            let _ = write!(image, " +{extra} tag{}", if extra == 1 { "" } else { "s" });
        }
        let cached = match (s.cached_steps, s.total_steps) {
            _ if s.reused => s.reuse_label().unwrap_or_default(),
            (Some(c), Some(t)) if t > 0 => format!("{c}/{t}"),
            _ => dash(),
        };
        let (duration, attempts) = if s.status == ServiceStatus::Skipped {
            (dash(), dash())
        } else {
            (text::duration(s.duration_ms), s.attempts.to_string())
        };
        let mut name = cell(&s.name);
        if let Some(reason) = s
            .skipped_reason
            .as_deref()
            .filter(|_| s.status == ServiceStatus::Skipped)
        {
            let _ = write!(name, " <sub>{}</sub>", cell(reason));
        }
        let _ = writeln!(
            out,
            "| {} | {name} | {image} | {duration} | {attempts} | {cached} | {} |",
            status_icon(s.status),
            s.size.map(text::size).unwrap_or_else(dash)
        );
    }
    if !all_rows {
        let hidden = report
            .services
            .iter()
            .filter(|s| s.status == ServiceStatus::Success)
            .count();
        if hidden > 0 {
            let _ = writeln!(
                out,
                "\n{} not listed.",
                count(hidden, "succeeded service", "succeeded services")
            );
        }
    }
    out.push('\n');
    out
}

fn base_images_table(report: &Report, all_rows: bool) -> String {
    let mut out = String::from("### Base images\n\n");
    let rows: Vec<&BaseImageResult> = report
        .base_images
        .iter()
        .filter(|b| all_rows || b.status == ImageStatus::Failed)
        .collect();
    if !rows.is_empty() {
        out.push_str("| | Base image | Source | Attempts | Wait | Time |\n");
        out.push_str("|:-:|:--|:--|--:|--:|--:|\n");
        for b in rows {
            let source = match (&b.source, b.status) {
                (Some(s), _) => format!("<code>{}</code>", cell(s)),
                (None, ImageStatus::Failed) => "not pulled".to_string(),
                (None, _) => dash(),
            };
            // The relay is the usual path; a pull the daemon made by itself says so.
            let source = match b.via {
                Some(crate::prefetch::PullPath::Direct) => format!("{source} (direct)"),
                _ => source,
            };
            let _ = writeln!(
                out,
                "| {} | <code>{}</code> | {source} | {} | {} | {} |",
                image_icon(b.status),
                cell(&b.reference),
                b.attempts,
                text::duration(b.wait_ms),
                text::duration(b.duration_ms)
            );
        }
    }
    if !all_rows {
        let hidden = report
            .base_images
            .iter()
            .filter(|b| b.status != ImageStatus::Failed)
            .count();
        if hidden > 0 {
            let _ = writeln!(
                out,
                "\n{} pulled or present, not listed.",
                count(hidden, "base image", "base images")
            );
        }
    }
    let mut reasons: Vec<&str> = report
        .base_images
        .iter()
        .filter(|b| b.via == Some(crate::prefetch::PullPath::Direct))
        .filter_map(|b| b.via_reason.as_deref())
        .collect();
    reasons.dedup();
    for reason in reasons {
        let _ = writeln!(
            out,
            "\nPulled direct (by the daemon itself): {}.",
            cell(reason)
        );
    }
    out.push('\n');
    out
}

/// Text whose backtick-quoted parts (names, settings) become code spans; everything is
/// escaped for a table cell or list item.
fn rich(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", cell(part))
            } else {
                cell(part)
            }
        })
        .collect()
}

/// Most images listed per outcome in the diagnosis section.
const MAX_DIAGNOSIS_IMAGES: usize = 10;

fn image_list(images: &[String]) -> String {
    let mut shown: Vec<String> = images
        .iter()
        .take(MAX_DIAGNOSIS_IMAGES)
        .map(|i| format!("<code>{}</code>", cell(i)))
        .collect();
    if images.len() > MAX_DIAGNOSIS_IMAGES {
        shown.push(format!("and {} more", images.len() - MAX_DIAGNOSIS_IMAGES));
    }
    shown.join(", ")
}

/// The diagnosis at the top of the summary: root cause and fix, the other findings, what
/// each source did, and what happened to the images that needed help.
fn diagnosis_section(d: &Diagnosis) -> String {
    let mut out = String::from("### 🩺 Diagnosis\n\n");
    let _ = writeln!(out, "**Root cause:** {}<br>", rich(&d.root_cause));
    let _ = writeln!(out, "**Fix:** {}\n", rich(&d.remediation));
    if d.findings.len() > 1 {
        out.push_str("Also:\n\n");
        for f in &d.findings[1..] {
            let _ = writeln!(out, "- {} — {}", rich(&f.cause), rich(&f.remediation));
        }
        out.push('\n');
    }
    out.push_str("| Source | Role | Requests | Failed | Failures by class | Pulls (failed) | Images served | Waiting |\n");
    out.push_str("|:--|:--|--:|--:|:--|--:|--:|--:|\n");
    for s in &d.sources {
        let classes: Vec<String> = s
            .failures_by_class
            .iter()
            .map(|(c, n)| format!("<code>{c}</code> × {n}"))
            .collect();
        let _ = writeln!(
            out,
            "| <code>{}</code> | {} of <code>{}</code> | {} | {} | {} | {} ({}) | {} | {} |",
            cell(&s.source),
            match s.role {
                SourceRole::Origin => "registry",
                SourceRole::Mirror => "mirror",
            },
            cell(&s.registry),
            s.requests,
            s.failed_requests,
            if classes.is_empty() {
                dash()
            } else {
                classes.join(", ")
            },
            s.pull_attempts,
            s.failed_pull_attempts,
            s.images_served,
            text::duration(s.wait_ms)
        );
    }
    out.push('\n');
    let i = &d.images;
    let mut outcomes = Vec::new();
    if !i.recovered_by_retry.is_empty() {
        let names: Vec<String> = i
            .recovered_by_retry
            .iter()
            .map(|r| r.image.clone())
            .collect();
        outcomes.push(format!("**Recovered by retries:** {}", image_list(&names)));
    }
    let mut mirrors: Vec<&str> = i
        .recovered_by_mirror
        .iter()
        .map(|r| r.source.as_str())
        .collect();
    mirrors.dedup();
    for mirror in mirrors {
        let names: Vec<String> = i
            .recovered_by_mirror
            .iter()
            .filter(|r| r.source == mirror)
            .map(|r| r.image.clone())
            .collect();
        outcomes.push(format!(
            "**From mirror <code>{}</code>:** {}",
            cell(mirror),
            image_list(&names)
        ));
    }
    if !i.lost.is_empty() {
        let names: Vec<String> = i.lost.iter().map(|l| l.image.clone()).collect();
        outcomes.push(format!("**Lost:** {}", image_list(&names)));
    }
    if d.wait_ms > 0 {
        outcomes.push(format!(
            "**Waiting on retries:** {}",
            text::duration(d.wait_ms)
        ));
    }
    if !outcomes.is_empty() {
        let _ = writeln!(out, "{}\n", outcomes.join("<br>\n"));
    }
    out
}

/// The learned source orders (configured ones are not worth a line).
fn source_order_lines(report: &Report) -> String {
    let mut out = String::new();
    for o in report.source_order.iter().filter(|o| o.learned) {
        let order: Vec<String> = o
            .order
            .iter()
            .map(|s| format!("<code>{}</code>", cell(s)))
            .collect();
        let _ = writeln!(
            out,
            "Source order for <code>{}</code>: {} ({})\n",
            cell(&o.registry),
            order.join(" → "),
            cell(&o.reason)
        );
    }
    out
}

fn network_section(report: &Report) -> String {
    let n = &report.network;
    let mut out = String::from("### Network\n\n");
    out.push_str(
        "| Retries | Failed pulls | Waiting on retries | Registry requests | Build retries |\n",
    );
    out.push_str("|--:|--:|--:|--:|--:|\n");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} |",
        n.retries,
        n.failed_pulls,
        text::duration(n.wait_ms),
        n.requests,
        n.build_retries
    );
    if !n.failures_by_class.is_empty() {
        let classes: Vec<String> = n
            .failures_by_class
            .iter()
            .map(|(c, k)| format!("<code>{c}</code> × {k}"))
            .collect();
        let _ = write!(out, "\nFailures by class: {}\n", classes.join(", "));
    }
    out.push('\n');
    out
}

fn failure_log(report: &Report) -> String {
    let lines: Vec<String> = report
        .failure_log
        .iter()
        .map(|e| {
            text::clean_line(
                &format!(
                    "{}  {:<7}  {}  {}  {}",
                    e.at, e.kind, e.subject, e.class, e.message
                ),
                MAX_LINE_CHARS,
            )
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<details>\n<summary>Failure log ({})</summary>\n",
        count(lines.len(), "failed attempt", "failed attempts")
    );
    out.push_str(&code_block("text", &lines));
    out.push_str("\n</details>\n\n");
    out
}

fn footer(report: &Report, opts: &SummaryOptions) -> String {
    let mut parts = vec![
        format!("ai-infra-build {}", cell(&report.tool_version)),
        format!("report format v{}", report.version),
    ];
    if !report.run.started_at.is_empty() {
        parts.push(format!("started {}", cell(&report.run.started_at)));
    }
    if let Some(url) = &opts.run_url {
        parts.push(format!(
            "[workflow run](<{}>)",
            url.replace(['<', '>', '\n', '\r'], "")
        ));
    }
    if let Some(path) = &opts.report_path {
        parts.push(format!("report <code>{}</code>", cell(path)));
    }
    format!("<sub>{}</sub>\n", parts.join(" · "))
}

/// The Markdown summary of one service, for its check run.
pub fn render_service(report: &Report, s: &ServiceResult, max_bytes: usize) -> String {
    for log_lines in [30, 10, 0] {
        let text = service_view(report, s, log_lines);
        if text.len() <= max_bytes {
            return text;
        }
    }
    text::truncate(
        &format!("{} {}: {:?}", status_icon(s.status), s.name, s.status),
        max_bytes / 4,
    )
}

fn service_view(report: &Report, s: &ServiceResult, log_lines: usize) -> String {
    let mut out = String::new();
    let status = match s.status {
        ServiceStatus::Success => "built",
        ServiceStatus::Failed => "failed",
        ServiceStatus::Skipped => "skipped",
        ServiceStatus::Cancelled => "cancelled",
    };
    let _ = writeln!(
        out,
        "### {} {} {status}\n",
        status_icon(s.status),
        cell(&s.name)
    );
    let mut facts = vec![format!("image <code>{}</code>", cell(&s.image))];
    if s.status != ServiceStatus::Skipped {
        facts.push(format!(
            "{} attempt{}",
            s.attempts,
            if s.attempts == 1 { "" } else { "s" }
        ));
        facts.push(text::duration(s.duration_ms));
    }
    if let Some(from) = s.reused_from.as_ref().filter(|_| s.reused) {
        facts.push(format!(
            "not built: {} <code>{}</code> has the same inputs",
            match from.source {
                crate::report::ReuseSource::Registry => "the registry's",
                crate::report::ReuseSource::Cache => "the cached image",
            },
            cell(&from.image)
        ));
    } else if s.reused {
        facts.push("not built: the cached image has the same inputs".into());
    } else if let (Some(c), Some(t)) = (s.cached_steps, s.total_steps) {
        facts.push(format!("{c}/{t} steps cached"));
    }
    if let Some(size) = s.size {
        facts.push(text::size(size));
    }
    let _ = writeln!(out, "{}\n", facts.join(" · "));
    if let Some(reason) = s
        .skipped_reason
        .as_deref()
        .filter(|_| s.status != ServiceStatus::Failed)
    {
        let _ = writeln!(out, "{}\n", cell(reason));
    }
    if is_failure(s) {
        out.push_str(&service_failure_block(s, log_lines).replacen(
            "<details>",
            "<details open>",
            1,
        ));
    }
    for b in report.base_images.iter().filter(|b| {
        b.status == ImageStatus::Failed && b.used_at.iter().any(|u| u.dockerfile == s.dockerfile)
    }) {
        out.push_str(&image_failure_block(report, b, log_lines.min(10)));
    }
    out
}

/// The step summary (GitHub-flavoured Markdown).
pub struct StepSummary;

impl super::View for StepSummary {
    fn name(&self) -> &'static str {
        "markdown"
    }

    fn about(&self) -> &'static str {
        "the step summary (Markdown)"
    }

    fn destinations(&self, ctx: &super::ViewContext) -> Vec<super::Destination> {
        if ctx.actions.step_summary.is_some() {
            vec![super::Destination::StepSummary]
        } else {
            Vec::new()
        }
    }

    fn render(&self, report: &Report, ctx: &super::ViewContext) -> String {
        render(
            report,
            &SummaryOptions {
                run_url: ctx.actions.run_url.clone(),
                report_path: Some(ctx.report_shown.clone()),
                ..SummaryOptions::step_summary()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_options_carry_the_marker_and_fit_the_comment_limit() {
        let o = SummaryOptions::comment();
        assert_eq!(o.header.as_deref(), Some(COMMENT_MARKER));
        assert!(o.max_bytes < COMMENT_LIMIT);
        assert!(SummaryOptions::step_summary().max_bytes < STEP_SUMMARY_LIMIT);
    }
}
