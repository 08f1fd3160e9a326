//! Issue #6: the action's install step (dist/install.sh) against a fake release of the real
//! built binary, served on 127.0.0.1: a good checksum installs; a tampered archive, a tampered
//! tool cache or a version without committed checksums stops it (fail closed); a server that
//! drops the first two connections still installs; a runner without any network installs the
//! binary shipped in dist/. Each test runs the script in its own copy of the action.

mod install_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use install_support::{FileServer, HttpsServer, arch, package, release, target};

/// A copy of the action (dist/install.sh, the release's checksums) with its own tool cache,
/// temp dir and runner files.
struct Action {
    root: tempfile::TempDir,
}

impl Action {
    /// The action as the release pull request leaves it: dist/VERSION and the checksums.
    fn released() -> Action {
        let action = Action::bare();
        let rel = release();
        std::fs::write(action.dist().join("VERSION"), format!("{}\n", rel.version)).unwrap();
        action.write_checksums(&rel.version, &rel.sums());
        action
    }

    /// Only the script: no VERSION, no checksums.
    fn bare() -> Action {
        let root = tempfile::tempdir().unwrap();
        let dist = root.path().join("action/dist");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::copy(
            install_support::repo_root().join("dist/install.sh"),
            dist.join("install.sh"),
        )
        .unwrap();
        for dir in ["tool-cache", "runner-temp"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Action { root }
    }

    fn dist(&self) -> PathBuf {
        self.root.path().join("action/dist")
    }

    fn tool_cache(&self) -> PathBuf {
        self.root.path().join("tool-cache")
    }

    fn cached_binary(&self, version: &str) -> PathBuf {
        self.tool_cache().join(format!(
            "ai-infra-build/{version}/{}/ai-infra-build",
            arch()
        ))
    }

    fn write_checksums(&self, version: &str, text: &str) {
        std::fs::create_dir_all(self.dist().join("checksums")).unwrap();
        std::fs::write(
            self.dist().join(format!("checksums/{version}.sha256")),
            text,
        )
        .unwrap();
    }

    /// The script as the action runs it, with a clean environment plus `env`.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("120")
            .arg("bash")
            .arg(self.dist().join("install.sh"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("RUNNER_TOOL_CACHE", self.tool_cache())
            .env("RUNNER_TEMP", self.root.path().join("runner-temp"))
            .env("GITHUB_OUTPUT", self.root.path().join("github-output"))
            .env("GITHUB_PATH", self.root.path().join("github-path"))
            // Fast retries: the test server answers at once.
            .env("AIB_RETRY_DELAY", "1")
            .env("AIB_CONNECT_TIMEOUT", "5")
            .env("AIB_MAX_TIME", "60");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        self.command(env).output().expect("bash runs install.sh")
    }

    /// The step outputs the script wrote, as `name=value` lines.
    fn outputs(&self) -> String {
        std::fs::read_to_string(self.root.path().join("github-output")).unwrap_or_default()
    }

    fn path_file(&self) -> String {
        std::fs::read_to_string(self.root.path().join("github-path")).unwrap_or_default()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The installed binary runs and reports the release's version.
fn assert_runs(bin: &Path) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("the installed binary runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ai-infra-build {}", release().version)
    );
}

#[test]
fn a_good_release_installs_from_binary_url_into_the_tool_cache_and_is_reused() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);
    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert!(out.status.success(), "{}", text(&out));

    let bin = action.cached_binary(&rel.version);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        bin.display().to_string()
    );
    assert_runs(&bin);
    assert_eq!(
        server.requests(),
        vec![format!("GET /{}", rel.asset_name())]
    );
    let outputs = action.outputs();
    for line in [
        format!("path={}", bin.display()),
        format!("version={}", rel.version),
        format!("target={}", target()),
        "source=download".to_string(),
    ] {
        assert!(
            outputs.lines().any(|l| l == line),
            "no {line:?} in the outputs:\n{outputs}"
        );
    }
    assert_eq!(
        action.path_file().trim(),
        bin.parent().unwrap().display().to_string()
    );
    assert!(stderr(&out).contains("from dist/VERSION"), "{}", text(&out));

    // The next job on the same runner takes it from the tool cache, without a request.
    let again = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        stderr(&again).contains("from tool-cache"),
        "{}",
        text(&again)
    );
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_tampered_archive_fails_closed_and_installs_nothing() {
    let rel = release();
    // A well-formed release archive whose binary differs by one byte.
    let evil = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&rel.binary).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let evil_bin = evil.path().join("ai-infra-build");
    std::fs::write(&evil_bin, bytes).unwrap();
    std::fs::set_permissions(
        &evil_bin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let evil_assets = evil.path().join("assets");
    package(&evil_bin, &rel.version, &evil_assets);
    let server = FileServer::start(&evil_assets, 0);

    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&rel.asset_name()), "{err}");
    assert!(
        !action.cached_binary(&rel.version).exists(),
        "a tampered binary was installed"
    );
    assert!(
        action.outputs().is_empty(),
        "outputs were written: {}",
        action.outputs()
    );
    assert!(
        action.path_file().is_empty(),
        "PATH was changed: {}",
        action.path_file()
    );
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_truncated_download_fails_closed() {
    let rel = release();
    let short = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(rel.asset()).unwrap();
    std::fs::write(
        short.path().join(rel.asset_name()),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let server = FileServer::start(short.path(), 0);
    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("checksum mismatch"), "{}", text(&out));
    assert!(!action.cached_binary(&rel.version).exists());
}

#[test]
fn a_server_dropping_the_first_two_connections_still_installs() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 2);
    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert!(out.status.success(), "{}", text(&out));
    assert_runs(&action.cached_binary(&rel.version));
    let asset = format!("GET /{}", rel.asset_name());
    assert_eq!(
        server.requests(),
        vec![
            format!("{asset} (dropped)"),
            format!("{asset} (dropped)"),
            asset.clone()
        ],
        "curl retried after the dropped connections"
    );
    assert!(
        action.outputs().contains("source=download"),
        "{}",
        action.outputs()
    );
}

#[test]
fn an_offline_runner_installs_the_binary_shipped_in_dist() {
    let rel = release();
    let action = Action::released();
    std::fs::copy(rel.asset(), action.dist().join(rel.asset_name())).unwrap();
    // A server that must never be asked: the shipped binary comes first.
    let server = FileServer::start(&rel.assets(), 0);

    // No network at all: a network namespace of its own, with only a loopback that is down.
    let offline = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        offline,
        "this test needs `unshare -n` (root, util-linux): it proves the install uses no network"
    );
    let out = without_network(action.command(&[("AIB_BINARY_URL", &server.url())]))
        .output()
        .expect("unshare runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        action.outputs().lines().any(|l| l == "source=dist"),
        "{}",
        action.outputs()
    );
    assert_runs(&action.cached_binary(&rel.version));
    assert_eq!(server.connections(), 0);

    // The same without the shipped archive: nothing to install from, and it says what to do.
    std::fs::remove_file(action.dist().join(rel.asset_name())).unwrap();
    std::fs::remove_dir_all(action.tool_cache().join("ai-infra-build")).unwrap();
    let out = without_network(action.command(&[("AIB_BINARY_URL", &server.url())]))
        .output()
        .expect("unshare runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot download"), "{err}");
    assert!(err.contains("binary-url") && err.contains("dist/"), "{err}");
    assert_eq!(server.connections(), 0);
}

/// `cmd` inside a new network namespace (`unshare -n`), with the same environment.
fn without_network(cmd: Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .arg("-n")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    wrapped
}

#[test]
fn a_tampered_shipped_binary_fails_closed() {
    let rel = release();
    let action = Action::released();
    let mut bytes = std::fs::read(rel.asset()).unwrap();
    bytes.extend_from_slice(b"appended");
    std::fs::write(action.dist().join(rel.asset_name()), bytes).unwrap();
    let out = action.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("checksum mismatch"), "{}", text(&out));
    assert!(!action.cached_binary(&rel.version).exists());
}

#[test]
fn a_tampered_tool_cache_binary_fails_closed() {
    let rel = release();
    let action = Action::released();
    let cached = action.cached_binary(&rel.version);
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, b"#!/bin/sh\necho pwned\n").unwrap();
    let server = FileServer::start(&rel.assets(), 0);
    let out = action.run(&[("AIB_BINARY_URL", &server.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("checksum mismatch") && err.contains("tool cache"),
        "{err}"
    );
    assert_eq!(
        server.connections(),
        0,
        "a poisoned tool cache is an error, not a reason to download"
    );
}

#[test]
fn a_version_without_committed_checksums_fails_before_any_download() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);
    // A checkout that is no release (a branch: no dist/VERSION) asked for a version whose
    // checksums it does not have; so is a release commit whose checksums file was lost.
    let action = Action::bare();
    action.write_checksums(&rel.version, &rel.sums());
    let out = action.run(&[
        ("AIB_BINARY_URL", &server.url()),
        ("AIB_ACTION_REF", "main"),
        ("AIB_VERSION", "v9.9.9"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no committed checksums for version 9.9.9"),
        "{err}"
    );
    let lost = Action::released();
    std::fs::remove_file(
        lost.dist()
            .join(format!("checksums/{}.sha256", rel.version)),
    )
    .unwrap();
    let out = lost.run(&[("AIB_BINARY_URL", &server.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!(
            "no committed checksums for version {}",
            rel.version
        )),
        "{}",
        text(&out)
    );
    assert!(
        err.contains(&format!("can verify: {}", rel.version)),
        "{err}"
    );
    assert_eq!(server.connections(), 0);

    // A checksum file without this target's lines is no better.
    let other = Action::bare();
    other.write_checksums(
        &rel.version,
        "0000000000000000000000000000000000000000000000000000000000000000  something-else.tar.gz\n",
    );
    let out = other.run(&[
        ("AIB_BINARY_URL", &server.url()),
        ("AIB_VERSION", &rel.version),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("refusing to install an unverified binary"),
        "{}",
        text(&out)
    );
    assert_eq!(server.connections(), 0);
}

#[test]
fn the_version_is_dist_version_and_must_agree_with_the_ref_and_the_input() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);
    let url = server.url();
    let v = rel.version.as_str();
    let major = format!("v{}", v.split('.').next().unwrap());
    let minor = format!("v{}", v.rsplit_once('.').unwrap().0);
    let exact = format!("v{v}");
    let sha = "0123456789abcdef0123456789abcdef01234567";

    // A release commit (dist/VERSION): at its exact tag, its major and minor tags, its SHA,
    // a branch, or with no ref (`uses: ./`), it installs dist/VERSION; the input may repeat it.
    let action = Action::released();
    let accepted: [(Vec<(&str, &str)>, String); 7] = [
        (
            vec![("AIB_ACTION_REF", &exact)],
            format!("from dist/VERSION at the action's ref {exact}"),
        ),
        (
            vec![("GITHUB_ACTION_REF", &major)],
            format!("from dist/VERSION at the action's ref {major}"),
        ),
        (
            vec![("AIB_ACTION_REF", &minor)],
            format!("from dist/VERSION at the action's ref {minor}"),
        ),
        (
            vec![("AIB_ACTION_REF", sha)],
            format!("from dist/VERSION at the action's ref {sha}"),
        ),
        (
            vec![("AIB_ACTION_REF", "main")],
            "from dist/VERSION at the action's ref main".to_string(),
        ),
        (vec![], "from dist/VERSION)".to_string()),
        (
            vec![("AIB_ACTION_REF", &exact), ("AIB_VERSION", &exact)],
            "from the version input".to_string(),
        ),
    ];
    for (mut env, from) in accepted {
        env.push(("AIB_BINARY_URL", &url));
        let out = action.run(&env);
        assert!(out.status.success(), "{env:?}: {}", text(&out));
        assert!(stderr(&out).contains(&from), "{env:?}: {}", text(&out));
        assert_runs(&action.cached_binary(v));
    }
    assert_eq!(
        server.connections(),
        1,
        "the later ones came from the tool cache"
    );

    // Mismatches: the ref names another version or release line, or the input another version.
    let refused: [(Vec<(&str, &str)>, &str); 5] = [
        (
            vec![("AIB_ACTION_REF", "v9.9.9")],
            "the action's ref v9.9.9 names version 9.9.9, but this checkout of the action installs",
        ),
        (
            vec![("AIB_ACTION_REF", "v9")],
            "the action's ref v9 names versions 9.*, but this checkout of the action installs",
        ),
        (
            vec![("AIB_ACTION_REF", "v9.1")],
            "the action's ref v9.1 names versions 9.1.*",
        ),
        (
            vec![("AIB_VERSION", "9.9.9")],
            "the version input 9.9.9 differs from the version this action's files were released with",
        ),
        (
            vec![("AIB_VERSION", "9.9.9"), ("AIB_ACTION_REF", "v9.9.9")],
            "the version input 9.9.9 differs",
        ),
    ];
    for (mut env, message) in refused {
        let action = Action::released();
        env.push(("AIB_BINARY_URL", &url));
        let out = action.run(&env);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains(message), "{env:?}: {err}");
        assert!(err.contains("help: "), "{env:?}: {err}");
        assert!(
            !action.cached_binary(v).exists() && action.outputs().is_empty(),
            "{env:?}"
        );
    }
    assert_eq!(
        server.connections(),
        1,
        "a refused install downloads nothing"
    );

    // A checkout without dist/VERSION (not a release commit): a release ref or a SHA is
    // refused, clearly; a branch or `uses: ./` needs the version input.
    let action = Action::bare();
    action.write_checksums(v, &rel.sums());
    let refused: [(Vec<(&str, &str)>, String); 7] = [
        (
            vec![("AIB_ACTION_REF", &exact)],
            format!("the action's ref {exact} names a release, but its commit has no dist/VERSION"),
        ),
        (
            vec![("GITHUB_ACTION_REF", "v1")],
            "the action's ref v1 names a release, but its commit has no dist/VERSION".to_string(),
        ),
        (
            vec![("AIB_ACTION_REF", sha)],
            format!("the action's ref {sha} is a commit that names no release"),
        ),
        (
            vec![("AIB_ACTION_REF", "main")],
            "names no released version (dist/VERSION is missing) and the version input is empty"
                .to_string(),
        ),
        (
            vec![],
            "names no released version (dist/VERSION is missing)".to_string(),
        ),
        (
            vec![("AIB_ACTION_REF", "main"), ("AIB_VERSION", "latest")],
            "version input 'latest' is not a version like 1.2.3".to_string(),
        ),
        (
            vec![("AIB_ACTION_REF", "v9.9.9"), ("AIB_VERSION", v)],
            format!(
                "the action's ref v9.9.9 names version 9.9.9, but this checkout of the action installs {v} (the version input)"
            ),
        ),
    ];
    for (mut env, message) in refused {
        env.push(("AIB_BINARY_URL", &url));
        let out = action.run(&env);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", text(&out));
        assert!(stderr(&out).contains(&message), "{env:?}: {}", text(&out));
    }
    let out = action.run(&[
        ("AIB_BINARY_URL", &url),
        ("AIB_ACTION_REF", "main"),
        ("AIB_VERSION", v),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("from the version input"),
        "{}",
        text(&out)
    );
    assert_eq!(server.connections(), 2);
}

#[test]
fn a_binary_that_is_not_the_version_of_its_checksums_is_refused() {
    // The real binary (it says its own version), released and committed as 9.8.7: the
    // checksums match, the version does not.
    let rel = release();
    let assets = tempfile::tempdir().unwrap();
    package(&rel.binary, "9.8.7", assets.path());
    let server = FileServer::start(assets.path(), 0);
    let action = Action::bare();
    std::fs::write(action.dist().join("VERSION"), "9.8.7\n").unwrap();
    let sums = std::fs::read_to_string(assets.path().join("SHA256SUMS")).unwrap();
    action.write_checksums("9.8.7", &sums);
    let out = action.run(&[
        ("AIB_BINARY_URL", &server.url()),
        ("AIB_ACTION_REF", "v9.8.7"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the binary that matched the committed checksums of 9.8.7 says it is 'ai-infra-build {}'",
            rel.version
        )),
        "{err}"
    );
    assert!(!action.cached_binary("9.8.7").exists(), "it was installed");
    assert!(action.outputs().is_empty() && action.path_file().is_empty());
}

#[test]
fn binary_url_may_be_a_template_and_the_default_is_the_github_release() {
    let rel = release();
    // A mirror laid out like GitHub's release downloads.
    let mirror = tempfile::tempdir().unwrap();
    let tag = format!("v{}", rel.version);
    let under = mirror
        .path()
        .join(format!("acme/ai-infra-build/releases/download/{tag}"));
    std::fs::create_dir_all(&under).unwrap();
    std::fs::copy(rel.asset(), under.join(rel.asset_name())).unwrap();
    let server = FileServer::start(mirror.path(), 0);

    let action = Action::released();
    let template = format!(
        "{}/acme/ai-infra-build/releases/download/{{tag}}/{{asset}}",
        server.url()
    );
    let out = action.run(&[("AIB_BINARY_URL", &template)]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = format!(
        "GET /acme/ai-infra-build/releases/download/{tag}/{}",
        rel.asset_name()
    );
    assert_eq!(server.requests(), vec![expected.clone()]);

    // Without binary-url: GITHUB_SERVER_URL/REPOSITORY/releases/download/TAG/ASSET, over
    // https (a server on 127.0.0.1 with a certificate of its own, trusted through
    // CURL_CA_BUNDLE).
    let https = HttpsServer::start(mirror.path());
    let action = Action::released();
    let ca = https.ca().display().to_string();
    let out = action.run(&[
        ("GITHUB_SERVER_URL", &https.url()),
        ("AIB_ACTION_REPOSITORY", "acme/ai-infra-build"),
        ("CURL_CA_BUNDLE", &ca),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(https.requests(), vec![expected]);
    assert!(
        action.outputs().contains("source=download"),
        "{}",
        action.outputs()
    );
}

#[test]
fn downloads_are_https_only_and_http_only_for_an_explicit_loopback_binary_url() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);
    let port = server.url().rsplit(':').next().unwrap().to_string();

    // Plain http is refused before any connection: for the GitHub release (GITHUB_SERVER_URL),
    // for a binary-url that is not on the loopback interface, and other schemes altogether.
    let refused = [
        vec![
            ("GITHUB_SERVER_URL", server.url()),
            ("AIB_ACTION_REPOSITORY", "acme/ai-infra-build".to_string()),
        ],
        vec![(
            "AIB_BINARY_URL",
            "http://mirror.example.com/ai-infra-build/".to_string(),
        )],
        vec![(
            "AIB_BINARY_URL",
            "http://robot:s3cret-pass@10.0.0.1/assets/".to_string(),
        )],
        vec![(
            "AIB_BINARY_URL",
            format!("file://{}/", rel.assets().display()),
        )],
        vec![("AIB_BINARY_URL", "ftp://127.0.0.1/assets/".to_string())],
        vec![("AIB_BINARY_URL", format!("127.0.0.1:{port}/"))],
    ];
    for env in refused {
        let action = Action::released();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = action.run(&env);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", text(&out));
        let all = text(&out);
        assert!(all.contains("refusing to download"), "{env:?}: {all}");
        assert!(all.contains("only https"), "{env:?}: {all}");
        assert!(!all.contains("s3cret-pass"), "{all}");
        assert!(!action.cached_binary(&rel.version).exists());
    }
    assert_eq!(server.connections(), 0);

    // An explicit binary-url on the loopback interface may be http: 127.0.0.1 and localhost.
    for host in ["127.0.0.1", "localhost"] {
        let action = Action::released();
        let url = format!("http://{host}:{port}/");
        let out = action.run(&[("AIB_BINARY_URL", &url)]);
        assert!(out.status.success(), "{url}: {}", text(&out));
    }
    assert_eq!(server.connections(), 2);

    // A redirect is followed to https only, never to plain http (not even on loopback).
    let hop = tempfile::tempdir().unwrap();
    std::fs::write(
        hop.path().join(format!("{}.redirect", rel.asset_name())),
        format!("{}/{}", server.url(), rel.asset_name()),
    )
    .unwrap();
    let hop_server = FileServer::start(hop.path(), 0);
    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &hop_server.url()), ("AIB_RETRIES", "0")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("cannot download"), "{}", text(&out));
    assert_eq!(hop_server.connections(), 1);
    assert_eq!(server.connections(), 2, "the redirect to http was followed");
}

#[test]
fn credentials_in_binary_url_are_not_logged() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);
    let action = Action::released();
    let url = server.url().replace("http://", "http://robot:s3cret-pass@");
    let out = action.run(&[("AIB_BINARY_URL", &url)]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains("s3cret-pass"), "{all}");
    assert!(all.contains("http://***@127.0.0.1"), "{all}");
}

#[test]
fn other_platforms_get_a_clear_error() {
    let action = Action::released();
    let out = action.run(&[("AIB_UNAME_S", "Darwin")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("unsupported operating system 'Darwin'"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("Linux runner"), "{}", text(&out));
    let out = action.run(&[("AIB_UNAME_M", "riscv64")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("unsupported machine 'riscv64'"),
        "{}",
        text(&out)
    );
}
