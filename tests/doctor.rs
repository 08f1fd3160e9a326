//! `doctor` against the real Docker daemon, and against a socket where none listens (issue #2).

use std::process::{Command, Output};

fn doctor(args: &[&str], docker_host: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ai-infra-build"));
    cmd.arg("doctor").args(args).env("NO_COLOR", "1");
    match docker_host {
        Some(host) => cmd.env("DOCKER_HOST", host),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("the ai-infra-build binary runs")
}

/// What the docker CLI says, to compare doctor's facts with.
fn docker_format(format: &str) -> String {
    let out = Command::new("docker")
        .args(["version", "--format", format])
        .output()
        .expect("the docker CLI is installed (run scripts/setup)");
    assert!(
        out.status.success(),
        "the Docker daemon must be running for this test (run scripts/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn doctor_prints_the_daemons_facts() {
    let out = doctor(&[], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed; is the Docker daemon running (scripts/setup)?\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = docker_format("{{.Server.Version}}");
    let api = docker_format("{{.Server.APIVersion}}");
    assert!(text.contains(&format!("{version} (API {api}")), "{text}");
    for label in [
        "Storage driver",
        "Image store",
        "Registry mirrors",
        "buildx",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "no {label} line:\n{text}"
        );
    }
    // scripts/setup installs the buildx plugin, so doctor must find it.
    let buildx = text
        .lines()
        .find(|l| l.starts_with("buildx"))
        .unwrap_or_default();
    assert!(buildx.contains("available, version 0."), "{buildx}");
}

#[test]
fn doctor_json_has_the_same_facts() {
    let out = doctor(&["--output", "json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --output json prints JSON");
    assert_eq!(
        json["engine"]["engine_version"],
        docker_format("{{.Server.Version}}")
    );
    assert_eq!(
        json["engine"]["api_version"],
        docker_format("{{.Server.APIVersion}}")
    );
    let driver = Command::new("docker")
        .args(["info", "--format", "{{.Driver}}"])
        .output()
        .unwrap();
    assert_eq!(
        json["engine"]["storage_driver"],
        String::from_utf8_lossy(&driver.stdout).trim()
    );
    assert!(json["engine"]["containerd_image_store"].is_boolean());
    assert!(json["engine"]["registry_mirrors"].is_array());
    assert_eq!(json["buildx"]["status"], "available");
}

#[test]
fn doctor_without_a_daemon_says_so_in_one_line_and_exits_3() {
    let out = doctor(&[], Some("unix:///nonexistent.sock"));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains("unix:///nonexistent.sock"), "{err}");
    assert!(err.contains("DOCKER_HOST"), "{err}");
    assert!(err.contains("dockerd"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn doctor_with_a_tcp_host_where_nothing_listens_names_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let host = format!("tcp://{addr}");
    let out = doctor(&["--timeout", "3"], Some(&host));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&host), "{err}");
}
