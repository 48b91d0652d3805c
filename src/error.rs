//! The crate's public error: everything a publisher, subscriber, collector or sink can report.
//!
//! # Messages say it all, once
//! Every error of this crate writes its whole message, cause included, in its `Display` (so
//! `to_string()` and a log line lose nothing), and therefore returns no cause from
//! [`source`](std::error::Error::source): a report that prints the chain (anyhow's `{:#}`)
//! then prints each cause once, not `Address already in use: Address already in use`. The
//! cause stays a typed field of the error for programs that match on it.

use std::fmt;
use std::time::Duration;

use crate::plural::plural;
use crate::transport::SocketError;
use crate::wire::{DecodeError, EncodeError};

/// An ndbridge error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The caller asked for a message that cannot be encoded.
    Encode(EncodeError),
    /// A peer sent a message that does not follow the wire format.
    Decode(DecodeError),
    /// A socket could not be opened or attached.
    Socket(SocketError),
    /// ZeroMQ failed while sending or receiving.
    Zmq(zmq::Error),
    /// The publisher's queue stayed full for the whole send timeout.
    QueueFull {
        /// Bytes queued.
        queued: usize,
        /// The queue limit in bytes.
        limit: usize,
        /// How long `send` waited.
        waited: Duration,
    },
    /// `flush` or `close` ran out of time before every message was passed on to a peer.
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// Messages queued, or held by ZeroMQ, and not passed on (after `close`: discarded).
        pending: usize,
    },
    /// A subscriber waited its whole receive timeout and no record came.
    RecvTimeout {
        /// How long it waited.
        waited: Duration,
        /// The subscriber's endpoints.
        endpoints: String,
    },
    /// `close` found that no peer ever took a message: nothing listens at the endpoints (or
    /// not the right kind of socket).
    NoPeer {
        /// The publisher's endpoints.
        endpoints: String,
        /// Messages sent and discarded.
        messages: usize,
        /// The publisher used CURVE: a collector that does not admit its key, or whose public
        /// key is not the one given, also takes nothing.
        curve: bool,
    },
    /// Acked delivery: `close` ended with records the collector did not acknowledge, or
    /// acknowledged as refused.
    Unacknowledged {
        /// How long `close` waited.
        waited: Duration,
        /// Records sent (or still queued) that no acknowledgement settled: the collector may
        /// not have them. With a spool, also the messages of earlier publishers found in it
        /// and not acknowledged yet.
        unacknowledged: usize,
        /// Records the collector refused for good (its log says why).
        refused: usize,
        /// The spool where the records sent and not acknowledged stay: the next publisher
        /// that opens it sends them ([`PublisherBuilder::spool_dir`]).
        ///
        /// [`PublisherBuilder::spool_dir`]: crate::PublisherBuilder::spool_dir
        kept: Option<std::path::PathBuf>,
    },
    /// Acked delivery's spool could not be opened or written.
    Spool {
        /// The spool's directory.
        dir: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The publisher has been closed: it takes no more messages.
    Closed,
    /// A thread could not be started.
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The calling program asked for something the API does not do, such as a socket kind
    /// the publisher cannot send on: a mistake in the caller's code, not in the network or a
    /// peer (those are [`Error::Decode`], [`Error::Socket`], ...).
    Usage {
        /// The setting or call that was misused, as the API names it (`PublisherBuilder::kind`).
        what: &'static str,
        /// What it takes.
        expected: &'static str,
        /// What it was given.
        found: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Encode(e) => e.fmt(f),
            Error::Decode(e) => e.fmt(f),
            Error::Socket(e) => e.fmt(f),
            Error::Zmq(e) => write!(f, "ZeroMQ: {e}"),
            Error::QueueFull {
                queued,
                limit,
                waited,
            } => write!(
                f,
                "send queue full: {queued} bytes queued, limit {limit}, waited {waited:?}"
            ),
            Error::Timeout { waited, pending } => write!(
                f,
                "timed out after {waited:?} with {} not passed on to a peer",
                plural(*pending as u64, "message")
            ),
            Error::Unacknowledged {
                waited,
                unacknowledged,
                refused,
                kept,
            } => {
                let mut parts = Vec::new();
                if *unacknowledged > 0 {
                    let kept = match kept {
                        Some(dir) => format!(
                            " (kept in the spool {}: the next publisher on it sends them)",
                            dir.display()
                        ),
                        None => String::new(),
                    };
                    parts.push(format!(
                        "{} not acknowledged by the collector within {waited:?}{kept}",
                        plural(*unacknowledged as u64, "record")
                    ));
                }
                if *refused > 0 {
                    parts.push(format!(
                        "{} refused by the collector (see its log)",
                        plural(*refused as u64, "record")
                    ));
                }
                f.write_str(&parts.join("; "))
            }
            Error::Spool { dir, source } => write!(f, "spool {}: {source}", dir.display()),
            Error::RecvTimeout { waited, endpoints } => {
                write!(f, "no record within {waited:?} from {endpoints}")
            }
            Error::NoPeer {
                endpoints,
                messages,
                curve,
            } => write!(
                f,
                "no peer took any of {} from {endpoints}: is a collector listening there?{}",
                plural(*messages as u64, "message"),
                if *curve {
                    " Does it admit this publisher's key (--allow), and is its public key the \
                     one given?"
                } else {
                    ""
                }
            ),
            Error::Closed => f.write_str("the publisher is closed and takes no more messages"),
            Error::Thread { name, source } => write!(f, "cannot start thread {name}: {source}"),
            Error::Usage {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
        }
    }
}

/// No cause is returned: each message includes it (see the module's documentation).
impl std::error::Error for Error {}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Error {
        Error::Encode(e)
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Decode(e)
    }
}

impl From<SocketError> for Error {
    fn from(e: SocketError) -> Error {
        Error::Socket(e)
    }
}

impl From<zmq::Error> for Error {
    fn from(e: zmq::Error) -> Error {
        Error::Zmq(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Each message of a chain, as anyhow's `{:#}` prints them.
    fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(error), |&e| e.source())
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_cause_is_written_once_in_the_chain() {
        let errors = [
            Error::Socket(SocketError {
                action: "bind",
                address: "tcp://127.0.0.1:5555".into(),
                source: zmq::Error::EADDRINUSE,
            }),
            Error::Zmq(zmq::Error::ETERM),
            Error::Thread {
                name: "ndbridge-publisher".into(),
                source: std::io::Error::from_raw_os_error(11),
            },
        ];
        for error in &errors {
            let messages = chain(error);
            assert_eq!(messages.len(), 1, "{messages:?}");
        }
        assert_eq!(
            errors[0].to_string(),
            "cannot bind tcp://127.0.0.1:5555: Address already in use"
        );
        assert_eq!(errors[1].to_string(), "ZeroMQ: Context was terminated");
    }

    #[test]
    fn usage_says_what_was_expected_and_what_came() {
        let error = Error::Usage {
            what: "PublisherBuilder::kind",
            expected: "SocketKind::Push or SocketKind::Pub",
            found: "SocketKind::Pull".into(),
        };
        assert_eq!(
            error.to_string(),
            "PublisherBuilder::kind: expected SocketKind::Push or SocketKind::Pub, \
             found SocketKind::Pull"
        );
        assert!(error.source().is_none());
    }

    #[test]
    fn counts_are_plural_only_when_not_one() {
        let one = Error::NoPeer {
            endpoints: "tcp://127.0.0.1:5555".into(),
            messages: 1,
            curve: false,
        };
        assert!(one.to_string().contains("any of 1 message from"), "{one}");
        assert!(!one.to_string().contains("key"), "{one}");
        let keyed = Error::NoPeer {
            endpoints: "tcp://127.0.0.1:5555".into(),
            messages: 1,
            curve: true,
        };
        assert!(
            keyed.to_string().contains("admit this publisher's key"),
            "{keyed}"
        );
        let two = Error::Timeout {
            waited: Duration::from_secs(1),
            pending: 2,
        };
        assert!(two.to_string().contains("with 2 messages not"), "{two}");
    }
}
