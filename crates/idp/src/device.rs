//! Pending device authorizations (RFC 8628), in memory.
//!
//! Each authorization has a secret `device_code` (256 random bits, held by
//! the device) and a short `user_code` (typed by the user on the
//! verification page). It is pending until a user approves or denies it on
//! the page, or until it expires; an approval is redeemed once. A restart
//! forgets pending authorizations (the device simply starts again).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::oauth::{ErrorCode, OAuthError};

/// RFC 8628 section 6.1: 20 consonants, no vowels (no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters of a user code (shown as `XXXX-XXXX`): 20^8, about 34.5 bits.
const USER_CODE_LEN: usize = 8;
/// Most authorizations kept at once; more are refused until some expire.
const MAX_ENTRIES: usize = 10_000;

/// Where an authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Approved(Approval),
    Denied,
}

/// What a user approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Approval {
    pub subject: String,
    pub name: Option<String>,
}

/// What the device asked for, returned with the approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redeemed {
    pub approval: Approval,
    pub audience: String,
    pub scope: Option<String>,
}

#[derive(Debug)]
struct Entry {
    client_id: String,
    user_code: String,
    audience: String,
    scope: Option<String>,
    expires_at: Instant,
    last_poll: Option<Instant>,
    state: State,
}

/// Why a user code cannot be decided on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeProblem {
    /// Not a code we issued (or long gone).
    Unknown,
    /// Its time ran out.
    Expired,
    /// Already approved or denied.
    Used,
}

/// A new authorization, for the device authorization response.
#[derive(Debug)]
pub(crate) struct Issued {
    pub device_code: String,
    /// `XXXX-XXXX`.
    pub user_code: String,
}

/// The authorizations, by device code; user codes index them.
#[derive(Debug)]
pub(crate) struct DeviceStore {
    ttl: Duration,
    interval: Duration,
    entries: HashMap<String, Entry>,
    /// Normalized user code → device code.
    user_codes: HashMap<String, String>,
}

impl DeviceStore {
    pub(crate) fn new(ttl: Duration, interval: Duration) -> Self {
        Self { ttl, interval, entries: HashMap::new(), user_codes: HashMap::new() }
    }

    /// Starts an authorization for `client_id`.
    pub(crate) fn start(
        &mut self,
        client_id: &str,
        audience: String,
        scope: Option<String>,
        now: Instant,
    ) -> Result<Issued, OAuthError> {
        self.purge(now);
        if self.entries.len() >= MAX_ENTRIES {
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many device authorizations are pending; try again later",
            ));
        }
        let device_code = random_device_code();
        let user_code = loop {
            let c = random_user_code();
            if !self.user_codes.contains_key(&c) {
                break c;
            }
        };
        self.user_codes.insert(user_code.clone(), device_code.clone());
        self.entries.insert(
            device_code.clone(),
            Entry {
                client_id: client_id.to_owned(),
                user_code: user_code.clone(),
                audience,
                scope,
                expires_at: now + self.ttl,
                last_poll: None,
                state: State::Pending,
            },
        );
        Ok(Issued { device_code, user_code: format_user_code(&user_code) })
    }

    /// A device polls the token endpoint (RFC 8628 section 3.4/3.5).
    pub(crate) fn poll(&mut self, device_code: &str, client_id: &str, now: Instant) -> Result<Redeemed, OAuthError> {
        self.purge(now);
        let unknown = || OAuthError::new(ErrorCode::InvalidGrant, "unknown or already redeemed device_code");
        let entry = self.entries.get_mut(device_code).ok_or_else(unknown)?;
        if entry.client_id != client_id {
            // A device code is bound to the client it was issued to.
            return Err(unknown());
        }
        if now >= entry.expires_at {
            return Err(OAuthError::new(ErrorCode::ExpiredToken, "the device code has expired; start again"));
        }
        match &entry.state {
            State::Denied => Err(OAuthError::new(ErrorCode::AccessDenied, "the user denied the request")),
            State::Approved(_) => {
                let entry = self.remove(device_code).expect("present");
                let State::Approved(approval) = entry.state else { unreachable!("matched above") };
                Ok(Redeemed { approval, audience: entry.audience, scope: entry.scope })
            }
            State::Pending => {
                // Allow some jitter: a client sleeping exactly `interval` may
                // arrive a little early.
                let too_fast = entry.last_poll.is_some_and(|last| now.duration_since(last) < self.interval * 4 / 5);
                entry.last_poll = Some(now);
                if too_fast {
                    Err(OAuthError::new(ErrorCode::SlowDown, "polling too fast; increase the interval by 5 seconds"))
                } else {
                    Err(OAuthError::new(ErrorCode::AuthorizationPending, "waiting for the user to approve"))
                }
            }
        }
    }

    /// Checks that `user_code` names a pending authorization.
    pub(crate) fn check(&mut self, user_code: &str, now: Instant) -> Result<(), CodeProblem> {
        self.purge(now);
        check_pending(self.find(user_code)?, now)
    }

    /// Approves (`Some`) or denies (`None`) the pending authorization with this user code.
    pub(crate) fn decide(
        &mut self,
        user_code: &str,
        approval: Option<Approval>,
        now: Instant,
    ) -> Result<(), CodeProblem> {
        self.purge(now);
        let device_code = self.user_codes.get(&normalize_user_code(user_code).ok_or(CodeProblem::Unknown)?).cloned();
        let entry = device_code.and_then(|d| self.entries.get_mut(&d)).ok_or(CodeProblem::Unknown)?;
        check_pending(entry, now)?;
        entry.state = match approval {
            Some(a) => State::Approved(a),
            None => State::Denied,
        };
        Ok(())
    }

    fn find(&self, user_code: &str) -> Result<&Entry, CodeProblem> {
        let code = normalize_user_code(user_code).ok_or(CodeProblem::Unknown)?;
        self.user_codes.get(&code).and_then(|d| self.entries.get(d)).ok_or(CodeProblem::Unknown)
    }

    fn remove(&mut self, device_code: &str) -> Option<Entry> {
        let entry = self.entries.remove(device_code)?;
        self.user_codes.remove(&entry.user_code);
        Some(entry)
    }

    /// Forgets authorizations that expired more than one lifetime ago (until
    /// then, polls get `expired_token` rather than `invalid_grant`).
    fn purge(&mut self, now: Instant) {
        let ttl = self.ttl;
        let gone: Vec<String> =
            self.entries.iter().filter(|(_, e)| now >= e.expires_at + ttl).map(|(d, _)| d.clone()).collect();
        for d in gone {
            self.remove(&d);
        }
    }

    /// How many authorizations are held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn check_pending(entry: &Entry, now: Instant) -> Result<(), CodeProblem> {
    if entry.state != State::Pending {
        return Err(CodeProblem::Used);
    }
    if now >= entry.expires_at {
        return Err(CodeProblem::Expired);
    }
    Ok(())
}

fn random_device_code() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
    jose::b64::encode(b)
}

/// Eight characters of the alphabet, unbiased (bytes of 240 and above are
/// drawn again, since 240 is the largest multiple of 20 below 256).
fn random_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LEN);
    let mut buf = [0u8; 16];
    while code.len() < USER_CODE_LEN {
        aws_lc_rs::rand::fill(&mut buf).expect("the system RNG works");
        for &b in &buf {
            if b < 240 && code.len() < USER_CODE_LEN {
                code.push(USER_CODE_ALPHABET[usize::from(b % 20)] as char);
            }
        }
    }
    code
}

fn format_user_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

/// What the user typed, as stored: case, dashes and spaces ignored. `None` if
/// it cannot be a code of ours.
pub(crate) fn normalize_user_code(input: &str) -> Option<String> {
    let code: String =
        input.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DeviceStore {
        DeviceStore::new(Duration::from_secs(600), Duration::from_secs(5))
    }

    fn alice() -> Approval {
        Approval { subject: "alice@acme.test".into(), name: None }
    }

    #[test]
    fn user_codes_look_right_and_normalize() {
        for _ in 0..100 {
            let c = format_user_code(&random_user_code());
            assert_eq!(c.len(), 9);
            assert_eq!(&c[4..5], "-");
            assert_eq!(normalize_user_code(&c).unwrap(), c.replace('-', ""));
            assert_eq!(normalize_user_code(&c.to_lowercase()).unwrap(), c.replace('-', ""));
        }
        assert_eq!(normalize_user_code(" wdjb mjht ").as_deref(), Some("WDJBMJHT"));
        for bad in ["", "WDJB-MJH", "WDJB-MJHTX", "WDJA-MJHT", "WDJB-MJH1"] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn lifecycle() {
        let mut s = store();
        let t0 = Instant::now();
        let issued = s.start("cli", "kms://a".into(), None, t0).unwrap();
        let poll = |s: &mut DeviceStore, t| s.poll(&issued.device_code, "cli", t).map_err(|e| e.code);
        assert_eq!(poll(&mut s, t0), Err(ErrorCode::AuthorizationPending));
        assert_eq!(poll(&mut s, t0 + Duration::from_secs(1)), Err(ErrorCode::SlowDown));
        assert_eq!(poll(&mut s, t0 + Duration::from_secs(7)), Err(ErrorCode::AuthorizationPending));
        assert_eq!(s.poll(&issued.device_code, "other", t0).unwrap_err().code, ErrorCode::InvalidGrant);
        assert_eq!(s.check(&issued.user_code, t0), Ok(()));
        s.decide(&issued.user_code, Some(alice()), t0).unwrap();
        assert_eq!(s.decide(&issued.user_code, Some(alice()), t0), Err(CodeProblem::Used));
        assert_eq!(s.decide(&issued.user_code, None, t0), Err(CodeProblem::Used));
        let r = s.poll(&issued.device_code, "cli", t0 + Duration::from_secs(8)).unwrap();
        assert_eq!(r.approval, alice());
        assert_eq!(poll(&mut s, t0 + Duration::from_secs(20)), Err(ErrorCode::InvalidGrant), "redeemed once");
        assert_eq!(s.check(&issued.user_code, t0), Err(CodeProblem::Unknown));
    }

    #[test]
    fn denial_and_expiry() {
        let mut s = store();
        let t0 = Instant::now();
        let a = s.start("cli", "kms://a".into(), None, t0).unwrap();
        let b = s.start("cli", "kms://a".into(), None, t0).unwrap();
        s.decide(&a.user_code, None, t0).unwrap();
        assert_eq!(s.poll(&a.device_code, "cli", t0).unwrap_err().code, ErrorCode::AccessDenied);
        let later = t0 + Duration::from_secs(600);
        assert_eq!(s.check(&b.user_code, later), Err(CodeProblem::Expired));
        assert_eq!(s.decide(&b.user_code, Some(alice()), later), Err(CodeProblem::Expired));
        assert_eq!(s.poll(&b.device_code, "cli", later).unwrap_err().code, ErrorCode::ExpiredToken);
        let much_later = t0 + Duration::from_secs(1200);
        assert_eq!(s.poll(&b.device_code, "cli", much_later).unwrap_err().code, ErrorCode::InvalidGrant);
        assert_eq!(s.len(), 0, "purged");
    }
}
