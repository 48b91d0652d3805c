//! Many publishers, mixed dtypes, sizes and codecs into one collector, over tcp and ipc: every
//! message arrives bit-exact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::ArrayD;
use ndbridge::collector::{Collector, Received, Sink, SinkError};
use ndbridge::{ArrayBuffer, Compression, Publisher};
use serde_json::Value;

use crate::common::watchdog;

/// The element types the stress test draws from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    F64,
    F32,
    I32,
    U8,
    Bool,
    C64,
    C128,
}

const KINDS: [Kind; 7] = [
    Kind::F64,
    Kind::F32,
    Kind::I32,
    Kind::U8,
    Kind::Bool,
    Kind::C64,
    Kind::C128,
];

impl Kind {
    fn itemsize(self) -> usize {
        match self {
            Kind::U8 | Kind::Bool => 1,
            Kind::F32 | Kind::I32 => 4,
            Kind::F64 | Kind::C64 => 8,
            Kind::C128 => 16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::F64 => "f64",
            Kind::F32 => "f32",
            Kind::I32 => "i32",
            Kind::U8 => "u8",
            Kind::Bool => "bool",
            Kind::C64 => "c64",
            Kind::C128 => "c128",
        }
    }
}

/// One array of a planned message: its bytes in memory order, and how to lay them out.
struct PlannedArray {
    name: String,
    kind: Kind,
    shape: Vec<usize>,
    fortran: bool,
    bytes: Vec<u8>,
}

impl PlannedArray {
    /// The array as a typed, owned ndarray handed over without a copy, like `send_owned`.
    fn buffer(&self) -> ArrayBuffer {
        fn owned<T>(shape: &[usize], fortran: bool, elements: Vec<T>) -> ArrayBuffer
        where
            T: ndbridge::wire::Element,
        {
            let shape = ndarray::IxDyn(shape);
            let array = if fortran {
                ArrayD::from_shape_vec(ndarray::ShapeBuilder::f(shape), elements)
            } else {
                ArrayD::from_shape_vec(shape, elements)
            };
            ArrayBuffer::from_owned(array.expect("planned shapes match their bytes"))
        }
        fn pod<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
            let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            v
        }
        let (shape, f, b) = (&self.shape[..], self.fortran, &self.bytes[..]);
        match self.kind {
            Kind::F64 => owned(shape, f, pod::<f64>(b)),
            Kind::F32 => owned(shape, f, pod::<f32>(b)),
            Kind::I32 => owned(shape, f, pod::<i32>(b)),
            Kind::U8 => owned(shape, f, b.to_vec()),
            Kind::Bool => owned(shape, f, b.iter().map(|&x| x == 1).collect::<Vec<bool>>()),
            Kind::C64 => owned(shape, f, pod::<num_complex::Complex<f32>>(b)),
            Kind::C128 => owned(shape, f, pod::<num_complex::Complex<f64>>(b)),
        }
    }
}

/// A message of the stress test: what publisher `p` sends as its message `seq`.
struct Planned {
    name: String,
    arrays: Vec<PlannedArray>,
    attrs: Option<serde_json::Map<String, Value>>,
}

/// Bytes that are either random (zstd cannot shrink them; `auto` sends them raw) or a random
/// 4 KiB block repeated (zstd shrinks them a lot).
fn content(seed: u64, len: usize, compressible: bool, kind: Kind) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    if compressible {
        let block = len.min(4096);
        rng.fill_bytes(&mut bytes[..block]);
        let mut at = block;
        while at < len {
            let n = block.min(len - at);
            bytes.copy_within(0..n, at);
            at += n;
        }
    } else {
        rng.fill_bytes(&mut bytes);
    }
    if kind == Kind::Bool {
        bytes.iter_mut().for_each(|b| *b &= 1);
    }
    bytes
}

/// The content function of the stress test: everything about message `seq` of publisher `p`
/// follows from the pair, so the receiving side can check each message on its own. Sizes run
/// from ~100 B to 64 KiB (log-uniform), with one ~1 MiB message in 97.
fn plan(p: usize, seq: u64) -> Planned {
    let mut rng = crate::synth::SplitMix64::new(((p as u64) << 40) ^ seq);
    let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let kind = KINDS[(unit() * KINDS.len() as f64) as usize];
    let target = if seq % 97 == 13 {
        1 << 20
    } else {
        (100.0 * (unit() * 640f64.ln()).exp()) as usize
    };
    let n = (target / kind.itemsize()).max(1);
    let shape = match (unit() * 3.0) as usize {
        0 => vec![n],
        1 if n >= 8 => {
            let rows = 2 + (unit() * 6.0) as usize;
            vec![rows, n / rows]
        }
        _ if n >= 12 => vec![2, 3, n / 6],
        _ => vec![n],
    };
    let fortran = shape.len() > 1 && unit() < 0.5;
    let compressible = unit() < 0.5;
    let elements: usize = shape.iter().product();
    let seed = ((p as u64) << 40) ^ (seq << 1);
    let main = PlannedArray {
        name: kind.name().to_owned(),
        kind,
        fortran,
        bytes: content(seed, elements * kind.itemsize(), compressible, kind),
        shape,
    };
    if seq % 10 != 5 {
        return Planned {
            name: kind.name().to_owned(),
            arrays: vec![main],
            attrs: None,
        };
    }
    // Every tenth message is a record of two arrays with attributes.
    let aux_len = 1 + (seq as usize % 50);
    let aux = PlannedArray {
        name: "aux".to_owned(),
        kind: Kind::I32,
        shape: vec![aux_len],
        fortran: false,
        bytes: content(seed | 1, aux_len * 4, false, Kind::I32),
    };
    let attrs = serde_json::json!({"publisher": p, "seq": seq, "tag": "ü/../x"});
    Planned {
        name: format!("record-{}", kind.name()),
        arrays: vec![main, aux],
        attrs: attrs.as_object().cloned(),
    }
}

/// A sink that checks every message against [`plan`] instead of storing it.
struct Verifier {
    seen: std::sync::Mutex<Vec<Vec<bool>>>,
    failures: std::sync::Mutex<Vec<String>>,
    checked: std::sync::atomic::AtomicU64,
}

impl Verifier {
    fn new(publishers: usize, messages: u64) -> Verifier {
        Verifier {
            seen: std::sync::Mutex::new(vec![vec![false; messages as usize]; publishers]),
            failures: std::sync::Mutex::default(),
            checked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn check(&self, message: &Received) -> Result<(), String> {
        let h = &message.record.header;
        let p: usize = h
            .source
            .strip_prefix("pub-")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unexpected source {:?}", h.source))?;
        let planned = plan(p, h.seq);
        let at = format!("pub-{p} seq {}", h.seq);
        if h.name != planned.name {
            return Err(format!(
                "{at}: name {:?}, expected {:?}",
                h.name, planned.name
            ));
        }
        if h.attrs != planned.attrs {
            return Err(format!("{at}: attrs {:?}", h.attrs));
        }
        if message.record.arrays.len() != planned.arrays.len() {
            return Err(format!("{at}: {} arrays", message.record.arrays.len()));
        }
        for (got, want) in message.record.arrays.iter().zip(&planned.arrays) {
            let want = want.buffer();
            let meta = got.meta();
            if (meta.dtype, &meta.shape[..], meta.order)
                != (want.dtype(), want.shape(), want.order())
            {
                return Err(format!("{at}: {meta:?} instead of {want:?}"));
            }
            if got.bytes()[..] != want.data()[..] {
                return Err(format!("{at}: array {} differs", meta.name));
            }
        }
        let mut seen = self.seen.lock().unwrap();
        let slot = seen
            .get_mut(p)
            .and_then(|s| s.get_mut(h.seq as usize))
            .ok_or_else(|| format!("{at}: out of range"))?;
        if std::mem::replace(slot, true) {
            return Err(format!("{at}: received twice"));
        }
        Ok(())
    }
}

impl Sink for Verifier {
    fn name(&self) -> &str {
        "verifier"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        if let Err(e) = self.check(message) {
            let mut failures = self.failures.lock().unwrap();
            if failures.len() < 20 {
                failures.push(e);
            }
        }
        self.checked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// 8 publishers x 2000 messages, each publisher with its own codec policy, into one collector
/// at `bind`; every message is checked against [`plan`].
fn stress(bind: &str) {
    const PUBLISHERS: usize = 8;
    const MESSAGES: u64 = 2000;
    let started = Instant::now();
    let verifier = Arc::new(Verifier::new(PUBLISHERS, MESSAGES));
    let collector = Collector::builder()
        .bind(bind)
        .workers(2)
        .shared_sink(verifier.clone())
        .start()
        .unwrap();
    let endpoint = collector.endpoint().to_owned();
    let codecs = [
        Compression::Raw,
        Compression::auto(),
        Compression::zstd(1).with_shuffle(true),
        Compression::zstd(3),
    ];
    // Each publisher hands every message to ZeroMQ (`flush`) and stays connected until the
    // collector has checked everything: over ipc, libzmq can drop the messages in transit to a
    // receiver at its high-water mark when the sending socket closes (see
    // `ipc_publisher_closing_while_the_collector_is_saturated_keeps_its_tail`).
    let publishers: Vec<Publisher> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let endpoint = endpoint.clone();
                s.spawn(move || {
                    let publisher = Publisher::builder()
                        .connect(endpoint)
                        .source(format!("pub-{p}"))
                        .compression(codecs[p % codecs.len()])
                        .queue_bytes(8 << 20)
                        .on_full(ndbridge::FullPolicy::Timeout(Duration::from_secs(30)))
                        .build()
                        .unwrap();
                    for seq in 0..MESSAGES {
                        let planned = plan(p, seq);
                        let arrays = planned
                            .arrays
                            .iter()
                            .map(|a| (a.name.clone(), a.buffer()))
                            .collect::<Vec<_>>();
                        publisher
                            .send_record(&planned.name, arrays, planned.attrs)
                            .unwrap();
                    }
                    publisher.flush(Duration::from_secs(30)).unwrap();
                    publisher
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = PUBLISHERS as u64 * MESSAGES;
    let deadline = Instant::now() + Duration::from_secs(40);
    while verifier.checked.load(std::sync::atomic::Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            let seen = verifier.seen.lock().unwrap();
            let missing: Vec<(usize, usize)> = seen
                .iter()
                .map(|v| v.iter().filter(|x| !**x).count())
                .enumerate()
                .collect();
            panic!(
                "{bind}: {} of {total} checked; missing (publisher, count): {missing:?}",
                verifier.checked.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent: Vec<ndbridge::PublisherStats> = publishers
        .iter()
        .map(|p| p.close(Duration::from_secs(5)).unwrap())
        .collect();
    let summary = collector.stop();
    let failures = verifier.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} mismatches: {failures:#?}",
        failures.len()
    );
    let s = &summary.stats;
    assert_eq!(
        (s.received - s.session_ends, s.stored, s.rejected),
        (total, total, 0)
    );
    assert_eq!((s.gaps, s.duplicates), (0, 0));
    assert!(s.sink_errors.is_empty(), "{:?}", s.sink_errors);
    assert_eq!(s.sources.len(), PUBLISHERS);
    for (p, stats) in sent.iter().enumerate() {
        assert_eq!(
            (stats.sent, stats.dropped, stats.failed),
            (MESSAGES, 0, 0),
            "pub-{p}"
        );
        assert_eq!(s.sources[&format!("pub-{p}")].messages, MESSAGES);
    }
    assert!(verifier.seen.lock().unwrap().iter().flatten().all(|&x| x));
    // Raw publishers send exactly the decoded bytes; compressed ones send fewer.
    assert!(sent[0].wire_bytes > sent[0].raw_bytes);
    assert!(sent[2].wire_bytes < sent[2].raw_bytes);
    eprintln!(
        "{bind}: {total} messages, {:.0} MB decoded, {:.0} MB on the wire in {:.1} s",
        s.raw_bytes as f64 / 1e6,
        s.wire_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn eight_publishers_mixed_dtypes_sizes_and_codecs_arrive_bit_exact_over_tcp() {
    let _watchdog = watchdog("stress over tcp", Duration::from_secs(60));
    stress("tcp://127.0.0.1:*");
}

#[test]
fn eight_publishers_mixed_dtypes_sizes_and_codecs_arrive_bit_exact_over_ipc() {
    let _watchdog = watchdog("stress over ipc", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    stress(&format!("ipc://{}/stress.sock", dir.path().display()));
}
