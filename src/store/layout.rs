//! The store's layout as pure code, no I/O: node names, each array's `zarr.json`, the shard
//! index, the chunk keys and the encoding of the index columns' chunks (docs/store.md).

use serde_json::{json, Map, Value};

use crate::wire::{ByteOrder, DType, Kind, Order};

/// Records per chunk of an index column (`seq`, `session`, `time`, `received`, `attrs`).
pub(crate) const COLUMN_CHUNK: u64 = 4096;

/// The zstd level of the index columns' chunks.
const COLUMN_LEVEL: i32 = 1;

/// A shard holds about this many bytes of decoded records (at most [`MAX_SHARD_RECORDS`]).
const SHARD_TARGET_BYTES: u64 = 32 << 20;

/// Most records in one shard: its index (16 bytes a record) stays at most 64 KiB.
const MAX_SHARD_RECORDS: u64 = 4096;

/// One entry of a shard's index: where an inner chunk (one record) starts and how long it is.
pub(crate) type IndexEntry = (u64, u64);

/// The entry of an inner chunk that holds nothing (read as the fill value).
pub(crate) const EMPTY: IndexEntry = (u64::MAX, u64::MAX);

/// The index columns every record group has, in this order: the record's `seq`, its
/// publisher `session`, the publisher's `time`, the collector's `received` time, and its
/// `attrs` as JSON (`""` when it had none).
pub const COLUMNS: [&str; 5] = ["seq", "session", "time", "received", "attrs"];

/// Names no stream may take in a group: the index columns and the node's own `zarr.json`.
pub(crate) const RESERVED: [&str; 6] = ["seq", "session", "time", "received", "attrs", "zarr.json"];

/// The store's own file at its root: session ends and refusals, one JSON object a line.
pub(crate) const JOURNAL: &str = "sessions.jsonl";

/// How a record array's inner chunks are encoded after the `bytes` codec: byte shuffle or
/// not, then zstd at a level or not. A frame that arrived with the same codec and filter is
/// an inner chunk as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    /// Byte shuffle (`numcodecs.shuffle`) with the element size.
    pub(crate) shuffle: bool,
    /// zstd at this level.
    pub(crate) zstd: Option<i32>,
}

/// What identifies one array segment of a stream: records whose array has this name, type,
/// shape and order are stored in it, and a change of any of them starts another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SegmentKey {
    /// The array's name in its records.
    pub(crate) name: String,
    /// Its element type, byte order included.
    pub(crate) dtype: DType,
    /// Its shape in each record.
    pub(crate) shape: Vec<usize>,
    /// Its element order.
    pub(crate) order: Order,
}

/// Everything a segment's `zarr.json` says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    /// What it holds.
    pub(crate) key: SegmentKey,
    /// How its inner chunks are encoded.
    pub(crate) chain: Chain,
    /// Records per shard.
    pub(crate) shard: u64,
    /// Segments of the same array name before this one in its group (0 for the first).
    pub(crate) index: u64,
}

impl Segment {
    /// A new segment for `key`, its inner chunks encoded with `chain`, after `index` segments
    /// of the same array name.
    pub(crate) fn new(key: SegmentKey, chain: Chain, index: u64) -> Segment {
        let record_bytes = (key.shape.iter().product::<usize>() * key.dtype.itemsize()) as u64;
        Segment {
            shard: shard_records(record_bytes),
            key,
            chain,
            index,
        }
    }

    /// Bytes of a shard's index, at the start of its file.
    pub(crate) fn index_bytes(&self) -> u64 {
        16 * self.shard
    }

    /// The key of shard `k`, relative to the segment's node: `c/k/0/...`.
    pub(crate) fn shard_key(&self, k: u64) -> String {
        let mut key = format!("c/{k}");
        for _ in &self.key.shape {
            key.push_str("/0");
        }
        key
    }

    /// The segment's `zarr.json` with `n` records, as node `node` (its axes after the first
    /// are named `<node>_0`, `<node>_1`, ...: unique in the group).
    pub(crate) fn metadata(&self, n: u64, node: &str) -> Value {
        let key = &self.key;
        let shape: Vec<u64> = std::iter::once(n)
            .chain(key.shape.iter().map(|&d| d as u64))
            .collect();
        // A chunk's extent must be positive: an axis of length 0 has one chunk of 1.
        let outer: Vec<u64> = std::iter::once(self.shard)
            .chain(key.shape.iter().map(|&d| d.max(1) as u64))
            .collect();
        let mut inner = outer.clone();
        inner[0] = 1;
        let mut codecs = Vec::new();
        if key.order == Order::F && key.shape.len() >= 2 {
            // Chunk [1, d1, ..., dk] stored with its last axes first: the record's F order.
            let order: Vec<usize> = std::iter::once(0)
                .chain((1..=key.shape.len()).rev())
                .collect();
            codecs.push(json!({"name": "transpose", "configuration": {"order": order}}));
        }
        codecs.push(bytes_codec(key.dtype));
        codecs.extend(self.chain.codecs(key.dtype.itemsize()));
        let mut dims = vec!["record".to_owned()];
        dims.extend((0..key.shape.len()).map(|i| format!("{node}_{i}")));
        json!({
            "zarr_format": 3,
            "node_type": "array",
            "shape": shape,
            "data_type": data_type(key.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": outer}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill_value(key.dtype),
            "codecs": [{
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": inner,
                    "codecs": codecs,
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_location": "start",
                },
            }],
            "dimension_names": dims,
            "attributes": {
                "coordinates": COLUMNS.join(" "),
                "ndbridge": {
                    "array": key.name,
                    "dtype": key.dtype.to_string(),
                    "order": if key.order == Order::F { "F" } else { "C" },
                    "shuffle": self.chain.shuffle,
                    "zstd": self.chain.zstd,
                    "segment": self.index,
                },
            },
        })
    }

    /// Reads a segment back from its `zarr.json` (as [`metadata`](Self::metadata) wrote it):
    /// the segment and its record count, or why not.
    pub(crate) fn parse(meta: &Value) -> Result<(Segment, u64), String> {
        let ours = &meta["attributes"]["ndbridge"];
        let dtype: DType = ours["dtype"]
            .as_str()
            .ok_or("no attributes.ndbridge.dtype")?
            .parse()
            .map_err(|e| format!("attributes.ndbridge.dtype: {e}"))?;
        let name = ours["array"]
            .as_str()
            .ok_or("no attributes.ndbridge.array")?;
        let order = match ours["order"].as_str() {
            Some("C") => Order::C,
            Some("F") => Order::F,
            other => {
                return Err(format!(
                    "attributes.ndbridge.order: expected C or F, found {other:?}"
                ))
            }
        };
        let chain = Chain {
            shuffle: ours["shuffle"].as_bool().unwrap_or(false),
            zstd: ours["zstd"].as_i64().map(|l| l as i32),
        };
        let dims = u64_list(&meta["shape"]).ok_or("shape: expected a list of integers")?;
        let outer = u64_list(&meta["chunk_grid"]["configuration"]["chunk_shape"])
            .ok_or("chunk_grid: expected a chunk_shape")?;
        let (&n, shape) = dims
            .split_first()
            .ok_or("shape: expected at least one axis")?;
        let shard = *outer.first().ok_or("chunk_shape: empty")?;
        if shard == 0 || outer.len() != dims.len() {
            return Err(format!("chunk_shape {outer:?} does not fit shape {dims:?}"));
        }
        let key = SegmentKey {
            name: name.to_owned(),
            dtype,
            shape: shape.iter().map(|&d| d as usize).collect(),
            order,
        };
        let index = ours["segment"].as_u64().unwrap_or(0);
        let segment = Segment {
            key,
            chain,
            shard,
            index,
        };
        Ok((segment, n))
    }
}

impl Chain {
    /// The codecs after `bytes`.
    fn codecs(self, itemsize: usize) -> Vec<Value> {
        let mut codecs = Vec::new();
        if self.shuffle {
            codecs.push(
                json!({"name": "numcodecs.shuffle", "configuration": {"elementsize": itemsize}}),
            );
        }
        if let Some(level) = self.zstd {
            codecs.push(
                json!({"name": "zstd", "configuration": {"level": level, "checksum": false}}),
            );
        }
        codecs
    }
}

/// Records per shard for records of `record_bytes`: about 32 MiB a shard, a power of two
/// from 1 to 4096.
pub(crate) fn shard_records(record_bytes: u64) -> u64 {
    let fit = SHARD_TARGET_BYTES / record_bytes.max(1);
    if fit == 0 {
        1
    } else {
        (1u64 << fit.ilog2()).min(MAX_SHARD_RECORDS)
    }
}

fn u64_list(value: &Value) -> Option<Vec<u64>> {
    value.as_array()?.iter().map(Value::as_u64).collect()
}

fn bytes_codec(dtype: DType) -> Value {
    let endian = match dtype.byte_order() {
        ByteOrder::Big => "big",
        ByteOrder::Little | ByteOrder::NotApplicable => "little",
    };
    json!({"name": "bytes", "configuration": {"endian": endian}})
}

/// The Zarr v3 data type of a wire type (byte order aside: the `bytes` codec says it).
pub(crate) fn data_type(dtype: DType) -> String {
    let bits = dtype.itemsize() * 8;
    match dtype.kind() {
        Kind::Bool => "bool".to_owned(),
        Kind::Int => format!("int{bits}"),
        Kind::UInt => format!("uint{bits}"),
        Kind::Float => format!("float{bits}"),
        Kind::Complex => format!("complex{bits}"),
    }
}

/// What a record that lacks the array reads as: NaN for floating types, else zero.
fn fill_value(dtype: DType) -> Value {
    match dtype.kind() {
        Kind::Bool => json!(false),
        Kind::Int | Kind::UInt => json!(0),
        Kind::Float => json!("NaN"),
        Kind::Complex => json!(["NaN", "NaN"]),
    }
}

/// A group's `zarr.json`.
pub(crate) fn group_metadata(attributes: Value) -> Value {
    json!({"zarr_format": 3, "node_type": "group", "attributes": attributes})
}

/// A record group's `zarr.json`, with its nodes' metadata consolidated in it (zarr-python's
/// inline consolidated metadata): one file, replaced at once, gives readers that use it the
/// same length for every node.
pub(crate) fn record_group_metadata(
    source: &str,
    record: &str,
    nodes: Map<String, Value>,
) -> Value {
    let mut meta = group_metadata(json!({"ndbridge": {"source": source, "record": record}}));
    meta["consolidated_metadata"] =
        json!({"kind": "inline", "must_understand": false, "metadata": nodes});
    meta
}

/// One index column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// `uint64`.
    U64,
    /// `float64` seconds since 1970.
    Seconds,
    /// UTF-8 strings.
    Text,
}

/// The type of index column `name` (one of [`COLUMNS`]).
pub(crate) fn column_type(name: &str) -> ColumnType {
    match name {
        "seq" => ColumnType::U64,
        "time" | "received" => ColumnType::Seconds,
        _ => ColumnType::Text,
    }
}

/// Index column `name`'s `zarr.json` with `n` records.
pub(crate) fn column_metadata(name: &str, n: u64) -> Value {
    let (data_type, fill, first, attributes) = match column_type(name) {
        ColumnType::U64 => (
            "uint64",
            json!(0),
            json!({"name": "bytes", "configuration": {"endian": "little"}}),
            json!({}),
        ),
        ColumnType::Seconds => (
            "float64",
            json!("NaN"),
            json!({"name": "bytes", "configuration": {"endian": "little"}}),
            json!({"units": "seconds since 1970-01-01"}),
        ),
        ColumnType::Text => (
            "string",
            json!(""),
            json!({"name": "vlen-utf8", "configuration": {}}),
            json!({}),
        ),
    };
    json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n],
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [COLUMN_CHUNK]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [first, {"name": "zstd", "configuration": {"level": COLUMN_LEVEL, "checksum": false}}],
        "dimension_names": ["record"],
        "attributes": attributes,
    })
}

/// The values of one index column over a run of records.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ColumnValues {
    /// `seq`, or `time` / `received` as the bits of their `f64`.
    pub(crate) numbers: Vec<u64>,
    /// `session` or `attrs`.
    pub(crate) texts: Vec<String>,
}

/// Encodes one whole chunk of a column: `values` padded to [`COLUMN_CHUNK`] with the fill
/// value, then compressed.
pub(crate) fn encode_column_chunk(kind: ColumnType, values: &ColumnValues) -> Vec<u8> {
    let chunk = COLUMN_CHUNK as usize;
    let mut raw = Vec::new();
    match kind {
        ColumnType::U64 | ColumnType::Seconds => {
            let fill = if kind == ColumnType::U64 {
                0
            } else {
                f64::NAN.to_bits()
            };
            raw.reserve(8 * chunk);
            for i in 0..chunk {
                raw.extend_from_slice(
                    &values.numbers.get(i).copied().unwrap_or(fill).to_le_bytes(),
                );
            }
        }
        ColumnType::Text => {
            // vlen-utf8: the item count, then each item's length and bytes (u32 little-endian).
            raw.extend_from_slice(&(chunk as u32).to_le_bytes());
            for i in 0..chunk {
                let text = values.texts.get(i).map_or("", String::as_str);
                raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
                raw.extend_from_slice(text.as_bytes());
            }
        }
    }
    zstd::bulk::compress(&raw, COLUMN_LEVEL).expect("zstd compresses into a growing buffer")
}

/// Decodes the first `len` values of one chunk of a column.
pub(crate) fn decode_column_chunk(
    kind: ColumnType,
    bytes: &[u8],
    len: usize,
) -> Result<ColumnValues, String> {
    let chunk = COLUMN_CHUNK as usize;
    let limit = 8 * chunk + (64 << 20);
    let raw = zstd::bulk::decompress(bytes, limit).map_err(|e| format!("zstd: {e}"))?;
    let mut values = ColumnValues::default();
    match kind {
        ColumnType::U64 | ColumnType::Seconds => {
            if raw.len() != 8 * chunk {
                return Err(format!("expected {} bytes, found {}", 8 * chunk, raw.len()));
            }
            values.numbers = raw
                .chunks_exact(8)
                .take(len)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
        }
        ColumnType::Text => {
            let mut rest = raw.as_slice();
            let take_u32 = |rest: &mut &[u8]| -> Result<usize, String> {
                let (head, tail) = rest.split_at_checked(4).ok_or("vlen-utf8: cut short")?;
                *rest = tail;
                Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize)
            };
            let count = take_u32(&mut rest)?;
            if count != chunk {
                return Err(format!("vlen-utf8: expected {chunk} items, found {count}"));
            }
            for _ in 0..len {
                let n = take_u32(&mut rest)?;
                let (text, tail) = rest.split_at_checked(n).ok_or("vlen-utf8: cut short")?;
                rest = tail;
                let text = std::str::from_utf8(text).map_err(|e| format!("vlen-utf8: {e}"))?;
                values.texts.push(text.to_owned());
            }
        }
    }
    Ok(values)
}

/// A shard's index as it is stored: each entry's offset and length, little-endian.
pub(crate) fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * entries.len());
    for &(offset, len) in entries {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

/// Reads a shard's index back.
pub(crate) fn decode_index(bytes: &[u8]) -> Vec<IndexEntry> {
    bytes
        .chunks_exact(16)
        .map(|e| {
            let offset = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(e[8..].try_into().expect("8 bytes"));
            (offset, len)
        })
        .collect()
}

/// A node name for a name from the network: a safe path component (see
/// [`DiskSink::path_component`](crate::collector::DiskSink::path_component)) that does not
/// begin with `__` (reserved by Zarr), then, when `taken` says it is used already (by another
/// name, or reserved), `~2`, `~3`, ... until it is free. Escaping never produces `~` but in
/// a long name's hash suffix, so the suffixed names are new.
pub(crate) fn node_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    let (mut base, _) = crate::collector::DiskSink::path_component(name);
    if base.starts_with("__") {
        base.replace_range(..1, "%5F");
    }
    if !taken(&base) {
        return base;
    }
    (2u64..)
        .map(|i| format!("{base}~{i}"))
        .find(|candidate| !taken(candidate))
        .expect("some suffix is free")
}

/// The attributes of a node that stands for a name from the network.
pub(crate) fn name_attributes(field: &str, name: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(field.to_owned(), Value::String(name.to_owned()));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dtype: &str, shape: &[usize], order: Order, chain: Chain) -> Segment {
        let key = SegmentKey {
            name: "t".into(),
            dtype: dtype.parse().unwrap(),
            shape: shape.to_vec(),
            order,
        };
        Segment::new(key, chain, 0)
    }

    #[test]
    fn shards_hold_about_32_mib_and_at_most_4096_records() {
        assert_eq!(shard_records(800), 4096);
        assert_eq!(shard_records(8000), 4096);
        assert_eq!(shard_records(0), 4096);
        assert_eq!(shard_records(80_000), 256);
        assert_eq!(shard_records(8 << 20), 4);
        assert_eq!(shard_records(100 << 20), 1);
    }

    #[test]
    fn a_segment_reads_back_from_its_metadata() {
        let chain = Chain {
            shuffle: true,
            zstd: Some(3),
        };
        let s = segment(">f8", &[3, 4], Order::F, chain);
        let meta = s.metadata(17, "t");
        assert_eq!(meta["shape"], json!([17, 3, 4]));
        assert_eq!(meta["data_type"], "float64");
        let inner = &meta["codecs"][0]["configuration"];
        assert_eq!(inner["chunk_shape"], json!([1, 3, 4]));
        assert_eq!(
            inner["codecs"][0]["configuration"]["order"],
            json!([0, 2, 1])
        );
        assert_eq!(inner["codecs"][1]["configuration"]["endian"], "big");
        assert_eq!(inner["codecs"][2]["configuration"]["elementsize"], 8);
        assert_eq!(inner["codecs"][3]["configuration"]["level"], 3);
        assert_eq!(Segment::parse(&meta).unwrap(), (s, 17));
    }

    #[test]
    fn a_0d_or_empty_array_has_positive_chunks() {
        let raw = Chain {
            shuffle: false,
            zstd: None,
        };
        let s = segment("|u1", &[], Order::C, raw);
        assert_eq!(s.shard_key(5), "c/5");
        let s = segment("<i4", &[0, 2], Order::C, raw);
        let meta = s.metadata(0, "t");
        assert_eq!(
            meta["chunk_grid"]["configuration"]["chunk_shape"],
            json!([4096, 1, 2])
        );
        assert_eq!(s.shard_key(1), "c/1/0/0");
    }

    #[test]
    fn column_chunks_round_trip_padded_to_the_chunk() {
        let texts = ColumnValues {
            numbers: vec![],
            texts: vec!["a".into(), "bé".into(), "".into()],
        };
        let bytes = encode_column_chunk(ColumnType::Text, &texts);
        assert_eq!(
            decode_column_chunk(ColumnType::Text, &bytes, 3).unwrap(),
            texts
        );
        let numbers = ColumnValues {
            numbers: vec![7, u64::MAX],
            texts: vec![],
        };
        let bytes = encode_column_chunk(ColumnType::U64, &numbers);
        assert_eq!(
            decode_column_chunk(ColumnType::U64, &bytes, 2).unwrap(),
            numbers
        );
        assert!(decode_column_chunk(ColumnType::U64, b"not zstd", 1).is_err());
    }

    #[test]
    fn node_names_are_escaped_and_never_taken_twice() {
        assert_eq!(node_name("temperature", |_| false), "temperature");
        assert_eq!(node_name("../x", |_| false), "%2E.%2Fx");
        assert_eq!(node_name("__meta", |_| false), "%5F_meta");
        let taken = ["seq", "seq~2"];
        assert_eq!(node_name("seq", |n| taken.contains(&n)), "seq~3");
    }

    #[test]
    fn the_index_round_trips() {
        let entries = vec![(16, 5), EMPTY];
        assert_eq!(decode_index(&encode_index(&entries)), entries);
    }
}
