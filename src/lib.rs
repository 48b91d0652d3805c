//! ndbridge moves numpy / ndarray arrays between processes over ZeroMQ: named arrays as
//! multipart messages, a JSON header and one buffer frame per array, raw or zstd (optionally
//! byte-shuffled), never pickled. Any pyzmq + numpy program reads them in a few lines.
//!
//! # Layout
//! - [`wire`]: the format as pure code over bytes: header, dtypes, codecs, encode and decode.
//!   No sockets, threads, files or logging.
//! - [`transport`]: every ZeroMQ socket ndbridge opens, and zero-copy frame send/receive.
//! - [`publisher`]: the handle simulation threads share; one thread owns the socket.
//! - [`subscriber`]: receives and decodes records from a forward socket or PUB publishers.
//! - [`pacing`]: when compression pays, from the link's and the compressor's measured speed.
//! - [`collector`]: receiver thread, decode workers, sinks (disk, forward, yours), statistics.
//! - [`npy`]: `.npy` / `.npz` files read and written as bytes (any wire dtype, either order).
//! - [`demo`]: the end-to-end demo behind `ndbridge demo`.
//! - [`synth`]: smooth synthetic fields for demos and benchmarks.
//! - `src/bin/ndbridge.rs`: the command line (`collect`, `send`, `tail`, `demo`), built with
//!   the default feature `cli`; without it (`default-features = false`) the crate compiles
//!   none of the command line's dependencies.
//!
//! # Data flow
//! ```text
//! ndarray -> Publisher -> wire::encode -> zmq => receiver thread -> bounded channel
//!   -> decode workers (wire::decode) -> sinks (disk | forward PUB | yours)
//!   => Python: recv_multipart -> np.frombuffer
//! ```
#![deny(missing_docs)]

mod budget;
pub mod collector;
pub mod demo;
pub mod error;
pub mod npy;
pub mod pacing;
pub mod publisher;
pub mod subscriber;
pub mod synth;
pub mod transport;
pub mod wire;

pub use collector::{Collector, CollectorBuilder, Shutdown, Sink};
pub use error::Error;
pub use publisher::{FullPolicy, Link, Publisher, PublisherBuilder, PublisherStats};
pub use subscriber::{Subscriber, SubscriberBuilder};
pub use transport::SocketKind;
pub use wire::{ArrayBuffer, Compression, Limits};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
