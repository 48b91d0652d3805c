//! The store sink ([`StoreSink`]): records appended to the Zarr v3 arrays of a run store,
//! made visible by commits (docs/store.md).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{Received, Sink, SinkError};
use crate::store::layout::{
    self, Chain, ColumnValues, Segment, SegmentKey, COLUMNS, COLUMN_CHUNK, EMPTY, JOURNAL, RESERVED,
};
use crate::store::{self as store_read, JournalEntry, StoreError};
use crate::wire::{encode_buffer, shuffle, ArrayMeta, Codec, Compression, DecodedArray};

/// A shard's data waiting in memory is written out once it reaches this size.
const PENDING_LIMIT: u64 = 16 << 20;

/// A node's own `zarr.json` is written every this many commits of its group (and by the last):
/// the group's, which consolidates them, is written by every commit.
const NODE_COMMITS: u32 = 5;

/// Inner chunks of at least this many bytes start on a page boundary (costing at most 0.4% of
/// them).
const ALIGN_FROM: u64 = 1 << 20;

/// The page size the alignment assumes.
const PAGE: u64 = 4096;

/// Inner chunks smaller than this are copied together before they are written; larger ones
/// are written from the frame they came in.
const SMALL_CHUNK: usize = 64 << 10;

/// Appends every record to a run store (docs/store.md): one group per source and record
/// name, in it one array per array name (a new segment, `name~2`, ... when its type, shape or
/// order changes), all of length `n` records, and the index columns `seq`, `session`, `time`,
/// `received` and `attrs`.
///
/// # Commits
///
/// [`write`](Sink::write) only takes a record into memory (a large array's frame is kept, not
/// copied). A commit ([`flush`](Sink::flush), [`sync`](Sink::sync), [`finish`](Sink::finish))
/// writes the records taken so far: each shard's new inner chunks, then its index (at the
/// start of its file), then the index columns' chunks, and only then the group's `zarr.json`
/// with every node's metadata consolidated in it at the new length (written to a temporary
/// name and renamed), so that a reader sees whole records only, every node of a group at one
/// length, and a crash of the collector loses nothing committed. Each node's own `zarr.json`
/// follows every fifth commit of its group, and the last. `sync` also syncs the
/// file system before and after the metadata is written: what it committed survives a crash
/// of the machine. The collector flushes its sinks every 500 ms, and before each stats line,
/// so every record a stats line counts as stored is committed.
///
/// # Arrays as they arrived
///
/// A segment's codecs are chosen by its first record: those its array arrived with (`bytes`,
/// then `numcodecs.shuffle` when it was shuffled, then `zstd` when compressed); an array that
/// arrived raw is compressed with shuffle + zstd at [`raw_level`](Self::raw_level) when that
/// is set. A frame that arrived with the segment's codecs is its inner chunk as it came, never
/// recompressed; another is decoded, or encoded by the sink.
pub struct StoreSink {
    root: PathBuf,
    root_dir: File,
    raw_level: Option<i32>,
    catalog: Mutex<Catalog>,
    journal: Mutex<File>,
    commit: Mutex<()>,
    counts: Counts,
}

/// What commits did.
#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    commits: AtomicU64,
}

/// What a group took: kept under its lock, summed for the report.
#[derive(Default, Clone, Copy)]
struct Taken {
    records: u64,
    /// Arrays stored as their frame came.
    as_they_came: u64,
    /// Arrays stored decoded (they came compressed into a raw segment).
    decoded: u64,
    /// Arrays the sink encoded for their segment.
    encoded: u64,
    /// Segments created.
    segments: u64,
}

/// How an array's inner chunk was made.
enum Made {
    AsItCame,
    Decoded,
    Encoded,
}

/// Every group of the store, and the node names taken.
#[derive(Default)]
struct Catalog {
    /// Source name to its node.
    sources: HashMap<String, String>,
    /// Per source node, the record nodes taken.
    record_nodes: HashMap<String, HashSet<String>>,
    /// By source, then record name.
    groups: HashMap<String, HashMap<String, Arc<Mutex<Group>>>>,
}

impl Catalog {
    fn all(&self) -> Vec<Arc<Mutex<Group>>> {
        self.groups
            .values()
            .flat_map(|g| g.values().cloned())
            .collect()
    }
}

struct Group {
    dir: PathBuf,
    source: String,
    record: String,
    /// Records taken.
    n: u64,
    /// Records whose metadata says they are there.
    published: u64,
    /// Commits since each node's own `zarr.json` was written.
    node_commits: u32,
    /// The metadata is to be written again even with no new record (a group continued after
    /// a crash, whose nodes may not agree on its length).
    rewrite: bool,
    /// Index column values from record `first` (a multiple of the chunk length) on.
    first: u64,
    columns: [ColumnValues; 5],
    segments: Vec<Seg>,
    nodes: HashSet<String>,
    taken: Taken,
}

struct Seg {
    node: String,
    segment: Segment,
    shard: Option<Shard>,
}

/// The shard records are being appended to.
struct Shard {
    k: u64,
    path: PathBuf,
    file: File,
    index: Vec<layout::IndexEntry>,
    index_dirty: bool,
    /// Where the next inner chunk goes.
    end: u64,
    /// Inner chunks taken and not yet written, with their offsets in the file.
    pending: Vec<(u64, Bytes)>,
    /// Small inner chunks taken and not yet written, together, from offset `small_at`.
    small: BytesMut,
    small_at: u64,
    /// Bytes waiting in `pending` and `small`.
    waiting: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_owned(),
        source,
    }
}

fn unreadable(e: StoreError) -> SinkError {
    SinkError::Other(Box::new(e))
}

/// Writes `value` to `dir/zarr.json` through a temporary file renamed over it.
fn write_metadata(dir: &Path, value: &Value) -> Result<(), SinkError> {
    write_replacing(
        &dir.join("zarr.json"),
        &serde_json::to_vec_pretty(value).expect("JSON"),
    )
}

/// Writes `bytes` to `path` through `path.tmp`, renamed over it: a reader sees the old file or
/// the new one, whole.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Removes the directories in `dir` that hold no `zarr.json`: groups whose creation a crash cut
/// short. A group's `zarr.json` is written last when it is created, before any record of it is
/// committed, so such a directory holds nothing committed. Only a directory holding nothing
/// but directories and metadata files (what creating a group writes) is removed: anything else
/// was not written by a collector, and is left.
fn remove_unfinished_groups(dir: &Path) -> Result<(), SinkError> {
    for node in store_read::subdirectories(dir).map_err(unreadable)? {
        let path = dir.join(&node);
        if !path.join("zarr.json").exists() && only_metadata(&path) {
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Whether `dir` holds, at any depth, only directories and `zarr.json` files (and their
/// temporaries); false when it cannot be read.
fn only_metadata(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().all(|entry| {
        let Ok(entry) = entry else { return false };
        match entry.file_type() {
            Ok(t) if t.is_dir() => only_metadata(&entry.path()),
            Ok(t) if t.is_file() => {
                let name = entry.file_name();
                name == "zarr.json" || name == "zarr.json.tmp"
            }
            _ => false,
        }
    })
}

fn create_dir(path: &Path) -> Result<(), SinkError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn seconds(time: std::time::SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl StoreSink {
    /// Opens the store at `root`, creating it if it does not exist, and continues every group
    /// in it: the next record of a stream is appended after the last one committed.
    pub fn new(root: impl Into<PathBuf>) -> Result<StoreSink, SinkError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io(&root))?;
        let marker = root.join("zarr.json");
        let catalog = if marker.exists() {
            load_catalog(&root)?
        } else {
            if fs::read_dir(&root).map_err(io(&root))?.next().is_some() {
                return Err(SinkError::UnsafePath {
                    path: root,
                    expected: "an empty directory or an ndbridge store",
                    found: "a directory with other files (for .npy files use --format npy)".into(),
                });
            }
            write_metadata(
                &root,
                &layout::group_metadata(json!({"ndbridge": {"store": 1}})),
            )?;
            Catalog::default()
        };
        let journal_path = root.join(JOURNAL);
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(io(&journal_path))?;
        let root_dir = File::open(&root).map_err(io(&root))?;
        Ok(StoreSink {
            root,
            root_dir,
            raw_level: None,
            catalog: Mutex::new(catalog),
            journal: Mutex::new(journal),
            commit: Mutex::new(()),
            counts: Counts::default(),
        })
    }

    /// Compresses arrays that arrive raw with shuffle + zstd at `level` (in segments whose
    /// first record arrived raw). Default: `None`, they are stored as they came.
    pub fn raw_level(mut self, level: Option<i32>) -> StoreSink {
        self.raw_level = level;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn group(&self, source: &str, record: &str) -> Result<Arc<Mutex<Group>>, SinkError> {
        let mut catalog = self.catalog.lock().expect("catalog lock");
        if let Some(group) = catalog.groups.get(source).and_then(|g| g.get(record)) {
            return Ok(group.clone());
        }
        let source_node = match catalog.sources.get(source) {
            Some(node) => node.clone(),
            None => {
                let taken = |n: &str| {
                    catalog.record_nodes.contains_key(n) || n == "zarr.json" || n == JOURNAL
                };
                let node = layout::node_name(source, taken);
                let dir = self.root.join(&node);
                create_dir(&dir)?;
                let attrs = json!({"ndbridge": layout::name_attributes("source", source)});
                write_metadata(&dir, &layout::group_metadata(attrs))?;
                catalog.sources.insert(source.to_owned(), node.clone());
                catalog.record_nodes.insert(node.clone(), HashSet::new());
                node
            }
        };
        let taken = &catalog.record_nodes[&source_node];
        let node = layout::node_name(record, |n| taken.contains(n) || n == "zarr.json");
        let dir = self.root.join(&source_node).join(&node);
        create_dir(&dir)?;
        let group = Group::new(dir.clone(), source, record);
        let (nodes, meta) = group.metadata(0);
        for (node_dir, node_meta) in nodes {
            create_dir(&node_dir)?;
            write_metadata(&node_dir, &node_meta)?;
        }
        // Last: readers skip a group directory without it (see `remove_unfinished_groups`).
        write_metadata(&dir, &meta)?;
        let group = Arc::new(Mutex::new(group));
        catalog
            .record_nodes
            .get_mut(&source_node)
            .expect("source node")
            .insert(node);
        let by_record = catalog.groups.entry(source.to_owned()).or_default();
        by_record.insert(record.to_owned(), group.clone());
        Ok(group)
    }

    /// The bytes of `array`'s inner chunk in a segment encoded with `chain`: the frame as it
    /// came when it came so, else the decoded bytes, encoded when the chain compresses.
    fn chunk_bytes(
        &self,
        chain: Chain,
        array: &DecodedArray,
        frame: &Bytes,
    ) -> Result<(Bytes, Made), SinkError> {
        let meta = array.meta();
        let itemsize = meta.dtype.itemsize();
        let arrived = Chain {
            shuffle: meta.is_shuffled() && itemsize > 1,
            zstd: (meta.codec == Codec::Zstd).then_some(0),
        };
        // A `zstd-chunks` frame is no inner chunk's bytes: it is stored as a raw one would be.
        if meta.codec != Codec::ZstdChunks
            && arrived.shuffle == chain.shuffle
            && arrived.zstd.is_some() == chain.zstd.is_some()
        {
            return Ok((frame.clone(), Made::AsItCame));
        }
        let decoded = array.bytes();
        let encoded = match chain.zstd {
            None if !chain.shuffle => {
                return Ok((decoded.clone(), Made::Decoded));
            }
            None => {
                let mut out = vec![0; decoded.len()];
                shuffle(decoded, &mut out, itemsize);
                Bytes::from(out)
            }
            Some(level) => {
                let policy = Compression::Zstd {
                    level,
                    shuffle: chain.shuffle,
                };
                encode_buffer(decoded, itemsize, policy)
                    .map_err(|e| SinkError::Other(Box::new(e)))?
                    .frame
            }
        };
        Ok((encoded, Made::Encoded))
    }

    /// The chain of a new segment whose first array is `array`.
    fn first_chain(&self, array: &DecodedArray) -> Chain {
        let meta = array.meta();
        let itemsize = meta.dtype.itemsize();
        match (meta.codec, self.raw_level) {
            (Codec::Zstd, level) => Chain {
                shuffle: meta.is_shuffled() && itemsize > 1,
                zstd: Some(level.unwrap_or(1)),
            },
            (Codec::Raw | Codec::ZstdChunks, Some(level)) => Chain {
                shuffle: itemsize > 1,
                zstd: Some(level),
            },
            (Codec::Raw, None) => Chain {
                shuffle: meta.is_shuffled() && itemsize > 1,
                zstd: None,
            },
            // Decoded (in parallel, by the collector's pool) and stored raw, as arrays that
            // came raw are: recompressing them on the store's thread would cost more than the
            // link saved.
            (Codec::ZstdChunks, None) => Chain {
                shuffle: false,
                zstd: None,
            },
        }
    }

    /// Writes every record taken so far and then the metadata that makes it visible; with
    /// `durable`, syncs the file system before and after the metadata.
    fn commit(&self, durable: bool, every_node: bool) -> Result<(), SinkError> {
        let _one = self.commit.lock().expect("commit lock");
        let groups = self.catalog.lock().expect("catalog lock").all();
        let mut targets = Vec::new();
        for group in &groups {
            let mut g = group.lock().expect("group lock");
            if g.n > g.published || g.rewrite {
                let n = g.n;
                let written = g.write_data(n)?;
                self.counts.bytes.fetch_add(written, Ordering::Relaxed);
                targets.push((group, n));
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        if durable {
            self.syncfs()?;
        }
        for (group, n) in targets {
            // The group's metadata, which holds its nodes': replaced at once, it is the commit.
            // Each node's own follows every NODE_COMMITS commits, for readers of one array.
            let mut g = group.lock().expect("group lock");
            let (nodes, meta) = g.metadata(n);
            write_metadata(&g.dir, &meta)?;
            g.published = n;
            g.node_commits += 1;
            if every_node || g.rewrite || g.node_commits >= NODE_COMMITS {
                for (dir, node_meta) in nodes {
                    write_metadata(&dir, &node_meta)?;
                }
                g.node_commits = 0;
            }
            g.rewrite = false;
        }
        if durable {
            self.syncfs()?;
        }
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn syncfs(&self) -> Result<(), SinkError> {
        rustix::fs::syncfs(&self.root_dir).map_err(|e| io(&self.root)(e.into()))
    }

    fn append_journal(&self, line: Value) -> Result<(), SinkError> {
        let mut text = serde_json::to_vec(&line).expect("JSON");
        text.push(b'\n');
        let path = self.root.join(JOURNAL);
        self.journal
            .lock()
            .expect("journal lock")
            .write_all(&text)
            .map_err(io(&path))
    }
}

impl Group {
    fn new(dir: PathBuf, source: &str, record: &str) -> Group {
        Group {
            dir,
            source: source.to_owned(),
            record: record.to_owned(),
            n: 0,
            published: 0,
            rewrite: false,
            node_commits: 0,
            first: 0,
            columns: Default::default(),
            segments: Vec::new(),
            nodes: RESERVED.iter().map(|&n| n.to_owned()).collect(),
            taken: Taken::default(),
        }
    }

    /// The segment for an array of `meta`, created (its node and metadata) if it is new.
    fn segment(
        &mut self,
        meta: &ArrayMeta,
        chain: impl FnOnce() -> Chain,
    ) -> Result<usize, SinkError> {
        let same = |k: &SegmentKey| {
            k.name == meta.name
                && k.dtype == meta.dtype
                && k.shape == meta.shape
                && k.order == meta.order
        };
        if let Some(i) = self.segments.iter().position(|seg| same(&seg.segment.key)) {
            return Ok(i);
        }
        let key = SegmentKey {
            name: meta.name.clone(),
            dtype: meta.dtype,
            shape: meta.shape.clone(),
            order: meta.order,
        };
        let node = layout::node_name(&key.name, |n| self.nodes.contains(n));
        let earlier = self
            .segments
            .iter()
            .filter(|s| s.segment.key.name == key.name);
        let index = earlier.count() as u64;
        let segment = Segment::new(key, chain(), index);
        let dir = self.dir.join(&node);
        create_dir(&dir)?;
        write_metadata(&dir, &segment.metadata(self.published, &node))?;
        self.nodes.insert(node.clone());
        self.segments.push(Seg {
            node,
            segment,
            shard: None,
        });
        self.taken.segments += 1;
        Ok(self.segments.len() - 1)
    }

    /// Makes segment `s`'s shard for record `i` the open one, writing out the one before it,
    /// and writes out what waits in memory once it is large.
    fn prepare(&mut self, s: usize, i: u64) -> Result<(), SinkError> {
        let seg = &mut self.segments[s];
        let k = i / seg.segment.shard;
        if seg.shard.as_ref().is_some_and(|shard| shard.k != k) {
            seg.shard.as_mut().expect("shard").write_out()?;
            seg.shard = None;
        }
        if seg.shard.is_none() {
            let dir = self.dir.join(&seg.node);
            seg.shard = Some(Shard::create(&dir, &seg.segment, k)?);
        }
        let shard = seg.shard.as_mut().expect("shard");
        if shard.waiting >= PENDING_LIMIT {
            shard.write_out()?;
        }
        Ok(())
    }

    /// Writes out every record below `n`: shards' inner chunks and indexes, then the index
    /// columns' chunks. Returns the bytes written.
    fn write_data(&mut self, n: u64) -> Result<u64, SinkError> {
        let mut written = 0;
        for seg in &mut self.segments {
            if let Some(shard) = &mut seg.shard {
                written += shard.write_out()?;
            }
        }
        for chunk in self.first / COLUMN_CHUNK..n.div_ceil(COLUMN_CHUNK) {
            let lo = (chunk * COLUMN_CHUNK - self.first) as usize;
            let hi = (n.min((chunk + 1) * COLUMN_CHUNK) - self.first) as usize;
            for (name, values) in COLUMNS.iter().zip(&self.columns) {
                let part = ColumnValues {
                    numbers: values.numbers.get(lo..hi).unwrap_or_default().to_vec(),
                    texts: values.texts.get(lo..hi).unwrap_or_default().to_vec(),
                };
                let bytes = layout::encode_column_chunk(layout::column_type(name), &part);
                let dir = self.dir.join(name).join("c");
                create_dir(&dir)?;
                write_replacing(&dir.join(chunk.to_string()), &bytes)?;
                written += bytes.len() as u64;
            }
        }
        // Values of whole chunks written are not needed again.
        let keep_from = (n / COLUMN_CHUNK) * COLUMN_CHUNK;
        let drop = (keep_from - self.first) as usize;
        for values in &mut self.columns {
            values.numbers.drain(..drop.min(values.numbers.len()));
            values.texts.drain(..drop.min(values.texts.len()));
        }
        self.first = keep_from;
        Ok(written)
    }

    /// Each node's directory and its metadata for `n` records.
    /// Each node's directory and metadata for `n` records, and the group's metadata that
    /// consolidates them.
    fn metadata(&self, n: u64) -> (Vec<(PathBuf, Value)>, Value) {
        let columns = COLUMNS
            .iter()
            .map(|&name| (name, layout::column_metadata(name, n)));
        let segments = self
            .segments
            .iter()
            .map(|seg| (seg.node.as_str(), seg.segment.metadata(n, &seg.node)));
        let nodes: Vec<(&str, Value)> = columns.chain(segments).collect();
        let consolidated = nodes
            .iter()
            .map(|(name, meta)| ((*name).to_owned(), meta.clone()));
        let group =
            layout::record_group_metadata(&self.source, &self.record, consolidated.collect());
        let dirs = nodes
            .into_iter()
            .map(|(name, meta)| (self.dir.join(name), meta));
        (dirs.collect(), group)
    }

    fn push_columns(&mut self, message: &Received) {
        let header = &message.record.header;
        let attrs = header
            .attrs
            .as_ref()
            .map_or_else(String::new, |a| serde_json::to_string(a).expect("JSON"));
        let [seq, session, time, received, attrs_column] = &mut self.columns;
        seq.numbers.push(header.seq);
        session.texts.push(header.session.clone());
        time.numbers.push(header.time.to_bits());
        received
            .numbers
            .push(seconds(message.received_at).to_bits());
        attrs_column.texts.push(attrs);
    }
}

impl Shard {
    /// Creates shard `k` of `segment` under `dir`, its index all empty.
    fn create(dir: &Path, segment: &Segment, k: u64) -> Result<Shard, SinkError> {
        let path = dir.join(segment.shard_key(k));
        fs::create_dir_all(path.parent().expect("a shard key has a parent")).map_err(io(&path))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        let index = vec![EMPTY; segment.shard as usize];
        file.write_all_at(&layout::encode_index(&index), 0)
            .map_err(io(&path))?;
        let end = segment.index_bytes();
        Ok(Shard {
            k,
            path,
            file,
            index,
            index_dirty: false,
            end,
            pending: Vec::new(),
            small: BytesMut::new(),
            small_at: end,
            waiting: 0,
        })
    }

    /// Opens shard `k` of a segment continued after a restart: its first `used` inner chunks
    /// are committed, the others (written after the last commit) are forgotten.
    fn reopen(
        dir: &Path,
        segment: &Segment,
        k: u64,
        used: usize,
    ) -> Result<Option<Shard>, SinkError> {
        let path = dir.join(segment.shard_key(k));
        let Some(mut index) = store_read::read_index(&path, segment).map_err(unreadable)? else {
            return Ok(None);
        };
        index[used..].fill(EMPTY);
        let end = index[..used]
            .iter()
            .filter(|&&e| e != EMPTY)
            .map(|&(offset, len)| offset + len)
            .max()
            .unwrap_or(segment.index_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Some(Shard {
            k,
            path,
            file,
            index,
            index_dirty: true,
            end,
            pending: Vec::new(),
            small: BytesMut::new(),
            small_at: end,
            waiting: 0,
        }))
    }

    /// Takes inner chunk `j`. A large one starts on a page boundary: the kernel copies whole
    /// pages into its cache at about twice the speed of pages it shares with other writes.
    fn place(&mut self, j: usize, bytes: Bytes) {
        let len = bytes.len() as u64;
        self.waiting += len;
        self.index_dirty = true;
        if bytes.len() < SMALL_CHUNK {
            if self.small.is_empty() {
                self.small_at = self.end;
            }
            self.small.extend_from_slice(&bytes);
        } else {
            self.take_small();
            if len >= ALIGN_FROM {
                self.end = self.end.next_multiple_of(PAGE);
            }
            self.pending.push((self.end, bytes));
        }
        self.index[j] = (self.end, len);
        self.end += len;
    }

    /// Moves the small chunks waiting together into `pending`.
    fn take_small(&mut self) {
        if !self.small.is_empty() {
            self.pending
                .push((self.small_at, self.small.split().freeze()));
        }
    }

    /// Writes the inner chunks waiting in memory, then the index. Returns the bytes written.
    fn write_out(&mut self) -> Result<u64, SinkError> {
        self.take_small();
        for (at, bytes) in &self.pending {
            self.file.write_all_at(bytes, *at).map_err(io(&self.path))?;
        }
        let written = self.waiting;
        self.pending.clear();
        self.waiting = 0;
        if self.index_dirty {
            let index = layout::encode_index(&self.index);
            self.file.write_all_at(&index, 0).map_err(io(&self.path))?;
            self.index_dirty = false;
        }
        Ok(written)
    }
}

/// Reads every group of an existing store, to continue it.
fn load_catalog(root: &Path) -> Result<Catalog, SinkError> {
    let meta = store_read::read_json(&root.join("zarr.json")).map_err(unreadable)?;
    if meta["attributes"]["ndbridge"]["store"].as_u64().is_none() {
        return Err(unreadable(StoreError::new(
            root,
            "a Zarr store, not one ndbridge wrote",
        )));
    }
    let mut catalog = Catalog::default();
    remove_unfinished_groups(root)?;
    for source_node in store_read::subdirectories(root).map_err(unreadable)? {
        let source_dir = root.join(&source_node);
        let mut taken = HashSet::new();
        // What still has no `zarr.json` is no collector's: its name stays taken, and it is
        // left alone.
        let Ok(source_meta) = store_read::read_json(&source_dir.join("zarr.json")) else {
            catalog.record_nodes.insert(source_node, taken);
            continue;
        };
        remove_unfinished_groups(&source_dir)?;
        // A source group without record groups yet (a crash came between the two) is reused.
        if let Some(source) = source_meta["attributes"]["ndbridge"]["source"].as_str() {
            catalog
                .sources
                .insert(source.to_owned(), source_node.clone());
        }
        for record_node in store_read::subdirectories(&source_dir).map_err(unreadable)? {
            if !source_dir.join(&record_node).join("zarr.json").exists() {
                taken.insert(record_node);
                continue;
            }
            let info = store_read::read_group(root, format!("{source_node}/{record_node}"))
                .map_err(unreadable)?;
            let group = continue_group(root, &info)?;
            catalog
                .sources
                .insert(info.source.clone(), source_node.clone());
            let by_record = catalog.groups.entry(info.source).or_default();
            by_record.insert(info.record, Arc::new(Mutex::new(group)));
            taken.insert(record_node);
        }
        catalog.record_nodes.insert(source_node, taken);
    }
    Ok(catalog)
}

/// A group read back, ready to take its next record.
fn continue_group(root: &Path, info: &store_read::Group) -> Result<Group, SinkError> {
    let dir = root.join(&info.path);
    let mut group = Group::new(dir.clone(), &info.source, &info.record);
    let n = info.records;
    group.n = n;
    // Its nodes may say more records than `n` (a crash between two metadata writes):
    // published stays below, so that the next commit writes them all again.
    group.published = n;
    group.rewrite = true;
    group.first = n - n % COLUMN_CHUNK;
    for (name, values) in COLUMNS.iter().zip(&mut group.columns) {
        *values =
            store_read::read_column(&dir.join(name), name, group.first, n).map_err(unreadable)?;
    }
    remove_uncommitted(&dir, info)?;
    for array in &info.arrays {
        let segment = array.segment.clone();
        let used = (n % segment.shard) as usize;
        let shard = if used > 0 {
            Shard::reopen(&dir.join(&array.node), &segment, n / segment.shard, used)?
        } else {
            None
        };
        group.nodes.insert(array.node.clone());
        group.segments.push(Seg {
            node: array.node.clone(),
            segment,
            shard,
        });
    }
    Ok(group)
}

/// Removes what a crash left past a group's last commit: nodes its metadata does not list
/// (segments created since), and shards whose records all lie past its length. Left, they
/// would show their records once the group grew over them.
fn remove_uncommitted(dir: &Path, info: &store_read::Group) -> Result<(), SinkError> {
    let listed: HashSet<&str> = info.arrays.iter().map(|a| a.node.as_str()).collect();
    for node in store_read::subdirectories(dir).map_err(unreadable)? {
        if !COLUMNS.contains(&node.as_str()) && !listed.contains(node.as_str()) {
            let path = dir.join(&node);
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    for array in &info.arrays {
        // `c/<k>`: a directory of the shard's further key parts, or the shard itself (0-d).
        let shards = dir.join(&array.node).join("c");
        let Ok(found) = fs::read_dir(&shards) else {
            continue;
        };
        for entry in found.flatten() {
            let name = entry.file_name();
            let k = name.to_str().and_then(|k| k.parse::<u64>().ok());
            if k.is_some_and(|k| k * array.segment.shard >= info.records) {
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

fn lock(group: &Mutex<Group>) -> MutexGuard<'_, Group> {
    group.lock().expect("group lock")
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        "store"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let header = &message.record.header;
        let group = self.group(&header.source, &header.name)?;
        let mut g = lock(&group);
        let i = g.n;
        // Everything that may fail comes first, so that a failed record leaves nothing taken.
        let mut chunks = Vec::with_capacity(message.record.arrays.len());
        for (a, array) in message.record.arrays.iter().enumerate() {
            let meta = array.meta();
            let s = g.segment(meta, || self.first_chain(array))?;
            if meta.nbytes == 0 {
                continue;
            }
            g.prepare(s, i)?;
            let chain = g.segments[s].segment.chain;
            chunks.push((s, self.chunk_bytes(chain, array, &message.frames[1 + a])?));
        }
        for (s, (bytes, made)) in chunks {
            let taken = &mut g.taken;
            match made {
                Made::AsItCame => taken.as_they_came += 1,
                Made::Decoded => taken.decoded += 1,
                Made::Encoded => taken.encoded += 1,
            }
            let shard_len = g.segments[s].segment.shard;
            let shard = g.segments[s].shard.as_mut().expect("prepared");
            let large = bytes.len() as u64 >= ALIGN_FROM;
            shard.place((i % shard_len) as usize, bytes);
            // A large frame is written at once, so that its buffer is freed and used again
            // (fresh memory costs more than the write); should that fail, the commit retries
            // it and reports the error.
            if large {
                let _ = shard.write_out();
            }
        }
        g.push_columns(message);
        g.n += 1;
        g.taken.records += 1;
        Ok(())
    }

    /// A session's end is a journal line: `{"source", "session", "end": <records sent>}`.
    fn end(&self, message: &Received) -> Result<(), SinkError> {
        let h = &message.record.header;
        self.append_journal(json!({"source": h.source, "session": h.session, "end": h.seq}))
    }

    /// A refusal is a journal line: `{"source", "session", "seq", "refused": <reason>}`.
    fn refused(
        &self,
        source: &str,
        session: &str,
        seq: u64,
        reason: &str,
    ) -> Result<(), SinkError> {
        self.append_journal(
            json!({"source": source, "session": session, "seq": seq, "refused": reason}),
        )
    }

    /// Commits: makes every record taken so far visible, and whole after a crash of the
    /// collector.
    fn flush(&self) -> Result<(), SinkError> {
        self.commit(false, false)
    }

    /// Commits, syncing the file system before and after the metadata: durable.
    fn sync(&self) -> Result<(), SinkError> {
        self.commit(true, false)?;
        self.syncfs()
    }

    /// The last commit, durable, every node's own metadata written.
    fn finish(&self) -> Result<(), SinkError> {
        self.commit(true, true)?;
        self.syncfs()
    }

    fn stored_before(&self, each: &mut dyn FnMut(&str, &str, u64)) {
        let groups = self.catalog.lock().expect("catalog lock").all();
        for group in groups {
            let g = lock(&group);
            let path = g
                .dir
                .strip_prefix(&self.root)
                .unwrap_or(&g.dir)
                .to_string_lossy()
                .into_owned();
            let seqs = store_read::read_column(&g.dir.join("seq"), "seq", 0, g.published);
            let sessions =
                store_read::read_column(&g.dir.join("session"), "session", 0, g.published);
            match (seqs, sessions) {
                (Ok(seqs), Ok(sessions)) => {
                    for (seq, session) in seqs.numbers.iter().zip(&sessions.texts) {
                        each(&g.source, session, *seq);
                    }
                }
                (Err(e), _) | (_, Err(e)) => tracing::warn!("store: {path}: {e}"),
            }
        }
        match store_read::read_journal(&self.root) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        JournalEntry::End {
                            source,
                            session,
                            records,
                        } => each(&source, &session, records),
                        JournalEntry::Refused {
                            source,
                            session,
                            seq,
                            ..
                        } => each(&source, &session, seq),
                    }
                }
            }
            Err(e) => tracing::warn!("store: {e}"),
        }
    }

    fn report(&self) -> serde_json::Map<String, Value> {
        let c = &self.counts;
        let load = |a: &AtomicU64| json!(a.load(Ordering::Relaxed));
        let mut t = Taken::default();
        for group in self.catalog.lock().expect("catalog lock").all() {
            let g = lock(&group).taken;
            t.records += g.records;
            t.as_they_came += g.as_they_came;
            t.decoded += g.decoded;
            t.encoded += g.encoded;
            t.segments += g.segments;
        }
        let mut m = serde_json::Map::new();
        m.insert("out".into(), json!(self.root.to_string_lossy()));
        m.insert("records".into(), json!(t.records));
        m.insert("bytes".into(), load(&c.bytes));
        m.insert("arrays_as_they_came".into(), json!(t.as_they_came));
        m.insert("arrays_decoded".into(), json!(t.decoded));
        m.insert("arrays_encoded".into(), json!(t.encoded));
        m.insert("segments".into(), json!(t.segments));
        m.insert("commits".into(), load(&c.commits));
        m
    }
}
