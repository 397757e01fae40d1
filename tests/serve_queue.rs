//! The real runner's queue over HTTP: a client that hangs up while its request waits must not
//! keep a place in the queue (the next request would get 503 while `/health` shows a free slot).
//! A small random model decodes one long answer that holds the only slot meanwhile.

mod serve_support;

use ft::serve::runner::{Runner, RunnerConfig};
use ft::serve::{serve_on, Backend, ServeConfig};
use serde_json::json;
use serve_support::{post_json, read_some, request, send, user, write_all};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A random model slow enough to hold a slot for seconds, whose vocabulary has no stop token
/// (its specials are renamed), so the long answer runs until it is cancelled.
fn slow_model(dir: &Path) {
    let mut cfg = ft::testing::tiny_config();
    cfg.hidden_size = 256;
    cfg.intermediate_size = 512;
    cfg.head_dim = 64;
    cfg.num_layers = 4;
    cfg.max_position_embeddings = 4096;
    ft::testing::write_hf_dir(dir, &cfg, &ft::testing::random_weights(&cfg, 5).unwrap()).unwrap();
    let mut vocab = ft::testing::tiny_vocab();
    for (i, t) in vocab.tokens[256..].iter_mut().enumerate() {
        *t = format!("<|special{i}|>");
    }
    let json = vocab.build().unwrap().to_string(false).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    let tc = json!({"chat_template": ft::tokenizer::template::CHATML});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    std::fs::write(dir.join("generation_config.json"), "{}").unwrap();
}

async fn start(dir: &Path) -> SocketAddr {
    let loaded = ft::model::load(dir, &ft::model::LoadOptions::default()).unwrap();
    assert!(loaded.tokenizer.stop.is_empty());
    let template =
        ft::tokenizer::ChatTemplate::choose(None, loaded.template.as_ref(), &loaded.tokenizer)
            .unwrap();
    let runner = Runner::start(
        loaded,
        template,
        RunnerConfig {
            parallel: 1,
            queue: 1,
            mode: ft::quant::MatmulMode::Exact,
            base_name: "slow".into(),
            adapters: Vec::new(),
            max_prompt_tokens: None,
        },
    );
    let backend: Arc<dyn Backend> = Arc::new(runner);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ServeConfig {
        parallel: 1,
        queue: 1,
        ..ServeConfig::default()
    };
    tokio::spawn(serve_on(listener, cfg, backend, std::future::pending()));
    addr
}

async fn in_flight(addr: SocketAddr) -> u64 {
    let r = send(addr, request("GET", "/health", &[], b"")).await;
    r.json()["requests_in_flight"].as_u64().unwrap()
}

async fn in_flight_is(addr: SocketAddr, n: u64) {
    for _ in 0..500 {
        if in_flight(addr).await == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("requests_in_flight never reached {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_that_hangs_up_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    slow_model(dir.path());
    let addr = start(dir.path()).await;
    let chat = "/v1/chat/completions";

    // A: a long streamed answer holds the only slot.
    let a = TcpStream::connect(addr).await.unwrap();
    let long =
        json!({"messages": user("go on"), "stream": true, "max_tokens": 4000, "temperature": 0});
    write_all(&a, &post_json(chat, &long)).await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(read_some(&a, &mut buf).await.unwrap() > 0);

    // B: waits in the queue, then its client gives up.
    let b = TcpStream::connect(addr).await.unwrap();
    let short = json!({"messages": user("hi"), "max_tokens": 1});
    write_all(&b, &post_json(chat, &short)).await.unwrap();
    in_flight_is(addr, 2).await;
    drop(b);
    in_flight_is(addr, 1).await;

    // C: takes the place B left (it waits for A, it is not turned away).
    let c = tokio::spawn(send(addr, post_json(chat, &short)));
    for _ in 0..500 {
        if c.is_finished() || in_flight(addr).await == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(a); // A's client leaves: the runner moves on to C.
    let r = c.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
