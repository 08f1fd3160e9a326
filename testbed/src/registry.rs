//! A real registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on a free
//! 127.0.0.1 port, with storage in a temporary directory.
//!
//! [`Registry::start`] writes a config, starts `docker-registry serve CONFIG.yml`, and polls
//! `GET /v2/` until it answers (bounded by [`READY_TIMEOUT`]). Dropping the [`Registry`] kills
//! the process and removes its storage. The registry's own log goes to `registry.log` in its
//! temporary directory and is quoted in start-up errors.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

/// The executable Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "docker-registry";

/// How long [`Registry::start`] waits for `GET /v2/` to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many ports [`Registry::start`] tries when another process takes the free port first.
const PORT_ATTEMPTS: usize = 3;

/// A running `docker-registry` on 127.0.0.1; killed and its storage removed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry on a free 127.0.0.1 port and waits until it answers `GET /v2/`.
    pub async fn start() -> anyhow::Result<Registry> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_on(crate::free_port()?).await {
                Ok(registry) => return Ok(registry),
                // Only a lost race for the port is worth another try.
                Err(err) if format!("{err:#}").contains("address already in use") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no port attempt was made")))
    }

    /// Starts a registry on 127.0.0.1:`port` and waits until it answers `GET /v2/`.
    pub async fn start_on(port: u16) -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("testbed-registry-")
            .tempdir()
            .context("while creating the registry's temporary directory")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_yaml(&dir.path().join("storage"), addr))
            .context("while writing the registry config")?;
        let log = File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => anyhow!(
                    "`{REGISTRY_BIN}` is not installed: run scripts/setup \
                     (or `apt-get install -y docker-registry`)"
                ),
                _ => anyhow!(err).context(format!("while starting `{REGISTRY_BIN}`")),
            })?;
        let mut registry = Registry { child, addr, dir };
        registry
            .wait_ready()
            .await
            .with_context(|| format!("registry on {addr} did not come up"))?;
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/v2/", self.url());
        let log = self.log_path();
        let (url, log) = (url.as_str(), log.as_path());
        let child = &mut self.child;
        crate::poll_until(
            "the registry to answer GET /v2/",
            READY_TIMEOUT,
            Duration::from_millis(20),
            || {
                let exited = child.try_wait();
                async move {
                    if let Some(status) = exited? {
                        let log = std::fs::read_to_string(log).unwrap_or_default();
                        bail!("`{REGISTRY_BIN}` exited with {status}; its log:\n{log}");
                    }
                    Ok(match crate::http::get(url).await {
                        Ok(resp) if resp.status.is_success() => Some(()),
                        _ => None,
                    })
                }
            },
        )
        .await
    }

    /// The listening address, 127.0.0.1:PORT.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the registry keeps its blobs and manifests.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry process's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The process may already have exited; either way reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(storage: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        storage = storage.display(),
        secret = crate::unique_name("testbed-secret"),
    )
}
