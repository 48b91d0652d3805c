//! The wire format, as pure code over bytes: no sockets, no threads, no files, no logging
//! (`scripts/test-all` fails if any of them appears under `src/wire/`).
//!
//! A message is `[header, buf_0, ..., buf_{n-1}]` (on PUB/SUB sockets a topic frame comes
//! first). The header is a JSON object ([`Header`]) with one entry per buffer frame
//! ([`ArrayMeta`]); each buffer is raw, zstd or zstd in parallel chunks, optionally
//! byte-shuffled ([`Compression`], [`Codec`]).
//! `docs/wire-format.md` is the full contract.
//!
//! The format, in this folder:
//! - `header`, `dtype`, `limits`, `error`: the JSON header parsed with field-level errors, the
//!   type strings and the [`Element`] trait, what a decoder accepts before allocating, and the
//!   errors that name what was expected and what came
//! - `template`: a stream's headers written and read by reusing what they share
//! - `encode`, `decode`: whole messages ([`encode()`], [`decode()`], [`Decoder`])
//! - `ack`: the collector's acknowledgement in acked delivery ([`Ack`])
//!
//! and the codec engine in `codec/`: frames raw, zstd or `zstd-chunks`, shuffled or not, in both
//! directions
//! ([`encode_buffer`], [`decode_buffer`]), with the per-thread and per-process state it keeps
//! to save allocations and the bounds of that state.

mod ack;
mod codec;
mod decode;
mod dtype;
mod encode;
mod error;
mod header;
mod limits;
mod template;

pub use ack::Ack;
pub(crate) use codec::{decode_allocation, DecodeAllocation, CHUNKED_FROM};
pub use codec::{
    decode_buffer, encode_buffer, encode_buffer_chunked, shuffle, unshuffle, Codec, Compression,
    EncodedBuffer, Filter,
};
pub use decode::{decode, DecodedArray, Decoder, DynArray, Record};
pub use dtype::{ByteOrder, DType, DTypeError, Element, Kind};
pub use encode::{check_names, encode, ArrayBuffer, EncodedMessage, Encoder, Envelope};
pub use error::{DecodeError, EncodeError, ViewError};
pub use header::{ArrayMeta, Header, Order, FORMAT_VERSION, MAX_NAME_BYTES};
pub use limits::{Limits, EXPANSION_FREE_BYTES};
pub use template::{HeaderCache, HeaderWriter, MAX_TEMPLATE_BYTES};
