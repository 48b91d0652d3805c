//! The `.npy` and `.npz` file formats, read and written straight as bytes: the wire's dtype
//! string is numpy's own `descr`, and `"F"` order is `fortran_order`, so nothing is converted.

use std::io::{self, Read, Seek, Write};

use bytes::Bytes;

use crate::wire::{ArrayBuffer, DType, DecodedArray, Order};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The `.npy` header (magic, version, length, dict, padding) for one array.
pub(crate) fn npy_header(dtype: &crate::wire::DType, shape: &[usize], order: Order) -> Vec<u8> {
    let shape_text = match shape {
        [] => "()".to_owned(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = if order == Order::F && shape.len() > 1 {
        "True"
    } else {
        "False"
    };
    let dict =
        format!("{{'descr': '{dtype}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    // Version 1.0 stores the header length in 2 bytes; 2.0 in 4.
    let (version, len_bytes) = if dict.len() + 11 < 65_536 {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
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
pub(crate) fn write_npy(out: &mut impl Write, array: &DecodedArray) -> io::Result<()> {
    out.write_all(&npy_header(
        &array.dtype(),
        array.shape(),
        array.meta().order,
    ))?;
    out.write_all(array.bytes())
}

/// Writes named arrays as an uncompressed `.npz` archive (a zip of `.npy` members), the entry
/// of each named by `member_name`.
pub(crate) fn write_npz<W: Write + io::Seek>(
    out: W,
    arrays: &[DecodedArray],
    member_name: impl Fn(&str) -> String,
) -> io::Result<W> {
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(
            arrays
                .iter()
                .any(|a| a.bytes().len() as u64 >= u32::MAX as u64 / 2),
        );
    for array in arrays {
        zip.start_file(format!("{}.npy", member_name(array.name())), options)
            .map_err(io::Error::other)?;
        write_npy(&mut zip, array)?;
    }
    zip.finish().map_err(io::Error::other)
}

/// A `.npy` file ndbridge cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file does not start with the `.npy` magic or its header is cut short.
    #[error("not a .npy file: {0}")]
    NotNpy(&'static str),
    /// The header dictionary lacks a key or has a value ndbridge does not understand.
    #[error(".npy header: {0}")]
    Header(String),
    /// The data is shorter or longer than the header's shape and dtype need.
    #[error(".npy data holds {found} bytes, shape and dtype need {expected}")]
    Length {
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Reading the file or archive failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Parses a whole `.npy` file held in `file` into an array buffer that borrows it (no copy).
///
/// ```
/// use ndbridge::npy::read_npy;
///
/// // numpy's `np.save` of `np.array([1, 2], dtype="<i4")`: magic, version 1.0, header length,
/// // the header dict padded with spaces to a multiple of 64 bytes in all, then the data.
/// let dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
/// let mut file = b"\x93NUMPY\x01\x00".to_vec();
/// file.extend_from_slice(&118u16.to_le_bytes());
/// file.extend_from_slice(format!("{dict:<117}\n").as_bytes());
/// file.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
/// let array = read_npy(bytes::Bytes::from(file))?;
/// assert_eq!((array.dtype().to_string(), array.shape()), ("<i4".to_owned(), &[2][..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_npy(file: Bytes) -> Result<ArrayBuffer, NpyError> {
    if file.len() < 10 || &file[..6] != MAGIC {
        return Err(NpyError::NotNpy("missing the \\x93NUMPY magic"));
    }
    let (len, start) = match file[6] {
        1 => (u16::from_le_bytes([file[8], file[9]]) as usize, 10),
        2 | 3 if file.len() >= 12 => (
            u32::from_le_bytes([file[8], file[9], file[10], file[11]]) as usize,
            12,
        ),
        _ => return Err(NpyError::NotNpy("unknown format version")),
    };
    let dict = file
        .get(start..start + len)
        .ok_or(NpyError::NotNpy("header runs past the end"))?;
    let dict = std::str::from_utf8(dict).map_err(|_| NpyError::NotNpy("header is not text"))?;
    let descr = quoted_value(dict, "descr")
        .ok_or_else(|| NpyError::Header(format!("no simple 'descr' in {dict:?}")))?;
    let dtype: DType = descr
        .parse()
        .map_err(|e| NpyError::Header(format!("{e}")))?;
    let fortran = match raw_value(dict, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(NpyError::Header(format!("no 'fortran_order' in {dict:?}"))),
    };
    let shape_text = raw_value(dict, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| NpyError::Header(format!("no 'shape' in {dict:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NpyError::Header(format!("bad shape ({shape_text})")))?;
    let data = file.slice(start + len..);
    let expected = shape
        .iter()
        .try_fold(dtype.itemsize() as u64, |a, &n| a.checked_mul(n as u64))
        .unwrap_or(u64::MAX);
    if data.len() as u64 != expected {
        return Err(NpyError::Length {
            expected,
            found: data.len() as u64,
        });
    }
    let order = if fortran { Order::F } else { Order::C };
    ArrayBuffer::new(dtype, shape, order, data).map_err(|e| NpyError::Header(e.to_string()))
}

/// Reads every member of a `.npz` archive (stored or deflated), named without `.npy`.
pub fn read_npz(reader: impl Read + Seek) -> Result<Vec<(String, ArrayBuffer)>, NpyError> {
    let mut archive = zip::ZipArchive::new(reader).map_err(io::Error::other)?;
    let mut arrays = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(io::Error::other)?;
        let name = member.name().trim_end_matches(".npy").to_owned();
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member.read_to_end(&mut bytes)?;
        arrays.push((name, read_npy(Bytes::from(bytes))?));
    }
    Ok(arrays)
}

/// The text after `'key':`, trimmed.
fn raw_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}'"))?;
    let rest = dict[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

/// The single-quoted string after `'key':`.
fn quoted_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let rest = raw_value(dict, key)?.strip_prefix('\'')?;
    rest.split('\'').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DType;

    #[test]
    fn npy_headers_are_padded_dicts() {
        let h = npy_header(&"<f8".parse::<DType>().unwrap(), &[2, 3], Order::C);
        assert_eq!(h.len() % 64, 0);
        assert!(h.starts_with(b"\x93NUMPY\x01\x00"));
        let dict = String::from_utf8_lossy(&h[10..]);
        assert!(dict.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"));
    }
}
