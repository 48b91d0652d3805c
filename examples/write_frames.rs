//! Writes a matrix of Rust-encoded messages to a directory, for readers in other languages to
//! check: every dtype x order x codec x shuffle, big-endian, 0-d, empty and multi-array records.
//!
//! ```text
//! cargo run --example write_frames -- OUTDIR
//! ```
//!
//! Layout of OUTDIR (the same as `tests/data/golden/`): `<case>.frames` holds the frames, each an
//! 8-byte little-endian length and its bytes; `<case>.<array>.bin` holds the expected values in C
//! order, little-endian; `manifest.json` lists the cases.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ndbridge::wire::{
    encode, ArrayBuffer, ByteOrder, Compression, Element, Encoder, Envelope, Order,
};
use num_complex::Complex;
use serde_json::{json, Value};

struct Writer {
    dir: PathBuf,
    cases: Vec<Value>,
    /// Compress large arrays in parallel chunks (`zstd-chunks`).
    chunked: bool,
}

impl Writer {
    fn write(
        &mut self,
        case: &str,
        arrays: Vec<(String, ArrayBuffer, Vec<u8>)>,
        compression: Compression,
        attrs: Option<Value>,
    ) -> std::io::Result<()> {
        let envelope = Envelope {
            name: arrays.first().map_or("empty".into(), |a| a.0.clone()),
            source: "rust-write-frames".into(),
            session: "0123456789abcdef".into(),
            seq: self.cases.len() as u64,
            time: 1_764_000_000.5,
            attrs: attrs.and_then(|v| v.as_object().cloned()),
        };
        let mut listed = Vec::new();
        let mut buffers = Vec::new();
        for (name, buffer, expected) in arrays {
            let bin = format!("{case}.{name}.bin");
            std::fs::write(self.dir.join(&bin), expected)?;
            listed.push(json!({
                "name": name, "dtype": buffer.dtype().to_string(), "shape": buffer.shape(),
                "expected": bin,
            }));
            buffers.push((name, buffer));
        }
        let msg = if self.chunked {
            Encoder::default().encode_chunked(envelope, buffers, compression)
        } else {
            encode(envelope, buffers, compression)
        }
        .map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        for frame in &msg.frames {
            out.extend_from_slice(&(frame.len() as u64).to_le_bytes());
            out.extend_from_slice(frame);
        }
        let file = format!("{case}.frames");
        std::fs::write(self.dir.join(&file), out)?;
        self.cases
            .push(json!({"name": case, "file": file, "arrays": listed}));
        Ok(())
    }
}

/// Values that exercise a type: from the index through a multiplicative hash.
trait Sample: Element + Copy {
    fn sample(i: usize) -> Self;
}

macro_rules! sample_int {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            fn sample(i: usize) -> Self {
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) as $t
            }
        }
    )*};
}
sample_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Sample for bool {
    fn sample(i: usize) -> Self {
        i.is_multiple_of(3)
    }
}
impl Sample for f16 {
    fn sample(i: usize) -> Self {
        f16::from_f64((i as f64 * 0.37).sin() * 100.0)
    }
}
impl Sample for f32 {
    fn sample(i: usize) -> Self {
        match i {
            1 => f32::NAN,
            2 => f32::NEG_INFINITY,
            _ => (i as f32 * 0.37).sin() * 1e3,
        }
    }
}
impl Sample for f64 {
    fn sample(i: usize) -> Self {
        match i {
            1 => f64::NAN,
            2 => f64::INFINITY,
            _ => (i as f64 * 0.37).sin() * 1e6,
        }
    }
}
impl Sample for Complex<f32> {
    fn sample(i: usize) -> Self {
        Complex::new(f32::sample(i), -(i as f32))
    }
}
impl Sample for Complex<f64> {
    fn sample(i: usize) -> Self {
        Complex::new(f64::sample(i), -(i as f64))
    }
}

/// An array of `shape` in `order`, and its expected C-order little-endian bytes.
fn sample_array<T: Sample>(shape: &[usize], order: Order) -> (ArrayBuffer, Vec<u8>) {
    let n: usize = shape.iter().product();
    let values: Vec<T> = (0..n).map(T::sample).collect();
    let c_order = ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches");
    let expected: Vec<u8> = c_order
        .iter()
        .flat_map(|x| bytemuck::bytes_of(x).to_vec())
        .collect();
    let buffer = match order {
        Order::C => ArrayBuffer::from_owned(c_order),
        Order::F => {
            let mut f = ArrayD::from_elem(IxDyn(shape).f(), T::sample(0));
            f.assign(&c_order);
            ArrayBuffer::from_owned(f)
        }
    };
    (buffer, expected)
}

fn big_endian(buffer: &ArrayBuffer) -> ArrayBuffer {
    let mut bytes = buffer.data().to_vec();
    for unit in bytes.chunks_exact_mut(buffer.dtype().swap_unit()) {
        unit.reverse();
    }
    ArrayBuffer::new(
        buffer.dtype().with_order(ByteOrder::Big),
        buffer.shape().to_vec(),
        buffer.order(),
        Bytes::from(bytes),
    )
    .expect("same length")
}

fn write_type<T: Sample>(w: &mut Writer, tag: &str) -> std::io::Result<()> {
    let codecs = [
        ("raw", Compression::Raw),
        ("zstd", Compression::zstd(1)),
        ("zstd_shuffle", Compression::zstd(1).with_shuffle(true)),
    ];
    for (order_tag, order) in [("C", Order::C), ("F", Order::F)] {
        for (codec_tag, compression) in codecs {
            let (buffer, expected) = sample_array::<T>(&[4, 3, 5], order);
            let case = format!("{tag}_{order_tag}_{codec_tag}");
            w.write(
                &case,
                vec![(case.clone(), buffer.clone(), expected.clone())],
                compression,
                None,
            )?;
            if T::DTYPE.itemsize() > 1 {
                let case = format!("{tag}_be_{order_tag}_{codec_tag}");
                let be = big_endian(&buffer);
                w.write(&case, vec![(case.clone(), be, expected)], compression, None)?;
            }
        }
    }
    Ok(())
}

fn run(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut w = Writer {
        dir: dir.to_owned(),
        cases: Vec::new(),
        chunked: false,
    };
    write_type::<bool>(&mut w, "b1")?;
    write_type::<i8>(&mut w, "i1")?;
    write_type::<i16>(&mut w, "i2")?;
    write_type::<i32>(&mut w, "i4")?;
    write_type::<i64>(&mut w, "i8")?;
    write_type::<u8>(&mut w, "u1")?;
    write_type::<u16>(&mut w, "u2")?;
    write_type::<u32>(&mut w, "u4")?;
    write_type::<u64>(&mut w, "u8")?;
    write_type::<f16>(&mut w, "f2")?;
    write_type::<f32>(&mut w, "f4")?;
    write_type::<f64>(&mut w, "f8")?;
    write_type::<Complex<f32>>(&mut w, "c8")?;
    write_type::<Complex<f64>>(&mut w, "c16")?;

    let (zero_d, expected) = sample_array::<f64>(&[], Order::C);
    w.write(
        "zero_d",
        vec![("zero_d".into(), zero_d, expected)],
        Compression::auto(),
        None,
    )?;
    let (empty, expected) = sample_array::<f32>(&[0, 3], Order::C);
    w.write(
        "empty",
        vec![("empty".into(), empty, expected)],
        Compression::zstd(1),
        None,
    )?;
    let (u, u_bytes) = sample_array::<f64>(&[16, 8], Order::C);
    let (mask, mask_bytes) = sample_array::<bool>(&[16, 8], Order::F);
    w.write(
        "record",
        vec![("u".into(), u, u_bytes), ("mask".into(), mask, mask_bytes)],
        Compression::auto(),
        Some(json!({"step": 7, "units": "K", "nested": {"a": [1, 2.5, null]}})),
    )?;

    // 2 MiB and more in F order, shuffled: three chunks of `zstd-chunks`.
    w.chunked = true;
    let (big, expected) = sample_array::<f64>(&[512, 520], Order::F);
    w.write(
        "chunked",
        vec![("chunked".into(), big, expected)],
        Compression::zstd(1).with_shuffle(true),
        None,
    )?;
    w.chunked = false;

    let manifest = serde_json::to_vec_pretty(&json!({"cases": w.cases}))?;
    std::fs::write(dir.join("manifest.json"), manifest)?;
    println!("wrote {} cases to {}", w.cases.len(), dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: write_frames OUTDIR");
        return std::process::ExitCode::from(2);
    };
    match run(Path::new(&dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write_frames: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
