//! The `weft` binary's memory allocator, chosen by Cargo feature (default jemalloc, see
//! docs/architecture.md "Memory"): what decides whether memory freed by idle actors goes back.

#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("features `jemalloc` and `mimalloc` pick the allocator: enable one of them");

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read once, before the first allocation; `MALLOC_CONF` in the
/// environment still overrides them). Freed pages are only returned by decay, and decay only
/// advances on allocator calls — an idle sidecar makes none — so a background thread purges;
/// one second of decay returns memory soon after a burst of actors retires, while pages reused
/// at once (steady load) are still not handed back and forth.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 =
    &b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With the system allocator (glibc), only for measuring it against the others:
/// `WEFT_MALLOC_TRIM_SECS=N` calls `malloc_trim(0)` every N seconds. glibc returns only the top
/// of its main heap by itself; `malloc_trim` also releases free pages inside every arena.
#[cfg(not(any(feature = "jemalloc", feature = "mimalloc")))]
pub fn start_trimming() {
    let Some(secs) = std::env::var("WEFT_MALLOC_TRIM_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
    else {
        return;
    };
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            // SAFETY: malloc_trim only takes glibc's own arena locks; any thread may call it.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

#[cfg(any(feature = "jemalloc", feature = "mimalloc"))]
pub fn start_trimming() {}
