//! Shuffled zstd frames whose noisy leading or trailing byte streams are stored raw without the
//! compressor: every frame must be a standard zstd frame that zstd's own streaming decoder (which
//! checks the declared window) reads back to the shuffled bytes, and that ndbridge decodes to
//! the array.

use bytes::Bytes;
use ndbridge::wire::{decode_buffer, encode_buffer};
use ndbridge::wire::{shuffle, ArrayMeta, Codec, Compression, Filter, Order};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use crate::common::zstd_frame_header_len;

/// What each byte stream of a generated buffer holds.
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// Uniform random bytes: incompressible.
    Noise,
    /// One value: compresses to almost nothing.
    Constant,
    /// A slow random walk: compressible, with short matches.
    Walk,
}

/// A buffer of `n` elements of `itemsize` bytes whose byte `i` of every element follows
/// `streams[i]` (so that, once shuffled, stream `i` is that kind).
fn buffer(streams: &[Stream], n: usize, seed: u64) -> Vec<u8> {
    let itemsize = streams.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; n * itemsize];
    for (i, kind) in streams.iter().enumerate() {
        let mut walk = 0u8;
        for e in 0..n {
            data[e * itemsize + i] = match kind {
                Stream::Noise => rng.gen(),
                Stream::Constant => 0x3f,
                Stream::Walk => {
                    if rng.gen_ratio(1, 16) {
                        walk = walk.wrapping_add(rng.gen_range(0..3));
                    }
                    walk
                }
            };
        }
    }
    data
}

/// The block types of a frame, in order: 0 raw, 1 RLE, 2 compressed.
fn block_types(frame: &[u8]) -> Vec<u8> {
    let mut at = zstd_frame_header_len(frame);
    let mut types = Vec::new();
    loop {
        let header = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], 0]);
        let (last, kind, size) = (
            header & 1,
            ((header >> 1) & 3) as u8,
            (header >> 3) as usize,
        );
        types.push(kind);
        at += 3 + if kind == 1 { 1 } else { size };
        if last == 1 {
            break;
        }
    }
    assert_eq!(at, frame.len(), "the frame ends with its last block");
    types
}

/// Encodes `data` with shuffle + zstd at `level` and checks the frame both ways.
fn check(data: &[u8], itemsize: usize, level: i32) -> Vec<u8> {
    let bytes = Bytes::copy_from_slice(data);
    let encoded = encode_buffer(
        &bytes,
        itemsize,
        Compression::Zstd {
            level,
            shuffle: true,
        },
    )
    .unwrap();
    assert_eq!(encoded.codec, Codec::Zstd);
    let mut shuffled = vec![0u8; data.len()];
    shuffle(data, &mut shuffled, itemsize);
    // zstd's streaming decoder rejects matches beyond the declared window.
    let by_zstd = zstd::stream::decode_all(&encoded.frame[..]).unwrap();
    assert!(
        by_zstd == shuffled,
        "zstd decodes the frame to the shuffled bytes"
    );
    let meta = ArrayMeta {
        name: "a".into(),
        dtype: format!("<u{itemsize}").parse().unwrap(),
        shape: vec![data.len() / itemsize],
        order: Order::C,
        codec: Codec::Zstd,
        filters: vec![Filter::Shuffle],
        nbytes: data.len() as u64,
    };
    let decoded = decode_buffer(&meta, &encoded.frame, &Default::default()).unwrap();
    assert!(
        decoded[..] == *data,
        "ndbridge decodes the frame to the array"
    );
    block_types(&encoded.frame)
}

#[test]
fn noisy_low_bytes_are_stored_raw_before_the_compressed_streams() {
    use Stream::*;
    // A float64-like layout: six noisy low-order streams, then two compressible ones.
    let data = buffer(
        &[Noise, Noise, Noise, Noise, Noise, Noise, Walk, Constant],
        1 << 17,
        1,
    );
    let types = check(&data, 8, 1);
    // 6 streams of 128 KiB: the first six blocks are raw, written without the compressor.
    assert_eq!(types[..6], [0, 0, 0, 0, 0, 0]);
    assert!(types[6..].contains(&2), "{types:?}");
}

#[test]
fn noisy_high_bytes_are_stored_raw_after_the_compressed_streams() {
    use Stream::*;
    // Big-endian elements: the noise comes last once shuffled.
    let data = buffer(&[Constant, Walk, Noise, Noise], 100_003, 2);
    let types = check(&data, 4, 3);
    assert_eq!(types.last(), Some(&0));
    assert!(types.contains(&2), "{types:?}");
}

#[test]
fn all_noise_and_no_noise_round_trip() {
    use Stream::*;
    check(&buffer(&[Noise, Noise], 1 << 17, 3), 2, 1);
    check(&buffer(&[Walk, Constant, Walk, Walk], 1 << 17, 4), 4, 1);
    // Streams too short to be judged: the buffer is compressed whole.
    check(&buffer(&[Noise, Walk], 1000, 5), 2, 1);
}

#[test]
fn high_levels_round_trip() {
    use Stream::*;
    // The compressor's window and tables are sized to the streams it compresses (level 19 for
    // an unknown size would want hundreds of MiB); the declared window must still cover them.
    let data = buffer(&[Noise, Noise, Walk, Constant], 1 << 16, 6);
    let types = check(&data, 4, 19);
    // The two noisy streams (64 KiB each) fill the first, raw block.
    assert_eq!(types[0], 0);
    assert!(types[1..].contains(&2), "{types:?}");
}

fn stream_kind() -> impl Strategy<Value = Stream> {
    prop_oneof![
        Just(Stream::Noise),
        Just(Stream::Constant),
        Just(Stream::Walk)
    ]
}

proptest! {
    #![proptest_config(crate::common::proptest_config(24))]

    #[test]
    fn any_mix_of_streams_round_trips(
        streams in prop::sample::select(vec![2usize, 4, 8])
            .prop_flat_map(|itemsize| prop::collection::vec(stream_kind(), itemsize)),
        n in (64usize << 10)..(160 << 10),
        level in prop::sample::select(vec![1, 3, 9]),
        seed in any::<u64>(),
    ) {
        let itemsize = streams.len();
        check(&buffer(&streams, n, seed), itemsize, level);
    }
}
