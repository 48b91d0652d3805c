//! One test per class of malformed message: each is rejected with its own error, naming the
//! field, what was expected and what came.

use bytes::Bytes;
use ndarray::Array2;
use ndbridge::wire::{
    decode, encode, ArrayBuffer, Compression, DecodeError, Envelope, Limits, ViewError,
};
use serde_json::{json, Value};

use crate::common::zstd_frame_header_len;

fn envelope(name: &str) -> Envelope {
    Envelope {
        name: name.into(),
        source: "test".into(),
        session: "s1".into(),
        seq: 3,
        time: 1.0,
        attrs: None,
    }
}

/// A valid one-array message: header JSON as a value, and its buffer frame.
fn valid(compression: Compression) -> (Value, Bytes) {
    let a = Array2::from_shape_fn((100, 100), |(i, j)| (i as f64 * 0.1).sin() + j as f64);
    let msg = encode(
        envelope("u"),
        vec![("u".into(), ArrayBuffer::from_owned(a))],
        compression,
    )
    .unwrap();
    (
        serde_json::from_slice(&msg.frames[0]).unwrap(),
        msg.frames[1].clone(),
    )
}

fn frames(header: &Value, buffers: &[Bytes]) -> Vec<Bytes> {
    let mut f = vec![Bytes::from(serde_json::to_vec(header).unwrap())];
    f.extend(buffers.iter().cloned());
    f
}

fn decode_err(frames: &[Bytes]) -> DecodeError {
    decode(frames, &Limits::default()).expect_err("message must be rejected")
}

#[test]
fn valid_message_decodes() {
    let (h, b) = valid(Compression::Raw);
    let record = decode(&frames(&h, &[b]), &Limits::default()).unwrap();
    assert_eq!(record.header.seq, 3);
    assert_eq!(record.arrays[0].shape(), &[100, 100]);
}

#[test]
fn empty_message() {
    assert_eq!(decode_err(&[]), DecodeError::Empty);
}

#[test]
fn header_not_json() {
    let err = decode_err(&[Bytes::from_static(b"{\"v\": 1, oops")]);
    assert_eq!(err.kind(), "not_json");
    assert!(err.to_string().contains("line 1 column"), "{err}");
}

#[test]
fn header_not_utf8() {
    let err = decode_err(&[Bytes::from_static(b"\xff\xfe")]);
    assert_eq!(err.kind(), "not_json");
    // Invalid UTF-8 hidden in a field decoders ignore is refused too: the header is UTF-8 JSON
    // as a whole, as every reader (Python's json.loads among them) requires.
    let (h, b) = valid(Compression::Raw);
    let mut text = serde_json::to_vec(&h).unwrap();
    text.truncate(text.len() - 1);
    text.extend_from_slice(b",\"note\":\"\xff\"}");
    let err = decode_err(&[Bytes::from(text), b]);
    assert_eq!(err.kind(), "not_json");
}

#[test]
fn header_not_an_object() {
    let err = decode_err(&[Bytes::from_static(b"[1, 2]")]);
    assert_eq!(err, DecodeError::NotAnObject { found: "list" });
}

#[test]
fn missing_fields_are_named() {
    for field in ["v", "name", "source", "session", "seq", "time", "arrays"] {
        let (mut h, b) = valid(Compression::Raw);
        h.as_object_mut().unwrap().remove(field);
        let err = decode_err(&frames(&h, &[b]));
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: field.into()
            }
        );
    }
    for field in ["name", "dtype", "shape", "order", "codec", "nbytes"] {
        let (mut h, b) = valid(Compression::Raw);
        h["arrays"][0].as_object_mut().unwrap().remove(field);
        let err = decode_err(&frames(&h, &[b]));
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: format!("arrays[0].{field}")
            }
        );
    }
}

#[test]
fn unknown_version() {
    let (mut h, b) = valid(Compression::Raw);
    h["v"] = json!(2);
    let err = decode_err(&frames(&h, &[b]));
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "format version 2 is not supported: this decoder reads version 1"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let (mut h, b) = valid(Compression::Raw);
    h["future"] = json!({"x": [1, 2]});
    h["arrays"][0]["checksum"] = json!("abc");
    assert!(decode(&frames(&h, &[b]), &Limits::default()).is_ok());
}

#[test]
fn bad_dtype() {
    for dtype in [json!("<f16"), json!("object"), json!("|f8")] {
        let (mut h, b) = valid(Compression::Raw);
        h["arrays"][0]["dtype"] = dtype.clone();
        let err = decode_err(&frames(&h, &[b]));
        assert_eq!(err.kind(), "bad_dtype", "{dtype}");
        assert!(err
            .to_string()
            .starts_with("header field `arrays[0].dtype`: unknown dtype"));
    }
    let (mut h, b) = valid(Compression::Raw);
    h["arrays"][0]["dtype"] = json!(8);
    let err = decode_err(&frames(&h, &[b]));
    assert_eq!(
        err.to_string(),
        "header field `arrays[0].dtype`: expected a string, found number 8"
    );
}

#[test]
fn negative_or_non_integer_shape() {
    for (dim, found) in [
        (json!(-3), "number -3"),
        (json!(2.5), "number 2.5"),
        (json!("7"), "string \"7\""),
    ] {
        let (mut h, b) = valid(Compression::Raw);
        h["arrays"][0]["shape"][1] = dim;
        let err = decode_err(&frames(&h, &[b]));
        assert_eq!(
            err,
            DecodeError::InvalidField {
                field: "arrays[0].shape[1]".into(),
                expected: "a non-negative integer",
                found: found.into(),
            }
        );
    }
}

#[test]
fn bad_order_codec_and_filter() {
    let cases = [
        ("order", json!("K"), "arrays[0].order"),
        ("codec", json!("lz4"), "arrays[0].codec"),
        ("filters", json!(["delta"]), "arrays[0].filters[0]"),
    ];
    for (field, value, path) in cases {
        let (mut h, b) = valid(Compression::Raw);
        h["arrays"][0][field] = value;
        match decode_err(&frames(&h, &[b])) {
            DecodeError::InvalidField { field, .. } => assert_eq!(field, path),
            other => panic!("{path}: unexpected {other:?}"),
        }
    }
}

#[test]
fn hostile_names_are_rejected() {
    for name in [json!(""), json!("a\0b"), json!("x".repeat(257))] {
        let (mut h, b) = valid(Compression::Raw);
        h["name"] = name;
        let err = decode_err(&frames(&h, &[b]));
        assert!(matches!(&err, DecodeError::InvalidField { field, .. } if field == "name"));
    }
}

#[test]
fn frame_count_differs_from_arrays() {
    let (h, b) = valid(Compression::Raw);
    let err = decode_err(&frames(&h, &[b.clone(), b.clone()]));
    assert_eq!(
        err,
        DecodeError::FrameCount {
            expected: 2,
            found: 3
        }
    );
    let err = decode_err(&frames(&h, &[]));
    assert_eq!(
        err.to_string(),
        "message has 1 frames, expected 2 (the header plus one per array)"
    );
}

#[test]
fn nbytes_mismatch() {
    let (mut h, b) = valid(Compression::Raw);
    h["arrays"][0]["nbytes"] = json!(79992);
    let err = decode_err(&frames(&h, &[b]));
    assert_eq!(
        err.to_string(),
        "array `u`: nbytes 79992 declared, but shape and dtype give 80000"
    );
}

#[test]
fn shape_product_overflow_is_a_mismatch_not_a_panic() {
    let (mut h, b) = valid(Compression::Raw);
    h["arrays"][0]["shape"] = json!([u64::MAX, u64::MAX]);
    assert_eq!(decode_err(&frames(&h, &[b])).kind(), "nbytes_mismatch");
}

#[test]
fn raw_buffer_shorter_or_longer_than_declared() {
    let (h, b) = valid(Compression::Raw);
    let err = decode_err(&frames(&h, &[b.slice(..79992)]));
    assert_eq!(
        err.to_string(),
        "array `u`: nbytes 80000 declared, 79992 received"
    );
    let mut longer = b.to_vec();
    longer.push(0);
    let err = decode_err(&frames(&h, &[Bytes::from(longer)]));
    assert_eq!(
        err,
        DecodeError::BufferLength {
            array: "u".into(),
            expected: 80000,
            found: 80001
        }
    );
}

#[test]
fn zstd_garbage() {
    let (h, _) = valid(Compression::zstd(1));
    let err = decode_err(&frames(&h, &[Bytes::from_static(b"definitely not zstd")]));
    assert_eq!(err.kind(), "zstd");
    assert!(
        err.to_string().starts_with("array `u`: invalid zstd data"),
        "{err}"
    );
}

#[test]
fn zstd_corrupted_body_with_checksum() {
    // ndbridge's encoders leave zstd's content checksum out; a frame from a sender that
    // includes it is verified, so corruption anywhere in its body is caught.
    let (h, raw) = valid(Compression::Raw);
    let mut compressor = zstd::bulk::Compressor::new(1).unwrap();
    compressor.include_checksum(true).unwrap();
    let frame = compressor.compress(&raw).unwrap();
    let mut h = h;
    h["arrays"][0]["codec"] = json!("zstd");
    assert!(decode(
        &frames(&h, &[Bytes::from(frame.clone())]),
        &Limits::default()
    )
    .is_ok());
    let mut bad = frame;
    let mid = bad.len() / 2;
    for byte in &mut bad[mid..mid + 16] {
        *byte ^= 0x5a;
    }
    let err = decode_err(&frames(&h, &[Bytes::from(bad)]));
    assert_eq!(err.kind(), "zstd");
}

#[test]
fn zstd_corrupted_block_header() {
    // Without a checksum, a damaged block structure is still refused: here the first block
    // header (right after the frame header) claims a reserved block type.
    let (h, b) = valid(Compression::zstd(1));
    let mut bad = b.to_vec();
    let first_block = zstd_frame_header_len(&bad);
    bad[first_block] |= 0b110;
    let err = decode_err(&frames(&h, &[Bytes::from(bad)]));
    assert_eq!(err.kind(), "zstd");
}

#[test]
fn zstd_trailing_bytes() {
    let (h, b) = valid(Compression::zstd(1));
    let mut longer = b.to_vec();
    longer.extend_from_slice(&[0; 8]);
    let err = decode_err(&frames(&h, &[Bytes::from(longer)]));
    assert_eq!(err.kind(), "zstd");
}

#[test]
fn zstd_content_size_mismatch() {
    // A valid zstd frame of 40000 bytes under a header that declares 80000.
    let (h, _) = valid(Compression::zstd(1));
    let small = zstd::bulk::compress(&[7u8; 40000], 1).unwrap();
    let err = decode_err(&frames(&h, &[Bytes::from(small)]));
    assert_eq!(
        err.to_string(),
        "array `u`: zstd frame content size is 40000, expected 80000 (nbytes)"
    );
}

#[test]
fn zstd_without_content_size() {
    let (h, _) = valid(Compression::zstd(1));
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut encoder, &[0u8; 80000]).unwrap();
    let frame = encoder.finish().unwrap();
    let err = decode_err(&frames(&h, &[Bytes::from(frame)]));
    assert_eq!(err.kind(), "zstd_content_size");
    assert!(err.to_string().contains("not declared"));
}

#[test]
fn decompression_bomb_is_rejected_before_allocating() {
    // 64 KiB of zeros compress to a few bytes; the header claims a huge array. The limit check
    // comes first, so the decoder never allocates the claimed size.
    let (mut h, _) = valid(Compression::zstd(1));
    let n = 1u64 << 40;
    h["arrays"][0]["shape"] = json!([n / 8]);
    h["arrays"][0]["nbytes"] = json!(n);
    let bomb = zstd::bulk::compress(&[0u8; 65536], 19).unwrap();
    let err = decode_err(&frames(&h, &[Bytes::from(bomb)]));
    assert_eq!(
        err,
        DecodeError::ArrayTooLarge {
            array: "u".into(),
            nbytes: n,
            limit: 4 << 30
        }
    );
}

#[test]
fn limits_are_enforced() {
    let (h, b) = valid(Compression::Raw);
    let f = frames(&h, std::slice::from_ref(&b));
    let tight = Limits::default().max_header_bytes(64);
    assert_eq!(decode(&f, &tight).unwrap_err().kind(), "header_too_large");
    let tight = Limits::default().max_array_bytes(79_999);
    assert_eq!(decode(&f, &tight).unwrap_err().kind(), "array_too_large");
    assert!(decode(&f, &Limits::default().max_array_bytes(80_000)).is_ok());

    let mut many = h.clone();
    many["arrays"] = json!(vec![h["arrays"][0].clone(); 5]);
    let err = decode(&frames(&many, &[b]), &Limits::default().max_arrays(4)).unwrap_err();
    assert_eq!(err, DecodeError::TooManyArrays { count: 5, limit: 4 });

    let mut deep = h.clone();
    deep["arrays"][0]["shape"] = json!(vec![1; 65]);
    assert_eq!(
        decode_err(&frames(&deep, &[Bytes::new()])).kind(),
        "invalid_field"
    );
}

#[test]
fn misaligned_buffer_decodes_through_the_copy_path() {
    let (h, b) = valid(Compression::Raw);
    // Place the frame at an odd address inside a larger allocation.
    let mut backing = vec![0u8; b.len() + 1];
    backing[1..].copy_from_slice(&b);
    let shifted = Bytes::from(backing).slice(1..);
    assert_ne!(shifted.as_ptr() as usize % 8, 0);
    let record = decode(&frames(&h, &[shifted]), &Limits::default()).unwrap();
    let array = &record.arrays[0];
    assert!(matches!(
        array.borrow::<f64>(),
        Err(ViewError::Misaligned { align: 8, .. })
    ));
    let view = array.view::<f64>().unwrap();
    assert!(!view.is_view(), "a misaligned buffer must be copied");
    let aligned = decode(&frames(&h, &[b]), &Limits::default()).unwrap();
    let reference = aligned.arrays[0].view::<f64>().unwrap();
    assert!(reference.is_view());
    assert_eq!(view, reference);
}

#[test]
fn wrong_type_view_is_a_view_error_and_invalid_bool_is_rejected() {
    let (h, b) = valid(Compression::Raw);
    let record = decode(&frames(&h, &[b]), &Limits::default()).unwrap();
    assert!(matches!(
        record.arrays[0].view::<f32>(),
        Err(ViewError::DTypeMismatch { .. })
    ));

    let header = json!({"v": 1, "name": "m", "source": "s", "session": "x", "seq": 0,
        "time": 0.0, "arrays": [{"name": "m", "dtype": "|b1", "shape": [3], "order": "C",
        "codec": "raw", "nbytes": 3}]});
    let err = decode_err(&frames(&header, &[Bytes::from_static(&[0, 1, 7])]));
    assert_eq!(
        err.to_string(),
        "array `m`: boolean byte at index 2 is 7, expected 0 or 1"
    );
    assert_eq!(err.kind(), "invalid_bool");
    let ok = decode(
        &frames(&header, &[Bytes::from_static(&[0, 1, 1])]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        ok.arrays[0]
            .view::<bool>()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![false, true, true]
    );
}

#[test]
fn repeated_array_name_or_filter() {
    let (mut h, b) = valid(Compression::Raw);
    let entry = h["arrays"][0].clone();
    h["arrays"] = json!([entry.clone(), entry]);
    match decode_err(&frames(&h, &[b.clone(), b.clone()])) {
        DecodeError::InvalidField { field, .. } => assert_eq!(field, "arrays[1].name"),
        other => panic!("unexpected {other:?}"),
    }
    let (mut h, b) = valid(Compression::Raw);
    h["arrays"][0]["filters"] = json!(["shuffle", "shuffle"]);
    match decode_err(&frames(&h, &[b])) {
        DecodeError::InvalidField {
            field, expected, ..
        } => {
            assert_eq!(field, "arrays[0].filters[1]");
            assert_eq!(expected, "each filter at most once");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn total_decoded_size_of_a_message_is_limited() {
    // Three small zstd frames that together claim more than the message limit: rejected from
    // the header alone, before anything is decompressed.
    let (h, b) = valid(Compression::zstd(1));
    let mut three = h.clone();
    let entry = |name: &str| {
        let mut e = h["arrays"][0].clone();
        e["name"] = json!(name);
        e
    };
    three["arrays"] = json!([entry("a"), entry("b"), entry("c")]);
    let limits = Limits::default().max_message_bytes(200_000);
    let err = decode(&frames(&three, &[b.clone(), b.clone(), b]), &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::MessageTooLarge {
            total: 240_000,
            limit: 200_000
        }
    );
}

#[test]
fn decoded_sizes_that_add_up_past_u64_are_over_the_limit() {
    // Four arrays of 2^62 bytes each, allowed one by one: their sum does not fit a u64.
    let (h, b) = valid(Compression::zstd(1));
    let mut four = h.clone();
    let entry = |name: &str| {
        let mut e = h["arrays"][0].clone();
        e["name"] = json!(name);
        e["shape"] = json!([1u64 << 59]);
        e["nbytes"] = json!(1u64 << 62);
        e
    };
    four["arrays"] = json!([entry("a"), entry("b"), entry("c"), entry("d")]);
    let limits = Limits::default()
        .max_array_bytes(u64::MAX)
        .max_message_bytes(1 << 63);
    let buffers = [b.clone(), b.clone(), b.clone(), b];
    assert_eq!(
        decode(&frames(&four, &buffers), &limits).unwrap_err(),
        DecodeError::MessageTooLarge {
            total: u64::MAX,
            limit: 1 << 63
        }
    );
    // Even with no limit at all.
    let unlimited = limits.max_message_bytes(u64::MAX);
    assert_eq!(
        decode(&frames(&four, &buffers), &unlimited).unwrap_err(),
        DecodeError::MessageTooLarge {
            total: u64::MAX,
            limit: u64::MAX
        }
    );
}

#[test]
fn empty_arrays_with_absurd_axes_are_rejected() {
    let (mut h, _) = valid(Compression::Raw);
    h["arrays"][0]["shape"] = json!([0, 1u64 << 62, 1u64 << 62]);
    h["arrays"][0]["nbytes"] = json!(0);
    match decode_err(&frames(&h, &[Bytes::new()])) {
        DecodeError::InvalidField { field, .. } => assert_eq!(field, "arrays[0].shape"),
        other => panic!("unexpected {other:?}"),
    }
    h["arrays"][0]["shape"] = json!([0, 1000, 1000]);
    assert!(decode(&frames(&h, &[Bytes::new()]), &Limits::default()).is_ok());
}
