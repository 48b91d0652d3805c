//! The crate's public error: everything a publisher, subscriber, collector or sink can report.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::transport::SocketError;
use crate::wire::{DecodeError, EncodeError};

/// An ndbridge error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller asked for a message that cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A peer sent a message that does not follow the wire format.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A socket could not be opened or attached.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// ZeroMQ failed while sending or receiving.
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The publisher's queue stayed full for the whole send timeout.
    #[error("send queue full: {queued} bytes queued, limit {limit}, waited {waited:?}")]
    QueueFull {
        /// Bytes queued.
        queued: usize,
        /// The queue limit in bytes.
        limit: usize,
        /// How long `send` waited.
        waited: Duration,
    },
    /// `flush` or `close` ran out of time before every message was passed on to a peer.
    #[error("timed out after {waited:?} with {pending} messages not passed on to a peer")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// Messages queued, or held by ZeroMQ, and not passed on (after `close`: discarded).
        pending: usize,
    },
    /// A subscriber waited its whole receive timeout and no record came.
    #[error("no record within {waited:?} from {endpoints}")]
    RecvTimeout {
        /// How long it waited.
        waited: Duration,
        /// The subscriber's endpoints.
        endpoints: String,
    },
    /// `close` found that no peer ever took a message: nothing listens at the endpoints (or
    /// not the right kind of socket).
    #[error(
        "no peer took any of {messages} messages from {endpoints}: is a collector listening there?"
    )]
    NoPeer {
        /// The publisher's endpoints.
        endpoints: String,
        /// Messages sent and discarded.
        messages: usize,
    },
    /// The publisher has been closed: it takes no more messages.
    #[error("the publisher is closed and takes no more messages")]
    Closed,
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread ended by panicking.
    #[error("thread {name} panicked")]
    ThreadPanicked {
        /// The thread's name.
        name: String,
    },
}
