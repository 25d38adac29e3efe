//! The KMS relay: the core forwards KMS messages it cannot read to the named
//! KMS, and answers with whatever the KMS said. The client pinned the KMS key
//! itself, so a core that tampered would only produce messages that fail to verify.
//!
//! Two ways to reach a KMS: direct HTTP (`kms_url`), or a link the KMS opened
//! itself to `GET /kms/connect` (a KMS behind a firewall). A link is accepted
//! only after the KMS signs the core's fresh challenge in the `kms-connect`
//! context with the static key configured for that org (`kms_key`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, RwLock};

use crate::config::OrgConfig;
use crate::error::ApiError;
use crate::limit::Refused;
use crate::service::{Caller, Core};

/// A frame on a KMS link.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LinkFrame {
    /// Core → KMS: prove who you are.
    Challenge {
        /// Fresh random value.
        challenge: String,
    },
    /// KMS → core: the `kms-connect` proof.
    Hello {
        /// `kms://<domain>`.
        kms: String,
        /// Compact JWS by the KMS static key.
        proof: String,
    },
    /// Core → KMS: relay this.
    Request {
        /// Matches the response.
        id: u64,
        /// `application/jose` or `application/json` (a batch).
        content_type: String,
        /// The relayed body.
        body: String,
    },
    /// KMS → core: the answer.
    Response {
        /// The request's id.
        id: u64,
        /// HTTP-like status of the transport (200, or 429 when throttled).
        status: u16,
        /// Content type of `body`.
        content_type: String,
        /// The KMS's answer.
        body: String,
    },
    /// Core → KMS: the link is refused.
    Error {
        /// Why.
        message: String,
    },
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<(u16, String, String)>>>>;

struct Link {
    tx: mpsc::Sender<String>,
    pending: Pending,
}

/// Connected KMS links, by KMS domain, and the keys they must prove.
#[derive(Default)]
pub struct Links {
    keys: HashMap<String, jose::RsaPublicKey>,
    live: RwLock<HashMap<String, Arc<Link>>>,
    next: AtomicU64,
}

impl Links {
    /// Loads each org's configured KMS key.
    pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for o in &cfg.orgs {
            if let Some(path) = &o.kms_key {
                let pem =
                    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let key =
                    jose::RsaPublicKey::from_pem(&pem, None).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                keys.insert(o.kms_uri.trim_start_matches("kms://").to_string(), key);
            }
        }
        Ok(Self { keys, ..Self::default() })
    }

    /// Whether a KMS is linked now.
    pub async fn is_linked(&self, domain: &str) -> bool {
        self.live.read().await.contains_key(domain)
    }

    async fn request(
        &self,
        domain: &str,
        content_type: &str,
        body: String,
    ) -> Option<Result<(u16, String, String), ApiError>> {
        let link = self.live.read().await.get(domain).cloned()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        link.pending.lock().expect("not poisoned").insert(id, tx);
        let frame = serde_json::to_string(&LinkFrame::Request { id, content_type: content_type.into(), body })
            .expect("serializes");
        let unreachable = || {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "kms_unreachable",
                format!("KMS {domain} did not answer over its link"),
            )
        };
        if link.tx.send(frame).await.is_err() {
            link.pending.lock().expect("not poisoned").remove(&id);
            return Some(Err(unreachable()));
        }
        Some(match tokio::time::timeout(KMS_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            _ => {
                link.pending.lock().expect("not poisoned").remove(&id);
                Err(unreachable())
            }
        })
    }
}

/// `GET /kms/connect`: a KMS opens its link here.
pub async fn connect(State(links): State<Arc<Links>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(kms_protocol::channel::MAX_MESSAGE_LEN * 16).on_upgrade(move |s| serve_link(links, s))
}

async fn serve_link(links: Arc<Links>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let mut nonce = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        return;
    }
    let challenge = jose::b64::encode(nonce);
    let hello = serde_json::to_string(&LinkFrame::Challenge { challenge: challenge.clone() }).expect("serializes");
    if tx.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let refuse =
        |message: &str| serde_json::to_string(&LinkFrame::Error { message: message.into() }).expect("serializes");
    let domain = match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<LinkFrame>(&t) {
            Ok(LinkFrame::Hello { kms, proof }) => {
                let domain = kms.trim_start_matches("kms://").to_string();
                let now = crate::service::now_ms() / 1000;
                match links.keys.get(&domain) {
                    Some(key) if kms_protocol::connect::verify_connect(key, &proof, &kms, &challenge, now).is_ok() => {
                        domain
                    }
                    Some(_) => {
                        let _ = tx
                            .send(Message::Text(
                                refuse("the proof does not verify with this org's configured KMS key").into(),
                            ))
                            .await;
                        return;
                    }
                    None => {
                        let _ =
                            tx.send(Message::Text(refuse("this core has no key configured for that KMS").into())).await;
                        return;
                    }
                }
            }
            _ => return,
        },
        _ => return,
    };
    tracing::info!(kms = %domain, "KMS linked");
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let pending: Pending = Arc::default();
    let link = Arc::new(Link { tx: out_tx, pending: pending.clone() });
    // A newer link replaces an older one (the KMS reconnected).
    links.live.write().await.insert(domain.clone(), link.clone());
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        if let Ok(LinkFrame::Response { id, status, content_type, body }) = serde_json::from_str::<LinkFrame>(&t) {
            if let Some(reply) = pending.lock().expect("not poisoned").remove(&id) {
                let _ = reply.send((status, content_type, body));
            }
        }
    }
    let mut live = links.live.write().await;
    if live.get(&domain).is_some_and(|l| Arc::ptr_eq(l, &link)) {
        live.remove(&domain);
    }
    drop(live);
    writer.abort();
    tracing::info!(kms = %domain, "KMS link closed");
}

/// How long the core waits for a KMS before telling the client it is unreachable.
pub const KMS_TIMEOUT: Duration = Duration::from_secs(5);

fn client() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(KMS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client")
    })
}

/// How many KMS messages a relay body holds, counted as the KMS will count
/// them: the entries of a `{"kmsMessages": [...]}` batch when the content type
/// is JSON, else one. A body the KMS will refuse unread still counts as one.
pub fn message_count(content_type: &str, body: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Batch {
        #[serde(rename = "kmsMessages")]
        kms_messages: Vec<serde::de::IgnoredAny>,
    }
    let ctype = content_type.split(';').next().unwrap_or("").trim();
    if !ctype.eq_ignore_ascii_case("application/json") {
        return 1;
    }
    match serde_json::from_slice::<Batch>(body) {
        Ok(b) => u32::try_from(b.kms_messages.len()).unwrap_or(u32::MAX).max(1),
        Err(_) => 1,
    }
}

/// Checks that `caller` may relay `body` to the KMS at `domain`, and takes
/// its cost from the caller's budget. Returns the canonical KMS domain, its
/// org and the body as text. A refusal here takes nothing from the budget.
fn admit<'c, 'b>(
    core: &'c Core,
    caller: &Caller,
    domain: &str,
    content_type: &str,
    body: &'b [u8],
) -> Result<(String, &'c OrgConfig, &'b str), ApiError> {
    let domain = kms_protocol::uri::canonical_domain(domain).map_err(|_| ApiError::not_found("KMS"))?;
    let org = core.cfg.org_by_kms(&domain).ok_or_else(|| ApiError::not_found("KMS"))?;
    // A KMS serves its own org's users; another org's users reach it only
    // through their own KMS, which federates. Relaying for anyone would let
    // any org's user spend this KMS's per-source budget (it sees one source:
    // the core) and lock its org out.
    if core.cfg.org_of(&caller.user_id).is_none_or(|o| o.kms_uri != org.kms_uri) {
        metrics::counter!("core_kms_relay_refused_total", "reason" => "not_your_org").increment(1);
        tracing::debug!(user = %caller.user_id, kms = %domain, "relay refused: the KMS does not serve the caller's org");
        return Err(ApiError::forbidden(
            "kms_not_your_org",
            format!(
                "KMS {domain} does not serve your organization: the core relays only to your own org's KMS; \
                 other organizations' keys are reached through your own KMS, which federates with theirs"
            ),
        ));
    }
    if body.len() > kms_protocol::channel::MAX_MESSAGE_LEN * 16 {
        return Err(ApiError::too_large("the KMS message is too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("bad_body", "KMS messages are text"))?;
    let n = message_count(content_type, body);
    core.relay_limiter.take(&caller.user_id, n).map_err(|refused| {
        let l = &core.relay_limiter;
        match refused {
            Refused::TooLarge { burst } => {
                metrics::counter!("core_kms_relay_refused_total", "reason" => "batch_too_large").increment(1);
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "relay_batch_too_large",
                    format!("a batch of {n} KMS messages is more than the relay takes from one caller at once ({burst}); send smaller batches"),
                )
            }
            Refused::Throttled { retry_after } => {
                metrics::counter!("core_kms_relay_refused_total", "reason" => "throttled").increment(1);
                tracing::debug!(user = %caller.user_id, kms = %domain, messages = n, "relay refused: caller over its limit");
                let secs = retry_after.as_secs();
                ApiError::throttled(
                    "relay_throttled",
                    format!(
                        "too many KMS messages relayed for you (at most {} at once and {} per second); retry in {secs} s",
                        l.burst(),
                        l.per_second()
                    ),
                    secs,
                )
            }
        }
    })?;
    Ok((domain, org, text))
}

/// Forwards one relay body (a compact message or a `kmsMessages` batch) from
/// `caller` to the KMS at `domain`, if that KMS serves the caller's org and
/// the caller is within its relay limits.
pub async fn forward(
    core: &Core,
    links: &Links,
    caller: &Caller,
    domain: &str,
    content_type: &str,
    body: Bytes,
) -> Result<(StatusCode, String, Bytes), ApiError> {
    let (domain, org, text) = admit(core, caller, domain, content_type, &body)?;
    // A KMS that connected out is preferred: it may have no public address at all.
    if let Some(r) = links.request(&domain, content_type, text.to_string()).await {
        let (status, ctype, answer) = r?;
        metrics::counter!("core_kms_relayed_total").increment(1);
        return Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), ctype, Bytes::from(answer)));
    }
    let Some(url) = &org.kms_url else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "kms_unreachable",
            format!("KMS {domain} has no direct address and is not connected"),
        ));
    };
    let r = client()
        .post(format!("{url}/kms/messages"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| {
        let why = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "refused the connection"
        } else {
            "failed"
        };
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "kms_unreachable",
            format!("KMS {domain} is unreachable: the connection {why}"),
        )
    })?;
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/jose").to_string();
    let bytes = r.bytes().await.map_err(|_| {
        ApiError::new(StatusCode::BAD_GATEWAY, "kms_unreachable", format!("KMS {domain} broke off its answer"))
    })?;
    metrics::counter!("core_kms_relayed_total").increment(1);
    Ok((status, ctype, bytes))
}

#[cfg(test)]
mod tests {
    use super::message_count;

    #[test]
    fn a_batch_counts_as_its_messages_anything_else_as_one() {
        let batch = br#"{"kmsMessages": ["a", "b", "c"]}"#;
        assert_eq!(message_count("application/json", batch), 3);
        assert_eq!(message_count("Application/JSON; charset=utf-8", batch), 3);
        assert_eq!(message_count("application/jose", batch), 1, "the KMS reads it as one compact message");
        assert_eq!(message_count("text/plain", b"x.y.z"), 1);
        assert_eq!(message_count("application/json", br#"{"kmsMessages": []}"#), 1);
        assert_eq!(message_count("application/json", b"not json"), 1);
        assert_eq!(message_count("application/json", br#"{"kmsMessages": [1, {}, null]}"#), 3, "counted, not judged");
    }
}
