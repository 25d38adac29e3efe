//! # idp: the Custos development OpenID provider
//!
//! **For development; production uses any OIDC provider.** `custos up` embeds
//! it so that a fresh machine has users, bots and tokens without an external
//! identity provider. Passwords and client secrets sit in its configuration
//! in plain text (or in environment variables).
//!
//! What it serves (paths relative to the issuer URL):
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | discovery (also at `/.well-known/oauth-authorization-server`) |
//! | `GET /jwks` | the RSA signing key (`kid`, `alg` RS256, `use` sig) |
//! | `POST /token` | grants `authorization_code` (with PKCE), `password`, `client_credentials`, `refresh_token`, `urn:ietf:params:oauth:grant-type:device_code` |
//! | `POST /device_authorization` | RFC 8628 device authorization |
//! | `GET`/`POST /device` | the verification page: user code, username, password, approve or deny |
//! | `GET`/`POST /authorize` | the sign-in page of the authorization code flow with PKCE (`S256`), for `web_clients` |
//!
//! Tokens:
//!
//! - **Access tokens** are RFC 9068 JWTs (header `typ` `at+jwt`, RS256,
//!   `kid`) for exactly one audience, chosen with `audience` (or RFC 8707
//!   `resource`) among the configured `audiences`, else `default_audience`.
//!   Claims: `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`, `client_id`,
//!   `scope` (when requested) and `name` (users with one).
//! - **Refresh tokens** (password and device grants, and renewed by each
//!   refresh) are stateless JWTs with `typ` `rt+jwt` and `aud` the issuer
//!   itself: no verifier of access tokens accepts them, and a restart keeps
//!   logins working. One login mints tokens for every audience through the
//!   refresh grant's `audience` parameter.
//!
//! Web clients (`[[web_clients]]`: an id and exact redirect URIs) sign users
//! in at `/authorize` and redeem the code at `/token` with its PKCE
//! verifier; discovery, the key set and the token endpoint answer their
//! origins (the redirect URIs') cross-origin, and no other.
//!
//! Public clients (`public_clients`, default `custos-cli`) use the password,
//! device code and refresh grants without a secret; service clients
//! (`[[clients]]`) use `client_credentials` with a secret, in the form or with
//! HTTP Basic. Errors are RFC 6749 JSON and never quote a submitted value;
//! logs never contain passwords, secrets or tokens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), idp::Error> {
//! let cfg = idp::Config::from_toml(r#"
//!     listen = "127.0.0.1:0"
//!     data_dir = "/tmp/custos-idp"
//!     audiences = ["https://core.acme.test", "kms://acme.test"]
//!     [[users]]
//!     id = "alice@acme.test"
//!     password = "alice"
//! "#)?;
//! let running = idp::start(cfg).await?;
//! println!("issuer {}", running.issuer);
//! running.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authcode;
mod config;
mod device;
mod http;
mod keys;
mod oauth;
mod page;
mod provider;
mod secret;
mod server;
mod token;

use std::net::SocketAddr;

pub use config::{Config, ConfigError, ServiceClient, User, WebClient};
pub use http::MAX_BODY_BYTES;
pub use keys::{KeyError, KEY_FILE};
pub use oauth::{ErrorCode, OAuthError};
pub use provider::{DeviceAuthorization, Idp, TokenResponse};
pub use secret::Secret;
pub use server::{serve, start, Running};
pub use token::{ACCESS_TOKEN_TYP, REFRESH_TOKEN_TYP};

/// Why the IdP cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable.
    #[error("idp configuration: {0}")]
    Config(#[from] ConfigError),
    /// The signing key cannot be loaded or created.
    #[error("idp signing key: {0}")]
    Key(#[from] KeyError),
    /// The listen address cannot be bound.
    #[error("idp: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A background task failed.
    #[error("idp: {0}")]
    Internal(String),
}

impl Idp {
    /// The HTTP routes, with a 16 KiB body limit. Serve it at the root of
    /// the issuer URL (a path in the issuer is for a proxy that strips it).
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }
}
