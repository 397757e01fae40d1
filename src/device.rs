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

/// Use `n` threads for candle's CPU kernels and rayon (0 = all cores). Call once, early.
pub fn set_threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Keep freed memory in the process instead of returning it to the OS. Tensors of a few MB
/// are allocated and freed thousands of times per training step; with glibc's defaults each
/// one is a fresh mmap whose pages the kernel must zero again (measured: ~25% of a SmolLM2
/// training step spent in page faults and page clearing).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds; called before heavy allocation.
    unsafe {
        // 32 MiB is glibc's ceiling for the mmap threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
