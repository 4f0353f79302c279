//! glibc malloc settings for a process that passes multi-MiB buffers between many threads.
//!
//! librados, librbd and diskferry share the C library's allocator. glibc gives each thread
//! that allocates under contention an arena of its own (up to 8 per core) and keeps what is
//! freed in that arena; block buffers allocated on one thread (a blocking-pool thread that
//! compresses a block) and freed on another (the upload that sent it) pile up as free memory
//! in many arenas. [`limit_arenas`] bounds that; [`release_free_memory`] hands the free memory
//! back to the kernel, for a long-running process between bursts of work.
//!
//! On targets other than glibc both functions do nothing and return `false`.

/// The environment variable with which a user sets glibc's arena limit themselves; when it is
/// set, [`limit_arenas`] leaves the user's value alone.
pub const ARENA_LIMIT_ENV: &str = "MALLOC_ARENA_MAX";

/// Limits glibc's malloc arenas to `arenas` (at least 1), unless [`ARENA_LIMIT_ENV`] is set.
/// Call it at the start of `main`, before other threads exist. Returns whether the limit was
/// set.
pub fn limit_arenas(arenas: u32) -> bool {
    if std::env::var_os(ARENA_LIMIT_ENV).is_some() {
        return false;
    }
    let arenas = libc_int(arenas.max(1));
    imp::set_arena_limit(arenas)
}

/// Returns the allocator's free memory to the kernel (glibc `malloc_trim(0)`): every arena's
/// free pages, not only the top of the main heap. Returns whether any memory was released.
/// It walks every arena under its lock: call it when the process is idle, not per buffer.
pub fn release_free_memory() -> bool {
    imp::trim()
}

fn libc_int(n: u32) -> libc::c_int {
    libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) fn set_arena_limit(arenas: libc::c_int) -> bool {
        // SAFETY: mallopt takes two integers and changes allocator settings under the
        // allocator's own lock; M_ARENA_MAX only caps arenas created from now on.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }

    pub(super) fn trim() -> bool {
        // SAFETY: malloc_trim takes an integer (the padding to keep; 0) and works under each
        // arena's lock; it frees only pages no allocation uses.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn set_arena_limit(_arenas: libc::c_int) -> bool {
        false
    }

    pub(super) fn trim() -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Below glibc's initial mmap threshold (128 KiB), so the chunks come from a heap.
    const SMALL_CHUNK: usize = 96 << 10;

    #[test]
    fn free_pages_inside_the_heap_are_handed_back() {
        // Free chunks below a live one: glibc's automatic trim only cuts the heap's top, so
        // these pages stay with the process until malloc_trim(0) releases them.
        let chunks: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; SMALL_CHUNK]).collect();
        let pin = vec![1u8; SMALL_CHUNK];
        drop(chunks);
        assert!(release_free_memory(), "malloc_trim released nothing");
        assert!(pin.iter().all(|&b| b == 1));
    }

    #[test]
    fn glibc_accepts_the_arena_limit_unless_the_user_set_one() {
        let user_set = std::env::var_os(ARENA_LIMIT_ENV).is_some();
        assert_eq!(limit_arenas(4), !user_set);
    }
}
