//! Issue #7 acceptance on the Docker 26 engine with the containerd image store: the layer
//! cache is BuildKit's local cache in `<cache-dir>/buildx` (buildx's docker driver can export
//! a cache on this engine). Same scenario as `cache_e2e.rs`: cold run, fresh daemon state,
//! warm run with no registry request and a cache hit for every service, a run killed
//! mid-save, and one changed Dockerfile.
//!
//! Ignored in `cargo test` (the shared daemon is Docker 20.10); scripts/test (the README's test
//! command, and so .ci/run) runs it in a sandboxed 26.1 engine after the rest. By hand, alone
//! on the 26 engine, where it fails loudly if the engine is another one:
//!
//! ```text
//! scripts/engine use 26 && cargo test --locked --test cache_engine26 -- --ignored; scripts/engine use 20.10
//! scripts/engine sandbox 26 -- cargo test --locked --test cache_engine26 -- --ignored   # beside a shared daemon
//! ```

#[path = "cache_support/mod.rs"]
mod cache_support;

use cache_support::*;

#[test]
#[ignore = "needs the Docker 26 engine: scripts/engine use 26, then cargo test --test cache_engine26 -- --ignored"]
fn issue7_engine26_warm_run_uses_the_buildx_local_cache() {
    let _serial = serial();
    require_engine("26");
    scenario_warm_cold_kill_change("buildx-local");
}

#[test]
#[ignore = "needs the Docker 26 engine: scripts/engine use 26, then cargo test --test cache_engine26 -- --ignored"]
fn issue7_engine26_buildx_cache_holds_a_tag_per_service_and_rotates() {
    let _serial = serial();
    require_engine("26");
    let e = E2e::new();
    let out = e.run(&[]);
    assert_all_built(&out, &e.report());
    let buildx = e.cache_dir().join("buildx");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(buildx.join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tags.sort();
    let mut expected = services(&e.report());
    expected.sort();
    assert_eq!(tags, expected);
    assert!(!e.cache_dir().join("buildx-new").exists(), "rotated");
    assert_eq!(e.index()["buildx"]["tags"].as_array().unwrap().len(), 11);
    // A failing build keeps the others' cache and its own previous one.
    e.write("metrics/Dockerfile", "FROM scratch\nBOGUS instruction\n");
    let out = e.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(buildx.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        11,
        "metrics keeps its previous cache"
    );
}
