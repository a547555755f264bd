//! The entries of an upload as they arrive, for
//! [`AddInput::Parts`](super::AddInput::Parts): [`AddPart`] and
//! [`ChunkReader`], a blocking [`Read`] over a bounded channel of
//! [`Bytes`] chunks.
//!
//! This module owns only the hand-over between the task receiving an
//! upload and the importer's blocking thread; the bounded channels are the
//! back-pressure (a slow import slows the upload down instead of buffering
//! it). It must not parse, store or import anything itself.

use std::fmt;
use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

/// One entry of an upload, in arrival order.
pub enum AddPart {
    /// A directory (`/`-separated path relative to the upload).
    Dir(String),
    /// A file: its path, and its bytes read on the importer's thread.
    File {
        /// `/`-separated path relative to the upload.
        path: String,
        /// The file's bytes, read to their end.
        body: Box<dyn Read + Send>,
    },
}

impl fmt::Debug for AddPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddPart::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
            AddPart::File { path, .. } => f
                .debug_struct("File")
                .field("path", path)
                .finish_non_exhaustive(),
        }
    }
}

/// The entries of an upload: an error aborts the import (the upload broke
/// off); the channel closing ends it.
pub type Parts = mpsc::Receiver<io::Result<AddPart>>;

/// A [`Read`] over the chunks of a file as they arrive: an error chunk is
/// returned as the read error (the upload broke off), the channel closing
/// is the end of the file.
///
/// Its reads block on the channel: use it on a blocking thread (the
/// importer's), never on an async task.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkReader")
            .field("buffered", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl ChunkReader {
    /// A reader with `capacity` chunks in flight, and the sender its
    /// chunks are sent on (dropped after the last one).
    pub fn channel(capacity: usize) -> (mpsc::Sender<io::Result<Bytes>>, ChunkReader) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            tx,
            ChunkReader {
                rx,
                current: Bytes::new(),
            },
        )
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_in_order_across_read_sizes_then_end() {
        let (tx, mut reader) = ChunkReader::channel(2);
        let sender = std::thread::spawn(move || {
            for piece in [&b"hello "[..], b"", b"chunked ", b"world"] {
                tx.blocking_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        sender.join().unwrap();
        assert_eq!(got, b"hello chunked world");
    }

    #[test]
    fn an_error_chunk_is_the_read_error() {
        let (tx, mut reader) = ChunkReader::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"part"))).unwrap();
        tx.try_send(Err(io::Error::other("the upload broke off")))
            .unwrap();
        let mut all = Vec::new();
        let err = reader.read_to_end(&mut all).unwrap_err();
        assert_eq!(err.to_string(), "the upload broke off");
        assert_eq!(all, b"part");
    }
}
