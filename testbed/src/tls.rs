//! TLS for the test bed: a CA generated per test ([`TestCa`], rcgen), certificates it signs
//! (a server's for its names and addresses, a client's for registries that demand one), the
//! files Docker reads from `certs.d/<host:port>/` ([`TestCa::write_certs_d`]), and a
//! TLS-terminating front ([`Front`]) that forwards the plaintext to a server on 127.0.0.1
//! (a registry or the fault proxy).
//!
//! A [`Front`] without TLS is a plain TCP forwarder: it makes a loopback server reachable on
//! another local address (the host side of a test's network namespace, see [`crate::netns`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

impl CertPem {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A throw-away certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named `name` (its subject's common name).
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)
            .context("while making the test CA")?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate (what goes into `ca.crt`).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, names: &[String], usage: ExtendedKeyUsagePurpose) -> anyhow::Result<CertPem> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("client", |n| n));
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> anyhow::Result<CertPem> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.sign(&names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for a registry that demands one).
    pub fn client_cert(&self, name: &str) -> anyhow::Result<CertPem> {
        self.sign(&[name.to_string()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes `dir/<host>/ca.crt` (and `client.cert` + `client.key` when given), as Docker
    /// reads them from `/etc/docker/certs.d/<host>/`; returns `dir/<host>`.
    pub fn write_certs_d(
        &self,
        dir: &Path,
        host: &str,
        client: Option<&CertPem>,
    ) -> anyhow::Result<PathBuf> {
        let host_dir = dir.join(host);
        std::fs::create_dir_all(&host_dir)
            .with_context(|| format!("while creating {}", host_dir.display()))?;
        std::fs::write(host_dir.join("ca.crt"), self.cert_pem())?;
        if let Some(client) = client {
            std::fs::write(host_dir.join("client.cert"), &client.cert)?;
            std::fs::write(host_dir.join("client.key"), &client.key)?;
        }
        Ok(host_dir)
    }
}

/// How a [`Front`] serves.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// The address to listen on (port 0: a free one). Must be a local address.
    pub bind: SocketAddr,
    /// Where the plaintext goes (must be on 127.0.0.1).
    pub upstream: SocketAddr,
    /// The server certificate; `None`: plain TCP forwarding.
    pub tls: Option<CertPem>,
    /// Demand a client certificate signed by this CA's certificate (PEM).
    pub client_ca: Option<String>,
}

/// A running front. Dropping it stops accepting.
#[derive(Debug)]
pub struct Front {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    _stop: watch::Sender<()>,
}

impl Front {
    pub async fn start(options: FrontOptions) -> anyhow::Result<Front> {
        if !options.upstream.ip().is_loopback() {
            bail!(
                "the front forwards to 127.0.0.1 only, not {}",
                options.upstream
            );
        }
        let acceptor = match &options.tls {
            Some(cert) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
                cert,
                options.client_ca.as_deref(),
            )?))),
            None => None,
        };
        let listener = TcpListener::bind(options.bind)
            .await
            .with_context(|| format!("while binding the front to {}", options.bind))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (ok, failed) = (handshakes.clone(), failed_handshakes.clone());
        let upstream = options.upstream;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (acceptor, ok, failed) = (acceptor.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    match acceptor {
                        None => {
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        Some(acceptor) => match acceptor.accept(client).await {
                            Ok(mut tls) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    }
                });
            }
        });
        Ok(Front {
            addr,
            handshakes,
            failed_handshakes,
            _stop: stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `IP:PORT` (`[IP]:PORT` for IPv6): the registry host clients name.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (a client that did not trust us, or sent no certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::Relaxed)
    }
}

fn server_config(cert: &CertPem, client_ca: Option<&str>) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(der?)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(cert.chain(), cert.private_key())?)
}

/// A TLS front for `upstream` on `bind_ip`, with a certificate of `ca` for that address.
pub async fn tls_front(
    ca: &TestCa,
    bind_ip: IpAddr,
    upstream: SocketAddr,
) -> anyhow::Result<Front> {
    let cert = ca.server_cert(&[&bind_ip.to_string()])?;
    Front::start(FrontOptions {
        bind: SocketAddr::new(bind_ip, 0),
        upstream,
        tls: Some(cert),
        client_ca: None,
    })
    .await
}
