//! Fan-out over matrix jobs (issue #9): chains stay whole, shards cover every service once.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::{Project, text};

/// 24 services: chains a->b->c, d->e, f->g->h->i, and 15 independent ones.
fn write_fixture(project: &Project) -> Vec<(String, Vec<String>)> {
    let chains: [&[&str]; 3] = [&["a", "b", "c"], &["d", "e"], &["f", "g", "h", "i"]];
    let mut services = Vec::new();
    for chain in chains {
        for (i, name) in chain.iter().enumerate() {
            let deps = if i == 0 {
                vec![]
            } else {
                vec![chain[i - 1].to_string()]
            };
            services.push((name.to_string(), deps));
        }
    }
    for i in 0..15 {
        services.push((format!("solo{i:02}"), vec![]));
    }
    let mut config = String::from("prefix: mx-\nservices:\n");
    for (name, deps) in &services {
        // Half the edges come from FROM lines naming the other service's image, half from depends-on.
        match deps.first() {
            Some(dep) if name.len() % 2 == 0 => {
                config.push_str(&format!("  {name}:\n    depends-on: [{dep}]\n"));
                project.write(&format!("{name}/Dockerfile"), "FROM ubuntu:22.04\n");
            }
            Some(dep) => {
                config.push_str(&format!("  {name}: {{}}\n"));
                project.write(
                    &format!("{name}/Dockerfile"),
                    &format!("ARG VERSION\nFROM mx-{dep}:${{VERSION}}\n"),
                );
            }
            None => {
                config.push_str(&format!("  {name}: {{}}\n"));
                project.write(
                    &format!("{name}/Dockerfile"),
                    &format!("FROM ubuntu:22.04\nRUN echo {name} > /name\n"),
                );
            }
        }
    }
    project.write("ai-infra-build.yml", &config);
    services
}

#[tokio::test]
async fn issue9_plan_matrix_keeps_every_chain_in_one_shard() {
    let project = Project::empty().await;
    let services = write_fixture(&project);
    let out = project
        .command(&[
            "plan",
            "--matrix",
            "--shards",
            "3",
            "--tag",
            &project.tag,
            "--build-arg",
            &format!("VERSION={}", project.tag),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let matrix: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let include = matrix["include"].as_array().unwrap();
    assert_eq!(include.len(), 3);
    let mut shard_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, shard) in include.iter().enumerate() {
        assert_eq!(shard["shard"], format!("{}/3", i + 1));
        for name in shard["services"].as_str().unwrap().split(',') {
            assert!(
                shard_of.insert(name.to_string(), i).is_none(),
                "{name} is in two shards"
            );
        }
    }
    let all: BTreeSet<&String> = services.iter().map(|(n, _)| n).collect();
    assert_eq!(
        shard_of.keys().collect::<BTreeSet<_>>(),
        all,
        "every service in exactly one shard"
    );
    for (name, deps) in &services {
        for dep in deps {
            assert_eq!(
                shard_of[name], shard_of[dep],
                "{name} and its dependency {dep} are split"
            );
        }
    }
    let sizes: Vec<usize> = (0..3)
        .map(|i| shard_of.values().filter(|s| **s == i).count())
        .collect();
    assert!(
        sizes.iter().all(|s| (7..=9).contains(s)),
        "unbalanced: {sizes:?}"
    );
}

#[tokio::test]
async fn issue9_three_shards_build_every_service_once() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    write_fixture(&project);
    let mut built = BTreeSet::new();
    for i in 1..=3 {
        let out_dir = format!("reports/shard-{i}");
        let out = project.run(&[
            "build-all",
            "--shard",
            &format!("{i}/3"),
            "--out-dir",
            &out_dir,
            "-q",
        ]);
        assert_eq!(out.status.code(), Some(0), "shard {i}: {}", text(&out));
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                project
                    .path()
                    .join(&out_dir)
                    .join("ai-infra-build-report.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(report["run"]["shard"], format!("{i}/3"));
        for s in report["services"].as_array().unwrap() {
            assert_eq!(s["status"], "success", "{s:#}");
            assert!(
                built.insert(s["name"].as_str().unwrap().to_string()),
                "{} built twice",
                s["name"]
            );
        }
    }
    assert_eq!(built.len(), 24);
    project.remove_built_images();
}

/// Durations, step counts and other per-run values become `~`, so two runs of the same
/// build render the same summary.
fn normalized(markdown: &str) -> String {
    let volatile = |tok: &str| {
        let t = tok.trim_matches(|c: char| c == '*' || c == ',' || c == '(' || c == ')');
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
        t.strip_suffix("ms").is_some_and(digits)
            || t.strip_suffix('s').is_some_and(|s| {
                digits(s)
                    || s.split_once('m')
                        .is_some_and(|(m, s)| digits(m) && digits(s))
            })
            || t.split_once('/')
                .is_some_and(|(a, b)| digits(a) && digits(b))
            || (t.starts_with("20") && t.ends_with('Z') && t.contains('T'))
    };
    markdown
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|tok| if volatile(tok) { "~" } else { tok })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn markdown_of(project: &Project, report: &str) -> String {
    let out = project
        .command(&["report", "--from", report, "--format", "markdown"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .replace(report, "REPORT")
}

#[tokio::test]
async fn issue9_merged_shard_reports_equal_one_build_all_and_name_missing_shards() {
    let project = Project::empty().await;
    project.push_bases(&[("library/ubuntu", "22.04")]).await;
    write_fixture(&project);
    // Base images present for every run, so each run's base-image table is the same.
    let out = project.run(&["prefetch", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = project.run(&["build-all", "--no-cache", "--out-dir", "single", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    project.remove_built_images();
    let mut shard_reports = Vec::new();
    for i in 1..=3 {
        let dir = format!("reports/shard-{i}");
        let out = project.run(&[
            "build-all",
            "--no-cache",
            "--shard",
            &format!("{i}/3"),
            "--out-dir",
            &dir,
            "-q",
        ]);
        assert_eq!(out.status.code(), Some(0), "shard {i}: {}", text(&out));
        shard_reports.push(format!("{dir}/ai-infra-build-report.json"));
    }
    let mut merge = vec!["report", "--merge"];
    merge.extend(shard_reports.iter().map(String::as_str));
    merge.extend(["--out-dir", "merged"]);
    let out = project.command(&merge).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(project.path().join(p)).unwrap()).unwrap()
    };
    let single = read("single/ai-infra-build-report.json");
    let merged = read("merged/ai-infra-build-report.json");
    assert_eq!(merged["totals"], single["totals"]);
    assert_eq!(merged["totals"]["succeeded"], 24);
    let single_md = normalized(&markdown_of(&project, "single/ai-infra-build-report.json"));
    let merged_md = normalized(&markdown_of(&project, "merged/ai-infra-build-report.json"));
    assert_eq!(merged_md, single_md);
    // Image sizes depend on which `ubuntu:22.04` the shared daemon holds (another test's or a
    // benchmark's); the comparison above covers them.
    insta::with_settings!({filters => vec![(r"\b\d+(\.\d+)? [kMG]?B\b", "SIZE")]}, {
        insta::assert_snapshot!(
            "merged_summary",
            merged_md
                .replace(&project.tag, "TAG")
                .replace(&project.registry.host(), "REGISTRY")
        );
    });

    // Shard 2's report is missing: named in the summary, and the exit code says so.
    let out = project
        .command(&[
            "report",
            "--merge",
            &shard_reports[0],
            &shard_reports[2],
            "--shards",
            "3",
            "--out-dir",
            "partial",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let partial = markdown_of(&project, "partial/ai-infra-build-report.json");
    assert!(partial.contains("shard 2/3: no report"), "{partial}");
    assert_eq!(
        read("partial/ai-infra-build-report.json")["missing_shards"],
        serde_json::json!(["2/3"])
    );
    project.remove_built_images();
}
