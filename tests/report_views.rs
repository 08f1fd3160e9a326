//! Issue #5: the views of a report — step summary (checked by a GFM renderer), workflow
//! commands (checked by a port of the runner's parser), step outputs, the JSON Schema, and
//! `report --from FILE --format VIEW` reproducing each of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ai_infra_build::actions_env::ActionsEnv;
use ai_infra_build::build::failure::BuildFailureClass;
use ai_infra_build::prefetch::{ImageStatus, PullPath};
use ai_infra_build::report::annotations::{self, Level, LogSource, PathMapper};
use ai_infra_build::report::summary::{self, STEP_SUMMARY_LIMIT, SummaryOptions};
use ai_infra_build::report::{
    BaseImageResult, FailureLogEntry, ImageUseSite, Report, RunMeta, ServiceFailure, ServiceResult,
    ServiceStatus, outputs, terminal, views, workflow,
};
use ai_infra_build::retry::ErrorClass;
use ai_infra_build::ui::{ColorChoice, OutputFormat};
use ai_infra_build::ui::{Ui, use_color};
use comrak::nodes::{AstNode, NodeValue};
use comrak::{Arena, Options};

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(format!("{name}.json"))
}

fn fixture(name: &str) -> Report {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is a valid report")
}

fn plain_ui() -> Ui {
    Ui {
        format: OutputFormat::Human,
        color: use_color(ColorChoice::Never, false, false),
        quiet: false,
        verbose: 0,
        ..Ui::default()
    }
}

/// Volatile values out of snapshots: versions, timestamps, digests, durations, random tokens.
fn redactions() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"ai-infra-build \d+\.\d+\.\d+", "ai-infra-build [version]");
    s.add_filter(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z",
        "[timestamp]",
    );
    s.add_filter(r"sha256:[0-9a-f]{64}", "[digest]");
    s.add_filter(
        r"\b\d+h \d{2}m\b|\b\d+m \d{2}s\b|\b\d+\.\ds\b|\b\d+ms\b",
        "[duration]",
    );
    s.add_filter(r"aib-[0-9a-f]{32}", "[token]");
    s.add_filter(r"ghadelimiter_[0-9a-f]{32}", "[delimiter]");
    s
}

// ---------------------------------------------------------------------------------------
// GFM rendering (comrak) of the summary

fn gfm() -> Options<'static> {
    let mut o = Options::default();
    o.extension.table = true;
    o.extension.strikethrough = true;
    o.extension.autolink = true;
    o.render.r#unsafe = true; // GitHub renders <details>/<summary>
    o
}

#[derive(Debug, Default)]
struct Shape {
    /// Per table: the cells' text of each row (header first).
    tables: Vec<Vec<Vec<String>>>,
    /// Code blocks: (literal, closed).
    code_blocks: Vec<(String, bool)>,
    html_blocks: Vec<String>,
    headings: Vec<String>,
}

fn text_of<'a>(node: &'a AstNode<'a>) -> String {
    let mut out = String::new();
    for d in node.descendants() {
        match &d.data().value {
            NodeValue::Text(t) => out.push_str(t),
            NodeValue::Code(c) => out.push_str(&c.literal),
            NodeValue::HtmlInline(h) => out.push_str(h),
            _ => {}
        }
    }
    out
}

fn shape(markdown: &str) -> Shape {
    let arena = Arena::new();
    let root = comrak::parse_document(&arena, markdown, &gfm());
    let mut shape = Shape::default();
    for node in root.descendants() {
        match &node.data().value {
            NodeValue::Table(_) => {
                let rows = node
                    .children()
                    .filter(|r| matches!(r.data().value, NodeValue::TableRow(_)))
                    .map(|r| r.children().map(text_of).collect())
                    .collect();
                shape.tables.push(rows);
            }
            NodeValue::CodeBlock(cb) => shape.code_blocks.push((cb.literal.clone(), cb.closed)),
            NodeValue::HtmlBlock(h) => shape.html_blocks.push(h.literal.clone()),
            NodeValue::Heading(_) => shape.headings.push(text_of(node)),
            _ => {}
        }
    }
    shape
}

fn html(markdown: &str) -> String {
    comrak::markdown_to_html(markdown, &gfm())
}

fn clean(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| ai_infra_build::report::text::clean_line(l, 500) + "\n")
        .collect()
}

fn assert_sane_markdown(markdown: &str) -> Shape {
    let s = shape(markdown);
    for (literal, closed) in &s.code_blocks {
        assert!(closed, "a code block is not closed:\n{literal}");
    }
    let rendered = html(markdown);
    assert_eq!(
        rendered.matches("<details").count(),
        rendered.matches("</details>").count(),
        "details blocks unbalanced"
    );
    assert!(
        !rendered.contains("<script"),
        "raw HTML from the data reached the page"
    );
    s
}

fn default_summary(report: &Report) -> String {
    let opts = SummaryOptions {
        run_url: Some("https://github.com/acme/shop/actions/runs/9876543210".into()),
        report_path: Some(".ai-infra-build/ai-infra-build-report.json".into()),
        ..SummaryOptions::step_summary()
    };
    summary::render(report, &opts)
}

#[test]
fn summary_all_green() {
    let report = fixture("all-green");
    let md = default_summary(&report);
    let s = assert_sane_markdown(&md);
    assert_eq!(s.headings[0], "✅ ai-infra-build: 11/11 succeeded");
    assert!(!s.headings.iter().any(|h| h.starts_with("Failures")));
    assert_eq!(s.tables.len(), 3, "services, base images, network");
    assert_eq!(s.tables[0].len(), 1 + 11);
    assert_eq!(
        s.tables[0][0],
        [
            "", "Service", "Image", "Duration", "Attempts", "Cached", "Size"
        ]
    );
    assert_eq!(s.tables[0][1][1], "gateway");
    assert_eq!(s.tables[0][1][2], "<code>shop-gateway:1.4.0</code> +1 tag");
    assert_eq!(s.tables[1].len(), 1 + 8);
    assert_eq!(s.tables[2][1], ["3", "0", "8.0s", "388", "0"]);
    redactions().bind(|| insta::assert_snapshot!("summary_all_green", md));
}

#[test]
fn summary_nine_of_eleven_with_a_pull_failure_and_a_build_failure() {
    let report = fixture("nine-of-eleven");
    let md = default_summary(&report);
    let s = assert_sane_markdown(&md);
    assert_eq!(s.headings[0], "❌ ai-infra-build: 9/11 succeeded");
    assert!(
        s.headings.contains(&"Failures (3)".to_string()),
        "{:?}",
        s.headings
    );
    let trainer = report
        .services
        .iter()
        .find(|s| s.name == "trainer")
        .unwrap();
    let label = report
        .services
        .iter()
        .find(|s| s.name == "labeling-ui")
        .unwrap();
    // Log lines come through verbatim, each in its own code block.
    let blocks: Vec<&String> = s.code_blocks.iter().map(|(l, _)| l).collect();
    assert!(blocks.contains(&&clean(&trainer.log_tail)), "{blocks:#?}");
    assert!(blocks.contains(&&clean(&label.log_tail)));
    assert!(blocks.contains(&&(label.failure.as_ref().unwrap().message.clone() + "\n")));
    assert!(md.contains("<summary>❌ <b>trainer</b>: network failure inside the build (network: token-fetch) at <code>trainer/Dockerfile:1</code></summary>"));
    assert!(md.contains("<summary>⚠️ base image <b>pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime</b> not pulled (token-fetch) after 6 attempts</summary>"));
    // Failed rows in the tables.
    let failed_rows: Vec<&Vec<String>> = s.tables[0].iter().filter(|r| r[0] == "❌").collect();
    assert_eq!(failed_rows.len(), 2);
    assert_eq!(s.tables[1].iter().filter(|r| r[0] == "❌").count(), 1);
    redactions().bind(|| insta::assert_snapshot!("summary_nine_of_eleven", md));
}

#[test]
fn summary_keeps_hostile_names_and_logs_in_their_cells_and_code_blocks() {
    let report = fixture("hostile");
    let md = default_summary(&report);
    let s = assert_sane_markdown(&md);
    let evil = &report.services[0];
    // The table has its 7 columns in every row, and the names are whole.
    for row in &s.tables[0] {
        assert_eq!(row.len(), 7, "{row:?}");
    }
    assert_eq!(s.tables[0][1][1], "evil::svc,%0A%name");
    assert!(
        s.tables[0][2][1].starts_with("after|evil"),
        "{:?}",
        s.tables[0][2]
    );
    // Every log line is inside one code block, unchanged (but for terminal escapes).
    assert!(
        s.code_blocks
            .iter()
            .any(|(l, _)| *l == clean(&evil.log_tail)),
        "{:#?}",
        s.code_blocks
    );
    // The HTML line in the log did not become HTML; the names survived.
    let rendered = html(&md);
    assert!(
        rendered.contains("&lt;/details&gt;&lt;script&gt;"),
        "the HTML log line is not shown as text"
    );
    assert!(!rendered.contains("<script>"));
    assert!(rendered.contains("evil::svc,%0A%name"));
    redactions().bind(|| insta::assert_snapshot!("summary_hostile", md));
}

fn big_report(services: usize, failures: usize, log_lines: usize) -> Report {
    let mut results = Vec::new();
    for i in 0..services {
        let failed = i % (services / failures.max(1)).max(1) == 0
            && results
                .iter()
                .filter(|r: &&ServiceResult| r.status == ServiceStatus::Failed)
                .count()
                < failures;
        let name = format!("svc-{i:03}");
        results.push(ServiceResult {
            name: name.clone(),
            image: format!("acme-{name}:2.0.0"),
            tags: vec![format!("acme-{name}:2.0.0")],
            status: if failed { ServiceStatus::Failed } else { ServiceStatus::Success },
            duration_ms: 1000 + i as u64 * 37,
            attempts: 1,
            builder: "buildx".into(),
            cached_steps: Some(3),
            total_steps: Some(9),
            image_id: (!failed).then(|| format!("sha256:{:064x}", i)),
            digest: None,
            size: (!failed).then_some(100_000_000 + i as u64),
            log_path: Some(format!("/out/logs/{name}.log")),
            dockerfile: format!("{name}/Dockerfile"),
            failure: failed.then(|| ServiceFailure {
                class: BuildFailureClass::RunFailed,
                network_class: None,
                message: format!("process \"/bin/sh -c make -C {name}\" did not complete successfully: exit code: 2"),
                line: Some(5),
            }),
            skipped_reason: None,
            log_tail: if failed {
                (0..log_lines).map(|l| format!("#12 {l:>4}.{i:03} compile {name}: {}", "x".repeat(180))).collect()
            } else {
                vec!["#12 DONE 0.4s".into()]
            },
            reused: false,
            reused_from: None,
        });
    }
    let mut report = Report::new(
        RunMeta {
            builder: "buildx".into(),
            duration_ms: 3_600_000,
            ..RunMeta::default()
        },
        None,
        results,
        Vec::new(),
    );
    report.failure_log = (0..failures)
        .map(|i| FailureLogEntry {
            at: "2026-11-28T10:00:00.000Z".into(),
            subject: format!("svc-{i:03}"),
            kind: "build".into(),
            class: "run-failed".into(),
            message: "exit code: 2".into(),
        })
        .collect();
    report
}

#[test]
fn summary_of_500_services_with_200_failures_stays_under_1_mib_and_keeps_every_failure() {
    let report = big_report(500, 200, 50);
    assert_eq!((report.totals.services, report.totals.failed), (500, 200));
    let md = default_summary(&report);
    assert!(md.len() < STEP_SUMMARY_LIMIT, "{} bytes", md.len());
    let s = assert_sane_markdown(&md);
    assert_eq!(s.headings[0], "❌ ai-infra-build: 300/500 succeeded");
    assert!(
        md.contains("**Shortened** to stay under GitHub's size limit"),
        "no trim note"
    );
    for failed in report
        .services
        .iter()
        .filter(|s| s.status == ServiceStatus::Failed)
    {
        assert!(
            md.contains(&format!("<summary>❌ <b>{}</b>", failed.name)),
            "{} lost",
            failed.name
        );
    }
    // Succeeded rows were left out first; failed rows remain in the table.
    assert_eq!(s.tables[0].len(), 1 + 200);
    let head: String = md.lines().take(12).collect::<Vec<_>>().join("\n");
    let tail: String = md
        .lines()
        .rev()
        .take(24)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let digest = format!(
        "{head}\n[… {} bytes, {} details blocks …]\n{tail}",
        md.len() / 1000 * 1000,
        md.matches("<details>").count()
    );
    redactions().bind(|| insta::assert_snapshot!("summary_500_services_200_failures", digest));
}

#[test]
fn comment_sized_summary_of_500_services_lists_every_failure() {
    let report = big_report(500, 200, 50);
    let md = summary::render(&report, &SummaryOptions::comment());
    assert!(
        md.len() <= SummaryOptions::comment().max_bytes,
        "{} bytes",
        md.len()
    );
    assert!(md.starts_with(summary::COMMENT_MARKER));
    assert_sane_markdown(&md);
    for failed in report
        .services
        .iter()
        .filter(|s| s.status == ServiceStatus::Failed)
    {
        assert!(
            md.contains(&format!("**{}**", failed.name)),
            "{} lost",
            failed.name
        );
    }
}

#[test]
fn summary_with_more_failures_than_fit_says_how_many_are_left_out() {
    let report = big_report(5000, 5000, 3);
    let opts = SummaryOptions::comment();
    let md = summary::render(&report, &opts);
    assert!(md.len() <= opts.max_bytes, "{} bytes", md.len());
    assert!(md.contains("0/5000 succeeded"));
    let note = md
        .lines()
        .find(|l| l.starts_with("… and "))
        .expect("a note on the failures left out");
    assert!(
        note.ends_with("more failures (see the JSON report)."),
        "{note}"
    );
}

// ---------------------------------------------------------------------------------------
// Workflow commands

/// The runner's command parser (`ActionCommand.TryParseV2`) and unescaping, ported.
/// A parsed command: name, properties, data.
type Cmd = (String, BTreeMap<String, String>, String);

fn parse_command(line: &str) -> Option<Cmd> {
    let rest = line.trim_start().strip_prefix("::")?;
    let end = rest.find("::")?;
    let (info, data) = (&rest[..end], &rest[end + 2..]);
    let (name, props) = info.split_once(' ').unwrap_or((info, ""));
    let unescape_prop = |v: &str| {
        v.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    };
    let mut properties = BTreeMap::new();
    for p in props.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=')?;
        properties.insert(k.to_string(), unescape_prop(v));
    }
    let data = data
        .replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%");
    Some((name.to_string(), properties, data))
}

/// What a runner does with a step's output: the commands it acts on (stop-commands honoured),
/// and the lines it shows as plain text.
fn run_like_the_runner(output: &str) -> (Vec<Cmd>, Vec<String>) {
    let mut commands = Vec::new();
    let mut plain = Vec::new();
    let mut stopped: Option<String> = None;
    for line in output.lines() {
        if let Some(token) = &stopped {
            if line.trim() == format!("::{token}::") {
                stopped = None;
            } else {
                plain.push(line.to_string());
            }
            continue;
        }
        match parse_command(line) {
            Some((name, _, data)) if name == "stop-commands" => stopped = Some(data),
            Some(cmd) => commands.push(cmd),
            None => plain.push(line.to_string()),
        }
    }
    (commands, plain)
}

#[test]
fn annotations_nine_of_eleven() {
    let report = fixture("nine-of-eleven");
    let paths = PathMapper::new(Path::new("/ws/shop"), Some(Path::new("/ws/shop")));
    let out = annotations::render(
        &report,
        &paths,
        "https://github.com/acme/shop/actions/runs/1",
        LogSource::Tail,
    );
    let (commands, _) = run_like_the_runner(&out);
    let kinds: Vec<&str> = commands
        .iter()
        .map(|(n, _, _)| n.as_str())
        .filter(|n| *n != "group" && *n != "endgroup")
        .collect();
    // Two build failures as errors (syntax/run-failed rank before network), the pull failure
    // as a warning at its FROM line, the retried build as a notice.
    assert_eq!(kinds, ["error", "error", "warning", "notice"]);
    let (_, props, _) = &commands.iter().find(|(n, _, _)| n == "error").unwrap();
    assert_eq!(props["file"], "labeling-ui/Dockerfile");
    assert_eq!(props["line"], "7");
    let (_, warn, _) = commands.iter().find(|(n, _, _)| n == "warning").unwrap();
    assert_eq!(
        (warn["file"].as_str(), warn["line"].as_str()),
        ("trainer/Dockerfile", "1")
    );
    let groups = commands.iter().filter(|(n, _, _)| n == "group").count();
    assert_eq!(groups, 11);
    redactions().bind(|| insta::assert_snapshot!("annotations_nine_of_eleven", out));
}

#[test]
fn annotations_paths_are_relative_to_the_workspace() {
    let report = fixture("nine-of-eleven");
    let paths = PathMapper::new(Path::new("/ws/mono/services"), Some(Path::new("/ws/mono")));
    let errors: Vec<String> = annotations::collect(&report, &paths)
        .into_iter()
        .filter_map(|a| a.file)
        .collect();
    assert!(
        errors.contains(&"services/labeling-ui/Dockerfile".to_string()),
        "{errors:?}"
    );
    assert!(errors.contains(&"services/trainer/Dockerfile".to_string()));
}

#[test]
fn hostile_logs_and_names_cannot_inject_commands() {
    let report = fixture("hostile");
    let out = annotations::render(&report, &PathMapper::default(), "", LogSource::Tail);
    let (commands, plain) = run_like_the_runner(&out);
    // Only our commands were acted on.
    for (name, _, data) in &commands {
        assert!(
            ["group", "endgroup", "error", "warning", "notice"].contains(&name.as_str()),
            "runner would act on ::{name}::{data}"
        );
        assert!(!(name == "error" && data == "pwned"));
    }
    // The injected lines reached the log as text, inside the group.
    for injected in [
        "::error::pwned",
        "::set-output name=pwned::yes",
        "::add-mask::runner",
        "::endgroup::",
        "::stop-commands::fake-token",
    ] {
        assert!(
            plain.iter().any(|l| l == injected),
            "{injected} missing from the log"
        );
    }
    let endgroups = commands.iter().filter(|(n, _, _)| n == "endgroup").count();
    let groups = commands.iter().filter(|(n, _, _)| n == "group").count();
    assert_eq!(groups, endgroups);
    // The names survive the round trip exactly.
    let evil = &report.services[0];
    let (_, props, data) = commands.iter().find(|(n, _, _)| n == "error").unwrap();
    assert_eq!(
        props["title"],
        format!("{}: a RUN step failed (run-failed)", evil.name)
    );
    assert_eq!(props["file"], "evil/Dockerfile");
    assert_eq!(props["line"], "3");
    assert!(data.starts_with("exit code: 1\n::error::pwned-from-message | `code` <b>bold</b> 50%, a:b\n\nLast log lines:\n"), "{data:?}");
    let group_titles: Vec<&String> = commands
        .iter()
        .filter(|(n, _, _)| n == "group")
        .map(|(_, _, d)| d)
        .collect();
    assert!(
        group_titles
            .iter()
            .any(|t| t.starts_with("build (evil::svc,%0A%name): FAILED")),
        "{group_titles:?}"
    );
    let warnings: Vec<&BTreeMap<String, String>> = commands
        .iter()
        .filter(|(n, _, _)| n == "warning")
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(warnings.len(), 2, "one per FROM line of the missing image");
    assert_eq!(
        warnings[0]["title"],
        "base image not pulled: 127.0.0.1:5000/evil:tag"
    );
}

proptest::proptest! {
    #[test]
    fn any_text_round_trips_through_data_and_properties(text in "(?s).{0,64}", other in "[:,%\r\n=a-z ]{0,16}") {
        let line = workflow::command("warning", &[("file", &text), ("title", &other)], &text);
        proptest::prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let (name, props, data) = parse_command(&line).unwrap();
        proptest::prop_assert_eq!(name, "warning");
        if !text.is_empty() {
            proptest::prop_assert_eq!(&props["file"], &text);
        }
        if !other.is_empty() {
            proptest::prop_assert_eq!(&props["title"], &other);
        }
        proptest::prop_assert_eq!(data, text);
    }
}

fn failing_service(i: usize, class: BuildFailureClass, line: Option<usize>) -> ServiceResult {
    ServiceResult {
        name: format!("s{i:02}"),
        image: format!("s{i:02}:1"),
        tags: vec![],
        status: ServiceStatus::Failed,
        duration_ms: 1,
        attempts: 1,
        builder: "buildx".into(),
        cached_steps: None,
        total_steps: None,
        image_id: None,
        digest: None,
        size: None,
        log_path: None,
        dockerfile: format!("s{i:02}/Dockerfile"),
        failure: Some(ServiceFailure {
            class,
            network_class: None,
            message: "boom".into(),
            line,
        }),
        skipped_reason: None,
        log_tail: vec![],
        reused: false,
        reused_from: None,
    }
}

#[test]
fn at_most_ten_annotations_per_level_ranked_with_an_overflow_note() {
    let mut services = Vec::new();
    for i in 0..25 {
        let class = if i % 5 == 0 {
            BuildFailureClass::Syntax
        } else {
            BuildFailureClass::Network
        };
        services.push(failing_service(i, class, (i % 2 == 0).then_some(2)));
    }
    let mut report = Report::new(RunMeta::default(), None, services, vec![]);
    report.base_images = (0..15)
        .map(|i| BaseImageResult {
            reference: format!("img{i}:1"),
            platform: None,
            status: ImageStatus::Failed,
            source: None,
            digest: None,
            attempts: 3,
            wait_ms: 0,
            duration_ms: 0,
            error_class: Some(if i < 3 {
                ErrorClass::ManifestUnknown
            } else {
                ErrorClass::Eof
            }),
            error: Some("nope".into()),
            used_at: vec![ImageUseSite {
                dockerfile: format!("s{i:02}/Dockerfile"),
                line: 1,
            }],
            via: None,
            via_reason: None,
            answers: Vec::new(),
        })
        .collect();
    let out = annotations::render(
        &report,
        &PathMapper::default(),
        "https://example.invalid/run/1",
        LogSource::Tail,
    );
    let (commands, _) = run_like_the_runner(&out);
    let errors: Vec<_> = commands.iter().filter(|(n, _, _)| n == "error").collect();
    let warnings: Vec<_> = commands.iter().filter(|(n, _, _)| n == "warning").collect();
    assert_eq!((errors.len(), warnings.len()), (10, 10));
    // The five syntax errors come first, those with a line before those without.
    let titles: Vec<&str> = errors.iter().map(|(_, p, _)| p["title"].as_str()).collect();
    assert_eq!(
        &titles[..5],
        [
            "s00: Dockerfile syntax error (syntax)",
            "s10: Dockerfile syntax error (syntax)",
            "s20: Dockerfile syntax error (syntax)",
            "s05: Dockerfile syntax error (syntax)",
            "s15: Dockerfile syntax error (syntax)"
        ]
    );
    let (_, note_props, note) = errors[9];
    assert_eq!(note_props["title"], "ai-infra-build: 16 more errors");
    assert!(!note_props.contains_key("file"));
    assert!(note.contains("https://example.invalid/run/1"), "{note}");
    // Permanent pull failures (unknown manifest) rank before transient ones.
    assert!(warnings[0].2.contains("(manifest-unknown)"));
    assert_eq!(warnings[9].1["title"], "ai-infra-build: 6 more warnings");
    let all = annotations::collect(&report, &PathMapper::default());
    assert_eq!(all.iter().filter(|a| a.level == Level::Error).count(), 25);
}

// ---------------------------------------------------------------------------------------
// Outputs

fn parse_outputs(file: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = file.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (name, delim) = line.split_once("<<").expect("heredoc form");
        let mut value = Vec::new();
        for l in lines.by_ref() {
            if l == delim {
                break;
            }
            value.push(l);
        }
        out.insert(name.to_string(), value.join("\n"));
    }
    out
}

#[test]
fn outputs_of_nine_of_eleven() {
    let report = fixture("nine-of-eleven");
    let text = outputs::render(&outputs::outputs(&report, "out/ai-infra-build-report.json"));
    let o = parse_outputs(&text);
    assert_eq!(o["report"], "out/ai-infra-build-report.json");
    assert_eq!(
        (
            o["succeeded"].as_str(),
            o["failed"].as_str(),
            o["skipped"].as_str()
        ),
        ("9", "2", "0")
    );
    let failed: Vec<String> = serde_json::from_str(&o["failed-services"]).unwrap();
    assert_eq!(failed, ["trainer", "labeling-ui"]);
    let images: BTreeMap<String, serde_json::Value> = serde_json::from_str(&o["images"]).unwrap();
    assert_eq!(images.len(), 9);
    assert_eq!(images["gateway"]["ref"], "shop-gateway:1.4.0");
    // Issue #13: `image-id` is the local image ID; `digest` only a push's registry digest.
    assert!(
        images["gateway"]["image-id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(images["gateway"]["digest"], serde_json::Value::Null);
}

// ---------------------------------------------------------------------------------------
// JSON Schema

fn schema() -> serde_json::Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn errors_of(instance: &serde_json::Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn all_error_classes() -> Vec<ErrorClass> {
    use ErrorClass::*;
    let all = vec![
        Eof,
        ConnectionReset,
        ConnectionRefused,
        Timeout,
        Stalled,
        DnsTemporary,
        RateLimited,
        ServerError,
        RequestTimeout,
        TokenFetch,
        ManifestUnknown,
        NameUnknown,
        Unauthorized,
        Denied,
        AuthRejected,
        InvalidReference,
        NoMatchingPlatform,
        DnsNotFound,
        TlsUntrusted,
        Other,
    ];
    // A new variant fails to compile here: add it to the list and to the schema.
    for c in &all {
        match c {
            Eof | ConnectionReset | ConnectionRefused | Timeout | Stalled | DnsTemporary
            | RateLimited | ServerError | RequestTimeout | TokenFetch | ManifestUnknown
            | NameUnknown | Unauthorized | Denied | AuthRejected | InvalidReference
            | NoMatchingPlatform | DnsNotFound | TlsUntrusted | Other => {}
        }
    }
    all
}

fn all_failure_classes() -> Vec<BuildFailureClass> {
    use BuildFailureClass::*;
    let all = vec![
        Network, Syntax, RunFailed, Input, Stalled, TimedOut, BaseImage, Auth, Builder, Other,
    ];
    for c in &all {
        match c {
            Network | Syntax | RunFailed | Input | Stalled | TimedOut | BaseImage | Auth
            | Builder | Other => {}
        }
    }
    all
}

#[test]
fn the_schema_is_a_valid_json_schema() {
    jsonschema::meta::validate(&schema()).expect("valid against its meta-schema");
}

#[test]
fn every_fixture_validates_against_the_schema() {
    for name in ["all-green", "nine-of-eleven", "hostile"] {
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture_path(name)).unwrap()).unwrap();
        assert_eq!(errors_of(&value), Vec::<String>::new(), "{name}");
        // And what we write for it too.
        let written = serde_json::to_value(fixture(name)).unwrap();
        assert_eq!(
            errors_of(&written),
            Vec::<String>::new(),
            "{name} re-serialized"
        );
    }
}

#[test]
fn a_report_using_every_enum_value_validates() {
    let mut services = Vec::new();
    for (i, class) in all_failure_classes().into_iter().enumerate() {
        let mut s = failing_service(i, class, Some(1));
        s.failure.as_mut().unwrap().network_class = all_error_classes().get(i).copied();
        services.push(s);
    }
    for (i, status) in [
        ServiceStatus::Success,
        ServiceStatus::Skipped,
        ServiceStatus::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = failing_service(100 + i, BuildFailureClass::Other, None);
        s.status = status;
        s.failure = None;
        services.push(s);
    }
    let mut report = Report::new(RunMeta::default(), None, services, vec![]);
    for (i, class) in all_error_classes().into_iter().enumerate() {
        let status = [
            ImageStatus::Pulled,
            ImageStatus::Present,
            ImageStatus::Failed,
        ][i % 3];
        report.base_images.push(BaseImageResult {
            reference: format!("i{i}"),
            platform: None,
            status,
            source: Some("docker.io".into()),
            digest: None,
            attempts: 1,
            wait_ms: 0,
            duration_ms: 0,
            error_class: Some(class),
            error: None,
            used_at: vec![ImageUseSite {
                dockerfile: "Dockerfile".into(),
                line: 1,
            }],
            // Every pull path, so the schema sees each (issue 12: direct pulls).
            via: [None, Some(PullPath::Relay), Some(PullPath::Direct)][i % 3],
            via_reason: (i % 3 == 2).then(|| "the daemon runs rootless".to_string()),
            answers: vec![ai_infra_build::report::diagnosis::SourceAnswer {
                source: "mirror.example.com".into(),
                role: ai_infra_build::report::diagnosis::SourceRole::Mirror,
                class,
            }],
        });
        report.network.failures_by_class.insert(class, i);
    }
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(errors_of(&value), Vec::<String>::new());
}

#[test]
fn the_schema_rejects_unknown_fields_and_values() {
    let mut value = serde_json::to_value(fixture("nine-of-eleven")).unwrap();
    value["services"][0]["colour"] = "blue".into();
    assert!(!errors_of(&value).is_empty(), "an unknown field passed");
    let mut value = serde_json::to_value(fixture("nine-of-eleven")).unwrap();
    value["services"][0]["status"] = "exploded".into();
    assert!(!errors_of(&value).is_empty(), "an unknown status passed");
    let mut value = serde_json::to_value(fixture("nine-of-eleven")).unwrap();
    value["version"] = 2.into();
    assert!(!errors_of(&value).is_empty(), "another version passed");
}

// ---------------------------------------------------------------------------------------
// `report --from FILE --format VIEW`

fn report_cli(from: &Path, format: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ai-infra-build"))
        .args(["report", "--from"])
        .arg(from)
        .args(["--format", format])
        .env("NO_COLOR", "1")
        .env_remove("GITHUB_WORKSPACE")
        .env_remove("GITHUB_SERVER_URL")
        .env_remove("GITHUB_RUN_ID")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn report_command_reproduces_every_view() {
    let path = fixture_path("nine-of-eleven");
    let report = fixture("nine-of-eleven");
    let env = ActionsEnv::default();
    let ui = plain_ui();
    let redact = |s: &str| {
        let mut s = s.to_string();
        for re in [r"aib-[0-9a-f]{32}", r"ghadelimiter_[0-9a-f]{32}"] {
            s = regex_lite_replace(&s, re);
        }
        s
    };
    let root = std::env::current_dir().unwrap();
    let paths = PathMapper::new(&root, None);
    let ctx = views::ViewContext {
        ui: &ui,
        actions: &env,
        paths: &paths,
        report_path: path.display().to_string(),
        report_shown: path.display().to_string(),
        log_source: LogSource::FileOrTail,
    };
    // Every view a run publishes can be printed, and prints what the run wrote.
    assert_eq!(
        views::names(),
        [
            "json",
            "annotations",
            "markdown",
            "outputs",
            "comment",
            "terminal"
        ]
    );
    for view in views::ALL {
        let flag = view.name();
        let got = stdout(&report_cli(&path, flag));
        let want = view.render(&report, &ctx);
        assert!(
            redact(got.trim_end_matches('\n')) == redact(want.trim_end_matches('\n')),
            "--format {flag} printed something else than the view"
        );
    }
    // The JSON view is the report itself.
    let json = stdout(&report_cli(&path, "json"));
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    // The markdown view is the step summary with the report named.
    let md = stdout(&report_cli(&path, "markdown"));
    assert!(md.starts_with("## ❌ ai-infra-build: 9/11 succeeded"));
    assert!(md.contains("nine-of-eleven.json"));
    // The terminal view shows the table without colour codes (NO_COLOR).
    let table = stdout(&report_cli(&path, "terminal"));
    assert!(!table.contains('\u{1b}'));
    assert!(
        table.contains("✘ labeling-ui: a RUN step failed (run-failed) at labeling-ui/Dockerfile:7"),
        "{table}"
    );
    assert!(
        table
            .trim_end()
            .ends_with("9/11 succeeded in 8m 18s, 2 failed"),
        "{table}"
    );
}

/// Replaces every match of a `PREFIX[0-9a-f]{32}` pattern by `PREFIX…` (no regex crate needed).
fn regex_lite_replace(text: &str, pattern: &str) -> String {
    let prefix = pattern.split('[').next().unwrap();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        out.push('…');
        let after = &rest[i + prefix.len()..];
        let hex = after.chars().take_while(|c| c.is_ascii_hexdigit()).count();
        rest = &after[hex..];
    }
    out.push_str(rest);
    out
}

#[test]
fn report_command_rejects_missing_and_newer_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = report_cli(&dir.path().join("nope.json"), "markdown");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the report"));
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path("all-green")).unwrap()).unwrap();
    value["version"] = 99.into();
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, value.to_string()).unwrap();
    let out = report_cli(&newer, "json");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("report format v99 is newer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn terminal_table_is_coloured_only_when_asked() {
    let report = fixture("nine-of-eleven");
    let plain = terminal::render(&report, &plain_ui());
    assert!(!plain.contains('\u{1b}'));
    let coloured = terminal::render(
        &report,
        &Ui {
            color: true,
            ..plain_ui()
        },
    );
    assert!(coloured.contains('\u{1b}'));
    assert_eq!(console::strip_ansi_codes(&coloured), plain);
    // Columns line up: the image column starts at the same width in every row.
    let rows: Vec<&str> = plain.lines().take(12).collect();
    let col = console::measure_text_width(&rows[0][..rows[0].find("IMAGE").unwrap()]);
    for row in &rows[1..] {
        assert_eq!(
            console::measure_text_width(&row[..row.find("shop-").unwrap()]),
            col,
            "{row}"
        );
    }
}
