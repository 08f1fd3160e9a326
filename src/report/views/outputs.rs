//! Step outputs (`GITHUB_OUTPUT`): `report` (path of the JSON report), `succeeded`, `failed`,
//! `skipped` (counts), `failed-services` (JSON list of names) and `images` (JSON map service →
//! `{ref, tags, digest, image-id}`: `digest` the registry's digest after a push, `image-id` the
//! local image ID) and `metadata` (JSON map service → buildx's metadata keys: `image.name`,
//! `containerimage.digest`, `containerimage.config.digest`). Written in the heredoc form `name<<DELIMITER` with a random delimiter that
//! does not occur in the value, so no value can end its block early or forge another output.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::report::{Report, ServiceStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageOutput {
    #[serde(rename = "ref")]
    pub reference: String,
    /// The extra tags.
    pub tags: Vec<String>,
    /// After a push: the registry's digest of the pushed manifest or index (sign and attest
    /// this one); `null` when nothing was pushed.
    pub digest: Option<String>,
    /// The local image ID (`sha256:…`), when the build produced one.
    #[serde(rename = "image-id")]
    pub image_id: Option<String>,
}

/// buildx's `--metadata-file` keys for one service (what build-push-action's `metadata` holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The references, comma-separated.
    #[serde(rename = "image.name")]
    pub name: String,
    #[serde(
        rename = "containerimage.digest",
        skip_serializing_if = "Option::is_none"
    )]
    pub digest: Option<String>,
    #[serde(
        rename = "containerimage.config.digest",
        skip_serializing_if = "Option::is_none"
    )]
    pub config_digest: Option<String>,
}

/// The outputs of a run, in a fixed order.
pub fn outputs(report: &Report, report_path: &str) -> Vec<(String, String)> {
    let failed: Vec<&str> = report
        .services
        .iter()
        .filter(|s| s.status == ServiceStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let built = || {
        report
            .services
            .iter()
            .filter(|s| s.status == ServiceStatus::Success)
    };
    let images: BTreeMap<&str, ImageOutput> = built()
        .map(|s| {
            (
                s.name.as_str(),
                ImageOutput {
                    reference: s.image.clone(),
                    tags: s.tags.clone(),
                    digest: s.digest.clone(),
                    image_id: s.image_id.clone(),
                },
            )
        })
        .collect();
    let metadata: BTreeMap<&str, Metadata> = built()
        .map(|s| {
            let names: Vec<&str> = std::iter::once(s.image.as_str())
                .chain(s.tags.iter().map(String::as_str))
                .collect();
            (
                s.name.as_str(),
                Metadata {
                    name: names.join(","),
                    digest: s.digest.clone(),
                    config_digest: s.image_id.clone(),
                },
            )
        })
        .collect();
    vec![
        ("report".into(), report_path.to_string()),
        ("succeeded".into(), report.totals.succeeded.to_string()),
        ("failed".into(), report.totals.failed.to_string()),
        ("skipped".into(), report.totals.skipped.to_string()),
        (
            "failed-services".into(),
            serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into()),
        ),
        (
            "images".into(),
            serde_json::to_string(&images).unwrap_or_else(|_| "{}".into()),
        ),
        (
            "metadata".into(),
            serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".into()),
        ),
        (
            "cache-content-key".into(),
            report
                .cache
                .as_ref()
                .and_then(|c| c.content_key.clone())
                .unwrap_or_default(),
        ),
    ]
}

/// The step outputs of a run.
pub struct StepOutputs;

impl super::View for StepOutputs {
    fn name(&self) -> &'static str {
        "outputs"
    }

    fn about(&self) -> &'static str {
        "the step outputs (`GITHUB_OUTPUT` text)"
    }

    fn destinations(&self, ctx: &super::ViewContext) -> Vec<super::Destination> {
        if ctx.actions.output.is_some() {
            vec![super::Destination::StepOutputs]
        } else {
            Vec::new()
        }
    }

    fn render(&self, report: &Report, ctx: &super::ViewContext) -> String {
        render(&outputs(report, &ctx.report_path))
    }
}

/// One output in the heredoc form, ending with a newline.
pub fn heredoc(name: &str, value: &str) -> String {
    let delimiter = loop {
        let d = format!(
            "ghadelimiter_{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        if !value.contains(&d) && !name.contains(&d) {
            break d;
        }
    };
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// All outputs as the text appended to `GITHUB_OUTPUT`.
pub fn render(outputs: &[(String, String)]) -> String {
    outputs.iter().map(|(k, v)| heredoc(k, v)).collect()
}

/// Appends `text` to the file at `path` (the runner's `GITHUB_OUTPUT` or
/// `GITHUB_STEP_SUMMARY`), creating it if needed.
pub fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner's reading of a `GITHUB_OUTPUT` file (`SetOutputFileCommand`), ported:
    /// `name=value` lines, or `name<<DELIM` … `DELIM` blocks.
    fn parse(file: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut lines = file.split('\n').peekable();
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            if let Some((name, delim)) = line.split_once("<<") {
                let mut value = Vec::new();
                for l in lines.by_ref() {
                    if l == delim {
                        break;
                    }
                    value.push(l);
                }
                out.push((name.to_string(), value.join("\n")));
            } else if let Some((name, value)) = line.split_once('=') {
                out.push((name.to_string(), value.to_string()));
            }
        }
        out
    }

    #[test]
    fn heredoc_round_trips_values_that_look_like_outputs() {
        let nasty = "line1\nfailed=0\nEOF\nghadelimiter_\nimages<<X\n%0A::set-output name=a::b";
        let outputs = vec![
            ("a".to_string(), nasty.to_string()),
            ("b".to_string(), "".to_string()),
            ("c".to_string(), "2".to_string()),
        ];
        let text = render(&outputs);
        assert_eq!(parse(&text), outputs);
    }

    #[test]
    fn delimiters_are_random() {
        let a = heredoc("x", "v");
        let b = heredoc("x", "v");
        assert_ne!(a, b);
        assert!(a.starts_with("x<<ghadelimiter_"));
    }
}
