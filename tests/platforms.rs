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

/// The plan's base images as (reference, platform) pairs.
fn needs(plan: &serde_json::Value) -> Vec<(String, Option<String>)> {
    plan["base_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["reference"].as_str().unwrap().to_string(),
                n["platform"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn plan_json(project: &Project) -> serde_json::Value {
    let out = project
        .command(&["plan", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `FROM --platform=$BUILDPLATFORM` is the engine's platform, `$TARGETPLATFORM` the service's
/// first platform; a FROM without `--platform` in a service with platforms pulls that platform,
/// one without platforms the engine's own (no platform in the plan); the syntax frontend
/// runs on the build platform.
#[tokio::test]
async fn issue13_from_platform_args_expand_into_the_plan() {
    let project = Project::empty().await;
    project.write(
        "svc/Dockerfile",
        "# syntax=docker/dockerfile:1\n\
         FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
         FROM --platform=$TARGETPLATFORM alpine:3.19 AS target\n\
         FROM --platform=linux/ppc64le busybox:1.36 AS fixed\n\
         FROM debian:12\n\
         COPY --from=build /a /a\nCOPY --from=target /b /b\nCOPY --from=fixed /c /c\n",
    );
    project.write("plain/Dockerfile", "FROM debian:12\n");
    project.write(
        "ai-infra-build.yml",
        "services:\n  svc:\n    platforms: [linux/arm64, linux/amd64]\n  plain: {}\n",
    );
    let plan = plan_json(&project);
    let host = format!("linux/{}", host_arch());
    let some = |p: &str| Some(p.to_string());
    let mut got = needs(&plan);
    got.sort();
    assert_eq!(
        got,
        [
            ("docker.io/docker/dockerfile:1".to_string(), None),
            (
                "docker.io/library/alpine:3.19".to_string(),
                some("linux/arm64")
            ),
            (
                "docker.io/library/busybox:1.36".to_string(),
                some("linux/ppc64le")
            ),
            ("docker.io/library/debian:12".to_string(), None),
            (
                "docker.io/library/debian:12".to_string(),
                some("linux/arm64")
            ),
            ("docker.io/library/golang:1.22".to_string(), some(&host)),
        ]
    );
    // The human plan names the platform beside the image.
    let out = project.command(&["plan"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("docker.io/library/alpine:3.19 (linux/arm64)"),
        "{}",
        text(&out)
    );
}

/// Acceptance 4, first half: a test-bed index of linux/amd64 and linux/arm64;
/// `FROM --platform=linux/arm64` makes the plan name that platform, and the prefetch (through
/// the relay, from a proxy in front of the registry serving as Docker Hub mirror) pulls the
/// arm64 manifest of the index: the local image is arm64, its ID is the arm64 image's config,
/// and the mirror was asked for the arm64 manifest and never for the amd64 one. Run again, the arm64 image is
/// present; a local image of another platform under the same name is pulled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_from_platform_prefetches_that_platform_from_an_index() {
    let project = Project::empty().await;
    let repo = testbed::unique_name("pidx");
    let index = testbed::images::push_index(
        &project.registry.host(),
        &testbed::images::ImageSpec::new(format!("{repo}/base"), "1"),
        &["linux/amd64", "linux/arm64"],
    )
    .await
    .expect("push the index");
    let name = format!("{repo}/base:1");
    let _cleanup = testbed::RemoveImagesOnDrop(vec![name.clone()]);
    project.write(
        "arm/Dockerfile",
        &format!("FROM --platform=linux/arm64 {name}\nCOPY . /src\n"),
    );
    project.write("ai-infra-build.yml", "services:\n  arm: {}\n");
    let plan = plan_json(&project);
    assert_eq!(
        needs(&plan),
        [(format!("docker.io/{name}"), Some("linux/arm64".to_string()))]
    );

    // The mirror is a proxy in front of the registry: its log shows what was asked for.
    let proxy = testbed::proxy::FaultProxy::start(testbed::proxy::ProxyOptions::new(
        project.registry.addr(),
    ))
    .await
    .unwrap();
    let prefetch = |project: &Project| {
        let out = project
            .command(&["prefetch", "--output", "json", "--mirror"])
            .arg(format!("docker.io={}", proxy.host()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let images = report["images"].as_array().unwrap().clone();
        assert_eq!(images.len(), 1, "{report:#}");
        assert_eq!(images[0]["platform"], "linux/arm64", "{report:#}");
        images[0]["status"].as_str().unwrap().to_string()
    };
    let inspect = |format: &str| {
        let out = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", format, &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(prefetch(&project), "pulled");
    let arm = index.image("linux/arm64").unwrap();
    let amd = index.image("linux/amd64").unwrap();
    assert_eq!(inspect("{{.Os}}/{{.Architecture}}"), "linux/arm64");
    assert_eq!(inspect("{{.Id}}"), arm.image_id);
    let asked: Vec<String> = proxy.stats().log.into_iter().map(|r| r.path).collect();
    let manifest = |digest: &str| format!("/v2/{repo}/base/manifests/{digest}");
    assert!(
        asked.contains(&manifest(&arm.digest)),
        "the arm64 manifest was not asked for: {asked:#?}"
    );
    assert!(
        !asked.contains(&manifest(&amd.digest)),
        "the amd64 manifest was asked for: {asked:#?}"
    );

    // Present now; an amd64 image under the name is not what the Dockerfile needs.
    assert_eq!(prefetch(&project), "present");
    let amd_ref = format!("{}/{repo}/base@{}", project.registry.host(), amd.digest);
    let pulled = std::process::Command::new("docker")
        .args(["pull", "-q", &amd_ref])
        .output()
        .unwrap();
    assert!(pulled.status.success(), "{}", text(&pulled));
    let tagged = std::process::Command::new("docker")
        .args(["tag", &amd_ref, &name])
        .output()
        .unwrap();
    assert!(tagged.status.success(), "{}", text(&tagged));
    assert_eq!(inspect("{{.Architecture}}"), "amd64");
    assert_eq!(prefetch(&project), "pulled");
    assert_eq!(inspect("{{.Architecture}}"), "arm64");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &amd_ref])
        .output();
}
