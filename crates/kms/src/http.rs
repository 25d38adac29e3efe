//! HTTP and WebSocket transports: thin adapters from bytes to [`Engine::handle`].
//!
//! - `GET /kms/info`: `{"uri": "kms://<domain>", "key": <static public JWK with kid and x5c>,
//!   "keys": [{"status": "current" | "next" | "previous", "key": <JWK>}, …]}` (every static key served)
//! - `POST /kms/messages`: one compact message (`application/jose`), or a JSON
//!   batch `{"kmsMessages": [...]}` answered in the same shape. Protocol errors
//!   travel inside the protocol; only unreadable transport input gets a bare
//!   HTTP error (413 oversize, 415 wrong type, 400 malformed, 429 throttled).
//! - `GET /kms/ws`: text frames carry compact messages both ways; the KMS
//!   pushes a signed 499 when a session used on that socket is deleted.
//! - `GET /.well-known/custos-kms`: `{"uri", "url"}`, where this KMS answers
//!   (how another org's KMS finds it from its `kms://` domain).
//! - `GET /healthz`, `GET /metrics` (Prometheus).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::{Engine, Throttled};

/// Largest single compact message accepted (the protocol layer's own limit).
pub const MAX_MESSAGE: usize = kms_protocol::channel::MAX_MESSAGE_LEN;
/// Largest request body (a batch).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH: usize = 100;

/// What the transport needs.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// `GET /kms/info`'s body, made once.
    pub info: Arc<serde_json::Value>,
    /// `GET /.well-known/custos-kms`'s body: where this KMS answers (federation discovery).
    pub discovery: Arc<serde_json::Value>,
    /// Renders Prometheus metrics.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/kms/info", get(info))
        .route(crate::federation::WELL_KNOWN, get(discovery))
        .route("/kms/messages", post(messages))
        .route("/kms/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Refuses a declared oversize body before reading any of it.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

async fn info(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json((*s.info).clone())
}

async fn discovery(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json((*s.discovery).clone())
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.engine.health().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "store unavailable"}))).into_response(),
    }
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are disabled").into_response(),
    }
}

#[derive(Deserialize, Serialize)]
struct Batch {
    #[serde(rename = "kmsMessages")]
    kms_messages: Vec<String>,
}

fn bare(status: StatusCode, msg: &'static str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

async fn handle_one(engine: &Engine, msg: &str, source: &str) -> Result<String, Throttled> {
    let t = std::time::Instant::now();
    let r = engine.handle(msg, Some(source)).await;
    metrics::histogram!("kms_message_seconds").record(t.elapsed().as_secs_f64());
    metrics::counter!("kms_messages_total", "outcome" => if r.is_ok() { "answered" } else { "throttled" }).increment(1);
    r
}

async fn messages(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = peer.ip().to_string();
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ctype = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match ctype.as_str() {
        "application/jose" | "text/plain" => {
            if body.len() > MAX_MESSAGE {
                return bare(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
            }
            let Ok(text) = std::str::from_utf8(&body) else {
                return bare(StatusCode::BAD_REQUEST, "body is not UTF-8");
            };
            match handle_one(&s.engine, text.trim(), &source).await {
                Ok(answer) => ([(header::CONTENT_TYPE, "application/jose")], answer).into_response(),
                Err(Throttled) => bare(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            }
        }
        "application/json" => {
            let Ok(batch) = serde_json::from_slice::<Batch>(&body) else {
                return bare(StatusCode::BAD_REQUEST, "expected {\"kmsMessages\": [compact messages]}");
            };
            if batch.kms_messages.len() > MAX_BATCH {
                return bare(StatusCode::PAYLOAD_TOO_LARGE, "too many messages in one batch");
            }
            if batch.kms_messages.iter().any(|m| m.len() > MAX_MESSAGE) {
                return bare(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
            }
            let answers =
                futures_util::future::join_all(batch.kms_messages.iter().map(|m| handle_one(&s.engine, m, &source)))
                    .await;
            // A throttled message is left out; the client retries it.
            let out: Vec<String> = answers.into_iter().filter_map(Result::ok).collect();
            if out.is_empty() && !batch.kms_messages.is_empty() {
                return bare(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            }
            Json(Batch { kms_messages: out }).into_response()
        }
        _ => bare(StatusCode::UNSUPPORTED_MEDIA_TYPE, "use Content-Type application/jose or application/json"),
    }
}

async fn ws(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve_socket(s, socket, peer.ip().to_string()))
}

async fn serve_socket(s: AppState, socket: WebSocket, source: String) {
    let (mut tx, mut rx) = socket.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<String>(64);
    let mut revoked = s.engine.tickets().subscribe();
    let mut cut_off = s.engine.policies().subscribe();
    // Sessions used on this socket, by id, with their URIs (a pushed reset
    // names its session) and owners (a policy change names principals).
    let mut seen: HashMap<String, (kms_protocol::KmsUri, crate::session::SessionState)> = HashMap::new();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if let Some((session, uri)) = s.engine.session_of(&text).await {
                    if seen.len() < 1024 {
                        seen.insert(session.id.clone(), (uri, session));
                    }
                }
                let engine = s.engine.clone();
                let out = out_tx.clone();
                let src = source.clone();
                tokio::spawn(async move {
                    if let Ok(answer) = handle_one(&engine, &text, &src).await {
                        let _ = out.send(answer).await;
                    }
                });
            }
            Ok(id) = revoked.recv() => {
                // Unsolicited reset for a session this socket used.
                if let Some((uri, session)) = seen.remove(&id) {
                    if let Some(r) = s.engine.push_reset(&session, &uri, "session deleted") {
                        let _ = out_tx.send(r).await;
                    }
                }
            }
            Ok(c) = cut_off.recv() => {
                // The org revoked or disabled whoever owns sessions here: reset them now.
                let gone: Vec<String> = seen
                    .iter()
                    .filter(|(_, (_, st))| {
                        st.principal == c.principal && c.client_id.as_ref().is_none_or(|x| *x == st.client_id)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    if let Some((uri, session)) = seen.remove(&id) {
                        if let Some(r) = s.engine.push_reset(&session, &uri, "revoked by the org's policy") {
                            let _ = out_tx.send(r).await;
                        }
                    }
                }
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
}
