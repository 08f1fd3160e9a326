//! The pull relay: a registry endpoint on 127.0.0.1 that the local Docker daemon pulls from,
//! which forwards each request to the real registry (or a mirror) and retries it there.
//!
//! Why: the daemon retries neither manifest, ping nor token failures, and a pull that fails is
//! repeated from the start. Retrying each *request* where it failed turns a 40% EOF rate into
//! a few milliseconds of extra work, lets us honour `Retry-After` (the daemon never shows it
//! to its clients), speaks the token flow for the daemon, and records every request for the
//! report. The daemon treats registries on 127.0.0.0/8 as plain-HTTP, so no TLS is needed here.
//!
//! Paths: the daemon pulls `127.0.0.1:PORT/s<N>/<repository>:<tag>`; source N is the upstream
//! registry (and optional path prefix) that serves it. After the pull, the image is re-tagged
//! to its canonical name (see `prefetch`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::header::HeaderMap;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::registry::{Endpoint, RegistryClient, RegistryError, RequestKind};
use crate::retry::{ErrorClass, RetryPolicy};

type Body = BoxBody<Bytes, std::io::Error>;

/// An upstream that serves images: a registry host and a path prefix on it (for mirrors such
/// as a Harbor proxy-cache project: `harbor.example.com/dockerhub-proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub endpoint: Endpoint,
    pub prefix: String,
}

impl Source {
    /// Parses `HOST[/PATH]`.
    pub fn parse(spec: &str) -> Source {
        let spec = spec.trim().trim_end_matches('/');
        let spec = spec
            .strip_prefix("https://")
            .or_else(|| spec.strip_prefix("http://"))
            .unwrap_or(spec);
        let (host, prefix) = spec.split_once('/').unwrap_or((spec, ""));
        Source {
            endpoint: Endpoint::new(host),
            prefix: prefix.to_string(),
        }
    }

    /// The repository path on this source.
    pub fn path_for(&self, repository: &str) -> String {
        if self.prefix.is_empty() {
            repository.to_string()
        } else {
            format!("{}/{repository}", self.prefix)
        }
    }

    /// `host[/prefix]`, as the user wrote it.
    pub fn label(&self) -> String {
        if self.prefix.is_empty() {
            self.endpoint.host.clone()
        } else {
            format!("{}/{}", self.endpoint.host, self.prefix)
        }
    }
}

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
        format!("{}/s{}/{}", self.host(), self.source_id(source), repository)
    }

    /// Every upstream request so far.
    pub fn events(&self) -> Vec<RequestEvent> {
        self.state
            .events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    let Some((source, repository, upstream_path)) = route(&state, &path) else {
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
    let label = source.label();
    let kind = RequestKind::of_path(&upstream_path);
    let host = source.endpoint.host.clone();
    let attempt = || {
        let state = state.clone();
        let (method, path, headers, source, host) = (
            method.clone(),
            upstream_path.clone(),
            headers.clone(),
            source.clone(),
            host.clone(),
        );
        async move {
            wait_for_gate(&state, &host).await;
            let result = state
                .client
                .send(&source.endpoint, method, &path, headers)
                .await;
            if let Err(err) = &result {
                if let Some(wait) = err.retry_after {
                    set_gate(&state, &host, wait);
                }
            }
            result
        }
    };
    let record = |err: Option<&RegistryError>, wait: Option<Duration>| {
        let event = RequestEvent {
            at_ms: now_ms(),
            source: label.clone(),
            repository: repository.clone(),
            kind: err.map_or(kind, |e| e.kind),
            class: err.map(|e| e.class),
            status: err.and_then(|e| e.status),
            message: err.map(|e| e.message.clone()),
            retry_wait_ms: wait.map(|w| w.as_millis() as u64),
        };
        if let Ok(mut events) = state.events.lock() {
            events.push(event);
        }
    };
    let result = state
        .policy
        .run(attempt, |err, wait| record(Some(err), Some(wait)))
        .await;
    match result {
        Ok(resp) => {
            record(None, None);
            Ok(forward(resp, state.client.timeouts.idle))
        }
        Err(err) => {
            record(Some(&err), None);
            Ok(match err.status {
                Some(status) => error_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    err.code.as_deref().unwrap_or("UNKNOWN"),
                    &err.message,
                ),
                None => error_response(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    &format!("upstream {}: {} ({})", err.host, err.message, err.class),
                ),
            })
        }
    }
}

/// `/v2/s<N>/<repository>/(manifests|blobs)/<ref>` -> (source N, repository, upstream path).
fn route(state: &State, path: &str) -> Option<(Source, String, String)> {
    let rest = path.strip_prefix("/v2/s")?;
    let (index, rest) = rest.split_once('/')?;
    let index: usize = index.parse().ok()?;
    let source = state.sources.lock().ok()?.get(index)?.clone();
    let marker = ["/manifests/", "/blobs/"]
        .iter()
        .find_map(|m| rest.find(m))?;
    let (repository, tail) = rest.split_at(marker);
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

fn set_gate(state: &State, host: &str, wait: Duration) {
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

/// Streams an upstream response to the daemon; a body that makes no progress for `idle`
/// is cut, which the daemon sees as a broken blob download and resumes with a Range request.
fn forward(resp: reqwest::Response, idle: Duration) -> Response<Body> {
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
    let chunks = resp.bytes_stream();
    let frames = futures_util::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(Frame::data(bytes)), Some(chunks))),
            Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no progress for {}s", idle.as_secs()),
                )),
                None,
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_host_and_prefix() {
        let s = Source::parse("harbor.example.com/dockerhub-proxy/");
        assert_eq!(s.endpoint.host, "harbor.example.com");
        assert_eq!(s.prefix, "dockerhub-proxy");
        assert_eq!(
            s.path_for("library/ubuntu"),
            "dockerhub-proxy/library/ubuntu"
        );
        assert_eq!(s.label(), "harbor.example.com/dockerhub-proxy");
        let s = Source::parse("http://127.0.0.1:5001");
        assert_eq!(s.endpoint.host, "127.0.0.1:5001");
        assert!(s.endpoint.insecure);
        assert_eq!(s.path_for("library/ubuntu"), "library/ubuntu");
    }
}
