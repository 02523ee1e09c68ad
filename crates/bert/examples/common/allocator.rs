//! The allocator the `bert` binary uses (crates/bert-cli/src/main.rs), so that the examples time the
//! library as the command line runs it: mimalloc, with freed memory kept for reuse.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Never return freed memory to the OS (`mi_option_purge_delay` = -1): candle allocates a fresh buffer
/// per op, and returned memory is page-faulted and zeroed again on reuse.
pub fn keep_freed_memory() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: a process-wide option, set before any threads exist.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
