//! The channel's hot path does not allocate: sealing and opening frames of every size
//! in both suites makes no heap allocation (counted by a global allocator wrapper).
//!
//! The wrapper counts only the allocations of the thread being measured: the test
//! harness runs other threads (other tests, its own output capture) whose allocations
//! must not show up in the count.

// A global allocator is the one place unsafe code is needed: it only forwards to the
// system allocator. The protocol crate itself forbids unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use boarding::channel::{Channel, FRAME_OVERHEAD, Received, Side};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::suite::MacSuite;

thread_local! {
    // `const`-initialised and without a destructor: reading or writing these never
    // allocates, registers a destructor or initialises lazily, so the allocator can
    // consult them without recursing into itself.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts one allocation if this thread is being measured. `try_with` rather than
/// `with`: an allocation during thread teardown must not panic inside the allocator.
fn note_allocation() {
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get().wrapping_add(1)));
        }
    });
}

/// Runs `f` and returns its result with the number of heap allocations (and
/// reallocations) this thread made during it. Nothing else is counted: other
/// threads' allocations, and this thread's before and after `f`.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn seal_and_open_do_not_allocate() {
    let keys = SessionKeys { c2s: SymmetricKey::from_bytes([1; 32]), s2c: SymmetricKey::from_bytes([2; 32]) };
    let payload = vec![0xa5u8; 1 << 20];
    let mut frame = vec![0u8; payload.len() + FRAME_OVERHEAD];
    for suite in MacSuite::ALL {
        let mut client = Channel::new(Side::Client, suite, &keys);
        let mut server = Channel::new(Side::Server, suite, &keys);
        for size in [0usize, 64, 1024, 16 * 1024, 64 * 1024, 1 << 20] {
            let (opened, count) = allocations_during(|| {
                let n = client.seal(&payload[..size], &mut frame).unwrap();
                server.open(&frame[..n]).map(|r| r == Received::Data(&payload[..size]))
            });
            assert_eq!(opened, Ok(true), "{suite} {size} B");
            assert_eq!(count, 0, "{suite} {size} B");
            // In place, too.
            let (opened, count) = allocations_during(|| {
                let n = client.seal_in_place(&mut frame, size).unwrap();
                matches!(server.open(&frame[..n]), Ok(Received::Data(_)))
            });
            assert!(opened, "{suite} {size} B in place");
            assert_eq!(count, 0, "{suite} {size} B in place");
        }
    }
}

/// The counter is not vacuous: it sees this thread's allocations, and only them.
#[test]
fn the_counter_sees_this_thread_only() {
    let (v, count) = allocations_during(|| black_box(Vec::<u8>::with_capacity(16)));
    drop(v);
    assert_eq!(count, 1, "one allocation made by the measured thread");

    // Another thread allocating all through the measurement does not count.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let helper = {
        let (stop, made) = (stop.clone(), made.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(Vec::<u8>::with_capacity(64));
                made.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while made.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let (overlap, count) = allocations_during(|| {
        let start = made.load(Ordering::Relaxed);
        // Spin (without allocating) until the helper allocated a few hundred times.
        while made.load(Ordering::Relaxed) < start + 500 {
            std::hint::spin_loop();
        }
        made.load(Ordering::Relaxed) - start
    });
    stop.store(true, Ordering::Relaxed);
    helper.join().unwrap();
    assert!(overlap >= 500);
    assert_eq!(count, 0, "the helper thread's {overlap} allocations were counted");
}
