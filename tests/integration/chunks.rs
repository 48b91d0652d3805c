//! The `zstd-chunks` codec end to end: a publisher that compresses large arrays in parallel
//! chunks, a collector that decodes them bit-exact, a store that keeps them (decoded), and a
//! publisher that never chunks.

use std::sync::Arc;
use std::time::Duration;

use ndarray::Array2;
use ndbridge::collector::{Collector, Received, Sink, StoreSink};
use ndbridge::store::Store;
use ndbridge::wire::{decode, Codec, Compression, Encoder, Envelope, Limits};
use ndbridge::{ArrayBuffer, Chunking, Publisher};

use crate::common::{wait_until, watchdog, NotingSink};

/// A smooth 640 x 640 float64 field (3.1 MiB: four chunks), different for each `seq`.
fn field(seq: u64) -> Array2<f64> {
    Array2::from_shape_fn((640, 640), |(i, j)| {
        seq as f64 + (i as f64 * 0.01).sin() * (j as f64 * 0.02).cos()
    })
}

/// What the collector's sink saw: the array's codec, and whether it equals `field(seq)`.
fn note(r: &Received) -> (Codec, bool) {
    let array = &r.record.arrays[0];
    let expected = field(r.record.header.seq);
    let same = array.view::<f64>().unwrap() == expected.into_dyn().view();
    (array.meta().codec, same)
}

#[test]
fn chunked_arrays_cross_the_collector_bit_exact_and_unchunked_ones_stay_one_frame() {
    let _dog = watchdog("chunks: end to end", Duration::from_secs(60));
    let sink = Arc::new(NotingSink::new(Duration::ZERO, note));
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let zstd = Compression::zstd(1).with_shuffle(true);
    for (chunking, records) in [(Chunking::Always, 3u64), (Chunking::Never, 2)] {
        let publisher = Publisher::builder()
            .connect(collector.endpoint())
            .compression(zstd)
            .chunking(chunking)
            .build()
            .unwrap();
        // Each publisher numbers its records from 0: record `seq` carries `field(seq)`.
        for seq in 0..records {
            publisher.send_owned("u", field(seq)).unwrap();
        }
        publisher.close(Duration::from_secs(20)).unwrap();
    }
    wait_until("5 records", Duration::from_secs(20), || sink.count() == 5);
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, 5);
    let notes = sink.notes();
    let chunked = notes.iter().filter(|n| n.0 == Codec::ZstdChunks).count();
    let whole = notes.iter().filter(|n| n.0 == Codec::Zstd).count();
    assert_eq!((chunked, whole), (3, 2), "{notes:?}");
    assert!(
        notes.iter().all(|n| n.1),
        "every array bit-exact: {notes:?}"
    );
}

#[test]
fn a_store_keeps_chunked_arrays_decoded_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    let mut encoder = Encoder::default();
    for seq in 0..3u64 {
        let envelope = Envelope {
            name: "u".into(),
            source: "w".into(),
            session: "s".into(),
            seq,
            time: 1.0,
            attrs: None,
        };
        let arrays = vec![("u".to_owned(), ArrayBuffer::from_owned(field(seq)))];
        let zstd = Compression::zstd(1).with_shuffle(true);
        let frames = encoder
            .encode_chunked(envelope, arrays, zstd)
            .unwrap()
            .frames;
        let record = decode(&frames, &Limits::default()).unwrap();
        assert_eq!(record.arrays[0].meta().codec, Codec::ZstdChunks);
        let received = Received {
            record,
            frames,
            received_at: std::time::SystemTime::now(),
            claimed_source: None,
        };
        sink.write(&received).unwrap();
    }
    sink.finish().unwrap();
    assert_eq!(sink.report()["arrays_decoded"].as_u64(), Some(3));
    let store = Store::open(&root).unwrap();
    let group = &store.groups()[0];
    let mut reader = store.reader(group).unwrap();
    for seq in 0..3u64 {
        let (_, frames) = reader.message(seq).unwrap();
        let record = decode(&frames, &Limits::default()).unwrap();
        assert_eq!(
            record.arrays[0].view::<f64>().unwrap(),
            field(seq).into_dyn().view()
        );
    }
}
