//! `ft serve`'s HTTP layer against a fake backend, over real loopback sockets with a hand-written
//! HTTP/1.1 client: the OpenAI response shapes, full and streamed (`/v1/models`, `/health`, the
//! chat page, chat and text completions). No model, no network beyond 127.0.0.1.

mod serve_support;

use ft::serve::{Prompt, ServeConfig};
use ft::tokenizer::Message;
use serde_json::{json, Value};
use serve_support::*;

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
