//! The pull relay: a registry endpoint on 127.0.0.1 that the local Docker daemon pulls from,
//! which forwards each request to the real registry (or a mirror) and retries it there.
//!
//! Why: the daemon retries neither manifest, ping nor token failures, and a pull that fails is
//! repeated from the start. Retrying each *request* where it failed turns a 40% EOF rate into
//! a few milliseconds of extra work, lets us honour `Retry-After` (the daemon never shows it
//! to its clients), speaks the token flow for the daemon, and records every request for the
//! report. The daemon treats registries on 127.0.0.0/8 as plain-HTTP, so no TLS is needed here.
//!
//! A blob download that breaks or stalls mid-body (no bytes for the idle timeout) is resumed
//! upstream with a `Range` request and spliced into the same response, so the daemon sees a
//! slow download instead of a failure (it would wait 5 s and more before resuming itself).
//! While the relay has an upstream request or body in flight for a repository, it reports
//! that repository as busy ([`Relay::busy`]): the pull's own idle watchdog defers to the
//! relay's per-request timers instead of cutting a pull the relay is about to rescue.
//!
//! Paths: the daemon pulls `127.0.0.1:PORT/s<N>/<repository>:<tag>`; source N is the upstream
//! registry (and optional path prefix) that serves it. After the pull, the image is re-tagged
//! to its canonical name (see `prefetch`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::header::{CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::clock::now_ms;
// Moved to `endpoint`; kept here for callers that still name it so.
pub use crate::endpoint::Source;
use crate::registry::{RegistryClient, RegistryError, RequestKind};
use crate::retry::{ErrorClass, RetryPolicy, classify_message};

type Body = BoxBody<Bytes, std::io::Error>;

/// The first path component of the reachability probe's name (not a source: those are `s<N>`).
const PROBE: &str = "probe";

/// One request the relay sent upstream (successful or not).
#[derive(Debug, Clone, Serialize)]
pub struct RequestEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub source: String,
    pub repository: String,
    pub kind: RequestKind,
    /// `None` when the request succeeded.
    pub class: Option<ErrorClass>,
    pub status: Option<u16>,
    pub message: Option<String>,
    /// How long we waited before the next try, when this failure was retried.
    pub retry_wait_ms: Option<u64>,
}

#[derive(Debug)]
struct State {
    client: RegistryClient,
    policy: RetryPolicy,
    sources: Mutex<Vec<Source>>,
    /// Per host: no request before this instant (set by `Retry-After`).
    gates: Mutex<HashMap<String, Instant>>,
    events: Mutex<Vec<RequestEvent>>,
    /// The run's secret: only repository names that carry it (`k<secret>/s<N>/…`, handed to
    /// our own daemon's pulls) are served, so no other local process pulls with our
    /// credentials.
    secret: String,
    /// Upstream requests and bodies in flight, per (source label, repository).
    inflight: Mutex<HashMap<(String, String), usize>>,
    /// Requests that carried the run's secret: the daemon reached us.
    daemon_requests: AtomicUsize,
    /// Requests for the reachability probe's name ([`Relay::reachability_probe`]).
    probe_hits: AtomicUsize,
}

/// Counts one upstream exchange as in flight for its repository until dropped.
struct InFlight {
    state: Arc<State>,
    key: (String, String),
}

impl InFlight {
    fn new(state: &Arc<State>, label: &str, repository: &str) -> InFlight {
        let key = (label.to_string(), repository.to_string());
        if let Ok(mut inflight) = state.inflight.lock() {
            *inflight.entry(key.clone()).or_default() += 1;
        }
        InFlight {
            state: state.clone(),
            key,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.state.inflight.lock()
            && let Some(count) = inflight.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                inflight.remove(&self.key);
            }
        }
    }
}

/// A running relay. Dropping it stops the server.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    state: Arc<State>,
    _stop: watch::Sender<()>,
}

impl Relay {
    /// Starts the relay on a free 127.0.0.1 port.
    pub async fn start(client: RegistryClient, policy: RetryPolicy) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            client,
            policy,
            sources: Mutex::new(Vec::new()),
            gates: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            secret: format!("{:032x}", rand::random::<u128>()),
            inflight: Mutex::new(HashMap::new()),
            daemon_requests: AtomicUsize::new(0),
            probe_hits: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = watch::channel(());
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Relay {
            addr,
            state,
            _stop: stop,
        })
    }

    /// `127.0.0.1:PORT`: the registry host the daemon pulls from.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The index of `source` (registering it on first use).
    pub fn source_id(&self, source: &Source) -> usize {
        let mut sources = self.state.sources.lock().expect("relay sources lock");
        match sources.iter().position(|s| s == source) {
            Some(i) => i,
            None => {
                sources.push(source.clone());
                sources.len() - 1
            }
        }
    }

    /// The repository name, on the relay, for `repository` served by `source`.
    pub fn repository(&self, source: &Source, repository: &str) -> String {
        format!(
            "{}/k{}/s{}/{}",
            self.host(),
            self.state.secret,
            self.source_id(source),
            repository
        )
    }

    /// A name and tag for the daemon to pull that only this relay serves (it answers `404`
    /// itself, without going upstream): whether the daemon can reach the relay at all.
    pub fn reachability_probe(&self) -> (String, String) {
        (
            format!(
                "{}/k{}/{PROBE}/reachability",
                self.host(),
                self.state.secret
            ),
            "probe".to_string(),
        )
    }

    /// How many requests for the reachability probe arrived.
    pub fn reachability_hits(&self) -> usize {
        self.state.probe_hits.load(Ordering::Relaxed)
    }

    /// How many requests carrying the run's secret arrived (from the daemon).
    pub fn daemon_requests(&self) -> usize {
        self.state.daemon_requests.load(Ordering::Relaxed)
    }

    /// The run's secret (for masking: it appears in the daemon's pull names).
    pub fn secret(&self) -> &str {
        &self.state.secret
    }

    /// Every upstream request so far.
    pub fn events(&self) -> Vec<RequestEvent> {
        self.state
            .events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Whether the relay has an upstream request or body in flight for `repository` on
    /// `source`. Each of those is bounded by the relay's own idle timeout and retry policy,
    /// so a pull that shows no progress meanwhile is waiting on the relay, not stalled.
    pub fn busy(&self, source: &Source, repository: &str) -> bool {
        let key = (source.label(), repository.to_string());
        self.state
            .inflight
            .lock()
            .is_ok_and(|inflight| inflight.contains_key(&key))
    }

    /// The last failure recorded for a repository on a source: the real cause behind the
    /// daemon's "502 Bad Gateway".
    pub fn last_failure(&self, source: &Source, repository: &str) -> Option<RequestEvent> {
        let label = source.label();
        let events = self.state.events.lock().ok()?;
        events
            .iter()
            .rev()
            .find(|e| e.source == label && e.repository == repository && e.class.is_some())
            .cloned()
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Ok(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the pull relay only serves pulls",
        ));
    }
    if path == "/v2/" || path == "/v2" {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .header("Content-Type", "application/json")
            .body(full(Bytes::from_static(b"{}")))
            .expect("static response"));
    }
    let Some(rest) = path
        .strip_prefix("/v2/k")
        .and_then(|r| r.strip_prefix(state.secret.as_str()))
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the relay serves only the pulls of the run that started it",
        ));
    };
    state.daemon_requests.fetch_add(1, Ordering::Relaxed);
    if rest.starts_with(&format!("{PROBE}/")) {
        state.probe_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "the relay is reachable (this name exists only to find that out)",
        ));
    }
    let Some((source, repository, upstream_path)) = route(&state, rest) else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            &format!("the relay has no source for {path}"),
        ));
    };
    let mut headers = HeaderMap::new();
    for name in [
        hyper::header::ACCEPT,
        hyper::header::RANGE,
        hyper::header::IF_NONE_MATCH,
    ] {
        for value in req.headers().get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let upstream = Upstream {
        state,
        label: source.label(),
        source,
        repository,
        path: upstream_path,
        headers,
    };
    let inflight = InFlight::new(&upstream.state, &upstream.label, &upstream.repository);
    match upstream
        .send(method.clone(), upstream.headers.clone())
        .await
    {
        Ok(resp) => Ok(upstream.forward(method, resp, inflight)),
        Err(err) => Ok(match (err.status, err.body) {
            (Some(status), Some(document)) => Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
                .header("Content-Type", "application/json")
                .header("Docker-Distribution-API-Version", "registry/2.0")
                .body(full(Bytes::from(document)))
                .expect("error response"),
            (Some(status), None) => error_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                err.code.as_deref().unwrap_or("UNKNOWN"),
                &err.message,
            ),
            (None, _) => error_response(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                &format!("upstream {}: {} ({})", err.host, err.message, err.class),
            ),
        }),
    }
}

/// One daemon request and where it goes upstream.
#[derive(Clone)]
struct Upstream {
    state: Arc<State>,
    source: Source,
    label: String,
    repository: String,
    path: String,
    /// The daemon's headers that go upstream (`Accept`, `Range`, `If-None-Match`).
    headers: HeaderMap,
}

impl Upstream {
    /// Sends the request upstream with the retry policy (per-host `Retry-After` gate), and
    /// records every try.
    async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, RegistryError> {
        let state = &self.state;
        let host = &self.source.endpoint.host;
        let attempt = || {
            let (method, headers) = (method.clone(), headers.clone());
            async move {
                wait_for_gate(state, host).await;
                let result = state
                    .client
                    .send(&self.source.endpoint, method, &self.path, headers)
                    .await;
                if let Err(err) = &result
                    && let Some(wait) = err.retry_after
                {
                    set_gate(state, host, wait);
                }
                result
            }
        };
        let result = state
            .policy
            .run(attempt, |err, wait| self.record_error(err, Some(wait)))
            .await;
        match &result {
            Ok(_) => self.record(RequestKind::of_path(&self.path), None, None, None, None),
            Err(err) => self.record_error(err, None),
        }
        result
    }

    fn record_error(&self, err: &RegistryError, wait: Option<Duration>) {
        self.record(
            err.kind,
            Some(err.class),
            err.status,
            Some(err.message.clone()),
            wait,
        );
    }

    fn record(
        &self,
        kind: RequestKind,
        class: Option<ErrorClass>,
        status: Option<u16>,
        message: Option<String>,
        wait: Option<Duration>,
    ) {
        let event = RequestEvent {
            at_ms: now_ms(),
            source: self.label.clone(),
            repository: self.repository.clone(),
            kind,
            class,
            status,
            message,
            retry_wait_ms: wait.map(|w| w.as_millis() as u64),
        };
        if let Ok(mut events) = self.state.events.lock() {
            events.push(event);
        }
    }

    /// Streams an upstream response to the daemon. A blob `GET` body that breaks or makes no
    /// progress for the idle timeout is resumed upstream with a `Range` request (bounded by
    /// the retry policy); any other body is cut, which the daemon sees as a broken download.
    fn forward(
        self,
        method: Method,
        resp: reqwest::Response,
        inflight: InFlight,
    ) -> Response<Body> {
        const KEEP: [&str; 8] = [
            "content-type",
            "content-length",
            "docker-content-digest",
            "etag",
            "content-range",
            "accept-ranges",
            "last-modified",
            "docker-distribution-api-version",
        ];
        let mut builder = Response::builder().status(resp.status().as_u16());
        for (name, value) in resp.headers() {
            if KEEP.contains(&name.as_str()) {
                builder = builder.header(name.as_str(), value.as_bytes());
            }
        }
        let resumable = method == Method::GET
            && RequestKind::of_path(&self.path) == RequestKind::Blob
            && span_of(&resp).is_some();
        // A small buffer: the daemon's reading paces the upstream download.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let _inflight = inflight;
            self.pump(resp, resumable, tx).await;
        });
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item.map(Frame::data), rx))
        });
        builder
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap_or_else(|err| {
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "UNKNOWN",
                    &format!("cannot relay the response: {err}"),
                )
            })
    }

    /// Copies the upstream body into `tx`, resuming a broken blob download when `resumable`.
    async fn pump(
        &self,
        first: reqwest::Response,
        resumable: bool,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let idle = self.state.client.timeouts.idle;
        let policy = self.state.policy;
        let started = Instant::now();
        let mut backoff = policy.backoff();
        // Offset of the next byte to send, and the end (exclusive) of what the daemon asked for
        // (known for every resumable body).
        let span = span_of(&first);
        let (mut next, end) = span.unwrap_or((0, u64::MAX));
        let progress = |next: u64| match span {
            Some((from, to)) => format!("after {} of {} bytes", next - from, to - from),
            None => format!("after {next} bytes"),
        };
        // Bytes of the current upstream body to drop before sending (a server that answered a
        // resume with the whole blob).
        let mut skip = 0u64;
        let mut chunks = first.bytes_stream();
        loop {
            let failure = match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(mut bytes))) => {
                    if skip > 0 {
                        let dropped = skip.min(bytes.len() as u64);
                        skip -= dropped;
                        bytes = bytes.slice(dropped as usize..);
                    }
                    if resumable {
                        // Never more than the daemon asked for (a resume answered in full).
                        let room = end.saturating_sub(next).min(bytes.len() as u64);
                        bytes = bytes.slice(..room as usize);
                    }
                    next += bytes.len() as u64;
                    // A daemon that stops reading is as stalled as a registry that stops
                    // sending: give up on it rather than hold the transfer open.
                    if !bytes.is_empty() {
                        match tokio::time::timeout(idle, tx.send(Ok(bytes))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => return,
                        }
                    }
                    if resumable && next >= end {
                        return;
                    }
                    continue;
                }
                Ok(None) if !resumable || next >= end => return,
                Ok(None) => (
                    ErrorClass::Eof,
                    format!("the body ended {}", progress(next)),
                ),
                // reqwest's read timeout is the same idle timeout: no progress.
                Ok(Some(Err(err))) if err.is_timeout() => (
                    ErrorClass::Stalled,
                    format!("no progress for {}s {}", idle.as_secs(), progress(next)),
                ),
                Ok(Some(Err(err))) => {
                    let cause = crate::registry::describe_reqwest(&err);
                    let class = match classify_message(&cause) {
                        ErrorClass::Other => ErrorClass::Eof,
                        class => class,
                    };
                    (class, format!("{cause} {}", progress(next)))
                }
                Err(_) => (
                    ErrorClass::Stalled,
                    format!("no progress for {}s {}", idle.as_secs(), progress(next)),
                ),
            };
            let (class, message) = failure;
            let wait = backoff
                .next()
                .filter(|_| resumable)
                .filter(|wait| started.elapsed() + *wait <= policy.deadline);
            self.record(
                RequestKind::Blob,
                Some(class),
                None,
                Some(format!("body: {message}")),
                wait,
            );
            let Some(wait) = wait else {
                fail_body(&tx, format!("upstream body failed: {message}"));
                return;
            };
            tokio::time::sleep(wait).await;
            let mut headers = self.headers.clone();
            let range = format!("bytes={next}-{}", end - 1);
            headers.insert(
                RANGE,
                HeaderValue::from_str(&range).expect("a byte range is a valid header value"),
            );
            let resumed = match self.send(Method::GET, headers).await {
                Ok(resp) => resp,
                Err(err) => {
                    fail_body(&tx, format!("resuming the body failed: {}", err.message));
                    return;
                }
            };
            skip = match span_of(&resumed) {
                Some((from, _)) if from <= next => next - from,
                _ => {
                    fail_body(
                        &tx,
                        format!(
                            "the registry answered the resume ({range}) with status {} and no usable range",
                            resumed.status()
                        ),
                    );
                    return;
                }
            };
            chunks = resumed.bytes_stream();
        }
    }
}

/// Ends the daemon's body with an error (without waiting: if the daemon is not reading,
/// dropping the sender still ends the body short of its length, which the daemon sees as a
/// broken download all the same).
fn fail_body(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, message: String) {
    let _ = tx.try_send(Err(std::io::Error::other(message)));
}

/// The byte span `[from, to)` a successful response's body covers: `Content-Range` of a
/// `206`, or `[0, Content-Length)` of a `200`. `None` when unknown.
fn span_of(resp: &reqwest::Response) -> Option<(u64, u64)> {
    match resp.status().as_u16() {
        200 => resp.content_length().map(|len| (0, len)),
        206 => {
            let value = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
            parse_content_range(value)
        }
        _ => None,
    }
}

/// `bytes FROM-TO/TOTAL` (or `/*`) -> `[FROM, TO + 1)`.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, _total) = range.split_once('/')?;
    let (from, to) = span.split_once('-')?;
    let (from, to): (u64, u64) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
    (from <= to).then_some((from, to + 1))
}

/// `/v2/s<N>/<repository>/(manifests|blobs)/<ref>` -> (source N, repository, upstream path).
/// `s<N>/<repository>/(manifests|blobs)/…` (the path after the secret): the source, the
/// repository (a valid name: distribution's path components) and the upstream path.
fn route(state: &State, path: &str) -> Option<(Source, String, String)> {
    let rest = path.strip_prefix('s')?;
    let (index, rest) = rest.split_once('/')?;
    let index: usize = index.parse().ok()?;
    let source = state.sources.lock().ok()?.get(index)?.clone();
    let marker = ["/manifests/", "/blobs/"]
        .iter()
        .find_map(|m| rest.find(m))?;
    let (repository, tail) = rest.split_at(marker);
    if repository.len() > 255
        || !repository
            .split('/')
            .all(crate::reference::is_path_component)
    {
        return None;
    }
    Some((
        source.clone(),
        repository.to_string(),
        format!("/v2/{}{tail}", source.path_for(repository)),
    ))
}

async fn wait_for_gate(state: &State, host: &str) {
    let until = state.gates.lock().ok().and_then(|g| g.get(host).copied());
    if let Some(until) = until {
        tokio::time::sleep_until(until.into()).await;
    }
}

/// Holds every request to `host` back for `wait` (a `Retry-After`). A wait longer than the
/// retry deadline is not kept: the request that got it gives up, and the gate must not hold
/// the other requests longer than any of them may wait.
fn set_gate(state: &State, host: &str, wait: Duration) {
    if wait > state.policy.deadline {
        return;
    }
    if let Ok(mut gates) = state.gates.lock() {
        let until = Instant::now() + wait;
        let entry = gates.entry(host.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(Bytes::from(body.to_string())))
        .expect("error response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_give_the_byte_span() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 100)));
        assert_eq!(parse_content_range("bytes 500-999/*"), Some((500, 1000)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
