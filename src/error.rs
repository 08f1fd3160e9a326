//! Errors that reach the user, and the exit codes they map to.
//!
//! Every error says what failed, with which input, and what to do next (`help()`).

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

/// An error that ends the command: one enum for the whole crate, rendered in one place
/// ([`crate::ui::Ui::error`]). Each variant knows its exit code ([`Error::exit`]) and what the
/// user can do next ([`Error::help`]); module errors come in through `#[from]` and keep what
/// a caller must decide on inspectable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker daemon cannot be reached, or answered an error.
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
    /// Bad flags or flag combinations.
    #[error("{what}: {reason}")]
    Usage { what: String, reason: String },
    /// Something the environment lacks (a tool, a writable directory).
    #[error("{what}: {reason}")]
    Environment { what: String, reason: String },
    /// Bad input: a config file, a Dockerfile, a reference. Names the input and the fix.
    #[error("{input}: {reason}")]
    Input { input: String, reason: String },
    /// The build backend asked for cannot build here.
    #[error("{0}")]
    Backend(#[from] crate::build::backend::BackendError),
    /// The JSON report could not be written.
    #[error("{0}")]
    Publish(#[from] crate::report::publish::PublishError),
    /// A `--cache-key-prefix` (the action's `cache-key-prefix`) the Actions cache would refuse.
    #[error("--cache-key-prefix (INPUT_CACHE_KEY_PREFIX): {0}")]
    CacheKeyPrefix(#[from] crate::cache::KeyPrefixError),
}

impl Error {
    pub fn exit(&self) -> Exit {
        use crate::build::backend::BackendError;
        match self {
            Error::Usage { .. } | Error::Input { .. } | Error::Publish(_) => Exit::Usage,
            Error::CacheKeyPrefix(_) => Exit::Usage,
            Error::Backend(BackendError::NoSuchBuilder { .. }) => Exit::Usage,
            Error::Backend(_) => Exit::Environment,
            Error::Engine(_) | Error::Environment { .. } => Exit::Environment,
        }
    }

    /// What the user can do about it, shown after the error. `None` where the message itself
    /// already says it: an unreachable daemon (start dockerd or set DOCKER_HOST), input errors
    /// and environment errors (their reason names the input and the fix).
    pub fn help(&self) -> Option<String> {
        match self {
            Error::Engine(crate::engine::EngineError::Unreachable { .. })
            | Error::Input { .. }
            | Error::Environment { .. } => None,
            Error::Engine(crate::engine::EngineError::Api { .. }) => Some(
                "`ai-infra-build doctor` shows what the daemon and each registry answer".into(),
            ),
            Error::Usage { .. } => Some("see `ai-infra-build --help`".into()),
            Error::Backend(e) => Some(e.help().into()),
            Error::Publish(_) => {
                Some("check that the output directory (--out-dir) is writable".into())
            }
            Error::CacheKeyPrefix(_) => Some(
                "set the action's `cache-key-prefix` (or --cache-key-prefix) to letters, digits, \
                 '-', '_' or '.', under 200 characters, or leave it empty"
                    .into(),
            ),
        }
    }
}

impl From<crate::project::InputError> for Error {
    fn from(e: crate::project::InputError) -> Error {
        Error::Input {
            input: e.input,
            reason: e.reason,
        }
    }
}
