//! A fault-injecting HTTP/1.1 reverse proxy for a registry, on its own 127.0.0.1 port.
//!
//! Every request is classified ([`RequestKind`]) and numbered per kind; its fault is decided
//! by [`FaultConfig::decide`] from the seed, the kind and that number only, so a run is
//! reproducible per kind whatever order concurrent requests arrive in. Faults:
//!
//! | fault       | what the client sees                                                  |
//! |-------------|-----------------------------------------------------------------------|
//! | `eof`       | request read, connection closed, no response                          |
//! | `status_503`| `503` with a registry error body (or plain text, see [`ErrorBody`])   |
//! | `status_429`| `429` with `Retry-After: params.retry_after_secs`                     |
//! | `truncate`  | upstream headers (full `Content-Length`), part of the body, close     |
//! | `stall`     | nothing for `params.stall_secs`, then close ([`StallThen::Close`], the default) or the normal answer ([`StallThen::Continue`]) |
//!
//! plus `latency_ms` per kind, "fail the first N of a kind" ([`KindFaults::fail_first`]),
//! a path filter to aim a kind's faults at one blob ([`KindFaults::path_contains`]), and
//! time windows ([`FaultWindow`]) measured from start, [`FaultProxy::arm`] or
//! [`FaultProxy::set_faults`] (which restart the clock and the per-kind numbering), or from
//! the first request after that ([`WindowClock::FirstRequest`]).
//!
//! With [`ProxyOptions::auth`], `/v2/…` requests need `Authorization: Bearer TOKEN`, else
//! they get `401` with `WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",
//! service="testbed",scope="repository:NAME:pull"`; `/token` hands out the token and is
//! itself subject to the [`RequestKind::Token`] faults. Faults are decided before the token
//! check, as a failing load balancer in front of a registry would.
//!
//! Control endpoint for scripts (not counted, never faulted):
//! `GET /_testbed/stats`, `DELETE /_testbed/stats` (reset), `GET|PUT /_testbed/faults`
//! (JSON [`FaultConfig`]), `POST /_testbed/arm`. `PUT faults` and `POST arm` take an optional
//! `?seed=N` that replaces the seed (so a benchmark can run many trials against one proxy).

mod config;
mod server;
mod stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{
    ErrorBody, FailFirst, FaultConfig, FaultParams, FaultType, FaultWindow, KindFaults,
    RequestKind, StallAt, StallThen, WindowClock,
};
use stats::Seen;
pub use stats::{KindStats, LOG_LIMIT, ProxyStats, RequestRecord};

/// How to start a [`FaultProxy`].
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The registry to forward to (must be on 127.0.0.1).
    pub upstream: SocketAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Seed of the random fault decisions.
    pub seed: u64,
    pub faults: FaultConfig,
    /// Require a Bearer token from `/token` on `/v2/…` requests.
    pub auth: bool,
    /// Credentials the token endpoint demands for private repositories (implies `auth`).
    pub credentials: Option<ProxyCredentials>,
}

/// A registry account: `/token` issues a credentialed token for these credentials (Basic on
/// `GET`, the OAuth2 `password` grant or the `refresh_token` grant on `POST`), answers wrong
/// ones `401`, and anonymous requests get a token that opens only public repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
    /// Repositories (name prefixes) that only a credentialed token opens; empty: all.
    pub private: Vec<String>,
    /// The token endpoint speaks only OAuth2 (`POST`): a `GET` is answered `405`.
    pub oauth_only: bool,
}

impl ProxyCredentials {
    pub fn new(username: &str, password: &str) -> Self {
        ProxyCredentials {
            username: username.to_string(),
            password: password.to_string(),
            private: Vec::new(),
            oauth_only: false,
        }
    }

    /// Only the OAuth2 grants on `POST` (a `GET` gets `405 Method Not Allowed`).
    pub fn oauth_only(mut self) -> Self {
        self.oauth_only = true;
        self
    }

    /// Only repositories starting with one of `prefixes` are private.
    pub fn private(mut self, prefixes: &[&str]) -> Self {
        self.private = prefixes.iter().map(|p| p.to_string()).collect();
        self
    }

    fn is_private(&self, repository: &str) -> bool {
        self.private.is_empty()
            || self
                .private
                .iter()
                .any(|p| repository.starts_with(p.as_str()))
    }
}

impl ProxyOptions {
    /// A proxy for `upstream` on a free port, seed 0, no faults, no auth.
    pub fn new(upstream: SocketAddr) -> Self {
        ProxyOptions {
            upstream,
            port: 0,
            seed: 0,
            faults: FaultConfig::default(),
            auth: false,
            credentials: None,
        }
    }

    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    pub fn with_auth(mut self, auth: bool) -> Self {
        self.auth = auth;
        self
    }

    /// Demand these credentials (and the token flow) for private repositories.
    pub fn with_credentials(mut self, credentials: ProxyCredentials) -> Self {
        self.auth = true;
        self.credentials = Some(credentials);
        self
    }
}

/// A running proxy; stops (with all its connections) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds 127.0.0.1:`options.port` and starts serving.
    pub async fn start(options: ProxyOptions) -> anyhow::Result<FaultProxy> {
        options.faults.validate().context("invalid fault config")?;
        anyhow::ensure!(
            options.upstream.ip() == Ipv4Addr::LOCALHOST,
            "the proxy only forwards to 127.0.0.1, not {}",
            options.upstream
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port))
            .await
            .with_context(|| format!("while binding the proxy to 127.0.0.1:{}", options.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            upstream: options.upstream,
            started: Instant::now(),
            auth: options.auth,
            token: crate::unique_name("testbed-token"),
            credentials: options.credentials,
            private_token: crate::unique_name("testbed-credentialed-token"),
            refresh_token: crate::unique_name("testbed-refresh-token"),
            state: Mutex::new(State::new(options.faults, options.seed)),
        });
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(FaultProxy { shared, task })
    }

    /// The listening address, 127.0.0.1:PORT.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `127.0.0.1:PORT`, the registry part of image references pulled through the proxy.
    pub fn host(&self) -> String {
        self.shared.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared.state().stats.clone()
    }

    /// Zeroes the counters (not the per-kind numbering; see [`FaultProxy::arm`]).
    pub fn reset_stats(&self) {
        self.shared.state().stats = ProxyStats::default();
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.shared.state().config.clone()
    }

    /// Replaces the fault configuration and re-arms (see [`FaultProxy::arm`]).
    pub fn set_faults(&self, faults: FaultConfig) -> anyhow::Result<()> {
        self.shared.set_faults(faults)
    }

    /// Restarts the window clock and the per-kind request numbering, so windows and
    /// `fail_first` count from now.
    pub fn arm(&self) {
        self.shared.state().arm();
    }

    /// Replaces the seed of the random fault decisions and re-arms.
    pub fn set_seed(&self, seed: u64) {
        let mut state = self.shared.state();
        state.seed = seed;
        state.arm();
    }

    /// The current seed.
    pub fn seed(&self) -> u64 {
        self.shared.state().seed
    }

    /// Microseconds since the proxy started: the clock of [`RequestRecord::at_us`].
    pub fn now_us(&self) -> u64 {
        self.shared.now_us()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

/// What the server needs to handle a request.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// The zero of [`RequestRecord::at_us`].
    started: Instant,
    auth: bool,
    token: String,
    credentials: Option<ProxyCredentials>,
    /// The token issued for [`Shared::credentials`]; opens private repositories.
    private_token: String,
    /// The refresh token handed out by the OAuth2 password grant.
    refresh_token: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: FaultConfig,
    seed: u64,
    armed_at: Instant,
    /// When the first request after arming arrived (the windows' zero with
    /// [`WindowClock::FirstRequest`]).
    first_request_at: Option<Instant>,
    next_seq: [u64; RequestKind::ALL.len()],
    stats: ProxyStats,
}

impl State {
    fn new(config: FaultConfig, seed: u64) -> Self {
        State {
            config,
            seed,
            armed_at: Instant::now(),
            first_request_at: None,
            next_seq: [0; RequestKind::ALL.len()],
            stats: ProxyStats::default(),
        }
    }

    fn arm(&mut self) {
        self.armed_at = Instant::now();
        self.first_request_at = None;
        self.next_seq = [0; RequestKind::ALL.len()];
    }
}

/// The decision for one request and what applying it needs.
#[derive(Debug)]
struct Plan {
    fault: Option<FaultType>,
    latency: Duration,
    params: FaultParams,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters inconsistent enough to
        // matter for a test bed; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_faults(&self, faults: FaultConfig) -> anyhow::Result<()> {
        faults.validate()?;
        let mut state = self.state();
        state.config = faults;
        state.arm();
        Ok(())
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Numbers the request (if its kind's faults target its path), decides its fault and
    /// counts it.
    fn plan(&self, kind: RequestKind, seen: Seen) -> Plan {
        let mut guard = self.state();
        let state = &mut *guard;
        let faults = state.config.kind(kind);
        let first_request_at = *state.first_request_at.get_or_insert_with(Instant::now);
        let since_arm = match state.config.window_clock {
            WindowClock::Arm => state.armed_at.elapsed(),
            WindowClock::FirstRequest => first_request_at.elapsed(),
        };
        let targeted = faults.targets(&seen.path);
        let fault = if targeted {
            let seq = state.next_seq[kind as usize];
            state.next_seq[kind as usize] += 1;
            state.config.decide(state.seed, kind, seq, since_arm)
        } else {
            state.config.window_fault(kind, since_arm)
        };
        state.stats.record(kind, seen, targeted, fault);
        Plan {
            fault,
            latency: Duration::from_millis(faults.latency_ms),
            params: state.config.params.clone(),
        }
    }
}
