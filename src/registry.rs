//! A small client for the registry HTTP API (distribution spec v2): what the relay and
//! `doctor` need, with the Bearer token flow and errors that keep what a retry decision needs
//! (status, registry error code, `Retry-After`, class).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::{Credential, Credentials, Secret};
use crate::endpoint::Endpoint;
use crate::registry_trust::RegistryTrust;
use crate::retry::{ErrorClass, RetryHint, classify_message, classify_status, parse_retry_after};

/// Which step of the protocol a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    Ping,
    Token,
    Manifest,
    Blob,
    Other,
}

impl RequestKind {
    /// The kind of a `/v2/...` path.
    pub fn of_path(path: &str) -> RequestKind {
        if path == "/v2/" || path == "/v2" {
            RequestKind::Ping
        } else if path.contains("/manifests/") {
            RequestKind::Manifest
        } else if path.contains("/blobs/") {
            RequestKind::Blob
        } else {
            RequestKind::Other
        }
    }
}

/// The repository of a `/v2/<name>/(manifests|blobs|tags)/...` path.
pub fn repository_of_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|marker| rest.find(marker).map(|i| &rest[..i]))
}

/// A failed registry request.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{kind:?} request to {host} failed: {message}")]
pub struct RegistryError {
    pub host: String,
    pub kind: RequestKind,
    pub class: ErrorClass,
    pub status: Option<u16>,
    /// The registry's error code (`MANIFEST_UNKNOWN`, `TOOMANYREQUESTS`, …) when it sent one.
    pub code: Option<String>,
    pub message: String,
    /// The registry's error document (`{"errors":[…]}`) exactly as it sent it, when it sent
    /// one: the relay passes it on to the daemon unchanged, because the daemon's reading of
    /// it depends on details (an error without `detail` whose message is the code's default
    /// text becomes a bare code, which the daemon no longer reports as "not found").
    #[serde(skip)]
    pub body: Option<String>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl RetryHint for RegistryError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    /// A token fetch that failed on its connection (no HTTP status) is a connection fault
    /// like any other; one the token server answered with 5xx/429 gets the full backoff.
    fn backoff_scale(&self) -> f64 {
        if self.class == ErrorClass::TokenFetch && self.status.is_none() {
            ErrorClass::Eof.backoff_scale()
        } else {
            self.class.backoff_scale()
        }
    }
}

/// The JSON error body of the distribution spec.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A Bearer challenge from `WWW-Authenticate` (RFC 6750; docker's token auth spec).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"`; `None` for other schemes.
pub fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            value
        } else {
            chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string()
        };
        fields.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Timeouts of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// No bytes (headers or body) for this long aborts the request.
    pub idle: Duration,
}

/// Speaks the registry API; shared by all requests of a run (connection pool, token cache).
///
/// Each registry host gets its own HTTP client, made on first use with that host's TLS
/// settings as the daemon has them ([`RegistryTrust`]: the CAs and client certificate of its
/// certs.d directory; no verification for the daemon's insecure registries) and the proxy
/// environment (Go's rules: loopback never through a proxy). A token request goes through the
/// client of the registry that asked for it, as the daemon's does.
#[derive(Debug)]
pub struct RegistryClient {
    clients: Mutex<HashMap<String, reqwest::Client>>,
    trust: Arc<RegistryTrust>,
    /// Per insecure host: the scheme that answered (`http` or `https`), once known.
    schemes: Mutex<HashMap<String, &'static str>>,
    /// Per host: whether the daemon treats it as insecure (resolved once).
    insecure: Mutex<HashMap<String, bool>>,
    tokens: Mutex<HashMap<(String, String), String>>,
    /// Bearer challenges seen, per registry host and repository: a later request for the
    /// same repository fetches its token first instead of being answered 401 again.
    challenges: Mutex<HashMap<(String, String), Challenge>>,
    /// The docker CLI's credentials, used in token requests (none: anonymous).
    credentials: Arc<Credentials>,
    pub timeouts: Timeouts,
}

impl RegistryClient {
    pub fn new(timeouts: Timeouts) -> anyhow::Result<RegistryClient> {
        // reqwest is built without a default crypto provider; ring is ours (no aws-lc, no OpenSSL).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(RegistryClient {
            clients: Mutex::new(HashMap::new()),
            trust: Arc::new(RegistryTrust::from_env()),
            schemes: Mutex::new(HashMap::new()),
            insecure: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            challenges: Mutex::new(HashMap::new()),
            credentials: Arc::new(Credentials::none()),
            timeouts,
        })
    }

    /// Reaches registries with these TLS, insecure-registry and proxy settings (default:
    /// [`RegistryTrust::from_env`]).
    pub fn with_trust(mut self, trust: Arc<RegistryTrust>) -> RegistryClient {
        self.trust = trust;
        self
    }

    pub fn trust(&self) -> &Arc<RegistryTrust> {
        &self.trust
    }

    /// Whether the daemon treats `host` as an insecure registry (resolved once per host).
    async fn is_insecure(&self, host: &str) -> bool {
        if let Some(known) = self.insecure.lock().ok().and_then(|m| m.get(host).copied()) {
            return known;
        }
        let answer = self.trust.is_insecure_resolved(host).await;
        if let Ok(mut m) = self.insecure.lock() {
            m.insert(host.to_string(), answer);
        }
        answer
    }

    /// The base URL of `endpoint`: `https://` for a secure registry; for an insecure one,
    /// the scheme that answered before, else plain HTTP first for loopback hosts (as they
    /// nearly always are) and HTTPS first for others.
    async fn base_url(&self, endpoint: &Endpoint) -> String {
        let known = self
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(&endpoint.host).copied());
        let scheme = match known {
            Some(scheme) => scheme,
            None if self.is_insecure(&endpoint.host).await && endpoint.insecure => "http",
            None => "https",
        };
        format!("{scheme}://{}", endpoint.host)
    }

    /// After a wrong-protocol failure with an insecure registry: the other scheme, from now on.
    /// `false` when the host is not insecure (no switch allowed).
    async fn switch_scheme(&self, endpoint: &Endpoint, failed_url: &str) -> bool {
        if !self.is_insecure(&endpoint.host).await {
            return false;
        }
        let other = if failed_url.starts_with("http://") {
            "https"
        } else {
            "http"
        };
        if let Ok(mut m) = self.schemes.lock() {
            m.insert(endpoint.host.clone(), other);
        }
        true
    }

    /// The HTTP client for `host` (made on first use; see the type's docs).
    async fn client_for(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        if let Some(client) = self.clients.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(client);
        }
        let insecure = self.is_insecure(host).await;
        let failure = |message: String| RegistryError {
            host: host.to_string(),
            kind: RequestKind::Other,
            class: ErrorClass::Other,
            status: None,
            code: None,
            message,
            body: None,
            retry_after: None,
        };
        let tls = self
            .trust
            .tls_config(host, insecure)
            .map_err(|err| failure(format!("{err}; {}", err.help())))?;
        let client = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .read_timeout(self.timeouts.idle)
            .user_agent(concat!("ai-infra-build/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls)
            .proxy(self.trust.proxies.reqwest_proxy())
            .build()
            .map_err(|err| failure(format!("cannot make the HTTP client: {err}")))?;
        if let Ok(mut m) = self.clients.lock() {
            m.insert(host.to_string(), client.clone());
        }
        Ok(client)
    }

    /// Sends these credentials in token requests (per registry host, mirrors by their host).
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> RegistryClient {
        self.credentials = credentials;
        self
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The credential for `host` (a helper runs off the async threads, once per host).
    pub async fn credential_for(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let credentials = Arc::clone(&self.credentials);
        let owned = host.to_string();
        let found = tokio::task::spawn_blocking(move || credentials.lookup(&owned))
            .await
            .unwrap_or(Ok(None));
        found.map_err(|err| RegistryError {
            host: host.to_string(),
            kind: RequestKind::Token,
            class: ErrorClass::Other,
            status: None,
            code: None,
            message: format!("{err}; {}", err.help()),
            body: None,
            retry_after: None,
        })
    }
    /// Sends one request (and, on a Bearer challenge, fetches a token and sends it once more).
    /// When an earlier request for the same repository was challenged but no token is cached
    /// (its token fetch failed), the token is fetched first: that spares a flaky network the
    /// request that could only be answered 401.
    /// Any status that is not a success or redirect becomes a [`RegistryError`].
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let kind = RequestKind::of_path(path);
        let mut url = format!("{}{}", self.base_url(endpoint).await, path);
        let key = Self::token_key(endpoint, path);
        let mut token = self.cached_token(&key);
        if token.is_none()
            && let Some(challenge) = self.cached_challenge(&key)
        {
            let fresh = self.fetch_token(&endpoint.host, &challenge).await?;
            self.store(&self.tokens, &key, fresh.clone());
            token = Some(fresh);
        }
        let mut first = self
            .request(
                &endpoint.host,
                &endpoint.host,
                kind,
                method.clone(),
                &url,
                headers.clone(),
                token.as_deref(),
            )
            .await;
        // An insecure registry that speaks the other protocol: once more with that one.
        if let Err(err) = &first
            && crate::registry_trust::wrong_protocol(&err.message)
            && self.switch_scheme(endpoint, &url).await
        {
            url = format!("{}{}", self.base_url(endpoint).await, path);
            first = self
                .request(
                    &endpoint.host,
                    &endpoint.host,
                    kind,
                    method.clone(),
                    &url,
                    headers.clone(),
                    token.as_deref(),
                )
                .await;
        }
        let first = first?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return self.checked(&endpoint.host, kind, first).await;
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge);
        let Some(challenge) = challenge else {
            return check(&endpoint.host, kind, first).await;
        };
        self.store(&self.challenges, &key, challenge.clone());
        let token = self.fetch_token(&endpoint.host, &challenge).await?;
        self.store(&self.tokens, &key, token.clone());
        let second = self
            .request(
                &endpoint.host,
                &endpoint.host,
                kind,
                method,
                &url,
                headers,
                Some(&token),
            )
            .await?;
        self.checked(&endpoint.host, kind, second).await
    }

    /// Like [`RegistryClient::send`], with a request body (a manifest `PUT`, a blob mount
    /// `POST`): the token flow is the same; a token cached for pulling that the registry
    /// refuses for a push is replaced by one for the new challenge's scope.
    pub async fn send_body(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> Result<Response, RegistryError> {
        let kind = RequestKind::of_path(path);
        let url = format!("{}{}", self.base_url(endpoint).await, path);
        let key = Self::token_key(endpoint, path);
        let token = self.cached_token(&key);
        // This host's client: its certs.d, insecure setting and proxy, as every request.
        let http = self.client_for(&endpoint.host).await.map_err(|mut err| {
            err.kind = kind;
            err
        })?;
        let attempt = |token: Option<String>| {
            let mut req = http
                .request(method.clone(), &url)
                .headers(headers.clone())
                .body(body.clone());
            if let Some(value) =
                token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            {
                req = req.header(AUTHORIZATION, value);
            }
            let host = endpoint.host.clone();
            let idle = self.timeouts.idle;
            async move {
                match tokio::time::timeout(idle, req.send()).await {
                    Err(_) => Err(transport_error(
                        &host,
                        kind,
                        format!("no response headers within {}s (timeout)", idle.as_secs()),
                    )),
                    Ok(Err(err)) => Err(self.failed_request(&host, kind, &err)),
                    Ok(Ok(resp)) => Ok(resp),
                }
            }
        };
        let first = attempt(token).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return self.checked(&endpoint.host, kind, first).await;
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge);
        let Some(challenge) = challenge else {
            return check(&endpoint.host, kind, first).await;
        };
        let token = self.fetch_token(&endpoint.host, &challenge).await?;
        self.store(&self.tokens, &key, token.clone());
        let second = attempt(Some(token)).await?;
        self.checked(&endpoint.host, kind, second).await
    }

    /// [`check`], with a 401/403 explained by the credentials used (or not).
    async fn checked(
        &self,
        host: &str,
        kind: RequestKind,
        resp: Response,
    ) -> Result<Response, RegistryError> {
        match check(host, kind, resp).await {
            Err(err) if matches!(err.status, Some(401 | 403)) => {
                Err(self.auth_failure(host, err).await)
            }
            other => other,
        }
    }

    /// A 401/403 after the token flow: with credentials, they were rejected or lack the
    /// scope (`auth-rejected`); without, the registry needs them.
    async fn auth_failure(&self, host: &str, mut err: RegistryError) -> RegistryError {
        match self.credential_for(host).await {
            Ok(Some(cred)) => {
                err.class = ErrorClass::AuthRejected;
                err.message = format!(
                    "{} (credentials from {}{} were refused for this repository: does the token have the scope, e.g. read:packages, and the account access?)",
                    err.message,
                    cred.origin,
                    cred.username()
                        .filter(|u| !u.is_empty())
                        .map(|u| format!(", user {u}"))
                        .unwrap_or_default()
                );
            }
            Ok(None) => {
                err.message = format!(
                    "{} (anonymous: needs credentials: log in to {host})",
                    err.message
                );
            }
            Err(_) => {}
        }
        err
    }

    /// Tokens are cached per registry host and repository (the scope they were issued for).
    fn token_key(endpoint: &Endpoint, path: &str) -> (String, String) {
        (
            endpoint.host.clone(),
            repository_of_path(path).unwrap_or_default().to_string(),
        )
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        self.tokens.lock().ok()?.get(key).cloned()
    }

    fn cached_challenge(&self, key: &(String, String)) -> Option<Challenge> {
        self.challenges.lock().ok()?.get(key).cloned()
    }

    fn store<V>(
        &self,
        map: &Mutex<HashMap<(String, String), V>>,
        key: &(String, String),
        value: V,
    ) {
        if let Ok(mut map) = map.lock() {
            map.insert(key.clone(), value);
        }
    }

    /// One request to `url`, through the client of registry `registry` (the token endpoint
    /// of a registry is reached with that registry's TLS settings); failures name `host`.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        registry: &str,
        host: &str,
        kind: RequestKind,
        method: Method,
        url: &str,
        headers: HeaderMap,
        token: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let http = self.client_for(registry).await.map_err(|mut err| {
            err.kind = kind;
            err
        })?;
        let mut req = http.request(method, url).headers(headers);
        if let Some(token) = token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            req = req.header(AUTHORIZATION, value);
        }
        let send = req.send();
        match tokio::time::timeout(self.timeouts.idle, send).await {
            Err(_) => Err(transport_error(
                host,
                kind,
                format!(
                    "no response headers within {}s (timeout)",
                    self.timeouts.idle.as_secs()
                ),
            )),
            Ok(Err(err)) => Err(self.failed_request(host, kind, &err)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// A request that got no answer: an untrusted certificate is one permanent error that
    /// names the file to add; anything else is a transport failure.
    fn failed_request(&self, host: &str, kind: RequestKind, err: &reqwest::Error) -> RegistryError {
        let cause = describe_reqwest(err);
        match crate::registry_trust::untrusted_advice(&cause, host, &self.trust) {
            Some(advice) => RegistryError {
                host: host.to_string(),
                kind,
                class: ErrorClass::TlsUntrusted,
                status: None,
                code: None,
                message: advice,
                body: None,
                retry_after: None,
            },
            None => transport_error(host, kind, cause),
        }
    }

    /// An OAuth2 token request: `form` posted to the realm (without its query).
    async fn post_form(
        &self,
        registry: &str,
        token_host: &str,
        url: &reqwest::Url,
        form: &[(&str, String)],
    ) -> Result<Response, RegistryError> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_escape(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let mut realm = url.clone();
        realm.set_query(None);
        self.request_with_body(registry, token_host, realm.as_str(), headers, body)
            .await
    }

    async fn request_with_body(
        &self,
        registry: &str,
        host: &str,
        url: &str,
        headers: HeaderMap,
        body: String,
    ) -> Result<Response, RegistryError> {
        let http = self.client_for(registry).await.map_err(|mut err| {
            err.kind = RequestKind::Token;
            err
        })?;
        let send = http.post(url).headers(headers).body(body).send();
        match tokio::time::timeout(self.timeouts.idle, send).await {
            Err(_) => Err(transport_error(
                host,
                RequestKind::Token,
                format!(
                    "no response headers within {}s (timeout)",
                    self.timeouts.idle.as_secs()
                ),
            )),
            Ok(Err(err)) => Err(self.failed_request(host, RequestKind::Token, &err)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn fetch_token(
        &self,
        host: &str,
        challenge: &Challenge,
    ) -> Result<String, RegistryError> {
        let mut url = reqwest::Url::parse(&challenge.realm).map_err(|err| RegistryError {
            host: host.to_string(),
            kind: RequestKind::Token,
            class: ErrorClass::Other,
            status: None,
            code: None,
            message: format!(
                "the registry's token realm {:?} is not a URL: {err}",
                challenge.realm
            ),
            body: None,
            retry_after: None,
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            if let Some(scope) = &challenge.scope {
                query.append_pair("scope", scope);
            }
        }
        let token_host = url.host_str().unwrap_or(host).to_string();
        let credential = self.credential_for(host).await?;
        let resp = match credential.as_ref().map(|c| &c.secret) {
            // A bearer token for the registry itself: no token request at all.
            Some(Secret::RegistryToken(token)) => return Ok(token.clone()),
            Some(Secret::IdentityToken { token, .. }) => {
                // The OAuth2 refresh-token grant, as the docker daemon sends it.
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", token.clone()),
                    ("client_id", "ai-infra-build".to_string()),
                    ("access_type", "offline".to_string()),
                ];
                if let Some(service) = &challenge.service {
                    form.push(("service", service.clone()));
                }
                if let Some(scope) = &challenge.scope {
                    form.push(("scope", scope.clone()));
                }
                self.post_form(host, &token_host, &url, &form).await
            }
            Some(Secret::Password { username, password }) => {
                let mut basic_url = url.clone();
                basic_url.query_pairs_mut().append_pair("account", username);
                let mut headers = HeaderMap::new();
                if let Some(value) = credential
                    .as_ref()
                    .and_then(Credential::basic_header)
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    headers.insert(AUTHORIZATION, value);
                }
                let basic = self
                    .request(
                        host,
                        &token_host,
                        RequestKind::Token,
                        Method::GET,
                        basic_url.as_str(),
                        headers,
                        None,
                    )
                    .await;
                match basic {
                    // A realm that speaks only OAuth2: the password grant, as distribution's
                    // client sends it.
                    Ok(resp) if matches!(resp.status().as_u16(), 404 | 405) => {
                        let mut form = vec![
                            ("grant_type", "password".to_string()),
                            ("username", username.clone()),
                            ("password", password.clone()),
                            ("client_id", "ai-infra-build".to_string()),
                        ];
                        if let Some(service) = &challenge.service {
                            form.push(("service", service.clone()));
                        }
                        if let Some(scope) = &challenge.scope {
                            form.push(("scope", scope.clone()));
                        }
                        self.post_form(host, &token_host, &url, &form).await
                    }
                    other => other,
                }
            }
            None => {
                self.request(
                    host,
                    &token_host,
                    RequestKind::Token,
                    Method::GET,
                    url.as_str(),
                    HeaderMap::new(),
                    None,
                )
                .await
            }
        };
        let resp = match resp {
            Ok(resp) => check(&token_host, RequestKind::Token, resp).await,
            Err(err) => Err(err),
        };
        let resp = match (resp, &credential) {
            (Err(mut err), Some(cred)) if matches!(err.status, Some(401 | 403)) => {
                err.class = ErrorClass::AuthRejected;
                err.kind = RequestKind::Token;
                err.message = format!(
                    "{host} rejected the credentials from {}{}: {} (wrong password or expired token? run `docker login {host}` again)",
                    cred.origin,
                    cred.username()
                        .filter(|u| !u.is_empty())
                        .map(|u| format!(" (user {u})"))
                        .unwrap_or_default(),
                    err.message
                );
                return Err(err);
            }
            (resp, _) => resp.map_err(token_failure)?,
        };
        let body: TokenResponse = resp.json().await.map_err(|err| {
            token_failure(transport_error(
                &token_host,
                RequestKind::Token,
                describe_reqwest(&err),
            ))
        })?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError {
                host: token_host.clone(),
                kind: RequestKind::Token,
                class: ErrorClass::Unauthorized,
                status: None,
                code: None,
                message: "the token endpoint answered without a token".to_string(),
                body: None,
                retry_after: None,
            })?;
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A token failure keeps its cause's class, except that transient causes become
/// [`ErrorClass::TokenFetch`] ("failed to fetch oauth token" in the report).
fn token_failure(mut err: RegistryError) -> RegistryError {
    err.kind = RequestKind::Token;
    if err.class.is_transient() {
        err.class = ErrorClass::TokenFetch;
    }
    err.message = format!("failed to fetch token: {}", err.message);
    err
}

fn transport_error(host: &str, kind: RequestKind, message: String) -> RegistryError {
    let class = match classify_message(&message) {
        ErrorClass::Other => ErrorClass::Eof,
        class => class,
    };
    RegistryError {
        host: host.to_string(),
        kind,
        class,
        status: None,
        code: None,
        message,
        body: None,
        retry_after: None,
    }
}

/// The whole cause chain of a reqwest error, which is where "connection refused" or
/// "unexpected EOF" lives.
pub fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    if err.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// Turns an error status into a [`RegistryError`] (reading the spec's JSON error body).
async fn check(host: &str, kind: RequestKind, resp: Response) -> Result<Response, RegistryError> {
    let status = resp.status().as_u16();
    let Some(mut class) = classify_status(status) else {
        return Ok(resp);
    };
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let reason = resp.status().canonical_reason().unwrap_or("");
    let body = resp.text().await.unwrap_or_default();
    let entry = serde_json::from_str::<ErrorBody>(&body)
        .ok()
        .and_then(|b| b.errors.into_iter().next());
    let document = entry.is_some().then(|| body.clone());
    let (code, detail) = match entry {
        Some(e) => (
            Some(e.code.clone()),
            format!("{}: {}", e.code.to_ascii_lowercase(), e.message),
        ),
        None => (
            None,
            body.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string(),
        ),
    };
    if status == 404 {
        class = match code.as_deref() {
            Some("NAME_UNKNOWN") => ErrorClass::NameUnknown,
            Some("BLOB_UNKNOWN") | Some("MANIFEST_UNKNOWN") | None | Some(_)
                if kind != RequestKind::Other =>
            {
                ErrorClass::ManifestUnknown
            }
            _ => ErrorClass::Other,
        };
    }
    let message = if detail.is_empty() {
        format!("{status} {reason}")
    } else {
        format!("{status} {reason}: {detail}")
    };
    Err(RegistryError {
        host: host.to_string(),
        kind,
        class,
        status: Some(status),
        code,
        message,
        body: document,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/ubuntu:pull"));
        let c = parse_bearer_challenge(r#"bearer realm="http://127.0.0.1:1/token", service=x"#)
            .unwrap();
        assert_eq!(c.service.as_deref(), Some("x"));
        assert_eq!(c.scope, None);
        let c = parse_bearer_challenge(r#"Bearer realm="a\"b""#).unwrap();
        assert_eq!(c.realm, "a\"b");
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=x"), None);
        assert_eq!(parse_bearer_challenge(""), None);
        assert_eq!(
            parse_bearer_challenge("Bearer realm=\"unterminated"),
            Some(Challenge {
                realm: "unterminated".into(),
                service: None,
                scope: None
            })
        );
    }

    #[test]
    fn request_kinds_follow_the_path() {
        assert_eq!(RequestKind::of_path("/v2/"), RequestKind::Ping);
        assert_eq!(
            RequestKind::of_path("/v2/library/ubuntu/manifests/22.04"),
            RequestKind::Manifest
        );
        assert_eq!(
            RequestKind::of_path("/v2/library/ubuntu/blobs/sha256:abc"),
            RequestKind::Blob
        );
        assert_eq!(RequestKind::of_path("/v2/_catalog"), RequestKind::Other);
        assert_eq!(
            repository_of_path("/v2/library/ubuntu/manifests/22.04"),
            Some("library/ubuntu")
        );
        assert_eq!(
            repository_of_path("/v2/a/b/c/blobs/sha256:0"),
            Some("a/b/c")
        );
        assert_eq!(repository_of_path("/v2/"), None);
    }
}
