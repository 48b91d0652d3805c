//! Header templates: the JSON of a header written in three pieces, the prefix (`v`, `name`,
//! `source`, `session`), the middle (`seq`, `time`) and the suffix (`arrays`, `end`, `attrs`).
//!
//! A publisher's headers differ from one message to the next only in their middle. A
//! [`HeaderWriter`] keeps the last prefix and suffix it wrote and reuses their bytes while the
//! fields they come from are unchanged; a [`HeaderCache`] keeps the headers it has parsed by
//! their prefix bytes, and reads a header whose prefix and suffix match a known one byte for byte
//! by parsing only its middle. Both give exactly what [`Header::to_json`] and [`Header::parse`]
//! give: the cache only remembers headers whose bytes are the canonical JSON written here.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::DecodeError;
use super::header::{validate, ArrayMeta, Header, FORMAT_VERSION};
use super::limits::Limits;

/// What ends the prefix: the key of the first per-message field.
const SEQ_KEY: &[u8] = b",\"seq\":";
/// What separates the two per-message fields.
const TIME_KEY: &[u8] = b",\"time\":";
/// How every canonical header starts (the version is written first).
const CANONICAL_START: &[u8] = b"{\"v\":";

/// Writes `{"v":1,"name":…,"source":…,"session":…,"seq":`.
fn write_prefix(out: &mut Vec<u8>, name: &str, source: &str, session: &str) {
    out.extend_from_slice(CANONICAL_START);
    write_json(out, &FORMAT_VERSION);
    out.extend_from_slice(b",\"name\":");
    write_json(out, name);
    out.extend_from_slice(b",\"source\":");
    write_json(out, source);
    out.extend_from_slice(b",\"session\":");
    write_json(out, session);
    out.extend_from_slice(SEQ_KEY);
}

/// Writes `…,"time":…` (the values of `seq` and `time`).
fn write_middle(out: &mut Vec<u8>, seq: u64, time: f64) {
    let (middle, len) = middle(seq, time);
    out.extend_from_slice(&middle[..len]);
}

/// The longest middle: 20 digits of `seq`, the key, and a float (at most 24 characters).
const MAX_MIDDLE: usize = 64;

/// The middle written into a buffer on the stack, and its length: so that a header can be
/// allocated at its exact size (a `Vec` whose length is its capacity becomes `Bytes` without
/// another allocation).
fn middle(seq: u64, time: f64) -> ([u8; MAX_MIDDLE], usize) {
    let mut buf = [0u8; MAX_MIDDLE];
    let len = {
        let mut rest = &mut buf[..];
        // The buffer is large enough for any u64 and f64: these writes cannot fail.
        serde_json::to_writer(&mut rest, &seq).expect("seq fits");
        std::io::Write::write_all(&mut rest, TIME_KEY).expect("key fits");
        serde_json::to_writer(&mut rest, &time).expect("time fits");
        MAX_MIDDLE - rest.len()
    };
    (buf, len)
}

/// Writes `,"arrays":[…]`, then `,"end":true` for a message that ends its session,
/// `,"attrs":{…}` when there are attributes, and the closing brace.
fn write_suffix(
    out: &mut Vec<u8>,
    arrays: &[ArrayMeta],
    end: bool,
    attrs: Option<&Map<String, Value>>,
) {
    out.extend_from_slice(b",\"arrays\":");
    write_json(out, arrays);
    if end {
        out.extend_from_slice(b",\"end\":true");
    }
    if let Some(attrs) = attrs {
        out.extend_from_slice(b",\"attrs\":");
        write_json(out, attrs);
    }
    out.push(b'}');
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings, numbers, header entries and JSON maps always serialize (`time` is checked to be
    // finite before a header is built; serde_json writes a non-finite float as `null`).
    serde_json::to_writer(out, value).expect("header serialization is infallible");
}

/// Room for a typical header at once (one array: about 230 bytes), so it is not grown.
fn header_capacity(header: &Header) -> usize {
    256 + 160 * header.arrays.len()
}

impl Header {
    /// Serializes the header as the JSON bytes of frame 0 (compact, fields in the order of the
    /// format description; [`HeaderWriter`] writes the same bytes for a stream of headers
    /// faster). Written here, beside the writer, from the same pieces.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(header_capacity(self));
        write_prefix(&mut json, &self.name, &self.source, &self.session);
        write_middle(&mut json, self.seq, self.time);
        write_suffix(&mut json, &self.arrays, self.end, self.attrs.as_ref());
        json
    }
}

/// Writes header JSON for a stream of messages, reusing the bytes of the previous header's
/// prefix and suffix while the fields they come from are unchanged.
///
/// ```
/// use ndbridge::wire::{ArrayMeta, Codec, DType, Header, HeaderWriter, Order};
///
/// let mut header = Header {
///     name: "u".into(), source: "w1".into(), session: "s".into(), seq: 0, time: 1.5,
///     arrays: vec![ArrayMeta { name: "u".into(), dtype: "<f8".parse()?, shape: vec![4],
///         order: Order::C, codec: Codec::Raw, filters: vec![], nbytes: 32 }],
///     attrs: None, end: false,
/// };
/// let mut writer = HeaderWriter::default();
/// assert_eq!(writer.write(&header), header.to_json());
/// header.seq = 1;
/// assert_eq!(writer.write(&header), header.to_json()); // prefix and suffix reused
/// # Ok::<(), ndbridge::wire::DTypeError>(())
/// ```
#[derive(Debug, Default)]
pub struct HeaderWriter {
    /// `(name, source, session)` that `prefix` was written from.
    prefix_of: Option<(String, String, String)>,
    prefix: Vec<u8>,
    /// What `suffix` was written from.
    suffix_of: Option<SuffixFields>,
    suffix: Vec<u8>,
}

/// The fields a suffix is written from.
#[derive(Debug)]
struct SuffixFields {
    arrays: Vec<ArrayMeta>,
    end: bool,
    attrs: Option<Map<String, Value>>,
}

impl HeaderWriter {
    /// The JSON of `header`, byte for byte what [`Header::to_json`] returns.
    pub fn write(&mut self, header: &Header) -> Vec<u8> {
        let prefix_current = matches!(&self.prefix_of,
            Some((name, source, session))
                if *name == header.name && *source == header.source && *session == header.session);
        if !prefix_current {
            self.prefix.clear();
            write_prefix(
                &mut self.prefix,
                &header.name,
                &header.source,
                &header.session,
            );
            self.prefix_of = Some((
                header.name.clone(),
                header.source.clone(),
                header.session.clone(),
            ));
        }
        let suffix_current = matches!(&self.suffix_of,
            Some(fields) if fields.arrays == header.arrays && fields.end == header.end
                && same_attrs(fields.attrs.as_ref(), header.attrs.as_ref()));
        if !suffix_current {
            self.suffix.clear();
            write_suffix(
                &mut self.suffix,
                &header.arrays,
                header.end,
                header.attrs.as_ref(),
            );
            self.suffix_of = Some(SuffixFields {
                arrays: header.arrays.clone(),
                end: header.end,
                attrs: header.attrs.clone(),
            });
        }
        let (middle, middle_len) = middle(header.seq, header.time);
        let mut json = Vec::with_capacity(self.prefix.len() + middle_len + self.suffix.len());
        json.extend_from_slice(&self.prefix);
        json.extend_from_slice(&middle[..middle_len]);
        json.extend_from_slice(&self.suffix);
        json
    }
}

/// Whether two attribute maps serialize to the same bytes. serde_json's own equality takes
/// `0.0` and `-0.0` for the same number, but they are written differently.
fn same_attrs(a: Option<&Map<String, Value>>, b: Option<&Map<String, Value>>) -> bool {
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
                x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same(u, v))
            }
            (Value::Object(x), Value::Object(y)) => same_map(x, y),
            (x, y) => x == y,
        }
    }
    fn same_map(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
        // Maps iterate in key order, as they are written.
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
    }
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => same_map(x, y),
        _ => false,
    }
}

/// Most headers a [`HeaderCache`] keeps (one per record name and publisher session); when full
/// it starts over.
const MAX_TEMPLATES: usize = 256;

/// Longest header a [`HeaderCache`] remembers, in bytes (a typical header is about 230). With
/// the limit of 256 headers, this bounds a cache's memory whatever peers send: 8.5 MiB when all
/// of them are this long and full of small attribute values, which take up to about 16 times
/// their text once parsed (`cargo run --release --example memory_bounds`). Headers of up to
/// [`Limits::max_header_bytes`] (1 MiB by default) are parsed, but not kept.
pub const MAX_TEMPLATE_BYTES: usize = 2048;

/// After this many headers in a row that share a remembered prefix but not its suffix (a stream
/// whose shapes or attributes change with every message), a prefix is *volatile*: its headers
/// are parsed in full and remembered only every [`RELEARN_EVERY`]th time. Checking a header
/// against its template and writing a new template cost about as much again as parsing it, and
/// a volatile stream would pay that on every message.
const VOLATILE_AFTER: u32 = 4;

/// How often a volatile prefix's header is remembered again, in misses: a stream that settles
/// is read through its template again within this many messages.
const RELEARN_EVERY: u32 = 32;

/// A parsed header and its suffix bytes, filed under its prefix bytes.
#[derive(Debug)]
struct Template {
    suffix: Box<[u8]>,
    header: Header,
    /// Headers in a row with this prefix and another suffix (see [`VOLATILE_AFTER`]).
    misses: u32,
}

/// Parses headers under fixed [`Limits`], remembering the ones whose bytes are canonical (as
/// written by [`Header::to_json`] or the Python package): a header whose prefix and suffix
/// match a remembered one byte for byte is read by parsing only `seq` and `time`.
///
/// [`HeaderCache::parse`] returns exactly what [`Header::parse`] returns for the same bytes
/// and limits, errors included. It keeps at most 256 headers of at most
/// [`MAX_TEMPLATE_BYTES`] each; longer headers are parsed in full every time.
///
/// ```
/// use ndbridge::wire::{Header, HeaderCache, Limits};
///
/// let mut cache = HeaderCache::new(Limits::default());
/// for seq in 0..3 {
///     let json = format!(r#"{{"v":1,"name":"u","source":"w1","session":"s","seq":{seq},"time":1.5,"arrays":[{{"name":"u","dtype":"<f8","shape":[4],"order":"C","codec":"raw","nbytes":32}}]}}"#);
///     let header = cache.parse(json.as_bytes())?;
///     assert_eq!(header, Header::parse(json.as_bytes(), &Limits::default())?);
/// }
/// # Ok::<(), ndbridge::wire::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct HeaderCache {
    limits: Limits,
    /// Keyed with foldhash, seeded per map: the keys come from the network, but the map holds
    /// at most [`MAX_TEMPLATES`], so even a peer that forced collisions could not make a lookup
    /// cost more than a pass over them.
    templates: HashMap<Box<[u8]>, Template, foldhash::fast::RandomState>,
    hits: u64,
    /// Templates written so far.
    learned: u64,
    /// Finds [`SEQ_KEY`] (built once: building the searcher costs more than a search).
    seq_key: memchr::memmem::Finder<'static>,
}

impl HeaderCache {
    /// An empty cache for headers checked against `limits`.
    pub fn new(limits: Limits) -> Self {
        HeaderCache {
            limits,
            templates: HashMap::default(),
            hits: 0,
            learned: 0,
            seq_key: memchr::memmem::Finder::new(SEQ_KEY),
        }
    }

    /// How many headers were read through a remembered template.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The limits headers are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses and validates a header frame, as [`Header::parse`] does.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<Header, DecodeError> {
        let split = (bytes.len() <= self.limits.max_header_bytes)
            .then(|| self.seq_key.find(bytes))
            .flatten()
            .map(|at| at + SEQ_KEY.len());
        let mut misses = 0;
        if let Some(split) = split {
            if let Some(template) = self.templates.get_mut(&bytes[..split]) {
                if let Some((seq, time)) = parse_middle(&bytes[split..], &template.suffix) {
                    let mut header = template.header.clone();
                    header.seq = seq;
                    header.time = time;
                    // The template passed the format's rules when it was parsed, and no rule
                    // reads `seq` or `time`.
                    debug_assert_eq!(validate(&header, &self.limits), Ok(()));
                    template.misses = 0;
                    self.hits += 1;
                    return Ok(header);
                }
                // Wrapping: a count stuck at u32::MAX would never be relearned.
                template.misses = template.misses.wrapping_add(1);
                misses = template.misses;
            }
        }
        let header = Header::parse(bytes, &self.limits)?;
        if let Some(split) = split {
            if misses < VOLATILE_AFTER || misses % RELEARN_EVERY == 0 {
                self.remember(bytes, split, &header, misses);
            }
        }
        Ok(header)
    }

    /// Files `header` under its prefix if `bytes` are its canonical JSON; `misses` carries over
    /// the count of the template it replaces.
    fn remember(&mut self, bytes: &[u8], split: usize, header: &Header, misses: u32) {
        if bytes.len() > MAX_TEMPLATE_BYTES || !bytes.starts_with(CANONICAL_START) {
            return;
        }
        let mut prefix = Vec::with_capacity(split);
        write_prefix(&mut prefix, &header.name, &header.source, &header.session);
        if prefix != bytes[..split] {
            return;
        }
        let mut suffix = Vec::with_capacity(bytes.len() - split);
        write_suffix(
            &mut suffix,
            &header.arrays,
            header.end,
            header.attrs.as_ref(),
        );
        // The middle must read back as this header's values: then the bytes are the prefix,
        // a middle, and the suffix, each as written here, and any header that shares the
        // prefix and suffix differs from this one in `seq` and `time` only.
        match parse_middle(&bytes[split..], &suffix) {
            Some((seq, time)) if seq == header.seq && time.to_bits() == header.time.to_bits() => {}
            _ => return,
        }
        if self.templates.len() >= MAX_TEMPLATES {
            self.templates.clear();
        }
        self.templates.insert(
            prefix.into_boxed_slice(),
            Template {
                suffix: suffix.into_boxed_slice(),
                header: header.clone(),
                misses,
            },
        );
        self.learned += 1;
    }
}

/// Reads `<seq>,"time":<time><suffix>`: `seq` a JSON integer that fits a `u64`, `time` a JSON
/// number, and the rest exactly `suffix`. `None` for anything else.
fn parse_middle(rest: &[u8], suffix: &[u8]) -> Option<(u64, f64)> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let seq = rest[..digits].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    let rest = rest[digits..].strip_prefix(TIME_KEY)?;
    let token_len = rest.len().checked_sub(suffix.len())?;
    let (token, tail) = rest.split_at(token_len);
    if tail != suffix || !is_json_number(token) {
        return None;
    }
    // The same number parser as the whole-header path, so both give the same bits.
    let time: f64 = serde_json::from_slice(token).ok()?;
    Some((seq, time))
}

/// True for exactly the JSON number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let mut s = token.strip_prefix(b"-").unwrap_or(token);
    match digits(s) {
        0 => return false,
        n if n > 1 && s[0] == b'0' => return false,
        n => s = &s[n..],
    }
    if let Some(fraction) = s.strip_prefix(b".") {
        match digits(fraction) {
            0 => return false,
            n => s = &fraction[n..],
        }
    }
    if let Some(exponent) = s.strip_prefix(b"e").or_else(|| s.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        match digits(exponent) {
            0 => return false,
            n => s = &exponent[n..],
        }
    }
    s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_middles_fit() {
        for time in [
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            -2.2250738585072014e-308,
        ] {
            let (buf, len) = middle(u64::MAX, time);
            let text = std::str::from_utf8(&buf[..len]).unwrap();
            assert_eq!(
                text,
                format!("{},\"time\":{}", u64::MAX, serde_json::json!(time))
            );
        }
    }

    #[test]
    fn json_numbers_are_recognised_exactly() {
        for good in [
            "0", "-0", "7", "12", "1.5", "-0.25", "1e9", "1E+9", "2.5e-3", "0.0e0",
        ] {
            assert!(is_json_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "+1", "1e", "1e+", "1.5.2", "NaN", "inf", " 1", "1 ", "0x1",
            "1_0",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_middle_is_read_only_when_the_suffix_matches() {
        let suffix = b",\"arrays\":[]}";
        // The rest of a header after `"seq":`, and what it reads as.
        type Case = (&'static [u8], Option<(u64, f64)>);
        let cases: [Case; 7] = [
            (b"42,\"time\":1.5,\"arrays\":[]}", Some((42, 1.5))),
            (b"42,\"time\":1.5,\"arrays\":[1]}", None),
            (b"042,\"time\":1.5,\"arrays\":[]}", None),
            (b"4.2,\"time\":1.5,\"arrays\":[]}", None),
            (b"42,\"time\":1.5e,\"arrays\":[]}", None),
            // u64::MAX fits, one more does not.
            (
                b"18446744073709551615,\"time\":0,\"arrays\":[]}",
                Some((u64::MAX, 0.0)),
            ),
            (b"18446744073709551616,\"time\":0,\"arrays\":[]}", None),
        ];
        for (rest, expected) in cases {
            assert_eq!(
                parse_middle(rest, suffix),
                expected,
                "{}",
                String::from_utf8_lossy(rest)
            );
        }
    }

    fn header_bytes(seq: u64, len: usize) -> Vec<u8> {
        format!(
            r#"{{"v":1,"name":"p","source":"w","session":"s","seq":{seq},"time":0.5,"arrays":[{{"name":"p","dtype":"<f8","shape":[{len}],"order":"C","codec":"raw","nbytes":{}}}]}}"#,
            len * 8
        )
        .into_bytes()
    }

    #[test]
    fn a_stream_whose_shapes_keep_changing_is_parsed_without_relearning_each_header() {
        let limits = Limits::default();
        let mut cache = HeaderCache::new(limits);
        let mut seq = 0;
        let mut read = |cache: &mut HeaderCache, len: usize| {
            seq += 1;
            let bytes = header_bytes(seq, len);
            let header = cache.parse(&bytes).unwrap();
            assert_eq!(header, Header::parse(&bytes, &limits).unwrap());
        };
        // A new shape with every message: a few templates, then one per RELEARN_EVERY misses.
        for k in 0..320 {
            read(&mut cache, 100 + k);
        }
        assert_eq!(cache.hits(), 0);
        let bound = u64::from(VOLATILE_AFTER) + 320 / u64::from(RELEARN_EVERY);
        assert!(
            bound <= 320 / 10,
            "a volatile prefix is to be remembered rarely"
        );
        assert!(cache.learned <= bound, "{} templates", cache.learned);
        // The stream settles on one shape: read through a template again within RELEARN_EVERY
        // messages, and then for every message.
        for _ in 0..100 {
            read(&mut cache, 64);
        }
        let missed = 100 - cache.hits();
        assert!(missed <= u64::from(RELEARN_EVERY), "{missed} of 100 missed");
        let template = cache.templates.values().next().unwrap();
        assert_eq!(template.misses, 0);
    }
}
