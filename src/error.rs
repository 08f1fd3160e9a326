//! Errors that reach the user, and the exit codes they map to.
//!
//! Every error says what failed, with which input, and what to do next (`help()`).

use std::fmt;

/// The documented exit codes of `ai-infra-build` (also listed in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for succeeded.
    Success,
    /// At least one service failed to build (the others' results are still reported).
    BuildFailed,
    /// Bad usage or bad input: flags, config file, Dockerfiles, references. Nothing was done.
    Usage,
    /// The environment is not usable: the Docker daemon cannot be reached, a tool is missing.
    Environment,
    /// Some base images could not be had (prefetch), or a required registry has no healthy source.
    ImagesMissing,
    /// Interrupted by SIGINT.
    Interrupted,
    /// Terminated by SIGTERM.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::BuildFailed => 1,
            Exit::Usage => 2,
            Exit::Environment => 3,
            Exit::ImagesMissing => 4,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

/// An error that ends the command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the Docker daemon at {host} ({reason}): start dockerd or set DOCKER_HOST to a running daemon"
    )]
    DockerUnreachable { host: String, reason: String },
    #[error("the Docker daemon at {host} answered an error: {source}")]
    Docker {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{what}: {reason}")]
    Usage { what: String, reason: String },
    /// Something the environment lacks (a tool, a writable directory).
    #[error("{what}: {reason}")]
    Environment { what: String, reason: String },
    /// Bad input: a config file, a Dockerfile, a reference. Names the input and the fix.
    #[error("{input}: {reason}")]
    Input { input: String, reason: String },
    /// A `--cache-key-prefix` (the action's `cache-key-prefix`) the Actions cache would refuse.
    #[error("--cache-key-prefix (INPUT_CACHE_KEY_PREFIX): {0}")]
    CacheKeyPrefix(#[from] crate::cache::KeyPrefixError),
    /// A `--shard` (`INPUT_SHARD`) that is not `I/N`.
    #[error("{0}")]
    Shard(#[from] crate::matrix::ShardSpecError),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage { .. } | Error::Input { .. } => Exit::Usage,
            Error::CacheKeyPrefix(_) | Error::Shard(_) => Exit::Usage,
            Error::DockerUnreachable { .. } | Error::Docker { .. } | Error::Environment { .. } => {
                Exit::Environment
            }
        }
    }

    /// What the user can do about it, shown after the error.
    pub fn help(&self) -> Option<String> {
        match self {
            Error::DockerUnreachable { .. } | Error::Docker { .. } => None,
            Error::Usage { .. } => Some("see `ai-infra-build --help`".to_string()),
            Error::Input { .. } | Error::Environment { .. } => None,
            Error::CacheKeyPrefix(_) => Some(
                "set the action's `cache-key-prefix` (or --cache-key-prefix) to letters, digits, \
                 '-', '_' or '.', under 200 characters, or leave it empty"
                    .to_string(),
            ),
            Error::Shard(_) => Some(
                "give --shard as I/N with 1 <= I <= N, as `plan --matrix` prints it (e.g. --shard 2/3)"
                    .to_string(),
            ),
        }
    }
}

/// Formats an error chain on one line: "outer: inner: innermost".
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            let text = err.to_string();
            if !self.0.to_string().contains(&text) {
                write!(f, ": {text}")?;
            }
            source = err.source();
        }
        Ok(())
    }
}
