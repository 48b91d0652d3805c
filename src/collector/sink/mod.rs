//! Where decoded records go: the [`Sink`] trait, and the store, disk and forward sinks.

mod disk;
mod forward;
mod store;

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;

use crate::wire::Record;

pub use disk::DiskSink;
pub use forward::ForwardSink;
pub use store::StoreSink;

/// A message the collector received and decoded.
#[derive(Debug, Clone)]
pub struct Received {
    /// The decoded record: header and arrays (borrowing the frames).
    pub record: Record,
    /// The frames as received, `[header, buf_0, ...]` (without a topic frame).
    pub frames: Vec<Bytes>,
    /// When the collector read the message.
    pub received_at: SystemTime,
    /// With CURVE, the source the header named when it was not the name of the key that sent
    /// the record (the record's source is then the key's name).
    pub claimed_source: Option<String>,
}

/// Why a sink could not take a record.
///
/// Each message includes its cause, so [`source`](std::error::Error::source) returns none
/// (see [`Error`](crate::Error)); a user's error ([`SinkError::Other`]) is passed through as
/// it is.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// A file operation failed.
    Io {
        /// The path concerned.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path the disk sink writes through is not what it must be: a symbolic link or another
    /// kind of file where a directory is expected, or where the manifest is expected something
    /// other than a regular file of one link. The sink never follows or writes through it.
    UnsafePath {
        /// The path concerned.
        path: std::path::PathBuf,
        /// What the sink needs there, for example "a directory".
        expected: &'static str,
        /// What is there, for example "a symbolic link".
        found: String,
    },
    /// The output directory given to the disk sink, or a directory above it, is some other
    /// kind of file (a regular file, ...).
    NotADirectory {
        /// The path that is not a directory.
        path: std::path::PathBuf,
        /// What it is, for example "a regular file".
        found: &'static str,
    },
    /// The sink is full or closed and dropped the record.
    Dropped(&'static str),
    /// Anything else, from a user's sink.
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl SinkError {
    /// True when the same write may succeed later: the disk is full (`ENOSPC`, `EDQUOT`), has
    /// failed to read or write (`EIO`), or was remounted read-only (`EROFS`). The collector then
    /// stops reading and retries the record instead of discarding it.
    pub fn may_pass(&self) -> bool {
        let SinkError::Io { source, .. } = self else {
            return false;
        };
        let passing = [
            rustix::io::Errno::NOSPC,
            rustix::io::Errno::DQUOT,
            rustix::io::Errno::IO,
            rustix::io::Errno::ROFS,
        ];
        source
            .raw_os_error()
            .is_some_and(|code| passing.iter().any(|e| e.raw_os_error() == code))
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SinkError::UnsafePath {
                path,
                expected,
                found,
            } => write!(
                f,
                "{}: expected {expected}, found {found}; not written through",
                path.display()
            ),
            SinkError::NotADirectory { path, found } => write!(
                f,
                "{}: not a directory (expected a directory to store records in, found {found})",
                path.display()
            ),
            SinkError::Dropped(why) => f.write_str(why),
            SinkError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Passed through as it is: its message, and its causes.
            SinkError::Other(e) => e.source(),
            _ => None,
        }
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for SinkError {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> SinkError {
        SinkError::Other(e)
    }
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

    /// Takes one record. An error is counted and logged, and the collector goes on; but for an
    /// error that may pass ([`SinkError::may_pass`]) the collector stops reading and calls
    /// `write` again with the same record until it succeeds (or the collector has been stopping
    /// for its drain timeout), so a sink returning such an error leaves nothing of the record
    /// behind.
    fn write(&self, message: &Received) -> Result<(), SinkError>;

    /// Takes the message that ends a publisher session (`message.record.header.end`: no
    /// arrays, its `seq` the number of records the session sent), with errors handled as for
    /// [`write`](Self::write). Default: nothing to keep.
    fn end(&self, message: &Received) -> Result<(), SinkError> {
        let _ = message;
        Ok(())
    }

    /// Makes every record taken so far visible to readers and whole after a crash of the
    /// collector (not of the machine): a sink that takes records into memory writes them out.
    /// The collector calls it every 500 ms and before each stats line, from one thread; errors
    /// are logged, and the records wait for the next flush. Default: nothing to do (a sink
    /// whose `write` leaves nothing in memory).
    fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes every record (and session end) taken so far durable: on stable storage, so that
    /// it survives a crash of the machine. In acked delivery the collector acknowledges a
    /// record only after every sink's `sync` that began after its `write` returned `Ok`; it
    /// calls `sync` from one thread, for many records at once (a group commit), while
    /// `write` goes on. Errors are retried with backoff. Default: nothing to do (a sink that
    /// keeps nothing, or passes records on).
    fn sync(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called once after the last record, before the collector returns: flush, close, join.
    fn finish(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Extra counters for the summary (for example names escaped, messages dropped).
    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// Notes that message `seq` of `source`'s `session` was refused for good (it could not
    /// be decoded or stored; `reason` says why), in acked delivery, where the refusal settles
    /// it: a sink that reports it again from [`stored_before`](Self::stored_before) lets a
    /// collector restarted on the same output acknowledge past it (else the publisher, which
    /// does not send it again, would wait for its acknowledgement for ever). Errors are
    /// logged. Default: nothing to keep.
    fn refused(
        &self,
        source: &str,
        session: &str,
        seq: u64,
        reason: &str,
    ) -> Result<(), SinkError> {
        let _ = (source, session, seq, reason);
        Ok(())
    }

    /// Calls `each(source, session, seq)` for every record, session end and refusal
    /// ([`refused`](Self::refused)) the sink held before the collector started (a collector
    /// restarted on the same output): the collector continues those sessions' sequence
    /// tracking, so that records lost across the restart count as gaps, and in acked delivery
    /// drops what comes again. Default: none.
    fn stored_before(&self, each: &mut dyn FnMut(&str, &str, u64)) {
        let _ = each;
    }
}
