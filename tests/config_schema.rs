//! The published JSON Schema of `ai-infra-build.yml` agrees with what the tool accepts (issue #4).

mod support;

use support::{Project, text};

fn schema() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/config.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn yaml(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn the_example_config_validates() {
    let config =
        std::fs::read_to_string(support::example_dir().join("ai-infra-build.yml")).unwrap();
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let instance = yaml(&config);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_schema_rejects_what_the_tool_rejects() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for bad in [
        "services:\n  api:\n    dockerfiel: x\n",
        "services: {}\n",
        "servics:\n  api: {}\n",
        "services:\n  Api: {}\n",
        "services:\n  api: {}\ntag: \"-bad\"\n",
    ] {
        assert!(!validator.is_valid(&yaml(bad)), "schema accepts {bad:?}");
    }
}

/// Every key the schema documents is one the tool accepts: a config using all of them plans.
#[tokio::test]
async fn every_key_in_the_schema_is_accepted_by_the_tool() {
    let project = Project::empty().await;
    let schema = schema();
    let service_keys: Vec<&String> = schema["$defs"]["service"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let top_keys: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let config = "services:\n  api:\n    context: api\n    dockerfile: Dockerfile\n    target: final\n    build-args: {A: b}\n    tags: [extra]\n    depends-on: []\n    platforms: [linux/amd64]\n    labels: {team: ml}\n    network: host\n    image: example/api:1\n    secrets: [\"id=tok,env=AIB_SCHEMA_SECRET\"]\nmirrors:\n  docker.io: [mirror.example.com]\nmirror-first: false\nprefix: p-\ntag: v1\n";
    for key in service_keys.iter().chain(top_keys.iter()) {
        assert!(
            config.contains(&format!("{key}:")),
            "the test config lacks {key}"
        );
    }
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&yaml(config))
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    project.write("ai-infra-build.yml", config);
    project.write("api/Dockerfile", "FROM ubuntu:22.04 AS final\n");
    let out = project
        .command(&["plan", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
