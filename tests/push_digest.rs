//! Issue #13 item 4: after `--push`, each service's `digest` in the report and the `images` /
//! `metadata` outputs is the registry's digest of the pushed manifest (its
//! `Docker-Content-Digest` for the tag), and `image-id` stays the local image ID, on every
//! backend.

mod support;

use support::{Project, service, text};

/// The outputs a run wrote to GITHUB_OUTPUT (heredoc form).
fn outputs(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delimiter {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        }
    }
    out
}

async fn registry_digest(url: &str) -> String {
    let resp = testbed::http::send(
        hyper::Method::HEAD,
        url,
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )],
        bytes::Bytes::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("HEAD {url}: {e:#}"));
    assert_eq!(resp.status, 200, "{url}");
    resp.header("docker-content-digest")
        .unwrap_or_else(|| panic!("{url}: no Docker-Content-Digest"))
        .to_string()
}

#[tokio::test]
async fn issue13_push_reports_the_registry_digest_apart_from_the_image_id() {
    let project = Project::empty().await;
    project.push_bases(&[("library/busybox", "1.36")]).await;
    let target = testbed::registry::Registry::start().await.unwrap();
    project.write(
        "ai-infra-build.yml",
        "services:\n  api:\n    tags: [stable]\n",
    );
    let prefix = format!("{}/team/", target.host());
    for backend in ["buildx", "engine", "engine-classic"] {
        // Each backend builds a different image (so each push has its own digest).
        project.write(
            "api/Dockerfile",
            &format!("FROM busybox:1.36\nRUN echo {backend} > /api\n"),
        );
        let github_output = project.path().join(format!("output-{backend}"));
        let out = project
            .command(&[
                "build-all",
                "--prefix",
                &prefix,
                "--push",
                "--backend",
                backend,
            ])
            .args(project.common_args())
            .env("GITHUB_OUTPUT", &github_output)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        let report = project.report();
        let api = service(&report, "api");
        let digest = api["digest"].as_str().unwrap_or_else(|| panic!("{api:#}"));
        let image_id = api["image_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{api:#}"));
        for tag in [project.tag.as_str(), "stable"] {
            let url = format!("{}/v2/team/api/manifests/{tag}", target.url());
            assert_eq!(digest, registry_digest(&url).await, "{backend} {tag}");
        }
        // The image ID is the local one, not the manifest's digest.
        let local = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .arg(format!("{prefix}api:{}", project.tag))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&local.stdout).trim(),
            image_id,
            "{backend}"
        );
        assert_ne!(digest, image_id);

        let outputs = outputs(&github_output);
        let images: serde_json::Value = serde_json::from_str(&outputs["images"]).unwrap();
        assert_eq!(images["api"]["digest"], digest, "{images:#}");
        assert_eq!(images["api"]["image-id"], image_id, "{images:#}");
        assert_eq!(images["api"]["tags"][0], format!("{prefix}api:stable"));
        let metadata: serde_json::Value = serde_json::from_str(&outputs["metadata"]).unwrap();
        assert_eq!(metadata["api"]["containerimage.digest"], digest);
        assert_eq!(metadata["api"]["containerimage.config.digest"], image_id);
        assert_eq!(
            metadata["api"]["image.name"],
            format!("{prefix}api:{},{prefix}api:stable", project.tag)
        );
    }
    let _ = std::process::Command::new("docker")
        .args([
            "rmi",
            "-f",
            "--no-prune",
            &format!("{prefix}api:{}", project.tag),
            &format!("{prefix}api:stable"),
        ])
        .output();
}
