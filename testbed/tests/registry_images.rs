//! The registry comes up, serves what `push_image` uploads as a valid schema2 image, and is
//! gone after drop; the daemon pulls such an image and runs it.

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use flate2::read::GzDecoder;
use hyper::{Method, StatusCode};
use serde_json::Value;
use testbed::images::{self, ImageSpec, MEDIA_MANIFEST, push_image, sha256_digest};
use testbed::registry::Registry;
use testbed::{docker, http};

async fn get_json(url: &str, accept: &str) -> anyhow::Result<(http::Response, Value)> {
    let resp = http::send(Method::GET, url, &[("accept", accept)], Default::default()).await?;
    anyhow::ensure!(resp.status == StatusCode::OK, "GET {url}: {}", resp.status);
    let json = serde_json::from_slice(&resp.body).with_context(|| format!("GET {url}"))?;
    Ok((resp, json))
}

#[tokio::test]
async fn registry_answers_and_is_gone_after_drop() -> anyhow::Result<()> {
    let registry = Registry::start().await?;
    assert_eq!(
        registry.host(),
        format!("127.0.0.1:{}", registry.addr().port())
    );
    let ping = http::get(&format!("{}/v2/", registry.url())).await?;
    assert_eq!(ping.status, StatusCode::OK);
    assert_eq!(
        ping.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    push_image(&registry.host(), &ImageSpec::new("library/alpine", "3")).await?;
    let storage = registry.storage_dir();
    assert!(
        storage
            .join("docker/registry/v2/repositories/library/alpine")
            .is_dir()
    );

    let url = format!("{}/v2/", registry.url());
    drop(registry);
    assert!(!storage.exists(), "storage removed on drop");
    assert!(http::get(&url).await.is_err(), "process killed on drop");
    Ok(())
}

#[tokio::test]
async fn pushed_image_is_a_valid_schema2_image() -> anyhow::Result<()> {
    let registry = Registry::start().await?;
    let spec = ImageSpec::new("library/ubuntu", "22.04").with_random_bytes(300_001, 2);
    assert_eq!(spec.extra_layers, vec![150_001, 150_000]);
    let pushed = push_image(&registry.host(), &spec).await?;
    let base = format!("{}/v2/library/ubuntu", registry.url());

    let (resp, manifest) = get_json(&format!("{base}/manifests/22.04"), MEDIA_MANIFEST).await?;
    assert_eq!(resp.header("content-type"), Some(MEDIA_MANIFEST));
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(pushed.digest.as_str())
    );
    assert_eq!(sha256_digest(&resp.body), pushed.digest);
    assert_eq!(manifest["config"]["digest"], pushed.image_id.as_str());
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3));

    let (_, config) = get_json(&format!("{base}/blobs/{}", pushed.image_id), "*/*").await?;
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    let mut total = pushed.config.size;
    for (layer, diff_id) in pushed
        .layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let blob = http::get(&format!("{base}/blobs/{}", layer.digest)).await?;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(sha256_digest(&blob.body), layer.digest);
        assert_eq!(blob.body.len() as u64, layer.size);
        let mut tar = Vec::new();
        GzDecoder::new(&blob.body[..]).read_to_end(&mut tar)?;
        assert_eq!(sha256_digest(&tar), diff_id.as_str().unwrap(), "diff_id");
        total += layer.size;
    }
    assert_eq!(pushed.size, total);
    assert!(pushed.size > 300_000);

    // The same spec again: a new image id, the same base layer, new random layers.
    let again = push_image(&registry.host(), &spec).await?;
    assert_ne!(again.image_id, pushed.image_id);
    assert_eq!(again.layers[0], pushed.layers[0]);
    assert_ne!(again.layers[1], pushed.layers[1]);
    Ok(())
}

#[tokio::test]
async fn busybox_layer_has_the_shell_and_applets() -> anyhow::Result<()> {
    let registry = Registry::start().await?;
    let pushed = push_image(&registry.host(), &ImageSpec::new("library/nginx", "stable")).await?;
    let url = format!(
        "{}/v2/library/nginx/blobs/{}",
        registry.url(),
        pushed.layers[0].digest
    );
    let blob = http::get(&url).await?;
    let mut archive = tar::Archive::new(GzDecoder::new(&blob.body[..]));
    let mut links = Vec::new();
    let mut busybox_size = 0;
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path == "bin/busybox" {
            busybox_size = entry.size();
        }
        if let Some(target) = entry.link_name()? {
            links.push((path, target.to_string_lossy().into_owned()));
        }
    }
    assert_eq!(busybox_size, std::fs::metadata(images::BUSYBOX)?.len());
    for applet in ["sh", "ls", "cat", "echo", "wget", "sleep", "true"] {
        assert!(
            links.contains(&(format!("bin/{applet}"), "busybox".to_owned())),
            "{applet} missing from {links:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn daemon_pulls_and_runs_library_ubuntu_22_04() -> anyhow::Result<()> {
    let docker = docker::connect().await?;
    let registry = Registry::start().await?;
    let spec = ImageSpec::new("library/ubuntu", "22.04").with_layer(1 << 20);
    let pushed = push_image(&registry.host(), &spec).await?;
    let reference = format!("{}/library/ubuntu:22.04", registry.host());
    assert_eq!(pushed.reference, reference);

    let pull = docker::pull(&docker, &reference, Duration::from_secs(60)).await?;
    let timeout = Duration::from_secs(30);
    let echo = docker::run(&docker, &reference, &["/bin/sh", "-c", "echo ok"], timeout).await;
    let ls = docker::run(&docker, &reference, &["ls", "/testbed"], timeout).await;
    let exit = docker::run(&docker, &reference, &["/bin/sh", "-c", "exit 3"], timeout).await;
    let inspect = docker.inspect_image(&reference).await;
    docker::remove_image(&docker, &reference).await?;

    assert_eq!(pull.error, None, "{:?}", pull.statuses);
    assert_eq!(inspect?.id.as_deref(), Some(pushed.image_id.as_str()));
    let echo = echo?;
    assert_eq!((echo.exit_code, echo.output.as_str()), (0, "ok\n"));
    assert_eq!(ls?.output, "random-0.bin\n");
    assert_eq!(exit?.exit_code, 3);
    Ok(())
}
