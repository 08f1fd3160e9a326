//! Issue #6: the action's definition (action.yml) and what is derived from it: every input
//! of the issue is declared with a description and a default, inputs reach the binary only
//! through `env:` under the names its CLI reads, the steps come in the issue's order, the
//! README's inputs and outputs tables are the ones generated from action.yml, and the
//! workflows pin their actions.
//!
//! `AIB_UPDATE_README=1 cargo test --test action` rewrites the README's tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    name: String,
    description: String,
    author: Option<String>,
    branding: Branding,
    inputs: BTreeMap<String, Input>,
    outputs: BTreeMap<String, OutputDef>,
    runs: Runs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Branding {
    icon: String,
    color: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    description: String,
    required: Option<bool>,
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDef {
    description: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Runs {
    using: String,
    steps: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Step {
    name: Option<String>,
    id: Option<String>,
    #[serde(rename = "if")]
    condition: Option<String>,
    uses: Option<String>,
    run: Option<String>,
    shell: Option<String>,
    working_directory: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    with: BTreeMap<String, String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn action() -> Action {
    serde_saphyr::from_str(&read("action.yml")).expect("action.yml parses")
}

/// The keys of a top-level mapping of action.yml (`inputs` or `outputs`), in file order.
fn keys_in_order(section: &str) -> Vec<String> {
    let text = read("action.yml");
    let mut inside = false;
    let mut keys = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            inside = line == format!("{section}:");
            continue;
        }
        if inside
            && let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !key.starts_with(' ')
        {
            keys.push(key.to_string());
        }
    }
    keys
}

fn step<'a>(action: &'a Action, id: &str) -> &'a Step {
    action
        .runs
        .steps
        .iter()
        .find(|s| s.id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no step with id {id}"))
}

const ISSUE_INPUTS: [&str; 43] = [
    "config",
    "services",
    "only",
    "skip",
    "tag",
    "prefix",
    "parallel",
    "backend",
    "mirrors",
    "mirror-first",
    "max-retries",
    "build-retries",
    "build-timeout",
    "pull",
    "prefetch-failure",
    "force",
    "push",
    "cache",
    "cache-dir",
    "cache-key-prefix",
    "github-token",
    "checks",
    "pr-comment",
    "binary-url",
    "version",
    "working-directory",
    // Issue #9: a matrix job builds one shard.
    "shard",
    "merge-reports",
    // Issue #7: the cache budget.
    "cache-max-size",
    // Issue #13: build-push-action's names (`builder` became `backend`).
    "buildx-builder",
    "build-args",
    "labels",
    "platforms",
    "secrets",
    "secret-envs",
    "secret-files",
    "ssh",
    "provenance",
    "sbom",
    "no-cache",
    // Issue #16: no cache churn.
    "cache-save",
    // Issue #15: build only what changed.
    "reuse",
    "changed-since",
];

const ISSUE_OUTPUTS: [&str; 9] = [
    "report",
    "succeeded",
    "failed",
    "skipped",
    "failed-services",
    "images",
    "cache-key",
    // Issue #13: buildx-style metadata.
    "metadata",
    // Issue #16: the cache directory's content key.
    "cache-content-key",
];

#[test]
fn every_input_and_output_of_the_issue_is_declared_and_described() {
    let action = action();
    assert_eq!(action.name, "ai-infra-build");
    assert!(!action.description.is_empty() && action.author.is_some());
    assert!(!action.branding.icon.is_empty() && !action.branding.color.is_empty());
    assert_eq!(action.runs.using, "composite");

    let declared: BTreeSet<&str> = action.inputs.keys().map(String::as_str).collect();
    assert_eq!(declared, ISSUE_INPUTS.into_iter().collect::<BTreeSet<_>>());
    for (name, input) in &action.inputs {
        assert!(
            input.description.trim().len() > 10,
            "input {name} needs a description"
        );
        assert!(input.default.is_some(), "input {name} needs a default");
        assert_ne!(
            input.required,
            Some(true),
            "input {name}: every input has a default"
        );
    }
    for (name, default) in [
        ("cache", "true"),
        ("checks", "false"),
        ("pr-comment", "false"),
        ("push", "false"),
        ("backend", "auto"),
        ("no-cache", "false"),
        ("secrets", ""),
        ("pull", "missing"),
        ("prefetch-failure", "warn"),
        ("working-directory", "."),
        ("max-retries", "5"),
        ("build-retries", "2"),
        ("github-token", "${{ github.token }}"),
    ] {
        assert_eq!(
            action.inputs[name].default.as_deref(),
            Some(default),
            "default of {name}"
        );
    }

    let outputs: BTreeSet<&str> = action.outputs.keys().map(String::as_str).collect();
    assert_eq!(outputs, ISSUE_OUTPUTS.into_iter().collect::<BTreeSet<_>>());
    for (name, output) in &action.outputs {
        assert!(
            !output.description.is_empty(),
            "output {name} needs a description"
        );
        let step = if name == "cache-key" { "plan" } else { "build" };
        assert_eq!(
            output.value,
            format!("${{{{ steps.{step}.outputs.{name} }}}}"),
            "output {name}"
        );
    }
}

#[test]
fn steps_install_plan_restore_build_save_in_that_order() {
    let action = action();
    let ids: Vec<&str> = action
        .runs
        .steps
        .iter()
        .filter_map(|s| s.id.as_deref())
        .collect();
    assert_eq!(ids, ["install", "plan", "cache-restore", "build"]);
    let install = step(&action, "install");
    assert_eq!(
        install.run.as_deref().map(str::trim),
        Some(r#"bash "$GITHUB_ACTION_PATH/dist/install.sh""#)
    );
    assert_eq!(install.env["AIB_VERSION"], "${{ inputs.version }}");
    assert_eq!(install.env["AIB_BINARY_URL"], "${{ inputs.binary-url }}");

    let restore = step(&action, "cache-restore");
    assert!(
        restore
            .uses
            .as_deref()
            .unwrap()
            .starts_with("actions/cache/restore@")
    );
    assert!(
        restore
            .condition
            .as_deref()
            .unwrap()
            .contains("inputs.cache == 'true'"),
        "restore is skipped with cache: false"
    );

    let save = action.runs.steps.last().unwrap();
    assert!(
        save.uses
            .as_deref()
            .unwrap()
            .starts_with("actions/cache/save@")
    );
    let condition = save.condition.as_deref().unwrap();
    assert!(
        condition.starts_with("always() && inputs.cache == 'true'"),
        "{condition}"
    );
    assert_eq!(save.with["path"], "${{ steps.plan.outputs.cache-dir }}");
    // Issue 16: saved under its content key, only when that changed and cache-save allows.
    assert_eq!(
        save.with["key"],
        "${{ steps.plan.outputs.cache-key }}-${{ steps.build.outputs.cache-content-key }}"
    );
    for part in [
        "steps.plan.outputs.cache-save == 'true'",
        "steps.build.outputs.cache-content-key != ''",
        "!endsWith(steps.cache-restore.outputs.cache-matched-key, format('-{0}', steps.build.outputs.cache-content-key))",
    ] {
        assert!(condition.contains(part), "{condition} lacks {part}");
    }

    for step in &action.runs.steps {
        assert!(step.name.is_some(), "every step has a name");
        if step.run.is_some() {
            assert_eq!(step.shell.as_deref(), Some("bash"));
        }
    }
    for id in ["plan", "build"] {
        assert_eq!(
            step(&action, id).working_directory.as_deref(),
            Some("${{ inputs.working-directory }}")
        );
    }
}

/// Script injection: an input pasted into a script runs as code. Inputs go through `env:`.
#[test]
fn no_expression_is_pasted_into_a_script() {
    let action = action();
    for step in &action.runs.steps {
        if let Some(run) = &step.run {
            assert!(
                !run.contains("${{"),
                "step {:?} pastes an expression into its script:\n{run}",
                step.name
            );
        }
    }
    // The workflows too, except where the value is not from outside (none today).
    for workflow in workflows() {
        let text = read(&workflow);
        let mut in_run = false;
        let mut run_indent = 0;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            if in_run && !line.trim().is_empty() && indent <= run_indent {
                in_run = false;
            }
            if let Some(rest) = line.trim_start().strip_prefix("run:") {
                in_run = true;
                run_indent = indent;
                assert!(!rest.contains("${{"), "{workflow}: {line}");
                continue;
            }
            if in_run {
                assert!(
                    !line.contains("${{"),
                    "{workflow}: an expression in a script: {line}"
                );
            }
        }
    }
}

/// The binary reads `INPUT_*` like its flags (`env = "INPUT_…"`): every one of them is set by
/// the build step from the input of the same name, and the step sets no other `INPUT_*`
/// except those waiting for their flag.
#[test]
fn the_build_step_sets_exactly_the_input_variables_the_cli_reads() {
    // Set by the action, read by the binary once their issue lands.
    const PENDING: [(&str, &str); 3] = [
        ("INPUT_CACHE", "#7 cache"),
        ("INPUT_CACHE_DIR", "#7 cache"),
        ("INPUT_CACHE_KEY_PREFIX", "#7 cache"),
    ];
    // Read by the CLI, not an action input (the report goes to the default directory).
    const CLI_ONLY: [&str; 1] = ["INPUT_OUT_DIR"];

    let mut cli: BTreeSet<String> = BTreeSet::new();
    let command = ai_infra_build::cli::Cli::command();
    let mut stack = vec![&command];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                cli.insert(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(cmd.get_subcommands());
    }
    let action = action();
    let build = step(&action, "build");
    let set: BTreeSet<String> = build
        .env
        .keys()
        .filter(|k| k.starts_with("INPUT_"))
        .cloned()
        .collect();

    for name in &cli {
        if CLI_ONLY.contains(&name.as_str()) {
            continue;
        }
        assert!(
            set.contains(name),
            "the CLI reads {name}, but the build step does not set it"
        );
    }
    for name in &set {
        assert!(
            cli.contains(name) || PENDING.iter().any(|(p, _)| p == name),
            "the build step sets {name}, which the CLI does not read"
        );
        // INPUT_FOO_BAR comes from input foo-bar (the token and the cache dir via expressions).
        let input = name
            .trim_start_matches("INPUT_")
            .to_ascii_lowercase()
            .replace('_', "-");
        let value = &build.env[name];
        assert!(
            value.contains(&format!("inputs.{input}"))
                || value.contains(&format!("outputs.{input}")),
            "{name}: {value}"
        );
    }
    for name in ["INPUT_CONFIG", "INPUT_TAG", "INPUT_PREFIX"] {
        assert!(
            step(&action, "plan").env.contains_key(name),
            "plan reads {name} too"
        );
    }
    // Empty inputs are "not given": both steps unset them before the binary starts.
    for id in ["plan", "build"] {
        let run = step(&action, id).run.as_deref().unwrap();
        assert!(
            run.contains("compgen -e INPUT_") && run.contains("unset"),
            "{id}"
        );
    }
}

#[test]
fn the_token_is_masked_and_only_given_to_the_binary_when_used() {
    let action = action();
    let first = &action.runs.steps[0];
    assert_eq!(first.env["AIB_GITHUB_TOKEN"], "${{ inputs.github-token }}");
    assert!(first.run.as_deref().unwrap().contains("::add-mask::"));
    let token = &step(&action, "build").env["INPUT_GITHUB_TOKEN"];
    assert_eq!(
        token,
        "${{ (inputs.checks == 'true' || inputs.pr-comment == 'true') && inputs.github-token || '' }}"
    );
    let uses_token = action
        .runs
        .steps
        .iter()
        .filter(|s| s.env.values().any(|v| v.contains("inputs.github-token")))
        .count();
    assert_eq!(
        uses_token, 2,
        "only the mask step and the build step see the token"
    );
}

/// Issue #13: the values of the `secrets` input are masked before any step shows its
/// environment, and only the build step hands them to the binary (as INPUT_SECRETS, never on
/// a command line).
#[test]
fn secret_values_are_masked_first_and_only_given_to_the_build_step() {
    let action = action();
    let first = &action.runs.steps[0];
    assert_eq!(first.env["AIB_SECRETS"], "${{ inputs.secrets }}");
    let run = first.run.as_deref().unwrap();
    assert!(run.contains("value=${line#*=}") && run.contains("::add-mask::$value"));
    let steps: Vec<&str> = action
        .runs
        .steps
        .iter()
        .filter(|s| s.env.values().any(|v| v.contains("inputs.secrets")))
        .filter_map(|s| s.id.as_deref().or(s.name.as_deref()))
        .collect();
    assert_eq!(steps, ["Mask secrets", "build"]);
    assert_eq!(
        step(&action, "build").env["INPUT_SECRETS"],
        "${{ inputs.secrets }}"
    );
}

fn workflows() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join(".github/workflows"))
        .unwrap()
        .flatten()
        .map(|e| format!(".github/workflows/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn workflows_pin_actions_by_sha_and_default_to_read_permissions() {
    let mut files = workflows();
    assert!(files.contains(&".github/workflows/release.yml".to_string()));
    assert!(files.contains(&".github/workflows/self-test.yml".to_string()));
    files.push("action.yml".into());
    for file in files {
        let text = read(&file);
        for line in text.lines() {
            let Some(used) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("uses:")
            else {
                continue;
            };
            let used = used.split('#').next().unwrap().trim();
            if used == "./" {
                continue;
            }
            let (_, rev) = used
                .split_once('@')
                .unwrap_or_else(|| panic!("{file}: unpinned {used}"));
            assert!(
                rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                "{file}: {used} is not pinned by commit SHA"
            );
            assert!(
                line.contains("# v"),
                "{file}: say which version the SHA is: {line}"
            );
        }
        if file != "action.yml" {
            assert!(
                text.contains("\npermissions:\n  contents: read\n"),
                "{file}: top-level permissions must be contents: read"
            );
        }
    }
    let self_test = read(".github/workflows/self-test.yml");
    assert!(self_test.contains("uses: ./\n") && self_test.contains("cache: false"));
    assert!(self_test.contains("working-directory: examples/monorepo"));
}

// ---------------------------------------------------------------------------------------
// The README's tables.

const INPUTS_START: &str = "<!-- inputs: generated from action.yml, see tests/action.rs -->";
const INPUTS_END: &str = "<!-- end of inputs -->";
const OUTPUTS_START: &str = "<!-- outputs: generated from action.yml, see tests/action.rs -->";
const OUTPUTS_END: &str = "<!-- end of outputs -->";

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn inputs_table(action: &Action) -> String {
    let mut out = String::from("| input | default | description |\n|---|---|---|\n");
    for name in keys_in_order("inputs") {
        let input = &action.inputs[&name];
        let default = match input.default.as_deref() {
            None | Some("") => String::new(),
            Some(d) => format!("`{}`", cell(d)),
        };
        out.push_str(&format!(
            "| `{name}` | {default} | {} |\n",
            cell(&input.description)
        ));
    }
    out
}

fn outputs_table(action: &Action) -> String {
    let mut out = String::from("| output | description |\n|---|---|\n");
    for name in keys_in_order("outputs") {
        out.push_str(&format!(
            "| `{name}` | {} |\n",
            cell(&action.outputs[&name].description)
        ));
    }
    out
}

/// Replaces what is between `start` and `end` in `text`.
fn splice(text: &str, start: &str, end: &str, body: &str) -> String {
    let a = text
        .find(start)
        .unwrap_or_else(|| panic!("README lacks the marker {start}"));
    let b = text[a..]
        .find(end)
        .map(|i| a + i)
        .unwrap_or_else(|| panic!("README lacks the marker {end}"));
    format!("{}{start}\n{body}{}", &text[..a], &text[b..])
}

#[test]
fn readme_tables_are_generated_from_action_yml() {
    let action = action();
    assert_eq!(keys_in_order("inputs").len(), action.inputs.len());
    assert_eq!(keys_in_order("outputs").len(), action.outputs.len());
    let readme = read("README.md");
    let wanted = splice(&readme, INPUTS_START, INPUTS_END, &inputs_table(&action));
    let wanted = splice(&wanted, OUTPUTS_START, OUTPUTS_END, &outputs_table(&action));
    if wanted != readme && std::env::var_os("AIB_UPDATE_README").is_some() {
        std::fs::write(root().join("README.md"), &wanted).unwrap();
        return;
    }
    assert!(
        wanted == readme,
        "the README's inputs/outputs tables differ from action.yml; run `AIB_UPDATE_README=1 cargo test --test action` and commit README.md.\n--- expected tables:\n{}\n{}",
        inputs_table(&action),
        outputs_table(&action)
    );
}

#[test]
fn readme_quick_start_is_two_commands() {
    let readme = read("README.md");
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    let commands: Vec<&str> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("    ") && !l.trim().is_empty())
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(commands, ["scripts/demo", "scripts/test"]);
    for section in [
        "### Inputs",
        "### Outputs",
        "## Troubleshooting",
        "### Exit codes",
    ] {
        assert!(readme.contains(section), "README lacks {section}");
    }
    for error in ["EOF", "oauth token", "toomanyrequests"] {
        assert!(
            readme.contains(error),
            "the troubleshooting section should explain {error}"
        );
    }
}
