//! Element types on the wire: numpy's array-interface type strings (`<f8`, `|u1`, `>c16`, ...)
//! and the [`Element`] trait that maps Rust scalar types onto them.

use std::fmt;
use std::str::FromStr;

use num_complex::Complex;
use thiserror::Error;

/// A type string that is not one of the wire's element types.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown dtype {found:?}: expected a numpy type string such as \"<f8\", \"|u1\" or \">c16\""
)]
pub struct DTypeError {
    /// The string that came (at most 32 characters of it).
    pub found: String,
}

/// The byte order of a multi-byte element, as the first character of a type string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// `<`: least significant byte first.
    Little,
    /// `>`: most significant byte first.
    Big,
    /// `|`: single-byte types, where the order does not apply.
    NotApplicable,
}

impl ByteOrder {
    /// The byte order of the machine this code runs on.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };

    fn as_char(self) -> char {
        match self {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        }
    }
}

/// The kind of an element: numpy's type character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `b`: boolean, one byte holding 0 or 1.
    Bool,
    /// `i`: signed integer.
    Int,
    /// `u`: unsigned integer.
    UInt,
    /// `f`: IEEE 754 floating point.
    Float,
    /// `c`: complex, two floats (real, imaginary).
    Complex,
}

impl Kind {
    fn as_char(self) -> char {
        match self {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::UInt => 'u',
            Kind::Float => 'f',
            Kind::Complex => 'c',
        }
    }
}

/// An element type: kind, size in bytes and byte order.
///
/// Parsed from and formatted to numpy's array-interface type string, which always names its byte
/// order explicitly on the wire.
///
/// ```
/// use ndbridge::wire::{ByteOrder, DType, Kind};
///
/// let t: DType = "<f8".parse()?;
/// assert_eq!((t.kind(), t.itemsize(), t.byte_order()), (Kind::Float, 8, ByteOrder::Little));
/// assert_eq!(t.to_string(), "<f8");
/// assert_eq!(">c16".parse::<DType>()?.to_native().to_string(), "<c16");
/// assert!("<f16".parse::<DType>().is_err());
/// # Ok::<(), ndbridge::wire::DTypeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DType {
    kind: Kind,
    itemsize: u8,
    order: ByteOrder,
}

impl DType {
    /// Builds a type from its parts; `None` for a combination numpy's wire set does not have
    /// (for example a 3-byte integer, or a multi-byte type without a byte order).
    pub fn new(kind: Kind, itemsize: usize, order: ByteOrder) -> Option<DType> {
        let size_ok = match kind {
            Kind::Bool => itemsize == 1,
            Kind::Int | Kind::UInt => matches!(itemsize, 1 | 2 | 4 | 8),
            Kind::Float => matches!(itemsize, 2 | 4 | 8),
            Kind::Complex => matches!(itemsize, 8 | 16),
        };
        if !size_ok {
            return None;
        }
        let order = match (itemsize, order) {
            (1, _) => ByteOrder::NotApplicable,
            (_, ByteOrder::NotApplicable) => return None,
            (_, order) => order,
        };
        Some(DType {
            kind,
            itemsize: itemsize as u8,
            order,
        })
    }

    /// The element kind.
    pub fn kind(self) -> Kind {
        self.kind
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        self.itemsize as usize
    }

    /// The byte order; [`ByteOrder::NotApplicable`] for one-byte types.
    pub fn byte_order(self) -> ByteOrder {
        self.order
    }

    /// True when elements can be read on this machine without swapping bytes.
    pub fn is_native(self) -> bool {
        self.order == ByteOrder::NotApplicable || self.order == ByteOrder::NATIVE
    }

    /// The same type in this machine's byte order.
    pub fn to_native(self) -> DType {
        self.with_order(ByteOrder::NATIVE)
    }

    /// The same type in the given byte order (one-byte types stay `|`).
    pub fn with_order(self, order: ByteOrder) -> DType {
        let order = if self.itemsize == 1 {
            ByteOrder::NotApplicable
        } else {
            order
        };
        DType { order, ..self }
    }

    /// The size of the unit whose bytes a byte-order change reverses: the whole element, or each
    /// of the two halves of a complex number.
    pub fn swap_unit(self) -> usize {
        match self.kind {
            Kind::Complex => self.itemsize() / 2,
            _ => self.itemsize(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.order.as_char(),
            self.kind.as_char(),
            self.itemsize
        )
    }
}

impl FromStr for DType {
    type Err = DTypeError;

    /// Parses `<f8`, `>i4`, `|u1`, `|b1`, ... For one-byte types any of `<`, `>`, `|` is
    /// accepted; multi-byte types need `<` or `>`.
    fn from_str(s: &str) -> Result<DType, DTypeError> {
        let bad = || DTypeError {
            found: s.chars().take(32).collect(),
        };
        let mut chars = s.chars();
        let order = match chars.next() {
            Some('<') => ByteOrder::Little,
            Some('>') => ByteOrder::Big,
            Some('|') => ByteOrder::NotApplicable,
            _ => return Err(bad()),
        };
        let kind = match chars.next() {
            Some('b') => Kind::Bool,
            Some('i') => Kind::Int,
            Some('u') => Kind::UInt,
            Some('f') => Kind::Float,
            Some('c') => Kind::Complex,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        // One or two digits, no leading zero (as numpy writes them).
        if digits.is_empty()
            || digits.len() > 2
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let itemsize: usize = digits.parse().map_err(|_| bad())?;
        let order = match (itemsize, order) {
            (1, _) => ByteOrder::NotApplicable,
            (_, order) => order,
        };
        DType::new(kind, itemsize, order).ok_or_else(bad)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust scalar type that ndbridge sends and receives: `bool`, `i8`..`i64`, `u8`..`u64`,
/// [`half::f16`], `f32`, `f64`, `Complex<f32>`, `Complex<f64>`.
///
/// Its [`Element::DTYPE`] is the native-order type string. The bytemuck bounds are what make
/// zero-copy safe: every element type can be viewed as bytes, and a byte slice can be viewed as
/// elements after a check (alignment, and for `bool` that every byte is 0 or 1).
pub trait Element:
    bytemuck::NoUninit
    + bytemuck::CheckedBitPattern
    + bytemuck::Zeroable
    + Send
    + Sync
    + fmt::Debug
    + 'static
    + sealed::Sealed
{
    /// The element's type in this machine's byte order.
    const DTYPE: DType;

    /// Copies elements out of `bytes` (any alignment), reversing each `swap_unit`-byte group
    /// first when `swap_unit > 1`. `Err(i)` names the first byte that is not a valid element.
    #[doc(hidden)]
    fn copy_from_bytes(bytes: &[u8], swap_unit: usize) -> Result<Vec<Self>, usize>;
}

const fn native_dtype(kind: Kind, itemsize: u8) -> DType {
    DType {
        kind,
        itemsize,
        order: if itemsize == 1 {
            ByteOrder::NotApplicable
        } else {
            ByteOrder::NATIVE
        },
    }
}

macro_rules! element {
    ($t:ty, $kind:expr, $size:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = native_dtype($kind, $size);

            fn copy_from_bytes(bytes: &[u8], swap_unit: usize) -> Result<Vec<Self>, usize> {
                let mut out = vec![<$t as bytemuck::Zeroable>::zeroed(); bytes.len() / $size];
                let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
                dst.copy_from_slice(&bytes[..dst.len()]);
                swap_bytes_in_place(dst, swap_unit);
                Ok(out)
            }
        }
    };
}

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DType = native_dtype(Kind::Bool, 1);

    fn copy_from_bytes(bytes: &[u8], _swap_unit: usize) -> Result<Vec<Self>, usize> {
        bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(i),
            })
            .collect()
    }
}

element!(i8, Kind::Int, 1);
element!(i16, Kind::Int, 2);
element!(i32, Kind::Int, 4);
element!(i64, Kind::Int, 8);
element!(u8, Kind::UInt, 1);
element!(u16, Kind::UInt, 2);
element!(u32, Kind::UInt, 4);
element!(u64, Kind::UInt, 8);
element!(half::f16, Kind::Float, 2);
element!(f32, Kind::Float, 4);
element!(f64, Kind::Float, 8);
element!(Complex<f32>, Kind::Complex, 8);
element!(Complex<f64>, Kind::Complex, 16);

/// Reverses the byte order of every `unit`-sized group of `bytes` in place.
pub(crate) fn swap_bytes_in_place(bytes: &mut [u8], unit: usize) {
    if unit > 1 {
        for chunk in bytes.chunks_exact_mut(unit) {
            chunk.reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 25] = [
        "|b1", "|i1", "|u1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "<c8",
        "<c16", ">i2", ">i4", ">i8", ">u2", ">u4", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16",
    ];

    #[test]
    fn every_wire_type_string_round_trips() {
        for s in ALL {
            let t: DType = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn one_byte_types_accept_any_order_mark_and_print_bar() {
        assert_eq!("<u1".parse::<DType>().unwrap().to_string(), "|u1");
        assert_eq!(">b1".parse::<DType>().unwrap().to_string(), "|b1");
    }

    #[test]
    fn rejects_unknown_and_malformed_type_strings() {
        for s in [
            "", "f8", "<f16", "<f1", "<i3", "|f8", "<b2", "<c4", "<U8", "<f8 ", "<f08x", "O",
            "<M8", "<f08", "|u01", "<i04",
        ] {
            let err = s.parse::<DType>().unwrap_err();
            assert_eq!(err.found, s.chars().take(32).collect::<String>());
        }
    }

    #[test]
    fn element_types_map_to_native_type_strings() {
        let native = if cfg!(target_endian = "little") {
            '<'
        } else {
            '>'
        };
        assert_eq!(f64::DTYPE.to_string(), format!("{native}f8"));
        assert_eq!(Complex::<f32>::DTYPE.to_string(), format!("{native}c8"));
        assert_eq!(half::f16::DTYPE.to_string(), format!("{native}f2"));
        assert_eq!(bool::DTYPE.to_string(), "|b1");
        assert_eq!(u8::DTYPE.to_string(), "|u1");
    }

    #[test]
    fn complex_swaps_each_half() {
        let t: DType = ">c16".parse().unwrap();
        assert_eq!(t.swap_unit(), 8);
        let mut b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        swap_bytes_in_place(&mut b, 4);
        assert_eq!(b, [4, 3, 2, 1, 8, 7, 6, 5]);
    }
}
