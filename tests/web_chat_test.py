#!/usr/bin/env python3
"""The chat page of `ft serve` (GET /) in headless Chromium, through Playwright's Python API.

    apt-get install -y chromium && pip install playwright     # no `playwright install` needed
    python3 tests/web_chat_test.py -m models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --adapter support=runs/smollm2-support                # starts ft serve
    python3 tests/web_chat_test.py --url http://127.0.0.1:8080  # or a running server

Loads the page, picks a model (the adapter when there is one), types a message, clicks Send,
waits for streamed text to appear and grow, clicks Stop and checks that the text stops growing,
the buttons reset and the server dropped the job; then sends a short second message that runs
to the end. Fails on any console error (e.g. a Content-Security-Policy violation). Saves a
screenshot (default runs/web_chat.png). Without Chromium or Playwright it prints SKIP and exits 0.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True  # no tests/__pycache__ from importing the load test
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_test import ROOT, Server, fail, get  # noqa: E402


def find_chromium(explicit):
    for c in [explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
              shutil.which("chromium"), shutil.which("chromium-browser")]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def skip(why):
    print(f"SKIP: web chat test: {why}")
    sys.exit(0)


def in_flight(url):
    status, raw = get(url, "/health")
    return json.loads(raw)["requests_in_flight"] if status == 200 else None


def wait_for(what, cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    fail(f"timed out after {timeout} s waiting for {what}")


def wait_js(page, what, expr, timeout):
    """Poll a JS expression from Python: the page's Content-Security-Policy forbids eval, which
    Playwright's own wait_for_function needs for its polling."""
    wait_for(what, lambda: page.evaluate(expr), timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (http://host:port); otherwise one is started")
    ap.add_argument("-m", "--model", help="model for the started server")
    ap.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--ft", help="the ft binary (default target/release/ft)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=0)
    ap.add_argument("--api-key", default=os.environ.get("FT_API_KEY"))
    ap.add_argument("--server-log", default=None)
    ap.add_argument("--chromium", help="the Chromium binary (default /usr/bin/chromium)")
    ap.add_argument("--screenshot", default=os.path.join(ROOT, "runs", "web_chat.png"))
    ap.add_argument("--headed", action="store_true")
    args = ap.parse_args()

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip("the playwright package is missing (pip install playwright)")
    chromium = find_chromium(args.chromium)
    if not chromium:
        skip("no Chromium binary (apt-get install -y chromium, or pass --chromium PATH)")

    server = Server(args)
    console_errors = []
    try:
        with sync_playwright() as p:
            try:
                browser = p.chromium.launch(executable_path=chromium, headless=not args.headed,
                                            args=["--no-sandbox"])
            except Exception as e:  # a Chromium that cannot start here is not the page's fault
                server.stop()
                skip(f"{chromium} did not start: {str(e).splitlines()[0]}")
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
            page.on("response", lambda r: r.status >= 400 and console_errors.append(
                f"HTTP {r.status} for {r.request.method} {r.url}"))
            page.goto(server.url + "/")
            check(page.title() == "ft chat", f"title {page.title()!r}")

            # The model list comes from /v1/models.
            has_models = "document.querySelectorAll('#model option[value]:not([value=\"\"])').length > 0"
            if args.api_key:
                # Without the key the page says so; with it, the list loads and the note goes.
                error_shown = "document.querySelector('.msg.error') !== null"
                wait_js(page, "the missing-key message", error_shown, 10)
                page.click("summary")
                page.fill("#key", args.api_key)
                page.dispatch_event("#key", "change")
                wait_js(page, "the model list with the key", has_models, 10)
                check(not page.evaluate(error_shown), "the missing-key message stayed")
                print("ok  API key: the page asked for it, then listed the models")
                console_errors.clear()  # the 401 before the key was expected
            wait_js(page, "the model list", has_models, 10)
            options = page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.textContent])")
            print(f"ok  models in the picker: {options}")
            status, raw = get(server.url, "/v1/models", key=args.api_key)
            listed = json.loads(raw)["data"]
            check([v for v, _ in options] == [m["id"] for m in listed],
                  f"the picker {options} does not match /v1/models {listed}")
            base = next(m["id"] for m in listed if not m.get("parent"))
            adapter = next((m["id"] for m in listed if m.get("parent")), None)
            page.select_option("#model", base)
            check(page.input_value("#model") == base, "base model not selected")
            page.fill("#temperature", "0")
            page.fill("#max_tokens", "1000")
            check(page.is_enabled("#send") and page.is_disabled("#stop"), "buttons before sending")

            # 1. Send, watch the answer stream in, stop it. (SmolLM2 writes this essay at
            # temperature 0 until max_tokens: ~10 s of streaming, time enough to click Stop.)
            question = "Write a 2000-word essay about the history of Rome."
            page.fill("#input", question)
            page.click("#send")
            check(page.input_value("#input") == "", "the input box was not cleared")
            user = page.locator(".msg.user").last
            check(question in user.inner_text(), "the question is not shown")
            body = page.locator(".msg.assistant").last.locator("div").nth(1)
            first = wait_for("the first streamed text", lambda: body.inner_text(), 60)
            check(page.is_enabled("#stop") and page.is_disabled("#send"), "buttons while streaming")
            # Watch it grow, one update after another, each extending the last.
            seen = [first]
            deadline = time.time() + 60
            while len(seen[-1]) < 150 and time.time() < deadline:
                t = body.inner_text()
                if t != seen[-1]:
                    check(t.startswith(seen[-1]), f"streamed text was rewritten: {seen[-1]!r} -> {t!r}")
                    seen.append(t)
                time.sleep(0.02)
            check(len(seen) >= 3, f"the text did not grow while streaming: {seen}")
            grown = seen[-1]
            print(f"ok  streaming: {len(seen)} updates seen, {len(first)} -> {len(grown)} chars")
            check(in_flight(server.url) == 1, "the server is not running the request")
            page.click("#stop")
            wait_js(page, "Stop to be disabled", "document.getElementById('stop').disabled", 5)
            check(page.is_enabled("#send"), "Send is not enabled after Stop")
            stopped = body.inner_text()
            meta = page.locator(".msg.assistant").last.locator(".meta").inner_text()
            check("stopped by you" in meta, f"meta after Stop: {meta!r}")
            time.sleep(1.0)
            check(body.inner_text() == stopped, "text kept growing after Stop")
            wait_for("the server to drop the stopped job", lambda: in_flight(server.url) == 0, 10)
            print(f"ok  stop: {len(stopped)} chars, meta {meta!r}, server job cancelled")

            # 2. A short follow-up on the adapter (when there is one) that runs to its end; the
            # history carries the stopped reply.
            model = adapter or base
            page.select_option("#model", model)
            check(page.input_value("#model") == model, f"{model} not selected")
            page.fill("#max_tokens", "24")
            page.fill("#input", "Thanks! And how do I contact support?")
            page.press("#input", "Enter")  # Enter sends
            wait_js(page, "the second reply to finish",
                    "document.querySelectorAll('.msg.assistant').length === 2 && "
                    "document.getElementById('stop').disabled && "
                    "document.querySelectorAll('.msg.assistant')[1].querySelector('.meta').textContent",
                    120)
            last = page.locator(".msg.assistant").last
            reply = last.locator("div").nth(1).inner_text()
            meta2 = last.locator(".meta").inner_text()
            check(reply.strip(), "empty second reply")
            check("error" not in (last.get_attribute("class") or ""), f"second reply failed: {reply!r}")
            check("tok/s" in meta2 and ("done" in meta2 or "max tokens" in meta2), f"meta: {meta2!r}")
            check(page.locator(".msg.user").count() == 2, "user messages")
            print(f"ok  second reply: {reply[:60]!r} ({meta2})")

            os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
            page.screenshot(path=args.screenshot, full_page=True)
            print(f"ok  screenshot: {args.screenshot}")
            browser.close()
        check(not console_errors, f"browser console errors: {console_errors}")
    finally:
        server.stop()
    print("web chat page: all checks passed")


def check(cond, msg):
    if not cond:
        fail(msg)


if __name__ == "__main__":
    main()
