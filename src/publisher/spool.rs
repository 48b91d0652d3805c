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

/// A segment takes new records until it is this long.
const SEGMENT_BYTES: u64 = 64 << 20;

/// A record's first bytes: the body's length and its CRC.
const RECORD_HEAD: usize = 12;

/// The body's fixed part: seq, flags and frame count.
const BODY_HEAD: usize = 13;

/// Flag of a record that ends its session.
const END: u8 = 1;

/// Most frames a spooled message may claim (a header and a few hundred arrays).
const MAX_FRAMES: u32 = 1 << 16;

/// Where a spooled message lies, and its `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spooled {
    /// The message's `seq` in its session.
    pub(crate) seq: u64,
    segment: u64,
    /// Offset of the record's body in its segment.
    offset: u64,
    /// The body's length: what the message weighs.
    pub(crate) len: u64,
}

/// The messages of an earlier publisher's session found in the spool.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) source: String,
    pub(crate) session: String,
    /// In `seq` order.
    pub(crate) messages: Vec<Spooled>,
    /// The `seq` of the session's end, if it is among them.
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
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is the spool of another publisher", dir.display()),
            ),
            std::fs::TryLockError::Error(e) => e,
        })?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            segments: VecDeque::new(),
            next_id: 0,
            bytes: 0,
        };
        let mut recovered: Vec<Recovered> = Vec::new();
        for (id, path) in segment_files(dir)? {
            spool.next_id = spool.next_id.max(id + 1);
            let (segment, messages) = read_segment(id, path)?;
            if messages.is_empty() {
                std::fs::remove_file(&segment.path)?;
                continue;
            }
            let end = messages.iter().find(|(_, end)| *end).map(|(m, _)| m.seq);
            let at = match recovered.iter().position(|r| r.session == segment.session) {
                Some(at) => at,
                None => {
                    recovered.push(Recovered {
                        source: segment.source.clone(),
                        session: segment.session.clone(),
                        messages: Vec::new(),
                        end: None,
                    });
                    recovered.len() - 1
                }
            };
            recovered[at].end = recovered[at].end.or(end);
            recovered[at]
                .messages
                .extend(messages.into_iter().map(|(m, _)| m));
            spool.bytes += segment.len;
            spool.segments.push_back(segment);
        }
        Ok((spool, recovered))
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
    /// one when it is full.
    pub(crate) fn append(
        &mut self,
        source: &str,
        session: &str,
        seq: u64,
        end: bool,
        frames: &[Bytes],
    ) -> io::Result<Spooled> {
        let at = match self.segments.iter().rposition(|s| s.session == session) {
            Some(at) if self.segments[at].len < SEGMENT_BYTES => at,
            _ => {
                let segment = self.create(source, session)?;
                self.bytes += segment.len;
                self.segments.push_back(segment);
                self.segments.len() - 1
            }
        };
        let segment = &mut self.segments[at];
        let (head, body_len) = record_head(seq, end, frames);
        let offset = segment.len + RECORD_HEAD as u64;
        if body_len < 64 << 10 {
            let mut record = head;
            for frame in frames {
                record.extend_from_slice(frame);
            }
            segment.file.write_all(&record)?;
        } else {
            segment.file.write_all(&head)?;
            for frame in frames {
                segment.file.write_all(frame)?;
            }
        }
        let written = RECORD_HEAD as u64 + body_len;
        segment.len += written;
        segment.last_seq = Some(seq);
        self.bytes += written;
        Ok(Spooled {
            seq,
            segment: segment.id,
            offset,
            len: body_len,
        })
    }

    /// Reads a spooled message's frames back.
    pub(crate) fn read(&self, message: &Spooled) -> io::Result<Vec<Bytes>> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.id == message.segment)
            .ok_or_else(|| io::Error::other("the spooled message's segment is gone"))?;
        let mut body = vec![0u8; message.len as usize];
        segment.file.read_exact_at(&mut body, message.offset)?;
        let (_, _, frames) = parse_body(Bytes::from(body))
            .ok_or_else(|| io::Error::other("a spooled message reads back malformed"))?;
        Ok(frames)
    }

    /// Removes the segments of `session` whose messages all lie below `through`, but its last
    /// one: it tells the next publisher where the session stopped.
    pub(crate) fn settle(&mut self, session: &str, through: u64) -> io::Result<()> {
        let last = self.segments.iter().rposition(|s| s.session == session);
        self.remove_where(|at, s| {
            s.session == session && Some(at) != last && s.last_seq.is_some_and(|q| q < through)
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
        Ok(Segment {
            id,
            source: source.to_owned(),
            session: session.to_owned(),
            file,
            path,
            len: head.len() as u64,
            last_seq: None,
        })
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

/// Reads a segment written earlier: its ids and every whole record; the file is cut after the
/// last whole record.
fn read_segment(id: u64, path: PathBuf) -> io::Result<(Segment, Vec<(Spooled, bool)>)> {
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
    reader.read_exact(&mut magic).map_err(|_| malformed())?;
    if &magic != MAGIC {
        return Err(malformed());
    }
    let source = read_text(&mut reader).ok_or_else(malformed)?;
    let session = read_text(&mut reader).ok_or_else(malformed)?;
    let mut len = (8 + 8 + source.len() + session.len()) as u64;
    let mut messages = Vec::new();
    while let Some((message, end)) = read_record(&mut reader, id, len, size) {
        len = message.offset + message.len;
        messages.push((message, end));
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
    let last_seq = messages.last().map(|(m, _)| m.seq);
    let segment = Segment {
        id,
        source,
        session,
        file,
        path,
        len,
        last_seq,
    };
    Ok((segment, messages))
}

/// A length-prefixed text of a segment's head.
fn read_text(reader: &mut impl Read) -> Option<String> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len);
    if len > 4096 {
        return None;
    }
    let mut text = vec![0u8; len as usize];
    reader.read_exact(&mut text).ok()?;
    String::from_utf8(text).ok()
}

/// The next whole record at `at` of a segment of `size` bytes; `None` at the end or at a
/// record cut short or damaged.
fn read_record(
    reader: &mut impl Read,
    segment: u64,
    at: u64,
    size: u64,
) -> Option<(Spooled, bool)> {
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
    let message = Spooled {
        seq,
        segment,
        offset,
        len,
    };
    Some((message, end))
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

    #[test]
    fn what_a_publisher_spooled_the_next_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<Spooled> = {
            let (mut spool, recovered) = Spool::open(dir.path()).unwrap();
            assert!(recovered.is_empty());
            let written = (0..5)
                .map(|seq| {
                    spool
                        .append("src", "s1", seq, false, &message(seq))
                        .unwrap()
                })
                .collect::<Vec<_>>();
            assert_eq!(spool.read(&written[3]).unwrap(), message(3));
            written
        };
        let (spool, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered.len(), 1);
        let r = &recovered[0];
        assert_eq!((&r.source[..], &r.session[..], r.end), ("src", "s1", None));
        assert_eq!(r.messages, written);
        for m in &r.messages {
            assert_eq!(spool.read(m).unwrap(), message(m.seq));
        }
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
        assert_eq!(recovered[0].messages.len(), 2);
        // Damage the second record's last byte: one remains.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let cut = std::fs::metadata(&path).unwrap().len();
        file.write_at(b"\xff", cut - 1).unwrap();
        let (_, recovered) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovered[0].messages.len(), 1);
        assert!(std::fs::metadata(&path).unwrap().len() < cut);
    }

    #[test]
    fn settled_segments_go_but_a_session_keeps_its_last_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        let big = vec![Bytes::from(vec![0u8; (SEGMENT_BYTES / 2) as usize])];
        for seq in 0..5 {
            spool.append("src", "s1", seq, false, &big).unwrap();
        }
        spool.append("src", "s2", 0, true, &message(0)).unwrap();
        assert_eq!(
            spool.segments.len(),
            4,
            "two records of half a segment fill one"
        );
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
    fn a_body_that_claims_more_than_it_holds_is_malformed() {
        let (head, _) = record_head(7, false, &message(7));
        let mut body = head[RECORD_HEAD..].to_vec();
        body.extend_from_slice(b"short");
        assert_eq!(parse_body(Bytes::from(body)), None);
    }
}
