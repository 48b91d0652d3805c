//! The in-flight byte budget: the receiver takes bytes before it queues a message and the
//! decode workers give them back after the sinks, so memory stays bounded and ZeroMQ's
//! high-water marks push back on the publishers when the collector falls behind.

use std::sync::{Condvar, Mutex};

/// A counting semaphore over bytes.
#[derive(Debug)]
pub(crate) struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
    cap: u64,
}

impl Budget {
    pub(crate) fn new(cap: u64) -> Budget {
        Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            cap,
        }
    }

    /// Takes `bytes`, waiting while that would exceed the cap. A message larger than the whole
    /// cap is let through alone, when nothing else is in flight. Returns the bytes now in use.
    pub(crate) fn acquire(&self, bytes: u64) -> u64 {
        let mut used = self.used.lock().expect("budget lock");
        while *used > 0 && *used + bytes > self.cap {
            used = self.freed.wait(used).expect("budget lock");
        }
        *used += bytes;
        *used
    }

    /// Takes `bytes` if that fits now (or nothing is in flight); `None` otherwise.
    pub(crate) fn try_acquire(&self, bytes: u64) -> Option<u64> {
        let mut used = self.used.lock().expect("budget lock");
        if *used > 0 && *used + bytes > self.cap {
            return None;
        }
        *used += bytes;
        Some(*used)
    }

    /// Gives `bytes` back. Returns the bytes still in use.
    pub(crate) fn release(&self, bytes: u64) -> u64 {
        let mut used = self.used.lock().expect("budget lock");
        *used -= bytes;
        let now = *used;
        drop(used);
        self.freed.notify_all();
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn acquire_waits_for_release() {
        let budget = Arc::new(Budget::new(100));
        assert_eq!(budget.acquire(60), 60);
        let b = Arc::clone(&budget);
        let waiter = std::thread::spawn(move || b.acquire(60));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "second acquire must wait");
        budget.release(60);
        assert_eq!(waiter.join().unwrap(), 60);
    }

    #[test]
    fn oversized_message_passes_alone() {
        let budget = Budget::new(100);
        assert_eq!(budget.acquire(500), 500);
        assert_eq!(budget.release(500), 0);
    }
}
