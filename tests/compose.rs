//! Issue 14: compose projects through the binary: environment and `.env`, override files,
//! `--compose-file`/`--env-file`, errors that name the file, service, key and value, an
//! alias bomb refused quickly, build edges, and directory discovery one level deeper.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
    took: Duration,
}

fn plan(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ai-infra-build"))
        .args(["plan", "--output", "json", "--prefix", "p-", "--tag", "t"])
        .args(flags)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn service<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.json["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {}", run.json))
}

fn bases(run: &Run) -> Vec<String> {
    run.json["base_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["reference"].as_str().unwrap().to_string())
        .collect()
}

const ALPINE: &str = "FROM alpine:3.20\n";

#[test]
fn issue_14_a_billion_laughs_compose_file_is_refused_in_well_under_a_second() {
    let mut text = String::from(
        "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = "a".to_string();
    for i in 0..9 {
        let name = format!("l{i}");
        text.push_str(&format!(
            "x-{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
        prev = name;
    }
    text.push_str(&format!(
        "services:\n  api:\n    build: .\n    labels: *{prev}\n"
    ));
    let dir = project(&[("compose.yaml", &text), ("Dockerfile", ALPINE)]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.took < Duration::from_millis(900), "took {:?}", run.took);
    assert!(run.stderr.contains("compose.yaml"), "{}", run.stderr);
    assert!(
        run.stderr.contains("too large or too deeply aliased"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Breach") && !run.stderr.contains(" { "),
        "{}",
        run.stderr
    );
}

#[test]
fn issue_14_many_aliases_of_a_few_anchors_are_fine() {
    let mut text =
        String::from("x-defaults: &defaults\n  build: app\n  image: shared:1\nservices:\n");
    for i in 0..150 {
        text.push_str(&format!("  s{i}:\n    <<: *defaults\n"));
    }
    let dir = project(&[("compose.yaml", &text), ("app/Dockerfile", ALPINE)]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let services = run.json["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "150 identical builds are one build");
    assert_eq!(services[0]["aliases"].as_array().unwrap().len(), 149);
}

#[test]
fn issue_14_dot_env_the_process_environment_and_env_file() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    image: ${REGISTRY:-registry.example.com}/api:${TAG:?set TAG in .env}\n    build:\n      context: api\n      args: [BASE]\n",
        ),
        (".env", "TAG=from-dotenv\nBASE=alpine:3.19\n"),
        ("other.env", "TAG=from-other\nBASE=alpine:3.18\n"),
        ("api/Dockerfile", "ARG BASE=alpine:3.20\nFROM ${BASE}\n"),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        service(&run, "api")["image"],
        "registry.example.com/api:from-dotenv"
    );
    assert_eq!(bases(&run), ["docker.io/library/alpine:3.19"]);
    assert!(run.json["env_files"][0].as_str().unwrap().ends_with(".env"));

    let run = plan(
        dir.path(),
        &[],
        &[("TAG", "from-process"), ("BASE", "alpine:3.17")],
    );
    assert_eq!(
        service(&run, "api")["image"],
        "registry.example.com/api:from-process"
    );
    assert_eq!(bases(&run), ["docker.io/library/alpine:3.17"]);

    let run = plan(dir.path(), &["--env-file", "other.env"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        service(&run, "api")["image"],
        "registry.example.com/api:from-other"
    );
    assert_eq!(bases(&run), ["docker.io/library/alpine:3.18"]);

    std::fs::remove_file(dir.path().join(".env")).unwrap();
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 2);
    for part in [
        "compose.yaml",
        "service \"api\"",
        "`image`",
        "set TAG in .env",
    ] {
        assert!(run.stderr.contains(part), "{part} in {}", run.stderr);
    }
}

#[test]
fn issue_14_the_override_file_and_compose_file_flags() {
    let dir = project(&[
        ("compose.yaml", "services:\n  api:\n    build: api\n"),
        (
            "compose.override.yaml",
            "services:\n  api:\n    build:\n      target: dev\n  debug:\n    build: debug\n",
        ),
        (
            "prod.yml",
            "services:\n  api:\n    image: registry.example.com/api:prod\n",
        ),
        (
            "api/Dockerfile",
            "FROM alpine:3.20 AS dev\nFROM debian:12 AS prod\n",
        ),
        ("debug/Dockerfile", "FROM busybox:1.36\n"),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        bases(&run),
        [
            "docker.io/library/alpine:3.20",
            "docker.io/library/busybox:1.36"
        ],
        "the override's target prunes the prod stage"
    );
    let run = plan(
        dir.path(),
        &[
            "--compose-file",
            "compose.yaml",
            "--compose-file",
            "prod.yml",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json["services"].as_array().unwrap().len(),
        1,
        "no override file with -f"
    );
    assert_eq!(
        service(&run, "api")["image"],
        "registry.example.com/api:prod"
    );
    assert_eq!(bases(&run), ["docker.io/library/debian:12"]);
}

#[test]
fn issue_14_depends_on_orders_containers_not_builds() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    build: api\n    depends_on:\n      db: {condition: service_healthy}\n      web: {condition: service_started}\n  web:\n    build: web\n    depends_on: [api, cache]\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n",
        ),
        ("api/Dockerfile", ALPINE),
        ("web/Dockerfile", ALPINE),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(service(&run, "api")["depends_on"], serde_json::json!([]));
    assert_eq!(service(&run, "web")["depends_on"], serde_json::json!([]));
}

#[test]
fn issue_14_build_edges_from_images_copy_from_and_service_contexts() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  base:\n    build: base\n    image: team/base:1\n  app:\n    build: app\n  tools:\n    build:\n      context: tools\n      additional_contexts:\n        compiled: service:app\n        alpine: docker-image://alpine:3.19\n",
        ),
        ("base/Dockerfile", "FROM debian:12\n"),
        (
            "app/Dockerfile",
            "FROM team/base:1\nCOPY --from=team/base:1 /x /x\n",
        ),
        (
            "tools/Dockerfile",
            "FROM alpine\nCOPY --from=compiled /out /out\n",
        ),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        service(&run, "app")["depends_on"],
        serde_json::json!(["base"])
    );
    assert_eq!(
        service(&run, "tools")["depends_on"],
        serde_json::json!(["app"])
    );
    assert_eq!(
        bases(&run),
        [
            "docker.io/library/alpine:3.19",
            "docker.io/library/debian:12"
        ],
        "the named context replaces FROM alpine"
    );
    let order: Vec<&str> = run.json["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order, ["base", "app", "tools"]);
}

#[test]
fn issue_14_errors_name_file_service_key_and_values() {
    // A missing context, after interpolation.
    let dir = project(&[(
        "compose.yaml",
        "services:\n  api:\n    build:\n      context: ./${SERVICE_DIR:-services}/api\n",
    )]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 2);
    for part in [
        "compose.yaml",
        "service \"api\"",
        "`build.context`",
        "./${SERVICE_DIR:-services}/api",
        "services/api",
        "not a directory",
    ] {
        assert!(run.stderr.contains(part), "{part} in {}", run.stderr);
    }
    // A bad reference after interpolation.
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    build: .\n    image: ${REGISTRY}/API:1\n",
        ),
        ("Dockerfile", ALPINE),
    ]);
    let run = plan(dir.path(), &[], &[("REGISTRY", "ghcr.io/Team")]);
    assert_eq!(run.code, 2);
    for part in [
        "compose.yaml",
        "\"api\"",
        "`image`",
        "${REGISTRY}/API:1",
        "ghcr.io/Team/API:1",
    ] {
        assert!(run.stderr.contains(part), "{part} in {}", run.stderr);
    }
    // A target no stage has.
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    build:\n      context: .\n      target: ${TARGET:-prod}\n",
        ),
        ("Dockerfile", "FROM alpine AS build\nFROM alpine AS dev\n"),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 2);
    for part in [
        "\"api\"",
        "`build.target`",
        "${TARGET:-prod}",
        "\"prod\"",
        "build, dev",
    ] {
        assert!(run.stderr.contains(part), "{part} in {}", run.stderr);
    }
    // A cycle through images.
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  a:\n    build: a\n    image: x/a\n  b:\n    build: b\n    image: x/b\n",
        ),
        ("a/Dockerfile", "FROM x/b\n"),
        ("b/Dockerfile", "FROM x/a\n"),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cycle"), "{}", run.stderr);
}

#[test]
fn issue_14_discovery_looks_one_level_deeper_and_says_what_it_skipped() {
    let dir = project(&[
        ("src/cart/src/Dockerfile", ALPINE),
        ("src/cart/README.md", "cart\n"),
        ("src/web/Dockerfile", ALPINE),
        ("src/multi/a/Dockerfile", ALPINE),
        ("src/multi/b/Dockerfile", ALPINE),
        ("src/Upper/Dockerfile", ALPINE),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let names: Vec<&str> = run.json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cart", "web"]);
    assert_eq!(
        service(&run, "cart")["dockerfile"],
        "src/cart/src/Dockerfile"
    );
    assert!(run.stderr.contains("src/multi"), "{}", run.stderr);
    assert!(run.stderr.contains("src/Upper"), "{}", run.stderr);

    let empty = project(&[("docs/README.md", "nothing to build\n")]);
    let run = plan(empty.path(), &[], &[]);
    assert_eq!(run.code, 2);
    for part in [
        "ai-infra-build.yml",
        "compose.yaml",
        "src/*/Dockerfile",
        "src/*/*/Dockerfile",
    ] {
        assert!(run.stderr.contains(part), "{part} in {}", run.stderr);
    }
}

#[test]
fn issue_14_a_target_prunes_stages_it_does_not_reach() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    build:\n      context: .\n      target: release\n",
        ),
        (
            "Dockerfile",
            "# syntax=docker/dockerfile:1.7\nARG GO=1.22\nFROM golang:${GO} AS build\nFROM node:20 AS assets\nFROM python:3.12 AS unused\nRUN --mount=from=ruby:3,target=/r true\nFROM alpine:3.20 AS release\nCOPY --from=build /a /a\nRUN --mount=type=bind,from=assets,target=/x true\nFROM debian:12 AS debug\n",
        ),
    ]);
    let run = plan(dir.path(), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut got = bases(&run);
    got.sort();
    assert_eq!(
        got,
        [
            "docker.io/docker/dockerfile:1.7",
            "docker.io/library/alpine:3.20",
            "docker.io/library/golang:1.22",
            "docker.io/library/node:20",
        ]
    );
}

#[test]
fn issue_14_the_cache_key_follows_every_compose_and_env_file() {
    let dir = project(&[
        ("compose.yaml", "services:\n  api:\n    build: api\n"),
        (
            "compose.override.yaml",
            "services:\n  api:\n    image: api:${TAG}\n",
        ),
        (".env", "TAG=1\n"),
        ("api/Dockerfile", ALPINE),
    ]);
    let key = |dir: &Path| plan(dir, &[], &[]).json["cache_key"]["key"].clone();
    let first = key(dir.path());
    assert!(first.is_string());
    std::fs::write(dir.path().join(".env"), "TAG=1\nOTHER=2\n").unwrap();
    let second = key(dir.path());
    assert_ne!(first, second, "a changed .env changes the key");
    std::fs::write(
        dir.path().join("compose.override.yaml"),
        "services:\n  api:\n    image: api:${TAG}\n    build:\n      args: {A: '1'}\n",
    )
    .unwrap();
    assert_ne!(
        second,
        key(dir.path()),
        "a changed override file changes the key"
    );
}
