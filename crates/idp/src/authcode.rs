//! The authorization code flow with PKCE (RFC 6749 section 4.1, RFC 7636
//! `S256` only), for browser apps: the codes issued after a user signs in
//! at `/authorize`, redeemed once at `/token` with the code verifier.
//!
//! A code lives in memory for [`CODE_TTL`], is bound to the client, the
//! redirect URI and the PKCE challenge it was issued for, and is gone after
//! its first redemption, successful or not (a wrong verifier cannot be
//! retried against the same code).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::oauth::{ErrorCode, OAuthError};

/// How long a code can be redeemed (RFC 6749 recommends at most 10 minutes).
pub(crate) const CODE_TTL: Duration = Duration::from_secs(60);
/// Most codes outstanding at once; beyond, the oldest are dropped.
const MAX_CODES: usize = 10_000;

/// What a sign-in at `/authorize` asked for, checked.
#[derive(Debug, Clone)]
pub(crate) struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub state: Option<String>,
    pub scope: Option<String>,
    /// The RFC 8707 resource the user agreed to (the token request may narrow it).
    pub resource: Option<String>,
}

/// Who signed in.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    pub subject: String,
}

struct Entry {
    request: AuthRequest,
    user: SignedIn,
    expires: Instant,
}

/// A redeemed code: what the token endpoint issues tokens for.
pub(crate) struct Redeemed {
    pub request: AuthRequest,
    pub user: SignedIn,
}

/// The codes issued and not yet redeemed.
#[derive(Default)]
pub(crate) struct CodeStore {
    codes: HashMap<String, Entry>,
}

fn invalid_grant(why: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, why)
}

impl CodeStore {
    /// Issues a code for `user`'s sign-in to `request`.
    pub(crate) fn issue(&mut self, request: AuthRequest, user: SignedIn, now: Instant) -> String {
        self.codes.retain(|_, e| e.expires > now);
        if self.codes.len() >= MAX_CODES {
            if let Some(oldest) = self.codes.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone()) {
                self.codes.remove(&oldest);
            }
        }
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
        let code = jose::b64::encode(b);
        self.codes.insert(code.clone(), Entry { request, user, expires: now + CODE_TTL });
        code
    }

    /// Redeems `code` once: the client, redirect URI and verifier must be
    /// those it was issued for.
    pub(crate) fn redeem(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
        now: Instant,
    ) -> Result<Redeemed, OAuthError> {
        // Removed first: one attempt per code, whatever its outcome.
        let entry = self.codes.remove(code).ok_or_else(|| invalid_grant("the code is unknown, used or expired"))?;
        if entry.expires <= now {
            return Err(invalid_grant("the code is unknown, used or expired"));
        }
        if entry.request.client_id != client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if entry.request.redirect_uri != redirect_uri {
            return Err(invalid_grant("redirect_uri is not the one the code was issued for"));
        }
        if !valid_verifier(verifier) {
            return Err(OAuthError::invalid_request("code_verifier must be 43 to 128 unreserved characters (RFC 7636)"));
        }
        if !challenge_matches(verifier, &entry.request.code_challenge) {
            return Err(invalid_grant("code_verifier does not match the code_challenge"));
        }
        Ok(Redeemed { request: entry.request, user: entry.user })
    }
}

/// RFC 7636 section 4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub(crate) fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A `S256` challenge: base64url of a SHA-256, 43 characters.
pub(crate) fn valid_challenge(c: &str) -> bool {
    c.len() == 43 && jose::b64::decode(c, jose::Part::Payload).is_ok_and(|b| b.len() == 32)
}

/// `BASE64URL(SHA256(verifier)) == challenge`, in constant time.
fn challenge_matches(verifier: &str, challenge: &str) -> bool {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    bool::from(jose::b64::encode(d.as_ref()).as_bytes().ct_eq(challenge.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn request() -> AuthRequest {
        AuthRequest {
            client_id: "custos-web".into(),
            redirect_uri: "http://acme.localhost:8080/".into(),
            code_challenge: CHALLENGE.into(),
            state: Some("s".into()),
            scope: None,
            resource: None,
        }
    }

    fn alice() -> SignedIn {
        SignedIn { subject: "alice@acme.test".into() }
    }

    #[test]
    fn rfc7636_example_and_shapes() {
        assert!(challenge_matches(VERIFIER, CHALLENGE));
        assert!(!challenge_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", CHALLENGE));
        assert!(valid_verifier(VERIFIER) && valid_challenge(CHALLENGE));
        assert!(!valid_verifier("short") && !valid_verifier(&"a".repeat(129)) && !valid_verifier(&"é".repeat(43)));
        assert!(!valid_challenge("plain-challenge") && !valid_challenge(&"A".repeat(44)));
    }

    #[test]
    fn a_code_redeems_once_for_its_client_uri_and_verifier() {
        let mut s = CodeStore::default();
        let now = Instant::now();
        let code = s.issue(request(), alice(), now);
        let r = s.redeem(&code, "custos-web", "http://acme.localhost:8080/", VERIFIER, now).unwrap();
        assert_eq!(r.user.subject, "alice@acme.test");
        let again = s.redeem(&code, "custos-web", "http://acme.localhost:8080/", VERIFIER, now).err().unwrap();
        assert_eq!(again.code, ErrorCode::InvalidGrant);

        for (client, uri, verifier) in [
            ("other", "http://acme.localhost:8080/", VERIFIER),
            ("custos-web", "http://acme.localhost:8080/x", VERIFIER),
            ("custos-web", "http://acme.localhost:8080/", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl"),
        ] {
            let code = s.issue(request(), alice(), now);
            assert!(s.redeem(&code, client, uri, verifier, now).is_err(), "{client} {uri}");
            // Burnt by the failed attempt, even with the right values now.
            assert!(s.redeem(&code, "custos-web", "http://acme.localhost:8080/", VERIFIER, now).is_err());
        }
        let code = s.issue(request(), alice(), now);
        assert!(s.redeem(&code, "custos-web", "http://acme.localhost:8080/", VERIFIER, now + CODE_TTL).is_err());
    }
}
