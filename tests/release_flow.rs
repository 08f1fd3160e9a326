//! Issue #18: the release flow of docs/releasing.md end to end, offline, on local git
//! repositories: an "upstream" bare repository (GitHub), a maintainer's clone in which the
//! release workflow's git steps run (scripts/release-flow, the same script the workflow runs),
//! and the release assets built and served on 127.0.0.1 by scripts/local-release (the GitHub
//! release). A user's runner is simulated the way GitHub runs `uses: OWNER/REPO@REF`: the
//! tarball of REF (`git archive`) with GITHUB_ACTION_REF=REF, and the action's install step.
//!
//! The binaries are stand-ins (a script that answers `--version` for 1.0.0 and 1.1.0): the
//! flow is about which binary a ref installs, and two versions are needed for `v1` to move.
//! The real binary's install is tested by tests/install.rs and tests/action_e2e.rs.
//!
//! Covered: the action at `vX.Y.Z`, at that tag's SHA and at `v1` installs its own release;
//! `v1` does not move before the release is checked (CI) and never moves back; a commit that
//! is not a release, a tampered asset, a tag that names another release's commit, a major tag
//! on the wrong release line and a `version` input that differs are refused with clear
//! errors; the release script refuses to tag a version twice, a release commit that changes
//! anything but dist/, and incomplete checksums.

mod install_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use install_support::{repo_root, target};

/// The files of the action the flow needs (what a release commit's tree holds, less the Rust
/// sources, which play no part in it).
const FILES: [&str; 6] = [
    "action.yml",
    "dist/install.sh",
    "dist/README.md",
    "scripts/release-flow",
    "scripts/package-release",
    "scripts/local-release",
];

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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git environment of its own: no user or system configuration, a fixed identity.
fn isolated(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "release test")
        .env("GIT_AUTHOR_EMAIL", "release@127.0.0.1")
        .env("GIT_COMMITTER_NAME", "release test")
        .env("GIT_COMMITTER_EMAIL", "release@127.0.0.1")
}

/// `git ARGS` in `dir`, which must succeed; its stdout, trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = isolated(Command::new("git").current_dir(dir).args(args))
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        text(&out)
    );
    stdout(&out)
}

/// A release served by scripts/local-release; stopped (its server ended) when dropped.
struct Served {
    state: PathBuf,
    url: String,
    pid: String,
}

impl Served {
    fn assets(&self) -> PathBuf {
        self.state.join("assets")
    }

    fn sums(&self) -> PathBuf {
        self.assets().join("SHA256SUMS")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Should the state directory be gone already, the server is ended by its own pid.
        if !self.state.join("pid").exists() && !self.pid.is_empty() {
            let _ = Command::new("kill").args(["-TERM", &self.pid]).output();
        }
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/local-release"))
            .arg("stop")
            .arg("--state")
            .arg(&self.state)
            .output();
    }
}

/// What one use of the action on a runner did.
struct Use {
    out: Output,
    outputs: String,
}

impl Use {
    fn ok(&self) -> bool {
        self.out.status.success()
    }

    /// The installed binary's own `--version`.
    fn installed(&self) -> String {
        assert!(self.ok(), "{}", text(&self.out));
        let bin = stdout(&self.out);
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .expect("the installed binary runs");
        stdout(&out)
    }
}

struct Flow {
    root: tempfile::TempDir,
}

impl Flow {
    /// An upstream repository whose main holds the action, and a maintainer's clone of it.
    fn new() -> Flow {
        let flow = Flow {
            root: tempfile::tempdir().unwrap(),
        };
        let root = flow.root.path();
        git(
            root,
            &["init", "-q", "--bare", "-b", "main", "upstream.git"],
        );
        git(root, &["clone", "-q", "upstream.git", "maintainer"]);
        for file in FILES {
            let to = flow.maintainer().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo_root().join(file), &to).unwrap();
        }
        git(
            &flow.maintainer(),
            &["symbolic-ref", "HEAD", "refs/heads/main"],
        );
        git(&flow.maintainer(), &["add", "-A"]);
        git(&flow.maintainer(), &["commit", "-q", "-m", "the action"]);
        git(&flow.maintainer(), &["push", "-q", "origin", "main"]);
        flow
    }

    fn upstream(&self) -> PathBuf {
        self.root.path().join("upstream.git")
    }

    fn maintainer(&self) -> PathBuf {
        self.root.path().join("maintainer")
    }

    fn head(&self) -> String {
        git(&self.maintainer(), &["rev-parse", "HEAD"])
    }

    /// Upstream's commit for REF (a tag is peeled to its commit).
    fn upstream_commit(&self, reference: &str) -> String {
        git(
            &self.upstream(),
            &["rev-parse", &format!("{reference}^{{commit}}")],
        )
    }

    /// A change of the action on main (a new input, say), pushed: the next commit to release.
    fn change_action(&self, what: &str) -> String {
        let path = self.maintainer().join("action.yml");
        let mut yml = std::fs::read_to_string(&path).unwrap();
        yml.push_str(&format!("# {what}\n"));
        std::fs::write(&path, yml).unwrap();
        git(&self.maintainer(), &["commit", "-q", "-am", what]);
        git(&self.maintainer(), &["push", "-q", "origin", "main"]);
        self.head()
    }

    /// The build job: a (stand-in) binary of `version`, packaged and served by
    /// scripts/local-release; `tampered` makes a different binary of the same version.
    fn build(&self, version: &str, tampered: bool) -> Served {
        let name = format!("{version}{}", if tampered { "-tampered" } else { "" });
        let dir = self.root.path().join(format!("build-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("ai-infra-build");
        let extra = if tampered {
            "# tampered: not the binary that was released\n"
        } else {
            ""
        };
        std::fs::write(
            &bin,
            format!("#!/bin/sh\n# ai-infra-build {version}, a stand-in\n{extra}[ \"$1\" = --version ] && echo \"ai-infra-build {version}\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let state = self.root.path().join(format!("release-{name}"));
        let out = Command::new("bash")
            .arg(self.maintainer().join("scripts/local-release"))
            .arg("start")
            .arg("--binary")
            .arg(&bin)
            .args(["--version", version])
            .arg("--dist")
            .arg(dir.join("dist"))
            .arg("--state")
            .arg(&state)
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .expect("scripts/local-release runs");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(key).map(str::to_string))
                .unwrap_or_default()
        };
        let served = Served {
            state,
            url: value("binary-url="),
            pid: value("pid="),
        };
        assert!(
            out.status.success() && !served.url.is_empty(),
            "local-release: {}",
            text(&out)
        );
        assert!(
            served.url.starts_with("http://127.0.0.1:"),
            "{}",
            served.url
        );
        served
    }

    /// scripts/release-flow ARGS in the maintainer's clone, as the workflow runs it.
    fn release_flow(&self, args: &[&str]) -> Output {
        isolated(
            Command::new("bash")
                .current_dir(self.maintainer())
                .arg("scripts/release-flow")
                .args(args),
        )
        .output()
        .expect("scripts/release-flow runs")
    }

    /// The release-commit job: the release commit on `source`, tagged vVERSION and pushed.
    fn release(&self, version: &str, source: &str, served: &Served) -> String {
        let sums = served.sums().display().to_string();
        let out = self.release_flow(&[
            "commit",
            "--version",
            version,
            "--sums",
            &sums,
            "--source",
            source,
            "--target",
            target(),
        ]);
        assert!(out.status.success(), "release-flow commit: {}", text(&out));
        let commit = stdout(&out);
        git(
            &self.maintainer(),
            &["push", "-q", "origin", &format!("refs/tags/v{version}")],
        );
        assert_eq!(self.upstream_commit(&format!("v{version}")), commit);
        commit
    }

    /// The major-tag job (after CI and the smoke test passed).
    fn move_major(&self, tag: &str) -> Output {
        self.release_flow(&["move-major", "--tag", tag, "--push", "origin"])
    }

    /// A job of a user's workflow with `uses: OWNER/ai-infra-build@REF` and `binary-url`:
    /// the runner downloads the tarball of REF and runs the install step from it.
    fn use_action(&self, reference: &str, binary_url: &str, env: &[(&str, &str)]) -> Use {
        // Kept until the flow's directory goes: the installed binary is run afterwards.
        let runner = tempfile::tempdir_in(self.root.path()).unwrap().keep();
        let tarball = runner.join("action.tar");
        git(
            &self.upstream(),
            &[
                "archive",
                "--format=tar",
                "-o",
                &tarball.display().to_string(),
                reference,
            ],
        );
        let action = runner.join("action");
        std::fs::create_dir_all(&action).unwrap();
        let untar = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&action)
            .status();
        assert!(
            untar.is_ok_and(|s| s.success()),
            "tar -xf {}",
            tarball.display()
        );
        for dir in ["tool-cache", "temp"] {
            std::fs::create_dir_all(runner.join(dir)).unwrap();
        }
        let mut cmd = Command::new("timeout");
        cmd.arg("120")
            .arg("bash")
            .arg(action.join("dist/install.sh"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &runner)
            .env("RUNNER_TOOL_CACHE", runner.join("tool-cache"))
            .env("RUNNER_TEMP", runner.join("temp"))
            .env("GITHUB_OUTPUT", runner.join("output"))
            .env("GITHUB_ACTION_REF", reference)
            .env("GITHUB_ACTION_REPOSITORY", "acme/ai-infra-build")
            .env("AIB_BINARY_URL", binary_url)
            .env("AIB_RETRY_DELAY", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("bash runs install.sh");
        let outputs = std::fs::read_to_string(runner.join("output")).unwrap_or_default();
        Use { out, outputs }
    }
}

/// Two releases made by the flow, 1.0.0 then 1.1.0 (with a change of the action between
/// them), both archives served from one mirror, and v1 moved after each.
struct Released {
    // The servers first: they are stopped (by their state directories) before the flow's
    // directory, which holds those, goes.
    mirror: Served,
    _first: Served,
    main_1: String,
    release_1: String,
    main_2: String,
    release_2: String,
    flow: Flow,
}

fn two_releases() -> Released {
    let flow = Flow::new();
    let main_1 = flow.head();
    let first = flow.build("1.0.0", false);
    let release_1 = flow.release("1.0.0", &main_1, &first);
    let out = flow.move_major("v1.0.0");
    assert!(out.status.success(), "move-major: {}", text(&out));

    let main_2 = flow.change_action("a new input");
    let mirror = flow.build("1.1.0", false);
    // One mirror of the release assets for both releases, like GitHub's release downloads.
    for entry in std::fs::read_dir(first.assets()).unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".tar.gz") {
            std::fs::copy(entry.path(), mirror.assets().join(name)).unwrap();
        }
    }
    let release_2 = flow.release("1.1.0", &main_2, &mirror);
    Released {
        flow,
        main_1,
        release_1,
        main_2,
        release_2,
        mirror,
        _first: first,
    }
}

#[test]
fn the_action_at_a_tag_at_its_sha_and_at_v1_installs_its_own_release() {
    let r = two_releases();
    let flow = &r.flow;
    let url = r.mirror.url.as_str();

    // The release commits: the built commit plus dist/VERSION and the checksums, nothing else;
    // no branch moved (main is still the built commit).
    for (release, main, version) in [
        (&r.release_1, &r.main_1, "1.0.0"),
        (&r.release_2, &r.main_2, "1.1.0"),
    ] {
        assert_eq!(
            &git(&flow.upstream(), &["rev-parse", &format!("{release}^")]),
            main
        );
        assert_eq!(
            git(&flow.upstream(), &["diff", "--name-only", main, release]),
            format!("dist/VERSION\ndist/checksums/{version}.sha256")
        );
        assert_eq!(
            git(
                &flow.upstream(),
                &["show", &format!("{release}:dist/VERSION")]
            ),
            version
        );
    }
    assert_eq!(flow.upstream_commit("main"), r.main_2);

    // v1 has not moved yet: the 1.1.0 release is not checked (CI, smoke test) yet.
    assert_eq!(flow.upstream_commit("v1"), r.release_1);
    let at_v1 = flow.use_action("v1", url, &[]);
    assert_eq!(
        at_v1.installed(),
        "ai-infra-build 1.0.0",
        "{}",
        text(&at_v1.out)
    );

    // CI passed: v1 moves to the 1.1.0 release commit.
    let out = flow.move_major("v1.1.0");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(flow.upstream_commit("v1"), r.release_2);

    for (reference, version) in [
        ("v1.0.0", "1.0.0"),
        (r.release_1.as_str(), "1.0.0"),
        ("v1.1.0", "1.1.0"),
        (r.release_2.as_str(), "1.1.0"),
        ("v1", "1.1.0"),
    ] {
        let used = flow.use_action(reference, url, &[]);
        assert_eq!(
            used.installed(),
            format!("ai-infra-build {version}"),
            "uses: ...@{reference}: {}",
            text(&used.out)
        );
        assert!(
            used.outputs
                .lines()
                .any(|l| l == format!("version={version}")),
            "{}",
            used.outputs
        );
        assert!(
            stderr(&used.out).contains(&format!(
                "from dist/VERSION at the action's ref {reference}"
            )),
            "{}",
            text(&used.out)
        );
    }

    // A commit of main is no release: pinned by SHA (or the branch), it says so and what to do.
    for (reference, message) in [
        (
            r.main_2.as_str(),
            format!(
                "the action's ref {} is a commit that names no release",
                r.main_2
            ),
        ),
        (
            "main",
            "names no released version (dist/VERSION is missing)".to_string(),
        ),
    ] {
        let used = flow.use_action(reference, url, &[]);
        assert_eq!(used.out.status.code(), Some(1), "{}", text(&used.out));
        let err = stderr(&used.out);
        assert!(err.contains(&message), "{err}");
        assert!(err.contains("git rev-parse vX.Y.Z^{commit}"), "{err}");
    }
}

#[test]
fn a_tampered_asset_and_a_ref_that_names_another_release_are_refused() {
    let r = two_releases();
    let flow = &r.flow;
    let url = r.mirror.url.as_str();
    let out = flow.move_major("v1.1.0");
    assert!(out.status.success(), "{}", text(&out));

    // A mirror whose 1.1.0 archive is another binary: the committed checksums refuse it.
    let evil = flow.build("1.1.0", true);
    for reference in ["v1.1.0", r.release_2.as_str(), "v1"] {
        let used = flow.use_action(reference, &evil.url, &[]);
        assert_eq!(used.out.status.code(), Some(1), "{}", text(&used.out));
        let err = stderr(&used.out);
        assert!(
            err.contains(&format!(
                "checksum mismatch for ai-infra-build-1.1.0-{}.tar.gz",
                target()
            )),
            "{err}"
        );
        assert!(used.outputs.is_empty(), "{}", used.outputs);
    }

    // Tags that name another release's commit (made or moved by hand): v1.2.0 and v2 on the
    // 1.1.0 release commit, and v1.3.0 on a main commit that holds an older release's
    // dist/ (what the old flow's merged pull request left).
    git(&flow.maintainer(), &["tag", "v1.2.0", &r.release_2]);
    git(&flow.maintainer(), &["tag", "v2", &r.release_2]);
    git(
        &flow.maintainer(),
        &["checkout", "-q", &r.release_1, "--", "dist"],
    );
    git(
        &flow.maintainer(),
        &["commit", "-q", "-m", "old flow: dist of 1.0.0 on main"],
    );
    git(&flow.maintainer(), &["tag", "v1.3.0"]);
    git(
        &flow.maintainer(),
        &["push", "-q", "origin", "v1.2.0", "v2", "v1.3.0"],
    );
    for (reference, message) in [
        (
            "v1.2.0",
            "the action's ref v1.2.0 names version 1.2.0, but this checkout of the action installs 1.1.0",
        ),
        (
            "v2",
            "the action's ref v2 names versions 2.*, but this checkout of the action installs 1.1.0",
        ),
        (
            "v1.3.0",
            "the action's ref v1.3.0 names version 1.3.0, but this checkout of the action installs 1.0.0",
        ),
    ] {
        let used = flow.use_action(reference, url, &[]);
        assert_eq!(used.out.status.code(), Some(1), "{}", text(&used.out));
        let err = stderr(&used.out);
        assert!(err.contains(message), "{err}");
        assert!(
            err.contains("refusing a mismatch between the action's ref and its binary"),
            "{err}"
        );
    }

    // The version input cannot make one release's action run another release's binary.
    let used = flow.use_action("v1.1.0", url, &[("AIB_VERSION", "1.0.0")]);
    assert_eq!(used.out.status.code(), Some(1), "{}", text(&used.out));
    assert!(
        stderr(&used.out).contains(
            "the version input 1.0.0 differs from the version this action's files were released with (1.1.0"
        ),
        "{}",
        text(&used.out)
    );
    let used = flow.use_action("v1.1.0", url, &[("AIB_VERSION", "v1.1.0")]);
    assert_eq!(used.installed(), "ai-infra-build 1.1.0");
}

#[test]
fn the_release_script_tags_once_moves_v1_forward_only_and_only_to_a_release_commit() {
    let r = two_releases();
    let flow = &r.flow;
    let sums = r.mirror.sums().display().to_string();

    // A version is released once: its tag never moves.
    let out = flow.release_flow(&[
        "commit",
        "--version",
        "1.1.0",
        "--sums",
        &sums,
        "--source",
        &r.main_2,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("the tag v1.1.0 exists already"),
        "{}",
        text(&out)
    );

    // Checksums that do not cover a target, or belong to another version, are refused.
    let out = flow.release_flow(&[
        "commit",
        "--version",
        "1.4.0",
        "--sums",
        &sums,
        "--source",
        &r.main_2,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("not an asset of 1.4.0"),
        "{}",
        text(&out)
    );
    let other = flow.maintainer().join("../sums-1.1.1");
    std::fs::write(
        &other,
        std::fs::read_to_string(&sums)
            .unwrap()
            .replace("1.1.0", "1.1.1"),
    )
    .unwrap();
    let other = other.display().to_string();
    let out = flow.release_flow(&[
        "commit",
        "--version",
        "1.1.1",
        "--sums",
        &other,
        "--source",
        &r.main_2,
        "--target",
        target(),
        "--target",
        "aarch64-unknown-linux-musl",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(
            "has no lines for the archive and the binary of 1.1.1 for aarch64-unknown-linux-musl"
        ),
        "{}",
        text(&out)
    );
    assert!(
        git(&flow.maintainer(), &["tag", "-l", "v1.1.1"]).is_empty(),
        "a refused release left a tag"
    );

    // v1 never moves back to an older release.
    assert!(flow.move_major("v1.1.0").status.success());
    let out = flow.move_major("v1.0.0");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("v1 names 1.1.0, newer than 1.0.0: the major tag never moves back"),
        "{}",
        text(&out)
    );
    assert_eq!(flow.upstream_commit("v1"), r.release_2);

    // A "release" commit that changes the action too is no release commit: verify and
    // move-major refuse it, so v1 never lands on an action.yml its binary was not built with.
    git(
        &flow.maintainer(),
        &["checkout", "-q", "--detach", &r.main_2],
    );
    std::fs::write(flow.maintainer().join("dist/VERSION"), "1.5.0\n").unwrap();
    std::fs::create_dir_all(flow.maintainer().join("dist/checksums")).unwrap();
    std::fs::write(
        flow.maintainer().join("dist/checksums/1.5.0.sha256"),
        std::fs::read_to_string(&sums)
            .unwrap()
            .replace("1.1.0", "1.5.0"),
    )
    .unwrap();
    let yml = flow.maintainer().join("action.yml");
    let changed = std::fs::read_to_string(&yml).unwrap() + "# not what the binary was built with\n";
    std::fs::write(&yml, changed).unwrap();
    git(&flow.maintainer(), &["add", "-A"]);
    git(
        &flow.maintainer(),
        &["commit", "-q", "-m", "a hand-made release"],
    );
    git(
        &flow.maintainer(),
        &["tag", "-a", "v1.5.0", "-m", "hand-made"],
    );
    for args in [
        vec!["verify", "--tag", "v1.5.0"],
        vec!["move-major", "--tag", "v1.5.0", "--push", "origin"],
    ] {
        let out = flow.release_flow(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out)
                .contains("changes action.yml besides dist/VERSION and the checksums of 1.5.0"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(flow.upstream_commit("v1"), r.release_2);

    // A release commit built from another commit than the one given is refused.
    let out = flow.release_flow(&["verify", "--tag", "v1.1.0", "--source", &r.main_1]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("not the built commit"),
        "{}",
        text(&out)
    );
    let out = flow.release_flow(&[
        "verify", "--tag", "v1.1.0", "--source", &r.main_2, "--sums", &sums,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), r.release_2);

    // A pre-release is tagged and installable, but v1 does not move to it.
    git(&flow.maintainer(), &["checkout", "-q", "main"]);
    let rc = flow.build("1.6.0-rc.1", false);
    let release_rc = flow.release("1.6.0-rc.1", &r.main_2, &rc);
    let out = flow.move_major("v1.6.0-rc.1");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("is a pre-release"), "{}", text(&out));
    assert_eq!(flow.upstream_commit("v1"), r.release_2);
    let used = flow.use_action(&release_rc, &rc.url, &[]);
    assert_eq!(used.installed(), "ai-infra-build 1.6.0-rc.1");
}

/// The release workflow as docs/releasing.md describes it: every action pinned by commit,
/// contents: read at the top and the least in each job, `v<major>` moved only after CI and the
/// smoke test passed on the release commit, archives attested, assets never replaced.
#[test]
fn the_release_workflow_moves_v1_only_after_ci_and_never_replaces_an_asset() {
    let text = std::fs::read_to_string(repo_root().join(".github/workflows/release.yml")).unwrap();
    let wf: serde_json::Value = serde_saphyr::from_str(&text).expect("release.yml parses");
    assert_eq!(
        wf["permissions"],
        serde_json::json!({"contents": "read"}),
        "only contents: read at the top"
    );
    let jobs = wf["jobs"].as_object().expect("jobs");
    let needs = |job: &str| -> Vec<String> {
        match &jobs[job]["needs"] {
            serde_json::Value::String(one) => vec![one.clone()],
            serde_json::Value::Array(all) => all
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    for need in ["release-commit", "ci", "smoke"] {
        assert!(
            needs("major-tag").iter().any(|n| n == need),
            "major-tag needs {need}"
        );
    }
    assert!(needs("smoke").iter().any(|n| n == "publish"));
    assert!(needs("publish").iter().any(|n| n == "attest"));
    // CI runs on the release commit itself.
    let ci = jobs["ci"]["steps"].as_array().expect("ci steps");
    assert_eq!(
        ci[0]["with"]["ref"],
        "${{ needs.release-commit.outputs.commit }}"
    );
    assert!(ci.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("bash .ci/run"))
    }));

    let mut attested = false;
    for (name, job) in jobs {
        let permissions = job["permissions"].as_object();
        assert!(permissions.is_some(), "job {name} states its permissions");
        for (scope, level) in permissions.unwrap() {
            let allowed = match name.as_str() {
                "release-commit" | "publish" | "major-tag" => scope == "contents",
                "attest" => ["id-token", "attestations"].contains(&scope.as_str()),
                _ => false,
            };
            assert!(
                level == "read" || allowed,
                "job {name} may not have {scope}: {level}"
            );
        }
        for step in job["steps"].as_array().into_iter().flatten() {
            if let Some(uses) = step["uses"].as_str() {
                let (_, pin) = uses.split_once('@').expect("uses: OWNER/REPO@SHA");
                assert!(
                    pin.len() == 40 && pin.chars().all(|c| c.is_ascii_hexdigit()),
                    "job {name}: {uses} is not pinned by commit"
                );
                if uses.starts_with("actions/attest-build-provenance@") {
                    attested = step["with"]["subject-path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(".tar.gz"));
                }
            }
            if let Some(run) = step["run"].as_str() {
                assert!(!run.contains("--clobber"), "job {name} replaces assets");
                assert!(!run.contains("push --force origin \"refs/tags/v$VERSION\""));
            }
        }
    }
    assert!(attested, "the archives are attested");
}
