//! The binary's command line as a user sees it: every help text, the version, `plan` and
//! `doctor` output, and each family of error message with its exit code, pinned as trycmd
//! cases. They are the regression guard of what the CLI prints: a change to any of it must
//! show up here as a diff.
//!
//! Layout: `tests/cli/<family>/<case>.toml` (the arguments, `fs.cwd`, extra `env.add`, the
//! expected `status.code`) with `<case>.stdout` and `<case>.stderr` beside it (both always
//! present: trycmd checks only the streams that have a file). Families: `help`, `usage`
//! (clap's own errors), `input` (config and input errors), `environment`, `plan`, `doctor`.
//! Fixture projects live in `tests/cli/fixtures/`; the bundled `examples/monorepo` is used
//! as it is.
//!
//! Elisions in expected output: `[..]` matches the rest of a line up to what follows, `...` on
//! its own line any number of lines (used for host facts in the doctor cases: versions,
//! kernel, builders, probe times). `[CWD]` is the case's working directory, `[VERSION]` the
//! crate's version and `[PLATFORM]` the `os-arch` in cache keys.
//!
//! Update the expected output after a deliberate change, then review the diff:
//!
//!     TRYCMD=overwrite cargo test --locked --test cli_cases
//!
//! (`TRYCMD=dump` writes the actual output to `dump/` instead). One case only:
//! `cargo test --test cli_cases -- cli_cases trycmd=NAME`.
//!
//! The doctor cases need the Docker daemon (scripts/setup starts it); everything else runs
//! without one.

use std::time::Duration;

/// Variables that change what the binary prints or does: the Action's inputs (clap reads
/// `INPUT_*` as flag values, and help texts show their values), the runner's `GITHUB_*` and
/// `RUNNER_*` (step outputs, repository name, annotations), and colour forcing.
fn influences_the_binary(name: &str) -> bool {
    ["INPUT_", "GITHUB_", "RUNNER_", "ACTIONS_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || ["CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "RUST_LOG"].contains(&name)
}

#[test]
fn cli_cases() {
    let inherited: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| influences_the_binary(name))
        .collect();
    for name in inherited {
        // SAFETY: this test binary holds this one test and nothing else runs yet: no other
        // thread reads or writes the environment while it changes. The cases' processes
        // inherit the cleaned environment; a case adds what it needs with `env.add`.
        unsafe { std::env::remove_var(name) };
    }
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    trycmd::TestCases::new()
        .register_bin(
            "ai-infra-build",
            std::path::Path::new(env!("CARGO_BIN_EXE_ai-infra-build")),
        )
        .default_bin_name("ai-infra-build")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(60))
        .case("tests/cli/*/*.toml")
        .insert_var("[VERSION]", env!("CARGO_PKG_VERSION"))
        .expect("a valid variable")
        .insert_var("[PLATFORM]", platform)
        .expect("a valid variable")
        .run();
}
