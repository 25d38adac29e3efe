//! The tokens we issue.
//!
//! - **Access tokens** follow RFC 9068: header `typ` `at+jwt`, RS256, `kid`;
//!   claims `iss`, `sub`, `aud` (one audience, a string), `exp`, `iat`, `nbf`,
//!   `jti`, `client_id`, and `scope` when one was requested.
//! - **Refresh tokens** are stateless JWTs signed by the same key, so logins
//!   survive a restart. They carry header `typ` `rt+jwt` and `aud` the issuer
//!   itself: a verifier that checks `typ` `at+jwt` (RFC 9068) or its own
//!   audience refuses them as access tokens, and we refuse access tokens as
//!   refresh tokens. Being stateless, they cannot be revoked before `exp`;
//!   removing the user from the configuration stops their use.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::keys::{KeyError, SigningKey};

/// Header `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Header `typ` of our refresh tokens.
pub const REFRESH_TOKEN_TYP: &str = "rt+jwt";

/// Clock skew tolerated on a refresh token's `nbf`/`iat`, in seconds.
const LEEWAY_SECS: i64 = 30;

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// 128 random bits, base64url.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
    jose::b64::encode(b)
}

/// What a token says about whom it was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub subject: String,
    pub client_id: String,
    pub scope: Option<String>,
    /// The user's display name, for access tokens of users.
    pub name: Option<String>,
}

/// Issues an access token for `audience`.
pub(crate) fn access_token(
    key: &SigningKey,
    issuer: &str,
    audience: &str,
    grant: &Grant,
    ttl_secs: u64,
    now: i64,
    client_credentials: bool,
) -> Result<String, KeyError> {
    let mut claims = base_claims(issuer, audience, grant, ttl_secs, now);
    if let Some(name) = &grant.name {
        claims.insert("name".into(), json!(name));
    }
    // No resource owner: a service acting as itself. `gty` as Auth0 names it, so
    // that a resource server (the KMS) can tell a service's token from a user's.
    if client_credentials {
        claims.insert("gty".into(), json!("client-credentials"));
    }
    key.sign(ACCESS_TOKEN_TYP, &Value::Object(claims))
}

/// Issues a refresh token (addressed to the issuer itself).
pub(crate) fn refresh_token(
    key: &SigningKey,
    issuer: &str,
    grant: &Grant,
    ttl_secs: u64,
    now: i64,
) -> Result<String, KeyError> {
    key.sign(REFRESH_TOKEN_TYP, &Value::Object(base_claims(issuer, issuer, grant, ttl_secs, now)))
}

fn base_claims(issuer: &str, audience: &str, grant: &Grant, ttl_secs: u64, now: i64) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuer));
    claims.insert("sub".into(), json!(grant.subject));
    claims.insert("aud".into(), json!(audience));
    claims.insert("exp".into(), json!(now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX))));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("jti".into(), json!(random_id()));
    claims.insert("client_id".into(), json!(grant.client_id));
    if let Some(scope) = &grant.scope {
        claims.insert("scope".into(), json!(scope));
    }
    claims
}

/// Checks a refresh token we issued: signature, `typ` `rt+jwt`, `iss` and
/// `aud` both the issuer, not expired, not from the future. `None` for
/// anything else, whatever the reason (the caller answers `invalid_grant`).
pub(crate) fn check_refresh_token(key: &SigningKey, issuer: &str, token: &str, now: i64) -> Option<Grant> {
    let claims = key.verify(REFRESH_TOKEN_TYP, token)?;
    let string = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    if string("iss")? != issuer || string("aud")? != issuer {
        return None;
    }
    if number("exp")? <= now || number("nbf")? > now + LEEWAY_SECS || number("iat")? > now + LEEWAY_SECS {
        return None;
    }
    let subject = string("sub").filter(|s| !s.is_empty())?.to_owned();
    let client_id = string("client_id")?.to_owned();
    let scope = match claims.get("scope") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    Some(Grant { subject, client_id, scope, name: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "http://127.0.0.1:8400";

    fn key() -> SigningKey {
        SigningKey::new(jose::RsaPrivateKey::generate(2048, None).unwrap())
    }

    fn grant() -> Grant {
        Grant {
            subject: "alice@acme.test".into(),
            client_id: "custos-cli".into(),
            scope: Some("a b".into()),
            name: None,
        }
    }

    #[test]
    fn refresh_tokens_round_trip() {
        let k = key();
        let now = now_secs();
        let rt = refresh_token(&k, ISS, &grant(), 60, now).unwrap();
        assert_eq!(check_refresh_token(&k, ISS, &rt, now), Some(grant()));
        assert_eq!(check_refresh_token(&k, ISS, &rt, now + 60), None, "expired");
        assert_eq!(check_refresh_token(&k, ISS, &rt, now - 31), None, "from the future");
        assert_eq!(check_refresh_token(&k, "http://127.0.0.1:8401", &rt, now), None, "another issuer");
        assert_eq!(check_refresh_token(&key(), ISS, &rt, now), None, "another key");
    }

    /// Each check on its own refuses: `typ`, then `aud`.
    #[test]
    fn only_refresh_tokens_are_refresh_tokens() {
        let k = key();
        let now = now_secs();
        // An access token for the issuer itself (configurations refuse that
        // audience, so this is a forgery by us): refused by `typ` alone.
        let at_for_issuer = access_token(&k, ISS, ISS, &grant(), 60, now, false).unwrap();
        assert_eq!(check_refresh_token(&k, ISS, &at_for_issuer, now), None);
        // `typ` rt+jwt but another audience: refused by `aud` alone.
        let claims = Value::Object(base_claims(ISS, "kms://acme.test", &grant(), 60, now));
        let rt_elsewhere = k.sign(REFRESH_TOKEN_TYP, &claims).unwrap();
        assert_eq!(check_refresh_token(&k, ISS, &rt_elsewhere, now), None);
        // Control: the same construction with the right audience passes.
        let claims = Value::Object(base_claims(ISS, ISS, &grant(), 60, now));
        assert!(check_refresh_token(&k, ISS, &k.sign(REFRESH_TOKEN_TYP, &claims).unwrap(), now).is_some());
        // `typ` compared case-insensitively (media type), nothing else accepted.
        assert!(check_refresh_token(&k, ISS, &k.sign("RT+JWT", &claims).unwrap(), now).is_some());
        for typ in ["JWT", "at+jwt", "rt+jwt ", "application/jwt"] {
            assert_eq!(check_refresh_token(&k, ISS, &k.sign(typ, &claims).unwrap(), now), None, "{typ}");
        }
    }
}
