//! The byte budget: a bound on the bytes one stage holds at once, and the [`Permit`] that
//! holds some of them and gives them back when dropped.
//!
//! Three stages bound what they hold with it: the publisher's queue, the collector's in-flight
//! bytes (and the scratch its decoding allocates), and the forward sink's queues (all
//! subscribers together, and each subscriber alone). A request is granted when it fits under the
//! cap, or when nothing is held at all: a single request larger than the whole cap goes through
//! alone rather than never.
//!
//! Taking and giving back bytes is one atomic operation each; a lock is taken only to wait, and
//! by a release only when someone waits and the [`Wake`] policy says to wake them.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When a release wakes the threads waiting for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// At every release: a waiter takes room as soon as there is some.
    EveryRelease,
    /// Once the held bytes have drained to half the cap, or to nothing: a wake-up is a system
    /// call and a context switch, and a waiter woken then takes room for many requests in a row
    /// instead of one per release.
    AtHalf,
}

impl Wake {
    /// Whether a release that leaves `used` bytes held under `cap` wakes the waiters.
    fn wakes(self, used: u64, cap: u64) -> bool {
        match self {
            Wake::EveryRelease => true,
            Wake::AtHalf => used == 0 || used <= cap / 2,
        }
    }
}

/// A counting semaphore over bytes (see the module documentation).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used: AtomicU64,
    cap: AtomicU64,
    /// Threads waiting for room: a release takes the lock and wakes them only when there are any.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
    wake: Wake,
}

/// How long a waiter that may give up sleeps before it asks again.
const GIVE_UP_POLL: Duration = Duration::from_millis(50);

impl ByteBudget {
    /// A budget of `cap` bytes whose releases wake waiters as `wake` says.
    pub(crate) fn new(cap: u64, wake: Wake) -> ByteBudget {
        ByteBudget {
            used: AtomicU64::new(0),
            cap: AtomicU64::new(cap),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
            wake,
        }
    }

    /// The bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap now.
    pub(crate) fn cap(&self) -> u64 {
        self.cap.load(Ordering::Relaxed)
    }

    /// Changes the cap; it applies to the requests that come after.
    pub(crate) fn set_cap(&self, cap: u64) {
        self.cap.store(cap, Ordering::Relaxed);
        // A larger cap may let a waiter through.
        self.wake_waiters();
    }

    /// Takes `bytes` if they fit now (or nothing is held); the bytes held after, or `None`.
    fn take(&self, bytes: u64) -> Option<u64> {
        let cap = self.cap();
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used == 0 || used.saturating_add(bytes) <= cap).then(|| used.saturating_add(bytes))
            })
            .ok()
            .map(|before| before.saturating_add(bytes))
    }

    /// Gives `bytes` back; the bytes still held.
    fn give(&self, bytes: u64) -> u64 {
        let used = self.used.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if self.waiting.load(Ordering::SeqCst) > 0 && self.wake.wakes(used, self.cap()) {
            self.wake_waiters();
        }
        used
    }

    fn wake_waiters(&self) {
        // Taking the lock orders this wake after a waiter's last look at `used`: a waiter holds
        // it from that look until it sleeps.
        drop(self.lock());
        self.freed.notify_all();
    }

    /// The wait lock; a panic elsewhere while holding it leaves it usable (it guards nothing).
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` fit, sleeping at most `nap` at a time (`None`: until woken), until
    /// `give_up` returns true after a sleep; the bytes held after, or `None` when given up.
    fn wait_for(
        &self,
        bytes: u64,
        nap: impl Fn() -> Option<Duration>,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<u64> {
        loop {
            let guard = self.lock();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if let Some(used) = self.take(bytes) {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Some(used);
            }
            let guard = match nap() {
                None => self.freed.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(nap) => {
                    self.freed
                        .wait_timeout(guard, nap)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if let Some(used) = self.take(bytes) {
                return Some(used);
            }
            if give_up() {
                return None;
            }
        }
    }
}

/// Bytes held from a [`ByteBudget`], given back when dropped. `B` is how the permit reaches its
/// budget: `&ByteBudget` within one scope, `Arc<ByteBudget>` across threads.
#[derive(Debug)]
pub(crate) struct Permit<B: Deref<Target = ByteBudget>> {
    budget: B,
    bytes: u64,
}

impl<B: Deref<Target = ByteBudget>> Permit<B> {
    /// A permit for no bytes, to grow later.
    pub(crate) fn empty(budget: B) -> Self {
        Permit { budget, bytes: 0 }
    }

    /// `bytes` if they fit now (or nothing is held); `None` otherwise, at once.
    pub(crate) fn try_acquire(budget: B, bytes: u64) -> Option<Self> {
        budget.take(bytes)?;
        Some(Permit { budget, bytes })
    }

    /// `bytes`, waiting as long as it takes. The wait ends only if others give bytes back.
    pub(crate) fn acquire(budget: B, bytes: u64) -> Self {
        let mut permit = Permit::empty(budget);
        if permit.budget.take(bytes).is_none() {
            permit.budget.wait_for(bytes, || None, || false);
        }
        permit.bytes = bytes;
        permit
    }

    /// `bytes`, waiting until `deadline` at most; `None` when it passes first.
    pub(crate) fn acquire_until(budget: B, bytes: u64, deadline: Instant) -> Option<Self> {
        if budget.take(bytes).is_none() {
            let nap = || Some(deadline.saturating_duration_since(Instant::now()));
            budget.wait_for(bytes, nap, || Instant::now() >= deadline)?;
        }
        Some(Permit { budget, bytes })
    }

    /// The bytes held by this permit.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `bytes` to this permit if they fit now (or nothing is held); the bytes the budget
    /// holds after, or `None` (the permit unchanged).
    pub(crate) fn try_grow(&mut self, bytes: u64) -> Option<u64> {
        let used = self.budget.take(bytes)?;
        self.bytes += bytes;
        Some(used)
    }

    /// Adds `bytes` to this permit, waiting for room and asking `give_up` every 50 ms whether
    /// to stop waiting; the bytes the budget holds after, or `None` (given up, the permit
    /// unchanged).
    pub(crate) fn grow_or_give_up(
        &mut self,
        bytes: u64,
        give_up: impl FnMut() -> bool,
    ) -> Option<u64> {
        let used = match self.budget.take(bytes) {
            Some(used) => used,
            None => self
                .budget
                .wait_for(bytes, || Some(GIVE_UP_POLL), give_up)?,
        };
        self.bytes += bytes;
        Some(used)
    }

    /// Gives back all but `bytes` (nothing when it holds no more than that).
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// Gives back everything now; the bytes the budget still holds.
    pub(crate) fn release(&mut self) -> u64 {
        match std::mem::take(&mut self.bytes) {
            0 => self.budget.used(),
            bytes => self.budget.give(bytes),
        }
    }
}

impl<B: Deref<Target = ByteBudget>> Drop for Permit<B> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Long enough for a thread that would wrongly go on to have done so.
    const SETTLE: Duration = Duration::from_millis(120);

    fn budget(cap: u64, wake: Wake) -> Arc<ByteBudget> {
        Arc::new(ByteBudget::new(cap, wake))
    }

    #[test]
    fn at_half_wakes_once_drained_to_half_or_empty() {
        let at_half = Wake::AtHalf;
        // Still above half: keep draining.
        assert!(!at_half.wakes(900, 1000));
        assert!(!at_half.wakes(501, 1000));
        // Half or less, or empty: wake.
        assert!(at_half.wakes(500, 1000));
        assert!(at_half.wakes(0, 1000));
        // Empty wakes even a waiter whose request is larger than the cap.
        assert!(at_half.wakes(0, 0));
        assert!(Wake::EveryRelease.wakes(900, 1000));
    }

    #[test]
    fn a_permit_gives_its_bytes_back_when_dropped() {
        let b = budget(100, Wake::EveryRelease);
        let first = Permit::try_acquire(&*b, 60).expect("fits");
        assert_eq!((first.bytes(), b.used()), (60, 60));
        assert!(
            Permit::try_acquire(&*b, 41).is_none(),
            "60 + 41 is over 100"
        );
        let second = Permit::try_acquire(&*b, 40).expect("60 + 40 fits");
        assert_eq!(b.used(), 100);
        drop(first);
        assert_eq!(b.used(), 40);
        drop(second);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_request_larger_than_the_cap_goes_through_alone() {
        let b = budget(100, Wake::EveryRelease);
        let huge = Permit::try_acquire(&*b, 500).expect("nothing else is held");
        assert_eq!(b.used(), 500);
        assert!(
            Permit::try_acquire(&*b, 1).is_none(),
            "the oversize request holds it all"
        );
        drop(huge);
        let small = Permit::try_acquire(&*b, 1).expect("empty again");
        assert!(
            Permit::try_acquire(&*b, 500).is_none(),
            "only when nothing else is held"
        );
        drop(small);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn shrinking_growing_and_releasing_keep_the_count() {
        let b = budget(100, Wake::EveryRelease);
        let mut permit = Permit::empty(&*b);
        assert_eq!(permit.try_grow(30), Some(30));
        assert_eq!(permit.try_grow(70), Some(100));
        assert_eq!(permit.try_grow(1), None);
        assert_eq!(permit.bytes(), 100);
        permit.shrink_to(120);
        assert_eq!(b.used(), 100, "shrinking to more is nothing");
        permit.shrink_to(10);
        assert_eq!((permit.bytes(), b.used()), (10, 10));
        assert_eq!(permit.release(), 0);
        assert_eq!(permit.bytes(), 0);
        drop(permit);
        assert_eq!(b.used(), 0, "a released permit gives nothing back twice");
    }

    #[test]
    fn acquire_waits_until_bytes_come_back_and_is_woken() {
        let b = budget(100, Wake::EveryRelease);
        let held = Permit::try_acquire(Arc::clone(&b), 60).expect("fits");
        let waiter = {
            let b = Arc::clone(&b);
            thread::spawn(move || Permit::acquire(b, 60).bytes())
        };
        thread::sleep(SETTLE);
        assert!(!waiter.is_finished(), "60 + 60 is over 100: it must wait");
        drop(held);
        assert_eq!(waiter.join().expect("waiter"), 60);
        assert_eq!(
            b.used(),
            0,
            "the waiter's permit went back when its thread dropped it"
        );
    }

    #[test]
    fn at_half_wakes_only_once_drained_to_half_the_cap() {
        let b = budget(100, Wake::AtHalf);
        let mut held: Vec<_> = (0..4)
            .map(|_| Permit::try_acquire(Arc::clone(&b), 25).expect("fits"))
            .collect();
        let waiter = {
            let b = Arc::clone(&b);
            thread::spawn(move || Permit::acquire(b, 25).bytes())
        };
        thread::sleep(SETTLE);
        // 75 held: there is room, but the release did not wake the waiter.
        held.pop();
        thread::sleep(SETTLE);
        assert!(
            !waiter.is_finished(),
            "woken before the budget drained to half"
        );
        held.pop();
        assert_eq!(waiter.join().expect("waiter"), 25);
        drop(held);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn acquire_until_gives_up_at_the_deadline() {
        let b = budget(100, Wake::EveryRelease);
        let _held = Permit::try_acquire(&*b, 100).expect("fits");
        let started = Instant::now();
        let late = Permit::acquire_until(&*b, 1, started + Duration::from_millis(80));
        assert!(late.is_none());
        assert!(started.elapsed() >= Duration::from_millis(80));
        assert_eq!(b.used(), 100, "a request given up takes nothing");
    }

    #[test]
    fn acquire_until_takes_room_made_before_the_deadline() {
        let b = budget(100, Wake::EveryRelease);
        let held = Permit::try_acquire(Arc::clone(&b), 100).expect("fits");
        let waiter = {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                Permit::acquire_until(b, 50, Instant::now() + Duration::from_secs(10))
                    .map(|p| p.bytes())
            })
        };
        thread::sleep(SETTLE);
        let started = Instant::now();
        drop(held);
        assert_eq!(waiter.join().expect("waiter"), Some(50));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
    }

    #[test]
    fn grow_or_give_up_asks_while_it_waits() {
        let b = budget(10, Wake::EveryRelease);
        let _held = Permit::try_acquire(&*b, 10).expect("fits");
        let mut permit = Permit::empty(&*b);
        let mut asked = 0;
        let grown = permit.grow_or_give_up(5, || {
            asked += 1;
            asked == 2
        });
        assert_eq!((grown, asked, permit.bytes()), (None, 2, 0));
        assert_eq!(b.used(), 10);
    }

    #[test]
    fn a_larger_cap_lets_a_waiter_through() {
        let b = budget(100, Wake::AtHalf);
        let _held = Permit::try_acquire(Arc::clone(&b), 100).expect("fits");
        let waiter = {
            let b = Arc::clone(&b);
            thread::spawn(move || Permit::acquire(b, 50).bytes())
        };
        thread::sleep(SETTLE);
        assert!(!waiter.is_finished());
        b.set_cap(150);
        assert_eq!(waiter.join().expect("waiter"), 50);
        assert_eq!(b.cap(), 150);
    }
}
