//! What the server load generators share: a test OpenID issuer on loopback.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use jose::jws::SignKey;
use jose::{HeaderParams, RsaPrivateKey, SigAlg};
use serde_json::json;

/// A tiny OpenID issuer on loopback: discovery, JWKS, and RFC 9068 access
/// tokens it signs itself, for one audience.
pub struct Issuer {
    /// Its issuer URL (`http://127.0.0.1:<port>`), also the tokens' `iss`.
    pub url: String,
    key: Arc<RsaPrivateKey>,
    audience: String,
    lifetime_secs: i64,
}

impl Issuer {
    /// Starts serving discovery and JWKS on a free loopback port; its tokens
    /// carry `aud` = `audience` and expire `lifetime_secs` after issue.
    pub async fn start(audience: impl Into<String>, lifetime_secs: i64) -> anyhow::Result<Issuer> {
        let key = Arc::new(RsaPrivateKey::generate(2048, Some("bench-issuer".into()))?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let jwks = json!({"keys": [key.public_key().to_jwk()]});
        let disco = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { Json(disco) }))
            .route("/jwks", get(move || async move { Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Ok(Issuer { url, key, audience: audience.into(), lifetime_secs })
    }

    /// An access token for `sub` (client id `bench`).
    pub fn token(&self, sub: &str) -> String {
        let now = kms::now_ms() / 1000;
        let claims = json!({
            "iss": self.url,
            "sub": sub,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.lifetime_secs,
            "client_id": "bench",
        });
        jose::jws::sign(
            SigAlg::RS256,
            SignKey::Rsa(&self.key),
            &HeaderParams::kid("bench-issuer").with_typ("at+jwt"),
            claims.to_string().as_bytes(),
        )
        .expect("signs")
    }
}
