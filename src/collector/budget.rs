//! The in-flight byte budget: the receiver takes bytes before it queues a message and the
//! decode workers give them back after the sinks, so memory stays bounded and ZeroMQ's
//! high-water marks push back on the publishers when the collector falls behind.

use std::sync::{Condvar, Mutex};

/// A counting semaphore over bytes.
#[derive(Debug)]
pub(crate) struct Budget {
    state: Mutex<State>,
    freed: Condvar,
    cap: u64,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    /// Threads waiting in [`Budget::acquire`]: a release wakes them only when there are any.
    waiting: usize,
}

impl Budget {
    pub(crate) fn new(cap: u64) -> Budget {
        Budget {
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            cap,
        }
    }

    /// Takes `bytes`, waiting while that would exceed the cap, until `give_up` returns true
    /// (then `None`). A message larger than the whole cap is let through alone, when nothing
    /// else is in flight. Returns the bytes now in use.
    pub(crate) fn acquire(&self, bytes: u64, mut give_up: impl FnMut() -> bool) -> Option<u64> {
        let mut state = self.lock();
        while state.used > 0 && state.used.saturating_add(bytes) > self.cap {
            if give_up() {
                return None;
            }
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, std::time::Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        }
        state.used = state.used.saturating_add(bytes);
        Some(state.used)
    }

    /// The state; a panic elsewhere while holding the lock leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` if that fits now (or nothing is in flight); `None` otherwise.
    pub(crate) fn try_acquire(&self, bytes: u64) -> Option<u64> {
        let mut state = self.lock();
        if state.used > 0 && state.used.saturating_add(bytes) > self.cap {
            return None;
        }
        state.used = state.used.saturating_add(bytes);
        Some(state.used)
    }

    /// Gives `bytes` back. Returns the bytes still in use.
    pub(crate) fn release(&self, bytes: u64) -> u64 {
        let mut state = self.lock();
        state.used -= bytes;
        let (now, wake) = (state.used, state.waiting > 0);
        drop(state);
        if wake {
            self.freed.notify_all();
        }
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
        assert_eq!(budget.acquire(60, || false), Some(60));
        let b = Arc::clone(&budget);
        let waiter = std::thread::spawn(move || b.acquire(60, || false));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!waiter.is_finished(), "second acquire must wait");
        budget.release(60);
        assert_eq!(waiter.join().unwrap(), Some(60));
        assert_eq!(budget.acquire(100, || true), None, "gives up when asked");
    }

    #[test]
    fn oversized_message_passes_alone() {
        let budget = Budget::new(100);
        assert_eq!(budget.acquire(500, || false), Some(500));
        assert_eq!(budget.release(500), 0);
    }
}
