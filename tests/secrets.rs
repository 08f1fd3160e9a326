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
