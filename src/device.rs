//! The one place that picks the compute device: [`DeviceSpec`] (`cpu`, `cuda`, `cuda:N` or
//! `auto`, as a recipe's `model.device` or a `--device` flag spells it) and
//! [`DeviceSpec::resolve`], which turns it into a candle [`Device`].

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use candle_core::Device;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// `cuda` is `cuda:0`.
    Cuda(usize),
    /// CUDA device 0 when the binary has CUDA support and a GPU is present, else CPU.
    Auto,
}

impl DeviceSpec {
    /// The device itself. `cuda` fails with a one-line reason when ft was built without CUDA
    /// or the GPU cannot be opened; `auto` falls back to the CPU.
    pub fn resolve(&self) -> Result<Device> {
        match *self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            DeviceSpec::Cuda(idx) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::invalid(format!(
                        "device `{self}`: this ft was built without the `cuda` feature (cargo build --release --features cuda)"
                    )));
                }
                Device::new_cuda(idx).map_err(|e| Error::invalid(format!("device `{self}`: {e}")))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => return Ok(DeviceSpec::Cuda(0)),
            "auto" => return Ok(DeviceSpec::Auto),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n
                .parse()
                .map(DeviceSpec::Cuda)
                .map_err(|_| format!("bad device `{s}`: expected cuda:N with N a GPU index"));
        }
        Err(crate::config::unknown(
            "device",
            &s,
            &["cpu", "cuda", "cuda:N", "auto"],
        ))
    }
}

crate::config::serde_via_str!(DeviceSpec, "a device: cpu, cuda, cuda:N or auto");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_spellings_and_cpu_resolves() {
        assert_eq!("CUDA".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:2".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(2)));
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert!("cuda:x"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .contains("cuda:N"));
        assert!("tpu"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .contains("unknown device `tpu`"));
        assert!(DeviceSpec::Cpu.resolve().unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let e = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
            assert!(e.contains("without the `cuda` feature"), "{e}");
        }
    }
}
