//! An HTTP forward proxy on 127.0.0.1, as `HTTP_PROXY`/`HTTPS_PROXY` name one: `CONNECT
//! host:port` tunnels (what a client does for `https://` through a proxy) and absolute-form
//! requests (`GET http://host:port/path`, for `http://`), one request per connection. It
//! records every request it was asked to carry ([`ForwardProxy::requests`]), so a test can
//! tell which requests went through it and which bypassed it.
//!
//! It connects only to loopback addresses and to 10.0.0.0/8 (the addresses of a test's own
//! network namespaces, [`crate::netns`]); any other target is refused with `403`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One request the proxy was asked to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// `CONNECT`, `GET`, `POST`, …
    pub method: String,
    /// `host:port` of the target.
    pub target: String,
    /// Whether the proxy connected to the target.
    pub connected: bool,
}

/// A running proxy. Dropping it stops accepting.
#[derive(Debug)]
pub struct ForwardProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<ProxiedRequest>>>,
    _stop: watch::Sender<()>,
}

impl ForwardProxy {
    /// Starts the proxy on a free 127.0.0.1 port.
    pub async fn start() -> anyhow::Result<ForwardProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("while binding the forward proxy")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(());
        let serving = log.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let log = serving.clone();
                tokio::spawn(async move {
                    let _ = serve(client, log).await;
                });
            }
        });
        Ok(ForwardProxy {
            addr,
            log,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT`: the value of `HTTP_PROXY`/`HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many requests named `target` (`host:port`).
    pub fn count_for(&self, target: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }
}

/// Reads one request head (up to the blank line), bounded in size and time.
async fn read_head(client: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk))
            .await
            .context("no request head within 10s")??;
        anyhow::ensure!(n > 0, "the client closed before a request head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "request head too large");
    }
}

fn allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

async fn connect(target: &str) -> Option<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target).await.ok()?.collect();
    let addr = addrs.into_iter().find(|a| allowed(a.ip()))?;
    tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()
}

async fn serve(mut client: TcpStream, log: Arc<Mutex<Vec<ProxiedRequest>>>) -> anyhow::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, uri, version) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or("HTTP/1.1").to_string(),
    );
    let (target, origin_form) = if method == "CONNECT" {
        (uri.clone(), String::new())
    } else {
        let rest = uri.strip_prefix("http://").unwrap_or(&uri);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        (
            authority,
            if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
        )
    };
    let upstream = connect(&target).await;
    if let Ok(mut l) = log.lock() {
        l.push(ProxiedRequest {
            method: method.clone(),
            target: target.clone(),
            connected: upstream.is_some(),
        });
    }
    let Some(mut upstream) = upstream else {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    if method == "CONNECT" {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&rest).await?;
    } else {
        let mut out = format!("{method} {origin_form} {version}\r\n");
        for line in lines.filter(|l| !l.is_empty()) {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if name == "connection" || name.starts_with("proxy-") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).await?;
        upstream.write_all(&rest).await?;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}
