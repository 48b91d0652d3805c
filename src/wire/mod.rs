//! The wire format, as pure code over bytes: no sockets, no threads, no files, no logging.
//!
//! A message is `[header, buf_0, ..., buf_{n-1}]` (on PUB/SUB sockets a topic frame comes
//! first). The header is a JSON object ([`Header`]) with one entry per buffer frame
//! ([`ArrayMeta`]); each buffer is raw or zstd, optionally byte-shuffled ([`Compression`]).
//! `docs/wire-format.md` is the full contract.
//!
//! - [`dtype`]: type strings and the [`Element`] trait
//! - [`header`]: the JSON header, parsed with field-level errors
//! - [`template`]: a stream's headers written and read by reusing what they share
//! - [`codec`], [`shuffle()`]: buffer transforms (shuffled zstd frames are decoded block by
//!   block, raw blocks unshuffled straight from the frame)
//! - [`encode()`] / [`decode()`]: whole messages
//! - [`Limits`]: what a decoder accepts before allocating

pub mod buffer;
pub mod codec;
pub mod decode;
pub mod dtype;
pub mod encode;
pub mod error;
pub mod header;
pub mod limits;
pub mod shuffle;
pub mod template;
mod zstd_blocks;
mod zstd_frame;
mod zstd_streams;

pub use codec::{check_buffer, decode_allocation, Compression, DecodeAllocation};
pub use decode::{decode, DecodedArray, Decoder, DynArray, Record};
pub use dtype::{ByteOrder, DType, Element, Kind};
pub use encode::{encode, ArrayBuffer, EncodedMessage, Encoder, Envelope};
pub use error::{DTypeError, DecodeError, EncodeError, ViewError};
pub use header::{ArrayMeta, Codec, Filter, Header, Order, FORMAT_VERSION, MAX_NAME_BYTES};
pub use limits::{Limits, EXPANSION_FREE_BYTES};
pub use shuffle::{shuffle, unshuffle};
pub use template::{HeaderCache, HeaderWriter, MAX_TEMPLATE_BYTES};
