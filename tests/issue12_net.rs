//! Issue 12, items 5 and 6 (acceptance 5 and 6): registry TLS through certs.d, the proxy
//! environment, and daemons that cannot reach the relay. Real components only: the Docker
//! daemon, docker-registry, a TLS front with a CA made per test, an HTTP CONNECT proxy, and a
//! second Docker engine in a network namespace of the test's own.
//!
//! A registry on 127.0.0.0/8 is insecure to the daemon (TLS unverified, or plain HTTP), so a
//! registry whose certificate must be trusted lives at a non-loopback address: the host side
//! of a veth pair into a test namespace (`10.R.S.1`), which the daemon treats as secure.
//! The same address serves the proxy tests: loopback never goes through a proxy (Go's
//! `httpproxy` rule, which the daemon and the docker CLI follow, and so do we).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::forward_proxy::ForwardProxy;
use testbed::images::{ImageSpec, push_image};
use testbed::netns::{EngineOptions, Netns, NetnsEngine};
use testbed::registry::Registry;
use testbed::tls::{Front, FrontOptions, TestCa};
use testbed::{RemoveImagesOnDrop, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("no JSON on stdout ({err})\n{}", self.describe()))
    }
}

/// Runs the binary in `dir` with `args` and `env`, bounded by three minutes.
async fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", dir.join(".docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("NO_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(180), command.output()).await??;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A project with one service `FROM image` (plus a LABEL, so it builds a new image).
fn project(image: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("app");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(
        service.join("Dockerfile"),
        format!("FROM {image}\nLABEL issue12=net\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join(".docker-config")).unwrap();
    dir
}

fn image<'a>(report: &'a Value, reference: &str) -> &'a Value {
    report["images"]
        .as_array()
        .or_else(|| report["base_images"].as_array())
        .and_then(|images| images.iter().find(|i| i["reference"] == reference))
        .unwrap_or_else(|| panic!("no image {reference} in the report:\n{report:#}"))
}

/// A registry with one base image, reachable through a TLS front on the host side of a test
/// namespace, with a certificate of `ca`.
struct TlsRegistry {
    front: Front,
    _registry: Registry,
    // Dropped after the front (which listens on its address).
    _netns: Netns,
    reference: String,
    name: String,
}

async fn tls_registry(ca: &TestCa) -> anyhow::Result<TlsRegistry> {
    tls_registry_with(ca, None).await
}

/// [`tls_registry`]; with `client_ca`, the front demands a client certificate it signed.
async fn tls_registry_with(ca: &TestCa, client_ca: Option<&TestCa>) -> anyhow::Result<TlsRegistry> {
    let netns = Netns::create()?;
    let registry = Registry::start().await?;
    let name = unique_name("issue12-tls");
    push_image(
        &registry.host(),
        &ImageSpec::new(format!("library/{name}"), "1.0").with_layer(32 * 1024),
    )
    .await?;
    let ip = IpAddr::V4(netns.host_ip);
    let front = Front::start(FrontOptions {
        bind: SocketAddr::new(ip, 0),
        upstream: registry.addr(),
        tls: Some(ca.server_cert(&[&ip.to_string()])?),
        client_ca: client_ca.map(TestCa::cert_pem),
    })
    .await?;
    let reference = format!("{}/library/{name}:1.0", front.host());
    Ok(TlsRegistry {
        front,
        _registry: registry,
        _netns: netns,
        reference,
        name,
    })
}

/// Acceptance 6: a TLS registry whose CA is in certs.d works for prefetch and build-all
/// (the relay trusts it; the daemon pulls from the relay); without the CA, one error that
/// names the file to add, class `tls-untrusted`, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_certs_d_trusts_a_tls_registry_and_an_untrusted_one_says_which_file()
-> anyhow::Result<()> {
    let ca = TestCa::new("issue12 test CA")?;
    let reg = tls_registry(&ca).await?;
    let tag = unique_name("t");
    let _cleanup = RemoveImagesOnDrop(vec![reg.name.clone(), tag.clone()]);
    let host = reg.front.host();

    // Untrusted first: an empty certs.d.
    let empty = tempfile::tempdir()?;
    let dir = project(&reg.reference);
    let started = Instant::now();
    let untrusted = run(
        dir.path(),
        &["prefetch", "--output", "json", "--max-retries", "4"],
        &[("AI_INFRA_BUILD_CERTS_D", empty.path().display().to_string())],
    )
    .await?;
    assert_ne!(untrusted.code, 0, "{}", untrusted.describe());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no retries: {:?}",
        started.elapsed()
    );
    let report = untrusted.json();
    let failed = image(&report, &reg.reference);
    assert_eq!(failed["status"], "failed", "{report:#}");
    assert_eq!(failed["error"]["class"], "tls-untrusted", "{report:#}");
    let wanted = format!(
        "x509: unknown authority for {host}: add its CA as {}",
        empty.path().join(&host).join("ca.crt").display()
    );
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&wanted), "{message}\nwanted: {wanted}");
    assert_eq!(
        failed["attempts"].as_array().map(Vec::len),
        Some(1),
        "a TLS failure is not retried: {report:#}"
    );
    // The relay sent each of the daemon's requests upstream once: none was retried.
    let requests = report["requests"].as_array().unwrap();
    assert!(!requests.is_empty(), "{report:#}");
    assert!(
        requests
            .iter()
            .all(|r| r["class"] == "tls-untrusted" && r["retry_wait_ms"].is_null()),
        "{report:#}"
    );

    // Trusted through certs.d: build-all succeeds through the relay.
    let certs = tempfile::tempdir()?;
    ca.write_certs_d(certs.path(), &host, None)?;
    let handshakes = reg.front.handshakes();
    let built = run(
        dir.path(),
        &["build-all", "--output", "json", "--tag", &tag],
        &[("AI_INFRA_BUILD_CERTS_D", certs.path().display().to_string())],
    )
    .await?;
    assert_eq!(built.code, 0, "{}", built.describe());
    let report = built.json();
    let base = image(&report, &reg.reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "relay", "{report:#}");
    assert!(
        reg.front.handshakes() > handshakes,
        "the relay spoke TLS to the registry"
    );
    Ok(())
}

/// Item 5, client certificates: a registry that demands a client certificate signed by its
/// own client CA. With `ca.crt`, `client.cert` and `client.key` in certs.d for its
/// `host:port`, prefetch and build-all succeed through the relay. Without the client
/// certificate, one permanent error (`tls-untrusted`, not retried) names the host and both
/// files to add; a `.cert` without its `.key` names the missing key before any handshake.
/// Nothing says "network".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_certs_d_client_certificate_for_a_registry_that_demands_one() -> anyhow::Result<()>
{
    let ca = TestCa::new("issue12 server CA")?;
    let client_ca = TestCa::new("issue12 client CA")?;
    let reg = tls_registry_with(&ca, Some(&client_ca)).await?;
    let tag = unique_name("t");
    let _cleanup = RemoveImagesOnDrop(vec![reg.name.clone(), tag.clone()]);
    let host = reg.front.host();
    let dir = project(&reg.reference);
    let prefetch = ["prefetch", "--output", "json", "--max-retries", "4"];

    // The CA only: the registry's handshake refuses us for want of a client certificate.
    let ca_only = tempfile::tempdir()?;
    let host_dir = ca.write_certs_d(ca_only.path(), &host, None)?;
    let (ok_before, failed_before) = (reg.front.handshakes(), reg.front.failed_handshakes());
    let started = Instant::now();
    let refused = run(
        dir.path(),
        &prefetch,
        &[(
            "AI_INFRA_BUILD_CERTS_D",
            ca_only.path().display().to_string(),
        )],
    )
    .await?;
    let elapsed = started.elapsed();
    assert_ne!(refused.code, 0, "{}", refused.describe());
    assert!(elapsed < Duration::from_secs(30), "no retries: {elapsed:?}");
    let report = refused.json();
    let failed = image(&report, &reg.reference);
    assert_eq!(failed["status"], "failed", "{report:#}");
    assert_eq!(failed["error"]["class"], "tls-untrusted", "{report:#}");
    let wanted = format!(
        "tls: {host} asks for a client certificate: add it as {} and {}",
        host_dir.join("client.cert").display(),
        host_dir.join("client.key").display()
    );
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&wanted), "{message}\nwanted: {wanted}");
    assert_eq!(
        failed["attempts"].as_array().map(Vec::len),
        Some(1),
        "a refused client certificate is not retried: {report:#}"
    );
    let requests = report["requests"].as_array().unwrap();
    assert!(!requests.is_empty(), "{report:#}");
    assert!(
        requests
            .iter()
            .all(|r| r["class"] == "tls-untrusted" && r["retry_wait_ms"].is_null()),
        "{report:#}"
    );
    // The front refused one handshake per request the relay reports, and no more: nothing
    // was retried behind the report's back.
    let refusals = reg.front.failed_handshakes() - failed_before;
    assert!(
        refusals >= 1 && refusals <= requests.len(),
        "{refusals} refused handshakes for {} requests: {report:#}",
        requests.len()
    );
    assert_eq!(reg.front.handshakes(), ok_before, "no handshake succeeded");
    let all = format!("{}{}", refused.stdout, refused.stderr).to_ascii_lowercase();
    assert!(!all.contains("network"), "{}", refused.describe());
    // What a person reads says the same, once per cause, and nothing about the network.
    let text = run(
        dir.path(),
        &["prefetch", "--max-retries", "4"],
        &[(
            "AI_INFRA_BUILD_CERTS_D",
            ca_only.path().display().to_string(),
        )],
    )
    .await?;
    assert_ne!(text.code, 0, "{}", text.describe());
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(all.contains(&wanted), "{}", text.describe());
    assert!(
        !all.to_ascii_lowercase().contains("network"),
        "{}",
        text.describe()
    );
    assert!(
        !all.contains("--max-retries"),
        "no advice to retry more: {}",
        text.describe()
    );

    // A client.cert without its client.key: the missing file, before any handshake.
    let client = client_ca.client_cert("issue12-client")?;
    let half = tempfile::tempdir()?;
    let half_dir = ca.write_certs_d(half.path(), &host, Some(&client))?;
    std::fs::remove_file(half_dir.join("client.key"))?;
    let seen = reg.front.handshakes() + reg.front.failed_handshakes();
    let started = Instant::now();
    let no_key = run(
        dir.path(),
        &prefetch,
        &[("AI_INFRA_BUILD_CERTS_D", half.path().display().to_string())],
    )
    .await?;
    let elapsed = started.elapsed();
    assert_ne!(no_key.code, 0, "{}", no_key.describe());
    assert!(elapsed < Duration::from_secs(30), "no retries: {elapsed:?}");
    let report = no_key.json();
    let failed = image(&report, &reg.reference);
    assert_eq!(failed["status"], "failed", "{report:#}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    let wanted = format!(
        "missing key {} for client certificate {}",
        half_dir.join("client.key").display(),
        half_dir.join("client.cert").display()
    );
    assert!(message.contains(&wanted), "{message}\nwanted: {wanted}");
    assert_eq!(
        failed["attempts"].as_array().map(Vec::len),
        Some(1),
        "a broken certs.d is not retried: {report:#}"
    );
    assert_eq!(
        reg.front.handshakes() + reg.front.failed_handshakes(),
        seen,
        "no handshake was tried with a broken certs.d"
    );
    let all = format!("{}{}", no_key.stdout, no_key.stderr).to_ascii_lowercase();
    assert!(!all.contains("network"), "{}", no_key.describe());

    // All three files: prefetch, then build-all (pulling again), both through the relay.
    let full = tempfile::tempdir()?;
    ca.write_certs_d(full.path(), &host, Some(&client))?;
    let certs_env = ("AI_INFRA_BUILD_CERTS_D", full.path().display().to_string());
    let handshakes = reg.front.handshakes();
    let prefetched = run(dir.path(), &prefetch, std::slice::from_ref(&certs_env)).await?;
    assert_eq!(prefetched.code, 0, "{}", prefetched.describe());
    let report = prefetched.json();
    let base = image(&report, &reg.reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "relay", "{report:#}");
    assert!(
        reg.front.handshakes() > handshakes,
        "the relay completed a handshake with its client certificate"
    );

    let removed = std::process::Command::new("docker")
        .args(["image", "rm", "--force", &reg.reference])
        .output()?;
    assert!(removed.status.success(), "{removed:?}");
    let handshakes = reg.front.handshakes();
    let built = run(
        dir.path(),
        &["build-all", "--output", "json", "--tag", &tag],
        &[certs_env],
    )
    .await?;
    assert_eq!(built.code, 0, "{}", built.describe());
    let report = built.json();
    let base = image(&report, &reg.reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "relay", "{report:#}");
    assert!(
        reg.front.handshakes() > handshakes,
        "build-all pulled again"
    );
    Ok(())
}

/// Item 5, proxies: the relay's upstream requests and doctor's probes go through
/// HTTPS_PROXY (the proxy records them: CONNECT to the registry); with the registry in
/// NO_PROXY they do not (the proxy records nothing) and still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_https_proxy_carries_registry_requests_and_no_proxy_bypasses_it()
-> anyhow::Result<()> {
    let ca = TestCa::new("issue12 proxy CA")?;
    let reg = tls_registry(&ca).await?;
    let _cleanup = RemoveImagesOnDrop(vec![reg.name.clone()]);
    let host = reg.front.host();
    let certs = tempfile::tempdir()?;
    ca.write_certs_d(certs.path(), &host, None)?;
    let proxy = ForwardProxy::start().await?;
    let dir = project(&reg.reference);
    let certs_env = ("AI_INFRA_BUILD_CERTS_D", certs.path().display().to_string());

    let through = run(
        dir.path(),
        &["prefetch", "--output", "json", "--pull", "always"],
        &[certs_env.clone(), ("HTTPS_PROXY", proxy.url())],
    )
    .await?;
    assert_eq!(through.code, 0, "{}", through.describe());
    let carried = proxy.count_for(&host);
    assert!(
        carried >= 1,
        "the relay's requests went through the proxy: {:?}",
        proxy.requests()
    );
    assert!(
        proxy.requests().iter().all(|r| r.method == "CONNECT"),
        "https through a proxy is a CONNECT tunnel: {:?}",
        proxy.requests()
    );

    let doctor = run(
        dir.path(),
        &["doctor", "--output", "json"],
        &[certs_env.clone(), ("HTTPS_PROXY", proxy.url())],
    )
    .await?;
    let report = doctor.json();
    let probe = &report["registries"][0]["sources"][0];
    assert_eq!(probe["healthy"], true, "{report:#}");
    assert_eq!(probe["proxy"], proxy.url(), "{report:#}");
    assert!(
        proxy.count_for(&host) > carried,
        "doctor's ping went through the proxy"
    );

    let before = proxy.requests().len();
    let ip = host.split(':').next().unwrap().to_string();
    for no_proxy in [
        ("NO_PROXY", ip.clone()),
        ("no_proxy", "10.0.0.0/8".to_string()),
    ] {
        let bypass = run(
            dir.path(),
            &["prefetch", "--output", "json", "--pull", "always"],
            &[
                certs_env.clone(),
                ("HTTPS_PROXY", proxy.url()),
                no_proxy.clone(),
            ],
        )
        .await?;
        assert_eq!(bypass.code, 0, "{no_proxy:?}: {}", bypass.describe());
        assert_eq!(
            proxy.requests().len(),
            before,
            "{no_proxy:?}: nothing went through the proxy: {:?}",
            proxy.requests()
        );
    }
    Ok(())
}

/// A registry (plain HTTP) reachable from a test namespace's engine at the host side's
/// address, with one base image.
async fn registry_for_engine(netns: &Netns) -> anyhow::Result<(Registry, Front, String, String)> {
    let registry = Registry::start().await?;
    let name = unique_name("issue12-remote");
    push_image(
        &registry.host(),
        &ImageSpec::new(format!("library/{name}"), "1.0").with_layer(32 * 1024),
    )
    .await?;
    let front = Front::start(FrontOptions {
        bind: SocketAddr::new(IpAddr::V4(netns.host_ip), 0),
        upstream: registry.addr(),
        tls: None,
        client_ca: None,
    })
    .await?;
    let reference = format!("{}/library/{name}:1.0", front.host());
    Ok((registry, front, reference, name))
}

/// Acceptance 5: a daemon in another network namespace, reached over `tcp://` (known before
/// pulling from its address) and over a local unix socket (found out by asking it to pull a
/// name only the relay serves): pulls go direct, each image says so and why, build-all
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_a_daemon_that_cannot_reach_the_relay_pulls_direct() -> anyhow::Result<()> {
    // The test registry is plain HTTP at a non-loopback address: insecure to that engine.
    let engine = NetnsEngine::start(EngineOptions {
        insecure_registries: vec!["10.0.0.0/8".into()],
        ..EngineOptions::default()
    })
    .await?;
    let (_registry, _front, reference, _name) = registry_for_engine(&engine.netns).await?;
    let dir = project(&reference);
    let tag = unique_name("t");

    let built = run(
        dir.path(),
        &["build-all", "--output", "json", "--tag", &tag],
        &[("DOCKER_HOST", engine.docker_host.clone())],
    )
    .await?;
    assert_eq!(built.code, 0, "{}\n{}", built.describe(), engine.log_tail());
    let report = built.json();
    let base = image(&report, &reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "direct", "{report:#}");
    let reason = base["via_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not on this machine's loopback"),
        "{report:#}"
    );
    assert_eq!(report["run"]["pull_via"], "direct", "{report:#}");

    // The same daemon through its unix socket: local by its address, but its 127.0.0.1 is
    // not ours. Found out before pulling; the pull goes direct.
    let removed = engine.docker(&["rmi", "-f", &reference])?;
    assert!(removed.status.success(), "{removed:?}");
    let prefetched = run(
        dir.path(),
        &["prefetch", "--output", "json"],
        &[("DOCKER_HOST", engine.unix_host())],
    )
    .await?;
    assert_eq!(prefetched.code, 0, "{}", prefetched.describe());
    let report = prefetched.json();
    assert_eq!(report["via"], "direct", "{report:#}");
    let base = image(&report, &reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "direct", "{report:#}");
    let reason = base["via_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot reach the relay"), "{report:#}");
    assert!(
        !reason.contains("/k"),
        "the relay's secret path is not shown: {reason}"
    );

    // `--pull-via relay` asks for no check before pulling: the first pull that cannot reach
    // the relay switches the rest to direct, and the image is pulled all the same.
    let removed = engine.docker(&["rmi", "-f", &reference])?;
    assert!(removed.status.success(), "{removed:?}");
    let forced = run(
        dir.path(),
        &["prefetch", "--output", "json", "--pull-via", "relay"],
        &[("DOCKER_HOST", engine.unix_host())],
    )
    .await?;
    assert_eq!(forced.code, 0, "{}", forced.describe());
    let report = forced.json();
    assert_eq!(report["via"], "direct", "{report:#}");
    let base = image(&report, &reference);
    assert_eq!(base["status"], "pulled", "{report:#}");
    assert_eq!(base["via"], "direct", "{report:#}");
    let reason = base["via_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("could not reach the relay"), "{report:#}");
    assert!(!reason.contains("/k"), "{reason}");
    Ok(())
}

/// `prefetch` in Actions masks each credential as soon as it is read, before anything else
/// is printed, once (as build-all does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_prefetch_masks_credentials_in_actions() -> anyhow::Result<()> {
    use testbed::proxy::ProxyCredentials;
    let password = unique_name("pw-s3cret");
    let bed = testbed::TestBed::start(|o| {
        o.with_credentials(ProxyCredentials::new("alice", &password).private(&["private/"]))
    })
    .await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-mask-prefetch");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone()]);
    let pushed = push_image(
        &bed.registry.host(),
        &ImageSpec::new(format!("private/{name}"), "1.0"),
    )
    .await?;
    let dir = project(&pushed.reference_via(&host));
    let auth = base64_basic("alice", &password);
    std::fs::write(
        dir.path().join(".docker-config/config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )?;
    let summary = dir.path().join("summary.md");
    let out = run(
        dir.path(),
        &["prefetch"],
        &[
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
        ],
    )
    .await?;
    assert_eq!(out.code, 0, "{}", out.describe());
    let mask = format!("::add-mask::{password}");
    assert!(
        out.stdout.starts_with(&mask),
        "the mask comes first:\n{}",
        out.describe()
    );
    assert_eq!(
        out.stdout.matches(&password).count(),
        1,
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains(&password));
    assert!(!std::fs::read_to_string(&summary)?.contains(&password));
    Ok(())
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
