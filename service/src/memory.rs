//! The service's heap between jobs.
//!
//! vmsnapd idles for hours between scheduled backups, and monitoring watches its resident
//! size. glibc keeps freed memory in its arenas (one per thread that ever allocated, up to
//! eight per core), so a backup's hashing buffers and a burst of Status calls leave the
//! process megabytes larger long after they ended, although nothing leaks. Two arenas are
//! plenty for a service whose hot paths wait on libvirt and disks, and after each job the
//! free pages go back to the kernel.
//!
//! Messages from the bus arrive whole, up to tens of MB each. glibc serves such a buffer
//! with its own mapping, but after the first is freed it raises its mmap threshold to that
//! size (up to 32 MiB) and serves the next ones from the heap, where freed memory stays:
//! eight 32 MB calls left the service 544 MB larger. A fixed threshold keeps every large
//! buffer in a mapping of its own, given back the moment it is freed.

/// Allocations from this size on get a mapping of their own (glibc's default before it
/// adapts: 128 KiB).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Caps glibc's malloc arenas and fixes its mmap threshold. Call it first thing, before any other thread exists: threads
/// pick their arena on their first allocation.
pub fn limit_arenas() {
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX is a valid parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Setting it also turns off glibc's dynamic raising of the threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the heap's free pages to the kernel. Cheap next to a job (it walks the arenas
/// once); called when a job's work has been dropped.
pub fn release_free_pages() {
    // SAFETY: malloc_trim only releases memory malloc owns and no one uses.
    unsafe {
        libc::malloc_trim(0);
    }
}
