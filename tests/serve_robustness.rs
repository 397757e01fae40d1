//! `ft serve` under bad input and bad luck, against a fake backend over loopback sockets: a table
//! of malformed and hostile requests that must each get the right OpenAI error (and leave the
//! server up), cancellation when a client hangs up, admission control (503 when full), and
//! graceful shutdown. No model, no network beyond 127.0.0.1.

mod serve_support;

use ft::serve::{serve_on, Backend, ServeConfig};
use serde_json::{json, Value};
use serve_support::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

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
    let perm = "permission_error";
    let ok_body = serde_json::to_vec(&ok_chat).unwrap();
    let with_host = |host: &str, extra: &[(&str, &str)]| {
        let mut raw = format!("POST {chat} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n");
        for (k, v) in extra {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n", ok_body.len()));
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&ok_body);
        raw
    };
    let raw_get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
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
        ("temperature denormal", open, with(json!({"temperature": 1e-310})), 400, ir, "temperature"),
        ("top_p too small to keep a token", open, with(json!({"top_p": 1e-300})), 400, ir, "top_p"),
        ("completion top_p too small", open, post_json("/v1/completions", &json!({"prompt": "x", "top_p": 1e-300})), 400, ir, "top_p"),
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
        ("DNS rebinding: another Host", open, with_host("evil.example:8080", &[]), 403, perm, "host_not_allowed"),
        ("DNS rebinding: a name that resolves to 127.0.0.1", open, with_host("127.0.0.1.nip.io", &[]), 403, perm, "host_not_allowed"),
        ("page from another Host", open, raw_get("/", "attacker.test"), 403, perm, "host_not_allowed"),
        ("cross-site Origin", open, request("POST", chat, &[ct[0], ("Origin", "https://evil.example")], b"{}"), 403, perm, "origin_not_allowed"),
        ("Origin null", open, request("POST", chat, &[ct[0], ("Origin", "null")], b"{}"), 403, perm, "origin_not_allowed"),
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
    // Loopback names and origins pass the rebinding guard; with a key, the key decides.
    for (host, origin) in [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("app.localhost", "http://localhost:3000"),
    ] {
        let r = send(open, with_host(host, &[("Origin", origin)])).await;
        assert_eq!(r.status, 200, "{host} {origin}: {}", r.text());
    }
    let r = send(
        keyed,
        with_host("my-server.lan", &[("Authorization", "Bearer sekret")]),
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
