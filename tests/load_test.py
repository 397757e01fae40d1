#!/usr/bin/env python3
"""Load test for `ft serve` on loopback (stdlib only).

    python3 tests/load_test.py -m models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --adapter support=runs/smollm2-support            # starts ft serve --parallel 4
    python3 tests/load_test.py --url http://127.0.0.1:8080 --adapter-name support   # a running one

1. Reference: every distinct request (prompt x model) once, alone, one after the other.
2. Load: --clients threads x --requests each, all released at once, a mix of chat and text
   completions, streamed and not, on the base model and on the adapter; temperature 0.
   Every answer must succeed and be identical to its reference (text and finish reason): the
   runner interleaves sequences, so any cross-talk between them (KV caches, adapter slots,
   scratch buffers) shows up as a different or garbled answer.
3. Prints requests/s, completion tokens/s and p50/p95/max latency.

--decode-check: also measures one client's decode speed through the server (streamed
/v1/completions, 128 tokens, time from the first to the last content chunk, with nothing else
running) and compares it with `ft bench -p 128 -n 128 -r 1` on the same model and thread count,
alternating the two --decode-reps times; the median of the server/bench ratios must be within
--tolerance (10%). Timings mean little on a machine busy with other work (it warns then).

Exits 1 on any failure, 0 when everything passed.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Varied prompts: short and long, questions the support adapter was tuned for and general ones.
CHAT_PROMPTS = [
    "How long is the return window?",
    "Name three colours.",
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "Can I change the delivery address after ordering?",
    "Explain what a hash table is to a ten-year-old.",
    "List the first five prime numbers.",
    "My package arrived damaged. What should I do?",
    "Translate 'good morning' into German and Spanish.",
    "Give me two tips for writing clear emails.",
]
TEXT_PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class Server:
    """An `ft serve` child process on a free loopback port (or an existing URL)."""

    def __init__(self, args):
        self.proc = None
        self.log = None
        if args.url:
            self.url = args.url.rstrip("/")
            if self.url.endswith("/v1"):
                self.url = self.url[:-3]
            return
        ft = args.ft or os.path.join(ROOT, "target", "release", "ft")
        if not os.path.exists(ft):
            fail(f"{ft} not found (cargo build --release, or pass --ft / --url)")
        if not args.model:
            fail("give -m MODEL (to start ft serve) or --url URL (of a running one)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [ft, "--threads", str(args.threads), "serve", "-m", args.model, "--port", str(port),
               "--parallel", str(args.parallel), "--queue", str(max(64, args.clients))]
        for a in args.adapter:
            cmd += ["--adapter", a]
        if args.api_key:
            cmd += ["--api-key", args.api_key]
        self.log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL
        print("starting:", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"ft serve exited with {self.proc.returncode} (log: {args.server_log})")
            try:
                status, _ = get(self.url, "/health", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        fail("ft serve did not come up in 120 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _conn(url, timeout):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)


def get(url, path, timeout=30, key=None):
    c = _conn(url, timeout)
    try:
        c.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def post(url, path, body, key=None, timeout=600, on_chunk=None):
    """POST JSON. Non-streamed: returns (status, parsed body). Streamed: reads the SSE events,
    calls on_chunk(time, text) per content delta, and returns (status, assembled answer)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    c = _conn(url, timeout)
    try:
        c.request("POST", path, body=json.dumps(body), headers=headers)
        r = c.getresponse()
        if r.status != 200 or not body.get("stream"):
            raw = r.read()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, {"raw": raw.decode("utf-8", "replace")}
        text, finish, usage, done, ids = [], None, None, False, set()
        buf = b""
        while True:
            line = r.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if line:
                if line.startswith(b"data:"):
                    buf += line[5:].lstrip(b" ")
                continue
            if not buf:
                continue
            data, buf = buf, b""
            if data == b"[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                return 500, chunk
            ids.add(chunk.get("id"))
            if chunk.get("usage"):
                usage = chunk["usage"]
            for ch in chunk.get("choices", []):
                piece = (ch.get("delta") or {}).get("content") if "delta" in ch else ch.get("text")
                if piece:
                    text.append(piece)
                    if on_chunk:
                        on_chunk(time.perf_counter(), piece)
                finish = ch.get("finish_reason") or finish
        if not done:
            return 500, {"raw": "stream ended without [DONE]"}
        if len(ids) != 1:
            return 500, {"raw": f"stream chunks carry {len(ids)} ids"}
        return 200, {"text": "".join(text), "finish_reason": finish, "usage": usage}
    finally:
        c.close()


def normalise(resp, endpoint, stream):
    """(text, finish_reason, completion_tokens) of a 200 answer."""
    if stream:
        u = resp.get("usage") or {}
        return resp["text"], resp["finish_reason"], u.get("completion_tokens")
    ch = resp["choices"][0]
    text = ch["message"]["content"] if endpoint == "chat" else ch["text"]
    return text, ch["finish_reason"], resp["usage"]["completion_tokens"]


def make_request(key, max_tokens, stream):
    endpoint, model, prompt = key
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/v1/chat/completions", body
    body["prompt"] = prompt
    return "/v1/completions", body


def run_one(url, key, args, stream):
    path, body = make_request(key, args.max_tokens, stream)
    t = time.perf_counter()
    status, resp = post(url, path, body, args.api_key)
    dt = time.perf_counter() - t
    if status != 200:
        return None, dt, f"HTTP {status}: {json.dumps(resp)[:300]}"
    try:
        return normalise(resp, key[0], stream), dt, None
    except (KeyError, IndexError, TypeError) as e:
        return None, dt, f"malformed answer ({e!r}): {json.dumps(resp)[:300]}"


def workload(models, clients, per_client):
    """(key, stream) per client per request: every chat prompt on every model, text prompts on
    the base, streamed and not, spread so concurrent clients ask different things."""
    keys = []
    for i, p in enumerate(CHAT_PROMPTS):
        keys.append(("chat", models[i % len(models)], p))
        if len(models) > 1:
            keys.append(("chat", models[(i + 1) % len(models)], p))
    for p in TEXT_PROMPTS:
        keys.append(("text", models[0], p))
    plan = []
    for c in range(clients):
        row = []
        for r in range(per_client):
            k = keys[(c * 7 + r * 3) % len(keys)]
            row.append((k, (c + r) % 2 == 0))
        plan.append(row)
    return keys, plan


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = (len(xs) - 1) * q
    lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def load_test(url, args, models):
    keys, plan = workload(models, args.clients, args.requests)
    used = sorted({k for row in plan for k, _ in row})
    print(f"{len(used)} distinct requests ({len(keys)} in the pool), max_tokens {args.max_tokens}")

    # 1. References, one at a time (non-streamed).
    ref, solo = {}, []
    t0 = time.perf_counter()
    for k in used:
        ans, dt, err = run_one(url, k, args, stream=False)
        solo.append(dt)
        if err:
            fail(f"reference {k}: {err}")
        ref[k] = ans
        if args.verbose:
            print(f"  ref {k[0]:4} {k[1][:20]:20} {k[2][:30]!r:34} -> {ans[0][:50]!r} [{ans[1]}]")
    print(f"references: {len(ref)} answers alone in {time.perf_counter() - t0:.1f} s "
          f"(latency p50 {pct(solo, .5):.2f} s)")
    # A streamed answer must equal the non-streamed one too.
    k = used[0]
    ans, _, err = run_one(url, k, args, stream=True)
    if err or ans != ref[k]:
        fail(f"streamed answer differs from non-streamed for {k}: {ans} vs {ref[k]} ({err})")

    # 2. Everything at once.
    results = [[None] * len(row) for row in plan]
    start = threading.Barrier(len(plan) + 1)

    def client(ci):
        start.wait()
        for ri, (k, stream) in enumerate(plan[ci]):
            results[ci][ri] = run_one(url, k, args, stream)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(plan))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    # 3. Check and report.
    failures, lat, tokens = [], [], 0
    for ci, row in enumerate(plan):
        for ri, (k, stream) in enumerate(row):
            ans, dt, err = results[ci][ri]
            lat.append(dt)
            where = f"client {ci} request {ri} ({k[0]}, {k[1]}, {'stream' if stream else 'full'}, {k[2]!r})"
            if err:
                failures.append(f"{where}: {err}")
            elif ans != ref[k]:
                failures.append(f"{where}: answer differs from the one alone\n"
                                f"    alone:      {ref[k]!r}\n    concurrent: {ans!r}")
            else:
                tokens += ans[2] or 0
    n = sum(len(r) for r in plan)
    print(f"load: {len(plan)} clients x {args.requests} requests = {n} in {wall:.1f} s: "
          f"{n / wall:.2f} requests/s, {tokens / wall:.1f} completion tokens/s")
    print(f"latency: p50 {pct(lat, .5):.2f} s, p95 {pct(lat, .95):.2f} s, max {max(lat):.2f} s")
    if failures:
        for f in failures[:10]:
            print("  " + f, file=sys.stderr)
        fail(f"{len(failures)} of {n} concurrent requests failed or differ from their reference")
    print(f"ok  all {n} concurrent answers succeeded and equal their sequential references")


def decode_once(url, args, model):
    """One streamed /v1/completions of --decode-tokens tokens; tok/s between the first and the
    last content chunk (so prefill and HTTP setup are excluded), like `ft bench`'s tg test,
    which times decoding after a one-token prompt."""
    prompt = ("Here is a long, detailed essay about the history of the city of Rome, from its "
              "founding to the present day.\n\n")
    times = []
    status, resp = post(url, "/v1/completions", {
        "model": model, "prompt": prompt, "max_tokens": args.decode_tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }, args.api_key, on_chunk=lambda t, _s: times.append(t))
    if status != 200:
        fail(f"decode check: HTTP {status}: {resp}")
    n = (resp.get("usage") or {}).get("completion_tokens") or 0
    if n < args.decode_tokens // 2 or len(times) < 2:
        fail(f"decode check: only {n} tokens ({resp.get('finish_reason')}); pick another prompt")
    # Tokens decoded between the first chunk and the last: all but the first one.
    return (n - 1) / (times[-1] - times[0]), n


def bench_once(args):
    ft = args.ft or os.path.join(ROOT, "target", "release", "ft")
    cmd = [ft, "--threads", str(args.threads), "bench", "-m", args.model, "-p", "128",
           "-n", str(args.decode_tokens), "-r", "1", "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return next(r for r in json.loads(out) if r["test"].startswith("tg"))["tokens_per_sec"]


def decode_check(url, args, model):
    """Server decode vs `ft bench`, alternating (the server is idle while ft bench runs), so
    each pair sees about the same machine load; passes when the median of the per-pair ratios
    is within --tolerance."""
    print(f"decode check: {args.decode_reps} x (one streamed request of {args.decode_tokens} "
          f"tokens, then ft --threads {args.threads} bench -p 128 -n {args.decode_tokens} -r 1)")
    served, bench = [], []
    decode_once(url, args, model)  # warm-up
    for _ in range(args.decode_reps):
        tps, n = decode_once(url, args, model)
        served.append(tps)
        bench.append(bench_once(args))
        print(f"  server {tps:6.1f} tok/s ({n} tokens)   ft bench {bench[-1]:6.1f} tok/s   "
              f"ratio {tps / bench[-1]:.2f}")
    ratio = statistics.median(s / b for s, b in zip(served, bench))
    print(f"decode: server median {statistics.median(served):.1f} (best {max(served):.1f}) tok/s, "
          f"ft bench median {statistics.median(bench):.1f} (best {max(bench):.1f}) tok/s; "
          f"server/bench median of pairs {ratio * 100:.0f}%")
    if max(bench) > 1.3 * min(bench):
        print(f"  warning: ft bench varied from {min(bench):.1f} to {max(bench):.1f} tok/s: the "
              f"machine is busy with other work, so this comparison is unreliable")
    if ratio < 1 - args.tolerance:
        fail(f"server decode is more than {args.tolerance:.0%} slower than ft bench")
    print("ok  server decode speed within tolerance of ft bench")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (http://host:port); otherwise one is started")
    ap.add_argument("-m", "--model", help="model for the started server and for ft bench")
    ap.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                    help="adapter(s) for the started server")
    ap.add_argument("--adapter-name", help="adapter to use (default: every listed adapter)")
    ap.add_argument("--ft", help="the ft binary (default target/release/ft)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=5, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--api-key", default=os.environ.get("FT_API_KEY"))
    ap.add_argument("--server-log", default=None, help="file for the started server's stderr")
    ap.add_argument("--decode-check", action="store_true",
                    help="compare one client's decode tok/s with ft bench (needs -m)")
    ap.add_argument("--decode-only", action="store_true", help="only the decode check")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--decode-reps", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.decode_only:
        args.decode_check = True
    if args.decode_check and not args.model:
        fail("--decode-check needs -m MODEL (for ft bench)")

    server = Server(args)
    try:
        status, raw = get(server.url, "/v1/models", key=args.api_key)
        if status != 200:
            fail(f"GET /v1/models: HTTP {status}")
        data = json.loads(raw)["data"]
        base = next(m["id"] for m in data if not m.get("parent"))
        adapters = [m["id"] for m in data if m.get("parent")]
        if args.adapter_name:
            if args.adapter_name not in adapters:
                fail(f"adapter {args.adapter_name!r} not listed ({adapters})")
            adapters = [args.adapter_name]
        models = [base] + adapters
        print(f"ft serve at {server.url}: models {models}")
        if not args.decode_only:
            load_test(server.url, args, models)
        if args.decode_check:
            decode_check(server.url, args, base)
    finally:
        server.stop()
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
