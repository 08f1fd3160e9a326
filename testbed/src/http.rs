//! A minimal HTTP/1.1 client for 127.0.0.1 only: one new connection per request, like the
//! Docker daemon's registry client, and every request bounded by a timeout.
//!
//! Used to talk to the registry (image uploads, readiness), by the proxy to forward requests
//! upstream, and by tests to probe the proxy. A URL whose host is not `127.0.0.1` is refused,
//! so no test can reach outside the machine by mistake.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long [`send`] waits for a whole exchange (connect, request, full response body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A response with its body read to the end.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits `http://127.0.0.1:PORT/path?query` into the socket address and the origin-form
/// target (`/path?query`). Fails for any other scheme or host.
pub fn loopback_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs are allowed, got {url:?}"
    );
    let Some(host) = uri.host() else {
        bail!("URL {url:?} has no host");
    };
    ensure!(
        host == "127.0.0.1",
        "the test bed only talks to 127.0.0.1, refusing {url:?}"
    );
    let port = uri.port_u16().unwrap_or(80);
    let target = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    Ok((SocketAddr::from((Ipv4Addr::LOCALHOST, port)), target))
}

/// Sends `req` over a new connection to `addr` (which must be on 127.0.0.1) and returns the
/// response head with its body still streaming.
///
/// The request's `Host` header is set to `addr` unless the caller set one. The connection is
/// driven by a spawned task that ends with the response body.
pub async fn send_streaming<B>(
    addr: SocketAddr,
    mut req: Request<B>,
) -> anyhow::Result<hyper::Response<Incoming>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    ensure!(
        addr.ip() == Ipv4Addr::LOCALHOST,
        "the test bed only talks to 127.0.0.1, refusing {addr}"
    );
    if !req.headers().contains_key(HOST) {
        let host = HeaderValue::from_str(&addr.to_string())?;
        req.headers_mut().insert(HOST, host);
    }
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("while connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("while starting HTTP/1.1 with {addr}"))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .with_context(|| format!("while sending a request to {addr}"))
}

/// Sends one request to `url` (on 127.0.0.1) with `headers` and `body`, reads the whole
/// response, and fails if that takes longer than [`REQUEST_TIMEOUT`].
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Response> {
    let (addr, target) = loopback_target(url)?;
    let mut builder = Request::builder().method(method.clone()).uri(target);
    for (name, value) in headers {
        builder = builder.header(HeaderName::from_bytes(name.as_bytes())?, *value);
    }
    let req = builder.body(Full::new(body))?;
    let exchange = async {
        let resp = send_streaming(addr, req).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .context("while reading the response body")?
            .to_bytes();
        Ok::<_, anyhow::Error>(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {url} took longer than {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// `GET url` with no extra headers.
pub async fn get(url: &str) -> anyhow::Result<Response> {
    send(Method::GET, url, &[], Bytes::new()).await
}
