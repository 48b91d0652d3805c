//! When compression pays: the publisher's automatic codec choice, weighing how fast the link
//! drains bytes against how fast the compressor runs and how much it saves.
//!
//! Compressing costs `raw / codec_speed` seconds and saves `(1 - ratio) * raw / link_speed`
//! seconds of sending, so it pays when `codec_speed * (1 - ratio) > link_speed`. On a fast LAN
//! the link outruns zstd and arrays go raw; on a slow link they are compressed. The link's speed
//! shows in how long sends block once ZeroMQ's queue is full: a send that does not block means
//! the link keeps up, and compressing would only slow the producer. (On a local link, loopback
//! or ipc, sends that block mean a busy receiver, not a slow link: there the publisher sends raw
//! without asking this; see [`crate::Link`].)
//!
//! Pure logic: durations are measured by the caller and passed in.

use std::time::Duration;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.2;

/// Sends faster than this many seconds per byte are not limited by the link (about 100 GB/s).
const UNBLOCKED_SECONDS_PER_BYTE: f64 = 1e-11;

/// While the link limits and raw is chosen, re-measure the compressor every this many messages
/// and at least [`SAMPLE_EVERY_BYTES`] apart.
const SAMPLE_EVERY: u64 = 16;

/// Raw bytes sent between two measurements of the compressor, at least: small messages are
/// sampled rarely, since compressing a small sample measures zstd's setup more than its speed
/// (a sample per 16 messages of 800 bytes costs more than the rest of the automatic mode).
const SAMPLE_EVERY_BYTES: u64 = 4 << 20;

/// Tracks link and compressor speed and decides, message by message, whether to compress.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pacing {
    link_seconds_per_byte: Option<f64>,
    codec_seconds_per_byte: Option<f64>,
    ratio: Option<f64>,
    since_sample: u64,
    bytes_since_sample: u64,
}

fn ewma(old: Option<f64>, new: f64) -> Option<f64> {
    Some(match old {
        Some(old) => old + ALPHA * (new - old),
        None => new,
    })
}

impl Pacing {
    /// Records that `wire_bytes` were handed to the socket in `took`.
    pub(crate) fn observe_send(&mut self, wire_bytes: u64, took: Duration) {
        if wire_bytes > 0 {
            let spb = took.as_secs_f64() / wire_bytes as f64;
            self.link_seconds_per_byte = ewma(self.link_seconds_per_byte, spb);
        }
    }

    /// Records that `raw_bytes` compressed to `compressed_bytes` in `took`.
    pub(crate) fn observe_compress(
        &mut self,
        raw_bytes: u64,
        compressed_bytes: u64,
        took: Duration,
    ) {
        if raw_bytes > 0 {
            // Interference (other threads, other processes) only ever slows the compressor:
            // a faster measurement is taken at once, a slower one only gradually.
            let spb = took.as_secs_f64() / raw_bytes as f64;
            self.codec_seconds_per_byte = match self.codec_seconds_per_byte {
                Some(old) if spb < old => Some(spb),
                old => ewma(old, spb),
            };
            self.ratio = ewma(self.ratio, compressed_bytes as f64 / raw_bytes as f64);
            self.since_sample = 0;
            self.bytes_since_sample = 0;
        }
    }

    /// True when the link currently limits the rate (sends block).
    pub(crate) fn link_limited(&self) -> bool {
        self.link_seconds_per_byte
            .is_some_and(|s| s > UNBLOCKED_SECONDS_PER_BYTE)
    }

    /// Compress the next message?
    pub(crate) fn should_compress(&self) -> bool {
        match (
            self.link_seconds_per_byte,
            self.codec_seconds_per_byte,
            self.ratio,
        ) {
            (Some(link), Some(codec), Some(ratio)) if self.link_limited() => {
                codec < (1.0 - ratio) * link
            }
            _ => false,
        }
    }

    /// Should the caller measure the compressor on a sample of the next message, of `raw_bytes`?
    /// True when the link limits but the compressor's figures are missing or old: 16 messages
    /// and 4 MiB ago.
    pub(crate) fn wants_sample(&mut self, raw_bytes: u64) -> bool {
        if !self.link_limited() || self.should_compress() {
            return false;
        }
        self.since_sample += 1;
        self.bytes_since_sample = self.bytes_since_sample.saturating_add(raw_bytes);
        let old =
            self.since_sample >= SAMPLE_EVERY && self.bytes_since_sample >= SAMPLE_EVERY_BYTES;
        if self.codec_seconds_per_byte.is_none() || old {
            self.since_sample = 0;
            self.bytes_since_sample = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The decisions in `tests/data/pacing_cases.json`, which the Python package's pacing
    /// replays too: one meaning of "auto" in both languages.
    #[test]
    fn shared_cases() {
        let cases: Value =
            serde_json::from_str(include_str!("../tests/data/pacing_cases.json")).unwrap();
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 9);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let mut p = Pacing::default();
            for step in case["steps"].as_array().unwrap() {
                replay(&mut p, step.as_array().unwrap(), name);
            }
        }
    }

    fn replay(p: &mut Pacing, step: &[Value], case: &str) {
        let int = |i: usize| step[i].as_u64().unwrap();
        let secs = |i: usize| Duration::from_secs_f64(step[i].as_f64().unwrap());
        let flag = |i: usize| step[i].as_bool().unwrap();
        match step[0].as_str().unwrap() {
            "send" => p.observe_send(int(1), secs(2)),
            "compress" => p.observe_compress(int(1), int(2), secs(3)),
            "compress?" => assert_eq!(p.should_compress(), flag(1), "{case}: {step:?}"),
            "link_limited?" => assert_eq!(p.link_limited(), flag(1), "{case}: {step:?}"),
            "sample?" => assert_eq!(p.wants_sample(int(1)), flag(2), "{case}: {step:?}"),
            "samples" => {
                let n = (0..int(1)).filter(|_| p.wants_sample(int(2))).count();
                assert_eq!(n as u64, int(3), "{case}: {step:?}");
            }
            other => panic!("{case}: unknown step {other}"),
        }
    }

    #[test]
    fn a_slow_link_and_a_fast_compressor_compress() {
        let mut p = Pacing::default();
        // Nothing known: raw.
        assert!(!p.should_compress());
        // A slow link: 1 MB takes 10 ms to send (100 MB/s) ...
        p.observe_send(1_000_000, Duration::from_millis(10));
        // ... and the compressor does 1 GB/s, halving the size.
        p.observe_compress(1_000_000, 500_000, Duration::from_millis(1));
        assert!(p.should_compress());
    }
}
