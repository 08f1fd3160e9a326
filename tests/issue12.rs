//! Issue 12 (private registries), acceptance: the real binary, the real Docker daemon, a real
//! registry behind the fault proxy whose token endpoint demands credentials, and the docker
//! CLI's own `docker login` into a throwaway `DOCKER_CONFIG`.
//!
//! Every test pushes its own images under unique names and removes what it pulled.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ai_infra_build::auth::{Credentials, Origin, Secret};
use anyhow::Context;
use serde_json::Value;
use testbed::images::{ImageSpec, PushedImage, push_image};
use testbed::proxy::ProxyCredentials;
use testbed::{RemoveImagesOnDrop, TestBed, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_ai-infra-build");
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const USER: &str = "alice";

/// A password no other text in a run could contain by chance.
fn password() -> String {
    unique_name("pw-s3cret")
}

/// A registry whose `private/` repositories need `USER`/`password`.
async fn private_bed(password: &str) -> anyhow::Result<TestBed> {
    TestBed::start(|o| {
        o.with_credentials(ProxyCredentials::new(USER, password).private(&["private/"]))
    })
    .await
}

/// `docker login HOST` (the real CLI and daemon) into `config`.
fn docker_login(config: &Path, host: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(["login", host, "--username", USER, "--password-stdin"])
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A project with one service per image, each `FROM` it.
fn project(images: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, image) in images.iter().enumerate() {
        let service = dir.path().join(format!("svc{i}"));
        std::fs::create_dir_all(&service).unwrap();
        std::fs::write(service.join("Dockerfile"), format!("FROM {image}\n")).unwrap();
    }
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("no JSON report ({err})\n{}", self.describe()))
    }

    fn describe(&self) -> String {
        format!(
            "exit {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

async fn prefetch(
    project: &Path,
    config: &Path,
    path: Option<&Path>,
    args: &[&str],
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("prefetch")
        .args(["--output", "json"])
        .args(args)
        .current_dir(project)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        command.env("PATH", std::env::join_paths(paths)?);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .context("prefetch did not finish in time")??;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

fn image<'a>(report: &'a Value, reference: &str) -> &'a Value {
    report["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["reference"] == reference))
        .unwrap_or_else(|| panic!("no image {reference} in the report:\n{report:#}"))
}

async fn push_private(bed: &TestBed, name: &str) -> anyhow::Result<PushedImage> {
    push_image(
        &bed.registry.host(),
        &ImageSpec::new(format!("private/{name}"), "1.0").with_layer(64 * 1024),
    )
    .await
}

/// A `docker-credential-testbed` that answers `USER`/`password` for `host`, "not found" else.
fn helper_dir(host: &str, password: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("docker-credential-testbed");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread server\nif [ \"$server\" = \"{host}\" ]; then\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"{USER}\",\"Secret\":\"{password}\"}}'\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_config(dir: &Path, json: &str) -> PathBuf {
    std::fs::write(dir.join("config.json"), json).unwrap();
    dir.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_docker_login_writes_what_auth_reads() -> anyhow::Result<()> {
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let config = tempfile::tempdir()?;

    let wrong = docker_login(config.path(), &host, "not-the-password");
    assert!(
        !wrong.status.success(),
        "the proxy must refuse a wrong password: {}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let login = docker_login(config.path(), &host, &password);
    assert!(
        login.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert!(bed.proxy.stats().tokens_credentialed >= 1);

    let creds = Credentials::load(config.path())?;
    let found = creds
        .lookup(&host)?
        .expect("docker login stored credentials");
    assert_eq!(found.origin, Origin::ConfigAuths);
    assert_eq!(
        found.secret,
        Secret::Password {
            username: USER.into(),
            password: password.clone()
        }
    );
    Ok(())
}

/// Acceptance 1 (pull part): a private base after `docker login`, through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_private_base_pulls_with_docker_login_through_the_relay() -> anyhow::Result<()> {
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-login");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone()]);
    let pushed = push_private(&bed, &name).await?;
    let reference = pushed.reference_via(&host);
    let config = tempfile::tempdir()?;
    assert!(
        docker_login(config.path(), &host, &password)
            .status
            .success()
    );
    bed.proxy.reset_stats();

    let dir = project(std::slice::from_ref(&reference));
    let run = prefetch(dir.path(), config.path(), None, &[]).await?;
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    assert_eq!(image(&report, &reference)["status"], "pulled", "{report:#}");
    let stats = bed.proxy.stats();
    assert!(stats.tokens_credentialed >= 1, "{stats:?}");
    assert_eq!(stats.tokens_rejected, 0);
    assert!(
        !run.stdout.contains(&password) && !run.stderr.contains(&password),
        "the password leaked:\n{}",
        run.describe()
    );
    Ok(())
}

/// Acceptance 2: credentials from `credHelpers` and from `credsStore`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_private_base_pulls_with_cred_helpers_and_creds_store() -> anyhow::Result<()> {
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-helper");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone()]);
    let pushed = push_private(&bed, &name).await?;
    let reference = pushed.reference_via(&host);
    let helpers = helper_dir(&host, &password);
    for json in [
        format!(r#"{{"credHelpers":{{"{host}":"testbed"}}}}"#),
        r#"{"credsStore":"testbed"}"#.to_string(),
    ] {
        let config = tempfile::tempdir()?;
        write_config(config.path(), &json);
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "--force", &reference])
            .output();
        bed.proxy.reset_stats();
        let dir = project(std::slice::from_ref(&reference));
        let run = prefetch(dir.path(), config.path(), Some(helpers.path()), &[]).await?;
        assert_eq!(run.code, 0, "{json}\n{}", run.describe());
        assert_eq!(image(&run.report(), &reference)["status"], "pulled");
        assert!(bed.proxy.stats().tokens_credentialed >= 1, "{json}");
        assert!(!run.stdout.contains(&password) && !run.stderr.contains(&password));
    }
    Ok(())
}

/// Acceptance 3: a wrong password fails fast as `auth-rejected`, naming the registry and the
/// credential source, without a retry and without "network"; no login at all says
/// "needs credentials: log in to HOST".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_wrong_password_and_no_login_say_what_to_do() -> anyhow::Result<()> {
    use base64::Engine as _;
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-wrong");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone()]);
    let pushed = push_private(&bed, &name).await?;
    let reference = pushed.reference_via(&host);
    let dir = project(std::slice::from_ref(&reference));

    let config = tempfile::tempdir()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong-pw"));
    write_config(
        config.path(),
        &format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    );
    bed.proxy.reset_stats();
    let run = prefetch(dir.path(), config.path(), None, &["--max-retries", "5"]).await?;
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(run.elapsed < Duration::from_secs(30), "{}", run.describe());
    let report = run.report();
    let failed = image(&report, &reference);
    assert_eq!(failed["status"], "failed", "{report:#}");
    assert_eq!(failed["error"]["class"], "auth-rejected", "{report:#}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&host), "{message}");
    assert!(message.contains("rejected the credentials"), "{message}");
    assert!(message.contains("config.json auths"), "{message}");
    assert!(
        !run.stdout.to_lowercase().contains("network"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wrong-pw") && !run.stderr.contains("wrong-pw"));
    // Never retried: every relay request event with a failure was final.
    for event in report["requests"].as_array().into_iter().flatten() {
        assert!(
            event["retry_wait_ms"].is_null(),
            "an auth failure was retried: {event}"
        );
    }
    let stats = bed.proxy.stats();
    assert!(
        stats.tokens_rejected >= 1 && stats.tokens_rejected <= 3,
        "{stats:?}"
    );
    // The terminal's diagnosis says to fix the credentials, not to retry more.
    let human = tokio::process::Command::new(BIN)
        .args(["prefetch", "--max-retries", "5"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", config.path())
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&human.stdout),
        String::from_utf8_lossy(&human.stderr)
    );
    assert!(
        text.contains("rejected the credentials sent for") && !text.contains("--max-retries"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");

    let empty = tempfile::tempdir()?;
    let run = prefetch(dir.path(), empty.path(), None, &[]).await?;
    assert_ne!(run.code, 0, "{}", run.describe());
    let report = run.report();
    let message = image(&report, &reference)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&format!("needs credentials: log in to {host}")),
        "{message}"
    );
    Ok(())
}

/// Acceptance 4: another local process cannot pull through the relay without the run's
/// secret; names that are not repository names are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_relay_refuses_requests_without_the_run_secret() -> anyhow::Result<()> {
    use ai_infra_build::endpoint::Source;
    use ai_infra_build::registry::{RegistryClient, Timeouts};
    use ai_infra_build::relay::Relay;
    use ai_infra_build::retry::RetryPolicy;

    let password = password();
    let bed = private_bed(&password).await?;
    let name = unique_name("issue12-relay");
    let pushed = push_private(&bed, &name).await?;
    let creds = tempfile::tempdir()?;
    assert!(
        docker_login(creds.path(), &bed.proxy.host(), &password)
            .status
            .success()
    );
    let client = RegistryClient::new(Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(10),
    })?
    .with_credentials(std::sync::Arc::new(Credentials::load(creds.path())?));
    let relay = Relay::start(client, RetryPolicy::default()).await?;
    let source = Source::parse(&bed.proxy.host());
    let ours = relay.repository(&source, &pushed.repo);
    let http = reqwest::Client::new();
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    let get = |path: String| {
        http.get(format!("http://{}{path}", relay.host()))
            .header("Accept", accept)
            .send()
    };
    let with_secret = ours.strip_prefix(&relay.host()).unwrap().to_string();
    let ok = get(format!("/v2{with_secret}/manifests/1.0")).await?;
    assert_eq!(ok.status(), 200, "the run's own name is served");
    let id = relay.source_id(&source);
    for path in [
        format!("/v2/s{id}/{}/manifests/1.0", pushed.repo),
        format!("/v2/k0000/s{id}/{}/manifests/1.0", pushed.repo),
        format!("/v2/{}/manifests/1.0", pushed.repo),
    ] {
        let resp = get(path.clone()).await?;
        assert_eq!(resp.status(), 401, "{path}");
    }
    let bad = with_secret.replace(&pushed.repo, "private/../x");
    let resp = get(format!("/v2{bad}/manifests/1.0")).await?;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_ne!(resp.status(), 200);
    Ok(())
}

/// Every file under `dir` (report, logs), as text.
fn all_files(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

/// Acceptance 1: one base on a private registry by its own name, one Docker Hub base through
/// an authenticated mirror with a path, 20% EOF on manifests: `build-all` succeeds through
/// the relay, both proxies issue credentialed tokens, and no password appears anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_build_all_private_base_and_authenticated_mirror_with_path() -> anyhow::Result<()> {
    use testbed::proxy::{FaultConfig, FaultType, KindFaults, RequestKind};
    let eof = KindFaults::default().with_rate(FaultType::Eof, 0.2);
    let faults = FaultConfig::default()
        .with_kind(RequestKind::ManifestHead, eof.clone())
        .with_kind(RequestKind::ManifestGet, eof);
    let (pw_private, pw_mirror) = (password(), password());
    let private = TestBed::start(|o| {
        o.with_credentials(ProxyCredentials::new(USER, &pw_private).private(&["private/"]))
            .with_faults(faults.clone())
            .with_seed(7)
    })
    .await?;
    let mirror = TestBed::start(|o| {
        o.with_credentials(ProxyCredentials::new(USER, &pw_mirror))
            .with_faults(faults.clone())
            .with_seed(11)
    })
    .await?;
    let name = unique_name("issue12-build");
    let tag = unique_name("t");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone(), tag.clone()]);
    let base = push_private(&private, &name).await?;
    push_image(
        &mirror.registry.host(),
        &ImageSpec::new(format!("hub/library/{name}-hub"), "1.0").with_layer(64 * 1024),
    )
    .await?;
    let config = tempfile::tempdir()?;
    assert!(
        docker_login(config.path(), &private.proxy.host(), &pw_private)
            .status
            .success()
    );
    assert!(
        docker_login(config.path(), &mirror.proxy.host(), &pw_mirror)
            .status
            .success()
    );
    private.proxy.reset_stats();
    mirror.proxy.reset_stats();

    let dir = tempfile::tempdir()?;
    for (service, from) in [
        ("private", base.reference_via(&private.proxy.host())),
        ("hub", format!("docker.io/library/{name}-hub:1.0")),
    ] {
        std::fs::create_dir_all(dir.path().join(service))?;
        std::fs::write(
            dir.path().join(service).join("Dockerfile"),
            format!("FROM {from}\nLABEL issue12=yes\n"),
        )?;
    }
    let summary = dir.path().join("summary.md");
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(BIN)
            .args(["build-all", "--output", "json", "--tag", &tag])
            .args(["--max-retries", "8", "--mirror-first", "--mirror"])
            .arg(format!("docker.io={}/hub", mirror.proxy.host()))
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("DOCKER_CONFIG", config.path())
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env_remove("DOCKER_HOST")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let (p, m) = (private.proxy.stats(), mirror.proxy.stats());
    assert!(p.tokens_credentialed >= 1, "{p:?}");
    assert!(m.tokens_credentialed >= 1, "{m:?}");
    let eofs: u64 = [&p, &m]
        .iter()
        .flat_map(|s| {
            [
                s.kind(RequestKind::ManifestHead),
                s.kind(RequestKind::ManifestGet),
            ]
        })
        .map(|k| k.faults.get(&FaultType::Eof).copied().unwrap_or(0))
        .sum();
    assert!(
        eofs >= 1,
        "seeds 7/11 inject EOFs on manifests: {p:?} {m:?}"
    );
    let everything = format!("{}{}{}", run.stdout, run.stderr, all_files(dir.path()));
    for pw in [&pw_private, &pw_mirror] {
        assert!(!everything.contains(pw.as_str()), "a password leaked");
    }
    Ok(())
}

/// Acceptance 7: `doctor` says per registry whether its token step used credentials and from
/// where ("with credentials from config.json auths", "helper NAME", "anonymous"), and a wrong
/// password is `auth-rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_doctor_says_where_credentials_came_from() -> anyhow::Result<()> {
    use base64::Engine as _;
    let password = password();
    let login = private_bed(&password).await?;
    let helper = private_bed(&password).await?;
    let anonymous = TestBed::start(|o| o.with_auth(true)).await?;
    let wrong = private_bed(&password).await?;
    let name = unique_name("issue12-doctor");
    for bed in [&login, &helper, &wrong] {
        push_private(bed, &name).await?;
    }
    push_image(
        &anonymous.registry.host(),
        &ImageSpec::new(format!("library/{name}"), "1.0"),
    )
    .await?;
    let config = tempfile::tempdir()?;
    assert!(
        docker_login(config.path(), &login.proxy.host(), &password)
            .status
            .success()
    );
    // Add the helper and the wrong password next to what `docker login` wrote.
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(config.path().join("config.json"))?)?;
    json["credHelpers"][helper.proxy.host()] = "testbed".into();
    json["auths"][wrong.proxy.host()]["auth"] = base64::engine::general_purpose::STANDARD
        .encode(format!("{USER}:nope"))
        .into();
    std::fs::write(config.path().join("config.json"), json.to_string())?;
    let helpers = helper_dir(&helper.proxy.host(), &password);

    let empty = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new(BIN);
    command.arg("doctor").args(["--output", "json"]);
    for bed in [&login, &helper, &wrong] {
        command
            .arg("--registry")
            .arg(format!("{}/private/{name}:1.0", bed.proxy.host()));
    }
    command
        .arg("--registry")
        .arg(format!("{}/library/{name}:1.0", anonymous.proxy.host()));
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![helpers.path().to_path_buf()];
    paths.extend(std::env::split_paths(&old));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        command
            .current_dir(empty.path())
            .env("NO_COLOR", "1")
            .env("DOCKER_CONFIG", config.path())
            .env("PATH", std::env::join_paths(paths)?)
            .env_remove("DOCKER_HOST")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(&password), "the password leaked");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let token = |host: &str| -> Value {
        let registry = report["registries"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["registry"] == host))
            .unwrap_or_else(|| panic!("no {host} in {report:#}"));
        registry["sources"][0]["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["step"] == "token"))
            .cloned()
            .unwrap_or_else(|| panic!("no token step for {host}: {registry:#}"))
    };
    let detail = |host: &str| {
        token(host)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        detail(&login.proxy.host())
            .contains("with credentials from config.json auths (user alice)"),
        "{}",
        detail(&login.proxy.host())
    );
    assert!(
        detail(&helper.proxy.host()).contains("with credentials from helper testbed"),
        "{}",
        detail(&helper.proxy.host())
    );
    assert!(
        detail(&anonymous.proxy.host()).contains("anonymous"),
        "{}",
        detail(&anonymous.proxy.host())
    );
    let rejected = token(&wrong.proxy.host());
    assert_eq!(rejected["class"], "auth-rejected", "{rejected:#}");
    assert!(
        rejected["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected the credentials"),
        "{rejected:#}"
    );
    Ok(())
}

/// Forwards TCP connections on `ip:0` to the daemon's Unix socket: a daemon reached over
/// `tcp://` on a non-loopback address, which cannot be assumed to reach our 127.0.0.1 relay.
async fn tcp_daemon(ip: &str) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    Ok((format!("tcp://{addr}"), task))
}

/// The first non-loopback IPv4 address of this machine.
fn outside_ip() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
}

/// Acceptance 5: a daemon that cannot reach the relay (DOCKER_HOST=tcp:// on another
/// address) is detected before pulling; pulls go direct with the credentials
/// (X-Registry-Auth), the report says `direct`, and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_remote_daemon_pulls_direct_with_credentials() -> anyhow::Result<()> {
    let Some(ip) = outside_ip() else {
        panic!("no non-loopback address on this machine (hostname -I)");
    };
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-direct");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone()]);
    let pushed = push_private(&bed, &name).await?;
    let reference = pushed.reference_via(&host);
    let config = tempfile::tempdir()?;
    assert!(
        docker_login(config.path(), &host, &password)
            .status
            .success()
    );
    let (docker_host, forwarder) = tcp_daemon(&ip).await?;
    bed.proxy.reset_stats();

    let dir = project(std::slice::from_ref(&reference));
    let started = Instant::now();
    let output = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(BIN)
            .args(["prefetch", "--output", "json"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("DOCKER_CONFIG", config.path())
            .env("DOCKER_HOST", &docker_host)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    forwarder.abort();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = run.report();
    assert_eq!(report["via"], "direct", "{report:#}");
    assert_eq!(image(&report, &reference)["status"], "pulled", "{report:#}");
    assert!(bed.proxy.stats().tokens_credentialed >= 1);
    assert!(!run.stdout.contains(&password) && !run.stderr.contains(&password));
    Ok(())
}

/// In Actions, every credential read is masked (`::add-mask::`) before anything else is
/// printed, and the summary never shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_credentials_are_masked_in_actions() -> anyhow::Result<()> {
    let password = password();
    let bed = private_bed(&password).await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-mask");
    let tag = unique_name("t");
    let _cleanup = RemoveImagesOnDrop(vec![name.clone(), tag.clone()]);
    let pushed = push_private(&bed, &name).await?;
    let config = tempfile::tempdir()?;
    assert!(
        docker_login(config.path(), &host, &password)
            .status
            .success()
    );
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("svc"))?;
    std::fs::write(
        dir.path().join("svc/Dockerfile"),
        format!("FROM {}\nLABEL issue12=yes\n", pushed.reference_via(&host)),
    )?;
    let summary = dir.path().join("summary.md");
    let outputs = dir.path().join("outputs.txt");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN)
            .args(["build-all", "--tag", &tag])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("DOCKER_CONFIG", config.path())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_OUTPUT", &outputs)
            .env_remove("GITHUB_TOKEN")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mask = format!("::add-mask::{password}");
    let first_mention = stdout.find(&password).expect("the mask names the secret");
    assert_eq!(
        stdout.find(&mask),
        Some(first_mention.saturating_sub("::add-mask::".len())),
        "the first mention of the password is its mask:\n{stdout}"
    );
    assert_eq!(stdout.matches(&password).count(), 1, "{stdout}");
    let files = all_files(dir.path());
    assert!(
        !files.contains(&password),
        "the password is in a written file"
    );
    Ok(())
}

/// The OAuth2 grants: a realm that takes only `POST` gets the password grant; an
/// `identitytoken` (as `docker login` stores for such registries) the refresh-token grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_oauth2_password_and_refresh_token_grants() -> anyhow::Result<()> {
    use ai_infra_build::endpoint::Endpoint;
    use ai_infra_build::registry::{RegistryClient, Timeouts};
    use base64::Engine as _;
    let password = password();
    let bed =
        TestBed::start(|o| o.with_credentials(ProxyCredentials::new(USER, &password).oauth_only()))
            .await?;
    let host = bed.proxy.host();
    let name = unique_name("issue12-oauth");
    let pushed = push_private(&bed, &name).await?;
    let path = format!("/v2/{}/manifests/{}", pushed.repo, pushed.tag);
    let accept = reqwest::header::HeaderValue::from_static(
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    let get = |config: &Path| {
        let creds = Credentials::load(config).unwrap();
        let client = RegistryClient::new(Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(10),
        })
        .unwrap()
        .with_credentials(std::sync::Arc::new(creds));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, accept.clone());
        let path = path.clone();
        let host = host.clone();
        async move {
            client
                .send(&Endpoint::new(&host), reqwest::Method::GET, &path, headers)
                .await
                .map(|r| r.status().as_u16())
        }
    };

    let with_password = tempfile::tempdir()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    write_config(
        with_password.path(),
        &format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    );
    assert_eq!(
        get(with_password.path())
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?,
        200
    );
    assert_eq!(bed.proxy.stats().tokens_credentialed, 1);

    // A refresh token, as the password grant hands it out.
    let grant: Value = reqwest::Client::new()
        .post(format!("http://{host}/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username={USER}&password={password}&service=testbed"
        ))
        .send()
        .await?
        .json()
        .await?;
    let refresh = grant["refresh_token"].as_str().expect("a refresh token");
    let with_token = tempfile::tempdir()?;
    write_config(
        with_token.path(),
        &format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}","identitytoken":"{refresh}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:"))
        ),
    );
    bed.proxy.reset_stats();
    assert_eq!(
        get(with_token.path())
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?,
        200
    );
    assert_eq!(bed.proxy.stats().tokens_credentialed, 1);

    let wrong = tempfile::tempdir()?;
    write_config(
        wrong.path(),
        &format!(r#"{{"auths":{{"{host}":{{"identitytoken":"expired"}}}}}}"#),
    );
    let err = get(wrong.path())
        .await
        .expect_err("an expired token is refused");
    assert_eq!(err.class.label(), "auth-rejected", "{err:?}");
    Ok(())
}
