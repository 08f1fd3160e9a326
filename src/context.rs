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
//!    same meaning Go's `regexp` gives it (RE2 syntax, Perl flags), by a small Pike VM in
//!    this file, so even upstream's odd corners (`[*]`, `[[:alpha:]]`) behave as in docker.
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

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The name of a context's ignore file.
pub const DOCKERIGNORE: &str = ".dockerignore";

// ---------------------------------------------------------------------------------------------
// The archive
// ---------------------------------------------------------------------------------------------

/// A build context ready for the Engine API `POST /build`.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextArchive {
    /// The uncompressed tar: the request body.
    pub bytes: Vec<u8>,
    /// The value for the API's `dockerfile` parameter: the Dockerfile's path inside the
    /// context (`/`-separated), or `.dockerfile.<hex>` when it lies outside the context.
    pub dockerfile_in_context: String,
    /// Entries that are not directories (files, symlinks, hard links, devices).
    pub files: usize,
    /// Bytes of file content in the archive (headers and padding not counted).
    pub size: u64,
}

impl fmt::Debug for ContextArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextArchive")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("dockerfile_in_context", &self.dockerfile_in_context)
            .field("files", &self.files)
            .field("size", &self.size)
            .finish()
    }
}

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
        reason: String,
    },
    #[error("cannot add {} to the build context archive: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Archives `context_dir` as docker would send it to build `dockerfile`.
///
/// `dockerfile` is a path (absolute, or relative to the working directory like
/// `docker build -f`); it may lie outside the context. Symlinks in both paths are resolved
/// first, as the docker CLI does.
pub fn context_tar(context_dir: &Path, dockerfile: &Path) -> Result<ContextArchive, ContextError> {
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

    let mut archive = Archive::new(outside);
    walk(&root, &matcher, &forced, &mut archive)?;
    let dockerfile_in_context = match archive.outside.take() {
        Some(df) => {
            archive.add_generated(&df.name, &df.content, df.mtime)?;
            if !df.dockerignore_written {
                let content = format!("{DOCKERIGNORE}\n{}\n", df.name);
                archive.add_generated(DOCKERIGNORE, content.as_bytes(), df.mtime)?;
            }
            df.name
        }
        None => inside.unwrap_or_default(),
    };
    archive.finish(dockerfile_in_context)
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

struct OutsideDockerfile {
    name: String,
    content: Vec<u8>,
    mtime: u64,
    /// Whether the context's `.dockerignore` was met (and amended) during the walk.
    dockerignore_written: bool,
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

/// One directory being walked: its remaining entries, sorted.
struct Frame {
    abs: PathBuf,
    rel: PathBuf,
    rel_match: String,
    info: MatchInfo,
    names: std::vec::IntoIter<OsString>,
}

impl Frame {
    fn open(
        abs: PathBuf,
        rel: PathBuf,
        rel_match: String,
        info: MatchInfo,
    ) -> Result<Frame, ContextError> {
        let unreadable = |source| ContextError::Unreadable {
            path: abs.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&abs).map_err(unreadable)? {
            names.push(entry.map_err(unreadable)?.file_name());
        }
        // filepath.WalkDir: lexical order of the names' bytes.
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        Ok(Frame {
            abs,
            rel,
            rel_match,
            info,
            names: names.into_iter(),
        })
    }
}

/// The walk of `Tarballer.Do` (moby/go-archive archive.go), without recursion.
fn walk(
    root: &Path,
    matcher: &PatternMatcher,
    forced: &[String],
    archive: &mut Archive,
) -> Result<(), ContextError> {
    let mut stack = vec![Frame::open(
        root.to_path_buf(),
        PathBuf::new(),
        String::new(),
        MatchInfo::default(),
    )?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let abs = frame.abs.join(&name);
        let rel = frame.rel.join(&name);
        let name_lossy = name.to_string_lossy();
        let rel_match = if frame.rel_match.is_empty() {
            name_lossy.into_owned()
        } else {
            format!("{}/{name_lossy}", frame.rel_match)
        };
        let meta = fs::symlink_metadata(&abs).map_err(|source| ContextError::Unreadable {
            path: abs.clone(),
            source,
        })?;
        let is_dir = meta.is_dir();

        let (mut skip, info) = matcher.matches_using_parent_results(&rel_match, &frame.info);
        if forced.contains(&rel_match) {
            skip = false;
        }
        if skip {
            // An excluded directory is walked (without an entry of its own) only when an
            // exception, or a file that must be sent, lies beneath it.
            if !is_dir || !must_descend(matcher, forced, &rel_match) {
                continue;
            }
        } else {
            archive.add(&abs, &rel, &rel_match, &meta)?;
            if !is_dir {
                continue;
            }
        }
        stack.push(Frame::open(abs, rel, rel_match, info)?);
    }
    Ok(())
}

fn must_descend(matcher: &PatternMatcher, forced: &[String], dir: &str) -> bool {
    let dir_slash = format!("{dir}/");
    let exception_beneath = matcher.exclusions()
        && matcher
            .patterns()
            .iter()
            .filter(|p| p.is_exclusion())
            .any(|p| format!("{}/", p.as_str()).starts_with(&dir_slash));
    exception_beneath
        || forced
            .iter()
            .any(|f| format!("{f}/").starts_with(&dir_slash))
}

/// The tar being written, and what has been counted.
struct Archive {
    builder: tar::Builder<Vec<u8>>,
    files: usize,
    size: u64,
    /// First archived name of each (device, inode) with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    outside: Option<OutsideDockerfile>,
}

impl Archive {
    fn new(outside: Option<OutsideDockerfile>) -> Archive {
        Archive {
            builder: tar::Builder::new(Vec::new()),
            files: 0,
            size: 0,
            links: HashMap::new(),
            outside,
        }
    }

    fn header(entry_type: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header
    }

    /// addTarFile: one walked path.
    fn add(
        &mut self,
        abs: &Path,
        rel: &Path,
        rel_match: &str,
        meta: &fs::Metadata,
    ) -> Result<(), ContextError> {
        let write_err = |source| ContextError::Archive {
            path: abs.to_path_buf(),
            source,
        };
        let unreadable = |source| ContextError::Unreadable {
            path: abs.to_path_buf(),
            source,
        };
        let file_type = meta.file_type();
        let mode = mode_bits(meta);
        let mtime = mtime_secs(meta);

        if file_type.is_dir() {
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            let mut header = Self::header(tar::EntryType::Directory, mode, mtime);
            return self
                .builder
                .append_data(&mut header, PathBuf::from(name), io::empty())
                .map_err(write_err);
        }

        if rel_match == DOCKERIGNORE && self.amend_dockerignore(abs, rel)? {
            return Ok(());
        }

        if let Some(key) = hardlink_key(meta) {
            if let Some(first) = self.links.get(&key) {
                let mut header = Self::header(tar::EntryType::Link, mode, mtime);
                self.builder
                    .append_link(&mut header, rel, first)
                    .map_err(write_err)?;
                self.files += 1;
                return Ok(());
            }
            self.links.insert(key, rel.to_path_buf());
        }

        if file_type.is_symlink() {
            let target = fs::read_link(abs).map_err(unreadable)?;
            let mut header = Self::header(tar::EntryType::Symlink, mode, mtime);
            self.builder
                .append_link(&mut header, rel, target)
                .map_err(write_err)?;
        } else if file_type.is_file() {
            // Read whole, so the header's size is the size of what is written even if the
            // file changes meanwhile.
            let data = fs::read(abs).map_err(unreadable)?;
            let mut header = Self::header(tar::EntryType::Regular, mode, mtime);
            header.set_size(data.len() as u64);
            self.builder
                .append_data(&mut header, rel, data.as_slice())
                .map_err(write_err)?;
            self.size += data.len() as u64;
        } else {
            let Some(mut header) = special_header(meta, mode, mtime) else {
                // Sockets: archive/tar refuses them and moby skips them.
                return Ok(());
            };
            self.builder
                .append_data(&mut header, rel, io::empty())
                .map_err(write_err)?;
        }
        self.files += 1;
        Ok(())
    }

    /// With a Dockerfile outside the context, writes `.dockerignore` with the Dockerfile's
    /// name appended (ReplaceFileTarWrapper in AddDockerfileToBuildContext). False if there
    /// is nothing to amend or it cannot be read as a file (then it is archived as it is).
    fn amend_dockerignore(&mut self, abs: &Path, rel: &Path) -> Result<bool, ContextError> {
        let Some(outside) = self.outside.as_mut() else {
            return Ok(false);
        };
        outside.dockerignore_written = true;
        let (Ok(meta), Ok(mut content)) = (fs::metadata(abs), fs::read(abs)) else {
            return Ok(false);
        };
        content.extend_from_slice(format!("\n{}\n", outside.name).as_bytes());
        let mut header = Self::header(tar::EntryType::Regular, mode_bits(&meta), mtime_secs(&meta));
        header.set_size(content.len() as u64);
        self.builder
            .append_data(&mut header, rel, content.as_slice())
            .map_err(|source| ContextError::Archive {
                path: abs.to_path_buf(),
                source,
            })?;
        self.files += 1;
        self.size += content.len() as u64;
        Ok(true)
    }

    /// A file that is not on disk in the context (the outside Dockerfile, a new .dockerignore).
    fn add_generated(
        &mut self,
        name: &str,
        content: &[u8],
        mtime: u64,
    ) -> Result<(), ContextError> {
        let mut header = Self::header(tar::EntryType::Regular, 0o600, mtime);
        header.set_size(content.len() as u64);
        self.builder
            .append_data(&mut header, name, content)
            .map_err(|source| ContextError::Archive {
                path: PathBuf::from(name),
                source,
            })?;
        self.files += 1;
        self.size += content.len() as u64;
        Ok(())
    }

    fn finish(self, dockerfile_in_context: String) -> Result<ContextArchive, ContextError> {
        let bytes = self
            .builder
            .into_inner()
            .map_err(|source| ContextError::Archive {
                path: PathBuf::from("(end of archive)"),
                source,
            })?;
        Ok(ContextArchive {
            bytes,
            dockerfile_in_context,
            files: self.files,
            size: self.size,
        })
    }
}

fn mtime_secs(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        u64::try_from(meta.mtime()).unwrap_or(0)
    }
    #[cfg(not(unix))]
    {
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }
}

/// Permission bits plus setuid/setgid/sticky, as archive/tar's FileInfoHeader keeps them.
fn mode_bits(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        // chmodTarEntry on Windows: everything 0755.
        let _ = meta;
        0o755
    }
}

fn hardlink_key(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (!meta.is_dir() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Header for a FIFO or device node; `None` for anything else (sockets).
fn special_header(meta: &fs::Metadata, mode: u32, mtime: u64) -> Option<tar::Header> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let file_type = meta.file_type();
        let entry_type = if file_type.is_fifo() {
            tar::EntryType::Fifo
        } else if file_type.is_char_device() {
            tar::EntryType::Char
        } else if file_type.is_block_device() {
            tar::EntryType::Block
        } else {
            return None;
        };
        let mut header = Archive::header(entry_type, mode, mtime);
        if entry_type != tar::EntryType::Fifo {
            // Linux's dev_t encoding (glibc major()/minor()).
            let dev = meta.rdev();
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
            let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
            header
                .set_device_major(u32::try_from(major).unwrap_or(0))
                .ok()?;
            header
                .set_device_minor(u32::try_from(minor).unwrap_or(0))
                .ok()?;
        }
        Some(header)
    }
    #[cfg(not(unix))]
    {
        let _ = (meta, mode, mtime);
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The ignore file (buildkit dockerignore.ReadAll)
// ---------------------------------------------------------------------------------------------

/// One pattern of an ignore file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    /// 1-based line it was read from.
    pub line: usize,
    /// The pattern as `ReadAll` returns it: trimmed, cleaned, leading `/` removed, `!` kept.
    pub pattern: String,
}

/// Reads an ignore file's patterns, as `dockerignore.ReadAll` does. Never fails: a bad
/// pattern is reported by [`PatternMatcher::new`]. Invalid UTF-8 is read lossily.
pub fn read_ignore_patterns(content: &[u8]) -> Vec<IgnorePattern> {
    let mut lines: Vec<&[u8]> = content.split(|b| *b == b'\n').collect();
    if content.is_empty() || content.ends_with(b"\n") {
        lines.pop();
    }
    let mut patterns = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        // bufio.ScanLines drops one trailing \r.
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if index == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let text = String::from_utf8_lossy(line);
        // Comments are recognised before trimming: "  # x" is a pattern.
        if text.starts_with('#') {
            continue;
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (invert, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let mut pattern = String::new();
        if !rest.is_empty() {
            let cleaned = clean(rest);
            pattern = match cleaned.strip_prefix('/') {
                Some(stripped) if cleaned.len() > 1 => stripped.to_string(),
                _ => cleaned,
            };
        }
        if invert {
            pattern.insert(0, '!');
        }
        patterns.push(IgnorePattern {
            line: index + 1,
            pattern,
        });
    }
    patterns
}

/// Go's `path.Clean` (what `filepath.Clean` does on Unix).
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Go's `filepath.Dir` on Unix.
fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(path.get(..=i).unwrap_or(path)),
        None => ".".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The matcher (moby/patternmatcher patternmatcher.go)
// ---------------------------------------------------------------------------------------------

/// A pattern that cannot be used, with its index in the list given to [`PatternMatcher::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {index} `{pattern}`: {reason}")]
pub struct PatternError {
    pub index: usize,
    pub pattern: String,
    pub reason: String,
}

/// Paths checked against `.dockerignore` patterns: later patterns override earlier ones,
/// `!` patterns re-include. Paths are relative to the context root, `/`-separated.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
}

#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Regexp(goregexp::Regex),
}

/// What matching a directory found, handed to its children by
/// [`PatternMatcher::matches_using_parent_results`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> bool {
        let cleaned = self.cleaned.as_bytes();
        let path_bytes = path.as_bytes();
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            // strip trailing **
            MatchKind::Prefix => cleaned
                .get(..cleaned.len().saturating_sub(2))
                .is_some_and(|prefix| path_bytes.starts_with(prefix)),
            // strip leading **; "**/foo" also matches "foo"
            MatchKind::Suffix => {
                let suffix = cleaned.get(2..).unwrap_or_default();
                path_bytes.ends_with(suffix)
                    || (suffix.first() == Some(&b'/') && suffix.get(1..) == Some(path_bytes))
            }
            MatchKind::Regexp(re) => re.is_match(path),
        }
    }
}

impl PatternMatcher {
    /// `patternmatcher.New`: trims and cleans each pattern, skips empty ones, reads a leading
    /// `!` as an exception, and checks the syntax. Unlike upstream, the pattern's regexp is
    /// built here too, so a bad one is reported now rather than at the first match.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, PatternError> {
        let mut matcher = PatternMatcher::default();
        for (index, raw) in patterns.iter().enumerate() {
            let raw = raw.as_ref();
            let bad = |reason: String| PatternError {
                index,
                pattern: raw.to_string(),
                reason,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut cleaned = clean(trimmed);
            let exclusion = cleaned.starts_with('!');
            if exclusion {
                if cleaned.len() == 1 {
                    return Err(bad("illegal exclusion pattern: \"!\"".to_string()));
                }
                cleaned.remove(0);
                matcher.exclusions = true;
            }
            if !glob_syntax_ok(cleaned.as_bytes()) {
                return Err(bad("syntax error in pattern".to_string()));
            }
            let kind =
                compile(&cleaned).map_err(|e| bad(format!("syntax error in pattern ({e})")))?;
            matcher.patterns.push(Pattern {
                cleaned,
                exclusion,
                kind,
            });
        }
        Ok(matcher)
    }

    /// Whether any pattern is a `!` exception.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// `MatchesExact`: whether `file` itself is excluded; parents are not considered.
    pub fn matches_exact(&self, file: &str) -> bool {
        let mut matched = false;
        for pattern in &self.patterns {
            // Skip an inclusion once matched, and an exception until matched.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// `MatchesOrParentMatches`: whether `file` is excluded, a pattern matching one of its
    /// parent directories counting as matching `file`.
    pub fn matches_or_parent_matches(&self, file: &str) -> bool {
        let parent = dir(file);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file) || (parent != "." && matches_a_parent(pattern, &parent)) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// `MatchesUsingParentResults`: like [`Self::matches_or_parent_matches`], but a pattern
    /// that matched the parent directory (per `parent`, from this call on the parent) counts
    /// as matched without being evaluated again. With `MatchInfo::default()` the parents are
    /// checked by name. A `parent` from another matcher is treated as the default (upstream
    /// returns an error).
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let parent_matched: &[bool] = if parent.parent_matched.len() == self.patterns.len() {
            &parent.parent_matched
        } else {
            &[]
        };
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(file);
                if !hit && parent_matched.is_empty() {
                    let parent = dir(file);
                    hit = parent != "." && matches_a_parent(pattern, &parent);
                }
            }
            if let Some(slot) = info.parent_matched.get_mut(i) {
                *slot = hit;
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        (matched, info)
    }
}

/// Whether `pattern` matches `parent` or one of its ancestors ("a", "a/b", "a/b/c").
fn matches_a_parent(pattern: &Pattern, parent: &str) -> bool {
    parent
        .match_indices('/')
        .map(|(i, _)| parent.get(..i).unwrap_or_default())
        .chain(std::iter::once(parent))
        .any(|prefix| pattern.matches(prefix))
}

/// The error check of Go's `filepath.Match(pattern, ".")` on Unix: every chunk between
/// stars must be well formed (classes closed and non-empty, ranges complete, no trailing `\`).
fn glob_syntax_ok(pattern: &[u8]) -> bool {
    let mut rest = pattern;
    while !rest.is_empty() {
        // scanChunk
        while rest.first() == Some(&b'*') {
            rest = rest.get(1..).unwrap_or_default();
        }
        let mut in_range = false;
        let mut i = 0;
        while let Some(&b) = rest.get(i) {
            match b {
                b'\\' if i + 1 < rest.len() => i += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        let (chunk, tail) = rest.split_at(i.min(rest.len()));
        if !chunk_syntax_ok(chunk) {
            return false;
        }
        rest = tail;
    }
    true
}

/// matchChunk's syntax checks.
fn chunk_syntax_ok(mut chunk: &[u8]) -> bool {
    while let Some(&b) = chunk.first() {
        chunk = chunk.get(1..).unwrap_or_default();
        match b {
            b'[' => {
                if chunk.first() == Some(&b'^') {
                    chunk = chunk.get(1..).unwrap_or_default();
                }
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = chunk.get(1..).unwrap_or_default();
                        break;
                    }
                    let Some(after_lo) = get_esc(chunk) else {
                        return false;
                    };
                    chunk = after_lo;
                    if chunk.first() == Some(&b'-') {
                        let Some(after_hi) = get_esc(chunk.get(1..).unwrap_or_default()) else {
                            return false;
                        };
                        chunk = after_hi;
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                if chunk.is_empty() {
                    return false;
                }
                chunk = chunk.get(1..).unwrap_or_default();
            }
            _ => {}
        }
    }
    true
}

/// getEsc: one possibly escaped character of a class; `None` for a syntax error, including
/// a class that ends right after it.
fn get_esc(chunk: &[u8]) -> Option<&[u8]> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return None,
        Some(b'\\') => chunk = chunk.get(1..).filter(|c| !c.is_empty())?,
        Some(_) => {}
    }
    let first = *chunk.first()?;
    let width = match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    std::str::from_utf8(chunk.get(..width)?).ok()?;
    chunk.get(width..).filter(|rest| !rest.is_empty())
}

/// The match type `Pattern.compile` detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// `Pattern.compile`: the pattern's match type and, for [`Detected::Regexp`], the regexp.
fn compile(pattern: &str) -> Result<MatchKind, String> {
    Ok(match regexp_source(pattern) {
        (Detected::Exact, _) => MatchKind::Exact,
        (Detected::Prefix, _) => MatchKind::Prefix,
        (Detected::Suffix, _) => MatchKind::Suffix,
        (Detected::Regexp, source) => MatchKind::Regexp(goregexp::Regex::new(&source)?),
    })
}

/// The match type and regexp source `Pattern.compile` builds, exactly as upstream builds
/// them (with `/` as the separator). The source is only meaningful for a regexp match.
fn regexp_source(pattern: &str) -> (Detected, String) {
    let mut source = String::from("^");
    let mut detected = Detected::Exact;
    let mut chars = pattern.chars().peekable();
    // text/scanner skips a byte order mark at the start.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut i = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // Treat **/ as **
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // "**" at the end: like .gitignore, accept everything
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        source.push_str(".*");
                        detected = Detected::Regexp;
                    }
                } else {
                    // any number of directories, even none
                    source.push_str("(.*/)?");
                    detected = Detected::Regexp;
                }
                if i == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                source.push_str("[^/]*");
                detected = Detected::Regexp;
            }
            '?' => {
                source.push_str("[^/]");
                detected = Detected::Regexp;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                source.push('\\');
                source.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    source.push('\\');
                    source.push(next);
                    detected = Detected::Regexp;
                }
                None => source.push('\\'),
            },
            '[' | ']' => {
                source.push(ch);
                detected = Detected::Regexp;
            }
            other => source.push(other),
        }
        i += 1;
    }
    if detected == Detected::Regexp {
        source.push('$');
    }
    (detected, source)
}

/// The part of Go's `regexp` (RE2 syntax with the Perl flags `regexp.Compile` uses) that the
/// pattern compiler can produce: literals, `.`, `^`/`$` (whole text), `*`/`+`/`?` (also
/// non-greedy), groups, classes with ranges, `[:posix:]` and `\d\s\w` groups, escapes
/// (`\x41`, octal, `\n`…, `\Q…\E`, `\A`, `\z`, `\b`, `\B`). Matching is a Pike VM: linear in
/// the text, no backtracking. `\p{…}` classes and alternation are refused.
mod goregexp {
    /// Deepest group nesting accepted (Go: 1000).
    const MAX_DEPTH: usize = 1000;
    const MAX_RUNE: u32 = 0x10_ffff;

    #[derive(Debug, Clone)]
    pub(super) struct Regex {
        prog: Vec<Inst>,
    }

    #[derive(Debug, Clone)]
    enum Inst {
        Rune(u32),
        Class(Class),
        AnyNotNl,
        Look(Look),
        Split(usize, usize),
        Jmp(usize),
        Match,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Look {
        BeginText,
        EndText,
        WordBoundary,
        NoWordBoundary,
    }

    #[derive(Debug, Clone)]
    struct Class {
        ranges: Vec<(u32, u32)>,
        negated: bool,
    }

    impl Class {
        fn matches(&self, c: u32) -> bool {
            self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
        }
    }

    enum Node {
        Rune(u32),
        Class(Class),
        AnyNotNl,
        Look(Look),
        Concat(Vec<Node>),
        Repeat(Box<Node>, Rep),
    }

    enum Rep {
        ZeroOrMore,
        OneOrMore,
        ZeroOrOne,
    }

    const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
    const SPACE_PERL: &[(u32, u32)] = &[(0x09, 0x0a), (0x0c, 0x0d), (0x20, 0x20)];
    const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

    fn perl_group(c: char) -> Option<(bool, &'static [(u32, u32)])> {
        match c {
            'd' => Some((false, DIGIT)),
            'D' => Some((true, DIGIT)),
            's' => Some((false, SPACE_PERL)),
            'S' => Some((true, SPACE_PERL)),
            'w' => Some((false, WORD)),
            'W' => Some((true, WORD)),
            _ => None,
        }
    }

    /// `[:name:]` / `[:^name:]` (Go's posixGroup).
    fn posix_group(name: &str) -> Option<(bool, &'static [(u32, u32)])> {
        let inner = name.strip_prefix("[:")?.strip_suffix(":]")?;
        let (negated, inner) = match inner.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let ranges: &'static [(u32, u32)] = match inner {
            "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
            "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
            "ascii" => &[(0x00, 0x7f)],
            "blank" => &[(0x09, 0x09), (0x20, 0x20)],
            "cntrl" => &[(0x00, 0x1f), (0x7f, 0x7f)],
            "digit" => DIGIT,
            "graph" => &[(0x21, 0x7e)],
            "lower" => &[(0x61, 0x7a)],
            "print" => &[(0x20, 0x7e)],
            "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
            "space" => &[(0x09, 0x0d), (0x20, 0x20)],
            "upper" => &[(0x41, 0x5a)],
            "word" => WORD,
            "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
            _ => return None,
        };
        Some((negated, ranges))
    }

    fn add_group(ranges: &mut Vec<(u32, u32)>, negated: bool, group: &[(u32, u32)]) {
        if !negated {
            ranges.extend_from_slice(group);
            return;
        }
        // group is sorted and disjoint: add the gaps
        let mut next = 0u32;
        for &(lo, hi) in group {
            if lo > next {
                ranges.push((next, lo - 1));
            }
            next = hi.saturating_add(1);
        }
        if next <= MAX_RUNE {
            ranges.push((next, MAX_RUNE));
        }
    }

    struct Parser {
        chars: Vec<char>,
        pos: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.pos).copied()
        }

        fn peek_at(&self, offset: usize) -> Option<char> {
            self.chars.get(self.pos + offset).copied()
        }

        fn bump(&mut self) -> Option<char> {
            let c = self.peek();
            if c.is_some() {
                self.pos += 1;
            }
            c
        }

        fn parse_seq(&mut self, depth: usize) -> Result<Vec<Node>, String> {
            if depth > MAX_DEPTH {
                return Err("expression nests too deeply".into());
            }
            let mut items: Vec<Node> = Vec::new();
            let mut last_was_repeat = false;
            while let Some(c) = self.peek() {
                let mut is_repeat = false;
                match c {
                    ')' => break,
                    '|' => return Err("alternation `|` is not supported".into()),
                    '(' => {
                        self.pos += 1;
                        if self.peek() == Some('?') {
                            return Err("group flags `(?` are not supported".into());
                        }
                        let inner = self.parse_seq(depth + 1)?;
                        if self.bump() != Some(')') {
                            return Err("missing closing )".into());
                        }
                        items.push(Node::Concat(inner));
                    }
                    '^' => {
                        self.pos += 1;
                        items.push(Node::Look(Look::BeginText));
                    }
                    '$' => {
                        self.pos += 1;
                        items.push(Node::Look(Look::EndText));
                    }
                    '.' => {
                        self.pos += 1;
                        items.push(Node::AnyNotNl);
                    }
                    '[' => {
                        let class = self.parse_class()?;
                        items.push(Node::Class(class));
                    }
                    '*' | '+' | '?' => {
                        self.pos += 1;
                        let rep = match c {
                            '*' => Rep::ZeroOrMore,
                            '+' => Rep::OneOrMore,
                            _ => Rep::ZeroOrOne,
                        };
                        if self.peek() == Some('?') {
                            self.pos += 1; // non-greedy: same answer to "does it match"
                        }
                        if last_was_repeat {
                            return Err(format!("invalid nested repetition operator `{c}`"));
                        }
                        let Some(operand) = items.pop() else {
                            return Err(format!("missing argument to repetition operator `{c}`"));
                        };
                        items.push(Node::Repeat(Box::new(operand), rep));
                        is_repeat = true;
                    }
                    '\\' => self.parse_top_escape(&mut items)?,
                    other => {
                        self.pos += 1;
                        items.push(Node::Rune(u32::from(other)));
                    }
                }
                last_was_repeat = is_repeat;
            }
            Ok(items)
        }

        fn parse_top_escape(&mut self, items: &mut Vec<Node>) -> Result<(), String> {
            let look = match self.peek_at(1) {
                None => return Err("trailing backslash at end of expression".into()),
                Some('A') => Some(Look::BeginText),
                Some('z') => Some(Look::EndText),
                Some('b') => Some(Look::WordBoundary),
                Some('B') => Some(Look::NoWordBoundary),
                Some('C') => return Err("invalid escape sequence `\\C`".into()),
                Some('p' | 'P') => return Err("Unicode classes `\\p` are not supported".into()),
                Some('Q') => {
                    // \Q...\E: everything up to \E (or the end) is literal
                    self.pos += 2;
                    while let Some(c) = self.peek() {
                        if c == '\\' && self.peek_at(1) == Some('E') {
                            self.pos += 2;
                            break;
                        }
                        self.pos += 1;
                        items.push(Node::Rune(u32::from(c)));
                    }
                    return Ok(());
                }
                Some(c) => {
                    if let Some((negated, group)) = perl_group(c) {
                        self.pos += 2;
                        let mut ranges = Vec::new();
                        add_group(&mut ranges, negated, group);
                        items.push(Node::Class(Class {
                            ranges,
                            negated: false,
                        }));
                        return Ok(());
                    }
                    None
                }
            };
            match look {
                Some(look) => {
                    self.pos += 2;
                    items.push(Node::Look(look));
                }
                None => {
                    let r = self.parse_escape()?;
                    items.push(Node::Rune(r));
                }
            }
            Ok(())
        }

        /// Go's parseEscape, at a backslash: the escaped rune.
        fn parse_escape(&mut self) -> Result<u32, String> {
            self.pos += 1;
            let Some(c) = self.bump() else {
                return Err("trailing backslash at end of expression".into());
            };
            if c.is_ascii() && !c.is_ascii_alphanumeric() {
                return Ok(u32::from(c));
            }
            let invalid = || format!("invalid escape sequence `\\{c}`");
            match c {
                '0'..='7' => {
                    // \1-\7 alone would be a backreference: not supported
                    if c != '0' && !matches!(self.peek(), Some('0'..='7')) {
                        return Err(invalid());
                    }
                    let mut r = u32::from(c) - u32::from('0');
                    for _ in 1..3 {
                        match self.peek() {
                            Some(d @ '0'..='7') => {
                                r = r * 8 + u32::from(d) - u32::from('0');
                                self.pos += 1;
                            }
                            _ => break,
                        }
                    }
                    Ok(r)
                }
                'x' => {
                    let first = self.bump().ok_or_else(invalid)?;
                    if first == '{' {
                        let mut r = 0u32;
                        let mut digits = 0;
                        loop {
                            let d = self.bump().ok_or_else(invalid)?;
                            if d == '}' {
                                break;
                            }
                            r = r * 16 + d.to_digit(16).ok_or_else(invalid)?;
                            if r > MAX_RUNE {
                                return Err(invalid());
                            }
                            digits += 1;
                        }
                        return if digits == 0 { Err(invalid()) } else { Ok(r) };
                    }
                    let x = first.to_digit(16);
                    let y = self.bump().and_then(|d| d.to_digit(16));
                    match (x, y) {
                        (Some(x), Some(y)) => Ok(x * 16 + y),
                        _ => Err(invalid()),
                    }
                }
                'a' => Ok(7),
                'f' => Ok(12),
                'n' => Ok(10),
                'r' => Ok(13),
                't' => Ok(9),
                'v' => Ok(11),
                _ => Err(invalid()),
            }
        }

        /// Go's parseClass, at `[`.
        fn parse_class(&mut self) -> Result<Class, String> {
            self.pos += 1;
            let mut negated = false;
            if self.peek() == Some('^') {
                negated = true;
                self.pos += 1;
            }
            let mut ranges = Vec::new();
            let mut first = true; // `]` is a member when first
            loop {
                match self.peek() {
                    None => return Err("missing closing ]".into()),
                    Some(']') if !first => {
                        self.pos += 1;
                        break;
                    }
                    _ => {}
                }
                first = false;
                // [:alnum:] etc.
                if self.peek() == Some('[')
                    && self.peek_at(1) == Some(':')
                    && self.peek_at(2).is_some()
                    && let Some(end) = self.find(":]", self.pos + 2)
                {
                    let name: String = self
                        .chars
                        .get(self.pos..end + 2)
                        .unwrap_or_default()
                        .iter()
                        .collect();
                    let Some((neg, group)) = posix_group(&name) else {
                        return Err(format!("invalid character class range `{name}`"));
                    };
                    add_group(&mut ranges, neg, group);
                    self.pos = end + 2;
                    continue;
                }
                if self.peek() == Some('\\') {
                    match self.peek_at(1) {
                        Some('p' | 'P') => {
                            return Err("Unicode classes `\\p` are not supported".into());
                        }
                        Some(c) => {
                            if let Some((neg, group)) = perl_group(c) {
                                add_group(&mut ranges, neg, group);
                                self.pos += 2;
                                continue;
                            }
                        }
                        None => {}
                    }
                }
                let lo = self.parse_class_char()?;
                let mut hi = lo;
                if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                    self.pos += 1;
                    hi = self.parse_class_char()?;
                    if hi < lo {
                        return Err("invalid character class range".into());
                    }
                }
                ranges.push((lo, hi));
            }
            Ok(Class { ranges, negated })
        }

        fn parse_class_char(&mut self) -> Result<u32, String> {
            match self.peek() {
                None => Err("missing closing ]".into()),
                Some('\\') => self.parse_escape(),
                Some(c) => {
                    self.pos += 1;
                    Ok(u32::from(c))
                }
            }
        }

        /// Index of the first occurrence of `needle` at or after `from`.
        fn find(&self, needle: &str, from: usize) -> Option<usize> {
            let needle: Vec<char> = needle.chars().collect();
            let haystack = self.chars.get(from..)?;
            haystack
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .map(|i| i + from)
        }
    }

    fn emit(node: &Node, prog: &mut Vec<Inst>) {
        match node {
            Node::Rune(r) => prog.push(Inst::Rune(*r)),
            Node::Class(class) => prog.push(Inst::Class(class.clone())),
            Node::AnyNotNl => prog.push(Inst::AnyNotNl),
            Node::Look(look) => prog.push(Inst::Look(*look)),
            Node::Concat(items) => items.iter().for_each(|item| emit(item, prog)),
            Node::Repeat(inner, Rep::ZeroOrMore) => {
                let split = prog.len();
                prog.push(Inst::Jmp(0));
                emit(inner, prog);
                prog.push(Inst::Jmp(split));
                let end = prog.len();
                if let Some(slot) = prog.get_mut(split) {
                    *slot = Inst::Split(split + 1, end);
                }
            }
            Node::Repeat(inner, Rep::OneOrMore) => {
                let start = prog.len();
                emit(inner, prog);
                let end = prog.len() + 1;
                prog.push(Inst::Split(start, end));
            }
            Node::Repeat(inner, Rep::ZeroOrOne) => {
                let split = prog.len();
                prog.push(Inst::Jmp(0));
                emit(inner, prog);
                let end = prog.len();
                if let Some(slot) = prog.get_mut(split) {
                    *slot = Inst::Split(split + 1, end);
                }
            }
        }
    }

    /// A set of program counters, in insertion order.
    struct Threads {
        member: Vec<bool>,
        list: Vec<usize>,
    }

    impl Threads {
        fn new(len: usize) -> Threads {
            Threads {
                member: vec![false; len],
                list: Vec::new(),
            }
        }

        fn insert(&mut self, pc: usize) -> bool {
            match self.member.get_mut(pc) {
                Some(seen) if !*seen => {
                    *seen = true;
                    self.list.push(pc);
                    true
                }
                _ => false,
            }
        }

        fn clear(&mut self) {
            for &pc in &self.list {
                if let Some(seen) = self.member.get_mut(pc) {
                    *seen = false;
                }
            }
            self.list.clear();
        }
    }

    fn is_word(c: Option<&char>) -> bool {
        c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    }

    impl Regex {
        pub(super) fn new(source: &str) -> Result<Regex, String> {
            let mut parser = Parser {
                chars: source.chars().collect(),
                pos: 0,
            };
            let items = parser.parse_seq(0)?;
            if parser.peek().is_some() {
                return Err("unexpected )".into());
            }
            let mut prog = Vec::new();
            items.iter().for_each(|item| emit(item, &mut prog));
            prog.push(Inst::Match);
            Ok(Regex { prog })
        }

        /// Go's `MatchString`: whether the regexp matches anywhere in `text`.
        pub(super) fn is_match(&self, text: &str) -> bool {
            let chars: Vec<char> = text.chars().collect();
            let mut current = Threads::new(self.prog.len());
            let mut next = Threads::new(self.prog.len());
            for pos in 0..=chars.len() {
                if self.add(&mut current, 0, pos, &chars) {
                    return true;
                }
                let Some(&c) = chars.get(pos) else { break };
                next.clear();
                for &pc in &current.list {
                    let advances = match self.prog.get(pc) {
                        Some(Inst::Rune(r)) => *r == u32::from(c),
                        Some(Inst::Class(class)) => class.matches(u32::from(c)),
                        Some(Inst::AnyNotNl) => c != '\n',
                        _ => false,
                    };
                    if advances && self.add(&mut next, pc + 1, pos + 1, &chars) {
                        return true;
                    }
                }
                std::mem::swap(&mut current, &mut next);
            }
            false
        }

        /// Adds `pc` and everything reachable from it without reading; true on reaching Match.
        fn add(&self, threads: &mut Threads, pc: usize, pos: usize, chars: &[char]) -> bool {
            let mut stack = vec![pc];
            while let Some(pc) = stack.pop() {
                if !threads.insert(pc) {
                    continue;
                }
                match self.prog.get(pc) {
                    Some(Inst::Match) => return true,
                    Some(Inst::Jmp(to)) => stack.push(*to),
                    Some(Inst::Split(a, b)) => {
                        stack.push(*b);
                        stack.push(*a);
                    }
                    Some(Inst::Look(look)) => {
                        let before = pos.checked_sub(1).and_then(|p| chars.get(p));
                        let holds = match look {
                            Look::BeginText => pos == 0,
                            Look::EndText => pos == chars.len(),
                            Look::WordBoundary => is_word(before) != is_word(chars.get(pos)),
                            Look::NoWordBoundary => is_word(before) == is_word(chars.get(pos)),
                        };
                        if holds {
                            stack.push(pc + 1);
                        }
                    }
                    _ => {}
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    // ---- upstream: moby/patternmatcher patternmatcher_test.go ---------------------------------

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Fail,
        Exact,
        Inexact,
    }
    use Want::{Exact as E, Fail as F, Inexact as I};

    const WHL: &str = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";

    /// TestMatches `tests` (with the non-Windows additions).
    const MATCHES: &[(&str, &str, Want)] = &[
        ("**", "file", E),
        ("**", "file/", E),
        ("**/", "file", E), // weird one
        ("**/", "file/", E),
        ("**", "/", E),
        ("**/", "/", E),
        ("**", "dir/file", E),
        ("**/", "dir/file", E),
        ("**", "dir/file/", E),
        ("**/", "dir/file/", E),
        ("**/**", "dir/file", E),
        ("**/**", "dir/file/", E),
        ("dir/**", "dir/file", E),
        ("dir/**", "dir/file/", E),
        ("dir/**", "dir/dir2/file", E),
        ("dir/**", "dir/dir2/file/", E),
        ("**/dir", "dir", E),
        ("**/dir", "dir/file", I),
        ("**/dir2/*", "dir/dir2/file", E),
        ("**/dir2/*", "dir/dir2/file/", I),
        ("**/dir2/**", "dir/dir2/dir3/file", E),
        ("**/dir2/**", "dir/dir2/dir3/file/", E),
        ("**file", "file", E),
        ("**file", "dir/file", E),
        ("**/file", "dir/file", E),
        ("**file", "dir/dir/file", E),
        ("**/file", "dir/dir/file", E),
        ("**/file*", "dir/dir/file", E),
        ("**/file*", "dir/dir/file.txt", E),
        ("**/file*txt", "dir/dir/file.txt", E),
        ("**/file*.txt", "dir/dir/file.txt", E),
        ("**/file*.txt*", "dir/dir/file.txt", E),
        ("**/**/*.txt", "dir/dir/file.txt", E),
        ("**/**/*.txt2", "dir/dir/file.txt", F),
        ("**/*.txt", "file.txt", E),
        ("**/**/*.txt", "file.txt", E),
        ("a**/*.txt", "a/file.txt", E),
        ("a**/*.txt", "a/dir/file.txt", E),
        ("a**/*.txt", "a/dir/dir/file.txt", E),
        ("a/*.txt", "a/dir/file.txt", F),
        ("a/*.txt", "a/file.txt", E),
        ("a/*.txt**", "a/file.txt", E),
        ("a[b-d]e", "ae", F),
        ("a[b-d]e", "ace", E),
        ("a[b-d]e", "aae", F),
        ("a[^b-d]e", "aze", E),
        (".*", ".foo", E),
        (".*", "foo", F),
        ("abc.def", "abcdef", F),
        ("abc.def", "abc.def", E),
        ("abc.def", "abcZdef", F),
        ("abc?def", "abcZdef", E),
        ("abc?def", "abcdef", F),
        ("**/foo/bar", "foo/bar", E),
        ("**/foo/bar", "dir/foo/bar", E),
        ("**/foo/bar", "dir/dir2/foo/bar", E),
        ("abc/**", "abc", F),
        ("abc/**", "abc/def", E),
        ("abc/**", "abc/def/ghi", E),
        ("**/.foo", ".foo", E),
        ("**/.foo", "bar.foo", F),
        ("a(b)c/def", "a(b)c/def", E),
        ("a(b)c/def", "a(b)c/xyz", F),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", E),
        (WHL, WHL, E),
        ("dist/*.whl", WHL, E),
        (r"a\\", r"a\", E),
        (r"a\*b", "a*b", E),
    ];

    /// TestMatches `multiPatternTests`.
    const MULTI: &[(&[&str], &str, Want)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", F),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            E,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            WHL,
            F,
        ),
        (&["**", "!dist/*.whl"], WHL, F),
    ];

    fn matcher(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
    }

    /// The upstream test's walk: match each parent directory in turn, carrying the results.
    fn matches_with_parent_chain(pm: &PatternMatcher, text: &str) -> bool {
        let parent = dir(text);
        let mut info = MatchInfo::default();
        if parent != "." {
            let dirs: Vec<&str> = parent.split('/').collect();
            for i in 0..dirs.len() {
                info = pm
                    .matches_using_parent_results(&dirs[..=i].join("/"), &info)
                    .1;
            }
        }
        pm.matches_using_parent_results(text, &info).0
    }

    #[test]
    fn upstream_matches_table_matches_exact() {
        for &(pattern, text, want) in MATCHES {
            let got = matcher(&[pattern]).matches_exact(text);
            assert_eq!(got, want == E, "pattern={pattern:?} text={text:?}");
        }
    }

    #[test]
    fn upstream_matches_table_matches_or_parent_matches() {
        for &(pattern, text, want) in MATCHES {
            let got = matcher(&[pattern]).matches_or_parent_matches(text);
            assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
        }
        for &(patterns, text, want) in MULTI {
            let got = matcher(patterns).matches_or_parent_matches(text);
            assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
        }
    }

    #[test]
    fn upstream_matches_table_matches_using_parent_results() {
        for &(pattern, text, want) in MATCHES {
            let got = matches_with_parent_chain(&matcher(&[pattern]), text);
            assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
        }
        for &(patterns, text, want) in MULTI {
            let got = matches_with_parent_chain(&matcher(patterns), text);
            assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
        }
    }

    #[test]
    fn upstream_matches_table_matches_using_parent_results_no_context() {
        for &(pattern, text, want) in MATCHES {
            let (got, _) =
                matcher(&[pattern]).matches_using_parent_results(text, &MatchInfo::default());
            assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
        }
        for &(patterns, text, want) in MULTI {
            let (got, _) =
                matcher(patterns).matches_using_parent_results(text, &MatchInfo::default());
            assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
        }
    }

    /// The deprecated package-level `Matches` the upstream tests call: New, Clean, "." is
    /// never excluded, then the single-parent `PatternMatcher.Matches`.
    fn package_matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
        let pm = PatternMatcher::new(patterns)?;
        let file = clean(file);
        if file == "." {
            return Ok(false);
        }
        let parent = dir(&file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in pm.patterns() {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&file);
            let pattern_dirs = pattern.cleaned.split('/').count();
            if !hit && parent != "." && pattern_dirs <= parent_dirs.len() {
                hit = pattern.matches(&parent_dirs[..pattern_dirs].join("/"));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    #[test]
    fn upstream_single_cases() {
        let ok = |file, patterns: &[&str]| package_matches(file, patterns).unwrap();
        // TestWildcardMatches, TestPatternMatches
        assert!(ok("fileutils.go", &["*"]));
        assert!(ok("fileutils.go", &["*.go"]));
        // TestExclusionPatternMatchesPatternBefore
        assert!(ok("fileutils.go", &["!fileutils.go", "*.go"]));
        // TestPatternMatchesFolderExclusions, ...WithSlash..., ...Wildcard...
        assert!(!ok("docs/README.md", &["docs", "!docs/README.md"]));
        assert!(!ok("docs/README.md", &["docs/", "!docs/README.md"]));
        assert!(!ok("docs/README.md", &["docs/*", "!docs/README.md"]));
        // TestExclusionPatternMatchesPatternAfter
        assert!(!ok("fileutils.go", &["*.go", "!fileutils.go"]));
        // TestExclusionPatternMatchesWholeDirectory
        assert!(!ok(".", &["*.go"]));
        // TestSingleExclamationError
        assert!(package_matches("fileutils.go", &["!"]).is_err());
        // TestMatchesWithNoPatterns
        assert!(!ok("/any/path/there", &[]));
        // TestMatchesWithMalformedPatterns
        assert!(package_matches("/any/path/there", &["["]).is_err());
    }

    /// TestMatch: Go's filepath.Match table, through `Matches`. `None` is ErrBadPattern.
    const FILEPATH_MATCH: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        (r"a\*b", "a*b", Some(true)),
        (r"a\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        (r"[\]a]", "]", Some(true)),
        (r"[\-]", "-", Some(true)),
        (r"[x\-]", "x", Some(true)),
        (r"[x\-]", "-", Some(true)),
        (r"[x\-]", "z", Some(false)),
        (r"[\-x]", "x", Some(true)),
        (r"[\-x]", "-", Some(true)),
        (r"[\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[x-]", "-", None),
        ("[x-]", "z", None),
        ("[-x]", "x", None),
        ("[-x]", "-", None),
        ("[-x]", "a", None),
        (r"\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("a[", "ab", None),
        ("*x", "xxx", Some(true)),
    ];

    #[test]
    fn upstream_filepath_match_table() {
        for &(pattern, text, want) in FILEPATH_MATCH {
            let got = package_matches(text, &[pattern]).ok();
            assert_eq!(got, want, "pattern={pattern:?} text={text:?}");
        }
    }

    /// TestCompile (the `/` separator): match type, and the regexp for regexp matches.
    const COMPILE: &[(&str, Detected, &str)] = &[
        ("*", Detected::Regexp, r"^[^/]*$"),
        ("file*", Detected::Regexp, r"^file[^/]*$"),
        ("*file", Detected::Regexp, r"^[^/]*file$"),
        ("a*/b", Detected::Regexp, r"^a[^/]*/b$"),
        ("**", Detected::Suffix, ""),
        ("**/**", Detected::Regexp, r"^(.*/)?.*$"),
        ("dir/**", Detected::Prefix, ""),
        ("**/dir", Detected::Suffix, ""),
        ("**/dir2/*", Detected::Regexp, r"^(.*/)?dir2/[^/]*$"),
        ("**/dir2/**", Detected::Regexp, r"^(.*/)?dir2/.*$"),
        ("**file", Detected::Suffix, ""),
        ("**/file*txt", Detected::Regexp, r"^(.*/)?file[^/]*txt$"),
        ("**/**/*.txt", Detected::Regexp, r"^(.*/)?(.*/)?[^/]*\.txt$"),
        ("a[b-d]e", Detected::Regexp, r"^a[b-d]e$"),
        (".*", Detected::Regexp, r"^\.[^/]*$"),
        ("abc.def", Detected::Exact, ""),
        ("abc?def", Detected::Regexp, r"^abc[^/]def$"),
        ("**/foo/bar", Detected::Suffix, ""),
        ("a(b)c/def", Detected::Exact, ""),
        ("a.|)$(}+{bc", Detected::Exact, ""),
        (WHL, Detected::Exact, ""),
    ];

    #[test]
    fn upstream_compile_table() {
        for &(pattern, want_type, want_regexp) in COMPILE {
            let (got_type, got_regexp) = regexp_source(&clean(pattern));
            assert_eq!(got_type, want_type, "pattern={pattern:?}");
            if want_type == Detected::Regexp {
                assert_eq!(got_regexp, want_regexp, "pattern={pattern:?}");
            }
            assert!(compile(&clean(pattern)).is_ok(), "pattern={pattern:?}");
        }
    }

    #[test]
    fn upstream_clean_patterns() {
        // TestCleanPatterns, ...StripEmptyPatterns
        assert_eq!(matcher(&["docs", "config"]).patterns().len(), 2);
        assert_eq!(matcher(&["docs", "config", ""]).patterns().len(), 2);
        // TestCleanPatternsExceptionFlag, ...LeadingSpaceTrimmed, ...TrailingSpaceTrimmed
        assert!(matcher(&["docs", "!docs/README.md"]).exclusions());
        assert!(matcher(&["docs", "  !docs/README.md"]).exclusions());
        assert!(matcher(&["docs", "!docs/README.md  "]).exclusions());
        assert!(!matcher(&["docs", "config"]).exclusions());
        // TestCleanPatternsErrorSingleException
        let err = PatternMatcher::new(&["!"]).unwrap_err();
        assert_eq!(
            (err.index, err.reason.as_str()),
            (0, "illegal exclusion pattern: \"!\"")
        );
        // New cleans: "docs/" and "./docs" are "docs"; the "!" is stripped after cleaning
        let pm = matcher(&["docs/", "./src/../lib", "!./keep"]);
        let texts: Vec<&str> = pm.patterns().iter().map(Pattern::as_str).collect();
        assert_eq!(texts, ["docs", "lib", "./keep"]);
    }

    /// Regression test for moby/moby#52203: upstream accepts `[Local-Only]/` in New and fails
    /// at every match; here it is refused at once (the regexp range `l-O` is invalid).
    #[test]
    fn moby_52203_malformed_range_is_refused_up_front() {
        let err = PatternMatcher::new(&["[Local-Only]/"]).unwrap_err();
        assert!(err.reason.contains("syntax error"), "{err}");
        assert!(PatternMatcher::new(&["[z-a]"]).is_err());
        assert!(PatternMatcher::new(&["[a-z]"]).is_ok());
    }

    // ---- upstream: buildkit dockerignore_test.go / patternmatcher ignorefile_test.go --------

    #[test]
    fn upstream_read_all() {
        assert!(read_ignore_patterns(b"").is_empty());
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let got: Vec<(usize, String)> = read_ignore_patterns(content.as_bytes())
            .into_iter()
            .map(|p| (p.line, p.pattern))
            .collect();
        let want = [
            (1, "test1"),
            (2, "test2"), // /foo/bar is foo/bar
            (3, "a/file/here"),
            (5, "lastfile"),
            (7, "!inverted/abs/path"),
            (8, "!"),
            (9, "!"),
        ];
        let want: Vec<(usize, String)> = want.iter().map(|(l, p)| (*l, p.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn read_all_bom_crlf_comments_and_cleaning() {
        let content = b"\xEF\xBB\xBFfirst\r\n  # not a comment\r\n#comment\r\n./a/../b/\r\n/\r\n!/\r\n\t*.log \r\nlast";
        let got: Vec<String> = read_ignore_patterns(content)
            .into_iter()
            .map(|p| p.pattern)
            .collect();
        assert_eq!(
            got,
            ["first", "# not a comment", "b", "/", "!/", "*.log", "last"]
        );
        // a BOM on a later line is not stripped
        let got = read_ignore_patterns(b"a\n\xEF\xBB\xBFb\n");
        assert_eq!(got[1].pattern, "\u{feff}b");
        // "!/" cleans to "!" in New: an illegal exception, reported with its line
        let err = PatternMatcher::new(&["a", "!/"]).unwrap_err();
        assert_eq!(err.index, 1);
    }

    #[test]
    fn clean_and_dir_follow_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b/", "a/b"),
            ("a/../b", "b"),
            ("a/../..", ".."),
            ("../../a", "../../a"),
            ("/..", "/"),
            ("/../a/", "/a"),
            ("//", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
        for (input, want) in [
            ("a/b/c", "a/b"),
            ("file", "."),
            ("file/", "file"),
            ("/", "/"),
            ("/x", "/"),
        ] {
            assert_eq!(dir(input), want, "dir({input:?})");
        }
    }

    // ---- Go regexp semantics that upstream's compiler exposes --------------------------------

    #[test]
    fn go_regexp_quirks_match_docker() {
        // "[*]" becomes `^[[^/]*]$`: a class of `[`, `^`, `/` repeated, then `]`.
        let pm = matcher(&["[*]"]);
        assert!(pm.matches_exact("]"));
        assert!(pm.matches_exact("[^]"));
        assert!(!pm.matches_exact("*"));
        // "[[:alpha:]]" is one POSIX class in Go's regexp, not a class and a `]`.
        let pm = matcher(&["[[:alpha:]]"]);
        assert!(pm.matches_exact("a"));
        assert!(!pm.matches_exact("a]"));
        assert!(!pm.matches_exact("1"));
        assert!(matcher(&["[[:^alpha:]]"]).matches_exact("1"));
        assert!(PatternMatcher::new(&["[[:nope:]]"]).is_err());
        // A `^` is an anchor once the pattern is a regexp, a literal while it is exact.
        assert!(matcher(&["^a*"]).matches_exact("abc"));
        assert!(!matcher(&["^a*"]).matches_exact("^abc"));
        assert!(matcher(&["^abc"]).matches_exact("^abc"));
        // Escapes keep their Go regexp meaning.
        assert!(matcher(&[r"\d"]).matches_exact("5"));
        assert!(!matcher(&[r"\d"]).matches_exact("d"));
        assert!(matcher(&[r"\x41"]).matches_exact("A"));
        assert!(matcher(&[r"\101"]).matches_exact("A"));
        assert!(matcher(&[r"\bfoo"]).matches_exact("foo"));
        assert!(matcher(&[r"[\w]"]).matches_exact("_"));
        // \Q swallows the closing `$`, so the match is no longer anchored at the end.
        assert!(matcher(&[r"\Qab"]).matches_exact("ab$"));
        assert!(matcher(&[r"\Qab"]).matches_exact("ab$x"));
        assert!(!matcher(&[r"\Qab"]).matches_exact("ab"));
        // Go rejects these escapes; \p is not ported.
        for bad in [r"\e", r"\C", r"\8", r"\xZ1", r"\p{L}", r"[\b]"] {
            assert!(PatternMatcher::new(&[bad]).is_err(), "{bad}");
        }
        // `.` in `(.*/)?` does not cross a newline; `[^/]` does.
        assert!(!matcher(&["**/x*"]).matches_exact("a\nb/xy"));
        assert!(matcher(&["x*"]).matches_exact("x\ny"));
    }

    #[test]
    fn a_bom_before_a_leading_double_star_is_handled_byte_wise() {
        // upstream slices the pattern's bytes; must not panic on the BOM's bytes
        let pm = matcher(&["\u{feff}**foo"]);
        assert!(!pm.matches_or_parent_matches("x/foo"));
    }

    // ---- real directories -------------------------------------------------------------------

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// (name, type, mode, link name, content) of every entry, in archive order.
    #[derive(Debug, Clone, PartialEq)]
    struct Entry {
        name: String,
        kind: tar::EntryType,
        mode: u32,
        link: Option<String>,
        content: Vec<u8>,
    }

    fn entries(archive: &ContextArchive) -> Vec<Entry> {
        let mut tar = tar::Archive::new(archive.bytes.as_slice());
        tar.entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                Entry {
                    name: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
                    kind: entry.header().entry_type(),
                    mode: entry.header().mode().unwrap(),
                    link: entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                    content,
                }
            })
            .collect()
    }

    fn names(archive: &ContextArchive) -> Vec<String> {
        entries(archive).into_iter().map(|e| e.name).collect()
    }

    fn content_of(archive: &ContextArchive, name: &str) -> String {
        let entry = entries(archive).into_iter().find(|e| e.name == name);
        String::from_utf8(entry.unwrap_or_else(|| panic!("no {name}")).content).unwrap()
    }

    #[test]
    fn dockerignore_with_globs_exceptions_and_anchors_gives_the_exact_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        let ignore = "# build outputs and dependencies\n**/*.log\n!keep.log\nnode_modules\n/build\ndocs\n!docs/README.md\n";
        write(ctx, ".dockerignore", ignore);
        for file in [
            "Dockerfile",
            "app.py",
            "keep.log",
            "debug.log",
            "build/out.bin",
            "docs/README.md",
            "docs/guide.md",
            "node_modules/left-pad/index.js",
            "src/main.py",
            "src/trace.log",
            "src/keep.log",
            "src/build/gen.py",
            "src/node_modules/x.js",
        ] {
            write(ctx, file, file);
        }
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&archive),
            [
                ".dockerignore",
                "Dockerfile",
                "app.py",
                "docs/README.md", // re-included; "docs/" itself gets no entry
                "keep.log",
                "src/",
                "src/build/", // "/build" is anchored at the root
                "src/build/gen.py",
                "src/main.py",
                "src/node_modules/", // so is "node_modules"
                "src/node_modules/x.js",
            ]
        );
        assert_eq!(archive.dockerfile_in_context, "Dockerfile");
        assert_eq!(archive.files, 8);
        let expected_size = ignore.len()
            + [
                "Dockerfile",
                "app.py",
                "docs/README.md",
                "keep.log",
                "src/build/gen.py",
                "src/main.py",
                "src/node_modules/x.js",
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        assert_eq!(archive.size, expected_size as u64);
        assert_eq!(content_of(&archive, "src/main.py"), "src/main.py");
    }

    #[test]
    fn nested_exception_reopens_an_excluded_tree_without_its_parent_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        write(ctx, ".dockerignore", "*\n!src/app\n");
        for file in [
            "Dockerfile",
            "README.md",
            "src/app/main.go",
            "src/app/sub/util.go",
            "src/lib/x.go",
        ] {
            write(ctx, file, "x");
        }
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&archive),
            [
                ".dockerignore",
                "Dockerfile",
                "src/app/",
                "src/app/main.go",
                "src/app/sub/",
                "src/app/sub/util.go"
            ]
        );
    }

    /// moby's walk only reopens an excluded directory when an exception's text starts with it:
    /// `!node_modules/*/package.json` reopens `node_modules/` but not `node_modules/pkg/`.
    #[test]
    fn wildcard_exception_does_not_reopen_an_excluded_directory_like_moby() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        write(ctx, "Dockerfile", "FROM scratch\n");
        write(ctx, "node_modules/pkg/package.json", "{}");
        write(ctx, "node_modules/pkg/index.js", "");
        write(ctx, "node_modules/top.json", "{}");
        write(
            ctx,
            ".dockerignore",
            "node_modules\n!node_modules/*/package.json\n!node_modules/*.json\n",
        );
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&archive),
            [".dockerignore", "Dockerfile", "node_modules/top.json"]
        );

        write(
            ctx,
            ".dockerignore",
            "node_modules\n!node_modules/pkg/package.json\n",
        );
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&archive),
            [
                ".dockerignore",
                "Dockerfile",
                "node_modules/pkg/package.json"
            ]
        );
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_sent_even_when_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        write(
            ctx,
            ".dockerignore",
            ".dockerignore\nDockerfile\nservices\n**/deploy\n",
        );
        write(ctx, "Dockerfile", "FROM scratch\n");
        write(ctx, "services/api/deploy/Dockerfile", "FROM alpine\n");
        write(ctx, "services/api/deploy/secret.env", "x");
        write(ctx, "services/api/main.go", "x");
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(names(&archive), [".dockerignore", "Dockerfile"]);

        let nested = ctx.join("services/api/deploy/Dockerfile");
        let archive = context_tar(ctx, &nested).unwrap();
        assert_eq!(
            names(&archive),
            [".dockerignore", "services/api/deploy/Dockerfile"]
        );
        assert_eq!(
            archive.dockerfile_in_context,
            "services/api/deploy/Dockerfile"
        );

        // A name with glob characters is kept by its path, not read as a pattern.
        write(ctx, "[x].Dockerfile", "FROM scratch\n");
        write(ctx, ".dockerignore", "*\n");
        let archive = context_tar(ctx, &ctx.join("[x].Dockerfile")).unwrap();
        assert_eq!(names(&archive), [".dockerignore", "[x].Dockerfile"]);
    }

    #[test]
    fn a_dockerfile_outside_the_context_is_added_under_a_content_derived_name() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        write(&ctx, "app.py", "print()\n");
        write(tmp.path(), "docker/api.Dockerfile", "FROM python\n");
        let dockerfile = tmp.path().join("docker/api.Dockerfile");

        let archive = context_tar(&ctx, &dockerfile).unwrap();
        let name = archive.dockerfile_in_context.clone();
        assert!(
            name.starts_with(".dockerfile.") && name.len() == ".dockerfile.".len() + 20,
            "{name}"
        );
        assert!(
            name[".dockerfile.".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert_eq!(
            names(&archive),
            [
                "app.py".to_string(),
                name.clone(),
                ".dockerignore".to_string()
            ]
        );
        assert_eq!(content_of(&archive, &name), "FROM python\n");
        assert_eq!(
            content_of(&archive, ".dockerignore"),
            format!(".dockerignore\n{name}\n")
        );
        let added = entries(&archive)
            .into_iter()
            .find(|e| e.name == name)
            .unwrap();
        assert_eq!((added.kind, added.mode), (tar::EntryType::Regular, 0o600));

        // An existing .dockerignore is amended in place.
        write(&ctx, ".dockerignore", "*.md\n");
        write(&ctx, "README.md", "x");
        let archive = context_tar(&ctx, &dockerfile).unwrap();
        assert_eq!(
            names(&archive),
            [
                ".dockerignore".to_string(),
                "app.py".to_string(),
                name.clone()
            ]
        );
        assert_eq!(
            content_of(&archive, ".dockerignore"),
            format!("*.md\n\n{name}\n")
        );
        assert_eq!(archive.files, 3);
    }

    #[test]
    fn the_dockerfiles_own_ignore_file_takes_precedence() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        write(&ctx, ".dockerignore", "*.txt\n");
        write(&ctx, "Dockerfile", "FROM scratch\n");
        write(&ctx, "api.Dockerfile", "FROM scratch\n");
        write(&ctx, "api.Dockerfile.dockerignore", "*.md\n");
        write(&ctx, "a.txt", "");
        write(&ctx, "b.md", "");

        let general = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&general),
            [
                ".dockerignore",
                "Dockerfile",
                "api.Dockerfile",
                "api.Dockerfile.dockerignore",
                "b.md"
            ]
        );
        let specific = context_tar(&ctx, &ctx.join("api.Dockerfile")).unwrap();
        assert_eq!(
            names(&specific),
            [
                ".dockerignore",
                "Dockerfile",
                "a.txt",
                "api.Dockerfile",
                "api.Dockerfile.dockerignore"
            ]
        );
        assert_eq!(
            ignore_file_for(&ctx, &ctx.join("api.Dockerfile")),
            Some(ctx.join("api.Dockerfile.dockerignore"))
        );
        assert_eq!(
            ignore_file_for(&ctx, &ctx.join("Dockerfile")),
            Some(ctx.join(".dockerignore"))
        );

        // next to a Dockerfile outside the context, too
        write(tmp.path(), "ops/web.Dockerfile", "FROM scratch\n");
        write(tmp.path(), "ops/web.Dockerfile.dockerignore", "*\n!b.md\n");
        let outside = context_tar(&ctx, &tmp.path().join("ops/web.Dockerfile")).unwrap();
        let name = outside.dockerfile_in_context.clone();
        assert_eq!(
            names(&outside),
            [".dockerignore".to_string(), "b.md".to_string(), name]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_modes_and_hard_links_are_kept() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        write(ctx, "Dockerfile", "FROM scratch\n");
        write(ctx, "run.sh", "#!/bin/sh\n");
        fs::set_permissions(ctx.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        write(ctx, "secret", "s");
        fs::set_permissions(ctx.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(ctx.join("run.sh"), ctx.join("hard")).unwrap();
        symlink("run.sh", ctx.join("link")).unwrap();
        symlink("../outside/missing", ctx.join("dangling")).unwrap();
        write(ctx, "src/lib.rs", "");
        symlink("src", ctx.join("srclink")).unwrap();

        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        let got: Vec<(String, tar::EntryType, Option<String>)> = entries(&archive)
            .into_iter()
            .map(|e| (e.name, e.kind, e.link))
            .collect();
        let want = [
            ("Dockerfile", tar::EntryType::Regular, None),
            (
                "dangling",
                tar::EntryType::Symlink,
                Some("../outside/missing"),
            ),
            ("hard", tar::EntryType::Regular, None),
            ("link", tar::EntryType::Symlink, Some("run.sh")),
            ("run.sh", tar::EntryType::Link, Some("hard")), // second name of the same inode
            ("secret", tar::EntryType::Regular, None),
            ("src/", tar::EntryType::Directory, None),
            ("src/lib.rs", tar::EntryType::Regular, None),
            ("srclink", tar::EntryType::Symlink, Some("src")), // not followed
        ];
        let want: Vec<(String, tar::EntryType, Option<String>)> = want
            .iter()
            .map(|(n, k, l)| (n.to_string(), *k, l.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        let mode = |name: &str| {
            entries(&archive)
                .into_iter()
                .find(|e| e.name == name)
                .unwrap()
                .mode
        };
        assert_eq!(mode("hard"), 0o755);
        assert_eq!(mode("secret"), 0o600);
        assert_eq!(content_of(&archive, "hard"), "#!/bin/sh\n");
    }

    #[test]
    fn archives_are_byte_for_byte_reproducible() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        for file in ["Dockerfile", "b/c", "a", "b/a", "z/y/x"] {
            write(ctx, file, file);
        }
        let first = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        let second = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            names(&first),
            ["Dockerfile", "a", "b/", "b/a", "b/c", "z/", "z/y/", "z/y/x"]
        );
    }

    #[test]
    fn long_names_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
        write(ctx, "Dockerfile", "");
        write(ctx, &long, "x");
        let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        assert_eq!(
            names(&archive),
            [
                "Dockerfile".to_string(),
                format!("{}/", "d".repeat(120)),
                long
            ]
        );
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");

        let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
        assert!(
            matches!(err, ContextError::MissingContextDir { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&ctx.display().to_string()));

        write(tmp.path(), "file", "");
        let err = context_tar(&tmp.path().join("file"), &ctx.join("Dockerfile")).unwrap_err();
        assert!(matches!(err, ContextError::NotADirectory { .. }), "{err:?}");

        write(&ctx, "app.py", "");
        let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
        assert!(matches!(err, ContextError::Dockerfile { .. }), "{err:?}");
        assert!(err.to_string().contains("Dockerfile"), "{err}");
        let err = context_tar(&ctx, &ctx).unwrap_err();
        assert!(matches!(err, ContextError::Dockerfile { .. }), "{err:?}");

        write(&ctx, "Dockerfile", "FROM scratch\n");
        write(&ctx, ".dockerignore", "# comment\n\nok\n  [z-a]  \n");
        let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
        let ContextError::BadPattern {
            line, ref pattern, ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((line, pattern.as_str()), (4, "[z-a]"));
        let shown = err.to_string();
        assert!(
            shown.contains(".dockerignore:4:") && shown.contains("fix or remove"),
            "{shown}"
        );

        write(&ctx, ".dockerignore", "a\n!\n");
        let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
        assert!(
            matches!(err, ContextError::BadPattern { line: 2, .. }),
            "{err:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_file_is_an_error_unless_excluded() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        write(ctx, "Dockerfile", "");
        write(ctx, "locked", "x");
        fs::set_permissions(ctx.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        if fs::read(ctx.join("locked")).is_ok() {
            return; // running as root: permissions are not enforced
        }
        let err = context_tar(ctx, &ctx.join("Dockerfile")).unwrap_err();
        assert!(
            matches!(err, ContextError::Unreadable { ref path, .. } if path.ends_with("locked")),
            "{err:?}"
        );
        write(ctx, ".dockerignore", "locked\n");
        assert!(context_tar(ctx, &ctx.join("Dockerfile")).is_ok());
    }

    // ---- properties -------------------------------------------------------------------------

    fn pattern_text() -> impl Strategy<Value = String> {
        prop_oneof![
            r"[a-c*?/\[\]!.\\^:{}()$|+ xdQEpPbBz07-]{0,16}",
            r"(\*\*/)?[a-c]{0,2}(/[a-c*?]{1,3}){0,3}",
            any::<String>(),
        ]
    }

    fn path_text() -> impl Strategy<Value = String> {
        prop_oneof![
            r"[a-c*?/\[\]!.\\^ -]{0,16}",
            r"[a-c]{1,3}(/[a-c.]{1,3}){0,4}",
            any::<String>()
        ]
    }

    proptest! {
        #[test]
        fn the_matcher_never_panics(patterns in prop::collection::vec(pattern_text(), 0..5),
                                    paths in prop::collection::vec(path_text(), 0..5)) {
            if let Ok(pm) = PatternMatcher::new(&patterns) {
                let mut info = MatchInfo::default();
                for path in &paths {
                    let _ = pm.matches_exact(path);
                    let _ = pm.matches_or_parent_matches(path);
                    info = pm.matches_using_parent_results(path, &info).1;
                }
                // a MatchInfo from another matcher is tolerated
                let other = matcher(&["a", "b", "c", "d", "e", "f"]);
                let (_, foreign) = other.matches_using_parent_results("a", &MatchInfo::default());
                let _ = pm.matches_using_parent_results("a/b", &foreign);
            }
        }

        #[test]
        fn reading_any_ignore_file_never_panics(content in prop::collection::vec(any::<u8>(), 0..256)) {
            let lines = read_ignore_patterns(&content);
            let patterns: Vec<&str> = lines.iter().map(|l| l.pattern.as_str()).collect();
            if let Err(e) = PatternMatcher::new(&patterns) {
                prop_assert!(e.index < patterns.len());
            }
        }

        #[test]
        fn clean_is_idempotent(path in path_text()) {
            let once = clean(&path);
            prop_assert_eq!(clean(&once), once);
        }

        /// Without exceptions, carrying the parents' results gives the same answer as
        /// checking the parents by name.
        #[test]
        fn parent_results_agree_with_parent_names_without_exceptions(
            patterns in prop::collection::vec(r"(\*\*/)?[ab*?]{1,2}(/[ab*?]{1,2}){0,2}(/\*\*)?", 1..4),
            path in r"[ab]{1,2}(/[ab]{1,2}){0,4}",
        ) {
            let pm = PatternMatcher::new(&patterns).unwrap();
            prop_assert_eq!(matches_with_parent_chain(&pm, &path), pm.matches_or_parent_matches(&path));
        }
    }
}
