//! Service builds against the real daemon (issue #4): the bundled 11-service example with
//! both backends, failures, network retries inside builds, SIGTERM, and bad configs.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Project, service, text};

const BACKENDS: [&str; 3] = ["buildx", "engine", "engine-classic"];

/// The report's builder label for a `--backend` value.
fn label(backend: &str) -> &'static str {
    match backend {
        "buildx" => "buildx",
        "engine" => "engine (buildkit)",
        _ => "engine (classic)",
    }
}

#[tokio::test]
async fn issue4_build_all_builds_the_example_with_each_backend() {
    let project = Project::example().await;
    for backend in BACKENDS {
        // The classic builder finds its cache by image ID, and the other tests of this file build
        // the same Dockerfiles at the same time: when one of them is cut (SIGTERM, a failure),
        // the daemon removes the intermediate images that build made, which a concurrent
        // classic build may just have taken from the cache ("unable to find image sha256:..."
        // at `COPY --from`). Without the cache, this run depends on no other test's images.
        let mut args = vec!["build-all", "--backend", backend, "--output", "json"];
        if backend == "engine-classic" {
            args.push("--no-cache");
        }
        let out = project.run(&args);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        let report = project.report();
        assert_eq!(report["totals"]["succeeded"], 11, "{backend}: {report:#}");
        assert_eq!(report["run"]["builder"], label(backend), "{backend}");
        // backend-init is built FROM the backend image of this very run.
        let init = service(&report, "backend-init");
        assert_eq!(init["status"], "success");
        assert_eq!(
            init["image"],
            format!("ai-infra-backend-init:{}", project.tag)
        );
        let run = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                &format!("ai-infra-backend-init:{}", project.tag),
                "cat",
                "/app/BUILD",
                "/app/INIT",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "backend built\ninit\n",
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        // Every base image came from the mirror (or was already there from an earlier run).
        for image in report["base_images"].as_array().unwrap() {
            assert_ne!(image["status"], "failed", "{image:#}");
        }
        project.remove_built_images();
    }
}

#[tokio::test]
async fn issue4_a_syntax_error_fails_one_service_and_skips_its_dependants() {
    let project = Project::example().await;
    project.write(
        "backend/Dockerfile",
        "FROM python:3.11-slim\nWORKDIR /app\nBOGUSINSTR oops\nRUN echo never\n",
    );
    for backend in BACKENDS {
        let out = project.run(&["build-all", "--backend", backend]);
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", text(&out));
        let report = project.report();
        let backend_result = service(&report, "backend");
        assert_eq!(backend_result["status"], "failed", "{backend}");
        assert_eq!(backend_result["failure"]["class"], "syntax");
        assert_eq!(
            backend_result["failure"]["line"], 3,
            "{backend}: {backend_result:#}"
        );
        for dependant in ["backend-init", "migrations"] {
            let r = service(&report, dependant);
            assert_eq!(r["status"], "skipped", "{backend}: {dependant}");
            assert_eq!(r["skipped_reason"], "dependency failed: backend");
        }
        assert_eq!(report["totals"]["succeeded"], 8, "{backend}");
        // The terminal view names the file and line.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("backend/Dockerfile:3"), "{stdout}");
        project.remove_built_images();
    }
}

/// An HTTP server on 127.0.0.1 that cuts the first `drop_first` connections, then serves.
/// Bounded: it stops after 20 connections or 120 s.
fn flaky_server(drop_first: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut served = 0;
        while served < 20 && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    served += 1;
                    if served <= drop_first {
                        drop(stream);
                        continue;
                    }
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut buf = [0u8; 2048];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

#[tokio::test]
async fn issue4_a_network_failure_inside_a_build_is_retried_and_exit_3_is_not() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    project.write(
        "ai-infra-build.yml",
        "services:\n  fetcher:\n    network: host\n  failer: {}\n",
    );
    project.write(
        "failer/Dockerfile",
        "FROM ubuntu:22.04\nRUN echo about to fail\nRUN exit 3\n",
    );
    for backend in BACKENDS {
        // A fresh server per backend: each build's first connection is cut.
        let port = flaky_server(1);
        project.write(
            "fetcher/Dockerfile",
            &format!(
                "FROM ubuntu:22.04\nRUN wget -q -O /got http://127.0.0.1:{port}/file && cat /got\n"
            ),
        );
        let out = project.run(&[
            "build-all",
            "--backend",
            backend,
            "--build-retries",
            "2",
            "--force",
        ]);
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", text(&out));
        let report = project.report();
        let fetcher = service(&report, "fetcher");
        assert_eq!(fetcher["status"], "success", "{backend}: {fetcher:#}");
        assert_eq!(
            fetcher["attempts"], 2,
            "{backend}: the first connection was cut: {fetcher:#}"
        );
        assert_eq!(
            report["network"]["build_retries"], 1,
            "{backend}: {:#}",
            report["network"]
        );
        let failer = service(&report, "failer");
        assert_eq!(failer["status"], "failed");
        assert_eq!(
            failer["attempts"], 1,
            "{backend}: exit 3 is not a network failure"
        );
        assert_eq!(failer["failure"]["class"], "run-failed");
        assert_eq!(failer["failure"]["line"], 3, "{backend}: {failer:#}");
        let log = std::fs::read_to_string(failer["log_path"].as_str().unwrap()).unwrap();
        assert!(log.contains("about to fail"), "{log}");
        project.remove_built_images();
    }
}

#[tokio::test]
async fn issue4_sigterm_during_build_all_exits_within_5s_with_a_partial_report() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    project.write("quick/Dockerfile", "FROM ubuntu:22.04\nRUN echo quick\n");
    project.write("slow/Dockerfile", "FROM ubuntu:22.04\nRUN sleep 60\n");
    for backend in BACKENDS {
        let mut cmd = project.command(&["build-all", "--backend", backend, "--force"]);
        cmd.args(project.common_args())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Collect stderr as it comes; wait (bounded) until quick has finished and slow runs.
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let slow_log = project.path().join(".ai-infra-build/logs/slow.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let quick_done = lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("build quick built"));
            let slow_running =
                std::fs::read_to_string(&slow_log).is_ok_and(|l| l.contains("sleep 60"));
            if quick_done && slow_running {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: quick never finished: {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let sent = Instant::now();
        unsafe_kill(child.id(), 15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "{backend}: no exit 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = sent.elapsed();
        reader.join().unwrap();
        let stderr = lines.lock().unwrap().join("\n");
        assert!(
            took < Duration::from_secs(5),
            "{backend}: took {took:?} to stop"
        );
        assert_eq!(status.code(), Some(143), "{backend}: {stderr}");
        let report = project.report();
        assert_eq!(report["run"]["interrupted"], true);
        assert_eq!(
            service(&report, "quick")["status"],
            "success",
            "{backend}: {report:#}"
        );
        assert_eq!(
            service(&report, "slow")["status"],
            "cancelled",
            "{backend}: {report:#}"
        );
        let _ = std::fs::remove_dir_all(project.path().join(".ai-infra-build"));
        project.remove_built_images();
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn issue4_bad_configs_exit_2_naming_the_input_and_doing_nothing() {
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "unknown key",
            "services:\n  api:\n    dockerfiel: Dockerfile\n",
            &["ai-infra-build.yml", "dockerfiel"],
        ),
        (
            "duplicate names",
            "services:\n  api: {}\n  api: {}\n",
            &["ai-infra-build.yml", "api"],
        ),
        (
            "missing Dockerfile",
            "services:\n  api:\n    dockerfile: Nope.Dockerfile\n",
            &["ai-infra-build.yml", "api", "Nope.Dockerfile"],
        ),
        (
            "missing context",
            "services:\n  ghost: {}\n  api: {}\n",
            &["ai-infra-build.yml", "ghost"],
        ),
        (
            "unknown depends-on",
            "services:\n  api:\n    depends-on: [dbb]\n",
            &["ai-infra-build.yml", "api", "dbb"],
        ),
        (
            "cycle",
            "services:\n  api:\n    depends-on: [web]\n  web:\n    depends-on: [api]\n",
            &["ai-infra-build.yml", "cycle", "api -> web -> api"],
        ),
    ];
    for (what, config, expect) in cases {
        let project = Project::empty().await;
        project.write("api/Dockerfile", "FROM ubuntu:22.04\n");
        project.write("web/Dockerfile", "FROM ubuntu:22.04\n");
        project.write("ai-infra-build.yml", config);
        for command in ["plan", "build-all"] {
            let out = project.command(&[command]).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} / {command}: {}",
                text(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            for needle in expect {
                assert!(
                    err.contains(needle),
                    "{what} / {command}: {needle:?} not in {err}"
                );
            }
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                !project.path().join(".ai-infra-build").exists(),
                "{what}: {command} left files behind"
            );
        }
    }
}

#[tokio::test]
async fn push_sends_every_built_image_to_its_registry() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    let target = testbed::registry::Registry::start().await.unwrap();
    project.write(
        "ai-infra-build.yml",
        "services:\n  api:\n    tags: [stable]\n",
    );
    project.write("api/Dockerfile", "FROM ubuntu:22.04\nRUN echo api > /api\n");
    let prefix = format!("{}/team/", target.host());
    let out = project.run(&["build-all", "--prefix", &prefix, "--push"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for tag in [project.tag.as_str(), "stable"] {
        let url = format!("{}/v2/team/api/manifests/{tag}", target.url());
        let resp = testbed::http::send(
            hyper::Method::HEAD,
            &url,
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            bytes::Bytes::new(),
        )
        .await;
        let resp = resp.unwrap_or_else(|e| panic!("HEAD {url}: {e:#}"));
        assert_eq!(resp.status, 200, "{url}");
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

/// Issue 17, item 15: a build whose network failures use up its retries made 2 attempts with
/// `--build-retries 1`, so it was retried once, not twice.
#[tokio::test]
async fn issue17_build_retries_count() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    // Every connection is cut: each attempt fails for a network reason.
    let port = flaky_server(20);
    project.write(
        "fetcher/Dockerfile",
        &format!("FROM ubuntu:22.04\nRUN wget -q -O /got http://127.0.0.1:{port}/file\n"),
    );
    project.write(
        "ai-infra-build.yml",
        "services:\n  fetcher:\n    network: host\n",
    );
    let out = project.run(&[
        "build-all",
        "--backend",
        "engine",
        "--build-retries",
        "1",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = project.report();
    let fetcher = service(&report, "fetcher");
    assert_eq!(fetcher["status"], "failed", "{fetcher:#}");
    assert_eq!(fetcher["failure"]["class"], "network", "{fetcher:#}");
    assert_eq!(fetcher["attempts"], 2, "{fetcher:#}");
    let network_failures = report["failure_log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "build" && e["class"].as_str().unwrap().starts_with("network"))
        .count();
    assert_eq!(network_failures, 2, "{:#}", report["failure_log"]);
    assert_eq!(
        report["network"]["build_retries"], 1,
        "two failed attempts are one retry: {:#}",
        report["network"]
    );
    project.remove_built_images();
}

/// Issue 17, item 12: a registry that rate-limits the push (`429` with `Retry-After: 3`) is
/// not pushed to again before those 3 s have passed. `docker push` does not show the
/// header; the push loop asks the registry for it (a `HEAD` of the manifest, which the
/// rate limiter answers the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue17_push_retry_honours_retry_after() {
    use testbed::proxy::{
        FaultConfig, FaultProxy, FaultType, KindFaults, ProxyOptions, RequestKind,
    };
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    let target = testbed::registry::Registry::start().await.unwrap();
    let mut faults = FaultConfig::default()
        // The daemon's manifest PUT (the last request of a push) is refused once ...
        .with_kind(
            RequestKind::Other,
            KindFaults::default()
                .fail_first(1, FaultType::Status429)
                .only_path_containing("/manifests/"),
        )
        // ... and so is the next request for the manifest, ours.
        .with_kind(
            RequestKind::ManifestHead,
            KindFaults::default().fail_first(1, FaultType::Status429),
        );
    faults.params.retry_after_secs = 3;
    let proxy = FaultProxy::start(ProxyOptions::new(target.addr()).with_faults(faults))
        .await
        .unwrap();
    project.write("ai-infra-build.yml", "services:\n  api: {}\n");
    project.write("api/Dockerfile", "FROM ubuntu:22.04\nRUN echo api > /api\n");
    let prefix = format!("{}/team/", proxy.host());
    // The proxy serves on this runtime while the binary runs.
    let out = tokio::task::block_in_place(|| {
        project.run(&["build-all", "--prefix", &prefix, "--push", "--force"])
    });
    let log = std::fs::read_to_string(project.path().join(".ai-infra-build/logs/api.log"))
        .unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}\n{log}", text(&out));
    let puts: Vec<u64> = proxy
        .stats()
        .log
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .map(|r| r.at_us)
        .collect();
    assert!(
        puts.len() >= 2,
        "the refused push was not retried: {puts:?}"
    );
    let waited = Duration::from_micros(puts[1] - puts[0]);
    assert!(
        waited >= Duration::from_secs(3),
        "the push was retried {waited:?} after a 429 with Retry-After: 3"
    );
    assert!(log.contains("retrying in"), "{log}");
    let _ = std::process::Command::new("docker")
        .args([
            "rmi",
            "-f",
            "--no-prune",
            &format!("{prefix}api:{}", project.tag),
        ])
        .output();
}

/// A RUN whose program prints network words itself ("connection refused", as a failing test
/// does) and exits 1 failed on its own: run-failed, not retried, with either builder.
#[tokio::test]
async fn issue17_a_runs_own_connection_refused_is_not_retried() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    project.write(
        "tests/Dockerfile",
        "FROM ubuntu:22.04\nRUN echo 'test_api: dial tcp 127.0.0.1:5432: connect: connection refused' && echo 'read: connection reset by peer' && exit 1\n",
    );
    for backend in BACKENDS {
        let out = project.run(&[
            "build-all",
            "--backend",
            backend,
            "--build-retries",
            "2",
            "--force",
        ]);
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", text(&out));
        let report = project.report();
        let s = service(&report, "tests");
        assert_eq!(s["status"], "failed", "{backend}: {s:#}");
        assert_eq!(s["failure"]["class"], "run-failed", "{backend}: {s:#}");
        assert_eq!(s["attempts"], 1, "{backend}: {s:#}");
        assert_eq!(report["network"]["build_retries"], 0, "{backend}");
        let log = std::fs::read_to_string(s["log_path"].as_str().unwrap()).unwrap();
        assert!(log.contains("connection refused"), "{backend}: {log}");
        project.remove_built_images();
    }
}
