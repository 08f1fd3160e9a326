//! The cache directory against the real daemon and registry (issue #7), through the library:
//! base images saved after a prefetch and restored before the next one (no registry request),
//! corrupted and truncated archives discarded and pulled again, `--pull always` answered by a
//! manifest check (and by the cached copy when no registry answers), and service images kept
//! as inline-cache sources.
//!
//! Every image has a unique repository (`cachetest-XXXXXXXX/...`) and only those are removed.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ai_infra_build::build::backend::Backend;
use ai_infra_build::cache::{Cache, DEFAULT_MAX_SIZE};
use ai_infra_build::engine::Engine;
use ai_infra_build::prefetch::{
    self, ImageNeed, ImageStatus, Mirrors, PrefetchOptions, PullPolicy, PullVia,
};
use ai_infra_build::reference::Reference;
use ai_infra_build::report::{ServiceResult, ServiceStatus};
use ai_infra_build::retry::RetryPolicy;
use testbed::TestBed;
use testbed::images::{ImageSpec, PushedImage, push_image};
use testbed::proxy::{ProxyStats, RequestKind};

struct Fixture {
    bed: TestBed,
    engine: Engine,
    ns: String,
    pushed: Vec<PushedImage>,
    needs: Vec<ImageNeed>,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A registry with a fault proxy (no faults) in front, and two unique images on it.
    async fn new() -> Fixture {
        let bed = TestBed::start(|o| o)
            .await
            .expect("registry and proxy start (run scripts/setup)");
        let engine = Engine::connect(Duration::from_secs(10))
            .await
            .expect("the Docker daemon answers");
        let ns = testbed::unique_name("cachetest");
        let mut pushed = Vec::new();
        let mut needs = Vec::new();
        for name in ["alpha", "beta"] {
            let spec = ImageSpec::new(format!("{ns}/{name}"), "1").with_layer(300_000);
            pushed.push(push_image(&bed.registry.host(), &spec).await.expect("push"));
            needs.push(ImageNeed {
                reference: Reference::parse(&format!("{ns}/{name}:1")).unwrap(),
                platform: None,
                uses: Vec::new(),
            });
        }
        Fixture {
            bed,
            engine,
            ns,
            pushed,
            needs,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn options(&self, pull: PullPolicy) -> PrefetchOptions {
        let mut mirrors = Mirrors::default();
        mirrors
            .add(&format!("docker.io={}", self.bed.proxy.host()))
            .unwrap();
        PrefetchOptions {
            concurrency: 2,
            policy: RetryPolicy {
                max_retries: 1,
                ..RetryPolicy::default()
            },
            idle_timeout: Duration::from_secs(30),
            mirrors,
            mirror_first: true,
            pull,
            via: PullVia::Auto,
            notify: None,
            health: None,
            credentials: Default::default(),
        }
    }

    async fn prefetch(&self) -> prefetch::PrefetchReport {
        prefetch::prefetch(
            &self.engine,
            self.needs.clone(),
            &self.options(PullPolicy::Missing),
        )
        .await
        .expect("prefetch runs")
    }

    fn cache(&self) -> Cache {
        Cache::open(self.dir.path(), DEFAULT_MAX_SIZE).expect("the cache opens")
    }

    async fn local_id(&self, name: &str) -> Option<String> {
        self.engine
            .docker
            .inspect_image(name)
            .await
            .ok()
            .and_then(|i| i.id)
    }

    /// Removes this fixture's images from the daemon (fresh daemon state for them).
    async fn forget_images(&self) {
        let docker = testbed::docker::connect().await.unwrap();
        for need in &self.needs {
            testbed::docker::remove_image(&docker, &need.reference.familiar())
                .await
                .unwrap();
        }
        for need in &self.needs {
            assert!(
                self.local_id(&need.reference.familiar()).await.is_none(),
                "{} still present",
                need.reference
            );
        }
    }

    fn archive_of(&self, cache: &Cache, i: usize) -> std::path::PathBuf {
        let entry = cache
            .cached_digest(&self.needs[i].reference.to_string())
            .expect("in the index");
        self.dir.path().join(&entry.archive)
    }
}

fn registry_requests(stats: &ProxyStats) -> u64 {
    RequestKind::ALL.iter().map(|k| stats.requests(*k)).sum()
}

#[tokio::test]
async fn issue7_base_images_restored_from_the_cache_need_no_registry_request() {
    let f = Fixture::new().await;
    let cold = f.prefetch().await;
    assert!(
        cold.images.iter().all(|i| i.status == ImageStatus::Pulled),
        "{:#?}",
        cold.images
    );
    let mut cache = f.cache();
    cache.save_base_images(&f.engine, &cold.images).await;
    assert!(cache.warnings().is_empty(), "{:?}", cache.warnings());
    let stats = cache.close();
    assert_eq!(stats.base_image_misses, 2, "both were pulled");
    assert!(stats.saved_bytes > 600_000, "{stats:?}");
    assert!(stats.size >= stats.saved_bytes);

    // The index names each reference with its image id and the registry's manifest digest.
    let cache = f.cache();
    for (need, pushed) in f.needs.iter().zip(&f.pushed) {
        let entry = cache
            .cached_digest(&need.reference.to_string())
            .expect("indexed");
        assert_eq!(entry.image_id, pushed.image_id);
        assert_eq!(entry.digest.as_deref(), Some(pushed.digest.as_str()));
        assert!(cache.present(&need.reference.to_string(), &pushed.digest));
        assert!(f.dir.path().join(&entry.archive).is_file());
    }
    drop(cache);

    // Fresh daemon state, then restore: the prefetch finds both present and asks nothing.
    f.forget_images().await;
    let mut cache = f.cache();
    let restored = cache.restore_base_images(&f.engine, &f.needs).await;
    assert_eq!(restored.loaded.len(), 2, "{restored:?}");
    assert!(restored.discarded.is_empty());
    for (need, pushed) in f.needs.iter().zip(&f.pushed) {
        assert_eq!(
            f.local_id(&need.reference.familiar()).await.as_deref(),
            Some(pushed.image_id.as_str())
        );
    }
    f.bed.proxy.reset_stats();
    let warm = f.prefetch().await;
    assert!(
        warm.images.iter().all(|i| i.status == ImageStatus::Present),
        "{:#?}",
        warm.images
    );
    assert_eq!(
        registry_requests(&f.bed.proxy.stats()),
        0,
        "{:#?}",
        f.bed.proxy.stats()
    );
    cache.save_base_images(&f.engine, &warm.images).await;
    let stats = cache.close();
    assert_eq!(
        (stats.base_image_hits, stats.base_image_misses),
        (2, 0),
        "{stats:?}"
    );
    assert_eq!(stats.saved_bytes, 0, "nothing new to save");
    assert!(stats.restored_bytes > 600_000);

    // A second restore with the images still there loads nothing.
    let mut cache = f.cache();
    let again = cache.restore_base_images(&f.engine, &f.needs).await;
    assert_eq!(
        (again.loaded.len(), again.already_present.len(), again.bytes),
        (0, 2, 0),
        "{again:?}"
    );
    drop(cache);
    f.forget_images().await;
}

#[tokio::test]
async fn issue7_corrupted_and_truncated_archives_are_discarded_and_pulled_again() {
    let f = Fixture::new().await;
    let cold = f.prefetch().await;
    let mut cache = f.cache();
    cache.save_base_images(&f.engine, &cold.images).await;
    let (alpha, beta) = (f.archive_of(&cache, 0), f.archive_of(&cache, 1));
    cache.close();

    // One bit flipped in the middle of alpha's archive, beta's cut short.
    let mut bytes = std::fs::read(&alpha).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&alpha, bytes).unwrap();
    let len = std::fs::metadata(&beta).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&beta)
        .unwrap()
        .set_len(len / 3)
        .unwrap();

    f.forget_images().await;
    let mut cache = f.cache();
    let restored = cache.restore_base_images(&f.engine, &f.needs).await;
    assert!(restored.loaded.is_empty(), "{restored:?}");
    assert_eq!(restored.discarded.len(), 2);
    let warnings = cache.warnings().join("\n");
    assert!(warnings.contains("checksum mismatch"), "{warnings}");
    assert!(warnings.contains("truncated"), "{warnings}");
    assert!(
        warnings.contains(&format!("{}/alpha", f.ns)),
        "the warning names the image: {warnings}"
    );
    assert!(
        !alpha.exists() && !beta.exists(),
        "the broken archives are gone"
    );
    assert!(cache.index().base_images.is_empty());

    // Recovery: the prefetch pulls them again, the cache saves them again, and the next
    // fresh start restores them.
    f.bed.proxy.reset_stats();
    let again = f.prefetch().await;
    assert!(
        again.images.iter().all(|i| i.status == ImageStatus::Pulled),
        "{:#?}",
        again.images
    );
    assert!(f.bed.proxy.stats().requests(RequestKind::BlobGet) > 0);
    cache.save_base_images(&f.engine, &again.images).await;
    let stats = cache.close();
    assert_eq!(stats.discarded, 2);
    assert_eq!(stats.warnings.len(), 2, "{:?}", stats.warnings);
    f.forget_images().await;
    let mut cache = f.cache();
    let restored = cache.restore_base_images(&f.engine, &f.needs).await;
    assert_eq!(restored.loaded.len(), 2, "{restored:?}");
    drop(cache);
    f.forget_images().await;
}

#[tokio::test]
async fn issue7_pull_always_asks_for_the_manifest_digest_and_falls_back_to_the_cache() {
    let f = Fixture::new().await;
    let cold = f.prefetch().await;
    let mut cache = f.cache();
    cache.save_base_images(&f.engine, &cold.images).await;

    // Current: one HEAD per image, no blob, both vouched for.
    f.bed.proxy.reset_stats();
    let mut options = f.options(PullPolicy::Always);
    options.mirror_first = true;
    let vouched = cache
        .vouch_current(&f.engine, &f.needs, &options)
        .await
        .images;
    assert_eq!(vouched.len(), 2, "{vouched:#?}");
    assert!(vouched.iter().all(|v| v.status == ImageStatus::Present));
    assert!(
        vouched[0]
            .source
            .as_deref()
            .unwrap()
            .starts_with("cache (current on 127.0.0.1:"),
        "{:?}",
        vouched[0].source
    );
    let stats = f.bed.proxy.stats();
    assert_eq!(stats.requests(RequestKind::ManifestHead), 2, "{stats:#?}");
    assert_eq!(stats.requests(RequestKind::BlobGet), 0);
    assert!(cache.warnings().is_empty(), "{:?}", cache.warnings());

    // Changed upstream: beta gets a new image under the same tag; only alpha is vouched for.
    let spec = ImageSpec::new(format!("{}/beta", f.ns), "1").with_layer(1000);
    push_image(&f.bed.registry.host(), &spec).await.unwrap();
    let vouched = cache
        .vouch_current(&f.engine, &f.needs, &options)
        .await
        .images;
    let names: Vec<&str> = vouched.iter().map(|v| v.reference.as_str()).collect();
    assert_eq!(
        names,
        [f.needs[0].reference.to_string()],
        "beta must be pulled"
    );

    // No registry answers (Docker Hub is unreachable here, the mirror is a closed port):
    // the cached copies are used, with a warning that says how old they are.
    let mut down = Mirrors::default();
    down.add(&format!(
        "docker.io=127.0.0.1:{}",
        testbed::free_port().unwrap()
    ))
    .unwrap();
    let mut options = f.options(PullPolicy::Always);
    options.mirrors = down;
    let vouched = cache
        .vouch_current(&f.engine, &f.needs, &options)
        .await
        .images;
    assert_eq!(vouched.len(), 2, "{vouched:#?}");
    assert_eq!(
        vouched[1].source.as_deref(),
        Some("cache (registry unreachable)")
    );
    let warnings = cache.warnings().join("\n");
    assert!(
        warnings.contains("using the cached copy saved") && warnings.contains(" ago"),
        "{warnings}"
    );
    assert!(
        warnings.contains("registry-1.docker.io"),
        "names what it tried: {warnings}"
    );
    drop(cache);
    f.forget_images().await;
}

fn service_result(name: &str, image: &str) -> ServiceResult {
    ServiceResult {
        name: name.into(),
        image: image.into(),
        tags: Vec::new(),
        status: ServiceStatus::Success,
        duration_ms: 1,
        attempts: 1,
        builder: "engine (buildkit)".into(),
        cached_steps: Some(0),
        total_steps: Some(2),
        image_id: None,
        digest: None,
        size: None,
        log_path: None,
        dockerfile: "Dockerfile".into(),
        failure: None,
        skipped_reason: None,
        log_tail: Vec::new(),
        reused: false,
        reused_from: None,
    }
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

#[tokio::test]
async fn issue7_inline_mode_keeps_service_images_as_cache_sources() {
    let f = Fixture::new().await;
    f.prefetch().await;
    let base = f.needs[0].reference.familiar();
    let image = format!("{}/svc:built", f.ns);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo {} > /x\n", f.ns),
    )
    .unwrap();
    let build = |tag: &str| {
        std::process::Command::new("/usr/bin/docker")
            .args([
                "build",
                "-q",
                "--build-arg",
                "BUILDKIT_INLINE_CACHE=1",
                "-t",
                tag,
            ])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "1")
            .output()
            .unwrap()
    };
    let out = build(&image);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built_id = f.local_id(&image).await.unwrap();

    let engine_backend = Backend::Engine {
        engine: f.engine.clone(),
        buildkit: AtomicBool::new(true),
    };
    let facts = f.engine.facts().await.unwrap();
    if facts.containerd_image_store {
        panic!(
            "this test is for the classic image store (Docker 20.10); the running engine is {}",
            facts.engine_version
        );
    }
    let services = vec!["svc".to_string(), "other".to_string()];
    let mut cache = f.cache();
    let plan = cache
        .prepare_build_cache(&f.engine, &facts, &engine_backend, &services)
        .await;
    assert_eq!(plan.mode.label(), "inline");
    assert!(plan.job("svc").cache_from.is_empty(), "nothing cached yet");
    assert!(plan.job("svc").inline_cache);
    cache
        .save_build_cache(&f.engine, &[service_result("svc", &image)], false)
        .await;
    let stats = cache.close();
    assert_eq!(stats.mode, "inline");
    assert_eq!(
        stats.services.get("svc"),
        Some(&false),
        "no cache source on the first run"
    );
    assert!(stats.saved_bytes > 0);

    // Fresh state: the service image is gone; the next run loads it and names it as source.
    testbed::docker::remove_image(&testbed::docker::connect().await.unwrap(), &image)
        .await
        .unwrap();
    assert!(f.local_id(&built_id).await.is_none());
    let mut cache = f.cache();
    let plan = cache
        .prepare_build_cache(&f.engine, &facts, &engine_backend, &services)
        .await;
    let job = plan.job("svc");
    assert_eq!(job.cache_from.len(), 1, "{job:?}");
    assert!(
        job.cache_from[0].starts_with("ai-infra-build-cache-"),
        "{job:?}"
    );
    assert!(plan.job("other").cache_from.is_empty());
    assert_eq!(
        f.local_id(&job.cache_from[0]).await.as_deref(),
        Some(built_id.as_str())
    );
    let mut second = service_result("svc", &image);
    second.cached_steps = Some(1);
    let out = build(&image);
    assert!(out.status.success());
    cache.save_build_cache(&f.engine, &[second], false).await;
    let stats = cache.close();
    assert_eq!(stats.services.get("svc"), Some(&true));
    assert_eq!(stats.service_hits, 1);
    // The cache tag was only for the build.
    assert!(
        f.local_id(&job.cache_from[0]).await.is_none(),
        "cache tag removed"
    );
    let index = Cache::open(f.dir.path(), DEFAULT_MAX_SIZE).unwrap();
    assert_eq!(index.index().services.len(), 1);
    let archives: BTreeSet<&String> = index.index().archives.keys().collect();
    assert!(
        archives.iter().any(|a| a.starts_with("images/services-")),
        "{archives:?}"
    );
    drop(index);

    let _ = docker_cli(&["rmi", "-f", &image]);
    f.forget_images().await;
}
