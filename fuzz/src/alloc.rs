//! The allocation bound of the fuzz targets: a global allocator that records
//! the largest single allocation and the peak of live bytes, so that a target
//! can check both against the caps the code claims after each input.
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOC: vc_fuzz::alloc::Tracking = vc_fuzz::alloc::Tracking;`
//! (each libFuzzer target and the corpus test do). Without it the counters stay
//! at zero and the checks pass trivially. The counters are process-wide: run
//! one input at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting.
#[derive(Debug)]
pub struct Tracking;

fn grew(bytes: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    let now = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
    PEAK.fetch_max(now, Ordering::Relaxed);
    LARGEST.fetch_max(bytes, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the same arguments, so the
// `GlobalAlloc` contract is `System`'s; the counting only touches atomics,
// which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: forwarded unchanged; `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as the worst case: both blocks live for a moment.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

/// What one input allocated, from [`Usage::start`] to [`Usage::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The largest single allocation, in bytes.
    pub largest: usize,
    /// The highest live heap above what was live at the start, in bytes.
    pub peak: usize,
    /// Whether the tracking allocator is this binary's global allocator.
    pub tracked: bool,
    start_live: isize,
}

impl Usage {
    /// Resets the counters: what comes next is measured.
    pub fn start() -> Self {
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        LARGEST.store(0, Ordering::Relaxed);
        Self {
            largest: 0,
            peak: 0,
            tracked: INSTALLED.load(Ordering::Relaxed),
            start_live: live,
        }
    }

    /// What was allocated since [`start`](Self::start).
    pub fn finish(self) -> Self {
        let peak = PEAK.load(Ordering::Relaxed) - self.start_live;
        Self {
            largest: LARGEST.load(Ordering::Relaxed),
            peak: usize::try_from(peak).unwrap_or(0),
            tracked: INSTALLED.load(Ordering::Relaxed),
            start_live: self.start_live,
        }
    }
}
