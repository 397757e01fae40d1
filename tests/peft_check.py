#!/usr/bin/env python3
"""ft <-> Hugging Face PEFT adapter interchange, checked against PyTorch.

Builds a tiny random Llama with transformers (f32 safetensors, a byte-level tokenizer with
ChatML specials), then:

  1. ft -> PEFT: `ft train` (base unquantized) writes an adapter; `PeftModel.from_pretrained`
     loads it (every tensor, r, alpha, scaling checked); the mean next-token NLL of a few texts
     (`ft eval --perplexity --format json`) and the greedy continuation (`ft run --temp 0
     --exact`) must equal PyTorch's.
  2. PEFT -> ft: `get_peft_model` + random non-zero lora_B, `save_pretrained`; `ft eval` /
     `ft run --adapter` must give PyTorch's NLL and greedy tokens (plain LoRA, rsLoRA on a
     subset of modules, and rank_pattern/alpha_pattern); LoRA on lm_head and DoRA, which ft
     cannot apply, must be refused.

  For the first text of each case the NLL is also compared position by position (ft's mean NLL
  of every prefix gives each token's NLL). The base config.json is what transformers writes
  (>= 5: `rope_parameters`), with a non-default rope_theta so that misreading it shows.
  3. Report only: an adapter trained on a Q8_0 base, evaluated by ft on a Q8_0 GGUF of the base
     against PyTorch's f32 base + the same adapter.

The lm_head rows of every token outside printable ASCII are zero, so a greedy continuation is
plain text and ft's stdout can be compared byte for byte with PyTorch's tokens.

Prints SKIP and exits 0 when torch / transformers / peft / tokenizers are not importable;
exits 1 when a comparison fails.

    python3 tests/peft_check.py [--ft target/release/ft] [--keep DIR]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

try:
    import torch
    import transformers
    import peft
    import safetensors.torch
    import tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
except Exception as e:  # noqa: BLE001 - any import problem means "cannot run here"
    print(f"SKIP: peft_check needs torch, transformers, peft, tokenizers ({e})")
    sys.exit(0)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NLL_TOL = 1e-4  # mean next-token NLL, exact f32 paths on both sides
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 256 + 2
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXTS = [
    "What is code 3? Code 3 means reboot the hub 4 times.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times.",
    "user: How long is the return window?\nassistant: Thirty days.",
]
PROMPTS = ["What is code 2?", "Hello, world"]
N_PREDICT = 24

failures = []
worst_token = [0.0]  # max |Δ| of a single next-token NLL over the per-position checks


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


# ---------------------------------------------------------------- the tiny base model


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (as ft's testing::byte_to_char)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def write_tokenizer(d):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    assert tok.token_to_id("<|im_end|>") == EOS
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False,
             "chat_template": CHATML},
            f,
        )
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": EOS}, f)
    return tok


def make_base(d, seed=0):
    cfg = LlamaConfig(
        vocab_size=256 + len(SPECIALS), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        rms_norm_eps=1e-5, rope_theta=50000.0, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=EOS, pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2:  # O(1) activations, as ft's testing::random_weights
                s = 1.7 / math.sqrt(p.shape[1])
                p.uniform_(-s, s)
            else:
                p.uniform_(0.9, 1.1)
        keep = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        keep[0x20:0x7F] = True
        model.lm_head.weight[~keep] = 0.0
    model.save_pretrained(d, safe_serialization=True)
    return write_tokenizer(d)


def load_base(d):
    m = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


# ---------------------------------------------------------------- ft side


def ft(args, *cmd, stdin=None):
    p = subprocess.run([args.ft, *cmd], input=stdin, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"FAIL: `ft {' '.join(cmd)}` exited {p.returncode}")
    return p.stdout


def ft_fails(args, *cmd):
    """Run ft expecting an error; returns its stderr (empty string when it succeeded)."""
    p = subprocess.run([args.ft, *cmd], capture_output=True, text=True, cwd=ROOT)
    return p.stderr.strip() if p.returncode != 0 else ""


def ft_nll(args, model, adapter, text_file, exact=True):
    """ft's mean next-token NLL over the whole file (one window: ctx = stride = 512)."""
    cmd = ["eval", "-m", model, "--perplexity", text_file, "--ctx", "512", "--stride", "512",
           "--format", "json", "--threads", str(args.threads)]
    if not exact:
        cmd.append("--fast")
    if adapter:
        cmd += ["--adapter", adapter]
    out = json.loads(ft(args, *cmd))
    r = out[0] if isinstance(out, list) else out
    return r["perplexity"]["mean_nll"], r["perplexity"]["scored_tokens"]


def ft_greedy(args, model, adapter, prompt, exact=True):
    cmd = ["run", "-m", model, "-p", prompt, "--temp", "0", "-n", str(N_PREDICT), "--no-special",
           "--threads", str(args.threads)]
    if exact:
        cmd.append("--exact")
    if adapter:
        cmd += ["--adapter", adapter]
    out = ft(args, *cmd)
    return out[:-1] if out.endswith("\n") else out


# ---------------------------------------------------------------- PyTorch side


@torch.no_grad()
def torch_nll(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0].double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    t = torch.tensor(ids[1:])
    return -lp.gather(1, t[:, None]).mean().item()


@torch.no_grad()
def torch_token_nll(model, ids):
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return (-lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]).tolist()


def ft_token_nll(args, ft_model, adapter, text, d):
    """ft's NLL of each next token, from the mean NLL of every prefix (ASCII: 1 byte = 1 token):
    sum_k = (k - 1) * mean(prefix of k tokens), and token k's NLL = sum_{k+1} - sum_k."""
    sums = [0.0]
    for k in range(2, len(text) + 1):
        p = os.path.join(d, "prefix.txt")
        with open(p, "w") as f:
            f.write(text[:k])
        m, n = ft_nll(args, ft_model, adapter, p)
        assert n == k - 1
        sums.append(m * n)
    return [b - a for a, b in zip(sums, sums[1:])]


@torch.no_grad()
def torch_greedy(model, tok, prompt):
    ids = tok.encode(prompt, add_special_tokens=False).ids
    out = model.generate(
        input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=N_PREDICT, do_sample=False, eos_token_id=EOS, pad_token_id=EOS,
    )[0, len(ids):].tolist()
    return tok.decode(out, skip_special_tokens=False)


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def compare(args, tag, base_dir, ft_model, adapter, pt_model, tok, texts, tol=NLL_TOL,
            exact=True, strict=True):
    """NLL per text and greedy continuations; returns the max |ΔNLL|."""
    worst = 0.0
    for i, text_file in enumerate(texts):
        with open(text_file) as f:
            text = f.read()
        ids = json.loads(ft(args, "tokenize", "-m", base_dir, "--no-special", stdin=text))
        if strict:
            check(ids == tok.encode(text, add_special_tokens=False).ids,
                  f"{tag}: text {i}: ft and the Python tokenizer give the same {len(ids)} ids")
        a, n = ft_nll(args, ft_model, adapter, text_file, exact=exact)
        b = torch_nll(pt_model, ids)
        d = abs(a - b)
        worst = max(worst, d)
        line = f"{tag}: text {i}: mean NLL ft {a:.7f} torch {b:.7f} |Δ| {d:.2e} ({n} tokens)"
        if strict:
            check(n == len(ids) - 1 and d <= tol, line)
        else:
            print("info " + line)
        if i == 0 and text.isascii() and exact:
            # Position by position: ft's next-token log-probs of the target equal PyTorch's.
            a = ft_token_nll(args, ft_model, adapter, text, os.path.dirname(text_file))
            b = torch_token_nll(pt_model, ids)
            dt = max(abs(x - y) for x, y in zip(a, b))
            line = f"{tag}: text {i}: per-token NLL at all {len(b)} positions, max |Δ| {dt:.2e}"
            if strict:
                worst_token[0] = max(worst_token[0], dt)
                check(len(a) == len(b) and dt <= tol, line)
            else:
                print("info " + line)
    for p in PROMPTS:
        a = ft_greedy(args, ft_model, adapter, p, exact=exact)
        b = torch_greedy(pt_model, tok, p)
        k = common_prefix(a, b)
        line = f"{tag}: greedy after {p!r}: {k}/{len(b)} tokens agree (ft {a!r}, torch {b!r})"
        if strict:
            check(a == b and len(b) == N_PREDICT, line)
        else:
            print("info " + line)
    return worst


# ---------------------------------------------------------------- the checks


def write_data(d):
    lines = []
    for i in range(24):
        q = f"What is code {i % 6}?"
        a = f"Code {i % 6} means reboot the hub {i % 6 + 1} times."
        lines.append(json.dumps({"messages": [{"role": "user", "content": q},
                                              {"role": "assistant", "content": a}]}))
    p = os.path.join(d, "train.jsonl")
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    return p


def write_recipe(d, base_dir, train, out, quantize):
    y = f"""model:
  path: {base_dir}
  quantize: {quantize}
dataset:
  train: {train}
  max_seq_len: 96
lora:
  r: 4
  alpha: 8
  dropout: 0.0
  target_modules: all-linear
train:
  max_steps: 6
  batch_size: 4
  lr: 2.0e-2
  scheduler: constant
  output_dir: {out}
logging:
  tensorboard: false
  metrics_jsonl: false
"""
    p = os.path.join(d, f"recipe-{quantize}.yaml")
    with open(p, "w") as f:
        f.write(y)
    return p


def load_peft(base_dir, adir):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = PeftModel.from_pretrained(load_base(base_dir), adir).eval()
    for x in w:
        if "adapter" in str(x.message).lower() or "key" in str(x.message).lower():
            print(f"warn PEFT: {x.message}")
    return m


def check_peft_loaded(m, adir, r, alpha):
    """Every tensor in the file is a PEFT parameter with the same value, and the scale is right."""
    sd = safetensors.torch.load_file(os.path.join(adir, "adapter_model.safetensors"))
    psd = get_peft_model_state_dict(m)
    check(set(sd) == set(psd),
          f"ft->PEFT: PEFT's adapter keys are the file's ({len(sd)} tensors; "
          f"missing {sorted(set(sd) - set(psd))[:3]}, extra {sorted(set(psd) - set(sd))[:3]})")
    same = all(torch.equal(sd[k], psd[k]) for k in sd if k in psd)
    check(same, "ft->PEFT: every loaded tensor equals the file's (no transpose)")
    nz = sum(int(sd[k].abs().max() > 0) for k in sd if ".lora_B." in k)
    check(nz == len([k for k in sd if ".lora_B." in k]), f"ft->PEFT: all {nz} lora_B are non-zero")
    pc = m.peft_config["default"]
    check(pc.r == r and float(pc.lora_alpha) == alpha and not pc.use_rslora,
          f"ft->PEFT: config r {pc.r}, lora_alpha {pc.lora_alpha}, use_rslora {pc.use_rslora}")
    q = m.base_model.model.model.layers[0].self_attn.q_proj
    check(abs(q.scaling["default"] - alpha / r) < 1e-12,
          f"ft->PEFT: scaling {q.scaling['default']} = alpha / r")


def ft_to_peft(args, d, base_dir, tok, texts):
    print("== ft train -> PEFT (base unquantized)", flush=True)
    train = write_data(d)
    out = os.path.join(d, "ft-adapter")
    rec = write_recipe(d, base_dir, train, out, "none")
    ft(args, "train", rec, "--no-progress", "--threads", str(args.threads))
    with open(os.path.join(out, "adapter_config.json")) as f:
        print("     adapter_config.json: " + json.dumps(json.load(f)))
    m = load_peft(base_dir, out)
    check_peft_loaded(m, out, 4, 8.0)
    base = load_base(base_dir)
    # The adapter must matter, or an ignored adapter would pass.
    with open(texts[0]) as f:
        ids = tok.encode(f.read(), add_special_tokens=False).ids
    moved = abs(torch_nll(m, ids) - torch_nll(base, ids))
    check(moved > 100 * NLL_TOL, f"ft->PEFT: the adapter moves the NLL by {moved:.4f}")
    db = compare(args, "base", base_dir, base_dir, None, base, tok, texts)
    da = compare(args, "ft->PEFT", base_dir, base_dir, out, m, tok, texts)
    return db, da


def random_peft_adapter(base_dir, adir, seed, **lora_kw):
    torch.manual_seed(seed)
    m = get_peft_model(load_base(base_dir), LoraConfig(lora_dropout=0.0, **lora_kw))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3)
    m.save_pretrained(adir)
    return m.eval()


def peft_to_ft(args, d, base_dir, tok, texts):
    worst = 0.0
    cases = [
        ("plain", dict(r=4, lora_alpha=8, target_modules="all-linear")),
        ("rslora-subset", dict(r=8, lora_alpha=4, use_rslora=True,
                               target_modules=["q_proj", "v_proj", "down_proj"])),
        ("rank/alpha pattern", dict(r=4, lora_alpha=8, target_modules="all-linear",
                                    rank_pattern={"down_proj": 2, "layers.1.self_attn.q_proj": 6},
                                    alpha_pattern={"v_proj": 32, "model.layers.0.mlp.up_proj": 1})),
    ]
    for i, (name, kw) in enumerate(cases):
        print(f"== PEFT ({name}) -> ft", flush=True)
        adir = os.path.join(d, f"peft-adapter-{i}")
        m = random_peft_adapter(base_dir, adir, 100 + i, **kw)
        with open(os.path.join(adir, "adapter_config.json")) as f:
            c = json.load(f)
        print("     adapter_config.json: " + json.dumps(
            {k: c.get(k) for k in ("r", "lora_alpha", "use_rslora", "target_modules",
                                   "rank_pattern", "alpha_pattern", "peft_version")}))
        worst = max(worst, compare(args, f"PEFT->ft {name}", base_dir, base_dir, adir, m, tok,
                                   texts))
    # What ft cannot apply must be an error, not an adapter applied in part.
    refused = [
        ("LoRA on lm_head", dict(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])),
        ("DoRA", dict(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)),
    ]
    for i, (name, kw) in enumerate(refused):
        adir = os.path.join(d, f"peft-refused-{i}")
        random_peft_adapter(base_dir, adir, 200 + i, **kw)
        err = ft_fails(args, "eval", "-m", base_dir, "--adapter", adir, "--perplexity", texts[0],
                       "--ctx", "512", "--stride", "512", "--format", "json")
        check(bool(err), f"PEFT->ft {name}: ft refuses it ({err.splitlines()[-1] if err else 'accepted'})")
    return worst


def quantized(args, d, base_dir, tok, texts):
    print("== report only: adapter trained on a Q8_0 base; ft on a Q8_0 GGUF vs torch f32", flush=True)
    train = os.path.join(d, "train.jsonl")
    out = os.path.join(d, "ft-adapter-q8")
    rec = write_recipe(d, base_dir, train, out, "q8_0")
    ft(args, "train", rec, "--no-progress", "--threads", str(args.threads))
    gguf = os.path.join(d, "base.Q8_0.gguf")
    ft(args, "quantize", base_dir, "--type", "Q8_0", "--out", gguf, "--no-progress",
       "--threads", str(args.threads))
    m = load_peft(base_dir, out)
    # The adapter itself is exact on the f32 base; the base quantization is what differs.
    d_exact = compare(args, "Q8_0-trained adapter, f32 base", base_dir, base_dir, out, m, tok,
                      texts)
    d_q = compare(args, "Q8_0 GGUF base (exact f32 math)", base_dir, gguf, out, m, tok, texts,
                  strict=False)
    d_fast = compare(args, "Q8_0 GGUF base (fast kernels)", base_dir, gguf, out, m, tok, texts,
                     exact=False, strict=False)
    return d_exact, d_q, d_fast


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ft", default=os.path.join(ROOT, "target", "release", "ft"))
    ap.add_argument("--keep", help="work in this folder and keep it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-quantized", action="store_true", help="skip the Q8_0 report")
    args = ap.parse_args()
    args.ft = os.path.abspath(args.ft)
    if not os.path.exists(args.ft):
        raise SystemExit(f"FAIL: {args.ft} does not exist (cargo build --release)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, tokenizers {tokenizers.__version__}", flush=True)

    tmp = None
    if args.keep:
        d = os.path.abspath(args.keep)
        os.makedirs(d, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ft-peft-check-")
        d = tmp.name
    base_dir = os.path.join(d, "base")
    tok = make_base(base_dir)
    texts = []
    for i, t in enumerate(TEXTS):
        p = os.path.join(d, f"text{i}.txt")
        with open(p, "w") as f:
            f.write(t)
        texts.append(p)

    db, da = ft_to_peft(args, d, base_dir, tok, texts)
    dr = peft_to_ft(args, d, base_dir, tok, texts)
    q = None if args.no_quantized else quantized(args, d, base_dir, tok, texts)

    print("== summary")
    print(f"max |Δ mean NLL| base {db:.2e}, ft->PEFT {da:.2e}, PEFT->ft {dr:.2e}; "
          f"max |Δ| of one token's NLL {worst_token[0]:.2e} (tolerance {NLL_TOL})")
    if q:
        print(f"Q8_0: adapter on f32 base {q[0]:.2e}; Q8_0 GGUF base exact {q[1]:.2e}, "
              f"fast {q[2]:.2e} (report only)")
    if tmp:
        tmp.cleanup()
    if failures:
        print(f"FAILED: {len(failures)} check(s)")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
