//! The KMS relay: the core forwards KMS messages it cannot read to the named
//! KMS, and answers with whatever the KMS said. The client pinned the KMS key
//! itself, so a core that tampered would only produce messages that fail to verify.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::service::Core;

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

/// Forwards one relay body (a compact message or a `kmsMessages` batch) to the KMS at `domain`.
pub async fn forward(core: &Core, domain: &str, content_type: &str, body: Bytes) -> Result<(StatusCode, String, Bytes), ApiError> {
    let domain = kms_protocol::uri::canonical_domain(domain).map_err(|_| ApiError::not_found("KMS"))?;
    let org = core.cfg.org_by_kms(&domain).ok_or_else(|| ApiError::not_found("KMS"))?;
    let Some(url) = &org.kms_url else {
        return Err(ApiError::new(StatusCode::BAD_GATEWAY, "kms_unreachable", format!("KMS {domain} has no direct address and is not connected")));
    };
    if body.len() > kms_protocol::channel::MAX_MESSAGE_LEN * 16 {
        return Err(ApiError::too_large("the KMS message is too large"));
    }
    let r = client()
        .post(format!("{url}/kms/messages"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            let why = if e.is_timeout() { "timed out" } else if e.is_connect() { "refused the connection" } else { "failed" };
            ApiError::new(StatusCode::BAD_GATEWAY, "kms_unreachable", format!("KMS {domain} is unreachable: the connection {why}"))
        })?;
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/jose").to_string();
    let bytes = r.bytes().await.map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "kms_unreachable", format!("KMS {domain} broke off its answer")))?;
    metrics::counter!("core_kms_relayed_total").increment(1);
    Ok((status, ctype, bytes))
}
