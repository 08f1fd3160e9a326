//! Issue #13 item 1: build secrets reach `RUN --mount=type=secret` on every backend (the
//! Engine API backends route such builds to buildx and say so), checked by the secret's hash
//! written inside the build; the value is in no image history, config, log, report or output.

mod support;

use std::process::Command;

use sha2::{Digest, Sha256};
use support::{Project, service, text};

const DOCKERFILE: &str = "FROM busybox:1.36\n\
RUN --mount=type=secret,id=tok,required=true sha256sum /run/secrets/tok > /secret.sha\n";

fn hex_sha256(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in walk(dir) {
        all.push_str(&String::from_utf8_lossy(
            &std::fs::read(&entry).unwrap_or_default(),
        ));
    }
    all
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn issue13_a_secret_reaches_run_mount_secret_and_nothing_else() {
    let project = Project::empty().await;
    project.push_bases(&[("library/busybox", "1.36")]).await;
    project.write("svc/Dockerfile", DOCKERFILE);
    let file_secret = project.path().join("tok.txt");

    // (backend, how the secret is given)
    let cases = [
        ("buildx", "env"),
        ("engine", "env"),
        ("engine-classic", "input"),
        ("auto", "file"),
    ];
    for (backend, how) in cases {
        let value = format!("s3cr3t-{}", testbed::unique_name("v"));
        // A secret is in no cache key (as with buildx): a changed value alone reuses the layer.
        let mut cmd = project.command(&[
            "build-all",
            "--backend",
            backend,
            "--no-cache",
            "--output",
            "json",
        ]);
        cmd.args(project.common_args());
        match how {
            "env" => {
                cmd.args(["--secret", "id=tok,env=AIB_TEST_SECRET"])
                    .env("AIB_TEST_SECRET", &value);
            }
            "input" => {
                // In GitHub Actions, a value given as such is masked first thing.
                cmd.env("INPUT_SECRETS", format!("tok={value}\n"))
                    .env("GITHUB_ACTIONS", "true");
            }
            _ => {
                std::fs::write(&file_secret, &value).unwrap();
                cmd.args(["--secret-file", "tok=tok.txt"]);
            }
        }
        // As in the action: the step outputs and summary are written too.
        let outputs = project.path().join("github-output");
        let summary = project.path().join("step-summary");
        cmd.env("GITHUB_OUTPUT", &outputs)
            .env("GITHUB_STEP_SUMMARY", &summary);
        let out = cmd.output().unwrap();
        let all_printed = text(&out);
        let mask = format!("::add-mask::{value}");
        assert_eq!(
            all_printed.contains(&mask),
            how == "input",
            "{backend}/{how}: {all_printed}"
        );
        let printed: String = all_printed
            .lines()
            .filter(|l| *l != mask)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(out.status.code(), Some(0), "{backend}/{how}: {printed}");
        let report = project.report();
        let svc = service(&report, "svc");
        assert_eq!(svc["status"], "success", "{backend}: {svc:#}");
        // Builds with secrets run on buildx, and the run says why when another was asked for.
        assert_eq!(report["run"]["builder"], "buildx", "{backend}");
        if backend != "buildx" {
            assert!(
                printed.contains("builds with buildx, because it uses build secrets"),
                "{backend}: {printed}"
            );
        }

        let image = svc["image"].as_str().unwrap().to_string();
        let inside = docker(&["run", "--rm", &image, "cat", "/secret.sha"]);
        assert_eq!(
            inside.split_whitespace().next(),
            Some(hex_sha256(&value).as_str()),
            "{backend}/{how}: the build saw another value"
        );
        // Nowhere else: not in the image's history or config, the build log, the report, the
        // outputs, the summary or what the binary printed.
        let history = docker(&["history", "--no-trunc", &image]);
        let inspect = docker(&["image", "inspect", &image]);
        let written = all_text(&project.path().join(".ai-infra-build"));
        let outputs = std::fs::read_to_string(&outputs).unwrap_or_default();
        let summary = std::fs::read_to_string(&summary).unwrap_or_default();
        for (what, text) in [
            ("history", &history),
            ("image config", &inspect),
            ("report and logs", &written),
            ("step outputs", &outputs),
            ("step summary", &summary),
            ("stdout/stderr", &printed),
        ] {
            assert!(
                !text.contains(&value),
                "{backend}/{how}: the secret is in the {what}"
            );
        }
        assert!(
            written.contains("--mount=type=secret,id=tok"),
            "the log has the step"
        );
        project.remove_built_images();
    }
}

#[tokio::test]
async fn issue13_a_missing_secret_source_is_an_input_error_before_any_work() {
    let project = Project::empty().await;
    project.write("svc/Dockerfile", DOCKERFILE);
    let out = project
        .command(&["build-all", "--secret", "id=tok,env=AIB_TEST_SECRET_UNSET"])
        .env_remove("AIB_TEST_SECRET_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AIB_TEST_SECRET_UNSET") && stderr.contains("not set"),
        "{stderr}"
    );
    let out = project
        .command(&["build-all", "--secret-file", "tok=missing.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.txt"));
}

/// [`DOCKERFILE`] with a step of its own (a unique marker written beside the hash).
fn unique_dockerfile(name: &str) -> String {
    format!(
        "FROM busybox:1.36\n\
         RUN --mount=type=secret,id=tok,required=true sha256sum /run/secrets/tok > /secret.sha && echo {} > /marker\n",
        testbed::unique_name(name)
    )
}

/// The hash of `/secret.sha`'s first field in `image` (what `RUN --mount=type=secret` saw).
fn seen_hash(image: &str, file: &str) -> String {
    docker(&["run", "--rm", image, "cat", file])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Issue 13 item 1, per service: a config file entry's `secrets:` (buildx syntax) reaches its
/// build and replaces the run's `--secret` of the same id; a service without its own gets the
/// run's. Values are in no report or log.
#[tokio::test]
async fn issue13_config_file_secrets_are_per_service() {
    let project = Project::empty().await;
    project.push_bases(&[("library/busybox", "1.36")]).await;
    // Each build's steps are its own: BuildKit merges identical steps of concurrent builds
    // (a secret is not part of a step's identity), here and in the other tests.
    for svc in ["env", "file", "plain"] {
        project.write(&format!("{svc}/Dockerfile"), &unique_dockerfile(svc));
    }
    project.write(
        "ai-infra-build.yml",
        "services:\n  env:\n    secrets: [\"id=tok,env=AIB_SVC_SECRET\"]\n  file:\n    secrets: [\"id=tok,src=conf/tok.txt\"]\n  plain: {}\n",
    );
    let (run_value, env_value, file_value) = (
        testbed::unique_name("run-secret"),
        testbed::unique_name("env-secret"),
        testbed::unique_name("file-secret"),
    );
    project.write("conf/tok.txt", &file_value);
    let out = project
        // No cache: a secret is in no cache key, and the three builds have the same steps.
        .command(&[
            "build-all",
            "--no-cache",
            "--secret",
            "id=tok,env=AIB_RUN_SECRET",
        ])
        .args(project.common_args())
        .env("AIB_RUN_SECRET", &run_value)
        .env("AIB_SVC_SECRET", &env_value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = project.report();
    for (svc, value) in [
        ("env", &env_value),
        ("file", &file_value),
        ("plain", &run_value),
    ] {
        let image = service(&report, svc)["image"].as_str().unwrap().to_string();
        assert_eq!(
            seen_hash(&image, "/secret.sha"),
            hex_sha256(value),
            "{svc}: the build saw another value"
        );
    }
    let written = all_text(&project.path().join(".ai-infra-build"));
    for value in [&run_value, &env_value, &file_value] {
        assert!(
            !written.contains(value.as_str()),
            "a secret is in the report or logs"
        );
        assert!(!text(&out).contains(value.as_str()), "a secret was printed");
    }
    project.remove_built_images();

    // A service's secret whose variable is not set stops the run before any work, naming it.
    let out = project
        .command(&["build-all"])
        .args(project.common_args())
        .env_remove("AIB_SVC_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"env\"") && stderr.contains("AIB_SVC_SECRET"),
        "{stderr}"
    );
}

/// Issue 13 item 1, compose: `build.secrets` names top-level secrets with `file:` (relative
/// to the project directory) and `environment:`; the long syntax's `target` is the id the
/// Dockerfile mounts. An undefined secret is an input error naming the service.
#[tokio::test]
async fn issue13_compose_build_secrets_reach_run_mount_secret() {
    let project = Project::empty().await;
    project.push_bases(&[("library/busybox", "1.36")]).await;
    project.write(
        "api/Dockerfile",
        &format!(
            "FROM busybox:1.36\n\
             RUN --mount=type=secret,id=npmrc,required=true sha256sum /run/secrets/npmrc > /npmrc.sha && echo {0} > /marker\n\
             RUN --mount=type=secret,id=tok,required=true sha256sum /run/secrets/tok > /tok.sha && echo {0} > /marker\n",
            testbed::unique_name("compose")
        ),
    );
    project.write(
        "compose.yaml",
        "services:\n  api:\n    build:\n      context: ./api\n      secrets:\n        - npmrc\n        - source: token\n          target: tok\nsecrets:\n  npmrc:\n    file: ./conf/npmrc\n  token:\n    environment: AIB_COMPOSE_TOKEN\n",
    );
    let (file_value, env_value) = (testbed::unique_name("npmrc"), testbed::unique_name("token"));
    project.write("conf/npmrc", &file_value);
    let out = project
        .command(&["build-all", "--no-cache"])
        .args(project.common_args())
        .env("AIB_COMPOSE_TOKEN", &env_value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = project.report();
    let api = service(&report, "api");
    let image = api["image"].as_str().unwrap().to_string();
    assert_eq!(seen_hash(&image, "/npmrc.sha"), hex_sha256(&file_value));
    assert_eq!(seen_hash(&image, "/tok.sha"), hex_sha256(&env_value));
    assert!(
        !report["warnings"].to_string().contains("build.secrets"),
        "build.secrets is applied: {}",
        report["warnings"]
    );
    let written = all_text(&project.path().join(".ai-infra-build"));
    assert!(!written.contains(&file_value) && !written.contains(&env_value));
    project.remove_built_images();

    project.write(
        "compose.yaml",
        "services:\n  api:\n    build:\n      context: ./api\n      secrets: [nope]\n",
    );
    let out = project.command(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"api\"") && stderr.contains("\"nope\"") && stderr.contains("secrets:"),
        "{stderr}"
    );
}
