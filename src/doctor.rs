//! `doctor`: checks the environment a build needs and says what to fix.

use std::time::Duration;

use serde::Serialize;

use crate::cli::{DoctorArgs, OutputFormat};
use crate::engine::{self, Buildx, Engine, EngineFacts};
use crate::error::{Error, Exit};
use crate::ui::Ui;

/// Everything doctor found, in the shape `--output json` prints.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub engine: EngineFacts,
    pub buildx: Buildx,
    /// The buildx builders and whether each can export a layer cache.
    pub builders: Vec<engine::BuildxBuilder>,
}

pub async fn run(args: &DoctorArgs, ui: &Ui) -> Result<Exit, Error> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let engine = Engine::connect(timeout).await?;
    let facts = engine.facts().await?;
    let buildx = engine::buildx(timeout).await;
    let builders = match &buildx {
        Buildx::Available { .. } => engine::buildx_builders(timeout, facts.containerd_image_store).await.unwrap_or_default(),
        Buildx::Unavailable { .. } => Vec::new(),
    };
    let report = DoctorReport { engine: facts, buildx, builders };
    match ui.format {
        OutputFormat::Json => ui.json(&report),
        OutputFormat::Human => ui.result(&render(&report, ui)),
    }
    Ok(Exit::Success)
}

/// The human view: one fact per line, label column aligned.
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
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut lines: Vec<String> = rows.iter().map(|(label, value)| format!("{label:<width$}  {value}")).collect();
    for b in &report.builders {
        lines.push(format!(
            "{:<width$}  {} (driver {}, {}{}), cache export: {}",
            "  builder",
            b.name,
            b.driver,
            b.status,
            if b.endpoint.is_empty() || b.endpoint == b.name { String::new() } else { format!(", {}", b.endpoint) },
            if b.cache_export { "yes" } else { "no" }
        ));
    }
    lines.join("\n")
}
