//! Publisher -> collector over tcp loopback and ipc, in-process, on ephemeral endpoints: every
//! message arrives bit-exact, lands on disk as files numpy opens (`.npy`, or `.npz` for records
//! of several arrays), and is counted; a custom sink sees raw frames without copies.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use ndarray::{Array1, Array2, Array3, ArrayD};
use ndarray_npy::{NpzReader, ReadNpyExt};
use ndbridge::collector::{Collector, DiskSink, Received, Sink, SinkError};
use ndbridge::{ArrayBuffer, Compression, Publisher};

use crate::common::{manifest, wait_until, watchdog};

/// A value from a message's position: lets the receiver check every element.
fn value(publisher: usize, message: usize, i: usize) -> f64 {
    (publisher * 1_000_000 + message * 1000 + i) as f64 * 0.5
}

#[test]
fn publishers_to_disk_over_tcp_bit_exact() {
    let _watchdog = watchdog("publishers to disk over tcp bit", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .sink(DiskSink::new(out.path()).unwrap())
        .start()
        .unwrap();
    let endpoint = collector.endpoint().to_owned();
    let publishers = 4;
    let messages = 50;
    std::thread::scope(|s| {
        for p in 0..publishers {
            let endpoint = endpoint.clone();
            s.spawn(move || {
                let publisher = Publisher::builder()
                    .connect(endpoint)
                    .source(format!("worker-{p}"))
                    .compression(if p % 2 == 0 {
                        Compression::Raw
                    } else {
                        Compression::auto()
                    })
                    .build()
                    .unwrap();
                for m in 0..messages {
                    let a = Array2::from_shape_fn((20, 30), |(i, j)| value(p, m, i * 30 + j));
                    publisher.send_owned("field", a).unwrap();
                }
                publisher.close(Duration::from_secs(10)).unwrap();
            });
        }
    });
    wait_until("all messages", Duration::from_secs(20), || {
        collector.stats().stored == (publishers * messages) as u64
    });
    let summary = collector.stop();
    assert_eq!(summary.stats.gaps, 0);
    assert_eq!(summary.stats.rejected, 0);
    assert_eq!(summary.stats.sources.len(), publishers);

    for p in 0..publishers {
        for m in 0..messages {
            let path = out.path().join(format!("worker-{p}/field/{m}.npy"));
            let a = Array2::<f64>::read_npy(File::open(&path).unwrap()).unwrap();
            let expected = Array2::from_shape_fn((20, 30), |(i, j)| value(p, m, i * 30 + j));
            assert_eq!(a, expected, "{}", path.display());
        }
    }
    let lines = manifest(out.path());
    assert_eq!(lines.len(), publishers * messages);
    assert!(lines.iter().all(|l| l["arrays"][0]["dtype"] == "<f8"));
}

#[test]
fn records_with_several_arrays_become_npz_over_ipc() {
    let _watchdog = watchdog(
        "records with several arrays become npz",
        Duration::from_secs(60),
    );
    let out = tempfile::tempdir().unwrap();
    let socket_dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/collector.sock", socket_dir.path().display());
    let collector = Collector::builder()
        .bind(&endpoint)
        .sink(DiskSink::new(out.path()).unwrap())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(&endpoint)
        .source("sim")
        .build()
        .unwrap();
    let u = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
    let mask = Array1::from_iter((0..7).map(|i| i % 2 == 0));
    let attrs = serde_json::json!({"step": 3, "units": "m/s"});
    publisher
        .send_record(
            "state",
            [
                ("u", ArrayBuffer::from_array(&u.view().reversed_axes())),
                ("mask", ArrayBuffer::from_owned(mask.clone())),
            ],
            attrs.as_object().cloned(),
        )
        .unwrap();
    publisher.flush(Duration::from_secs(10)).unwrap();
    wait_until("the record", Duration::from_secs(10), || {
        collector.stats().stored == 1
    });
    collector.stop();

    let mut npz = NpzReader::new(File::open(out.path().join("sim/state/0.npz")).unwrap()).unwrap();
    let got_u: ArrayD<f32> = npz.by_name("u.npy").unwrap();
    assert_eq!(got_u, u.view().reversed_axes().into_dyn());
    let got_mask: ArrayD<bool> = npz.by_name("mask.npy").unwrap();
    assert_eq!(got_mask, mask.into_dyn());
    let line = &manifest(out.path())[0];
    assert_eq!(line["attrs"]["units"], "m/s");
    assert_eq!(line["path"], "sim/state/0.npz");
    assert_eq!(line["arrays"][0]["order"], "F");
}

/// A sink that records what it saw, to check custom sinks and zero-copy decoding.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<(String, u64, bool)>>,
}

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let array = &message.record.arrays[0];
        // A raw frame's decoded bytes are the received frame itself: no copy on the way.
        let same_memory = array.bytes().as_ptr() == message.frames[1].as_ptr();
        self.seen.lock().unwrap().push((
            message.record.header.name.clone(),
            message.record.header.seq,
            same_memory,
        ));
        Ok(())
    }
}

#[test]
fn custom_sink_sees_raw_frames_without_copies_and_bad_input_is_counted() {
    let _watchdog = watchdog(
        "custom sink sees raw frames without",
        Duration::from_secs(60),
    );
    let recorder = Arc::new(Recorder::default());
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .shared_sink(recorder.clone())
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::PUSH).unwrap();
    raw.connect(collector.endpoint()).unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    publisher
        .send_owned("before", Array1::<f64>::zeros(100_000))
        .unwrap();
    publisher.flush(Duration::from_secs(5)).unwrap();
    raw.send_multipart([&b"not json"[..]], 0).unwrap();
    raw.send_multipart([&br#"{"v": 9}"#[..], b"x"], 0).unwrap();
    publisher
        .send_owned("after", Array1::<f64>::ones(100_000))
        .unwrap();
    publisher.flush(Duration::from_secs(5)).unwrap();
    wait_until("two stored, two rejected", Duration::from_secs(10), || {
        let s = collector.stats();
        s.stored == 2 && s.rejected == 2
    });
    let summary = collector.stop();
    assert_eq!(summary.stats.errors["not_json"], 1);
    assert_eq!(summary.stats.errors["unsupported_version"], 1);
    let seen = recorder.seen.lock().unwrap();
    let names: Vec<_> = seen.iter().map(|s| s.0.as_str()).collect();
    assert!(names.contains(&"before") && names.contains(&"after"));
    assert!(
        seen.iter().all(|s| s.2),
        "raw arrays must borrow the received frame"
    );
}
