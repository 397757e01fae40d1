#!/usr/bin/env python3
"""Check a running `ft serve` with the official `openai` Python package.

    pip install openai
    ft serve ... &                      # then:
    python tests/openai_client.py http://127.0.0.1:8080/v1

The base URL comes from argv[1], else $FT_BASE_URL, else http://127.0.0.1:8080/v1; the key from
$FT_API_KEY (only needed when the server runs with --api-key). $FT_ADAPTER names an adapter that
must be listed; without it, the first listed adapter (a model with a `parent`) is used if any.
Exits 1 on the first failed check, 0 when all pass.
"""

import os
import sys

try:
    import openai
except ImportError:
    sys.exit("the openai package is missing: pip install openai")

MAX_TOKENS = 24


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(usage.prompt_tokens > 0, f"{what}: prompt_tokens {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"{what}: completion_tokens {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: total_tokens {usage.total_tokens} is not the sum",
    )


def chat(client, model):
    what = f"chat ({model})"
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name three colours."},
        ],
        max_tokens=MAX_TOKENS,
        temperature=0,
        seed=1,
    )
    check(r.object == "chat.completion", f"{what}: object {r.object!r}")
    check(r.id.startswith("chatcmpl-"), f"{what}: id {r.id!r}")
    check(r.model == model, f"{what}: model {r.model!r}")
    check(len(r.choices) == 1, f"{what}: {len(r.choices)} choices")
    c = r.choices[0]
    check(c.message.role == "assistant", f"{what}: role {c.message.role!r}")
    check(bool(c.message.content and c.message.content.strip()), f"{what}: empty content")
    check(c.finish_reason in ("stop", "length"), f"{what}: finish_reason {c.finish_reason!r}")
    check_usage(r.usage, what)
    check(r.usage.completion_tokens <= MAX_TOKENS, f"{what}: more than max_tokens")
    print(f"ok  {what}: {c.message.content.strip()[:60]!r} [{c.finish_reason}]")


def chat_stream(client, model):
    what = f"chat stream ({model})"
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, roles, ids = "", None, None, set(), set()
    for chunk in stream:
        ids.add(chunk.id)
        check(chunk.object == "chat.completion.chunk", f"{what}: object {chunk.object!r}")
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.add(ch.delta.role)
            text += ch.delta.content or ""
            if ch.finish_reason:
                finish = ch.finish_reason
    check(len(ids) == 1, f"{what}: chunks carry {len(ids)} different ids")
    check(roles == {"assistant"}, f"{what}: roles {roles}")
    check(bool(text.strip()), f"{what}: empty content")
    check(finish in ("stop", "length"), f"{what}: finish_reason {finish!r}")
    check_usage(usage, what)
    print(f"ok  {what}: {text.strip()[:60]!r} [{finish}]")


def completions(client, model):
    what = f"completions ({model})"
    r = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=MAX_TOKENS, temperature=0
    )
    check(r.object == "text_completion", f"{what}: object {r.object!r}")
    c = r.choices[0]
    check(bool(c.text.strip()), f"{what}: empty text")
    check(c.finish_reason in ("stop", "length"), f"{what}: finish_reason {c.finish_reason!r}")
    check_usage(r.usage, what)
    print(f"ok  {what}: {c.text.strip()[:60]!r} [{c.finish_reason}]")

    what = f"completions stream ({model})"
    text, finish = "", None
    for chunk in client.completions.create(
        model=model, prompt="1, 2, 3,", max_tokens=8, temperature=0, stream=True
    ):
        for ch in chunk.choices:
            text += ch.text or ""
            finish = ch.finish_reason or finish
    check(bool(text.strip()), f"{what}: empty text")
    check(finish in ("stop", "length"), f"{what}: finish_reason {finish!r}")
    print(f"ok  {what}: {text.strip()[:60]!r} [{finish}]")


def errors(client, model):
    try:
        client.chat.completions.create(
            model="no-such-model-xyz", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        fail("unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"unknown model: status {e.status_code}")
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, n=2
        )
        fail("n=2 was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"n=2: status {e.status_code}")
    print("ok  errors: unknown model -> 404, n=2 -> 400")


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FT_BASE_URL", "http://127.0.0.1:8080/v1")
    key = os.environ.get("FT_API_KEY", "not-needed")
    # No retries: a failure should show at once, not after backoff.
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
    print(f"ft serve at {base}")

    models = client.models.list().data
    check(len(models) > 0, "no models listed")
    for m in models:
        check(m.object == "model" and m.id, f"bad model entry {m}")
    ids = [m.id for m in models]
    print(f"ok  models: {ids}")
    base_model = next((m.id for m in models if not getattr(m, "parent", None)), ids[0])

    chat(client, base_model)
    chat_stream(client, base_model)
    completions(client, base_model)
    errors(client, base_model)

    adapter = os.environ.get("FT_ADAPTER") or next(
        (m.id for m in models if getattr(m, "parent", None)), None
    )
    if adapter:
        check(adapter in ids, f"adapter {adapter!r} is not listed in {ids}")
        chat(client, adapter)
        chat_stream(client, adapter)
    else:
        print("--  no adapter listed; adapter checks skipped")
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError as e:
        fail(f"cannot reach the server: {e}")
    except openai.APIError as e:
        fail(f"{type(e).__name__}: {e}")
