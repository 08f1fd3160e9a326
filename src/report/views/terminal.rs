//! The terminal view: the final table of results ([`render`]), coloured through [`Ui`] (so
//! `--color` and NO_COLOR are respected). Live progress while a run goes on is
//! [`crate::report::progress`].

use std::fmt::Write as _;

use console::{Style, measure_text_width};

use super::annotations::failure_label;
use crate::prefetch::ImageStatus;
use crate::report::diagnosis::{Diagnosis, SourceRole};
use crate::report::text;
use crate::report::{Report, ServiceStatus};
use crate::ui::Ui;

/// Log lines shown under a failed service in the final table.
const LOG_LINES: usize = 10;

fn glyph(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Success => "✔",
        ServiceStatus::Failed => "✘",
        ServiceStatus::Skipped => "-",
        ServiceStatus::Cancelled => "■",
    }
}

fn paint_status(ui: &Ui, status: ServiceStatus, text: &str) -> String {
    match status {
        ServiceStatus::Success => ui.good(text),
        ServiceStatus::Failed => ui.bad(text),
        ServiceStatus::Skipped => ui.dim(text),
        ServiceStatus::Cancelled => ui.paint(&Style::new().yellow(), text),
    }
}

/// Pads `text` (which may hold colour codes) to `width` visible columns.
fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(measure_text_width(text)));
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

/// The final table of a run, for a terminal or a plain log.
pub fn render(report: &Report, ui: &Ui) -> String {
    let mut out = String::new();
    let header = ["", "SERVICE", "IMAGE", "TIME", "TRIES", "CACHED", "SIZE"];
    let mut rows: Vec<(ServiceStatus, [String; 7], Option<String>)> = Vec::new();
    for s in &report.services {
        let skipped = s.status == ServiceStatus::Skipped;
        let reason = s
            .skipped_reason
            .as_deref()
            .filter(|_| skipped)
            .map(|r| text::clean_line(r, 120));
        rows.push((
            s.status,
            [
                glyph(s.status).to_string(),
                text::clean_line(&s.name, 60),
                text::clean_line(&s.image, 80),
                if skipped {
                    "-".into()
                } else {
                    text::duration(s.duration_ms)
                },
                if skipped {
                    "-".into()
                } else {
                    s.attempts.to_string()
                },
                match (s.cached_steps, s.total_steps) {
                    _ if s.reused => s.reuse_label().unwrap_or_default(),
                    (Some(c), Some(t)) if t > 0 => format!("{c}/{t}"),
                    _ => "-".into(),
                },
                s.size.map(text::size).unwrap_or_else(|| "-".into()),
            ],
            reason,
        ));
    }
    let mut widths = header.map(measure_text_width);
    for (_, row, _) in &rows {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(measure_text_width(c));
        }
    }
    let right = [false, false, false, true, true, true, true];
    if !rows.is_empty() {
        let line: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, h)| pad(h, widths[i], right[i]))
            .collect();
        let _ = writeln!(out, "{}", ui.dim(line.join("  ").trim_end()));
        for (status, row, reason) in &rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let padded = pad(c, widths[i], right[i]);
                    if i <= 1 {
                        paint_status(ui, *status, &padded)
                    } else {
                        padded
                    }
                })
                .collect();
            let mut line = cells.join("  ");
            if let Some(reason) = reason {
                let _ = write!(line, "  {}", ui.dim(&format!("({reason})")));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }

    for s in report
        .services
        .iter()
        .filter(|s| matches!(s.status, ServiceStatus::Failed | ServiceStatus::Cancelled))
    {
        out.push('\n');
        let what = match &s.failure {
            Some(f) => {
                let (label, human) = failure_label(f.class);
                match f.network_class {
                    Some(n) => format!("{human} ({label}: {n})"),
                    None => format!("{human} ({label})"),
                }
            }
            None => "cancelled".to_string(),
        };
        let at = match s.failure.as_ref().and_then(|f| f.line) {
            Some(line) => format!(" at {}:{line}", s.dockerfile),
            None if !s.dockerfile.is_empty() => format!(" in {}", s.dockerfile),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {}: {what}{}",
            ui.bad(glyph(s.status)),
            ui.bad(&text::clean_line(&s.name, 60)),
            text::clean_line(&at, 200)
        );
        if let Some(f) = &s.failure {
            for line in f.message.lines().take(5) {
                let _ = writeln!(out, "    {}", text::clean_line(line, 300));
            }
        }
        let start = s.log_tail.len().saturating_sub(LOG_LINES);
        for line in &s.log_tail[start..] {
            let _ = writeln!(out, "    {} {}", ui.dim("│"), text::clean_line(line, 300));
        }
        if let Some(path) = &s.log_path {
            let _ = writeln!(
                out,
                "    {}",
                ui.dim(&format!("full log: {}", text::clean_line(path, 300)))
            );
        }
    }

    let failed_images: Vec<_> = report
        .base_images
        .iter()
        .filter(|b| b.status == ImageStatus::Failed)
        .collect();
    if !failed_images.is_empty() {
        out.push('\n');
        for b in failed_images {
            let class = b
                .error_class
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                out,
                "{} base image {} not pulled after {} attempts ({class}): {}",
                ui.paint(&Style::new().yellow(), "!"),
                text::clean_line(&b.reference, 200),
                b.attempts,
                text::clean_line(b.error.as_deref().unwrap_or(""), 300)
            );
        }
    }

    if let Some(d) = &report.diagnosis {
        out.push('\n');
        out.push_str(&render_diagnosis(d, ui));
    }
    for o in report.source_order.iter().filter(|o| o.learned) {
        let _ = writeln!(
            out,
            "{}",
            ui.dim(&text::clean_line(
                &format!(
                    "source order for {}: {} ({})",
                    o.registry,
                    o.order.join(" → "),
                    o.reason
                ),
                400
            ))
        );
    }

    let counts = crate::report::ReuseCounts::of(&report.services);
    if let Some(line) = counts.line(&report.totals) {
        out.push('\n');
        let _ = writeln!(out, "{}", ui.dim(&line));
        for s in &report.services {
            if let Some(from) = s.reused_from.as_ref().filter(|_| s.reused) {
                let _ = writeln!(
                    out,
                    "{}",
                    ui.dim(&text::clean_line(
                        &format!(
                            "  {} reused ({}) from {}{}",
                            s.name,
                            from.source.label(),
                            from.image,
                            from.digest
                                .as_deref()
                                .filter(|d| *d != from.image)
                                .map(|d| format!(" {d}"))
                                .unwrap_or_default()
                        ),
                        400
                    ))
                );
            }
        }
    }
    let n = &report.network;
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        ui.dim(&format!(
            "base images: {} ({} not pulled) · retries: {} · waited on retries: {} · registry requests: {} · build retries: {}",
            report.totals.base_images,
            report.totals.base_images_missing,
            n.retries,
            text::duration(n.wait_ms),
            n.requests,
            n.build_retries
        ))
    );
    let t = &report.totals;
    let mut headline = format!(
        "{} in {}",
        report.headline(),
        text::duration(report.run.duration_ms)
    );
    if t.failed > 0 {
        let _ = write!(headline, ", {} failed", t.failed);
    }
    if t.skipped > 0 {
        let _ = write!(headline, ", {} skipped", t.skipped);
    }
    if t.cancelled > 0 {
        let _ = write!(headline, ", {} cancelled", t.cancelled);
    }
    if report.run.interrupted {
        headline.push_str(" (interrupted: partial results)");
    }
    let ok = t.failed == 0 && t.cancelled == 0 && !report.run.interrupted;
    let _ = writeln!(
        out,
        "{}",
        if ok {
            ui.good(&headline)
        } else {
            ui.bad(&headline)
        }
    );
    out
}

/// The diagnosis block: root cause, fix, the other findings, per-source counts, outcomes.
/// (Also for views of a prefetch alone.)
pub fn render_diagnosis(d: &Diagnosis, ui: &Ui) -> String {
    let line = |t: &str| text::clean_line(t, 400);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        ui.paint(&Style::new().yellow().bold(), "diagnosis:"),
        line(&d.root_cause)
    );
    let _ = writeln!(
        out,
        "  {} {}",
        ui.paint(&Style::new().cyan(), "fix:"),
        line(&d.remediation)
    );
    for f in d.findings.iter().skip(1) {
        let _ = writeln!(
            out,
            "  {} {}; {} {}",
            ui.dim("also:"),
            line(&f.cause),
            ui.dim("fix:"),
            line(&f.remediation)
        );
    }
    for s in &d.sources {
        let classes: Vec<String> = s
            .failures_by_class
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let role = match s.role {
            SourceRole::Origin => "registry",
            SourceRole::Mirror => "mirror",
        };
        let _ = writeln!(
            out,
            "  {}",
            ui.dim(&line(&format!(
                "{} ({role} of {}): {} requests, {} failed{}; {} pulls, {} failed; served {}; waited {}",
                s.source,
                s.registry,
                s.requests,
                s.failed_requests,
                if classes.is_empty() { String::new() } else { format!(" ({})", classes.join(", ")) },
                s.pull_attempts,
                s.failed_pull_attempts,
                s.images_served,
                text::duration(s.wait_ms)
            )))
        );
    }
    let list = |names: Vec<&str>| {
        let shown: Vec<&str> = names.iter().take(10).copied().collect();
        let more = names.len().saturating_sub(10);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    };
    let i = &d.images;
    if !i.recovered_by_retry.is_empty() {
        let names = i
            .recovered_by_retry
            .iter()
            .map(|r| r.image.as_str())
            .collect();
        let _ = writeln!(out, "  recovered by retries: {}", line(&list(names)));
    }
    if !i.recovered_by_mirror.is_empty() {
        let names = i
            .recovered_by_mirror
            .iter()
            .map(|r| r.image.as_str())
            .collect();
        let _ = writeln!(out, "  from a mirror: {}", line(&list(names)));
    }
    if !i.lost.is_empty() {
        let names = i.lost.iter().map(|l| l.image.as_str()).collect();
        let _ = writeln!(out, "  {} {}", ui.bad("lost:"), line(&list(names)));
    }
    out
}

/// The final table of a run (its headline alone with `--quiet`).
pub struct Terminal;

impl super::View for Terminal {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn about(&self) -> &'static str {
        "the final table, as printed at the end of a run"
    }

    fn destinations(&self, ctx: &super::ViewContext) -> Vec<super::Destination> {
        if super::json_output(ctx.ui) {
            Vec::new()
        } else {
            vec![super::Destination::Result]
        }
    }

    fn render(&self, report: &Report, ctx: &super::ViewContext) -> String {
        if ctx.ui.quiet {
            report.headline()
        } else {
            render(report, ctx.ui)
        }
    }
}
