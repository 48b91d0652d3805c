//! The header frame: a UTF-8 JSON object describing the record and each buffer frame that
//! follows it. Parsing checks every field and names the one that is wrong.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::codec::{Codec, Filter};
use super::dtype::DType;
use super::error::{DecodeError, EncodeError};
use super::limits::Limits;

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Longest record or array name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;

/// The record name of a message that ends its session ([`Header::end_of`]).
const END_NAME: &str = "end";

/// The element order of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Order {
    /// Row-major: the last index varies fastest.
    C,
    /// Column-major: the first index varies fastest.
    F,
}

/// One entry of the header's `arrays` list: how to read one buffer frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrayMeta {
    /// The array's name within the record.
    pub name: String,
    /// Element type, byte order included.
    #[serde(serialize_with = "serialize_display")]
    pub dtype: DType,
    /// Length of each axis; empty for a 0-d array.
    pub shape: Vec<usize>,
    /// Element order of the decoded buffer.
    pub order: Order,
    /// How the frame is encoded.
    pub codec: Codec,
    /// Filters applied before the codec, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Decoded length in bytes: `product(shape) * itemsize`.
    pub nbytes: u64,
}

impl ArrayMeta {
    /// Number of elements: the product of the shape (1 for a 0-d array).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the byte shuffle filter was applied.
    pub fn is_shuffled(&self) -> bool {
        self.filters.contains(&Filter::Shuffle)
    }
}

fn serialize_display<S: serde::Serializer>(t: &DType, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// The decoded header of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The record's name (also the PUB/SUB topic).
    pub name: String,
    /// The publisher's id.
    pub source: String,
    /// A random id chosen when the publisher started.
    pub session: String,
    /// Position of this message in its publisher session: 0, 1, 2, ...
    pub seq: u64,
    /// Publisher clock, seconds since the Unix epoch.
    pub time: f64,
    /// One entry per buffer frame, in frame order.
    pub arrays: Vec<ArrayMeta>,
    /// The user's JSON object, passed through untouched.
    pub attrs: Option<Map<String, Value>>,
    /// The message ends its publisher session: it carries no arrays, and its `seq` is the
    /// number of records the session sent (see [`Header::end_of`]).
    pub end: bool,
}

impl Header {
    /// The message that ends a publisher session after `records` records (`seq` 0 to
    /// `records - 1`): named `end`, without arrays, its `seq` the next one. A collector that
    /// receives it knows which records should have come, the last ones included.
    pub fn end_of(source: &str, session: &str, records: u64, time: f64) -> Header {
        Header {
            name: END_NAME.to_owned(),
            source: source.to_owned(),
            session: session.to_owned(),
            seq: records,
            time,
            arrays: Vec::new(),
            attrs: None,
            end: true,
        }
    }

    /// Parses and validates a header frame.
    ///
    /// Every field is checked against the format: `nbytes` must equal `product(shape) *
    /// itemsize`, and the sizes it claims must be within `limits`. Unknown fields are ignored.
    ///
    /// ```
    /// use ndbridge::wire::{Codec, Header, Limits};
    ///
    /// let json = br#"{"v": 1, "name": "u", "source": "w1", "session": "ab", "seq": 7,
    ///   "time": 1.5, "arrays": [{"name": "u", "dtype": "<f8", "shape": [2, 3],
    ///   "order": "C", "codec": "raw", "nbytes": 48}]}"#;
    /// let header = Header::parse(json, &Limits::default())?;
    /// assert_eq!((header.seq, header.arrays[0].codec), (7, Codec::Raw));
    /// # Ok::<(), ndbridge::wire::DecodeError>(())
    /// ```
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Header, DecodeError> {
        if bytes.len() > limits.max_header_bytes {
            return Err(DecodeError::HeaderTooLarge {
                size: bytes.len(),
                limit: limits.max_header_bytes,
            });
        }
        // Valid headers take the typed fast path; anything it does not accept is parsed again
        // field by field, which names exactly what is wrong (or accepts what the fast path was
        // too strict for).
        match fast_parse(bytes, limits) {
            Some(header) => Ok(header),
            None => parse_field_by_field(bytes, limits),
        }
    }
}

/// The reference parser: reads each field in turn and reports the first that is wrong, with
/// the format's rules ([`validate`]) applied as soon as the fields they look at are read.
fn parse_field_by_field(bytes: &[u8], limits: &Limits) -> Result<Header, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson {
        reason: e.to_string(),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(DecodeError::NotAnObject {
            found: json_type(&value),
        });
    };
    check_version(get_u64(&obj, "v", "v")?)?;
    let name = get_str(&obj, "name", "name")?;
    check_name_field(NameField::Record, name)?;
    let name = name.to_owned();
    let source = get_str(&obj, "source", "source")?.to_owned();
    let session = get_str(&obj, "session", "session")?.to_owned();
    let seq = get_u64(&obj, "seq", "seq")?;
    let time = match require(&obj, "time", "time")? {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        other => return Err(invalid("time", "a number", other)),
    };
    let attrs = match obj.remove("attrs") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => return Err(invalid("attrs", "a JSON object", &other)),
    };
    let list = match require(&obj, "arrays", "arrays")? {
        Value::Array(list) => list,
        other => return Err(invalid("arrays", "a list", other)),
    };
    check_array_count(list.len(), limits)?;
    let arrays = list
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_array(i, entry, limits))
        .collect::<Result<Vec<_>, _>>()?;
    check_arrays(&arrays, limits)?;
    let end = match obj.get("end") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => return Err(invalid("end", "true or false", other)),
    };
    check_end(end, arrays.len())?;
    Ok(Header {
        name,
        source,
        session,
        seq,
        time,
        arrays,
        attrs,
        end,
    })
}

/// The header as typed fields borrowed from the JSON text: no intermediate JSON tree.
#[derive(Deserialize)]
struct FastHeader<'a> {
    v: u64,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    session: Cow<'a, str>,
    seq: u64,
    time: f64,
    #[serde(borrow)]
    arrays: Vec<FastArray<'a>>,
    #[serde(default)]
    attrs: Option<Map<String, Value>>,
    #[serde(default)]
    end: bool,
}

#[derive(Deserialize)]
struct FastArray<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Vec<u64>,
    #[serde(borrow)]
    order: Cow<'a, str>,
    #[serde(borrow)]
    codec: Cow<'a, str>,
    #[serde(default, borrow)]
    filters: Option<Vec<Cow<'a, str>>>,
    nbytes: u64,
}

/// Parses a header that is valid in every respect; `None` for anything else (the caller then
/// runs the field-by-field parser to find out what). The rules are [`validate`]'s, applied
/// to the typed fields as they are read.
fn fast_parse(bytes: &[u8], limits: &Limits) -> Option<Header> {
    // The header is UTF-8 as a whole (checked once, in a few nanoseconds); parsing from `str`
    // then skips serde_json's check of each string, a quarter of the parse time.
    let text = std::str::from_utf8(bytes).ok()?;
    let h: FastHeader<'_> = serde_json::from_str(text).ok()?;
    check_version(h.v).ok()?;
    check_name_field(NameField::Record, &h.name).ok()?;
    check_array_count(h.arrays.len(), limits).ok()?;
    let mut arrays: Vec<ArrayMeta> = Vec::with_capacity(h.arrays.len());
    for (index, a) in h.arrays.into_iter().enumerate() {
        arrays.push(fast_array(index, a, limits)?);
    }
    check_arrays(&arrays, limits).ok()?;
    check_end(h.end, arrays.len()).ok()?;
    Some(Header {
        name: h.name.into_owned(),
        source: h.source.into_owned(),
        session: h.session.into_owned(),
        seq: h.seq,
        time: h.time,
        arrays,
        attrs: h.attrs,
        end: h.end,
    })
}

/// One entry of `arrays` on the fast path; `None` if anything about it is wrong.
fn fast_array(index: usize, a: FastArray<'_>, limits: &Limits) -> Option<ArrayMeta> {
    check_name_field(NameField::Array(index), &a.name).ok()?;
    let dtype: DType = a.dtype.parse().ok()?;
    check_ndim(index, a.shape.len(), limits).ok()?;
    let shape = a
        .shape
        .iter()
        .map(|&n| usize::try_from(n).ok())
        .collect::<Option<Vec<usize>>>()?;
    let order = Order::from_wire(&a.order)?;
    let codec = Codec::from_wire(&a.codec)?;
    let names = a.filters.as_deref().unwrap_or_default();
    let mut filters = Vec::with_capacity(names.len());
    for (k, name) in names.iter().enumerate() {
        let filter = Filter::from_wire(name)?;
        check_filter_once(index, k, &filters, filter).ok()?;
        filters.push(filter);
    }
    let meta = ArrayMeta {
        name: a.name.into_owned(),
        dtype,
        shape,
        order,
        codec,
        filters,
        nbytes: a.nbytes,
    };
    check_array(index, &meta, limits).ok()?;
    Some(meta)
}

/// The arrays' decoded bytes together; `None` past `u64::MAX` (each may be up to
/// [`Limits::max_array_bytes`], which can be set that high).
fn total_nbytes(arrays: &[ArrayMeta]) -> Option<u64> {
    arrays
        .iter()
        .try_fold(0u64, |total, a| total.checked_add(a.nbytes))
}

/// One entry of `arrays` on the field-by-field path: each field read in turn, and the rules
/// applied as soon as the fields they look at are read.
fn parse_array(index: usize, entry: &Value, limits: &Limits) -> Result<ArrayMeta, DecodeError> {
    let path = |field: &str| format!("arrays[{index}].{field}");
    let Value::Object(obj) = entry else {
        return Err(invalid(&format!("arrays[{index}]"), "a JSON object", entry));
    };
    let name = get_str(obj, "name", &path("name"))?;
    check_name_field(NameField::Array(index), name)?;
    let dtype_str = get_str(obj, "dtype", &path("dtype"))?;
    let dtype: DType = dtype_str.parse().map_err(|error| DecodeError::BadDType {
        field: path("dtype"),
        error,
    })?;
    let shape = parse_shape(index, obj, limits)?;
    let order = get_str(obj, "order", &path("order"))?;
    let order = Order::from_wire(order)
        .ok_or_else(|| invalid_str(&path("order"), "\"C\" or \"F\"", order))?;
    let codec = get_str(obj, "codec", &path("codec"))?;
    let codec = Codec::from_wire(codec).ok_or_else(|| {
        invalid_str(
            &path("codec"),
            "\"raw\", \"zstd\" or \"zstd-chunks\"",
            codec,
        )
    })?;
    let filters = parse_filters(index, obj)?;
    let meta = ArrayMeta {
        name: name.to_owned(),
        dtype,
        shape,
        order,
        codec,
        filters,
        nbytes: get_u64(obj, "nbytes", &path("nbytes"))?,
    };
    check_array(index, &meta, limits)?;
    Ok(meta)
}

/// `arrays[index].shape`: at most `max_ndim` non-negative integers.
fn parse_shape(
    index: usize,
    obj: &Map<String, Value>,
    limits: &Limits,
) -> Result<Vec<usize>, DecodeError> {
    let path = format!("arrays[{index}].shape");
    let list = match require(obj, "shape", &path)? {
        Value::Array(list) => list,
        other => return Err(invalid(&path, "a list of integers", other)),
    };
    check_ndim(index, list.len(), limits)?;
    list.iter()
        .enumerate()
        .map(|(axis, dim)| {
            dim.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        &format!("arrays[{index}].shape[{axis}]"),
                        "a non-negative integer",
                        dim,
                    )
                })
        })
        .collect()
}

/// `arrays[index].filters`: absent, null, or a list of distinct filter names.
fn parse_filters(index: usize, obj: &Map<String, Value>) -> Result<Vec<Filter>, DecodeError> {
    let list = match obj.get("filters") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            let path = format!("arrays[{index}].filters");
            return Err(invalid(&path, "a list of filter names", other));
        }
    };
    let mut filters = Vec::with_capacity(list.len());
    for (k, f) in list.iter().enumerate() {
        let filter = f
            .as_str()
            .and_then(Filter::from_wire)
            .ok_or_else(|| invalid(&format!("arrays[{index}].filters[{k}]"), "\"shuffle\"", f))?;
        check_filter_once(index, k, &filters, filter)?;
        filters.push(filter);
    }
    Ok(filters)
}

impl Order {
    /// The order named on the wire (`"C"` or `"F"`).
    fn from_wire(name: &str) -> Option<Order> {
        match name {
            "C" => Some(Order::C),
            "F" => Some(Order::F),
            _ => None,
        }
    }
}

impl Codec {
    /// The codec named on the wire (`"raw"`, `"zstd"` or `"zstd-chunks"`).
    fn from_wire(name: &str) -> Option<Codec> {
        match name {
            "raw" => Some(Codec::Raw),
            "zstd" => Some(Codec::Zstd),
            "zstd-chunks" => Some(Codec::ZstdChunks),
            _ => None,
        }
    }
}

impl Filter {
    /// The filter named on the wire (`"shuffle"`).
    fn from_wire(name: &str) -> Option<Filter> {
        match name {
            "shuffle" => Some(Filter::Shuffle),
            _ => None,
        }
    }

    /// The name used on the wire.
    fn as_str(self) -> &'static str {
        match self {
            Filter::Shuffle => "shuffle",
        }
    }
}

// The format's rules on a header's values: the checks of fields against each other and against
// `Limits`. Both parse paths apply them (each as soon as the fields a rule looks at are read, so
// the field-by-field parser reports the first wrong field), and `HeaderCache` only hands out
// headers that passed them; a rule lives here and nowhere else.

/// Checks a parsed header against every rule of the format and `limits`, in the order the
/// field-by-field parser applies them: the error is the one [`Header::parse`] reports for the
/// header's JSON.
pub(crate) fn validate(header: &Header, limits: &Limits) -> Result<(), DecodeError> {
    // A `Header` is of this crate's version: it carries no `v` to check.
    check_name_field(NameField::Record, &header.name)?;
    check_array_count(header.arrays.len(), limits)?;
    for (index, meta) in header.arrays.iter().enumerate() {
        check_name_field(NameField::Array(index), &meta.name)?;
        check_ndim(index, meta.shape.len(), limits)?;
        for (k, &filter) in meta.filters.iter().enumerate() {
            check_filter_once(index, k, &meta.filters[..k], filter)?;
        }
        check_array(index, meta, limits)?;
    }
    check_arrays(&header.arrays, limits)?;
    check_end(header.end, header.arrays.len())
}

/// `v` is the version this crate reads.
fn check_version(version: u64) -> Result<(), DecodeError> {
    if version == FORMAT_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        })
    }
}

/// Which name a [`check_name_field`] error is about.
#[derive(Clone, Copy)]
enum NameField {
    /// The record's `name`.
    Record,
    /// `arrays[i].name`.
    Array(usize),
}

/// A record or array name follows [`check_name`].
fn check_name_field(field: NameField, name: &str) -> Result<(), DecodeError> {
    check_name(name).map_err(|reason| DecodeError::InvalidField {
        field: match field {
            NameField::Record => "name".to_owned(),
            NameField::Array(index) => format!("arrays[{index}].name"),
        },
        expected: "a non-empty name of at most 256 bytes without NUL",
        found: format!("{:?} ({reason})", shorten(name)),
    })
}

/// At most `max_arrays` arrays.
fn check_array_count(count: usize, limits: &Limits) -> Result<(), DecodeError> {
    if count > limits.max_arrays {
        return Err(DecodeError::TooManyArrays {
            count,
            limit: limits.max_arrays,
        });
    }
    Ok(())
}

/// At most `max_ndim` axes.
fn check_ndim(index: usize, ndim: usize, limits: &Limits) -> Result<(), DecodeError> {
    if ndim > limits.max_ndim {
        return Err(DecodeError::InvalidField {
            field: format!("arrays[{index}].shape"),
            expected: "at most max_ndim dimensions",
            found: format!("{ndim} dimensions (max_ndim is {})", limits.max_ndim),
        });
    }
    Ok(())
}

/// Filter `k` of array `index` is not among the ones before it.
fn check_filter_once(
    index: usize,
    k: usize,
    before: &[Filter],
    filter: Filter,
) -> Result<(), DecodeError> {
    if before.contains(&filter) {
        return Err(DecodeError::InvalidField {
            field: format!("arrays[{index}].filters[{k}]"),
            expected: "each filter at most once",
            found: format!("string {:?}", filter.as_str()),
        });
    }
    Ok(())
}

/// An array's `nbytes` is `product(shape) * itemsize`, within `max_array_bytes` and the address
/// space, and so is every axis.
fn check_array(index: usize, meta: &ArrayMeta, limits: &Limits) -> Result<(), DecodeError> {
    let itemsize = meta.dtype.itemsize();
    let computed = meta
        .shape
        .iter()
        .try_fold(itemsize as u64, |acc, &n| acc.checked_mul(n as u64))
        .unwrap_or(u64::MAX);
    if computed != meta.nbytes {
        return Err(DecodeError::NbytesMismatch {
            array: meta.name.clone(),
            declared: meta.nbytes,
            computed,
        });
    }
    if meta.nbytes > limits.max_array_bytes || usize::try_from(meta.nbytes).is_err() {
        return Err(DecodeError::ArrayTooLarge {
            array: meta.name.clone(),
            nbytes: meta.nbytes,
            limit: limits.max_array_bytes,
        });
    }
    if !shape_fits(&meta.shape, itemsize) {
        return Err(DecodeError::InvalidField {
            field: format!("arrays[{index}].shape"),
            expected: "axes whose non-zero lengths multiply to at most isize::MAX bytes",
            found: format!("{:?}", meta.shape),
        });
    }
    Ok(())
}

/// The arrays together are within `max_message_bytes`, and no two share a name.
fn check_arrays(arrays: &[ArrayMeta], limits: &Limits) -> Result<(), DecodeError> {
    // A sum past u64::MAX is over any limit, u64::MAX included.
    match total_nbytes(arrays) {
        Some(total) if total <= limits.max_message_bytes => {}
        total => {
            return Err(DecodeError::MessageTooLarge {
                total: total.unwrap_or(u64::MAX),
                limit: limits.max_message_bytes,
            })
        }
    }
    for (i, meta) in arrays.iter().enumerate() {
        if arrays[..i].iter().any(|other| other.name == meta.name) {
            return Err(DecodeError::InvalidField {
                field: format!("arrays[{i}].name"),
                expected: "a name not used by another array of the record",
                found: format!("{:?} again", shorten(&meta.name)),
            });
        }
    }
    Ok(())
}

/// True when every axis fits the address space: the product of the non-zero lengths times the
/// item size is at most `isize::MAX` (so `[0, 2^63, 2^63]` is refused though it holds nothing).
fn shape_fits(shape: &[usize], itemsize: usize) -> bool {
    shape
        .iter()
        .filter(|&&n| n > 0)
        .try_fold(itemsize as u64, |acc, &n| acc.checked_mul(n as u64))
        .is_some_and(|extent| extent <= isize::MAX as u64)
}

/// Checks a record or array name: non-empty, at most [`MAX_NAME_BYTES`] bytes, no NUL.
pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Err("is longer than 256 bytes")
    } else if name.contains('\0') {
        Err("must not contain NUL")
    } else {
        Ok(())
    }
}

pub(crate) fn check_name_for_encode(name: &str) -> Result<(), EncodeError> {
    check_name(name).map_err(|reason| EncodeError::InvalidName {
        name: shorten(name),
        reason,
    })
}

/// An end message carries no arrays.
fn check_end(end: bool, arrays: usize) -> Result<(), DecodeError> {
    if end && arrays > 0 {
        return Err(DecodeError::InvalidField {
            field: "end".to_owned(),
            expected: "no arrays in a message that ends its session",
            found: format!("{arrays} arrays"),
        });
    }
    Ok(())
}

fn require<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'v Value, DecodeError> {
    obj.get(key).ok_or_else(|| DecodeError::MissingField {
        field: path.to_owned(),
    })
}

fn get_str<'v>(obj: &'v Map<String, Value>, key: &str, path: &str) -> Result<&'v str, DecodeError> {
    match require(obj, key, path)? {
        Value::String(s) => Ok(s),
        other => Err(invalid(path, "a string", other)),
    }
}

fn get_u64(obj: &Map<String, Value>, key: &str, path: &str) -> Result<u64, DecodeError> {
    let value = require(obj, key, path)?;
    value
        .as_u64()
        .ok_or_else(|| invalid(path, "a non-negative integer", value))
}

fn invalid(path: &str, expected: &'static str, found: &Value) -> DecodeError {
    let mut text = found.to_string();
    if text.len() > 64 {
        text = format!("{}...", shorten(&text));
    }
    DecodeError::InvalidField {
        field: path.to_owned(),
        expected,
        found: format!("{} {}", json_type(found), text),
    }
}

fn invalid_str(path: &str, expected: &'static str, found: &str) -> DecodeError {
    DecodeError::InvalidField {
        field: path.to_owned(),
        expected,
        found: format!("{:?}", shorten(found)),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_end_is_written_and_read_back_and_checked() {
        let end = Header::end_of("w1", "ab12", 7, 1.5);
        let json = end.to_json();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"v":1,"name":"end","source":"w1","session":"ab12","seq":7,"time":1.5,"arrays":[],"end":true}"#
        );
        let limits = Limits::default();
        assert_eq!(Header::parse(&json, &limits).unwrap(), end);
        assert_eq!(parse_field_by_field(&json, &limits).unwrap(), end);
        // `false` is an ordinary record, as is a header without the field.
        let text = std::str::from_utf8(&json).unwrap();
        let ordinary = Header::parse(text.replace("true", "false").as_bytes(), &limits).unwrap();
        assert!(!ordinary.end);
        for (bad, says) in [
            (text.replace("true", "1"), "expected true or false"),
            (text.replace("true", "\"yes\""), "expected true or false"),
            (
                text.replace(
                    "[]",
                    r#"[{"name":"u","dtype":"<f8","shape":[1],"order":"C","codec":"raw","nbytes":8}]"#,
                ),
                "no arrays in a message that ends its session",
            ),
        ] {
            let error = Header::parse(bad.as_bytes(), &limits).unwrap_err().to_string();
            assert!(error.contains("end") && error.contains(says), "{bad}: {error}");
        }
    }

    /// Every golden header (written by NumPy) parses the same on both paths.
    #[test]
    fn fast_path_agrees_with_the_field_by_field_parser() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "frames") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            let header = &data[8..8 + len];
            let limits = Limits::default();
            let slow = parse_field_by_field(header, &limits).unwrap();
            assert_eq!(
                fast_parse(header, &limits),
                Some(slow),
                "{}",
                path.display()
            );
            checked += 1;
        }
        assert!(checked > 50);
    }

    #[test]
    fn fast_path_declines_what_it_does_not_fully_check() {
        let limits = Limits::default();
        let ok = br#"{"v":1,"name":"a","source":"s","session":"x","seq":0,"time":0,
            "arrays":[{"name":"a","dtype":"<f8","shape":[2],"order":"C","codec":"raw","nbytes":16}]}"#;
        assert!(fast_parse(ok, &limits).is_some());
        let text = std::str::from_utf8(ok).unwrap();
        for bad in [
            text.replace("\"v\":1", "\"v\":2"),
            text.replace("\"nbytes\":16", "\"nbytes\":15"),
            text.replace("\"<f8\"", "\"<f16\""),
            text.replace("\"C\"", "\"K\""),
            text.replace("[2]", "[-2]"),
        ] {
            assert!(fast_parse(bad.as_bytes(), &limits).is_none(), "{bad}");
            assert!(
                parse_field_by_field(bad.as_bytes(), &limits).is_err(),
                "{bad}"
            );
        }
    }

    /// A valid header of two arrays, to break one rule at a time.
    fn two_arrays() -> Header {
        let array = |name: &str| ArrayMeta {
            name: name.into(),
            dtype: "<f8".parse().unwrap(),
            shape: vec![2, 3],
            order: Order::C,
            codec: Codec::Zstd,
            filters: vec![Filter::Shuffle],
            nbytes: 48,
        };
        Header {
            name: "r".into(),
            source: "w".into(),
            session: "s".into(),
            seq: 3,
            time: 0.5,
            arrays: vec![array("a"), array("b")],
            attrs: None,
            end: false,
        }
    }

    /// Headers whose JSON is well formed, field for field, but that break one rule of the
    /// format: each is refused by [`validate`], by both parse paths and through a template
    /// cache that knows the valid header's prefix, with the same error.
    #[test]
    fn each_rule_is_enforced_the_same_by_every_parse_path() {
        let limits = Limits {
            max_arrays: 2,
            max_ndim: 3,
            max_array_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            ..Limits::default()
        };
        type Break = fn(&mut Header);
        let breaks: [(&str, Break); 11] = [
            ("nbytes", |h| h.arrays[0].nbytes = 40),
            ("record name", |h| h.name = "a\0b".into()),
            ("array name", |h| h.arrays[1].name = String::new()),
            ("duplicate names", |h| h.arrays[1].name = "a".into()),
            ("duplicate filter", |h| {
                h.arrays[0].filters.push(Filter::Shuffle)
            }),
            ("max_ndim", |h| {
                h.arrays[1].shape = vec![1, 2, 3, 1];
                h.arrays[1].nbytes = 48;
            }),
            ("max_arrays", |h| {
                let mut c = h.arrays[0].clone();
                c.name = "c".into();
                h.arrays.push(c);
            }),
            ("max_array_bytes", |h| {
                h.arrays[0].shape = vec![1 << 18];
                h.arrays[0].nbytes = 8 << 18;
            }),
            ("max_message_bytes", |h| {
                for a in &mut h.arrays {
                    a.shape = vec![1 << 16, 2];
                    a.nbytes = 16 << 16;
                }
            }),
            ("address space", |h| {
                h.arrays[0].shape = vec![0, 1 << 62, 4];
                h.arrays[0].nbytes = 0;
            }),
            ("end with arrays", |h| h.end = true),
        ];
        let valid = two_arrays();
        assert_eq!(validate(&valid, &limits), Ok(()));
        for (rule, break_it) in breaks {
            let mut header = valid.clone();
            break_it(&mut header);
            let json = header.to_json();
            let expected = validate(&header, &limits).expect_err(rule);
            assert_eq!(fast_parse(&json, &limits), None, "{rule}");
            assert_eq!(
                parse_field_by_field(&json, &limits),
                Err(expected.clone()),
                "{rule}"
            );
            assert_eq!(
                Header::parse(&json, &limits),
                Err(expected.clone()),
                "{rule}"
            );
            let mut cache = crate::wire::HeaderCache::new(limits);
            let known = valid.to_json();
            assert_eq!(cache.parse(&known), Ok(valid.clone()), "{rule}");
            assert_eq!(cache.parse(&json), Err(expected), "{rule}");
        }
    }
}
