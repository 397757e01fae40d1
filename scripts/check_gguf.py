#!/usr/bin/env python3
"""Validate a GGUF file with the reference reader (`pip install gguf`), independently of ft.

    python3 scripts/check_gguf.py FILE.gguf [EXPECT.json]

Always checks that gguf-py parses the file, that every tensor's data offset is aligned to
`general.alignment`, that tensors do not overlap, and, for a model (general.type = model),
that the keys llama.cpp needs are present and the token arrays agree in length. With
EXPECT.json ({"metadata": {key: value}, "tensor_count": N, "tensors": {name: {"shape":
[innermost first], "type": "Q4_K"}}, "compare": {"path": OTHER.gguf, "max_rel_rms": {"Q4_K":
0.1, ...}}}) also compares those; "compare" dequantizes every tensor of both files with gguf-py's
own decoders and bounds the relative RMS difference per stored type (an independent check of
the block encoding and of the q/k row layout). Prints one line per problem and exits 1 if there
is any; prints a JSON summary and exits 0 otherwise.
"""
import json
import sys

try:
    import gguf
except ImportError:
    print("SKIP: python package `gguf` is not installed", file=sys.stderr)
    sys.exit(2)

MODEL_KEYS = [
    "general.architecture",
    "general.file_type",
    "{arch}.context_length",
    "{arch}.embedding_length",
    "{arch}.block_count",
    "{arch}.feed_forward_length",
    "{arch}.attention.head_count",
    "{arch}.attention.head_count_kv",
    "{arch}.attention.layer_norm_rms_epsilon",
    "{arch}.rope.freq_base",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.eos_token_id",
]


def value(field):
    try:
        v = field.contents()
    except Exception:  # older gguf-py without contents()
        v = None
    return v


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    expect = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            expect = json.load(f)
    problems = []
    r = gguf.GGUFReader(path)
    meta = {k: value(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    align = meta.get("general.alignment") or 32
    arch = meta.get("general.architecture")
    spans = []
    for t in r.tensors:
        if t.data_offset % align != 0:
            problems.append(f"tensor {t.name}: data offset {t.data_offset} not aligned to {align}")
        spans.append((t.data_offset, t.data_offset + int(t.n_bytes), t.name))
    spans.sort()
    for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            problems.append(f"tensors {an} and {bn} overlap")
    if meta.get("general.type") == "model":
        for k in MODEL_KEYS:
            k = k.format(arch=arch)
            if k not in meta:
                problems.append(f"missing metadata key {k}")
        toks = meta.get("tokenizer.ggml.tokens") or []
        for k in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            if k in meta and len(meta[k]) != len(toks):
                problems.append(f"{k} has {len(meta[k])} entries for {len(toks)} tokens")
        emb = next((t for t in r.tensors if t.name == "token_embd.weight"), None)
        if emb is not None and int(emb.shape[1]) != len(toks):
            problems.append(f"token_embd.weight has {int(emb.shape[1])} rows for {len(toks)} tokens")
    for k, want in expect.get("metadata", {}).items():
        got = meta.get(k)
        if isinstance(want, float) and isinstance(got, (int, float)):
            ok = abs(got - want) <= 1e-6 * max(1.0, abs(want))
        else:
            ok = got == want
        if not ok:
            problems.append(f"metadata {k}: got {got!r}, want {want!r}")
    if "tensor_count" in expect and len(r.tensors) != expect["tensor_count"]:
        problems.append(f"{len(r.tensors)} tensors, want {expect['tensor_count']}")
    by_name = {t.name: t for t in r.tensors}
    for name, want in expect.get("tensors", {}).items():
        t = by_name.get(name)
        if t is None:
            problems.append(f"tensor {name} missing")
            continue
        shape = [int(x) for x in t.shape]
        if "shape" in want and shape != want["shape"]:
            problems.append(f"tensor {name}: shape {shape}, want {want['shape']}")
        if "type" in want and t.tensor_type.name != want["type"]:
            problems.append(f"tensor {name}: type {t.tensor_type.name}, want {want['type']}")
    worst = {}
    if "compare" in expect:
        from gguf.quants import dequantize
        import numpy as np
        other = {t.name: t for t in gguf.GGUFReader(expect["compare"]["path"]).tensors}
        bounds = expect["compare"].get("max_rel_rms", {})
        for t in r.tensors:
            o = other.get(t.name)
            if o is None or [int(x) for x in o.shape] != [int(x) for x in t.shape]:
                problems.append(f"compare: tensor {t.name} missing or shaped differently in the other file")
                continue
            x = dequantize(o.data, o.tensor_type).astype(np.float32).ravel()
            y = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
            rel = float(np.sqrt(np.mean((x - y) ** 2)) / (np.sqrt(np.mean(x ** 2)) + 1e-12))
            ty = t.tensor_type.name
            worst[ty] = max(worst.get(ty, 0.0), rel)
            bound = bounds.get(ty)
            if bound is not None and rel > bound:
                problems.append(f"compare: tensor {t.name} ({ty}) differs by relative RMS {rel:.4f} > {bound}")
    for p in problems:
        print(p)
    if problems:
        return 1
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    print(json.dumps({"tensors": len(r.tensors), "types": types, "architecture": arch,
                      "general.type": meta.get("general.type"), "compare_worst_rel_rms": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
