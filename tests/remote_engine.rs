//! Issue 13, item 7 (acceptance 5): a real remote builder. A second Docker engine in a
//! network namespace of the test's own, listening on `tcp://10.R.S.2:2375`, builds the bundled
//! example end to end, dependants included:
//!
//! - with the Engine API backend, as `DOCKER_HOST=tcp://…`;
//! - with buildx, through a docker context naming that engine (`docker context create`): its
//!   builder (the context's, driver `docker`) chosen with `--buildx-builder`, and again as the
//!   current context (`DOCKER_CONTEXT`), with no DOCKER_HOST at all.
//!
//! The images end up in that engine and not in this machine's; the report names the builder
//! and the engine the images went to, and says the pulls went direct (that engine cannot
//! reach our relay on 127.0.0.1). Needs root (network namespaces).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{Project, service, text};
use testbed::netns::{EngineOptions, NetnsEngine};
use testbed::tls::{Front, FrontOptions};

/// The example's services, by image name (`prefix: ai-infra-`).
const SERVICES: [&str; 11] = [
    "backend",
    "backend-init",
    "frontend",
    "worker",
    "gateway",
    "scheduler",
    "metrics",
    "docs",
    "cli",
    "migrations",
    "model-server",
];

/// Runs the binary in the project with `args`, `DOCKER_CONFIG` set to `config`, DOCKER_HOST
/// and DOCKER_CONTEXT only as given in `env`.
fn run(project: &Project, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = project.command(args);
    command
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

/// `docker ARGS` with `DOCKER_CONFIG=config` (no DOCKER_HOST: this machine's daemon unless
/// the args say `-H` or `--context`).
fn docker(config: &Path, args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("docker runs")
}

/// Checks one run's report: every service built, on `builder`, into `engine_host`, with the
/// base images pulled direct by that engine; the images are in that engine, not in ours.
fn check_built_there(
    out: &Output,
    engine: &NetnsEngine,
    config: &Path,
    tag: &str,
    builder: &str,
) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- remote dockerd\n{}",
        text(out),
        engine.log_tail()
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report on stdout ({e}): {}", text(out)));
    assert_eq!(report["totals"]["services"], 11, "{report:#}");
    assert_eq!(report["totals"]["succeeded"], 11, "{report:#}");
    assert_eq!(report["run"]["builder"], builder, "{report:#}");
    assert_eq!(
        report["run"]["engine_host"],
        engine.docker_host.as_str(),
        "the report names the engine the images went to: {report:#}"
    );
    assert_eq!(report["run"]["pull_via"], "direct", "{report:#}");
    let bases = report["base_images"].as_array().unwrap();
    assert_eq!(bases.len(), 7, "{report:#}");
    assert!(
        bases
            .iter()
            .all(|b| b["status"] == "pulled" && b["via"] == "direct"),
        "{report:#}"
    );
    for name in SERVICES {
        let s = service(&report, name);
        assert_eq!(s["status"], "success", "{name}: {report:#}");
        let image = format!("ai-infra-{name}:{tag}");
        let there = engine.docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
        let there = there.expect("docker runs");
        assert!(
            there.status.success(),
            "{image} is in the remote engine: {}",
            String::from_utf8_lossy(&there.stderr)
        );
        assert_eq!(
            s["image_id"].as_str(),
            Some(String::from_utf8_lossy(&there.stdout).trim()),
            "{name}: the report's image id is the remote engine's"
        );
        let here = docker(config, &["image", "inspect", &image]);
        assert!(
            !here.status.success(),
            "{image} is not in this machine's daemon"
        );
    }
    // The dependants were built on the backend built in this run.
    for dependant in ["backend-init", "migrations"] {
        let out = engine
            .docker(&[
                "run",
                "--rm",
                "--network",
                "none",
                &format!("ai-infra-{dependant}:{tag}"),
                "cat",
                "/app/BUILD",
            ])
            .expect("docker runs");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("backend built"),
            "{dependant} is FROM the backend: {out:?}"
        );
    }
    report
}

/// Removes the base images from the remote engine, so that the next run must pull them there.
fn remove_bases(engine: &NetnsEngine, report: &Value) {
    let bases: Vec<&str> = report["base_images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["reference"].as_str())
        .collect();
    let mut args = vec!["rmi", "-f"];
    args.extend(&bases);
    let out = engine.docker(&args).expect("docker runs");
    assert!(out.status.success(), "{out:?}");
}

/// A docker context of the test's own (in its DOCKER_CONFIG), removed on drop.
struct Context<'a> {
    name: String,
    config: &'a Path,
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        let _ = docker(self.config, &["context", "rm", "-f", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_engine_builds_the_example_through_docker_host_and_a_buildx_context() {
    let project = Project::example().await;
    let engine = NetnsEngine::start(EngineOptions {
        // The test registry is plain HTTP at the veth's host side.
        insecure_registries: vec!["10.0.0.0/8".into()],
        // RUN steps get the engine's default network, as on any engine.
        bridge: true,
        ..EngineOptions::default()
    })
    .await
    .expect("a Docker engine in a network namespace (needs root)");
    // The registry (Docker Hub's mirror) as that engine reaches it.
    let front = Front::start(FrontOptions {
        bind: SocketAddr::new(IpAddr::V4(engine.netns.host_ip), 0),
        upstream: project.registry.addr(),
        tls: None,
        client_ca: None,
    })
    .await
    .unwrap();
    let mirror = format!("docker.io={}", front.host());
    let config = project.path().join(".docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let config = config.as_path();

    // (a) The Engine API backend, DOCKER_HOST=tcp://.
    let tag = testbed::unique_name("ta");
    let version = format!("VERSION={tag}");
    let common = [
        "--output",
        "json",
        "--mirror",
        &mirror,
        "--tag",
        &tag,
        "--build-arg",
        &version,
    ];
    let started = std::time::Instant::now();
    let mut args = vec!["build-all", "--backend", "engine"];
    args.extend(common);
    let out = run(
        &project,
        config,
        &args,
        &[("DOCKER_HOST", &engine.docker_host)],
    );
    let report = check_built_there(&out, &engine, config, &tag, "engine (buildkit)");
    remove_bases(&engine, &report);
    eprintln!("engine API on the remote engine: {:?}", started.elapsed());

    // (b) buildx through a docker context naming that engine: the context's builder (driver
    // docker; buildx makes no second docker-driver builder for a context).
    let context = Context {
        name: testbed::unique_name("aib-remote"),
        config,
    };
    let created = docker(
        config,
        &[
            "context",
            "create",
            &context.name,
            "--docker",
            &format!("host={}", engine.docker_host),
        ],
    );
    assert!(created.status.success(), "{}", text(&created));
    let tag = testbed::unique_name("tb");
    let version = format!("VERSION={tag}");
    let common = [
        "--output",
        "json",
        "--mirror",
        &mirror,
        "--tag",
        &tag,
        "--build-arg",
        &version,
    ];
    let started = std::time::Instant::now();
    let mut args = vec![
        "build-all",
        "--backend",
        "buildx",
        "--buildx-builder",
        &context.name,
    ];
    args.extend(common);
    let out = run(&project, config, &args, &[]);
    let report = check_built_there(
        &out,
        &engine,
        config,
        &tag,
        &format!("buildx ({})", context.name),
    );
    assert!(
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["builder"] == format!("buildx ({})", context.name)),
        "{report:#}"
    );
    eprintln!("buildx builder {}: {:?}", context.name, started.elapsed());
    remove_bases(&engine, &report);

    // (b') The same context as the current one (DOCKER_CONTEXT), with buildx's default
    // builder: the prefetch and the builds follow it to that engine.
    let tag = testbed::unique_name("tc");
    let version = format!("VERSION={tag}");
    let common = [
        "--output",
        "json",
        "--mirror",
        &mirror,
        "--tag",
        &tag,
        "--build-arg",
        &version,
    ];
    let started = std::time::Instant::now();
    let mut args = vec!["build-all", "--backend", "buildx"];
    args.extend(common);
    let out = run(
        &project,
        config,
        &args,
        &[("DOCKER_CONTEXT", context.name.as_str())],
    );
    check_built_there(&out, &engine, config, &tag, "buildx");
    eprintln!("DOCKER_CONTEXT={}: {:?}", context.name, started.elapsed());
}
