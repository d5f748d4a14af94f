//! The channel's hot path does not allocate: sealing and opening frames of every size
//! in both suites makes no heap allocation (counted by a global allocator wrapper).

// A global allocator is the one place unsafe code is needed: it only forwards to the
// system allocator. The protocol crate itself forbids unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use boarding::channel::{Channel, FRAME_OVERHEAD, Received, Side};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::suite::MacSuite;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
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
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            let n = client.seal(&payload[..size], &mut frame).unwrap();
            let opened = server.open(&frame[..n]).unwrap();
            let after = ALLOCATIONS.load(Ordering::SeqCst);
            assert_eq!(opened, Received::Data(&payload[..size]));
            assert_eq!(after - before, 0, "{suite} {size} B");
            // In place, too.
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            let n = client.seal_in_place(&mut frame, size).unwrap();
            assert!(matches!(server.open(&frame[..n]), Ok(Received::Data(_))));
            assert_eq!(ALLOCATIONS.load(Ordering::SeqCst) - before, 0, "{suite} {size} B in place");
        }
    }
}
