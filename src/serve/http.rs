//! The axum router: routes, API-key check, body limit, and OpenAI-shaped errors for everything
//! that can go wrong before a request reaches the runner (bad JSON, unknown route, wrong method).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::api::{ChatCompletionRequest, CompletionRequest};
use super::backend::{Backend, ServeError};
use super::completion::{generate, Endpoint};
use super::response::{ModelList, ModelObject};
use super::ServeConfig;

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
pub(crate) struct AppState {
    pub backend: Arc<dyn Backend>,
    pub cfg: Arc<ServeConfig>,
    /// Admission control: one permit per generation running or queued.
    pub slots: Arc<Semaphore>,
}

/// The whole HTTP surface; `serve` runs it, tests drive it directly.
pub fn router(cfg: ServeConfig, backend: Arc<dyn Backend>) -> Router {
    let permits = cfg.parallel.max(1) + cfg.queue;
    let body_limit = cfg.max_body_bytes;
    let state = AppState {
        backend,
        cfg: Arc::new(cfg),
        slots: Arc::new(Semaphore::new(permits)),
    };
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/", get(page))
        .route("/favicon.ico", get(favicon))
        .route("/health", get(health))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard_local))
        .with_state(state)
}

/// DNS-rebinding and cross-site protection for a local server without an API key: a web page
/// the user visits could otherwise point its own host name at 127.0.0.1, or post from another
/// origin, and use the model. When bound to a loopback address and no key is set, the `Host`
/// must name the loopback (`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`) and an `Origin`,
/// when the browser sends one, must be a loopback origin too. With a key, the key decides.
async fn guard_local(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.cfg.api_key.is_none() && is_loopback_name(&st.cfg.host) {
        let h = req.headers();
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let refused = match (host, origin) {
            (Some(host), _) if !is_loopback_name(host_name(host)) => {
                Some(("host_not_allowed", format!("Host `{host}`")))
            }
            (_, Some(origin)) if !is_loopback_origin(origin) => {
                Some(("origin_not_allowed", format!("Origin `{origin}`")))
            }
            _ => None,
        };
        if let Some((code, what)) = refused {
            let msg = format!(
                "{what} is not this local server: without --api-key, ft serve on a loopback \
                 address answers only requests addressed to localhost (set --api-key to serve \
                 other names)"
            );
            return ApiError(ServeError::new(403, "permission_error", msg).with_code(code))
                .into_response();
        }
    }
    next.run(req).await
}

/// The host name of a `Host` header value (`name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `http://localhost:8080` and the like; anything else (another site, `null` from a file or a
/// sandboxed frame) is not.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    is_loopback_name(host_name(rest.split('/').next().unwrap_or("")))
}

/// A [`ServeError`] as an HTTP response: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub(crate) struct ApiError(pub ServeError);

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": error_object(&e) });
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// The inner `error` object, also sent as an SSE event when a stream fails midway.
pub(crate) fn error_object(e: &ServeError) -> serde_json::Value {
    serde_json::json!({
        "message": e.message,
        "type": e.kind,
        "param": e.param,
        "code": e.code,
    })
}

/// `Json<T>` whose rejections are OpenAI errors naming the bad field. The body must be a JSON
/// object: serde would also build a struct from an array, which no client means to send.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError(unsupported_media_type()));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(bytes_rejection(e)))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let valid = || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        if first.is_some_and(|&b| b != b'{') && valid() {
            return Err(ApiError(ServeError::new(
                400,
                "invalid_request_error",
                "the request body must be a JSON object",
            )));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(ApiError(json_rejection(r))),
        }
    }
}

/// `application/json`, with parameters (`; charset=utf-8`) or a `+json` suffix, like axum's check.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn json_rejection(r: JsonRejection) -> ServeError {
    match r {
        JsonRejection::JsonDataError(e) => {
            // axum's text is "<prefix>: <path>: <serde message>"; the path is the param.
            let text = e.body_text();
            let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
            match detail.split_once(": ") {
                Some((path, msg)) if is_field_path(path) => {
                    ServeError::invalid(path, format!("invalid value for `{path}`: {msg}"))
                }
                _ => ServeError::new(
                    400,
                    "invalid_request_error",
                    format!("invalid request: {detail}"),
                ),
            }
        }
        JsonRejection::JsonSyntaxError(e) => {
            let text = e.body_text();
            let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
            ServeError::new(
                400,
                "invalid_request_error",
                format!("the request body is not valid JSON: {detail}"),
            )
            .with_code("invalid_json")
        }
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::BytesRejection(e) => bytes_rejection(e),
        other => ServeError::new(
            other.status().as_u16(),
            "invalid_request_error",
            other.body_text(),
        ),
    }
}

fn unsupported_media_type() -> ServeError {
    ServeError::new(
        415,
        "invalid_request_error",
        "send the body as JSON with `Content-Type: application/json`",
    )
    .with_code("unsupported_media_type")
}

fn bytes_rejection(e: BytesRejection) -> ServeError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ServeError::new(
            413,
            "invalid_request_error",
            "the request body is too large",
        )
        .with_code("request_too_large")
    } else {
        ServeError::new(e.status().as_u16(), "invalid_request_error", e.body_text())
    }
}

/// `messages[0].content`, `temperature`: serde_path_to_error's rendering of a field path.
fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

async fn require_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.cfg.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim());
        let err = match given {
            None => Some("missing API key: send `Authorization: Bearer <key>`"),
            Some(k) if !same_secret(k.as_bytes(), key.as_bytes()) => Some("incorrect API key"),
            Some(_) => None,
        };
        if let Some(msg) = err {
            return ApiError(
                ServeError::new(401, "authentication_error", msg).with_code("invalid_api_key"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= (x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

async fn page() -> Response {
    let mut resp = Html(PAGE).into_response();
    let h = resp.headers_mut();
    // The page is self-contained: nothing but this origin, inline script and style.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Browsers ask for `/favicon.ico` on every page load; answer "no icon" instead of a 404 that
/// shows as an error in the page's console.
async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn health(State(st): State<AppState>) -> Response {
    let busy = st.cfg.parallel.max(1) + st.cfg.queue - st.slots.available_permits();
    Json(serde_json::json!({ "status": "ok", "requests_in_flight": busy })).into_response()
}

async fn list_models(State(st): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: st
            .backend
            .models()
            .into_iter()
            .map(ModelObject::from)
            .collect(),
    })
}

async fn get_model(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match st.backend.models().into_iter().find(|m| m.id == id) {
        Some(card) => Ok(Json(ModelObject::from(card)).into_response()),
        None => Err(ServeError::model_not_found(&id).into()),
    }
}

async fn chat(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let job = req.validate(st.backend.context_len(), st.cfg.default_max_tokens)?;
    generate(st, job, Endpoint::Chat).await
}

async fn completions(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let job = req.validate(st.backend.context_len())?;
    generate(st, job, Endpoint::Completion).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        ServeError::new(
            404,
            "invalid_request_error",
            format!("unknown URL: {method} {}", uri.path()),
        )
        .with_code("unknown_url"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        ServeError::new(
            405,
            "invalid_request_error",
            format!("method {method} is not allowed on {}", uri.path()),
        )
        .with_code("method_not_allowed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        assert!(!same_secret(b"x", b""));
    }

    #[test]
    fn field_paths() {
        assert!(is_field_path("messages[0].content"));
        assert!(is_field_path("temperature"));
        assert!(!is_field_path("invalid type"));
        assert!(!is_field_path(""));
    }
}
