//! Remote BuildKit builders (issue #9): listed by doctor with their cache-export ability;
//! `--buildx-builder` uses one as configured, skips the prefetch it does not need, and gives
//! mirror advice instead. (No buildkitd can run here, so the builder's endpoint is a closed
//! 127.0.0.1 port: what is tested is everything up to the builder answering.)

mod support;

use support::{Project, text};

struct Builder(String);

impl Builder {
    fn remote() -> Builder {
        let name = testbed::unique_name("aib-remote");
        let port = testbed::free_port().unwrap();
        let out = std::process::Command::new("docker")
            .args([
                "buildx",
                "create",
                "--name",
                &name,
                "--driver",
                "remote",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker buildx create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Builder(name)
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["buildx", "rm", &self.0])
            .output();
    }
}

#[tokio::test]
async fn doctor_lists_builders_and_build_all_uses_a_remote_one_without_prefetch() {
    let builder = Builder::remote();
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    project.write("api/Dockerfile", "FROM ubuntu:22.04\n");

    // Only the local registry is probed: doctor would otherwise probe Docker Hub for the
    // plan's base image (unreachable here: exit 4, issue #8).
    let registry = project.registry.host();
    let out = project
        .command(&["doctor", "--output", "json", "--registry", &registry])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = doctor["builders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == builder.0.as_str())
        .expect("doctor lists the builder");
    assert_eq!(listed["driver"], "remote");
    assert_eq!(listed["cache_export"], true);
    let default = doctor["builders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["driver"] == "docker")
        .expect("the default builder");
    assert_eq!(
        default["cache_export"],
        doctor["engine"]["containerd_image_store"]
    );

    let out = project.run(&[
        "build-all",
        "--backend",
        "buildx",
        "--buildx-builder",
        &builder.0,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = project.report();
    assert_eq!(
        report["run"]["builder"],
        format!("buildx ({}, driver remote)", builder.0)
    );
    assert_eq!(
        report["base_images"],
        serde_json::json!([]),
        "a remote builder pulls by itself: no prefetch"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("buildkitd.toml") && stderr.contains("[registry.\"docker.io\"]"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&project.registry.host()),
        "the advice names the mirror: {stderr}"
    );

    let out = project.run(&[
        "build-all",
        "--backend",
        "buildx",
        "--buildx-builder",
        "no-such-builder",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-builder"));
}
