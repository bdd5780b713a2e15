//! A global allocator that counts allocations, compiled in only with the `count-allocs`
//! feature (for `cargo xtask bench e2e`); the count is printed to stderr when the process ends.
//!
//! Each thread counts in its own cell and adds to the shared totals every [`FLUSH_EVERY`]
//! allocations, so counting does not make threads fight over one cache line; the totals miss
//! at most that many allocations per thread that has not ended.

// A global allocator can only be written with `unsafe`; this one forwards every call.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The system allocator, counting every allocation and reallocation.
pub struct Counting;

/// How many allocations a thread counts before adding them to the totals.
const FLUSH_EVERY: u64 = 256;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's allocations and bytes not yet in the totals.
    static LOCAL: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn count(bytes: usize) {
    let counted = LOCAL.try_with(|local| {
        let (n, b) = local.get();
        let (n, b) = (n + 1, b + bytes as u64);
        if n >= FLUSH_EVERY {
            ALLOCATIONS.fetch_add(n, Relaxed);
            BYTES.fetch_add(b, Relaxed);
            local.set((0, 0));
        } else {
            local.set((n, b));
        }
    });
    // A thread being torn down has no cell any more: count straight into the totals.
    if counted.is_err() {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(bytes as u64, Relaxed);
    }
}

// SAFETY: every call is passed unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Prints the totals as one line a benchmark can parse:
/// `tributary: count-allocs: allocations=N bytes=B`.
pub fn report() {
    let (n, b) = LOCAL.try_with(|l| l.replace((0, 0))).unwrap_or_default();
    eprintln!(
        "tributary: count-allocs: allocations={} bytes={}",
        ALLOCATIONS.load(Relaxed) + n,
        BYTES.load(Relaxed) + b
    );
}
