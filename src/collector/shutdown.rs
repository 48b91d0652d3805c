//! The collector's stop flag, shared by whoever may stop it and the threads that obey it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared stop flag: trigger it (from a signal handler, another thread, a test) and the
/// collector stops reading, drains and finishes.
///
/// ```
/// let shutdown = ndbridge::collector::Shutdown::new();
/// let for_signal = shutdown.clone();
/// for_signal.trigger();
/// assert!(shutdown.is_triggered());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the collector to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}
