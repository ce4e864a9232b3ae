//! An allocation meter: every fuzz target runs with a global allocator that counts the bytes
//! allocated from Rust, so that a target can check how much a decoder allocates.

use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result with the most bytes that were allocated at once while it
/// ran, beyond what was allocated before (what it returns still counts: it is live at the end).
/// The targets are single-threaded, so nothing else allocates meanwhile.
pub fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let out = f();
    (out, ALLOCATOR.peak_usage().saturating_sub(before))
}
