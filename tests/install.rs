//! Issue #6: the action's install step (dist/install.sh) against a fake release of the real
//! built binary, served on 127.0.0.1: a good checksum installs; a tampered archive, a tampered
//! tool cache or a version without committed checksums stops it (fail closed); a server that
//! drops the first two connections still installs; a runner without any network installs the
//! binary shipped in dist/. Each test runs the script in its own copy of the action.

mod install_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use install_support::{FileServer, arch, package, release, target};

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
    let action = Action::released();
    let out = action.run(&[("AIB_BINARY_URL", &server.url()), ("AIB_VERSION", "v9.9.9")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no committed checksums for version 9.9.9"),
        "{err}"
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
fn the_version_comes_from_the_input_then_the_action_ref_then_dist_version() {
    let rel = release();
    let server = FileServer::start(&rel.assets(), 0);

    // An exact ref, and no dist/VERSION.
    let action = Action::bare();
    action.write_checksums(&rel.version, &rel.sums());
    let tag = format!("v{}", rel.version);
    let out = action.run(&[("AIB_BINARY_URL", &server.url()), ("AIB_ACTION_REF", &tag)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("from the action's ref {tag}")),
        "{}",
        text(&out)
    );

    // A major tag or a branch names no version, and without dist/VERSION there is none.
    let action = Action::bare();
    action.write_checksums(&rel.version, &rel.sums());
    let out = action.run(&[
        ("AIB_BINARY_URL", &server.url()),
        ("GITHUB_ACTION_REF", "v1"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("dist/VERSION is missing"),
        "{}",
        text(&out)
    );

    // The input wins over the ref; a malformed input is refused.
    let out = action.run(&[
        ("AIB_BINARY_URL", &server.url()),
        ("AIB_ACTION_REF", "main"),
        ("AIB_VERSION", &rel.version),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("from the version input"),
        "{}",
        text(&out)
    );
    let out = action.run(&[("AIB_VERSION", "latest")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is not a version like 1.2.3"),
        "{}",
        text(&out)
    );
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

    // Without binary-url: GITHUB_SERVER_URL/REPOSITORY/releases/download/TAG/ASSET.
    let action = Action::released();
    let out = action.run(&[
        ("GITHUB_SERVER_URL", &server.url()),
        ("AIB_ACTION_REPOSITORY", "acme/ai-infra-build"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = format!(
        "GET /acme/ai-infra-build/releases/download/{tag}/{}",
        rel.asset_name()
    );
    assert_eq!(server.requests(), vec![expected.clone(), expected]);
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
