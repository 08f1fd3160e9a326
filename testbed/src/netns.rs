//! A network namespace of the test's own, joined to ours by a veth pair, and a second Docker
//! engine running in it ([`NetnsEngine`]): a daemon whose 127.0.0.1 is not ours, reached over
//! `tcp://` on the namespace's address, as a remote or rootless daemon is.
//!
//! - [`Netns::create`]: namespace `aib-XXXXXXXX`, a veth pair with the host side at
//!   `10.R.S.1/24` and the namespace side at `10.R.S.2/24` (R, S random), loopback up.
//!   Dropping it deletes both. Needs root (`ip netns`, `ip link`).
//! - [`NetnsEngine::start`]: `/usr/sbin/dockerd` (Debian's 20.10) entered into the namespace
//!   with `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the cgroups), with
//!   its own data root, exec root (and so its own containerd), pid file, config file and
//!   containerd namespaces in a temp dir; listening on `tcp://10.R.S.2:2375` (and a unix socket
//!   in the temp dir), `--iptables=false`, `--bridge none` unless [`EngineOptions::bridge`]
//!   (then its `docker0` is the namespace's own), vfs storage. It answers in about a
//!   second. Dropping it stops the daemon (SIGTERM, then SIGKILL after 20 s) and removes it all.
//!
//! Servers of the test that the engine must reach listen on the host side's address (see
//! [`crate::tls::Front`] to put one in front of a 127.0.0.1 server).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A network namespace with a veth pair to ours.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    host_if: String,
    /// Our side of the pair (reachable from inside the namespace).
    pub host_ip: Ipv4Addr,
    /// The namespace's side (reachable from here).
    pub ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Netns {
    pub fn create() -> anyhow::Result<Netns> {
        let id = rand::random::<u32>();
        let name = format!("aib-{id:08x}");
        // Interface names are at most 15 bytes.
        let host_if = format!("aibh{:08x}", id);
        let peer_if = format!("aibn{:08x}", id);
        let (r, s) = (200 + (id % 50) as u8, ((id >> 8) % 250) as u8 + 1);
        let host_ip = Ipv4Addr::new(10, r, s, 1);
        let ns_ip = Ipv4Addr::new(10, r, s, 2);
        ip(&["netns", "add", &name]).context("network namespaces need root")?;
        let netns = Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        let ns = netns.name.as_str();
        ip(&[
            "link",
            "add",
            &netns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ])?;
        ip(&["link", "set", &peer_if, "netns", ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &netns.host_if,
        ])?;
        ip(&["link", "set", &netns.host_if, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &peer_if,
        ])?;
        ip(&["-n", ns, "link", "set", &peer_if, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// `/run/netns/NAME`, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `program` to be run inside the namespace (network only; mounts stay ours).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// How to start a [`NetnsEngine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// `--insecure-registry` entries (e.g. `10.R.S.1:PORT`: a plain-HTTP test registry).
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror` entries (`http://…`).
    pub registry_mirrors: Vec<String>,
    /// Give the engine its default bridge (`docker0` inside the namespace, no iptables
    /// rules), so that containers and `RUN` steps have their default network as on any
    /// engine; without it (`--bridge none`) a build's RUN step fails with "network bridge
    /// not found" unless it runs with `--network none|host`.
    pub bridge: bool,
}

/// A Docker engine in its own network namespace.
#[derive(Debug)]
pub struct NetnsEngine {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `tcp://10.R.S.2:2375`: what DOCKER_HOST names.
    pub docker_host: String,
    // Dropped last: the daemon must be gone before its namespace.
    pub netns: Netns,
}

/// Where Debian's 20.10 daemon is.
const DOCKERD: &str = "/usr/sbin/dockerd";

impl NetnsEngine {
    /// Starts the engine and waits (at most 30 s) until it answers on its TCP address.
    pub async fn start(options: EngineOptions) -> anyhow::Result<NetnsEngine> {
        ensure!(
            Path::new(DOCKERD).exists(),
            "{DOCKERD} is missing: install docker.io (scripts/setup)"
        );
        let netns = Netns::create()?;
        let dir = tempfile::Builder::new().prefix("aib-engine-").tempdir()?;
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}\n")?;
        let docker_host = format!("tcp://{}:2375", netns.ns_ip);
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let mut command = netns.command(DOCKERD);
        command
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("-H")
            .arg(&docker_host)
            // Without an explicit --tls=false, 20.10 sleeps 15 s before serving plain TCP.
            .args(["--tls=false", "--iptables=false"])
            .args(["--ip-masq=false", "--storage-driver", "vfs"])
            .args(["--containerd-namespace", &netns.name])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", netns.name),
            ]);
        if !options.bridge {
            command.args(["--bridge", "none"]);
        }
        for registry in &options.insecure_registries {
            command.args(["--insecure-registry", registry]);
        }
        for mirror in &options.registry_mirrors {
            command.args(["--registry-mirror", mirror]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd in the namespace (nsenter)")?;
        let mut engine = NetnsEngine {
            child: Some(child),
            dir,
            docker_host,
            netns,
        };
        engine.wait_ready(Duration::from_secs(30)).await?;
        Ok(engine)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = format!("{}:2375", self.netns.ns_ip);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "dockerd in {} exited ({status}) while starting:\n{}",
                    self.netns.name,
                    self.log_tail()
                );
            }
            if ping(&addr).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "dockerd in {} did not answer within {timeout:?}:\n{}",
                    self.netns.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `unix://…/docker.sock`: the engine's local socket (a local address, but the daemon's
    /// 127.0.0.1 is its namespace's, not ours).
    pub fn unix_host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.docker_host)
            .stdin(Stdio::null())
            .output()
            .context("cannot run docker")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs dockerd: the child is the daemon itself.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Whether the Engine API at `addr` answers `GET /_ping` with 200 (within a second).
async fn ping(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl Drop for NetnsEngine {
    fn drop(&mut self) {
        self.stop();
        // vfs layers are plain directories; anything still mounted under the exec root
        // (a daemon killed hard) is unmounted first so the temp dir can go.
        let exec = self.dir.path().join("exec");
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&exec)
            .stderr(Stdio::null())
            .status();
    }
}
