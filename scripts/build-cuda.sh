#!/usr/bin/env bash
# Build ft with the `cuda` feature on a machine without a system CUDA toolkit, using NVIDIA's
# compiler and headers from PyPI wheels. Pick the wheel major version that matches the target
# GPU driver (`nvidia-smi`: a CUDA 13 driver runs CUDA 12 and 13 builds).
#
#   bash scripts/build-cuda.sh            # -> target/release/ft with --features cuda
#   CUDA_MAJOR=13 bash scripts/build-cuda.sh
#
# The resulting binary needs the CUDA driver (libcuda) on the machine that runs it; the runtime
# libraries candle loads (cudart, cublas, curand) come from the same wheels: set
# LD_LIBRARY_PATH to the printed lib folders there.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR=${CUDA_MAJOR:-12}
ROOT=${CUDA_WHEELS:-$PWD/target/cuda-wheels}
mkdir -p "$ROOT"
PY=${PYTHON:-python3}
pkgs="nvidia-cuda-nvcc-cu$MAJOR nvidia-cuda-runtime-cu$MAJOR nvidia-cuda-cccl-cu$MAJOR nvidia-cublas-cu$MAJOR nvidia-curand-cu$MAJOR nvidia-cuda-nvrtc-cu$MAJOR"
[[ $MAJOR -ge 13 ]] && pkgs="$pkgs nvidia-cuda-crt"
"$PY" -m pip install --quiet --target "$ROOT" --no-deps $pkgs
# Assemble a CUDA_HOME-shaped tree out of the wheels.
HOME_DIR="$ROOT/cuda-home"
mkdir -p "$HOME_DIR/bin" "$HOME_DIR/include" "$HOME_DIR/lib64"
for d in "$ROOT"/nvidia/*/; do
  [[ -d $d/bin ]] && cp -rs "$d"/bin/* "$HOME_DIR/bin/" 2>/dev/null || true
  [[ -d $d/include ]] && cp -rs "$d"/include/* "$HOME_DIR/include/" 2>/dev/null || true
  [[ -d $d/lib ]] && cp -rs "$d"/lib/* "$HOME_DIR/lib64/" 2>/dev/null || true
done
( cd "$HOME_DIR/lib64" && for f in lib*.so.*; do b=${f%%.so.*}.so; [[ -e $b ]] || ln -s "$f" "$b"; done )
export CUDA_HOME="$HOME_DIR" CUDA_PATH="$HOME_DIR" PATH="$HOME_DIR/bin:$PATH"
export LD_LIBRARY_PATH="$HOME_DIR/lib64:${LD_LIBRARY_PATH:-}"
# candle's kernels are compiled for this compute capability (9.0 = H100/H200, 8.9 = L4/4090, 8.0 = A100).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
cargo build --release --features cuda
echo "built target/release/ft with CUDA; at run time: export LD_LIBRARY_PATH=$HOME_DIR/lib64"
