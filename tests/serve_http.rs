//! `ft serve`'s HTTP layer against a fake backend, over real loopback sockets with a hand-written
//! HTTP/1.1 client: the OpenAI response shapes (full and streamed), a table of malformed and
//! hostile requests that must each get the right OpenAI error, cancellation when a client hangs
//! up, admission control, and graceful shutdown. No model, no network beyond 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ft::generate::StopMatcher;
use ft::serve::{
    serve_on, Backend, CancelToken, FinishReason, GenEvent, GenRequest, ModelCard, Prompt,
    ServeConfig, ServeError,
};
use ft::tokenizer::Message;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

const CONTEXT: usize = 64;

/// Replies `echo:` + the words of the last message, one word per token. Magic words in the
/// prompt: `LONG` (context exceeded), `HANG` (ticks until cancelled), `SLOW` (10 ticks, 30 ms
/// apart), `FAILMID` (one token, then an error), `BUSY` (submit refuses).
#[derive(Default)]
struct Fake {
    last: Mutex<Option<Seen>>,
    cancels: Mutex<Vec<CancelToken>>,
}

#[derive(Debug, Clone)]
struct Seen {
    model: String,
    prompt: Prompt,
    max_tokens: usize,
    temperature: f64,
    top_p: f64,
    seed: Option<u64>,
    stop: Vec<String>,
}

impl Backend for Fake {
    fn models(&self) -> Vec<ModelCard> {
        vec![
            ModelCard {
                id: "tiny".into(),
                owned_by: "ft".into(),
                created: 1_700_000_000,
                parent: None,
            },
            ModelCard {
                id: "tiny-sql".into(),
                owned_by: "ft".into(),
                created: 1_700_000_001,
                parent: Some("tiny".into()),
            },
        ]
    }

    fn context_len(&self) -> usize {
        CONTEXT
    }

    fn submit(&self, req: GenRequest) -> Result<(), ServeError> {
        let text = match &req.prompt {
            Prompt::Chat(m) => m.last().map(|m| m.content.clone()).unwrap_or_default(),
            Prompt::Text(t) => t.clone(),
        };
        if text.contains("BUSY") {
            return Err(ServeError::busy());
        }
        *self.last.lock().unwrap() = Some(Seen {
            model: req.model.clone(),
            prompt: req.prompt.clone(),
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            stop: req.stop.clone(),
        });
        self.cancels.lock().unwrap().push(req.cancel.clone());
        tokio::spawn(run(req, text));
        Ok(())
    }
}

async fn run(req: GenRequest, text: String) {
    let tx = req.events;
    let prompt_tokens = match &req.prompt {
        Prompt::Chat(m) => m.iter().map(|m| m.content.split_whitespace().count()).sum(),
        Prompt::Text(t) => t.split_whitespace().count(),
    };
    if text.contains("LONG") || prompt_tokens > CONTEXT {
        let e = ServeError::context_length_exceeded(prompt_tokens.max(CONTEXT + 1), CONTEXT);
        let _ = tx.try_send(GenEvent::Error(e));
        return;
    }
    let _ = tx.try_send(GenEvent::Started { prompt_tokens });
    let tick = |ms| tokio::time::sleep(Duration::from_millis(ms));
    if text.contains("HANG") {
        // Until the HTTP layer cancels (or 20 s, so a broken test cannot leak forever).
        for _ in 0..1000 {
            if req.cancel.is_cancelled() {
                return;
            }
            let _ = tx.try_send(GenEvent::Token("tick ".into()));
            tick(20).await;
        }
        return;
    }
    if text.contains("FAILMID") {
        let _ = tx.try_send(GenEvent::Token("partial".into()));
        let _ = tx.try_send(GenEvent::Error(ServeError::internal(
            "the runner fell over",
        )));
        return;
    }
    let mut tokens = vec!["echo:".to_string()];
    tokens.extend(text.split_whitespace().map(|w| format!(" {w}")));
    let slow = text.contains("SLOW");
    let mut stop = StopMatcher::new(&req.stop);
    let mut completion_tokens = 0;
    let mut finish_reason = FinishReason::Stop;
    for (i, t) in tokens.iter().enumerate() {
        if i == req.max_tokens {
            finish_reason = FinishReason::Length;
            break;
        }
        if slow {
            tick(30).await;
        }
        completion_tokens += 1;
        let (out, stopped) = stop.push(t);
        if !out.is_empty() {
            let _ = tx.try_send(GenEvent::Token(out));
        }
        if stopped {
            break;
        }
    }
    let rest = stop.flush();
    if !rest.is_empty() {
        let _ = tx.try_send(GenEvent::Token(rest));
    }
    let _ = tx.try_send(GenEvent::Done {
        finish_reason,
        prompt_tokens,
        completion_tokens,
    });
}

async fn start(cfg: ServeConfig) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend: Arc<dyn Backend> = fake.clone();
    tokio::spawn(serve_on(listener, cfg, backend, std::future::pending()));
    (addr, fake)
}

// ---- a small HTTP/1.1 client ----

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body, in order.
    fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .flat_map(|block| block.lines())
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn post_json(path: &str, body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap();
    request("POST", path, &[("Content-Type", "application/json")], &body)
}

// tokio's `io-util` feature is off in this crate, so read and write through readiness.
async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// Send `raw` and read until the server closes. Writing runs beside reading, so a server that
/// answers before reading a huge body (413) is heard; write errors after that are expected.
async fn send(addr: SocketAddr, raw: Vec<u8>) -> Resp {
    // Shared, not split: the write side stays open until the answer is in, since a
    // half-close would read as a hang-up.
    let stream = Arc::new(TcpStream::connect(addr).await.unwrap());
    let w = stream.clone();
    let writer = tokio::spawn(async move {
        let _ = write_all(&w, &raw).await;
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read_some(&stream, &mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("response within 10 s");
    writer.abort();
    parse(&buf)
}

fn parse(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

fn user(content: &str) -> Value {
    json!([{ "role": "user", "content": content }])
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..250 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

// ---- the tests ----

#[tokio::test]
async fn models_page_and_health() {
    let (addr, _) = start(ServeConfig::default()).await;
    let r = send(addr, request("GET", "/v1/models", &[], b"")).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "tiny-sql"]);
    assert_eq!(v["data"][1]["object"], "model");
    assert_eq!(v["data"][1]["parent"], "tiny");
    assert_eq!(v["data"][0]["created"], 1_700_000_000);

    let r = send(addr, request("GET", "/v1/models/tiny-sql", &[], b"")).await;
    assert_eq!((r.status, r.json()["id"].as_str()), (200, Some("tiny-sql")));
    let r = send(addr, request("GET", "/v1/models/gpt-9", &[], b"")).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let r = send(addr, request("GET", "/", &[], b"")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    for needle in [
        "<title>ft chat</title>",
        "/v1/models",
        "AbortController",
        "getReader",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "page must not load from a CDN"
    );

    // No icon, but no 404 in the browser's console either.
    let r = send(addr, request("GET", "/favicon.ico", &[], b"")).await;
    assert_eq!(r.status, 204);

    let r = send(addr, request("GET", "/health", &[], b"")).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn chat_non_stream() {
    let (addr, fake) = start(ServeConfig::default()).await;
    let body = json!({
        "model": "tiny-sql",
        "messages": [
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": "hello there world"}
        ],
        "max_completion_tokens": 10, "temperature": 0.2, "top_p": 0.9, "seed": 7,
        "stop": "never", "user": "u1", "frequency_penalty": 0, "presence_penalty": 0.0
    });
    let r = send(addr, post_json("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "tiny-sql");
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], "echo: hello there world");
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
    );

    let seen = fake.last.lock().unwrap().clone().unwrap();
    assert_eq!(seen.model, "tiny-sql");
    assert_eq!(
        (seen.max_tokens, seen.temperature, seen.top_p, seen.seed),
        (10, 0.2, 0.9, Some(7))
    );
    assert_eq!(seen.stop, vec!["never".to_string()]);
    let Prompt::Chat(m) = seen.prompt else {
        panic!("chat prompt")
    };
    assert_eq!(
        m[0],
        Message {
            role: "system".into(),
            content: "be terse".into()
        }
    );

    // No model: the first listed. Truncated by max_tokens: finish_reason length.
    let body = json!({"messages": user("one two three four"), "max_tokens": 2});
    let v = send(addr, post_json("/v1/chat/completions", &body))
        .await
        .json();
    assert_eq!(v["model"], "tiny");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: one");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    // A stop string spanning tokens is cut and not returned.
    let body = json!({"messages": user("alpha beta gamma"), "stop": ["a gam", "zzz"]});
    let v = send(addr, post_json("/v1/chat/completions", &body))
        .await
        .json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: alpha bet");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_stream() {
    let (addr, _) = start(ServeConfig::default()).await;
    let body = json!({"model": "tiny", "messages": user("red green blue"), "stream": true,
                      "stream_options": {"include_usage": true}});
    let r = send(addr, post_json("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(
            (c["id"].as_str(), c["object"].as_str()),
            (Some(id), Some("chat.completion.chunk"))
        );
        assert_eq!(c["model"], "tiny");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: red green blue");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..n - 2]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["total_tokens"], 7);

    // Without include_usage there is no usage chunk.
    let body = json!({"messages": user("x"), "stream": true});
    let data = send(addr, post_json("/v1/chat/completions", &body))
        .await
        .sse_data();
    assert!(data.iter().all(|d| !d.contains("\"usage\"")), "{data:?}");

    // A runner error after the stream began arrives as an error event.
    let body = json!({"messages": user("FAILMID"), "stream": true});
    let r = send(addr, post_json("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, 200);
    let last: Value = serde_json::from_str(r.sse_data().last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(!r.text().contains("[DONE]"));
}

#[tokio::test]
async fn completions_full_stream_and_echo() {
    let (addr, fake) = start(ServeConfig::default()).await;
    let v = send(
        addr,
        post_json(
            "/v1/completions",
            &json!({"model": "tiny", "prompt": "once upon"}),
        ),
    )
    .await
    .json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "echo: once upon");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    let seen = fake.last.lock().unwrap().clone().unwrap();
    assert_eq!(seen.prompt, Prompt::Text("once upon".into()));
    assert_eq!(seen.max_tokens, 16, "OpenAI's completions default");

    let body = json!({"prompt": ["a b"], "echo": true, "stream": true});
    let data = send(addr, post_json("/v1/completions", &body))
        .await
        .sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "a becho: a b");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

/// Each row: a request, the server it goes to (open or with an API key), and the expected
/// status, error `type` and `code` or `param`.
#[tokio::test]
async fn bad_requests_get_openai_errors_and_the_server_survives() {
    let (open, _) = start(ServeConfig::default()).await;
    let keyed_cfg = ServeConfig {
        api_key: Some("sekret".into()),
        ..ServeConfig::default()
    };
    let (keyed, _) = start(keyed_cfg).await;
    let chat = "/v1/chat/completions";
    let ct = [("Content-Type", "application/json")];
    let ok_chat = json!({"messages": user("hi")});
    let with = |extra: Value| {
        let mut v = ok_chat.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post_json(chat, &v)
    };
    // An ignored field still gets parsed: serde_json's recursion limit must hold there too.
    let deep = format!(r#"{{"extra":{}"#, "[".repeat(100_000));
    let mut huge = br#"{"messages":[{"role":"user","content":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10 << 20));
    huge.extend_from_slice(br#""}]}"#);

    let ir = "invalid_request_error";
    let (auth, busy) = ("authentication_error", "server_error");
    let models = "/v1/models";
    let deep = deep.as_bytes();
    let wrong_key = [ct[0], ("Authorization", "Bearer sekreT")];
    let image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
    // (what, server, request, status, error type, expected code or param ("" = either may be null))
    #[rustfmt::skip]
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, SocketAddr, Vec<u8>, u16, &str, &str)> = vec![
        ("invalid JSON", open, request("POST", chat, &ct, br#"{"messages": [}"#), 400, ir, "invalid_json"),
        ("not JSON at all", open, request("POST", chat, &ct, b"\xff\xfe garbage"), 400, ir, "invalid_json"),
        ("deeply nested", open, request("POST", chat, &ct, deep), 400, ir, "invalid_json"),
        ("body is an array", open, request("POST", chat, &ct, b"[]"), 400, ir, ""),
        ("messages not an array", open, post_json(chat, &json!({"messages": "hi"})), 400, ir, "messages"),
        ("missing messages", open, post_json(chat, &json!({"model": "tiny"})), 400, ir, "messages"),
        ("empty messages", open, post_json(chat, &json!({"messages": []})), 400, ir, "messages"),
        ("message without role", open, post_json(chat, &json!({"messages": [{"content": "x"}]})), 400, ir, "messages[0]"),
        ("image content", open, post_json(chat, &image), 400, ir, "messages[0].content[0]"),
        ("temperature as a string", open, with(json!({"temperature": "hot"})), 400, ir, "temperature"),
        ("temperature out of range", open, with(json!({"temperature": 7})), 400, ir, "temperature"),
        ("unknown model", open, with(json!({"model": "gpt-9"})), 404, ir, "model_not_found"),
        ("n = 2", open, with(json!({"n": 2})), 400, ir, "n"),
        ("max_tokens 0", open, with(json!({"max_tokens": 0})), 400, ir, "max_tokens"),
        ("max_tokens negative", open, with(json!({"max_tokens": -5})), 400, ir, "max_tokens"),
        ("max_tokens huge", open, with(json!({"max_tokens": 1_000_000_000_000i64})), 400, ir, "max_tokens"),
        ("prompt longer than context", open, post_json(chat, &json!({"messages": user("LONG")})), 400, ir, "context_length_exceeded"),
        ("completion prompt as tokens", open, post_json("/v1/completions", &json!({"prompt": [1, 2, 3]})), 400, ir, "prompt"),
        ("queue full", open, post_json(chat, &json!({"messages": user("BUSY")})), 503, busy, "server_busy"),
        ("10 MB body", open, request("POST", chat, &ct, &huge), 413, ir, "request_too_large"),
        ("wrong content-type", open, request("POST", chat, &[("Content-Type", "text/plain")], b"{}"), 415, ir, "unsupported_media_type"),
        ("no content-type", open, request("POST", chat, &[], b"{}"), 415, ir, "unsupported_media_type"),
        ("unknown route", open, post_json("/v1/nope", &ok_chat), 404, ir, "unknown_url"),
        ("GET on a POST route", open, request("GET", chat, &[], b""), 405, ir, "method_not_allowed"),
        ("DELETE on models", open, request("DELETE", models, &[], b""), 405, ir, "method_not_allowed"),
        ("missing API key", keyed, post_json(chat, &ok_chat), 401, auth, "invalid_api_key"),
        ("wrong API key", keyed, request("POST", chat, &wrong_key, b"{}"), 401, auth, "invalid_api_key"),
        ("key without Bearer", keyed, request("GET", models, &[("Authorization", "sekret")], b""), 401, auth, "invalid_api_key"),
    ];
    assert!(table.len() >= 12);
    for (name, addr, raw, status, kind, code_or_param) in table {
        let r = send(addr, raw).await;
        assert_eq!(r.status, status, "{name}: {}", r.text());
        let v = r.json();
        let e = &v["error"];
        assert_eq!(e["type"], kind, "{name}: {v}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {v}"
        );
        for key in ["param", "code"] {
            assert!(
                e.get(key).is_some(),
                "{name}: `{key}` must be present (null if unknown): {v}"
            );
        }
        if !code_or_param.is_empty() {
            assert!(
                e["code"] == code_or_param || e["param"] == code_or_param,
                "{name}: expected code or param {code_or_param}: {v}"
            );
        }
        if status == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{name}");
        }
    }

    // The server is still up and the key works (the scheme is case-insensitive).
    let r = send(open, post_json(chat, &ok_chat)).await;
    assert_eq!(
        (
            r.status,
            r.json()["choices"][0]["message"]["content"].as_str()
        ),
        (200, Some("echo: hi"))
    );
    let auth = [ct[0], ("Authorization", "bearer sekret")];
    let r = send(
        keyed,
        request("POST", chat, &auth, &serde_json::to_vec(&ok_chat).unwrap()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The page and health need no key, so a browser can load the page and then ask for one.
    assert_eq!(send(keyed, request("GET", "/", &[], b"")).await.status, 200);
    assert_eq!(
        send(keyed, request("GET", "/health", &[], b""))
            .await
            .status,
        200
    );
}

/// Open a streaming request, read its first bytes, then vanish.
async fn hang_up_mid_stream(addr: SocketAddr, body: &Value) {
    let s = TcpStream::connect(addr).await.unwrap();
    write_all(&s, &post_json("/v1/chat/completions", body))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("tick") {
        let n = read_some(&s, &mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
}

#[tokio::test]
async fn client_hang_up_cancels_the_job() {
    let (addr, fake) = start(ServeConfig::default()).await;
    hang_up_mid_stream(addr, &json!({"messages": user("HANG"), "stream": true})).await;
    let token = fake.cancels.lock().unwrap()[0].clone();
    until("stream cancel flag", || token.is_cancelled()).await;

    // Non-streaming: the client gives up while the answer is still being generated.
    let s = TcpStream::connect(addr).await.unwrap();
    write_all(
        &s,
        &post_json("/v1/chat/completions", &json!({"messages": user("HANG")})),
    )
    .await
    .unwrap();
    until("second job", || fake.cancels.lock().unwrap().len() == 2).await;
    drop(s);
    let token = fake.cancels.lock().unwrap()[1].clone();
    until("non-stream cancel flag", || token.is_cancelled()).await;

    // A finished request is not reported as cancelled.
    let r = send(
        addr,
        post_json("/v1/chat/completions", &json!({"messages": user("ok")})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!fake.cancels.lock().unwrap()[2].is_cancelled());
}

#[tokio::test]
async fn full_server_answers_503_then_recovers() {
    let cfg = ServeConfig {
        parallel: 1,
        queue: 0,
        ..ServeConfig::default()
    };
    let (addr, fake) = start(cfg).await;
    let s = TcpStream::connect(addr).await.unwrap();
    write_all(
        &s,
        &post_json(
            "/v1/chat/completions",
            &json!({"messages": user("HANG"), "stream": true}),
        ),
    )
    .await
    .unwrap();
    until("job admitted", || fake.cancels.lock().unwrap().len() == 1).await;
    let r = send(
        addr,
        post_json("/v1/chat/completions", &json!({"messages": user("hi")})),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(s);
    // The slot frees once the server notices the hang-up.
    let mut status = 0;
    for _ in 0..100 {
        let r = send(
            addr,
            post_json("/v1/chat/completions", &json!({"messages": user("hi")})),
        )
        .await;
        status = r.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_streams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let backend: Arc<dyn Backend> = fake.clone();
    let server = tokio::spawn(serve_on(listener, ServeConfig::default(), backend, async {
        let _ = stop_rx.await;
    }));
    let body = json!({"messages": user("SLOW a b c d e f g h"), "stream": true});
    let in_flight = tokio::spawn(send(addr, post_json("/v1/chat/completions", &body)));
    until("job started", || fake.cancels.lock().unwrap().len() == 1).await;
    stop_tx.send(()).unwrap();

    let r = in_flight.await.unwrap();
    assert_eq!(
        r.sse_data().last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.text()
    );
    assert!(r.text().contains(" h"));
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
