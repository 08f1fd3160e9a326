//! The fault proxy at the HTTP level (no daemon): pass-through, each fault as bytes on the
//! wire, determinism, windows, `fail_first`, the token flow and the control endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use testbed::TestBed;
use testbed::http;
use testbed::images::{ImageSpec, MEDIA_MANIFEST, push_image};
use testbed::proxy::{
    ErrorBody, FaultConfig, FaultParams, FaultProxy, FaultType, FaultWindow, KindFaults,
    ProxyOptions, ProxyStats, RequestKind, StallAt, StallThen, WindowClock,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound of every raw exchange.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `GET path` on a raw connection and returns every byte the proxy sent until it
/// closed the connection (it is asked to with `Connection: close`).
async fn raw_get(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        Ok::<_, anyhow::Error>(received)
    };
    tokio::time::timeout(RAW_TIMEOUT, exchange).await?
}

/// Splits a raw response into its head (as text) and body bytes.
fn split_response(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length header")
}

/// A bed (no faults yet) whose registry holds one image; returns it with the path of the
/// image's 200 kB layer.
async fn bed_with_layer() -> anyhow::Result<(TestBed, String)> {
    let bed = bed(FaultConfig::default()).await?;
    let pushed = push_image(
        &bed.registry.host(),
        &ImageSpec::new("library/busybox", "1").with_layer(200_000),
    )
    .await?;
    let layer = format!("/v2/library/busybox/blobs/{}", pushed.layers[1].digest);
    Ok((bed, layer))
}

async fn bed(faults: FaultConfig) -> anyhow::Result<TestBed> {
    TestBed::start(|options| options.with_faults(faults)).await
}

async fn status_of(url: &str) -> anyhow::Result<StatusCode> {
    Ok(http::get(url).await?.status)
}

#[tokio::test]
async fn passthrough_serves_the_registry_and_counts_kinds() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default()).await?;
    // Uploads go through the proxy too: the registry's Location headers point back at it.
    let pushed = push_image(&bed.proxy.host(), &ImageSpec::new("library/debian", "12")).await?;
    bed.proxy.reset_stats();

    let manifest_url = format!("{}/v2/library/debian/manifests/12", bed.proxy.url());
    let accept = [("accept", MEDIA_MANIFEST)];
    let get = http::send(Method::GET, &manifest_url, &accept, Bytes::new()).await?;
    let head = http::send(Method::HEAD, &manifest_url, &accept, Bytes::new()).await?;
    let blob_url = format!(
        "{}/v2/library/debian/blobs/{}",
        bed.proxy.url(),
        pushed.image_id
    );
    let blob = http::get(&blob_url).await?;
    let ping = http::get(&format!("{}/v2/", bed.proxy.url())).await?;

    assert_eq!(
        get.header("docker-content-digest"),
        Some(pushed.digest.as_str())
    );
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(blob.body.len() as u64, pushed.config.size);
    assert_eq!(ping.status, StatusCode::OK);
    let stats = bed.proxy.stats();
    for kind in [
        RequestKind::Ping,
        RequestKind::ManifestGet,
        RequestKind::ManifestHead,
        RequestKind::BlobGet,
    ] {
        assert_eq!(stats.requests(kind), 1, "{kind:?}: {stats:?}");
    }
    assert_eq!(stats.total_faults(), 0);
    assert_eq!(stats.connections, 4, "one connection per request");
    Ok(())
}

#[tokio::test]
async fn eof_closes_the_connection_without_a_response() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default().fail_first(1, FaultType::Eof),
    ))
    .await?;
    assert!(raw_get(bed.proxy.addr(), "/v2/").await?.is_empty());
    let raw = raw_get(bed.proxy.addr(), "/v2/").await?;
    let (head, _) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        bed.proxy.stats().faults(RequestKind::Ping, FaultType::Eof),
        1
    );
    Ok(())
}

#[tokio::test]
async fn status_faults_carry_retry_after_and_the_chosen_body() -> anyhow::Result<()> {
    let faults = |fault, error_body| {
        FaultConfig::default()
            .with_kind(
                RequestKind::Ping,
                KindFaults::default().fail_first(1, fault),
            )
            .with_params(FaultParams {
                retry_after_secs: 7,
                error_body,
                ..FaultParams::default()
            })
    };
    let bed = bed(faults(FaultType::Status429, ErrorBody::Registry)).await?;
    let ping = format!("{}/v2/", bed.proxy.url());
    let limited = http::get(&ping).await?;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert!(
        limited.text().contains(r#""code":"TOOMANYREQUESTS""#),
        "{}",
        limited.text()
    );

    bed.proxy
        .set_faults(faults(FaultType::Status503, ErrorBody::Plain))?;
    let unavailable = http::get(&ping).await?;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.header("retry-after"), None);
    assert_eq!(unavailable.text(), "503 Service Unavailable\n");
    Ok(())
}

#[tokio::test]
async fn truncate_sends_the_full_length_then_part_of_the_body() -> anyhow::Result<()> {
    let (bed, layer) = bed_with_layer().await?;
    bed.proxy.set_faults(
        FaultConfig::default()
            .with_kind(
                RequestKind::BlobGet,
                KindFaults::default().fail_first(1, FaultType::Truncate),
            )
            .with_params(FaultParams {
                truncate_fraction: 0.25,
                ..FaultParams::default()
            }),
    )?;
    let raw = raw_get(bed.proxy.addr(), &layer).await?;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = content_length(&head);
    assert!(length > 200_000);
    assert_eq!(
        body.len(),
        length / 4,
        "a quarter of the body, then the close"
    );

    let raw = raw_get(bed.proxy.addr(), &layer).await?;
    assert_eq!(
        split_response(&raw).1.len(),
        length,
        "only the first is cut"
    );
    Ok(())
}

#[tokio::test]
async fn stall_waits_then_closes_or_continues() -> anyhow::Result<()> {
    let stall = |then| {
        FaultConfig::default()
            .with_kind(
                RequestKind::Ping,
                KindFaults::default().fail_first(1, FaultType::Stall),
            )
            .with_params(FaultParams {
                stall_secs: 0.5,
                stall_then: then,
                ..FaultParams::default()
            })
    };
    let bed = bed(stall(StallThen::Close)).await?;
    let started = Instant::now();
    assert!(raw_get(bed.proxy.addr(), "/v2/").await?.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(500));

    bed.proxy.set_faults(stall(StallThen::Continue))?;
    let started = Instant::now();
    assert_eq!(
        status_of(&format!("{}/v2/", bed.proxy.url())).await?,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        bed.proxy
            .stats()
            .faults(RequestKind::Ping, FaultType::Stall),
        2
    );
    Ok(())
}

#[tokio::test]
async fn a_mid_body_stall_sends_part_of_the_body_then_waits() -> anyhow::Result<()> {
    let (bed, layer) = bed_with_layer().await?;
    let stall = |then| {
        FaultConfig::default()
            .with_kind(
                RequestKind::BlobGet,
                KindFaults::default().fail_first(1, FaultType::Stall),
            )
            .with_params(FaultParams {
                stall_secs: 0.5,
                stall_then: then,
                stall_at: StallAt::Body,
                truncate_fraction: 0.25,
                ..FaultParams::default()
            })
    };
    bed.proxy.set_faults(stall(StallThen::Close))?;
    let started = Instant::now();
    let raw = raw_get(bed.proxy.addr(), &layer).await?;
    assert!(started.elapsed() >= Duration::from_millis(500));
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = content_length(&head);
    assert_eq!(
        body.len(),
        length / 4,
        "a quarter, then the stall and a close"
    );

    bed.proxy.set_faults(stall(StallThen::Continue))?;
    let started = Instant::now();
    let raw = raw_get(bed.proxy.addr(), &layer).await?;
    assert!(started.elapsed() >= Duration::from_millis(500));
    let (head, body) = split_response(&raw);
    assert_eq!(
        body.len(),
        content_length(&head),
        "the whole body after the stall"
    );
    Ok(())
}

#[tokio::test]
async fn the_log_records_every_request_with_its_arrival_time() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default().fail_first(1, FaultType::Status503),
    ))
    .await?;
    let before = bed.proxy.now_us();
    let ping = format!("{}/v2/", bed.proxy.url());
    assert_eq!(status_of(&ping).await?, StatusCode::SERVICE_UNAVAILABLE);
    let catalog = format!("{}/v2/_catalog", bed.proxy.url());
    assert_eq!(status_of(&catalog).await?, StatusCode::OK);
    let after = bed.proxy.now_us();
    let stats = bed.proxy.stats();
    let log: Vec<_> = stats
        .log
        .iter()
        .map(|r| (r.kind, r.method.as_str(), r.path.as_str(), r.fault))
        .collect();
    assert_eq!(
        log,
        [
            (RequestKind::Ping, "GET", "/v2/", Some(FaultType::Status503)),
            (RequestKind::Other, "GET", "/v2/_catalog", None),
        ]
    );
    let (first, second) = (stats.log[0].at_us, stats.log[1].at_us);
    assert!(before <= first && first <= second && second <= after);
    assert_eq!(stats.log_of(RequestKind::Ping).count(), 1);
    assert_eq!(stats.log_dropped, 0);
    Ok(())
}

#[tokio::test]
async fn the_seed_can_be_changed_through_the_control_endpoint() -> anyhow::Result<()> {
    let faults = FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default().with_rate(FaultType::Status503, 0.5),
    );
    let bed = bed(faults.clone()).await?;
    let ping = format!("{}/v2/", bed.proxy.url());
    let control = format!("{}/_testbed", bed.proxy.url());
    let mut runs = Vec::new();
    for seed in [1u64, 2, 1] {
        let arm = format!("{control}/arm?seed={seed}");
        let armed = http::send(Method::POST, &arm, &[], Bytes::new()).await?;
        assert_eq!(armed.status, StatusCode::OK, "{}", armed.text());
        assert_eq!(bed.proxy.seed(), seed);
        let mut statuses = Vec::new();
        for _ in 0..24 {
            statuses.push(status_of(&ping).await?);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[2], "same seed, same faults");
    assert_ne!(runs[0], runs[1], "another seed, other faults");

    let put = format!("{control}/faults?seed=2");
    let json = serde_json::to_string(&faults)?;
    let set = http::send(Method::PUT, &put, &[], json.into()).await?;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    assert_eq!(bed.proxy.seed(), 2);
    let bad = http::send(
        Method::POST,
        &format!("{control}/arm?seed=x"),
        &[],
        Bytes::new(),
    )
    .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn latency_delays_every_request_of_its_kind_only() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default().with_latency_ms(300),
    ))
    .await?;
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(
            status_of(&format!("{}/v2/", bed.proxy.url())).await?,
            StatusCode::OK
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    let started = Instant::now();
    let other = format!("{}/v2/_catalog", bed.proxy.url());
    assert_eq!(status_of(&other).await?, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
    Ok(())
}

/// What a client sees of one request: a status or a closed connection.
async fn outcome(addr: SocketAddr, path: &str) -> anyhow::Result<Option<u16>> {
    let raw = raw_get(addr, path).await?;
    if raw.is_empty() {
        return Ok(None);
    }
    let (head, _) = split_response(&raw);
    Ok(head.split(' ').nth(1).and_then(|s| s.parse().ok()))
}

#[tokio::test]
async fn same_seed_gives_the_same_faults_as_decide_predicts() -> anyhow::Result<()> {
    let faults = FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default()
            .with_rate(FaultType::Eof, 0.3)
            .with_rate(FaultType::Status503, 0.3),
    );
    let registry = testbed::registry::Registry::start().await?;
    let start = |seed| {
        FaultProxy::start(
            ProxyOptions::new(registry.addr())
                .with_seed(seed)
                .with_faults(faults.clone()),
        )
    };
    let (a, b, c) = (start(42).await?, start(42).await?, start(43).await?);
    let mut seen = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..24 {
        for (proxy, seen) in [&a, &b, &c].into_iter().zip(seen.iter_mut()) {
            seen.push(outcome(proxy.addr(), "/v2/").await?);
        }
    }
    let predicted: Vec<Option<u16>> = (0..24)
        .map(
            |seq| match faults.decide(42, RequestKind::Ping, seq, Duration::ZERO) {
                Some(FaultType::Eof) => None,
                Some(FaultType::Status503) => Some(503),
                _ => Some(200),
            },
        )
        .collect();
    assert_eq!(seen[0], predicted);
    assert_eq!(seen[1], predicted);
    assert_ne!(seen[2], predicted, "another seed, other faults");
    assert!(seen[0].contains(&None) && seen[0].contains(&Some(503)));
    Ok(())
}

#[tokio::test]
async fn fail_first_counts_from_start_and_from_arm() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default().with_kind(
        RequestKind::Ping,
        KindFaults::default().fail_first(2, FaultType::Status503),
    ))
    .await?;
    let ping = format!("{}/v2/", bed.proxy.url());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_of(&ping).await?.as_u16());
    }
    bed.proxy.arm();
    statuses.push(status_of(&ping).await?.as_u16());
    assert_eq!(statuses, [503, 503, 200, 503]);
    let stats = bed.proxy.stats();
    assert_eq!(stats.requests(RequestKind::Ping), 4);
    assert_eq!(stats.faults(RequestKind::Ping, FaultType::Status503), 3);
    bed.proxy.reset_stats();
    assert_eq!(bed.proxy.stats(), ProxyStats::default());
    Ok(())
}

#[tokio::test]
async fn window_fails_everything_until_it_ends() -> anyhow::Result<()> {
    let window = Duration::from_millis(800);
    let bed = bed(FaultConfig::default().with_window(FaultWindow::first_secs(
        window.as_secs_f64(),
        FaultType::Status429,
    )))
    .await?;
    let started = Instant::now();
    let ping = format!("{}/v2/", bed.proxy.url());
    assert_eq!(status_of(&ping).await?, StatusCode::TOO_MANY_REQUESTS);
    testbed::poll_until(
        "the window to end",
        window * 5,
        Duration::from_millis(50),
        || async { Ok((status_of(&ping).await? == StatusCode::OK).then_some(())) },
    )
    .await?;
    assert!(started.elapsed() >= window.saturating_sub(Duration::from_millis(100)));
    Ok(())
}

#[tokio::test]
async fn a_window_can_start_at_the_first_request() -> anyhow::Result<()> {
    let window = Duration::from_millis(500);
    let bed = bed(FaultConfig::default()
        .with_window(FaultWindow::first_secs(
            window.as_secs_f64(),
            FaultType::Status429,
        ))
        .with_window_clock(WindowClock::FirstRequest))
    .await?;
    // The idle time under test (not a wait for a condition): longer than the window, which
    // must not have started yet.
    tokio::time::sleep(window * 2).await;
    let ping = format!("{}/v2/", bed.proxy.url());
    let first = Instant::now();
    assert_eq!(status_of(&ping).await?, StatusCode::TOO_MANY_REQUESTS);
    testbed::poll_until(
        "the window to end",
        window * 5,
        Duration::from_millis(50),
        || async { Ok((status_of(&ping).await? == StatusCode::OK).then_some(())) },
    )
    .await?;
    assert!(first.elapsed() >= window.saturating_sub(Duration::from_millis(100)));
    Ok(())
}

#[tokio::test]
async fn token_flow_challenges_issues_and_accepts_tokens() -> anyhow::Result<()> {
    let bed = TestBed::start(|options| {
        options
            .with_auth(true)
            .with_faults(FaultConfig::default().with_kind(
                RequestKind::Token,
                KindFaults::default().fail_first(1, FaultType::Status503),
            ))
    })
    .await?;
    let base = bed.proxy.url();
    let ping = http::get(&format!("{base}/v2/")).await?;
    assert_eq!(ping.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        ping.header("www-authenticate"),
        Some(format!("Bearer realm=\"{base}/token\",service=\"testbed\"").as_str())
    );
    let manifest_url = format!("{base}/v2/library/redis/manifests/7");
    let manifest = http::get(&manifest_url).await?;
    assert_eq!(
        manifest.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"{base}/token\",service=\"testbed\",\
                 scope=\"repository:library/redis:pull\""
            )
            .as_str()
        )
    );

    let token_url = format!("{base}/token?service=testbed&scope=repository:library/redis:pull");
    assert_eq!(
        status_of(&token_url).await?,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let token = http::get(&token_url).await?;
    assert_eq!(token.status, StatusCode::OK);
    let token: serde_json::Value = serde_json::from_slice(&token.body)?;
    assert_eq!(token["token"], token["access_token"]);
    assert_eq!(token["expires_in"], 300);
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());

    let authorized = |url: String, value: String| async move {
        http::send(
            Method::GET,
            &url,
            &[("authorization", &value)],
            Bytes::new(),
        )
        .await
    };
    let ok = authorized(format!("{base}/v2/"), bearer.clone()).await?;
    assert_eq!(ok.status, StatusCode::OK);
    let missing = authorized(manifest_url.clone(), bearer).await?;
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "authorized, reaches the registry"
    );
    let wrong = authorized(manifest_url, "Bearer nope".into()).await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let stats = bed.proxy.stats();
    assert_eq!((stats.unauthorized, stats.tokens_issued), (3, 1));
    assert_eq!(stats.faults(RequestKind::Token, FaultType::Status503), 1);
    Ok(())
}

#[tokio::test]
async fn control_endpoint_reads_and_changes_the_proxy() -> anyhow::Result<()> {
    let bed = bed(FaultConfig::default()).await?;
    let control = format!("{}/_testbed", bed.proxy.url());
    let ping = format!("{}/v2/", bed.proxy.url());
    let faults = r#"{"kinds": {"ping": {"fail_first": {"count": 1, "fault": "status_503"}}}}"#;
    let put = http::send(
        Method::PUT,
        &format!("{control}/faults"),
        &[],
        faults.into(),
    )
    .await?;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert_eq!(status_of(&ping).await?, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status_of(&ping).await?, StatusCode::OK);

    let got = http::get(&format!("{control}/faults")).await?;
    assert_eq!(FaultConfig::from_json(&got.text())?, bed.proxy.faults());
    let stats: ProxyStats =
        serde_json::from_slice(&http::get(&format!("{control}/stats")).await?.body)?;
    assert_eq!(
        stats.requests(RequestKind::Ping),
        2,
        "control requests are not counted"
    );
    assert_eq!(stats.faults(RequestKind::Ping, FaultType::Status503), 1);

    let arm = http::send(Method::POST, &format!("{control}/arm"), &[], Bytes::new()).await?;
    assert_eq!(arm.status, StatusCode::OK);
    assert_eq!(status_of(&ping).await?, StatusCode::SERVICE_UNAVAILABLE);

    let reset = http::send(
        Method::DELETE,
        &format!("{control}/stats"),
        &[],
        Bytes::new(),
    )
    .await?;
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(bed.proxy.stats(), ProxyStats::default());

    let bad = r#"{"kinds": {"ping": {"eof": 2}}}"#;
    let rejected = http::send(Method::PUT, &format!("{control}/faults"), &[], bad.into()).await?;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert!(
        rejected.text().contains("must be in [0, 1]"),
        "{}",
        rejected.text()
    );
    assert_eq!(
        status_of(&format!("{control}/nope")).await?,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test]
async fn nothing_leaves_loopback() -> anyhow::Result<()> {
    let outside = SocketAddr::from(([10, 0, 0, 1], 5000));
    let err = FaultProxy::start(ProxyOptions::new(outside))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("only forwards to 127.0.0.1"),
        "{err:#}"
    );
    let err = http::get("http://example.com/v2/").await.unwrap_err();
    assert!(
        format!("{err:#}").contains("only talks to 127.0.0.1"),
        "{err:#}"
    );
    Ok(())
}
