//! [`ContextError`]: why a build context could not be archived, with the path and the fix.

use std::io;
use std::path::PathBuf;

use super::patterns::PatternReason;

/// Why a build context could not be archived. Every variant names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "build context {} does not exist: create it or fix the service's `context`",
        path.display()
    )]
    MissingContextDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "build context {} is not a directory: point the service's `context` at a directory",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error("cannot use Dockerfile {}: {source}; fix the service's `dockerfile`", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot read {} for the build context: {source}; make it readable, or exclude it in .dockerignore",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}:{line}: bad pattern `{pattern}`: {reason}; fix or remove that line",
        file.display()
    )]
    BadPattern {
        /// The ignore file.
        file: PathBuf,
        /// 1-based line in that file.
        line: usize,
        /// The pattern as cleaned by `ReadAll` (what docker matches with).
        pattern: String,
        reason: PatternReason,
    },
    #[error("cannot add {} to the build context archive: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
