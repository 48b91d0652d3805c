//! The per-test timeout: a thread that ends the test binary when a test outlives its limit, so
//! that a hung socket test fails the run instead of blocking it. A file of its own, so that a
//! test binary that needs nothing else of `tests/common/` (`tests/publisher_allocations.rs`)
//! includes just this.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// Ends the whole test binary if a test outlives `limit`, so a hang fails instead of blocking
/// the suite. Dropping the returned value disarms it.
pub fn watchdog(test: &'static str, limit: Duration) -> Sender<()> {
    let (disarm, armed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
            eprintln!("{test}: still running after {limit:?}, aborting the test binary");
            std::process::exit(101);
        }
    });
    disarm
}
