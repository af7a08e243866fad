//! Cooperative interruption: the binary's Ctrl-C / SIGTERM handler (or the Python package, on
//! `KeyboardInterrupt`) sets one flag, and the long loops check it at their step boundaries —
//! the integrators after every accepted step, the training driver before every step, a sweep
//! before every point — and stop with what they computed, which the run then writes, marking its
//! manifest `interrupted`. A leaf: it imports nothing of the crate.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask every running loop to stop at its next step boundary. Returns whether a stop had
/// already been asked for (a second request: the caller may exit at once).
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Whether a stop has been asked for.
#[inline]
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Forget a request (the Python package clears it before each run).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
