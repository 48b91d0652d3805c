//! The `.npy` and `.npz` formats, written straight from decoded bytes: the wire's dtype string
//! is numpy's own `descr`, and `"F"` order is `fortran_order`, so nothing is converted.

use std::io::{self, Write};

use crate::wire::{DecodedArray, Order};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The `.npy` header (magic, version, length, dict, padding) for one array.
///
/// ```
/// use ndbridge::collector::npy::npy_header;
/// use ndbridge::wire::{DType, Order};
///
/// let h = npy_header(&"<f8".parse::<DType>()?, &[2, 3], ndbridge::wire::Order::C);
/// assert_eq!(h.len() % 64, 0);
/// assert!(h.starts_with(b"\x93NUMPY\x01\x00"));
/// let dict = String::from_utf8_lossy(&h[10..]);
/// assert!(dict.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"));
/// # Ok::<(), ndbridge::wire::DTypeError>(())
/// ```
pub fn npy_header(dtype: &crate::wire::DType, shape: &[usize], order: Order) -> Vec<u8> {
    let shape_text = match shape {
        [] => "()".to_owned(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let fortran = if order == Order::F && shape.len() > 1 {
        "True"
    } else {
        "False"
    };
    let dict = format!("{{'descr': '{dtype}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    // Version 1.0 stores the header length in 2 bytes; 2.0 in 4.
    let (version, len_bytes) = if dict.len() + 11 < 65_536 { (1u8, 2) } else { (2u8, 4) };
    let prefix = MAGIC.len() + 2 + len_bytes;
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if len_bytes == 2 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes one array as a complete `.npy` file.
pub fn write_npy(out: &mut impl Write, array: &DecodedArray) -> io::Result<()> {
    out.write_all(&npy_header(&array.dtype(), array.shape(), array.meta().order))?;
    out.write_all(array.bytes())
}

/// Writes named arrays as an uncompressed `.npz` archive (a zip of `.npy` members), the entry
/// of each named by `member_name`.
pub fn write_npz<W: Write + io::Seek>(
    out: W,
    arrays: &[DecodedArray],
    member_name: impl Fn(&str) -> String,
) -> io::Result<W> {
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(arrays.iter().any(|a| a.bytes().len() as u64 >= u32::MAX as u64 / 2));
    for array in arrays {
        zip.start_file(format!("{}.npy", member_name(array.name())), options)
            .map_err(io::Error::other)?;
        write_npy(&mut zip, array)?;
    }
    zip.finish().map_err(io::Error::other)
}
