//! The entries of an upload as they arrive, for
//! [`AddInput::Parts`](super::AddInput::Parts): [`AddPart`] and
//! [`ChunkReader`], a blocking [`Read`] over a bounded channel of
//! [`Bytes`] chunks. Both end only when the sender says so: a sender that
//! goes away without it is an upload that broke off, never a truncated
//! file or tree.
//!
//! This module owns only the hand-over between the task receiving an
//! upload and the importer's blocking thread; the bounded channels are the
//! back-pressure (a slow import slows the upload down instead of buffering
//! it). It must not parse, store or import anything itself.

use std::fmt;
use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

/// What an upload that ends without saying so reads: an error, never a
/// truncated file or tree.
const BROKE_OFF: &str = "the upload broke off";

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
    /// Every entry was sent. Entries that stop without it (the channel
    /// closed) are an upload that broke off.
    End,
}

impl fmt::Debug for AddPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddPart::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
            AddPart::File { path, .. } => f
                .debug_struct("File")
                .field("path", path)
                .finish_non_exhaustive(),
            AddPart::End => f.write_str("End"),
        }
    }
}

/// The entries of an upload, ended by [`AddPart::End`]; an error (or the
/// channel closing before the end) aborts the import.
pub type Parts = mpsc::Receiver<io::Result<AddPart>>;

/// One message of a [`ChunkSender`].
enum Chunk {
    Data(Bytes),
    End,
    Failed(io::Error),
}

/// The sending side of a [`ChunkReader`]: chunks, then [`finish`]
/// (dropped without it, the reader fails).
///
/// [`finish`]: ChunkSender::finish
#[derive(Debug)]
pub struct ChunkSender {
    tx: mpsc::Sender<Chunk>,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chunk::Data(b) => write!(f, "Data({} bytes)", b.len()),
            Chunk::End => f.write_str("End"),
            Chunk::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// The reader went away (the import stopped).
#[derive(Debug, thiserror::Error)]
#[error("the import stopped reading")]
pub struct ReaderGone;

impl ChunkSender {
    /// Sends the next chunk, waiting while the reader is behind.
    pub async fn send(&self, chunk: Bytes) -> Result<(), ReaderGone> {
        self.tx
            .send(Chunk::Data(chunk))
            .await
            .map_err(|_| ReaderGone)
    }

    /// Ends the file: the reader reads its end once it has the chunks.
    pub async fn finish(self) -> Result<(), ReaderGone> {
        self.tx.send(Chunk::End).await.map_err(|_| ReaderGone)
    }

    /// Makes the reader fail with `error` once it has the chunks before.
    pub async fn fail(self, error: io::Error) -> Result<(), ReaderGone> {
        self.tx
            .send(Chunk::Failed(error))
            .await
            .map_err(|_| ReaderGone)
    }
}

/// A [`Read`] over the chunks of a file as they arrive: a failure is
/// returned as the read error (the upload broke off), and so is a sender
/// gone without [`ChunkSender::finish`]; the end comes after `finish`.
///
/// Its reads block on the channel: use it on a blocking thread (the
/// importer's), never on an async task.
pub struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkReader")
            .field("buffered", &self.current.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ChunkReader {
    /// A reader with `capacity` chunks in flight, and its sender.
    pub fn channel(capacity: usize) -> (ChunkSender, ChunkReader) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            ChunkSender { tx },
            ChunkReader {
                rx,
                current: Bytes::new(),
                ended: false,
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
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(chunk)) => self.current = chunk,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(e),
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, BROKE_OFF)),
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sender = std::thread::spawn(move || {
            rt.block_on(async {
                for piece in [&b"hello "[..], b"", b"chunked ", b"world"] {
                    tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
                }
                tx.finish().await.unwrap();
            });
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
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "the end stays the end");
    }

    #[test]
    fn a_failure_or_a_sender_gone_without_finishing_is_a_read_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut reader) = ChunkReader::channel(4);
        rt.block_on(async {
            tx.send(Bytes::from_static(b"part")).await.unwrap();
            tx.fail(io::Error::other("cut off")).await.unwrap();
        });
        let mut all = Vec::new();
        let err = reader.read_to_end(&mut all).unwrap_err();
        assert_eq!(err.to_string(), "cut off");
        assert_eq!(all, b"part");

        let (tx, mut reader) = ChunkReader::channel(4);
        rt.block_on(tx.send(Bytes::from_static(b"some"))).unwrap();
        drop(tx);
        let mut all = Vec::new();
        let err = reader.read_to_end(&mut all).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(all, b"some", "never a silently truncated file");
    }
}
