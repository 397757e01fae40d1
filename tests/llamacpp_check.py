#!/usr/bin/env python3
"""GGUF files written by ft, loaded by llama.cpp (the `llama_cpp` package, llama-cpp-python).

For every model file given with --model TYPE=PATH (the wrapper scripts/check-llamacpp.sh
writes a merged fine-tune at F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0 and Q4_1 with
`ft quantize`):

  1. metadata: llama.cpp reads `tokenizer.chat_template` (llama_model_chat_template) and it is
     the template ft renders with; the EOS is an end-of-generation token in llama.cpp.
  2. tokenizer: llama.cpp's tokenize of a set of strings (specials, digits, whitespace runs,
     accents, CJK, emoji) == `ft tokenize`; the chat prompt rendered from the GGUF's template
     by jinja2 and tokenized by llama.cpp == the prompt ids of `ft run --chat --print-ids`.
  3. greedy decoding: `ft run --chat --temp 0 -n N --print-ids` against llama.cpp's argmax
     decoding from the same prompt ids (stopping at an end-of-generation token). Reports the
     number of leading tokens that match. Where the two differ, the step's llama.cpp logits
     say how close the call was: `gap` = logit(llama.cpp's token) - logit(ft's token). A
     difference fails the check when the gap exceeds --max-gap (anything above a near-tie
     that 8-bit activation rounding or summation order can flip), when fewer than
     --min-match leading tokens agree, or when one side stops (end of turn) where the other
     goes on.

  4. perplexity (with --ppl-text): the first ~--ppl-chunks chunks of 512 tokens of a text,
     scored as llama-perplexity does (each chunk from an empty cache, the second half of its
     positions scored), by llama.cpp and by `ft eval --perplexity --fast` on the same file;
     the token ids (`ft tokenize --no-special`) must equal llama.cpp's, and the two
     perplexities must agree within --ppl-tol (relative).

With --adapter-gguf (from `ft export-adapter`) and --adapter-dir (the PEFT folder it came from)
the base model is loaded in llama.cpp with the adapter (Llama(..., lora_path=...)) and decoded
the same way against `ft run -m BASE --adapter DIR`.

Prints SKIP and exits 0 when llama_cpp cannot be imported; prints a table and PASS, or FAIL
and exits 1.

    python3 tests/llamacpp_check.py --ft target/release/ft --model Q4_K_M=out/m.Q4_K_M.gguf \\
        [--base BASE.gguf --adapter-dir runs/x --adapter-gguf x-lora.gguf] [--json OUT.json]
"""

import argparse
import json
import os
import subprocess
import sys

try:
    import ctypes

    import llama_cpp
    import numpy as np
except ImportError as e:  # opt-in: llama-cpp-python is not a dependency of ft
    print(f"SKIP: cannot import llama_cpp ({e}); the llama.cpp check did not run")
    sys.exit(0)

PROMPTS = [
    "What is the capital of France?",
    "How long is the return window?",
    "Write a haiku about the sea.",
]

TOKENIZE = [
    "Hello, world!",
    "Hello world\n",
    "  leading spaces and\ttabs\n\n\nnewlines",
    "The year 2024 had 366 days; 3.14159 * 1000 = 3141.59",
    "naïve café résumé — Straße",
    "日本語のテキスト、中文文本",
    "emoji 🤖🚀 and symbols ©®™ <tag> {json: [1, 2]}",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "don't won't it's I'm we'll they've",
    "x" * 40 + " " + "ab" * 15,
]


def run(cmd, stdin=None):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


class LlamaModel:
    """One llama.cpp model + context (optionally with a LoRA adapter)."""

    def __init__(self, path, threads, lora=None):
        kw = dict(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                  verbose=False, seed=0, logits_all=True)
        if lora:
            kw["lora_path"] = lora
        self.llm = llama_cpp.Llama(**kw)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def meta(self, key):
        return self.llm.metadata.get(key)

    def chat_template(self):
        p = llama_cpp.llama_model_chat_template(self.llm._model.model, None)
        return p.decode("utf-8") if p else None

    def is_eog(self, tok):
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, tok))

    def logits(self):
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                     shape=(self.n_vocab,)).copy()

    def greedy(self, prompt_ids, n):
        """argmax decoding; returns (ids, logits at each step)."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        ids, steps = [], []
        while len(ids) < n:
            lg = self.logits()
            steps.append(lg)
            t = int(np.argmax(lg))
            if self.is_eog(t):
                break
            ids.append(t)
            self.llm.eval([t])
        return ids, steps


def chunk_nll(lm, ids):
    """NLL of the second half of one chunk, from an empty cache (llama-perplexity's scoring)."""
    lm.llm.reset()
    lm.llm.eval(ids)
    n, first = len(ids), len(ids) // 2
    lg = np.asarray(lm.llm.scores[first:n - 1], dtype=np.float64)
    mx = lg.max(axis=1, keepdims=True)
    lse = (mx + np.log(np.exp(lg - mx).sum(axis=1, keepdims=True)))[:, 0]
    tgt = np.asarray(ids[first + 1:n])
    return lse - lg[np.arange(len(tgt)), tgt]


def perplexity_pair(args, ty, path, lm, text_path, problems):
    """(llama.cpp ppl, ft ppl) over the same chunks of the same text."""
    ids = json.loads(run([args.ft, "tokenize", "--no-special", "-m", path, text_path]))
    with open(text_path, encoding="utf-8") as f:
        theirs = lm.llm.tokenize(f.read().encode("utf-8"), add_bos=False, special=False)
    if ids != theirs:
        problems.append(f"{ty}: tokens of the perplexity text differ "
                        f"({len(ids)} ft vs {len(theirs)} llama.cpp, first difference at "
                        f"{prefix_len(ids, theirs)})")
    c = 512
    nll = np.concatenate([chunk_nll(lm, ids[i * c:(i + 1) * c])
                          for i in range(len(ids) // c)])
    llama_ppl = float(np.exp(nll.mean()))
    out = json.loads(run([args.ft, "eval", "-m", path, "--perplexity", text_path, "--ctx",
                          str(c), "--fast", "--format", "json", "--threads",
                          str(args.threads)]))
    ft_ppl = find_key(out, "ppl")
    if ft_ppl is None or abs(ft_ppl / llama_ppl - 1) > args.ppl_tol:
        problems.append(f"{ty}: perplexity ft {ft_ppl} vs llama.cpp {llama_ppl:.4f}")
    return llama_ppl, ft_ppl


def find_key(obj, key):
    """The first value under `key` anywhere in a JSON value."""
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], (int, float)):
            return float(obj[key])
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            r = find_key(v, key)
            if r is not None:
                return r
    return None


def ft_generate(ft, model, prompt, n, threads, adapter=None):
    cmd = [ft, "run", "-m", model, "--chat", "-p", prompt, "--temp", "0", "-n", str(n),
           "--print-ids", "--threads", str(threads)]
    if adapter:
        cmd += ["--adapter", adapter]
    return json.loads(run(cmd).strip().splitlines()[-1])


def render_chat(template, prompt, meta):
    import jinja2  # a dependency of llama-cpp-python

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tok = lambda key: meta.get(key)
    return env.from_string(template).render(
        messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
        bos_token=tok("bos"), eos_token=tok("eos"))


def prefix_len(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare_decoding(name, lm, ft_out, n, args, problems):
    """Greedy from ft's prompt ids; returns a result row."""
    ours = ft_out["ids"]
    theirs, steps = lm.greedy(ft_out["prompt_ids"], n)
    k = prefix_len(ours, theirs)
    row = {"match": k, "ft": ours, "llama": theirs, "gap": None}
    if ours == theirs:
        return row
    # Equal up to one side stopping: ft stopped (end of turn) where llama.cpp went on, or the
    # reverse — compare what llama.cpp thought at that step.
    if k < len(steps):
        lg = steps[k]
        mine = ours[k] if k < len(ours) else None
        best = int(np.argmax(lg))
        if mine is not None:
            row["gap"] = float(lg[best] - lg[mine])
        else:
            row["gap"] = None  # ft stopped at an end-of-turn token, llama.cpp did not
    ok = k >= args.min_match and row["gap"] is not None and row["gap"] <= args.max_gap
    if not ok:
        problems.append(
            f"{name}: greedy tokens differ at {k} (ft {ours[k:k + 4]} llama.cpp {theirs[k:k + 4]}, "
            f"gap {row['gap']})")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ft", default="target/release/ft")
    ap.add_argument("--model", action="append", default=[], metavar="TYPE=PATH")
    ap.add_argument("--base", help="base GGUF for the adapter check")
    ap.add_argument("--adapter-dir", help="PEFT adapter folder (ft run --adapter)")
    ap.add_argument("--adapter-gguf", help="the same adapter from ft export-adapter")
    ap.add_argument("-n", type=int, default=16, help="tokens to generate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-match", type=int, default=0,
                    help="leading greedy tokens that must match in every case")
    ap.add_argument("--max-gap", type=float, default=1.0,
                    help="largest llama.cpp logit gap allowed where the two choices differ "
                         "(measured on SmolLM2: up to 0.50 on quantized files, where both "
                         "round the activations to 8 bits but in different blocks)")
    ap.add_argument("--no-greedy", action="store_true", help="skip the greedy decoding check")
    ap.add_argument("--ppl-text", help="text file for the perplexity comparison")
    ap.add_argument("--ppl-chunks", type=int, default=4,
                    help="about this many chunks of 512 tokens are scored (the text is cut)")
    ap.add_argument("--ppl-tol", type=float, default=0.03,
                    help="largest relative difference of the two perplexities (measured on "
                         "~1300 scored tokens: F16 0.02%%, quantized files up to 1.9%%: 8-bit "
                         "activations move each runtime ~1%% from the exact value, and "
                         "llama.cpp rounds K-quant activations in blocks of 256, ft in 32)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    print(f"llama_cpp {llama_cpp.__version__}; {llama_cpp.llama_print_system_info().decode().strip()}")
    problems, results = [], {"models": {}, "tokenizer": {}, "adapter": None}
    models = [m.split("=", 1) for m in args.model]
    ppl_text = None
    if args.ppl_text:
        # Just enough of the text for the chunks (whole lines), so ft scores the same ones.
        import tempfile
        with open(args.ppl_text, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        ppl_text = os.path.join(tempfile.mkdtemp(prefix="ft-llamacpp-ppl"), "text.txt")
        budget = args.ppl_chunks * 512 * 6  # characters: comfortably more than the tokens
        with open(ppl_text, "w", encoding="utf-8") as f:
            f.write("".join(lines)[:budget])
    ref_template = None
    for ty, path in models:
        lm = LlamaModel(path, args.threads)
        res = {"size": os.path.getsize(path), "prompts": []}
        # 1. metadata
        tmpl = lm.chat_template()
        if not tmpl:
            problems.append(f"{ty}: llama.cpp finds no chat template")
        ref_template = ref_template or tmpl
        if tmpl != ref_template:
            problems.append(f"{ty}: chat template differs from the first file's")
        eos = int(lm.meta("tokenizer.ggml.eos_token_id") or -1)
        if eos < 0 or not lm.is_eog(eos):
            problems.append(f"{ty}: EOS {eos} is not an end-of-generation token in llama.cpp")
        id_to_piece = lambda t: lm.llm.detokenize([t], special=True).decode("utf-8", "replace")
        meta = {"bos": id_to_piece(int(lm.meta("tokenizer.ggml.bos_token_id") or 0)),
                "eos": id_to_piece(eos)}
        # 2. tokenizer (once per file: each file carries its own vocabulary)
        mism = 0
        for s in TOKENIZE:
            theirs = lm.tokenize(s)
            ours = json.loads(run([args.ft, "tokenize", "-m", path], stdin=s))
            if ours != theirs:
                mism += 1
                problems.append(f"{ty}: tokenize {s!r}: ft {ours} llama.cpp {theirs}")
        res["tokenize_equal"] = f"{len(TOKENIZE) - mism}/{len(TOKENIZE)}"
        # 3. greedy decoding
        for p in PROMPTS if not args.no_greedy else []:
            out = ft_generate(args.ft, path, p, args.n, args.threads)
            if tmpl:
                rendered = render_chat(tmpl, p, meta)
                if lm.tokenize(rendered) != out["prompt_ids"]:
                    problems.append(f"{ty}: chat prompt {p!r}: llama.cpp's tokens of the "
                                    f"rendered template differ from ft's prompt ids")
            row = compare_decoding(f"{ty} {p!r}", lm, out, args.n, args, problems)
            res["prompts"].append(row)
        if args.ppl_text:
            res["ppl"] = perplexity_pair(args, ty, path, lm, ppl_text, problems)
        results["models"][ty] = res
        del lm

    if args.adapter_gguf and args.adapter_dir and args.base:
        lm = LlamaModel(args.base, args.threads, lora=args.adapter_gguf)
        rows = []
        for p in PROMPTS:
            out = ft_generate(args.ft, args.base, p, args.n, args.threads,
                              adapter=args.adapter_dir)
            rows.append(compare_decoding(f"adapter {p!r}", lm, out, args.n, args, problems))
        results["adapter"] = {"prompts": rows}
        del lm

    # The table.
    ppl_head = " perplexity llama.cpp / ft |" if args.ppl_text else ""
    print(f"\n| file | size | tokenizer | greedy tokens matching (of {args.n}) per prompt | "
          f"gap at the first difference |{ppl_head}")
    print("|---|---:|---|---|---|" + ("---|" if args.ppl_text else ""))
    entries = [(ty, results["models"][ty]) for ty, _ in models]
    if results["adapter"]:
        entries.append(("base + adapter GGUF (LoRA)", results["adapter"]))
    for ty, r in entries:
        m = " / ".join(
            f"{x['match']}" + ("" if x["ft"] == x["llama"] else "*") for x in r["prompts"])
        gaps = ", ".join(f"{x['gap']:.3f}" for x in r["prompts"] if x["gap"] is not None) or "–"
        size = f"{r['size'] / 1e6:.1f} MB" if "size" in r else ""
        ppl = ""
        if args.ppl_text:
            ppl = " %.3f / %.3f |" % r["ppl"] if r.get("ppl") and None not in r["ppl"] else " |"
        print(f"| {ty} | {size} | {r.get('tokenize_equal', '')} | {m} | {gaps} |{ppl}")
    print("(* = the sequences differ somewhere, or have different lengths: one side stopped)")
    for ty, r in entries:
        for p, x in zip(PROMPTS, r["prompts"]):
            if x["ft"] != x["llama"]:
                print(f"  {ty} {p!r}: ft {x['ft']}\n  {' ' * len(ty)} {' ' * len(repr(p))}  "
                      f"llama.cpp {x['llama']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if problems:
        print("\nFAIL")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print("\nPASS")


if __name__ == "__main__":
    main()
