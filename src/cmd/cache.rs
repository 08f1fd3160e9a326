//! The cache directory as `prefetch` and `build-all` use it: opened with the run's key,
//! base images restored before the prefetch, warnings and statistics shown. A cache that
//! cannot be used is a warning, never a failure.

use crate::cache::{Cache, CacheStats};
use crate::engine::Engine;
use crate::prefetch::{self, ImageNeed, PrefetchOptions};
use crate::settings::{CacheDir, Workspace};
use crate::ui::Ui;

/// Opens the cache directory (when there is one) with this run's cache key.
pub fn open(dir: Option<&CacheDir>, ws: &Workspace, ui: &Ui) -> Option<Cache> {
    let dir = dir?;
    match Cache::open(&dir.dir, dir.max_size) {
        Ok(mut cache) => {
            cache.set_key(&crate::cache::cache_key(&ws.plan, &ws.config_bytes()));
            warnings(&mut cache, ui);
            Some(cache)
        }
        Err(e) => {
            ui.warn(&e.to_string());
            None
        }
    }
}

/// Shows (and clears) the cache's warnings.
pub fn warnings(cache: &mut Cache, ui: &Ui) {
    for w in cache.take_warnings() {
        ui.warn(&w);
    }
}

/// Restores base images from the cache before the prefetch; with `--pull always`, returns the
/// images a manifest check vouched for (taken out of `needs`).
pub async fn restore(
    cache: &mut Cache,
    engine: &Engine,
    needs: &mut Vec<ImageNeed>,
    options: &PrefetchOptions,
    ui: &Ui,
) -> prefetch::Vouched {
    let restored = cache.restore_base_images(engine, needs).await;
    if !restored.loaded.is_empty() || !restored.already_present.is_empty() {
        ui.note(&format!(
            "cache: {} base images loaded from {} ({:.1}s), {} already present",
            restored.loaded.len(),
            cache.dir().display(),
            restored.duration_ms as f64 / 1000.0,
            restored.already_present.len()
        ));
    }
    let mut vouched = prefetch::Vouched::default();
    if options.pull == prefetch::PullPolicy::Always {
        vouched = cache.vouch_current(engine, needs, options).await;
        needs.retain(|n| {
            !vouched
                .images
                .iter()
                .any(|v| v.reference == n.reference.to_string())
        });
    }
    warnings(cache, ui);
    vouched
}

/// One line of statistics.
pub fn render_stats(stats: &CacheStats) -> String {
    format!(
        "cache: {} hits, {} misses ({} layer cache); {:.1} MB of {:.1} MB budget, {} evictions",
        stats.hits,
        stats.misses,
        stats.mode,
        stats.size as f64 / 1e6,
        stats.max_size as f64 / 1e6,
        stats.evictions
    )
}
