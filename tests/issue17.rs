//! Hostile and broken input (issue 17): no workflow command from any line we print, exit
//! codes that mean what the README says, nothing lost on SIGTERM, one broken service fails
//! alone. Runs the binary against the real daemon and a real registry where the item
//! involves them.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{bin, service, text};
use testbed::TestBed;
use testbed::images::{ImageSpec, PushedImage, push_image};
use testbed::proxy::{
    FaultConfig, FaultParams, FaultType, KindFaults, RequestKind, StallAt, StallThen,
};

/// A project directory with `<service>/Dockerfile`s, and a unique name for what it builds.
struct Proj {
    dir: tempfile::TempDir,
    name: String,
    _cleanup: testbed::RemoveImagesOnDrop,
}

impl Proj {
    fn new(prefix: &str, services: &[(&str, String)]) -> Proj {
        let dir = tempfile::tempdir().unwrap();
        for (service, dockerfile) in services {
            let path = dir.path().join(service);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("Dockerfile"), dockerfile).unwrap();
        }
        let name = testbed::unique_name(prefix);
        Proj {
            dir,
            _cleanup: testbed::RemoveImagesOnDrop(vec![name.clone()]),
            name,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary in the project, its images named `<name>-<service>:t`, outside Actions.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("DOCKER_HOST");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("GITHUB_") || k.starts_with("INPUT_") || k.starts_with("RUNNER_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args);
        if args.first().is_some_and(|a| a.starts_with("build")) {
            cmd.args(["--prefix", &format!("{}-", self.name), "--tag", "t"]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    fn report(&self) -> Value {
        let path = self
            .path()
            .join(".ai-infra-build/ai-infra-build-report.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

async fn push(bed: &TestBed, repo: &str, layer: usize) -> PushedImage {
    push_image(
        &bed.registry.host(),
        &ImageSpec::new(format!("library/{repo}"), "1.0").with_layer(layer),
    )
    .await
    .expect("push a base image")
}

/// The README's exit code table, as `(code, meaning)` rows.
fn readme_exit_codes() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find("### Exit codes").expect("an exit code section");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn issue17_readme_exit_codes_are_the_binarys() {
    use ai_infra_build::Exit;
    let rows = readme_exit_codes();
    let codes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
    let all = [
        Exit::Success,
        Exit::BuildFailed,
        Exit::Usage,
        Exit::Environment,
        Exit::ImagesMissing,
    ];
    let wanted: Vec<String> = all.iter().map(|e| e.code().to_string()).collect();
    assert_eq!(codes[..wanted.len()], wanted, "{rows:?}");
    assert_eq!(
        codes[wanted.len()],
        format!("{} / {}", Exit::Interrupted.code(), Exit::Terminated.code())
    );
    for (code, meaning) in &rows {
        assert!(
            !meaning.contains("not available yet"),
            "exit {code} still mentions a command not available yet: {meaning}"
        );
    }
    let environment = &rows[3].1;
    assert!(environment.contains("relay"), "{environment}");
}

#[tokio::test]
async fn issue17_prefetch_failure_fail_exits_4_and_builds_nothing() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-pf");
    let pushed = push(&bed, &base, 1024).await;
    let present = pushed.reference_via(&bed.registry.host());
    let missing = format!("{}/library/{base}-never-pushed:1.0", bed.registry.host());
    let proj = Proj::new(
        "i17-pf",
        &[
            ("fine", format!("FROM {present}\nRUN true\n")),
            ("broken", format!("FROM {missing}\nRUN true\n")),
        ],
    );
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let out = proj.run(&["build-all", "--prefetch-failure", "fail"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let report = proj.report();
    for name in ["fine", "broken"] {
        let s = service(&report, name);
        assert_eq!(s["status"], "skipped", "{s:#}");
        let reason = s["skipped_reason"].as_str().unwrap();
        assert!(
            reason.contains("--prefetch-failure fail") && reason.contains(&missing),
            "{reason}"
        );
    }
    assert_eq!(report["totals"]["cancelled"], 0, "{report:#}");
    assert_eq!(report["totals"]["base_images_missing"], 1, "{report:#}");
    // Without `fail`, the same project builds what it can and exits 1.
    let out = proj.run(&["build-all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = proj.report();
    assert_eq!(service(&report, "fine")["status"], "success", "{report:#}");
    assert_eq!(service(&report, "broken")["status"], "failed", "{report:#}");
}

/// SIGTERM while the prefetch is still pulling (a stalled blob): the build that finished
/// is reported as built, only the waiting one is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue17_sigterm_during_prefetch_keeps_finished_builds() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-term");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let quick = push(&bed, &format!("{base}-quick"), 1024).await;
    let stalled = push(&bed, &format!("{base}-stalled"), 1 << 20).await;
    let layer = stalled.layers.last().unwrap().digest.clone();
    bed.proxy
        .set_faults(
            FaultConfig::default()
                .with_kind(
                    RequestKind::BlobGet,
                    KindFaults::default()
                        .fail_first(1, FaultType::Stall)
                        .only_path_containing(&layer),
                )
                .with_params(FaultParams {
                    stall_secs: 120.0,
                    stall_at: StallAt::Body,
                    stall_then: StallThen::Close,
                    ..FaultParams::default()
                }),
        )
        .unwrap();
    let proxy = bed.proxy.host();
    let proj = Proj::new(
        "i17-term",
        &[
            (
                "quick",
                format!("FROM {}\nRUN true\n", quick.reference_via(&proxy)),
            ),
            (
                "waits",
                format!("FROM {}\nRUN true\n", stalled.reference_via(&proxy)),
            ),
        ],
    );
    let mut child = proj
        .command(&["build-all", "--idle-timeout", "300", "--backend", "engine"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let built = format!("{}-quick:t", proj.name);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = Command::new("docker")
            .args(["image", "inspect", &built])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if listed.success() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before quick was built: {}",
            text(&child.wait_with_output().unwrap())
        );
        assert!(Instant::now() < deadline, "quick was never built");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the scheduler record the result, then stop the run while the pull still stalls.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        bed.proxy
            .stats()
            .faults(RequestKind::BlobGet, FaultType::Stall),
        1
    );
    let status = Command::new("kill")
        .args(["-15", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    let report = proj.report();
    assert_eq!(report["run"]["interrupted"], true);
    assert_eq!(service(&report, "quick")["status"], "success", "{report:#}");
    assert_eq!(
        service(&report, "waits")["status"],
        "cancelled",
        "{report:#}"
    );
}

/// Runs `args` in a network namespace whose loopback has no 127.0.0.1 (so the relay cannot
/// listen), with the daemon still reachable through its unix socket.
fn without_loopback(proj: &Proj, args: &[&str]) -> Output {
    let probe = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(probe.success(), "this test needs `unshare -n` (root)");
    let cmd = proj.command(args);
    let mut shell = Command::new("unshare");
    shell
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && ip addr del 127.0.0.1/8 dev lo && exec \"$0\" \"$@\"",
        ])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(proj.path())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => shell.env(k, v),
            None => shell.env_remove(k),
        };
    }
    shell.output().unwrap()
}

#[test]
fn issue17_relay_that_cannot_listen_is_the_environment() {
    let proj = Proj::new(
        "i17-relay",
        &[("svc", "FROM scratch-base-i17:1\n".to_string())],
    );
    let out = without_loopback(&proj, &["prefetch", "--pull-via", "relay"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pull relay") && stderr.contains("--pull-via direct"),
        "{stderr}"
    );
    // build-all goes on without the prefetch, and says so.
    let out = without_loopback(&proj, &["build-all", "--pull-via", "relay"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("the prefetch did not run") && all.contains("pull relay"),
        "{all}"
    );
    assert_eq!(service(&proj.report(), "svc")["status"], "failed");
}

/// `report --merge` of one good report and one that cannot be read is not green.
#[test]
fn issue17_merge_with_an_unreadable_report_is_not_green() {
    let proj = Proj::new("i17-merge", &[]);
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/reports/all-green.json"
        ),
        proj.path().join("green.json"),
    )
    .unwrap();
    std::fs::write(proj.path().join("garbage.json"), "{\"version\": 1, \"run\"").unwrap();
    let out = proj.run(&["report", "--merge", "green.json", "--out-dir", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for broken in ["garbage.json", "missing.json"] {
        let out = proj.run(&[
            "report",
            "--merge",
            "green.json",
            broken,
            "--out-dir",
            "out",
        ]);
        assert_eq!(out.status.code(), Some(1), "{broken}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(broken) && stderr.contains("counts as missing"),
            "{stderr}"
        );
    }
    let out = proj.run(&[
        "report",
        "--merge",
        "garbage.json",
        "missing.json",
        "--out-dir",
        "out",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = proj.run(&["report", "--merge", "", "--out-dir", "out"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The name of the command the runner takes from `line`, and its data: the `::name
/// props::data` syntax after leading whitespace, else the old `##[name props]data` syntax
/// anywhere in the line.
fn runner_parse(line: &str) -> Option<(String, String, String)> {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("::")
        && let Some(end) = rest.find("::")
    {
        let info = &rest[..end];
        let name = info.split(' ').next().unwrap_or_default();
        return Some((
            name.to_string(),
            info.to_string(),
            rest[end + 2..].to_string(),
        ));
    }
    let at = line.find("##[")?;
    let rest = &line[at + 3..];
    let end = rest.find(']')?;
    let info = &rest[..end];
    let name = info.split(' ').next().unwrap_or_default();
    Some((
        name.to_string(),
        info.to_string(),
        rest[end + 1..].to_string(),
    ))
}

/// The commands the runner takes from one output stream, as `(name, info, data)`, following
/// `stop-commands` (nothing but the token resumes; the token is compared ignoring case).
fn runner_commands(stream: &str) -> Vec<(String, String, String)> {
    let mut stopped: Option<String> = None;
    let mut out = Vec::new();
    for line in stream.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, info, data)) = runner_parse(line) else {
            continue;
        };
        if let Some(token) = &stopped {
            if name.eq_ignore_ascii_case(token) {
                stopped = None;
            }
            continue;
        }
        if name == "stop-commands" {
            stopped = Some(data.clone());
        }
        out.push((name, info, data));
    }
    out
}

/// Every command the runner would take from `output` is one we print on purpose.
fn assert_only_our_commands(what: &str, output: &Output) {
    for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(text);
        for (name, info, data) in runner_commands(&text) {
            let ours = match name.as_str() {
                "group" | "endgroup" | "debug" => true,
                "stop-commands" => data.starts_with("aib-") && data.len() >= 36,
                // Our annotations always carry a title.
                "error" | "warning" | "notice" => {
                    info.contains(" title=") || info.contains(",title=")
                }
                _ => false,
            };
            assert!(
                ours,
                "{what}: the runner would take `{name}` ({info}::{data}) from our {stream}:\n{text}"
            );
        }
    }
}

#[test]
fn issue17_runner_oracle_sees_both_syntaxes() {
    let hostile = "ok\n  ::set-output name=x::1\nlog ##[add-mask]secret\n";
    let names: Vec<String> = runner_commands(hostile).into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["set-output", "add-mask"]);
    // A build's own stop-commands inside ours changes nothing; ours ends at our token only.
    let block = "::stop-commands::aib-1\n::stop-commands::evil\n::AIB-1::\n::error::after";
    let names: Vec<String> = runner_commands(block).into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["stop-commands", "error"]);
}

/// Lines a hostile build prints: both command syntaxes, indented, a stop-commands of its own.
const HOSTILE_RUN: &str = "RUN echo '::set-output name=pwned::1' \
    && echo '   ::add-mask::pwned-mask' \
    && echo 'text ##[set-env name=PWNED]1' \
    && echo '::stop-commands::pwnedtoken' \
    && echo '::warning::pwned-after-stop' \
    && echo '##[add-path]/pwned' \
    && exit 3\n";

/// Everything we print for a hostile build in Actions mode (terminal table, annotations, log
/// groups, warnings, errors, notes; human and JSON output; both build backends; a re-rendered
/// report; input and flag errors quoting hostile values) gives the runner only our commands.
#[tokio::test]
async fn issue17_terminal_table_is_inert_in_actions() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-inj");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let pushed = push(&bed, &base, 1024).await;
    let from = pushed.reference_via(&bed.registry.host());
    let missing = format!("{}/library/{base}-gone:1.0", bed.registry.host());
    let proj = Proj::new(
        "i17-inj",
        &[
            ("evil", format!("FROM {from}\n{HOSTILE_RUN}")),
            ("fine", format!("FROM {from}\nRUN true\n")),
            ("lost", format!("FROM {missing}\nRUN true\n")),
        ],
    );
    let summary = proj.path().join("summary.md");
    let outputs = proj.path().join("outputs.txt");
    let actions = |cmd: &mut Command| {
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_WORKSPACE", proj.path())
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_OUTPUT", &outputs)
            .env("GITHUB_REPOSITORY", "acme/##[warning]pwned-repo")
            .env("RUNNER_DEBUG", "1");
    };
    let run = |args: &[&str]| {
        let mut cmd = proj.command(args);
        actions(&mut cmd);
        cmd.output().unwrap()
    };
    for backend in ["engine-classic", "engine"] {
        for format in ["human", "json"] {
            let what = format!("build-all --backend {backend} --output {format}");
            let out = run(&[
                "build-all",
                "--backend",
                backend,
                "--output",
                format,
                "--build-retries",
                "0",
            ]);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
            let all = text(&out);
            // The hostile lines are shown (inert), not dropped.
            for seen in ["pwned-mask", "pwnedtoken", "pwned-after-stop", "/pwned"] {
                assert!(all.contains(seen), "{what}: {seen} not shown:\n{all}");
            }
            assert_only_our_commands(&what, &out);
            let report = proj.report();
            assert_eq!(service(&report, "evil")["status"], "failed", "{report:#}");
            assert_eq!(service(&report, "fine")["status"], "success");
        }
    }
    let report = proj
        .path()
        .join(".ai-infra-build/ai-infra-build-report.json");
    for view in [
        "terminal",
        "json",
        "markdown",
        "outputs",
        "comment",
        "annotations",
    ] {
        let out = run(&[
            "report",
            "--from",
            report.to_str().unwrap(),
            "--format",
            view,
        ]);
        assert_eq!(out.status.code(), Some(0), "{view}: {}", text(&out));
        assert_only_our_commands(&format!("report --format {view}"), &out);
    }
    // Errors that quote what they were given.
    let out = run(&["plan", "--tag", "##[error]pwned"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pwned"));
    assert_only_our_commands("a hostile --tag", &out);
    let mut cmd = proj.command(&["build-all"]);
    actions(&mut cmd);
    let out = cmd
        .env("INPUT_PARALLEL", "1\n::error::pwned-input\n##[add-mask]x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pwned-input"));
    assert_only_our_commands("a hostile INPUT_PARALLEL", &out);
    let out = run(&["prefetch"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_only_our_commands("prefetch", &out);
}

/// Setup and API warnings share the step's 10 warning annotations with the report's: past
/// that they are plain log lines, never dropped.
#[tokio::test]
async fn issue17_setup_warnings_respect_the_annotation_cap() {
    use ai_infra_build::report::{PublishContext, Report, publish};
    use ai_infra_build::ui::{MemorySink, Ui};
    for fixture in ["all-green", "nine-of-eleven"] {
        let path = format!(
            "{}/tests/fixtures/reports/{fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let report: Report = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = PublishContext::from_lookup(
            dir.path().join("out"),
            dir.path().to_path_buf(),
            Vec::new(),
            None,
            &|k| (k == "GITHUB_ACTIONS").then(|| "true".to_string()),
        );
        ctx.warnings = (0..15).map(|i| format!("setup problem {i}")).collect();
        let sink = std::sync::Arc::new(MemorySink::default());
        let ui = Ui {
            sink: sink.clone(),
            ..Ui::default()
        };
        let published = publish(&report, ctx, &ui).await.unwrap();
        assert_eq!(published.warnings.len(), 15);
        let all = format!("{}{}", sink.out_text(), sink.err_text());
        let annotations = runner_commands(&sink.out_text())
            .into_iter()
            .filter(|(name, _, _)| name == "warning")
            .count();
        assert!(
            annotations <= 10,
            "{fixture}: {annotations} warning annotations:\n{all}"
        );
        assert!(annotations >= 1, "{fixture}: {all}");
        for i in 0..15 {
            assert!(
                all.contains(&format!("setup problem {i}")),
                "{fixture}: {i} lost:\n{all}"
            );
        }
    }
}

/// `prefetch` as its own step in Actions publishes as `build-all` does: step summary,
/// outputs, an annotation at the missing image's FROM line, the diagnosis and the JSON report.
#[tokio::test]
async fn issue17_prefetch_step_publishes_in_actions() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-pfa");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let pushed = push(&bed, &base, 1024).await;
    let present = pushed.reference_via(&bed.registry.host());
    let missing = format!("{}/library/{base}-absent:1.0", bed.registry.host());
    let proj = Proj::new(
        "i17-pfa",
        &[
            ("fine", format!("FROM {present}\nRUN true\n")),
            ("lost", format!("# a comment\nFROM {missing}\nRUN true\n")),
        ],
    );
    let summary = proj.path().join("summary.md");
    let outputs = proj.path().join("outputs.txt");
    let out = proj
        .command(&["prefetch", "--max-retries", "0"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", proj.path())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &outputs)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    // Its own table is still printed, once.
    assert_eq!(
        all.matches("Base images: 1/2 available").count(),
        1,
        "{all}"
    );
    let summary = std::fs::read_to_string(&summary).expect("a step summary");
    assert!(summary.contains(&missing), "{summary}");
    let outputs = std::fs::read_to_string(&outputs).expect("step outputs");
    assert!(!outputs.trim().is_empty(), "{outputs}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at_from = stdout.lines().any(|l| {
        (l.starts_with("::warning ") || l.starts_with("::error "))
            && l.contains("file=lost/Dockerfile,line=2")
    });
    assert!(at_from, "no annotation at lost/Dockerfile:2:\n{stdout}");
    let report = proj.report();
    assert_eq!(report["run"]["command"], "prefetch", "{report:#}");
    assert_eq!(report["totals"]["base_images_missing"], 1, "{report:#}");
    assert_eq!(report["totals"]["services"], 0, "{report:#}");
    // The diagnosis (the image does not exist on the registry) is in the summary too.
    let root = report["diagnosis"]["root_cause"]
        .as_str()
        .expect("a diagnosis");
    assert!(root.contains("does not exist"), "{root}");
    assert!(summary.contains("Diagnosis"), "{summary}");
    // Outside Actions: no report file, no summary; the table alone.
    std::fs::remove_dir_all(proj.path().join(".ai-infra-build")).unwrap();
    let out = proj.run(&["prefetch", "--max-retries", "0"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!proj.path().join(".ai-infra-build").exists());
}

/// Item 10 (and 3): one service's Dockerfile that cannot be parsed (a FROM ARG without a
/// value, an unterminated heredoc) or read (a broken symbolic link, a directory named
/// Dockerfile) fails that service alone, annotated at its file and line; the others build,
/// the service built FROM a broken one is skipped with the reason, the exit code is 1.
/// `plan` lists the broken services and exits 0 (the action's plan step must not stop the
/// build of the others).
#[tokio::test]
async fn issue17_a_broken_dockerfile_fails_its_service_alone() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-broken");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let pushed = push(&bed, &base, 1024).await;
    let present = pushed.reference_via(&bed.registry.host());
    let proj = Proj::new(
        "i17-broken",
        &[
            ("fine", format!("FROM {present}\nRUN true\n")),
            (
                "noarg",
                "# syntax=docker/dockerfile:1\n# the base comes from an ARG\nFROM ${UNSET_BASE_I17}\nRUN true\n".into(),
            ),
            (
                "heredoc",
                format!("FROM {present}\nRUN <<EOF\necho never closed\n"),
            ),
            ("after", String::new()),
        ],
    );
    // `after` is built FROM noarg's image: its Dockerfile names the project's image prefix.
    std::fs::write(
        proj.path().join("after/Dockerfile"),
        format!("FROM {}-noarg:t\nRUN true\n", proj.name),
    )
    .unwrap();
    std::fs::create_dir_all(proj.path().join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/Dockerfile", proj.path().join("link/Dockerfile"))
        .unwrap();
    std::fs::create_dir_all(proj.path().join("folder/Dockerfile")).unwrap();
    // A FIFO: reading it would block the run for ever.
    std::fs::create_dir_all(proj.path().join("pipe")).unwrap();
    let mkfifo = Command::new("mkfifo")
        .arg(proj.path().join("pipe/Dockerfile"))
        .status()
        .unwrap();
    assert!(mkfifo.success());

    let prefix = format!("{}-", proj.name);
    let plan = proj.run(&[
        "plan", "--output", "json", "--prefix", &prefix, "--tag", "t",
    ]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let planned: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let entry = |name: &str| {
        planned["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not planned: {planned:#}"))
            .clone()
    };
    assert!(entry("fine").get("error").is_none(), "{planned:#}");
    assert_eq!(entry("noarg")["error"]["line"], 3, "{planned:#}");
    assert_eq!(entry("heredoc")["error"]["line"], 2, "{planned:#}");
    let link = entry("link")["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.contains("broken symbolic link") && link.contains("../nowhere/Dockerfile"),
        "{link}"
    );
    let folder = entry("folder")["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(folder.contains("a directory, not a file"), "{folder}");
    let pipe = entry("pipe")["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pipe.contains("a FIFO (named pipe)"), "{pipe}");
    assert_eq!(entry("after")["depends_on"], serde_json::json!(["noarg"]));
    let stderr = String::from_utf8_lossy(&plan.stderr);
    for broken in ["noarg", "heredoc", "link", "folder", "pipe"] {
        assert!(
            stderr.contains(&format!("service {broken} cannot be built")),
            "{broken}: {stderr}"
        );
    }

    let out = proj.run(&["build-all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = proj.report();
    assert_eq!(service(&report, "fine")["status"], "success", "{report:#}");
    for (broken, class, line) in [
        ("noarg", "syntax", Some(3)),
        ("heredoc", "syntax", Some(2)),
        ("link", "input", None),
        ("folder", "input", None),
        ("pipe", "input", None),
    ] {
        let s = service(&report, broken);
        assert_eq!(s["status"], "failed", "{s:#}");
        assert_eq!(s["failure"]["class"], class, "{s:#}");
        assert_eq!(s["failure"]["line"].as_u64(), line, "{s:#}");
    }
    let after = service(&report, "after");
    assert_eq!(after["status"], "skipped", "{after:#}");
    assert!(
        after["skipped_reason"]
            .as_str()
            .unwrap()
            .contains("dependency failed: noarg"),
        "{after:#}"
    );
    // The annotations point at the broken lines and name the files.
    let report_file = proj
        .path()
        .join(".ai-infra-build/ai-infra-build-report.json");
    let annotations = proj.run(&[
        "report",
        "--from",
        report_file.to_str().unwrap(),
        "--format",
        "annotations",
    ]);
    let annotations = String::from_utf8_lossy(&annotations.stdout).into_owned();
    for at in [
        "file=noarg/Dockerfile,line=3",
        "file=heredoc/Dockerfile,line=2",
        "file=link/Dockerfile,",
        "file=folder/Dockerfile,",
        "file=pipe/Dockerfile,",
    ] {
        assert!(
            annotations
                .lines()
                .any(|l| l.starts_with("::error ") && l.contains(at)),
            "no error annotation at {at}:\n{annotations}"
        );
    }
}

/// Item 9: a build is not cut for printing nothing (a quiet compile), whatever the prefetch's
/// idle timeout; `--build-idle-timeout` (off by default) is what would cut it, as `stalled`;
/// `--build-timeout` bounds an attempt's wall time: "timed out after 2s", class `timed-out`,
/// not retried.
#[tokio::test]
async fn issue17_quiet_builds_run_on_and_build_timeout_stops_them() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-quiet");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    let pushed = push(&bed, &base, 1024).await;
    let present = pushed.reference_via(&bed.registry.host());
    let proj = Proj::new(
        "i17-quiet",
        &[("quiet", format!("FROM {present}\nRUN sleep 6\n"))],
    );
    let common = ["--backend", "engine", "--no-cache", "--idle-timeout", "1"];
    let run = |extra: &[&str]| {
        let mut args = vec!["build-all"];
        args.extend(common);
        args.extend(extra);
        let started = Instant::now();
        let out = proj.run(&args);
        (out, started.elapsed())
    };

    // The opt-in idle cut: a quiet RUN is cut as stalled and retried.
    let (out, _) = run(&["--build-idle-timeout", "2", "--build-retries", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = proj.report();
    let s = service(&report, "quiet");
    assert_eq!(s["failure"]["class"], "stalled", "{s:#}");
    assert_eq!(s["attempts"], 2, "{s:#}");

    // build-timeout: stopped once, not retried, said so.
    let (out, took) = run(&["--build-timeout", "2s", "--build-retries", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = proj.report();
    let s = service(&report, "quiet");
    assert_eq!(s["failure"]["class"], "timed-out", "{s:#}");
    assert_eq!(s["attempts"], 1, "{s:#}");
    let message = s["failure"]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 2s"), "{message}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped by build-timeout"),
        "{}",
        text(&out)
    );

    // The default: the same quiet build runs to its end, once.
    let (out, took) = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = proj.report();
    let s = service(&report, "quiet");
    assert_eq!(s["status"], "success", "{s:#}");
    assert_eq!(s["attempts"], 1, "{s:#}");
    assert!(took >= Duration::from_secs(6), "took {took:?}");
}

/// Item 7: a base image that exists on no source (the mirror answers "manifest unknown",
/// the origin, Docker Hub, does not resolve here) is reported as such at its FROM line, with
/// what each source answered, not as a network failure inside the build, and is not retried;
/// the diagnosis's root cause names each source's real answer, whichever is tried first.
#[tokio::test]
async fn issue17_a_base_image_on_no_source_is_named_at_its_from_line() {
    let bed = TestBed::start(|o| o).await.unwrap();
    let base = testbed::unique_name("i17-nowhere");
    let _pulled = testbed::RemoveImagesOnDrop(vec![base.clone()]);
    push(&bed, &base, 1024).await;
    let mirror = bed.registry.host();
    let proj = Proj::new(
        "i17-nowhere",
        &[
            ("fine", format!("FROM {base}:1.0\nRUN true\n")),
            (
                "lost",
                format!("# a tag nobody pushed\n\nFROM {base}:99.99-missing\nRUN true\n"),
            ),
        ],
    );
    let mirror_arg = format!("docker.io={mirror}");
    for order in [None, Some("--mirror-first")] {
        let summary = proj.path().join("summary.md");
        let mut args = vec![
            "build-all",
            "--mirror",
            &mirror_arg,
            "--max-retries",
            "0",
            "--build-retries",
            "2",
        ];
        args.extend(order);
        let out = proj
            .command(&args)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_WORKSPACE", proj.path())
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{order:?}: {all}");
        let report = proj.report();
        assert_eq!(service(&report, "fine")["status"], "success", "{report:#}");
        let lost = service(&report, "lost");
        assert_eq!(lost["status"], "failed", "{lost:#}");
        assert_eq!(lost["failure"]["class"], "base-image", "{lost:#}");
        assert_eq!(lost["failure"]["line"], 3, "{lost:#}");
        assert_eq!(lost["attempts"], 1, "not retried: {lost:#}");
        let message = lost["failure"]["message"].as_str().unwrap();
        let mirror_said = format!("mirror {mirror}: manifest unknown");
        for needle in [
            "not found on any source",
            mirror_said.as_str(),
            "origin registry-1.docker.io: DNS",
        ] {
            assert!(
                message.contains(needle),
                "{order:?}: {needle:?} not in {message}"
            );
        }
        // The error annotation is at the FROM line and says so; no "network failure".
        let stdout = String::from_utf8_lossy(&out.stdout);
        let at_from: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("::error ") && l.contains("file=lost/Dockerfile,line=3"))
            .collect();
        assert_eq!(at_from.len(), 1, "{order:?}: {stdout}");
        assert!(
            at_from[0].contains("not found on any source"),
            "{}",
            at_from[0]
        );
        assert!(
            !stdout.contains("network failure inside the build"),
            "{order:?}: {stdout}"
        );
        // The diagnosis: what each source really answered; the mirror did resolve.
        let root = report["diagnosis"]["root_cause"].as_str().unwrap();
        assert!(
            root.contains("not found on any source"),
            "{order:?}: {root}"
        );
        assert!(root.contains(&mirror_said), "{order:?}: {root}");
        assert!(
            root.contains("registry-1.docker.io: DNS"),
            "{order:?}: {root}"
        );
        let findings = report["diagnosis"]["findings"].to_string();
        assert!(
            !findings.contains(&format!("`{mirror}` did not resolve"))
                && !findings.contains(&format!(
                    "{mirror}` and `registry-1.docker.io` did not resolve"
                ))
                && !findings.contains(&format!(
                    "`registry-1.docker.io` and `{mirror}` did not resolve"
                )),
            "{order:?}: {findings}"
        );
        let summary = std::fs::read_to_string(&summary).unwrap();
        assert!(summary.contains("not found on any source"), "{summary}");
    }
}
