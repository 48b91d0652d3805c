//! The disk sink: each record becomes `<out>/<source>/<name>/<seq>.npy` (one array) or `.npz`
//! (several), written under a temporary name and moved into place when complete, never replacing
//! a file, plus one JSON line per record in `<out>/manifest.jsonl`. Names from the network are
//! escaped so that no name can reach outside `<out>`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{Received, Sink, SinkError};
use crate::npy::{write_npy, write_npz};

/// Longest path component written, in bytes; longer names are cut and given a hash suffix.
const MAX_COMPONENT: usize = 120;

/// Most files kept of one record name and sequence number (see [`DiskSink::place`]).
const MAX_NAME_ATTEMPTS: u64 = 1000;

/// Turns a name from the network into one safe path component.
///
/// Letters, digits and `_ - . : + = @ ,` are kept; every other byte (`/`, `\`, NUL, spaces,
/// non-ASCII, ...) becomes `%XX`, as does a leading `.` (so `.`, `..` and hidden names cannot
/// occur); the empty name becomes `%`. Names longer than 120 bytes are cut and suffixed with a
/// hash of the whole name. (For Unix file systems: `:` is kept.)
/// Returns the component and whether anything was changed.
///
/// ```
/// use ndbridge::collector::sink::disk::path_component;
///
/// assert_eq!(path_component("temperature"), ("temperature".to_owned(), false));
/// assert_eq!(path_component("../etc/passwd").0, "%2E.%2Fetc%2Fpasswd");
/// assert_eq!(path_component("/abs").0, "%2Fabs");
/// assert!(path_component(&"x".repeat(1000)).0.len() <= 120);
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

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes every record under one output directory.
pub struct DiskSink {
    out: PathBuf,
    manifest: Mutex<File>,
    escaped_names: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    temp_counter: AtomicU64,
}

impl DiskSink {
    /// Creates `out` if needed and opens `out/manifest.jsonl` for appending.
    pub fn new(out: impl Into<PathBuf>) -> Result<DiskSink, SinkError> {
        let out = out.into();
        fs::create_dir_all(&out).map_err(io_error(&out))?;
        let manifest_path = out.join("manifest.jsonl");
        let manifest = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&manifest_path)
            .map_err(io_error(&manifest_path))?;
        Ok(DiskSink {
            out,
            manifest: Mutex::new(manifest),
            escaped_names: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
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

    fn component(&self, name: &str) -> String {
        let (component, changed) = path_component(name);
        if changed {
            self.escaped_names.fetch_add(1, Ordering::Relaxed);
        }
        component
    }

    /// The directory name of a source: like [`path_component`], and never the manifest's own
    /// name.
    fn source_component(&self, source: &str) -> String {
        let component = self.component(source);
        if component == "manifest.jsonl" {
            self.escaped_names.fetch_add(1, Ordering::Relaxed);
            "manifest%2Ejsonl".to_owned()
        } else {
            component
        }
    }

    /// Creates a new temporary file in `dir`: `.<seq>.<ext>.tmp-<pid>-<n>`, never one that
    /// exists (another collector writing to the same directory can have the same process id,
    /// in another container, and the same count).
    fn create_temp(&self, dir: &Path, seq: u64, ext: &str) -> Result<(PathBuf, File), SinkError> {
        loop {
            let temp = dir.join(format!(
                ".{seq}.{ext}.tmp-{}-{}",
                std::process::id(),
                self.temp_counter.fetch_add(1, Ordering::Relaxed)
            ));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&temp)(e)),
            }
        }
    }

    /// Moves a finished temporary file to its final name, never replacing a file: the first of
    /// `<seq>.<ext>`, `<seq>.<session>.<ext>`, `<seq>.<session>.1.<ext>`, ... that is free. Each
    /// name is taken with a hard link, which fails if the name exists, so two writers (threads,
    /// or collectors sharing the directory) can never take the same one; on a file system
    /// without hard links, by a rename once the name is seen free. A publisher that resends a
    /// sequence number thus keeps both files, and the manifest has a line for each.
    fn place(
        &self,
        temp: &Path,
        dir: &Path,
        seq: u64,
        session: &str,
        ext: &str,
    ) -> std::io::Result<PathBuf> {
        let (session, _) = path_component(session);
        for attempt in 0..MAX_NAME_ATTEMPTS {
            let name = match attempt {
                0 => format!("{seq}.{ext}"),
                1 => format!("{seq}.{session}.{ext}"),
                n => format!("{seq}.{session}.{}.{ext}", n - 1),
            };
            let path = dir.join(name);
            match fs::hard_link(temp, &path) {
                Ok(()) => {
                    // The file is in place: a temporary name left behind is only clutter.
                    if let Err(e) = fs::remove_file(temp) {
                        tracing::warn!("disk sink: cannot remove {}: {e}", temp.display());
                    }
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) if !path.exists() => {
                    // A file system without hard links (FAT, some network mounts): a rename
                    // after checking the name, which another writer could take in between.
                    fs::rename(temp, &path)?;
                    return Ok(path);
                }
                Err(_) => continue,
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

impl Sink for DiskSink {
    fn name(&self) -> &str {
        "disk"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let header = &message.record.header;
        let dir = self
            .out
            .join(self.source_component(&header.source))
            .join(self.component(&header.name));
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let arrays = &message.record.arrays;
        let single = arrays.len() == 1;
        let ext = if single { "npy" } else { "npz" };
        let (temp, file) = self.create_temp(&dir, header.seq, ext)?;
        let written = (|| -> std::io::Result<()> {
            if single {
                let mut w = BufWriter::with_capacity(1 << 16, file);
                write_npy(&mut w, &arrays[0])?;
                w.into_inner().map_err(|e| e.into_error())?;
            } else {
                let escaped = &self.escaped_names;
                write_npz(BufWriter::with_capacity(1 << 16, file), arrays, |name| {
                    let (member, changed) = path_component(name);
                    if changed {
                        escaped.fetch_add(1, Ordering::Relaxed);
                    }
                    member
                })?
                .into_inner()
                .map_err(|e| e.into_error())?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error(&temp)(e));
        }
        let path = match self.place(&temp, &dir, header.seq, &header.session, ext) {
            Ok(path) => path,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(io_error(&dir)(e));
            }
        };
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(message.record.raw_bytes(), Ordering::Relaxed);

        let relative = path.strip_prefix(&self.out).unwrap_or(&path);
        let line = json!({
            "source": header.source,
            "session": header.session,
            "seq": header.seq,
            "name": header.name,
            "time": header.time,
            "arrays": arrays.iter().map(|a| {
                let m = a.meta();
                json!({
                    "name": m.name, "dtype": m.dtype.to_string(), "shape": m.shape,
                    "order": if m.order == crate::wire::Order::C { "C" } else { "F" },
                    "codec": m.codec.as_str(), "shuffle": m.is_shuffled(),
                    "wire_bytes": a.wire_len(), "raw_bytes": m.nbytes,
                })
            }).collect::<Vec<_>>(),
            "attrs": header.attrs.clone().map(Value::Object).unwrap_or(Value::Null),
            "path": relative.to_string_lossy(),
        });
        let mut text = serde_json::to_vec(&line).expect("JSON values serialize");
        text.push(b'\n');
        let manifest_path = self.out.join("manifest.jsonl");
        self.manifest
            .lock()
            .expect("manifest lock")
            .write_all(&text)
            .map_err(io_error(&manifest_path))?;
        Ok(())
    }

    fn finish(&self) -> Result<(), SinkError> {
        let manifest_path = self.out.join("manifest.jsonl");
        self.manifest
            .lock()
            .expect("manifest lock")
            .sync_data()
            .map_err(io_error(&manifest_path))
    }

    fn report(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("out".into(), json!(self.out.to_string_lossy()));
        m.insert("files".into(), json!(self.files.load(Ordering::Relaxed)));
        m.insert("bytes".into(), json!(self.bytes.load(Ordering::Relaxed)));
        m.insert("escaped_names".into(), json!(self.escaped_names()));
        m
    }
}
