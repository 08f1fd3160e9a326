//! The `testbed` binary as bench scripts use it: `serve` prints its addresses and stops on
//! SIGTERM, `push` uploads an image, `control` changes faults and seed and prints counters,
//! and missing tools or bad input are clear errors.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use hyper::StatusCode;
use testbed::http;
use testbed::proxy::{FaultType, ProxyStats, RequestKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_testbed");
/// Bound of every wait on the binary.
const TIMEOUT: Duration = Duration::from_secs(30);

fn testbed() -> Command {
    let mut command = Command::new(BIN);
    command.kill_on_drop(true).stdin(Stdio::null());
    command
}

/// Runs the binary to completion and returns (exit code, stdout, stderr).
async fn run(args: &[&str], command: &mut Command) -> anyhow::Result<(i32, String, String)> {
    let output = tokio::time::timeout(TIMEOUT, command.args(args).output())
        .await
        .with_context(|| format!("testbed {args:?} did not finish in {TIMEOUT:?}"))??;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Sends SIGTERM to a child this test started, by its pid.
fn terminate(child: &Child) -> anyhow::Result<()> {
    let pid = child.id().context("the child has already been reaped")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    Ok(())
}

#[tokio::test]
async fn serve_prints_addresses_serves_faults_and_stops_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        r#"{"kinds": {"ping": {"fail_first": {"count": 1, "fault": "status_503"}}}}"#,
    )?;
    let mut child = testbed()
        .args(["serve", "--seed", "7", "--auth", "--faults"])
        .arg(&faults)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .context("serve printed no line")??;
    let ready: serde_json::Value = serde_json::from_str(&line).with_context(|| line.clone())?;
    let (registry, proxy) = (ready["registry"].as_str(), ready["proxy"].as_str());
    let (registry, proxy) = (registry.context("registry")?, proxy.context("proxy")?);
    assert_eq!(ready["control"], format!("http://{proxy}/_testbed/"));

    let ping = format!("http://{proxy}/v2/");
    assert_eq!(
        http::get(&ping).await?.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(http::get(&ping).await?.status, StatusCode::UNAUTHORIZED);
    let stats = http::get(&format!("http://{proxy}/_testbed/stats")).await?;
    let stats: ProxyStats = serde_json::from_slice(&stats.body)?;
    assert_eq!(stats.requests(RequestKind::Ping), 2);

    let args = [
        "push",
        "--registry",
        registry,
        "--repo",
        "library/ubuntu",
        "--tag",
        "22.04",
        "--size-mb",
        "2",
        "--layers",
        "2",
    ];
    let (code, out, err) = run(&args, &mut testbed()).await?;
    assert_eq!(code, 0, "{err}");
    let pushed: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        pushed["reference"],
        format!("{registry}/library/ubuntu:22.04")
    );
    assert_eq!(pushed["layers"].as_array().map(Vec::len), Some(3));
    assert!(pushed["size"].as_u64().unwrap_or(0) > 2 << 20);
    let manifest = format!("http://{registry}/v2/library/ubuntu/manifests/22.04");
    assert_eq!(http::get(&manifest).await?.status, StatusCode::OK);

    let faults = r#"{"kinds": {"ping": {"fail_first": {"count": 2, "fault": "status_429"}}}}"#;
    let args = [
        "control",
        "--proxy",
        proxy,
        "--faults-json",
        faults,
        "--seed",
        "9",
        "--reset-stats",
    ];
    let (code, out, err) = run(&args, &mut testbed()).await?;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    for _ in 0..3 {
        let _ = http::get(&ping).await?;
    }
    let args = ["control", "--proxy", proxy, "--stats"];
    let (code, out, err) = run(&args, &mut testbed()).await?;
    assert_eq!(code, 0, "{err}");
    let stats: ProxyStats = serde_json::from_str(&out)?;
    assert_eq!(stats.requests(RequestKind::Ping), 3, "{out}");
    assert_eq!(stats.faults(RequestKind::Ping, FaultType::Status429), 2);
    assert!(stats.log.is_empty(), "--stats leaves the log out");
    let args = ["control", "--proxy", proxy, "--totals"];
    let (code, out, err) = run(&args, &mut testbed()).await?;
    assert_eq!((code, out.as_str()), (0, "3 2\n"), "{err}");
    let args = ["control", "--proxy", proxy, "--faults-json", "{\"x\": 1}"];
    let (code, _, err) = run(&args, &mut testbed()).await?;
    assert_eq!(code, 1);
    assert!(err.contains("invalid --faults-json"), "{err}");

    terminate(&child)?;
    let status = tokio::time::timeout(TIMEOUT, child.wait()).await??;
    assert!(status.success(), "{status}");
    assert!(http::get(&manifest).await.is_err(), "registry stopped");
    assert!(http::get(&ping).await.is_err(), "proxy stopped");
    Ok(())
}

#[tokio::test]
async fn serve_without_docker_registry_says_how_to_install_it() -> anyhow::Result<()> {
    let (code, _, err) = run(&["serve"], testbed().env("PATH", "/nonexistent")).await?;
    assert_eq!(code, 1);
    assert!(
        err.contains("`docker-registry` is not installed: run scripts/setup"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        r#"{"kinds": {"ping": {"eof": 0.5, "stall": 0.6}}}"#,
    )?;
    let faults = faults.to_string_lossy().into_owned();
    let (code, _, err) = run(&["serve", "--faults", &faults], &mut testbed()).await?;
    assert_eq!(code, 1);
    assert!(err.contains("invalid fault config"), "{err}");
    assert!(err.contains("add up to"), "{err}");

    let (code, _, err) = run(&["push", "--registry", "127.0.0.1:1"], &mut testbed()).await?;
    assert_eq!(code, 2, "usage error: {err}");
    let args = [
        "push",
        "--registry",
        "10.1.1.1:5000",
        "--repo",
        "r",
        "--tag",
        "t",
    ];
    let (code, _, err) = run(&args, &mut testbed()).await?;
    assert_eq!(code, 1);
    assert!(err.contains("only talks to 127.0.0.1"), "{err}");
    Ok(())
}
