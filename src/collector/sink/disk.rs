//! The disk sink ([`DiskSink`]): records as `.npy` / `.npz` files and a manifest under one
//! directory, nothing below it followed.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde_json::{json, Value};

use super::{Received, Sink, SinkError};
use crate::npy::{write_npy, write_npz};
use crate::plural::plural;
use crate::wire::{DecodedArray, Record};

/// Longest path component written, in bytes; longer names are cut and given a hash suffix.
const MAX_COMPONENT: usize = 120;

/// Most files kept of one record name and sequence number (see [`DiskSink::place`]).
const MAX_NAME_ATTEMPTS: u64 = 1000;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The manifest's name in the output directory.
const MANIFEST: &str = "manifest.jsonl";

/// How long after its last change a temporary file is stale whatever its process id says.
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Disk sinks started in this process so far: the first one knows that temporary files with
/// this process's id are left from a process before it.
static SINKS_STARTED: AtomicU64 = AtomicU64::new(0);

/// How directories below the output directory are opened: never through a link.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Writes every record under one output directory: each record becomes `<out>/<source>/<name>/<seq>.npy` (one array) or `.npz`
/// (several), written under a temporary name and moved into place when complete, never replacing
/// a file, plus one JSON line per record in `<out>/manifest.jsonl`. Names from the network are
/// escaped so that no name can reach outside `<out>`.
///
/// # Nothing below `<out>` is followed
///
/// `<out>` is resolved once, when the sink starts: if it is a symbolic link, that is the user's
/// choice and it is followed then. Every path below it is opened one component at a time,
/// relative to its parent directory's descriptor and without following symbolic links:
/// directories with `openat(O_NOFOLLOW | O_DIRECTORY)` (made with `mkdirat` when missing), the
/// temporary file with `O_CREAT | O_EXCL | O_NOFOLLOW`, the final name taken with `linkat` (or
/// `renameat`) within that directory, the manifest with `O_NOFOLLOW`. A symbolic link, or any
/// other kind of file, where `<out>/<source>` or `<out>/<source>/<name>` should be a directory
/// fails that record with [`SinkError::UnsafePath`]: the collector counts a sink error and
/// stores the other records. A manifest that is a link, not a regular file, or a regular file
/// with other hard links stops the sink from starting. The manifest is opened once, so a link put
/// in its place later is never written through; the directories are opened again for every
/// record, so one replaced by a link later fails the records that follow.
///
/// # Stale temporary files
///
/// A record is written to `.<seq>.<ext>.tmp-<pid>-<n>` in its directory, then linked to its final
/// name, and the temporary name removed. A collector killed in between (`kill -9`) leaves the
/// temporary file. When a sink starts it reads every `<out>/<source>/<name>/` (never through a
/// link) and removes the regular files named so whose writer cannot be writing any more:
///
/// - no process `<pid>` exists on this machine (`kill(pid, 0)` fails with `ESRCH`);
/// - `<pid>` is this process's own and no disk sink was started before in this process (a
///   collector restarted in a container often has the process id of the one before it);
/// - or the file was last changed more than 15 minutes before the start (its process id now
///   belongs to another process).
///
/// No other name is touched, record files and the manifest included. The number removed is
/// logged and reported as `stale_temp_files_removed` by [`Sink::report`]. Collectors in
/// different process id namespaces (containers) sharing one `<out>` can see each other's writers
/// as gone: a sink starting then can remove a temporary file another container's collector is
/// still writing, and that record fails there (counted as a sink error); a partial file is never
/// put in place.
pub struct DiskSink {
    out: PathBuf,
    /// `out`, opened once: every path below it is reached from here.
    out_dir: OwnedFd,
    manifest: Mutex<File>,
    escaped_names: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    temp_counter: AtomicU64,
    stale_temp_files_removed: u64,
}

impl DiskSink {
    /// Turns a name from the network into one safe path component.
    ///
    /// Letters, digits and `_ - . : + = @ ,` are kept; every other byte (`/`, `\`, NUL, spaces,
    /// non-ASCII, ...) becomes `%XX`, as does a leading `.` (so `.`, `..` and hidden names cannot
    /// occur); the empty name becomes `%`. Names longer than 120 bytes are cut and suffixed with a
    /// hash of the whole name. (For Unix file systems: `:` is kept.)
    /// Returns the component and whether anything was changed.
    ///
    /// ```
    /// use ndbridge::collector::DiskSink;
    ///
    /// assert_eq!(DiskSink::path_component("temperature"), ("temperature".to_owned(), false));
    /// assert_eq!(DiskSink::path_component("../etc/passwd").0, "%2E.%2Fetc%2Fpasswd");
    /// assert_eq!(DiskSink::path_component("/abs").0, "%2Fabs");
    /// assert!(DiskSink::path_component(&"x".repeat(1000)).0.len() <= 120);
    /// ```
    pub fn path_component(name: &str) -> (String, bool) {
        let mut out = String::with_capacity(name.len());
        for (i, b) in name.bytes().enumerate() {
            let keep = b.is_ascii_alphanumeric() || b"_-.:+=@,".contains(&b);
            if keep && !(i == 0 && b == b'.') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.is_empty() {
            // A lone `%` is never produced by escaping (which always adds two hex digits).
            out.push('%');
        }
        if out.len() > MAX_COMPONENT {
            let hash = fnv1a(name.as_bytes());
            out.truncate(MAX_COMPONENT - 17);
            out.push_str(&format!("~{hash:016x}"));
        }
        let changed = out != name;
        (out, changed)
    }

    /// Creates `out` if needed, opens it and `out/manifest.jsonl` for appending, and removes the
    /// stale temporary files under it (see [`DiskSink`]).
    ///
    /// `out` may be a symbolic link; nothing below it is followed. Fails if the manifest is not
    /// a regular file of one link ([`SinkError::UnsafePath`]).
    pub fn new(out: impl Into<PathBuf>) -> Result<DiskSink, SinkError> {
        let out = out.into();
        fs::create_dir_all(&out).map_err(|e| not_a_directory(&out).unwrap_or(io_error(&out)(e)))?;
        let out_dir = rustix::fs::open(
            &out,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(&out)(e.into()))?;
        let manifest = open_manifest(out_dir.as_fd(), &out.join(MANIFEST))?;
        let first_sink = SINKS_STARTED.fetch_add(1, Ordering::Relaxed) == 0;
        let removed = remove_stale_temp_files(out_dir.as_fd(), &out, first_sink, SystemTime::now());
        if removed > 0 {
            tracing::info!(
                "disk sink: removed {} under {}",
                plural(removed, "stale temporary file"),
                out.display()
            );
        }
        Ok(DiskSink {
            out,
            out_dir,
            manifest: Mutex::new(manifest),
            escaped_names: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
            stale_temp_files_removed: removed,
        })
    }

    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Names that had to be escaped so far.
    pub fn escaped_names(&self) -> u64 {
        self.escaped_names.load(Ordering::Relaxed)
    }

    /// Temporary files left by an earlier writer that [`DiskSink::new`] removed.
    pub fn stale_temp_files_removed(&self) -> u64 {
        self.stale_temp_files_removed
    }

    fn component(&self, name: &str) -> String {
        let (component, changed) = DiskSink::path_component(name);
        if changed {
            self.escaped_names.fetch_add(1, Ordering::Relaxed);
        }
        component
    }

    /// The directory name of a source: like [`path_component`], and never the manifest's own
    /// name.
    fn source_component(&self, source: &str) -> String {
        let component = self.component(source);
        if component == MANIFEST {
            self.escaped_names.fetch_add(1, Ordering::Relaxed);
            "manifest%2Ejsonl".to_owned()
        } else {
            component
        }
    }

    /// Creates a new temporary file in `dir` (at `dir_path`): `.<seq>.<ext>.tmp-<pid>-<n>`,
    /// never one that exists (another collector writing to the same directory can have the same
    /// process id, in another container, and the same count). Returns its name and the file.
    fn create_temp(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        seq: u64,
        ext: &str,
    ) -> Result<(String, File), SinkError> {
        loop {
            let temp = format!(
                ".{seq}.{ext}.tmp-{}-{}",
                std::process::id(),
                self.temp_counter.fetch_add(1, Ordering::Relaxed)
            );
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(dir, temp.as_str(), flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => return Ok((temp, File::from(fd))),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io_error(&dir_path.join(&temp))(e.into())),
            }
        }
    }

    /// Writes `record` to its file in `dir` (at `dir_path`): a temporary file first, moved to
    /// its final name once complete, so that no reader sees a partial file; returns that name.
    /// Nothing is left behind when either step fails.
    fn store_file(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        record: &Record,
    ) -> Result<String, SinkError> {
        let header = &record.header;
        let ext = if record.arrays.len() == 1 {
            "npy"
        } else {
            "npz"
        };
        let (temp, file) = self.create_temp(dir, dir_path, header.seq, ext)?;
        if let Err(e) = self.write_arrays(file, &record.arrays) {
            let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
            return Err(io_error(&dir_path.join(&temp))(e));
        }
        self.place(dir, dir_path, &temp, header.seq, &header.session, ext)
            .map_err(|e| {
                let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
                io_error(dir_path)(e)
            })
    }

    /// Writes one array as `.npy`, several as `.npz` (members named after the arrays, escaped
    /// as path components are).
    fn write_arrays(&self, file: File, arrays: &[DecodedArray]) -> std::io::Result<()> {
        if let [array] = arrays {
            let mut w = BufWriter::with_capacity(1 << 16, file);
            write_npy(&mut w, array)?;
            w.into_inner().map_err(|e| e.into_error())?;
        } else {
            let escaped = &self.escaped_names;
            write_npz(BufWriter::with_capacity(1 << 16, file), arrays, |name| {
                let (member, changed) = DiskSink::path_component(name);
                if changed {
                    escaped.fetch_add(1, Ordering::Relaxed);
                }
                member
            })?
            .into_inner()
            .map_err(|e| e.into_error())?;
        }
        Ok(())
    }

    /// Moves the finished temporary file `temp` in `dir` (at `dir_path`) to its final name,
    /// never replacing a file, and returns that name: the first of `<seq>.<ext>`,
    /// `<seq>.<session>.<ext>`, `<seq>.<session>.1.<ext>`, ... that is free. Each name is taken
    /// with a hard link, which fails if the name exists (as anything, a link included), so two
    /// writers (threads, or collectors sharing the directory) can never take the same one; on a
    /// file system without hard links, by a rename once the name is seen free. A publisher that
    /// resends a sequence number thus keeps both files, and the manifest has a line for each.
    fn place(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        temp: &str,
        seq: u64,
        session: &str,
        ext: &str,
    ) -> std::io::Result<String> {
        let (session, _) = DiskSink::path_component(session);
        for attempt in 0..MAX_NAME_ATTEMPTS {
            let name = match attempt {
                0 => format!("{seq}.{ext}"),
                1 => format!("{seq}.{session}.{ext}"),
                n => format!("{seq}.{session}.{}.{ext}", n - 1),
            };
            match rustix::fs::linkat(dir, temp, dir, name.as_str(), AtFlags::empty()) {
                Ok(()) => {
                    // The file is in place: a temporary name left behind is only clutter.
                    if let Err(e) = rustix::fs::unlinkat(dir, temp, AtFlags::empty()) {
                        let temp = dir_path.join(temp);
                        tracing::warn!("disk sink: cannot remove {}: {e}", temp.display());
                    }
                    return Ok(name);
                }
                Err(Errno::EXIST) => continue,
                Err(_) => {
                    match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                        Err(Errno::NOENT) => {
                            // A file system without hard links (FAT, some network mounts): a
                            // rename after checking the name, which another writer could take
                            // in between.
                            rustix::fs::renameat(dir, temp, dir, name.as_str())?;
                            return Ok(name);
                        }
                        _ => continue,
                    }
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{MAX_NAME_ATTEMPTS} files of sequence number {seq} exist already"),
        ))
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// [`SinkError::NotADirectory`] for the first of `out` and its ancestors that is there and is
/// not a directory (symbolic links followed), if any.
fn not_a_directory(out: &Path) -> Option<SinkError> {
    out.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find_map(|path| {
            let mode = std::os::unix::fs::MetadataExt::mode(&fs::metadata(path).ok()?);
            let kind = FileType::from_raw_mode(mode);
            (kind != FileType::Directory).then(|| SinkError::NotADirectory {
                path: path.to_owned(),
                found: describe(kind),
            })
        })
}

/// What a kind of file is called in messages.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a named pipe",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

/// The error for `name` in `parent` (at `path`) that could not be opened as an `expected`:
/// [`SinkError::UnsafePath`] if something else is there (a symbolic link, ...), else the I/O
/// error.
fn open_error(
    parent: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    expected: FileType,
    error: Errno,
) -> SinkError {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) != expected => SinkError::UnsafePath {
            path: path.to_owned(),
            expected: describe(expected),
            found: describe(FileType::from_raw_mode(stat.st_mode)).to_owned(),
        },
        _ => io_error(path)(error.into()),
    }
}

/// Opens directory `name` in `parent` (at `path`), making it when missing, never through a
/// symbolic link.
fn open_dir(parent: BorrowedFd<'_>, name: &str, path: &Path) -> Result<OwnedFd, SinkError> {
    match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(dir) => return Ok(dir),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(open_error(parent, name, path, FileType::Directory, e)),
    }
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
        // Exists: another worker made it just now, or something else is there (the open says).
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_error(path)(e.into())),
    }
    rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())
        .map_err(|e| open_error(parent, name, path, FileType::Directory, e))
}

/// Opens (creating it if missing) the manifest `MANIFEST` in `out_dir` (at `path`) for
/// appending: never through a link, and only a regular file of one link, so that no write lands
/// in a file outside the output directory.
fn open_manifest(out_dir: BorrowedFd<'_>, path: &Path) -> Result<File, SinkError> {
    // Non-blocking only for the open: a named pipe there cannot hold the start.
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(out_dir, MANIFEST, flags, Mode::from_raw_mode(0o666))
        .map_err(|e| open_error(out_dir, MANIFEST, path, FileType::RegularFile, e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(path)(e.into()))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(SinkError::UnsafePath {
            path: path.to_owned(),
            expected: describe(FileType::RegularFile),
            found: describe(kind).to_owned(),
        });
    }
    if stat.st_nlink != 1 {
        return Err(SinkError::UnsafePath {
            path: path.to_owned(),
            expected: "a regular file of one link",
            found: format!("a regular file of {} links", stat.st_nlink),
        });
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::APPEND).map_err(|e| io_error(path)(e.into()))?;
    Ok(File::from(fd))
}

/// The names in directory `dir` (at `path`) that `keep` accepts, with `.` and `..` left out.
/// A directory that cannot be read is logged and yields what was read of it.
fn read_names(
    dir: BorrowedFd<'_>,
    path: &Path,
    keep: impl Fn(&str, FileType) -> bool,
) -> Vec<String> {
    let mut names = Vec::new();
    let entries = match Dir::read_from(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!("disk sink: cannot read {}: {e}", path.display());
            return names;
        }
    };
    for entry in entries {
        match entry {
            Ok(entry) => {
                let Ok(name) = entry.file_name().to_str() else {
                    continue; // not a name the sink writes
                };
                if name != "." && name != ".." && keep(name, entry.file_type()) {
                    names.push(name.to_owned());
                }
            }
            Err(e) => {
                tracing::warn!("disk sink: cannot read {}: {e}", path.display());
                break;
            }
        }
    }
    names
}

/// The directories in `dir` (at `path`) that the sink could have made, opened without following
/// links (a link or anything else is skipped), with their names.
fn subdirectories(dir: BorrowedFd<'_>, path: &Path) -> Vec<(String, OwnedFd)> {
    let names = read_names(dir, path, |name, kind| {
        !name.starts_with('.') && matches!(kind, FileType::Directory | FileType::Unknown)
    });
    names
        .into_iter()
        .filter_map(|name| {
            let sub = rustix::fs::openat(dir, name.as_str(), DIR_FLAGS, Mode::empty()).ok()?;
            Some((name, sub))
        })
        .collect()
}

/// The process id in a temporary file's name, `.<seq>.<npy|npz>.tmp-<pid>-<n>`; `None` for any
/// other name.
fn temp_file_pid(name: &str) -> Option<u32> {
    let (record, writer) = name.strip_prefix('.')?.split_once(".tmp-")?;
    let seq = record
        .strip_suffix(".npy")
        .or_else(|| record.strip_suffix(".npz"))?;
    let (pid, n) = writer.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(seq) && digits(pid) && digits(n)) {
        return None;
    }
    pid.parse().ok()
}

/// Whether the process that named a temporary file with `pid` cannot be writing it any more:
/// no such process exists here, or it is this process and `first_sink` (no disk sink of this
/// process can have written it).
fn writer_gone(pid: u32, first_sink: bool) -> bool {
    if pid == std::process::id() {
        return first_sink;
    }
    match i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // `EPERM`: it exists, under another user.
        Some(pid) => rustix::process::test_kill_process(pid) == Err(Errno::SRCH),
        None => true, // 0, or beyond any process id
    }
}

/// Whether the temporary file `name` in `dir`, named with `pid`, is stale (see the module
/// documentation); only a regular file can be.
fn is_stale(
    dir: BorrowedFd<'_>,
    name: &str,
    pid: u32,
    first_sink: bool,
    started: SystemTime,
) -> bool {
    // Opened without following a link, or waiting for a named pipe's writer, for its kind and age.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
        return false;
    };
    let Ok(meta) = File::from(fd).metadata() else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let old = meta
        .modified()
        .ok()
        .and_then(|changed| started.duration_since(changed).ok())
        .is_some_and(|age| age > STALE_AFTER);
    old || writer_gone(pid, first_sink)
}

/// Removes the stale temporary files in every `<out>/<source>/<name>/` (see the module
/// documentation), never through a link; returns how many were removed.
fn remove_stale_temp_files(
    out_dir: BorrowedFd<'_>,
    out: &Path,
    first_sink: bool,
    started: SystemTime,
) -> u64 {
    let mut removed = 0;
    for (source, source_dir) in subdirectories(out_dir, out) {
        let source_path = out.join(source);
        for (name, dir) in subdirectories(source_dir.as_fd(), &source_path) {
            let dir_path = source_path.join(name);
            let temps = read_names(dir.as_fd(), &dir_path, |name, kind| {
                matches!(kind, FileType::RegularFile | FileType::Unknown)
                    && temp_file_pid(name).is_some()
            });
            for temp in temps {
                let Some(pid) = temp_file_pid(&temp) else {
                    continue;
                };
                if !is_stale(dir.as_fd(), &temp, pid, first_sink, started) {
                    continue;
                }
                match rustix::fs::unlinkat(dir.as_fd(), temp.as_str(), AtFlags::empty()) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        let path = dir_path.join(&temp);
                        tracing::warn!("disk sink: cannot remove {}: {e}", path.display());
                    }
                }
            }
        }
    }
    removed
}

/// The manifest's line for `message`'s record, stored at `path` (relative to the output
/// directory), or for a session's end (`path` `None`), newline included. `claimed_source`
/// only when the message has one.
fn manifest_line(message: &Received, path: Option<&str>) -> Vec<u8> {
    let record = &message.record;
    let header = &record.header;
    let mut line = match path {
        Some(path) => json!({
            "source": header.source,
            "session": header.session,
            "seq": header.seq,
            "name": header.name,
            "time": header.time,
            "arrays": record.arrays.iter().map(|a| {
                let m = a.meta();
                json!({
                    "name": m.name, "dtype": m.dtype.to_string(), "shape": m.shape,
                    "order": if m.order == crate::wire::Order::C { "C" } else { "F" },
                    "codec": m.codec.as_str(), "shuffle": m.is_shuffled(),
                    "wire_bytes": a.wire_len(), "raw_bytes": m.nbytes,
                })
            }).collect::<Vec<_>>(),
            "attrs": header.attrs.clone().map(Value::Object).unwrap_or(Value::Null),
            "path": path,
        }),
        // A session's end: its record count as `seq`, no file.
        None => json!({
            "source": header.source,
            "session": header.session,
            "seq": header.seq,
            "time": header.time,
            "end": true,
        }),
    };
    if let Some(claimed) = &message.claimed_source {
        line["claimed_source"] = Value::String(claimed.clone());
    }
    let mut text = serde_json::to_vec(&line).expect("JSON values serialize");
    text.push(b'\n');
    text
}

impl DiskSink {
    /// Appends `line` to the manifest. A failed write (a full disk) is cut back to where the
    /// manifest ended before it, so that the retry's line stands alone; should the cut fail too
    /// (a read-only file system), the part written stays, a line readers skip as unreadable
    /// (`ndbridge verify` counts them), and that is logged.
    fn append_to_manifest(&self, line: &[u8]) -> Result<(), SinkError> {
        let path = || self.out.join(MANIFEST);
        let mut manifest = self.manifest.lock().expect("manifest lock");
        let end = manifest.metadata().map_err(io_error(&path()))?.len();
        manifest.write_all(line).map_err(|e| {
            if let Err(cut) = manifest.set_len(end) {
                tracing::error!(
                    "{}: a line written in part could not be cut back: {cut}",
                    path().display()
                );
            }
            io_error(&path())(e)
        })
    }
}

impl Sink for DiskSink {
    fn name(&self) -> &str {
        "disk"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let header = &message.record.header;
        let source = self.source_component(&header.source);
        let name = self.component(&header.name);
        let source_path = self.out.join(&source);
        let source_dir = open_dir(self.out_dir.as_fd(), &source, &source_path)?;
        let dir_path = source_path.join(&name);
        let dir = open_dir(source_dir.as_fd(), &name, &dir_path)?;
        let file_name = self.store_file(dir.as_fd(), &dir_path, &message.record)?;
        let line = manifest_line(message, Some(&format!("{source}/{name}/{file_name}")));
        if let Err(e) = self.append_to_manifest(&line) {
            // Undone, so that a retry stores the record once, under the same name.
            if let Err(undo) =
                rustix::fs::unlinkat(dir.as_fd(), file_name.as_str(), AtFlags::empty())
            {
                tracing::error!(
                    "{}: stored, its manifest line failed, and it could not be removed ({undo}): \
                     a retry stores the record again under another name",
                    dir_path.join(&file_name).display()
                );
            }
            return Err(e);
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(message.record.raw_bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// A session's end is a manifest line of its own: `"end": true`, the session's record
    /// count as `seq`, and no `path`.
    fn end(&self, message: &Received) -> Result<(), SinkError> {
        self.append_to_manifest(&manifest_line(message, None))
    }

    /// A refusal is a manifest line of its own: `"refused"` with the reason, and no `path`.
    fn refused(
        &self,
        source: &str,
        session: &str,
        seq: u64,
        reason: &str,
    ) -> Result<(), SinkError> {
        let line = json!({"source": source, "session": session, "seq": seq, "refused": reason});
        let mut text = serde_json::to_vec(&line).expect("JSON values serialize");
        text.push(b'\n');
        self.append_to_manifest(&text)
    }

    /// Syncs the file system that holds the output directory (`syncfs`): every record file,
    /// directory entry and manifest line written so far, in one call for all of them.
    fn sync(&self) -> Result<(), SinkError> {
        rustix::fs::syncfs(&self.out_dir).map_err(|e| SinkError::Io {
            path: self.out.clone(),
            source: e.into(),
        })
    }

    fn finish(&self) -> Result<(), SinkError> {
        self.manifest
            .lock()
            .expect("manifest lock")
            .sync_data()
            .map_err(io_error(&self.out.join(MANIFEST)))
    }

    /// The records, session ends and refusals the manifest lists, read again from the start of
    /// the file.
    fn stored_before(&self, each: &mut dyn FnMut(&str, &str, u64)) {
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            #[serde(borrow)]
            source: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            session: std::borrow::Cow<'a, str>,
            seq: u64,
        }
        let path = self.out.join(MANIFEST);
        let Ok(file) = File::open(&path) else {
            return;
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        let (mut read, mut unreadable) = (0u64, 0u64);
        loop {
            line.clear();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => match serde_json::from_slice::<Line>(&line) {
                    Ok(l) => {
                        each(&l.source, &l.session, l.seq);
                        read += 1;
                    }
                    // A line cut short by a crash, or not the collector's.
                    Err(_) => unreadable += 1,
                },
                Err(e) => {
                    tracing::warn!("{}: read no further: {e}", path.display());
                    break;
                }
            }
        }
        if read > 0 || unreadable > 0 {
            tracing::info!(
                "{}: {} of earlier sessions continue their counts{}",
                path.display(),
                crate::plural::plural(read, "record"),
                if unreadable > 0 {
                    format!(
                        " ({} unreadable)",
                        crate::plural::plural(unreadable, "line")
                    )
                } else {
                    String::new()
                }
            );
        }
    }

    fn report(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("out".into(), json!(self.out.to_string_lossy()));
        m.insert("files".into(), json!(self.files.load(Ordering::Relaxed)));
        m.insert("bytes".into(), json!(self.bytes.load(Ordering::Relaxed)));
        m.insert("escaped_names".into(), json!(self.escaped_names()));
        m.insert(
            "stale_temp_files_removed".into(),
            json!(self.stale_temp_files_removed),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::wire::{decode, encode, ArrayBuffer, Compression, Envelope, Limits};

    /// A decoded record of one `u8` array, as a sink receives it.
    fn record(source: &str, name: &str, seq: u64) -> Received {
        let envelope = Envelope {
            name: name.into(),
            source: source.into(),
            session: "s".into(),
            seq,
            time: 0.0,
            attrs: None,
        };
        let array = ArrayBuffer::from_owned(ndarray::Array1::from_elem(4, seq as u8));
        let frames: Vec<Bytes> = encode(envelope, vec![(name.to_owned(), array)], Compression::Raw)
            .unwrap()
            .frames;
        Received {
            record: decode(&frames, &Limits::default()).unwrap(),
            frames,
            received_at: SystemTime::now(),
            claimed_source: None,
        }
    }

    /// Every entry of `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn manifest_lines(out: &Path) -> usize {
        fs::read_to_string(out.join(MANIFEST))
            .unwrap()
            .lines()
            .count()
    }

    /// A process id that no process has now: a child's, after it ended and was waited for.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn assert_unsafe_path(result: Result<(), SinkError>, path: &Path, found: &str) {
        match result {
            Err(SinkError::UnsafePath {
                path: p,
                expected,
                found: f,
            }) => {
                assert_eq!(
                    (p.as_path(), expected, f.as_str()),
                    (path, "a directory", found)
                );
            }
            other => panic!("expected UnsafePath for {}, got {other:?}", path.display()),
        }
    }

    #[test]
    fn a_linked_source_directory_is_not_followed() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let source = DiskSink::path_component("evil/..").0;
        symlink(elsewhere.path(), out.path().join(&source)).unwrap();
        let sink = DiskSink::new(out.path()).unwrap();

        let result = sink.write(&record("evil/..", "x", 0));
        assert_unsafe_path(result, &out.path().join(&source), "a symbolic link");
        sink.write(&record("good", "x", 0)).unwrap();
        let error = sink
            .write(&record("evil/..", "x", 1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected a directory, found a symbolic link"),
            "{error}"
        );

        assert!(entries(elsewhere.path()).is_empty());
        assert!(out.path().join("good/x/0.npy").is_file());
        assert_eq!(manifest_lines(out.path()), 1);
    }

    #[test]
    fn a_linked_name_directory_is_not_followed() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::create_dir(out.path().join("src")).unwrap();
        symlink(elsewhere.path(), out.path().join("src/x")).unwrap();
        let sink = DiskSink::new(out.path()).unwrap();

        let result = sink.write(&record("src", "x", 0));
        assert_unsafe_path(result, &out.path().join("src/x"), "a symbolic link");
        sink.write(&record("src", "y", 0)).unwrap();

        assert!(entries(elsewhere.path()).is_empty());
        assert!(out.path().join("src/y/0.npy").is_file());
        assert_eq!(manifest_lines(out.path()), 1);
    }

    #[test]
    fn a_directory_replaced_by_a_link_fails_the_records_after() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let sink = DiskSink::new(out.path()).unwrap();
        sink.write(&record("src", "x", 0)).unwrap();
        fs::rename(out.path().join("src"), out.path().join("moved")).unwrap();
        symlink(elsewhere.path(), out.path().join("src")).unwrap();

        let result = sink.write(&record("src", "x", 1));
        assert_unsafe_path(result, &out.path().join("src"), "a symbolic link");
        assert!(entries(elsewhere.path()).is_empty());
    }

    #[test]
    fn a_dangling_link_or_a_file_where_a_directory_is_expected_fails_the_record() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(out.path().join("plain"), b"not a directory").unwrap();
        symlink(
            elsewhere.path().join("missing"),
            out.path().join("dangling"),
        )
        .unwrap();
        let sink = DiskSink::new(out.path()).unwrap();

        let result = sink.write(&record("plain", "x", 0));
        assert_unsafe_path(result, &out.path().join("plain"), "a regular file");
        let result = sink.write(&record("dangling", "x", 0));
        assert_unsafe_path(result, &out.path().join("dangling"), "a symbolic link");

        assert!(entries(elsewhere.path()).is_empty());
        assert_eq!(
            fs::read(out.path().join("plain")).unwrap(),
            b"not a directory"
        );
    }

    #[test]
    fn a_linked_manifest_stops_the_start_and_is_not_written() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("manifest.jsonl");
        symlink(&target, out.path().join(MANIFEST)).unwrap();

        // Dangling: the link's target is not created.
        let error = DiskSink::new(out.path()).err().expect("a linked manifest");
        assert!(
            matches!(&error, SinkError::UnsafePath { found, .. } if found == "a symbolic link"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("expected a regular file"),
            "{error}"
        );
        assert!(entries(elsewhere.path()).is_empty());

        // To an existing file: the file is left as it is.
        fs::write(&target, b"theirs\n").unwrap();
        assert!(DiskSink::new(out.path()).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"theirs\n");
    }

    #[test]
    fn a_hard_linked_manifest_or_a_named_pipe_stops_the_start() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let theirs = elsewhere.path().join("theirs");
        fs::write(&theirs, b"theirs\n").unwrap();
        fs::hard_link(&theirs, out.path().join(MANIFEST)).unwrap();
        let error = DiskSink::new(out.path())
            .err()
            .expect("a hard-linked manifest");
        assert!(
            error
                .to_string()
                .contains("expected a regular file of one link, found a regular file of 2 links"),
            "{error}"
        );
        assert_eq!(fs::read(&theirs).unwrap(), b"theirs\n");

        // A named pipe with no reader would block a plain open for writing.
        let out = tempfile::tempdir().unwrap();
        let fifo = out.path().join(MANIFEST);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let error = DiskSink::new(out.path()).err().expect("a named pipe");
        assert!(
            matches!(&error, SinkError::UnsafePath { found, .. } if found == "a named pipe"),
            "{error:?}"
        );
    }

    #[test]
    fn a_manifest_replaced_by_a_link_after_the_start_is_not_written_through() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("theirs");
        fs::write(&target, b"").unwrap();
        let sink = DiskSink::new(out.path()).unwrap();
        fs::remove_file(out.path().join(MANIFEST)).unwrap();
        symlink(&target, out.path().join(MANIFEST)).unwrap();

        sink.write(&record("src", "x", 0)).unwrap();
        sink.finish().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"");
        assert!(out.path().join("src/x/0.npy").is_file());
    }

    #[test]
    fn a_link_at_a_record_name_is_kept_and_not_written_through() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("theirs");
        fs::write(&target, b"theirs").unwrap();
        fs::create_dir_all(out.path().join("src/x")).unwrap();
        symlink(&target, out.path().join("src/x/0.npy")).unwrap();
        let sink = DiskSink::new(out.path()).unwrap();

        sink.write(&record("src", "x", 0)).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        assert!(out.path().join("src/x/0.s.npy").is_file());
        assert!(fs::symlink_metadata(out.path().join("src/x/0.npy"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn out_itself_may_be_a_link() {
        let real = tempfile::tempdir().unwrap();
        let links = tempfile::tempdir().unwrap();
        let out = links.path().join("out");
        symlink(real.path(), &out).unwrap();
        let sink = DiskSink::new(&out).unwrap();
        sink.write(&record("src", "x", 0)).unwrap();
        assert!(real.path().join("src/x/0.npy").is_file());
        assert_eq!(manifest_lines(real.path()), 1);
    }

    #[test]
    fn temporary_file_names_are_recognised() {
        assert_eq!(temp_file_pid(".12.npy.tmp-345-6"), Some(345));
        assert_eq!(temp_file_pid(".0.npz.tmp-1-0"), Some(1));
        for other in [
            "12.npy",
            "12.s.npy",
            ".12.npy.tmp-345",
            ".12.npy.tmp-345-",
            ".12.npy.tmp--6",
            ".12.txt.tmp-345-6",
            ".x.npy.tmp-345-6",
            "..npy.tmp-345-6",
            ".12.npy.tmp-34a-6",
            ".12.npy.tmp-345-6x",
            ".12.npy.tmp-99999999999-6",
            "manifest.jsonl",
        ] {
            assert_eq!(temp_file_pid(other), None, "{other}");
        }
    }

    #[test]
    fn a_writer_is_gone_when_its_process_is() {
        assert!(writer_gone(dead_pid(), false));
        assert!(writer_gone(0, false));
        assert!(!writer_gone(std::os::unix::process::parent_id(), false));
        // This process's own id: left by a process before it only if no sink started here yet.
        assert!(writer_gone(std::process::id(), true));
        assert!(!writer_gone(std::process::id(), false));
    }

    #[test]
    fn stale_temporary_files_are_removed_at_start_and_nothing_else() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let dir = out.path().join("src/x");
        fs::create_dir_all(&dir).unwrap();
        let dead = dead_pid();
        let live = std::os::unix::process::parent_id();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let create = |path: &Path, changed: Option<SystemTime>| {
            let file = File::create(path).unwrap();
            if let Some(changed) = changed {
                file.set_modified(changed).unwrap();
            }
        };
        // Stale: a dead writer; a live process id on a file unchanged for an hour.
        create(&dir.join(format!(".3.npy.tmp-{dead}-0")), None);
        create(&dir.join(format!(".4.npz.tmp-{live}-7")), Some(hour_ago));
        // Kept: a record, a live writer's recent file, names not of the pattern, the manifest.
        create(&dir.join("3.npy"), None);
        create(&dir.join(format!(".5.npy.tmp-{live}-1")), None);
        create(&dir.join(format!(".6.npy.tmp-{dead}")), None);
        create(&dir.join(format!("6.npy.tmp-{dead}-0")), None);
        // Not a regular file: kept.
        fs::create_dir(dir.join(format!(".7.npy.tmp-{dead}-0"))).unwrap();
        // Reached only through a link: kept.
        fs::create_dir(elsewhere.path().join("x")).unwrap();
        let theirs = elsewhere.path().join(format!("x/.8.npy.tmp-{dead}-0"));
        create(&theirs, None);
        symlink(elsewhere.path(), out.path().join("linked")).unwrap();
        symlink(elsewhere.path().join("x"), out.path().join("src/linked")).unwrap();

        let sink = DiskSink::new(out.path()).unwrap();
        assert_eq!(sink.stale_temp_files_removed(), 2);
        assert_eq!(sink.report()["stale_temp_files_removed"], 2);
        let mut kept = vec![
            "3.npy".to_owned(),
            format!(".5.npy.tmp-{live}-1"),
            format!(".6.npy.tmp-{dead}"),
            format!("6.npy.tmp-{dead}-0"),
            format!(".7.npy.tmp-{dead}-0"),
        ];
        kept.sort();
        assert_eq!(entries(&dir), kept);
        assert!(theirs.is_file());
        assert_eq!(entries(out.path()), ["linked", "manifest.jsonl", "src"]);

        // The record file already there is not replaced: the next one of seq 3 lands beside it.
        sink.write(&record("src", "x", 3)).unwrap();
        assert!(dir.join("3.s.npy").is_file());
        assert_eq!(fs::metadata(dir.join("3.npy")).unwrap().len(), 0);
    }
}
