//! How many bytes the images being decoded may hold at once, across threads. Each image is
//! checked on its own (its declared pixels), but the loader decodes one per thread, so a
//! folder of several large images could together exceed what the machine holds: a decode
//! waits while others hold the budget, and one decode may always run.

use std::sync::{Condvar, Mutex, MutexGuard};

/// A budget of bytes shared by the threads that decode.
pub struct Budget {
    held: Mutex<u128>,
    freed: Condvar,
}

/// A share of a [`Budget`], given back when dropped.
pub struct Held<'a> {
    budget: &'a Budget,
    bytes: u128,
}

impl Budget {
    pub const fn new() -> Self {
        Budget {
            held: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, u128> {
        // The count stays right even if a holder panicked: its `Held` was dropped.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` of a budget of `limit`, waiting while other holders leave too little
    /// (unless nothing is held: then it is taken even if it is over the limit alone).
    pub fn take(&self, bytes: u128, limit: u128) -> Held<'_> {
        let mut held = self.lock();
        while *held > 0 && held.saturating_add(bytes) > limit {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held += bytes;
        Held {
            budget: self,
            bytes,
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *self.budget.lock() -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// The budget every image decode shares: a quarter of the allocation limit
/// ([`crate::limits::max_alloc`]).
pub fn decoding(bytes: u128) -> Held<'static> {
    static DECODING: Budget = Budget::new();
    DECODING.take(bytes, crate::limits::max_alloc() as u128 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_take_waits_while_others_hold_too_much_and_one_always_runs() {
        let budget = Budget::new();
        let got = AtomicBool::new(false);
        std::thread::scope(|s| {
            let first = budget.take(80, 100);
            s.spawn(|| {
                let _second = budget.take(30, 100);
                got.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!got.load(Ordering::SeqCst), "80 + 30 of 100 ran together");
            drop(first);
        });
        assert!(got.load(Ordering::SeqCst));
        // Alone, a take over the limit runs (the image was already checked on its own).
        let big = budget.take(500, 100);
        drop(big);
        assert_eq!(*budget.lock(), 0);
        // Two that fit run together.
        let (_a, _b) = (budget.take(40, 100), budget.take(60, 100));
        assert_eq!(*budget.lock(), 100);
    }
}
