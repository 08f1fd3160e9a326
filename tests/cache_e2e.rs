//! Issue #7 acceptance on the Docker 20.10 engine: `build-all --cache-dir` of the bundled
//! example against the real daemon, a real registry and the counting fault proxy. On this
//! engine the layer cache is inline (buildx's docker driver cannot export a cache here):
//! service images saved with inline cache metadata and used as `cache-from`.
//!
//! The Docker 26 variant (buildx local cache) is `cache_engine26.rs`.

#[path = "cache_support/mod.rs"]
mod cache_support;

use cache_support::*;

/// Cold run, fresh daemon state, warm run: no registry request at all, a cache hit for every
/// service, and every layer is the cold run's. Then a run killed while saving the cache, and
/// a run after one Dockerfile changed: the previous cache still serves, and only the changed
/// service builds a new layer.
#[test]
fn issue7_warm_run_asks_no_registry_and_hits_the_cache_for_every_service() {
    let _serial = serial();
    require_engine("20.10");
    scenario_warm_cold_kill_change("inline");
}

/// The same through the Engine API backend (BuildKit over the API; `BUILDKIT_INLINE_CACHE=1`
/// and `cachefrom`).
#[test]
fn issue7_warm_run_with_the_engine_backend_hits_the_cache_for_every_service() {
    let _serial = serial();
    require_engine("20.10");
    let mut e = E2e::new();
    e.builder = "engine";
    scenario_cold_then_warm(&e, "inline");
}

/// A corrupted archive is discarded with a warning and its image pulled again (only that
/// one); a cache directory of another format version is ignored with a warning and replaced.
#[test]
fn issue7_corrupted_archive_and_wrong_version_dir_warn_and_recover() {
    let _serial = serial();
    require_engine("20.10");
    let e = E2e::new();
    let cold = e.run(&[]);
    assert_all_built(&cold, &e.report());

    // Both kinds of archive: the service images (which hold the base images too, and are
    // loaded first) and one base image's, which is then needed.
    corrupt(&e.services_archive());
    corrupt(&e.base_archive("ubuntu"));
    e.forget_daemon_state();
    e.reset_proxy();
    let out = e.run(&[]);
    let report = e.report();
    assert_all_built(&out, &report);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("images/services-")
            && stderr.contains("corrupted (checksum mismatch)")
            && stderr.contains("services build without a cache source"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("{}/ubuntu", e.ns)) && stderr.contains("will be pulled again"),
        "{}",
        text(&out)
    );
    assert_eq!(report["cache"]["discarded"], 2);
    assert_eq!(
        report["cache"]["base_image_hits"], 6,
        "{:#}",
        report["cache"]
    );
    let asked = requested_repositories(&e.proxy_stats());
    assert_eq!(
        asked.into_iter().collect::<Vec<_>>(),
        [format!("{}/ubuntu", e.ns)],
        "only the discarded image is pulled"
    );
    assert!(e.base_archive("ubuntu").is_file(), "saved again");

    std::fs::write(
        e.cache_dir().join("index.json"),
        r#"{"format": 0, "images": {}}"#,
    )
    .unwrap();
    e.forget_daemon_state();
    let out = e.run(&[]);
    let report = e.report();
    assert_all_built(&out, &report);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has format 0 but this version of ai-infra-build uses format 1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        report["cache"]["base_image_misses"], 7,
        "a replaced cache starts empty"
    );
    let index = e.index();
    assert_eq!(index["format"], 1);
    assert_eq!(
        index["base-images"].as_object().unwrap().len(),
        7,
        "{index:#}"
    );
}

/// With a budget smaller than the content, the least recently used entries go and the
/// directory stays under the budget.
#[test]
fn issue7_budget_evicts_least_recently_used_first() {
    let _serial = serial();
    require_engine("20.10");
    let e = E2e::new();
    assert_all_built(&e.run(&[]), &e.report());
    // Only scheduler (FROM ubuntu): ubuntu's archive and the service images are used again,
    // the other six base images are not.
    let out = e.run(&["--only", "scheduler"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let index = e.index();
    let archives = index["archives"].as_object().unwrap().clone();
    let ubuntu = e.base_archive("ubuntu");
    let ubuntu_rel = ubuntu
        .strip_prefix(e.cache_dir())
        .unwrap()
        .to_string_lossy()
        .to_string();
    let size_of = |rel: &str| archives[rel]["size"].as_u64().unwrap();
    let recent: Vec<String> = archives
        .keys()
        .filter(|k| k.starts_with("images/") || **k == ubuntu_rel)
        .cloned()
        .collect();
    assert_eq!(recent.len(), 2, "{archives:#?}");
    let stale_total: u64 = archives
        .keys()
        .filter(|k| !recent.contains(k))
        .map(|k| size_of(k))
        .sum();
    let total = dir_size(e.cache_dir());
    // Room for everything but about half of the stale entries.
    let budget = total - stale_total / 2;

    let out = e.run(&[
        "--only",
        "scheduler",
        "--cache-max-size",
        &budget.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = e.report();
    let evictions = report["cache"]["evictions"].as_u64().unwrap();
    assert!(evictions >= 1, "{:#}", report["cache"]);
    assert!(
        report["cache"]["size"].as_u64().unwrap() <= budget,
        "{:#}",
        report["cache"]
    );
    assert!(
        dir_size(e.cache_dir()) <= budget,
        "{} > {budget}",
        dir_size(e.cache_dir())
    );
    let kept = e.index()["archives"].as_object().unwrap().clone();
    for r in &recent {
        assert!(kept.contains_key(r), "the recently used {r} was evicted");
    }
    // Whatever went was used before whatever stayed.
    let gone: Vec<&String> = archives.keys().filter(|k| !kept.contains_key(*k)).collect();
    assert_eq!(gone.len() as u64, evictions);
    let oldest_kept = kept
        .values()
        .map(|a| a["last-used-ms"].as_u64().unwrap())
        .min()
        .unwrap();
    for g in gone {
        assert!(
            archives[g]["last-used-ms"].as_u64().unwrap() <= oldest_kept,
            "{g} was used after an entry that stayed"
        );
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            total += meta.len();
        }
    }
    total
}
