//! The org's web host: serves the web client (the bundle kept in
//! `web/dist`, embedded in this binary) with the org's settings
//! (`/config.json`) under a strict Content-Security-Policy. It runs in the
//! org's realm, not the provider's: whoever serves the app's JavaScript can
//! read everything, so the provider must not be the one serving it.
//!
//! Only the bundle's own files are served (those `integrity.json` lists);
//! any other path is 404.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The bundle, embedded: its file names are stable (see `web/app/vite.config.ts`).
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../../web/dist/index.html")),
    ("assets/index.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/dist/assets/index.js")),
    ("assets/index.css", "text/css; charset=utf-8", include_bytes!("../../../web/dist/assets/index.css")),
    ("assets/web_bg.wasm", "application/wasm", include_bytes!("../../../web/dist/assets/web_bg.wasm")),
];
/// The bundle's integrity hashes, as `scripts/web` wrote them.
#[cfg(test)]
const INTEGRITY: &str = include_str!("../../../web/dist/integrity.json");

/// What the app of one org needs to know: its `/config.json`, the org's
/// profile (the one the CLI reads) in the app's names, with the app's own
/// client id at the issuer.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppConfig {
    org: String,
    issuer: String,
    client_id: String,
    core_url: String,
    core_audience: String,
    kms_domain: String,
    kms_audience: String,
    /// The KMS's static public key (JWK, as JSON text): the app pins it.
    kms_key: String,
}

impl AppConfig {
    /// From the org's profile, for the web client registered as `client_id`.
    pub fn from_profile(p: &crate::profile::OrgProfile, client_id: &str) -> Self {
        Self {
            org: p.org.clone(),
            issuer: p.issuer.clone(),
            client_id: client_id.to_owned(),
            core_url: p.core_url.clone(),
            core_audience: p.core_audience.clone(),
            kms_domain: p.kms_domain.clone(),
            kms_audience: p.kms_audience.clone(),
            kms_key: p.kms_key.clone(),
        }
    }
}

#[derive(Clone)]
struct Host {
    config: axum::body::Bytes,
    csp: HeaderValue,
}

/// The app's CSP: its own scripts (and wasm compilation) only, no inline
/// script or style, and connections to the org's IdP and the core only.
pub fn csp(cfg: &AppConfig) -> String {
    let ws = cfg.core_url.replacen("http", "ws", 1);
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; \
         connect-src 'self' {core} {ws} {idp}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'",
        core = cfg.core_url,
        idp = cfg.issuer,
    )
}

fn respond(host: &Host, status: StatusCode, ctype: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let body: axum::body::Body = body.into();
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_SECURITY_POLICY, host.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    r
}

async fn file(State(host): State<Host>, path: Option<Path<String>>) -> Response {
    let name = path.map(|Path(p)| p).unwrap_or_else(|| "index.html".into());
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => respond(&host, StatusCode::OK, ctype, *body),
        None => respond(&host, StatusCode::NOT_FOUND, "text/plain; charset=utf-8", &b"not found\n"[..]),
    }
}

async fn config(State(host): State<Host>) -> Response {
    respond(&host, StatusCode::OK, "application/json", host.config.clone())
}

/// A running web host.
pub struct Running {
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves the app of one org on `listen`.
pub async fn start(listen: SocketAddr, cfg: &AppConfig) -> anyhow::Result<Running> {
    let host = Host {
        config: serde_json::to_vec(cfg)?.into(),
        csp: HeaderValue::from_str(&csp(cfg)).map_err(|_| anyhow::anyhow!("the app's CSP is not a header value"))?,
    };
    let app = Router::new()
        .route("/", get(file))
        .route("/config.json", get(config))
        .route("/{*path}", get(file))
        .with_state(host);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("custos: the web host stopped: {e}");
        }
    });
    Ok(Running { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_bundle_is_the_one_its_integrity_file_names() {
        use base64::Engine as _;
        let listed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(INTEGRITY).unwrap();
        assert_eq!(listed.len(), FILES.len(), "every file of the bundle is embedded, and no other");
        for (name, _, body) in FILES {
            let want = listed[*name].as_str().unwrap();
            let got = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, body);
            assert_eq!(want, format!("sha384-{}", base64::engine::general_purpose::STANDARD.encode(got)), "{name}");
        }
        let index = std::str::from_utf8(FILES[0].2).unwrap();
        assert!(index.contains(listed["assets/index.js"].as_str().unwrap()), "index.html pins the script by SRI");
        assert!(!index.contains("<script>"), "no inline script");
    }
}
