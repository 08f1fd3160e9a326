//! The terminal view: live progress while a run goes on ([`Progress`]: indicatif spinners per
//! pull and per build when stderr is a terminal, one plain line per event otherwise) and the
//! final table of results ([`render`]), coloured through [`Ui`] (so `--color` and NO_COLOR
//! are respected).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use console::{Style, measure_text_width};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::annotations::failure_label;
use super::diagnosis::{Diagnosis, SourceRole};
use super::text;
use super::{Report, ServiceStatus};
use crate::prefetch::ImageStatus;
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
                    _ if s.reused => "reused".into(),
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

/// Live progress of a run: call the `*_started`/`*_finished` methods as things happen (from
/// any thread; the methods take `&self`). On a terminal: one spinner per running pull or
/// build under a [`MultiProgress`]; otherwise (CI logs, pipes): one plain line per event on
/// stderr. Nothing at all with `--quiet`.
pub struct Progress {
    started: Instant,
    color: bool,
    inner: Mutex<Mode>,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    Lines(Box<dyn Write + Send>),
    Quiet,
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise, nothing when quiet.
    pub fn new(ui: &Ui) -> Progress {
        let mode = if ui.quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: HashMap::new(),
            }
        } else {
            Mode::Lines(Box::new(std::io::stderr()))
        };
        Progress {
            started: Instant::now(),
            color: ui.color,
            inner: Mutex::new(mode),
        }
    }

    /// Plain lines written to `out` (for tests and for logs).
    pub fn plain(out: Box<dyn Write + Send>, color: bool) -> Progress {
        Progress {
            started: Instant::now(),
            color,
            inner: Mutex::new(Mode::Lines(out)),
        }
    }

    /// Shows nothing.
    pub fn hidden() -> Progress {
        Progress {
            started: Instant::now(),
            color: false,
            inner: Mutex::new(Mode::Quiet),
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            style.force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    fn begin(&self, key: String, label: String) {
        let elapsed = self.started.elapsed();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Mode::Bars { multi, bars } => {
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed:>4}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = multi.add(
                    ProgressBar::new_spinner()
                        .with_style(style)
                        .with_message(label),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Some(old) = bars.insert(key, bar) {
                    old.finish_and_clear();
                }
            }
            Mode::Lines(out) => {
                let _ = writeln!(
                    out,
                    "[{:>7}] {label}",
                    text::duration(elapsed.as_millis() as u64)
                );
            }
            Mode::Quiet => {}
        }
    }

    fn end(&self, key: &str, label: String) {
        let elapsed = self.started.elapsed();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Mode::Bars { multi, bars } => match bars.remove(key) {
                Some(bar) => {
                    bar.set_style(
                        ProgressStyle::with_template("{msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.finish_with_message(label);
                }
                None => {
                    let _ = multi.println(label);
                }
            },
            Mode::Lines(out) => {
                let _ = writeln!(
                    out,
                    "[{:>7}] {label}",
                    text::duration(elapsed.as_millis() as u64)
                );
            }
            Mode::Quiet => {}
        }
    }

    pub fn image_started(&self, reference: &str) {
        self.begin(
            format!("pull {reference}"),
            format!("pull  {}", text::clean_line(reference, 200)),
        );
    }

    /// `outcome` is shown as is (`pulled from mirror.example.com`, `failed: EOF`).
    pub fn image_finished(&self, reference: &str, ok: bool, outcome: &str, took: Duration) {
        let mark = if ok {
            self.paint(Style::new().green(), "✔")
        } else {
            self.paint(Style::new().red(), "✘")
        };
        self.end(
            &format!("pull {reference}"),
            format!(
                "{mark} pull  {} {} ({})",
                text::clean_line(reference, 200),
                text::clean_line(outcome, 300),
                text::duration(took.as_millis() as u64)
            ),
        );
    }

    pub fn service_started(&self, name: &str, attempt: u32) {
        let again = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        self.begin(
            format!("build {name}"),
            format!("build {}{again}", text::clean_line(name, 100)),
        );
    }

    pub fn service_finished(&self, name: &str, status: ServiceStatus, took: Duration) {
        let (mark, word) = match status {
            ServiceStatus::Success => (self.paint(Style::new().green(), "✔"), "built"),
            ServiceStatus::Failed => (self.paint(Style::new().red(), "✘"), "FAILED"),
            ServiceStatus::Skipped => (self.paint(Style::new().dim(), "-"), "skipped"),
            ServiceStatus::Cancelled => (self.paint(Style::new().yellow(), "■"), "cancelled"),
        };
        self.end(
            &format!("build {name}"),
            format!(
                "{mark} build {} {word} in {}",
                text::clean_line(name, 100),
                text::duration(took.as_millis() as u64)
            ),
        );
    }

    /// A line of its own between the spinners (or in the plain log).
    pub fn println(&self, line: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Mode::Lines(out) => {
                let _ = writeln!(out, "{line}");
            }
            Mode::Quiet => {}
        }
    }

    /// Clears any spinner still running (call before printing the final result).
    pub fn finish(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Mode::Bars { multi, bars } => {
                for (_, bar) in bars.drain() {
                    bar.finish_and_clear();
                }
                let _ = multi.clear();
            }
            Mode::Lines(out) => {
                let _ = out.flush();
            }
            Mode::Quiet => {}
        }
    }
}

/// A `Write` into shared memory, to read back what [`Progress::plain`] wrote.
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_writes_one_line_per_event() {
        let buf = SharedBuffer::default();
        let p = Progress::plain(Box::new(buf.clone()), false);
        p.image_started("ubuntu:22.04");
        p.image_finished(
            "ubuntu:22.04",
            true,
            "pulled from docker.io",
            Duration::from_millis(1200),
        );
        p.service_started("api", 1);
        p.service_started("api", 2);
        p.service_finished("api", ServiceStatus::Failed, Duration::from_secs(65));
        p.println("note");
        p.finish();
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].ends_with("] pull  ubuntu:22.04"), "{text}");
        assert!(
            lines[1].ends_with("✔ pull  ubuntu:22.04 pulled from docker.io (1.2s)"),
            "{text}"
        );
        assert!(lines[3].ends_with("build api (attempt 2)"), "{text}");
        assert!(lines[4].ends_with("✘ build api FAILED in 1m 05s"), "{text}");
        assert_eq!(lines[5], "note");
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn plain_progress_cleans_names() {
        let buf = SharedBuffer::default();
        let p = Progress::plain(Box::new(buf.clone()), true);
        p.service_started("evil\u{1b}[2J\nname", 1);
        let text = buf.text();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.contains("\u{1b}[2J"));
    }

    #[test]
    fn hidden_progress_shows_nothing_and_does_not_panic() {
        let p = Progress::hidden();
        p.service_started("a", 1);
        p.service_finished("a", ServiceStatus::Success, Duration::ZERO);
        p.finish();
    }
}
