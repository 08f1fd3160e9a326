//! Issue 14: real public multi-service projects (tests/fixtures/compose-corpus, each with its
//! SOURCE.md) planned by the binary, compared with the plan written by reading their files
//! (`expected.json`: services, image names, aliases, tags, dependencies, base images).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose-corpus")
}

/// `plan --output json` in `dir` with only `env` in the environment.
fn run_plan(dir: &Path, flags: &[String], env: &BTreeMap<String, String>) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ai-infra-build"))
        .args([
            "plan", "--output", "json", "--prefix", "corpus-", "--tag", "t",
        ])
        .args(flags)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(v: Vec<String>) -> Vec<String> {
    let mut v = v;
    v.sort();
    v
}

/// Differences between one run's plan and its expectation.
fn compare(project: &str, run: &Value, plan: &Value) -> Vec<String> {
    let name = run["name"].as_str().unwrap_or("?");
    let at = |what: String| format!("{project} ({name}): {what}");
    let mut problems = Vec::new();
    let expected = run["services"]
        .as_object()
        .expect("services in expected.json");
    let planned: BTreeMap<String, &Value> = plan["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| (s["name"].as_str().unwrap_or_default().to_string(), s))
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<&String> = expected.keys().collect();
    let got: BTreeSet<&String> = planned.keys().collect();
    if want != got {
        problems.push(at(format!("services {got:?}, expected {want:?}")));
    }
    let mut all_bases = BTreeSet::new();
    let mut checked_all_bases = true;
    for (service, exp) in expected {
        let Some(got) = planned.get(service) else {
            continue;
        };
        if let Some(image) = exp.get("image")
            && got["image"] != *image
        {
            problems.push(at(format!(
                "{service}: image {}, expected {image}",
                got["image"]
            )));
        }
        for (key, default_empty) in [
            ("aliases", true),
            ("tags", true),
            ("depends_on", true),
            ("base_images", false),
        ] {
            let Some(want) = exp
                .get(key)
                .or(if default_empty && exp.get("image").is_some() {
                    Some(&Value::Null)
                } else {
                    None
                })
            else {
                if key == "base_images" {
                    checked_all_bases = false;
                }
                continue;
            };
            let want = sorted(strings(Some(want)));
            let got = sorted(strings(got.get(key)));
            if key == "base_images" {
                all_bases.extend(want.iter().cloned());
            }
            if want != got {
                problems.push(at(format!("{service}: {key} {got:?}, expected {want:?}")));
            }
        }
    }
    if checked_all_bases {
        let got: BTreeSet<String> = plan["base_images"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["reference"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if got != all_bases {
            problems.push(at(format!(
                "base images to prefetch {got:?}, expected {all_bases:?}"
            )));
        }
    }
    problems
}

#[test]
fn issue_14_every_corpus_project_plans_as_its_files_say() {
    let mut projects: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    projects.sort();
    assert!(
        projects.len() >= 10,
        "the corpus has {} projects",
        projects.len()
    );
    let mut repositories = BTreeSet::new();
    let mut problems = Vec::new();
    let mut runs = 0;
    for dir in &projects {
        let project = dir.file_name().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(dir.join("SOURCE.md")).expect("SOURCE.md");
        assert!(
            source.contains("Commit: ") && source.contains("Licence: "),
            "{project}"
        );
        assert!(
            dir.join("LICENSE").is_file(),
            "{project}: the licence notice"
        );
        if let Some(repo) = source
            .lines()
            .find_map(|l| l.strip_prefix("- Repository: "))
        {
            repositories.insert(repo.split(' ').next().unwrap_or(repo).to_string());
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        for run in expected["runs"].as_array().unwrap() {
            runs += 1;
            let flags = strings(run.get("flags"));
            let env: BTreeMap<String, String> = run
                .get("env")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let (code, plan, stderr) = run_plan(dir, &flags, &env);
            if code != 0 {
                problems.push(format!("{project}: exit {code}: {stderr}"));
                continue;
            }
            assert!(
                plan["reader"]
                    .as_str()
                    .is_some_and(|r| r.contains("compose reader")),
                "{project}: the plan says which reader ran"
            );
            problems.extend(compare(&project, run, &plan));
        }
    }
    assert!(
        repositories.len() >= 10,
        "the corpus comes from {} repositories: {repositories:?}",
        repositories.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {runs} runs differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The warnings a project's reading gives are said once, on stderr, and name what they mean.
#[test]
fn issue_14_unset_variables_and_unapplied_build_keys_are_warned_once() {
    let (code, plan, stderr) = run_plan(&corpus().join("robot-shop"), &[], &BTreeMap::new());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.matches("INSTANA_AGENT_KEY").count(),
        1,
        "one warning names the unset variable: {stderr}"
    );
    assert!(
        strings(plan.get("warnings"))
            .iter()
            .any(|w| w.contains("INSTANA_AGENT_KEY"))
    );
    // Its 21 `cache_from` lists are applied (tests/compose_build.rs builds with one): no
    // warning names them.
    let (code, _, stderr) = run_plan(&corpus().join("opentelemetry-demo"), &[], &BTreeMap::new());
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("cache_from"), "{stderr}");
    // A key still not applied is warned once, naming its services.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/Dockerfile"), "FROM alpine:3.20\n").unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  a:\n    build:\n      context: ./a\n      shm_size: 2gb\n  b:\n    build:\n      context: ./a\n      shm_size: 1gb\n",
    )
    .unwrap();
    let (code, _, stderr) = run_plan(dir.path(), &[], &BTreeMap::new());
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("shm_size")).collect();
    assert_eq!(
        lines.len(),
        1,
        "one warning for the key not applied: {stderr}"
    );
    assert!(lines[0].contains("build.shm_size (a, b)"), "{}", lines[0]);
}
