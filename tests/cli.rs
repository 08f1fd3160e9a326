//! The binary's command line: help texts, usage errors and exit codes (issue #2).

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ai-infra-build"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the ai-infra-build binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SUBCOMMANDS: [&str; 6] = ["build-all", "build", "prefetch", "plan", "doctor", "report"];

#[test]
fn top_level_help_lists_every_subcommand_and_the_exit_codes() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("  {sub} ")),
            "help lacks {sub}:\n{text}"
        );
    }
    for flag in ["--config", "--output", "--verbose", "--quiet", "--color"] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
    assert!(text.contains("Exit codes: 0 success"), "{text}");
}

#[test]
fn every_subcommand_has_help_that_says_what_it_does() {
    for sub in SUBCOMMANDS {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help: {}", stderr(&out));
        let text = stdout(&out);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.split_whitespace().count() >= 5,
            "{sub} --help starts too thin: {first:?}"
        );
        assert!(text.contains("Usage: ai-infra-build"), "{sub}: {text}");
    }
}

#[test]
fn version_flag_prints_the_crate_version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("ai-infra-build {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_name_the_bad_input() {
    let out = run(&["--output", "xml", "doctor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("xml"), "{}", stderr(&out));

    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("frobnicate"), "{}", stderr(&out));

    let out = run(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SERVICE"), "{}", stderr(&out));
}
