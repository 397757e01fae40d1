//! The one place that picks the compute device: `cpu`, `cuda`, `cuda:N` or `auto`.

use crate::error::{Error, Result};
use candle_core::Device;

/// Parse a device spec. `auto` is the first GPU when ft was built with `cuda` and one exists.
pub fn parse(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| Error::invalid(format!("device `{s}`: expected cuda:N")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::invalid(format!(
                    "device `{s}`: this ft was built without the `cuda` feature (cargo build --release --features cuda)"
                )));
            }
            Device::new_cuda(idx).map_err(|e| Error::invalid(format!("device `{s}`: {e}")))
        }
        other => Err(Error::invalid(format!(
            "unknown device `{other}` (expected cpu, cuda, cuda:N or auto)"
        ))),
    }
}

/// Use `n` threads for candle's CPU kernels and rayon (0 = all cores). Call once, early,
/// before any tensor work.
pub fn set_threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    // candle runs large element-wise ops on a second, spinning thread pool of its own; next
    // to rayon (which runs the matmuls) the two oversubscribe the cores, and on a busy machine
    // the spinning waits cost more than the element-wise parallelism gains (measured: 17% of
    // a training step spent spinning). Leave those ops on the calling thread unless the user
    // asks otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Keep freed memory in the process instead of handing it back to the OS. A training step
/// allocates and frees multi-MB tensors thousands of times; returned pages come back as
/// fresh zeroed pages (measured: 26% of a SmolLM2 training step in the kernel's page
/// clearing with mimalloc's default purging, 10% slower wall time with a 5 s delay).
/// Peak RSS grows by ~5% because freed pages are kept. Call once, early.
pub fn tune_allocator() {
    // mimalloc (ft's global allocator): never purge; `mi_option_purge_delay` is 15 in its
    // v3 option enum (the Rust bindings lack the constant).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mi_option_set only stores an option value; it is safe at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds (when glibc malloc is the allocator).
    unsafe {
        // 32 MiB is glibc's ceiling for the mmap threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
