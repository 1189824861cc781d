//! Giving freed heap memory back to the kernel.
//!
//! glibc's malloc keeps what is freed in its arenas and returns only the top of each to the
//! kernel. Learning frees large encodings between long-lived allocations (every checkpoint
//! encodes each changed profile and its models' learning data; every freeze encodes a
//! baseline with its models), so without a trim the daemon's RSS in detection kept what
//! learning had once used (issue 13). `malloc_trim` hands every free page of every arena
//! back; the engine calls it after a tick that checkpointed or froze, never per event.

/// Returns the heap's free pages to the kernel (a no-op where the C library is not glibc).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
