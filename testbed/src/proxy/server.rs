//! The proxy's HTTP side: accept loop, per-request fault application, the Bearer token
//! flow, forwarding to the registry, and the `/_testbed/` control endpoint.
//!
//! "Close without a response" is done by failing the hyper service: hyper then drops the
//! connection without writing anything. A truncated body ends with a body error, which makes
//! hyper abort the connection after the bytes already sent; a mid-body stall is a truncated
//! body that pauses before it fails (or goes on).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE, RETRY_AFTER,
    TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{
    ErrorBody, FaultConfig, FaultParams, FaultType, RequestKind, Seen, Shared, StallAt, StallThen,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long the proxy waits for a request body or a whole upstream body it must buffer.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest control request body accepted.
const CONTROL_BODY_LIMIT: usize = 1 << 20;
/// Chunk size of a truncated body (keeps hyper flushing as it goes).
const TRUNCATE_CHUNK: usize = 64 * 1024;
/// Pause between the last bytes of a truncated body and the close, so they get flushed.
const TRUNCATE_FLUSH_PAUSE: Duration = Duration::from_millis(100);
/// Lifetime of issued tokens, as announced in `/token` answers.
const TOKEN_EXPIRES_SECS: u64 = 300;

/// The service error that makes hyper close the connection without a response.
#[derive(Debug)]
struct CloseConnection(&'static str);

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "testbed proxy closed the connection: {}", self.0)
    }
}

impl std::error::Error for CloseConnection {}

type Handled = Result<Response<ProxyBody>, CloseConnection>;

/// Accepts connections until the task is aborted; aborting drops the `JoinSet`, which
/// aborts every connection still open.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.state().stats.connections += 1;
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let served = Arc::new(AtomicU64::new(0));
                    let service = service_fn(move |req| {
                        let reused = served.fetch_add(1, Ordering::Relaxed) > 0;
                        handle(Arc::clone(&shared), req, reused)
                    });
                    // Errors here are the injected closes and clients going away.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, reused: bool) -> Handled {
    if let Some(endpoint) = req.uri().path().strip_prefix("/_testbed/") {
        let endpoint = endpoint.to_owned();
        return Ok(control(&shared, &endpoint, req).await);
    }
    let kind = RequestKind::classify(req.method(), req.uri().path());
    let seen = Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        at_us: shared.now_us(),
        ranged: req.headers().contains_key(RANGE),
        reused,
    };
    let plan = shared.plan(kind, seen);
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let params = &plan.params;
    match plan.fault {
        Some(FaultType::Eof) => return close_after_reading(req, "eof").await,
        Some(fault @ (FaultType::Status503 | FaultType::Status429)) => {
            return Ok(status_response(fault, params));
        }
        Some(FaultType::Stall)
            if params.stall_at == StallAt::Start || req.method() == Method::HEAD =>
        {
            tokio::time::sleep(Duration::from_secs_f64(params.stall_secs)).await;
            if params.stall_then == StallThen::Close {
                return close_after_reading(req, "stall").await;
            }
        }
        Some(FaultType::Stall | FaultType::Truncate) | None => {}
    }
    let resp = if kind == RequestKind::Token {
        token_response(&shared, req).await
    } else if shared.auth && req.uri().path().starts_with("/v2") && !authorized(&shared, &req) {
        shared.state().stats.unauthorized += 1;
        unauthorized_response(&shared, &req)
    } else if shared.auth && !opens_repository(&shared, &req) {
        shared.state().stats.denied += 1;
        registry_error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "requested access to the resource is denied",
        )
    } else {
        forward(&shared, req).await
    };
    match plan.fault {
        Some(FaultType::Truncate) => cut_body(resp, params, None).await,
        Some(FaultType::Stall) if params.stall_at == StallAt::Body => {
            let stall = Duration::from_secs_f64(params.stall_secs);
            cut_body(resp, params, Some((stall, params.stall_then))).await
        }
        _ => Ok(resp),
    }
}

/// Reads the request body (bounded), then closes the connection without a response.
async fn close_after_reading(req: Request<Incoming>, why: &'static str) -> Handled {
    let _ = tokio::time::timeout(BODY_TIMEOUT, req.into_body().collect()).await;
    Err(CloseConnection(why))
}

/// Sends the upstream headers with the full `Content-Length` and `params.truncate_fraction`
/// of the body in chunks. Without `stall`: pauses so they are flushed, then fails the body so
/// hyper closes the connection (a truncated body). With `stall`: sends nothing more for its
/// duration, then fails the body ([`StallThen::Close`]) or sends the rest
/// ([`StallThen::Continue`]).
async fn cut_body(
    resp: Response<ProxyBody>,
    params: &FaultParams,
    stall: Option<(Duration, StallThen)>,
) -> Handled {
    let (mut parts, body) = resp.into_parts();
    let full = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => return Err(CloseConnection("cut body: upstream body failed")),
    };
    if full.is_empty() {
        if let Some((pause, then)) = stall {
            tokio::time::sleep(pause).await;
            if then == StallThen::Continue {
                return Ok(Response::from_parts(parts, full_body(full)));
            }
        }
        return Err(CloseConnection("cut body: response without a body"));
    }
    let keep = ((full.len() as f64 * params.truncate_fraction) as usize).min(full.len() - 1);
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
    let head = stream::iter(chunks(full.slice(..keep)));
    let (pause, rest) = match stall {
        None => (TRUNCATE_FLUSH_PAUSE, None),
        Some((pause, StallThen::Close)) => (pause, None),
        Some((pause, StallThen::Continue)) => (pause, Some(full.slice(keep..))),
    };
    let tail = stream::once(async move {
        tokio::time::sleep(pause).await;
        rest
    })
    .flat_map(|rest| match rest {
        Some(rest) => stream::iter(chunks(rest)).left_stream(),
        None => stream::iter([Err::<Frame<Bytes>, BoxError>(Box::new(CloseConnection(
            "cut body",
        )))])
        .right_stream(),
    });
    let body = StreamBody::new(head.chain(tail));
    Ok(Response::from_parts(parts, BodyExt::boxed_unsync(body)))
}

/// `data` as body frames of at most [`TRUNCATE_CHUNK`] bytes (keeps hyper flushing as it goes).
fn chunks(data: Bytes) -> Vec<Result<Frame<Bytes>, BoxError>> {
    (0..data.len())
        .step_by(TRUNCATE_CHUNK)
        .map(|at| {
            Ok(Frame::data(
                data.slice(at..(at + TRUNCATE_CHUNK).min(data.len())),
            ))
        })
        .collect()
}

fn full_body(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// Forwards `req` to the registry over a new connection, keeping the client's `Host` (so
/// the registry's upload `Location`s point back at the proxy) and streaming both bodies.
async fn forward(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(AUTHORIZATION);
    parts.headers.remove(CONNECTION);
    let req = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(
        crate::http::REQUEST_TIMEOUT,
        crate::http::send_streaming(shared.upstream, req),
    )
    .await;
    match sent {
        Ok(Ok(resp)) => resp.map(|body| body.map_err(BoxError::from).boxed_unsync()),
        Ok(Err(err)) => text_response(StatusCode::BAD_GATEWAY, format!("{err:#}\n")),
        Err(_) => text_response(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n".into()),
    }
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Any token the proxy issued.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    bearer(req).is_some_and(|token| token == shared.token || token == shared.private_token)
}

/// Whether the request's token opens its repository (private ones need the credentialed token).
fn opens_repository(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(credentials) = &shared.credentials else {
        return true;
    };
    let Some(name) = repository_name(req.uri().path()) else {
        return true;
    };
    !credentials.is_private(name) || bearer(req) == Some(shared.private_token.as_str())
}

/// `user:password` of a Basic `Authorization` header.
fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// An `application/x-www-form-urlencoded` body.
fn parse_form(body: &[u8]) -> std::collections::HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `401` with the Bearer challenge a registry behind a token server sends.
fn unauthorized_response(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    let mut challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"testbed\"",
        shared.addr
    );
    if let Some(name) = repository_name(req.uri().path()) {
        let actions = if matches!(*req.method(), Method::GET | Method::HEAD) {
            "pull"
        } else {
            "pull,push"
        };
        challenge.push_str(&format!(",scope=\"repository:{name}:{actions}\""));
    }
    let mut resp = registry_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    let headers = resp.headers_mut();
    headers.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("challenge is ASCII"),
    );
    headers.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// `NAME` of `/v2/NAME/{manifests,blobs,tags}/…`.
fn repository_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker))
        .min()
        .map(|end| &rest[..end])
}

/// `/token`: without configured credentials, a token for everyone. With them: Basic (on
/// `GET`), the `password` grant or the `refresh_token` grant (on `POST`) with the right
/// credentials get the credentialed token, wrong ones `401`, none the anonymous token.
async fn token_response(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(credentials) = &shared.credentials else {
        return anonymous_token(shared);
    };
    if credentials.oauth_only && req.method() != Method::POST {
        return text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "this token endpoint takes only OAuth2 POST requests\n".into(),
        );
    }
    let basic = basic_credentials(&req);
    let form = if req.method() == Method::POST {
        match tokio::time::timeout(BODY_TIMEOUT, req.into_body().collect()).await {
            Ok(Ok(body)) => parse_form(&body.to_bytes()),
            _ => return text_response(StatusCode::BAD_REQUEST, "unreadable body\n".into()),
        }
    } else {
        Default::default()
    };
    let grant = form.get("grant_type").map(String::as_str);
    let (presented, refresh) = match grant {
        Some("password") => (
            Some((
                form.get("username").cloned().unwrap_or_default(),
                form.get("password").cloned().unwrap_or_default(),
            )),
            true,
        ),
        Some("refresh_token") => {
            if form.get("refresh_token") == Some(&shared.refresh_token) {
                return credentialed_token(shared, true);
            }
            shared.state().stats.tokens_rejected += 1;
            return registry_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid refresh token",
            );
        }
        _ => (basic, false),
    };
    match presented {
        None => anonymous_token(shared),
        Some((user, password))
            if user == credentials.username && password == credentials.password =>
        {
            credentialed_token(shared, refresh)
        }
        Some(_) => {
            shared.state().stats.tokens_rejected += 1;
            registry_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "incorrect username or password",
            )
        }
    }
}

fn credentialed_token(shared: &Shared, with_refresh: bool) -> Response<ProxyBody> {
    {
        let mut state = shared.state();
        state.stats.tokens_issued += 1;
        state.stats.tokens_credentialed += 1;
    }
    let mut body = serde_json::json!({
        "token": shared.private_token,
        "access_token": shared.private_token,
        "expires_in": TOKEN_EXPIRES_SECS,
    });
    if with_refresh {
        body["refresh_token"] = serde_json::Value::String(shared.refresh_token.clone());
    }
    json_response(StatusCode::OK, &body)
}

fn anonymous_token(shared: &Shared) -> Response<ProxyBody> {
    shared.state().stats.tokens_issued += 1;
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "token": shared.token,
            "access_token": shared.token,
            "expires_in": TOKEN_EXPIRES_SECS,
        }),
    )
}

/// An injected `503`, or `429` with `Retry-After`, in the configured body style.
fn status_response(fault: FaultType, params: &FaultParams) -> Response<ProxyBody> {
    let (status, code, message) = if fault == FaultType::Status429 {
        let message = "rate limit exceeded (testbed fault)";
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
    } else {
        let message = "service unavailable (testbed fault)";
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    };
    let mut resp = match params.error_body {
        ErrorBody::Registry => registry_error(status, code, message),
        ErrorBody::Plain => text_response(status, format!("{status}\n")),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(params.retry_after_secs));
    }
    resp
}

fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json_response(
        status,
        &serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] }),
    )
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).expect("serializing to memory cannot fail");
    bytes_response(status, "application/json", body.into())
}

fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    bytes_response(status, "text/plain; charset=utf-8", text.into())
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `/_testbed/ENDPOINT`: stats, faults and arm, for shell scripts.
async fn control(shared: &Shared, endpoint: &str, req: Request<Incoming>) -> Response<ProxyBody> {
    let seed = match seed_param(req.uri().query()) {
        Ok(seed) => seed,
        Err(err) => return text_response(StatusCode::BAD_REQUEST, format!("{err}\n")),
    };
    let reseed = |shared: &Shared| {
        if let Some(seed) = seed {
            let mut state = shared.state();
            state.seed = seed;
            state.arm();
        }
    };
    match (req.method().clone(), endpoint) {
        (Method::GET, "stats") => json_response(StatusCode::OK, &shared.state().stats),
        (Method::DELETE, "stats") => {
            shared.state().stats = Default::default();
            text_response(StatusCode::OK, "stats reset\n".into())
        }
        (Method::GET, "faults") => json_response(StatusCode::OK, &shared.state().config),
        (Method::PUT, "faults") => match read_control_body(req).await {
            Ok(text) => match FaultConfig::from_json(&text).and_then(|c| shared.set_faults(c)) {
                Ok(()) => {
                    reseed(shared);
                    text_response(StatusCode::OK, "faults set, proxy armed\n".into())
                }
                Err(err) => text_response(StatusCode::BAD_REQUEST, format!("{err:#}\n")),
            },
            Err(err) => text_response(StatusCode::BAD_REQUEST, format!("{err}\n")),
        },
        (Method::POST, "arm") => {
            shared.state().arm();
            reseed(shared);
            text_response(StatusCode::OK, "armed\n".into())
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "control endpoints: GET|DELETE /_testbed/stats, GET|PUT /_testbed/faults[?seed=N], \
             POST /_testbed/arm[?seed=N]\n"
                .into(),
        ),
    }
}

/// The `seed=N` of a control request's query, if any.
fn seed_param(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("seed="))
    else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("seed must be an unsigned integer, got {value:?}"))
}

async fn read_control_body(req: Request<Incoming>) -> Result<String, String> {
    let limited = http_body_util::Limited::new(req.into_body(), CONTROL_BODY_LIMIT);
    let collected = tokio::time::timeout(BODY_TIMEOUT, limited.collect())
        .await
        .map_err(|_| "timed out reading the body".to_owned())?
        .map_err(|err| format!("cannot read the body: {err}"))?;
    String::from_utf8(collected.to_bytes().to_vec()).map_err(|_| "the body is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::{repository_name, seed_param};

    #[test]
    fn seed_param_is_read_from_the_query() {
        assert_eq!(seed_param(None), Ok(None));
        assert_eq!(seed_param(Some("x=1")), Ok(None));
        assert_eq!(seed_param(Some("x=1&seed=42")), Ok(Some(42)));
        assert!(seed_param(Some("seed=-1")).is_err());
    }

    #[test]
    fn repository_name_handles_nested_names() {
        assert_eq!(
            repository_name("/v2/library/ubuntu/manifests/22.04"),
            Some("library/ubuntu")
        );
        assert_eq!(repository_name("/v2/a/b/c/blobs/sha256:00"), Some("a/b/c"));
        assert_eq!(repository_name("/v2/x/tags/list"), Some("x"));
        assert_eq!(repository_name("/v2/"), None);
        assert_eq!(repository_name("/token"), None);
    }
}
