//! The few Docker daemon operations tests need: connect (with a clear error when the daemon
//! is down), pull an image and keep the daemon's exact error text, remove an image by the
//! name a test gave it, and run a command in a throw-away container.
//!
//! All tests share one daemon: these helpers only ever touch the names they are given, and
//! never prune.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

/// How long [`connect`] waits for the daemon's `/_ping`.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the local daemon (`DOCKER_HOST` or the default socket) and pings it.
pub async fn connect() -> anyhow::Result<Docker> {
    let hint = "is the Docker daemon running? start it with \
                `nohup dockerd >/tmp/dockerd.log 2>&1 &` (or run scripts/setup)";
    let docker = Docker::connect_with_local_defaults()
        .with_context(|| format!("cannot connect to the Docker daemon: {hint}"))?;
    tokio::time::timeout(PING_TIMEOUT, docker.ping())
        .await
        .map_err(|_| anyhow!("the Docker daemon did not answer /_ping in {PING_TIMEOUT:?}"))
        .and_then(|ping| ping.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach the Docker daemon: {hint}"))?;
    Ok(docker)
}

/// How a pull ended, as the daemon reported it.
#[derive(Debug, Clone, Default)]
pub struct PullOutcome {
    /// Wall time from the request to the end of the daemon's progress stream.
    pub elapsed: Duration,
    /// The daemon's error text exactly as it sent it, `None` if the pull succeeded.
    pub error: Option<String>,
    /// Progress lines (`"ID: status"`, or just the status when it has no id) other than
    /// byte counters, in order: e.g. `"abc123: Retrying in 5 seconds"`.
    pub statuses: Vec<String>,
}

impl PullOutcome {
    /// The error text, or a panic that shows the statuses if the pull succeeded.
    pub fn expect_err(&self) -> &str {
        self.error.as_deref().unwrap_or_else(|| {
            panic!(
                "expected the pull to fail, it succeeded in {:?}: {:?}",
                self.elapsed, self.statuses
            )
        })
    }

    /// Number of progress lines containing `needle`.
    pub fn count_status(&self, needle: &str) -> usize {
        self.statuses.iter().filter(|s| s.contains(needle)).count()
    }
}

/// Pulls `reference` (`host/repo:tag`) and reports how it went; an error only if the pull
/// did not finish within `timeout` or the daemon could not be asked.
pub async fn pull(
    docker: &Docker,
    reference: &str,
    timeout: Duration,
) -> anyhow::Result<PullOutcome> {
    let options = CreateImageOptionsBuilder::new()
        .from_image(reference)
        .build();
    let started = Instant::now();
    let mut outcome = PullOutcome::default();
    let mut stream = docker.create_image(Some(options), None, None);
    let drain = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    let status = info.status.unwrap_or_default();
                    if !matches!(status.as_str(), "Downloading" | "Extracting" | "") {
                        outcome.statuses.push(match info.id {
                            Some(id) if !id.is_empty() => format!("{id}: {status}"),
                            _ => status,
                        });
                    }
                }
                Err(err) => {
                    outcome.error = Some(daemon_message(err));
                    break;
                }
            }
        }
    };
    tokio::time::timeout(timeout, drain)
        .await
        .map_err(|_| anyhow!("pulling {reference} did not finish within {timeout:?}"))?;
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// The daemon's own words from a bollard error: the stream error or the server's message.
pub fn daemon_message(err: DockerError) -> String {
    match err {
        DockerError::DockerStreamError { error } => error,
        DockerError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

/// Removes the image named `reference` (a tag this test created). A missing image is fine.
pub async fn remove_image(docker: &Docker, reference: &str) -> anyhow::Result<()> {
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    match docker.remove_image(reference, Some(options), None).await {
        Ok(_)
        | Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("while removing image {reference}")),
    }
}

/// What a container printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub exit_code: i64,
    /// Standard output and standard error, interleaved as the daemon logged them.
    pub output: String,
}

/// Runs `cmd` in a new container from `image`, waits up to `timeout` for it to exit, and
/// removes the container again (also when the wait fails).
pub async fn run(
    docker: &Docker,
    image: &str,
    cmd: &[&str],
    timeout: Duration,
) -> anyhow::Result<RunOutput> {
    let name = crate::unique_name("testbed-run");
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("while creating a container from {image}"))?;
    let result = tokio::time::timeout(timeout, run_created(docker, &name))
        .await
        .map_err(|_| anyhow!("container {name} from {image} did not exit within {timeout:?}"))
        .and_then(|r| r);
    let remove = RemoveContainerOptionsBuilder::new().force(true).build();
    let removed = docker.remove_container(&name, Some(remove)).await;
    let output = result.with_context(|| format!("while running {cmd:?} in {image}"))?;
    removed.with_context(|| format!("while removing container {name}"))?;
    Ok(output)
}

async fn run_created(docker: &Docker, name: &str) -> anyhow::Result<RunOutput> {
    docker.start_container(name, None).await?;
    let mut exit_code = None;
    let mut wait = docker.wait_container(name, None);
    while let Some(item) = wait.next().await {
        match item {
            Ok(resp) => exit_code = Some(resp.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Err(DockerError::DockerContainerWaitError { code, .. }) => exit_code = Some(code),
            Err(err) => return Err(err.into()),
        }
    }
    let logs = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
    let mut output = String::new();
    let mut stream = docker.logs(name, Some(logs));
    while let Some(chunk) = stream.next().await {
        output.push_str(&chunk?.to_string());
    }
    Ok(RunOutput {
        exit_code: exit_code.context("the daemon reported no exit code")?,
        output,
    })
}
