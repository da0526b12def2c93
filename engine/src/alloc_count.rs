//! A counting global allocator for the engine's unit tests: proves that the steady-state data
//! paths do not allocate (see `gateway/tests/alloc.rs`).
//!
//! It wraps [`System`] and counts allocations (`alloc`, `alloc_zeroed`, `realloc`) made by
//! the current thread while [`count`] runs its closure. The counter is thread-local, so tests
//! running in parallel in the same binary do not see each other's allocations. There can be
//! only one `#[global_allocator]` per binary: this is the engine's (tests only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Counting on this thread (only inside [`count`]).
    static ON: Cell<bool> = const { Cell::new(false) };
    /// Allocations made by this thread while counting.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

impl Counting {
    fn note(&self) {
        // `try_with`: no panic while the thread's locals are being torn down. Const-initialized
        // `Cell`s need no allocation and no destructor, so this cannot recurse.
        if ON.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    }
}

// A `GlobalAlloc` implementation is `unsafe impl` by definition (the workspace denies
// `unsafe_code`): every method only counts and forwards to `System` with the caller's own
// arguments, so it upholds exactly `System`'s contract.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: as above; `ptr` was allocated by `System` (every allocation goes there).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the number of allocations this thread made in it.
pub(crate) fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|n| n.set(0));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    (r, ALLOCS.with(Cell::get))
}

#[test]
fn counts_allocations() {
    let ((), n) = count(|| {
        let v: Vec<u64> = Vec::with_capacity(4);
        std::hint::black_box(&v);
    });
    assert_eq!(n, 1);
    let ((), n) = count(|| {
        let mut v: Vec<u8> = Vec::with_capacity(64);
        v.extend_from_slice(&[1; 64]);
        v.clear();
        v.extend_from_slice(&[2; 64]);
        std::hint::black_box(&v);
    });
    assert_eq!(n, 1, "a reused buffer is one allocation");
}
