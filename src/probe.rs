//! Registry probes for `doctor`: for one source (a registry or a mirror), each step a pull
//! depends on, in order, each bounded by a timeout and tried exactly once:
//!
//! | step | what | fails as |
//! |---|---|---|
//! | `dns` | resolve the host (or the proxy's) | `dns-not-found`, `dns-temporary`, `timeout` |
//! | `tcp` | connect to it | `connection-refused`, `timeout`, … |
//! | `tls` | TLS handshake (not for plain-HTTP loopback registries, nor through a proxy) | `eof`, `connection-reset`, `timeout`, `other` |
//! | `ping` | `GET /v2/`: `200`, or `401` with the challenge naming the token endpoint | by status or message |
//! | `token` | the token endpoint of a Bearer challenge, for the image's repository | `token-fetch` (transient causes), `unauthorized`, … |
//! | `manifest` | `HEAD` of one referenced image's manifest | `manifest-unknown`, `unauthorized`, `eof`, … |
//!
//! Failures are classified by the same table as the prefetch ([`crate::retry`]). A step after
//! a failed one is skipped. Names under the reserved `.invalid` domain (RFC 6761 §6.4) fail
//! at once without a lookup, as resolvers should.
//!
//! The certificate chain is not judged by the handshake step (it completes the handshake with
//! any certificate, to time it and see the connection work); the `ping` uses the same TLS
//! client as the prefetch, with certificate verification, so an untrusted certificate fails
//! there, with the verifier's words.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use serde::{Deserialize, Serialize};

use crate::auth::{Credential, Credentials, Secret};
use crate::endpoint::Mirrors;
use crate::endpoint::{Source, SourceRole};
use crate::plan::ImageNeed;
use crate::reference::Reference;
use crate::registry::parse_bearer_challenge;
use crate::registry_trust::RegistryTrust;
use crate::retry::{ErrorClass, classify_message, classify_status};

/// The detail of a TLS step skipped for a plain-HTTP registry.
pub const PLAIN_HTTP: &str = "plain HTTP (a loopback registry, as the Docker daemon treats it)";

/// What a manifest `HEAD` accepts: the media types a pull accepts.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// One step of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Dns,
    Tcp,
    Tls,
    Ping,
    Token,
    Manifest,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Dns,
        Step::Tcp,
        Step::Tls,
        Step::Ping,
        Step::Token,
        Step::Manifest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::Tcp => "tcp",
            Step::Tls => "tls",
            Step::Ping => "ping",
            Step::Token => "token",
            Step::Manifest => "manifest",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Ok,
    Failed,
    /// Not applicable (an address needs no lookup; plain HTTP has no handshake), or not
    /// reached after an earlier failure.
    Skipped,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: Step,
    pub status: StepStatus,
    pub duration_ms: u64,
    /// The class of the failure (the prefetch's classification).
    pub class: Option<ErrorClass>,
    /// What happened: the address connected to, the status answered, the error.
    pub detail: String,
}

/// What to probe: one source of one registry, and the image whose manifest it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The registry's domain (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    pub source: Source,
    pub role: SourceRole,
    /// Repository path on this source (with a mirror's prefix) and tag or digest.
    pub image: Option<(String, String)>,
}

/// The probe of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProbe {
    pub registry: String,
    /// `host[/prefix]`.
    pub source: String,
    pub role: SourceRole,
    /// `https://host` or `http://host` (loopback registries, as the daemon treats them).
    pub url: String,
    /// The proxy the requests went through (from HTTP(S)_PROXY/NO_PROXY), if any.
    pub proxy: Option<String>,
    /// The manifest probed (`repo:tag`), if the plan names an image of this registry.
    pub image: Option<String>,
    /// Every step, in order.
    pub steps: Vec<StepResult>,
    /// No step failed.
    pub healthy: bool,
    pub failed_step: Option<Step>,
    pub class: Option<ErrorClass>,
    pub duration_ms: u64,
}

impl SourceProbe {
    /// The failed step's result, if one failed.
    pub fn failure(&self) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }
}

/// A registry, why it is probed, and whether any of its sources is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryHealth {
    pub registry: String,
    /// The base images that need it (empty for a registry probed only because a mirror is
    /// configured for it).
    pub needed_by: Vec<String>,
    /// Whether a build needs it: the exit code depends on these only.
    pub required: bool,
    /// At least one source probed healthy.
    pub healthy: bool,
    pub sources: Vec<SourceProbe>,
}

/// How to probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    /// The most one step may take.
    pub step_timeout: Duration,
}

/// The proxy settings of this process (which the prefetch's requests follow too), read with
/// Go's rules as the daemon reads them (see [`crate::registry_trust`]).
pub use crate::registry_trust::ProxyEnv;

use crate::registry_trust::split_host_port;

/// `http://user:pass@proxy.example.com:3128/` -> `proxy.example.com:3128`.
fn proxy_authority(proxy: &str) -> String {
    let rest = proxy.split_once("://").map_or(proxy, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string()
}

/// Whether a name is under the reserved `.invalid` domain (RFC 6761 §6.4): it never
/// resolves, and is not looked up.
pub fn is_reserved_invalid(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "invalid" || name.ends_with(".invalid")
}

/// Which registries and sources `doctor` probes: for each registry the plan's base images
/// come from (or only the ones in `only`, when given), its origin and configured mirrors,
/// with the first referenced image of that registry for the manifest step; then the mirrors
/// of registries nobody needs (not required).
///
/// An entry of `only` is a registry host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`) or an
/// image reference (`ghcr.io/org/base:1`), whose manifest is then the one probed.
pub fn targets(
    needs: &[ImageNeed],
    mirrors: &Mirrors,
    only: &[String],
) -> Vec<(RegistryHealth, Vec<Target>)> {
    /// A registry to probe: its origin host, the images that need it, the image to HEAD.
    struct Wanted {
        origin: String,
        needed_by: Vec<String>,
        image: Option<(String, String)>,
    }
    let wanted = |origin: String| Wanted {
        origin,
        needed_by: Vec::new(),
        image: None,
    };
    let version = |r: &Reference| {
        r.digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_else(|| "latest".into())
    };
    let mut registries: BTreeMap<String, Wanted> = BTreeMap::new();
    for need in needs {
        let r = &need.reference;
        let entry = registries
            .entry(r.domain.clone())
            .or_insert_with(|| wanted(r.registry_host()));
        entry.needed_by.push(r.to_string());
        entry
            .image
            .get_or_insert_with(|| (r.path.clone(), version(r)));
    }
    let mut required: Vec<String> = registries.keys().cloned().collect();
    if !only.is_empty() {
        required.clear();
        for spec in only {
            let spec = spec.trim().trim_end_matches('/');
            let image = spec
                .contains('/')
                .then(|| Reference::parse(spec).ok())
                .flatten();
            let (domain, origin) = match &image {
                Some(r) => (r.domain.clone(), r.registry_host()),
                None => match Reference::parse(&format!("{spec}/probe")) {
                    Ok(r) if !r.domain.is_empty() => (r.domain.clone(), r.registry_host()),
                    _ => (spec.to_ascii_lowercase(), spec.to_ascii_lowercase()),
                },
            };
            let entry = registries
                .entry(domain.clone())
                .or_insert_with(|| wanted(origin));
            if let Some(r) = &image {
                entry.image = Some((r.path.clone(), version(r)));
            }
            if !required.contains(&domain) {
                required.push(domain);
            }
        }
    }
    let plan = |domain: &str, w: &Wanted, required: bool| {
        let mut sources = vec![(Source::parse(&w.origin), SourceRole::Origin)];
        sources.extend(
            mirrors
                .for_registry(domain)
                .iter()
                .map(|m| (m.clone(), SourceRole::Mirror)),
        );
        let targets = sources
            .into_iter()
            .map(|(source, role)| Target {
                registry: domain.to_string(),
                image: w
                    .image
                    .as_ref()
                    .map(|(path, version)| (source.path_for(path), version.clone())),
                source,
                role,
            })
            .collect();
        let health = RegistryHealth {
            registry: domain.to_string(),
            needed_by: w.needed_by.clone(),
            required,
            healthy: false,
            sources: Vec::new(),
        };
        (health, targets)
    };
    let mut out: Vec<(RegistryHealth, Vec<Target>)> = required
        .iter()
        .filter_map(|domain| registries.get(domain).map(|w| plan(domain, w, true)))
        .collect();
    if only.is_empty() {
        for domain in mirrors.0.keys().filter(|d| !registries.contains_key(*d)) {
            let origin = Reference::parse(&format!("{domain}/probe"))
                .map(|r| r.registry_host())
                .unwrap_or_else(|_| domain.clone());
            out.push(plan(domain, &wanted(origin), false));
        }
    }
    out
}

/// Probes every target at once; each registry's result in the order given.
pub async fn probe_registries(
    plan: Vec<(RegistryHealth, Vec<Target>)>,
    options: &ProbeOptions,
    trust: &RegistryTrust,
) -> anyhow::Result<Vec<RegistryHealth>> {
    let credentials = load_credentials();
    let probes = plan.iter().map(|(_, targets)| {
        futures_util::future::join_all(
            targets
                .iter()
                .map(|t| probe_with(t, options, trust, &credentials)),
        )
    });
    let results = futures_util::future::join_all(probes).await;
    Ok(plan
        .into_iter()
        .zip(results)
        .map(|((mut registry, _), sources)| {
            registry.healthy = sources.iter().any(|s| s.healthy);
            registry.sources = sources;
            registry
        })
        .collect())
}

/// The HTTP client of the probes of registry `host`: like the prefetch's (rustls with ring,
/// the host's certs.d and insecure setting, the proxy environment), with every request
/// bounded by `timeout`, and no connection reuse, so that no request is ever re-sent silently
/// on a fresh connection. A certs.d directory that cannot be used is the error.
pub fn http_client(
    host: &str,
    insecure: bool,
    trust: &RegistryTrust,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = trust.tls_config(host, insecure)?;
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .use_preconfigured_tls(tls)
        .proxy(trust.proxies.reqwest_proxy())
        .user_agent(concat!(
            "ai-infra-build/",
            env!("CARGO_PKG_VERSION"),
            " (doctor)"
        ))
        .build()
        .map_err(ClientError::Build)
}

/// Why the probes' HTTP client for a registry could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host's certs.d directory cannot be used.
    #[error("{0}; {help}", help = .0.help())]
    Trust(#[from] crate::registry_trust::TrustError),
    #[error("cannot make the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Probes one source (see the module docs).
pub async fn probe(target: &Target, options: &ProbeOptions) -> anyhow::Result<SourceProbe> {
    let credentials = load_credentials();
    Ok(probe_with(target, options, &RegistryTrust::from_env(), &credentials).await)
}

/// The docker CLI's credentials, as the prefetch reads them; a broken config file probes
/// anonymously (the token step then says why).
fn load_credentials() -> Result<Credentials, crate::auth::AuthError> {
    Credentials::from_env()
}

/// The steps so far, and the rules of adding one.
struct Steps {
    steps: Vec<StepResult>,
}

impl Steps {
    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == StepStatus::Failed)
    }

    fn ok(&mut self, step: Step, started: Instant, detail: String) {
        self.push(step, StepStatus::Ok, started, None, detail);
    }

    fn fail(&mut self, step: Step, started: Instant, class: ErrorClass, detail: String) {
        self.push(step, StepStatus::Failed, started, Some(class), detail);
    }

    fn skip(&mut self, step: Step, detail: &str) {
        self.steps.push(StepResult {
            step,
            status: StepStatus::Skipped,
            duration_ms: 0,
            class: None,
            detail: detail.to_string(),
        });
    }

    fn push(
        &mut self,
        step: Step,
        status: StepStatus,
        started: Instant,
        class: Option<ErrorClass>,
        detail: String,
    ) {
        self.steps.push(StepResult {
            step,
            status,
            duration_ms: started.elapsed().as_millis() as u64,
            class,
            detail,
        });
    }
}

/// A step's failure: its class and what happened.
type Failure = (ErrorClass, String);

async fn probe_with(
    target: &Target,
    options: &ProbeOptions,
    trust: &RegistryTrust,
    credentials: &Result<Credentials, crate::auth::AuthError>,
) -> SourceProbe {
    let started = Instant::now();
    let endpoint = &target.source.endpoint;
    // As the prefetch: HTTPS, except plain HTTP first for a loopback registry the daemon
    // counts as insecure; an insecure registry's certificate is not checked.
    let insecure = trust.is_insecure_resolved(&endpoint.host).await;
    let mut https = !(insecure && endpoint.insecure);
    let proxy = trust.proxies.proxy_for(&endpoint.host, https);
    let client = http_client(&endpoint.host, insecure, trust, options.step_timeout);
    let mut steps = Steps { steps: Vec::new() };
    let timeout = options.step_timeout;

    // dns and tcp: of the registry, or of the proxy the requests go through.
    let (name, port) = match &proxy {
        Some(p) => split_host_port(&proxy_authority(p), 80),
        None => split_host_port(&endpoint.host, if https { 443 } else { 80 }),
    };
    let t = Instant::now();
    let addrs = match name.parse::<IpAddr>() {
        Ok(ip) => {
            steps.skip(Step::Dns, "an address: nothing to resolve");
            Ok(vec![SocketAddr::new(ip, port)])
        }
        Err(_) => match resolve(&name, port, timeout).await {
            Ok(addrs) => {
                let shown: Vec<String> = addrs.iter().take(3).map(|a| a.ip().to_string()).collect();
                steps.ok(Step::Dns, t, format!("{name} is {}", shown.join(", ")));
                Ok(addrs)
            }
            Err((class, detail)) => {
                steps.fail(Step::Dns, t, class, detail);
                Err(())
            }
        },
    };

    let t = Instant::now();
    let stream = match addrs {
        Err(()) => {
            steps.skip(Step::Tcp, "not reached");
            None
        }
        Ok(addrs) => match connect(&addrs, timeout).await {
            Ok((addr, stream)) => {
                steps.ok(Step::Tcp, t, format!("connected to {addr}"));
                Some(stream)
            }
            Err((class, detail)) => {
                steps.fail(Step::Tcp, t, class, detail);
                None
            }
        },
    };

    let t = Instant::now();
    match stream {
        _ if steps.failed() => steps.skip(Step::Tls, "not reached"),
        _ if !https => steps.skip(Step::Tls, PLAIN_HTTP),
        _ if proxy.is_some() => steps.skip(Step::Tls, "through the proxy: the ping checks TLS"),
        None => steps.skip(Step::Tls, "not reached"),
        Some(stream) => {
            let (server, _) = split_host_port(&endpoint.host, 443);
            match tls_handshake(stream, &server, timeout).await {
                Ok(detail) => steps.ok(Step::Tls, t, detail),
                Err((class, detail)) => steps.fail(Step::Tls, t, class, detail),
            }
        }
    }

    let scheme = |https: bool| if https { "https" } else { "http" };
    let mut base = format!("{}://{}", scheme(https), endpoint.host);
    let mut challenge = None;
    let client = match client {
        Ok(client) => Some(client),
        Err(reason) => {
            if !steps.failed() {
                let reason = reason.to_string();
                steps.fail(Step::Ping, Instant::now(), ErrorClass::Other, reason);
            }
            None
        }
    };
    match &client {
        _ if steps.failed() => {
            if !steps.steps.iter().any(|s| s.step == Step::Ping) {
                steps.skip(Step::Ping, "not reached");
            }
        }
        None => steps.skip(Step::Ping, "not reached"),
        Some(client) => {
            let t = Instant::now();
            let mut answer = ping(client, &base, &endpoint.host, trust).await;
            // An insecure registry that speaks the other protocol: that one, as the daemon does.
            if insecure
                && let Err((_, detail)) = &answer
                && crate::registry_trust::wrong_protocol(detail)
            {
                https = !https;
                base = format!("{}://{}", scheme(https), endpoint.host);
                answer = ping(client, &base, &endpoint.host, trust).await;
            }
            match answer {
                Ok((detail, c)) => {
                    challenge = c;
                    steps.ok(Step::Ping, t, detail);
                }
                Err((class, detail)) => steps.fail(Step::Ping, t, class, detail),
            }
        }
    }

    let repository = target.image.as_ref().map(|(path, _)| path.as_str());
    let mut token = None;
    match (&challenge, &client) {
        _ if steps.failed() => steps.skip(Step::Token, "not reached"),
        (None, _) | (_, None) => steps.skip(Step::Token, "no Bearer challenge: no token needed"),
        (Some(c), Some(client)) => {
            let t = Instant::now();
            let credential = match credentials {
                Ok(all) => all.lookup(&endpoint.host).map_err(|e| e.to_string()),
                Err(err) => Err(format!("{err}; {}", err.help())),
            };
            match fetch_token(client, c, repository, &endpoint.host, credential).await {
                Ok((detail, value)) => {
                    token = Some(value);
                    steps.ok(Step::Token, t, detail);
                }
                Err((class, detail)) => steps.fail(Step::Token, t, class, detail),
            }
        }
    }

    match (&target.image, &client) {
        _ if steps.failed() => steps.skip(Step::Manifest, "not reached"),
        (None, _) | (_, None) => steps.skip(
            Step::Manifest,
            "no image of this registry in the plan (name one: --registry HOST/REPOSITORY:TAG)",
        ),
        (Some((path, version)), Some(client)) => {
            let t = Instant::now();
            match head_manifest(client, &base, path, version, token.as_deref()).await {
                Ok(detail) => steps.ok(Step::Manifest, t, detail),
                Err((class, detail)) => steps.fail(Step::Manifest, t, class, detail),
            }
        }
    }

    let failure = steps
        .steps
        .iter()
        .find(|s| s.status == StepStatus::Failed)
        .cloned();
    SourceProbe {
        registry: target.registry.clone(),
        source: target.source.label(),
        role: target.role,
        url: base,
        proxy,
        image: target
            .image
            .as_ref()
            .map(|(path, version)| join_version(path, version)),
        healthy: failure.is_none(),
        failed_step: failure.as_ref().map(|f| f.step),
        class: failure.and_then(|f| f.class),
        steps: steps.steps,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

fn join_version(path: &str, version: &str) -> String {
    if version.contains(':') {
        format!("{path}@{version}")
    } else {
        format!("{path}:{version}")
    }
}

async fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, Failure> {
    if is_reserved_invalid(name) {
        return Err((
            classify_message("no such host"),
            format!(
                "lookup {name}: no such host (a reserved .invalid name, RFC 6761: never resolved)"
            ),
        ));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await {
        Err(_) => Err((
            ErrorClass::Timeout,
            format!(
                "lookup {name}: no answer within {} (timed out)",
                secs(timeout)
            ),
        )),
        Ok(Err(err)) => {
            let message = format!("lookup {name}: {err}");
            Err((classify_message(&message), message))
        }
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                let message = format!("lookup {name}: no such host (no addresses)");
                Err((classify_message(&message), message))
            } else {
                Ok(addrs)
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Connects to the first address that answers (at most three are tried, each bounded).
async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(SocketAddr, tokio::net::TcpStream), Failure> {
    let mut last = (ErrorClass::Other, "no address to connect to".to_string());
    for addr in addrs.iter().take(3) {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((*addr, stream)),
            Ok(Err(err)) => {
                let message = format!("connect to {addr}: {err}");
                last = (io_class(&err, &message), message);
            }
            Err(_) => {
                last = (
                    ErrorClass::Timeout,
                    format!(
                        "connect to {addr}: no answer within {} (timed out)",
                        secs(timeout)
                    ),
                );
            }
        }
    }
    Err(last)
}

/// The class of an I/O error: by its kind where the message is not telling (a socket
/// timeout reads "Resource temporarily unavailable"), else by the classification table.
fn io_class(err: &std::io::Error, message: &str) -> ErrorClass {
    use std::io::ErrorKind::*;
    match err.kind() {
        TimedOut | WouldBlock => ErrorClass::Timeout,
        ConnectionReset | ConnectionAborted | BrokenPipe => ErrorClass::ConnectionReset,
        ConnectionRefused => ErrorClass::ConnectionRefused,
        UnexpectedEof => ErrorClass::Eof,
        _ => classify_message(message),
    }
}

/// Completes a TLS handshake on `stream` (any certificate: see the module docs).
async fn tls_handshake(
    stream: tokio::net::TcpStream,
    server: &str,
    timeout: Duration,
) -> Result<String, Failure> {
    let stream = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(|e| (ErrorClass::Other, format!("cannot use the connection: {e}")))?;
    let server = server.to_string();
    let work = tokio::task::spawn_blocking(move || handshake_blocking(stream, &server, timeout));
    match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err((
            ErrorClass::Other,
            format!("the handshake task failed: {err}"),
        )),
        Err(_) => Err((
            ErrorClass::Timeout,
            format!("TLS handshake timeout ({})", secs(timeout)),
        )),
    }
}

fn handshake_blocking(
    mut stream: std::net::TcpStream,
    server: &str,
    timeout: Duration,
) -> Result<String, Failure> {
    let setup = |e: &dyn std::fmt::Display| (ErrorClass::Other, format!("TLS setup: {e}"));
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| setup(&e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| setup(&e))?;
    // Any certificate: the handshake step times the handshake; certificate trust is the
    // ping's to judge.
    let config = crate::registry_trust::any_certificate_config().map_err(|e| setup(&e))?;
    let name =
        rustls::pki_types::ServerName::try_from(server.to_string()).map_err(|e| setup(&e))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| setup(&e))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        if Instant::now() >= deadline {
            return Err((ErrorClass::Timeout, "TLS handshake timeout".to_string()));
        }
        if let Err(err) = conn.complete_io(&mut stream) {
            let message = format!("TLS handshake with {server}: {err}");
            let class = match io_class(&err, &message) {
                ErrorClass::Timeout => ErrorClass::Timeout,
                ErrorClass::Other if err.kind() == std::io::ErrorKind::InvalidData => {
                    ErrorClass::Other
                }
                class => class,
            };
            let message = if class == ErrorClass::Timeout {
                format!("TLS handshake timeout with {server}: {err}")
            } else {
                message
            };
            return Err((class, message));
        }
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}").replace("TLSv1_", "TLS 1."))
        .unwrap_or_else(|| "TLS".to_string());
    Ok(format!(
        "{version} handshake completed (the ping verifies the certificate)"
    ))
}

/// A request that got no answer: classified by the table; a connection closed in a way the
/// table does not name ("connection closed before message completed") is an EOF, as the
/// prefetch's registry client counts it.
fn transport_failure(what: &str, err: &reqwest::Error) -> Failure {
    let message = format!("{what}: {}", crate::registry::describe_reqwest(err));
    let class = match classify_message(&message) {
        ErrorClass::Other => ErrorClass::Eof,
        class => class,
    };
    (class, message)
}

/// `GET /v2/`: the detail, and the Bearer challenge when the registry wants a token.
async fn ping(
    client: &reqwest::Client,
    base: &str,
    host: &str,
    trust: &RegistryTrust,
) -> Result<(String, Option<crate::registry::Challenge>), Failure> {
    let url = format!("{base}/v2/");
    let resp = client.get(&url).send().await.map_err(|e| {
        let cause = crate::registry::describe_reqwest(&e);
        match crate::registry_trust::untrusted_advice(&cause, host, trust) {
            Some(advice) => (ErrorClass::TlsUntrusted, format!("GET {url}: {advice}")),
            None => transport_failure("GET", &e),
        }
    })?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        let header = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return match parse_bearer_challenge(&header) {
            Some(c) => Ok((
                format!("401 with a Bearer challenge: token endpoint {}", c.realm),
                Some(c),
            )),
            None if header.to_ascii_lowercase().starts_with("basic") => Ok((
                "401 asking for Basic credentials (`docker login` needed to pull)".to_string(),
                None,
            )),
            None => Err((
                ErrorClass::Unauthorized,
                format!("GET {url}: 401 without a usable challenge ({header:?})"),
            )),
        };
    }
    match classify_status(status.as_u16()) {
        None => {
            let api = resp
                .headers()
                .get("docker-distribution-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(", {v}"))
                .unwrap_or_default();
            Ok((format!("{}{api}, no token needed", status.as_u16()), None))
        }
        Some(class) => Err((class, status_message(&format!("GET {url}"), resp).await)),
    }
}

async fn status_message(what: &str, resp: reqwest::Response) -> String {
    let status = resp.status();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let body = body.trim();
    if body.is_empty() {
        format!("{what}: {status}")
    } else {
        format!("{what}: {status}: {body}")
    }
}

/// A token failure keeps its cause's class, except that transient causes are a token fetch
/// failure ("failed to fetch oauth token" in the prefetch's words).
fn token_class(class: ErrorClass) -> ErrorClass {
    if class.is_transient() {
        ErrorClass::TokenFetch
    } else {
        class
    }
}

/// How a token request was authenticated, for the step's detail.
fn credential_words(credential: &Option<Credential>) -> String {
    match credential {
        None => "anonymous".to_string(),
        Some(c) => format!(
            "with credentials from {}{}",
            c.origin,
            c.username()
                .filter(|u| !u.is_empty())
                .map(|u| format!(" (user {u})"))
                .unwrap_or_default()
        ),
    }
}

async fn fetch_token(
    client: &reqwest::Client,
    challenge: &crate::registry::Challenge,
    repository: Option<&str>,
    host: &str,
    credential: Result<Option<Credential>, String>,
) -> Result<(String, String), Failure> {
    let credential = credential.map_err(|err| {
        (
            ErrorClass::Other,
            format!("cannot read the credentials for {host}: {err}"),
        )
    })?;
    let how = credential_words(&credential);
    if let Some(Credential {
        secret: Secret::RegistryToken(token),
        ..
    }) = &credential
    {
        return Ok((
            format!("registry token {how}: no token request"),
            token.clone(),
        ));
    }
    let mut url = reqwest::Url::parse(&challenge.realm).map_err(|e| {
        (
            ErrorClass::Other,
            format!("the token realm {:?} is not a URL: {e}", challenge.realm),
        )
    })?;
    let scope = repository
        .map(|r| format!("repository:{r}:pull"))
        .or_else(|| challenge.scope.clone());
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        if let Some(scope) = &scope {
            query.append_pair("scope", scope);
        }
    }
    let what = format!("failed to fetch token ({how}): GET {url}");
    let request = match credential.as_ref().map(|c| &c.secret) {
        Some(Secret::IdentityToken { token, .. }) => {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", token.clone()),
                ("client_id", "ai-infra-build".into()),
            ];
            if let Some(service) = &challenge.service {
                form.push(("service", service.clone()));
            }
            if let Some(scope) = &scope {
                form.push(("scope", scope.clone()));
            }
            let mut realm = url.clone();
            realm.set_query(None);
            let body = reqwest::Url::parse_with_params("http://x/", &form)
                .ok()
                .and_then(|u| u.query().map(str::to_string))
                .unwrap_or_default();
            client
                .post(realm)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
        }
        _ => {
            let mut request = client.get(url.clone());
            if let Some(cred) = &credential
                && let Some(basic) = cred.basic_header()
            {
                request = request.header(reqwest::header::AUTHORIZATION, basic);
            }
            request
        }
    };
    let resp = request.send().await.map_err(|e| {
        let (class, message) = transport_failure("failed to fetch token: GET", &e);
        (token_class(class), message)
    })?;
    if let Some(class) = classify_status(resp.status().as_u16()) {
        let status = resp.status().as_u16();
        let message = status_message(&what, resp).await;
        if credential.is_some() && matches!(status, 401 | 403) {
            return Err((
                ErrorClass::AuthRejected,
                format!(
                    "{host} rejected the credentials: {message} (run `docker login {host}` again)"
                ),
            ));
        }
        return Err((token_class(class), message));
    }
    #[derive(Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body: TokenResponse = resp.json().await.map_err(|e| {
        let (class, message) = transport_failure(&what, &e);
        (token_class(class), message)
    })?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            (
                ErrorClass::Unauthorized,
                format!("{what}: the token endpoint answered without a token"),
            )
        })?;
    let token_host = url.host_str().unwrap_or("?");
    Ok((
        format!(
            "token issued by {token_host}{} {how}",
            scope.map(|s| format!(" for {s}")).unwrap_or_default()
        ),
        token,
    ))
}

async fn head_manifest(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    version: &str,
    token: Option<&str>,
) -> Result<String, Failure> {
    let url = format!("{base}/v2/{path}/manifests/{version}");
    let mut req = client.head(&url).header(ACCEPT, MANIFEST_ACCEPT);
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let what = format!("HEAD {url}");
    let resp = req
        .send()
        .await
        .map_err(|e| transport_failure("HEAD", &e))?;
    if let Some(class) = classify_status(resp.status().as_u16()) {
        return Err((class, status_message(&what, resp).await));
    }
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(|d| format!(", {d}"))
        .unwrap_or_default();
    Ok(format!(
        "{} {}{digest}",
        resp.status().as_u16(),
        join_version(path, version)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Use;
    use crate::reference::Reference;

    #[test]
    fn reserved_invalid_names_are_recognised() {
        for name in ["nothing.invalid", "a.b.INVALID", "invalid", "x.invalid."] {
            assert!(is_reserved_invalid(name), "{name}");
        }
        for name in ["invalid.example.com", "registry-1.docker.io", "127.0.0.1"] {
            assert!(!is_reserved_invalid(name), "{name}");
        }
    }

    #[test]
    fn hosts_and_ports_split() {
        assert_eq!(
            split_host_port("127.0.0.1:5000", 80),
            ("127.0.0.1".into(), 5000)
        );
        assert_eq!(split_host_port("ghcr.io", 443), ("ghcr.io".into(), 443));
        assert_eq!(split_host_port("[::1]:5000", 80), ("::1".into(), 5000));
        assert_eq!(split_host_port("[::1]", 80), ("::1".into(), 80));
        assert_eq!(
            proxy_authority("http://u:p@proxy.example.com:3128/"),
            "proxy.example.com:3128"
        );
        assert_eq!(proxy_authority("proxy:8080"), "proxy:8080");
    }

    #[test]
    fn the_proxy_environment_is_followed_like_go_httpproxy() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            ProxyEnv::from_lookup(&move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let p = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("no_proxy", "localhost,.corp.example,10.1.2.3"),
        ]);
        assert_eq!(
            p.proxy_for("registry-1.docker.io", true).as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(
            p.proxy_for("registry-1.docker.io", false),
            None,
            "no HTTP_PROXY"
        );
        assert_eq!(p.proxy_for("harbor.corp.example", true), None);
        // Go's rule: a leading dot matches subdomains only.
        assert!(p.proxy_for("corp.example:5000", true).is_some());
        assert_eq!(p.proxy_for("10.1.2.3:5000", true), None);
        assert_eq!(p.proxy_for("localhost:5000", true), None);
        let all = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", "*")]);
        assert_eq!(all.proxy_for("ghcr.io", true), None);
        assert_eq!(env(&[]).proxy_for("ghcr.io", true), None);
        assert_eq!(env(&[("http_proxy", " ")]).http_proxy, None);
    }

    fn need(reference: &str) -> ImageNeed {
        ImageNeed {
            reference: Reference::parse(reference).unwrap(),
            platform: None,
            uses: vec![Use {
                dockerfile: "Dockerfile".into(),
                line: 1,
            }],
        }
    }

    #[test]
    fn targets_are_the_plans_registries_their_mirrors_and_the_other_mirrors() {
        let mut mirrors = Mirrors::default();
        mirrors.add("docker.io=mirror.example.com/hub").unwrap();
        mirrors.add("quay.io=quay-mirror.example.com").unwrap();
        let needs = [
            need("ubuntu:22.04"),
            need("docker.io/library/alpine:3.19"),
            need(
                "ghcr.io/org/base@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            ),
        ];
        let plan = targets(&needs, &mirrors, &[]);
        let regs: Vec<(&str, bool, usize)> = plan
            .iter()
            .map(|(r, t)| (r.registry.as_str(), r.required, t.len()))
            .collect();
        assert_eq!(
            regs,
            [
                ("docker.io", true, 2),
                ("ghcr.io", true, 1),
                ("quay.io", false, 2)
            ]
        );
        let hub = &plan[0];
        assert_eq!(hub.0.needed_by.len(), 2);
        assert_eq!(hub.1[0].source.label(), "registry-1.docker.io");
        assert_eq!(
            hub.1[0].image,
            Some(("library/ubuntu".into(), "22.04".into()))
        );
        assert_eq!(hub.1[1].role, SourceRole::Mirror);
        assert_eq!(
            hub.1[1].image,
            Some(("hub/library/ubuntu".into(), "22.04".into()))
        );
        assert!(
            plan[1].1[0]
                .image
                .as_ref()
                .unwrap()
                .1
                .starts_with("sha256:")
        );
        assert_eq!(plan[2].1[0].source.label(), "quay.io");
        assert_eq!(plan[2].1[0].image, None);
    }

    #[test]
    fn registry_flags_pick_registries_and_images() {
        let mirrors = Mirrors::default();
        let needs = [need("127.0.0.1:5000/library/x:1"), need("ghcr.io/org/a:1")];
        let only = [
            "127.0.0.1:5000".to_string(),
            "docker.io".to_string(),
            "quay.io/org/img:2".to_string(),
        ];
        let plan = targets(&needs, &mirrors, &only);
        let regs: Vec<&str> = plan.iter().map(|(r, _)| r.registry.as_str()).collect();
        assert_eq!(regs, ["127.0.0.1:5000", "docker.io", "quay.io"]);
        assert!(plan.iter().all(|(r, _)| r.required));
        assert_eq!(
            plan[0].1[0].image,
            Some(("library/x".into(), "1".into())),
            "the plan's image"
        );
        assert_eq!(plan[1].1[0].source.label(), "registry-1.docker.io");
        assert_eq!(plan[1].1[0].image, None);
        assert_eq!(plan[2].1[0].image, Some(("org/img".into(), "2".into())));
    }

    #[tokio::test]
    async fn an_invalid_name_fails_at_dns_without_a_lookup() {
        let target = Target {
            registry: "nothing.invalid".into(),
            source: Source::parse("nothing.invalid"),
            role: SourceRole::Origin,
            image: Some(("library/x".into(), "1".into())),
        };
        let options = ProbeOptions {
            step_timeout: Duration::from_secs(2),
        };
        let mut trust = RegistryTrust::from_env();
        trust.proxies = ProxyEnv::default();
        let p = probe_with(&target, &options, &trust, &Ok(Credentials::none())).await;
        assert!(!p.healthy);
        assert_eq!(p.failed_step, Some(Step::Dns));
        assert_eq!(p.class, Some(ErrorClass::DnsNotFound));
        assert_eq!(p.steps.len(), 6);
        assert!(p.steps[1..].iter().all(|s| s.status == StepStatus::Skipped));
    }

    #[tokio::test]
    async fn a_tls_handshake_with_a_plain_http_server_fails_as_a_tls_step() {
        // A server on 127.0.0.1 that answers like HTTP/1.1 to anything.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let err = tls_handshake(stream, "localhost", Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(err.1.starts_with("TLS handshake with localhost"), "{err:?}");
        server.abort();
    }
}
