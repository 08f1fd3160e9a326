//! What the proxy injects: request kinds, fault types, the per-kind configuration, windows,
//! and the deterministic decision for one request ([`FaultConfig::decide`]).
//!
//! The JSON form (used by `testbed serve --faults` and `PUT /_testbed/faults`) mirrors these
//! types; every field is optional:
//!
//! ```json
//! {
//!   "kinds": {
//!     "manifest_get": { "fail_first": { "count": 1, "fault": "eof" } },
//!     "blob_get": { "truncate": 0.2, "stall": 0.1, "latency_ms": 50 }
//!   },
//!   "windows": [ { "fault": "status_429", "until_secs": 3 } ],
//!   "window_clock": "first_request",
//!   "params": { "retry_after_secs": 2, "stall_secs": 3, "stall_then": "close", "stall_at": "body" }
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use hyper::Method;
use serde::{Deserialize, Serialize};

/// What a registry request is for; faults and counters are kept per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `GET /v2/` (the version check every client starts with).
    Ping,
    /// `HEAD /v2/NAME/manifests/REF`.
    ManifestHead,
    /// `GET /v2/NAME/manifests/REF`.
    ManifestGet,
    /// `GET` or `HEAD /v2/NAME/blobs/DIGEST` (layers and configs).
    BlobGet,
    /// The proxy's own token endpoint, `/token`.
    Token,
    /// Anything else: uploads, manifest `PUT`, tag lists, …
    Other,
}

impl RequestKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RequestKind; 6] = [
        RequestKind::Ping,
        RequestKind::ManifestHead,
        RequestKind::ManifestGet,
        RequestKind::BlobGet,
        RequestKind::Token,
        RequestKind::Other,
    ];

    /// The kind of a request with `method` for `path` (without the query).
    pub fn classify(method: &Method, path: &str) -> RequestKind {
        let read = method == Method::GET || method == Method::HEAD;
        if path == "/v2/" || path == "/v2" {
            RequestKind::Ping
        } else if path == "/token" {
            RequestKind::Token
        } else if !path.starts_with("/v2/") || !read {
            RequestKind::Other
        } else if path.contains("/manifests/") {
            if method == Method::HEAD {
                RequestKind::ManifestHead
            } else {
                RequestKind::ManifestGet
            }
        } else if path.contains("/blobs/") && !path.contains("/blobs/uploads") {
            RequestKind::BlobGet
        } else {
            RequestKind::Other
        }
    }

    fn index(self) -> u64 {
        self as u64
    }
}

/// One way a request can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultType {
    /// Read the request, then close the connection without any response.
    #[serde(rename = "eof")]
    Eof,
    /// Answer `503 Service Unavailable`.
    #[serde(rename = "status_503")]
    Status503,
    /// Answer `429 Too Many Requests` with `Retry-After: params.retry_after_secs`.
    #[serde(rename = "status_429")]
    Status429,
    /// Send the upstream headers (full `Content-Length`) and `params.truncate_fraction` of the
    /// body, then close. A response without a body is closed like [`FaultType::Eof`].
    #[serde(rename = "truncate")]
    Truncate,
    /// Send nothing for `params.stall_secs`, then close the connection without a response
    /// ([`StallThen::Close`], the default) or answer normally ([`StallThen::Continue`]).
    /// With [`StallAt::Body`] the stall comes mid-body instead: headers and
    /// `params.truncate_fraction` of the body, then nothing, then close or the rest.
    #[serde(rename = "stall")]
    Stall,
}

impl FaultType {
    /// Every fault type, in the order random rates are laid out on `[0, 1)`.
    pub const ALL: [FaultType; 5] = [
        FaultType::Eof,
        FaultType::Status503,
        FaultType::Status429,
        FaultType::Truncate,
        FaultType::Stall,
    ];
}

/// "The first `count` requests of this kind fail with `fault`" (counted from start, `arm()`
/// or `set_faults()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailFirst {
    pub count: u64,
    pub fault: FaultType,
}

/// Faults for one request kind: random rates (each in `[0, 1]`, summing to at most 1),
/// added latency, and an optional "fail the first N".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindFaults {
    pub eof: f64,
    pub status_503: f64,
    pub status_429: f64,
    pub truncate: f64,
    pub stall: f64,
    /// Delay added before every request of this kind is handled (faulted or not).
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_first: Option<FailFirst>,
    /// If set, only requests whose path contains this text (e.g. one layer's digest) are
    /// numbered and get this kind's faults; the others pass untouched (windows still apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
}

impl KindFaults {
    /// Sets the random rate of `fault`.
    pub fn with_rate(mut self, fault: FaultType, rate: f64) -> Self {
        *self.rate_mut(fault) = rate;
        self
    }

    /// Makes the first `count` requests fail with `fault`.
    pub fn fail_first(mut self, count: u64, fault: FaultType) -> Self {
        self.fail_first = Some(FailFirst { count, fault });
        self
    }

    /// Restricts this kind's faults to requests whose path contains `needle`.
    pub fn only_path_containing(mut self, needle: impl Into<String>) -> Self {
        self.path_contains = Some(needle.into());
        self
    }

    /// Whether this kind's faults apply to a request for `path`.
    pub fn targets(&self, path: &str) -> bool {
        self.path_contains
            .as_deref()
            .is_none_or(|needle| path.contains(needle))
    }

    /// Adds `ms` milliseconds to every request.
    pub fn with_latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// The random rate of `fault`.
    pub fn rate(&self, fault: FaultType) -> f64 {
        match fault {
            FaultType::Eof => self.eof,
            FaultType::Status503 => self.status_503,
            FaultType::Status429 => self.status_429,
            FaultType::Truncate => self.truncate,
            FaultType::Stall => self.stall,
        }
    }

    fn rate_mut(&mut self, fault: FaultType) -> &mut f64 {
        match fault {
            FaultType::Eof => &mut self.eof,
            FaultType::Status503 => &mut self.status_503,
            FaultType::Status429 => &mut self.status_429,
            FaultType::Truncate => &mut self.truncate,
            FaultType::Stall => &mut self.stall,
        }
    }
}

/// A time window (seconds since start, `arm()` or `set_faults()`, or since the first request
/// after that: see [`WindowClock`]) in which every request of the listed kinds (all kinds if
/// empty) fails with `fault`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    #[serde(default)]
    pub kinds: Vec<RequestKind>,
    pub fault: FaultType,
    #[serde(default)]
    pub from_secs: f64,
    pub until_secs: f64,
}

impl FaultWindow {
    /// Every request fails with `fault` for the first `secs` seconds.
    pub fn first_secs(secs: f64, fault: FaultType) -> Self {
        FaultWindow {
            kinds: Vec::new(),
            fault,
            from_secs: 0.0,
            until_secs: secs,
        }
    }

    /// Restricts the window to `kinds`.
    pub fn for_kinds(mut self, kinds: &[RequestKind]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }

    fn applies(&self, kind: RequestKind, since_arm: Duration) -> bool {
        let t = since_arm.as_secs_f64();
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && t >= self.from_secs
            && t < self.until_secs
    }
}

/// What happens after a stall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallThen {
    /// Close the connection without a response (a hung server that finally gives up).
    #[default]
    Close,
    /// Handle the request normally (a very slow server).
    Continue,
}

/// When the clock of the [`FaultWindow`]s starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowClock {
    /// At start, `arm()` or `set_faults()`.
    #[default]
    Arm,
    /// At the first request after that (so "the first 3 seconds" of a client's run do not
    /// depend on how long the client took to start).
    FirstRequest,
}

/// Where a stall happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallAt {
    /// Before any response byte (a server that accepted the request and hangs).
    #[default]
    Start,
    /// After the headers and `truncate_fraction` of the body (a download that stops
    /// mid-stream). A response without a body stalls at the start instead.
    Body,
}

/// The body of injected `503`/`429` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBody {
    /// A registry error document, `{"errors":[{"code":"UNAVAILABLE"|"TOOMANYREQUESTS",…}]}`,
    /// like a registry or Docker Hub's rate limiter sends.
    #[default]
    Registry,
    /// A short plain-text body, like a load balancer in front of a registry sends.
    Plain,
}

/// Parameters shared by all kinds' faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultParams {
    /// `Retry-After` of injected 429s, in seconds.
    pub retry_after_secs: u64,
    /// How long a stall sends nothing.
    pub stall_secs: f64,
    pub stall_then: StallThen,
    pub stall_at: StallAt,
    /// Share of the body a truncated response sends (and a mid-body stall sends before it
    /// stalls), in `[0, 1)`.
    pub truncate_fraction: f64,
    pub error_body: ErrorBody,
}

impl Default for FaultParams {
    fn default() -> Self {
        FaultParams {
            retry_after_secs: 1,
            stall_secs: 5.0,
            stall_then: StallThen::Close,
            stall_at: StallAt::Start,
            truncate_fraction: 0.5,
            error_body: ErrorBody::Registry,
        }
    }
}

/// The whole fault configuration of a proxy. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub kinds: BTreeMap<RequestKind, KindFaults>,
    pub windows: Vec<FaultWindow>,
    /// When the windows' clock starts.
    pub window_clock: WindowClock,
    pub params: FaultParams,
}

impl FaultConfig {
    /// Sets the faults of `kind`.
    pub fn with_kind(mut self, kind: RequestKind, faults: KindFaults) -> Self {
        self.kinds.insert(kind, faults);
        self
    }

    /// Adds a window.
    pub fn with_window(mut self, window: FaultWindow) -> Self {
        self.windows.push(window);
        self
    }

    /// Starts the windows' clock at the first request instead of at arming.
    pub fn with_window_clock(mut self, clock: WindowClock) -> Self {
        self.window_clock = clock;
        self
    }

    /// Replaces the shared parameters.
    pub fn with_params(mut self, params: FaultParams) -> Self {
        self.params = params;
        self
    }

    /// Parses and validates the JSON form.
    pub fn from_json(json: &str) -> anyhow::Result<Self> {
        let config: FaultConfig = serde_json::from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks rates, fractions and windows.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (kind, faults) in &self.kinds {
            let mut sum = 0.0;
            for fault in FaultType::ALL {
                let rate = faults.rate(fault);
                ensure!(
                    (0.0..=1.0).contains(&rate),
                    "{kind:?}: rate of {fault:?} must be in [0, 1], got {rate}"
                );
                sum += rate;
            }
            ensure!(
                sum <= 1.0 + 1e-9,
                "{kind:?}: fault rates add up to {sum}, more than 1"
            );
        }
        for window in &self.windows {
            ensure!(
                window.from_secs >= 0.0 && window.until_secs > window.from_secs,
                "window {window:?} must have 0 <= from_secs < until_secs"
            );
        }
        let p = &self.params;
        ensure!(
            (0.0..1.0).contains(&p.truncate_fraction),
            "truncate_fraction must be in [0, 1), got {}",
            p.truncate_fraction
        );
        ensure!(
            p.stall_secs >= 0.0 && p.stall_secs <= 3600.0,
            "stall_secs must be in [0, 3600], got {}",
            p.stall_secs
        );
        Ok(())
    }

    /// The faults of `kind` (none if it is not configured).
    pub fn kind(&self, kind: RequestKind) -> KindFaults {
        self.kinds.get(&kind).cloned().unwrap_or_default()
    }

    /// The fault of the first window that applies to `kind` at `since_arm`, if any.
    pub fn window_fault(&self, kind: RequestKind, since_arm: Duration) -> Option<FaultType> {
        self.windows
            .iter()
            .find(|w| w.applies(kind, since_arm))
            .map(|w| w.fault)
    }

    /// The fault for request number `seq` (0-based, per kind) of `kind`, `since_arm` after
    /// the proxy was armed; the same inputs always give the same answer.
    ///
    /// Precedence: `fail_first`, then the first window that applies, then the random rates,
    /// drawn from a hash of `(seed, kind, seq)`.
    pub fn decide(
        &self,
        seed: u64,
        kind: RequestKind,
        seq: u64,
        since_arm: Duration,
    ) -> Option<FaultType> {
        let faults = self.kinds.get(&kind);
        let first = faults.and_then(|f| f.fail_first);
        if let Some(first) = first.filter(|first| seq < first.count) {
            return Some(first.fault);
        }
        if let Some(fault) = self.window_fault(kind, since_arm) {
            return Some(fault);
        }
        let faults = faults?;
        let draw = unit_draw(seed, kind, seq);
        let mut upper = 0.0;
        FaultType::ALL.into_iter().find(|&fault| {
            upper += faults.rate(fault);
            draw < upper
        })
    }
}

/// A number in `[0, 1)` that depends only on `(seed, kind, seq)` (splitmix64 mixing).
fn unit_draw(seed: u64, kind: RequestKind, seq: u64) -> f64 {
    let x = mix(seed ^ mix(kind.index().wrapping_add(1) ^ mix(seq)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_covers_every_kind() {
        let cases = [
            (Method::GET, "/v2/", RequestKind::Ping),
            (Method::GET, "/v2", RequestKind::Ping),
            (Method::GET, "/token", RequestKind::Token),
            (
                Method::HEAD,
                "/v2/library/ubuntu/manifests/22.04",
                RequestKind::ManifestHead,
            ),
            (
                Method::GET,
                "/v2/library/ubuntu/manifests/22.04",
                RequestKind::ManifestGet,
            ),
            (
                Method::PUT,
                "/v2/library/ubuntu/manifests/22.04",
                RequestKind::Other,
            ),
            (
                Method::GET,
                "/v2/a/b/c/blobs/sha256:00",
                RequestKind::BlobGet,
            ),
            (Method::HEAD, "/v2/a/blobs/sha256:00", RequestKind::BlobGet),
            (Method::POST, "/v2/a/blobs/uploads/", RequestKind::Other),
            (Method::GET, "/v2/a/blobs/uploads/123", RequestKind::Other),
            (Method::GET, "/v2/a/tags/list", RequestKind::Other),
            (Method::GET, "/", RequestKind::Other),
        ];
        for (method, path, kind) in cases {
            assert_eq!(
                RequestKind::classify(&method, path),
                kind,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn decide_is_deterministic_and_follows_rates() {
        let config = FaultConfig::default().with_kind(
            RequestKind::BlobGet,
            KindFaults::default()
                .with_rate(FaultType::Eof, 0.25)
                .with_rate(FaultType::Truncate, 0.25),
        );
        let run = |seed| {
            (0..2000)
                .map(|seq| config.decide(seed, RequestKind::BlobGet, seq, Duration::ZERO))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let decisions = run(7);
        let count = |f| decisions.iter().filter(|d| **d == Some(f)).count();
        assert!(
            (400..600).contains(&count(FaultType::Eof)),
            "{}",
            count(FaultType::Eof)
        );
        assert!((400..600).contains(&count(FaultType::Truncate)));
        assert_eq!(count(FaultType::Status503), 0);
        assert_eq!(config.decide(7, RequestKind::Ping, 0, Duration::ZERO), None);
    }

    #[test]
    fn fail_first_then_windows_take_precedence() {
        let config = FaultConfig::default()
            .with_kind(
                RequestKind::ManifestGet,
                KindFaults::default().fail_first(2, FaultType::Eof),
            )
            .with_window(
                FaultWindow::first_secs(3.0, FaultType::Status429)
                    .for_kinds(&[RequestKind::ManifestGet, RequestKind::Ping]),
            );
        let at = |kind, seq, secs| config.decide(1, kind, seq, Duration::from_secs_f64(secs));
        assert_eq!(at(RequestKind::ManifestGet, 0, 0.0), Some(FaultType::Eof));
        assert_eq!(at(RequestKind::ManifestGet, 1, 5.0), Some(FaultType::Eof));
        assert_eq!(
            at(RequestKind::ManifestGet, 2, 2.9),
            Some(FaultType::Status429)
        );
        assert_eq!(at(RequestKind::ManifestGet, 2, 3.0), None);
        assert_eq!(at(RequestKind::Ping, 0, 1.0), Some(FaultType::Status429));
        assert_eq!(at(RequestKind::BlobGet, 0, 1.0), None);
    }

    #[test]
    fn json_form_round_trips_and_is_validated() {
        let json = r#"{
            "kinds": {
                "manifest_get": { "fail_first": { "count": 1, "fault": "eof" } },
                "blob_get": { "truncate": 0.2, "stall": 0.1, "latency_ms": 50 }
            },
            "windows": [ { "fault": "status_429", "until_secs": 3 } ],
            "window_clock": "first_request",
            "params": { "retry_after_secs": 2, "stall_secs": 3, "stall_then": "continue", "stall_at": "body" }
        }"#;
        let config = FaultConfig::from_json(json).unwrap();
        assert_eq!(config.kind(RequestKind::BlobGet).truncate, 0.2);
        assert_eq!(config.params.stall_then, StallThen::Continue);
        assert_eq!(config.params.stall_at, StallAt::Body);
        assert_eq!(config.window_clock, WindowClock::FirstRequest);
        assert_eq!(config.params.truncate_fraction, 0.5);
        let again = FaultConfig::from_json(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);

        for bad in [
            r#"{"kinds": {"blob_get": {"eof": 0.7, "stall": 0.7}}}"#,
            r#"{"kinds": {"blob_get": {"eof": -0.1}}}"#,
            r#"{"kinds": {"blob": {}}}"#,
            r#"{"kinds": {"blob_get": {"timeout": 1}}}"#,
            r#"{"windows": [{"fault": "eof", "from_secs": 2, "until_secs": 1}]}"#,
            r#"{"params": {"truncate_fraction": 1.0}}"#,
        ] {
            assert!(FaultConfig::from_json(bad).is_err(), "accepted {bad}");
        }
    }
}
