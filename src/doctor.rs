//! `doctor`: checks the environment a build needs and says what to fix: the Docker daemon
//! (and its own view of registries: mirrors, insecure registries, proxies), buildx, the proxy
//! settings of this process, and every registry and mirror the project's base images come
//! from, step by step ([`crate::probe`]).
//!
//! This module holds what doctor found and how it reads; `crate::cmd` runs it.
//!
//! Exit status: [`crate::Exit::ImagesMissing`] when a registry the plan needs (or one named with
//! `--registry`) has no healthy source, else success.

use serde::Serialize;

use crate::engine::{self, Buildx, EngineFacts};
use crate::probe::{self, ProxyEnv, RegistryHealth, StepStatus};
use crate::report::text;
use crate::ui::Ui;

/// Everything doctor found, in the shape `--output json` prints.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub engine: EngineFacts,
    pub buildx: Buildx,
    /// The buildx builders and whether each can export a layer cache.
    pub builders: Vec<engine::BuildxBuilder>,
    /// HTTP(S)_PROXY and NO_PROXY of this process (the prefetch's requests follow them).
    pub proxy_env: ProxyEnv,
    /// The project found in the working directory, or why there is none.
    pub project: ProjectFound,
    /// Every registry probed, with each of its sources.
    pub registries: Vec<RegistryHealth>,
    /// Every registry the plan needs (or named with `--registry`) has a healthy source.
    pub registries_ok: bool,
    /// The most one probe step may take, in milliseconds.
    pub probe_timeout_ms: u64,
}

/// The project doctor looked at.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectFound {
    pub found: bool,
    /// `5 services (directory discovery), 4 base images on 2 registries`, or why not.
    pub note: String,
}

pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The human view: one fact per line, label column aligned; then the registries.
pub fn render(report: &DoctorReport, ui: &Ui) -> String {
    let e = &report.engine;
    let list = |items: &[String]| {
        if items.is_empty() {
            ui.dim("none")
        } else {
            items.join(", ")
        }
    };
    let opt = |item: &Option<String>| item.clone().unwrap_or_else(|| ui.dim("none"));
    let min_api = e
        .min_api_version
        .as_deref()
        .map(|v| format!(", minimum {v}"))
        .unwrap_or_default();
    let store = if e.containerd_image_store {
        "containerd (snapshotter): buildx local cache export works".to_string()
    } else {
        "classic (graph driver): no buildx local cache export; inline cache is used".to_string()
    };
    let buildx = match &report.buildx {
        Buildx::Available { version, .. } => ui.good(&format!("available, version {version}")),
        Buildx::Unavailable { reason } => {
            format!(
                "{}; the engine API builder will be used",
                ui.bad(&format!("not available ({reason})"))
            )
        }
    };
    let p = &report.proxy_env;
    let rows = [
        (
            "Docker daemon",
            format!("{} {}", ui.good("reachable at"), e.host),
        ),
        (
            "Engine",
            format!("{} (API {}{min_api})", e.engine_version, e.api_version),
        ),
        (
            "System",
            format!("{}, {}, kernel {}", e.os, e.arch, e.kernel),
        ),
        ("Storage driver", e.storage_driver.clone()),
        ("Image store", store),
        ("Registry mirrors", list(&e.registry_mirrors)),
        ("Insecure registries", list(&e.insecure_registries)),
        ("HTTP proxy", opt(&e.http_proxy)),
        ("HTTPS proxy", opt(&e.https_proxy)),
        ("No proxy", opt(&e.no_proxy)),
        ("buildx", buildx),
    ];
    let more = [
        (
            "Our proxy env",
            format!(
                "HTTP_PROXY {}, HTTPS_PROXY {}, NO_PROXY {}",
                opt(&p.http_proxy),
                opt(&p.https_proxy),
                opt(&p.no_proxy)
            ),
        ),
        ("Project", text::clean_line(&report.project.note, 300)),
    ];
    let width = rows
        .iter()
        .chain(&more)
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}"))
        .collect();
    for b in &report.builders {
        lines.push(format!(
            "{:<width$}  {} (driver {}, {}{}), cache export: {}",
            "  builder",
            b.name,
            b.driver,
            b.status,
            if b.endpoint.is_empty() || b.endpoint == b.name {
                String::new()
            } else {
                format!(", {}", b.endpoint)
            },
            if b.cache_export { "yes" } else { "no" }
        ));
    }
    lines.extend(
        more.iter()
            .map(|(label, value)| format!("{label:<width$}  {value}")),
    );
    if !report.registries.is_empty() {
        lines.push(String::new());
        lines.push(registries_table(report, ui));
    }
    lines.join("\n")
}

/// One row per source: each step's time (or what became of it) and the verdict; under each
/// registry, whether a build can get its images; under a failed source, what its failing
/// step said.
fn registries_table(report: &DoctorReport, ui: &Ui) -> String {
    let header: Vec<String> = ["SOURCE", "ROLE"]
        .iter()
        .map(|h| h.to_string())
        .chain(
            probe::Step::ALL
                .iter()
                .map(|s| s.label().to_ascii_uppercase()),
        )
        .chain(["RESULT".to_string()])
        .collect();
    let mut rows: Vec<(usize, Vec<String>, bool)> = Vec::new();
    for (i, r) in report.registries.iter().enumerate() {
        for s in &r.sources {
            let mut row = vec![
                text::clean_line(&s.source, 60),
                match s.role {
                    crate::report::diagnosis::SourceRole::Origin => "registry".to_string(),
                    crate::report::diagnosis::SourceRole::Mirror => "mirror".to_string(),
                },
            ];
            for step in &s.steps {
                row.push(match step.status {
                    StepStatus::Ok => text::duration(step.duration_ms),
                    StepStatus::Failed => "FAIL".to_string(),
                    StepStatus::Skipped if step.detail == probe::PLAIN_HTTP => "plain".to_string(),
                    StepStatus::Skipped => "-".to_string(),
                });
            }
            row.push(match s.failure() {
                None => "healthy".to_string(),
                Some(f) => format!(
                    "{} failed: {}",
                    f.step,
                    f.class.map_or("other".to_string(), |c| c.to_string())
                ),
            });
            rows.push((i, row, s.healthy));
        }
    }
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for (_, row, _) in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![format!(
        "Registries (each step at most {}, tried once):",
        text::duration(report.probe_timeout_ms)
    )];
    out.push(format!("    {}", ui.dim(&line(&header))));
    for (i, r) in report.registries.iter().enumerate() {
        let need = if r.needed_by.is_empty() {
            if r.required {
                "named with --registry".to_string()
            } else {
                "mirrors configured, not needed by the plan".to_string()
            }
        } else {
            format!(
                "needed by {}",
                plural(r.needed_by.len(), "base image", "base images")
            )
        };
        let verdict = match (r.healthy, r.required) {
            (true, _) => ui.good("✔"),
            (false, true) => ui.bad("✘"),
            (false, false) => ui.dim("!"),
        };
        let tail = if r.healthy || !r.required {
            String::new()
        } else {
            format!(": {}", ui.bad("no healthy source"))
        };
        out.push(format!(
            "  {verdict} {} ({need}){tail}",
            text::clean_line(&r.registry, 80)
        ));
        for (_, row, healthy) in rows.iter().filter(|(j, _, _)| *j == i) {
            let text = line(row);
            out.push(format!(
                "    {}",
                if *healthy { text } else { ui.bad(&text) }
            ));
        }
        for s in &r.sources {
            if let Some(f) = s.failure() {
                out.push(format!(
                    "      {} {}",
                    ui.dim(&format!("{} {}:", s.source, f.step)),
                    text::clean_line(&f.detail, 300)
                ));
            }
        }
    }
    out.join("\n")
}
