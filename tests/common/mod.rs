//! Helpers shared by the integration tests (`tests/integration/`): the golden `.frames` file
//! format, logical-order byte dumps of decoded arrays, raw one-array messages and the records a
//! sink receives, waiting for a condition with a timeout, the per-test watchdog, sinks that
//! note or check what they see, reading an output directory and its manifest, and the length of
//! a zstd frame header.

pub mod block_frames;
mod watchdog;

pub use watchdog::watchdog;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndarray::Array1;
use ndbridge::collector::{Received, Sink, SinkError};
use ndbridge::wire::{encode, ArrayBuffer, Compression, DecodedArray, DynArray, Envelope};
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::Value;

/// Reads a `.frames` file: frames, each an 8-byte little-endian length and its bytes.
pub fn read_frames(path: &Path) -> Vec<Bytes> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
        frames.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    frames
}

/// The array's elements in C order, little-endian: the layout of the golden `.bin` files.
pub fn c_order_le_bytes(array: &DecodedArray) -> Vec<u8> {
    const { assert!(cfg!(target_endian = "little")) };
    macro_rules! dump {
        ($a:expr) => {
            $a.iter()
                .flat_map(|x| bytemuck::bytes_of(x).to_vec())
                .collect()
        };
    }
    match array.to_dyn().unwrap() {
        DynArray::Bool(a) => dump!(a),
        DynArray::I8(a) => dump!(a),
        DynArray::I16(a) => dump!(a),
        DynArray::I32(a) => dump!(a),
        DynArray::I64(a) => dump!(a),
        DynArray::U8(a) => dump!(a),
        DynArray::U16(a) => dump!(a),
        DynArray::U32(a) => dump!(a),
        DynArray::U64(a) => dump!(a),
        DynArray::F16(a) => dump!(a),
        DynArray::F32(a) => dump!(a),
        DynArray::F64(a) => dump!(a),
        DynArray::C64(a) => dump!(a),
        DynArray::C128(a) => dump!(a),
    }
}

/// Polls `done` every 10 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sink that takes `delay` per record (a collector that falls behind) and notes
/// `note(record)` for each.
pub struct NotingSink<T> {
    delay: Duration,
    note: fn(&Received) -> T,
    notes: Mutex<Vec<T>>,
}

impl<T: Clone> NotingSink<T> {
    /// A sink that sleeps `delay` per record and notes `note(record)`.
    pub fn new(delay: Duration, note: fn(&Received) -> T) -> Self {
        NotingSink {
            delay,
            note,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// What was noted so far, in order.
    pub fn notes(&self) -> Vec<T> {
        self.notes.lock().unwrap().clone()
    }

    /// How many records went through.
    pub fn count(&self) -> usize {
        self.notes.lock().unwrap().len()
    }
}

impl<T: Send> Sink for NotingSink<T> {
    fn name(&self) -> &str {
        "noting"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        std::thread::sleep(self.delay);
        let note = (self.note)(message);
        self.notes.lock().unwrap().push(note);
        Ok(())
    }
}

/// The length of a zstd frame's header (RFC 8878 3.1.1.1: magic number, descriptor, window
/// descriptor, dictionary id, content size): where its first block header starts.
pub fn zstd_frame_header_len(frame: &[u8]) -> usize {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 3)];
    5 + usize::from(!single_segment) + dictionary_id + content_size
}

/// The frames of a raw message of one array named like the record, with time 0.
pub fn one_array_message(
    name: &str,
    source: &str,
    session: &str,
    seq: u64,
    array: ArrayBuffer,
) -> Vec<Bytes> {
    let envelope = Envelope {
        name: name.into(),
        source: source.into(),
        session: session.into(),
        seq,
        time: 0.0,
        attrs: None,
    };
    encode(envelope, vec![(name.to_owned(), array)], Compression::Raw)
        .unwrap()
        .frames
}

/// A decoded record of one array named like the record, as a sink receives it.
pub fn received(name: &str, source: &str, session: &str, seq: u64, array: ArrayBuffer) -> Received {
    let frames = one_array_message(name, source, session, seq, array);
    Received {
        record: ndbridge::wire::decode(&frames, &ndbridge::wire::Limits::default()).unwrap(),
        frames,
        received_at: std::time::SystemTime::now(),
        claimed_source: None,
    }
}

/// The array that publisher `p` sends as message `seq` to a [`SlowSink`]: first element the
/// seq, the rest `p`.
pub fn block(p: usize, seq: u64, len: usize) -> Array1<f64> {
    let mut a = Array1::from_elem(len, p as f64);
    a[0] = seq as f64;
    a
}

/// A sink that takes `delay` per record, counts the records and checks each one's content
/// against [`block`]: the source ends in `-<p>`, the array is `[seq, p, ..., p]` as f64.
pub struct SlowSink {
    delay: Duration,
    /// Every `(source, seq)` seen.
    pub seen: Mutex<HashSet<(String, u64)>>,
    /// Records whose content was not [`block`]'s, or that came twice.
    pub bad: AtomicU64,
}

impl SlowSink {
    /// A sink that sleeps `delay` per record.
    pub fn new(delay: Duration) -> SlowSink {
        SlowSink {
            delay,
            seen: Mutex::default(),
            bad: AtomicU64::new(0),
        }
    }

    /// How many distinct records went through.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        std::thread::sleep(self.delay);
        let h = &message.record.header;
        let a = message.record.arrays[0].view::<f64>().unwrap();
        let p: f64 = h
            .source
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1.0);
        if a[[0]] != h.seq as f64 || a.iter().skip(1).any(|&x| x != p) {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
        if !self.seen.lock().unwrap().insert((h.source.clone(), h.seq)) {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The record lines of `out/manifest.jsonl` (not the lines that end sessions or keep refusals);
/// fails the test when there is no manifest.
pub fn manifest(out: &Path) -> Vec<Value> {
    manifest_lines(out, false, |line| line.get("path").is_some())
}

/// The lines of `out/manifest.jsonl` that end a session (`"end": true`).
pub fn manifest_ends(out: &Path) -> Vec<Value> {
    manifest_lines(out, false, |line| line["end"] == true)
}

/// The record lines of `out/manifest.jsonl`, none while it does not exist (a collector still
/// starting).
pub fn manifest_so_far(out: &Path) -> Vec<Value> {
    manifest_lines(out, true, |line| line.get("end").is_none())
}

/// The lines of `out/manifest.jsonl` that `keep` keeps; none when there is no manifest and
/// `missing_ok`, else that fails the test.
fn manifest_lines(out: &Path, missing_ok: bool, keep: fn(&Value) -> bool) -> Vec<Value> {
    let text = match std::fs::read_to_string(out.join("manifest.jsonl")) {
        Ok(text) => text,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("{}: {e}", out.join("manifest.jsonl").display()),
    };
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(keep)
        .collect()
}

/// Every path under `dir`, depth first, without following links; fails the test on a link.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(!meta.file_type().is_symlink(), "link {}", path.display());
        if meta.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// The configuration of a property test of `cases` cases. The cases it has failed on are kept
/// next to its source file (`tests/integration/<module>.proptest-regressions`, committed) and
/// replayed before any new case. Proptest's default would look for a `lib.rs` or `main.rs`
/// above the source file, find `tests/integration/main.rs`, and keep them in
/// `tests/proptest-regressions/<module>.txt` instead.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Mounts a tmpfs of `bytes` at `dir`; unmounts it when dropped.
pub struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    pub fn mount(dir: &'a Path, bytes: u64) -> Tmpfs<'a> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs (the tests run as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

/// `ndbridge collect` on an ephemeral loopback port (`--print-endpoints`, no stats lines), its
/// standard error written to a file; killed if the test fails before stopping it.
pub struct CollectorProcess {
    child: std::process::Child,
    log: PathBuf,
    /// The input endpoint it bound.
    pub endpoint: String,
    /// The forward endpoint it bound, with `--forward`.
    pub forward: Option<String>,
}

impl CollectorProcess {
    /// Starts `ndbridge collect` with `args` besides, its standard error to `log`, and waits
    /// for the endpoints it prints once listening.
    pub fn start(args: &[&std::ffi::OsStr], log: &Path) -> CollectorProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ndbridge"))
            .args([
                "collect",
                "--bind",
                "tcp://127.0.0.1:*",
                "--print-endpoints",
            ])
            .args(["--stats-every", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting ndbridge collect");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let endpoints: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.wait();
            panic!(
                "no endpoints line from ndbridge collect ({e}: {line:?}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let endpoint = endpoints["input"][0].as_str().unwrap().to_owned();
        CollectorProcess {
            child,
            log: log.to_owned(),
            endpoint,
            forward: endpoints["forward"].as_str().map(str::to_owned),
        }
    }

    /// What it has written to its standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// The most resident memory the process has had, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status within 30 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the collector did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port for collectors that are restarted on it: free now, and below Linux's
/// ephemeral range (32768 and up), so that no outgoing connection takes it as its own port while
/// nothing listens there. A client reconnecting to a port in that range can be given that very
/// port and connect to itself, and the restarted collector's bind then fails.
pub fn restart_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 10_000) as u16;
    for _ in 0..10_000 {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 29999")
}

/// A relay on loopback that keeps a copy of every byte it passes, in both directions: what a
/// capture of the link would show. It accepts connections, each relayed to `to` (`HOST:PORT`),
/// until dropped.
pub struct CaptureRelay {
    /// The address to connect to instead of `to`, as `tcp://127.0.0.1:PORT`.
    pub endpoint: String,
    seen: std::sync::Arc<Mutex<Vec<u8>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CaptureRelay {
    /// Starts relaying to `to`.
    pub fn start(to: &str) -> CaptureRelay {
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (to, shared, stopping) = (to.to_owned(), Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(&to) else {
                    continue;
                };
                for (from, into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let seen = Arc::clone(&shared);
                    std::thread::spawn(move || relay_copy(from, into, &seen));
                }
            }
        });
        CaptureRelay {
            endpoint,
            seen,
            stop,
        }
    }

    /// Whether `pattern` appears in what crossed so far (something must have crossed).
    pub fn saw(&self, pattern: &[u8]) -> bool {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty(), "nothing crossed the relay");
        seen.windows(pattern.len()).any(|w| w == pattern)
    }

    /// Bytes that crossed so far.
    pub fn bytes(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for CaptureRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `into` until either end closes, keeping a copy in `seen`.
fn relay_copy(mut from: std::net::TcpStream, mut into: std::net::TcpStream, seen: &Mutex<Vec<u8>>) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Write);
}

/// An example program built by `cargo build --all-targets` (or `--examples`), next to this test
/// binary's directory; `None` when it has not been built.
pub fn example(name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/integration-<hash> -> target/<profile>/examples/<name>
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("examples").join(name));
        }
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug/examples")
            .join(name),
    );
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: examples/{name}.rs is not built (run `cargo build --examples` first)");
    }
    found
}
