use super::*;

/// A temporary project: `files` written under it (`(path, text)`).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read(dir: &Path, options: Options) -> Compose {
    load(dir, &options).unwrap()
}

fn service<'a>(c: &'a Compose, name: &str) -> &'a ComposeService {
    c.services.iter().find(|s| s.name == name).unwrap()
}

fn build<'a>(c: &'a Compose, name: &str) -> &'a Build {
    service(c, name).build.as_ref().unwrap()
}

#[test]
fn the_override_file_merges_into_the_default_file() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    build:\n      context: api\n      args: {A: '1', B: '2'}\n    image: api:one\n  db:\n    image: postgres\n",
        ),
        (
            "compose.override.yaml",
            "services:\n  api:\n    build:\n      args: [B=3, C=4]\n      target: dev\n    image: api:two\n  web:\n    build: web\n",
        ),
    ]);
    let c = read(dir.path(), Options::default());
    assert_eq!(c.files.len(), 2);
    let api = build(&c, "api");
    assert_eq!(api.context, dir.path().join("api"));
    assert_eq!(api.args, env(&[("A", "1"), ("B", "3"), ("C", "4")]));
    assert_eq!(api.target.as_deref(), Some("dev"));
    assert_eq!(service(&c, "api").image.as_deref(), Some("api:two"));
    assert_eq!(build(&c, "web").context, dir.path().join("web"));
    assert!(service(&c, "db").build.is_none());
}

#[test]
fn explicit_files_replace_the_default_and_paths_follow_the_first_file() {
    let dir = project(&[
        ("compose.yaml", "services:\n  a:\n    build: ignored\n"),
        (
            "compose.override.yaml",
            "services:\n  b:\n    build: ignored\n",
        ),
        ("deploy/base.yml", "services:\n  api:\n    build: ../api\n"),
        (
            "deploy/extra/more.yml",
            "services:\n  api:\n    build:\n      dockerfile: Other.Dockerfile\n  job:\n    build: job\n",
        ),
    ]);
    let c = read(
        dir.path(),
        Options {
            files: vec!["deploy/base.yml".into(), "deploy/extra/more.yml".into()],
            ..Options::default()
        },
    );
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "job"]);
    assert_eq!(build(&c, "api").context, dir.path().join("deploy/../api"));
    assert_eq!(
        build(&c, "api").dockerfile,
        PathBuf::from("Other.Dockerfile")
    );
    // Relative to the project directory (the first file's), not to more.yml's folder.
    assert_eq!(build(&c, "job").context, dir.path().join("deploy/job"));
}

#[test]
fn the_process_environment_wins_over_dot_env_and_env_files_replace_it() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  api:\n    image: ${REGISTRY:-docker.io}/team/api:${TAG}\n    build:\n      context: .\n      args:\n        - FROM_ENV\n        - NOT_SET\n        - PLAIN=${TAG}\n",
        ),
        (
            ".env",
            "TAG=from-dotenv\nREGISTRY=ghcr.io\nFROM_ENV=dotenv\n",
        ),
        ("ci.env", "TAG=from-ci-env\n"),
    ]);
    let c = read(dir.path(), Options::default());
    assert_eq!(
        service(&c, "api").image.as_deref(),
        Some("ghcr.io/team/api:from-dotenv")
    );
    assert_eq!(
        build(&c, "api").args,
        env(&[("FROM_ENV", "dotenv"), ("PLAIN", "from-dotenv")]),
        "a bare arg comes from the environment; one set nowhere is not passed"
    );
    assert_eq!(c.env_files, [dir.path().join(".env")]);
    assert_eq!(
        service(&c, "api").written.get("image").map(String::as_str),
        Some("${REGISTRY:-docker.io}/team/api:${TAG}")
    );

    let c = read(
        dir.path(),
        Options {
            environment: env(&[("TAG", "from-process"), ("FROM_ENV", "process")]),
            ..Options::default()
        },
    );
    assert_eq!(
        service(&c, "api").image.as_deref(),
        Some("ghcr.io/team/api:from-process")
    );
    assert_eq!(build(&c, "api").args["FROM_ENV"], "process");

    let c = read(
        dir.path(),
        Options {
            env_files: vec!["ci.env".into()],
            ..Options::default()
        },
    );
    assert_eq!(
        service(&c, "api").image.as_deref(),
        Some("docker.io/team/api:from-ci-env"),
        "--env-file replaces .env (REGISTRY is no longer set)"
    );
    let err = load(
        dir.path(),
        &Options {
            env_files: vec!["missing.env".into()],
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.env"), "{err}");
}

#[test]
fn unset_variables_are_blank_with_one_warning() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  api:\n    build:\n      context: .\n      args: {A: '${UNSET_ONE}', B: '$UNSET_TWO', C: '${UNSET_ONE}'}\n",
    )]);
    let c = read(dir.path(), Options::default());
    assert_eq!(
        build(&c, "api").args,
        env(&[("A", ""), ("B", ""), ("C", "")])
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("UNSET_ONE") && c.warnings[0].contains("UNSET_TWO"));
}

#[test]
fn interpolation_errors_name_the_file_service_key_and_value() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  api:\n    build:\n      context: ${CONTEXT:?set CONTEXT to the service folder}\n",
    )]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    let text = err.to_string();
    for part in [
        "compose.yaml",
        "service \"api\"",
        "build.context",
        "${CONTEXT:?set CONTEXT to the service folder}",
        "set CONTEXT to the service folder",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let dir = project(&[("compose.yaml", "services:\n  api:\n    image: cost-$5\n")]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("$$"), "{err}");
}

#[test]
fn anchors_merge_keys_and_extension_fields() {
    let dir = project(&[(
        "compose.yaml",
        "x-build: &build\n  context: app\n  args:\n    MODE: prod\nx-common: &common\n  build: *build\n  image: shared:1\nservices:\n  a:\n    <<: *common\n  b:\n    <<: *common\n    image: other:1\n",
    )]);
    let c = read(dir.path(), Options::default());
    assert_eq!(build(&c, "a"), build(&c, "b"));
    assert_eq!(build(&c, "a").args, env(&[("MODE", "prod")]));
    assert_eq!(service(&c, "b").image.as_deref(), Some("other:1"));
}

#[test]
fn profiled_services_are_services() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  tool:\n    profiles: [debug]\n    build: tool\n",
    )]);
    let c = read(dir.path(), Options::default());
    assert_eq!(service(&c, "tool").profiles, ["debug"]);
    assert!(service(&c, "tool").build.is_some());
}

#[test]
fn extends_in_the_same_file_and_from_another_file() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  base:\n    build:\n      context: app\n      args: {A: '1'}\n  child:\n    extends: base\n    build:\n      args: {B: '2'}\n  remote:\n    extends:\n      file: common/services.yml\n      service: shared\n",
        ),
        (
            "common/services.yml",
            "services:\n  shared:\n    build:\n      context: shared-app\n      target: prod\n    image: shared:${TAG:-1}\n",
        ),
    ]);
    let c = read(dir.path(), Options::default());
    assert_eq!(build(&c, "child").args, env(&[("A", "1"), ("B", "2")]));
    assert_eq!(build(&c, "child").context, dir.path().join("app"));
    // Paths of the extended file are relative to that file.
    assert_eq!(
        build(&c, "remote").context,
        dir.path().join("common/shared-app")
    );
    assert_eq!(build(&c, "remote").target.as_deref(), Some("prod"));
    assert_eq!(service(&c, "remote").image.as_deref(), Some("shared:1"));
    assert!(c.files.iter().any(|f| f.ends_with("common/services.yml")));
}

#[test]
fn an_extends_cycle_is_an_error_naming_it() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  a:\n    extends: b\n    build: .\n  b:\n    extends: a\n",
    )]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let dir = project(&[("compose.yaml", "services:\n  a:\n    extends: missing\n")]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("\"missing\""), "{err}");
}

#[test]
fn include_reads_a_project_with_its_own_directory_and_env() {
    let dir = project(&[
        (
            "compose.yaml",
            "include:\n  - sub/compose.yaml\n  - path: other/stack.yml\n    env_file: other/custom.env\nservices:\n  main:\n    build: .\n    image: main:${TAG:-none}\n",
        ),
        (
            "sub/compose.yaml",
            "services:\n  worker:\n    build: worker\n    image: worker:${TAG}\n",
        ),
        ("sub/.env", "TAG=sub\n"),
        (
            "other/stack.yml",
            "services:\n  other:\n    build:\n      context: .\n      args: {V: '${V}'}\n",
        ),
        ("other/custom.env", "V=custom\n"),
    ]);
    let c = read(dir.path(), Options::default());
    assert_eq!(build(&c, "worker").context, dir.path().join("sub/worker"));
    assert_eq!(service(&c, "worker").image.as_deref(), Some("worker:sub"));
    assert_eq!(
        service(&c, "main").image.as_deref(),
        Some("main:none"),
        "the included .env stays there"
    );
    assert_eq!(build(&c, "other").context, dir.path().join("other"));
    assert_eq!(build(&c, "other").args, env(&[("V", "custom")]));
}

#[test]
fn include_conflicts_and_loops_are_errors() {
    let dir = project(&[
        (
            "compose.yaml",
            "include: [sub.yml]\nservices:\n  api:\n    build: .\n",
        ),
        ("sub.yml", "services:\n  api:\n    build: other\n"),
    ]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("\"api\""), "{err}");
    let dir = project(&[
        ("compose.yaml", "include: [a.yml]\n"),
        ("a.yml", "include: [b.yml]\n"),
        ("b.yml", "include: [a.yml]\n"),
    ]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
}

#[test]
fn build_keys_not_applied_are_one_warning_and_remote_contexts_are_marked() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  a:\n    build:\n      context: .\n      secrets: [token]\n      ssh: [default]\n      cache_from: [a:cache]\n  b:\n    build:\n      context: .\n      secrets:\n        - source: token\n      additional_contexts:\n        base: service:a\n        img: docker-image://alpine:3.20\n        dir: ../shared\n  c:\n    build: https://github.com/docker/welcome.git#main\n",
    )]);
    let c = read(dir.path(), Options::default());
    assert_eq!(build(&c, "b").secrets, ["token"]);
    assert_eq!(build(&c, "b").additional_contexts["base"], "service:a");
    assert_eq!(
        build(&c, "b").additional_contexts["dir"],
        dir.path().join("../shared").display().to_string()
    );
    assert_eq!(
        context_services(build(&c, "b")),
        ["a".to_string()].into_iter().collect()
    );
    assert!(build(&c, "c").remote);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    // build.secrets is applied (issue 13): not in the warning.
    assert!(!w.contains("build.secrets"), "{w}");
    assert_eq!(
        build(&c, "b").secret_mounts,
        [("token".into(), "token".into())]
    );
    assert!(w.contains("build.ssh (a)"), "{w}");
    // Applied: the builds import the caches and get the named contexts.
    assert!(
        !w.contains("cache_from") && !w.contains("additional_contexts"),
        "{w}"
    );
    assert_eq!(build(&c, "a").cache_from, ["a:cache"]);
}

#[test]
fn yaml_errors_are_sentences_with_the_file() {
    let dir = project(&[("compose.yaml", "services:\n  a: [unclosed\n")]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&dir.path().join("compose.yaml").display().to_string())
    );
    let dir = project(&[("compose.yaml", "- a list\n")]);
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("mapping"), "{err}");
}

/// Issue 13: `build.secrets` names top-level secrets (`file:` relative to the project
/// directory, `environment:`); the long syntax's `target` is the id the Dockerfile mounts.
#[test]
fn issue13_build_secrets_and_their_top_level_definitions() {
    let dir = project(&[
        (
            "compose.yaml",
            "services:\n  a:\n    build:\n      context: .\n      secrets:\n        - npmrc\n        - source: token\n          target: api_token\nsecrets:\n  npmrc:\n    file: ./conf/npmrc\n  token:\n    environment: API_TOKEN\n  ext:\n    external: true\n",
        ),
        (
            "compose.override.yaml",
            "secrets:\n  npmrc:\n    file: other/npmrc\n",
        ),
    ]);
    let c = read(dir.path(), Options::default());
    assert_eq!(
        build(&c, "a").secret_mounts,
        [
            ("npmrc".to_string(), "npmrc".to_string()),
            ("token".to_string(), "api_token".to_string())
        ]
    );
    assert_eq!(
        c.secrets["npmrc"],
        SecretDef::File(dir.path().join("other/npmrc")),
        "the override file's definition wins"
    );
    assert_eq!(
        c.secrets["token"],
        SecretDef::Environment("API_TOKEN".into())
    );
    assert_eq!(c.secrets["ext"], SecretDef::Unusable);
    assert!(
        c.warnings.iter().all(|w| !w.contains("secrets")),
        "{:?}",
        c.warnings
    );
}
