//! `testbed`: the test bed from the shell, for bench scripts.
//!
//! - `testbed serve [--registry-port P] [--proxy-port Q] [--seed S] [--faults FILE] [--auth]`
//!   starts a registry and a fault proxy in front of it, prints one JSON line
//!   `{"registry":"127.0.0.1:P","proxy":"127.0.0.1:Q","control":"http://127.0.0.1:Q/_testbed/"}`
//!   and runs until SIGTERM or SIGINT (then stops both and removes the storage).
//! - `testbed push --registry HOST --repo library/ubuntu --tag 22.04 [--size-mb N]
//!   [--layers L]` builds a busybox image with N MB of random data in L layers, pushes it,
//!   and prints the pushed image as one JSON line; with `--platforms linux/amd64,linux/arm64`
//!   an index of one such image per platform (each with `/etc/testbed-platform`).
//! - `testbed control --proxy HOST [--faults-json JSON] [--seed S] [--reset-stats] [--stats]
//!   [--totals]` changes a running proxy through its control endpoint (faults and seed re-arm
//!   it) and prints its counters (without the request log) as one JSON line with `--stats`,
//!   or `REQUESTS FAULTS` (two numbers on one line) with `--totals`.
//!
//! Exit codes: 0 success, 1 runtime failure (message on stderr), 2 usage error (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hyper::{Method, StatusCode};
use testbed::http;
use testbed::images::{ImageSpec, push_image, push_index};
use testbed::proxy::{FaultConfig, FaultProxy, ProxyOptions, ProxyStats};
use testbed::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    version,
    about = "Registry, offline base images and fault proxy on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a registry and a fault proxy; print their addresses; run until SIGTERM/SIGINT.
    Serve {
        /// Registry port (0: a free one).
        #[arg(long, default_value_t = 0)]
        registry_port: u16,
        /// Proxy port (0: a free one).
        #[arg(long, default_value_t = 0)]
        proxy_port: u16,
        /// Seed of the proxy's fault decisions.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fault config as JSON (see `testbed::proxy::FaultConfig`); none if omitted.
        #[arg(long)]
        faults: Option<PathBuf>,
        /// Require Bearer tokens from the proxy's /token endpoint.
        #[arg(long)]
        auth: bool,
    },
    /// Build an offline busybox image with random data layers and push it.
    Push {
        /// Registry host, e.g. 127.0.0.1:5000.
        #[arg(long)]
        registry: String,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        tag: String,
        /// Megabytes (MiB) of random data on top of the busybox layer.
        #[arg(long, default_value_t = 0)]
        size_mb: usize,
        /// Number of layers the random data is split into.
        #[arg(long, default_value_t = 1)]
        layers: usize,
        /// Push an index (manifest list) of one image per platform instead, e.g.
        /// `linux/amd64,linux/arm64`.
        #[arg(long, value_delimiter = ',')]
        platforms: Vec<String>,
    },
    /// Change a running proxy (faults, seed, counters) and optionally print its counters.
    Control {
        /// Proxy host, e.g. 127.0.0.1:5001.
        #[arg(long)]
        proxy: String,
        /// New fault config as JSON (see `testbed::proxy::FaultConfig`); re-arms the proxy.
        #[arg(long)]
        faults_json: Option<String>,
        /// New seed of the fault decisions; re-arms the proxy.
        #[arg(long)]
        seed: Option<u64>,
        /// Zero the counters (after applying faults and seed).
        #[arg(long)]
        reset_stats: bool,
        /// Print the counters, without the request log, as one JSON line.
        #[arg(long)]
        stats: bool,
        /// Print the total requests and injected faults as `REQUESTS FAULTS`.
        #[arg(long, conflicts_with = "stats")]
        totals: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(anyhow::Error::from(err).context("cannot start tokio")),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    eprintln!("testbed: error: {err:#}");
    ExitCode::FAILURE
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            registry_port,
            proxy_port,
            seed,
            faults,
            auth,
        } => {
            let faults = match faults {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    FaultConfig::from_json(&text)
                        .with_context(|| format!("invalid fault config {}", path.display()))?
                }
                None => FaultConfig::default(),
            };
            let registry = if registry_port == 0 {
                Registry::start().await?
            } else {
                Registry::start_on(registry_port).await?
            };
            let options = ProxyOptions::new(registry.addr())
                .with_port(proxy_port)
                .with_seed(seed)
                .with_faults(faults)
                .with_auth(auth);
            let proxy = FaultProxy::start(options).await?;
            let ready = serde_json::json!({
                "registry": registry.host(),
                "proxy": proxy.host(),
                "control": format!("{}/_testbed/", proxy.url()),
            });
            println!("{ready}");
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            drop(proxy);
            drop(registry);
            Ok(())
        }
        Command::Push {
            registry,
            repo,
            tag,
            size_mb,
            layers,
            platforms,
        } => {
            let mut spec = ImageSpec::new(repo, tag);
            if size_mb > 0 {
                spec = spec.with_random_bytes(size_mb << 20, layers);
            }
            if platforms.is_empty() {
                let pushed = push_image(&registry, &spec).await?;
                println!("{}", serde_json::to_string(&pushed)?);
            } else {
                let platforms: Vec<&str> = platforms.iter().map(String::as_str).collect();
                let pushed = push_index(&registry, &spec, &platforms).await?;
                println!("{}", serde_json::to_string(&pushed)?);
            }
            Ok(())
        }
        Command::Control {
            proxy,
            faults_json,
            seed,
            reset_stats,
            stats,
            totals,
        } => {
            let print = match (stats, totals) {
                (true, _) => Print::Stats,
                (_, true) => Print::Totals,
                _ => Print::Nothing,
            };
            control(&proxy, faults_json, seed, reset_stats, print).await
        }
    }
}

/// What `control` prints.
#[derive(PartialEq)]
enum Print {
    Nothing,
    Stats,
    Totals,
}

async fn control(
    proxy: &str,
    faults_json: Option<String>,
    seed: Option<u64>,
    reset_stats: bool,
    print: Print,
) -> anyhow::Result<()> {
    let base = format!("http://{proxy}/_testbed");
    let query = seed.map_or_else(String::new, |s| format!("?seed={s}"));
    let expect_ok = |what: &str, resp: http::Response| {
        anyhow::ensure!(
            resp.status == StatusCode::OK,
            "{what} answered {}: {}",
            resp.status,
            resp.text().trim()
        );
        Ok(())
    };
    if let Some(json) = faults_json {
        FaultConfig::from_json(&json).context("invalid --faults-json")?;
        let url = format!("{base}/faults{query}");
        expect_ok(
            "PUT faults",
            http::send(Method::PUT, &url, &[], json.into()).await?,
        )?;
    } else if seed.is_some() {
        let url = format!("{base}/arm{query}");
        expect_ok(
            "POST arm",
            http::send(Method::POST, &url, &[], Bytes::new()).await?,
        )?;
    }
    if reset_stats {
        let url = format!("{base}/stats");
        expect_ok(
            "DELETE stats",
            http::send(Method::DELETE, &url, &[], Bytes::new()).await?,
        )?;
    }
    if print != Print::Nothing {
        let resp = http::get(&format!("{base}/stats")).await?;
        let mut counters: ProxyStats = serde_json::from_slice(&resp.body)
            .with_context(|| format!("the proxy's stats are not JSON: {}", resp.text()))?;
        if print == Print::Totals {
            let requests: u64 = counters.kinds.values().map(|k| k.requests).sum();
            println!("{requests} {}", counters.total_faults());
        } else {
            counters.log.clear();
            println!("{}", serde_json::to_string(&counters)?);
        }
    }
    Ok(())
}
