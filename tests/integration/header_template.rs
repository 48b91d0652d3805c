//! Header templates: a `HeaderWriter` writes exactly `Header::to_json`, and a `HeaderCache`
//! returns exactly what `Header::parse` returns, for streams of headers that share their prefix
//! and suffix and for bytes built to fool a cache that trusted them too much.

use ndbridge::wire::{
    ArrayMeta, Codec, DecodeError, Filter, Header, HeaderCache, HeaderWriter, Limits, Order,
    MAX_TEMPLATE_BYTES,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Map, Value};

fn array(name: &str, shape: Vec<usize>, shuffled: bool) -> ArrayMeta {
    let nbytes = 8 * shape.iter().product::<usize>() as u64;
    ArrayMeta {
        name: name.into(),
        dtype: "<f8".parse().unwrap(),
        shape,
        order: Order::C,
        codec: if shuffled { Codec::Zstd } else { Codec::Raw },
        filters: if shuffled {
            vec![Filter::Shuffle]
        } else {
            vec![]
        },
        nbytes,
    }
}

fn attrs(step: u64) -> Option<Map<String, Value>> {
    // Zeros that serde_json calls equal but writes differently: 0.0, -0.0 and 0.
    let zero = match step {
        0 => json!(0.0),
        1 => json!(-0.0),
        _ => json!(0),
    };
    json!({"dt": 0.01, "seq": 3, "time": 1.5, "z": zero, "nested": {"z": [zero]}})
        .as_object()
        .cloned()
}

/// Headers drawn from small pools, so that a stream repeats prefixes and suffixes often.
fn header() -> impl Strategy<Value = Header> {
    (
        prop::sample::select(vec!["u", "v", "naïve \"q\""]),
        prop::sample::select(vec!["w1", "w2"]),
        prop::sample::select(vec!["s1", "s2"]),
        any::<u64>(),
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.5),
            (0.0f64..2e9),
            (-1e300f64..1e300)
        ],
        0usize..5,
        prop::option::of(0u64..3),
    )
        .prop_map(|(name, source, session, seq, time, layout, step)| Header {
            name: name.into(),
            source: source.into(),
            session: session.into(),
            seq,
            time,
            arrays: match layout {
                0 => vec![array("a", vec![10, 10], false)],
                1 => vec![array("a", vec![10, 11], false)],
                2 => vec![array("a", vec![4], true), array("b", vec![], false)],
                _ => vec![],
            },
            attrs: step.and_then(attrs),
            // Layout 4: a message that ends its session.
            end: layout == 4,
        })
}

/// What a hostile or careless sender might do to a header's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    /// Overwrite one byte.
    Byte(usize, u8),
    /// Replace the `seq` value's text.
    Seq(&'static str),
    /// Replace the `time` value's text.
    Time(&'static str),
    /// Insert text at a position.
    Insert(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => Just(Mutation::None),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        1 => prop::sample::select(vec!["05", "-1", "1.0", "1e3", "18446744073709551616", "", " 7"])
            .prop_map(Mutation::Seq),
        1 => prop::sample::select(vec!["1e400", "01", ".5", "1.", "-", "NaN", "2 ", "1E+2", "-0"])
            .prop_map(Mutation::Time),
        1 => (any::<usize>(), prop::sample::select(vec![" ", ",\"seq\":9", ",\"x\":1", "\\"]))
            .prop_map(|(at, text)| Mutation::Insert(at, text)),
    ]
}

fn replace_value(json: &str, key: &str, text: &str) -> String {
    let start = json.find(key).unwrap() + key.len();
    let end = start + json[start..].find(',').unwrap();
    format!("{}{}{}", &json[..start], text, &json[end..])
}

fn apply(header: &Header, mutation: &Mutation) -> Vec<u8> {
    let mut bytes = header.to_json();
    match mutation {
        Mutation::None => {}
        Mutation::Byte(at, b) => {
            let at = at % bytes.len();
            bytes[at] = *b;
        }
        Mutation::Seq(text) => {
            let json = String::from_utf8(bytes).unwrap();
            bytes = replace_value(&json, ",\"seq\":", text).into_bytes();
        }
        Mutation::Time(text) => {
            let json = String::from_utf8(bytes).unwrap();
            bytes = replace_value(&json, ",\"time\":", text).into_bytes();
        }
        Mutation::Insert(at, text) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, text.bytes());
        }
    }
    bytes
}

/// `Header` equality with `time` compared bit for bit (`-0.0` is not `0.0` here).
fn same(a: &Result<Header, DecodeError>, b: &Result<Header, DecodeError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b && a.time.to_bits() == b.time.to_bits(),
        (a, b) => a == b,
    }
}

proptest! {
    #![proptest_config(crate::common::proptest_config(256))]

    #[test]
    fn the_writer_writes_what_to_json_writes_even_when_only_a_zero_s_sign_changes(stream in prop::collection::vec(header(), 1..40)) {
        let mut writer = HeaderWriter::default();
        for header in &stream {
            prop_assert_eq!(writer.write(header), header.to_json());
        }
    }

    #[test]
    fn the_cache_parses_what_parse_parses(
        stream in prop::collection::vec((header(), mutation()), 1..40),
        tight in any::<bool>(),
    ) {
        // Tight limits reject some headers outright; a cache must reject them too.
        let limits = if tight {
            Limits { max_header_bytes: 200, max_arrays: 1, ..Limits::default() }
        } else {
            Limits::default()
        };
        let mut cache = HeaderCache::new(limits);
        for (header, mutation) in &stream {
            let bytes = apply(header, mutation);
            let cached = cache.parse(&bytes);
            let direct = Header::parse(&bytes, &limits);
            prop_assert!(same(&cached, &direct), "{:?}\n{:?}\n{:?}", String::from_utf8_lossy(&bytes), cached, direct);
        }
    }
}

fn header_json(seq: u64, time: &str, arrays_and_more: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"name":"u","source":"w1","session":"s","seq":{seq},"time":{time}{arrays_and_more}}}"#
    )
    .into_bytes()
}

const ONE_ARRAY: &str =
    r#","arrays":[{"name":"u","dtype":"<f8","shape":[4],"order":"C","codec":"raw","nbytes":32}]"#;

#[test]
fn a_canonical_stream_is_read_through_the_cache() {
    let mut cache = HeaderCache::new(Limits::default());
    for seq in 0..5 {
        let bytes = header_json(seq, "1.25e3", ONE_ARRAY);
        let header = cache.parse(&bytes).unwrap();
        assert_eq!((header.seq, header.time), (seq, 1250.0));
        assert_eq!(header.arrays[0].shape, [4]);
    }
    assert_eq!(cache.hits(), 4);
}

#[test]
fn streams_of_many_publishers_are_read_through_the_cache() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let stream: Vec<Header> = (0..2000)
        .map(|_| header().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut cache = HeaderCache::new(Limits::default());
    for header in &stream {
        let bytes = header.to_json();
        let cached = cache.parse(&bytes);
        let direct = Header::parse(&bytes, &Limits::default());
        assert!(same(&cached, &direct), "{cached:?}\n{direct:?}");
        assert_eq!(cached.unwrap().arrays, header.arrays);
    }
    // 3 names x 2 sources x 2 sessions: 12 prefixes; a miss for each first sight of a prefix,
    // and for each change of layout or attributes under it.
    assert!(cache.hits() > 100, "{} hits", cache.hits());
}

#[test]
fn a_duplicate_seq_key_after_the_arrays_wins_as_in_parse() {
    // The last `seq` is the one that counts. A cache that split this header at its first `seq`
    // and remembered the rest as a constant suffix would report the first.
    let mut cache = HeaderCache::new(Limits::default());
    for seq in 0..3 {
        let bytes = header_json(seq, "1.0", &format!("{ONE_ARRAY},\"seq\":99"));
        let direct = Header::parse(&bytes, &Limits::default());
        assert_eq!(direct.as_ref().unwrap().seq, 99);
        assert_eq!(cache.parse(&bytes), direct);
    }
    assert_eq!(cache.hits(), 0);
}

#[test]
fn seq_and_time_inside_the_attributes_are_not_taken_for_the_headers() {
    let mut cache = HeaderCache::new(Limits::default());
    for seq in 0..3 {
        // Attributes holding `seq` and `time` first, the real fields after them.
        let bytes = format!(
            r#"{{"v":1,"name":"u","source":"w1","session":"s","attrs":{{"a":1,"seq":{seq},"time":2.0}},"seq":7,"time":1.0{ONE_ARRAY}}}"#
        )
        .into_bytes();
        let cached = cache.parse(&bytes).unwrap();
        assert_eq!(cached, Header::parse(&bytes, &Limits::default()).unwrap());
        assert_eq!(cached.seq, 7);
    }
    assert_eq!(cache.hits(), 0);
}

#[test]
fn whitespace_and_unknown_fields_parse_as_without_a_cache() {
    let mut cache = HeaderCache::new(Limits::default());
    let canonical = header_json(1, "1.0", ONE_ARRAY);
    let spaced = String::from_utf8(canonical.clone())
        .unwrap()
        .replace(",\"time\":", ", \"time\": ");
    let extra = header_json(2, "1.0", &format!("{ONE_ARRAY},\"x\":[1,2]"));
    for bytes in [canonical, spaced.into_bytes(), extra] {
        assert_eq!(
            cache.parse(&bytes),
            Header::parse(&bytes, &Limits::default())
        );
    }
}

#[test]
fn long_headers_are_parsed_but_not_remembered() {
    // A peer sending canonical headers with large attributes cannot make the cache hold them.
    let big = "x".repeat(MAX_TEMPLATE_BYTES);
    let mut cache = HeaderCache::new(Limits::default());
    for seq in 0..3 {
        let bytes = header_json(
            seq,
            "1.0",
            &format!("{ONE_ARRAY},\"attrs\":{{\"note\":\"{big}\"}}"),
        );
        let header = cache.parse(&bytes).unwrap();
        assert_eq!(header, Header::parse(&bytes, &Limits::default()).unwrap());
        assert_eq!(header.attrs.unwrap()["note"], big.as_str());
    }
    assert_eq!(cache.hits(), 0);
    // The same stream with short attributes is remembered.
    for seq in 0..3 {
        let bytes = header_json(
            seq,
            "1.0",
            &format!("{ONE_ARRAY},\"attrs\":{{\"note\":\"x\"}}"),
        );
        cache.parse(&bytes).unwrap();
    }
    assert_eq!(cache.hits(), 2);
}

#[test]
fn a_sign_change_of_a_zero_in_the_attributes_is_written() {
    let mut writer = HeaderWriter::default();
    let mut header = Header::parse(&header_json(0, "1.0", ONE_ARRAY), &Limits::default()).unwrap();
    for step in [0, 1, 0, 2, 1] {
        header.attrs = attrs(step);
        assert_eq!(writer.write(&header), header.to_json());
    }
}
