//! The fake backend and the hand-written HTTP/1.1 client shared by the `ft serve` tests
//! (`tests/serve_api.rs`, `tests/serve_robustness.rs`).
#![allow(dead_code)]

use ft::generate::StopMatcher;
use ft::serve::{
    serve_on, Backend, CancelToken, FinishReason, GenEvent, GenRequest, ModelCard, Prompt,
    ServeConfig, ServeError,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub const CONTEXT: usize = 64;

/// Replies `echo:` + the words of the last message, one word per token. Magic words in the
/// prompt: `LONG` (context exceeded), `HANG` (ticks until cancelled), `SLOW` (10 ticks, 30 ms
/// apart), `FAILMID` (one token, then an error), `BUSY` (submit refuses).
#[derive(Default)]
pub struct Fake {
    pub last: Mutex<Option<Seen>>,
    pub cancels: Mutex<Vec<CancelToken>>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
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

pub async fn run(req: GenRequest, text: String) {
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

pub async fn start(cfg: ServeConfig) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend: Arc<dyn Backend> = fake.clone();
    tokio::spawn(serve_on(listener, cfg, backend, std::future::pending()));
    (addr, fake)
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .flat_map(|block| block.lines())
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

pub fn post_json(path: &str, body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap();
    request("POST", path, &[("Content-Type", "application/json")], &body)
}

// tokio's `io-util` feature is off in this crate, so read and write through readiness.
pub async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
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

pub async fn read_some(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
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
pub async fn send(addr: SocketAddr, raw: Vec<u8>) -> Resp {
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

pub fn parse(buf: &[u8]) -> Resp {
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

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
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

pub fn user(content: &str) -> Value {
    json!([{ "role": "user", "content": content }])
}

pub async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..250 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
