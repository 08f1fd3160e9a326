//! Issue 15: build only what changed. Unchanged services are reused from the registry by their
//! build inputs digest, on a daemon that has none of the project's images and no cache
//! directory, without a layer moving; everything goes through the fault proxy, which counts
//! every request.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use support::{bin, service, text};
use testbed::images::{ImageSpec, push_image};
use testbed::proxy::{FaultProxy, ProxyOptions, RequestKind};
use testbed::registry::Registry;

struct Bed {
    registry: Registry,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    /// The namespace of every name this test makes (repositories, base images).
    ns: String,
}

impl Bed {
    fn prefix(&self) -> String {
        format!("{}/{}/", self.proxy.host(), self.ns)
    }

    fn base(&self, which: &str) -> String {
        format!("{}-{which}", self.ns)
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn command(&self, args: &[&str], tag: &str) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("INPUT_CACHE_DIR")
            .args(args)
            .args(["--mirror", &format!("docker.io={}", self.proxy.host())])
            .args(["--prefix", &self.prefix(), "--tag", tag])
            .args(["--build-arg", &format!("TAG={tag}")]);
        cmd
    }

    /// `build-all --push` at `tag`; the report.
    fn build(&self, tag: &str, extra: &[&str]) -> (serde_json::Value, String) {
        let mut args = vec!["build-all", "--push"];
        args.extend_from_slice(extra);
        let out = self.command(&args, tag).output().unwrap();
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{shown}");
        let report = self
            .dir
            .path()
            .join(".ai-infra-build/ai-infra-build-report.json");
        let report = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        (report, shown)
    }

    /// Removes every image of this test from the daemon (service and base images).
    fn clear_daemon(&self) {
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .unwrap();
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&self.ns))
            .map(str::to_string)
            .collect();
        if !mine.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                // Untagged parents may be another build's cache (the classic builder's
                // intermediate images, shared by identical Dockerfiles): leave them.
                .arg("--no-prune")
                .args(&mine)
                .output();
        }
    }

    /// The registry's digest of `ns/<service>:<tag>` (asked directly, not through the proxy).
    async fn digest(&self, service: &str, tag: &str) -> Option<String> {
        let url = format!(
            "{}/v2/{}/{service}/manifests/{tag}",
            self.registry.url(),
            self.ns
        );
        let resp = testbed::http::send(
            hyper::Method::HEAD,
            &url,
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
            )],
            bytes::Bytes::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("HEAD {url}: {e:#}"));
        (resp.status == 200).then(|| resp.header("docker-content-digest").unwrap().to_string())
    }

    /// The inputs tags in `ns/<service>`.
    async fn inputs_tags(&self, service: &str) -> Vec<String> {
        let url = format!("{}/v2/{}/{service}/tags/list", self.registry.url(), self.ns);
        let resp = testbed::http::get(&url).await.unwrap();
        let list: serde_json::Value = serde_json::from_str(&resp.text()).unwrap_or_default();
        list["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str())
                    .filter(|t| t.starts_with("inputs-"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The repositories any blob was transferred for (downloads and uploads) since the last
    /// reset, as the proxy saw them.
    fn blob_repositories(&self) -> BTreeSet<String> {
        self.proxy
            .stats()
            .log
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .filter(|r| r.kind == RequestKind::BlobGet || r.method != "HEAD")
            .filter_map(|r| {
                let rest = r.path.strip_prefix("/v2/")?;
                Some(rest[..rest.find("/blobs/")?].to_string())
            })
            .collect()
    }
}

const SERVICES: [&str; 5] = ["core", "app", "web", "tool", "docs"];

fn reused(report: &serde_json::Value, name: &str) -> Option<String> {
    let s = service(report, name);
    assert_eq!(s["status"], "success", "{s:#}");
    if s["reused"] == true {
        Some(
            s["reused_from"]["source"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        )
    } else {
        None
    }
}

/// Which services were built (not reused).
fn built(report: &serde_json::Value) -> BTreeSet<String> {
    SERVICES
        .iter()
        .filter(|s| reused(report, s).is_none())
        .map(|s| s.to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn start() -> Bed {
    let registry = Registry::start()
        .await
        .expect("docker-registry starts (run scripts/setup)");
    let proxy = FaultProxy::start(ProxyOptions::new(registry.addr()))
        .await
        .unwrap();
    let bed = Bed {
        registry,
        proxy,
        dir: tempfile::tempdir().unwrap(),
        ns: testbed::unique_name("reuse"),
    };
    for which in ["a", "b"] {
        push_image(
            &bed.registry.host(),
            &ImageSpec::new(format!("library/{}", bed.base(which)), "1"),
        )
        .await
        .unwrap();
    }
    let (a, b, prefix) = (bed.base("a"), bed.base("b"), bed.prefix());
    bed.write(
        "ai-infra-build.yml",
        "services:\n  core: {}\n  app: {}\n  web: {}\n  tool:\n    build-args:\n      FLAVOR: one\n  docs: {}\n",
    );
    bed.write(
        "core/Dockerfile",
        &format!("FROM {a}:1\nCOPY core.txt /core.txt\n"),
    );
    bed.write("core/core.txt", "core\n");
    // TAG names this run's core image only: an argument before FROM is not an input.
    bed.write(
        "app/Dockerfile",
        &format!("ARG TAG\nFROM {prefix}core:${{TAG}}\nRUN echo app > /app\n"),
    );
    bed.write(
        "web/Dockerfile",
        &format!("FROM {b}:1\nCOPY index.html /index.html\n"),
    );
    bed.write("web/index.html", "<p>web</p>\n");
    bed.write(
        "tool/Dockerfile",
        &format!("FROM {a}:1\nARG FLAVOR\nRUN echo $FLAVOR > /flavor\n"),
    );
    bed.write(
        "docs/Dockerfile",
        &format!("FROM {b}:1\nRUN echo docs > /docs\n"),
    );
    bed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_unchanged_services_are_reused_from_the_registry_without_moving_a_layer() {
    let bed = start().await;
    let _cleanup = testbed::RemoveImagesOnDrop(vec![bed.ns.clone()]);

    // c1: everything is built and recorded under its inputs.
    let (report, _) = bed.build("c1", &[]);
    assert_eq!(built(&report), set(&SERVICES), "{report:#}");
    for s in SERVICES {
        let tags = bed.inputs_tags(s).await;
        assert_eq!(tags.len(), 1, "{s}: {tags:?}");
        assert_eq!(
            bed.digest(s, &tags[0]).await,
            bed.digest(s, "c1").await,
            "{s}: the inputs tag names the pushed image"
        );
    }

    // c2: core's Dockerfile changes. A daemon without any of the project's images, no cache
    // directory: core and app (built FROM core) are built, the others reused.
    bed.write(
        "core/Dockerfile",
        &format!(
            "FROM {}:1\nCOPY core.txt /core.txt\nRUN echo changed > /c2\n",
            bed.base("a")
        ),
    );
    bed.clear_daemon();
    bed.proxy.reset_stats();
    let (report, shown) = bed.build("c2", &[]);
    assert_eq!(built(&report), set(&["core", "app"]), "{shown}");
    for s in ["web", "tool", "docs"] {
        assert_eq!(reused(&report, s).as_deref(), Some("registry"), "{s}");
        let c1 = bed.digest(s, "c1").await;
        assert!(c1.is_some());
        assert_eq!(bed.digest(s, "c2").await, c1, "{s}: c2 is c1's manifest");
        let entry = service(&report, s);
        assert_eq!(entry["digest"].as_str(), c1.as_deref(), "{entry:#}");
        assert!(
            entry["reused_from"]["image"]
                .as_str()
                .unwrap()
                .contains(&format!("{}/{s}:inputs-", bed.ns)),
            "{entry:#}"
        );
    }
    // No layer of a reused service moved: not its own, not its base image's (web and docs
    // are the only users of base b).
    let moved = bed.blob_repositories();
    for repo in [
        format!("{}/web", bed.ns),
        format!("{}/tool", bed.ns),
        format!("{}/docs", bed.ns),
        format!("library/{}", bed.base("b")),
    ] {
        assert!(!moved.contains(&repo), "{repo} moved blobs: {moved:?}");
    }
    assert!(
        moved.contains(&format!("{}/core", bed.ns)),
        "core was pushed: {moved:?}"
    );
    assert!(
        shown.contains("reused (registry)") && shown.contains("built 2"),
        "{shown}"
    );

    // c3: base b moved in the registry: web and docs are built again, nothing else.
    push_image(
        &bed.registry.host(),
        &ImageSpec::new(format!("library/{}", bed.base("b")), "1").with_layer(256),
    )
    .await
    .unwrap();
    bed.clear_daemon();
    let (report, shown) = bed.build("c3", &[]);
    assert_eq!(built(&report), set(&["web", "docs"]), "{shown}");

    // c4: tool's build argument changes: tool alone is built.
    bed.write(
        "ai-infra-build.yml",
        "services:\n  core: {}\n  app: {}\n  web: {}\n  tool:\n    build-args:\n      FLAVOR: two\n  docs: {}\n",
    );
    let (report, shown) = bed.build("c4", &[]);
    assert_eq!(built(&report), set(&["tool"]), "{shown}");

    // c5: only app changes: core is reused and pulled, because app is built FROM it.
    bed.write(
        "app/Dockerfile",
        &format!(
            "ARG TAG\nFROM {}core:${{TAG}}\nRUN echo app v2 > /app\n",
            bed.prefix()
        ),
    );
    bed.clear_daemon();
    let (report, shown) = bed.build("c5", &[]);
    assert_eq!(built(&report), set(&["app"]), "{shown}");
    let core = service(&report, "core");
    assert_eq!(core["reused_from"]["source"], "registry", "{core:#}");
    assert!(
        core["image_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{core:#}"
    );

    // Nothing changed: nothing is built, and the run says so.
    bed.clear_daemon();
    bed.proxy.reset_stats();
    let (report, shown) = bed.build("c6", &[]);
    assert!(built(&report).is_empty(), "{shown}");
    assert!(shown.contains("nothing to build"), "{shown}");
    assert!(
        !bed.proxy
            .stats()
            .log
            .iter()
            .any(|r| r.kind == RequestKind::BlobGet),
        "all reused: no blob requested"
    );
    for s in SERVICES {
        assert_eq!(bed.digest(s, "c6").await, bed.digest(s, "c5").await, "{s}");
    }

    // Acceptance 4: `plan --matrix --check-registry` makes jobs only for what is to build; with
    // nothing to build the matrix is empty and the outputs still list every image.
    let plan = |tag: &str| {
        let output = bed.dir.path().join(format!("output-{tag}"));
        let out = bed
            .command(
                &["plan", "--matrix", "--check-registry", "--shards", "3"],
                tag,
            )
            .env("GITHUB_OUTPUT", &output)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let matrix: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let outputs = std::fs::read_to_string(&output).unwrap();
        (matrix, outputs)
    };
    let (matrix, outputs) = plan("c8");
    assert_eq!(matrix, serde_json::json!({ "include": [] }), "{outputs}");
    let images = outputs
        .lines()
        .skip_while(|l| !l.starts_with("images<<"))
        .nth(1)
        .unwrap_or_else(|| panic!("{outputs}"));
    let images: serde_json::Value = serde_json::from_str(images).unwrap();
    for s in SERVICES {
        assert_eq!(
            images[s]["digest"].as_str(),
            bed.digest(s, "c6").await.as_deref(),
            "{images:#}"
        );
    }
    bed.write(
        "docs/Dockerfile",
        &format!("FROM {}:1\nRUN echo docs v2 > /docs\n", bed.base("b")),
    );
    let (matrix, _) = plan("c8");
    let jobs = matrix["include"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{matrix:#}");
    assert_eq!(jobs[0]["services"], "docs", "{matrix:#}");

    // --no-reuse builds everything (and records nothing new that differs).
    let (report, _) = bed.build("c7", &["--no-reuse"]);
    assert_eq!(built(&report), set(&SERVICES));
    bed.clear_daemon();
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

/// The line of `service` in a plan's per-service list (indented, name first).
fn line_of<'a>(shown: &'a str, service: &str) -> &'a str {
    shown
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(&format!("{service} ")))
        .unwrap_or_else(|| panic!("no line for {service}:\n{shown}"))
}

/// Issue 15 deliver 4: `--changed-since REF` builds what the diff touches (renames included)
/// without asking the registry; an unchanged service is reused when the registry has its
/// image, and built when nothing has it. Plan and build say which rule decided each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_changed_since_builds_what_the_diff_touches_and_unchanged_services_without_an_image()
 {
    let bed = start().await;
    let _cleanup = testbed::RemoveImagesOnDrop(vec![bed.ns.clone()]);
    let dir = bed.dir.path();
    bed.write(".gitignore", ".ai-infra-build/\n");
    bed.write("web/old-name.txt", "renamed in c2\n");
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "c1"]);

    // c1: everything but docs is built and recorded: docs' image is nowhere.
    let (report, _) = bed.build("c1", &["--only", "core,app,web,tool"]);
    assert_eq!(reused(&report, "web"), None);

    // c2: a file of web is renamed (and nothing else changes).
    git(dir, &["mv", "web/old-name.txt", "web/new-name.txt"]);
    git(dir, &["commit", "-q", "-m", "c2"]);

    let out = bed
        .command(&["plan", "--changed-since", "HEAD~1"], "c2")
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("Changed since HEAD~1"), "{shown}");
    let web = line_of(&shown, "web");
    assert!(web.contains("[changed-since]"), "{web}");
    assert!(
        web.contains("web/new-name.txt") || web.contains("web/old-name.txt"),
        "{web}"
    );
    for s in ["core", "app", "tool", "docs"] {
        assert!(line_of(&shown, s).contains("unchanged"), "{s}: {shown}");
    }

    let out = bed
        .command(
            &["plan", "--check-registry", "--changed-since", "HEAD~1"],
            "c2",
        )
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        line_of(&shown, "web").contains("[changed-since]"),
        "{shown}"
    );
    assert!(
        line_of(&shown, "docs").contains("build: changed: the registry has no image"),
        "{shown}"
    );
    assert!(line_of(&shown, "docs").ends_with("[built]"), "{shown}");
    for s in ["core", "app", "tool"] {
        assert!(line_of(&shown, s).ends_with("[registry]"), "{s}: {shown}");
    }

    // build-all at c2 on an empty daemon: web (changed) and docs (unchanged, but its image is
    // nowhere) are built; the registry is not asked for web's inputs tag.
    bed.clear_daemon();
    bed.proxy.reset_stats();
    let (report, shown) = bed.build("c2", &["--changed-since", "HEAD~1"]);
    assert_eq!(built(&report), set(&["web", "docs"]), "{shown}");
    for s in ["core", "app", "tool"] {
        assert_eq!(reused(&report, s).as_deref(), Some("registry"), "{s}");
    }
    assert!(
        shown.contains("web: build:") && shown.contains("[changed-since]"),
        "{shown}"
    );
    assert!(
        shown.contains("docs: build:") && shown.contains("[built]"),
        "{shown}"
    );
    let asked: Vec<String> = bed
        .proxy
        .stats()
        .log
        .iter()
        .filter(|r| r.method == "GET" || r.method == "HEAD")
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/web/manifests/inputs-"))
        .collect();
    assert!(asked.is_empty(), "web is changed: no lookup, {asked:?}");
    let recorded = bed.inputs_tags("web").await;
    assert_eq!(
        recorded.len(),
        2,
        "web's c2 build is recorded: {recorded:?}"
    );

    // A revision the clone does not have is an input error naming the flag.
    let out = bed
        .command(&["plan", "--changed-since", "no-such-rev"], "c2")
        .output()
        .unwrap();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("--changed-since"), "{shown}");
}
