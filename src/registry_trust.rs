//! How we reach a registry, as the Docker daemon would: its TLS trust, its insecure
//! registries, and the proxy environment.
//!
//! - **certs.d** ([`RegistryTrust::tls_config`]): for a registry `HOST[:PORT]`, the directory
//!   `<certs.d>/HOST[:PORT]/` adds, as the daemon reads it (moby `registry.ReadCertsDirectory`),
//!   every `*.crt` as a CA (beside the system's roots) and every `*.cert` with the `*.key` of
//!   the same name as a client certificate (a `.cert` without its `.key`, or the other way
//!   round, is an error naming the file). `<certs.d>` is `/etc/docker/certs.d`; for a rootless
//!   daemon `$XDG_CONFIG_HOME/docker/certs.d` (default `~/.config/docker/certs.d`); the
//!   environment variable `AI_INFRA_BUILD_CERTS_D` overrides both.
//! - **Insecure registries** ([`RegistryTrust::is_insecure`]): the daemon's
//!   `RegistryConfig.InsecureRegistryCIDRs` (default `127.0.0.0/8`) and its `IndexConfigs`
//!   entries with `Secure: false` (from `--insecure-registry HOST:PORT`). For those hosts only,
//!   plain `http://` and a certificate nobody vouches for are accepted (the daemon tries HTTPS
//!   without verification, then HTTP; we try plain HTTP first for loopback hosts, HTTPS first
//!   for the others, and switch when the other side speaks the other protocol). A name is
//!   matched against the CIDRs by its addresses, as the daemon does.
//! - **Proxies** ([`ProxyEnv`]): `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (or their lowercase
//!   forms), read with the rules of Go's `httpproxy` package, which the daemon and the docker
//!   CLI use: `localhost` and loopback addresses never go through a proxy; a `NO_PROXY` entry
//!   is `*`, an IP address, a CIDR, or a domain (with an optional port) that matches itself and
//!   its subdomains (`.example.com` only its subdomains).
//!
//! An untrusted certificate is one error that says which file to add
//! ([`untrusted_advice`]): class `tls-untrusted`, permanent, never retried.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Overrides the certs.d directory (tests, unusual daemons).
pub const CERTS_D_ENV: &str = "AI_INFRA_BUILD_CERTS_D";

/// The daemon's default certs.d directory.
pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";

/// A certs.d directory that cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} holds no usable certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("missing key {key} for client certificate {cert}")]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("missing client certificate {cert} for key {key}")]
    MissingCert { key: PathBuf, cert: PathBuf },
    #[error("the TLS settings for {host} cannot be used: {reason}")]
    Config { host: String, reason: String },
}

impl TrustError {
    pub fn help(&self) -> &'static str {
        "fix or remove the file: the Docker daemon refuses such a certs.d directory too"
    }
}

/// An IPv4 or IPv6 network (`127.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.trim().parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - u32::from(self.prefix);
        (a >> shift) == (b >> shift)
    }
}

/// The registry settings of the daemon: insecure registries, and whether it runs rootless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRegistryConfig {
    pub insecure_cidrs: Vec<String>,
    /// `IndexConfigs` names with `Secure: false`.
    pub insecure_hosts: Vec<String>,
    /// `IndexConfigs` names with `Secure: true`.
    pub secure_hosts: Vec<String>,
    /// `SecurityOptions` contains `name=rootless`.
    pub rootless: bool,
}

impl DaemonRegistryConfig {
    /// From the daemon's `GET /info`.
    pub fn from_info(info: &bollard::models::SystemInfo) -> DaemonRegistryConfig {
        let registry = info.registry_config.clone().unwrap_or_default();
        let mut insecure_hosts = Vec::new();
        let mut secure_hosts = Vec::new();
        for (name, index) in registry.index_configs.unwrap_or_default() {
            if index.secure == Some(false) {
                insecure_hosts.push(name);
            } else {
                secure_hosts.push(name);
            }
        }
        DaemonRegistryConfig {
            insecure_cidrs: registry.insecure_registry_cidrs.unwrap_or_default(),
            insecure_hosts,
            secure_hosts,
            rootless: info
                .security_options
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o.split(',').any(|kv| kv == "name=rootless")),
        }
    }
}

/// TLS trust, insecure registries and proxies for every registry we contact.
#[derive(Debug, Clone)]
pub struct RegistryTrust {
    certs_d: PathBuf,
    insecure_cidrs: Vec<Cidr>,
    insecure_hosts: BTreeSet<String>,
    secure_hosts: BTreeSet<String>,
    pub proxies: ProxyEnv,
}

impl Default for RegistryTrust {
    fn default() -> Self {
        RegistryTrust::from_env()
    }
}

impl RegistryTrust {
    /// The daemon's defaults (certs.d in `/etc/docker/certs.d`, `127.0.0.0/8` insecure) and
    /// this process's proxy environment.
    pub fn from_env() -> RegistryTrust {
        RegistryTrust {
            certs_d: certs_d_dir(false, &|k| std::env::var_os(k)),
            insecure_cidrs: vec![Cidr::parse("127.0.0.0/8").expect("a valid CIDR")],
            insecure_hosts: BTreeSet::new(),
            secure_hosts: BTreeSet::new(),
            proxies: ProxyEnv::from_env(),
        }
    }

    /// The daemon's own settings: its insecure registries, and certs.d of a rootless daemon.
    pub fn with_daemon(mut self, daemon: &DaemonRegistryConfig) -> RegistryTrust {
        self.certs_d = certs_d_dir(daemon.rootless, &|k| std::env::var_os(k));
        let cidrs: Vec<Cidr> = daemon
            .insecure_cidrs
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect();
        if !daemon.insecure_cidrs.is_empty() {
            self.insecure_cidrs = cidrs;
        }
        self.insecure_hosts = daemon
            .insecure_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        self.secure_hosts = daemon
            .secure_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        self
    }

    /// Reads the daemon's settings (`GET /info`); the defaults when it does not answer.
    pub async fn for_engine(engine: &crate::engine::Engine) -> RegistryTrust {
        match engine.docker.info().await {
            Ok(info) => {
                RegistryTrust::from_env().with_daemon(&DaemonRegistryConfig::from_info(&info))
            }
            Err(_) => RegistryTrust::from_env(),
        }
    }

    /// The certs.d directory in use.
    pub fn certs_d(&self) -> &Path {
        &self.certs_d
    }

    /// `<certs.d>/HOST[:PORT]`.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.certs_d.join(host)
    }

    /// Whether the daemon treats `host` as insecure: by its index config, else by its
    /// address (or `localhost`) in an insecure CIDR. Names are not resolved here (see
    /// [`RegistryTrust::is_insecure_resolved`]).
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_by_config(host)
            .unwrap_or_else(|| self.insecure_by_addresses(&literal_addresses(host)))
    }

    /// [`RegistryTrust::is_insecure`], resolving a name to match its addresses against the
    /// insecure CIDRs (as the daemon does), bounded to two seconds.
    pub async fn is_insecure_resolved(&self, host: &str) -> bool {
        if let Some(answer) = self.insecure_by_config(host) {
            return answer;
        }
        let mut addrs = literal_addresses(host);
        if addrs.is_empty() {
            let (name, port) = split_host_port(host, 443);
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            if let Ok(Ok(found)) =
                tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await
            {
                addrs = found.map(|a| a.ip()).collect();
            }
        }
        self.insecure_by_addresses(&addrs)
    }

    fn insecure_by_config(&self, host: &str) -> Option<bool> {
        let host = host.to_ascii_lowercase();
        if self.insecure_hosts.contains(&host) {
            Some(true)
        } else if self.secure_hosts.contains(&host) {
            Some(false)
        } else {
            None
        }
    }

    fn insecure_by_addresses(&self, addrs: &[IpAddr]) -> bool {
        addrs
            .iter()
            .any(|ip| self.insecure_cidrs.iter().any(|c| c.contains(*ip)))
    }

    /// The rustls configuration for `host`: the system's roots plus the CAs of its certs.d
    /// directory (or no verification at all for an insecure host), and its client certificate.
    pub fn tls_config(
        &self,
        host: &str,
        insecure: bool,
    ) -> Result<rustls::ClientConfig, TrustError> {
        let files = read_host_dir(&self.host_dir(host))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_err = |reason: String| TrustError::Config {
            host: host.to_string(),
            reason,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(e.to_string()))?
            .dangerous();
        let builder = if insecure {
            builder.with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
        } else {
            let verifier = match rustls_platform_verifier::Verifier::new_with_extra_roots(
                files.roots.clone(),
                provider.clone(),
            ) {
                Ok(v) => Arc::new(v) as Arc<dyn rustls::client::danger::ServerCertVerifier>,
                // No system roots at all: the certs.d CAs alone.
                Err(_) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for root in files.roots.clone() {
                        roots.add(root).map_err(|e| config_err(e.to_string()))?;
                    }
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| config_err(e.to_string()))?
                }
            };
            builder.with_custom_certificate_verifier(verifier)
        };
        match files.client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(e.to_string())),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// `<certs.d>`: the override, else the rootless daemon's, else `/etc/docker/certs.d`.
fn certs_d_dir(rootless: bool, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = env(CERTS_D_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if rootless {
        let config = env("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(config) = config {
            return config.join("docker/certs.d");
        }
    }
    PathBuf::from(DEFAULT_CERTS_D)
}

/// What a certs.d host directory holds.
#[derive(Debug, Default)]
struct HostFiles {
    roots: Vec<CertificateDer<'static>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Reads `dir` as the daemon does; a missing directory is empty.
fn read_host_dir(dir: &Path) -> Result<HostFiles, TrustError> {
    let mut files = HostFiles::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(err) => {
            return Err(TrustError::Unreadable {
                path: dir.to_path_buf(),
                reason: err.to_string(),
            });
        }
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let unreadable = |path: &Path, err: std::io::Error| TrustError::Unreadable {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    for path in &names {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        match ext {
            "crt" => {
                let pem = std::fs::read(path).map_err(|e| unreadable(path, e))?;
                let certs = certificates(path, &pem)?;
                files.roots.extend(certs);
            }
            "cert" => {
                let key = path.with_extension("key");
                if !key.exists() {
                    return Err(TrustError::MissingKey {
                        cert: path.clone(),
                        key,
                    });
                }
                let pem = std::fs::read(path).map_err(|e| unreadable(path, e))?;
                let chain = certificates(path, &pem)?;
                let key_pem = std::fs::read(&key).map_err(|e| unreadable(&key, e))?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TrustError::BadKey {
                        path: key.clone(),
                        reason: e.to_string(),
                    })?;
                // The daemon uses every pair; one client certificate is what a handshake sends.
                if files.client.is_none() {
                    files.client = Some((chain, key_der));
                }
            }
            "key" => {
                let cert = path.with_extension("cert");
                if !cert.exists() {
                    return Err(TrustError::MissingCert {
                        key: path.clone(),
                        cert,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(files)
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TrustError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::BadCertificate {
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".to_string(),
        });
    }
    Ok(certs)
}

/// The addresses of a literal host (`127.0.0.1:5000`, `[::1]:5000`; `localhost` is
/// loopback); none for a name.
fn literal_addresses(host: &str) -> Vec<IpAddr> {
    let (name, _) = split_host_port(host, 0);
    if name.eq_ignore_ascii_case("localhost") {
        return vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
    }
    name.parse::<IpAddr>()
        .map(|ip| vec![ip])
        .unwrap_or_default()
}

/// `host:port` -> (`host`, port); `[::1]:5000` -> (`::1`, 5000); no port -> `default`.
pub fn split_host_port(host: &str, default: u16) -> (String, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default);
        return (name.to_string(), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => {
            (name.to_string(), port.parse().unwrap_or(default))
        }
        _ => (host.to_string(), default),
    }
}

/// What to say about a TLS failure with `host`: `Some` (the message, naming the file to add)
/// when `cause` (the error chain's text) says the certificate is not trusted or a client
/// certificate is missing.
pub fn untrusted_advice(cause: &str, host: &str, trust: &RegistryTrust) -> Option<String> {
    let lower = cause.to_ascii_lowercase();
    let dir = trust.host_dir(host);
    if lower.contains("certificaterequired")
        || lower.contains("certificate required")
        || (lower.contains("handshakefailure") && lower.contains("alert"))
    {
        return Some(format!(
            "tls: {host} asks for a client certificate: add it as {} and {} ({cause})",
            dir.join("client.cert").display(),
            dir.join("client.key").display()
        ));
    }
    if lower.contains("badcertificate") || lower.contains("tls: bad certificate") {
        let cert = dir.join("client.cert");
        return Some(format!(
            "tls: {host} refused the client certificate{}: add one it accepts as {} and {} ({cause})",
            if cert.exists() {
                format!(" in {}", cert.display())
            } else {
                String::new()
            },
            cert.display(),
            dir.join("client.key").display()
        ));
    }
    if lower.contains("unknownissuer") || lower.contains("unknown authority") {
        return Some(format!(
            "x509: unknown authority for {host}: add its CA as {} (or list {host} in the daemon's insecure-registries)",
            dir.join("ca.crt").display()
        ));
    }
    if lower.contains("invalid peer certificate") || lower.contains("x509:") {
        return Some(format!(
            "x509: the certificate of {host} is not valid ({cause}): fix the registry's certificate, or add its CA as {}",
            dir.join("ca.crt").display()
        ));
    }
    None
}

/// Whether a failed request's text says the other side speaks the other protocol: plain HTTP
/// to a TLS server, or TLS to a plain-HTTP server.
pub fn wrong_protocol(cause: &str) -> bool {
    let lower = cause.to_ascii_lowercase();
    [
        "invalid http version",
        "http/0.9",
        "invalidcontenttype",
        "corrupt message",
        "http response to https client",
        "http request to an https server",
        "wrong version number",
    ]
    .iter()
    .any(|f| lower.contains(f))
}

/// A client configuration that accepts any certificate (still checking the handshake's
/// signatures) and sends none: an insecure registry's, or a handshake timed for its own sake
/// whose certificate is judged elsewhere (`doctor`'s probe).
pub fn any_certificate_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any certificate (still checking the handshake's signatures): an insecure registry.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The proxy settings of this process, read as Go's `httpproxy.FromEnvironment` reads them
/// (the daemon and the docker CLI do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEnv {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> ProxyEnv {
        let var = |upper: &str| {
            lookup(upper)
                .or_else(|| lookup(&upper.to_ascii_lowercase()))
                .filter(|v| !v.trim().is_empty())
        };
        ProxyEnv {
            http_proxy: var("HTTP_PROXY"),
            https_proxy: var("HTTPS_PROXY"),
            no_proxy: var("NO_PROXY"),
        }
    }

    /// The proxy a request to `host` (`name[:port]`) goes through, if any (a proxy given
    /// without a scheme is `http://`).
    pub fn proxy_for(&self, host: &str, https: bool) -> Option<String> {
        let proxy = if https {
            self.https_proxy.as_ref()
        } else {
            self.http_proxy.as_ref()
        }?;
        let (name, port) = split_host_port(host, if https { 443 } else { 80 });
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        // Go's httpproxy: localhost and loopback addresses never use a proxy.
        if name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return None;
        }
        if self.bypassed(&name, port) {
            return None;
        }
        Some(if proxy.contains("://") {
            proxy.clone()
        } else {
            format!("http://{proxy}")
        })
    }

    /// Whether `NO_PROXY` names this host (and port).
    fn bypassed(&self, name: &str, port: u16) -> bool {
        let ip = name.parse::<IpAddr>().ok();
        self.no_proxy
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .any(|entry| {
                if entry == "*" {
                    return true;
                }
                if let Some(cidr) = entry.contains('/').then(|| Cidr::parse(&entry)).flatten() {
                    return ip.is_some_and(|ip| cidr.contains(ip));
                }
                let (entry_name, entry_port) = split_host_port(&entry, 0);
                if entry_port != 0 && entry_port != port {
                    return false;
                }
                if let Ok(entry_ip) = entry_name.parse::<IpAddr>() {
                    return ip == Some(entry_ip);
                }
                let entry_name = entry_name.trim_start_matches('*');
                match entry_name.strip_prefix('.') {
                    // `.example.com`: subdomains only.
                    Some(domain) => name.ends_with(&format!(".{domain}")),
                    None => name == entry_name || name.ends_with(&format!(".{entry_name}")),
                }
            })
    }

    /// A reqwest proxy that applies these rules to each request's URL.
    pub fn reqwest_proxy(&self) -> reqwest::Proxy {
        let env = self.clone();
        reqwest::Proxy::custom(move |url| {
            let host = url.host_str()?;
            let host = match url.port() {
                Some(port) if host.contains(':') => format!("[{host}]:{port}"),
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            env.proxy_for(&host, url.scheme() == "https")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(!c.contains("128.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nope/8"), None);
    }

    #[test]
    fn insecure_registries_follow_the_daemon() {
        let trust = RegistryTrust::from_env();
        assert!(trust.is_insecure("127.0.0.1:5000"));
        assert!(trust.is_insecure("localhost:5000"));
        // The daemon's default CIDR is IPv4 only.
        assert!(!trust.is_insecure("[::1]:5000"));
        assert!(!trust.is_insecure("10.1.2.3:5000"));
        let daemon = DaemonRegistryConfig {
            insecure_cidrs: vec!["127.0.0.0/8".into(), "10.1.0.0/16".into()],
            insecure_hosts: vec!["registry.internal:5000".into()],
            secure_hosts: vec!["docker.io".into()],
            rootless: false,
        };
        let trust = trust.with_daemon(&daemon);
        assert!(trust.is_insecure("10.1.2.3:5000"));
        assert!(trust.is_insecure("Registry.Internal:5000"));
        assert!(!trust.is_insecure("registry.internal:5001"));
        assert!(!trust.is_insecure("docker.io"));
    }

    #[test]
    fn certs_d_is_the_daemons_or_the_override() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            certs_d_dir(false, &env(&[("HOME", "/home/u")])),
            PathBuf::from("/etc/docker/certs.d")
        );
        assert_eq!(
            certs_d_dir(true, &env(&[("HOME", "/home/u")])),
            PathBuf::from("/home/u/.config/docker/certs.d")
        );
        assert_eq!(
            certs_d_dir(
                true,
                &env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")])
            ),
            PathBuf::from("/x/docker/certs.d")
        );
        assert_eq!(
            certs_d_dir(true, &env(&[(CERTS_D_ENV, "/t/certs.d")])),
            PathBuf::from("/t/certs.d")
        );
    }

    #[test]
    fn certs_d_files_are_read_as_the_daemon_reads_them() {
        let ca = testbed::tls::TestCa::new("unit").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let host = "registry.example:5000";
        let client = ca.client_cert("me").unwrap();
        let host_dir = ca.write_certs_d(dir.path(), host, Some(&client)).unwrap();
        std::fs::write(host_dir.join("extra.crt"), ca.cert_pem()).unwrap();
        std::fs::write(host_dir.join("README"), "ignored").unwrap();
        let files = read_host_dir(&host_dir).unwrap();
        assert_eq!(files.roots.len(), 2);
        assert!(files.client.is_some());
        let trust = RegistryTrust {
            certs_d: dir.path().to_path_buf(),
            ..RegistryTrust::from_env()
        };
        assert!(trust.tls_config(host, false).is_ok());
        assert!(
            trust.tls_config("elsewhere:1", false).is_ok(),
            "no dir: system roots"
        );

        std::fs::remove_file(host_dir.join("client.key")).unwrap();
        let err = read_host_dir(&host_dir).unwrap_err();
        assert!(matches!(err, TrustError::MissingKey { .. }), "{err}");
        assert!(err.to_string().contains("client.key"), "{err}");
        std::fs::remove_file(host_dir.join("client.cert")).unwrap();
        std::fs::write(host_dir.join("lonely.key"), &client.key).unwrap();
        let err = read_host_dir(&host_dir).unwrap_err();
        assert!(matches!(err, TrustError::MissingCert { .. }), "{err}");
        std::fs::remove_file(host_dir.join("lonely.key")).unwrap();
        std::fs::write(host_dir.join("bad.crt"), "not a certificate").unwrap();
        let err = read_host_dir(&host_dir).unwrap_err();
        assert!(err.to_string().contains("bad.crt"), "{err}");
    }

    #[test]
    fn untrusted_certificates_name_the_file_to_add() {
        let trust = RegistryTrust {
            certs_d: PathBuf::from("/etc/docker/certs.d"),
            ..RegistryTrust::from_env()
        };
        let advice = untrusted_advice(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer",
            "10.1.2.3:5000",
            &trust,
        )
        .unwrap();
        assert_eq!(
            advice,
            "x509: unknown authority for 10.1.2.3:5000: add its CA as /etc/docker/certs.d/10.1.2.3:5000/ca.crt (or list 10.1.2.3:5000 in the daemon's insecure-registries)"
        );
        assert_eq!(
            crate::retry::classify_message(&advice),
            crate::retry::ErrorClass::TlsUntrusted
        );
        assert!(
            untrusted_advice("received fatal alert: CertificateRequired", "h:1", &trust)
                .unwrap()
                .contains("/etc/docker/certs.d/h:1/client.cert")
        );
        for alert in [
            "client error (SendRequest): connection error: received fatal alert: HandshakeFailure",
            "remote error: tls: certificate required",
        ] {
            let advice = untrusted_advice(alert, "h:1", &trust).unwrap();
            assert!(
                advice.starts_with("tls: h:1 asks for a client certificate: add it as /etc/docker/certs.d/h:1/client.cert and /etc/docker/certs.d/h:1/client.key"),
                "{advice}"
            );
            assert_eq!(
                crate::retry::classify_message(&advice),
                crate::retry::ErrorClass::TlsUntrusted,
                "{advice}"
            );
        }
        let refused =
            untrusted_advice("received fatal alert: BadCertificate", "h:1", &trust).unwrap();
        assert!(
            refused.starts_with("tls: h:1 refused the client certificate: add one it accepts as /etc/docker/certs.d/h:1/client.cert and /etc/docker/certs.d/h:1/client.key"),
            "{refused}"
        );
        assert_eq!(
            crate::retry::classify_message(&refused),
            crate::retry::ErrorClass::TlsUntrusted
        );
        assert_eq!(untrusted_advice("connection refused", "h:1", &trust), None);
        assert!(wrong_protocol("hyper: invalid HTTP version parsed"));
        assert!(wrong_protocol(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(!wrong_protocol("unexpected EOF"));
    }

    #[test]
    fn proxies_follow_go_httpproxy_rules() {
        let env = ProxyEnv {
            http_proxy: Some("proxy.example:3128".into()),
            https_proxy: Some("http://secure-proxy.example:3128".into()),
            no_proxy: Some(".internal, example.org, 10.0.0.0/8, 192.168.1.1, reg.test:5000".into()),
        };
        let p = |h: &str, https| env.proxy_for(h, https);
        assert_eq!(
            p("registry-1.docker.io", true).as_deref(),
            Some("http://secure-proxy.example:3128")
        );
        assert_eq!(
            p("registry-1.docker.io", false).as_deref(),
            Some("http://proxy.example:3128")
        );
        // Loopback never goes through a proxy, as in Go (and so in the daemon).
        assert_eq!(p("127.0.0.1:5000", false), None);
        assert_eq!(p("localhost:5000", true), None);
        assert_eq!(p("[::1]:5000", true), None);
        assert_eq!(p("a.internal", true), None);
        assert!(p("internal", true).is_some(), ".internal: subdomains only");
        assert_eq!(p("example.org", true), None);
        assert_eq!(p("www.example.org", true), None);
        assert!(p("notexample.org", true).is_some());
        assert_eq!(p("10.20.30.40:5000", true), None);
        assert_eq!(p("192.168.1.1", true), None);
        assert!(p("192.168.1.2", true).is_some());
        assert_eq!(p("reg.test:5000", true), None);
        assert!(p("reg.test:5001", true).is_some());
        let star = ProxyEnv {
            no_proxy: Some("*".into()),
            ..env.clone()
        };
        assert_eq!(star.proxy_for("anything.example", true), None);
        let lower = ProxyEnv::from_lookup(&|k| (k == "https_proxy").then(|| "http://p:1".into()));
        assert_eq!(lower.https_proxy.as_deref(), Some("http://p:1"));
    }
}
