//! The tar itself (`addTarFile` in moby/go-archive): headers as docker writes them (uid/gid
//! 0, mode and mtime kept, symlinks, hard links, devices), the `.dockerignore` amended for a
//! Dockerfile outside the context, and the finished [`ContextArchive`].

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ContextError, DOCKERIGNORE};

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

/// A Dockerfile that lies outside the context: added to the archive under `name`.
pub(super) struct OutsideDockerfile {
    pub(super) name: String,
    pub(super) content: Vec<u8>,
    pub(super) mtime: u64,
    /// Whether the context's `.dockerignore` was met (and amended) during the walk.
    pub(super) dockerignore_written: bool,
}

/// What went into an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextStats {
    /// Entries that are not directories (files, symlinks, hard links, devices).
    pub files: usize,
    /// Bytes of file content (headers and padding not counted).
    pub size: u64,
}

/// The tar being written (to memory, a pipe or a request body), and what has been counted.
pub(super) struct Archive<W: io::Write> {
    builder: tar::Builder<W>,
    files: usize,
    size: u64,
    /// First archived name of each (device, inode) with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    pub(super) outside: Option<OutsideDockerfile>,
}

impl<W: io::Write> Archive<W> {
    pub(super) fn new(out: W, outside: Option<OutsideDockerfile>) -> Archive<W> {
        Archive {
            builder: tar::Builder::new(out),
            files: 0,
            size: 0,
            links: HashMap::new(),
            outside,
        }
    }

    /// addTarFile: one walked path.
    pub(super) fn add(
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
            let mut header = header(tar::EntryType::Directory, mode, mtime);
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
                let mut header = header(tar::EntryType::Link, mode, mtime);
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
            let mut header = header(tar::EntryType::Symlink, mode, mtime);
            self.builder
                .append_link(&mut header, rel, target)
                .map_err(write_err)?;
        } else if file_type.is_file() {
            // Streamed (a context may hold files of gigabytes): the size is the open file's,
            // and exactly that many bytes are written even if it grows or shrinks meanwhile.
            let file = fs::File::open(abs).map_err(unreadable)?;
            let len = file.metadata().map_err(unreadable)?.len();
            let mut header = header(tar::EntryType::Regular, mode, mtime);
            header.set_size(len);
            self.builder
                .append_data(&mut header, rel, ExactLen::new(file, len))
                .map_err(write_err)?;
            self.size += len;
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
        let mut header = header(tar::EntryType::Regular, mode_bits(&meta), mtime_secs(&meta));
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
    pub(super) fn add_generated(
        &mut self,
        name: &str,
        content: &[u8],
        mtime: u64,
    ) -> Result<(), ContextError> {
        let mut header = header(tar::EntryType::Regular, 0o600, mtime);
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

    /// Writes the end of the archive and hands back the writer.
    pub(super) fn finish(self) -> Result<(W, ContextStats), ContextError> {
        let out = self
            .builder
            .into_inner()
            .map_err(|source| ContextError::Archive {
                path: PathBuf::from("(end of archive)"),
                source,
            })?;
        let stats = ContextStats {
            files: self.files,
            size: self.size,
        };
        Ok((out, stats))
    }
}

/// Reads exactly `len` bytes of a file: its data, cut at `len` if it grew, padded with zeros
/// if it shrank since its size was taken (a tar header's size must be what follows it).
struct ExactLen<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: io::Read> ExactLen<R> {
    fn new(inner: R, len: u64) -> ExactLen<R> {
        ExactLen {
            inner: io::Read::take(inner, len),
            left: len,
        }
    }
}

impl<R: io::Read> io::Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = match self.inner.read(buf)? {
            0 => {
                let n = buf
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                n
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// A header as docker writes it: owner 0:0, the mode and mtime kept, size 0 until set.
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

pub(super) fn mtime_secs(meta: &fs::Metadata) -> u64 {
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
        let mut header = header(entry_type, mode, mtime);
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
