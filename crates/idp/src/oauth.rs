//! OAuth 2.0 wire pieces shared by the endpoints: error responses (RFC 6749
//! section 5.2, RFC 8628 section 3.5, RFC 8707) and form parameters.

use std::borrow::Cow;
use std::fmt;

use zeroize::Zeroizing;

/// An OAuth error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter (RFC 6749).
    InvalidRequest,
    /// Client authentication failed, or the client is unknown (RFC 6749). HTTP 401.
    InvalidClient,
    /// Bad credentials, or a bad, expired or foreign code or refresh token (RFC 6749).
    InvalidGrant,
    /// The client may not use this grant type (RFC 6749).
    UnauthorizedClient,
    /// The grant type is not supported (RFC 6749).
    UnsupportedGrantType,
    /// The scope is malformed or exceeds the original grant (RFC 6749).
    InvalidScope,
    /// The audience (resource) is not one this IdP issues tokens for (RFC 8707).
    InvalidTarget,
    /// The device code is not approved yet (RFC 8628).
    AuthorizationPending,
    /// The device code is polled too fast (RFC 8628).
    SlowDown,
    /// The user denied the device (RFC 8628).
    AccessDenied,
    /// The device code expired (RFC 8628).
    ExpiredToken,
    /// Too many device authorizations are pending. HTTP 503.
    TemporarilyUnavailable,
    /// `/authorize` serves only `response_type=code` (RFC 6749).
    UnsupportedResponseType,
}

impl ErrorCode {
    /// The registered name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status it is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth error response. The description is written by us and never
/// quotes a request value (a misplaced password must not come back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self { code, description: description.into() }
    }

    pub(crate) fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code.as_str(), "error_description": self.description })
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

/// An `application/x-www-form-urlencoded` body. Values are zeroized on drop
/// (they include passwords, secrets and tokens).
pub(crate) struct Form {
    pairs: Vec<(String, Zeroizing<String>)>,
}

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let pairs =
            url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned()))).collect();
        Self { pairs }
    }

    /// The parameter's value. Empty values count as absent (RFC 6749 section
    /// 3.1); a parameter given twice is an error.
    pub(crate) fn get(&self, name: &'static str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
        Ok(first)
    }

    /// A required parameter.
    pub(crate) fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name)?.ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is required")))
    }

    /// Every non-empty value of a parameter that may repeat (RFC 8707 `resource`).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form").field("names", &self.pairs.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish()
    }
}

/// Whether `scope` is a valid RFC 6749 scope: scope-tokens of `%x21 /
/// %x23-5B / %x5D-7E`, separated by single spaces.
pub(crate) fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.split(' ').all(|tok| {
            !tok.is_empty()
                && tok.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = Form::parse(b"a=1&b=&c=x+y%21&d=1&d=2&r=u1&r=u2");
        assert_eq!(f.get("a").unwrap(), Some("1"));
        assert_eq!(f.get("b").unwrap(), None);
        assert_eq!(f.get("c").unwrap(), Some("x y!"));
        assert_eq!(f.get("d").unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(f.all("r").collect::<Vec<_>>(), ["u1", "u2"]);
        assert!(f.require("zz").is_err());
    }

    #[test]
    fn scopes() {
        for ok in ["openid", "kms.read kms.write", "a:b/c"] {
            assert!(valid_scope(ok), "{ok}");
        }
        for bad in ["", " a", "a  b", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(!valid_scope(bad), "{bad}");
        }
    }
}
