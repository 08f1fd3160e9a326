//! File operations of the cache directory: atomic writes (a temp file in `tmp/`, flushed,
//! then renamed into place), checksums, sizes, and removal of our own entries only.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Where partial writes go; emptied when the cache is opened.
pub const TMP_DIR: &str = "tmp";
/// Suffix of a file being written.
pub const PARTIAL: &str = ".partial";

/// A fresh temp path in `root/tmp/` for something that will become `name`.
pub fn temp_path(root: &Path, name: &str) -> PathBuf {
    let base = Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    root.join(TMP_DIR)
        .join(format!("{base}.{:016x}{PARTIAL}", rand::random::<u64>()))
}

/// Flushes a directory entry change (a rename) to disk.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `root/rel` atomically.
pub fn write_atomic(root: &Path, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = root.join(rel);
    let tmp = temp_path(root, rel);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&tmp, &target)?;
        if let Some(parent) = target.parent() {
            sync_dir(parent);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What [`write_stream_atomic`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

/// Why [`write_stream_atomic`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The stream of bytes failed (for an export: the daemon's answer).
    #[error("{source}")]
    Stream {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file operation in the cache directory failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// `create`, `write`, `flush`.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The complete temp file could not be renamed to `target`.
    #[error("cannot move the archive into place: {source}")]
    Rename {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Streams chunks into `root/rel`, hashing them on the way: into a temp file first, renamed
/// into place only when the stream ended without error. On any error nothing is left behind
/// (and a process killed meanwhile leaves only a `tmp/*.partial` file, removed at next open).
pub async fn write_stream_atomic<S, E>(
    root: &Path,
    rel: &str,
    mut stream: S,
) -> Result<Written, WriteError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let target = root.join(rel);
    let tmp = temp_path(root, rel);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { what, path, source }
    };
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("create", &tmp))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| WriteError::Stream { source: e.into() })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io("write", &tmp))?;
        }
        file.sync_all().await.map_err(io("flush", &tmp))?;
        drop(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::rename(&tmp, &target).map_err(|source| WriteError::Rename {
            target: target.clone(),
            source,
        })?;
        if let Some(parent) = target.parent() {
            sync_dir(parent);
        }
        Ok(Written {
            size,
            sha256: hex(&hasher.finalize()),
        })
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<Written> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(Written {
        size,
        sha256: hex(&hasher.finalize()),
    })
}

/// Bytes used by a file or a directory tree (each inode counted once; symlinks not followed).
pub fn disk_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    total
}

/// Removes a file or a directory tree; a missing path is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Files directly inside `dir` (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = root();
        write_atomic(dir.path(), "index.json", b"one").unwrap();
        write_atomic(dir.path(), "index.json", b"two").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("index.json")).unwrap(),
            b"two"
        );
        assert!(files_in(&dir.path().join(TMP_DIR)).is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_fails_midway_leaves_nothing() {
        let dir = root();
        let chunks: Vec<Result<bytes::Bytes, String>> = vec![
            Ok(bytes::Bytes::from_static(b"first part")),
            Err("connection reset by peer".into()),
        ];
        let err = write_stream_atomic(
            dir.path(),
            "base-images/x.tar",
            futures_util::stream::iter(chunks),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WriteError::Stream { .. }), "{err:?}");
        assert_eq!(err.to_string(), "connection reset by peer");
        assert!(!dir.path().join("base-images/x.tar").exists());
        assert!(files_in(&dir.path().join(TMP_DIR)).is_empty());
    }

    #[tokio::test]
    async fn a_complete_stream_is_hashed_and_moved_into_place() {
        let dir = root();
        let chunks: Vec<Result<bytes::Bytes, String>> = vec![
            Ok(bytes::Bytes::from_static(b"ab")),
            Ok(bytes::Bytes::from_static(b"c")),
        ];
        let written = write_stream_atomic(
            dir.path(),
            "images/s.tar",
            futures_util::stream::iter(chunks),
        )
        .await
        .unwrap();
        assert_eq!(written.size, 3);
        // sha256("abc")
        assert_eq!(
            written.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_file(&dir.path().join("images/s.tar")).unwrap(),
            written
        );
    }

    #[test]
    fn hard_links_are_counted_once() {
        let dir = root();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_size(dir.path()), 1000);
    }
}
