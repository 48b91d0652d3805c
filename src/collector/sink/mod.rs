//! Where decoded records go: the [`Sink`] trait, and the disk and forward sinks.

mod disk;
mod forward;

use std::time::SystemTime;

use bytes::Bytes;

use crate::wire::Record;

pub use disk::DiskSink;
pub use forward::ForwardSink;

/// A message the collector received and decoded.
#[derive(Debug, Clone)]
pub struct Received {
    /// The decoded record: header and arrays (borrowing the frames).
    pub record: Record,
    /// The frames as received, `[header, buf_0, ...]` (without a topic frame).
    pub frames: Vec<Bytes>,
    /// When the collector read the message.
    pub received_at: SystemTime,
}

/// Why a sink could not take a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path the disk sink writes through is not what it must be: a symbolic link or another
    /// kind of file where a directory is expected, or where the manifest is expected something
    /// other than a regular file of one link. The sink never follows or writes through it.
    #[error("{path}: expected {expected}, found {found}; not written through")]
    UnsafePath {
        /// The path concerned.
        path: std::path::PathBuf,
        /// What the sink needs there, for example "a directory".
        expected: &'static str,
        /// What is there, for example "a symbolic link".
        found: String,
    },
    /// The sink is full or closed and dropped the record.
    #[error("{0}")]
    Dropped(&'static str),
    /// Anything else, from a user's sink.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// A destination for decoded records. Decode workers call [`Sink::write`] concurrently, so a
/// sink is `Send + Sync` and does its own locking.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use ndbridge::collector::{Received, Sink, SinkError};
///
/// /// Counts the bytes of every array it sees.
/// #[derive(Default)]
/// struct ByteCounter(AtomicU64);
///
/// impl Sink for ByteCounter {
///     fn name(&self) -> &str {
///         "bytes"
///     }
///     fn write(&self, message: &Received) -> Result<(), SinkError> {
///         self.0.fetch_add(message.record.raw_bytes(), Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send + Sync {
    /// A short name for logs and statistics.
    fn name(&self) -> &str;

    /// Takes one record. An error is counted and logged; the collector goes on.
    fn write(&self, message: &Received) -> Result<(), SinkError>;

    /// Called once after the last record, before the collector returns: flush, close, join.
    fn finish(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Extra counters for the summary (for example names escaped, messages dropped).
    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}
