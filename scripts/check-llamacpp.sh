#!/usr/bin/env bash
# Check GGUF files written by ft in llama.cpp (llama-cpp-python's `llama_cpp` package):
# merge the shipped adapter into the base, write it at several quantization types with
# `ft quantize`, export the adapter with `ft export-adapter`, then run tests/llamacpp_check.py
# (metadata, tokenizer, greedy tokens and perplexity of ft vs llama.cpp, and the adapter GGUF
# via LoRA).
# Builds nothing: needs target/release/ft (cargo build --release). Prints SKIP and exits 0
# when python3 cannot import llama_cpp.
#
#   bash scripts/check-llamacpp.sh                 # all types
#   TYPES="Q4_K_M Q8_0" KEEP=1 bash scripts/check-llamacpp.sh
#
# Env: FT (binary), BASE (base GGUF), ADAPTER (PEFT folder), TYPES, THREADS, TEXT (perplexity
# text), KEEP=1 (keep the temp dir and print its path); extra arguments go to
# tests/llamacpp_check.py. LLAMA_CPP_LIB_PATH=DIR makes llama_cpp load another llama.cpp build.
set -euo pipefail
cd "$(dirname "$0")/.."
FT=${FT:-target/release/ft}
BASE=${BASE:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ADAPTER=${ADAPTER:-runs/smollm2-support}
TYPES=${TYPES:-F16 Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q4_1}
THREADS=${THREADS:-2}

if ! python3 -c "import llama_cpp" 2>/dev/null; then
  echo "SKIP: python3 cannot import llama_cpp (pip install llama-cpp-python); nothing checked"
  exit 0
fi
for f in "$FT" "$BASE" "$ADAPTER/adapter_config.json"; do
  [ -e "$f" ] || { echo "missing $f (cargo build --release; bash scripts/fetch-assets.sh; ft train recipes/smollm2-support.yaml)" >&2; exit 1; }
done

tmp=$(mktemp -d -t ft-llamacpp.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "files kept in $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

"$FT" --threads "$THREADS" merge --base "$BASE" --adapter "$ADAPTER" --out "$tmp/merged" --dtype f32 --no-progress >/dev/null
models=()
for t in $TYPES; do
  "$FT" --threads "$THREADS" quantize "$tmp/merged" --type "$t" --out "$tmp/merged.$t.gguf" --no-progress >/dev/null
  models+=(--model "$t=$tmp/merged.$t.gguf")
done
"$FT" --threads "$THREADS" export-adapter --adapter "$ADAPTER" --base "$BASE" --out "$tmp/adapter.gguf" >/dev/null

# Perplexity of ~4 chunks of 512 tokens in both runtimes, when the shared fixture text is here.
TEXT=${TEXT:-../shared/fixtures/perplexity/text.txt}
ppl=()
[ -f "$TEXT" ] && ppl=(--ppl-text "$TEXT")

python3 tests/llamacpp_check.py --ft "$FT" --threads "$THREADS" "${models[@]}" "${ppl[@]}" \
  --base "$BASE" --adapter-dir "$ADAPTER" --adapter-gguf "$tmp/adapter.gguf" "$@"
