//! A global allocator for the unit tests that counts, per thread, the bytes live and the most
//! that were live at once: how a test shows that a hostile input's cost is bounded by what it
//! is, not by what it expands to.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting.
pub(crate) struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed to the system allocator unchanged; the counting touches only
// const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the moment both blocks exist, which a moving realloc is.
        add(new_size as isize);
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        add(-(layout.size() as isize));
        out
    }
}

/// Runs `f` on this thread and returns its result with the most bytes it had allocated at
/// once beyond what was live when it started.
pub(crate) fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get) - start;
    (out, peak.max(0) as usize)
}

/// `n` bytes in mebibytes, for messages.
pub(crate) fn mib(n: usize) -> f64 {
    n as f64 / f64::from(1 << 20)
}

#[test]
fn the_counter_sees_an_allocation_and_nothing_else() {
    let ((), most) = peak(|| {
        let v = vec![1u8; 10 << 20];
        std::hint::black_box(&v);
    });
    assert!((10 << 20..11 << 20).contains(&most), "{most}");
    let ((), none) = peak(|| ());
    assert!(none < 1 << 10, "{none}");
}
