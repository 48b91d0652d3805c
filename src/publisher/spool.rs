//! Acked delivery's spool: the files where a publisher keeps every message it accepted until
//! the collector acknowledges it. A message is written to the spool before it is sent, so a
//! publisher killed, or closed before the collector took everything, leaves in its spool what
//! the collector may lack; the next publisher that opens the directory sends those messages
//! again, under their own session and seq, and ends their sessions. The collector drops what it
//! already has, so each record is stored once.
//!
//! A spool is a directory of the publisher's own: a `lock` file (one publisher at a time) and
//! segments named `{id:016x}.spool`, numbered in the order they were written. A segment holds
//! messages of one session, in `seq` order:
//!
//! ```text
//! segment = "NDBSPOL1" | u32 length | source | u32 length | session | record*
//! record  = u64 body length | u32 CRC-32 of body | body
//! body    = u64 seq | u8 flags (1: the session's end) | u32 frames | u64 length * frames | frames
//! ```
//!
//! Integers are little-endian. A record cut short, or whose CRC does not match, ends its
//! segment: the publisher was killed while writing it, before sending it.
//!
//! The spool protects against the publisher's process dying: it writes without `fsync`, so
//! the operating system's page cache holds what a power cut of the node can still lose.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// A segment's first bytes.
const MAGIC: &[u8; 8] = b"NDBSPOL1";

/// A segment takes new records until it is this long (or a quarter of the spool's limit, if
/// that is less: see [`Spool::set_limit`]).
const SEGMENT_BYTES: u64 = 64 << 20;

/// A record's first bytes: the body's length and its CRC.
const RECORD_HEAD: usize = 12;

/// The body's fixed part: seq, flags and frame count.
const BODY_HEAD: usize = 13;

/// Flag of a record that ends its session.
const END: u8 = 1;

/// Most frames a spooled message may claim (a header and a few hundred arrays).
const MAX_FRAMES: u32 = 1 << 16;

/// Where a spooled record starts: a segment, and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    segment: u64,
    offset: u64,
}

impl Place {
    /// Whether `other` is in the same segment.
    pub(crate) fn same_segment(&self, other: &Place) -> bool {
        self.segment == other.segment
    }
}

/// A spooled message read back.
#[derive(Debug, PartialEq)]
pub(crate) struct Message {
    /// Its `seq` in its session.
    pub(crate) seq: u64,
    pub(crate) frames: Vec<Bytes>,
    /// Where the next record of its segment starts.
    pub(crate) next: Place,
}

/// An earlier publisher's session found in the spool.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) source: String,
    pub(crate) session: String,
    /// Its segments' first records, in `seq` order: each segment is read to its end.
    pub(crate) segments: Vec<Place>,
    /// Its records in the spool.
    pub(crate) count: u64,
    /// The `seq` of its last message.
    pub(crate) last_seq: u64,
    /// The `seq` of the session's end, if it is in the spool.
    pub(crate) end: Option<u64>,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    source: String,
    session: String,
    file: File,
    path: PathBuf,
    len: u64,
    /// The `seq` of its last record.
    last_seq: Option<u64>,
    /// A write failed and its bytes could not be cut off: it takes no more records.
    retired: bool,
}

/// An open spool directory, locked for this publisher.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    /// Held while the spool is open: a second publisher on the same directory is refused.
    _lock: File,
    /// Live segments in the order written.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Bytes of the live segments.
    bytes: u64,
    /// A segment takes new records until it is this long.
    segment_bytes: u64,
}

impl Spool {
    /// Opens (creating it if needed) and locks the spool `dir`, and reads what earlier
    /// publishers left there, session by session in the order they wrote it. Torn records at
    /// the end of a segment are cut off.
    pub(crate) fn open(dir: &Path) -> io::Result<(Spool, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        lock_for_good(&lock, dir)?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            segments: VecDeque::new(),
            next_id: 0,
            bytes: 0,
            segment_bytes: SEGMENT_BYTES,
        };
        let mut recovered: Vec<Recovered> = Vec::new();
        for (id, path) in segment_files(dir)? {
            spool.next_id = spool.next_id.max(id + 1);
            let Some((segment, found)) = read_segment(id, path)? else {
                continue;
            };
            let Some(last_seq) = segment.last_seq else {
                std::fs::remove_file(&segment.path)?;
                continue;
            };
            let at = match recovered.iter().position(|r| r.session == segment.session) {
                Some(at) => at,
                None => {
                    recovered.push(Recovered {
                        source: segment.source.clone(),
                        session: segment.session.clone(),
                        segments: Vec::new(),
                        count: 0,
                        last_seq,
                        end: None,
                    });
                    recovered.len() - 1
                }
            };
            let r = &mut recovered[at];
            r.segments.push(found.first);
            r.count += found.records;
            r.last_seq = last_seq;
            r.end = r.end.or(found.end);
            spool.bytes += segment.len;
            spool.segments.push_back(segment);
        }
        Ok((spool, recovered))
    }

    /// Sizes the segments for a spool of at most `limit` bytes: at most a quarter of it, so
    /// that acknowledged segments can go while the spool is full (a session's last segment
    /// stays until the session ends).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.segment_bytes = (limit / 4).clamp(4096, SEGMENT_BYTES);
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the segments not yet removed.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes a message of `session` (from `source`) to the session's last segment, or a new
    /// one when it is full. A write that fails (a full disk) leaves no bytes behind: the
    /// segment is cut back to its last whole record, and takes no more records (the next go
    /// to a new segment), so that it can be removed once settled.
    pub(crate) fn append(
        &mut self,
        source: &str,
        session: &str,
        seq: u64,
        end: bool,
        frames: &[Bytes],
    ) -> io::Result<Place> {
        let at = match self.segments.iter().rposition(|s| s.session == session) {
            Some(at)
                if self.segments[at].len < self.segment_bytes && !self.segments[at].retired =>
            {
                at
            }
            _ => {
                let segment = self.create(source, session)?;
                self.bytes += segment.len;
                self.segments.push_back(segment);
                self.segments.len() - 1
            }
        };
        let segment = &mut self.segments[at];
        let (head, body_len) = record_head(seq, end, frames);
        let offset = segment.len;
        if let Err(e) = write_record(&mut segment.file, head, body_len, frames) {
            // The next record goes to a new segment, so that this one can go once settled.
            segment.retired = true;
            if segment.file.set_len(offset).is_err() {
                tracing::warn!(
                    "{}: a record that failed to write could not be cut off: {e}",
                    segment.path.display()
                );
            }
            return Err(e);
        }
        let written = RECORD_HEAD as u64 + body_len;
        segment.len += written;
        segment.last_seq = Some(seq);
        self.bytes += written;
        Ok(Place {
            segment: segment.id,
            offset,
        })
    }

    /// Reads back the message at `place`; `None` past the end of its segment, or when the
    /// segment is gone (everything in it was acknowledged).
    pub(crate) fn read(&self, place: Place) -> io::Result<Option<Message>> {
        let Some(segment) = self.segments.iter().find(|s| s.id == place.segment) else {
            return Ok(None);
        };
        if place.offset >= segment.len {
            return Ok(None);
        }
        let malformed = || io::Error::other("a spooled message reads back damaged");
        let mut head = [0u8; RECORD_HEAD];
        segment.file.read_exact_at(&mut head, place.offset)?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        let body_at = place.offset + RECORD_HEAD as u64;
        if len > segment.len.saturating_sub(body_at) {
            return Err(malformed());
        }
        let mut body = vec![0u8; len as usize];
        segment.file.read_exact_at(&mut body, body_at)?;
        if crc32fast::hash(&body) != crc {
            return Err(malformed());
        }
        let (seq, _, frames) = parse_body(Bytes::from(body)).ok_or_else(malformed)?;
        let next = Place {
            segment: place.segment,
            offset: body_at + len,
        };
        Ok(Some(Message { seq, frames, next }))
    }

    /// Removes the segments of `session` whose messages all lie below `through`, but its last
    /// one, which tells the next publisher where the session stopped (unless a failed write
    /// retired it: the disk needs the room more).
    pub(crate) fn settle(&mut self, session: &str, through: u64) -> io::Result<()> {
        let last = self.segments.iter().rposition(|s| s.session == session);
        self.remove_where(|at, s| {
            s.session == session
                && (Some(at) != last || s.retired)
                && s.last_seq.is_some_and(|q| q < through)
        })
    }

    /// Removes every segment of `session`: all of it, its end included, is acknowledged.
    pub(crate) fn forget(&mut self, session: &str) -> io::Result<()> {
        self.remove_where(|_, s| s.session == session)
    }

    fn remove_where(&mut self, remove: impl Fn(usize, &Segment) -> bool) -> io::Result<()> {
        let mut kept = VecDeque::with_capacity(self.segments.len());
        let mut result = Ok(());
        for (at, segment) in self.segments.drain(..).enumerate() {
            if remove(at, &segment) {
                self.bytes -= segment.len;
                if let Err(e) = std::fs::remove_file(&segment.path) {
                    result = Err(e);
                }
            } else {
                kept.push_back(segment);
            }
        }
        self.segments = kept;
        result
    }

    /// A new, empty segment of `session`.
    fn create(&mut self, source: &str, session: &str) -> io::Result<Segment> {
        let id = self.next_id;
        self.next_id += 1;
        let path = self.dir.join(format!("{id:016x}.spool"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut head = MAGIC.to_vec();
        for text in [source, session] {
            head.extend_from_slice(&(text.len() as u32).to_le_bytes());
            head.extend_from_slice(text.as_bytes());
        }
        file.write_all(&head)?;
        let segment = Segment {
            id,
            source: source.to_owned(),
            session: session.to_owned(),
            file,
            path,
            len: head.len() as u64,
            last_seq: None,
            retired: false,
        };
        debug_assert_eq!(segment.header_len(), segment.len);
        Ok(segment)
    }
}

impl Segment {
    /// The length of the segment's head: where its first record starts.
    fn header_len(&self) -> u64 {
        (MAGIC.len() + 8 + self.source.len() + self.session.len()) as u64
    }
}

/// Writes a record: its head and body, in one write when it is small.
fn write_record(file: &mut File, head: Vec<u8>, body_len: u64, frames: &[Bytes]) -> io::Result<()> {
    if body_len < 64 << 10 {
        let mut record = head;
        for frame in frames {
            record.extend_from_slice(frame);
        }
        return file.write_all(&record);
    }
    file.write_all(&head)?;
    for frame in frames {
        file.write_all(frame)?;
    }
    Ok(())
}

/// How long a lock held by someone else is waited for before the spool counts as another
/// publisher's: a child process forked by this one (or by another thread) shares the lock's
/// open file until it runs its program, and holds the lock that long.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Takes the exclusive lock on the spool's `lock` file, waiting out [`LOCK_WAIT`].
fn lock_for_good(lock: &File, dir: &Path) -> io::Result<()> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is the spool of another publisher", dir.display()),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The segment files in `dir` with their ids, in id order.
fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".spool"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(id) = id {
            files.push((id, path));
        }
    }
    files.sort();
    Ok(files)
}

/// A record's head (body length, CRC) and the body's head, and the body's length.
fn record_head(seq: u64, end: bool, frames: &[Bytes]) -> (Vec<u8>, u64) {
    let mut body_head = Vec::with_capacity(BODY_HEAD + 8 * frames.len());
    body_head.extend_from_slice(&seq.to_le_bytes());
    body_head.push(if end { END } else { 0 });
    body_head.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for frame in frames {
        body_head.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&body_head);
    for frame in frames {
        crc.update(frame);
    }
    let body_len = body_head.len() as u64 + frames.iter().map(|f| f.len() as u64).sum::<u64>();
    let mut head = Vec::with_capacity(RECORD_HEAD + body_head.len());
    head.extend_from_slice(&body_len.to_le_bytes());
    head.extend_from_slice(&crc.finalize().to_le_bytes());
    head.extend_from_slice(&body_head);
    (head, body_len)
}

/// A body's seq, end flag and frames (slices of `body`); `None` when it is malformed.
fn parse_body(body: Bytes) -> Option<(u64, bool, Vec<Bytes>)> {
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let flags = *body.get(8)?;
    let count = u32::from_le_bytes(body.get(9..13)?.try_into().ok()?);
    if count > MAX_FRAMES {
        return None;
    }
    let mut at = BODY_HEAD + 8 * count as usize;
    let lengths = body.get(BODY_HEAD..at)?;
    let mut frames = Vec::with_capacity(count as usize);
    for length in lengths.chunks_exact(8) {
        let length = usize::try_from(u64::from_le_bytes(length.try_into().ok()?)).ok()?;
        let end = at.checked_add(length).filter(|&e| e <= body.len())?;
        frames.push(body.slice(at..end));
        at = end;
    }
    (at == body.len()).then_some((seq, flags & END != 0, frames))
}

/// What a segment written earlier holds.
#[derive(Debug)]
struct Found {
    /// Its first record.
    first: Place,
    records: u64,
    /// The `seq` of the session's end, if it is here.
    end: Option<u64>,
}

/// Reads a segment written earlier: its ids, and every whole record (checked); the file is cut
/// after the last whole record. `None`: its head was cut short, and it is removed.
fn read_segment(id: u64, path: PathBuf) -> io::Result<Option<(Segment, Found)>> {
    let file = OpenOptions::new().read(true).append(true).open(&path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::new(&file);
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is no ndbridge spool segment", path.display()),
        )
    };
    let mut magic = [0u8; 8];
    let got = size.min(8) as usize;
    reader.read_exact(&mut magic[..got])?;
    if !MAGIC.starts_with(&magic[..got]) {
        return Err(malformed());
    }
    let head = match (got == 8, read_text(&mut reader), read_text(&mut reader)) {
        (true, Ok(source), Ok(session)) => Some((source, session)),
        // Cut short: the publisher was killed as it created the segment, before any record.
        (false, ..) | (_, Err(Text::Cut), _) | (_, _, Err(Text::Cut)) => None,
        _ => return Err(malformed()),
    };
    let Some((source, session)) = head else {
        drop(reader);
        tracing::warn!(
            "{}: a segment cut short in its head removed",
            path.display()
        );
        std::fs::remove_file(&path)?;
        return Ok(None);
    };
    let mut len = (MAGIC.len() + 8 + source.len() + session.len()) as u64;
    let mut found = Found {
        first: Place {
            segment: id,
            offset: len,
        },
        records: 0,
        end: None,
    };
    let mut last_seq = None;
    while let Some((seq, end, next)) = read_record(&mut reader, len, size) {
        len = next;
        found.records += 1;
        last_seq = Some(seq);
        if end {
            found.end = Some(seq);
        }
    }
    drop(reader);
    if len < size {
        tracing::warn!(
            "{}: {} bytes after the last whole record cut off",
            path.display(),
            size - len
        );
        file.set_len(len)?;
    }
    let segment = Segment {
        id,
        source,
        session,
        file,
        path,
        len,
        last_seq,
        retired: false,
    };
    Ok(Some((segment, found)))
}

/// Why a segment head's text could not be read.
#[derive(Debug)]
enum Text {
    /// The file ends first.
    Cut,
    /// Too long, or not UTF-8.
    Malformed,
}

/// A length-prefixed text of a segment's head.
fn read_text(reader: &mut impl Read) -> Result<String, Text> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).map_err(|_| Text::Cut)?;
    let len = u32::from_le_bytes(len);
    if len > 4096 {
        return Err(Text::Malformed);
    }
    let mut text = vec![0u8; len as usize];
    reader.read_exact(&mut text).map_err(|_| Text::Cut)?;
    String::from_utf8(text).map_err(|_| Text::Malformed)
}

/// The seq and end flag of the next whole record, at `at` of a segment of `size` bytes, and
/// where the record after it starts; `None` at the end or at a record cut short or damaged.
fn read_record(reader: &mut impl Read, at: u64, size: u64) -> Option<(u64, bool, u64)> {
    let mut head = [0u8; RECORD_HEAD];
    reader.read_exact(&mut head).ok()?;
    let len = u64::from_le_bytes(head[..8].try_into().ok()?);
    let crc = u32::from_le_bytes(head[8..].try_into().ok()?);
    let offset = at + RECORD_HEAD as u64;
    if len > size.saturating_sub(offset) {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).ok()?;
    if crc32fast::hash(&body) != crc {
        return None;
    }
    let (seq, end, _) = parse_body(Bytes::from(body))?;
    Some((seq, end, offset + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Vec<Bytes> {
        vec![
            Bytes::from(format!("{{\"seq\":{seq}}}")),
            Bytes::from(vec![seq as u8; 100]),
        ]
    }

    /// Every message of a session's segments, read back in order.
    fn read_all(spool: &Spool, segments: &[Place]) -> Vec<(u64, Vec<Bytes>)> {
        let mut messages = Vec::new();
        for &first in segments {
            let mut at = first;
            while let Some(m) = spool.read(at).unwrap() {
                at = m.next;
                messages.push((m.seq, m.frames));
            }
        }
        messages
    }

    #[test]
    fn what_a_publisher_spooled_the_next_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, recovered) = Spool::open(dir.path()).unwrap();
            assert!(recovered.is_empty());
            let places = (0..5)
                .map(|seq| {
                    spool
                        .append("src", "s1", seq, false, &message(seq))
                        .unwrap()
                })
                .collect::<Vec<_>>();
            let third = spool.read(places[3]).unwrap().unwrap();
            assert_eq!(
                (third.seq, third.frames, third.next),
                (3, message(3), places[4])
            );
        }
        let (spool, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered.len(), 1);
        let r = &recovered[0];
        assert_eq!((&r.source[..], &r.session[..], r.end), ("src", "s1", None));
        assert_eq!((r.count, r.last_seq), (5, 4));
        let expected: Vec<_> = (0..5).map(|seq| (seq, message(seq))).collect();
        assert_eq!(read_all(&spool, &r.segments), expected);
    }

    #[test]
    fn a_second_publisher_cannot_open_a_spool_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path()).unwrap();
        let e = Spool::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("spool of another publisher"), "{e}");
    }

    #[test]
    fn a_torn_or_damaged_record_ends_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let (mut spool, _) = Spool::open(dir.path()).unwrap();
            for seq in 0..3 {
                spool
                    .append("src", "s1", seq, false, &message(seq))
                    .unwrap();
            }
            spool.segments[0].path.clone()
        };
        let whole = std::fs::metadata(&path).unwrap().len();
        // Cut the last record short: two remain.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(whole - 5)
            .unwrap();
        let (_, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered[0].count, 2);
        // Damage the second record's last byte: one remains.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let cut = std::fs::metadata(&path).unwrap().len();
        file.write_at(b"\xff", cut - 1).unwrap();
        let (_, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered[0].count, 1);
        assert!(std::fs::metadata(&path).unwrap().len() < cut);
    }

    #[test]
    fn settled_segments_go_but_a_session_keeps_its_last_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        // Segments of 1 MiB: a quarter of the limit.
        spool.set_limit(4 << 20);
        let big = vec![Bytes::from(vec![0u8; 512 << 10])];
        let places: Vec<Place> = (0..5)
            .map(|seq| spool.append("src", "s1", seq, false, &big).unwrap())
            .collect();
        let head = spool.segments[0].header_len();
        let firsts: Vec<Place> = places.into_iter().filter(|p| p.offset == head).collect();
        spool.append("src", "s2", 0, true, &message(0)).unwrap();
        assert_eq!(
            spool.segments.len(),
            4,
            "two records of half a segment fill one"
        );
        let seqs: Vec<u64> = read_all(&spool, &firsts).iter().map(|m| m.0).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4], "each segment read to its end");
        spool.settle("s1", 5).unwrap();
        assert_eq!(spool.segments.len(), 2, "s1's last segment and s2's stay");
        assert_eq!(segment_files(dir.path()).unwrap().len(), 2);
        spool.forget("s1").unwrap();
        drop(spool);
        let (_, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].end, Some(0));
        assert_eq!(recovered[0].session, "s2");
    }

    #[test]
    fn a_segment_cut_in_its_head_is_removed_and_a_foreign_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let segment = |id: u64| dir.path().join(format!("{id:016x}.spool"));
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(b"src");
        for cut in [0, 5, 8, 10, head.len()] {
            std::fs::write(segment(1), &head[..cut]).unwrap();
            let (spool, recovered) = Spool::open(dir.path()).unwrap();
            assert!(recovered.is_empty() && !segment(1).exists(), "cut at {cut}");
            drop(spool);
        }
        std::fs::write(segment(2), b"NOTSPOOL and more").unwrap();
        let e = Spool::open(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("is no ndbridge spool segment"),
            "{e}"
        );
    }

    #[test]
    fn a_record_damaged_after_it_was_written_does_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        let place = spool.append("src", "s1", 0, false, &message(0)).unwrap();
        let file = OpenOptions::new()
            .write(true)
            .open(&spool.segments[0].path)
            .unwrap();
        file.write_at(b"\xff", spool.segments[0].len - 1).unwrap();
        let e = spool.read(place).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn a_failed_write_leaves_no_bytes_behind() {
        // A tmpfs of 64 KiB: the third record of 20 KB does not fit.
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
            return;
        }
        let result = std::panic::catch_unwind(|| {
            let (mut spool, _) = Spool::open(dir.path()).unwrap();
            let big = |seq: u64| vec![Bytes::from(vec![seq as u8; 20_000])];
            let mut written = 0;
            let e = loop {
                match spool.append("src", "s1", written, false, &big(written)) {
                    Ok(_) => written += 1,
                    Err(e) => break e,
                }
            };
            assert!(written >= 1, "{e}");
            let whole = spool.segments[0].len;
            assert_eq!(
                std::fs::metadata(&spool.segments[0].path).unwrap().len(),
                whole
            );
            drop(spool);
            let (spool, recovered) = Spool::open(dir.path()).unwrap();
            assert_eq!(
                (recovered[0].count, recovered[0].last_seq),
                (written, written - 1)
            );
            drop(spool);
        });
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn a_body_that_claims_more_than_it_holds_is_malformed() {
        let (head, _) = record_head(7, false, &message(7));
        let mut body = head[RECORD_HEAD..].to_vec();
        body.extend_from_slice(b"short");
        assert_eq!(parse_body(Bytes::from(body)), None);
    }
}
