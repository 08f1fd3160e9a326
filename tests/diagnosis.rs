//! Issue #8, acceptance 2: the run report's diagnosis, from a real run (`build-all`, the
//! real daemon, the fault proxy): with EOF on 40% of the origin's manifest requests and a
//! healthy mirror, the diagnosis names the origin, the fault class and its counts, the images
//! recovered by retries and those recovered from the mirror, at the top of the step summary,
//! in the terminal view and in the JSON report. A fault-free run has no diagnosis section.
//!
//! The origin is "Docker Hub-like" and flaky: images are referenced by the proxy's host
//! (`127.0.0.1:PROXY/library/x:1`), and `--mirror 127.0.0.1:PROXY=127.0.0.1:MIRROR` names a
//! healthy registry holding the same images. Pulls go one at a time (`--pull-concurrency 1`)
//! and the prefetch ends before any build starts (`--prefetch-failure fail`), so the proxy
//! numbers the origin's requests in the same order every run: the seed fixes which request
//! fails, and so the whole diagnosis (snapshot-tested with ports, names and durations
//! redacted).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::collections::BTreeMap;

use ai_infra_build::health::OrderDecision;
use ai_infra_build::registry::RequestKind as Kind;
use ai_infra_build::report::diagnosis::{
    self, Evidence, ImageOutcomes, KindCount, LostImage, RecoveredImage, SourceRole, SourceStats,
};
use ai_infra_build::report::summary::{self, SummaryOptions};
use ai_infra_build::report::{Report, RunMeta, terminal};
use ai_infra_build::retry::ErrorClass;
use ai_infra_build::ui::Ui;
use serde_json::Value;
use testbed::TestBed;
use testbed::images::{ImageSpec, push_image};
use testbed::proxy::{FaultConfig, FaultType, KindFaults, RequestKind};
use testbed::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");
const IMAGES: usize = 5;
/// The proxy's seed: with it, the faulted run recovers images both by retries and from the
/// mirror (found by trying seeds; fixed, so the run is the same every time).
const SEED: u64 = 2;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    summary: String,
    report: Value,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `build-all` in `dir` with a step summary file, bounded by 3 minutes.
async fn build_all(dir: &Path, name: &str, args: &[String]) -> Run {
    let out_dir = dir.join("out");
    let summary = dir.join("summary.md");
    let _ = std::fs::remove_file(&summary);
    let child = tokio::process::Command::new(BIN)
        .arg("build-all")
        .args(args)
        .args([
            "--backend",
            "engine",
            "--pull",
            "always",
            "--pull-concurrency",
            "1",
        ])
        .args(["--prefetch-failure", "fail", "--tag", "t"])
        .arg("--prefix")
        .arg(format!("{name}-"))
        .arg("--out-dir")
        .arg(&out_dir)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("DOCKER_HOST")
        .env_remove("INPUT_MIRRORS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("build-all finishes within 3 minutes")
        .expect("the binary runs");
    let report = std::fs::read_to_string(out_dir.join("ai-infra-build-report.json"))
        .map(|t| serde_json::from_str(&t).expect("the report is JSON"))
        .unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        summary: std::fs::read_to_string(&summary).unwrap_or_default(),
        report,
    }
}

/// The summary's diagnosis section (from its heading to the next heading).
fn diagnosis_section(summary: &str) -> Option<String> {
    let start = summary.find("### 🩺 Diagnosis")?;
    let rest = &summary[start..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |i| i + 5);
    Some(rest[..end].trim_end().to_string())
}

/// Pushes `IMAGES` images `library/<name>-<i>:1` to both registries (without random layers
/// an image is the same bytes on both) and writes one service per image into `dir`, `FROM`
/// it through the origin. Returns the references.
async fn write_project(
    dir: &Path,
    origin: &TestBed,
    mirror: &Registry,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let mut references = Vec::new();
    for i in 0..IMAGES {
        let spec = ImageSpec::new(format!("library/{name}-{i}"), "1");
        push_image(&origin.registry.host(), &spec).await?;
        push_image(&mirror.host(), &spec).await?;
        let reference = format!("{}/library/{name}-{i}:1", origin.proxy.host());
        let svc = dir.join(format!("svc{i}"));
        std::fs::create_dir_all(&svc)?;
        std::fs::write(
            svc.join("Dockerfile"),
            format!("FROM {reference}\nLABEL n={i}\n"),
        )?;
        references.push(reference);
    }
    Ok(references)
}

async fn project(
    origin: &TestBed,
    mirror: &Registry,
    name: &str,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    write_project(dir.path(), origin, mirror, name).await?;
    Ok(dir)
}

fn images_of(report: &Value, list: &str) -> Vec<String> {
    report["diagnosis"]["images"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["image"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn issue8_diagnosis_names_the_flaky_origin_and_what_saved_each_image() -> anyhow::Result<()> {
    let name = testbed::unique_name("diag");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let origin = TestBed::start(|o| o.with_seed(SEED)).await?;
    let mirror = Registry::start().await?;
    // Two projects with their own images: a manifest the daemon fetched once stays in its
    // content store for a while, and a pull that finds it there sends no GET for it.
    let clean_dir = project(&origin, &mirror, &format!("{name}-clean")).await?;
    let dir = {
        let dir = tempfile::tempdir()?;
        write_project(dir.path(), &origin, &mirror, &name).await?;
        dir
    };
    let args = vec![
        "--mirror".to_string(),
        format!("{}={}", origin.proxy.host(), mirror.host()),
        "--max-retries".to_string(),
        "1".to_string(),
    ];

    // Fault-free: no diagnosis anywhere.
    let clean = build_all(clean_dir.path(), &name, &args).await;
    assert_eq!(clean.code, 0, "{}", clean.describe());
    assert_eq!(schema_errors(&clean.report), Vec::<String>::new());
    assert!(
        clean.report.get("diagnosis").is_none(),
        "{:#}",
        clean.report
    );
    assert_eq!(diagnosis_section(&clean.summary), None, "{}", clean.summary);
    assert!(!clean.stdout.contains("diagnosis:"), "{}", clean.stdout);

    // EOF on 40% of the origin's manifest requests.
    let eof = KindFaults::default().with_rate(FaultType::Eof, 0.4);
    origin.proxy.set_faults(
        FaultConfig::default()
            .with_kind(RequestKind::ManifestHead, eof.clone())
            .with_kind(RequestKind::ManifestGet, eof),
    )?;
    origin.proxy.reset_stats();
    let run = build_all(dir.path(), &name, &args).await;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = &run.report;
    let d = &report["diagnosis"];
    assert!(d.is_object(), "a diagnosis: {report:#}");
    assert_eq!(schema_errors(report), Vec::<String>::new());

    // It names the origin, the class and the counts the proxy injected.
    let origin_host = origin.proxy.host();
    let injected = origin
        .proxy
        .stats()
        .faults(RequestKind::ManifestHead, FaultType::Eof)
        + origin
            .proxy
            .stats()
            .faults(RequestKind::ManifestGet, FaultType::Eof);
    assert!(injected > 0);
    let sources = d["sources"].as_array().unwrap();
    let o = sources
        .iter()
        .find(|s| s["source"] == origin_host.as_str())
        .unwrap_or_else(|| panic!("the origin in {d:#}"));
    assert_eq!(o["role"], "origin");
    assert_eq!(
        o["failures_by_class"]["eof"].as_u64(),
        Some(injected),
        "{d:#}"
    );
    assert_eq!(o["failed_requests"].as_u64(), Some(injected), "{d:#}");
    let root = d["root_cause"].as_str().unwrap();
    assert!(
        root.starts_with(&format!("{origin_host} dropped ")),
        "{root}"
    );
    assert!(root.contains(&format!("eof × {injected}")), "{root}");

    // Every image was had: some by retries, some from the mirror.
    let by_retry = images_of(report, "recovered_by_retry");
    let by_mirror = images_of(report, "recovered_by_mirror");
    assert!(!by_retry.is_empty(), "{d:#}");
    assert!(!by_mirror.is_empty(), "{d:#}");
    assert!(images_of(report, "lost").is_empty());
    for image in &by_mirror {
        let entry = report["base_images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["reference"] == image.as_str())
            .unwrap();
        assert_eq!(entry["source"], mirror.host().as_str(), "{entry:#}");
    }
    assert!(
        root.contains(&format!(
            "{} recovered by retries",
            if by_retry.len() == 1 {
                "1 image was".to_string()
            } else {
                format!("{} images were", by_retry.len())
            }
        )),
        "{root}"
    );
    assert!(
        root.contains(&format!(
            "{} from mirror {}",
            by_mirror.len(),
            mirror.host()
        )),
        "{root}"
    );

    // At the top of the step summary (before the failures and tables), and in the terminal.
    let section = diagnosis_section(&run.summary).expect("a diagnosis section");
    let at = run.summary.find("### 🩺 Diagnosis").unwrap();
    assert!(
        run.summary[..at].matches("### ").count() == 0,
        "the diagnosis comes first:\n{}",
        run.summary
    );
    assert!(
        run.stdout.contains(&format!("diagnosis: {root}")),
        "{}",
        run.stdout
    );

    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&origin_host), "[origin]");
    settings.add_filter(&regex_escape(&mirror.host()), "[mirror]");
    settings.add_filter(&regex_escape(&name), "[name]");
    settings.add_filter(
        r"\b\d+h \d{2}m\b|\b\d+m \d{2}s\b|\b\d+\.\ds\b|\b\d+ms\b",
        "[duration]",
    );
    settings.bind(|| {
        insta::assert_snapshot!("diagnosis_summary_eof_origin_healthy_mirror", section);
        insta::assert_json_snapshot!(
            "diagnosis_json_eof_origin_healthy_mirror",
            serde_json::json!({
                "root_cause": d["root_cause"],
                "remediation": d["remediation"],
                "findings": d["findings"],
                "images": d["images"],
            })
        );
    });
    Ok(())
}

/// What the report's JSON Schema (strict: no unknown fields) says about `report`.
fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// A report whose diagnosis comes from hand-made evidence: a flaky origin, a hostile image
/// name, a lost image.
fn report_with_diagnosis() -> Report {
    let mut origin = SourceStats {
        source: "registry-1.docker.io".into(),
        registry: "docker.io".into(),
        role: SourceRole::Origin,
        requests: 14,
        failed_requests: 6,
        requests_by_kind: BTreeMap::from([(
            Kind::Manifest,
            KindCount {
                requests: 14,
                failed: 6,
            },
        )]),
        failures_by_class: BTreeMap::from([(ErrorClass::Eof, 6)]),
        pull_attempts: 5,
        failed_pull_attempts: 1,
        images_served: 3,
        wait_ms: 1200,
    };
    let mut mirror = origin.clone();
    mirror.source = "mirror.example.com".into();
    mirror.role = SourceRole::Mirror;
    (
        mirror.requests,
        mirror.failed_requests,
        mirror.failures_by_class,
    ) = (4, 0, BTreeMap::new());
    mirror.requests_by_kind.clear();
    origin.images_served = 3;
    let hostile = "docker.io/library/a|b<script>`x`:1".to_string();
    let evidence = Evidence {
        sources: vec![origin, mirror],
        images: ImageOutcomes {
            recovered_by_retry: vec![RecoveredImage {
                image: hostile.clone(),
                registry: "docker.io".into(),
                source: "registry-1.docker.io".into(),
            }],
            recovered_by_mirror: vec![RecoveredImage {
                image: "docker.io/library/m:1".into(),
                registry: "docker.io".into(),
                source: "mirror.example.com".into(),
            }],
            lost: vec![LostImage {
                image: "ghcr.io/org/base:1".into(),
                registry: "ghcr.io".into(),
                class: ErrorClass::DnsNotFound,
                tried: vec!["ghcr.io".into()],
                answers: Vec::new(),
            }],
        },
        wait_ms: 1200,
    };
    let mut report = Report::new(RunMeta::default(), None, Vec::new(), Vec::new());
    report.diagnosis = diagnosis::conclude(evidence);
    report.source_order = vec![OrderDecision {
        registry: "docker.io".into(),
        order: vec!["mirror.example.com".into(), "registry-1.docker.io".into()],
        configured: vec!["registry-1.docker.io".into(), "mirror.example.com".into()],
        learned: true,
        reason: "learned from source health: registry-1.docker.io last".into(),
    }];
    report
}

/// The diagnosis in every view: first in the step summary and the PR comment (escaped), in
/// the terminal table, in the JSON (schema-valid, read back the same); a report without one
/// shows none.
#[test]
fn issue8_the_diagnosis_shows_in_every_view() {
    let report = report_with_diagnosis();
    let d = report.diagnosis.as_ref().expect("a diagnosis");
    assert_eq!(d.findings[0].rule, "lost-dns", "a lost image comes first");
    assert!(d.findings.iter().any(|f| f.rule == "flaky-source"));
    for opts in [SummaryOptions::step_summary(), SummaryOptions::comment()] {
        let text = summary::render(&report, &opts);
        let at = text.find("### 🩺 Diagnosis").expect("a diagnosis section");
        assert_eq!(text[..at].matches("### ").count(), 0, "first:\n{text}");
        assert!(
            text.contains("**Root cause:** no source answered for <code>ghcr.io/org/base:1</code>"),
            "{text}"
        );
        assert!(text.contains("a\\|b&lt;script&gt;"), "escaped:\n{text}");
        assert!(!text.contains("<script>"), "{text}");
        assert!(
            text.contains("Source order for <code>docker.io</code>"),
            "{text}"
        );
    }
    let ui = Ui::default();
    let table = terminal::render(&report, &ui);
    assert!(
        table.contains(&format!("diagnosis: {}", d.root_cause)),
        "{table}"
    );
    assert!(
        table.contains("source order for docker.io: mirror.example.com → registry-1.docker.io"),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(schema_errors(&json), Vec::<String>::new());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);

    let plain = Report::new(RunMeta::default(), None, Vec::new(), Vec::new());
    let json = serde_json::to_value(&plain).unwrap();
    assert!(
        json.get("diagnosis").is_none() && json.get("source_order").is_none(),
        "{json:#}"
    );
    assert!(!summary::render(&plain, &SummaryOptions::step_summary()).contains("Diagnosis"));
    assert!(!terminal::render(&plain, &ui).contains("diagnosis:"));
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if !"\\.+*?()|[]{}^$".contains(c) {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
