//! Set-up for the cache directory's end-to-end tests (issue #7), shared by `cache_e2e.rs`
//! (Docker 20.10, inline cache) and `cache_engine26.rs` (Docker 26, buildx local cache).
//!
//! The bundled example is copied with its base images renamed into a namespace of its own
//! (`e2e-XXXXXXXX/python:3.11-slim`, …) and a marker comment on every RUN line, so that
//! "fresh daemon state" can be made on the shared daemon without touching anything else:
//! only this namespace's images, this run's service images (unique tag), this cache
//! directory's cache tags, and the BuildKit cache records whose description carries the
//! marker (removed one by one with `docker builder prune --filter id=…`) go. The base images
//! are pushed with a random layer each, so no other test's build records can match them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use testbed::TestBed;
use testbed::images::{ImageSpec, push_image};
use testbed::proxy::{ProxyStats, RequestKind};

#[path = "../support/mod.rs"]
mod support;
pub use support::{EXAMPLE_BASE_IMAGES, bin, copy_tree, example_dir, text};

/// The end-to-end runs are heavy (11 builds each): one at a time per test binary.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running engine, as `scripts/engine status` names it: `20.10`, `26` or the version.
pub fn engine_version() -> String {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn containerd_image_store() -> bool {
    let out = Command::new("docker")
        .args(["info", "--format", "{{json .DriverStatus}}"])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).contains("io.containerd.snapshotter")
}

/// Fails loudly unless the running engine is `want` (`20.10` or `26`).
pub fn require_engine(want: &str) {
    let version = engine_version();
    let ok = match want {
        "26" => version.starts_with("26.") && containerd_image_store(),
        _ => version.starts_with(want) && !containerd_image_store(),
    };
    assert!(
        ok,
        "this test needs the Docker {want} engine{}, but the daemon is {version:?} (containerd image store: {}). \
         Switch with `scripts/engine use {want}` (CI), or run it with a private daemon beside this one: \
         `scripts/engine sandbox {want} -- cargo test --test {}`",
        if want == "26" {
            " with the containerd image store"
        } else {
            ""
        },
        containerd_image_store(),
        if want == "26" {
            "cache_engine26 -- --ignored"
        } else {
            "cache_e2e"
        }
    );
}

/// A copy of the example in its own namespace, a registry with a counting proxy in front
/// (the only "Docker Hub" the runs see), and a cache directory.
pub struct E2e {
    /// `--backend`: `buildx` unless a test says otherwise.
    pub builder: &'static str,
    pub ns: String,
    pub tag: String,
    pub project: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    pub bed: TestBed,
    rt: tokio::runtime::Runtime,
}

/// Extra random bytes per base image; ubuntu is bigger, so that saving the service images
/// takes long enough for the killed-mid-save test to catch it.
fn layer_size(short: &str) -> usize {
    if short == "ubuntu" {
        24 << 20
    } else {
        256 << 10
    }
}

impl E2e {
    pub fn new() -> E2e {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bed = rt
            .block_on(TestBed::start(|o| o))
            .expect("registry and proxy start (run scripts/setup)");
        let ns = testbed::unique_name("e2e");
        let e2e = E2e {
            builder: "buildx",
            tag: testbed::unique_name("t"),
            project: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            ns,
            bed,
            rt,
        };
        copy_tree(&example_dir(), e2e.project.path());
        e2e.namespace_the_example();
        for (repo, tag) in EXAMPLE_BASE_IMAGES {
            let short = repo.trim_start_matches("library/");
            let spec =
                ImageSpec::new(format!("{}/{short}", e2e.ns), tag).with_layer(layer_size(short));
            e2e.rt
                .block_on(push_image(&e2e.bed.registry.host(), &spec))
                .expect("push a base image");
        }
        e2e
    }

    /// `python:3.11-slim` -> `e2e-…/python:3.11-slim` in the Dockerfiles and the config, and
    /// ` # e2e-…` after every RUN line.
    fn namespace_the_example(&self) {
        let mut files = vec![self.project.path().join("ai-infra-build.yml")];
        for entry in std::fs::read_dir(self.project.path()).unwrap() {
            let df = entry.unwrap().path().join("Dockerfile");
            if df.is_file() {
                files.push(df);
            }
        }
        for file in files {
            let mut text = std::fs::read_to_string(&file).unwrap();
            for (repo, tag) in EXAMPLE_BASE_IMAGES {
                let short = repo.trim_start_matches("library/");
                text = text.replace(
                    &format!("{short}:{tag}"),
                    &format!("{}/{short}:{tag}", self.ns),
                );
            }
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.starts_with("RUN ") {
                        format!("{l} # {}", self.ns)
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            std::fs::write(&file, text.join("\n") + "\n").unwrap();
        }
    }

    pub fn write(&self, rel: &str, content: &str) {
        std::fs::write(self.project.path().join(rel), content).unwrap();
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// `build-all` with the proxy as Docker Hub mirror and the cache directory.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.project.path())
            .env("NO_COLOR", "1")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_OUTPUT")
            .args([
                "build-all",
                "--backend",
                self.builder,
                "--mirror-first",
                "--max-retries",
                "1",
            ])
            .arg("--mirror")
            .arg(format!("docker.io={}", self.bed.proxy.host()))
            .args([
                "--tag",
                &self.tag,
                "--build-arg",
                &format!("VERSION={}", self.tag),
            ])
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(extra);
        cmd
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().expect("the binary runs")
    }

    pub fn report(&self) -> serde_json::Value {
        let path = self
            .project
            .path()
            .join(".ai-infra-build/ai-infra-build-report.json");
        serde_json::from_str(
            &std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display())),
        )
        .unwrap()
    }

    pub fn proxy_stats(&self) -> ProxyStats {
        self.bed.proxy.stats()
    }

    pub fn reset_proxy(&self) {
        self.bed.proxy.reset_stats();
    }

    /// The service image's layer digests.
    pub fn layers(&self, service: &str) -> Vec<String> {
        let image = format!("ai-infra-{service}:{}", self.tag);
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{json .RootFS.Layers}}", &image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "inspect {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The repository prefix of this cache directory's cache tags (as the cache names them).
    fn cache_tag_prefix(&self) -> String {
        use sha2::Digest;
        let abs = std::path::absolute(self.cache.path()).unwrap();
        let hex: String = sha2::Sha256::digest(abs.to_string_lossy().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("ai-infra-build-cache-{}/", &hex[..8])
    }

    /// Images this test owns: its base images, its service images, its cache tags.
    fn own_images(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .unwrap();
        let (base, cache) = (format!("{}/", self.ns), self.cache_tag_prefix());
        let suffix = format!(":{}", self.tag);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.starts_with(&base)
                    || l.starts_with(&cache)
                    || (l.starts_with("ai-infra-") && l.ends_with(&suffix))
            })
            .map(str::to_string)
            .collect()
    }

    /// BuildKit cache records of this test: those whose description has the marker (RUN
    /// steps) or names this test's images (`COPY --from=e2e-…/…`), and every record built on
    /// top of one of them. From `docker buildx du --verbose` (blocks of `ID:`, `Parent:`,
    /// `Description:` lines).
    fn own_build_records(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["buildx", "du", "--verbose"])
            .output()
            .expect("docker buildx du runs");
        assert!(
            out.status.success(),
            "docker buildx du: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // (id, parents, description)
        let mut records: Vec<(String, Vec<String>, String)> = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "ID" => records.push((value.to_string(), Vec::new(), String::new())),
                "Parent" | "Parents" => {
                    if let Some(r) = records.last_mut() {
                        r.1.extend(
                            value
                                .split([',', ' '])
                                .filter(|p| !p.is_empty())
                                .map(str::to_string),
                        );
                    }
                }
                "Description" => {
                    if let Some(r) = records.last_mut() {
                        r.2 = value.to_string();
                    }
                }
                _ => {}
            }
        }
        let mut mine: std::collections::BTreeSet<String> = records
            .iter()
            .filter(|r| r.2.contains(&self.ns))
            .map(|r| r.0.clone())
            .collect();
        loop {
            let more: Vec<String> = records
                .iter()
                .filter(|r| !mine.contains(&r.0) && r.1.iter().any(|p| mine.contains(p)))
                .map(|r| r.0.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            mine.extend(more);
        }
        mine.into_iter().collect()
    }

    /// Fresh daemon state for this test: its images and its RUN steps' build cache gone,
    /// as on a new runner. (COPY results of other builds can survive: they are not told
    /// apart; the RUN layers are what the assertions compare.)
    pub fn forget_daemon_state(&self) {
        let images = self.own_images();
        if !images.is_empty() {
            let out = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .args(&images)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "rmi: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let records = self.own_build_records();
            if records.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "build cache records of {} survive pruning: {records:?}",
                self.ns
            );
            for id in records {
                // Children go before parents; a parent refused now goes in a later round.
                let _ = Command::new("docker")
                    .args(["builder", "prune", "-f", "--filter"])
                    .arg(format!("id={id}"))
                    .output();
            }
        }
        assert!(
            self.own_images().is_empty(),
            "still present: {:?}",
            self.own_images()
        );
    }

    /// Starts a run and kills it (SIGKILL) while it saves the cache: for `inline`, as soon as
    /// an image archive is being written (`tmp/*.tar.*.partial`); for `buildx-local`, as soon
    /// as BuildKit exports into `buildx-new/`. Returns whether it was caught mid-save.
    pub fn kill_mid_save(&self, mode: &str, extra: &[&str]) -> bool {
        let mut child: Child = self
            .command(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (tmp, new) = (
            self.cache.path().join("tmp"),
            self.cache.path().join("buildx-new"),
        );
        let saving = || match mode {
            "buildx-local" => new.join("index.json").is_file(),
            _ => std::fs::read_dir(&tmp)
                .map(|d| {
                    d.flatten().any(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.contains(".tar.") && name.ends_with(".partial")
                    })
                })
                .unwrap_or(false),
        };
        let deadline = Instant::now() + Duration::from_secs(600);
        let caught = loop {
            if saving() {
                child.kill().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let _ = child.wait();
        caught
    }

    pub fn index(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.cache.path().join("index.json")).unwrap())
            .unwrap()
    }

    pub fn base_archive(&self, short: &str) -> PathBuf {
        let index = self.index();
        let (repo, tag) = EXAMPLE_BASE_IMAGES
            .iter()
            .find(|(r, _)| r.ends_with(&format!("/{short}")))
            .unwrap();
        let key = format!(
            "docker.io/{}/{}:{tag}",
            self.ns,
            repo.trim_start_matches("library/")
        );
        let rel = index["base-images"][&key]["archive"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} not in {index:#}"));
        self.cache.path().join(rel)
    }

    /// The archive of the service images (inline mode).
    pub fn services_archive(&self) -> PathBuf {
        let index = self.index();
        let rel = index["services"]["backend"]["archive"]
            .as_str()
            .unwrap_or_else(|| panic!("no services archive in {index:#}"));
        self.cache.path().join(rel)
    }
}

/// Flips one bit in the middle of `file` (same size: only the checksum can tell).
pub fn corrupt(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(file, bytes).unwrap();
}

impl Drop for E2e {
    fn drop(&mut self) {
        let images = self.own_images();
        if !images.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .args(&images)
                .output();
        }
    }
}

pub fn total_requests(stats: &ProxyStats) -> u64 {
    RequestKind::ALL.iter().map(|k| stats.requests(*k)).sum()
}

/// Repositories the proxy was asked about (`e2e-…/ubuntu`).
pub fn requested_repositories(stats: &ProxyStats) -> std::collections::BTreeSet<String> {
    stats
        .log
        .iter()
        .filter_map(|r| {
            let rest = r.path.strip_prefix("/v2/")?;
            let end = rest.find("/manifests/").or_else(|| rest.find("/blobs/"))?;
            Some(rest[..end].to_string())
        })
        .collect()
}

/// The report (with its `cache` section) is valid against `schemas/report.schema.json`.
pub fn assert_matches_report_schema(report: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the report schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report does not match its schema: {errors:#?}"
    );
}

pub fn services(report: &serde_json::Value) -> Vec<String> {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts a successful run of all 11 services.
pub fn assert_all_built(out: &Output, report: &serde_json::Value) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    assert_eq!(
        report["totals"]["succeeded"],
        11,
        "{}\n{report:#}",
        text(out)
    );
}

/// The scenario shared with `cache_engine26.rs`; `mode` is the layer cache the engine gets.
pub fn scenario_warm_cold_kill_change(mode: &str) {
    let e = E2e::new();
    let cold_layers = scenario_cold_then_warm(&e, mode);
    kill_then_change(&e, mode, &cold_layers);
}

/// Cold run, fresh daemon state, warm run: no registry request, a hit for every service, the
/// cold run's layers. Returns the cold run's layers per service.
pub fn scenario_cold_then_warm(e: &E2e, mode: &str) -> Vec<(String, Vec<String>)> {
    let cold = e.run(&["--output", "json"]);
    let report = e.report();
    assert_all_built(&cold, &report);
    let cache = &report["cache"];
    assert_eq!(cache["mode"], mode, "{cache:#}");
    assert_eq!(cache["base_image_misses"], 7, "{cache:#}");
    assert_eq!(
        cache["service_hits"], 0,
        "nothing to hit on a cold run: {cache:#}"
    );
    assert!(total_requests(&e.proxy_stats()) > 0);
    assert!(
        cache["size"].as_u64().unwrap() > 24 << 20,
        "the base images are in: {cache:#}"
    );
    let cold_content = cache["content_key"].clone();
    assert!(cold_content.is_string(), "{cache:#}");
    let cold_layers: Vec<(String, Vec<String>)> = services(&report)
        .into_iter()
        .map(|s| (s.clone(), e.layers(&s)))
        .collect();

    // A new runner: nothing of ours in the daemon, only the cache directory.
    e.forget_daemon_state();
    e.reset_proxy();
    let warm = e.run(&["--output", "json"]);
    let report = e.report();
    assert_all_built(&warm, &report);
    let stats = e.proxy_stats();
    assert_eq!(
        total_requests(&stats),
        0,
        "the warm run asked the registry: {:?}",
        requested_repositories(&stats)
    );
    let cache = &report["cache"];
    assert_eq!(cache["base_image_hits"], 7, "{cache:#}");
    assert_eq!(cache["base_image_misses"], 0, "{cache:#}");
    assert_eq!(cache["service_hits"], 11, "{cache:#}");
    for (service, layers) in &cold_layers {
        assert_eq!(cache["services"][service], true, "{service}: {cache:#}");
        assert_eq!(
            &e.layers(service),
            layers,
            "{service} rebuilt a layer instead of taking it from the cache"
        );
    }
    for image in report["base_images"].as_array().unwrap() {
        assert_eq!(image["status"], "present", "{image:#}");
    }
    // Inline mode keeps the service images: with the same inputs, they are used as they are
    // (not built at all); the buildx local cache keeps layers only, so its services build.
    for service in services(&report) {
        assert_eq!(
            reused(&report, &service),
            mode == "inline",
            "{service} reused: {report:#}"
        );
    }
    // Issue 16: nothing changed, so the directory's content key is the cold run's (the action
    // saves no new Actions cache entry). The buildx local cache is exported again by builds
    // that all hit, so only inline mode promises this.
    if mode == "inline" {
        assert_eq!(cache["content_key"], cold_content, "{cache:#}");
    }
    assert_matches_report_schema(&report);
    cold_layers
}

/// Whether the report says `service` was reused from the cache (not built).
pub fn reused(report: &serde_json::Value, service: &str) -> bool {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no {service} in {report:#}"))["reused"]
        .as_bool()
        .expect("reused is a boolean")
}

/// A run killed while saving the cache, then a run after one Dockerfile changed: the previous
/// cache still serves, and only the changed service builds a new layer.
pub fn kill_then_change(e: &E2e, mode: &str, cold_layers: &[(String, Vec<String>)]) {
    let unchanged_content = e.report()["cache"]["content_key"].clone();
    // One Dockerfile changes; the run that builds it is killed while saving the cache.
    let scheduler = std::fs::read_to_string(e.project.path().join("scheduler/Dockerfile")).unwrap();
    e.write(
        "scheduler/Dockerfile",
        &format!("{scheduler}RUN echo changed > /changed # {}\n", e.ns),
    );
    e.forget_daemon_state();
    assert!(
        e.kill_mid_save(mode, &[]),
        "the run finished before it could be killed mid-save"
    );
    assert!(
        e.cache_dir().join("lock").is_file(),
        "the killed run's lock is left behind"
    );
    let index = e.index();
    for rel in index["archives"].as_object().unwrap().keys() {
        assert!(
            e.cache_dir().join(rel).is_file(),
            "the index names {rel}, which is not there"
        );
    }

    // The previous cache is usable: still no registry request, and only scheduler builds
    // a layer (its new step); every other layer, its own first RUN included, is cached.
    e.forget_daemon_state();
    e.reset_proxy();
    let after = e.run(&["--output", "json"]);
    let report = e.report();
    assert_all_built(&after, &report);
    assert_eq!(total_requests(&e.proxy_stats()), 0);
    assert!(
        report["cache"]["warnings"].as_array().unwrap().is_empty(),
        "{:#}",
        report["cache"]
    );
    assert!(
        !e.cache_dir().join("tmp").exists()
            || std::fs::read_dir(e.cache_dir().join("tmp"))
                .unwrap()
                .next()
                .is_none()
    );
    for (service, layers) in cold_layers {
        let now = e.layers(service);
        if service == "scheduler" {
            assert_eq!(now.len(), layers.len() + 1, "one new layer");
            assert_eq!(
                &now[..layers.len()],
                &layers[..],
                "the unchanged steps came from the cache"
            );
        } else {
            assert_eq!(&now, layers, "{service} was rebuilt");
        }
    }
    assert_eq!(
        report["cache"]["services"]["scheduler"], true,
        "a partial hit is a hit"
    );
    // A changed service image is new content: the action saves a new entry.
    assert_ne!(report["cache"]["content_key"], unchanged_content);
    assert!(!reused(&report, "scheduler"), "its Dockerfile changed");
    if mode != "inline" {
        return;
    }
    for service in services(&report).iter().filter(|s| *s != "scheduler") {
        assert!(reused(&report, service), "{service} was rebuilt");
    }

    // A file of one service's build context changes (its Dockerfile does not): that service
    // builds, the others are still reused. Then --force builds everything.
    let readme = std::fs::read_to_string(e.project.path().join("docs/README.md")).unwrap();
    e.write("docs/README.md", &format!("{readme}\nOne more line.\n"));
    let out = e.run(&["--output", "json"]);
    let report = e.report();
    assert_all_built(&out, &report);
    assert!(!reused(&report, "docs"), "docs/README.md changed");
    for service in services(&report).iter().filter(|s| *s != "docs") {
        assert!(reused(&report, service), "{service} was rebuilt");
    }
    let out = e.run(&["--output", "json", "--force"]);
    let report = e.report();
    assert_all_built(&out, &report);
    for service in services(&report) {
        assert!(!reused(&report, &service), "--force reused {service}");
    }
}
