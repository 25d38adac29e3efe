//! HTTP plumbing every native part of the SDK uses.

/// The HTTP client every part of the SDK uses.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("the HTTP client builds")
}

/// Reads a response body, at most `cap` bytes: `Err(None)` when larger,
/// `Err(Some(why))` when it broke off.
pub(crate) async fn read_capped(
    mut r: reqwest::Response,
    cap: usize,
) -> std::result::Result<bytes::Bytes, Option<String>> {
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Err(None);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| Some(why(&e)))? {
        if out.len() + chunk.len() > cap {
            return Err(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Why a request failed, without the URL's query or any body.
pub(crate) fn why(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".into()
    } else {
        "the request failed".into()
    }
}
