//! Counters the proxy keeps for tests: requests and injected faults per request kind, the
//! token flow's 401s and issued tokens, and a log of every request with its arrival time
//! (to check, e.g., that no client retried before a `Retry-After` had passed).
//! Serialized as-is by `GET /_testbed/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{FaultType, RequestKind};

/// Most requests [`ProxyStats::log`] keeps; later ones are only counted in
/// [`ProxyStats::log_dropped`] (a bound on memory for long benchmark runs).
pub const LOG_LIMIT: usize = 100_000;

/// What the counters note about a request besides its kind.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub method: String,
    pub path: String,
    /// Microseconds since the proxy started.
    pub at_us: u64,
    pub ranged: bool,
    pub reused: bool,
}

/// One request as it reached the proxy (control requests are not logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival time in microseconds since the proxy started (monotonic clock; not reset by
    /// `arm()` or a stats reset), taken before any fault or latency is applied.
    pub at_us: u64,
    pub kind: RequestKind,
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub ranged: bool,
    /// The fault injected into it, if any.
    pub fault: Option<FaultType>,
}

/// Counters of one request kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    /// Requests received (faulted or not).
    pub requests: u64,
    /// Requests this kind's own faults applied to: all of them, or those matching
    /// [`super::KindFaults::path_contains`] (e.g. how often one layer was asked for).
    pub targeted: u64,
    /// Requests that carried a `Range` header (a client resuming a download).
    pub ranged: u64,
    /// Requests that arrived on a connection that had carried a request before (keep-alive).
    /// Go's HTTP client silently re-sends an idempotent request that fails this way before
    /// any response byte, so a fault on such a request may never reach the daemon's logic.
    pub reused: u64,
    /// Faults injected, by type.
    pub faults: BTreeMap<FaultType, u64>,
}

/// A snapshot of all counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    pub kinds: BTreeMap<RequestKind, KindStats>,
    /// TCP connections accepted (control requests included).
    pub connections: u64,
    /// `401 Unauthorized` answers of the token flow (requests without a valid token).
    pub unauthorized: u64,
    /// Tokens handed out by `/token`.
    pub tokens_issued: u64,
    /// Of those, tokens issued for the right credentials (Basic, password or refresh grant).
    #[serde(default)]
    pub tokens_credentialed: u64,
    /// Token requests answered `401` because their credentials were wrong.
    #[serde(default)]
    pub tokens_rejected: u64,
    /// `403` answers: a token that does not open a private repository.
    #[serde(default)]
    pub denied: u64,
    /// Every request in arrival order (at most [`LOG_LIMIT`]).
    pub log: Vec<RequestRecord>,
    /// Requests not logged because the log was full.
    pub log_dropped: u64,
}

impl ProxyStats {
    /// The counters of `kind` (zero if it saw no request).
    pub fn kind(&self, kind: RequestKind) -> KindStats {
        self.kinds.get(&kind).cloned().unwrap_or_default()
    }

    /// Requests of `kind`.
    pub fn requests(&self, kind: RequestKind) -> u64 {
        self.kinds.get(&kind).map_or(0, |k| k.requests)
    }

    /// Faults of type `fault` injected into requests of `kind`.
    pub fn faults(&self, kind: RequestKind, fault: FaultType) -> u64 {
        self.kinds
            .get(&kind)
            .and_then(|k| k.faults.get(&fault))
            .copied()
            .unwrap_or(0)
    }

    /// Faults of any type injected into requests of any kind.
    pub fn total_faults(&self) -> u64 {
        self.kinds.values().flat_map(|k| k.faults.values()).sum()
    }

    /// The logged requests of `kind`.
    pub fn log_of(&self, kind: RequestKind) -> impl Iterator<Item = &RequestRecord> {
        self.log.iter().filter(move |r| r.kind == kind)
    }

    pub(super) fn record(
        &mut self,
        kind: RequestKind,
        request: Seen,
        targeted: bool,
        fault: Option<FaultType>,
    ) {
        let stats = self.kinds.entry(kind).or_default();
        stats.requests += 1;
        stats.targeted += u64::from(targeted);
        stats.ranged += u64::from(request.ranged);
        stats.reused += u64::from(request.reused);
        if let Some(fault) = fault {
            *stats.faults.entry(fault).or_default() += 1;
        }
        if self.log.len() < LOG_LIMIT {
            self.log.push(RequestRecord {
                at_us: request.at_us,
                kind,
                method: request.method,
                path: request.path,
                ranged: request.ranged,
                fault,
            });
        } else {
            self.log_dropped += 1;
        }
    }
}
