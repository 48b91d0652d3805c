//! ndbridge moves numpy / ndarray arrays between processes over ZeroMQ: named arrays as
//! multipart messages, a JSON header and one buffer frame per array, raw or zstd (optionally
//! byte-shuffled), never pickled. Any pyzmq + numpy program reads them in a few lines.
//!
//! # Layout
//! - [`wire`]: the format as pure code over bytes: header, dtypes, codecs, encode and decode.
//! - [`synth`]: smooth synthetic fields for demos and benchmarks.
//!
//! # Data flow
//! `ndarray -> wire::encode -> frames => wire::decode -> typed views (borrowed when aligned)`
#![deny(missing_docs)]

pub mod synth;
pub mod wire;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
