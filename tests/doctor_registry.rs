//! Issue #8, acceptance 1: `doctor` probes every registry the project's base images come
//! from, step by step, against real components on 127.0.0.1: a healthy registry, one behind
//! the fault proxy dropping 50% of requests, one whose token endpoint fails, an address where
//! nothing listens, and a name that does not resolve (`.invalid`: refused locally, no packet
//! leaves the machine). Each row shows the failing step and its class, in well under 30 s.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::TestBed;
use testbed::images::{ImageSpec, push_image};
use testbed::proxy::{FaultConfig, FaultType, KindFaults, RequestKind};
use testbed::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");
/// "Well under 30 s": every failure here is immediate; a hang would show.
const MAX_ELAPSED: Duration = Duration::from_secs(15);
/// Exit code "base images could not be had" (README, "Exit codes").
const EXIT_IMAGES_MISSING: i32 = 4;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.describe()))
    }
}

/// Runs `doctor ARGS` in `dir` without any proxy settings, bounded by 30 s.
async fn doctor(dir: &std::path::Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("doctor")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
        "INPUT_MIRRORS",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("doctor finishes within 30 s")
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// 50% EOF on every request kind.
fn half_dropped() -> FaultConfig {
    RequestKind::ALL
        .iter()
        .fold(FaultConfig::default(), |c, kind| {
            c.with_kind(*kind, KindFaults::default().with_rate(FaultType::Eof, 0.5))
        })
}

/// The first seed whose first ping passes and whose first manifest HEAD is dropped: doctor
/// must then fail at the manifest step, after a healthy ping.
fn seed_failing_at_manifest(config: &FaultConfig) -> u64 {
    let at = Duration::from_secs(3600);
    (0..1000)
        .find(|seed| {
            config.decide(*seed, RequestKind::Ping, 0, at).is_none()
                && config.decide(*seed, RequestKind::ManifestHead, 0, at) == Some(FaultType::Eof)
        })
        .expect("a seed below 1000")
}

/// The registry's entry of a doctor JSON report.
fn registry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["registries"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["registry"] == name))
        .unwrap_or_else(|| panic!("no registry {name} in {report:#}"))
}

fn step<'a>(source: &'a Value, name: &str) -> &'a Value {
    source["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {source:#}"))
}

fn project(images: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, image) in images.iter().enumerate() {
        let svc = dir.path().join(format!("svc{i}"));
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(svc.join("Dockerfile"), format!("FROM {image}\nRUN true\n")).unwrap();
    }
    dir
}

#[tokio::test]
async fn issue8_doctor_shows_the_failing_step_and_class_of_each_registry() -> anyhow::Result<()> {
    let name = testbed::unique_name("doc");
    let spec = ImageSpec::new(format!("library/{name}"), "1");

    let healthy = Registry::start().await?;
    push_image(&healthy.host(), &spec).await?;
    let faults = half_dropped();
    let seed = seed_failing_at_manifest(&faults);
    let flaky = TestBed::start(|o| o.with_seed(seed).with_faults(faults.clone())).await?;
    push_image(&flaky.registry.host(), &spec).await?;
    let token_fails = TestBed::start(|o| {
        o.with_auth(true)
            .with_faults(FaultConfig::default().with_kind(
                RequestKind::Token,
                KindFaults::default().with_rate(FaultType::Eof, 1.0),
            ))
    })
    .await?;
    push_image(&token_fails.registry.host(), &spec).await?;
    let dead = format!("127.0.0.1:{}", dead_port());
    let unresolvable = format!("{name}.invalid");

    let image_on = |host: &str| format!("{host}/library/{name}:1");
    let images = [
        image_on(&healthy.host()),
        image_on(&flaky.proxy.host()),
        image_on(&token_fails.proxy.host()),
        image_on(&dead),
        image_on(&unresolvable),
    ];
    let dir = project(&images);

    let run = doctor(dir.path(), &["--output", "json"]).await;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    assert!(run.elapsed < MAX_ELAPSED, "{}", run.describe());
    let report = run.json();
    assert_eq!(report["registries_ok"], false);
    assert_eq!(report["project"]["found"], true, "{report:#}");
    assert_eq!(report["registries"].as_array().map(Vec::len), Some(5));

    // (registry, failing step, class) per row; None for the healthy one.
    let expected = [
        (healthy.host(), None),
        (flaky.proxy.host(), Some(("manifest", "eof"))),
        (token_fails.proxy.host(), Some(("token", "token-fetch"))),
        (dead.clone(), Some(("tcp", "connection-refused"))),
        (unresolvable.clone(), Some(("dns", "dns-not-found"))),
    ];
    for (host, failure) in &expected {
        let r = registry(&report, host);
        assert_eq!(r["required"], true, "{r:#}");
        assert_eq!(r["needed_by"], serde_json::json!([image_on(host)]), "{r:#}");
        let source = &r["sources"][0];
        assert_eq!(source["source"], host.as_str());
        assert_eq!(source["role"], "origin");
        assert_eq!(
            source["steps"].as_array().map(Vec::len),
            Some(6),
            "{source:#}"
        );
        match failure {
            None => {
                assert_eq!(r["healthy"], true, "{r:#}");
                assert_eq!(source["failed_step"], Value::Null);
                assert_eq!(
                    step(source, "tls")["detail"],
                    ai_infra_build::probe::PLAIN_HTTP
                );
                assert_eq!(step(source, "manifest")["status"], "ok", "{source:#}");
                assert!(
                    step(source, "manifest")["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("sha256:")),
                    "{source:#}"
                );
            }
            Some((failed, class)) => {
                assert_eq!(r["healthy"], false, "{r:#}");
                assert_eq!(source["failed_step"], *failed, "{source:#}");
                assert_eq!(source["class"], *class, "{source:#}");
                let s = step(source, failed);
                assert_eq!(s["status"], "failed");
                assert_eq!(s["class"], *class);
                assert!(s["duration_ms"].as_u64().is_some());
                // Every step after the failing one is skipped, never tried.
                let steps = source["steps"].as_array().unwrap();
                let at = steps.iter().position(|s| s["step"] == *failed).unwrap();
                assert!(
                    steps[at + 1..].iter().all(|s| s["status"] == "skipped"),
                    "{source:#}"
                );
            }
        }
    }
    // The token endpoint was named by the challenge, and the ping saw it.
    let token_source = &registry(&report, &token_fails.proxy.host())["sources"][0];
    let ping = step(token_source, "ping");
    assert_eq!(ping["status"], "ok");
    assert!(
        ping["detail"].as_str().unwrap().contains("/token"),
        "{ping}"
    );
    // The flaky registry answered its ping and dropped the manifest request: one each, no
    // retry.
    let stats = flaky.proxy.stats();
    assert_eq!(stats.requests(RequestKind::Ping), 1);
    assert_eq!(stats.requests(RequestKind::ManifestHead), 1);
    assert_eq!(stats.faults(RequestKind::ManifestHead, FaultType::Eof), 1);
    assert_eq!(
        token_fails.proxy.stats().requests(RequestKind::Token),
        1,
        "never retried"
    );

    // The table: one row per source, naming the failing step and class.
    flaky.proxy.arm();
    let run = doctor(dir.path(), &[]).await;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    assert!(run.elapsed < MAX_ELAPSED, "{}", run.describe());
    for (host, failure) in &expected {
        let row = run
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{host} ")))
            .unwrap_or_else(|| panic!("no row for {host}:\n{}", run.stdout));
        let verdict = match failure {
            None => "healthy".to_string(),
            Some((step, class)) => format!("{step} failed: {class}"),
        };
        assert!(row.trim_end().ends_with(&verdict), "{row}\n{}", run.stdout);
    }
    assert!(run.stdout.contains("no healthy source"), "{}", run.stdout);
    Ok(())
}

#[tokio::test]
async fn issue8_doctor_exits_0_when_every_needed_registry_has_a_healthy_source()
-> anyhow::Result<()> {
    let name = testbed::unique_name("doc-ok");
    let mirror = Registry::start().await?;
    push_image(
        &mirror.host(),
        &ImageSpec::new(format!("library/{name}"), "1"),
    )
    .await?;
    let dead = format!("127.0.0.1:{}", dead_port());
    let empty = tempfile::tempdir()?;

    // No project here: `--registry` names what to probe; the origin is down, its mirror is
    // healthy, so the registry can be had.
    let image = format!("{dead}/library/{name}:1");
    let mirror_flag = format!("{dead}={}", mirror.host());
    let run = doctor(
        empty.path(),
        &[
            "--output",
            "json",
            "--registry",
            &image,
            "--mirror",
            &mirror_flag,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.json();
    assert_eq!(report["project"]["found"], false);
    let r = registry(&report, &dead);
    assert_eq!(r["healthy"], true, "{r:#}");
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources[0]["failed_step"], "tcp");
    assert_eq!(sources[1]["role"], "mirror");
    assert_eq!(sources[1]["healthy"], true, "{r:#}");
    assert_eq!(step(&sources[1], "manifest")["status"], "ok");

    // Without the mirror, the same registry has no healthy source: exit 4.
    let run = doctor(empty.path(), &["--registry", &image]).await;
    assert_eq!(run.code, EXIT_IMAGES_MISSING, "{}", run.describe());
    assert!(
        run.stdout.contains("tcp failed: connection-refused"),
        "{}",
        run.stdout
    );

    // Nothing to probe at all: the daemon checks alone decide.
    let run = doctor(empty.path(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.describe());
    Ok(())
}
