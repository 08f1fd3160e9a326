//! Issue #8, acceptance 3: the learned source order. `prefetch --cache-dir DIR` keeps each
//! source's health in `DIR/source-health.json`; after a run in which the origin failed often,
//! the next run with the same directory tries the mirror first and makes fewer failed
//! requests (the proxy's counters show it); after a run in which the origin is healthy again,
//! it returns to the front.
//!
//! The origin is the fault proxy in front of a registry (images referenced by the proxy's
//! host); the mirror is a registry behind a fault-free proxy, so that its requests are counted
//! too. Pulls go one at a time and every run pulls (`--pull always`), so the runs are
//! comparable.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use testbed::TestBed;
use testbed::images::{ImageSpec, push_image};
use testbed::proxy::{FaultConfig, FaultType, KindFaults, RequestKind};

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");
const IMAGES: usize = 4;
/// The origin's proxy seed (any seed makes it fail often at 40%; fixed for repeatability).
const SEED: u64 = 2;

/// `prefetch --output json ARGS` in `dir`; the exit code and the JSON report.
async fn prefetch(dir: &Path, args: &[String]) -> (i32, Value, String) {
    let child = tokio::process::Command::new(BIN)
        .arg("prefetch")
        .args([
            "--output",
            "json",
            "--pull",
            "always",
            "--pull-concurrency",
            "1",
        ])
        .args(["--max-retries", "1"])
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .env_remove("INPUT_MIRRORS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("prefetch finishes within 2 minutes")
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("stdout is not a prefetch report ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// Each image's first source.
fn first_sources(report: &Value) -> Vec<String> {
    report["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            i["source_order"][0]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The order decision for `registry`.
fn decision<'a>(report: &'a Value, registry: &str) -> &'a Value {
    report["source_orders"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["registry"] == registry))
        .unwrap_or_else(|| panic!("no source order for {registry} in {report:#}"))
}

#[tokio::test]
async fn issue8_the_next_run_tries_the_healthy_mirror_first_until_the_origin_recovers()
-> anyhow::Result<()> {
    let name = testbed::unique_name("health");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let origin = TestBed::start(|o| o.with_seed(SEED)).await?;
    let mirror = TestBed::start(|o| o).await?;
    let project = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    for i in 0..IMAGES {
        // Without random layers an image is the same bytes on both registries.
        let spec = ImageSpec::new(format!("library/{name}-{i}"), "1");
        push_image(&origin.registry.host(), &spec).await?;
        push_image(&mirror.registry.host(), &spec).await?;
        let svc = project.path().join(format!("svc{i}"));
        std::fs::create_dir_all(&svc)?;
        std::fs::write(
            svc.join("Dockerfile"),
            format!(
                "FROM {}/library/{name}-{i}:1\nLABEL n={i}\n",
                origin.proxy.host()
            ),
        )?;
    }
    let (o, m) = (origin.proxy.host(), mirror.proxy.host());
    let cache_dir = cache.path().display().to_string();
    let with_mirror = vec![
        "--cache-dir".to_string(),
        cache_dir.clone(),
        "--mirror".to_string(),
        format!("{o}={m}"),
    ];
    let eof = KindFaults::default().with_rate(FaultType::Eof, 0.4);
    let flaky = FaultConfig::default()
        .with_kind(RequestKind::ManifestHead, eof.clone())
        .with_kind(RequestKind::ManifestGet, eof);

    // Run 1: the origin drops 40% of its manifest requests; configured order, origin first.
    origin.proxy.set_faults(flaky.clone())?;
    let (code, report, stderr) = prefetch(project.path(), &with_mirror).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(first_sources(&report)[0], o, "{report:#}");
    let first = decision(&report, &o);
    assert_eq!(first["learned"], false, "{first:#}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("no health history"),
        "{first:#}"
    );
    let failed_run1 = origin.proxy.stats().total_faults();
    assert!(failed_run1 > 0, "the origin failed");
    let file = cache.path().join("source-health.json");
    let health: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    assert_eq!(
        health["sources"][&o]["last_failure_class"], "eof",
        "{health:#}"
    );

    // Run 2, the same cache directory, the origin as flaky as before: the mirror goes first,
    // the origin last, and the origin sees fewer failed requests (none: the mirror serves).
    origin.proxy.set_faults(flaky.clone())?;
    origin.proxy.reset_stats();
    mirror.proxy.reset_stats();
    let (code, report, stderr) = prefetch(project.path(), &with_mirror).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert!(
        first_sources(&report).iter().all(|s| *s == m),
        "every image tries the mirror first: {report:#}"
    );
    let learned = decision(&report, &o);
    assert_eq!(learned["learned"], true, "{learned:#}");
    assert_eq!(learned["order"], serde_json::json!([m, o]));
    assert_eq!(learned["configured"], serde_json::json!([o, m]));
    let reason = learned["reason"].as_str().unwrap();
    assert!(reason.starts_with("learned from source health"), "{reason}");
    assert!(reason.contains(&format!("{o} last")), "{reason}");
    assert!(reason.contains("(eof)"), "{reason}");
    let failed_run2 = origin.proxy.stats().total_faults();
    assert!(
        failed_run2 < failed_run1,
        "fewer failed requests: {failed_run2} after {failed_run1}"
    );
    assert!(mirror.proxy.stats().requests(RequestKind::ManifestHead) > 0);
    // Each image came from the mirror: pulled from it, or (the cache holds it) vouched for
    // as current by the mirror's manifest.
    for image in report["images"].as_array().unwrap() {
        let (status, source) = (image["status"].as_str(), image["source"].as_str());
        let from_mirror = (status == Some("pulled") && source == Some(m.as_str()))
            || (status == Some("present")
                && source == Some(format!("cache (current on {m})").as_str()));
        assert!(from_mirror, "{image:#}");
    }

    // Run 3: the origin is healthy again, and used (no mirror configured).
    origin.proxy.set_faults(FaultConfig::default())?;
    origin.proxy.reset_stats();
    let only_origin = vec!["--cache-dir".to_string(), cache_dir.clone()];
    let (code, report, stderr) = prefetch(project.path(), &only_origin).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert!(first_sources(&report).iter().all(|s| *s == o));
    assert_eq!(origin.proxy.stats().total_faults(), 0);

    // Run 4: with the mirror again, the recovered origin is back in front and serves.
    origin.proxy.reset_stats();
    mirror.proxy.reset_stats();
    let (code, report, stderr) = prefetch(project.path(), &with_mirror).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert!(
        first_sources(&report).iter().all(|s| *s == o),
        "the origin is back in front: {report:#}"
    );
    let back = decision(&report, &o);
    assert_eq!(back["learned"], false, "{back:#}");
    assert_eq!(back["order"], serde_json::json!([o, m]));
    assert!(origin.proxy.stats().requests(RequestKind::ManifestHead) > 0);
    assert_eq!(mirror.proxy.stats().requests(RequestKind::ManifestHead), 0);
    Ok(())
}
