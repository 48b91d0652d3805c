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
///
/// ```
/// use std::time::Duration;
/// use ndbridge::pacing::Pacing;
///
/// let mut p = Pacing::default();
/// assert!(!p.should_compress()); // nothing known: raw
/// // A slow link: 1 MB takes 10 ms to send (100 MB/s) ...
/// p.observe_send(1_000_000, Duration::from_millis(10));
/// // ... and the compressor does 1 GB/s, halving the size.
/// p.observe_compress(1_000_000, 500_000, Duration::from_millis(1));
/// assert!(p.should_compress());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Pacing {
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
    pub fn observe_send(&mut self, wire_bytes: u64, took: Duration) {
        if wire_bytes > 0 {
            let spb = took.as_secs_f64() / wire_bytes as f64;
            self.link_seconds_per_byte = ewma(self.link_seconds_per_byte, spb);
        }
    }

    /// Records that `raw_bytes` compressed to `compressed_bytes` in `took`.
    pub fn observe_compress(&mut self, raw_bytes: u64, compressed_bytes: u64, took: Duration) {
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
    pub fn link_limited(&self) -> bool {
        self.link_seconds_per_byte
            .is_some_and(|s| s > UNBLOCKED_SECONDS_PER_BYTE)
    }

    /// Compress the next message?
    pub fn should_compress(&self) -> bool {
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
    pub fn wants_sample(&mut self, raw_bytes: u64) -> bool {
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

    #[test]
    fn fast_link_stays_raw_even_with_a_good_ratio() {
        let mut p = Pacing::default();
        for _ in 0..10 {
            // 8 MB accepted in 5 us: the socket queue is not full.
            p.observe_send(8_000_000, Duration::from_micros(5));
            p.observe_compress(8_000_000, 1_000_000, Duration::from_millis(8));
        }
        assert!(!p.link_limited());
        assert!(!p.should_compress());
    }

    #[test]
    fn blocked_loopback_outruns_the_compressor() {
        let mut p = Pacing::default();
        // 3 GB/s link, 1 GB/s compressor saving 22%: raw is faster.
        p.observe_send(8_000_000, Duration::from_micros(2_700));
        p.observe_compress(8_000_000, 6_240_000, Duration::from_millis(8));
        assert!(p.link_limited());
        assert!(!p.should_compress());
    }

    #[test]
    fn slow_link_compresses_and_switches_back_when_the_link_frees_up() {
        let mut p = Pacing::default();
        p.observe_send(1_000_000, Duration::from_millis(8)); // 125 MB/s
        assert!(
            p.wants_sample(1_000_000),
            "link limits and the codec is unmeasured"
        );
        p.observe_compress(1_000_000, 700_000, Duration::from_millis(1));
        assert!(p.should_compress());
        for _ in 0..30 {
            p.observe_send(700_000, Duration::from_micros(1));
        }
        assert!(!p.should_compress());
    }

    #[test]
    fn one_slow_measurement_does_not_hide_a_fast_compressor() {
        let mut p = Pacing::default();
        p.observe_send(1_000_000, Duration::from_millis(20)); // 50 MB/s
        p.observe_compress(1_000_000, 800_000, Duration::from_millis(200)); // preempted
        assert!(!p.should_compress());
        p.observe_compress(1_000_000, 800_000, Duration::from_millis(1));
        assert!(p.should_compress(), "the fast measurement counts at once");
    }

    #[test]
    fn samples_again_after_a_while_in_raw() {
        let mut p = Pacing::default();
        p.observe_send(1_000_000, Duration::from_micros(300)); // 3.3 GB/s, blocked
        p.observe_compress(1_000_000, 900_000, Duration::from_millis(1));
        assert!(!p.should_compress());
        let samples = (0..64).filter(|_| p.wants_sample(1_000_000)).count();
        assert_eq!(samples, 4);
    }

    #[test]
    fn small_messages_are_sampled_by_the_megabyte() {
        let mut p = Pacing::default();
        p.observe_send(800, Duration::from_micros(2)); // blocked
        p.observe_compress(800, 700, Duration::from_micros(10));
        assert!(!p.should_compress());
        // 4 MiB of 800-byte messages between samples, not 16 messages.
        let samples = (0..100_000).filter(|_| p.wants_sample(800)).count();
        assert_eq!(samples, 100_000 * 800 / (4 << 20));
    }
}
