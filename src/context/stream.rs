//! A build context written as it is read: the tar goes through a bounded channel in chunks,
//! so a context of gigabytes is hashed or sent with a few chunks in memory, never whole.

use std::io;
use std::sync::mpsc;

use super::{ContextError, ContextStats, PreparedContext};

/// The size of one chunk of the tar.
pub const CHUNK: usize = 256 << 10;

/// Chunks in flight between the writer and the reader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A writer that hands its bytes on in chunks of [`CHUNK`] to `send`; a `send` error (the
/// reader went away) is the writer's error. `flush` hands on what is buffered.
pub struct ChunkWriter<F: FnMut(Vec<u8>) -> io::Result<()>> {
    buffer: Vec<u8>,
    send: F,
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> ChunkWriter<F> {
    pub fn new(send: F) -> ChunkWriter<F> {
        ChunkWriter {
            buffer: Vec::with_capacity(CHUNK),
            send,
        }
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> io::Write for ChunkWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == CHUNK {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
            (self.send)(full)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            (self.send)(rest)?;
        }
        Ok(())
    }
}

/// The reader went away before the archive was written.
pub fn reader_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the reader of the context went away",
    )
}

/// Writes `context` as a tar on a thread of its own and gives the tar to `read` as a stream
/// while it is written. Returns what `read` returned and what went into the archive; an error
/// of the archive (an unreadable file) comes before an error of `read`.
pub fn read_streamed<T>(
    context: PreparedContext,
    read: impl FnOnce(&mut dyn io::Read) -> io::Result<T>,
) -> Result<(T, ContextStats), StreamError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let out = ChunkWriter::new(move |chunk| tx.send(chunk).map_err(|_| reader_gone()));
            let (mut out, stats) = context.write_to(out)?;
            io::Write::flush(&mut out).map_err(|source| ContextError::Archive {
                path: "(end of archive)".into(),
                source,
            })?;
            Ok::<_, ContextError>(stats)
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let read = read(&mut reader);
        // Unblocks a writer still sending after `read` stopped early.
        drop(reader);
        let written = writer.join().unwrap_or_else(|_| {
            Err(ContextError::Archive {
                path: "(archive writer)".into(),
                source: io::Error::other("the archive writer panicked"),
            })
        });
        match (written, read) {
            (Err(e), _) => Err(StreamError::Context(e)),
            (Ok(_), Err(e)) => Err(StreamError::Read(e)),
            (Ok(stats), Ok(value)) => Ok((value, stats)),
        }
    })
}

/// Why a streamed context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("reading the context archive: {0}")]
    Read(#[source] io::Error),
}

/// The reading end: chunks as they come.
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                // The writer is done (or failed: its error is reported by read_streamed).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_archive_is_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        std::fs::create_dir(ctx.join("data")).unwrap();
        // More than a few chunks, and a file that ends mid-chunk.
        let big: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(ctx.join("data/big.bin"), &big).unwrap();
        std::fs::write(ctx.join("data/small.txt"), "hello\n").unwrap();
        let whole = crate::context::context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
        let prepared = crate::context::prepare_context(ctx, &ctx.join("Dockerfile")).unwrap();
        let (streamed, stats) = read_streamed(prepared, |r| {
            let mut all = Vec::new();
            r.read_to_end(&mut all)?;
            Ok(all)
        })
        .unwrap();
        assert_eq!(streamed, whole.bytes);
        assert_eq!((stats.files, stats.size), (whole.files, whole.size));
    }

    #[test]
    fn a_reader_that_stops_early_does_not_hang_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(ctx.join("big.bin"), vec![7u8; 8 * CHUNK]).unwrap();
        let prepared = crate::context::prepare_context(ctx, &ctx.join("Dockerfile")).unwrap();
        let err = read_streamed(prepared, |r| {
            let mut first = [0u8; 10];
            r.read_exact(&mut first)?;
            Err::<(), _>(io::Error::other("stopped"))
        })
        .unwrap_err();
        // The writer failed because the reader went away: that is what is reported.
        assert!(err.to_string().contains("went away"), "{err}");
    }
}
