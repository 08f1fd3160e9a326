//! Live progress of a run: indicatif spinners per pull and per build when the output sink is
//! a terminal, one plain line per event otherwise, nothing with `--quiet`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::ServiceStatus;
use super::text;
use crate::ui::{Sink, Ui};

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
    /// Spinners when the sink draws on a terminal, plain lines into the sink's notes
    /// otherwise, nothing when quiet.
    pub fn new(ui: &Ui) -> Progress {
        let mode = if ui.quiet {
            Mode::Quiet
        } else if let Some(target) = ui.sink.progress_target() {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: HashMap::new(),
            }
        } else {
            Mode::Lines(Box::new(SinkLines(ui.sink.clone(), Vec::new())))
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

/// Writes whole lines into a sink's notes stream.
struct SinkLines(Arc<dyn Sink>, Vec<u8>);

impl Write for SinkLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(end) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=end).collect();
            self.0.err(&String::from_utf8_lossy(&line));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.1.is_empty() {
            let rest = std::mem::take(&mut self.1);
            self.0.err(&String::from_utf8_lossy(&rest));
        }
        Ok(())
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
