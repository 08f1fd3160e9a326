//! Which failures are worth retrying, and how long to wait before the next try.
//!
//! One table ([`MESSAGE_RULES`]) maps what registries and the Docker daemon say to an
//! [`ErrorClass`]; the class decides transient (retry with backoff) or permanent (give up on
//! this source at once). The classes follow what mature clients retry: containerd's and
//! docker's registry clients, skopeo's `retry.IsErrorRetryable`, and HTTP semantics
//! (RFC 9110: 408, 429, 500, 502, 503, 504 may succeed when repeated).
//!
//! Waiting uses exponential backoff with full jitter (AWS Architecture Blog, "Exponential
//! Backoff And Jitter"): the n-th wait is uniform in `[0, min(cap, base * 2^n)]`, never shorter
//! than a `Retry-After` hint, and the whole loop is bounded by attempts and by a deadline.
//! Waits are sized to the fault ([`ErrorClass::backoff_scale`]): a connection the peer closed
//! or reset says nothing about the server's load and is retried after a quarter of the
//! backoff; server errors, rate limits and timeouts wait the full backoff.
//!
//! Every retry loop of the crate (registry requests and blob resumes in the relay, whole
//! pulls, builds, pushes, GitHub API calls) runs through [`RetryPolicy::retry`]: one policy
//! type, one runner. What is worth retrying stays with each caller's error type
//! ([`RetryHint`]); waits end early when the caller's [`CancellationToken`] is cancelled.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::Retryable;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What kind of failure happened, in the words of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The connection was closed before a complete answer (`EOF`, `unexpected EOF`).
    Eof,
    ConnectionReset,
    ConnectionRefused,
    /// Dial, TLS handshake, header or body timeouts.
    Timeout,
    /// No progress on a pull for longer than the idle timeout.
    Stalled,
    /// A DNS failure that may pass (`temporary failure in name resolution`, `server misbehaving`).
    DnsTemporary,
    /// HTTP 429 or `toomanyrequests`.
    RateLimited,
    /// HTTP 500, 502, 503, 504.
    ServerError,
    /// HTTP 408.
    RequestTimeout,
    /// The token endpoint failed for a transient reason (`failed to fetch oauth token: ... EOF`).
    TokenFetch,
    /// The tag or digest does not exist (`manifest unknown`, HTTP 404 on a manifest).
    ManifestUnknown,
    /// The repository does not exist (`name unknown`, `repository does not exist`).
    NameUnknown,
    Unauthorized,
    Denied,
    /// The registry refused the credentials we sent (wrong password, a token without the
    /// scope): permanent, never retried; the next source is tried.
    AuthRejected,
    InvalidReference,
    /// The image has no variant for the requested platform.
    NoMatchingPlatform,
    /// The name does not resolve (`no such host`): retrying the same source will not help.
    DnsNotFound,
    /// The registry's TLS certificate is not trusted (`x509: certificate signed by unknown
    /// authority`, a name it is not valid for) or a client certificate is missing: permanent
    /// until its CA is added to `certs.d` (or the registry is listed as insecure).
    TlsUntrusted,
    /// Anything not recognised. Treated as permanent: retrying unknown failures hides bugs.
    Other,
}

impl ErrorClass {
    pub fn is_transient(self) -> bool {
        use ErrorClass::*;
        matches!(
            self,
            Eof | ConnectionReset
                | ConnectionRefused
                | Timeout
                | Stalled
                | DnsTemporary
                | RateLimited
                | ServerError
                | RequestTimeout
                | TokenFetch
        )
    }

    /// The share of the policy's backoff that a retry after this class waits. A connection
    /// closed or reset by the peer is a fault of that one connection (a load balancer
    /// dropping it, an idle keep-alive timing out), so the next try can go almost at once;
    /// an overloaded, rate-limiting or slow server gets the full backoff (and a `Retry-After`
    /// still sets the minimum).
    pub fn backoff_scale(self) -> f64 {
        use ErrorClass::*;
        match self {
            Eof | ConnectionReset => 0.25,
            _ => 1.0,
        }
    }

    /// The class's name as in the JSON report (`eof`, `rate-limited`, …).
    pub fn label(self) -> &'static str {
        use ErrorClass::*;
        match self {
            Eof => "eof",
            ConnectionReset => "connection-reset",
            ConnectionRefused => "connection-refused",
            Timeout => "timeout",
            Stalled => "stalled",
            DnsTemporary => "dns-temporary",
            RateLimited => "rate-limited",
            ServerError => "server-error",
            RequestTimeout => "request-timeout",
            TokenFetch => "token-fetch",
            ManifestUnknown => "manifest-unknown",
            NameUnknown => "name-unknown",
            Unauthorized => "unauthorized",
            Denied => "denied",
            AuthRejected => "auth-rejected",
            InvalidReference => "invalid-reference",
            NoMatchingPlatform => "no-matching-platform",
            DnsNotFound => "dns-not-found",
            TlsUntrusted => "tls-untrusted",
            Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One row of the classification table: a lowercase fragment of an error message.
#[derive(Debug)]
pub struct Rule {
    pub fragment: &'static str,
    pub class: ErrorClass,
}

const fn rule(fragment: &'static str, class: ErrorClass) -> Rule {
    Rule { fragment, class }
}

/// The classification table, first match wins. Fragments are matched against the lowercased
/// message with its URLs taken out (a tag, repository or digest in a URL says nothing about
/// the failure); a fragment of digits only matches a whole number that is not part of an
/// address (`:429` is a port, `…e429f…` part of a digest). Permanent registry error codes (distribution spec, "Error codes") come first so
/// that "manifest unknown" inside a longer message is never mistaken for a network failure;
/// then rate limits and server errors; then network failures.
pub const MESSAGE_RULES: &[Rule] = {
    use ErrorClass::*;
    &[
        rule("no matching manifest for", NoMatchingPlatform),
        rule("does not match the specified platform", NoMatchingPlatform),
        rule("manifest unknown", ManifestUnknown),
        rule("manifest for ", ManifestUnknown), // "manifest for x:y not found" (no error body)
        rule("name unknown", NameUnknown),
        rule("repository does not exist", NameUnknown),
        rule("invalid reference format", InvalidReference),
        rule("x509:", TlsUntrusted),
        rule("certificate signed by unknown authority", TlsUntrusted),
        rule("invalid peer certificate", TlsUntrusted),
        rule("unknownissuer", TlsUntrusted),
        rule("certificaterequired", TlsUntrusted),
        // A registry that wants a client certificate refuses the handshake: rustls reads its
        // alert as `CertificateRequired` (TLS 1.3) or `HandshakeFailure` / `BadCertificate`
        // (TLS 1.2, or a certificate it does not accept); Go as `tls: certificate required`,
        // `tls: handshake failure` or `tls: bad certificate`.
        rule("certificate required", TlsUntrusted),
        rule("fatal alert: handshakefailure", TlsUntrusted),
        rule("fatal alert: badcertificate", TlsUntrusted),
        rule("tls: handshake failure", TlsUntrusted),
        rule("tls: bad certificate", TlsUntrusted),
        rule("toomanyrequests", RateLimited),
        rule("too many requests", RateLimited),
        rule("rate limit", RateLimited),
        rule("429", RateLimited),
        rule("request timeout", RequestTimeout),
        rule("408", RequestTimeout),
        rule("service unavailable", ServerError),
        rule("bad gateway", ServerError),
        rule("gateway timeout", ServerError),
        rule("internal server error", ServerError),
        rule("status: 50", ServerError),
        rule("status code 50", ServerError),
        rule("unexpected eof", Eof),
        rule("connection reset", ConnectionReset),
        rule("broken pipe", ConnectionReset),
        rule("connection refused", ConnectionRefused),
        rule("tls handshake timeout", Timeout),
        rule("i/o timeout", Timeout),
        rule("timeout awaiting response headers", Timeout),
        rule("client.timeout exceeded", Timeout),
        rule("context deadline exceeded", Timeout),
        rule("timed out", Timeout),
        rule("temporary failure in name resolution", DnsTemporary),
        rule("server misbehaving", DnsTemporary),
        rule("no such host", DnsNotFound),
        rule("name or service not known", DnsNotFound),
        rule("no progress for", Stalled),
        rule("unauthorized", Unauthorized),
        rule("authentication required", Unauthorized),
        rule("denied", Denied),
        rule("forbidden", Denied),
        rule(": eof", Eof),
        rule(" eof", Eof),
    ]
};

/// Fragments that say the failure happened while fetching a registry token.
const TOKEN_FRAGMENTS: &[&str] = &[
    "oauth token",
    "anonymous token",
    "fetching token",
    "fetch token",
    "/token?",
    "token endpoint",
];

/// Classifies an error message from the daemon or a registry.
///
/// A token fetch failure is [`ErrorClass::TokenFetch`] (transient) when its cause is transient
/// ("failed to fetch oauth token: ... EOF"), and its cause's class otherwise (a token request
/// answered `401 unauthorized` stays permanent).
pub fn classify_message(message: &str) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    let text = without_urls(&lower);
    let class = first_rule(&text).map_or(ErrorClass::Other, |r| r.class);
    let about_token = TOKEN_FRAGMENTS.iter().any(|f| lower.contains(f));
    if about_token && class.is_transient() {
        ErrorClass::TokenFetch
    } else {
        class
    }
}

/// The first rule of [`MESSAGE_RULES`] that matches `text` (lowercase, without URLs).
fn first_rule(text: &str) -> Option<&'static Rule> {
    MESSAGE_RULES
        .iter()
        .find(|r| fragment_matches(text, r.fragment))
}

/// Whether `fragment` occurs in `text`; a fragment of digits only must stand alone: not next
/// to a letter or digit, nor to `:`, `.`, `/`, `-`, `_` (ports, addresses, versions, digests).
fn fragment_matches(text: &str, fragment: &str) -> bool {
    if !fragment.bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(fragment);
    }
    let free =
        |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || ":./-_".contains(c)));
    text.match_indices(fragment).any(|(at, _)| {
        free(text[..at].chars().next_back()) && free(text[at + fragment.len()..].chars().next())
    })
}

/// `text` with every `http://…` and `https://…` URL replaced by `<url>` (a URL ends at
/// whitespace, a quote, `)` or `>`).
fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str("<url>");
        let url = &rest[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || "\"')>".contains(c))
            .unwrap_or(url.len());
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

/// Classifies an HTTP status from a registry. `None` for success and redirects.
pub fn classify_status(status: u16) -> Option<ErrorClass> {
    use ErrorClass::*;
    Some(match status {
        200..=399 => return None,
        401 => Unauthorized,
        403 => Denied,
        404 => ManifestUnknown,
        408 => RequestTimeout,
        429 => RateLimited,
        500 | 502 | 503 | 504 => ServerError,
        _ => Other,
    })
}

/// Reads a `Retry-After` value: delay-seconds, or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = std::time::SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What a retry loop needs to know about an error.
pub trait RetryHint {
    fn class(&self) -> ErrorClass;
    /// Whether another try may succeed; by default, whether [`RetryHint::class`] is transient.
    fn is_transient(&self) -> bool {
        self.class().is_transient()
    }
    /// A server's `Retry-After` (or rate-limit reset) hint, when it gave one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// The share of the backoff to wait before retrying (see [`ErrorClass::backoff_scale`]).
    fn backoff_scale(&self) -> f64 {
        self.class().backoff_scale()
    }
}

/// How many times to try, how long to wait between tries, and for how long in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts later than this after the first attempt began.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The waits before each retry, without hints: full jitter over an exponential ceiling.
    pub fn backoff(&self) -> FullJitter {
        FullJitter {
            policy: *self,
            attempt: 0,
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or the policy is exhausted, for work
    /// that is never cancelled (it ends with its caller). See [`RetryPolicy::retry`].
    pub async fn run<T, E, Fut, Op, Notify>(&self, op: Op, on_retry: Notify) -> Result<T, E>
    where
        E: RetryHint,
        Fut: Future<Output = Result<T, E>>,
        Op: FnMut() -> Fut,
        Notify: FnMut(&E, Duration),
    {
        let never = CancellationToken::new();
        self.retry(&never, op, on_retry)
            .await
            .map_err(|stop| match stop {
                Stopped::Failed(err) => err,
                Stopped::Cancelled => unreachable!("a token nobody else holds is never cancelled"),
            })
    }

    /// The runner of every retry loop: runs `op` until it succeeds, fails for good
    /// ([`RetryHint::is_transient`] is false), the retries run out, or the next retry would
    /// start after the deadline (counted from the first attempt). The wait before retry `n`
    /// is full jitter under `base_delay * 2^n` (capped at `max_delay`), scaled by
    /// [`RetryHint::backoff_scale`], and never shorter than the error's `Retry-After`.
    /// `on_retry` sees every error that will be retried and the wait before the retry.
    ///
    /// When `cancel` is cancelled, the attempt in flight is dropped (or the wait cut short)
    /// and the result is [`Stopped::Cancelled`].
    pub async fn retry<T, E, Fut, Op, Notify>(
        &self,
        cancel: &CancellationToken,
        mut op: Op,
        mut on_retry: Notify,
    ) -> Result<T, Stopped<E>>
    where
        E: RetryHint,
        Fut: Future<Output = Result<T, E>>,
        Op: FnMut() -> Fut,
        Notify: FnMut(&E, Duration),
    {
        let started = Instant::now();
        let deadline = self.deadline;
        let attempt = || {
            let fut = (!cancel.is_cancelled()).then(&mut op);
            async move {
                let Some(fut) = fut else {
                    return Err(Stopped::Cancelled);
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(Stopped::Cancelled),
                    result = fut => result.map_err(Stopped::Failed),
                }
            }
        };
        let waiting = cancel.clone();
        let sleep = move |wait: Duration| {
            let cancel = waiting.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        };
        attempt
            .retry(self.backoff())
            .sleep(sleep)
            .when(|stop: &Stopped<E>| matches!(stop, Stopped::Failed(err) if err.is_transient()))
            .adjust(move |stop: &Stopped<E>, wait| {
                let Stopped::Failed(err) = stop else {
                    return None;
                };
                let wait = wait?
                    .mul_f64(err.backoff_scale().clamp(0.0, 1.0))
                    .max(err.retry_after().unwrap_or(Duration::ZERO));
                (started.elapsed() + wait <= deadline).then_some(wait)
            })
            .notify(|stop: &Stopped<E>, wait| {
                if let Stopped::Failed(err) = stop {
                    on_retry(err, wait);
                }
            })
            .await
    }
}

/// Why [`RetryPolicy::retry`] ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped<E> {
    /// The last attempt's error: permanent, or transient when no retry was left (attempts or
    /// deadline).
    Failed(E),
    /// The cancellation token was cancelled during an attempt or a wait.
    Cancelled,
}

/// Exponential backoff with full jitter; yields one wait per allowed retry.
#[derive(Debug, Clone)]
pub struct FullJitter {
    policy: RetryPolicy,
    attempt: u32,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let ceiling = self
            .policy
            .base_delay
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.policy.max_delay);
        self.attempt += 1;
        let millis = ceiling.as_millis() as u64;
        Some(Duration::from_millis(rand::random_range(0..=millis)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// One case per table row and per class: (message, expected class).
    const CASES: &[(&str, ErrorClass)] = &[
        // Texts of the Docker 20.10 daemon and of registries.
        (
            "manifest for 127.0.0.1:5000/library/ubuntu:99 not found: manifest unknown: manifest unknown",
            ManifestUnknown,
        ),
        ("manifest for ubuntu:nope not found", ManifestUnknown),
        (
            "pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            NameUnknown,
        ),
        (
            "name unknown: repository name not known to registry",
            NameUnknown,
        ),
        (
            "no matching manifest for linux/arm64/v8 in the manifest list entries",
            NoMatchingPlatform,
        ),
        (
            "image with reference x was found but does not match the specified platform",
            NoMatchingPlatform,
        ),
        (
            "invalid reference format: repository name must be lowercase",
            InvalidReference,
        ),
        (
            "toomanyrequests: You have reached your pull rate limit.",
            RateLimited,
        ),
        (
            "received unexpected HTTP status: 429 Too Many Requests",
            RateLimited,
        ),
        ("rate limit exceeded", RateLimited),
        ("error code 429", RateLimited),
        (
            "received unexpected HTTP status: 408 Request Timeout",
            RequestTimeout,
        ),
        ("unexpected status 408", RequestTimeout),
        (
            "received unexpected HTTP status: 503 Service Unavailable",
            ServerError,
        ),
        (
            "received unexpected HTTP status: 502 Bad Gateway",
            ServerError,
        ),
        (
            "received unexpected HTTP status: 504 Gateway Timeout",
            ServerError,
        ),
        (
            "received unexpected HTTP status: 500 Internal Server Error",
            ServerError,
        ),
        ("unexpected status: 500", ServerError),
        ("response status code 503", ServerError),
        (
            "Get \"http://127.0.0.1:5000/v2/library/ubuntu/manifests/22.04\": EOF",
            Eof,
        ),
        (
            "failed to copy: httpReadSeeker: failed open: unexpected EOF",
            Eof,
        ),
        (
            "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
            ConnectionReset,
        ),
        ("write: broken pipe", ConnectionReset),
        (
            "Get \"https://10.1.2.3:5000/v2/\": x509: certificate is valid for 10.9.9.9, not 10.1.2.3",
            TlsUntrusted,
        ),
        (
            "error pulling image configuration: certificate signed by unknown authority",
            TlsUntrusted,
        ),
        (
            "client error (Connect): invalid peer certificate: BadSignature",
            TlsUntrusted,
        ),
        ("tls: UnknownIssuer", TlsUntrusted),
        ("received fatal alert: CertificateRequired", TlsUntrusted),
        (
            "connection error: received fatal alert: HandshakeFailure",
            TlsUntrusted,
        ),
        ("received fatal alert: BadCertificate", TlsUntrusted),
        ("remote error: tls: certificate required", TlsUntrusted),
        ("remote error: tls: handshake failure", TlsUntrusted),
        ("remote error: tls: bad certificate", TlsUntrusted),
        (
            "dial tcp 127.0.0.1:1: connect: connection refused",
            ConnectionRefused,
        ),
        ("net/http: TLS handshake timeout", Timeout),
        ("dial tcp 10.0.0.1:443: i/o timeout", Timeout),
        ("net/http: timeout awaiting response headers", Timeout),
        ("(Client.Timeout exceeded while awaiting headers)", Timeout),
        ("context deadline exceeded", Timeout),
        ("operation timed out", Timeout),
        (
            "dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: temporary failure in name resolution",
            DnsTemporary,
        ),
        (
            "dial tcp: lookup registry-1.docker.io on 10.0.0.2:53: server misbehaving",
            DnsTemporary,
        ),
        (
            "dial tcp: lookup registry-1.docker.io on 10.0.0.2:53: no such host",
            DnsNotFound,
        ),
        (
            "failed to lookup address information: Name or service not known",
            DnsNotFound,
        ),
        ("no progress for 60s: the pull stalled", Stalled),
        ("unauthorized: authentication required", Unauthorized),
        ("authentication required", Unauthorized),
        ("denied: requested access to the resource is denied", Denied),
        ("403 Forbidden", Denied),
        ("Get https://registry-1.docker.io/v2/: EOF", Eof),
        ("something EOF", Eof),
        // Numbers in URLs, digests and ports are not status codes.
        (
            "error sending request for url (http://127.0.0.1:35491/v2/library/x/manifests/sha256:001c5b39bed1c67a33c6d553cb15a98ad55d0ccdf73389ea31ef3b9bb1429980): client error (SendRequest): connection closed before message completed: unexpected EOF",
            Eof,
        ),
        (
            "Get \"http://127.0.0.1:5000/v2/library/x/manifests/503\": EOF",
            Eof,
        ),
        (
            "dial tcp 127.0.0.1:429: connect: connection refused",
            ConnectionRefused,
        ),
        ("layer sha256:4290ab: unexpected EOF", Eof),
        // Token failures: transient when their cause is.
        (
            "Get \"https://auth.docker.io/token?scope=repository%3Alibrary%2Fubuntu%3Apull&service=registry.docker.io\": EOF",
            TokenFetch,
        ),
        (
            "failed to fetch oauth token: Post \"https://auth.docker.io/token\": EOF",
            TokenFetch,
        ),
        (
            "failed to fetch anonymous token: unexpected status: 503 Service Unavailable",
            TokenFetch,
        ),
        ("fetching token: read: connection reset by peer", TokenFetch),
        (
            "failed to fetch anonymous token: unexpected status: 401 Unauthorized",
            Unauthorized,
        ),
        // Nothing recognisable.
        ("the disk is full", Other),
        ("", Other),
    ];

    #[test]
    fn every_table_case_gets_its_class() {
        for (message, class) in CASES {
            assert_eq!(classify_message(message), *class, "{message}");
        }
    }

    #[test]
    fn every_rule_is_exercised_by_a_case() {
        let first_rule = |message: &str| {
            let text = without_urls(&message.to_ascii_lowercase());
            MESSAGE_RULES
                .iter()
                .position(|r| fragment_matches(&text, r.fragment))
        };
        for (i, rule) in MESSAGE_RULES.iter().enumerate() {
            let hit = CASES
                .iter()
                .any(|(m, c)| first_rule(m) == Some(i) && (*c == rule.class || *c == TokenFetch));
            assert!(hit, "no case for rule {rule:?}");
        }
    }

    #[test]
    fn urls_are_taken_out_before_matching() {
        assert_eq!(
            without_urls("get \"https://r.io/v2/a/manifests/429\": eof (http://x/503) end"),
            "get \"<url>\": eof (<url>) end"
        );
        assert_eq!(without_urls("http://a"), "<url>");
        assert_eq!(without_urls("no url"), "no url");
        assert!(fragment_matches("status 429 too", "429"));
        assert!(fragment_matches("(429)", "429"));
        assert!(!fragment_matches("port :429:", "429"));
        assert!(!fragment_matches("v1.429.0", "429"));
        assert!(!fragment_matches("sha256:a4291", "429"));
    }

    #[test]
    fn transient_and_permanent_split_as_documented() {
        for class in [
            Eof,
            ConnectionReset,
            ConnectionRefused,
            Timeout,
            Stalled,
            DnsTemporary,
            RateLimited,
            ServerError,
            RequestTimeout,
            TokenFetch,
        ] {
            assert!(class.is_transient(), "{class}");
        }
        for class in [
            ManifestUnknown,
            NameUnknown,
            Unauthorized,
            Denied,
            InvalidReference,
            NoMatchingPlatform,
            DnsNotFound,
            Other,
        ] {
            assert!(!class.is_transient(), "{class}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), None);
        assert_eq!(classify_status(307), None);
        assert_eq!(classify_status(401), Some(Unauthorized));
        assert_eq!(classify_status(403), Some(Denied));
        assert_eq!(classify_status(404), Some(ManifestUnknown));
        assert_eq!(classify_status(408), Some(RequestTimeout));
        assert_eq!(classify_status(429), Some(RateLimited));
        for s in [500, 502, 503, 504] {
            assert_eq!(classify_status(s), Some(ServerError));
        }
        assert_eq!(classify_status(418), Some(Other));
        assert_eq!(classify_status(501), Some(Other));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling_and_stops() {
        let policy = RetryPolicy {
            max_retries: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            deadline: Duration::from_secs(60),
        };
        for _ in 0..200 {
            let waits: Vec<_> = policy.backoff().collect();
            assert_eq!(waits.len(), 6);
            for (n, wait) in waits.iter().enumerate() {
                let ceiling = Duration::from_millis((100u64 << n).min(1000));
                assert!(*wait <= ceiling, "wait {n} = {wait:?} over {ceiling:?}");
            }
        }
        // Jitter really varies (200 draws of the first 1000 ms-ceiling wait are not all equal).
        let draws: std::collections::BTreeSet<_> =
            (0..200).map(|_| policy.backoff().nth(4).unwrap()).collect();
        assert!(draws.len() > 10);
    }

    #[derive(Debug, PartialEq)]
    struct Fail(ErrorClass, Option<Duration>);
    impl RetryHint for Fail {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    fn quick(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            deadline: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let mut retries = 0;
        let result = quick(5)
            .run(
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 3 { Err(Fail(Eof, None)) } else { Ok(n) }
                },
                |_, _| retries += 1,
            )
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries, 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Fail> = quick(5)
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Fail(ManifestUnknown, None))
                },
                |_, _| {},
            )
            .await;
        assert_eq!(result.unwrap_err().0, ManifestUnknown);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Fail> = quick(3)
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Fail(Eof, None))
                },
                |_, _| {},
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn connection_faults_wait_a_quarter_of_the_backoff() {
        assert_eq!(Eof.backoff_scale(), 0.25);
        assert_eq!(ConnectionReset.backoff_scale(), 0.25);
        for class in [
            ServerError,
            RateLimited,
            Timeout,
            Stalled,
            ConnectionRefused,
            TokenFetch,
        ] {
            assert_eq!(class.backoff_scale(), 1.0, "{class}");
        }
    }

    #[tokio::test]
    async fn waits_are_scaled_to_the_fault() {
        let policy = RetryPolicy {
            max_retries: 40,
            base_delay: Duration::from_millis(8),
            max_delay: Duration::from_millis(8),
            deadline: Duration::from_secs(30),
        };
        for (class, ceiling) in [(Eof, 2), (ServerError, 8)] {
            let calls = AtomicU32::new(0);
            let mut waits = Vec::new();
            let _ = policy
                .run(
                    || async {
                        if calls.fetch_add(1, Ordering::SeqCst) < 40 {
                            Err(Fail(class, None))
                        } else {
                            Ok(())
                        }
                    },
                    |_, wait| waits.push(wait),
                )
                .await;
            let longest = waits.iter().max().copied().unwrap_or_default();
            assert!(
                longest <= Duration::from_millis(ceiling),
                "{class}: {waits:?}"
            );
            if class == ServerError {
                assert!(longest > Duration::from_millis(2), "{class}: {waits:?}");
            }
        }
    }

    #[tokio::test]
    async fn retry_after_is_a_lower_bound_on_the_wait() {
        let mut waits = Vec::new();
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let _ = quick(2)
            .run(
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(Fail(RateLimited, Some(Duration::from_millis(300))))
                    } else {
                        Ok(())
                    }
                },
                |_, wait| waits.push(wait),
            )
            .await;
        assert_eq!(waits, vec![Duration::from_millis(300)]);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn the_deadline_stops_retries_that_would_start_too_late() {
        let policy = RetryPolicy {
            deadline: Duration::from_millis(100),
            ..quick(10)
        };
        let calls = AtomicU32::new(0);
        let result: Result<(), Fail> = policy
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Fail(RateLimited, Some(Duration::from_secs(5))))
                },
                |_, _| {},
            )
            .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a 5 s Retry-After does not fit a 100 ms deadline"
        );
    }

    #[tokio::test]
    async fn a_cancelled_token_cuts_the_wait_short() {
        let policy = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            deadline: Duration::from_secs(600),
        };
        let cancel = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cancel.cancel();
            })
        };
        let started = Instant::now();
        let result: Result<(), Stopped<Fail>> = policy
            .retry(
                &cancel,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A Retry-After of a minute: the wait is long whatever the jitter.
                    Err(Fail(RateLimited, Some(Duration::from_secs(60))))
                },
                |_, _| {},
            )
            .await;
        canceller.await.unwrap();
        assert_eq!(result.unwrap_err(), Stopped::Cancelled);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no attempt after the cancel"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_cancelled_token_drops_the_attempt_in_flight() {
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                cancel.cancel();
            })
        };
        let result: Result<(), Stopped<Fail>> = quick(3)
            .retry(
                &cancel,
                || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                },
                |_, _| {},
            )
            .await;
        canceller.await.unwrap();
        assert_eq!(result.unwrap_err(), Stopped::Cancelled);
        // Cancelled before the first attempt: nothing runs.
        let calls = AtomicU32::new(0);
        let result: Result<(), Stopped<Fail>> = quick(3)
            .retry(
                &cancel,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
                |_, _| {},
            )
            .await;
        assert_eq!(result.unwrap_err(), Stopped::Cancelled);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    /// An error type that decides for itself what is transient (like a build failure).
    #[derive(Debug, PartialEq)]
    struct Decides(bool);
    impl RetryHint for Decides {
        fn class(&self) -> ErrorClass {
            Other
        }
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn the_callers_error_type_decides_what_is_transient() {
        for (transient, calls_expected, retries_expected) in [(true, 3, 2), (false, 1, 0)] {
            let calls = AtomicU32::new(0);
            let mut retries = 0;
            let result: Result<(), Stopped<Decides>> = quick(2)
                .retry(
                    &CancellationToken::new(),
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Err(Decides(transient))
                    },
                    |_, _| retries += 1,
                )
                .await;
            assert_eq!(result.unwrap_err(), Stopped::Failed(Decides(transient)));
            assert_eq!(calls.load(Ordering::SeqCst), calls_expected);
            // The last failure, when retries ran out, is not a retry.
            assert_eq!(retries, retries_expected);
        }
    }
}
