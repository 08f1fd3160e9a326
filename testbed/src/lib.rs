//! Test bed for ai-infra-build: real components on 127.0.0.1 that every later test stands on.
//!
//! - [`registry::Registry`]: Debian's `docker-registry` (distribution 2.8) on a free loopback
//!   port with throw-away storage.
//! - [`images`]: base images built offline (a busybox rootfs plus random-data layers) and
//!   uploaded through the registry HTTP API under Docker Hub-like names.
//! - [`proxy::FaultProxy`]: a deterministic fault-injecting reverse proxy in front of a
//!   registry (EOF, 503, 429 + `Retry-After`, truncated bodies, stalls before the answer or
//!   mid-body, latency, windows, an optional Bearer token flow), with counters, a log of
//!   every request with its arrival time, and a control endpoint (faults, seed, counters).
//! - [`tls`]: a CA per test, certificates, `certs.d` files, and a TLS-terminating front.
//! - [`forward_proxy`]: an HTTP(S) forward proxy (CONNECT) that records what it carried.
//! - [`netns`]: a network namespace of the test's own and a second Docker engine in it.
//! - [`docker`]: the few daemon operations tests need (pull with the exact error text,
//!   remove an image by name, run a container).
//!
//! Every server binds 127.0.0.1 only, every request goes to 127.0.0.1 only ([`http`] refuses
//! anything else), and every wait is bounded by a deadline. Missing prerequisites
//! (`docker-registry`, `busybox-static`, the Docker daemon) are errors that say how to install
//! or start them, never silent skips.
//!
//! The library never prints; the `testbed` binary is the only place that writes output.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod docker;
pub mod forward_proxy;
pub mod http;
pub mod images;
pub mod netns;
pub mod proxy;
pub mod registry;
pub mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::proxy::{FaultProxy, ProxyOptions};
use crate::registry::Registry;

/// A registry with a [`FaultProxy`] in front of it: the usual setup of a pull test.
///
/// Push through `registry` (no faults), pull through `proxy`.
#[derive(Debug)]
pub struct TestBed {
    pub proxy: FaultProxy,
    pub registry: Registry,
}

impl TestBed {
    /// Starts a registry, then a proxy in front of it with the options `configure` returns
    /// (it gets [`ProxyOptions::new`] for the registry: free port, seed 0, no faults).
    pub async fn start(
        configure: impl FnOnce(ProxyOptions) -> ProxyOptions,
    ) -> anyhow::Result<TestBed> {
        let registry = Registry::start().await?;
        let proxy = FaultProxy::start(configure(ProxyOptions::new(registry.addr())))
            .await
            .context("while starting the fault proxy")?;
        Ok(TestBed { proxy, registry })
    }
}

/// Returns `prefix-xxxxxxxx` with 8 random hex digits, for repositories, tags and container
/// names that must not collide with other tests sharing the daemon.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Removes, when dropped, every local image whose `repository:tag` contains one of the names
/// (a test's [`unique_name`]s: its canonical tags and any relay tag a failed run left behind).
/// Best effort: a daemon that does not answer is left as it is.
pub struct RemoveImagesOnDrop(pub Vec<String>);

impl Drop for RemoveImagesOnDrop {
    fn drop(&mut self) {
        use std::process::{Command, Stdio};
        let Ok(listed) = Command::new("docker")
            .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        else {
            return;
        };
        let ours: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|image| self.0.iter().any(|name| image.contains(name.as_str())))
            .map(str::to_owned)
            .collect();
        if !ours.is_empty() {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force"])
                .args(&ours)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Finds a free TCP port on 127.0.0.1 (bind to port 0, read it back, release it).
///
/// Another process may take the port before the caller binds it; callers that start a child
/// process on it retry with a new port when that happens.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("while binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `probe` every `interval` until it returns `Ok(Some(value))`, an error, or `timeout`
/// has passed (then an error naming `what`).
///
/// `Ok(None)` means "not yet". The probe is always tried at least once.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}
