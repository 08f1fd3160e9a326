//! Property-based fuzzing of untrusted inputs through the public API (issue 17 item 18):
//! image references, the config file, compose projects, saved reports and their merge. None
//! may panic; what is refused is a typed error that names the input.
//!
//! Each target runs `PROPTEST_CASES` cases (default 64, so `cargo test` stays within
//! seconds). `scripts/fuzz` runs these and the parser targets inside the crate (Dockerfile,
//! `.dockerignore`, references) with a time budget, as CI does; a longer local campaign:
//! `FUZZ_CASES=20000 FUZZ_BUDGET=3600 scripts/fuzz`.

use std::path::PathBuf;

use ai_infra_build::project::Project;
use ai_infra_build::reference::Reference;
use ai_infra_build::report::Report;
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// References

/// Reference-shaped text: optional registry (host, port, IPv6), path components, tag and
/// digest, with the occasional wrong character.
fn reference_like() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just(String::new()),
        "[a-z0-9]{1,8}(\\.[a-z]{1,4}){0,2}(:[0-9]{1,6})?/",
        Just("localhost:5000/".to_string()),
        Just("[::1]:5000/".to_string()),
        "\\[[0-9a-f:]{0,12}\\](:[0-9]{0,6})?/",
    ];
    let component = "[a-z0-9]([a-z0-9._\\-]{0,6}[a-z0-9])?|[A-Z_.\\-]{1,3}";
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop_oneof![
        Just(String::new()),
        ":[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,20}",
        ":[^@]{0,5}",
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "@sha256:[0-9a-f]{64}",
        "@sha256:[0-9a-fA-F]{0,70}",
        "@[a-z0-9]{1,8}:[A-Za-z0-9=_\\-]{0,40}",
    ];
    (host, path, tag, digest).prop_map(|(h, p, t, d)| format!("{h}{p}{t}{d}"))
}

proptest! {
    #![proptest_config(config())]

    /// Any text: parsed or refused with an error that says something; what parses prints
    /// as text that parses to the same reference.
    #[test]
    fn issue17_fuzz_reference_parse(s in prop_oneof![reference_like(), "\\PC{0,100}", any::<String>()]) {
        match Reference::parse(&s) {
            Ok(r) => {
                let shown = r.to_string();
                let again = Reference::parse(&shown);
                prop_assert_eq!(again.as_ref(), Ok(&r), "{} -> {}", s, shown);
                // (`a.0_0/a` has no domain, as upstream: `a.0_0` is no valid host.)
                let _ = r.registry_host();
                let _ = r.name();
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The config file

fn yaml_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9./:_\\- ]{0,12}".prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::from("../../etc")),
        Just(Value::from("/abs/path")),
        Just(Value::from("*")),
    ]
}

fn yaml_value() -> impl Strategy<Value = Value> {
    yaml_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The config's own keys (more often) and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "services", "context", "dockerfile", "target", "build_args", "depends_on", "tags",
            "labels", "platforms", "network", "image", "prefix", "registry", "mirrors",
            "cache", "defaults", "version",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_\\-]{1,10}",
        1 => "\\PC{1,6}",
    ]
}

/// A services map: names (some not valid), each with config-shaped fields.
fn config_doc() -> impl Strategy<Value = Value> {
    let service_name = prop_oneof![
        "[a-z][a-z0-9\\-]{0,8}",
        "\\PC{1,8}",
        Just("api".to_string()),
        Just("../up".to_string()),
    ];
    let service = prop::collection::btree_map(key(), yaml_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let services = prop::collection::btree_map(service_name, service, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        services,
        prop::collection::btree_map(key(), yaml_value(), 0..3),
    )
        .prop_map(|(s, extra)| {
            let mut doc: serde_json::Map<String, Value> = extra.into_iter().collect();
            doc.insert("services".into(), s);
            Value::Object(doc)
        })
}

fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => config_doc().prop_map(|d| serde_yaml_ng_or_json(&d)),
        1 => "\\PC{0,200}",
        1 => any::<String>(),
        1 => "(services:\n(  [a-z]{1,4}:\n(    [a-z_]{1,10}: [\\PC]{0,10}\n){0,3}){0,3})",
    ]
}

/// JSON is YAML: the config reader reads it as it would the same document in YAML.
fn serde_yaml_ng_or_json(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Any config text, with services on disk that it may or may not name: a project or a
    /// typed error naming the input; never a panic.
    #[test]
    fn issue17_fuzz_config_reader(text in config_text(), dockerfiles in prop::collection::vec("[a-z]{1,4}", 0..3)) {
        let dir = tempfile::tempdir().unwrap();
        for d in &dockerfiles {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("Dockerfile"), "FROM alpine:3.20\n").unwrap();
        }
        let config = dir.path().join("ai-infra-build.yml");
        std::fs::write(&config, &text).unwrap();
        for given in [None, Some(config.as_path())] {
            match Project::load(dir.path(), given) {
                Ok(p) => {
                    for s in &p.services {
                        prop_assert!(!s.name.is_empty());
                    }
                }
                Err(e) => {
                    let shown = e.to_string();
                    prop_assert!(!shown.is_empty());
                    let typed: ai_infra_build::Error = e.into();
                    prop_assert!(typed.exit().code() != 0);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Saved reports and their merge

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One edit of a report's JSON: a field set to an odd value.
#[derive(Debug, Clone)]
enum Edit {
    Shard(Value),
    Total(String, u64),
    Status(usize, String),
    Name(usize, String),
    Attempts(usize, u64),
    Version(u64),
    DropService(usize),
    DuplicateService(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let shard = prop_oneof![
        Just(Value::Null),
        "[0-9]{0,3}/[0-9]{0,3}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
        Just(Value::from("0/0")),
        Just(Value::from("3/2")),
        Just(Value::from("18446744073709551615/1")),
    ];
    let total = prop::sample::select(vec![
        "services",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
        "base_images",
        "base_images_missing",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        shard.prop_map(Edit::Shard),
        (total, any::<u64>()).prop_map(|(k, v)| Edit::Total(k, v)),
        (
            0..12usize,
            prop::sample::select(vec!["success", "failed", "skipped", "cancelled"])
        )
            .prop_map(|(i, s)| Edit::Status(i, s.to_string())),
        (0..12usize, "\\PC{0,8}").prop_map(|(i, n)| Edit::Name(i, n)),
        (0..12usize, any::<u32>()).prop_map(|(i, a)| Edit::Attempts(i, u64::from(a))),
        (0..3u64).prop_map(Edit::Version),
        (0..12usize).prop_map(Edit::DropService),
        (0..12usize).prop_map(Edit::DuplicateService),
    ]
}

fn apply(report: &mut Value, edit: &Edit) {
    let services = report["services"].as_array_mut().unwrap();
    let n = services.len();
    match edit {
        Edit::Shard(v) => report["run"]["shard"] = v.clone(),
        Edit::Total(k, v) => report["totals"][k] = json!(v),
        Edit::Status(i, s) if n > 0 => services[i % n]["status"] = json!(s),
        Edit::Name(i, name) if n > 0 => services[i % n]["name"] = json!(name),
        Edit::Attempts(i, a) if n > 0 => services[i % n]["attempts"] = json!(a),
        Edit::Version(v) => report["version"] = json!(v),
        Edit::DropService(i) if n > 0 => {
            services.remove(i % n);
        }
        Edit::DuplicateService(i) if n > 0 => {
            let s = services[i % n].clone();
            services.push(s);
        }
        _ => {}
    }
}

fn shard_report() -> impl Strategy<Value = Value> {
    let base = prop::sample::select(vec!["all-green", "nine-of-eleven", "hostile", "injection"]);
    (base, prop::collection::vec(edit(), 0..6)).prop_map(|(name, edits)| {
        let mut report = fixture(name);
        for e in &edits {
            apply(&mut report, e);
        }
        report
    })
}

proptest! {
    #![proptest_config(config())]

    /// Shard reports with odd fields, saved and read back,
    /// then merged with any expected shard count: typed errors for what cannot be read,
    /// never a panic, and a merge that counts what it was given.
    #[test]
    fn issue17_fuzz_report_merge(
        shards in prop::collection::vec(
            prop_oneof![
                6 => shard_report().prop_map(|v| v.to_string()),
                1 => "\\PC{0,60}",
                // A truncated upload.
                1 => shard_report().prop_map(|v| v.to_string().chars().take(3000).collect::<String>()),
            ],
            0..5,
        ),
        expected in prop::option::of(0usize..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut reports: Vec<(PathBuf, Report)> = Vec::new();
        for (i, text) in shards.iter().enumerate() {
            let path = dir.path().join(format!("shard-{i}.json"));
            std::fs::write(&path, text).unwrap();
            // As `report --merge` reads a shard (its `load` is the binary's): JSON into a Report.
            match serde_json::from_str::<Report>(&std::fs::read_to_string(&path).unwrap()) {
                Ok(r) => reports.push((path, r)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        let merged = ai_infra_build::report::merge::merge(&reports, expected);
        let given: usize = reports.iter().map(|(_, r)| r.services.len()).sum();
        prop_assert!(merged.services.len() <= given);
        let t = &merged.totals;
        prop_assert_eq!(t.succeeded + t.failed + t.skipped + t.cancelled, t.services);
        // The merged report is a report: it saves and reads back.
        let again: Report = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
        prop_assert_eq!(again.services.len(), merged.services.len());
    }
}

// ---------------------------------------------------------------------------------------
// Compose projects

/// Compose-shaped scalars: paths (some escaping the project), interpolations of every form
/// (nested, unterminated, `$$`), other files of the project, and any text.
fn compose_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z0-9./_\\-]{0,10}".prop_map(Value::from),
        3 => "\\$\\{[A-Z]{1,2}(:?[-+?=][a-z${}]{0,4})?\\}?".prop_map(Value::from),
        1 => "\\$[A-Z]{1,2}|\\$\\$|\\$\\{|\\$\\{\\}|\\$\\{[A-Z]:-\\$\\{[A-Z]:-x\\}\\}".prop_map(Value::from),
        2 => prop::sample::select(vec![
            ".", "..", "/", "app", "app/Dockerfile", "Dockerfile", "other.yml", "compose.yaml",
            "../..", "service:app", "docker-image://alpine:3.20", "https://example.com/x.git",
        ])
        .prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => "\\PC{0,10}".prop_map(Value::from),
    ]
}

/// The compose keys that decide what is built (more often), and others.
fn compose_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "build", "context", "dockerfile", "dockerfile_inline", "args", "target", "image",
            "extends", "service", "file", "include", "path", "env_file", "project_directory",
            "profiles", "tags", "labels", "platforms", "network", "additional_contexts",
            "x-common", "depends_on", "name", "secrets", "ssh", "cache_from", "services",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_\\-]{1,8}",
        1 => "\\PC{1,5}",
    ]
}

fn compose_value() -> impl Strategy<Value = Value> {
    compose_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(compose_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A compose document: services (names valid or not) with build sections of both forms,
/// `extends` and `include` that may point at each other or at themselves, and odd keys.
fn compose_doc() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["app", "web", "worker"]).prop_map(str::to_string),
        1 => "[a-z][a-z0-9\\-]{0,6}",
        1 => "\\PC{1,6}",
    ];
    let build = prop_oneof![
        compose_scalar(),
        prop::collection::btree_map(compose_key(), compose_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ];
    let service = (
        prop::option::of(build),
        prop::collection::btree_map(compose_key(), compose_value(), 0..3),
    )
        .prop_map(|(build, extra)| {
            let mut s: serde_json::Map<String, Value> = extra.into_iter().collect();
            if let Some(b) = build {
                s.insert("build".into(), b);
            }
            Value::Object(s)
        });
    let services = prop::collection::btree_map(name, service, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        services,
        prop::option::of(compose_value()),
        prop::collection::btree_map(compose_key(), compose_value(), 0..2),
    )
        .prop_map(|(services, include, extra)| {
            let mut doc: serde_json::Map<String, Value> = extra.into_iter().collect();
            doc.insert("services".into(), services);
            if let Some(include) = include {
                doc.insert("include".into(), include);
            }
            Value::Object(doc)
        })
}

/// YAML text the JSON form cannot give: anchors, aliases, merge keys, tags, odd indentation.
fn compose_yaml_template() -> impl Strategy<Value = String> {
    (
        "[a-z./]{0,6}",
        prop::sample::select(vec!["a", "b", "missing"]),
        "\\PC{0,12}",
    )
        .prop_map(|(context, anchor, junk)| {
            format!(
                "x-a: &a\n  build: {context}\nx-b: &b {{ build: {{ context: ., args: [A, \"B=${{B:-1}}\"] }} }}\nservices:\n  app:\n    <<: *{anchor}\n  web:\n    <<: [*a, *b]\n    image: !!str {junk}\n  worker: *b\n"
            )
        })
}

/// A project close to a real one (so that the reader gets past the first check): services
/// whose build is a good context or a mapping of mostly valid fields, with interpolation.
fn plausible_compose_doc() -> impl Strategy<Value = Value> {
    let context = prop::sample::select(vec![".", "app", "./app", "${CTX:-app}", "${CTX}"]);
    let build = prop_oneof![
        context.clone().prop_map(Value::from),
        (
            context,
            prop::option::of(prop::sample::select(vec![
                "Dockerfile",
                "${DF:-Dockerfile}",
                "../Dockerfile",
                "missing",
            ])),
            prop::collection::btree_map("[A-Z]{1,2}", compose_scalar(), 0..3),
            prop::option::of(compose_scalar()),
        )
            .prop_map(|(context, dockerfile, args, target)| {
                let mut b = serde_json::Map::new();
                b.insert("context".into(), Value::from(context));
                if let Some(d) = dockerfile {
                    b.insert("dockerfile".into(), Value::from(d));
                }
                b.insert("args".into(), Value::Object(args.into_iter().collect()));
                if let Some(t) = target {
                    b.insert("target".into(), t);
                }
                Value::Object(b)
            }),
    ];
    let service = (
        build,
        prop::option::of(compose_scalar()),
        prop::option::of(prop::sample::select(vec!["app", "web", "nope"])),
    )
        .prop_map(|(build, image, extends)| {
            let mut s = serde_json::Map::new();
            s.insert("build".into(), build);
            if let Some(image) = image {
                s.insert("image".into(), image);
            }
            if let Some(e) = extends {
                s.insert("extends".into(), json!({ "service": e }));
            }
            Value::Object(s)
        });
    prop::collection::btree_map(
        prop::sample::select(vec!["app", "web", "worker", "db"]),
        service,
        1..4,
    )
    .prop_map(|services| json!({ "services": services }))
}

fn compose_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => plausible_compose_doc().prop_map(|d| serde_json::to_string_pretty(&d).unwrap()),
        3 => compose_doc().prop_map(|d| serde_json::to_string_pretty(&d).unwrap()),
        2 => compose_yaml_template(),
        1 => "\\PC{0,200}",
        1 => any::<String>(),
    ]
}

/// `.env` text: assignments with quotes, interpolation, `export`, comments and junk.
fn dotenv_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        6 => "[A-Z]{1,2}=[a-z0-9:\\-]{0,8}",
        2 => "[A-Z]{1,2}=\\$\\{[A-Z]{1,2}(:-[a-z]{0,3})?\\}",
        1 => "export [A-Z]{1,2}=\"[a-z $\\\\n]{0,6}\"?",
        1 => "[A-Z]{1,2}='[a-z$]{0,6}'?",
        1 => "#[\\PC]{0,6}",
        1 => "\\PC{0,10}",
    ];
    prop::collection::vec(line, 0..5).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    /// Any compose project (a main file, another file it may include or extend, an `.env`,
    /// an environment): the services with a build, or a typed error naming the file; never a
    /// panic, never a hang on self-including or self-extending files.
    #[test]
    fn issue17_fuzz_compose_reader(
        main in compose_text(),
        other in prop::option::of(compose_text()),
        dotenv in prop::option::of(dotenv_text()),
        environment in prop::collection::btree_map("[A-Z]{1,2}", "[a-z0-9${}]{0,6}", 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("app/Dockerfile"), "FROM alpine:3.20\n").unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM alpine:3.20\n").unwrap();
        std::fs::write(root.join("compose.yaml"), &main).unwrap();
        if let Some(other) = &other {
            std::fs::write(root.join("other.yml"), other).unwrap();
        }
        if let Some(dotenv) = &dotenv {
            std::fs::write(root.join(".env"), dotenv).unwrap();
        }
        let options = ai_infra_build::project::ComposeOptions {
            environment: environment.clone(),
            ..Default::default()
        };
        match ai_infra_build::compose::load(root, &options) {
            Ok(compose) => {
                for s in &compose.services {
                    prop_assert!(!s.name.is_empty());
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty(), "an empty message for {}", main),
        }
        match Project::load_with(root, None, &options) {
            Ok(p) => {
                prop_assert!(!p.services.is_empty());
                for s in &p.services {
                    prop_assert!(!s.name.is_empty());
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                let typed: ai_infra_build::Error = e.into();
                prop_assert_eq!(typed.exit().code(), 2);
            }
        }
    }
}
