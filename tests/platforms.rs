//! Issue #13 item 3 (part): the plan expands BuildKit's automatic platform args as the build
//! will: BUILDPLATFORM/BUILDARCH are the engine's (this machine's), TARGETPLATFORM/TARGETARCH
//! the service's first `platforms` entry, else the engine's, so the prefetch pulls the base
//! images the build will use.

mod support;

use support::{Project, text};

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test expectation for {other}"),
    }
}

#[tokio::test]
async fn issue13_platform_args_follow_the_engine_and_the_service_platforms() {
    let project = Project::empty().await;
    project.write(
        "native/Dockerfile",
        "FROM busybox:${TARGETARCH}-${BUILDARCH}\n",
    );
    project.write(
        "cross/Dockerfile",
        "FROM busybox:${TARGETARCH}-${BUILDARCH}\n",
    );
    project.write(
        "ai-infra-build.yml",
        "services:\n  native: {}\n  cross:\n    platforms: [linux/riscv64]\n",
    );
    let out = project
        .command(&["plan", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bases = |name: &str| -> Vec<String> {
        plan["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["base_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect()
    };
    let host = host_arch();
    assert_eq!(
        bases("native"),
        [format!("docker.io/library/busybox:{host}-{host}")]
    );
    assert_eq!(
        bases("cross"),
        [format!("docker.io/library/busybox:riscv64-{host}")]
    );
}
