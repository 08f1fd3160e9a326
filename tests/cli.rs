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

/// Issue #7: in GitHub Actions, `plan` hands the cache key to actions/cache as step outputs
/// (`cache-key`, `cache-restore-keys` one per line), behind the user's prefix; a prefix the
/// cache service would refuse is a usage error that writes nothing.
#[test]
fn plan_writes_the_cache_key_outputs_for_actions_cache() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/monorepo");
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("github-output");
    let plan = |prefix: &str| {
        Command::new(env!("CARGO_BIN_EXE_ai-infra-build"))
            .args(["plan", "--output", "json"])
            .current_dir(example)
            .env("NO_COLOR", "1")
            .env("GITHUB_OUTPUT", &outputs)
            .env("INPUT_CACHE_KEY_PREFIX", prefix)
            .output()
            .unwrap()
    };
    let out = plan("team-a");
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = json["cache_key"]["key"].as_str().unwrap();
    assert!(key.starts_with("team-a-ai-infra-build-cache-v"), "{key}");
    let restore: Vec<&str> = json["cache_key"]["restore_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(restore.len(), 3);
    assert!(restore.iter().all(|r| key.starts_with(r)), "{restore:?}");

    // The runner's heredoc form: NAME<<DELIM, the value's lines, DELIM.
    let written = std::fs::read_to_string(&outputs).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    let value_of = |name: &str| -> Vec<&str> {
        let start = lines
            .iter()
            .position(|l| l.starts_with(&format!("{name}<<")))
            .unwrap_or_else(|| panic!("no {name} in {written}"));
        let delimiter = lines[start].split_once("<<").unwrap().1;
        lines[start + 1..]
            .iter()
            .take_while(|l| **l != delimiter)
            .copied()
            .collect()
    };
    assert_eq!(value_of("cache-key"), [key]);
    assert_eq!(value_of("cache-restore-keys"), restore);

    for bad in ["a,b", "two words", "line\nbreak"] {
        let _ = std::fs::remove_file(&outputs);
        let out = plan(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cache key prefix"),
            "{bad:?}: {}",
            stderr(&out)
        );
        assert!(!outputs.exists(), "{bad:?} wrote outputs");
    }
}
