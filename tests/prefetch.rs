//! Issue #3, acceptance: `ai-infra-build prefetch` (the real binary) against the real Docker
//! daemon, a real registry and the fault proxy in front of it, all on 127.0.0.1.
//!
//! Each test pushes its own images under unique names, writes a project whose Dockerfiles
//! name them, runs `prefetch --output json` there, and asserts on the JSON report, on what
//! the daemon holds afterwards and on the proxy's counters and request log. The images a
//! test pulled are removed when it ends (also when it fails).
//!
//! No test depends on luck. The proxy decides each request's fault from (seed, request
//! kind, number of the request within its kind) only, so for a kind whose `n` requests must
//! each succeed once, the faults that can hit them are exactly those drawn before the `n`-th
//! pass of that sequence ([`faults_before`]). The tests pick the first seed for which that
//! number is at least 2 (so retries really happen) and at most [`MAX_RETRIES`] (so even if
//! every fault hit the same request, the relay's per-request retries would absorb them),
//! then assert the exact fault count.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use serde_json::Value;
use testbed::TestBed;
use testbed::images::{ImageSpec, PushedImage, push_image};
use testbed::proxy::{
    FaultConfig, FaultParams, FaultType, FaultWindow, KindFaults, ProxyStats, RequestKind, StallAt,
    StallThen, WindowClock,
};

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");
/// Bound of one `prefetch` run (the slowest test needs about 6 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(40);
/// `--max-retries` of the fault tests; also the most faults a seed may put on one kind.
const MAX_RETRIES: u64 = 8;
/// Size of each test image's own random layer.
const LAYER_BYTES: usize = 256 * 1024;
/// Exit code for "base images missing" (README, "Exit codes").
const EXIT_IMAGES_MISSING: i32 = 4;

/// A project directory with one `<service>/Dockerfile` per service.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(services: &[(&str, String)]) -> anyhow::Result<Project> {
        let dir = tempfile::tempdir()?;
        for (service, dockerfile) in services {
            let path = dir.path().join(service);
            std::fs::create_dir_all(&path)?;
            std::fs::write(path.join("Dockerfile"), dockerfile)?;
        }
        Ok(Project { dir })
    }

    /// One service per image, each `FROM` it.
    fn from_images(images: &[String]) -> anyhow::Result<Project> {
        let services: Vec<(String, String)> = images
            .iter()
            .enumerate()
            .map(|(i, image)| (format!("svc{i}"), format!("FROM {image}\nRUN true\n")))
            .collect();
        let borrowed: Vec<(&str, String)> = services
            .iter()
            .map(|(s, d)| (s.as_str(), d.clone()))
            .collect();
        Project::new(&borrowed)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// The JSON report on stdout (`--output json`).
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not a JSON report ({err}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "exit {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `ai-infra-build prefetch ARGS` in `project`, bounded by `timeout`.
async fn prefetch(project: &Project, args: &[&str], timeout: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
    let child = tokio::process::Command::new(BIN)
        .arg("prefetch")
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .with_context(|| format!("prefetch {args:?} did not finish within {timeout:?}"))??;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// Pushes `count` images `library/<name>-<i>:1.0` (each with its own random layer).
async fn push_images(bed: &TestBed, name: &str, count: usize) -> anyhow::Result<Vec<PushedImage>> {
    let mut pushed = Vec::new();
    for i in 0..count {
        let spec = ImageSpec::new(format!("library/{name}-{i}"), "1.0").with_layer(LAYER_BYTES);
        pushed.push(push_image(&bed.registry.host(), &spec).await?);
    }
    Ok(pushed)
}

/// How many faults of `kind` `config` draws with `seed` before `passes` requests of that kind
/// have passed: the most faults that `passes` logical requests of the kind can meet, however
/// the requests interleave (see the module docs).
fn faults_before(config: &FaultConfig, seed: u64, kind: RequestKind, passes: u64) -> u64 {
    let (mut passed, mut faults, mut seq) = (0, 0, 0);
    while passed < passes {
        // Far past any window: only `fail_first` and the random rates count here.
        match config.decide(seed, kind, seq, Duration::from_secs(3600)) {
            Some(_) => faults += 1,
            None => passed += 1,
        }
        seq += 1;
    }
    faults
}

/// The first seed whose fault counts for every `(kind, passes)` are all in `2..=MAX_RETRIES`.
fn pick_seed(config: &FaultConfig, kinds: &[(RequestKind, u64)]) -> (u64, Vec<u64>) {
    (0..1000)
        .map(|seed| {
            let faults = kinds
                .iter()
                .map(|&(kind, passes)| faults_before(config, seed, kind, passes))
                .collect::<Vec<_>>();
            (seed, faults)
        })
        .find(|(_, faults)| faults.iter().all(|f| (2..=MAX_RETRIES).contains(f)))
        .expect("some seed below 1000 gives between 2 and MAX_RETRIES faults per kind")
}

/// The report's entry for `reference`.
fn image<'a>(report: &'a Value, reference: &str) -> &'a Value {
    report["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["reference"] == reference))
        .unwrap_or_else(|| panic!("no image {reference} in the report:\n{report:#}"))
}

/// The relay's request events that failed and were retried, per request kind.
fn retried_requests(report: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for event in report["requests"].as_array().into_iter().flatten() {
        if !event["class"].is_null() && !event["retry_wait_ms"].is_null() {
            *out.entry(event["kind"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    out
}

/// Asserts that `reference` is pulled in one attempt and is `pushed` in the daemon.
async fn assert_pulled(
    docker: &Docker,
    report: &Value,
    reference: &str,
    pushed: &PushedImage,
) -> anyhow::Result<()> {
    let entry = image(report, reference);
    assert_eq!(entry["status"], "pulled", "{entry:#}");
    assert_eq!(entry["digest"], pushed.digest.as_str(), "{entry:#}");
    let local = docker
        .inspect_image(reference)
        .await
        .with_context(|| format!("{reference} is not in the daemon after prefetch"))?;
    assert_eq!(local.id.as_deref(), Some(pushed.image_id.as_str()));
    Ok(())
}

/// Arrival time (µs) and fault of one request, as the proxy logged it.
type Arrival = (u64, Option<FaultType>);

/// `(method, path)` -> arrivals, in order.
fn requests_by_target(stats: &ProxyStats) -> BTreeMap<(String, String), Vec<Arrival>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in &stats.log {
        out.entry((r.method.clone(), r.path.clone()))
            .or_default()
            .push((r.at_us, r.fault));
    }
    out
}

/// Acceptance 1: EOF on 50% of manifest requests; all 6 images pulled, the report shows
/// every retry.
#[tokio::test]
async fn issue3_eof_on_half_the_manifest_requests_pulls_all_six_images() -> anyhow::Result<()> {
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-eof");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let eof = KindFaults::default().with_rate(FaultType::Eof, 0.5);
    let faults = FaultConfig::default()
        .with_kind(RequestKind::ManifestHead, eof.clone())
        .with_kind(RequestKind::ManifestGet, eof);
    // The daemon HEADs each tag once and GETs each manifest once (the relay hides failures).
    let (seed, expected) = pick_seed(
        &faults,
        &[
            (RequestKind::ManifestHead, 6),
            (RequestKind::ManifestGet, 6),
        ],
    );
    let bed = TestBed::start(|o| o.with_seed(seed)).await?;
    let pushed = push_images(&bed, &name, 6).await?;
    let references: Vec<String> = pushed
        .iter()
        .map(|p| p.reference_via(&bed.proxy.host()))
        .collect();
    let project = Project::from_images(&references)?;
    bed.proxy.set_faults(faults)?;

    let max = MAX_RETRIES.to_string();
    let args = [
        "--output",
        "json",
        "--max-retries",
        &max,
        "--pull-concurrency",
        "6",
    ];
    let run = prefetch(&project, &args, RUN_TIMEOUT).await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    for (reference, pushed) in references.iter().zip(&pushed) {
        assert_pulled(&docker, &report, reference, pushed).await?;
        let attempts = image(&report, reference)["attempts"]
            .as_array()
            .map(Vec::len);
        assert_eq!(
            attempts,
            Some(1),
            "the relay absorbed every fault: {report:#}"
        );
    }

    let stats = bed.proxy.stats();
    let head = stats.faults(RequestKind::ManifestHead, FaultType::Eof);
    let get = stats.faults(RequestKind::ManifestGet, FaultType::Eof);
    assert_eq!([head, get], [expected[0], expected[1]], "seed {seed}");
    assert_eq!(stats.requests(RequestKind::ManifestHead), 6 + head);
    assert_eq!(stats.requests(RequestKind::ManifestGet), 6 + get);
    assert_eq!(stats.total_faults(), head + get);
    let retried = retried_requests(&report);
    assert_eq!(
        retried,
        BTreeMap::from([("manifest".to_owned(), head + get)]),
        "every injected EOF shows in the report as a retried request"
    );
    for event in report["requests"].as_array().into_iter().flatten() {
        if !event["class"].is_null() {
            assert_eq!(event["class"], "eof", "{event}");
        }
    }
    Ok(())
}

/// Acceptance 2: 429 with `Retry-After: 2` on every request for the first 3 s (counted from
/// the first request, so the binary's start-up time does not matter); the pull succeeds and
/// no request was repeated before its Retry-After had passed.
#[tokio::test]
async fn issue3_rate_limit_retries_wait_for_retry_after() -> anyhow::Result<()> {
    const RETRY_AFTER_US: u64 = 2_000_000;
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-429");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let pushed = push_images(&bed, &name, 2).await?;
    let references: Vec<String> = pushed
        .iter()
        .map(|p| p.reference_via(&bed.proxy.host()))
        .collect();
    let project = Project::from_images(&references)?;
    let faults = FaultConfig::default()
        .with_window(FaultWindow::first_secs(3.0, FaultType::Status429))
        .with_window_clock(WindowClock::FirstRequest)
        .with_params(FaultParams {
            retry_after_secs: 2,
            ..FaultParams::default()
        });
    bed.proxy.set_faults(faults)?;

    let run = prefetch(&project, &["--output", "json"], RUN_TIMEOUT).await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    for (reference, pushed) in references.iter().zip(&pushed) {
        assert_pulled(&docker, &report, reference, pushed).await?;
    }

    let stats = bed.proxy.stats();
    let limited: Vec<_> = stats
        .log
        .iter()
        .filter(|r| r.fault == Some(FaultType::Status429))
        .collect();
    assert!(
        limited.len() >= 2,
        "each image's first request was rate-limited: {:?}",
        stats.log
    );
    let first_at = stats.log.first().map_or(0, |r| r.at_us);
    for r in &stats.log {
        let in_window = r.at_us - first_at < 3_000_000;
        assert_eq!(
            r.fault.is_some(),
            in_window,
            "only the window's requests fail: {r:?}"
        );
    }
    for ((method, path), arrivals) in requests_by_target(&stats) {
        for pair in arrivals.windows(2) {
            let ((limited_at, fault), (next_at, _)) = (pair[0], pair[1]);
            if fault == Some(FaultType::Status429) {
                let gap = next_at - limited_at;
                assert!(
                    gap >= RETRY_AFTER_US,
                    "{method} {path} was repeated {gap} µs after a 429 with Retry-After: 2"
                );
            }
        }
    }
    let waits: Vec<u64> = report["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["class"] == "rate-limited")
        .filter_map(|e| e["retry_wait_ms"].as_u64())
        .collect();
    assert_eq!(
        waits.len(),
        limited.len(),
        "every 429 was retried: {report:#}"
    );
    assert!(waits.iter().all(|&w| w >= 2000), "{waits:?}");
    Ok(())
}

/// Acceptance 3: the token flow with `/token` failing half the time.
#[tokio::test]
async fn issue3_token_endpoint_failing_half_the_time_still_pulls() -> anyhow::Result<()> {
    const IMAGES: u64 = 3;
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-token");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let faults = FaultConfig::default().with_kind(
        RequestKind::Token,
        KindFaults::default().with_rate(FaultType::Eof, 0.5),
    );
    // One token per repository: the relay caches it for the pull's later requests.
    let (seed, expected) = pick_seed(&faults, &[(RequestKind::Token, IMAGES)]);
    let bed = TestBed::start(|o| o.with_seed(seed).with_auth(true)).await?;
    let pushed = push_images(&bed, &name, IMAGES as usize).await?;
    let references: Vec<String> = pushed
        .iter()
        .map(|p| p.reference_via(&bed.proxy.host()))
        .collect();
    let project = Project::from_images(&references)?;
    bed.proxy.set_faults(faults)?;

    let max = MAX_RETRIES.to_string();
    let run = prefetch(
        &project,
        &["--output", "json", "--max-retries", &max],
        RUN_TIMEOUT,
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    for (reference, pushed) in references.iter().zip(&pushed) {
        assert_pulled(&docker, &report, reference, pushed).await?;
    }
    let stats = bed.proxy.stats();
    let token_faults = stats.faults(RequestKind::Token, FaultType::Eof);
    assert_eq!(token_faults, expected[0], "seed {seed}");
    assert_eq!(stats.tokens_issued, IMAGES, "one token per repository");
    assert_eq!(stats.total_faults(), token_faults);
    assert_eq!(
        retried_requests(&report),
        BTreeMap::from([("token".to_owned(), token_faults)]),
        "every failed token fetch shows in the report: {report:#}"
    );
    for event in report["requests"].as_array().into_iter().flatten() {
        if !event["class"].is_null() {
            assert_eq!(event["class"], "token-fetch", "{event}");
        }
    }
    Ok(())
}

/// Acceptance 4: a missing tag is one attempt and a permanent error that names the image
/// and every Dockerfile line that uses it.
#[tokio::test]
async fn issue3_manifest_unknown_is_one_attempt_naming_image_and_lines() -> anyhow::Result<()> {
    let name = testbed::unique_name("pf-unknown");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let pushed = push_images(&bed, &name, 1).await?;
    let missing = format!("{}/{}:missing", bed.proxy.host(), pushed[0].repo);
    let project = Project::new(&[
        ("api", format!("FROM {missing}\nRUN true\n")),
        (
            "worker",
            format!("ARG VERSION=1\n# the same base\nFROM {missing} AS base\nRUN true\n"),
        ),
    ])?;

    let run = prefetch(&project, &["--output", "json"], RUN_TIMEOUT).await?;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    let report = run.report();
    let entry = image(&report, &missing);
    assert_eq!(entry["status"], "failed");
    assert_eq!(
        entry["attempts"].as_array().map(Vec::len),
        Some(1),
        "{entry:#}"
    );
    assert_eq!(entry["attempts"][0]["retried"], false);
    assert_eq!(entry["error"]["class"], "manifest-unknown", "{entry:#}");
    let message = entry["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&missing),
        "the error names the image: {message}"
    );
    assert_eq!(
        entry["uses"],
        serde_json::json!([
            { "dockerfile": "api/Dockerfile", "line": 1 },
            { "dockerfile": "worker/Dockerfile", "line": 3 },
        ])
    );
    assert!(retried_requests(&report).is_empty(), "{report:#}");
    let stats = bed.proxy.stats();
    for ((method, path), arrivals) in requests_by_target(&stats) {
        assert_eq!(arrivals.len(), 1, "{method} {path} was sent more than once");
    }
    assert!(
        stats.requests(RequestKind::ManifestHead) + stats.requests(RequestKind::ManifestGet) >= 1
    );

    let run = prefetch(&project, &[], RUN_TIMEOUT).await?;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    let human = &run.stdout;
    assert!(human.contains("0/1 available"), "{human}");
    let line = human
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line:\n{human}"));
    assert!(
        line.contains(&missing) && line.contains("manifest-unknown"),
        "{line}"
    );
    assert!(
        human.contains("used at api/Dockerfile:1, worker/Dockerfile:3"),
        "{human}"
    );
    Ok(())
}

/// Acceptance 5: Docker Hub unreachable (it does not resolve here), a healthy mirror: the
/// image comes from the mirror under its Docker Hub name, and a build `FROM` it works.
#[tokio::test]
async fn issue3_unreachable_origin_falls_back_to_the_mirror_and_builds() -> anyhow::Result<()> {
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-mirror");
    let built = format!("{name}-built:1");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let spec = ImageSpec::new(format!("library/{name}"), "22.04").with_layer(LAYER_BYTES);
    let pushed = push_image(&bed.registry.host(), &spec).await?;
    let hub_name = format!("{name}:22.04");
    let project = Project::new(&[("web", format!("FROM {hub_name}\nRUN echo ok\n"))])?;
    let mirror = format!("docker.io={}", bed.proxy.host());

    let run = prefetch(
        &project,
        &["--output", "json", "--mirror", &mirror],
        RUN_TIMEOUT,
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    let canonical = format!("docker.io/library/{hub_name}");
    let entry = image(&report, &canonical);
    assert_eq!(entry["status"], "pulled", "{entry:#}");
    assert_eq!(entry["source"], bed.proxy.host().as_str());
    assert_eq!(entry["digest"], pushed.digest.as_str());
    assert_eq!(
        entry["source_order"],
        serde_json::json!(["registry-1.docker.io", bed.proxy.host()])
    );
    let attempts = entry["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{entry:#}");
    assert_eq!(attempts[0]["source"], "registry-1.docker.io");
    assert_eq!(
        attempts[0]["class"], "dns-not-found",
        "permanent: not retried"
    );
    assert_eq!(attempts[0]["retried"], false);
    assert!(attempts[1]["class"].is_null());

    let local = docker.inspect_image(&hub_name).await?;
    assert_eq!(local.id.as_deref(), Some(pushed.image_id.as_str()));
    assert_eq!(
        local.repo_tags,
        Some(vec![hub_name.clone()]),
        "re-tagged to its Docker Hub name; the relay's name is gone"
    );

    // Docker Hub does not resolve here: this build only works from the local copy.
    let output = build(&docker, &format!("FROM {hub_name}\nRUN echo ok\n"), &built).await?;
    assert!(
        output.lines().any(|l| l.trim() == "ok"),
        "RUN echo ok printed ok:\n{output}"
    );
    Ok(())
}

/// Builds `dockerfile` (classic builder, no pull) as `tag`; returns the build's output.
async fn build(docker: &Docker, dockerfile: &str, tag: &str) -> anyhow::Result<String> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    let context = archive.into_inner()?;
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .pull("false")
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut output = String::new();
    let drain = async {
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                anyhow::anyhow!("build failed: {}", testbed::docker::daemon_message(e))
            })?;
            if let Some(text) = info.stream {
                output.push_str(&text);
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                anyhow::bail!("build failed: {err}\n{output}");
            }
        }
        Ok(())
    };
    tokio::time::timeout(RUN_TIMEOUT, drain)
        .await
        .context("the build did not finish in time")??;
    Ok(output)
}

/// Acceptance 6: a blob download that stalls mid-stream: the idle timeout cuts it, the
/// retry succeeds, and nothing hangs (the stall would last 30 s; the run must end well
/// before).
#[tokio::test]
async fn issue3_stalled_blob_stream_is_cut_by_the_idle_timeout_and_retried() -> anyhow::Result<()> {
    const STALL_SECS: f64 = 30.0;
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-stall");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let spec = ImageSpec::new(format!("library/{name}"), "1.0").with_layer(2 << 20);
    let pushed = push_image(&bed.registry.host(), &spec).await?;
    let layer = pushed.layers.last().expect("a random layer").digest.clone();
    let reference = pushed.reference_via(&bed.proxy.host());
    let project = Project::from_images(std::slice::from_ref(&reference))?;
    bed.proxy.set_faults(
        FaultConfig::default()
            .with_kind(
                RequestKind::BlobGet,
                KindFaults::default()
                    .fail_first(1, FaultType::Stall)
                    .only_path_containing(&layer),
            )
            .with_params(FaultParams {
                stall_secs: STALL_SECS,
                stall_at: StallAt::Body,
                stall_then: StallThen::Close,
                truncate_fraction: 0.3,
                ..FaultParams::default()
            }),
    )?;

    let args = ["--output", "json", "--idle-timeout", "3"];
    let run = prefetch(&project, &args, Duration::from_secs(25)).await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.elapsed < Duration::from_secs(15),
        "the stall was cut after 3 s, not waited out: {}",
        run.describe()
    );
    let report = run.report();
    assert_pulled(&docker, &report, &reference, &pushed).await?;
    let stats = bed.proxy.stats();
    assert_eq!(stats.faults(RequestKind::BlobGet, FaultType::Stall), 1);
    let layer_requests = stats.kind(RequestKind::BlobGet).targeted;
    assert_eq!(
        layer_requests, 2,
        "the stalled download and one retry: {:?}",
        stats.log
    );
    let stalled: Vec<&Value> = report["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["class"] == "stalled")
        .collect();
    assert_eq!(stalled.len(), 1, "the report shows the cut: {report:#}");
    assert_eq!(stalled[0]["kind"], "blob");
    assert!(
        !stalled[0]["retry_wait_ms"].is_null(),
        "and that it was retried"
    );
    Ok(())
}

/// With acceptance 6: a blob download cut mid-body (connection closed after 30% of the
/// bytes) is resumed by the relay with a `Range` request, within the same pull: the daemon
/// never sees the failure (it would wait 5 s before resuming itself).
#[tokio::test]
async fn issue3_truncated_blob_is_resumed_within_the_pull() -> anyhow::Result<()> {
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-cut");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let spec = ImageSpec::new(format!("library/{name}"), "1.0").with_layer(2 << 20);
    let pushed = push_image(&bed.registry.host(), &spec).await?;
    let layer = pushed.layers.last().expect("a random layer").digest.clone();
    let reference = pushed.reference_via(&bed.proxy.host());
    let project = Project::from_images(std::slice::from_ref(&reference))?;
    bed.proxy.set_faults(
        FaultConfig::default()
            .with_kind(
                RequestKind::BlobGet,
                KindFaults::default()
                    .fail_first(1, FaultType::Truncate)
                    .only_path_containing(&layer),
            )
            .with_params(FaultParams {
                truncate_fraction: 0.3,
                ..FaultParams::default()
            }),
    )?;

    let run = prefetch(&project, &["--output", "json"], RUN_TIMEOUT).await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    assert_pulled(&docker, &report, &reference, &pushed).await?;
    let attempts = image(&report, &reference)["attempts"]
        .as_array()
        .map(Vec::len);
    assert_eq!(attempts, Some(1), "{report:#}");
    let stats = bed.proxy.stats();
    let layer_requests: Vec<_> = stats
        .log_of(RequestKind::BlobGet)
        .filter(|r| r.path.contains(&layer))
        .collect();
    assert_eq!(layer_requests.len(), 2, "{layer_requests:?}");
    assert_eq!(layer_requests[0].fault, Some(FaultType::Truncate));
    assert!(
        layer_requests[1].ranged,
        "the relay resumed with a Range request"
    );
    let cut: Vec<&Value> = report["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "blob" && !e["class"].is_null())
        .collect();
    assert_eq!(cut.len(), 1, "the report shows the cut: {report:#}");
    assert_eq!(cut[0]["class"], "eof", "{}", cut[0]);
    assert!(!cut[0]["retry_wait_ms"].is_null());
    Ok(())
}

/// Acceptance 7: half the images permanently missing, default policy: the others are
/// pulled, both lists are reported (human and JSON), and the exit code is 4.
#[tokio::test]
async fn issue3_half_missing_pulls_the_rest_reports_both_and_exits_4() -> anyhow::Result<()> {
    let docker = testbed::docker::connect().await?;
    let name = testbed::unique_name("pf-half");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    let bed = TestBed::start(|o| o).await?;
    let pushed = push_images(&bed, &name, 2).await?;
    let proxy = bed.proxy.host();
    let present: Vec<String> = pushed.iter().map(|p| p.reference_via(&proxy)).collect();
    let missing = vec![
        format!("{proxy}/{}:no-such-tag", pushed[0].repo),
        format!("{proxy}/library/{name}-never-pushed:1.0"),
    ];
    let all: Vec<String> = present.iter().chain(&missing).cloned().collect();
    let project = Project::from_images(&all)?;

    let run = prefetch(&project, &["--output", "json"], RUN_TIMEOUT).await?;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    let report = run.report();
    for (reference, pushed) in present.iter().zip(&pushed) {
        assert_pulled(&docker, &report, reference, pushed).await?;
    }
    for reference in &missing {
        let entry = image(&report, reference);
        assert_eq!(entry["status"], "failed", "{entry:#}");
        assert_eq!(
            entry["attempts"].as_array().map(Vec::len),
            Some(1),
            "{entry:#}"
        );
        let class = entry["error"]["class"].as_str().unwrap_or_default();
        assert!(
            ["manifest-unknown", "name-unknown"].contains(&class),
            "a permanent class: {entry:#}"
        );
    }

    let run = prefetch(&project, &[], RUN_TIMEOUT).await?;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    let human = &run.stdout;
    assert!(human.contains("2/4 available"), "{human}");
    for reference in &present {
        assert!(
            human
                .lines()
                .any(|l| l.contains("ok") && l.contains(reference.as_str())),
            "{reference} listed as available:\n{human}"
        );
    }
    for reference in &missing {
        assert!(
            human
                .lines()
                .any(|l| l.contains("FAIL") && l.contains(reference.as_str())),
            "{reference} listed as missing:\n{human}"
        );
    }
    assert!(human.contains("failed pulls: 2"), "{human}");
    Ok(())
}
