//! ndbridge moves numpy / ndarray arrays between processes over ZeroMQ: named arrays as
//! multipart messages, a JSON header and one buffer frame per array, raw or zstd (optionally
//! byte-shuffled; large arrays in parallel chunks on fast links), never pickled. Any pyzmq + numpy program reads them in a few lines.
//!
//! # The contract
//! - [`Publisher`] (built by [`PublisherBuilder`]): the handle simulation threads share to send
//!   named arrays; one thread owns the socket, compresses when it pays ([`Compression`],
//!   [`Link`]) and bounds its queue ([`FullPolicy`]).
//! - [`Subscriber`]: receives and decodes records from a collector's forward socket or from
//!   PUB publishers.
//! - [`Collector`] (module [`collector`]): receives from many publishers, decodes on a thread
//!   pool and hands records to its sinks: the [`StoreSink`](collector::StoreSink) (a Zarr v3
//!   run store), the [`DiskSink`](collector::DiskSink) (`.npy` files), the
//!   [`ForwardSink`](collector::ForwardSink), or yours ([`Sink`]).
//! - [`store`]: reading a run store back (groups, arrays, each record as its message).
//! - [`wire`]: the format as pure code over bytes (header, dtypes, codecs, encode and decode),
//!   for programs that move the frames themselves.
//! - [`npy`]: reading the `.npy` / `.npz` files the disk sink writes.
//! - [`Delivery`]: fire-and-forget (the default) or acknowledged, for both ends.
//! - [`Error`]: what the publisher, subscriber and collector return.
//!
//! # Layout
//! Each module says in its first lines what it owns. Private to the crate:
//! `transport` (every ZeroMQ socket ndbridge opens, zero-copy frame send and receive),
//! `publisher` and `subscriber` (the two ends), `delivery` (acked delivery's window of
//! unacknowledged messages), `link_pacing` (when compression pays on a network
//! link, from what the link delivers), `budget` (the byte budget with an RAII permit that
//! bounds the publisher's queue, the collector's decoding and the forward sink), `plural`
//! (counted nouns in messages: `1 record`, `2 records`). The command
//! line (`src/bin/ndbridge/`: `collect`, `send`, `tail`, `demo`) is built with the default
//! feature `cli`; without it (`default-features = false`) the crate compiles none of the
//! command line's dependencies.
//!
//! # Data flow
//! ```text
//! ndarray -> Publisher -> wire::encode -> zmq => receiver thread -> bounded channel
//!   -> decode workers (wire::decode) -> sinks (disk | forward PUB | yours)
//!   => Python: recv_multipart -> np.frombuffer
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod budget;
pub mod collector;
mod delivery;
mod error;
pub mod keys;
mod link_pacing;
pub mod npy;
mod plural;
mod publisher;
pub mod store;
mod subscriber;
#[cfg(test)]
mod synth;
mod transport;
pub mod wire;

pub use collector::{Collector, CollectorBuilder, Sink};
pub use delivery::Delivery;
pub use error::Error;
pub use keys::{Allowlist, KeyPair, PublicKey};
pub use publisher::{Chunking, FullPolicy, Link, Publisher, PublisherBuilder, PublisherStats};
pub use subscriber::{Subscriber, SubscriberBuilder};
pub use transport::{SocketKind, SocketOptions};
pub use wire::{ArrayBuffer, Compression, Limits};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
