//! Build contexts exactly as `docker build` sends them to the Engine API.
//!
//! [`context_tar`] walks a context directory and returns the uncompressed tar that the
//! docker CLI would upload to `POST /build`, plus the value of its `dockerfile` parameter.
//! Which files go in follows the upstream code step by step:
//!
//! 1. **Which ignore file** (BuildKit `frontend/dockerui/config.go`): `<Dockerfile>.dockerignore`
//!    next to the Dockerfile, when it exists, wins over the context's `.dockerignore`
//!    (see [`ignore_file_for`]).
//! 2. **Reading it** (`moby/buildkit` `frontend/dockerfile/dockerignore/dockerignore.go`
//!    `ReadAll`, now `moby/patternmatcher` `ignorefile`): UTF-8 BOM stripped, lines starting
//!    with `#` skipped, whitespace trimmed, blank lines skipped, `!` exceptions, each pattern
//!    `filepath.Clean`ed and one leading `/` removed (see [`read_ignore_patterns`]).
//! 3. **Matching** (`moby/patternmatcher` `patternmatcher.go`): [`PatternMatcher`] ports
//!    `New`, `MatchesOrParentMatches`, `MatchesExact` and `MatchesUsingParentResults`, with the
//!    `filepath.Match` syntax check and the pattern compiler (exact / prefix / suffix / regexp,
//!    `**`, `*`, `?`, `[...]`, `\` escapes). The regexp that compiler writes is run with the
//!    same meaning Go's `regexp` gives it (RE2 syntax, Perl flags), by a small Pike VM
//!    (`goregexp`), so even upstream's odd corners (`[*]`, `[[:alpha:]]`) behave as in docker.
//! 4. **The Dockerfile and `.dockerignore` are always sent** (docker/cli
//!    `cli/command/image/build/dockerignore.go` `TrimBuildFilesFromExcludes`).
//! 5. **Walking** (`moby/go-archive` `archive.go` `Tarballer.Do`, i.e. `TarWithOptions`):
//!    lexical order, the context root itself not archived, `MatchesUsingParentResults` with
//!    the parent directory's results, an excluded directory skipped whole unless an exception
//!    pattern's text starts with `<dir>/` (then it is walked but gets no entry of its own),
//!    symlinks stored as symlinks, hard links as `TypeLink` to the first name seen, sockets
//!    skipped, uid/gid 0 (the CLI's `ChownOpts`), mode and mtime (seconds) kept.
//! 6. **A Dockerfile outside the context** (docker/cli `context.go`
//!    `AddDockerfileToBuildContext`): added as `.dockerfile.<20 hex>` at the end of the
//!    archive, and that name appended to `.dockerignore` (created if missing) so the daemon
//!    drops it from what `COPY` sees.
//!
//! Deliberate differences, each safer or more predictable than upstream:
//!
//! - A pattern upstream accepts at `New` but whose regexp fails later (`[z-a]`,
//!   `[Local-Only]`) is rejected when the ignore file is read, with its line, instead of
//!   failing (or, in `TarWithOptions`, silently truncating the archive) mid-walk.
//! - Step 4 is done by path, not by appending `!<name>` patterns chosen with upstream's
//!   deprecated `Matches` (which checks one parent only, so `**/sub` excluding
//!   `a/b/sub/Dockerfile` was not re-included, and names with `[` or `*` were read as globs).
//!   The resulting entries are the same wherever upstream works.
//! - The added Dockerfile's name is derived from a SHA-256 of its content, not random, so
//!   the archive is reproducible.
//! - Not ported: the `security.capability` xattr (PAX record), Go regexp's `\p{…}` Unicode
//!   classes (rejected as a bad pattern), bufio's 64 KiB line limit, and the deprecated
//!   `Matches`/`MatchesUsingParentResult`. Non-UTF-8 file names are matched by their lossy
//!   UTF-8 form (their tar names keep the real bytes).
//!
//! The archive is built in memory: contexts of a multi-service repository are small once
//! the ignore file applies, the Engine API body needs the whole thing anyway, and a `Vec`
//! keeps this function free of temp-file cleanup. [`ContextArchive::size`] lets a caller
//! warn about a context that is large.

mod archive;
mod error;
mod goregexp;
mod ignorefile;
mod patterns;
pub mod stream;
#[cfg(test)]
mod tests;
mod walk;

pub use archive::{ContextArchive, ContextStats};
pub use error::ContextError;
pub use goregexp::RegexError;
pub use ignorefile::{IgnorePattern, read_ignore_patterns};
pub use patterns::{MatchInfo, Pattern, PatternError, PatternMatcher, PatternReason};

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use archive::{Archive, OutsideDockerfile, mtime_secs};
use walk::walk;

/// The name of a context's ignore file.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// Archives `context_dir` as docker would send it to build `dockerfile`, in memory (for
/// tests and small contexts; builds stream it: [`prepare_context`]).
///
/// `dockerfile` is a path (absolute, or relative to the working directory like
/// `docker build -f`); it may lie outside the context. Symlinks in both paths are resolved
/// first, as the docker CLI does.
pub fn context_tar(context_dir: &Path, dockerfile: &Path) -> Result<ContextArchive, ContextError> {
    let prepared = prepare_context(context_dir, dockerfile)?;
    let dockerfile_in_context = prepared.dockerfile_in_context.clone();
    let (bytes, stats) = prepared.write_to(Vec::new())?;
    Ok(ContextArchive {
        bytes,
        dockerfile_in_context,
        files: stats.files,
        size: stats.size,
    })
}

/// A build context checked (directory, Dockerfile, ignore file) and ready to be written as
/// the tar docker would send, to any writer: nothing of it is held in memory but the
/// Dockerfile when it lies outside the context.
pub struct PreparedContext {
    root: PathBuf,
    matcher: PatternMatcher,
    /// Names that go in whatever the ignore file says (TrimBuildFilesFromExcludes).
    forced: Vec<String>,
    outside: Option<OutsideDockerfile>,
    dockerfile_in_context: String,
}

impl std::fmt::Debug for PreparedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedContext")
            .field("root", &self.root)
            .field("dockerfile_in_context", &self.dockerfile_in_context)
            .finish_non_exhaustive()
    }
}

/// Checks `context_dir` and `dockerfile` as [`context_tar`] does, without archiving yet.
pub fn prepare_context(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<PreparedContext, ContextError> {
    let root = resolve_context(context_dir)?;
    let dockerfile_err = |source| ContextError::Dockerfile {
        path: dockerfile.to_path_buf(),
        source,
    };
    let dockerfile_real = fs::canonicalize(dockerfile).map_err(dockerfile_err)?;
    let dockerfile_meta = fs::metadata(&dockerfile_real).map_err(dockerfile_err)?;
    if dockerfile_meta.is_dir() {
        return Err(dockerfile_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a directory, not a file",
        )));
    }

    let matcher = match ignore_file_for(&root, dockerfile) {
        Some(path) => load_matcher(&path)?,
        None => PatternMatcher::default(),
    };

    // TrimBuildFilesFromExcludes: .dockerignore and the Dockerfile always go in.
    let mut forced = vec![DOCKERIGNORE.to_string()];
    let inside = dockerfile_real
        .strip_prefix(&root)
        .ok()
        .and_then(relative_to_slash);
    let outside = match &inside {
        Some(rel) => {
            forced.push(rel.clone());
            None
        }
        None => {
            let content =
                fs::read(&dockerfile_real).map_err(|source| ContextError::Unreadable {
                    path: dockerfile_real.clone(),
                    source,
                })?;
            let digest = Sha256::digest(&content);
            let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
            Some(OutsideDockerfile {
                name: format!(".dockerfile.{hex}"),
                content,
                mtime: mtime_secs(&dockerfile_meta),
                dockerignore_written: false,
            })
        }
    };

    let dockerfile_in_context = match &outside {
        Some(df) => df.name.clone(),
        None => inside.unwrap_or_default(),
    };
    Ok(PreparedContext {
        root,
        matcher,
        forced,
        outside,
        dockerfile_in_context,
    })
}

impl PreparedContext {
    /// The value for the API's `dockerfile` parameter: the Dockerfile's path inside the
    /// context (`/`-separated), or `.dockerfile.<hex>` when it lies outside the context.
    pub fn dockerfile_in_context(&self) -> &str {
        &self.dockerfile_in_context
    }

    /// Writes the archive to `out` as it walks the context, and hands `out` back.
    pub fn write_to<W: io::Write>(self, out: W) -> Result<(W, ContextStats), ContextError> {
        let mut archive = Archive::new(out, self.outside);
        walk(&self.root, &self.matcher, &self.forced, &mut archive)?;
        if let Some(df) = archive.outside.take() {
            archive.add_generated(&df.name, &df.content, df.mtime)?;
            if !df.dockerignore_written {
                let content = format!("{DOCKERIGNORE}\n{}\n", df.name);
                archive.add_generated(DOCKERIGNORE, content.as_bytes(), df.mtime)?;
            }
        }
        archive.finish()
    }
}

/// The ignore file that applies to a build of `dockerfile` in `context_dir`: the
/// Dockerfile's own `<Dockerfile>.dockerignore` (next to the Dockerfile path as given, like
/// buildx, which mounts the `-f` directory) if it exists, else the context's
/// `.dockerignore` if it exists.
pub fn ignore_file_for(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    let mut specific: OsString = dockerfile.as_os_str().to_owned();
    specific.push(DOCKERIGNORE);
    let specific = PathBuf::from(specific);
    if specific.is_file() {
        return Some(specific);
    }
    let general = context_dir.join(DOCKERIGNORE);
    general.exists().then_some(general)
}

fn resolve_context(context_dir: &Path) -> Result<PathBuf, ContextError> {
    let root = fs::canonicalize(context_dir).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ContextError::MissingContextDir {
                path: context_dir.to_path_buf(),
                source,
            }
        } else {
            ContextError::Unreadable {
                path: context_dir.to_path_buf(),
                source,
            }
        }
    })?;
    if !root.is_dir() {
        return Err(ContextError::NotADirectory {
            path: context_dir.to_path_buf(),
        });
    }
    Ok(root)
}

fn load_matcher(path: &Path) -> Result<PatternMatcher, ContextError> {
    let content = match fs::read(path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PatternMatcher::default()),
        Err(source) => {
            return Err(ContextError::Unreadable {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let lines = read_ignore_patterns(&content);
    let patterns: Vec<&str> = lines.iter().map(|l| l.pattern.as_str()).collect();
    PatternMatcher::new(&patterns).map_err(|e| ContextError::BadPattern {
        file: path.to_path_buf(),
        line: lines.get(e.index).map_or(0, |l| l.line),
        pattern: e.pattern,
        reason: e.reason,
    })
}

/// `rel` with `/` separators, if it is non-empty valid UTF-8.
fn relative_to_slash(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let joined = parts?.join("/");
    (!joined.is_empty()).then_some(joined)
}
