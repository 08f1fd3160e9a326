//! The GitHub API client's HTTP stack: octocrab's own default one (what
//! `OctocrabBuilder::build` makes with our features: rustls with ring and the system roots,
//! HTTP/1.1, connect/read/write timeouts, no retries, no redirects, `User-Agent: octocrab`,
//! the token only to the API's own host), except that connections go through the proxy the
//! environment names, by the rules of [`ProxyEnv`] (Go's `httpproxy`, as the relay and the
//! probes follow them): `HTTPS_PROXY` for an `https://` API URL (a `CONNECT` tunnel, TLS to
//! the API inside it), `HTTP_PROXY` for an `http://` one (requests in absolute form to the
//! proxy), never for loopback or a host `NO_PROXY` names. A proxy may be `http://` or
//! `https://`, with credentials (`http://USER:PASSWORD@HOST:PORT`, sent as
//! `Proxy-Authorization: Basic`, never shown).
//!
//! octocrab's default client has no proxy support, and its reqwest client would pull in a
//! second TLS provider (aws-lc), so the stack is assembled here from octocrab's public layers.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use hyper::header::{HeaderValue, PROXY_AUTHORIZATION, USER_AGENT};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{Request, Uri};
use hyper_rustls::{
    ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream,
};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, Octocrab, OctocrabBuilder};
use tower_service::Service;

use crate::registry_trust::ProxyEnv;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where octocrab sends uploads (release assets); the token goes there too, as octocrab does.
const UPLOAD_URI: &str = "https://uploads.github.com";

/// An octocrab client for `api_url` with `token`, each connection bounded by `timeout`
/// (connect, read and write, as octocrab's `set_*_timeout`), going through `proxies`.
pub(crate) fn client(
    token: &str,
    api_url: &str,
    timeout: Duration,
    proxies: ProxyEnv,
) -> Result<Octocrab, BoxError> {
    // octocrab's own checks of the URL, and its timeout connector.
    let defaults = Octocrab::builder()
        .base_uri(api_url)?
        .set_connect_timeout(Some(timeout))
        .set_read_timeout(Some(timeout))
        .set_write_timeout(Some(timeout));
    let base_uri: Uri = api_url.parse()?;

    // As octocrab with `rustls` + `rustls-ring`: a provider installed by the process, else ring.
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_native_roots()?
        .with_no_client_auth();
    // As hyper-rustls builds its own: any scheme (the connector below decides).
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let proxies = Arc::new(proxies);
    let to_proxy = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp.clone());
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(ProxyConnector {
            direct: tcp,
            to_proxy,
            proxies: proxies.clone(),
        });
    let connector = defaults.set_connect_timeout_service(connector);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let client = ProxyAuthorization {
        inner: client,
        proxies,
    };

    let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token is not a valid HTTP header value")?;
    auth.set_sensitive(true);
    let headers = vec![(USER_AGENT, HeaderValue::from_static("octocrab"))];
    // The order of octocrab's `build`: extra headers innermost, then the base URI, then the
    // token (only for the API's host). Its cache layer does nothing without a cache.
    Ok(OctocrabBuilder::new_empty()
        .with_service(client)
        .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
        .with_layer(&BaseUriLayer::new(base_uri.clone()))
        .with_layer(&AuthHeaderLayer::new(
            Some(auth),
            base_uri,
            Uri::from_static(UPLOAD_URI),
        ))
        .with_auth(AuthState::None)
        .build()?)
}

/// A proxy to go through, from a `ProxyEnv` value.
struct Proxy {
    /// `scheme://host:port`, what we connect to.
    uri: Uri,
    /// The same without credentials, for messages.
    shown: String,
    /// `Basic …` from the URL's credentials.
    authorization: Option<HeaderValue>,
}

impl Proxy {
    fn parse(text: &str) -> Result<Proxy, BoxError> {
        // Not shown as given: it may hold credentials.
        let url = reqwest::Url::parse(text)
            .map_err(|e| format!("the proxy for the GitHub API is not a URL ({e})"))?;
        let scheme = url.scheme();
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default();
        let shown = match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "the proxy {shown} is not supported for the GitHub API: use an http:// or https:// proxy"
            )
            .into());
        }
        let (Some(port), false) = (port, host.is_empty()) else {
            return Err(format!("the proxy {shown} names no host").into());
        };
        let uri: Uri = format!("{scheme}://{host}:{port}").parse()?;
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let credentials = format!(
                "{}:{}",
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or(""))
            );
            let mut value = HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ))?;
            value.set_sensitive(true);
            Some(value)
        };
        Ok(Proxy {
            uri,
            shown,
            authorization,
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The proxy a request to `uri` goes through, if any.
fn route(proxies: &ProxyEnv, uri: &Uri) -> Result<Option<Proxy>, BoxError> {
    let Some(authority) = uri.authority() else {
        return Ok(None);
    };
    let https = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
    proxies
        .proxy_for(authority.as_str(), https)
        .map(|p| Proxy::parse(&p))
        .transpose()
}

/// A connection that failed on the way through a proxy.
#[derive(Debug)]
struct ThroughProxy {
    proxy: String,
    source: BoxError,
}

impl fmt::Display for ThroughProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "through the proxy {}: {}", self.proxy, self.source)
    }
}

impl StdError for ThroughProxy {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Connects to the destination directly, or to the proxy the environment names for it: a
/// `CONNECT` tunnel for `https://` (TLS is done over it by the [`HttpsConnector`] around
/// this), the proxy itself for `http://` (marked proxied, so that requests are sent in
/// absolute form).
#[derive(Clone)]
struct ProxyConnector {
    direct: HttpConnector,
    /// Plain TCP to an `http://` proxy, TLS to an `https://` one.
    to_proxy: HttpsConnector<HttpConnector>,
    proxies: Arc<ProxyEnv>,
}

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl Service<Uri> for ProxyConnector {
    type Response = ProxiedStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxiedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are always ready (each call makes a new connection).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = match route(&self.proxies, &dst) {
            Ok(proxy) => proxy,
            Err(err) => return Box::pin(async move { Err(err) }),
        };
        let Some(proxy) = proxy else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move {
                Ok(ProxiedStream {
                    io: MaybeHttpsStream::Http(connecting.await?),
                    forwarding: false,
                })
            });
        };
        let shown = proxy.shown.clone();
        let failed = move |source: BoxError| -> BoxError {
            Box::new(ThroughProxy {
                proxy: shown,
                source,
            })
        };
        if dst.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy.uri, self.to_proxy.clone());
            if let Some(auth) = proxy.authorization {
                tunnel = tunnel.with_auth(auth);
            }
            let connecting = tunnel.call(dst);
            Box::pin(async move {
                let io = connecting.await.map_err(|e| failed(Box::new(e)))?;
                Ok(ProxiedStream {
                    io,
                    forwarding: false,
                })
            })
        } else {
            let connecting = self.to_proxy.call(proxy.uri);
            Box::pin(async move {
                let io = connecting.await.map_err(failed)?;
                Ok(ProxiedStream {
                    io,
                    forwarding: true,
                })
            })
        }
    }
}

/// A connection to the destination, to a tunnel through a proxy, or to a proxy that forwards
/// requests (`forwarding`).
struct ProxiedStream {
    io: Io,
    forwarding: bool,
}

impl Connection for ProxiedStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarding)
    }
}

impl Read for ProxiedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ProxiedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Adds `Proxy-Authorization` to a request that goes to a forwarding proxy with credentials
/// (a tunnel's `CONNECT` carries its own).
#[derive(Clone)]
struct ProxyAuthorization<S> {
    inner: S,
    proxies: Arc<ProxyEnv>,
}

impl<S, B> Service<Request<B>> for ProxyAuthorization<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.uri().scheme() == Some(&hyper::http::uri::Scheme::HTTP)
            // A proxy that cannot be parsed fails in the connector, with a message.
            && let Ok(Some(Proxy {
                authorization: Some(auth),
                ..
            })) = route(&self.proxies, req.uri())
        {
            req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(http: Option<&str>, https: Option<&str>, no: Option<&str>) -> ProxyEnv {
        ProxyEnv {
            http_proxy: http.map(str::to_string),
            https_proxy: https.map(str::to_string),
            no_proxy: no.map(str::to_string),
        }
    }

    #[test]
    fn routes_follow_the_proxy_environment() {
        let e = env(
            Some("proxy:3128"),
            Some("https://u%40x:p%3Aw@sec:8443/"),
            None,
        );
        let https = route(&e, &Uri::from_static("https://api.github.com/repos"))
            .unwrap()
            .unwrap();
        assert_eq!(https.uri, "https://sec:8443/");
        assert_eq!(https.shown, "https://sec:8443");
        let auth = https.authorization.unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(
            auth,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("u@x:p:w")
            )
        );
        let http = route(&e, &Uri::from_static("http://ghes.internal:8080/api/v3"))
            .unwrap()
            .unwrap();
        assert_eq!(http.uri, "http://proxy:3128/");
        assert!(http.authorization.is_none());
        // Loopback never goes through a proxy.
        assert!(
            route(&e, &Uri::from_static("http://127.0.0.1:9000/"))
                .unwrap()
                .is_none()
        );
        let bypass = env(Some("proxy:3128"), None, Some(".internal,10.0.0.0/8"));
        for uri in [
            "http://ghes.internal/",
            "http://10.1.2.3:80/",
            "https://x.y/",
        ] {
            assert!(
                route(&bypass, &Uri::from_static(uri)).unwrap().is_none(),
                "{uri}"
            );
        }
    }

    #[test]
    fn an_unsupported_proxy_is_an_error_without_its_credentials() {
        let e = env(Some("socks5://user:secret@p:1080"), None, None);
        let err = route(&e, &Uri::from_static("http://ghes.internal/"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("socks5://p:1080"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
