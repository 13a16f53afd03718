//! An `ArrayBuffer` allocator with a byte cap. ArrayBuffer contents live
//! outside the V8 heap, so the heap limit does not bound them; with this
//! allocator an allocation past the cap fails (V8 answers with a last-resort
//! garbage collection, then `RangeError: Array buffer allocation failed`)
//! instead of growing the process without bound.
//!
//! Memory comes from Rust's global allocator; V8 frees through `free` with
//! the same length it allocated.

use std::alloc::Layout;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use deno_core::v8;

/// Alignment of every block: what `malloc` gives on 64-bit targets, and
/// enough for any typed array.
const ALIGN: usize = 16;

struct CappedAllocator {
  used: AtomicUsize,
  cap: usize,
}

impl CappedAllocator {
  /// Reserves `len` bytes of the budget; false if that would pass the cap.
  fn reserve(&self, len: usize) -> bool {
    self
      .used
      .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        used.checked_add(len).filter(|&total| total <= self.cap)
      })
      .is_ok()
  }

  fn release(&self, len: usize) {
    self.used.fetch_sub(len, Ordering::AcqRel);
  }

  fn allocate(&self, len: usize, zeroed: bool) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(len.max(1), ALIGN) else {
      return std::ptr::null_mut();
    };
    if !self.reserve(len) {
      return std::ptr::null_mut();
    }
    // SAFETY: `layout` has a non-zero size.
    let data = unsafe {
      if zeroed {
        std::alloc::alloc_zeroed(layout)
      } else {
        std::alloc::alloc(layout)
      }
    };
    if data.is_null() {
      self.release(len);
    }
    data.cast()
  }
}

unsafe extern "C" fn allocate(handle: &CappedAllocator, len: usize) -> *mut c_void {
  handle.allocate(len, true)
}

unsafe extern "C" fn allocate_uninitialized(handle: &CappedAllocator, len: usize) -> *mut c_void {
  handle.allocate(len, false)
}

unsafe extern "C" fn free(handle: &CappedAllocator, data: *mut c_void, len: usize) {
  if data.is_null() {
    return;
  }
  // SAFETY: `data` came from `allocate` with this length (V8 frees a block
  // with the length it asked for), hence with this layout.
  unsafe {
    std::alloc::dealloc(
      data.cast(),
      Layout::from_size_align_unchecked(len.max(1), ALIGN),
    );
  }
  handle.release(len);
}

unsafe extern "C" fn drop_handle(handle: *const CappedAllocator) {
  // SAFETY: `handle` is the pointer `capped` leaked from an `Arc`; V8 drops
  // the allocator once.
  drop(unsafe { Arc::from_raw(handle) });
}

static VTABLE: v8::RustAllocatorVtable<CappedAllocator> = v8::RustAllocatorVtable {
  allocate,
  allocate_uninitialized,
  free,
  drop: drop_handle,
};

/// An allocator that hands out at most `cap` bytes of ArrayBuffer contents
/// at a time.
pub(crate) fn capped(cap: usize) -> v8::UniqueRef<v8::Allocator> {
  let handle = Arc::into_raw(Arc::new(CappedAllocator {
    used: AtomicUsize::new(0),
    cap,
  }));
  // SAFETY: `handle` stays valid until V8 calls `drop_handle`; the vtable is
  // static and its functions match the C++ side's expectations.
  unsafe { v8::new_rust_allocator(handle, &VTABLE) }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn allocations_past_the_cap_fail_and_freed_bytes_return() {
    let a = CappedAllocator {
      used: AtomicUsize::new(0),
      cap: 100,
    };
    let p = a.allocate(60, true);
    assert!(!p.is_null());
    // SAFETY: 60 zeroed bytes were just allocated.
    assert!(
      unsafe { std::slice::from_raw_parts(p.cast::<u8>(), 60) }
        .iter()
        .all(|&b| b == 0)
    );
    assert!(a.allocate(41, false).is_null());
    let q = a.allocate(40, false);
    assert!(!q.is_null());
    unsafe {
      free(&a, p, 60);
      free(&a, q, 40);
    }
    assert_eq!(a.used.load(Ordering::Acquire), 0);
    let r = a.allocate(100, false);
    assert!(!r.is_null());
    unsafe { free(&a, r, 100) };
  }
}
