//! Reading a store back: its record groups, their index columns and arrays, and the journal
//! of session ends and refusals. The collector reads a store it continues with this, and so do
//! `ndbridge ls` and `ndbridge verify`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use super::layout::{self, ColumnValues, Segment, COLUMNS, COLUMN_CHUNK, EMPTY};
use super::StoreError;
use crate::wire::{ArrayMeta, Codec, DType, Filter, Header, Order};

/// A store opened for reading: every record group in it.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    groups: Vec<Group>,
}

/// One record group: the records of one record name from one source.
#[derive(Debug, Clone)]
pub struct Group {
    /// The source's name.
    pub source: String,
    /// The record name.
    pub record: String,
    /// The group's path below the store's root (`<source node>/<record node>`).
    pub path: String,
    /// Records the group holds (every array and index column has this length).
    pub records: u64,
    /// Its arrays, one per segment.
    pub arrays: Vec<ArrayInfo>,
}

/// One array segment of a record group.
#[derive(Debug, Clone)]
pub struct ArrayInfo {
    /// The array's name in the records.
    pub name: String,
    /// The segment's node name in its group (the name, escaped, or suffixed `~2`, `~3`, ...
    /// when the array's type or shape changed).
    pub node: String,
    /// Element type, byte order included.
    pub dtype: DType,
    /// Shape in each record.
    pub shape: Vec<usize>,
    /// Element order.
    pub order: Order,
    /// How each record's array is stored: `raw`, `zstd` or `shuffle+zstd`.
    pub codec: String,
    /// Records that hold this array (the others read as the fill value).
    pub present: u64,
    /// Bytes of its shard files on disk.
    pub stored_bytes: u64,
    /// Bytes of the records it holds, decoded.
    pub raw_bytes: u64,
    pub(crate) segment: Segment,
}

/// A line of the store's journal: a session's end, or a record the collector refused.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalEntry {
    /// The session ended after sending `records` records.
    End {
        /// The source's name.
        source: String,
        /// The publisher session.
        session: String,
        /// Records the session sent.
        records: u64,
    },
    /// Record `seq` was refused for good (acked delivery) for `reason`.
    Refused {
        /// The source's name.
        source: String,
        /// The publisher session.
        session: String,
        /// The record's sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl Store {
    /// Opens the store at `root` and reads every group's metadata and shard indexes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        let meta = read_json(&root.join("zarr.json"))?;
        if meta["attributes"]["ndbridge"]["store"].as_u64().is_none() {
            return Err(StoreError::new(
                &root,
                "not an ndbridge store (its zarr.json has no attributes.ndbridge.store)",
            ));
        }
        let mut groups = Vec::new();
        for source_node in subdirectories(&root)? {
            for record_node in subdirectories(&root.join(&source_node))? {
                let path = format!("{source_node}/{record_node}");
                // A group the collector is creating (or whose creation a crash cut short) has
                // no `zarr.json` yet, and no records.
                if root.join(&path).join("zarr.json").exists() {
                    groups.push(read_group(&root, path)?);
                }
            }
        }
        groups.sort_by(|a, b| (&a.source, &a.record).cmp(&(&b.source, &b.record)));
        Ok(Store { root, groups })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its record groups, by source and record name.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The `seq` and `session` of every record of `group`, in storage order.
    pub fn keys(&self, group: &Group) -> Result<Vec<(u64, String)>, StoreError> {
        let seqs = self.column(group, "seq")?.numbers;
        let sessions = self.column(group, "session")?.texts;
        Ok(seqs.into_iter().zip(sessions).collect())
    }

    /// Every value of index column `name` (one of `seq`, `session`, `time`, `received`,
    /// `attrs`) of `group`.
    pub(crate) fn column(&self, group: &Group, name: &str) -> Result<ColumnValues, StoreError> {
        read_column(
            &self.root.join(&group.path).join(name),
            name,
            0,
            group.records,
        )
    }

    /// Reads `group`'s records back as the messages that brought them (see [`RecordReader`]).
    pub fn reader<'a>(&'a self, group: &'a Group) -> Result<RecordReader<'a>, StoreError> {
        let dir = self.root.join(&group.path);
        let mut columns: [ColumnValues; 5] = Default::default();
        for (name, values) in COLUMNS.iter().zip(&mut columns) {
            *values = read_column(&dir.join(name), name, 0, group.records)?;
        }
        Ok(RecordReader {
            dir,
            group,
            columns,
            shards: HashMap::new(),
        })
    }

    /// The journal: session ends and refusals, in the order written. Lines that do not parse
    /// (one cut short by a crash) are skipped.
    pub fn journal(&self) -> Result<Vec<JournalEntry>, StoreError> {
        read_journal(&self.root)
    }
}

/// Reads a group's records back as wire messages: the header rebuilt from the index columns
/// and each array's inner chunk as its frame, in the encoding stored (the one it arrived with,
/// unless the store converted it), so nothing is decoded or encoded again. The arrays come in
/// the order of their node names; an array a record lacks is left out.
pub struct RecordReader<'a> {
    dir: PathBuf,
    group: &'a Group,
    columns: [ColumnValues; 5],
    /// Open shard files and their indexes, by array and shard.
    shards: HashMap<(usize, u64), (fs::File, u64, Vec<layout::IndexEntry>)>,
}

impl RecordReader<'_> {
    /// Records in the group.
    pub fn len(&self) -> u64 {
        self.group.records
    }

    /// True when the group holds no record.
    pub fn is_empty(&self) -> bool {
        self.group.records == 0
    }

    /// The `seq` of record `i`.
    pub fn seq(&self, i: u64) -> u64 {
        self.columns[0].numbers[i as usize]
    }

    /// Record `i` (in storage order) as a message: its header and its frames
    /// `[header JSON, buf_0, ...]`.
    pub fn message(&mut self, i: u64) -> Result<(Header, Vec<Bytes>), StoreError> {
        if i >= self.group.records {
            let reason = format!("no record {i}: the group holds {}", self.group.records);
            return Err(StoreError::new(&self.dir, reason));
        }
        let at = i as usize;
        let attrs_text = &self.columns[4].texts[at];
        let attrs = if attrs_text.is_empty() {
            None
        } else {
            let path = self.dir.join("attrs");
            Some(
                serde_json::from_str(attrs_text)
                    .map_err(|e| StoreError::new(&path, format!("record {i}: {e}")))?,
            )
        };
        let mut header = Header {
            name: self.group.record.clone(),
            source: self.group.source.clone(),
            session: self.columns[1].texts[at].clone(),
            seq: self.columns[0].numbers[at],
            time: f64::from_bits(self.columns[2].numbers[at]),
            arrays: Vec::new(),
            attrs,
            end: false,
        };
        let mut frames = vec![Bytes::new()];
        for (a, array) in self.group.arrays.iter().enumerate() {
            let Some(frame) = self.chunk(a, array, i)? else {
                continue;
            };
            let key = &array.segment.key;
            let chain = array.segment.chain;
            header.arrays.push(ArrayMeta {
                name: key.name.clone(),
                dtype: key.dtype,
                shape: key.shape.clone(),
                order: key.order,
                codec: if chain.zstd.is_some() {
                    Codec::Zstd
                } else {
                    Codec::Raw
                },
                filters: if chain.shuffle {
                    vec![Filter::Shuffle]
                } else {
                    vec![]
                },
                nbytes: (key.shape.iter().product::<usize>() * key.dtype.itemsize()) as u64,
            });
            frames.push(frame);
        }
        frames[0] = Bytes::from(header.to_json());
        Ok((header, frames))
    }

    /// Array `a`'s inner chunk of record `i`, or `None` when the record lacks it.
    fn chunk(&mut self, a: usize, array: &ArrayInfo, i: u64) -> Result<Option<Bytes>, StoreError> {
        let segment = &array.segment;
        let k = i / segment.shard;
        let path = self.dir.join(&array.node).join(segment.shard_key(k));
        if !self.shards.contains_key(&(a, k)) {
            let Some(index) = read_index(&path, segment)? else {
                return Ok(None);
            };
            let file = fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
            let file_len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
            self.shards.retain(|&(b, _), _| b != a);
            self.shards.insert((a, k), (file, file_len, index));
        }
        let (file, file_len, index) = &self.shards[&(a, k)];
        let (offset, len) = index[(i % segment.shard) as usize];
        if (offset, len) == EMPTY {
            return Ok(None);
        }
        if offset.checked_add(len).is_none_or(|end| end > *file_len) {
            let reason =
                format!("record {i}: inner chunk {offset}+{len} past the end ({file_len})");
            return Err(StoreError::new(&path, reason));
        }
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, offset).map_err(|e| {
            StoreError::new(
                &path,
                format!("record {i}: inner chunk at {offset}+{len}: {e}"),
            )
        })?;
        Ok(Some(Bytes::from(bytes)))
    }
}

/// Reads `<root>/sessions.jsonl`: nothing when it does not exist.
pub(crate) fn read_journal(root: &Path) -> Result<Vec<JournalEntry>, StoreError> {
    let path = root.join(layout::JOURNAL);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let entries = text
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter_map(|v| {
            let source = v["source"].as_str()?.to_owned();
            let session = v["session"].as_str()?.to_owned();
            if let Some(records) = v["end"].as_u64() {
                return Some(JournalEntry::End {
                    source,
                    session,
                    records,
                });
            }
            Some(JournalEntry::Refused {
                source,
                session,
                seq: v["seq"].as_u64()?,
                reason: v["refused"].as_str()?.to_owned(),
            })
        })
        .collect();
    Ok(entries)
}

/// Reads one record group's metadata: its names, its record count (the least of its nodes'
/// lengths: a crash between two metadata writes leaves some one commit ahead), its segments.
pub(crate) fn read_group(root: &Path, path: String) -> Result<Group, StoreError> {
    let dir = root.join(&path);
    let meta = read_json(&dir.join("zarr.json"))?;
    let ours = &meta["attributes"]["ndbridge"];
    let (Some(source), Some(record)) = (ours["source"].as_str(), ours["record"].as_str()) else {
        return Err(StoreError::new(
            &dir,
            "not a record group (no attributes.ndbridge.source and .record)",
        ));
    };
    // The group's consolidated metadata is its last commit; each node's own zarr.json may be
    // older, or newer after a crash.
    let Some(nodes) = meta["consolidated_metadata"]["metadata"].as_object() else {
        return Err(StoreError::new(
            &dir,
            "no consolidated_metadata: not a group ndbridge wrote",
        ));
    };
    let length = |name: &str| -> Result<u64, StoreError> {
        let shape = nodes.get(name).and_then(|m| m["shape"][0].as_u64());
        shape.ok_or_else(|| {
            StoreError::new(&dir, format!("consolidated metadata: no {name} length"))
        })
    };
    let mut records = u64::MAX;
    for name in COLUMNS {
        records = records.min(length(name)?);
    }
    let mut arrays = Vec::new();
    for (node, node_meta) in nodes {
        if COLUMNS.contains(&node.as_str()) {
            continue;
        }
        let (segment, n) =
            Segment::parse(node_meta).map_err(|e| StoreError::new(&dir.join(node), e))?;
        records = records.min(n);
        arrays.push((node.clone(), segment));
    }
    let arrays = arrays
        .into_iter()
        .map(|(node, segment)| array_info(&dir, node, segment, records))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Group {
        source: source.to_owned(),
        record: record.to_owned(),
        path,
        records,
        arrays,
    })
}

fn array_info(
    dir: &Path,
    node: String,
    segment: Segment,
    records: u64,
) -> Result<ArrayInfo, StoreError> {
    let key = &segment.key;
    let nbytes = (key.shape.iter().product::<usize>() * key.dtype.itemsize()) as u64;
    let (mut present, mut stored_bytes) = (0, 0);
    for k in 0..records.div_ceil(segment.shard) {
        let path = dir.join(&node).join(segment.shard_key(k));
        let Some(index) = read_index(&path, &segment)? else {
            continue;
        };
        let used = (records - k * segment.shard).min(segment.shard) as usize;
        present += index[..used].iter().filter(|&&e| e != EMPTY).count() as u64;
        stored_bytes += fs::metadata(&path)
            .map_err(|e| StoreError::io(&path, e))?
            .len();
    }
    let codec = match (segment.chain.shuffle, segment.chain.zstd) {
        (false, None) => "raw",
        (true, None) => "shuffle",
        (false, Some(_)) => "zstd",
        (true, Some(_)) => "shuffle+zstd",
    };
    Ok(ArrayInfo {
        name: key.name.clone(),
        node,
        dtype: key.dtype,
        shape: key.shape.clone(),
        order: key.order,
        codec: codec.to_owned(),
        present,
        stored_bytes,
        raw_bytes: present * nbytes,
        segment,
    })
}

/// A shard's index, or `None` when the shard file does not exist (no record of its range
/// holds the array).
pub(crate) fn read_index(
    path: &Path,
    segment: &Segment,
) -> Result<Option<Vec<layout::IndexEntry>>, StoreError> {
    use std::io::Read as _;
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut bytes = vec![0; segment.index_bytes() as usize];
    file.read_exact(&mut bytes)
        .map_err(|e| StoreError::io(path, e))?;
    Ok(Some(layout::decode_index(&bytes)))
}

/// Values `from..to` of the column at `dir` (`from` a multiple of the chunk length).
pub(crate) fn read_column(
    dir: &Path,
    name: &str,
    from: u64,
    to: u64,
) -> Result<ColumnValues, StoreError> {
    let kind = layout::column_type(name);
    let mut values = ColumnValues::default();
    let mut start = from;
    while start < to {
        let chunk = start / COLUMN_CHUNK;
        let len = (to - start).min(COLUMN_CHUNK) as usize;
        let path = dir.join(format!("c/{chunk}"));
        let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        let part = layout::decode_column_chunk(kind, &bytes, len)
            .map_err(|e| StoreError::new(&path, e))?;
        values.numbers.extend(part.numbers);
        values.texts.extend(part.texts);
        start += len as u64;
    }
    Ok(values)
}

pub(crate) fn read_json(path: &Path) -> Result<Value, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::new(path, format!("not JSON: {e}")))
}

/// The names of the directories in `dir` (never through a link), sorted.
pub(crate) fn subdirectories(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
