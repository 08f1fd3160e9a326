//! Every proxy fault, seen by the real Docker daemon (20.10 here): pulls of
//! `127.0.0.1:PROXY/library/…:22.04` through a [`testbed::proxy::FaultProxy`] in front of a
//! real registry, asserting on the daemon's exact error text and on the proxy's counters.
//!
//! Each test pushes its own image with a unique random layer (so the daemon really
//! downloads it), pulls it once, removes only that tag, then asserts. Run with
//! `--nocapture` to see every pull's error, progress lines and counters.
//!
//! What the 20.10 daemon does, as these tests pin down: it pings `/v2/`, `HEAD`s the
//! manifest by tag, `GET`s it by digest, then the config and layer blobs, each on a new
//! connection. Ping status codes are ignored (only a transport error fails); a `HEAD` that
//! answers 4xx/5xx falls back to `GET`; manifest, ping-transport and token failures fail the
//! pull at once; the config blob is retried quickly; a layer's first `GET` failing is
//! absorbed (it only probes the size), and a layer broken mid-body is retried after
//! "Retrying in 5 seconds", resuming with `Range`.

use std::time::Duration;

use testbed::TestBed;
use testbed::docker::{self, PullOutcome};
use testbed::images::{ImageSpec, PushedImage, push_image};
use testbed::proxy::{
    ErrorBody, FaultConfig, FaultParams, FaultType, FaultWindow, KindFaults, ProxyStats,
    RequestKind, StallThen,
};

/// Upper bound of one pull; blob retries of the 20.10 daemon wait 5 s, 10 s, … between tries.
const PULL_TIMEOUT: Duration = Duration::from_secs(45);
/// Size of each test image's unique layer.
const LAYER_BYTES: usize = 512 * 1024;
/// Stall used by the stall tests.
const STALL_SECS: f64 = 2.0;
/// Text of the proxy's injected 429 (registry error body).
const RATE_LIMITED: &str = "toomanyrequests: rate limit exceeded (testbed fault)";
/// How the daemon reports any 503, whatever its body.
const UNAVAILABLE: &str = "received unexpected HTTP status: 503 Service Unavailable";

/// One pull through the proxy and what it left behind.
struct Pulled {
    outcome: PullOutcome,
    stats: ProxyStats,
    image: PushedImage,
    proxy: String,
}

impl Pulled {
    /// `http://127.0.0.1:PROXY/v2/REPO/` as it appears in the daemon's messages.
    fn v2_url(&self) -> String {
        format!("http://{}/v2/{}", self.proxy, self.image.repo)
    }

    /// Requests for the blob the `BlobGet` faults were aimed at.
    fn aimed_blob_requests(&self) -> u64 {
        self.stats.kind(RequestKind::BlobGet).targeted
    }
}

/// Pushes a fresh image, sets the faults `faults` builds for it, pulls it through the proxy,
/// and removes the pulled tag again.
async fn pull_through(
    name: &str,
    auth: bool,
    faults: impl FnOnce(&PushedImage) -> FaultConfig,
) -> anyhow::Result<Pulled> {
    let docker = docker::connect().await?;
    let bed = TestBed::start(|options| options.with_auth(auth)).await?;
    let spec = ImageSpec::new(format!("library/{}", testbed::unique_name(name)), "22.04")
        .with_layer(LAYER_BYTES);
    let image = push_image(&bed.registry.host(), &spec).await?;
    bed.proxy.set_faults(faults(&image))?;
    let reference = image.reference_via(&bed.proxy.host());
    let outcome = docker::pull(&docker, &reference, PULL_TIMEOUT).await?;
    docker::remove_image(&docker, &reference).await?;
    let stats = bed.proxy.stats();
    eprintln!(
        "[{name}] pull of {reference} took {:?}\n  error: {:?}\n  statuses: {:?}\n  stats: {}",
        outcome.elapsed,
        outcome.error,
        outcome.statuses,
        serde_json::to_string(&stats)?
    );
    Ok(Pulled {
        outcome,
        stats,
        image,
        proxy: bed.proxy.host(),
    })
}

/// Faults only for `kind`.
fn on(kind: RequestKind, faults: KindFaults) -> FaultConfig {
    FaultConfig::default().with_kind(kind, faults)
}

/// The first request fails with `fault`.
fn first(fault: FaultType) -> KindFaults {
    KindFaults::default().fail_first(1, fault)
}

/// The first request for the image's unique layer fails with `fault`.
fn first_layer(image: &PushedImage, fault: FaultType) -> FaultConfig {
    let layer = &image.layers.last().expect("the image has layers").digest;
    on(
        RequestKind::BlobGet,
        first(fault).only_path_containing(layer),
    )
}

fn params(change: impl FnOnce(&mut FaultParams)) -> FaultParams {
    let mut params = FaultParams::default();
    change(&mut params);
    params
}

fn assert_succeeded(pulled: &Pulled) {
    assert_eq!(pulled.outcome.error, None, "{:?}", pulled.outcome.statuses);
}

#[tokio::test]
async fn eof_on_manifest_get_fails_the_pull() -> anyhow::Result<()> {
    let pulled = pull_through("eof-get", false, |_| {
        on(RequestKind::ManifestGet, first(FaultType::Eof))
    })
    .await?;
    let expected = format!(
        "Get \"{}/manifests/{}\": EOF",
        pulled.v2_url(),
        pulled.image.digest
    );
    assert_eq!(pulled.outcome.expect_err(), expected);
    assert_eq!(
        pulled
            .stats
            .faults(RequestKind::ManifestGet, FaultType::Eof),
        1
    );
    Ok(())
}

#[tokio::test]
async fn eof_on_manifest_head_fails_the_pull() -> anyhow::Result<()> {
    let pulled = pull_through("eof-head", false, |_| {
        on(RequestKind::ManifestHead, first(FaultType::Eof))
    })
    .await?;
    let expected = format!("Head \"{}/manifests/22.04\": EOF", pulled.v2_url());
    assert_eq!(pulled.outcome.expect_err(), expected);
    assert_eq!(pulled.stats.requests(RequestKind::ManifestGet), 0);
    Ok(())
}

#[tokio::test]
async fn eof_on_ping_fails_the_pull() -> anyhow::Result<()> {
    let pulled = pull_through("eof-ping", false, |_| {
        on(RequestKind::Ping, first(FaultType::Eof))
    })
    .await?;
    let expected = format!("Get \"http://{}/v2/\": EOF", pulled.proxy);
    assert_eq!(pulled.outcome.expect_err(), expected);
    Ok(())
}

#[tokio::test]
async fn status_503_on_manifest_get_fails_the_pull_whatever_the_body() -> anyhow::Result<()> {
    for (name, body) in [
        ("503-json", ErrorBody::Registry),
        ("503-plain", ErrorBody::Plain),
    ] {
        let pulled = pull_through(name, false, |_| {
            on(RequestKind::ManifestGet, first(FaultType::Status503))
                .with_params(params(|p| p.error_body = body))
        })
        .await?;
        assert_eq!(pulled.outcome.expect_err(), UNAVAILABLE);
    }
    Ok(())
}

#[tokio::test]
async fn status_429_on_manifest_get_fails_at_once_despite_retry_after() -> anyhow::Result<()> {
    let retry_after = params(|p| p.retry_after_secs = 30);
    let pulled = pull_through("429-json", false, |_| {
        on(RequestKind::ManifestGet, first(FaultType::Status429)).with_params(retry_after.clone())
    })
    .await?;
    assert_eq!(pulled.outcome.expect_err(), RATE_LIMITED);
    assert!(pulled.outcome.elapsed < Duration::from_secs(10));

    let pulled = pull_through("429-plain", false, |_| {
        on(RequestKind::ManifestGet, first(FaultType::Status429)).with_params(params(|p| {
            p.retry_after_secs = 30;
            p.error_body = ErrorBody::Plain;
        }))
    })
    .await?;
    assert_eq!(
        pulled.outcome.expect_err(),
        r#"error parsing HTTP 429 response body: invalid character 'T' after top-level value: "429 Too Many Requests\n""#
    );
    Ok(())
}

#[tokio::test]
async fn status_errors_on_manifest_head_fall_back_to_get() -> anyhow::Result<()> {
    for (name, fault) in [
        ("head-503", FaultType::Status503),
        ("head-429", FaultType::Status429),
    ] {
        let pulled =
            pull_through(name, false, |_| on(RequestKind::ManifestHead, first(fault))).await?;
        assert_succeeded(&pulled);
        assert_eq!(pulled.stats.faults(RequestKind::ManifestHead, fault), 1);
        // GET by tag (the fallback), then GET by digest.
        assert_eq!(pulled.stats.requests(RequestKind::ManifestGet), 2);
    }
    Ok(())
}

#[tokio::test]
async fn status_errors_on_ping_are_ignored() -> anyhow::Result<()> {
    let pulled = pull_through("ping-429", false, |_| {
        FaultConfig::default().with_window(
            FaultWindow::first_secs(60.0, FaultType::Status429).for_kinds(&[RequestKind::Ping]),
        )
    })
    .await?;
    assert_succeeded(&pulled);
    assert_eq!(
        pulled.stats.faults(RequestKind::Ping, FaultType::Status429),
        1
    );
    Ok(())
}

#[tokio::test]
async fn rate_limit_window_fails_pulls_until_it_ends() -> anyhow::Result<()> {
    let docker = docker::connect().await?;
    let bed = TestBed::start(|options| options).await?;
    let spec = ImageSpec::new(
        format!("library/{}", testbed::unique_name("window")),
        "22.04",
    )
    .with_layer(LAYER_BYTES);
    let image = push_image(&bed.registry.host(), &spec).await?;
    let window_secs = 3.0;
    bed.proxy.set_faults(
        FaultConfig::default()
            .with_window(FaultWindow::first_secs(window_secs, FaultType::Status429))
            .with_params(params(|p| p.retry_after_secs = 2)),
    )?;
    let reference = image.reference_via(&bed.proxy.host());
    let during = docker::pull(&docker, &reference, PULL_TIMEOUT).await?;
    let ping = format!("{}/v2/", bed.proxy.url());
    testbed::poll_until(
        "the 429 window to end",
        Duration::from_secs_f64(window_secs + 5.0),
        Duration::from_millis(100),
        || async {
            let resp = testbed::http::get(&ping).await?;
            Ok(resp.status.is_success().then_some(()))
        },
    )
    .await?;
    let after = docker::pull(&docker, &reference, PULL_TIMEOUT).await?;
    docker::remove_image(&docker, &reference).await?;
    assert_eq!(during.expect_err(), RATE_LIMITED);
    assert_eq!(after.error, None, "{:?}", after.statuses);
    Ok(())
}

#[tokio::test]
async fn token_flow_succeeds_without_faults() -> anyhow::Result<()> {
    let pulled = pull_through("token-ok", true, |_| FaultConfig::default()).await?;
    assert_succeeded(&pulled);
    assert_eq!(
        pulled.stats.unauthorized, 1,
        "only the ping goes without a token"
    );
    assert_eq!(pulled.stats.tokens_issued, 1);
    Ok(())
}

#[tokio::test]
async fn token_failures_fail_the_pull() -> anyhow::Result<()> {
    for (name, fault) in [
        ("token-503", FaultType::Status503),
        ("token-429", FaultType::Status429),
        ("token-eof", FaultType::Eof),
    ] {
        let pulled = pull_through(name, true, |_| on(RequestKind::Token, first(fault))).await?;
        let head = format!("Head \"{}/manifests/22.04\"", pulled.v2_url());
        let cause = match fault {
            FaultType::Status503 => UNAVAILABLE.to_owned(),
            FaultType::Status429 => RATE_LIMITED.to_owned(),
            _ => format!(
                "Get \"http://{}/token?scope=repository%3A{}%3Apull&service=testbed\": EOF",
                pulled.proxy,
                pulled.image.repo.replace('/', "%2F")
            ),
        };
        assert_eq!(pulled.outcome.expect_err(), format!("{head}: {cause}"));
        assert_eq!(pulled.stats.tokens_issued, 0);
        assert_eq!(pulled.stats.requests(RequestKind::ManifestGet), 0);
    }
    Ok(())
}

#[tokio::test]
async fn truncated_manifest_fails_the_pull() -> anyhow::Result<()> {
    let pulled = pull_through("truncate-manifest", false, |_| {
        on(RequestKind::ManifestGet, first(FaultType::Truncate))
    })
    .await?;
    assert_eq!(pulled.outcome.expect_err(), "unexpected EOF");
    Ok(())
}

#[tokio::test]
async fn truncated_layer_is_retried_with_range_and_the_pull_succeeds() -> anyhow::Result<()> {
    let pulled = pull_through("truncate-layer", false, |image| {
        first_layer(image, FaultType::Truncate)
    })
    .await?;
    assert_succeeded(&pulled);
    assert_eq!(pulled.outcome.count_status("Retrying in 5 seconds"), 1);
    assert!(pulled.outcome.elapsed >= Duration::from_secs(5));
    let blobs = pulled.stats.kind(RequestKind::BlobGet);
    assert_eq!(blobs.faults.get(&FaultType::Truncate), Some(&1));
    assert_eq!(blobs.ranged, 1, "the retry resumes where the cut was");
    assert_eq!(pulled.aimed_blob_requests(), 2);
    Ok(())
}

#[tokio::test]
async fn truncated_config_is_retried_at_once() -> anyhow::Result<()> {
    let pulled = pull_through("truncate-config", false, |image| {
        on(
            RequestKind::BlobGet,
            first(FaultType::Truncate).only_path_containing(&image.config.digest),
        )
    })
    .await?;
    assert_succeeded(&pulled);
    assert_eq!(pulled.outcome.count_status("Retrying"), 0);
    assert_eq!(
        pulled
            .stats
            .faults(RequestKind::BlobGet, FaultType::Truncate),
        1
    );
    assert_eq!(pulled.aimed_blob_requests(), 2);
    Ok(())
}

#[tokio::test]
async fn failed_first_layer_request_is_absorbed() -> anyhow::Result<()> {
    for (name, fault) in [
        ("layer-eof", FaultType::Eof),
        ("layer-503", FaultType::Status503),
    ] {
        let pulled = pull_through(name, false, |image| first_layer(image, fault)).await?;
        assert_succeeded(&pulled);
        assert_eq!(pulled.outcome.count_status("Retrying"), 0);
        assert_eq!(pulled.stats.faults(RequestKind::BlobGet, fault), 1);
        assert_eq!(pulled.aimed_blob_requests(), 2);
    }
    Ok(())
}

#[tokio::test]
async fn stalled_layer_delays_the_pull() -> anyhow::Result<()> {
    for (name, then) in [
        ("stall-close", StallThen::Close),
        ("stall-go-on", StallThen::Continue),
    ] {
        let pulled = pull_through(name, false, |image| {
            first_layer(image, FaultType::Stall).with_params(params(|p| {
                p.stall_secs = STALL_SECS;
                p.stall_then = then;
            }))
        })
        .await?;
        assert_succeeded(&pulled);
        assert!(pulled.outcome.elapsed >= Duration::from_secs_f64(STALL_SECS));
        assert_eq!(
            pulled.stats.faults(RequestKind::BlobGet, FaultType::Stall),
            1
        );
        // A closed stall makes the daemon ask for the layer once more.
        let expected = if then == StallThen::Close { 2 } else { 1 };
        assert_eq!(pulled.aimed_blob_requests(), expected);
    }
    Ok(())
}

#[tokio::test]
async fn stalled_manifest_fails_the_pull_late() -> anyhow::Result<()> {
    let pulled = pull_through("stall-manifest", false, |_| {
        on(RequestKind::ManifestGet, first(FaultType::Stall))
            .with_params(params(|p| p.stall_secs = STALL_SECS))
    })
    .await?;
    let expected = format!(
        "Get \"{}/manifests/{}\": EOF",
        pulled.v2_url(),
        pulled.image.digest
    );
    assert_eq!(pulled.outcome.expect_err(), expected);
    assert!(pulled.outcome.elapsed >= Duration::from_secs_f64(STALL_SECS));
    Ok(())
}
