//! Warnings about bad input, rate limited: a flood of bad messages cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Logs at most a burst of warnings per second and counts the rest, so a flood of bad input
/// cannot flood the log.
pub(crate) struct RateLimitedLog {
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

const BURST: u32 = 10;

impl RateLimitedLog {
    pub(crate) fn new() -> Self {
        RateLimitedLog {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    pub(crate) fn warn(&self, message: impl FnOnce() -> String) {
        let mut window = self.window.lock().expect("log lock");
        if window.0.elapsed() >= Duration::from_secs(1) {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                tracing::warn!(
                    "{} suppressed",
                    crate::plural::plural(suppressed, "similar warning")
                );
            }
            *window = (Instant::now(), 0);
        }
        if window.1 < BURST {
            window.1 += 1;
            drop(window);
            tracing::warn!("{}", message());
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
