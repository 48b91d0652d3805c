//! Codec throughput: encode and decode of raw, zstd 1/3 and shuffle+zstd 1/3 on smooth float
//! fields (f64, f32) and on random data, over a sweep of sizes. Throughput is bytes of the
//! decoded array per second.
//!
//! The `stream` group measures whole small messages one at a time and as a stream; `chunks`
//! compares one zstd frame with parallel chunks (`zstd-chunks`) on 8 MB arrays.
//!
//! `cargo bench --bench codec`; add `NDBRIDGE_BENCH_LARGE=1` for the 128 MB size, and a filter
//! such as `cargo bench --bench codec -- 8MB` to run a subset.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array1;
use ndbridge::wire::{
    decode, encode, ArrayBuffer, Compression, Decoder, Encoder, Envelope, Limits,
};
use synth::{noise, smooth_field};

#[path = "../src/synth.rs"]
mod synth;

fn envelope() -> Envelope {
    Envelope {
        name: "u".into(),
        source: "bench".into(),
        session: "s".into(),
        seq: 0,
        time: 0.0,
        attrs: None,
    }
}

fn sizes() -> Vec<(&'static str, usize)> {
    let mut sizes = vec![("800B", 800), ("80KB", 80_000), ("8MB", 8_000_000)];
    if std::env::var_os("NDBRIDGE_BENCH_LARGE").is_some() {
        sizes.push(("128MB", 128_000_000));
    }
    sizes
}

/// The benchmark inputs: name and an array buffer of `bytes` bytes.
fn inputs(bytes: usize) -> Vec<(&'static str, ArrayBuffer)> {
    let n64 = bytes / 8;
    let cols = 1000.min(n64).max(1);
    let smooth64 = smooth_field(n64.div_ceil(cols), cols, 0.0, 7);
    let smooth64: Vec<f64> = smooth64[..n64].to_vec();
    let n32 = bytes / 4;
    let smooth32: Vec<f32> = smooth_field(n32.div_ceil(cols), cols, 0.0, 7)[..n32]
        .iter()
        .map(|&v| v as f32)
        .collect();
    vec![
        (
            "smooth_f64",
            ArrayBuffer::from_owned(Array1::from(smooth64)),
        ),
        (
            "smooth_f32",
            ArrayBuffer::from_owned(Array1::from(smooth32)),
        ),
        (
            "random_f64",
            ArrayBuffer::from_owned(Array1::from(noise(n64, 3))),
        ),
    ]
}

const CODECS: [(&str, Compression); 5] = [
    ("raw", Compression::Raw),
    (
        "zstd1",
        Compression::Zstd {
            level: 1,
            shuffle: false,
        },
    ),
    (
        "zstd3",
        Compression::Zstd {
            level: 3,
            shuffle: false,
        },
    ),
    (
        "shuffle_zstd1",
        Compression::Zstd {
            level: 1,
            shuffle: true,
        },
    ),
    (
        "shuffle_zstd3",
        Compression::Zstd {
            level: 3,
            shuffle: true,
        },
    ),
];

fn codec(c: &mut Criterion) {
    for (size_name, bytes) in sizes() {
        for (data_name, buffer) in inputs(bytes) {
            let mut group = c.benchmark_group(format!("{data_name}/{size_name}"));
            group.throughput(Throughput::Bytes(buffer.data().len() as u64));
            group.warm_up_time(std::time::Duration::from_secs(1));
            group.measurement_time(std::time::Duration::from_secs(2));
            if bytes >= 8_000_000 {
                group.sample_size(10);
            }
            for (codec_name, compression) in CODECS {
                let msg = encode(envelope(), vec![("u".into(), buffer.clone())], compression)
                    .expect("encodable");
                let ratio = msg.frames[1].len() as f64 / buffer.data().len() as f64;
                eprintln!("{data_name}/{size_name} {codec_name}: compressed/raw = {ratio:.3}");
                group.bench_with_input(
                    BenchmarkId::new("encode", codec_name),
                    &buffer,
                    |b, buffer| {
                        b.iter(|| {
                            encode(envelope(), vec![("u".into(), buffer.clone())], compression)
                                .expect("encodable")
                        })
                    },
                );
                let frames: Vec<Bytes> = msg.frames.clone();
                group.bench_with_input(BenchmarkId::new("decode", codec_name), &frames, |b, f| {
                    b.iter(|| {
                        let record = decode(f, &Limits::default()).expect("decodable");
                        let view = record.arrays[0].view::<f64>().map(|v| v.is_view());
                        let view32 = record.arrays[0].view::<f32>().map(|v| v.is_view());
                        assert!(view.or(view32).expect("typed view"));
                        record
                    })
                });
            }
            group.finish();
        }
    }
}

/// One 8 MB array as one shuffle + zstd 1 frame against `zstd-chunks` (parallel chunks on
/// rayon's threads, one per core), both directions: what compressing on every core gains.
fn chunks(c: &mut Criterion) {
    let policy = Compression::zstd(1).with_shuffle(true);
    for (data_name, buffer) in inputs(8_000_000).into_iter().take(2) {
        let mut group = c.benchmark_group(format!("chunks/{data_name}/8MB"));
        group.throughput(Throughput::Bytes(buffer.data().len() as u64));
        group.sample_size(20);
        group.measurement_time(std::time::Duration::from_secs(3));
        for chunked in [false, true] {
            let name = if chunked { "chunks" } else { "one_frame" };
            let one = |buffer: &ArrayBuffer| {
                let arrays = vec![("u".to_owned(), buffer.clone())];
                let mut encoder = Encoder::default();
                if chunked {
                    encoder.encode_chunked(envelope(), arrays, policy)
                } else {
                    encoder.encode(envelope(), arrays, policy)
                }
                .expect("encodable")
            };
            group.bench_with_input(BenchmarkId::new("encode", name), &buffer, |b, buffer| {
                b.iter(|| one(buffer))
            });
            let frames = one(&buffer).frames;
            group.bench_with_input(BenchmarkId::new("decode", name), &frames, |b, f| {
                b.iter(|| decode(f, &Limits::default()).expect("decodable"))
            });
        }
        group.finish();
    }
}

/// The byte shuffle alone, both directions, for 4- and 8-byte elements.
fn shuffle(c: &mut Criterion) {
    let bytes = 8_000_000;
    let src: Vec<u8> = noise(bytes / 8, 5)
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let mut dst = vec![0u8; bytes];
    let mut group = c.benchmark_group("shuffle/8MB");
    group.throughput(Throughput::Bytes(bytes as u64));
    for itemsize in [4usize, 8] {
        group.bench_function(BenchmarkId::new("shuffle", itemsize), |b| {
            b.iter(|| ndbridge::wire::shuffle(&src, &mut dst, itemsize))
        });
        group.bench_function(BenchmarkId::new("unshuffle", itemsize), |b| {
            b.iter(|| ndbridge::wire::unshuffle(&src, &mut dst, itemsize))
        });
    }
    group.finish();
}

/// A 10x10 float64 message, encoded and decoded one at a time (`encode`, `decode`) and as a
/// stream whose headers share everything but `seq` and `time` (`Encoder`, `Decoder`); and a
/// stream of about 100 float64 whose shape changes with every message, decoded both ways.
fn stream(c: &mut Criterion) {
    let buffer = ArrayBuffer::from_owned(Array1::from(smooth_field(10, 10, 0.0, 7)));
    let mut group = c.benchmark_group("stream/800B");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    let mut next = move || {
        seq += 1;
        Envelope {
            seq,
            time: 1_764_111_111.123_456 + seq as f64 * 1e-6,
            ..envelope()
        }
    };
    let arrays = || vec![("u".to_owned(), buffer.clone())];
    group.bench_function("encode/one-shot", |b| {
        b.iter(|| encode(next(), arrays(), Compression::Raw).expect("encodable"))
    });
    let mut encoder = Encoder::default();
    group.bench_function("encode/stream", |b| {
        b.iter(|| {
            encoder
                .encode(next(), arrays(), Compression::Raw)
                .expect("encodable")
        })
    });
    let messages: Vec<Vec<Bytes>> = (0..1000)
        .map(|_| {
            encode(next(), arrays(), Compression::Raw)
                .expect("encodable")
                .frames
        })
        .collect();
    let mut i = 0;
    group.bench_function("decode/one-shot", |b| {
        b.iter(|| {
            i = (i + 1) % messages.len();
            decode(&messages[i], &Limits::default()).expect("decodable")
        })
    });
    let mut decoder = Decoder::new(Limits::default());
    group.bench_function("decode/stream", |b| {
        b.iter(|| {
            i = (i + 1) % messages.len();
            decoder.decode(&messages[i]).expect("decodable")
        })
    });
    // A stream whose shape changes with every message (a particle count, say): every header
    // differs from the one before in more than `seq` and `time`.
    let changing: Vec<Vec<Bytes>> = (0..1000)
        .map(|k| {
            let n = 90 + k % 11;
            let buffer = ArrayBuffer::from_owned(Array1::from(smooth_field(1, n, 0.0, 7)));
            encode(next(), vec![("u".to_owned(), buffer)], Compression::Raw)
                .expect("encodable")
                .frames
        })
        .collect();
    group.bench_function("decode/one-shot-changing-shapes", |b| {
        b.iter(|| {
            i = (i + 1) % changing.len();
            decode(&changing[i], &Limits::default()).expect("decodable")
        })
    });
    let mut decoder = Decoder::new(Limits::default());
    group.bench_function("decode/stream-changing-shapes", |b| {
        b.iter(|| {
            i = (i + 1) % changing.len();
            decoder.decode(&changing[i]).expect("decodable")
        })
    });
    group.finish();
}

criterion_group!(benches, shuffle, codec, chunks, stream);
criterion_main!(benches);
