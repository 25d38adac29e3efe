//! The synchronous checks on one token: header, signature, claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwks::VerifyKey;
use crate::{Identity, IdentityError};

/// Longest token accepted. Real access tokens are a few KiB; this bounds the
/// work an attacker can make us do before the signature check.
const MAX_TOKEN_LEN: usize = 32 * 1024;
/// Longest user claim accepted.
const MAX_USER_LEN: usize = 256;

/// What the header and the (not yet authenticated) claims say about how to
/// verify the token.
#[derive(Debug)]
pub(crate) struct Unverified {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    /// Only used to pick the issuer's key set; the signature check then binds it.
    pub(crate) iss: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct RawIssuer {
    #[serde(default)]
    iss: Option<Value>,
}

fn b64_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, IdentityError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| IdentityError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| IdentityError::Malformed)
}

/// The allowlist: asymmetric algorithms only, so no key of ours can be used
/// as an HMAC secret, and never `none`.
fn allowed_alg(alg: &str) -> Option<Algorithm> {
    match alg {
        "RS256" => Some(Algorithm::RS256),
        "PS256" => Some(Algorithm::PS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

/// RFC 9068 section 2.1: `typ` is `at+jwt`; media types are case-insensitive
/// and may carry the `application/` prefix.
fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// Reads the header and `iss` without trusting them, and refuses what no key
/// could make acceptable. Costs no network and no signature check.
pub(crate) fn inspect(token: &str) -> Result<Unverified, IdentityError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(IdentityError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::Malformed);
    };
    let header: RawHeader = b64_json(header)?;
    let alg = allowed_alg(&header.alg).ok_or(IdentityError::AlgorithmNotAllowed)?;
    if !header.typ.as_deref().is_some_and(is_access_token_type) {
        return Err(IdentityError::WrongType);
    }
    // We understand no JWS extension, so any `crit` means we must refuse.
    if header.crit.is_some() {
        return Err(IdentityError::Malformed);
    }
    let claims: RawIssuer = b64_json(payload)?;
    let iss = match claims.iss {
        None => return Err(IdentityError::MissingClaim("iss")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(IdentityError::Malformed),
    };
    Ok(Unverified { alg, kid: header.kid, iss })
}

/// Verifies the signature with the first candidate key that fits, and with it
/// `iss`, `exp` (required) and `nbf` (if present). Returns the claims.
pub(crate) fn verify_signature(
    token: &str,
    alg: Algorithm,
    keys: &[std::sync::Arc<VerifyKey>],
    issuer: &str,
    leeway_secs: u64,
) -> Result<Map<String, Value>, IdentityError> {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    // `aud` is checked by `identity`, more strictly than jsonwebtoken does.
    validation.validate_aud = false;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp"]);

    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Only possible without a `kid`: try the issuer's next key.
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(map_jwt_error(e.kind())),
        }
    }
    Err(IdentityError::BadSignature)
}

fn map_jwt_error(kind: &jsonwebtoken::errors::ErrorKind) -> IdentityError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature | K::InvalidRsaKey(_) | K::InvalidEcdsaKey | K::InvalidKeyFormat => {
            IdentityError::BadSignature
        }
        K::ExpiredSignature => IdentityError::Expired,
        K::ImmatureSignature => IdentityError::NotYetValid,
        K::InvalidIssuer => IdentityError::UnknownIssuer,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => IdentityError::AlgorithmNotAllowed,
        K::MissingRequiredClaim(c) if c == "exp" => IdentityError::MissingClaim("exp"),
        _ => IdentityError::Malformed,
    }
}

/// The per-issuer facts `identity` needs.
pub(crate) struct IssuerRules<'a> {
    pub(crate) issuer: &'a str,
    /// Lowercase.
    pub(crate) org_domain: &'a str,
    pub(crate) user_claim: &'a str,
}

/// Checks what the signature check left (audience, `iat`, `sub`, the user
/// claim) and builds the identity from authenticated claims.
pub(crate) fn identity(
    claims: &Map<String, Value>,
    audience: &str,
    rules: &IssuerRules<'_>,
    now: i64,
    leeway_secs: u64,
) -> Result<Identity, IdentityError> {
    check_audience(claims.get("aud"), audience)?;

    let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    if let Some(iat) = claims.get("iat") {
        let iat = iat.as_f64().ok_or(IdentityError::Malformed)?;
        if iat > now.saturating_add(leeway) as f64 {
            return Err(IdentityError::IssuedInFuture);
        }
    }
    // jsonwebtoken has already required `exp` to be a non-negative integer.
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .and_then(|e| i64::try_from(e).ok())
        .ok_or(IdentityError::MissingClaim("exp"))?;

    let subject = match claims.get("sub") {
        None => return Err(IdentityError::MissingClaim("sub")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(IdentityError::Malformed),
    };
    let user = match claims.get(rules.user_claim) {
        None => return Err(IdentityError::MissingUserClaim),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(IdentityError::InvalidUserId),
    };
    let user_id = qualify_user(user, rules.org_domain)?;

    let client_id = match claims.get("client_id").or_else(|| claims.get("azp")) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(IdentityError::Malformed),
    };
    // RFC 9068 uses a space-separated `scope`; some IdPs send an `scp` array.
    let scope = match claims.get("scope").or_else(|| claims.get("scp")) {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(IdentityError::Malformed))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(IdentityError::Malformed),
    };

    let client_credentials = claims.get("gty").and_then(Value::as_str) == Some("client-credentials")
        || client_id.as_deref() == Some(subject.as_str());
    Ok(Identity { user_id, issuer: rules.issuer.to_owned(), subject, expires_at, client_id, scope, client_credentials })
}

/// `aud` must be exactly our audience: a string, or an array of exactly it.
/// A token for several audiences could be replayed by any of them, so it is
/// refused even when ours is among them.
fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), IdentityError> {
    let single = match aud {
        None => return Err(IdentityError::MissingClaim("aud")),
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s,
            [] => return Err(IdentityError::WrongAudience),
            [_] => return Err(IdentityError::Malformed),
            _ => return Err(IdentityError::MultipleAudiences),
        },
        Some(_) => return Err(IdentityError::Malformed),
    };
    if single == audience {
        Ok(())
    } else {
        Err(IdentityError::WrongAudience)
    }
}

/// `name` becomes `name@org_domain`; `name@domain` is kept only if `domain`
/// is the issuer's own org (case-insensitively), so one issuer can never mint
/// ids in another org's namespace.
pub(crate) fn qualify_user(value: &str, org_domain: &str) -> Result<String, IdentityError> {
    if value.is_empty() || value.len() > MAX_USER_LEN || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IdentityError::InvalidUserId);
    }
    if is_reserved(value) {
        return Err(IdentityError::ReservedUserId);
    }
    match value.split_once('@') {
        None => Ok(format!("{value}@{org_domain}")),
        Some((name, domain)) => {
            if name.is_empty() || domain.is_empty() || domain.contains('@') {
                return Err(IdentityError::InvalidUserId);
            }
            if !domain.eq_ignore_ascii_case(org_domain) {
                return Err(IdentityError::ForeignUserDomain);
            }
            Ok(format!("{name}@{org_domain}"))
        }
    }
}

/// Whether a user claim names a principal a token may never be: a
/// certificate service (`service:<id>`, the engine's id for them) or a URI
/// of the KMS's own (`kms://<peer>`, `kms://…/authorizations/<id>` for
/// anonymous bearers). Other URL-shaped subjects (some IdPs use them) stay valid.
pub fn is_reserved(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.starts_with("service:") || lower.starts_with("kms:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_qualified_with_the_issuers_org() {
        assert_eq!(qualify_user("alice", "example.com").unwrap(), "alice@example.com");
        assert_eq!(qualify_user("Alice@Example.COM", "example.com").unwrap(), "Alice@example.com");
        assert_eq!(qualify_user("alice@other.org", "example.com"), Err(IdentityError::ForeignUserDomain));
        for bad in ["", "a b", "a@b@example.com", "@example.com", "alice@", "a\u{0}b"] {
            assert_eq!(qualify_user(bad, "example.com"), Err(IdentityError::InvalidUserId), "{bad:?}");
        }
    }

    #[test]
    fn reserved_namespaces_are_refused() {
        for bad in [
            "service:indexer@example.com",
            "service:indexer",
            "SERVICE:Indexer@example.com",
            "kms://kms.example.com",
            "kms://kms.example.com/authorizations/1@example.com",
        ] {
            assert_eq!(qualify_user(bad, "example.com"), Err(IdentityError::ReservedUserId), "{bad:?}");
        }
        // Names that merely contain the words stay valid.
        assert_eq!(qualify_user("service-desk", "example.com").unwrap(), "service-desk@example.com");
        assert_eq!(qualify_user("auth0|kms", "example.com").unwrap(), "auth0|kms@example.com");
        assert!(qualify_user("https://idp.example.com/u/1", "example.com").is_ok());
    }

    #[test]
    fn audience_must_be_exactly_ours() {
        let ours = "kms://a";
        assert!(check_audience(Some(&Value::from("kms://a")), ours).is_ok());
        assert!(check_audience(Some(&serde_json::json!(["kms://a"])), ours).is_ok());
        assert_eq!(check_audience(Some(&Value::from("kms://b")), ours), Err(IdentityError::WrongAudience));
        assert_eq!(
            check_audience(Some(&serde_json::json!(["kms://a", "kms://b"])), ours),
            Err(IdentityError::MultipleAudiences)
        );
        assert_eq!(check_audience(None, ours), Err(IdentityError::MissingClaim("aud")));
    }

    #[test]
    fn typ_is_case_insensitive() {
        for t in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
            assert!(is_access_token_type(t), "{t}");
        }
        for t in ["JWT", "jwt", "at+jwt ", "application/jwt"] {
            assert!(!is_access_token_type(t), "{t}");
        }
    }
}
