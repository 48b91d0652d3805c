//! Property tests: every dtype x memory layout x codec x shuffle x byte order survives
//! encode -> decode bit for bit, including 0-d, empty, non-contiguous and negative-stride arrays.

use bytes::Bytes;
use half::f16;
use ndarray::{Array, ArrayD, ArrayViewD, IxDyn, ShapeBuilder, Slice};
use ndbridge::wire::{
    decode, encode, ArrayBuffer, ByteOrder, Codec, Compression, Element, Envelope, Limits, Order,
};
use num_complex::Complex;
use proptest::prelude::*;

/// How the sent array is laid out in memory.
#[derive(Debug, Clone, Copy)]
enum Layout {
    C,
    F,
    Transposed,
    Reversed,
    Stepped,
}

fn layouts() -> impl Strategy<Value = Layout> {
    prop::sample::select(vec![
        Layout::C,
        Layout::F,
        Layout::Transposed,
        Layout::Reversed,
        Layout::Stepped,
    ])
}

fn compressions() -> impl Strategy<Value = Compression> {
    prop::sample::select(vec![
        Compression::Raw,
        Compression::zstd(1),
        Compression::zstd(3).with_shuffle(true),
        Compression::zstd(1).with_shuffle(true),
        Compression::auto(),
    ])
}

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..6, 0..4)
}

fn envelope() -> Envelope {
    Envelope {
        name: "rec".into(),
        source: "prop".into(),
        session: "s".into(),
        seq: 0,
        time: 0.0,
        attrs: None,
    }
}

/// The elements of `a` in logical (C) order, as bytes: equality that treats NaN bits exactly.
fn logical_bytes<T: Element>(a: &ArrayViewD<'_, T>) -> Vec<u8> {
    a.iter()
        .flat_map(|x| bytemuck::bytes_of(x).to_vec())
        .collect()
}

/// Rewrites a native little-endian buffer as the same values in big-endian order.
fn to_big_endian(buffer: &ArrayBuffer) -> ArrayBuffer {
    assert_eq!(ByteOrder::NATIVE, ByteOrder::Little);
    let unit = buffer.dtype().swap_unit();
    let mut bytes = buffer.data().to_vec();
    for chunk in bytes.chunks_exact_mut(unit) {
        chunk.reverse();
    }
    ArrayBuffer::new(
        buffer.dtype().with_order(ByteOrder::Big),
        buffer.shape().to_vec(),
        buffer.order(),
        Bytes::from(bytes),
    )
    .unwrap()
}

fn check_roundtrip<T: Element>(
    values: Vec<T>,
    shape: Vec<usize>,
    layout: Layout,
    compression: Compression,
    big_endian: bool,
) -> Result<(), TestCaseError> {
    let base: ArrayD<T> = match layout {
        Layout::F => Array::from_shape_vec(IxDyn(&shape).f(), values).unwrap(),
        _ => Array::from_shape_vec(IxDyn(&shape), values).unwrap(),
    };
    let sent: ArrayViewD<'_, T> = match layout {
        Layout::C | Layout::F => base.view(),
        Layout::Transposed => base.t(),
        Layout::Reversed => base.slice_each_axis(|_| Slice::new(0, None, -1)),
        Layout::Stepped => base.slice_each_axis(|_| Slice::new(0, None, 2)),
    };
    let mut buffer = ArrayBuffer::from_array(&sent);
    if matches!(layout, Layout::F | Layout::Transposed) && sent.ndim() > 1 && sent.len() > 1 {
        let c_too = sent.is_standard_layout();
        prop_assert!(c_too || buffer.order() == Order::F, "F input must stay F");
    }
    if big_endian && T::DTYPE.itemsize() > 1 {
        buffer = to_big_endian(&buffer);
    }
    let msg = encode(envelope(), vec![("a".into(), buffer)], compression).unwrap();
    let meta = &msg.header.arrays[0];
    match compression {
        Compression::Raw => prop_assert_eq!(meta.codec, Codec::Raw),
        Compression::Zstd { .. } => prop_assert_eq!(meta.codec, Codec::Zstd),
        Compression::Auto { .. } => {}
    }
    let record = decode(&msg.frames, &Limits::default()).unwrap();
    let got = record.arrays[0].view::<T>().unwrap();
    prop_assert_eq!(got.shape(), sent.shape());
    prop_assert_eq!(logical_bytes(&got.view()), logical_bytes(&sent));
    Ok(())
}

macro_rules! roundtrip_test {
    ($name:ident, $t:ty, $elem:expr) => {
        proptest! {
            #![proptest_config(crate::common::proptest_config(96))]
            #[test]
            fn $name(
                (shape, values) in shapes().prop_flat_map(|shape| {
                    let n = shape.iter().product::<usize>();
                    (Just(shape), prop::collection::vec($elem, n))
                }),
                layout in layouts(),
                compression in compressions(),
                big_endian in any::<bool>(),
            ) {
                check_roundtrip::<$t>(values, shape, layout, compression, big_endian)?;
            }
        }
    };
}

roundtrip_test!(roundtrip_bool, bool, any::<bool>());
roundtrip_test!(roundtrip_i8, i8, any::<i8>());
roundtrip_test!(roundtrip_i16, i16, any::<i16>());
roundtrip_test!(roundtrip_i32, i32, any::<i32>());
roundtrip_test!(roundtrip_i64, i64, any::<i64>());
roundtrip_test!(roundtrip_u8, u8, any::<u8>());
roundtrip_test!(roundtrip_u16, u16, any::<u16>());
roundtrip_test!(roundtrip_u32, u32, any::<u32>());
roundtrip_test!(roundtrip_u64, u64, any::<u64>());
roundtrip_test!(roundtrip_f16, f16, any::<u16>().prop_map(f16::from_bits));
roundtrip_test!(roundtrip_f32, f32, any::<u32>().prop_map(f32::from_bits));
roundtrip_test!(roundtrip_f64, f64, any::<u64>().prop_map(f64::from_bits));
roundtrip_test!(
    roundtrip_c64,
    Complex<f32>,
    (any::<u32>(), any::<u32>())
        .prop_map(|(r, i)| Complex::new(f32::from_bits(r), f32::from_bits(i)))
);
roundtrip_test!(
    roundtrip_c128,
    Complex<f64>,
    (any::<u64>(), any::<u64>())
        .prop_map(|(r, i)| Complex::new(f64::from_bits(r), f64::from_bits(i)))
);

#[test]
fn zero_d_array_roundtrips() {
    let a = ndarray::arr0(2.5f64);
    let msg = encode(
        envelope(),
        vec![("a".into(), ArrayBuffer::from_owned(a))],
        Compression::zstd(1).with_shuffle(true),
    )
    .unwrap();
    assert_eq!(msg.header.arrays[0].shape, Vec::<usize>::new());
    let record = decode(&msg.frames, &Limits::default()).unwrap();
    assert_eq!(record.arrays[0].view::<f64>().unwrap()[IxDyn(&[])], 2.5);
}

#[test]
fn large_smooth_field_roundtrips_under_every_codec() {
    let n = 1 << 20; // 8 MiB of f64
    let field = Array::from_shape_fn((1024, n / 1024), |(i, j)| {
        (i as f64 * 0.01).sin() + (j as f64 * 0.02).cos()
    });
    for compression in [
        Compression::Raw,
        Compression::zstd(1),
        Compression::zstd(1).with_shuffle(true),
        Compression::auto(),
    ] {
        let msg = encode(
            envelope(),
            vec![("u".into(), ArrayBuffer::from_array(&field))],
            compression,
        )
        .unwrap();
        let record = decode(&msg.frames, &Limits::default()).unwrap();
        let got = record.arrays[0].view::<f64>().unwrap();
        assert!(got.is_view(), "decoded buffers are aligned: no copy");
        assert_eq!(got, field.view().into_dyn(), "{compression:?}");
    }
}

#[test]
fn auto_keeps_raw_when_compression_does_not_pay() {
    // xorshift noise: incompressible.
    let mut x = 0x9e3779b97f4a7c15u64;
    let noise: Vec<u64> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    let buffer = ArrayBuffer::from_owned(Array::from(noise));
    let data_ptr = buffer.data().as_ptr();
    let msg = encode(envelope(), vec![("n".into(), buffer)], Compression::auto()).unwrap();
    assert_eq!(msg.header.arrays[0].codec, Codec::Raw);
    assert!(msg.header.arrays[0].filters.is_empty());
    assert_eq!(
        msg.frames[1].as_ptr(),
        data_ptr,
        "raw fallback sends the buffer itself"
    );

    let smooth = Array::linspace(0.0f64, 1.0, 100_000);
    let msg = encode(
        envelope(),
        vec![("s".into(), ArrayBuffer::from_owned(smooth))],
        Compression::auto(),
    )
    .unwrap();
    assert_eq!(msg.header.arrays[0].codec, Codec::Zstd);
    assert!(msg.frames[1].len() < 800_000 / 2);
}

#[test]
fn multi_array_record_with_attrs() {
    let u = Array::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
    let mask = Array::from_shape_fn((3, 4), |(i, j)| (i + j) % 2 == 0);
    let mut env = envelope();
    env.attrs = Some(
        serde_json::json!({"step": 12, "units": "K"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let msg = encode(
        env,
        vec![
            ("u".into(), ArrayBuffer::from_owned(u.clone())),
            ("mask".into(), ArrayBuffer::from_array(&mask.t())),
        ],
        Compression::auto(),
    )
    .unwrap();
    assert_eq!(msg.frames.len(), 3);
    let record = decode(&msg.frames, &Limits::default()).unwrap();
    assert_eq!(record.header.attrs.as_ref().unwrap()["step"], 12);
    assert_eq!(
        record.array("u").unwrap().view::<f32>().unwrap(),
        u.into_dyn()
    );
    assert_eq!(
        record.array("mask").unwrap().view::<bool>().unwrap(),
        mask.t().into_dyn()
    );
    assert_eq!(record.array("mask").unwrap().meta().order, Order::F);
}

#[test]
fn encoder_rejects_bad_names_and_duplicates() {
    let a = || ArrayBuffer::from_owned(Array::from(vec![1u8, 2]));
    let mut env = envelope();
    env.name = String::new();
    assert!(encode(env, vec![("a".into(), a())], Compression::Raw).is_err());
    let err = encode(
        envelope(),
        vec![("a".into(), a()), ("a".into(), a())],
        Compression::Raw,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "array name \"a\" appears twice in one record"
    );
    let err = encode(envelope(), vec![("a".into(), a())], Compression::zstd(99)).unwrap_err();
    assert!(
        err.to_string().starts_with("zstd level 99 is outside"),
        "{err}"
    );
}

#[test]
fn encoder_rejects_a_time_json_cannot_carry() {
    let mut env = envelope();
    env.time = f64::NAN;
    let a = ArrayBuffer::from_owned(Array::from(vec![1u8]));
    let err = encode(env, vec![("a".into(), a)], Compression::Raw).unwrap_err();
    assert_eq!(
        err.to_string(),
        "time must be a finite number of seconds, found NaN"
    );
}
